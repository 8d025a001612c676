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

/** Milliseconds: a non-negative finite number, or undefined. */
function ms(options, key) {
  const v = options[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isFinite(v) || v < 0) throw bad(`${key} must be a non-negative number of milliseconds`);
  return v;
}

/** A list of strings without spaces, joined by spaces, or undefined. */
function list(v, what, check) {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || v.length === 0 || !v.every((x) => typeof x === "string" && x !== "" && !/\s/.test(x) && check(x))) {
    throw bad(`${what}`);
  }
  return v.join(" ");
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

/** Checks the user's options and hands them to the wasm side in its short form. */
function wasmOptions(options) {
  const o = {};
  const t = list(options.transports, 'transports must be a non-empty array of "ws", "sse", "poll"', (t) =>
    ["ws", "sse", "poll"].includes(t),
  );
  // One letter per transport, in order.
  if (t !== undefined) o.t = t.split(" ").map((name) => name[0]).join("");
  const b = options.backoff ?? {};
  o.bb = ms(b, "baseMs");
  o.bc = ms(b, "capMs");
  if (b.factor !== undefined) {
    if (typeof b.factor !== "number" || !Number.isFinite(b.factor)) throw bad("factor must be a number");
    o.bf = b.factor;
  }
  if (b.maxAttempts !== undefined) {
    if (typeof b.maxAttempts !== "number" || !(b.maxAttempts >= 1)) throw bad("maxAttempts must be a number, at least 1");
    o.bm = Math.min(Math.floor(b.maxAttempts), 4294967295);
  }
  o.hb = ms(options, "heartbeatTimeoutMs");
  o.ot = ms(options, "openTimeoutMs");
  o.ha = ms(options, "healthyAfterMs");
  o.ph = ms(options, "pollHoldMs");
  o.up = options.upgradeProbeMs === false ? -1 : ms(options, "upgradeProbeMs");
  o.el = list(options.endpoints, "endpoints must be a non-empty array of URLs", () => true);
  for (const [key, short] of [
    ["maxPendingPublishes", "mp"],
    ["maxPendingPublishBytes", "mb"],
  ]) {
    const v = options[key];
    if (v === undefined) continue;
    if (typeof v !== "number" || !Number.isInteger(v) || v < 0) throw bad(`${key} must be a non-negative integer`);
    o[short] = v;
  }
  if (options.token !== undefined) {
    if (typeof options.token !== "string" || options.token === "") throw bad("token must be a non-empty string");
    o.tk = options.token;
  }
  if (options.clientId !== undefined) {
    if (typeof options.clientId !== "string") throw bad("clientId must be a string");
    o.ci = options.clientId;
    if (options.presenceData !== undefined && typeof options.presenceData !== "string") throw bad("presenceData must be a string");
    o.pd = options.presenceData;
  }
  return o;
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
    let resp;
    try {
      resp = await fetch(`${this.#endpoint}/presence/${encodeURIComponent(channel)}`, { cache: "no-store" });
    } catch (e) {
      throw new ResubError("unavailable", String(e));
    }
    const text = await resp.text();
    if (resp.status === 401) throw new ResubError("unauthorized", text);
    if (resp.status >= 400 && resp.status < 500 && resp.status !== 408 && resp.status !== 429) {
      throw new ResubError("bad_request", `HTTP ${resp.status}: ${text.slice(0, 200)}`);
    }
    if (resp.status !== 200) throw new ResubError("unavailable", `HTTP ${resp.status}`);
    let body;
    try {
      body = JSON.parse(text);
    } catch {
      throw new ResubError("unavailable", "unexpected presence answer");
    }
    if (!body || !Array.isArray(body.members)) throw new ResubError("unavailable", "unexpected presence answer");
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
    await this.#inner.close();
  }
}
