// The installed package in a module Web Worker, where there is no `window`
// (nor `document` or localStorage): subscriptions work on every transport,
// and the worker's own `online` event reaches the client (a reconnect at
// once, with the backoff reset), as the page's does.
import { test } from "node:test";
import assert from "node:assert/strict";
import { FIXTURE_URL, pageForTests, publishAll, publish, uniqueChannel } from "../lib/harness.js";

let page;
pageForTests((p) => (page = p));

/**
 * Runs `body` (the source of an async function of `(Client, args)`) in a
 * new module worker; resolves to what it returns, or rejects with what it
 * threw.
 */
function inWorker(body, args) {
  return page.evaluate(
    ({ body, args }) => {
      const source = `
        const { Client } = await import(${JSON.stringify(location.origin + "/node_modules/resub/index.js")});
        const run = ${body};
        onmessage = async ({ data }) => {
          try {
            postMessage({ ok: await run(Client, data) });
          } catch (e) {
            postMessage({ error: String(e?.code ?? "") + " " + String(e?.message ?? e) });
          }
        };
        postMessage("ready");`;
      const worker = new Worker(URL.createObjectURL(new Blob([source], { type: "text/javascript" })), { type: "module" });
      return window.within(
        20_000,
        "the worker",
        new Promise((resolve, reject) => {
          worker.onerror = (e) => reject(new Error(`worker error: ${e.message}`));
          worker.onmessage = ({ data }) => {
            if (data === "ready") return worker.postMessage(args);
            worker.terminate();
            if ("error" in data) reject(new Error(data.error));
            else resolve(data.ok);
          };
        }),
      );
    },
    { body, args },
  );
}

for (const transport of ["ws", "sse", "poll"]) {
  test(`in a worker on ${transport}: events arrive once and in order`, { timeout: 30_000 }, async () => {
    const channel = uniqueChannel(`worker-${transport}`);
    const start = await publish(channel, "0");
    await publishAll(channel, ["1", "2", "3", "end"]);
    const got = await inWorker(
      `async (Client, { url, channel, from, transport }) => {
        const client = new Client(url, { transports: [transport], upgradeProbeMs: false });
        const got = [];
        for await (const m of client.subscribe(channel, { from })) {
          if (m.type != "event") continue;
          if (m.data === "end") break;
          got.push(m.data);
        }
        await client.close();
        return got;
      }`,
      { url: FIXTURE_URL, channel, from: start, transport },
    );
    assert.deepEqual(got, ["1", "2", "3"]);
  });
}

/** Drops the connection after event 1; only an `online` event brings the client back soon. */
const ONLINE = `async (Client, { url, channel, from }) => {
  // Ten minutes of backoff: only the online signal brings it back soon.
  const client = new Client(url, { transports: ["ws"], upgradeProbeMs: false, backoff: { baseMs: 600000, capMs: 600000 } });
  const states = [];
  client.onState((s) => {
    states.push(s.state);
    if (s.state === "disconnected") globalThis.dispatchEvent(new Event("online"));
  });
  const post = (path, body) => fetch(url + path, { method: "POST", body });
  const got = [];
  for await (const m of client.subscribe(channel, { from })) {
    if (m.type != "event") continue;
    if (m.data === "end") break;
    got.push(m.data);
    if (m.data === "1") {
      await post("/control/drop");
      await post("/publish/" + channel, "2");
      await post("/publish/" + channel, "end");
    }
  }
  await client.close();
  return { got, states };
}`;

for (const where of ["a worker", "the page"]) {
  test(`in ${where}, the online event reconnects at once despite a long backoff`, { timeout: 30_000 }, async () => {
    const channel = uniqueChannel("online");
    const start = await publish(channel, "0");
    await publish(channel, "1");
    const args = { url: FIXTURE_URL, channel, from: start };
    const { got, states } =
      where === "a worker"
        ? await inWorker(ONLINE, args)
        : await page.evaluate(({ body, args }) => (0, eval)(`(${body})`)(window.resub.Client, args), { body: ONLINE, args });
    assert.deepEqual(got, ["1", "2"], "resumed after the drop, nothing lost");
    assert.ok(states.includes("disconnected"), JSON.stringify(states));
  });
}
