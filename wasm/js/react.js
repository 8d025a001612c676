// resub for React (18 and 19): a provider that owns a client, and hooks for a
// subscription's latest events, the connection state and a channel's
// presence. React is a peer dependency; nothing here is in the core package.
//
// Clients and subscriptions are shared and reference-counted, and released a
// moment after their last user unmounts: under StrictMode's mount, unmount,
// mount again, exactly one connection and one subscription exist (and any
// number of components may use the same channel through one subscription).
import { createContext, createElement, useContext, useEffect, useState } from "react";
import { Client } from "./index.js";

const Context = createContext(null);

/** Shared, reference-counted things, closed once unused. */
class Pool {
  #entries = new Map();

  acquire(key, make) {
    let e = this.#entries.get(key);
    if (!e) {
      e = { value: make(), refs: 0, timer: undefined };
      this.#entries.set(key, e);
    }
    clearTimeout(e.timer);
    e.refs++;
    return e.value;
  }

  release(key, close) {
    const e = this.#entries.get(key);
    if (!e || --e.refs > 0) return;
    // Later, not now: a StrictMode remount takes it back before this runs.
    e.timer = setTimeout(() => {
      if (e.refs == 0 && this.#entries.get(key) === e) {
        this.#entries.delete(key);
        close(e.value);
      }
    }, 0);
  }
}

const clients = new Pool();
const subscriptions = new Pool();
let ids = 0;
const clientIds = new WeakMap();

/**
 * Provides a resub client to the components below: made from `url` and
 * `options` (kept for the provider's life; a new `url` makes a new client),
 * or the `client` you pass (which you close).
 */
export function ResubProvider({ url, options, client, children }) {
  const [made, setMade] = useState(null);
  useEffect(() => {
    if (client || !url) return;
    const key = `${url} ${JSON.stringify(options ?? {}, (k, v) => (typeof v == "function" ? String(v) : v))}`;
    setMade(clients.acquire(key, () => new Client(url, options)));
    return () => clients.release(key, (c) => c.close());
    // The options are read once, with the url.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [url, client]);
  return createElement(Context.Provider, { value: client ?? made }, children);
}

/** The client of the nearest `ResubProvider` (null until it is made). */
export function useClient() {
  return useContext(Context);
}

/** One subscription shared by every component that uses (client, channel, from). */
function shared(client, channel, from) {
  if (!clientIds.has(client)) clientIds.set(client, ++ids);
  const key = `${clientIds.get(client)} ${channel} ${from ?? ""}`;
  const value = subscriptions.acquire(key, () => {
    const s = { listeners: new Set(), events: [], status: "connecting", error: null, presence: [] };
    const emit = () => s.listeners.forEach((fn) => fn());
    const sub = client.subscribe(channel, from === undefined ? {} : { from });
    s.close = () => sub.close();
    const keep = (m) => {
      s.events = [...s.events.slice(-(s.limit ?? 100) + 1), m];
    };
    sub
      .on("event", (m) => {
        s.status = "live";
        keep(m);
        emit();
      })
      .on("resumed", () => {
        s.status = "live";
        emit();
      })
      .on("reset", (m) => {
        s.status = "live";
        s.lastReset = m;
        emit();
      })
      .on("presence", (m) => {
        s.presence = [...s.presence, m];
        emit();
      })
      .on("error", (e) => {
        s.status = "error";
        s.error = e;
        emit();
      })
      .on("end", () => {
        if (s.status != "error") s.status = "ended";
        emit();
      });
    return s;
  });
  return [key, value];
}

function useShared(channel, from, limit) {
  const client = useClient();
  const [, rerender] = useState(0);
  const [state, setState] = useState(null);
  useEffect(() => {
    if (!client) return;
    const [key, s] = shared(client, channel, from);
    if (limit) s.limit = Math.max(s.limit ?? 0, limit);
    const update = () => rerender((n) => n + 1);
    s.listeners.add(update);
    setState(s);
    return () => {
      s.listeners.delete(update);
      subscriptions.release(key, (x) => x.close());
    };
  }, [client, channel, from, limit]);
  return state;
}

/**
 * A subscription's latest events (up to `limit`, default 100, oldest first)
 * and its status: "connecting" until the server confirms it, "live", "ended",
 * or "error" with `error` (a ResubError); `reset` is the last reset message,
 * if any (events may have been missed: re-sync).
 */
export function useSubscription(channel, options = {}) {
  const s = useShared(channel, options.from, options.limit);
  return {
    events: s?.events ?? [],
    status: s?.status ?? "connecting",
    error: s?.error ?? null,
    reset: s?.lastReset ?? null,
  };
}

/** The connection state of the provider's client, kept up to date. */
export function useConnectionState() {
  const client = useClient();
  const [state, setState] = useState(() => client?.state ?? { state: "connecting" });
  useEffect(() => {
    if (!client) return;
    setState(client.state);
    return client.onState(setState);
  }, [client]);
  return state;
}

/**
 * Who is present on `channel`: `[{clientId, data}]`, asked of the server when
 * mounted and again whenever someone joins or leaves (with a `clientId`
 * option, over WebSocket and SSE) or every `refreshMs` (default 10 s).
 */
export function usePresence(channel, options = {}) {
  const client = useClient();
  const s = useShared(channel, undefined, 1);
  const [members, setMembers] = useState([]);
  const changes = s?.presence.length ?? 0;
  useEffect(() => {
    if (!client) return;
    let live = true;
    const ask = () => client.presence(channel).then((m) => live && setMembers(m), () => {});
    ask();
    const timer = setInterval(ask, options.refreshMs ?? 10_000);
    return () => {
      live = false;
      clearInterval(timer);
    };
  }, [client, channel, changes, options.refreshMs]);
  return members;
}
