// Shared pieces of the package tests: a static server for the test page and
// the installed package, a Chromium page that has loaded `resub`, and calls
// to the fixture server's HTTP API.
//
// The fixture's URL comes from RESUB_FIXTURE_URL (run.sh starts the fixture
// and sets it).
import { spawn } from "node:child_process";
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import net from "node:net";
import readline from "node:readline";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { before, after } from "node:test";
import { chromium } from "playwright-core";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const pageDir = path.join(root, "page");
const packageDir = path.join(root, "node_modules", "resub");

export const FIXTURE_URL = (() => {
  const url = process.env.RESUB_FIXTURE_URL;
  if (!url) throw new Error("RESUB_FIXTURE_URL is not set: run the tests with `bash pkg-tests/run.sh`");
  return url.replace(/\/+$/, "");
})();

export const CHROMIUM = process.env.RESUB_CHROMIUM ?? "/usr/bin/chromium";
export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-dev-shm-usage",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  // Lets a test call gc(), to check what outlives garbage collection.
  "--js-flags=--expose-gc",
];

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".wasm": "application/wasm",
  ".json": "application/json",
  ".ts": "text/plain; charset=utf-8",
  ".md": "text/markdown; charset=utf-8",
};

/** Maps a request path to a file: the page, or a file of the installed package. */
function fileFor(urlPath) {
  if (urlPath === "/" || urlPath === "/index.html") return path.join(pageDir, "index.html");
  const prefix = "/node_modules/resub/";
  if (!urlPath.startsWith(prefix)) return null;
  const file = path.resolve(packageDir, "." + path.posix.normalize("/" + urlPath.slice(prefix.length)));
  return file.startsWith(packageDir + path.sep) ? file : null;
}

/**
 * Starts a static server for the test page on 127.0.0.1 and a free port;
 * with `missingWasm`, the package's .wasm answers 404.
 */
export async function startPageServer({ missingWasm = false } = {}) {
  const server = createServer(async (req, res) => {
    let urlPath;
    try {
      urlPath = decodeURIComponent(new URL(req.url, "http://localhost").pathname);
    } catch {
      res.writeHead(400).end();
      return;
    }
    const servable = !(missingWasm && urlPath.endsWith(".wasm"));
    const file = servable && (req.method === "GET" || req.method === "HEAD") ? fileFor(urlPath) : null;
    if (!file) {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
      return;
    }
    try {
      const body = await readFile(file);
      const type = TYPES[path.extname(file)] ?? "application/octet-stream";
      res.writeHead(200, { "content-type": type, "cache-control": "no-store" });
      res.end(req.method === "HEAD" ? undefined : body);
    } catch {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
    }
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const { port } = server.address();
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Serves the files of `dir` (an app's build) on 127.0.0.1 and a free port. */
export async function startStaticServer(dir) {
  const server = createServer(async (req, res) => {
    let file;
    try {
      const p = decodeURIComponent(new URL(req.url, "http://localhost").pathname);
      file = path.resolve(dir, "." + path.posix.normalize("/" + (p === "/" ? "index.html" : p.slice(1))));
    } catch {
      res.writeHead(400).end();
      return;
    }
    if (!file.startsWith(path.resolve(dir) + path.sep)) {
      res.writeHead(404).end();
      return;
    }
    try {
      const body = await readFile(file);
      res.writeHead(200, { "content-type": TYPES[path.extname(file)] ?? "application/octet-stream" });
      res.end(body);
    } catch {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found\n");
    }
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/**
 * Launches Chromium, opens the test page, waits until it has imported
 * `resub` (`window.ready`) and installs the page helpers. Returns
 * `{ page, pageUrl, close }`; `page.problems` lists page errors and failed
 * requests, for failure messages.
 */
export async function openPage(query = "", serverOptions = {}) {
  const server = await startPageServer(serverOptions);
  let browser;
  try {
    browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 30_000 });
    const page = await browser.newPage();
    const problems = [];
    page.problems = problems;
    page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
    page.on("console", (m) => {
      if (m.type() === "error") problems.push(`console: ${m.text()}`);
    });
    page.on("response", (r) => {
      if (r.status() >= 400) problems.push(`${r.status()} for ${r.url()}`);
    });
    page.on("requestfailed", (r) => problems.push(`request failed: ${r.url()} ${r.failure()?.errorText ?? ""}`));
    await page.goto(server.url + "/" + query, { timeout: 15_000 });
    try {
      await page.waitForFunction(() => window.ready === true, null, { timeout: 15_000 });
    } catch (e) {
      throw new Error(`the test page did not load resub: ${problems.join("; ") || e.message}`);
    }
    await installPageHelpers(page);
    return {
      page,
      pageUrl: server.url,
      close: async () => {
        await browser.close();
        await server.close();
      },
    };
  } catch (e) {
    await browser?.close();
    await server.close();
    throw e;
  }
}

/**
 * One page for all the tests of the calling file: `before` opens it and hands
 * it to `use`, `after` closes it and then runs `cleanup` (restoring the
 * fixture), whose failure is ignored.
 */
export function pageForTests(use, cleanup) {
  let browser;
  before(async () => {
    browser = await openPage();
    use(browser.page);
  });
  after(async () => {
    await browser?.close();
    await cleanup?.().catch(() => {});
  });
}

/** Rejects with a message naming `what` unless `promise` settles within `ms`. */
export function within(ms, what, promise) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function post(pathAndQuery, body = "") {
  const res = await fetch(FIXTURE_URL + pathAndQuery, { method: "POST", body });
  const text = await res.text();
  if (!res.ok) throw new Error(`POST ${pathAndQuery}: ${res.status} ${text}`);
  return JSON.parse(text);
}

/** Publishes `data` on `channel` over the fixture's HTTP API; resolves to the event id. */
export async function publish(channel, data, event) {
  const query = event ? `?event=${encodeURIComponent(event)}` : "";
  const { id } = await post(`/publish/${encodeURIComponent(channel)}${query}`, data);
  if (typeof id !== "string" || id === "") throw new Error(`publish answered without an id: ${id}`);
  return id;
}

/** Publishes each of `items` in order; resolves to their ids. */
export async function publishAll(channel, items) {
  const ids = [];
  for (const data of items) ids.push(await publish(channel, data));
  return ids;
}

/** Abruptly drops every connection; resolves to how many were dropped. */
export async function dropAll() {
  const { dropped } = await post("/control/drop");
  return dropped;
}

/** Allows or refuses a transport on the fixture: "websocket", "sse" or "poll". */
export async function setTransport(name, enabled) {
  await post(`/control/${name}?enabled=${enabled}`);
}

/** Allows every transport again. */
export async function enableAllTransports() {
  for (const name of ["websocket", "sse", "poll"]) await setTransport(name, true);
}

/** The fixture's counters (`GET /control/stats`). */
export async function fixtureStats() {
  const res = await fetch(FIXTURE_URL + "/control/stats");
  if (!res.ok) throw new Error(`GET /control/stats: ${res.status}`);
  return res.json();
}

/**
 * Resolves once `check()` (async) returns a truthy value, checking every
 * 20 ms; rejects after `ms` with a message naming `what`.
 */
export async function waitUntil(ms, what, check) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** A channel name no other test (or earlier run against the same fixture) uses. */
export function uniqueChannel(prefix) {
  return `${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 8)}`;
}

/**
 * Defines page helpers. `window.within(ms, what, promise)` rejects unless
 * `promise` settles within `ms`.
 *
 * `window.collect(key, url, options, channel, from)` creates a Client,
 * records its states, subscribes (after `from` when given) and collects
 * messages with `for await` until an event whose data is "end", then closes
 * the client. `window.runs[key]` holds `{ messages, states, error, done }`;
 * `done` resolves to the messages.
 */
export async function installPageHelpers(page) {
  await page.evaluate(() => {
    window.within = (ms, what, promise) => {
      let timer;
      const timeout = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
      });
      return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
    };
    window.runs = {};
    window.collect = (key, url, options, channel, from) => {
      const run = { messages: [], states: [], error: null, finished: false };
      window.runs[key] = run;
      const client = new window.resub.Client(url, options);
      run.client = client;
      client.onState((s) => run.states.push(s));
      const sub = client.subscribe(channel, from === undefined ? {} : { from });
      run.done = (async () => {
        try {
          for await (const m of sub) {
            if (m.type == "event" && m.data === "end") break;
            // Resumed notices say nothing was lost; the tests look at the rest.
            if (m.type == "resumed") {
              run.resumed = (run.resumed ?? 0) + 1;
              continue;
            }
            run.messages.push(m);
          }
        } catch (e) {
          run.error = { name: e?.name, code: e?.code, message: e?.message };
        } finally {
          await client.close();
          run.finished = true;
        }
        return run.messages;
      })();
    };
  });
}

/**
 * Waits (at most `ms`) for the collector `key` to reach its "end" marker;
 * resolves to `{ messages, states, error }`. On a timeout the error names
 * what had arrived so far.
 */
export async function finishCollect(page, key, ms) {
  try {
    await within(ms, `the "end" marker on collector ${key}`, page.evaluate((k) => window.runs[k].done, key));
  } catch (e) {
    const partial = await page.evaluate((k) => {
      const r = window.runs[k];
      return { data: r.messages.map((m) => m.data ?? `reset:${m.reset}`), states: r.states, error: r.error };
    }, key);
    await page.evaluate((k) => window.runs[k].client.close(), key).catch(() => {});
    throw new Error(`${e.message}; so far ${JSON.stringify(partial)}; ${page.problems.join("; ")}`);
  }
  return page.evaluate((k) => {
    const r = window.runs[k];
    return { messages: r.messages, states: r.states, error: r.error };
  }, key);
}

/** A free loopback port. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/**
 * Starts `cmd` (added to `children`, for the caller to kill) and resolves with
 * the child and its first stdout line matching `ready`.
 */
export function spawnUntil(children, cmd, args, ready) {
  const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "ignore"] });
  children.push(child);
  const lines = readline.createInterface({ input: child.stdout });
  return within(
    20_000,
    `${cmd} to start`,
    new Promise((resolve, reject) => {
      child.once("error", reject);
      child.once("exit", (code) => reject(new Error(`${cmd} exited with ${code}`)));
      lines.on("line", (line) => {
        if (ready.test(line)) resolve({ child, line });
      });
    }),
  );
}

/** A redis-server on a free port, without persistence; resolves with its URL. */
export async function startRedis(children) {
  const port = await freePort();
  const args = ["--bind", "127.0.0.1", "--port", String(port), "--save", "", "--appendonly", "no"];
  await spawnUntil(children, "redis-server", args, /Ready to accept connections/);
  return `redis://127.0.0.1:${port}`;
}
