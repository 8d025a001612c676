// resub for the browser: resumable real-time subscriptions over WebSocket,
// Server-Sent Events and long polling, from one Rust core compiled to wasm.
//
// Nothing happens at import: the wasm is instantiated on first use (the first
// `new Client`, or `await init()`), from the source the entry point set
// (`resub`: the .wasm file beside it; `resub/inline`: bytes embedded in JS).
import initWasm, { Core } from "./resub_wasm.js";

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
  // The wasm side throws `{code, message}` as JSON.
  if (typeof e == "string") {
    try {
      e = JSON.parse(e);
    } catch {}
  }
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
 * the order `Core::new` reads them.
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

/** Messages a subscription holds unread before the client stops feeding the core. */
const SUB_LIMIT = 1024;

// What the client calls on a subscription (not part of the API).
const PUSH = Symbol("push");
const END = Symbol("end");
const CLOSED = Symbol("closed");

const done = () => ({ done: true, value: undefined });

/** A subscription: an async iterable of messages, or a source of callbacks. */
export class Subscription {
  #channel;
  #store;
  #hooks; // { closed(sub), drained(sub) } of its client
  #listeners = { event: [], resumed: [], reset: [], presence: [], error: [], end: [] };
  #mode; // "iterate" or "listen", once used
  #closed = false;
  #buf = []; // messages handed over by the core, read from #at
  #cursors = []; // with a store: the cursor each message moves to, or undefined
  #at = 0;
  #full = false; // holding SUB_LIMIT or more: the client holds back what arrives
  #end = false; // true once ended, or the error it ended with until that is read
  #waiter; // wakes the next() waiting for a message

  constructor(channel, store, hooks) {
    this.#channel = channel;
    this.#store = store;
    this.#hooks = hooks;
  }

  /** The channel subscribed to. */
  get channel() {
    return this.#channel;
  }

  get [CLOSED]() {
    return this.#closed;
  }

  /**
   * A message for this subscription, and the cursor the core says it moves
   * the subscription to (saved before the application sees it), if any;
   * true once it holds too many unread.
   */
  [PUSH](m, cursor) {
    if (this.#closed) return false;
    this.#buf.push(m);
    if (this.#store) this.#cursors.push(cursor);
    this.#wake();
    return (this.#full ||= this.#buf.length - this.#at >= SUB_LIMIT);
  }

  /** No more messages: the end, or an error read after every message before it. */
  [END](error) {
    if (this.#end === false) this.#end = error ?? true;
    this.#wake();
  }

  #wake() {
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.();
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

  // A message already here costs no call into wasm and no extra promise.
  #next() {
    if (this.#closed) return Promise.resolve(done());
    if (this.#at < this.#buf.length) {
      try {
        return Promise.resolve(this.#take());
      } catch (e) {
        return Promise.reject(e);
      }
    }
    if (this.#end !== false) {
      const e = this.#end;
      this.#end = true;
      return e === true ? Promise.resolve(done()) : Promise.reject(e);
    }
    return new Promise((wake) => {
      const before = this.#waiter;
      this.#waiter = () => {
        before?.();
        wake();
      };
    }).then(() => this.#next());
  }

  #take() {
    const cursor = this.#cursors[this.#at];
    const value = this.#buf[this.#at++];
    if (this.#at == this.#buf.length) {
      this.#buf = [];
      this.#cursors = [];
      this.#at = 0;
    }
    // The position is saved before the application sees the message, so
    // that a reload neither repeats nor skips it.
    if (this.#store && cursor !== undefined) {
      try {
        this.#store.save(this.#channel, cursor);
      } catch (e) {
        this.close();
        throw new ResubError("cursor_store", `cannot save the cursor: ${e}`);
      }
    }
    if (this.#full && this.#buf.length - this.#at <= SUB_LIMIT / 2) {
      this.#full = false;
      this.#hooks.drained(this);
    }
    return { done: false, value };
  }

  /** Called when a `for await` loop is left early: ends the subscription. */
  async return() {
    this.close();
    return done();
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
    this.#buf = [];
    this.#cursors = [];
    this.#at = 0;
    this.#hooks.closed(this);
    this.#wake();
  }
}

// --- the driver: I/O for the core -------------------------------------------------

/** Reports from connections held while a reader is behind; past this, a connection is cut. */
const INBOX = 256;

/** Reports fed to the core before it is asked for outputs, without waiting for a task. */
const WAKE_AFTER = 64;

const describe = (e) => String(e?.message ?? e ?? "browser error");

/** A response's body as text, or undefined if it is longer than `limit` bytes. */
async function readBounded(res, limit) {
  if (Number(res.headers.get("content-length")) > limit) {
    res.body?.cancel().catch(() => {});
    return undefined;
  }
  if (!res.body) return "";
  const reader = res.body.getReader();
  const parts = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.length;
    if (size > limit) {
      reader.cancel().catch(() => {});
      return undefined;
    }
    parts.push(value);
  }
  const all = new Uint8Array(size);
  size = 0;
  for (const p of parts) {
    all.set(p, size);
    size += p.length;
  }
  return new TextDecoder().decode(all);
}

/**
 * Whether a parsed frame is an event in the shape the core reads without
 * seeing it: `type` "event", `channel`, `id` and `data` strings, maybe an
 * `event` string or null, nothing else. Any other frame goes to the core's
 * own decoder.
 */
function isEvent(f) {
  if (f?.type !== "event" || typeof f.channel != "string" || typeof f.id != "string" || typeof f.data != "string") {
    return false;
  }
  if (f.event != null && typeof f.event != "string") return false;
  for (const k in f) if (k != "type" && k != "channel" && k != "id" && k != "data" && k != "event") return false;
  return true;
}

const statsOf = (s) => ({
  delivered: s[0],
  replayed: s[1],
  duplicates: s[2],
  resets: s[3],
  connections: s[4],
  failures: s[5],
});

// --- the client ------------------------------------------------------------------

/** A connection to a resub server, shared by any number of subscriptions. */
export class Client {
  #core; // the session in wasm, from when it is there until it has closed
  #ready; // Promise of it
  #failed; // why it could not be made
  #stateListeners = new Set();
  #state;
  #stats;
  #endpoint;
  #store;
  #token;
  #stop = []; // undoes what was set up (listeners, the token provider)
  #closed = false;
  // The driver's own state.
  #conns = new Map(); // connection id -> { live, stop(), send(text) }
  #subs = new Map(); // channel -> Subscription
  #publishes = new Map(); // token -> [resolve, reject]
  #nextToken = 0;
  #held = []; // reports held while a subscription is full
  #behind = new Set(); // the full subscriptions
  #fed = 0; // reports fed since the last turn
  #posted = false; // a turn is queued as a task
  #port;
  #pumping = false;
  #started = false; // the first turn is taken after the code that made the client
  #timer;
  #at = 0; // when #timer fires (performance.now())
  #limits; // bytes: [poll answer, unsent on a WebSocket, publish answer, frame]; ms: [token provider]
  #kept = []; // events parsed here and fed to the core, by seq, until the end of the turn
  #hooks = {
    closed: (sub) => {
      this.#drained(sub);
      if (this.#subs.get(sub.channel) === sub) {
        this.#subs.delete(sub.channel);
        this.#core?.unsubscribe(sub.channel);
        this.#pump();
      }
    },
    drained: (sub) => this.#drained(sub),
  };

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
    this.#state = { state: "connecting", transport: options.transports?.[0] ?? "ws", attempt: 0, endpoint: this.#endpoint };
    const make = () => {
      if (this.#closed) throw new ResubError("closed", "the client is closed");
      let core;
      try {
        core = new Core(url, o);
      } catch (e) {
        throw toError(e);
      }
      this.#start(core, options.token);
      return core;
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

  #start(core, provider) {
    this.#core = core;
    this.#limits = core.limits();
    this.#endpoint = core.endpoint();
    this.#state = { state: "connecting", transport: core.transport(), attempt: 0, endpoint: this.#endpoint };
    // A turn after the reports of this task: one per run of messages.
    const ch = new MessageChannel();
    ch.port1.onmessage = () => {
      this.#posted = false;
      this.#pump();
    };
    this.#port = ch.port2;
    this.#stop.push(() => ch.port1.close());
    // Browser signals: online, offline, the page visible again.
    const listen = (target, type, fn) => {
      target?.addEventListener?.(type, fn);
      this.#stop.push(() => target?.removeEventListener?.(type, fn));
    };
    const signal = (kind) => () => {
      this.#core?.signal(kind);
      this.#pump();
    };
    listen(globalThis, "online", signal(0));
    listen(globalThis, "offline", signal(1));
    const doc = globalThis.document;
    const wake = signal(2);
    listen(doc, "visibilitychange", () => doc.visibilityState == "visible" && wake());
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
          token = await Promise.race([provider(), new Promise((_, no) => (limit = setTimeout(no, this.#limits[4])))]);
        } catch {}
        clearTimeout(limit);
        if (mine != asks || closed) return;
        failed = typeof token != "string" || !token;
        if (failed) token = undefined;
        else this.#token = token;
        this.#core?.token(token);
        this.#pump();
      };
      listen(globalThis, "online", ask);
      const listener = (s) => {
        clearTimeout(timer);
        if (s.state == "disconnected") timer = setTimeout(ask, failed ? s.retryInMs : 0);
      };
      this.#stateListeners.add(listener);
      this.#stop.push(() => {
        closed = 1;
        clearTimeout(timer);
        this.#stateListeners.delete(listener);
      });
      ask();
    } else this.#token = provider;
    // The first turn after the code that made the client, so that the
    // listeners it adds see the first state.
    queueMicrotask(() => {
      this.#started = true;
      this.#pump();
    });
  }

  // One turn: carry out every output the core has, then arm its timer.
  #pump() {
    const core = this.#core;
    if (this.#pumping || !core || !this.#started) return;
    this.#pumping = true;
    this.#fed = 0;
    try {
      let out;
      while ((out = core.poll()) !== undefined) this.#run(JSON.parse(out));
    } finally {
      this.#pumping = false;
    }
    // The core delivers an event as it is fed, or never: every output about
    // these has been carried out.
    this.#kept = [];
    if (core.isClosed()) return this.#finish(core);
    // Armed lazily: a deadline that moved later keeps the timer, which then
    // fires early and finds nothing due; only an earlier one re-arms it.
    const ms = core.wait();
    if (ms < 0) return;
    const at = performance.now() + ms;
    if (this.#timer !== undefined && at >= this.#at) return;
    clearTimeout(this.#timer);
    this.#at = at;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#core?.timeout();
      this.#pump();
    }, ms);
  }

  // The outputs, as `output_json` in the wasm layer writes them.
  #run(outs) {
    for (const o of outs) {
      switch (o[0]) {
        case 0:
          this.#connect(o[1], o[2], o[3]);
          break;
        case 1: {
          const c = this.#conns.get(o[1]);
          // A peer that stopped reading what is sent: the connection is cut.
          if (c && !c.send(o[2])) this.#cut(o[1], c, "send queue full: the server is not reading");
          break;
        }
        case 2:
          this.#post(o[1], o[2], o[3]);
          break;
        case 3: {
          const c = this.#conns.get(o[1]);
          if (c) {
            this.#conns.delete(o[1]);
            c.live = false;
            c.stop();
          }
          break;
        }
        case 4: {
          const sub = this.#subs.get(o[1].channel);
          if (sub?.[PUSH](o[1], o[2])) this.#behind.add(sub);
          break;
        }
        case 5: {
          const sub = this.#subs.get(o[1]);
          if (sub) {
            this.#subs.delete(o[1]);
            sub[END](toError(o[2]));
            // Nothing more comes for it: its unread messages hold nothing back.
            this.#drained(sub);
          }
          break;
        }
        case 6: {
          const p = this.#publishes.get(o[1]);
          this.#publishes.delete(o[1]);
          if (o.length > 3) p?.[1](toError(o[3]));
          else p?.[0](o[2]);
          break;
        }
        case 8: {
          // An event: it moves the cursor to its id.
          const m = this.#kept[o[1]];
          m.event ??= "message";
          const sub = this.#subs.get(m.channel);
          if (sub?.[PUSH](m, m.id)) this.#behind.add(sub);
          break;
        }
        case 7: {
          const s = outState(o[1]);
          this.#state = s;
          if (s.endpoint) this.#endpoint = s.endpoint;
          this.#emit(s);
          break;
        }
      }
    }
  }

  #finish(core) {
    this.#core = undefined;
    this.#stats = statsOf(core.stats());
    core.free();
    clearTimeout(this.#timer);
    for (const stop of this.#stop.splice(0)) stop();
    for (const c of this.#conns.values()) {
      c.live = false;
      c.stop();
    }
    this.#conns.clear();
    for (const sub of this.#subs.values()) sub[END]();
    this.#subs.clear();
    for (const [, no] of this.#publishes.values()) no(this.#closedError());
    this.#publishes.clear();
    this.#held = [];
    this.#behind.clear();
  }

  /** Why the client is closed: the error that stopped it, or `closed`. */
  #closedError() {
    return this.#failed ?? this.#state.error ?? new ResubError("closed", "the client is closed");
  }

  // --- reports from connections

  /**
   * Hands a report to the core and takes a turn at once (an open, an end, a
   * poll answer: what to do next should not wait for a task), or holds it
   * while a subscription is full.
   */
  #report(f) {
    if (!this.#core) return;
    if (this.#behind.size || this.#held.length) {
      this.#held.push(f);
      return;
    }
    f(this.#core);
    this.#pump();
  }

  #soon() {
    if (++this.#fed >= WAKE_AFTER) this.#pump();
    else if (!this.#posted) {
      this.#posted = true;
      this.#port.postMessage(0);
    }
  }

  /** The last report of connection `c`. */
  #gone(id, c, f) {
    if (!c.live) return;
    c.live = false;
    this.#conns.delete(id);
    this.#report(f);
  }

  /** Cuts connection `c` and reports it lost. */
  #cut(id, c, why) {
    c.stop();
    this.#gone(id, c, (core) => core.closed(id, 2, 0, why));
  }

  #drained(sub) {
    if (!this.#behind.delete(sub) || this.#behind.size || !this.#core) return;
    const held = this.#held.splice(0);
    for (const f of held) f(this.#core);
    this.#pump();
  }

  #message(id, c, data) {
    if (!c.live) return;
    if (typeof data != "string") {
      try {
        data = new TextDecoder("utf-8", { fatal: true }).decode(data);
      } catch {
        return this.#cut(id, c, "binary frame that is not UTF-8");
      }
    }
    if (this.#behind.size || this.#held.length) {
      if (this.#held.length < INBOX) this.#held.push((core) => this.#frame(core, id, data));
      else this.#cut(id, c, "the application is not reading: closed, to resume from the cursor");
      return;
    }
    this.#frame(this.#core, id, data);
    this.#soon();
  }

  /**
   * Feeds one WebSocket message or SSE event's data. An event is parsed
   * here and only its channel and id cross into wasm (its data stays here,
   * kept until the core says to deliver it); anything else is decoded there.
   */
  #frame(core, id, text) {
    let f;
    try {
      f = JSON.parse(text);
    } catch {}
    // A frame's size counts in bytes: UTF-16 units are fewer, up to 3 times.
    const bytes = text.length * 3 > this.#limits[3] ? new TextEncoder().encode(text).length : text.length;
    if (!isEvent(f)) return core.message(id, text, bytes);
    core.event(id, f.channel, f.id, f.event ?? undefined, this.#kept.push(f) - 1, bytes);
  }

  /** Feeds a long-poll answer: its events as `#frame` does, frame by frame, in order. */
  #answer(core, id, text) {
    let frames;
    try {
      frames = JSON.parse(text).frames;
    } catch {}
    if (!Array.isArray(frames) || !frames.every((f) => f?.type !== "event" || isEvent(f))) return core.answer(id, text);
    for (const f of frames) {
      if (f.type === "event") core.event(id, f.channel, f.id, f.event ?? undefined, this.#kept.push(f) - 1, 0);
      else core.answer(id, JSON.stringify({ frames: [f] }));
    }
  }

  #headers(h) {
    if (this.#token) h.authorization = "Bearer " + this.#token;
    return h;
  }

  #connect(id, kind, url) {
    const c = { live: true, stop() {}, send: () => true };
    this.#conns.set(id, c);
    let opened = false;
    const open = () => {
      opened = true;
      if (c.live) this.#report((core) => core.opened(id));
    };
    const closed = (kind, code, text) => this.#gone(id, c, (core) => core.closed(id, kind, code, text));
    if (kind == "poll") return this.#poll(id, url, c, open, closed);
    let s;
    try {
      s = kind == "ws" ? new WebSocket(url) : new EventSource(url);
    } catch (e) {
      return closed(0, 0, describe(e));
    }
    c.stop = () => {
      s.onopen = s.onmessage = s.onerror = s.onclose = null;
      s.close();
    };
    s.onopen = open;
    s.onmessage = (e) => this.#message(id, c, e.data);
    if (kind == "ws") {
      s.binaryType = "arraybuffer";
      c.send = (text) => s.bufferedAmount + text.length <= this.#limits[1] && (s.send(text), true);
      s.onclose = (e) => (opened ? closed(3, e.code, e.reason) : closed(1, 0, "the WebSocket did not open"));
    } else {
      s.onerror = () => {
        s.close();
        if (opened) closed(2, 0, "the event stream broke");
        else closed(1, 0, "the event stream did not open");
      };
    }
  }

  async #poll(id, url, c, open, closed) {
    const abort = new AbortController();
    c.stop = () => abort.abort();
    let res;
    try {
      res = await fetch(url, { headers: this.#headers({ accept: "application/json" }), signal: abort.signal });
    } catch (e) {
      return closed(0, 0, describe(e));
    }
    const type = res.headers.get("content-type") ?? "";
    if (!Core.accepts(res.status, type)) {
      res.body?.cancel().catch(() => {});
      const retry = res.headers.get("retry-after") ?? undefined;
      return this.#gone(id, c, (core) => core.refused(id, res.status, type, retry));
    }
    open();
    let text;
    try {
      text = await readBounded(res, this.#limits[0]);
    } catch (e) {
      return closed(2, 0, describe(e));
    }
    if (text === undefined) return closed(4, 0, "");
    if (c.live) this.#report((core) => this.#answer(core, id, text));
    closed(5, 0, "");
  }

  async #post(key, url, data) {
    let status = 0,
      body;
    try {
      const headers = this.#headers({ "idempotency-key": key, "content-type": "text/plain;charset=UTF-8" });
      const res = await fetch(url, { method: "POST", body: data, headers });
      status = res.status;
      body = await readBounded(res, this.#limits[2]);
    } catch (e) {
      status = 0;
      body = describe(e);
    }
    // Not held behind a full subscription: the application may be waiting
    // for this before it reads again.
    this.#core?.posted(key, status, body);
    this.#pump();
  }

  // --- the API

  #emit(state) {
    for (const fn of this.#stateListeners) {
      try {
        fn(state);
      } catch {
        // A throwing listener does not stop the others.
      }
    }
  }

  /** The core, or the reason there is none. */
  async #client() {
    try {
      await this.#ready;
    } catch (e) {
      throw toError(e);
    }
    if (!this.#core) throw this.#closedError();
    return this.#core;
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
    const sub = new Subscription(channel, this.#store, this.#hooks);
    this.#client().then(
      (core) => {
        if (sub[CLOSED]) return;
        try {
          core.subscribe(channel, from);
        } catch (e) {
          return sub[END](toError(e));
        }
        this.#subs.set(channel, sub);
        this.#pump();
      },
      (e) => sub[END](e),
    );
    return sub;
  }

  /** Publishes; resolves to the event id. */
  async publish(channel, data, options = {}) {
    const core = await this.#client();
    const token = this.#nextToken++;
    const result = new Promise((ok, no) => this.#publishes.set(token, [ok, no]));
    try {
      core.publish(token, channel, String(data), options.event ?? undefined);
    } catch (e) {
      this.#publishes.delete(token);
      throw toError(e);
    }
    this.#pump();
    return result;
  }

  /**
   * Who is present on `channel` now: `[{clientId, data}]`, sorted by client
   * id, asked of the server in use with `GET /presence/{channel}`.
   */
  async presence(channel) {
    await this.#client();
    let res, body;
    try {
      const headers = this.#token ? { authorization: "Bearer " + this.#token } : {};
      res = await fetch(`${this.#endpoint}/presence/${encodeURIComponent(channel)}`, { cache: "no-store", headers });
      body = await res.text();
    } catch (e) {
      throw new ResubError("unavailable", String(e));
    }
    // What the answer means is the core's to say.
    try {
      Core.presenceAnswer(res.status, body);
    } catch (e) {
      throw toError(e);
    }
    let members;
    try {
      members = JSON.parse(body).members;
    } catch {}
    if (!Array.isArray(members)) throw new ResubError("unavailable", `unexpected presence answer: ${body.slice(0, 200)}`);
    return members.map((m) => ({ clientId: String(m.client_id), data: String(m.data ?? "") }));
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
    if (this.#failed) return { state: "closed", error: this.#failed };
    return { ...this.#state };
  }

  /** Counters: delivered, replayed, duplicates, resets, connections, failures. */
  get stats() {
    if (this.#core) return statsOf(this.#core.stats());
    return this.#stats ?? { delivered: 0, replayed: 0, duplicates: 0, resets: 0, connections: 0, failures: 0 };
  }

  /** Closes the connection and ends every subscription. */
  async close() {
    this.#closed = true;
    try {
      await this.#ready;
    } catch {
      return;
    }
    if (this.#core) {
      this.#core.close();
      this.#pump();
    }
  }
}
