// Browser throughput: events per second received in headless Chromium
// through the resub npm package against plain WebSocket, EventSource and
// fetch loops, on the same streams from the same fixture server, on each
// transport. Run by scripts/bench-browser.sh, which starts the fixture with
// --static pointing at a folder holding page/index.html and the installed
// package.
//
// The browser is started as a user's would be, with no DevTools protocol
// attached: a tool driving the page over it (Playwright, Puppeteer) turns on
// its Network domain, which reports every WebSocket frame and measurably slows
// both readers. The page runs the plan itself and reports each round's
// timings, taken in the page, to a small HTTP server here.
//
// Environment:
//   RESUB_FIXTURE_URL  the fixture (required), which also serves the page
//   BENCH_EVENTS       events per round (default 200000)
//   BENCH_ROUNDS       measured rounds per reader, transport and stream (default 5)
//   BENCH_STREAMS      "live,replay" (default) or one of them
//   BENCH_TRANSPORTS   "ws,sse,poll" (default) or some of them
//   BENCH_OUT          where to write the Markdown fragment (default: stdout only)
//   BENCH_COMMIT       the commit measured, named in the fragment
//   RESUB_CHROMIUM     the browser (default /usr/bin/chromium)
//
// Streams: "live" subscribes first, then the fixture publishes the events as
// fast as it can (a chaos run with 0 faults and an unreachable rate), so the
// publisher can be the limit; "replay" publishes first and then subscribes
// from the cursor before them, so the client is the limit.
import { spawn } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:http";
import os from "node:os";
import path from "node:path";

const FIXTURE = (process.env.RESUB_FIXTURE_URL ?? "").replace(/\/+$/, "");
if (!FIXTURE) throw new Error("RESUB_FIXTURE_URL is not set: run bash scripts/bench-browser.sh");
const EVENTS = Number(process.env.BENCH_EVENTS ?? 200_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const STREAMS = (process.env.BENCH_STREAMS ?? "live,replay").split(",").filter(Boolean);
const TRANSPORTS = (process.env.BENCH_TRANSPORTS ?? "ws,sse,poll").split(",").filter(Boolean);
const CHROMIUM = process.env.RESUB_CHROMIUM ?? "/usr/bin/chromium";
const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-dev-shm-usage",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  // A page nobody looks at is throttled as a background one; Playwright
  // passes these too, so the figures compare with its runs.
  "--disable-background-timer-throttling",
  "--disable-backgrounding-occluded-windows",
  "--disable-renderer-backgrounding",
  "--js-flags=--expose-gc",
];

/** Receives the page's reports; resolves `finished` with every round. */
function reportServer() {
  const rounds = [];
  let finish;
  const finished = new Promise((resolve) => (finish = resolve));
  const server = createServer((req, res) => {
    res.setHeader("access-control-allow-origin", "*");
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      if (req.url === "/plan") {
        res.setHeader("content-type", "application/json");
        res.end(JSON.stringify({ events: EVENTS, rounds: ROUNDS, streams: STREAMS, transports: TRANSPORTS }));
        return;
      }
      res.end();
      const msg = JSON.parse(body || "{}");
      if (req.url === "/result") {
        rounds.push(msg);
        console.log(
          `${msg.warmup ? "warm-up " : ""}${msg.transport.padEnd(4)} ${msg.stream.padEnd(6)} ${msg.reader.padEnd(5)} ` +
            `${fmt(msg.perSec).padStart(10)} events/s  ${msg.ms.toFixed(0).padStart(6)} ms` +
            `  (publisher ${fmt(msg.pubPerSec)} events/s, ${msg.connections} connection(s))`,
        );
      } else if (req.url === "/done") {
        finish({ rounds, ...msg });
      }
    });
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve({ server, finished })));
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const fmt = (x) => Math.round(x).toLocaleString("en-US");
const fx = (x) => `${x.toFixed(2)}×`;

const { server, finished } = await reportServer();
const report = `http://127.0.0.1:${server.address().port}`;
const profile = await mkdtemp(path.join(os.tmpdir(), "resub-bench-chromium-"));
const browser = spawn(
  CHROMIUM,
  [...ARGS, `--user-data-dir=${profile}`, `${FIXTURE}/?report=${encodeURIComponent(report)}`],
  { stdio: ["ignore", "ignore", "pipe"] },
);
let browserLog = "";
browser.stderr.on("data", (c) => (browserLog = (browserLog + c).slice(-4000)));
const deadline = setTimeout(
  () => {
    console.error(`no end after 60 min; the browser said:\n${browserLog}`);
    process.exit(1);
  },
  60 * 60 * 1000,
);
const lines = [];
try {
  const outcome = await finished;
  clearTimeout(deadline);
  if (outcome.error) throw new Error(`the page failed: ${outcome.error}`);
  const version = (outcome.userAgent.match(/Chrome\/([0-9.]+)/) ?? [])[1] ?? outcome.userAgent;
  const results = {};
  for (const r of outcome.rounds.filter((r) => !r.warmup)) {
    const at = ((results[r.transport] ??= {})[r.stream] ??= { resub: [], raw: [] });
    at[r.reader].push(r);
  }

  const describe = {
    live: "live: subscribed first, then the fixture publishes as fast as it can",
    replay: "replay: published first, then subscribed from the cursor before them",
  };
  const rawName = {
    ws: "`WebSocket` + `JSON.parse`",
    sse: "`EventSource` + `JSON.parse`",
    poll: "`fetch` poll after poll + `response.json()`",
  };
  lines.push("## Browser throughput");
  lines.push("");
  lines.push(
    `Events per second received in headless Chromium ${version}, started with no DevTools protocol attached ` +
      "(the page times each round with `performance.now()` and posts the figures to the bench runner), " +
      "through the resub npm package (`new Client(url, {transports: [t]})`, `subscribe(channel, {from})`, " +
      "`for await`) against a plain loop speaking the protocol on the same transport, both reading each " +
      `event's data, on the same ${fmt(EVENTS)}-event stream from the fixture on loopback, timed from the first ` +
      `to the last event; one warm-up round each, then ${ROUNDS} measured rounds per reader in ABBA order, a ` +
      `fresh channel each round (resub at commit \`${process.env.BENCH_COMMIT ?? "unknown"}\`).`,
  );
  lines.push("");
  lines.push("| transport | stream | reader | events/s (median) | min–max | first→last (median) | resub / raw |");
  lines.push("|---|---|---|---:|---:|---:|---:|");
  for (const transport of TRANSPORTS) {
    for (const stream of STREAMS) {
      const { resub, raw } = results[transport][stream];
      const rate = (rs) => rs.map((r) => r.perSec);
      const pairs = resub.map((r, i) => r.perSec / raw[i].perSec);
      const ratio = median(rate(resub)) / median(rate(raw));
      for (const [reader, rs] of [["resub", resub], ["raw", raw]]) {
        const xs = rate(rs);
        const cell =
          reader === "resub" ? `**${fx(ratio)}** (pairs ${fx(Math.min(...pairs))}–${fx(Math.max(...pairs))})` : "1.00×";
        lines.push(
          `| ${transport} | ${stream} | ${reader === "raw" ? rawName[transport] : "resub"} | ${fmt(median(xs))} | ` +
            `${fmt(Math.min(...xs))}–${fmt(Math.max(...xs))} | ${fmt(median(rs.map((r) => r.ms)))} ms | ${cell} |`,
        );
      }
    }
  }
  lines.push("");
  for (const transport of TRANSPORTS) {
    for (const stream of STREAMS) {
      const rs = [...results[transport][stream].resub, ...results[transport][stream].raw];
      const all = rs.map((r) => r.pubPerSec);
      const fastest = Math.max(...rs.map((r) => r.perSec));
      const limit =
        fastest >= 0.9 * median(all)
          ? "close to the readers' rate: the publisher may be the limit"
          : "faster than either reader, so the reader is the limit";
      lines.push(
        `- ${transport}, ${describe[stream]}; the fixture published at ${fmt(median(all))} events/s ` +
          `(median, ${fmt(Math.min(...all))}–${fmt(Math.max(...all))}), ${limit}.`,
      );
      const extra = results[transport][stream].resub.filter((r) => r.connections > 1).length;
      if (extra > 0) {
        lines.push(
          `- ${transport}, ${stream}: in ${extra} of ${ROUNDS} resub rounds the client fell a full queue behind, ` +
            "closed the connection and resumed from its cursor on a new one (its back-pressure); those rounds " +
            "include the reconnect.",
        );
      }
    }
  }
  lines.push(
    "- resub / raw: the ratio of the medians; in brackets the lowest and highest ratio of a round's pair.",
  );
} finally {
  browser.kill("SIGTERM");
  server.close();
  await rm(profile, { recursive: true, force: true }).catch(() => {});
}
const text = lines.join("\n") + "\n";
console.log("\n" + text);
if (process.env.BENCH_OUT) await writeFile(process.env.BENCH_OUT, text);
// The fixture's child process and the page's sockets may hold the event loop
// open; the measurement is done.
process.exit(0);
