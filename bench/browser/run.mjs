// Browser throughput: events per second received in headless Chromium
// through the resub npm package against a plain WebSocket + JSON.parse loop,
// on the same stream from the same fixture server. Run by
// scripts/bench-browser.sh, which starts the fixture with --static pointing
// at a folder holding page/index.html and the installed package.
//
// Environment:
//   RESUB_FIXTURE_URL  the fixture (required), which also serves the page
//   BENCH_EVENTS       events per round (default 200000)
//   BENCH_ROUNDS       measured rounds per reader and stream (default 5)
//   BENCH_STREAMS      "live,replay" (default) or one of them
//   BENCH_OUT          where to write the Markdown fragment (default: stdout only)
//   BENCH_COMMIT       the commit measured, named in the fragment
//   RESUB_CHROMIUM     the browser (default /usr/bin/chromium)
//
// Streams: "live" subscribes first, then the fixture publishes the events as
// fast as it can (a chaos run with 0 faults and an unreachable rate), so the
// publisher can be the limit; "replay" publishes first and then subscribes
// from the cursor before them, so the client is the limit.
import { writeFile } from "node:fs/promises";
import { chromium } from "playwright-core";

const FIXTURE = (process.env.RESUB_FIXTURE_URL ?? "").replace(/\/+$/, "");
if (!FIXTURE) throw new Error("RESUB_FIXTURE_URL is not set: run bash scripts/bench-browser.sh");
const EVENTS = Number(process.env.BENCH_EVENTS ?? 200_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const STREAMS = (process.env.BENCH_STREAMS ?? "live,replay").split(",").filter(Boolean);
const RATE = 1_000_000;
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
  "--js-flags=--expose-gc",
];

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function http(method, path, body) {
  const res = await fetch(FIXTURE + path, { method, body });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return JSON.parse(text);
}

/** Waits until the current chaos run (if any) has finished; its report. */
async function chaosDone() {
  for (;;) {
    const res = await fetch(FIXTURE + "/control/chaos");
    if (res.status === 404) return null;
    const report = await res.json();
    if (report.done) return report;
    await sleep(20);
  }
}

/** Publishes EVENTS events on `channel` as fast as the fixture can. */
async function startPublishing(channel) {
  await chaosDone();
  const plan = { seed: 1, events: EVENTS, faults: 0, channels: [channel], rate: RATE, kinds: [] };
  await http("POST", "/control/chaos", JSON.stringify(plan));
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const fmt = (x) => Math.round(x).toLocaleString("en-US");
const fx = (x) => `${x.toFixed(2)}×`;

let seq = 0;

/** One round: a fresh channel, one reader, EVENTS events. */
async function round(page, stream, reader) {
  const key = `r${++seq}`;
  const channel = `bench-${key}-${Date.now().toString(36)}`;
  // The channel's first event; both readers resume after it, so every event
  // of the run comes as a replay or live, whichever is due.
  const { id: cursor } = await http("POST", `/publish/${channel}`, "start");
  let publisher = null;
  if (stream === "replay") {
    await startPublishing(channel);
    publisher = await chaosDone();
  }
  await page.evaluate(([k, r, c, cur, n]) => window.bench.start(k, r, c, cur, n), [key, reader, channel, cursor, EVENTS]);
  await page.evaluate((k) => window.bench.ready(k), key);
  if (stream === "live") {
    await sleep(100);
    await startPublishing(channel);
  }
  const result = await Promise.race([
    page.evaluate((k) => window.bench.done(k), key),
    sleep(180_000).then(() => {
      throw new Error(`${stream}/${reader}: no end after 180 s`);
    }),
  ]);
  if (stream === "live") publisher = await chaosDone();
  await page.evaluate(() => window.gc?.());
  const perSec = ((result.count - 1) * 1000) / result.ms;
  const pubPerSec = (publisher.published * 1000) / Math.max(1, publisher.duration_ms);
  console.log(
    `${stream.padEnd(6)} ${reader.padEnd(5)} ${fmt(perSec).padStart(10)} events/s  ${result.ms.toFixed(0).padStart(6)} ms` +
      `  (publisher ${fmt(pubPerSec)} events/s, ${result.connections} connection(s))`,
  );
  return { perSec, ms: result.ms, pubPerSec, connections: result.connections };
}

const browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, timeout: 30_000 });
const lines = [];
try {
  const page = await browser.newPage();
  const problems = [];
  page.on("pageerror", (e) => problems.push(e.message));
  await page.goto(FIXTURE + "/", { timeout: 15_000 });
  await page.waitForFunction(() => window.ready === true, null, { timeout: 15_000 }).catch((e) => {
    throw new Error(`the page did not load resub: ${problems.join("; ") || e.message}`);
  });
  const version = browser.version();
  const results = {};
  for (const stream of STREAMS) {
    // One unmeasured round each first: JIT and wasm tiers warm up.
    console.log(`${stream}: warm-up`);
    await round(page, stream, "resub");
    await round(page, stream, "raw");
    const got = { resub: [], raw: [] };
    for (let i = 0; i < ROUNDS; i++) {
      // ABBA order, so neither reader always runs first in a pair.
      const order = i % 2 === 0 ? ["resub", "raw"] : ["raw", "resub"];
      for (const reader of order) got[reader].push(await round(page, stream, reader));
    }
    results[stream] = got;
  }

  const describe = {
    live: "live: subscribed first, then the fixture publishes as fast as it can",
    replay: "replay: published first, then subscribed from the cursor before them",
  };
  lines.push("## Browser throughput");
  lines.push("");
  lines.push(
    `Events per second received in headless Chromium ${version} through the resub npm package ` +
      "(`new Client(url, {transports: [\"ws\"]})`, `subscribe(channel, {from})`, `for await`) against a plain " +
      "`WebSocket` + `JSON.parse` loop speaking the protocol, both reading each event's data, on the same " +
      `${fmt(EVENTS)}-event stream from the fixture on loopback, timed from the first to the last event; ` +
      `one warm-up round each, then ${ROUNDS} measured rounds per reader in ABBA order, a fresh channel each round ` +
      `(resub at commit \`${process.env.BENCH_COMMIT ?? "unknown"}\`).`,
  );
  lines.push("");
  lines.push("| stream | reader | events/s (median) | min–max | first→last (median) | resub / raw |");
  lines.push("|---|---|---:|---:|---:|---:|");
  for (const stream of STREAMS) {
    const { resub, raw } = results[stream];
    const rate = (rs) => rs.map((r) => r.perSec);
    const pairs = resub.map((r, i) => r.perSec / raw[i].perSec);
    const ratio = median(rate(resub)) / median(rate(raw));
    for (const [reader, rs] of [["resub", resub], ["raw", raw]]) {
      const xs = rate(rs);
      const cell =
        reader === "resub" ? `${fx(ratio)} (pairs ${fx(Math.min(...pairs))}–${fx(Math.max(...pairs))})` : "1.00×";
      lines.push(
        `| ${stream} | ${reader === "raw" ? "raw WebSocket" : "resub"} | ${fmt(median(xs))} | ` +
          `${fmt(Math.min(...xs))}–${fmt(Math.max(...xs))} | ${fmt(median(rs.map((r) => r.ms)))} ms | ${cell} |`,
      );
    }
  }
  lines.push("");
  for (const stream of STREAMS) {
    const all = [...results[stream].resub, ...results[stream].raw].map((r) => r.pubPerSec);
    const fastest = Math.max(...[...results[stream].resub, ...results[stream].raw].map((r) => r.perSec));
    const limit =
      fastest >= 0.9 * median(all)
        ? "the publisher is close to the readers' rate: it may be the limit in this stream"
        : "faster than either reader, so the reader is the limit";
    lines.push(
      `- ${describe[stream]}; the fixture published at ${fmt(median(all))} events/s ` +
        `(median, ${fmt(Math.min(...all))}–${fmt(Math.max(...all))}), ${limit}.`,
    );
  }
  for (const stream of STREAMS) {
    const extra = results[stream].resub.filter((r) => r.connections > 1).length;
    if (extra > 0) {
      lines.push(
        `- ${stream}: in ${extra} of ${ROUNDS} resub rounds the client fell a full queue behind, closed the ` +
          "connection and resumed from its cursor on a new one (its back-pressure); those rounds include the reconnect.",
      );
    }
  }
  lines.push(
    "- resub / raw: the ratio of the medians; in brackets the lowest and highest ratio of a round's pair.",
  );
} finally {
  await browser.close();
}
const text = lines.join("\n") + "\n";
console.log("\n" + text);
if (process.env.BENCH_OUT) await writeFile(process.env.BENCH_OUT, text);
// The fixture's child process and the page's sockets may hold the event loop
// open; the measurement is done.
process.exit(0);
