// The packed package in the bundlers web developers use, with their
// defaults: a tiny app per setup is installed from the npm registry, built
// (or served by the dev server), opened in Chromium against the fixture, and
// must get every one of 50 events. "resub" keeps the .wasm a separate file
// (Vite 5, 6 and 8, build and dev server; webpack 5 with no config file);
// "resub/inline" serves bundlers that copy no assets (esbuild, Rollup); the
// React entry runs under StrictMode in Vite with React 18 and 19, where one
// connection and one subscription must exist.
//
// RESUB_TGZ is the packed package (run.sh sets it); RESUB_BUNDLERS picks
// setups by name (comma-separated), all by default.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFile } from "node:child_process";
import { mkdtemp, mkdir, writeFile, rm } from "node:fs/promises";
import { createServer } from "node:net";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { chromium } from "playwright-core";
import { FIXTURE_URL, fixtureStats, publish, startStaticServer, uniqueChannel, CHROMIUM, CHROMIUM_ARGS } from "../lib/harness.js";

const TGZ = process.env.RESUB_TGZ;
const ONLY = process.env.RESUB_BUNDLERS?.split(",");
const EVENTS = 50;
const run = promisify(execFile);

/** The app: subscribes from `from` and counts events until it has `n`. */
const APP = (entry) => `
import { Client } from "${entry}";
const q = new URLSearchParams(location.search);
const client = new Client(q.get("server"));
window.result = { got: [], done: false, error: null };
(async () => {
  try {
    for await (const m of client.subscribe(q.get("channel"), { from: q.get("from") })) {
      if (m.type != "event") continue;
      window.result.got.push(m.data);
      if (window.result.got.length == Number(q.get("n"))) break;
    }
    window.result.done = true;
  } catch (e) {
    window.result.error = e.code + ": " + e.message;
  }
})();
`;

/** The React app: one component reading a channel under StrictMode. */
const REACT_APP = `
import { createElement as h, StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { ResubProvider, useConnectionState, useSubscription } from "resub/react";
const q = new URLSearchParams(location.search);
function Events() {
  const { events, status, error } = useSubscription(q.get("channel"), { from: q.get("from"), limit: 1000 });
  const state = useConnectionState();
  window.result = {
    got: events.map((e) => e.data),
    done: events.length == Number(q.get("n")),
    error: error && error.code,
    status,
    state: state.state,
  };
  return h("pre", null, events.map((e) => e.data).join(" "));
}
createRoot(document.getElementById("root")).render(
  h(StrictMode, null, h(ResubProvider, { url: q.get("server") }, h(Events))),
);
`;

const HTML = (script) =>
  `<!doctype html><html><head><meta charset="utf-8"><title>app</title></head><body><div id="root"></div><script type="module" src="${script}"></script></body></html>`;

/** Each setup: what to install, the files to write, how to build or serve. */
const SETUPS = [
  ...["5.4.21", "6.4.6", "8"].flatMap((v) => {
    const major = v.split(".")[0];
    const files = { "index.html": HTML("/main.js"), "main.js": APP("resub") };
    return [
      { name: `vite ${major} build`, deps: [`vite@${v}`], files, build: ["npx", "vite", "build"], dist: "dist" },
      { name: `vite ${major} dev`, deps: [`vite@${v}`], files, dev: ["npx", "vite", "--strictPort", "--port"] },
    ];
  }),
  {
    name: "webpack 5 (no config file)",
    deps: ["webpack@5", "webpack-cli@5"],
    files: { "src/index.js": APP("resub"), "dist/index.html": HTML("./main.js") },
    build: ["npx", "webpack"],
    dist: "dist",
  },
  {
    name: "esbuild with resub/inline",
    deps: ["esbuild@0"],
    files: { "main.js": APP("resub/inline"), "dist/index.html": HTML("./main.js") },
    build: ["npx", "esbuild", "main.js", "--bundle", "--format=esm", "--outfile=dist/main.js"],
    dist: "dist",
  },
  {
    name: "rollup 4 with resub/inline",
    deps: ["rollup@4", "@rollup/plugin-node-resolve@16"],
    files: {
      "main.js": APP("resub/inline"),
      "dist/index.html": HTML("./main.js"),
      "rollup.config.mjs":
        'import { nodeResolve } from "@rollup/plugin-node-resolve";\nexport default { input: "main.js", output: { file: "dist/main.js", format: "es", inlineDynamicImports: true }, plugins: [nodeResolve({ browser: true })] };\n',
    },
    build: ["npx", "rollup", "-c"],
    dist: "dist",
  },
  ...["18", "19"].map((r) => ({
    name: `react ${r} under StrictMode (vite 8)`,
    deps: ["vite@8", `react@${r}`, `react-dom@${r}`],
    files: { "index.html": HTML("/main.js"), "main.js": REACT_APP },
    build: ["npx", "vite", "build"],
    dist: "dist",
    react: true,
  })),
].filter((s) => !ONLY || ONLY.some((o) => s.name.startsWith(o)));

let browser;
before(async () => {
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 30_000 });
});
after(async () => {
  await browser?.close();
});

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Installs the app's dependencies and the packed package into `dir`. */
async function install(dir, setup) {
  await writeFile(path.join(dir, "package.json"), JSON.stringify({ name: "app", private: true, type: "module" }));
  for (const [file, text] of Object.entries(setup.files)) {
    await mkdir(path.dirname(path.join(dir, file)), { recursive: true });
    await writeFile(path.join(dir, file), text);
  }
  await run("npm", ["install", "--no-audit", "--no-fund", "--loglevel=error", ...setup.deps, TGZ], {
    cwd: dir,
    timeout: 300_000,
  });
}

/** Starts the dev server; resolves to its URL and a stop function. */
async function devServer(dir, setup) {
  const port = await freePort();
  const child = spawn(setup.dev[0], [...setup.dev.slice(1), String(port), "--host", "127.0.0.1"], {
    cwd: dir,
    stdio: ["ignore", "pipe", "pipe"],
    // Its own process group: npx starts vite as a child, and both must end.
    detached: true,
    // Vite colours its banner when CI is set (picocolors), which splits the
    // address with escape codes; the banner is read as plain text here.
    env: { ...process.env, NO_COLOR: "1", FORCE_COLOR: "0" },
  });
  let log = "";
  const kill = () => {
    if (child.exitCode === null && child.signalCode === null) process.kill(-child.pid, "SIGTERM");
  };
  const started = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`the dev server did not start: ${log}`)), 60_000);
    const look = (chunk) => {
      // Escape codes removed in case a terminal setting colours it anyway.
      log += String(chunk).replace(/\x1b\[[0-9;]*m/g, "");
      if (log.includes(`:${port}`)) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout.on("data", look);
    child.stderr.on("data", look);
    child.once("exit", (code) => reject(new Error(`the dev server exited (${code}): ${log}`)));
  });
  try {
    await started;
  } catch (e) {
    // A server that never announced itself must not outlive the test: its
    // open pipes would keep the test process alive.
    kill();
    throw e;
  }
  const stop = () =>
    new Promise((resolve) => {
      if (child.exitCode !== null) return resolve();
      child.once("exit", resolve);
      process.kill(-child.pid, "SIGTERM");
    });
  return { url: `http://127.0.0.1:${port}`, stop, log: () => log };
}

for (const setup of SETUPS) {
  test(`${setup.name}: every event arrives`, { timeout: 600_000, skip: !TGZ && "RESUB_TGZ is not set" }, async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), "resub-app-"));
    let server;
    const problems = [];
    try {
      await install(dir, setup);
      if (setup.build) {
        await run(setup.build[0], setup.build.slice(1), { cwd: dir, timeout: 300_000 });
        server = await startStaticServer(path.join(dir, setup.dist));
      } else {
        server = await devServer(dir, setup);
      }
      const channel = uniqueChannel("bundler");
      const from = await publish(channel, "0");
      const before = await fixtureStats();
      const page = await browser.newPage();
      page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
      page.on("console", (m) => m.type() === "error" && problems.push(`console: ${m.text()}`));
      page.on("response", (r) => r.status() >= 400 && problems.push(`${r.status()} ${r.url()}`));
      const query = new URLSearchParams({ server: FIXTURE_URL, channel, from, n: String(EVENTS) });
      await page.goto(`${server.url}/?${query}`, { timeout: 60_000 });
      // Published once the page is subscribed; from the cursor, none is missed.
      const data = Array.from({ length: EVENTS }, (_, i) => `e${i + 1}`);
      for (const d of data) await publish(channel, d);
      try {
        await page.waitForFunction(() => window.result?.done || window.result?.error, null, { timeout: 60_000 });
      } catch {
        throw new Error(`no result: ${JSON.stringify(await page.evaluate(() => window.result))}; ${problems.join("; ")}`);
      }
      const result = await page.evaluate(() => window.result);
      assert.equal(result.error, null, `${result.error}; ${problems.join("; ")}`);
      assert.deepEqual(result.got, data);
      if (setup.react) {
        const stats = await fixtureStats();
        assert.equal(stats.websocket_accepted - before.websocket_accepted, 1, "one connection under StrictMode");
        assert.equal(stats.subscribes - before.subscribes, 1, "one subscription under StrictMode");
      }
      await page.close();
    } finally {
      await server?.stop?.();
      await server?.close?.();
      await rm(dir, { recursive: true, force: true });
    }
  });
}
