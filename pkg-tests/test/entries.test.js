// The package's entry points as web developers meet them: nothing happens at
// import, the wasm is instantiated on first use and a wasm that cannot load
// fails that use with "wasm_load_failed"; typed messages, checks at the
// door, one listener style; server-side rendering in Node.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { FIXTURE_URL, openPage, pageForTests, publish, uniqueChannel } from "../lib/harness.js";

const here = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
let page;
pageForTests((p) => (page = p));

test("messages carry a type: event, resumed, reset, presence", { timeout: 30_000 }, async () => {
  const channel = uniqueChannel("types");
  const start = await publish(channel, "0");
  const head = await publish(channel, "1");
  const epoch = head.slice(0, head.lastIndexOf("-"));
  const types = await page.evaluate(
    async ({ url, channel, start, ahead }) => {
      const client = new window.resub.Client(url);
      const seen = [];
      for (const from of [start, ahead]) {
        const sub = client.subscribe(channel, { from });
        for await (const m of sub) {
          seen.push(m.type == "event" ? `event ${m.data}` : m.type == "reset" ? `reset ${m.reset}` : m.type);
          if (m.type != "resumed") break;
        }
        sub.close();
      }
      await client.close();
      return seen;
    },
    { url: FIXTURE_URL, channel, start, ahead: `${epoch}-99` },
  );
  assert.deepEqual(types, ["resumed", "event 1", "reset unknown_cursor"]);
});

test("an error that ends a subscription comes after every message before it", { timeout: 30_000 }, async () => {
  // Three events, then one whose frame passes the client's 1 MiB limit (the
  // server takes up to 1 MiB of data). The page starts reading only once the
  // client has stopped, so the messages and the error wait in the wasm layer
  // together and are handed over in one batch.
  const channel = uniqueChannel("then-error");
  const start = await publish(channel, "0");
  for (const data of ["1", "2", "3", "x".repeat(1_048_570)]) await publish(channel, data);
  const out = await page.evaluate(
    async ({ url, channel, start }) => {
      const client = new window.resub.Client(url, { transports: ["ws"] });
      const stopped = new Promise((resolve) => client.onState((s) => s.state == "closed" && resolve(s.error?.code)));
      const sub = client.subscribe(channel, { from: start });
      const stop = await stopped;
      const seen = [];
      try {
        for await (const m of sub) seen.push(m.type == "event" ? m.data : m.type);
        return { stop, seen, ended: "without an error" };
      } catch (e) {
        return { stop, seen, ended: e.code };
      } finally {
        await client.close();
      }
    },
    { url: FIXTURE_URL, channel, start },
  );
  assert.deepEqual(out, { stop: "frame_too_large", seen: ["resumed", "1", "2", "3"], ended: "frame_too_large" });
});

test("checks at the door: a bad channel throws at subscribe(), one way of reading a subscription", { timeout: 30_000 }, async () => {
  const out = await page.evaluate(async (url) => {
    const client = new window.resub.Client(url);
    const out = {};
    try {
      client.subscribe("bad channel!");
      out.subscribe = "no error";
    } catch (e) {
      out.subscribe = e.code;
    }
    const sub = client.subscribe("both-ways");
    sub.on("event", () => {});
    try {
      for await (const _ of sub) break;
      out.both = "no error";
    } catch (e) {
      out.both = e.code;
    }
    const states = [];
    const stop = client.on("state", (s) => states.push(s.state));
    await new Promise((resolve) => {
      const poll = () => (states.includes("connected") ? resolve() : setTimeout(poll, 10));
      poll();
    });
    stop();
    await client.close();
    out.sawConnected = states.includes("connected");
    return out;
  }, FIXTURE_URL);
  assert.deepEqual(out, { subscribe: "invalid_argument", both: "invalid_state", sawConnected: true });
});

test("the closed state's error is a ResubError", { timeout: 30_000 }, async () => {
  const out = await page.evaluate(async () => {
    // Nothing listens there, and one attempt is all it may make.
    const client = new window.resub.Client("http://127.0.0.1:9", { backoff: { maxAttempts: 1 }, transports: ["poll"] });
    const closed = await new Promise((resolve) => client.onState((s) => s.state == "closed" && resolve(s)));
    return { isResubError: closed.error instanceof window.resub.ResubError, code: closed.error.code };
  });
  assert.deepEqual(out, { isResubError: true, code: "retries_exhausted" });
});

test("lazy: a page that never calls init() gets its events from the first Client", { timeout: 30_000 }, async () => {
  const { page: lazy, pageUrl, close } = await openPage("?lazy");
  try {
    assert.ok(pageUrl);
    const channel = uniqueChannel("lazy");
    const start = await publish(channel, "0");
    const loaded = lazy.evaluate(
      async ({ url, channel, start }) => {
        const client = new window.resub.Client(url);
        const before = client.state.state;
        const sub = client.subscribe(channel, { from: start });
        const got = [];
        for await (const m of sub) {
          if (m.type != "event") continue;
          got.push(m.data);
          if (got.length == 2) break;
        }
        await client.close();
        return { before, got };
      },
      { url: FIXTURE_URL, channel, start },
    );
    await publish(channel, "1");
    await publish(channel, "2");
    assert.deepEqual(await loaded, { before: "connecting", got: ["1", "2"] });
  } finally {
    await close();
  }
});

test("a wasm that cannot load fails init(), the client and its calls with wasm_load_failed, not the import", { timeout: 30_000 }, async () => {
  const { page: broken, close } = await openPage("?lazy", { missingWasm: true });
  try {
    const out = await broken.evaluate(async (url) => {
      const { Client, init, ResubError } = window.resub;
      const out = {};
      try {
        await init();
        out.init = "resolved";
      } catch (e) {
        out.init = e instanceof ResubError ? e.code : String(e);
      }
      const client = new Client(url);
      const sub = client.subscribe("c");
      try {
        await sub.next();
        out.next = "resolved";
      } catch (e) {
        out.next = e.code;
      }
      try {
        await client.publish("c", "x");
        out.publish = "resolved";
      } catch (e) {
        out.publish = e.code;
      }
      out.state = client.state.state;
      out.error = client.state.error?.code;
      return out;
    }, FIXTURE_URL);
    assert.deepEqual(out, {
      init: "wasm_load_failed",
      next: "wasm_load_failed",
      publish: "wasm_load_failed",
      state: "closed",
      error: "wasm_load_failed",
    });
  } finally {
    await close();
  }
});

test("server-side rendering: both entries import in Node; a Client there throws unsupported_environment", { timeout: 30_000 }, async () => {
  const script = `
    const out = {};
    for (const entry of ["resub", "resub/inline"]) {
      const m = await import(entry);
      try { new m.Client("http://127.0.0.1:1"); out[entry] = "made"; } catch (e) { out[entry] = e.code; }
    }
    console.log(JSON.stringify(out));
  `;
  const { stdout } = await promisify(execFile)(process.execPath, ["--input-type=module", "-e", script], { cwd: here });
  assert.deepEqual(JSON.parse(stdout), { resub: "unsupported_environment", "resub/inline": "unsupported_environment" });
});

test("the contract table's codes are this package's types", async () => {
  // README, "One contract, three surfaces": index.d.ts names the same codes.
  const { readFile } = await import("node:fs/promises");
  const readme = await readFile(path.join(here, "..", "README.md"), "utf8");
  const listed = (name) => {
    const section = readme.split(`<!-- contract:${name} -->`)[1].split("<!-- /contract -->")[0];
    return section.split("):")[1].split("`").filter((_, i) => i % 2 == 1).sort();
  };
  const types = await readFile(path.join(here, "node_modules", "resub", "index.d.ts"), "utf8");
  const union = (name) => {
    const body = types.split(`export type ${name} =`)[1].split(";")[0];
    return [...body.matchAll(/"([a-z_]+)"/g)].map((m) => m[1]).sort();
  };
  assert.deepEqual(union("DisconnectCode"), listed("disconnect-codes"));
  const jsOnly = ["wasm_load_failed", "unsupported_environment", "invalid_state", "unknown"];
  assert.deepEqual(union("ResubErrorCode").filter((c) => !jsOnly.includes(c)), listed("error-codes"));
});
