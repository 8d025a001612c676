// resub for the browser: resumable real-time subscriptions over WebSocket,
// Server-Sent Events and long polling, from one Rust core compiled to wasm.
//
// Nothing happens at import: the wasm is instantiated on first use (the first
// `new Client`, or `await init()`), from the source the entry point set
// (`resub`: the .wasm file beside it; `resub/inline`: bytes embedded in JS).
import initWasm, { WasmClient } from "./resub_wasm.js";

/** An error from resub, with a stable machine-readable `code`. */
export class ResubError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "ResubError";
    this.code = code;
  }
}

function toError(e) {
  if (e instanceof ResubError) return e;
  if (e && typeof e === "object" && "code" in e) return new ResubError(e.code, e.message);
  return new ResubError("unknown", String(e?.message ?? e));
}

const bad = (message) => new ResubError("invalid_argument", message);

// --- the wasm, on first use ----------------------------------------------------

let source; // () => Promise<what wasm-bindgen's init takes>
let loading; // the instantiation under way or done
let ready = false;

/** Set by the entry point: where the wasm comes from. */
export function setSource(fn) {
  source = fn;
}

/**
 * Instantiates the wasm now (it is otherwise instantiated by the first
 * `new Client`). Resolves once it is ready; rejects with a ResubError
 * `wasm_load_failed` if it cannot be had (the next call tries again).
 */
export function init() {
  loading ??= (async () => {
    if (typeof WebAssembly != "object") throw new Error("this environment has no WebAssembly");
    await initWasm({ module_or_path: await source() });
    ready = true;
  })().catch((e) => {
    loading = undefined;
    throw new ResubError("wasm_load_failed", `cannot load resub's wasm: ${e?.message ?? e}`);
  });
  return loading;
}

// --- checks made before the wasm is there ---------------------------------------

/** A list of strings without spaces, joined by spaces, or undefined. */
function list(v, what, check) {
  if (v == null) return undefined;
  if (!Array.isArray(v) || !v.length || !v.every((x) => typeof x == "string" && x && !/\s/.test(x) && check(x))) throw bad(what);
  return v.join(" ");
}

/** What each kind of option must be, for the message when it is not. */
const KINDS = {
  ms: "a non-negative number of milliseconds",
  int: "a non-negative integer",
  num: "a finite number",
  str: "a non-empty string",
  text: "a string",
};

/** Checks `src[key]` for each `[key, kind]`; the values, in order (undefined when absent). */
function take(src, table) {
  return table.map(([key, kind]) => {
    const v = src[key];
    if (v == null) return undefined;
    const ok =
      kind == "str" || kind == "text"
        ? typeof v == "string" && (kind == "text" || v)
        : typeof v == "number" && Number.isFinite(v) && (kind == "num" || (v >= 0 && (kind != "int" || Number.isInteger(v))));
    if (!ok) throw bad(`${key} must be ${KINDS[kind]}`);
    return v;
  });
}

/** A channel name as the protocol allows it (PROTOCOL.md §1). */
const CHANNEL = /^[A-Za-z0-9_.:-]{1,128}$/;

function checkUrl(url) {
  let u;
  try {
    u = new URL(url);
  } catch {}
  if (!u || !/^(https?|wss?):$/.test(u.protocol)) {
    throw new ResubError("invalid_url", `invalid server URL '${url}': an http, https, ws or wss URL is needed`);
  }
}

/**
 * The `cursors` option: `"localStorage"` (keys `resub:<url>:<channel>`), or
 * an object with `load(channel)` and `save(channel, cursor)`; null without it.
 */
function cursorStore(option, url) {
  if (option === undefined || option === null) return null;
  if (option === "localStorage") {
    const key = (channel) => `resub:${url}:${channel}`;
    return {
      load: (channel) => localStorage.getItem(key(channel)),
      save: (channel, cursor) => localStorage.setItem(key(channel), cursor),
    };
  }
  if (typeof option.load === "function" && typeof option.save === "function") return option;
  throw bad('cursors must be "localStorage" or an object with load(channel) and save(channel, cursor)');
}

/**
 * Checks the user's options and hands them to the wasm side as an array, in
 * the order `WasmClient::new` reads them.
 */
function wasmOptions(options) {
  const t = list(options.transports, 'transports must be a non-empty array of "ws", "sse", "poll"', (t) =>
    ["ws", "sse", "poll"].includes(t),
  );
  const probe = options.upgradeProbeMs;
  return [
    // One letter per transport, in order.
    t && t.split(" ").map((name) => name[0]).join(""),
    ...take(options.backoff ?? {}, [
      ["baseMs", "ms"],
      ["capMs", "ms"],
      ["factor", "num"],
      ["maxAttempts", "int"],
    ]),
    ...take(options, [
      ["heartbeatTimeoutMs", "ms"],
      ["openTimeoutMs", "ms"],
      ["healthyAfterMs", "ms"],
      ["pollHoldMs", "ms"],
      ["maxPendingPublishes", "int"],
      ["maxPendingPublishBytes", "int"],
      ["clientId", "text"],
      ["presenceData", "text"],
    ]),
    probe === false ? -1 : take(options, [["upgradeProbeMs", "ms"]])[0],
    list(options.endpoints, "endpoints must be a non-empty array of URLs", () => true),
    // A function: tokens come from it, through setToken.
    typeof options.token == "function" || take(options, [["token", "str"]])[0],
  ];
}

/** A state as the application sees it: the closed state's error a ResubError. */
function outState(s) {
  if (s.error && !(s.error instanceof ResubError)) s.error = toError(s.error);
  return s;
}

// --- subscriptions ---------------------------------------------------------------

const KINDS_OF_MESSAGES = ["event", "resumed", "reset", "presence"];

/** A subscription: an async iterable of messages, or a source of callbacks. */
export class Subscription {
  #inner; // Promise of the wasm subscription
  #channel;
  #store;
  #listeners = { event: [], resumed: [], reset: [], presence: [], error: [], end: [] };
  #mode; // "iterate" or "listen", once used
  #closed = false;
  #sub; // the wasm subscription, once #inner has resolved
  #batch = []; // messages taken from the wasm layer, handed out from #at
  #at = 0;

  constructor(inner, channel, store) {
    this.#inner = inner;
    this.#channel = channel;
    this.#store = store;
  }

  /** The channel subscribed to. */
  get channel() {
    return this.#channel;
  }

  #use(mode) {
    if (this.#mode && this.#mode != mode) {
      throw new ResubError(
        "invalid_state",
        "a subscription is read either with for await / next() or with on(...), not both: each message is handed out once; subscribe twice for two readers",
      );
    }
    this.#mode = mode;
  }

  /** The next message; `{ done: true }` once the subscription has ended. */
  next() {
    try {
      this.#use("iterate");
    } catch (e) {
      return Promise.reject(e);
    }
    return this.#next();
  }

  // Messages come from the wasm layer a batch at a time (all that are
  // ready, as one JSON array) and are handed out one by one: a message
  // already here costs no call into wasm and no extra promise.
  #next() {
    if (this.#at < this.#batch.length) {
      try {
        return Promise.resolve(this.#take());
      } catch (e) {
        return Promise.reject(e);
      }
    }
    return this.#fetch();
  }

  async #fetch() {
    let text;
    try {
      const sub = this.#sub ?? (this.#sub = await this.#inner);
      text = await sub.nextBatch();
    } catch (e) {
      throw toError(e);
    }
    if (text === undefined) return { done: true, value: undefined };
    this.#batch = JSON.parse(text);
    this.#at = 0;
    return this.#take();
  }

  #take() {
    if (this.#closed) return { done: true, value: undefined };
    const value = this.#batch[this.#at++];
    // The position is saved before the application sees the message, so
    // that a reload neither repeats nor skips it.
    const cursor = value.type == "event" ? value.id : value.type == "reset" ? value.head : undefined;
    if (this.#store && cursor !== undefined) {
      try {
        this.#store.save(this.#channel, cursor);
      } catch (e) {
        this.close();
        throw new ResubError("cursor_store", `cannot save the cursor: ${e}`);
      }
    }
    return { done: false, value };
  }

  /** Called when a `for await` loop is left early: ends the subscription. */
  async return() {
    this.close();
    return { done: true, value: undefined };
  }

  [Symbol.asyncIterator]() {
    this.#use("iterate");
    return this;
  }

  /**
   * Calls `fn` for each "event", "resumed", "reset", "presence" message (the
   * message's `type`), "error" (a ResubError) or "end". A subscription is read
   * either this way or with `for await`, not both.
   */
  on(type, fn) {
    if (!(type in this.#listeners)) throw bad(`unknown event type ${type}`);
    const first = !this.#mode;
    this.#use("listen");
    this.#listeners[type].push(fn);
    if (first) this.#pump();
    return this;
  }

  async #pump() {
    const emit = (type, v) => {
      for (const fn of this.#listeners[type]) {
        try {
          fn(v);
        } catch (e) {
          queueMicrotask(() => {
            throw e;
          });
        }
      }
    };
    try {
      for (;;) {
        const { done, value } = await this.#next();
        if (done) break;
        if (KINDS_OF_MESSAGES.includes(value.type)) emit(value.type, value);
      }
    } catch (e) {
      emit("error", e);
    }
    emit("end", undefined);
  }

  /** Ends the subscription; a pending `next()` resolves with `done`. */
  close() {
    if (this.#closed) return;
    this.#closed = true;
    this.#inner.then(
      (inner) => inner.close(),
      () => {},
    );
  }
}

// --- the client ------------------------------------------------------------------

/** A connection to a resub server, shared by any number of subscriptions. */
export class Client {
  #inner; // the wasm client, once there
  #ready; // Promise of it
  #failed; // why it could not be made
  #stateListeners = new Set();
  #endpoint;
  #store;
  #token;
  #stop;
  #closed = false;
  #first;

  /**
   * @param {string} url the server's base URL, `http(s)://host:port`
   * @param {import("./index").ClientOptions} [options]
   */
  constructor(url, options = {}) {
    if (typeof process == "object" && process.versions?.node && typeof window == "undefined") {
      // Server-side rendering: importing is fine, connecting is the browser's job.
      throw new ResubError(
        "unsupported_environment",
        "resub's npm package connects from browsers and web workers; when rendering on a server, create the Client in the browser (in an effect), or use the Rust client",
      );
    }
    checkUrl(url);
    const o = wasmOptions(options);
    this.#store = cursorStore(options.cursors, url);
    this.#endpoint = url.replace(/\/+$/, "");
    this.#first = options.transports?.[0] ?? "ws";
    const make = () => {
      if (this.#closed) throw new ResubError("closed", "the client is closed");
      let inner;
      try {
        inner = new WasmClient(url, o);
      } catch (e) {
        throw toError(e);
      }
      this.#attach(inner, options.token);
      return inner;
    };
    if (ready) {
      // Synchronous once the wasm is there: bad input throws here.
      this.#ready = Promise.resolve(make());
    } else {
      this.#ready = init().then(make);
      this.#ready.catch((e) => {
        this.#failed = toError(e);
        this.#emit({ state: "closed", error: this.#failed });
      });
    }
  }

  #attach(inner, provider) {
    this.#inner = inner;
    this.#endpoint = inner.state().endpoint ?? this.#endpoint;
    if (typeof provider == "function") {
      // Asked at the start, whenever the connection is down (the client
      // waits for a fresh token before each new connection; after a failure
      // to get one, no sooner than its backoff) and when the network is back.
      // Only the newest ask's answer is used; none after the client closed.
      let asks = 0,
        failed,
        timer,
        closed;
      const ask = async () => {
        const mine = ++asks;
        let token, limit;
        try {
          token = await Promise.race([provider(), new Promise((_, no) => (limit = setTimeout(no, 1e4)))]);
        } catch {}
        clearTimeout(limit);
        if (mine != asks || closed) return;
        failed = typeof token != "string" || !token;
        if (failed) token = undefined;
        else this.#token = token;
        inner.setToken(token);
      };
      ask();
      globalThis.addEventListener?.("online", ask);
      this.#stop = () => {
        closed = 1;
        clearTimeout(timer);
        globalThis.removeEventListener?.("online", ask);
      };
      this.#stateListeners.add((s) => {
        clearTimeout(timer);
        if (s.state == "disconnected") timer = setTimeout(ask, failed ? s.retryInMs : 0);
        if (s.state == "closed") this.#stop();
      });
    } else this.#token = provider;
    // One state stream from the core, shared by every listener.
    inner.onState((state) => {
      if (state.endpoint) this.#endpoint = state.endpoint;
      this.#emit(outState(state));
    });
  }

  #emit(state) {
    for (const fn of this.#stateListeners) {
      try {
        fn(state);
      } catch {
        // A throwing listener does not stop the others.
      }
    }
  }

  /** The wasm client, or the reason there is none. */
  async #client() {
    try {
      return await this.#ready;
    } catch (e) {
      throw toError(e);
    }
  }

  /**
   * Subscribes to `channel`, after the event id `options.from`, else after
   * the cursor the `cursors` store keeps for it, else live. A bad channel
   * name throws here.
   */
  subscribe(channel, options = {}) {
    if (typeof channel != "string" || !CHANNEL.test(channel)) {
      throw bad(`invalid channel name '${channel}': 1-128 characters from A-Z a-z 0-9 _ . : -`);
    }
    if (this.#closed) throw new ResubError("closed", "the client is closed");
    let from = options.from ?? undefined;
    if (from === undefined && this.#store) {
      try {
        from = this.#store.load(channel) ?? undefined;
      } catch (e) {
        throw new ResubError("cursor_store", `cannot load the cursor: ${e}`);
      }
    }
    const inner = this.#client().then((c) => c.subscribe(channel, from));
    inner.catch(() => {}); // reported by next()
    return new Subscription(inner, channel, this.#store);
  }

  /** Publishes; resolves to the event id. */
  async publish(channel, data, options = {}) {
    const inner = await this.#client();
    try {
      return await inner.publish(channel, String(data), options.event ?? undefined);
    } catch (e) {
      throw toError(e);
    }
  }

  /**
   * Who is present on `channel` now: `[{clientId, data}]`, sorted by client
   * id, asked of the server in use with `GET /presence/{channel}`.
   */
  async presence(channel) {
    let res, body;
    try {
      const headers = this.#token ? { authorization: "Bearer " + this.#token } : {};
      res = await fetch(`${this.#endpoint}/presence/${encodeURIComponent(channel)}`, { cache: "no-store", headers });
      body = res.status == 200 ? await res.json() : await res.text();
    } catch (e) {
      throw new ResubError("unavailable", String(e));
    }
    const s = res.status;
    if (s != 200 || !Array.isArray(body?.members)) {
      const code = s == 401 ? "unauthorized" : s >= 400 && s < 500 && s != 408 && s != 429 ? "bad_request" : "unavailable";
      throw new ResubError(code, `HTTP ${s}: ${String(body).slice(0, 200)}`);
    }
    return body.members.map((m) => ({ clientId: String(m.client_id), data: String(m.data ?? "") }));
  }

  /** Calls `fn(state)` on every connection state change; returns a function that stops it. */
  onState(fn) {
    // A wrapper, so that the same function added twice is called twice.
    const listener = (state) => fn(state);
    this.#stateListeners.add(listener);
    return () => {
      this.#stateListeners.delete(listener);
    };
  }

  /** `on("state", fn)`: the same as `onState(fn)`, in the style of `Subscription.on`. */
  on(type, fn) {
    if (type != "state") throw bad(`unknown event type ${type}`);
    return this.onState(fn);
  }

  /** The current connection state. */
  get state() {
    if (this.#inner) return outState(this.#inner.state());
    if (this.#failed) return { state: "closed", error: this.#failed };
    return { state: "connecting", transport: this.#first, attempt: 0, endpoint: this.#endpoint };
  }

  /** Counters: delivered, replayed, duplicates, resets, connections, failures. */
  get stats() {
    return this.#inner?.stats() ?? { delivered: 0, replayed: 0, duplicates: 0, resets: 0, connections: 0, failures: 0 };
  }

  /** Closes the connection and ends every subscription. */
  async close() {
    this.#closed = true;
    this.#stop?.();
    let inner;
    try {
      inner = await this.#ready;
    } catch {
      return;
    }
    await inner.close();
  }
}
