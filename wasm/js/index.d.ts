/** A transport, as `tail --transport` names it. */
export type Transport = "ws" | "sse" | "poll";

export interface BackoffOptions {
  /** Upper bound of the first reconnect delay (default 500). */
  baseMs?: number;
  /** Growth per consecutive failure (default 2). */
  factor?: number;
  /** Largest upper bound of a delay (default 20000). */
  capMs?: number;
  /** Give up after this many consecutive failures (default: never). */
  maxAttempts?: number;
}

export interface ClientOptions {
  /** Transports to use, most preferred first (default ["ws", "sse", "poll"]). */
  transports?: Transport[];
  backoff?: BackoffOptions;
  /** Silence after which a connection is dead (default: twice the server's heartbeat). */
  heartbeatTimeoutMs?: number;
  /** How long an attempt may take until the server's welcome (default 10000). */
  openTimeoutMs?: number;
  /** How long a connection must stay up before the failure count resets (default 5000). */
  healthyAfterMs?: number;
  /** How often to try a better transport while on a fallback (default 60000); false never. */
  upgradeProbeMs?: number | false;
  /** How long the server may hold a long poll (default 25000). */
  pollHoldMs?: number;
  /**
   * Further servers sharing the same channels (the other nodes of a cluster),
   * tried in turn whenever the one in use fails; the state's `endpoint` says
   * which one is in use.
   */
  endpoints?: string[];
  /**
   * Take part in presence as this id (1-128 characters from A-Z a-z 0-9 _ . : -):
   * every subscription makes the client a member of its channel's presence and
   * brings "presence" messages (on ws and sse).
   */
  clientId?: string;
  /** Data shown with `clientId` in presence (at most 1024 bytes, often JSON). */
  presenceData?: string;
  /**
   * Keep each subscription's cursor, so that `subscribe(channel)` after a page
   * reload resumes where the page left off: "localStorage", or your own store.
   * The cursor is saved before the application sees each message.
   */
  cursors?: "localStorage" | CursorStore;
  /** Most publishes waiting for a connection or an ack (default 1024); beyond, publish rejects with "publish_queue_full". */
  maxPendingPublishes?: number;
  /** Most bytes of waiting publishes (default 4 MiB). */
  maxPendingPublishBytes?: number;
  /**
   * A bearer token, or a function that returns one (a token provider). It is
   * sent as `Authorization` on fetch (long polling, publishes, `presence()`)
   * and as `access_token` in the URL of every connection, since WebSocket and
   * EventSource cannot carry headers. URLs end up in server and proxy logs:
   * prefer short-lived tokens.
   *
   * A provider is called at the start, each time the connection is down and
   * when the network comes back; the client waits for its answer before
   * connecting again, so a refused token (`401`, close code `4401`, an
   * `unauthorized` error frame) is never tried twice and cursors carry over.
   * A provider that throws, returns no string or takes over 10 s counts as a
   * refusal (not while the browser is offline); three refusals in a row close
   * the client with the error code "unauthorized". It is not called after the
   * client closed.
   */
  token?: string | TokenProvider;
}

/** Returns a fresh bearer token; see `ClientOptions.token`. */
export type TokenProvider = () => string | Promise<string>;

/** Where cursors are kept: one event id per channel. */
export interface CursorStore {
  load(channel: string): string | null | undefined;
  save(channel: string, cursor: string): void;
}

/** One event, with `data` exactly as published. */
export interface EventMessage {
  type: "event";
  channel: string;
  /** Pass as `from` to resume after this event. */
  id: string;
  /** The event type, "message" when none was given. */
  event: string;
  data: string;
}

/** A (re)subscription resumed after the cursor `after`: nothing was lost. */
export interface ResumedMessage {
  type: "resumed";
  channel: string;
  after: string;
}

/** The subscription could not continue from its cursor: events may be missing. */
export interface ResetMessage {
  type: "reset";
  channel: string;
  /** "history_truncated", "epoch_changed", "unknown_cursor", or a server's own reason. */
  reset: string;
  /** The subscription continues after this id. */
  head: string;
}

/** Someone joined or left the channel's presence (only with a `clientId` option). */
export interface PresenceMessage {
  type: "presence";
  channel: string;
  presence: "join" | "leave";
  clientId: string;
  data: string;
}

/** A member of a channel's presence. */
export interface Member {
  clientId: string;
  data: string;
}

/** What a subscription yields; `switch (message.type)` tells them apart. */
export type Message = EventMessage | ResumedMessage | ResetMessage | PresenceMessage;

/** Why the client is not connected: the core's stable codes (the same in Rust and the FFI). */
export type DisconnectCode =
  | "connect_failed"
  | "refused"
  | "unsupported"
  | "unavailable"
  | "lost"
  | "server_closed"
  | "heartbeat_timeout"
  | "open_timeout"
  | "protocol"
  | "tls"
  | "offline"
  | "no_credentials";

export type ConnectionState =
  | { state: "connecting"; transport: Transport; attempt: number; endpoint: string }
  | {
      state: "connected";
      transport: Transport;
      endpoint: string;
      fallback?: { from: Transport; reason: DisconnectCode; detail: string };
    }
  | { state: "disconnected"; reason: DisconnectCode; detail: string; attempt: number; retryInMs: number }
  | { state: "closed"; error?: ResubError };

export interface Stats {
  delivered: number;
  replayed: number;
  duplicates: number;
  resets: number;
  connections: number;
  failures: number;
}

/** The stable codes of `ResubError` (the same as the Rust and FFI surfaces), and those of this package. */
export type ResubErrorCode =
  | "unauthorized"
  | "forbidden"
  | "bad_request"
  | "tls"
  | "retries_exhausted"
  | "closed"
  | "already_subscribed"
  | "invalid_argument"
  | "invalid_url"
  | "publish_rejected"
  | "publish_queue_full"
  | "frame_too_large"
  | "invalid_client_id"
  | "unavailable"
  | "cursor_store"
  | "no_randomness"
  /** The wasm could not be loaded (`init()`, or a client's first use). */
  | "wasm_load_failed"
  /** A `Client` made where it cannot connect (server-side rendering in Node). */
  | "unsupported_environment"
  /** A subscription read both with `for await` and with `on(...)`. */
  | "invalid_state"
  | "unknown";

/** An error from resub, with a stable machine-readable code. */
export class ResubError extends Error {
  readonly code: ResubErrorCode;
  constructor(code: ResubErrorCode, message: string);
}

/**
 * Instantiates the wasm now (otherwise the first `new Client` does); rejects
 * with a ResubError "wasm_load_failed" when it cannot be loaded.
 */
export function init(): Promise<void>;

export class Subscription implements AsyncIterableIterator<Message> {
  readonly channel: string;
  next(): Promise<IteratorResult<Message, undefined>>;
  return(): Promise<IteratorResult<Message, undefined>>;
  [Symbol.asyncIterator](): AsyncIterableIterator<Message>;
  /** Callbacks instead of `for await` (one or the other per subscription). */
  on(type: "event", fn: (message: EventMessage) => void): this;
  on(type: "resumed", fn: (message: ResumedMessage) => void): this;
  on(type: "reset", fn: (message: ResetMessage) => void): this;
  on(type: "presence", fn: (message: PresenceMessage) => void): this;
  on(type: "error", fn: (error: ResubError) => void): this;
  on(type: "end", fn: () => void): this;
  close(): void;
}

export class Client {
  /** Throws a ResubError for a bad URL or option ("invalid_url", "invalid_argument"), or in Node ("unsupported_environment"). */
  constructor(url: string, options?: ClientOptions);
  /** Throws a ResubError "invalid_argument" for a bad channel name. */
  subscribe(channel: string, options?: { from?: string }): Subscription;
  publish(channel: string, data: string, options?: { event?: string }): Promise<string>;
  /** Who is present on `channel` now, sorted by client id. */
  presence(channel: string): Promise<Member[]>;
  onState(fn: (state: ConnectionState) => void): () => void;
  /** The same as `onState(fn)`; returns a function that stops it. */
  on(type: "state", fn: (state: ConnectionState) => void): () => void;
  readonly state: ConnectionState;
  readonly stats: Stats;
  close(): Promise<void>;
}
