// The installed `resub` package in Chromium: the publish outbox (bounded,
// a typed error when full, everything applied once after a reconnect) and
// bearer tokens, which ride in the URL where the browser cannot set a header.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import {
  FIXTURE_URL,
  enableAllTransports,
  finishCollect,
  openPage,
  publish,
  setTransport,
  uniqueChannel,
} from "../lib/harness.js";

let browser;
let page;

before(async () => {
  browser = await openPage();
  page = browser.page;
});

after(async () => {
  await browser?.close();
  await enableAllTransports().catch(() => {});
  await fetch(`${FIXTURE_URL}/control/tokens`, { method: "POST" }).catch(() => {});
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
      // A browser hides the status of a WebSocket or EventSource that fails
      // to open, so only a fetch (long polling) can see the 401 and stop.
      if (transport !== "poll") return;
      const refused = await page.evaluate(
        async ({ url, channel, transport }) => {
          const client = new window.resub.Client(url, { transports: [transport], token: "wrong", upgradeProbeMs: false });
          const closed = new Promise((resolve) =>
            client.onState((s) => {
              if (s.state === "closed") resolve(s);
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
