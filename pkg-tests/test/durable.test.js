// Durable cursors in the browser: a page subscribed with
// `cursors: "localStorage"` is reloaded mid-stream, with events in flight,
// and subscribes again; across the reload every event arrives exactly once
// and in order. What the page took before the reload is kept in
// sessionStorage by the same task that took it, so the reload cannot fall
// between the two.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  FIXTURE_URL,
  finishCollect,
  installPageHelpers,
  pageForTests,
  publish,
  publishAll,
  uniqueChannel,
  waitUntil,
} from "../lib/harness.js";

let page;
pageForTests((p) => (page = p));

/** Starts a client with localStorage cursors that records what it takes in sessionStorage. */
function startDurable(transport, channel) {
  return page.evaluate(
    ({ url, transport, channel }) => {
      const client = new window.resub.Client(url, {
        transports: [transport],
        cursors: "localStorage",
        backoff: { baseMs: 100, capMs: 1000 },
        upgradeProbeMs: false,
      });
      window.durable = client;
      const key = `taken:${channel}`;
      client.subscribe(channel).on("event", (m) => {
        const taken = JSON.parse(sessionStorage.getItem(key) ?? "[]");
        taken.push(m.data);
        sessionStorage.setItem(key, JSON.stringify(taken));
      });
    },
    { url: FIXTURE_URL, transport, channel },
  );
}

const taken = (channel) => page.evaluate((c) => JSON.parse(sessionStorage.getItem(`taken:${c}`) ?? "[]"), channel);

for (const transport of ["ws", "sse", "poll"]) {
  test(`a page reload mid-stream resumes from localStorage on ${transport}: nothing lost or repeated`, { timeout: 60_000 }, async () => {
    const channel = uniqueChannel(`reload-${transport}`);
    const start = await publish(channel, "0");
    // As if an earlier visit had stopped at `start`.
    await page.evaluate(({ url, channel, start }) => localStorage.setItem(`resub:${url}:${channel}`, start), {
      url: FIXTURE_URL,
      channel,
      start,
    });
    const numbers = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => String(from + i));
    await publishAll(channel, numbers(1, 200));
    await startDurable(transport, channel);
    await waitUntil(20_000, "50 events before the reload", async () => (await taken(channel)).length >= 50);

    await page.reload();
    await page.waitForFunction(() => window.ready === true, null, { timeout: 15_000 });
    await installPageHelpers(page);
    const before = await taken(channel);
    assert.ok(before.length >= 50 && before.length <= 200, `taken before the reload: ${before.length}`);

    // After the reload: no `from`, the stored cursor decides.
    await page.evaluate(
      ({ url, transport, channel }) =>
        window.collect("after", url, { transports: [transport], cursors: "localStorage", upgradeProbeMs: false }, channel),
      { url: FIXTURE_URL, transport, channel },
    );
    await publishAll(channel, numbers(201, 220));
    await publish(channel, "end");
    const { messages, error } = await finishCollect(page, "after", 30_000);
    assert.equal(error, null);
    const after = messages.map((m) => m.data);
    assert.deepEqual([...before, ...after], numbers(1, 220), `${before.length} before the reload, ${after.length} after`);
    const stored = await page.evaluate(({ url, channel }) => localStorage.getItem(`resub:${url}:${channel}`), {
      url: FIXTURE_URL,
      channel,
    });
    assert.match(stored, /-\d+$/, "the store holds the id of the last message taken (the end marker)");
  });
}

test("a custom cursor store: loaded at subscribe, saved for each message; a failing save ends the subscription", { timeout: 30_000 }, async () => {
  const channel = uniqueChannel("custom-store");
  const start = await publish(channel, "0");
  await publishAll(channel, ["1", "2", "3"]);
  const result = await page.evaluate(
    async ({ url, channel, start }) => {
      const saved = [];
      let failAfter = 2;
      const store = {
        load: (c) => (c === channel ? start : null),
        save: (c, id) => {
          if (saved.length === failAfter) throw new Error("disk full");
          saved.push([c, id]);
        },
      };
      const client = new window.resub.Client(url, { cursors: store });
      const sub = client.subscribe(channel);
      const data = [];
      let error = null;
      try {
        for await (const m of sub) if (m.type == "event") data.push(m.data);
      } catch (e) {
        error = { code: e.code, message: e.message };
      }
      await client.close();
      return { saved, data, error };
    },
    { url: FIXTURE_URL, channel, start },
  );
  assert.deepEqual(result.data, ["1", "2"], "the message whose save failed is not handed out");
  assert.equal(result.saved.length, 2);
  assert.ok(result.saved.every(([c]) => c === channel));
  assert.equal(result.error.code, "cursor_store");
});
