//! Reference server for the resub protocol, with fault injection.
//!
//! The fixture speaks the three transports of the protocol, WebSocket on
//! `GET /ws`, Server-Sent Events on `GET /sse` and long polling on
//! `GET /poll`, accepts publishes on `POST /publish/{channel}`, and exposes
//! `/control/*` routes that inject the faults a resumable client has to
//! survive: abrupt disconnects, stalled connections, refused transports, `503`
//! with `Retry-After`, `401`, truncated history and new epochs. Every control
//! route has an in-process equivalent on [`Fixture`], so tests can drive the
//! server without an HTTP client.
//!
//! All frames are encoded and decoded with the wire types of
//! [`resub::protocol`].
//!
//! [`PlainSse`] is a separate, much smaller server that speaks plain SSE (not
//! this protocol), for testing a client against an ordinary SSE endpoint.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let fixture = resub_fixture::Fixture::start().await?;
//! let id = fixture.publish("trades", None, "hello").expect("valid channel");
//! println!("{} published {id}", fixture.url());
//! fixture.drop_connections();
//! fixture.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod chaos;
mod cluster;
mod conn;
mod plain;
mod poll;
mod redis_server;
mod routes;
mod sse;
mod state;
mod tls;

pub use chaos::{CHAOS_MAX_CHANNELS, CHAOS_MAX_EVENTS, ChannelEnd, ChaosPlan, ChaosReport, FaultKind, FaultRecord};
pub use cluster::{IDEMPOTENCY_TTL_SECS, RedisConfig};
pub use plain::{PlainRequest, PlainSse};
pub use redis_server::RedisServer;
pub use tls::{TlsError, TlsIdentity};

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use state::{Shared, Transport};

/// The largest event payload the fixture accepts, in bytes (1 MiB), on
/// `POST /publish/{channel}` and in WebSocket `publish` frames.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// How many handshake attempts [`FixtureStats::handshakes`] keeps (the newest).
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

/// How long [`Fixture::shutdown`] waits for in-flight HTTP requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Settings of a fixture server.
///
/// All fields are public; start from [`FixtureConfig::default`] and override
/// what a test needs:
///
/// ```
/// use std::time::Duration;
/// let cfg = resub_fixture::FixtureConfig {
///     heartbeat: Duration::from_millis(200),
///     ..Default::default()
/// };
/// assert_eq!(cfg.history, 10_000);
/// ```
#[derive(Debug, Clone)]
pub struct FixtureConfig {
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
    /// that no route of the fixture matches, with a content type guessed from
    /// the extension (`.wasm` as `application/wasm`, `.js` and `.mjs` as
    /// `text/javascript`); a directory answers with its `index.html`. Lets a
    /// browser page be served from the same origin as the API. Default `None`:
    /// such paths answer `404`.
    pub static_dir: Option<PathBuf>,
    /// Serve HTTPS and WSS with this identity instead of plain HTTP. Default
    /// `None`.
    pub tls: Option<TlsIdentity>,
    /// Keep channel history, epochs and presence in Redis, shared with every
    /// other node configured with the same Redis and prefix: an event
    /// published on any node reaches the subscribers of all of them with the
    /// same id, so a cursor from one node resumes on another. Default `None`:
    /// everything lives in this process.
    pub redis: Option<RedisConfig>,
    /// On Redis, how soon the members of a node that stopped (crashed,
    /// partitioned) leave the presence of their channels. Nodes refresh
    /// their members every quarter of it. Default 10 s.
    pub presence_ttl: Duration,
}

impl Default for FixtureConfig {
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
            presence_ttl: Duration::from_secs(10),
        }
    }
}

/// Why an in-process fixture operation was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FixtureError {
    /// The channel name does not pass [`resub::protocol::validate_channel`].
    InvalidChannel(String),
    /// A [`ChaosPlan`] is out of bounds.
    InvalidPlan(String),
    /// A chaos run is already going.
    Busy,
    /// A publish's event type or idempotency key breaks PROTOCOL.md §7.4.
    InvalidPublish(String),
    /// Redis failed or could not be reached.
    Redis(String),
    /// The operation needs Redis I/O: on a node with
    /// [`FixtureConfig::redis`], call its `_async` form.
    NeedsAsync,
}

impl fmt::Display for FixtureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidChannel(name) => {
                write!(f, "invalid channel name {name:?}: 1-128 characters from A-Z a-z 0-9 _ . : -")
            }
            Self::InvalidPlan(why) => write!(f, "invalid chaos plan: {why}"),
            Self::Busy => f.write_str("a chaos run is already going"),
            Self::InvalidPublish(why) => f.write_str(why),
            Self::Redis(why) => write!(f, "redis: {why}"),
            Self::NeedsAsync => f.write_str("this node keeps its channels in redis: use the _async form"),
        }
    }
}

impl std::error::Error for FixtureError {}

/// One handshake attempt: a WebSocket upgrade request on `GET /ws`, a
/// request on `GET /sse` or one on `GET /poll`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeRecord {
    /// When the request was answered (for a held poll: when it was admitted).
    pub at: Instant,
    /// The status it was answered with: `101` when upgraded (`/ws`), `200`
    /// when accepted (`/sse`, `/poll`), `401`, `403` or `503` when refused by
    /// a fault, `4xx` when the request was invalid (not an upgrade, bad query
    /// parameters).
    pub status: u16,
    /// The transport: `"ws"`, `"sse"` or `"poll"`.
    pub transport: &'static str,
}

/// Counters of a running fixture, from [`Fixture::stats`] or
/// `GET /control/stats`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FixtureStats {
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
    /// Handshake attempts answered with anything but `101` (`/ws`) or `200`
    /// (`/sse`, `/poll`).
    pub handshakes_refused: u64,
    /// Connections dropped because their outbound queue was full.
    pub slow_consumer_drops: u64,
    /// Events published (repeated idempotency keys not counted).
    pub events_published: u64,
    /// HTTP publish requests received, repeated idempotency keys included.
    pub publish_requests: u64,
    /// Subscriptions made on WebSocket and SSE connections (a WebSocket
    /// `subscribe` frame, a channel of an SSE request).
    pub subscribes: u64,
    /// With Redis: mirrors of a channel rebuilt because this node fell
    /// further behind than Redis keeps history (their subscribers were
    /// dropped, to resume with a typed reset); always 0 without Redis.
    pub mirror_rebuilds: u64,
    /// The newest [`HANDSHAKE_LOG`] handshake attempts, oldest first.
    pub handshakes: Vec<HandshakeRecord>,
    /// TLS handshakes that failed or timed out (a client that did not trust
    /// the certificate, a client speaking plain HTTP); always 0 without TLS.
    pub tls_failures: u64,
}

/// A running fixture server.
///
/// Dropping it stops the server: the listener closes, every connection
/// (WebSocket, SSE stream, held poll) is dropped, and in-flight HTTP requests
/// are finished in the background. [`Fixture::shutdown`] does the same and waits for the server to
/// stop.
pub struct Fixture {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    /// On Redis: the follower and the presence keeper.
    background: Vec<JoinHandle<()>>,
}

impl fmt::Debug for Fixture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fixture").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Fixture {
    /// Starts a fixture on `127.0.0.1` with an ephemeral port and the default
    /// [`FixtureConfig`]. Must be called within a Tokio runtime.
    pub async fn start() -> std::io::Result<Fixture> {
        Self::start_with(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), FixtureConfig::default()).await
    }

    /// Binds `addr` and starts a fixture with `cfg`. Must be called within a
    /// Tokio runtime.
    ///
    /// With [`FixtureConfig::tls`] set, the server speaks HTTPS and WSS only;
    /// an identity that rustls refuses fails here with
    /// [`std::io::ErrorKind::InvalidInput`]. With [`FixtureConfig::redis`]
    /// set, a Redis that cannot be reached fails here with
    /// [`std::io::ErrorKind::ConnectionRefused`].
    pub async fn start_with(addr: SocketAddr, cfg: FixtureConfig) -> std::io::Result<Fixture> {
        let tls_config = match &cfg.tls {
            Some(identity) => Some(
                identity
                    .server_config()
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?,
            ),
            None => None,
        };
        let store = match &cfg.redis {
            Some(redis) => Some(
                cluster::Store::connect(redis, cfg.history)
                    .await
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::ConnectionRefused, e.to_string()))?,
            ),
            None => None,
        };
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(cfg, store));
        let mut background = Vec::new();
        let expiring = Arc::clone(&shared);
        background.push(tokio::spawn(async move {
            // Long-polling clients have no connection to close: they leave
            // when they stop polling.
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                expiring.expire_polls();
            }
        }));
        if shared.store.is_some() {
            background.push(tokio::spawn(cluster::follow(Arc::clone(&shared))));
            background.push(tokio::spawn(cluster::keep_presence(Arc::clone(&shared))));
        }
        let app = routes::router(Arc::clone(&shared));
        let (stop, stopped) = oneshot::channel::<()>();
        let signal = async move {
            let _ = stopped.await;
        };
        let server = match tls_config {
            Some(config) => {
                let listener = tls::TlsListener::new(listener, config, Arc::clone(&shared.tls_failures))?;
                tokio::spawn(async move {
                    if let Err(err) = axum::serve(listener, app).with_graceful_shutdown(signal).await {
                        tracing::error!(%err, "server failed");
                    }
                })
            }
            None => tokio::spawn(async move {
                // Frames are small writes: without TCP_NODELAY the second of
                // two (a `subscribed` after a `welcome`) can wait 40 ms for a
                // delayed ACK.
                let listener = listener.tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                if let Err(err) = axum::serve(listener, app).with_graceful_shutdown(signal).await {
                    tracing::error!(%err, "server failed");
                }
            }),
        };
        tracing::debug!(%addr, "fixture listening");
        Ok(Fixture { shared, addr, stop: Some(stop), server: Some(server), background })
    }

    /// The address the server is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL, `http://IP:PORT` (`https://` with TLS; no trailing
    /// slash). The WebSocket endpoint is `ws://IP:PORT/ws` (`wss://`).
    pub fn url(&self) -> String {
        let scheme = if self.shared.cfg.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Publishes an event, as `POST /publish/{channel}?event=TYPE` does
    /// without an idempotency key. Returns the new event's id. On a node on
    /// Redis, fails with [`FixtureError::NeedsAsync`]: use
    /// [`Fixture::publish_async`].
    pub fn publish(&self, channel: &str, event: Option<&str>, data: &str) -> Result<String, FixtureError> {
        self.local()?;
        self.shared.publish_local(channel, None, event, data)
    }

    /// Publishes an event, with an optional idempotency key, on any node
    /// (on Redis: to every node sharing it). Returns the event's id (for a
    /// repeated key, the first id).
    pub async fn publish_async(
        &self,
        channel: &str,
        key: Option<&str>,
        event: Option<&str>,
        data: &str,
    ) -> Result<String, FixtureError> {
        self.shared.publish(channel, key, event, data).await
    }

    /// Who is present on `channel` (client id and presence data), sorted by
    /// client id, as `GET /presence/{channel}`: on Redis over every node
    /// sharing it, else on this node.
    pub async fn presence(&self, channel: &str) -> Result<Vec<(String, String)>, FixtureError> {
        self.shared.presence(channel).await
    }

    fn local(&self) -> Result<(), FixtureError> {
        match self.shared.store {
            Some(_) => Err(FixtureError::NeedsAsync),
            None => Ok(()),
        }
    }

    /// Publishes an event with an idempotency key, as `POST /publish/{channel}`
    /// with an `Idempotency-Key` header does: a key already seen on the
    /// channel returns the first id and publishes nothing.
    pub fn publish_with_key(
        &self,
        channel: &str,
        key: &str,
        event: Option<&str>,
        data: &str,
    ) -> Result<String, FixtureError> {
        self.local()?;
        self.shared.publish_local(channel, Some(key), event, data)
    }

    /// Closes every connection abruptly, as `POST /control/drop`: WebSocket
    /// connections without a close frame, SSE streams without the end of the
    /// chunked body, held polls without an answer; in each case the TCP
    /// connection is dropped. Returns how many were dropped, over the three
    /// transports.
    pub fn drop_connections(&self) -> usize {
        self.shared.drop_all()
    }

    /// Allows or refuses WebSocket upgrades, as `POST /control/websocket`.
    /// While refused, `/ws` answers `403 Forbidden`. Open connections are not
    /// touched.
    pub fn set_websocket_enabled(&self, on: bool) {
        self.shared.set_enabled(Transport::WebSocket, on);
    }

    /// Allows or refuses SSE streams, as `POST /control/sse`. While refused,
    /// `/sse` answers `403 Forbidden`. Open streams are not touched.
    pub fn set_sse_enabled(&self, on: bool) {
        self.shared.set_enabled(Transport::Sse, on);
    }

    /// Allows or refuses long polls, as `POST /control/poll`. While refused,
    /// `/poll` answers `403 Forbidden`. Held polls are not touched.
    pub fn set_poll_enabled(&self, on: bool) {
        self.shared.set_enabled(Transport::Poll, on);
    }

    /// Makes every open connection silent, as `POST /control/stall`:
    /// WebSocket connections and SSE streams send nothing more, held polls
    /// are never answered; each stays open until the client goes away.
    /// Returns how many connections were stalled, over the three transports.
    pub fn stall(&self) -> usize {
        self.shared.stall_all()
    }

    /// Answers the next `count` handshakes on `/ws`, `/sse` and `/poll`
    /// together (every one, with `None`) with `503 Service Unavailable` and
    /// `Retry-After: retry_after_secs`, as `POST /control/unavailable`.
    pub fn set_unavailable(&self, retry_after_secs: u64, count: Option<u32>) {
        self.shared.set_unavailable(retry_after_secs, count);
    }

    /// Stops answering handshakes with `503`.
    pub fn clear_unavailable(&self) {
        self.shared.clear_unavailable();
    }

    /// Keeps only the newest `keep` events of the channel's history, as
    /// `POST /control/truncate/{channel}`.
    ///
    /// # Panics
    ///
    /// If `channel` is not a valid channel name.
    pub fn truncate(&self, channel: &str, keep: usize) {
        if let Err(err) = self.local().and_then(|()| self.shared.truncate_local(channel, keep)) {
            panic!("{err}");
        }
    }

    /// [`Fixture::truncate`] on any node (on Redis, for every node: this
    /// node's copy is trimmed too, the others keep what they hold). Returns
    /// the oldest retained id.
    pub async fn truncate_async(&self, channel: &str, keep: usize) -> Result<Option<String>, FixtureError> {
        self.shared.truncate(channel, keep).await
    }

    /// Starts a new epoch for the channel, as `POST /control/epoch/{channel}`:
    /// history is cleared, live subscribers get a `reset` frame with reason
    /// `epoch_changed`. Returns the new head id, `<epoch>-0`.
    ///
    /// # Panics
    ///
    /// If `channel` is not a valid channel name.
    pub fn new_epoch(&self, channel: &str) -> String {
        match self.local().and_then(|()| self.shared.new_epoch_local(channel)) {
            Ok(head) => head,
            Err(err) => panic!("{err}"),
        }
    }

    /// [`Fixture::new_epoch`] on any node (on Redis, every node's
    /// subscribers get the `reset`).
    pub async fn new_epoch_async(&self, channel: &str) -> Result<String, FixtureError> {
        self.shared.new_epoch(channel).await
    }

    /// The id of the channel's newest event (`<epoch>-0` when the epoch has
    /// none). Creates the channel if needed.
    ///
    /// # Panics
    ///
    /// If `channel` is not a valid channel name.
    pub fn head(&self, channel: &str) -> String {
        match self.local().and_then(|()| self.shared.head_local(channel)) {
            Ok(head) => head,
            Err(err) => panic!("{err}"),
        }
    }

    /// [`Fixture::head`] on any node (on Redis, as Redis has it now).
    pub async fn head_async(&self, channel: &str) -> Result<String, FixtureError> {
        self.shared.head(channel).await
    }

    /// Pads the answers to the next `count` HTTP publishes (applied as
    /// usual) to `bytes` bytes, streamed with no `Content-Length`: a client
    /// must not read one over its bound whole. As
    /// `POST /control/oversize?what=publish&count=N&bytes=B`.
    pub fn oversize_next_publish_answers(&self, count: u32, bytes: usize) {
        self.shared.set_oversize(true, count, bytes);
    }

    /// Pads the next `count` poll answers to `bytes` bytes (streamed, with
    /// no `Content-Length`): a client must refuse one over its bound
    /// without reading it whole.
    pub fn oversize_next_poll_answers(&self, count: u32, bytes: usize) {
        self.shared.set_oversize(false, count, bytes);
    }

    /// Applies the next `count` publishes (over WebSocket or HTTP) without
    /// answering them: the WebSocket connection, or the HTTP request, is
    /// dropped instead of acknowledging, as when an ack is lost. As
    /// `POST /control/drop-acks?count=N`.
    pub fn drop_next_acks(&self, count: u32) {
        self.shared.set_drop_acks(count);
    }

    /// Accepts on `/ws`, `/sse` and `/poll` only requests whose bearer token
    /// (`Authorization: Bearer T`, or `access_token=T` in the query) is one
    /// of `tokens`, answering the others `401`; `None` accepts any (the
    /// default). As `POST /control/tokens?accept=T1,T2` (none: any). Open
    /// connections are not touched.
    pub fn set_tokens(&self, tokens: Option<&[&str]>) {
        self.shared.set_tokens(tokens.map(|t| t.iter().map(|s| (*s).to_owned()).collect()));
    }

    /// Answers handshakes on `/ws`, `/sse` and `/poll` with
    /// `401 Unauthorized` while `on`, as `POST /control/auth`.
    pub fn set_reject_auth(&self, on: bool) {
        self.shared.set_reject_auth(on);
    }

    /// Starts a chaos run, as `POST /control/chaos`: publishes `plan.events`
    /// events at `plan.rate` per second over `plan.channels`, injecting
    /// `plan.faults` faults drawn from `plan.kinds` by a generator seeded
    /// with `plan.seed`. Returns at once; [`Fixture::chaos_report`] says how
    /// far it is, [`Fixture::chaos_finished`] waits for its end. Refused with
    /// [`FixtureError::Busy`] while a run is going.
    pub fn start_chaos(&self, plan: ChaosPlan) -> Result<(), FixtureError> {
        chaos::start(&self.shared, plan)
    }

    /// The current or last chaos run, as `GET /control/chaos`.
    pub fn chaos_report(&self) -> Option<ChaosReport> {
        self.shared.chaos.report()
    }

    /// Completes when the current chaos run is done (at once without one).
    pub async fn chaos_finished(&self) {
        self.shared.chaos.finished().await;
    }

    /// A snapshot of the server's counters.
    pub fn stats(&self) -> FixtureStats {
        self.shared.stats()
    }

    /// Stops the server and waits (up to a few seconds) for in-flight HTTP
    /// requests to finish. Every connection (WebSocket, SSE stream, held
    /// poll) is dropped abruptly.
    pub async fn shutdown(mut self) {
        self.stop_server();
        if let Some(server) = self.server.take() {
            let abort = server.abort_handle();
            if tokio::time::timeout(SHUTDOWN_GRACE, server).await.is_err() {
                tracing::warn!("in-flight requests did not finish; aborting the server");
                abort.abort();
            }
        }
    }

    fn stop_server(&mut self) {
        for task in self.background.drain(..) {
            task.abort();
        }
        self.shared.close();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.stop_server();
    }
}
