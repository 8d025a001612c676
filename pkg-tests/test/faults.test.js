// The installed `resub` package in Chromium against the fixture's faults:
// dropped connections on every transport, and fallback when WebSocket
// upgrades are refused.
import { test, beforeEach } from "node:test";
import assert from "node:assert/strict";
import {
  FIXTURE_URL,
  dropAll,
  enableAllTransports,
  finishCollect,
  fixtureStats,
  pageForTests,
  publish,
  publishAll,
  setTransport,
  uniqueChannel,
  waitUntil,
} from "../lib/harness.js";

let page;
pageForTests((p) => (page = p), enableAllTransports);

beforeEach(async () => {
  await enableAllTransports();
});

/** The fixture's counter of open connections of one transport. */
const OPEN_COUNTER = { ws: "websocket_open", sse: "sse_open", poll: "polls_held" };

for (const transport of ["ws", "sse", "poll"]) {
  test(`drops are survived on ${transport}: 1..12 arrive exactly once and in order`, { timeout: 60_000 }, async () => {
    const channel = uniqueChannel(`drop-${transport}`);
    const key = `drop-${transport}`;
    const start = await publish(channel, "0");
    const options = {
      transports: [transport],
      backoff: { baseMs: 100, factor: 2, capMs: 1000 },
      upgradeProbeMs: false,
    };
    await page.evaluate(
      ({ key, url, options, channel, from }) => window.collect(key, url, options, channel, from),
      { key, url: FIXTURE_URL, options, channel, from: start },
    );
    const numbers = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => String(from + i));
    await publishAll(channel, numbers(1, 4));

    // Mid-stream: some events delivered, the connection (or held poll) open.
    await page.waitForFunction((k) => window.runs[k].messages.length >= 2, key, { timeout: 20_000 });
    await waitUntil(10_000, `an open ${transport} connection`, async () => (await fixtureStats())[OPEN_COUNTER[transport]] >= 1);
    const dropped = await dropAll();
    assert.ok(dropped >= 1, `the drop closed ${dropped} connections`);

    // Published while the client reconnects: replayed after the resume.
    await publishAll(channel, numbers(5, 8));
    if (transport !== "poll") {
      // A dropped held poll is invisible to the page: Chromium retries a GET
      // whose reused keep-alive socket closes before any answer, so the
      // client just sees a slower poll. WebSocket and SSE see the drop.
      await page.waitForFunction(
        (k) => {
          const states = window.runs[k].states;
          const drop = states.findIndex((s) => s.state === "disconnected");
          return drop >= 0 && states.slice(drop + 1).some((s) => s.state === "connected");
        },
        key,
        { timeout: 20_000 },
      );
    }
    await publishAll(channel, numbers(9, 12));
    await publish(channel, "end");

    const { messages, states, error } = await finishCollect(page, key, 30_000);
    assert.equal(error, null);
    assert.ok(
      messages.every((m) => !("reset" in m)),
      `no reset expected: ${JSON.stringify(messages.filter((m) => "reset" in m))}`,
    );
    assert.deepEqual(
      messages.map((m) => m.data),
      numbers(1, 12),
    );
    assert.equal(new Set(messages.map((m) => m.id)).size, 12, "ids are distinct");
    const connected = states.filter((s) => s.state === "connected");
    if (transport !== "poll") {
      assert.ok(connected.length >= 2, `reconnected after the drop: ${JSON.stringify(states)}`);
    }
    assert.ok(
      connected.every((s) => s.transport === transport),
      `only ${transport} was used: ${JSON.stringify(connected)}`,
    );
  });
}

test("fallback: with WebSocket refused, an auto client connects over sse with fallback.from = ws", { timeout: 30_000 }, async () => {
  await setTransport("websocket", false);
  try {
    const channel = uniqueChannel("fallback");
    const { states, current } = await page.evaluate(
      async ({ url, channel }) => {
        const client = new window.resub.Client(url, { upgradeProbeMs: false });
        const states = [];
        let connected;
        const isConnected = new Promise((resolve) => (connected = resolve));
        client.onState((s) => {
          states.push(s);
          if (s.state === "connected") connected();
        });
        client.subscribe(channel);
        try {
          await window.within(15_000, "connected", isConnected);
          return { states: states.slice(), current: client.state };
        } finally {
          await client.close();
        }
      },
      { url: FIXTURE_URL, channel },
    );
    const last = states.at(-1);
    assert.equal(last.state, "connected", JSON.stringify(states));
    assert.equal(last.transport, "sse", JSON.stringify(states));
    assert.equal(last.fallback?.from, "ws", JSON.stringify(last));
    assert.equal(typeof last.fallback.reason, "string");
    assert.ok(
      states.some((s) => s.state === "connecting" && s.transport === "ws"),
      `ws was tried first: ${JSON.stringify(states)}`,
    );
    assert.equal(current.transport, "sse");
  } finally {
    await setTransport("websocket", true);
  }
});

for (const transport of ["ws", "sse", "poll"]) {
  test(`a cursor ahead of the head on ${transport}: one reset to the head, then every later event`, { timeout: 30_000 }, async () => {
    const channel = uniqueChannel(`ahead-${transport}`);
    const key = `ahead-${transport}`;
    const head = await publish(channel, "0");
    const epoch = head.slice(0, head.lastIndexOf("-"));
    const options = { transports: [transport], upgradeProbeMs: false };
    await page.evaluate(
      ({ key, url, options, channel, from }) => window.collect(key, url, options, channel, from),
      { key, url: FIXTURE_URL, options, channel, from: `${epoch}-99` },
    );
    // The reset comes first; events published after it must all follow.
    await page.waitForFunction((k) => window.runs[k].messages.length >= 1, key, { timeout: 20_000 });
    const numbers = Array.from({ length: 29 }, (_, i) => String(i + 1));
    await publishAll(channel, numbers);
    await publish(channel, "end");
    const { messages, error } = await finishCollect(page, key, 20_000);
    assert.equal(error, null);
    assert.deepEqual(messages[0], { type: "reset", channel, reset: "unknown_cursor", head });
    assert.deepEqual(
      messages.slice(1).map((m) => m.data),
      numbers,
    );
  });
}

// A browser socket cannot be paused: while the application does not read, the
// driver holds what arrives, and cuts the connection once too much is held;
// when the application reads again, the core resumes from its cursor. Every
// event arrives, once, in order.
for (const transport of ["ws", "sse", "poll"]) {
  test(`a paused reader on ${transport}: 5,000 events published while it does not read all arrive, once, in order`, { timeout: 90_000 }, async () => {
    const channel = uniqueChannel(`paused-${transport}`);
    const start = await publish(channel, "start");
    await page.evaluate(
      async ({ url, transport, channel, start }) => {
        const client = new window.resub.Client(url, { transports: [transport], upgradeProbeMs: false });
        const connected = new Promise((resolve) => client.onState((s) => s.state == "connected" && resolve()));
        window.paused = { client, sub: client.subscribe(channel, { from: start }) };
        await window.within(15_000, "connected", connected);
      },
      { url: FIXTURE_URL, transport, channel, start },
    );
    const plan = { seed: 1, events: 5000, faults: 0, channels: [channel], rate: 1_000_000, kinds: [] };
    const res = await fetch(`${FIXTURE_URL}/control/chaos`, { method: "POST", body: JSON.stringify(plan) });
    assert.ok(res.ok, `chaos plan: ${res.status}`);
    const report = await waitUntil(60_000, "the publisher to finish", async () => {
      const r = await (await fetch(`${FIXTURE_URL}/control/chaos`)).json();
      return r.done && r;
    });
    const end = report.channels[channel];
    // Only now does the application read.
    const got = await page.evaluate(
      async ({ head, published }) => {
        const { client, sub } = window.paused;
        const seqs = [];
        let resets = 0;
        try {
          await window.within(60_000, `${published} events`, (async () => {
            for await (const m of sub) {
              if (m.type == "reset") resets++;
              if (m.type != "event") continue;
              seqs.push(Number(m.id.split("-")[1]));
              if (m.id == head) break;
            }
          })());
        } finally {
          await client.close();
        }
        return { seqs, resets, connections: client.stats.connections };
      },
      end,
    );
    assert.equal(got.resets, 0, "no reset: the server still held every event");
    assert.equal(got.seqs.length, end.published, "every event");
    const first = Number(start.split("-")[1]) + 1;
    assert.ok(got.seqs.every((s, i) => s === first + i), "once each, in order");
    if (transport != "poll") assert.ok(got.connections >= 2, `the held messages cut the connection: ${got.connections} connection(s)`);
  });
}
