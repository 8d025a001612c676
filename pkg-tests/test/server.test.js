// The installed `resub` package in Chromium against the server teams deploy:
// two `resub-server` nodes sharing Redis, JWT auth on both, as
// server/README.md sets them up. The token goes as `access_token` (the
// browser cannot set headers on a WebSocket or an EventSource). A channel the
// token does not cover ends that subscription with `forbidden`; a subscription
// it covers is moved to the other node when its node shuts down (SIGTERM) and
// gets every event once, in order.
//
// Needs redis-server (scripts/test.sh installs it) and the server binary
// (RESUB_SERVER_BIN, set by run.sh).
import { test, before } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { finishCollect, pageForTests, spawnUntil, startRedis, uniqueChannel, waitUntil } from "../lib/harness.js";

const SERVER_BIN = process.env.RESUB_SERVER_BIN;
const SECRET = "a secret shared by the nodes and the token issuer";

const children = [];
let page;

before(() => {
  if (!SERVER_BIN) throw new Error("RESUB_SERVER_BIN is not set: run the tests with `bash pkg-tests/run.sh`");
});
pageForTests(
  (p) => (page = p),
  async () => {
    for (const c of children) c.kill("SIGKILL");
  },
);

const b64url = (buf) => Buffer.from(buf).toString("base64url");

/** An HS256 JWT with these claims, valid for ten minutes. */
function jwt(claims) {
  const head = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = b64url(JSON.stringify({ exp: Math.floor(Date.now() / 1000) + 600, ...claims }));
  const sig = createHmac("sha256", SECRET).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

async function startNode(redis, prefix, secretFile) {
  const args = ["--addr", "127.0.0.1:0", "--heartbeat-ms", "500", "--redis", redis, "--redis-prefix", prefix];
  args.push("--jwt-secret-file", secretFile, "--drain-ms", "5000");
  const { child, line } = await spawnUntil(children, SERVER_BIN, args, /^listening on /);
  return { child, url: line.replace(/^listening on /, "") };
}

async function publishTo(node, channel, data, token) {
  const res = await fetch(`${node}/publish/${channel}`, {
    method: "POST",
    body: data,
    headers: { authorization: `Bearer ${token}` },
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`publish to ${node}: ${res.status} ${text}`);
  return JSON.parse(text).id;
}

test("two resub-server nodes with JWT: forbidden ends one subscription, a drain moves the other with nothing lost", { timeout: 90_000 }, async () => {
  const dir = mkdtempSync(path.join(tmpdir(), "resub-server-"));
  const secretFile = path.join(dir, "secret");
  writeFileSync(secretFile, `${SECRET}\n`);
  const redis = await startRedis(children);
  const prefix = uniqueChannel("srv");
  const a = await startNode(redis, prefix, secretFile);
  const b = await startNode(redis, prefix, secretFile);
  const channel = uniqueChannel("orders");
  const reader = jwt({ sub: "reader", subscribe: ["orders-*"] });
  const writer = jwt({ sub: "writer", publish: ["orders-*"] });
  const backoff = { baseMs: 100, factor: 2, capMs: 1000 };

  // Refused: no token at all, then a channel outside the token.
  const unauthorized = await page.evaluate(async ({ a, backoff }) => {
    const client = new window.resub.Client(a, { backoff });
    const sub = client.subscribe("orders-x");
    try {
      for await (const m of sub) return { unexpected: m };
    } catch (e) {
      return { code: e.code };
    } finally {
      await client.close();
    }
  }, { a: a.url, backoff });
  assert.equal(unauthorized.code, "unauthorized");

  const start0 = await publishTo(b.url, channel, "0", writer);
  await page.evaluate(({ a, token }) => window.collect("f", a, { token }, "secret"), { a: a.url, token: reader });
  await page.evaluate(
    ({ a, b, channel, from, token, backoff }) => window.collect("x", a, { endpoints: [b], token, backoff }, channel, from),
    { a: a.url, b: b.url, channel, from: start0, token: reader, backoff },
  );
  await waitUntil(20_000, "the forbidden subscription to end", () => page.evaluate(() => window.runs.f.finished));
  const refused = await page.evaluate(() => window.runs.f.error);
  assert.equal(refused?.code, "forbidden", JSON.stringify(refused));

  const eventsOf = () => page.evaluate(() => window.runs.x.messages.filter((m) => "id" in m).length);
  let last = 0;
  const publishSome = async (n) => {
    for (let i = 0; i < n; i++) {
      last += 1;
      await publishTo(b.url, channel, String(last), writer);
    }
  };
  await publishSome(50);
  await waitUntil(20_000, "50 events on node A", async () => (await eventsOf()) >= 50);
  const onA = await page.evaluate(() => window.runs.x.states.filter((s) => s.state === "connected").at(-1));
  assert.equal(onA.endpoint, a.url, "on node A before the drain");

  a.child.kill("SIGTERM");
  await publishSome(50);
  await waitUntil(20_000, "x connected to node B", () =>
    page.evaluate((b) => window.runs.x.states.some((s) => s.state === "connected" && s.endpoint === b), b.url),
  );
  await publishSome(50);
  await publishTo(b.url, channel, "end", writer);
  const { messages, error, states } = await finishCollect(page, "x", 30_000);
  assert.equal(error, null);
  assert.ok(messages.every((m) => !("reset" in m)), "no reset: nothing was lost");
  assert.deepEqual(
    messages.filter((m) => "id" in m).map((m) => m.data),
    Array.from({ length: last }, (_, i) => String(i + 1)),
    "every event exactly once, in order",
  );
  const told = states.find((s) => s.state === "disconnected");
  assert.equal(told?.reason, "server_closed", `told to leave, not dropped: ${JSON.stringify(told)}`);
  assert.ok(told.attempt <= 1 && told.retryInMs <= backoff.baseMs, `at once: ${JSON.stringify(told)}`);
  console.log(`${last} events exactly once across the drain; left node A on: ${JSON.stringify(told)}`);
});
