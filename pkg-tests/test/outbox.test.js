// The installed `resub` package in Chromium: the publish outbox (bounded,
// a typed error when full, everything applied once after a reconnect) and
// bearer tokens, fixed or from a provider, which ride in the URL where the
// browser cannot set a header.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  FIXTURE_URL,
  enableAllTransports,
  dropAll,
  finishCollect,
  pageForTests,
  publish,
  setTransport,
  uniqueChannel,
} from "../lib/harness.js";

let page;
pageForTests((p) => (page = p), async () => {
  await enableAllTransports().catch(() => {});
  await fetch(`${FIXTURE_URL}/control/tokens`, { method: "POST" });
});

test("the outbox holds publishes while disconnected, refuses past its bound, and sends them once on reconnect", { timeout: 60_000 }, async () => {
  const channel = uniqueChannel("outbox");
  const start = await publish(channel, "0");
  for (const name of ["websocket", "sse", "poll"]) await setTransport(name, false);
  await page.evaluate(
    ({ url, channel }) => {
      const client = new window.resub.Client(url, { maxPendingPublishes: 3, backoff: { baseMs: 50, capMs: 300 } });
      window.outbox = { client, results: [] };
      for (const data of ["a", "b", "c", "d"]) {
        client.publish(channel, data).then(
          (id) => window.outbox.results.push({ data, id }),
          (e) => window.outbox.results.push({ data, code: e.code }),
        );
      }
    },
    { url: FIXTURE_URL, channel },
  );
  await page.waitForFunction(() => window.outbox.results.length >= 1, null, { timeout: 10_000 });
  const early = await page.evaluate(() => window.outbox.results);
  assert.deepEqual(early, [{ data: "d", code: "publish_queue_full" }], "only the fourth is settled: refused at once");

  await enableAllTransports();
  await page.waitForFunction(() => window.outbox.results.length === 4, null, { timeout: 20_000 });
  const results = await page.evaluate(() => window.outbox.results);
  const ids = results.filter((r) => r.id).map((r) => r.id);
  assert.equal(new Set(ids).size, 3, JSON.stringify(results));

  await page.evaluate(
    ({ url, channel, from }) => window.collect("outbox", url, {}, channel, from),
    { url: FIXTURE_URL, channel, from: start },
  );
  await publish(channel, "end");
  const { messages } = await finishCollect(page, "outbox", 20_000);
  assert.deepEqual(messages.map((m) => m.data).sort(), ["a", "b", "c"], "applied once each");
  await page.evaluate(() => window.outbox.client.close());
});

for (const transport of ["ws", "sse", "poll"]) {
  test(`a token reaches the server on ${transport} (in the URL where headers are impossible)`, { timeout: 30_000 }, async () => {
    await fetch(`${FIXTURE_URL}/control/tokens?accept=browser-token`, { method: "POST" });
    try {
      const channel = uniqueChannel(`token-${transport}`);
      const start = await publish(channel, "0");
      await page.evaluate(
        ({ url, channel, from, transport }) =>
          window.collect("token", url, { transports: [transport], token: "browser-token", upgradeProbeMs: false }, channel, from),
        { url: FIXTURE_URL, channel, from: start, transport },
      );
      await publish(channel, "1");
      await publish(channel, "end");
      const { messages, error } = await finishCollect(page, "token", 20_000);
      assert.equal(error, null);
      assert.deepEqual(messages.map((m) => m.data), ["1"]);
      // A wrong token stops the client on every transport: the fixture tells
      // a browser in band (close code 4401, an `error` frame) what it would
      // otherwise hide behind a failed WebSocket or EventSource.
      const refused = await page.evaluate(
        async ({ url, channel, transport }) => {
          const client = new window.resub.Client(url, { transports: [transport], token: "wrong", upgradeProbeMs: false });
          const closed = new Promise((resolve) =>
            client.onState((s) => {
              // The error is a ResubError: its code is read here, in the page.
              if (s.state === "closed") resolve({ state: s.state, error: s.error && { code: s.error.code } });
            }),
          );
          client.subscribe(channel);
          return window.within(15_000, "the client to stop", closed);
        },
        { url: FIXTURE_URL, channel, transport },
      );
      assert.equal(refused.error?.code, "unauthorized", JSON.stringify(refused));
    } finally {
      await fetch(`${FIXTURE_URL}/control/tokens`, { method: "POST" });
    }
  });
}

for (const transport of ["ws", "sse", "poll"]) {
  test(`a token provider on ${transport}: asked again after a drop, a refused token replaced, nothing lost`, { timeout: 40_000 }, async () => {
    await fetch(`${FIXTURE_URL}/control/tokens?accept=t1`, { method: "POST" });
    try {
      const channel = uniqueChannel(`provider-${transport}`);
      const start = await publish(channel, "0");
      await page.evaluate(
        ({ url, channel, from, transport }) => {
          // t1, then t1 once more (by then expired), then t2.
          const queue = ["t1", "t1", "t2"];
          window.asked = [];
          const token = async () => {
            const t = queue.length > 1 ? queue.shift() : queue[0];
            window.asked.push(t);
            return t;
          };
          const options = { transports: [transport], token, upgradeProbeMs: false, backoff: { baseMs: 50, capMs: 300 } };
          window.collect("provider", url, options, channel, from);
        },
        { url: FIXTURE_URL, channel, from: start, transport },
      );
      await publish(channel, "1");
      await page.waitForFunction(() => window.runs.provider.messages.length === 1, null, { timeout: 10_000 });
      // The server now takes only t2, and every connection drops.
      await fetch(`${FIXTURE_URL}/control/tokens?accept=t2`, { method: "POST" });
      await dropAll();
      await publish(channel, "2");
      await publish(channel, "end");
      const { messages, states, error } = await finishCollect(page, "provider", 20_000);
      assert.equal(error, null);
      assert.deepEqual(messages.map((m) => m.data), ["1", "2"], "each event once, across the refusal");
      const asked = await page.evaluate(() => window.asked);
      assert.deepEqual(asked.slice(0, 3), ["t1", "t1", "t2"], "asked at the start, after the drop and after the refusal");
      const refusals = states.filter((s) => s.state === "disconnected" && /401|unauthorized/.test(s.detail));
      // One refusal, or two if the drop found no poll held and the stale
      // token was also refused before the drop was noticed.
      assert.ok(refusals.length >= 1, JSON.stringify(states));
    } finally {
      await fetch(`${FIXTURE_URL}/control/tokens`, { method: "POST" });
    }
  });
}

test("a token provider that keeps failing stops the client with unauthorized, never connecting", { timeout: 30_000 }, async () => {
  const result = await page.evaluate(async (url) => {
    let calls = 0;
    const token = () => {
      calls++;
      throw new Error("the identity provider is down");
    };
    const client = new window.resub.Client(url, { token, backoff: { baseMs: 20, capMs: 50 } });
    const states = [];
    const closed = new Promise((resolve) =>
      client.onState((s) => {
        states.push(s.state);
        if (s.state === "closed") resolve(s);
      }),
    );
    client.subscribe("never");
    const end = await window.within(15_000, "the client to stop", closed);
    return { code: end.error?.code, calls, states };
  }, FIXTURE_URL);
  assert.equal(result.code, "unauthorized");
  assert.equal(result.calls, 3, "three failures in a row stop it");
  assert.deepEqual(result.states, ["disconnected", "disconnected", "closed"], "no connection was tried");
});

test("offline, a failing token provider is not a refusal; back online it is asked again and the client resumes", { timeout: 40_000 }, async () => {
  await fetch(`${FIXTURE_URL}/control/tokens?accept=t1`, { method: "POST" });
  const context = page.context();
  try {
    const channel = uniqueChannel("provider-offline");
    const start = await publish(channel, "0");
    await page.evaluate(
      ({ url, channel, from }) => {
        window.tokenFailures = 0;
        // A provider that fetches its token, as an app's would: it fails
        // while the browser is offline.
        const token = async () => {
          try {
            await fetch(`${url}/control/stats`, { cache: "no-store" });
          } catch (e) {
            window.tokenFailures++;
            throw e;
          }
          return "t1";
        };
        const options = { transports: ["ws"], token, upgradeProbeMs: false, backoff: { baseMs: 20, capMs: 100 } };
        window.collect("offline", url, options, channel, from);
      },
      { url: FIXTURE_URL, channel, from: start },
    );
    await publish(channel, "1");
    await page.waitForFunction(() => window.runs.offline.messages.length === 1, null, { timeout: 10_000 });
    await context.setOffline(true);
    await dropAll();
    await page.waitForFunction(() => window.tokenFailures >= 1, null, { timeout: 10_000 });
    await publish(channel, "2");
    await context.setOffline(false);
    await publish(channel, "end");
    const { messages, states, error } = await finishCollect(page, "offline", 20_000);
    assert.equal(error, null, JSON.stringify(states));
    assert.deepEqual(messages.map((m) => m.data), ["1", "2"], "resumed from its cursor with a fresh token");
  } finally {
    await context.setOffline(false);
    await fetch(`${FIXTURE_URL}/control/tokens`, { method: "POST" });
  }
});

test("a token provider is not asked once the client is closed", { timeout: 20_000 }, async () => {
  const calls = await page.evaluate(async (url) => {
    let calls = 0;
    const client = new window.resub.Client(url, { token: () => (calls++, "t"), backoff: { baseMs: 200, capMs: 200 } });
    const connected = new Promise((resolve) => client.onState((s) => s.state === "connected" && resolve()));
    client.subscribe("closing");
    await window.within(10_000, "connected", connected);
    const before = calls;
    await client.close();
    // An online event asks a running client's provider, synchronously.
    window.dispatchEvent(new Event("online"));
    return { before, after: calls };
  }, FIXTURE_URL);
  assert.equal(calls.before, 1);
  assert.equal(calls.after, calls.before, "no ask after close");
});
