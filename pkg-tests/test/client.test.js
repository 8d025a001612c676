// The installed `resub` package in Chromium against the fixture server:
// delivery, resume from a cursor, closing, states, errors and callbacks.
//
// Every subscription that must see events published from node starts from a
// cursor (the id of a marker event published first): a live subscription has
// no point at which it is known to be registered on the server, so events
// published right after it could race it.
import { test, beforeEach } from "node:test";
import assert from "node:assert/strict";
import {
  FIXTURE_URL,
  enableAllTransports,
  finishCollect,
  pageForTests,
  publish,
  publishAll,
  uniqueChannel,
} from "../lib/harness.js";

let page;
pageForTests((p) => (page = p));

beforeEach(async () => {
  await enableAllTransports();
});

test("events arrive: five events published over HTTP reach a for-await loop with their exact data", { timeout: 30_000 }, async () => {
  const channel = uniqueChannel("arrive");
  const start = await publish(channel, "start");
  await page.evaluate(({ url, channel, from }) => window.collect("arrive", url, {}, channel, from), {
    url: FIXTURE_URL,
    channel,
    from: start,
  });
  const data = ["one", "two ✓ ünïcødé", '{"json":[1,2,3]}', "line\nbreak", ""];
  const ids = [];
  for (const [i, d] of data.entries()) ids.push(await publish(channel, d, i === 2 ? "custom" : undefined));
  await publish(channel, "end");

  const { messages, error } = await finishCollect(page, "arrive", 20_000);
  assert.equal(error, null);
  assert.deepEqual(
    messages,
    data.map((d, i) => ({ type: "event", channel, id: ids[i], event: i === 2 ? "custom" : "message", data: d })),
  );
  for (const m of messages) assert.deepEqual(Object.keys(m).sort(), ["channel", "data", "event", "id", "type"]);
});

test("resume from a cursor: subscribing from the id of b delivers c, d, e", { timeout: 30_000 }, async () => {
  const channel = uniqueChannel("resume");
  const ids = await publishAll(channel, ["a", "b", "c", "d", "e"]);
  await page.evaluate(({ url, channel, from }) => window.collect("resume", url, {}, channel, from), {
    url: FIXTURE_URL,
    channel,
    from: ids[1],
  });
  await publish(channel, "end");
  const { messages, error } = await finishCollect(page, "resume", 20_000);
  assert.equal(error, null);
  assert.deepEqual(
    messages.map((m) => m.data),
    ["c", "d", "e"],
  );
  assert.deepEqual(
    messages.map((m) => m.id),
    ids.slice(2),
  );
});

test("for await ends on close: client.close() finishes a pending loop", { timeout: 30_000 }, async () => {
  const channel = uniqueChannel("close");
  const result = await page.evaluate(
    async ({ url, channel }) => {
      const client = new window.resub.Client(url);
      let connected;
      const isConnected = new Promise((resolve) => (connected = resolve));
      client.onState((s) => s.state === "connected" && connected());
      const sub = client.subscribe(channel);
      let received = 0;
      let settled = false;
      const loop = (async () => {
        for await (const _ of sub) received++;
        settled = true;
        return "ended";
      })();
      await window.within(10_000, "connected", isConnected);
      const pendingBeforeClose = !settled;
      await window.within(10_000, "client.close()", client.close());
      const outcome = await window.within(5_000, "the loop to end", loop).catch((e) => e.message);
      return { outcome, pendingBeforeClose, received, state: client.state };
    },
    { url: FIXTURE_URL, channel },
  );
  assert.deepEqual(result, { outcome: "ended", pendingBeforeClose: true, received: 0, state: { state: "closed" } });
});

test("state changes arrive: onState sees connecting, then connected with a transport", { timeout: 30_000 }, async () => {
  const channel = uniqueChannel("state");
  const { states, current } = await page.evaluate(
    async ({ url, channel }) => {
      const client = new window.resub.Client(url);
      const states = [];
      let connected;
      const isConnected = new Promise((resolve) => (connected = resolve));
      const stop = client.onState((s) => {
        states.push(s);
        if (s.state === "connected") connected();
      });
      client.subscribe(channel);
      try {
        await window.within(10_000, "connected", isConnected);
        return { states: states.slice(), current: client.state };
      } finally {
        stop();
        await client.close();
      }
    },
    { url: FIXTURE_URL, channel },
  );
  const names = states.map((s) => s.state);
  assert.equal(names[0], "connecting", JSON.stringify(states));
  assert.equal(typeof states[0].transport, "string");
  assert.equal(typeof states[0].attempt, "number");
  const last = states.at(-1);
  assert.equal(last.state, "connected", JSON.stringify(states));
  assert.ok(["ws", "sse", "poll"].includes(last.transport), JSON.stringify(last));
  assert.equal(last.transport, "ws", "with every transport allowed the first choice, ws, connects");
  assert.equal(current.state, "connected");
  assert.equal(current.transport, last.transport);
});

test("errors: a bad URL throws and a bad channel rejects, both as ResubError with a code", { timeout: 30_000 }, async () => {
  const result = await page.evaluate(async (url) => {
    const describe = (e) => ({
      isResubError: e instanceof window.resub.ResubError,
      isError: e instanceof Error,
      name: e?.name,
      code: e?.code,
      hasMessage: typeof e?.message === "string" && e.message.length > 0,
    });
    const out = {};
    try {
      new window.resub.Client("not a url");
      out.constructor = "no error";
    } catch (e) {
      out.constructor = describe(e);
    }
    const client = new window.resub.Client(url);
    try {
      await window.within(10_000, "publish to fail", client.publish("bad channel!", "x"));
      out.publish = "resolved";
    } catch (e) {
      out.publish = describe(e);
    } finally {
      await client.close();
    }
    return out;
  }, FIXTURE_URL);
  const expected = (code) => ({ isResubError: true, isError: true, name: "ResubError", code, hasMessage: true });
  assert.deepEqual(result.constructor, expected("invalid_url"));
  assert.deepEqual(result.publish, expected("invalid_argument"));
});

test("onState keeps calling a listener after its unsubscribe function is garbage-collected", { timeout: 30_000 }, async () => {
  const channel = uniqueChannel("gc");
  await page.evaluate(
    ({ url, channel }) => {
      const client = new window.resub.Client(url);
      window.gcRun = { client, states: [] };
      // The returned unsubscribe function is dropped, as in the README.
      client.onState((s) => window.gcRun.states.push(s.state));
      window.gcRun.sub = client.subscribe(channel);
    },
    { url: FIXTURE_URL, channel },
  );
  await page.waitForFunction(() => window.gcRun.states.includes("connected"), null, { timeout: 10_000 });
  // Collect garbage until an object that became unreachable at the same time
  // has been finalized: by then every FinalizationRegistry callback due for
  // that collection has run.
  const collected = await page.evaluate(async () => {
    let finalized = false;
    const registry = new FinalizationRegistry(() => (finalized = true));
    registry.register({}, "sentinel");
    for (let round = 0; round < 50 && !finalized; round++) {
      window.gc();
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
    return finalized;
  });
  assert.ok(collected, "the garbage collector ran");
  const states = await page.evaluate(async () => {
    await window.within(10_000, "client.close()", window.gcRun.client.close());
    return window.gcRun.states;
  });
  assert.deepEqual(states.slice(-2), ["connected", "closed"], `states seen: ${JSON.stringify(states)}`);
});

test('sub.on("event", fn) receives events, and "end" after close()', { timeout: 30_000 }, async () => {
  const channel = uniqueChannel("on");
  const start = await publish(channel, "start");
  const result = await page.evaluate(
    async ({ url, channel, from }) => {
      const client = new window.resub.Client(url);
      try {
        const sub = client.subscribe(channel, { from });
        const events = [];
        const errors = [];
        let gotThree;
        const three = new Promise((resolve) => (gotThree = resolve));
        let ended;
        const end = new Promise((resolve) => (ended = resolve));
        const returned = sub.on("event", (m) => {
          events.push(m);
          if (events.length === 3) gotThree();
        });
        sub.on("error", (e) => errors.push(e.code));
        sub.on("end", () => ended());
        // Published through the page's own client, which also checks publish().
        const ids = [];
        ids.push(await client.publish(channel, "x"));
        ids.push(await client.publish(channel, "y"));
        ids.push(await client.publish(channel, "z", { event: "note" }));
        await window.within(10_000, "three events", three);
        sub.close();
        await window.within(5_000, "the end callback", end);
        return { events, ids, errors, chained: returned === sub, channelProp: sub.channel };
      } finally {
        await client.close();
      }
    },
    { url: FIXTURE_URL, channel, from: start },
  );
  assert.equal(result.chained, true, "on() returns the subscription");
  assert.equal(result.channelProp, channel);
  assert.deepEqual(result.errors, []);
  assert.ok(result.ids.every((id) => typeof id === "string" && id.length > 0), JSON.stringify(result.ids));
  assert.deepEqual(result.events, [
    { type: "event", channel, id: result.ids[0], event: "message", data: "x" },
    { type: "event", channel, id: result.ids[1], event: "message", data: "y" },
    { type: "event", channel, id: result.ids[2], event: "note", data: "z" },
  ]);
});

test("bad options throw ResubError invalid_argument, naming the option", { timeout: 30_000 }, async () => {
  const results = await page.evaluate((url) => {
    const cases = [
      { transports: ["http"] },
      { transports: [] },
      { backoff: { baseMs: -1 } },
      { openTimeoutMs: "soon" },
      { endpoints: "http://b" },
      { endpoints: ["http://b c"] },
      { clientId: 42 },
      { clientId: "has space" },
    ];
    return cases.map((options) => {
      try {
        new window.resub.Client(url, options).close();
        return "accepted";
      } catch (e) {
        return `${e instanceof window.resub.ResubError} ${e.code} ${e.message}`;
      }
    });
  }, FIXTURE_URL);
  assert.match(results[0], /^true invalid_argument transports/);
  assert.match(results[1], /^true invalid_argument transports/);
  assert.match(results[2], /^true invalid_argument baseMs/);
  assert.match(results[3], /^true invalid_argument openTimeoutMs/);
  assert.match(results[4], /^true invalid_argument endpoints/);
  assert.match(results[5], /^true invalid_argument endpoints/);
  assert.match(results[6], /^true invalid_argument clientId/);
  assert.match(results[7], /^true invalid_client_id /, "the core checks the id itself");
});
