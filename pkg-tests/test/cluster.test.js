// The installed `resub` package in Chromium against two fixture nodes
// sharing their channels on Redis: a client on node A with node B as its
// other endpoint, a publisher on B at a steady rate, node A killed (SIGKILL).
// The client moves to B and gets every event exactly once and in order; a
// client that knew only A leaves presence within the TTL.
//
// Needs redis-server (scripts/test.sh installs it) and the fixture binary
// (RESUB_FIXTURE_BIN, set by run.sh).
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { finishCollect, pageForTests, spawnUntil, startRedis, uniqueChannel, waitUntil } from "../lib/harness.js";

const FIXTURE_BIN = process.env.RESUB_FIXTURE_BIN;
/** The nodes' presence TTL. */
const TTL_MS = 3000;

const children = [];
let page;

async function startNode(redis, prefix) {
  const args = ["--addr", "127.0.0.1:0", "--heartbeat-ms", "500", "--redis", redis, "--redis-prefix", prefix];
  args.push("--presence-ttl-ms", String(TTL_MS));
  const { child, line } = await spawnUntil(children, FIXTURE_BIN, args, /^listening on /);
  return { child, url: line.replace(/^listening on /, "") };
}

before(() => {
  if (!FIXTURE_BIN) throw new Error("RESUB_FIXTURE_BIN is not set: run the tests with `bash pkg-tests/run.sh`");
});
pageForTests(
  (p) => (page = p),
  async () => {
    for (const c of children) c.kill("SIGKILL");
  },
);

async function publishTo(node, channel, data) {
  const res = await fetch(`${node}/publish/${channel}`, { method: "POST", body: data });
  const text = await res.text();
  if (!res.ok) throw new Error(`publish to ${node}: ${res.status} ${text}`);
  return JSON.parse(text).id;
}

/** Presence messages collected by `key`, as "join x" / "leave x". */
const presenceOf = (key) =>
  page.evaluate((k) => window.runs[k].messages.filter((m) => "presence" in m).map((m) => `${m.presence} ${m.clientId}`), key);

test("a node is killed: the client moves to the other endpoint with nothing lost or repeated, presence drops the stranded client", { timeout: 90_000 }, async () => {
  const redis = await startRedis(children);
  const prefix = uniqueChannel("npm");
  const a = await startNode(redis, prefix);
  const b = await startNode(redis, prefix);
  const channel = uniqueChannel("ticks");
  const backoff = { baseMs: 100, factor: 2, capMs: 1000 };

  // Watches presence from node B (callbacks: it outlives the "end" marker).
  await page.evaluate(
    ({ b, channel, backoff }) => {
      const run = { messages: [] };
      window.runs.w = run;
      run.client = new window.resub.Client(b, { clientId: "watcher", backoff });
      run.client.subscribe(channel).on("presence", (m) => run.messages.push(m));
    },
    { b: b.url, channel, backoff },
  );
  const start0 = await publishTo(b.url, channel, "0");
  await page.evaluate(
    ({ a, b, channel, from, backoff }) =>
      window.collect("x", a, { endpoints: [b], clientId: "x", presenceData: '{"moves":true}', backoff }, channel, from),
    { a: a.url, b: b.url, channel, from: start0, backoff },
  );
  await page.evaluate(({ a, channel, backoff }) => window.collect("y", a, { clientId: "y", backoff }, channel), {
    a: a.url,
    channel,
    backoff,
  });
  await waitUntil(20_000, "x and y to join, as seen from node B", async () => {
    const seen = await presenceOf("w");
    return seen.includes("join x") && seen.includes("join y");
  });

  // A steady publisher on B.
  let stop = false;
  let last = 0;
  const publisher = (async () => {
    while (!stop) {
      last += 1;
      await publishTo(b.url, channel, String(last));
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
  })();
  const eventsOf = (key) =>
    page.evaluate((k) => window.runs[k].messages.filter((m) => "id" in m && m.data !== "end").length, key);

  await waitUntil(20_000, "100 events on node A", async () => (await eventsOf("x")) >= 100);
  const before = await page.evaluate(() => window.runs.x.states.filter((s) => s.state === "connected"));
  assert.equal(before.at(-1).endpoint, a.url, "on node A before the crash");
  a.child.kill("SIGKILL");
  const killed = Date.now();

  await waitUntil(20_000, "x connected to node B", () =>
    page.evaluate((b) => window.runs.x.states.some((s) => s.state === "connected" && s.endpoint === b), b.url),
  );
  const atFailover = await eventsOf("x");
  await waitUntil(20_000, "100 more events on node B", async () => (await eventsOf("x")) >= atFailover + 100);
  stop = true;
  await publisher;

  // Presence, while x is still connected: y (stranded on A) leaves within
  // the TTL of the crash; x, which moved, never left.
  await waitUntil(TTL_MS + 2_000, "y to leave", async () => (await presenceOf("w")).includes("leave y"));
  const leftAfter = Date.now() - killed;
  assert.ok(leftAfter <= TTL_MS, `y left ${leftAfter} ms after the crash; the TTL is ${TTL_MS} ms`);
  assert.ok(!(await presenceOf("w")).includes("leave x"), "x, which moved, never left");
  const members = await page.evaluate((channel) => window.runs.w.client.presence(channel), channel);
  assert.deepEqual(members, [
    { clientId: "watcher", data: "" },
    { clientId: "x", data: '{"moves":true}' },
  ]);

  await publishTo(b.url, channel, "end");
  const { messages, error } = await finishCollect(page, "x", 30_000);
  assert.equal(error, null);
  const events = messages.filter((m) => "id" in m);
  assert.ok(messages.every((m) => !("reset" in m)), "no reset: nothing was lost");
  assert.deepEqual(
    events.map((m) => m.data),
    Array.from({ length: last }, (_, i) => String(i + 1)),
    "every event exactly once, in order",
  );
  console.log(`${events.length} events exactly once (${events.length - atFailover} after failing over); y left presence ${leftAfter} ms after the crash`);
  await page.evaluate(async () => {
    await window.runs.y.client.close();
    await window.runs.w.client.close();
  });
});
