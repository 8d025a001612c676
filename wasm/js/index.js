// resub for the browser: resumable real-time subscriptions over WebSocket,
// Server-Sent Events and long polling, from one Rust core compiled to wasm.
import initWasm, { WasmClient } from "./resub_wasm.js";

await initWasm({ module_or_path: new URL("./resub_wasm_bg.wasm", import.meta.url) });

/** An error from resub, with a stable machine-readable `code`. */
export class ResubError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "ResubError";
    this.code = code;
  }
}

function toError(e) {
  if (e instanceof Error) return e;
  if (e && typeof e === "object" && "code" in e) return new ResubError(e.code, e.message);
  return new ResubError("unknown", String(e));
}

const bad = (message) => new ResubError("invalid_argument", message);

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

/** A subscription: an async iterable of messages, or a source of callbacks. */
export class Subscription {
  #inner;
  #channel;
  #store;
  #listeners = { event: [], reset: [], presence: [], error: [], end: [] };
  #pumping = false;

  constructor(inner, channel, store) {
    this.#inner = inner;
    this.#channel = channel;
    this.#store = store;
  }

  /** The channel subscribed to. */
  get channel() {
    return this.#channel;
  }

  /** The next message; `{ done: true }` once the subscription has ended. */
  async next() {
    let value;
    try {
      value = await this.#inner.next();
    } catch (e) {
      throw toError(e);
    }
    if (value === undefined) return { done: true, value: undefined };
    // The position is saved before the application sees the message, so
    // that a reload neither repeats nor skips it.
    const cursor = "id" in value ? value.id : "reset" in value ? value.head : undefined;
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
    return this;
  }

  /**
   * Calls `fn` for each "event" (`{channel, id, event, data}`), "reset"
   * (`{channel, reset, head}`), "presence" (`{channel, presence, clientId,
   * data}`, with a `clientId` option), "error" (a ResubError) or "end". Use
   * this or `for await`, not both.
   */
  on(type, fn) {
    if (!(type in this.#listeners)) throw new ResubError("invalid_argument", `unknown event type ${type}`);
    this.#listeners[type].push(fn);
    if (!this.#pumping) {
      this.#pumping = true;
      this.#pump();
    }
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
        const { done, value } = await this.next();
        if (done) break;
        emit("reset" in value ? "reset" : "presence" in value ? "presence" : "event", value);
      }
    } catch (e) {
      emit("error", e);
    }
    emit("end", undefined);
  }

  /** Ends the subscription; a pending `next()` resolves with `done`. */
  close() {
    this.#inner.close();
  }
}

/** A connection to a resub server, shared by any number of subscriptions. */
export class Client {
  #inner;
  #stateListeners = new Set();
  #endpoint;
  #store;
  #token;
  #stop;

  /**
   * @param {string} url the server's base URL, `http(s)://host:port`
   * @param {import("./index").ClientOptions} [options]
   */
  constructor(url, options = {}) {
    const o = wasmOptions(options);
    this.#store = cursorStore(options.cursors, url);
    try {
      this.#inner = new WasmClient(url, o);
    } catch (e) {
      throw toError(e);
    }
    this.#endpoint = this.#inner.state().endpoint;
    const provider = options.token;
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
        this.#inner.setToken(token);
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
    // One state stream from the core, shared by every onState listener.
    this.#inner.onState((state) => {
      if (state.endpoint) this.#endpoint = state.endpoint;
      for (const fn of this.#stateListeners) {
        try {
          fn(state);
        } catch {
          // A throwing listener does not stop the others.
        }
      }
    });
  }

  /**
   * Subscribes to `channel`, after the event id `options.from`, else after
   * the cursor the `cursors` store keeps for it, else live.
   */
  subscribe(channel, options = {}) {
    let from = options.from ?? undefined;
    if (from === undefined && this.#store) {
      try {
        from = this.#store.load(channel) ?? undefined;
      } catch (e) {
        throw new ResubError("cursor_store", `cannot load the cursor: ${e}`);
      }
    }
    return new Subscription(this.#inner.subscribe(channel, from), channel, this.#store);
  }

  /** Publishes; resolves to the event id. */
  async publish(channel, data, options = {}) {
    try {
      return await this.#inner.publish(channel, String(data), options.event ?? undefined);
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

  /** The current connection state. */
  get state() {
    return this.#inner.state();
  }

  /** Counters: delivered, replayed, duplicates, resets, connections. */
  get stats() {
    return this.#inner.stats();
  }

  /** Closes the connection and ends every subscription. */
  async close() {
    this.#stop?.();
    await this.#inner.close();
  }
}
