// Typed usage of the `resub` package, checked with `tsc --noEmit` (run.sh).
// It is compiled, never run: it shows how the public types fit together and
// fails the check when index.d.ts stops describing this use.
import {
  Client,
  ResubError,
  Subscription,
  type BackoffOptions,
  type ClientOptions,
  type ConnectionState,
  type EventMessage,
  type Member,
  type Message,
  type PresenceMessage,
  type ResetMessage,
  type Stats,
  type TokenProvider,
  type Transport,
} from "resub";

const transports: Transport[] = ["ws", "sse", "poll"];

const backoff: BackoffOptions = { baseMs: 250, factor: 2, capMs: 10_000, maxAttempts: 8 };

const options: ClientOptions = {
  transports,
  backoff,
  heartbeatTimeoutMs: 30_000,
  openTimeoutMs: 10_000,
  healthyAfterMs: 5_000,
  upgradeProbeMs: false,
  pollHoldMs: 25_000,
  endpoints: ["https://node-b.example", "https://node-c.example"],
  clientId: "user-42",
  presenceData: JSON.stringify({ name: "Ada" }),
};

// A token provider: asked at the start and whenever the connection is down.
const fetchToken: TokenProvider = async () => {
  const res = await fetch("/api/realtime-token", { credentials: "include" });
  return (await res.json()).token as string;
};
const withProvider: ClientOptions = { token: fetchToken };
const withFixedToken: ClientOptions = { token: "a-short-lived-token" };
void withProvider;
void withFixedToken;
// @ts-expect-error: a provider returns a token, not an object.
const wrongProvider: ClientOptions = { token: () => ({ token: "x" }) };
void wrongProvider;

// @ts-expect-error: only "ws", "sse" and "poll" are transports.
const wrongTransport: ClientOptions = { transports: ["http"] };
void wrongTransport;

/** A one-line description of every connection state; the switch is exhaustive. */
export function describeState(state: ConnectionState): string {
  switch (state.state) {
    case "connecting":
      return `connecting over ${state.transport} (attempt ${state.attempt})`;
    case "connected": {
      const via = state.fallback ? ` (fell back from ${state.fallback.from}: ${state.fallback.reason})` : "";
      return `connected over ${state.transport}${via}`;
    }
    case "disconnected":
      return `disconnected: ${state.reason}; attempt ${state.attempt} in ${state.retryInMs} ms`;
    case "closed":
      return state.error ? `closed: ${state.error.code}: ${state.error.message}` : "closed";
    default: {
      const unreachable: never = state;
      return unreachable;
    }
  }
}

function render(event: EventMessage): string {
  return `${event.channel} #${event.id} ${event.event}: ${event.data}`;
}

function resync(reset: ResetMessage): string {
  return `${reset.channel} reset (${reset.reset}), continuing after ${reset.head}`;
}

/** Narrows a message to an event or a reset with `"reset" in msg`. */
export function show(msg: Message): string {
  if (msg.type == "resumed") return `${msg.channel}: resumed after ${msg.after}`;
  if ("reset" in msg) return resync(msg);
  if ("presence" in msg) return `${msg.clientId} ${msg.presence}`;
  return render(msg);
}

function codeOf(e: unknown): string {
  return e instanceof ResubError ? e.code : "unknown";
}

export function formatStats(stats: Stats): string {
  const { delivered, replayed, duplicates, resets, connections } = stats;
  return `${delivered} delivered (${replayed} replayed, ${duplicates} duplicates dropped), ${resets} resets, ${connections} connections`;
}

/** Follows a channel from a stored cursor until `signal` aborts. */
export async function follow(url: string, channel: string, cursor: string | undefined, signal: AbortSignal): Promise<string | undefined> {
  let client: Client;
  try {
    client = new Client(url, options);
  } catch (e) {
    if (e instanceof ResubError && e.code === "invalid_url") throw new Error(`bad server URL ${url}`);
    throw e;
  }
  const stop: () => void = client.onState((s) => console.log(describeState(s)));
  const current: ConnectionState = client.state;
  console.log(describeState(current));

  const sub: Subscription = client.subscribe(channel, cursor === undefined ? {} : { from: cursor });
  const name: string = sub.channel;
  signal.addEventListener("abort", () => sub.close());

  let last = cursor;
  try {
    for await (const msg of sub) {
      if ("reset" in msg) {
        console.warn(resync(msg));
        last = msg.head;
        continue;
      }
      if ("presence" in msg) continue; // Only with a clientId option.
      if (msg.type == "resumed") continue; // Nothing lost.
      console.log(name, render(msg));
      last = msg.id;
    }
  } catch (e) {
    console.error(`subscription failed: ${codeOf(e)}`);
  } finally {
    stop();
    console.log(formatStats(client.stats));
    await client.close();
  }
  return last;
}

/** The same with callbacks, and publishing. */
export async function callbacks(client: Client): Promise<string> {
  const sub = client
    .subscribe("demo")
    .on("event", (m: EventMessage) => console.log(m.data))
    .on("reset", (r: ResetMessage) => console.log(r.reset, r.head))
    .on("error", (e: ResubError) => console.error(e.code, e.message))
    .on("end", () => console.log("ended"));
  // The iterator protocol, by hand.
  const first: IteratorResult<Message, undefined> = await sub.next();
  if (!first.done) console.log(show(first.value));
  await sub.return();

  try {
    return await client.publish("demo", JSON.stringify({ hello: "world" }), { event: "greeting" });
  } catch (e) {
    if (e instanceof ResubError) return `publish failed: ${e.code}`;
    throw e;
  }
}

// A ResubError is an Error with a code, and can be made by hand (e.g. in tests).
const made: Error = new ResubError("retries_exhausted", "gave up after 8 attempts");
void made;

/** Presence: who is here now, and who comes and goes. */
export async function presence(client: Client): Promise<string[]> {
  const members: Member[] = await client.presence("room");
  client.subscribe("room").on("presence", (p: PresenceMessage) => {
    const verb: "join" | "leave" = p.presence;
    console.log(`${p.clientId} ${verb}s (${p.data})`);
  });
  const state = client.state;
  if (state.state === "connected") console.log(`on ${state.endpoint}`);
  return members.map((m) => m.clientId);
}

// Messages narrow on `type`; error codes, disconnect reasons and the closed
// state's error are typed.
import { init, type DisconnectCode, type ResubErrorCode, type ResumedMessage } from "resub";

export async function typed(client: Client): Promise<void> {
  await init();
  for await (const m of client.subscribe("typed")) {
    switch (m.type) {
      case "event":
        console.log(m.id, m.data);
        break;
      case "resumed": {
        const r: ResumedMessage = m;
        console.log("resumed after", r.after);
        break;
      }
      case "reset":
        console.log("re-sync:", m.reset, m.head);
        break;
      case "presence":
        console.log(m.presence, m.clientId);
        break;
    }
  }
  client.on("state", (s: ConnectionState) => {
    if (s.state == "disconnected") {
      const why: DisconnectCode = s.reason;
      console.log(why, s.detail);
    }
    if (s.state == "closed" && s.error) {
      const code: ResubErrorCode = s.error.code;
      if (s.error instanceof ResubError) console.log(code);
    }
  });
}

// The inline entry has the same API.
import { Client as InlineClient } from "resub/inline";
export const inline = (url: string): InlineClient => new InlineClient(url);
