//! Reference server for the resub protocol, with fault injection.
//!
//! The fixture is [`resub_server`] with a fault-injection layer: the same
//! hub and routes as the deployed server, plus `/control/*` routes. It speaks the three transports of the protocol, WebSocket on
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
mod control;
mod plain;
mod redis_server;

pub use chaos::{CHAOS_MAX_CHANNELS, CHAOS_MAX_EVENTS, ChannelEnd, ChaosPlan, ChaosReport, FaultKind, FaultRecord};
pub use plain::{PlainRequest, PlainSse};
pub use redis_server::RedisServer;
pub use resub_server::{
    HANDSHAKE_LOG, HandshakeRecord, IDEMPOTENCY_TTL_SECS, MAX_PRESENCE_DATA, MemoryStorage, NodeArgs, POLL_MAX_EVENTS,
    POLL_MAX_HOLD_MS, RedisConfig, RedisStorage, Storage, TlsError, TlsIdentity,
};

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use resub_server::{Faults, Hub, Server, Transport};

/// The largest event payload the fixture accepts by default, in bytes
/// (1 MiB), on `POST /publish/{channel}` and in WebSocket `publish` frames:
/// [`resub_server::Limits::max_payload`].
pub const MAX_PAYLOAD: usize = 1 << 20;

/// How long [`Fixture::shutdown`] waits for in-flight HTTP requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Settings of a fixture server: those of [`resub_server::Config`].
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
pub type FixtureConfig = resub_server::Config;

/// Counters of a running fixture, from [`Fixture::stats`] or
/// `GET /control/stats`: those of [`resub_server::Stats`].
pub type FixtureStats = resub_server::Stats;

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
    /// The storage (Redis) failed or could not be reached.
    Storage(String),
    /// The operation needs the storage's I/O: on a node with
    /// [`FixtureConfig::redis`] or [`FixtureConfig::storage`], call its
    /// `_async` form.
    NeedsAsync,
    /// Anything else the server refused.
    Server(String),
}

impl From<resub_server::Error> for FixtureError {
    fn from(err: resub_server::Error) -> Self {
        match err {
            resub_server::Error::InvalidChannel(name) => Self::InvalidChannel(name),
            resub_server::Error::InvalidPublish(why) => Self::InvalidPublish(why),
            resub_server::Error::Storage(why) => Self::Storage(why),
            resub_server::Error::NeedsAsync => Self::NeedsAsync,
            other => Self::Server(other.to_string()),
        }
    }
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
            Self::Storage(why) => write!(f, "storage: {why}"),
            Self::NeedsAsync => f.write_str("this node keeps its channels in a storage: use the _async form"),
            Self::Server(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for FixtureError {}

/// A running fixture server.
///
/// Dropping it stops the server: the listener closes, every connection
/// (WebSocket, SSE stream, held poll) is dropped, and in-flight HTTP requests
/// are finished in the background. [`Fixture::shutdown`] does the same and waits for the server to
/// stop.
pub struct Fixture {
    hub: Hub,
    faults: Faults,
    server: Option<Server>,
    chaos: Arc<chaos::ChaosState>,
}

impl fmt::Debug for Fixture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fixture").field("addr", &self.addr()).finish_non_exhaustive()
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
        let hub = Hub::new(cfg)
            .await
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::ConnectionRefused, e.to_string()))?;
        let faults = hub.faults();
        let chaos = Arc::new(chaos::ChaosState::default());
        let control =
            control::router(control::Control { hub: hub.clone(), faults: faults.clone(), chaos: Arc::clone(&chaos) });
        let app = Server::app(&hub).merge(control);
        let server = Server::start(addr, hub.clone(), app).await?;
        tracing::debug!(addr = %server.addr(), "fixture listening");
        Ok(Fixture { hub, faults, server: Some(server), chaos })
    }

    /// The hub the fixture serves: the deployed server's.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// The address the server is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.server.as_ref().map_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)), Server::addr)
    }

    /// The base URL, `http://IP:PORT` (`https://` with TLS; no trailing
    /// slash). The WebSocket endpoint is `ws://IP:PORT/ws` (`wss://`).
    pub fn url(&self) -> String {
        let scheme = if self.hub.config().tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr())
    }

    /// Publishes an event, as `POST /publish/{channel}?event=TYPE` does
    /// without an idempotency key. Returns the new event's id. On a node on
    /// Redis, fails with [`FixtureError::NeedsAsync`]: use
    /// [`Fixture::publish_async`].
    pub fn publish(&self, channel: &str, event: Option<&str>, data: &str) -> Result<String, FixtureError> {
        self.local()?;
        Ok(self.faults.publish_local(channel, None, event, data)?)
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
        Ok(self.hub.publish_with(channel, event, key, data).await?)
    }

    /// Who is present on `channel` (client id and presence data), sorted by
    /// client id, as `GET /presence/{channel}`: on Redis over every node
    /// sharing it, else on this node.
    pub async fn presence(&self, channel: &str) -> Result<Vec<(String, String)>, FixtureError> {
        Ok(self.hub.presence(channel).await?)
    }

    fn local(&self) -> Result<(), FixtureError> {
        match self.faults.clustered() {
            true => Err(FixtureError::NeedsAsync),
            false => Ok(()),
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
        Ok(self.faults.publish_local(channel, Some(key), event, data)?)
    }

    /// Closes every connection abruptly, as `POST /control/drop`: WebSocket
    /// connections without a close frame, SSE streams without the end of the
    /// chunked body, held polls without an answer; in each case the TCP
    /// connection is dropped. Returns how many were dropped, over the three
    /// transports.
    pub fn drop_connections(&self) -> usize {
        self.faults.drop_all()
    }

    /// Allows or refuses WebSocket upgrades, as `POST /control/websocket`.
    /// While refused, `/ws` answers `403 Forbidden`. Open connections are not
    /// touched.
    pub fn set_websocket_enabled(&self, on: bool) {
        self.faults.set_enabled(Transport::WebSocket, on);
    }

    /// Allows or refuses SSE streams, as `POST /control/sse`. While refused,
    /// `/sse` answers `403 Forbidden`. Open streams are not touched.
    pub fn set_sse_enabled(&self, on: bool) {
        self.faults.set_enabled(Transport::Sse, on);
    }

    /// Allows or refuses long polls, as `POST /control/poll`. While refused,
    /// `/poll` answers `403 Forbidden`. Held polls are not touched.
    pub fn set_poll_enabled(&self, on: bool) {
        self.faults.set_enabled(Transport::Poll, on);
    }

    /// Makes every open connection silent, as `POST /control/stall`:
    /// WebSocket connections and SSE streams send nothing more, held polls
    /// are never answered; each stays open until the client goes away.
    /// Returns how many connections were stalled, over the three transports.
    pub fn stall(&self) -> usize {
        self.faults.stall_all()
    }

    /// Answers the next `count` handshakes on `/ws`, `/sse` and `/poll`
    /// together (every one, with `None`) with `503 Service Unavailable` and
    /// `Retry-After: retry_after_secs`, as `POST /control/unavailable`.
    pub fn set_unavailable(&self, retry_after_secs: u64, count: Option<u32>) {
        self.faults.set_unavailable(retry_after_secs, count);
    }

    /// Stops answering handshakes with `503`.
    pub fn clear_unavailable(&self) {
        self.faults.clear_unavailable();
    }

    /// Keeps only the newest `keep` events of the channel's history, as
    /// `POST /control/truncate/{channel}`.
    ///
    /// # Panics
    ///
    /// If `channel` is not a valid channel name.
    pub fn truncate(&self, channel: &str, keep: usize) {
        if let Err(err) = self.local().and_then(|()| Ok(self.faults.truncate_local(channel, keep)?)) {
            panic!("{err}");
        }
    }

    /// [`Fixture::truncate`] on any node (on Redis, for every node: this
    /// node's copy is trimmed too, the others keep what they hold). Returns
    /// the oldest retained id.
    pub async fn truncate_async(&self, channel: &str, keep: usize) -> Result<Option<String>, FixtureError> {
        Ok(self.faults.truncate(channel, keep).await?)
    }

    /// Starts a new epoch for the channel, as `POST /control/epoch/{channel}`:
    /// history is cleared, live subscribers get a `reset` frame with reason
    /// `epoch_changed`. Returns the new head id, `<epoch>-0`.
    ///
    /// # Panics
    ///
    /// If `channel` is not a valid channel name.
    pub fn new_epoch(&self, channel: &str) -> String {
        match self.local().and_then(|()| Ok(self.faults.new_epoch_local(channel)?)) {
            Ok(head) => head,
            Err(err) => panic!("{err}"),
        }
    }

    /// [`Fixture::new_epoch`] on any node (on Redis, every node's
    /// subscribers get the `reset`).
    pub async fn new_epoch_async(&self, channel: &str) -> Result<String, FixtureError> {
        Ok(self.faults.new_epoch(channel).await?)
    }

    /// The id of the channel's newest event (`<epoch>-0` when the epoch has
    /// none). Creates the channel if needed.
    ///
    /// # Panics
    ///
    /// If `channel` is not a valid channel name.
    pub fn head(&self, channel: &str) -> String {
        match self.local().and_then(|()| Ok(self.faults.head_local(channel)?)) {
            Ok(head) => head,
            Err(err) => panic!("{err}"),
        }
    }

    /// [`Fixture::head`] on any node (on Redis, as Redis has it now).
    pub async fn head_async(&self, channel: &str) -> Result<String, FixtureError> {
        Ok(self.hub.head(channel).await?)
    }

    /// Pads the answers to the next `count` HTTP publishes (applied as
    /// usual) to `bytes` bytes, streamed with no `Content-Length`: a client
    /// must not read one over its bound whole. As
    /// `POST /control/oversize?what=publish&count=N&bytes=B`.
    pub fn oversize_next_publish_answers(&self, count: u32, bytes: usize) {
        self.faults.set_oversize(true, count, bytes);
    }

    /// Pads the next `count` poll answers to `bytes` bytes (streamed, with
    /// no `Content-Length`): a client must refuse one over its bound
    /// without reading it whole.
    pub fn oversize_next_poll_answers(&self, count: u32, bytes: usize) {
        self.faults.set_oversize(false, count, bytes);
    }

    /// Applies the next `count` publishes (over WebSocket or HTTP) without
    /// answering them: the WebSocket connection, or the HTTP request, is
    /// dropped instead of acknowledging, as when an ack is lost. As
    /// `POST /control/drop-acks?count=N`.
    pub fn drop_next_acks(&self, count: u32) {
        self.faults.set_drop_acks(count);
    }

    /// Accepts on `/ws`, `/sse` and `/poll` only requests whose bearer token
    /// (`Authorization: Bearer T`, or `access_token=T` in the query) is one
    /// of `tokens`, answering the others `401`; `None` accepts any (the
    /// default). As `POST /control/tokens?accept=T1,T2` (none: any). Open
    /// connections are not touched.
    pub fn set_tokens(&self, tokens: Option<&[&str]>) {
        self.faults.set_tokens(tokens.map(|t| t.iter().map(|s| (*s).to_owned()).collect()));
    }

    /// Answers handshakes on `/ws`, `/sse` and `/poll` with
    /// `401 Unauthorized` while `on`, as `POST /control/auth`.
    pub fn set_reject_auth(&self, on: bool) {
        self.faults.set_reject_auth(on);
    }

    /// Starts a chaos run, as `POST /control/chaos`: publishes `plan.events`
    /// events at `plan.rate` per second over `plan.channels`, injecting
    /// `plan.faults` faults drawn from `plan.kinds` by a generator seeded
    /// with `plan.seed`. Returns at once; [`Fixture::chaos_report`] says how
    /// far it is, [`Fixture::chaos_finished`] waits for its end. Refused with
    /// [`FixtureError::Busy`] while a run is going.
    pub fn start_chaos(&self, plan: ChaosPlan) -> Result<(), FixtureError> {
        chaos::start(&self.hub, &self.faults, &self.chaos, plan)
    }

    /// The current or last chaos run, as `GET /control/chaos`.
    pub fn chaos_report(&self) -> Option<ChaosReport> {
        self.chaos.report()
    }

    /// Completes when the current chaos run is done (at once without one).
    pub async fn chaos_finished(&self) {
        self.chaos.finished().await;
    }

    /// A snapshot of the server's counters.
    pub fn stats(&self) -> FixtureStats {
        self.hub.stats()
    }

    /// Stops the server and waits (up to a few seconds) for in-flight HTTP
    /// requests to finish. Every connection (WebSocket, SSE stream, held
    /// poll) is dropped abruptly.
    pub async fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            server.stop(SHUTDOWN_GRACE).await;
        }
    }

    /// Stops as a deployed server does on SIGTERM
    /// ([`resub_server::Server::shutdown`]): every client is told to
    /// reconnect at once, and gets up to `drain` to leave.
    pub async fn drain(mut self, drain: Duration) {
        if let Some(server) = self.server.take() {
            server.shutdown(drain).await;
        }
    }
}
