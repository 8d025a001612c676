//! The resub protocol server, for one node or many sharing Redis (or another
//! [`Storage`]).
//!
//! It serves the three transports of PROTOCOL.md, WebSocket on `GET /ws`,
//! Server-Sent Events on `GET /sse` and long polling on `GET /poll`, with
//! resume from a cursor on each; accepts publishes on
//! `POST /publish/{channel}` and over WebSocket; answers presence on
//! `GET /presence/{channel}`.
//!
//! - A [`Hub`] holds the channels. The application publishes from its own
//!   code with [`Hub::publish`] and mounts [`router`] in its axum
//!   application, under any prefix.
//! - An [`Authorizer`] (the built-in [`JwtAuthorizer`], or the
//!   application's) decides who connects, subscribes and publishes.
//! - [`Limits`] bound connections, subscriptions, payloads and publish rates,
//!   each refused with a typed answer.
//! - [`Server`] runs a hub on a listener on its own, with graceful shutdown
//!   ([`Server::shutdown`]); [`metrics_router`] serves Prometheus metrics,
//!   `/healthz` and `/readyz`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use resub_server::{Config, Hub};
//!
//! let hub = Hub::new(Config::default()).await?;
//! let app = axum::Router::new().nest("/rt", resub_server::router(hub.clone()));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! tokio::spawn(async move { axum::serve(listener, app).await });
//! let id = hub.publish("orders", "{\"total\":12}").await?;
//! println!("published {id}");
//! # Ok(())
//! # }
//! ```
//!
//! All frames are encoded and decoded with the wire types of
//! [`resub::protocol`].

mod auth;
mod cli;
mod cluster;
mod conn;
#[cfg(feature = "fault-injection")]
mod faults;
mod hub;
mod metrics;
mod poll;
mod redis_storage;
mod routes;
mod serve;
mod sse;
mod state;
mod storage;
mod tls;

pub use auth::{AuthError, Authorizer, ChannelRules, Identity, JwtAuthorizer};
pub use cli::NodeArgs;
#[cfg(feature = "fault-injection")]
pub use faults::Faults;
pub use hub::Hub;
pub use metrics::metrics_router;
pub use redis_storage::{IDEMPOTENCY_TTL_SECS, RedisConfig, RedisStorage};
pub use routes::router;
pub use serve::{Server, exposure_check};
pub use state::Transport;
pub use storage::{
    Changes, ChannelSnapshot, FOLLOW_BLOCK, Follow, MEMORY_IDEMPOTENCY_KEYS, MemoryStorage, NewEvent, PAGE,
    PRESENCE_LOG, Position, PresenceChange, PresenceMember, Published, Storage, StorageFuture, StoredEvent, StreamItem,
    fresh_epoch_name,
};
pub use tls::{TlsError, TlsIdentity};

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How many handshake attempts [`Stats::handshakes`] keeps (the newest).
pub const HANDSHAKE_LOG: usize = 10_000;

/// The largest presence data a connection may give (the `presence` query
/// parameter), in bytes.
pub const MAX_PRESENCE_DATA: usize = 1024;

/// The most events one answer on `GET /poll` carries, over all its channels.
/// A client whose cursors are further behind gets the oldest ones and polls
/// again from its new cursors.
pub const POLL_MAX_EVENTS: usize = 1_000;

/// The longest hold a `timeout_ms` parameter on `GET /poll` can ask for, in
/// milliseconds.
pub const POLL_MAX_HOLD_MS: u64 = 60_000;

/// Bounds on what clients may ask of a server. Each is refused with a typed
/// answer when passed (PROTOCOL.md §6):
///
/// | limit | refusal |
/// |---|---|
/// | [`max_connections`](Limits::max_connections) | `503` with `Retry-After`, code `too_many_connections` |
/// | [`max_subscriptions`](Limits::max_subscriptions) | `error` frame for that channel, code `too_many_subscriptions` (`400` on SSE and polls) |
/// | [`max_payload`](Limits::max_payload) | `413` / `error` frame `too_large` for that publish; a WebSocket message over twice it closes with 1009 |
/// | [`publish_rate`](Limits::publish_rate) | `error` frame `rate_limited` for that publish |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Open connections (WebSocket connections, SSE streams and held polls
    /// together). Default 100,000.
    pub max_connections: usize,
    /// Channels one connection may be subscribed to at once. Default 1,000.
    pub max_subscriptions: usize,
    /// The largest event data a publish may carry, in bytes. Default 1 MiB.
    pub max_payload: usize,
    /// Publishes per second one WebSocket connection may make (with bursts
    /// of as many); 0: unlimited. Default 1,000.
    pub publish_rate: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_connections: 100_000, max_subscriptions: 1_000, max_payload: 1 << 20, publish_rate: 1_000 }
    }
}

/// Settings of a server.
///
/// All fields are public; start from [`Config::default`] and override what
/// is needed:
///
/// ```
/// use std::time::Duration;
/// let cfg = resub_server::Config {
///     heartbeat: Duration::from_secs(10),
///     ..Default::default()
/// };
/// assert_eq!(cfg.history, 10_000);
/// ```
#[derive(Clone)]
pub struct Config {
    /// How often a connection sends a `ping` frame when it has sent nothing
    /// else; also announced in the `welcome` frame. Default 5 s. Values below
    /// 1 ms are treated as 1 ms.
    pub heartbeat: Duration,
    /// How many events each channel retains for replay; older events are
    /// evicted. Default 10,000.
    pub history: usize,
    /// Capacity of each connection's outbound queue, in frames. A connection
    /// whose queue is full when a frame is added is dropped abruptly (the
    /// client is expected to resume from its cursor). Default 65,536.
    pub max_connection_queue: usize,
    /// How many idempotency keys each channel remembers (the newest). Default
    /// 10,000.
    pub idempotency_keys: usize,
    /// How long `GET /poll` holds a request that has nothing to answer yet,
    /// when the request has no `timeout_ms` parameter; announced as
    /// `heartbeat_ms` in the answer's `welcome` frame. Default 25 s.
    pub poll_hold: Duration,
    /// A directory whose files answer `GET` (and `HEAD`) requests for paths
    /// that no route matches, with a content type guessed from the extension
    /// (`.wasm` as `application/wasm`, `.js` and `.mjs` as
    /// `text/javascript`); a directory answers with its `index.html`. Used by
    /// [`Server`] (not by [`router`]). Default `None`: such paths answer
    /// `404`.
    pub static_dir: Option<PathBuf>,
    /// Serve HTTPS and WSS with this identity instead of plain HTTP (used by
    /// [`Server`]). Default `None`.
    pub tls: Option<TlsIdentity>,
    /// Keep channel history, epochs and presence in Redis, shared with every
    /// other node configured with the same Redis and prefix: an event
    /// published on any node reaches the subscribers of all of them with the
    /// same id, so a cursor from one node resumes on another. Default `None`:
    /// everything lives in this process. A shorthand for
    /// [`Config::storage`] with a [`RedisStorage`]; set one of the two.
    pub redis: Option<RedisConfig>,
    /// Keep channel history, epochs and presence in this storage, shared
    /// with every hub given the same one (see [`Storage`]): a
    /// [`MemoryStorage`] for hubs in one process, a [`RedisStorage`] or the
    /// application's own implementation. Default `None`.
    pub storage: Option<Arc<dyn Storage>>,
    /// With a storage, how soon the members of a node that stopped (crashed,
    /// partitioned) leave the presence of their channels. Nodes refresh
    /// their members every quarter of it. Default 10 s.
    pub presence_ttl: Duration,
    /// Who may connect, subscribe and publish. Default `None`: anyone may do
    /// anything (see [`exposure_check`] for how the binary guards that).
    pub authorizer: Option<Arc<dyn Authorizer>>,
    /// Bounds on connections, subscriptions, payloads and publish rates.
    pub limits: Limits,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("heartbeat", &self.heartbeat)
            .field("history", &self.history)
            .field("max_connection_queue", &self.max_connection_queue)
            .field("idempotency_keys", &self.idempotency_keys)
            .field("poll_hold", &self.poll_hold)
            .field("static_dir", &self.static_dir)
            .field("tls", &self.tls.is_some())
            .field("redis", &self.redis)
            .field("storage", &self.storage.is_some())
            .field("presence_ttl", &self.presence_ttl)
            .field("authorizer", &self.authorizer.is_some())
            .field("limits", &self.limits)
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(5),
            history: 10_000,
            max_connection_queue: 65_536,
            idempotency_keys: 10_000,
            poll_hold: Duration::from_secs(25),
            static_dir: None,
            tls: None,
            redis: None,
            storage: None,
            presence_ttl: Duration::from_secs(10),
            authorizer: None,
            limits: Limits::default(),
        }
    }
}

/// Why a server operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The channel name does not pass [`resub::protocol::validate_channel`].
    #[error("invalid channel name {0:?}: 1-128 characters from A-Z a-z 0-9 _ . : -")]
    InvalidChannel(String),
    /// A publish's event type or idempotency key breaks PROTOCOL.md §7.4.
    #[error("{0}")]
    InvalidPublish(String),
    /// The storage (Redis) failed or could not be reached.
    #[error("storage: {0}")]
    Storage(String),
    /// The operation needs the storage's I/O: on a node with a storage, call
    /// its `async` form.
    #[error("this node keeps its channels in a storage: use the async form")]
    NeedsAsync,
}

pub(crate) type ServerError = Error;

/// One handshake attempt: a WebSocket upgrade request on `GET /ws`, a
/// request on `GET /sse` or one on `GET /poll`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeRecord {
    /// When the request was answered (for a held poll: when it was admitted).
    pub at: Instant,
    /// The status it was answered with: `101` when upgraded (`/ws`), `200`
    /// when accepted (`/sse`, `/poll`), `401`, `403` or `503` when refused,
    /// `4xx` when the request was invalid (not an upgrade, bad query
    /// parameters).
    pub status: u16,
    /// The transport: `"ws"`, `"sse"` or `"poll"`.
    pub transport: &'static str,
}

/// Counters of a running server, from [`Hub::stats`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Handshakes accepted on every transport: WebSocket upgrades answered
    /// `101`, SSE streams and polls answered `200` (the sum of the three
    /// counters below).
    pub connections_accepted: u64,
    /// WebSocket handshakes answered with `101 Switching Protocols`.
    pub websocket_accepted: u64,
    /// SSE streams started (`200`).
    pub sse_accepted: u64,
    /// Polls accepted (`200`, whether answered at once or held).
    pub polls_accepted: u64,
    /// Connections currently open on every transport: WebSocket connections,
    /// SSE streams and held polls (stalled ones included).
    pub connections_open: usize,
    /// WebSocket connections currently open.
    pub websocket_open: usize,
    /// SSE streams currently open.
    pub sse_open: usize,
    /// Polls currently held (waiting for an event or their hold time).
    pub polls_held: usize,
    /// Subscriptions currently open, over every connection.
    pub subscriptions_open: usize,
    /// Handshake attempts answered with anything but `101` (`/ws`) or `200`
    /// (`/sse`, `/poll`).
    pub handshakes_refused: u64,
    /// Connections dropped because their outbound queue was full.
    pub slow_consumer_drops: u64,
    /// Events published (repeated idempotency keys not counted).
    pub events_published: u64,
    /// Events queued for subscribers (one per subscriber per event, replays
    /// not counted).
    pub events_delivered: u64,
    /// HTTP publish requests received, repeated idempotency keys included.
    pub publish_requests: u64,
    /// Subscriptions made on WebSocket and SSE connections (a WebSocket
    /// `subscribe` frame, a channel of an SSE request).
    pub subscribes: u64,
    /// Subscriptions by how they started: `live` (no cursor), `resumed`, or
    /// the reset reason (`history_truncated`, `epoch_changed`,
    /// `unknown_cursor`).
    pub resumes: BTreeMap<&'static str, u64>,
    /// Requests, subscriptions and publishes refused, by reason:
    /// `unauthorized`, `forbidden`, `too_many_connections`,
    /// `too_many_subscriptions`, `too_large`, `rate_limited`, `bad_request`.
    pub refusals: BTreeMap<&'static str, u64>,
    /// With a storage: mirrors of a channel rebuilt because this node fell
    /// further behind than the storage keeps history (their subscribers were
    /// dropped, to resume with a typed reset); always 0 without one.
    pub mirror_rebuilds: u64,
    /// The newest [`HANDSHAKE_LOG`] handshake attempts, oldest first.
    pub handshakes: Vec<HandshakeRecord>,
    /// TLS handshakes that failed or timed out (a client that did not trust
    /// the certificate, a client speaking plain HTTP); always 0 without TLS.
    pub tls_failures: u64,
}

/// The README's examples, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
