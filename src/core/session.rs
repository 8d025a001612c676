//! The session state machine.

use std::collections::VecDeque;
use std::time::Duration;

use compact_str::CompactString;
use rand::SeedableRng;
use rand::rngs::SmallRng;
#[cfg(feature = "json-decode")]
use serde::Deserialize;

use super::cursor::{self, Next, Start};
use super::{
    ChannelMap, Config, ConnectionState, DisconnectReason, Event, Fallback, Member, Message, PresenceEvent,
    ResetReason, Stats, Transport, TransportError,
};
use crate::protocol::{
    ClientFrame, EventId, Outcome, ServerFrame, WireResetReason, validate_channel, validate_event_type,
};
use crate::{Error, Instant};

/// Longest delay a server hint (Retry-After, heartbeat interval) may impose;
/// larger values are clamped so that hostile input cannot overflow a deadline.
const MAX_HINT: Duration = Duration::from_secs(3600);

/// The close code of a server going away (PROTOCOL.md §6): reconnect at
/// once, elsewhere if possible.
const CLOSE_RESTART: u16 = 1012;

/// The close code of a message over the peer's size limit (RFC 6455).
const CLOSE_TOO_BIG: u16 = 1009;

/// A transport that worked but then fails to open this many times in a row,
/// for reasons the platform hides, is given up for the next one.
const OPEN_FAILURES_BEFORE_FALLBACK: u32 = 3;

/// A long-poll response carries many frames: it may be this many times
/// [`Config::max_frame_bytes`].
pub const POLL_BATCH_FACTOR: usize = 16;

/// The randomness a session is given: the core draws none of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seeds {
    /// Seeds the generator of reconnect jitter. Tests fix it to make a
    /// schedule repeatable; clients use the operating system's randomness,
    /// so that clients told the same thing do not return together.
    pub jitter: u64,
    /// Makes this session's idempotency keys its own among every client of
    /// a server: it must come from the operating system's randomness (or be
    /// otherwise unique per session), never from `jitter` or a constant. Two
    /// sessions with the same value would have the server apply the first
    /// one's publishes and acknowledge the other's without applying them.
    pub keys: u128,
}

/// Identifies one connection attempt (one request, for long polling). Inputs
/// about an attempt the session no longer cares for are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// What the session asks the driver (and the application) to do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output {
    /// Open a connection (for long polling: send one poll request); report
    /// [`Input::Opened`], [`Input::Received`], [`Input::Activity`] and
    /// [`Input::Closed`] with this id.
    Connect {
        /// The attempt's id.
        conn: ConnId,
        /// The transport to use.
        transport: Transport,
        /// Where to connect; for SSE and long polling the URL carries the
        /// subscriptions and their cursors.
        url: String,
    },
    /// Send one text frame on the (WebSocket) connection.
    Send {
        /// The connection.
        conn: ConnId,
        /// The encoded frame.
        text: String,
    },
    /// Publish over HTTP (on the SSE and long-polling transports): `POST url`
    /// with the data as body and `Idempotency-Key: key`; report the result as
    /// [`Input::Posted`].
    Post {
        /// The idempotency key.
        key: String,
        /// The publish URL, with the event type in the query if any.
        url: String,
        /// The event's data.
        data: String,
    },
    /// Close the connection and report nothing more about it.
    Disconnect {
        /// The connection.
        conn: ConnId,
    },
    /// Hand a message to the subscription of its channel
    /// ([`Message::channel`]).
    Deliver {
        /// The message.
        message: Message,
    },
    /// The subscription of `channel` ended with an error.
    SubscriptionEnded {
        /// The channel.
        channel: String,
        /// Why it ended.
        error: Error,
    },
    /// A publish finished: the event's id, or why it failed.
    PublishDone {
        /// The token the application passed to [`Session::publish`].
        token: u64,
        /// The result.
        result: Result<String, Error>,
    },
    /// The connection state changed.
    State(ConnectionState),
}

/// What happened on a connection, reported by the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Input {
    /// The connection opened (WebSocket upgraded; SSE or poll answered 200
    /// with the right content type).
    Opened {
        /// The connection.
        conn: ConnId,
    },
    /// A frame arrived (a WebSocket message, an SSE event's data, a poll
    /// response body).
    Received {
        /// The connection.
        conn: ConnId,
        /// The frame.
        text: String,
    },
    /// Frames the driver decoded itself (in the browser, with `JSON.parse`),
    /// from one message of `bytes` bytes; `Err` when it could not decode it.
    Frames {
        /// The connection.
        conn: ConnId,
        /// The frames, in order (several for a poll response).
        frames: Result<Vec<ServerFrame>, String>,
        /// The message's size, checked against the frame limit.
        bytes: usize,
    },
    /// Bytes arrived that carry no frame (an SSE comment): the connection is alive.
    Activity {
        /// The connection.
        conn: ConnId,
    },
    /// The attempt failed or the connection ended.
    Closed {
        /// The connection.
        conn: ConnId,
        /// How.
        error: TransportError,
    },
    /// The host's network came back (a browser's `online` event, a mobile
    /// reachability change): reconnect now, with the backoff reset.
    Online,
    /// The host's network is gone: make no attempts until [`Input::Online`].
    Offline,
    /// The host has reason to doubt the connection (a page visible again
    /// after being hidden, an app back in the foreground): check it with a
    /// short deadline and replace it if it does not answer.
    Wake,
    /// An HTTP publish finished.
    Posted {
        /// The idempotency key of the publish.
        key: String,
        /// The event id, or how the request failed.
        result: Result<String, PostError>,
    },
    /// With [`Config::await_token`](super::Config::await_token): a fresh
    /// token from the application (sent as `access_token` from now on), or
    /// `None` when it could not get one, which counts as a refusal.
    Token(Option<String>),
}

/// How an HTTP publish failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PostError {
    /// The server answered with an error status.
    Status {
        /// The HTTP status.
        status: u16,
        /// The response body, for the error message.
        message: String,
    },
    /// The request did not complete (network failure).
    Failed(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// Start the next connection attempt.
    Reconnect,
    /// The attempt must be greeted by then.
    Open,
    /// Something must arrive by then.
    Heartbeat,
    /// Try a more preferred transport.
    Probe,
    /// The probe must be greeted by then.
    ProbeOpen,
    /// Reopen an HTTP stream so that it carries the current subscriptions.
    Reopen,
    /// Post publishes that failed to go out.
    Repost,
}

const TIMERS: [Timer; 7] =
    [Timer::Reconnect, Timer::Open, Timer::Heartbeat, Timer::Probe, Timer::ProbeOpen, Timer::Reopen, Timer::Repost];

#[derive(Debug, Default)]
struct TimerTable([Option<Instant>; TIMERS.len()]);

impl TimerTable {
    fn set(&mut self, t: Timer, at: Instant) {
        self.0[t as usize] = Some(at);
    }
    fn stop(&mut self, t: Timer) {
        self.0[t as usize] = None;
    }
    fn is_set(&self, t: Timer) -> bool {
        self.0[t as usize].is_some()
    }
    fn next(&self) -> Option<Instant> {
        self.0.iter().flatten().min().copied()
    }
    fn expired(&self, t: Timer, now: Instant) -> bool {
        self.0[t as usize].is_some_and(|at| at <= now)
    }
}

#[derive(Debug, Clone, Copy)]
enum Conn {
    /// Waiting for the reconnect timer.
    Idle,
    /// An attempt is under way (not yet opened).
    Opening { id: ConnId, transport: Transport },
    /// Open; greeted once `welcomed` is set.
    Open { id: ConnId, transport: Transport, welcomed: bool, heartbeat: Duration },
    /// Stopped for good.
    Closed,
}

impl Conn {
    fn id(&self) -> Option<ConnId> {
        match *self {
            Conn::Opening { id, .. } | Conn::Open { id, .. } => Some(id),
            Conn::Idle | Conn::Closed => None,
        }
    }

    fn transport(&self) -> Option<Transport> {
        match *self {
            Conn::Opening { transport, .. } | Conn::Open { transport, .. } => Some(transport),
            Conn::Idle | Conn::Closed => None,
        }
    }
}

/// A connection on a more preferred transport, opened beside the working one;
/// it replaces it once greeted.
#[derive(Debug, Clone, Copy)]
struct Probe {
    id: ConnId,
    index: usize,
    opened: bool,
    /// [`Session::subs_version`] when the probe's URL was made.
    subs_version: u64,
}

#[derive(Debug)]
struct Sub {
    /// The id of the last event delivered (or the position after a reset).
    cursor: Option<EventId>,
    /// The current connection carries this subscription: its URL lists it
    /// (SSE, long polling) or a `subscribe` for it was sent (WebSocket).
    /// Frames about a subscription the connection does not carry are about
    /// one the application replaced, and are ignored.
    carried: bool,
    /// The server confirmed the subscription on the current connection.
    confirmed: bool,
    /// Confirmed at least once since the link was established (so that a
    /// repeated confirmation, as on every poll, is not news).
    live: bool,
    /// Events up to this sequence number in the cursor's epoch are replays.
    replay_until: u64,
}

#[derive(Debug)]
struct PendingPublish {
    token: u64,
    key: String,
    channel: String,
    event: Option<String>,
    data: String,
    /// Posted over HTTP and not answered yet.
    in_flight: bool,
}

/// What to do after a connection failed.
enum Decision {
    Retry {
        hint: Option<Duration>,
    },
    /// This transport is not available here: try the next one.
    Fallback,
    /// The credentials were refused: try again with fresh ones.
    RefreshAuth,
    /// The server is going away (close code 1012, a `restarting` error
    /// frame): reconnect at once, to the next server if there are several,
    /// spread over one base delay; not counted as a failure.
    Restart,
    Stop(Error),
}

/// The code and message of a refused HTTP publish: those of its JSON body
/// `{"code": …, "message": …}` (PROTOCOL.md §7.4), else the status and the
/// body's text.
fn rejection(status: u16, body: String) -> (String, String) {
    #[cfg(feature = "json-decode")]
    {
        #[derive(Deserialize)]
        struct Body {
            code: String,
            #[serde(default)]
            message: String,
        }
        if let Ok(b) = serde_json::from_str::<Body>(&body) {
            return (b.code, b.message);
        }
    }
    (status.to_string(), body)
}

#[cfg(feature = "json-decode")]
#[derive(Deserialize)]
struct PollBatch {
    frames: Vec<ServerFrame>,
}

/// The resub session: subscriptions, cursors, connection policy.
///
/// See the [module documentation](crate::core) for the run-loop contract.
#[derive(Debug)]
pub struct Session {
    config: Config,
    /// Every server to use: HTTP base (`http(s)://host[:port][/prefix]`, no
    /// trailing slash) and WebSocket URL, in order.
    endpoints: Vec<(String, String)>,
    /// The index in `endpoints` of the server in use.
    endpoint: usize,
    /// `access_token=…` (in the browser) and `client_id=…&presence=…` for
    /// every connection URL, or empty.
    query: String,
    rng: SmallRng,
    key_prefix: u128,
    next_key: u64,
    conn: Conn,
    next_conn: u64,
    /// Consecutive failures.
    failures: u32,
    /// Index in `config.transports` of the transport in use or to use next.
    current: usize,
    /// Transports that have worked in this session.
    worked: Vec<Transport>,
    /// Why `current` is not 0.
    fallback: Option<Fallback>,
    /// Since when the session has been connected (greeted) without a break;
    /// spans many requests on long polling.
    linked_since: Option<Instant>,
    probe: Option<Probe>,
    next_probe: usize,
    /// The host says it has no network: no attempts until it is back.
    offline: bool,
    /// Credentials refused in a row (with `refresh_auth`).
    auth_refusals: u32,
    /// The next poll asks to be answered at once (a wake checks the link).
    quick_poll: bool,
    /// With `await_token`: no connection until the application hands in a
    /// token (at the start, and after every failure).
    token_wanted: bool,
    subs: ChannelMap<Sub>,
    /// Changes with every subscribe and unsubscribe.
    subs_version: u64,
    /// On the WebSocket in use: `subscribe` frames sent per channel and not
    /// answered yet (an application may unsubscribe and subscribe again
    /// before the first answer comes).
    unanswered: ChannelMap<u32>,
    publishes: VecDeque<PendingPublish>,
    /// The bytes (data and event types) of `publishes`.
    publish_bytes: usize,
    out: VecDeque<Output>,
    timers: TimerTable,
    stats: Stats,
}

impl Session {
    /// Creates a session for the server at `url` and asks for the first
    /// connection at once.
    ///
    /// `url` is the server's base URL (`http://host:port/prefix`, `https://…`);
    /// the endpoints are derived from it as PROTOCOL.md says. A `ws://` or
    /// `wss://` URL is used as the WebSocket endpoint as is. `seeds` gives
    /// the jitter generator's seed and the idempotency keys' prefix.
    pub fn new(mut config: Config, url: &str, seeds: Seeds, now: Instant) -> Result<Self, Error> {
        let mut list: Vec<(String, String)> = Vec::new();
        for u in std::iter::once(url).chain(config.endpoints.iter().map(String::as_str)) {
            let parsed = endpoints(u)?;
            if !list.contains(&parsed) {
                list.push(parsed);
            }
        }
        let query = connection_query(&config)?;
        let mut seen = Vec::new();
        config.transports.retain(|t| {
            let new = !seen.contains(t);
            seen.push(*t);
            new
        });
        if config.transports.is_empty() {
            return Err(Error::InvalidArgument("transports: the list is empty; give at least one".into()));
        }
        let rng = SmallRng::seed_from_u64(seeds.jitter);
        let key_prefix = seeds.keys;
        let config_await = config.await_token;
        let mut s = Self {
            config,
            endpoints: list,
            endpoint: 0,
            query,
            rng,
            key_prefix,
            next_key: 0,
            conn: Conn::Idle,
            next_conn: 0,
            failures: 0,
            current: 0,
            worked: Vec::new(),
            fallback: None,
            linked_since: None,
            probe: None,
            next_probe: 0,
            offline: false,
            auth_refusals: 0,
            quick_poll: false,
            token_wanted: config_await,
            subs: ChannelMap::default(),
            unanswered: ChannelMap::default(),
            subs_version: 0,
            publishes: VecDeque::new(),
            publish_bytes: 0,
            out: VecDeque::new(),
            timers: TimerTable::default(),
            stats: Stats::default(),
        };
        s.connect(now);
        Ok(s)
    }

    /// The next thing to do, in order; `None` when there is nothing left.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Counters since the session started.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Whether the session has stopped for good.
    pub fn is_closed(&self) -> bool {
        matches!(self.conn, Conn::Closed)
    }

    /// The WebSocket URL of the server in use or being tried.
    fn ws_url(&self) -> &str {
        &self.endpoints[self.endpoint].1
    }

    /// The base URL of the server in use or being tried.
    pub fn endpoint_url(&self) -> &str {
        &self.endpoints[self.endpoint].0
    }

    /// The transport in use or being tried.
    pub fn transport(&self) -> Transport {
        self.conn.transport().unwrap_or(self.config.transports[self.current])
    }

    /// Starts a subscription to `channel`, after `from` if given (else live).
    pub fn subscribe(&mut self, channel: &str, from: Option<EventId>, now: Instant) -> Result<(), Error> {
        validate_channel(channel)?;
        if self.is_closed() {
            return Err(Error::Closed);
        }
        if self.subs.contains_key(channel) {
            return Err(Error::AlreadySubscribed(channel.to_owned()));
        }
        let sub = Sub { cursor: from, carried: false, confirmed: false, live: false, replay_until: 0 };
        self.subs_version += 1;
        self.subs.insert(channel.to_owned(), sub);
        match self.conn {
            Conn::Open { id, transport: Transport::WebSocket, .. } => self.send_subscribe(id, channel),
            _ => self.schedule_reopen(now),
        }
        Ok(())
    }

    /// Ends the subscription to `channel` (nothing happens if there is none).
    pub fn unsubscribe(&mut self, channel: &str, now: Instant) {
        if self.subs.remove(channel).is_none() {
            return;
        }
        self.subs_version += 1;
        match self.conn {
            Conn::Open { id, transport: Transport::WebSocket, .. } => {
                self.send(id, &ClientFrame::Unsubscribe { channel: channel.to_owned() });
            }
            _ => self.schedule_reopen(now),
        }
    }

    /// Publishes `data` to `channel`; the result comes as
    /// [`Output::PublishDone`] with `token`. A publish made while disconnected
    /// waits for the next connection; one in flight when a connection drops is
    /// sent again with the same idempotency key, so it is applied once.
    pub fn publish(&mut self, token: u64, channel: &str, event: Option<String>, data: String) -> Result<(), Error> {
        validate_channel(channel)?;
        // An empty event type is none (`message`), as on the wire.
        let event = event.filter(|e| !e.is_empty());
        if let Some(e) = &event {
            validate_event_type(e)?;
        }
        if self.is_closed() {
            return Err(Error::Closed);
        }
        let bytes = data.len() + event.as_ref().map_or(0, String::len);
        if self.publishes.len() >= self.config.max_pending_publishes
            || self.publish_bytes + bytes > self.config.max_pending_publish_bytes
        {
            return Err(Error::PublishQueueFull { waiting: self.publishes.len(), bytes: self.publish_bytes });
        }
        self.publish_bytes += bytes;
        let key = format!("{:032x}-{}", self.key_prefix, self.next_key);
        self.next_key += 1;
        self.publishes.push_back(PendingPublish {
            token,
            key,
            channel: channel.to_owned(),
            event,
            data,
            in_flight: false,
        });
        let i = self.publishes.len() - 1;
        match self.conn {
            Conn::Open { id, transport: Transport::WebSocket, .. } => self.send_publish(id, i),
            Conn::Open { welcomed: true, .. } => self.post_publish(i),
            _ if self.linked_since.is_some() => self.post_publish(i),
            _ => {}
        }
        Ok(())
    }

    /// Closes the session: the connection is closed, subscriptions end,
    /// waiting publishes fail with [`Error::Closed`].
    pub fn close(&mut self) {
        self.terminate(None);
    }

    /// Feeds what happened on a connection.
    pub fn handle_input(&mut self, input: Input, now: Instant) {
        if let Some(probe) = self.probe {
            match &input {
                Input::Opened { conn }
                | Input::Received { conn, .. }
                | Input::Frames { conn, .. }
                | Input::Activity { conn }
                | Input::Closed { conn, .. }
                    if *conn == probe.id =>
                {
                    return self.on_probe_input(input, now);
                }
                _ => {}
            }
        }
        match input {
            Input::Opened { conn } => self.on_opened(conn, now),
            Input::Received { conn, text } => {
                if self.current_open(conn) {
                    self.on_text(conn, &text, now);
                }
            }
            Input::Frames { conn, frames, bytes } => {
                if self.current_open(conn) {
                    self.on_frames(conn, frames, bytes, now);
                }
            }
            Input::Activity { conn } => {
                if let Conn::Open { id, heartbeat, welcomed: true, .. } = self.conn
                    && id == conn
                {
                    self.timers.set(Timer::Heartbeat, now + heartbeat);
                }
            }
            Input::Closed { conn, error } => {
                if self.conn.id() != Some(conn) {
                    return;
                }
                if error == TransportError::Completed
                    && let Conn::Open { transport: Transport::LongPoll, welcomed: true, .. } = self.conn
                {
                    // A poll answered: ask again at once with the new cursors.
                    return self.connect(now);
                }
                if matches!(error, TransportError::Closed { code: CLOSE_TOO_BIG, .. }) {
                    self.reject_largest_publish();
                }
                let (reason, decision) = self.classify(error);
                self.fail(reason, decision, now);
            }
            Input::Posted { key, result } => self.on_posted(&key, result, now),
            Input::Online => {
                self.offline = false;
                if matches!(self.conn, Conn::Idle) {
                    tracing::debug!("network back: reconnecting now");
                    self.failures = 0;
                    self.timers.stop(Timer::Reconnect);
                    // With application tokens and none handed in since the
                    // failure, this waits for one: the application asks for
                    // a token when the network is back (the npm package does).
                    self.connect(now);
                }
            }
            Input::Offline => self.offline = true,
            Input::Token(token) => self.on_token(token, now),
            Input::Wake => self.on_wake(now),
        }
    }

    /// The host doubts the connection: prove it alive within
    /// [`Config::liveness_probe`], or replace it.
    fn on_wake(&mut self, now: Instant) {
        let deadline = now + self.config.liveness_probe;
        match self.conn {
            Conn::Open { id, transport: Transport::WebSocket, welcomed: true, .. } => {
                // The server answers a ping at once: a live connection
                // proves itself well before the short deadline.
                self.send(id, &ClientFrame::Ping);
                if self.timers.0[Timer::Heartbeat as usize].is_none_or(|t| t > deadline) {
                    self.timers.set(Timer::Heartbeat, deadline);
                }
            }
            // Nothing can be sent up an SSE stream or a held poll: a fresh
            // request, resuming from the cursors and answered at once (a
            // poll asks for no hold), replaces it, and must be greeted
            // within the same deadline.
            Conn::Opening { id, .. } | Conn::Open { id, .. } if self.linked_since.is_some() => {
                tracing::debug!(conn = id.0, "wake: replacing the HTTP request with a fresh one");
                self.out.push_back(Output::Disconnect { conn: id });
                self.quick_poll = true;
                self.open_connection(now, false);
                self.timers.set(Timer::Open, deadline);
            }
            _ => {}
        }
    }

    /// Fires the timers that are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for t in TIMERS {
            if !self.timers.expired(t, now) {
                continue;
            }
            self.timers.stop(t);
            match t {
                Timer::Reconnect if self.offline => {
                    // Wait for the network instead of failing attempt after attempt.
                    self.out.push_back(Output::State(ConnectionState::Disconnected {
                        reason: DisconnectReason::Offline,
                        attempt: self.failures,
                        retry_at: now,
                        retry_in: Duration::ZERO,
                    }));
                }
                Timer::Reconnect => {
                    if matches!(self.conn, Conn::Idle) {
                        self.connect(now);
                    }
                }
                Timer::Open if self.linked_since.is_some() => {
                    // A poll (or a reopened stream) of a working link went
                    // unanswered: the link is dead, as with a silent stream.
                    self.fail(DisconnectReason::HeartbeatTimeout, Decision::Retry { hint: None }, now);
                }
                Timer::Open => {
                    let decision = if self.worked.contains(&self.transport()) {
                        Decision::Retry { hint: None }
                    } else {
                        Decision::Fallback
                    };
                    self.fail(DisconnectReason::OpenTimeout, decision, now);
                }
                Timer::Heartbeat => {
                    self.fail(DisconnectReason::HeartbeatTimeout, Decision::Retry { hint: None }, now);
                }
                Timer::Probe => self.start_probe(now),
                Timer::ProbeOpen => self.end_probe(false, now),
                Timer::Reopen => self.reopen(now),
                Timer::Repost => {
                    if self.linked_since.is_some() && self.transport() != Transport::WebSocket {
                        for i in 0..self.publishes.len() {
                            self.post_publish(i);
                        }
                    }
                }
            }
        }
    }

    fn current_open(&self, conn: ConnId) -> bool {
        matches!(self.conn, Conn::Open { id, .. } if id == conn)
    }

    fn new_conn_id(&mut self) -> ConnId {
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        id
    }

    /// The URL of `transport`'s endpoint, carrying the subscriptions for the
    /// HTTP transports.
    fn endpoint(&self, transport: Transport) -> String {
        let path = match transport {
            Transport::WebSocket if self.query.is_empty() => return self.ws_url().to_owned(),
            Transport::WebSocket => return format!("{}?{}", self.ws_url(), self.query),
            Transport::Sse => "sse",
            Transport::LongPoll => "poll",
        };
        let mut url = format!("{}/{path}?", self.endpoint_url());
        if !self.query.is_empty() {
            url.push_str(&self.query);
            url.push('&');
        }
        for (channel, sub) in self.subs.iter() {
            url.push_str("channel=");
            url.push_str(channel);
            if let Some(c) = &sub.cursor {
                url.push('@');
                url.push_str(&c.to_string());
            }
            url.push('&');
        }
        if transport == Transport::LongPoll {
            // The first poll of a link is answered at once (it carries the
            // welcome that makes the link, which publishes wait for), and so
            // is one that checks the link (a wake); the next ones are held.
            let quick = self.linked_since.is_none() || self.quick_poll;
            let hold = if quick { 0 } else { self.config.poll_hold.as_millis() as u64 };
            url.push_str(&format!("timeout_ms={hold}"));
        } else {
            url.pop();
        }
        url
    }

    fn connect(&mut self, now: Instant) {
        if self.token_wanted {
            // Connected again once the application hands in a token.
            self.conn = Conn::Idle;
            return;
        }
        self.open_connection(now, self.linked_since.is_none());
    }

    /// A token from the application, or its failure to get one.
    fn on_token(&mut self, token: Option<String>, now: Instant) {
        if self.is_closed() {
            return;
        }
        let Some(token) = token else {
            // Without a token wanted, the one in use stays: it was not
            // refused. Without a network, getting one was bound to fail: the
            // application asks again when the network is back.
            if self.token_wanted && !self.offline {
                tracing::warn!("no token from the application");
                self.fail(DisconnectReason::Refused { status: 401 }, self.auth_decision(), now);
            }
            return;
        };
        self.config.access_token = Some(token);
        // The identity part was checked when the session was made.
        if let Ok(query) = connection_query(&self.config) {
            self.query = query;
        }
        let waiting = self.token_wanted;
        self.token_wanted = false;
        if waiting && matches!(self.conn, Conn::Idle) && !self.offline && !self.timers.is_set(Timer::Reconnect) {
            self.connect(now);
        }
    }

    /// Starts an attempt; `announce` says whether the application is told
    /// (not for the next poll of a working link, nor for a reopen).
    fn open_connection(&mut self, now: Instant, announce: bool) {
        let transport = self.config.transports[self.current];
        let id = self.new_conn_id();
        self.conn = Conn::Opening { id, transport };
        self.unanswered = ChannelMap::default();
        self.timers.stop(Timer::Heartbeat);
        self.timers.stop(Timer::Reopen);
        let mut open_timeout = self.config.open_timeout;
        if transport == Transport::LongPoll {
            // The server may hold the request this long before answering.
            open_timeout += self.config.poll_hold;
        }
        self.timers.set(Timer::Open, now + open_timeout);
        for sub in self.subs.values_mut() {
            sub.confirmed = false;
            // The URL of an HTTP transport carries every subscription.
            sub.carried = transport != Transport::WebSocket;
        }
        let url = self.endpoint(transport);
        self.quick_poll = false;
        tracing::debug!(conn = id.0, %transport, %url, "connecting");
        if announce {
            let attempt = self.failures;
            let endpoint = self.endpoint_url().to_owned();
            self.out.push_back(Output::State(ConnectionState::Connecting { transport, attempt, endpoint }));
        }
        self.out.push_back(Output::Connect { conn: id, transport, url });
    }

    /// On the HTTP transports the subscriptions travel in the URL: a change
    /// reopens the stream (or the poll). Coalesced so that many changes in a
    /// row reopen once.
    fn schedule_reopen(&mut self, now: Instant) {
        if matches!(self.conn, Conn::Opening { .. } | Conn::Open { .. })
            && self.transport() != Transport::WebSocket
            && !self.timers.is_set(Timer::Reopen)
        {
            self.timers.set(Timer::Reopen, now);
        }
    }

    fn reopen(&mut self, now: Instant) {
        if let Some(id) = self.conn.id()
            && self.transport() != Transport::WebSocket
        {
            self.out.push_back(Output::Disconnect { conn: id });
            self.open_connection(now, false);
        }
    }

    fn on_opened(&mut self, conn: ConnId, _now: Instant) {
        let Conn::Opening { id, transport } = self.conn else {
            return;
        };
        if id != conn {
            return;
        }
        // Until the welcome arrives, the open timer guards the connection.
        let heartbeat = self.config.open_timeout;
        self.conn = Conn::Open { id, transport, welcomed: false, heartbeat };
        if transport == Transport::WebSocket {
            self.send_all(id);
        }
    }

    /// Subscribes every channel and sends every waiting publish on a
    /// WebSocket connection.
    fn send_all(&mut self, conn: ConnId) {
        let channels: Vec<String> = self.subs.keys().cloned().collect();
        for ch in channels {
            self.send_subscribe(conn, &ch);
        }
        for i in 0..self.publishes.len() {
            self.send_publish(conn, i);
        }
    }

    fn send_subscribe(&mut self, conn: ConnId, channel: &str) {
        let Some(sub) = self.subs.get_mut(channel) else {
            return;
        };
        sub.confirmed = false;
        sub.carried = true;
        let cursor = sub.cursor.as_ref().map(EventId::to_string);
        match self.unanswered.get_mut(channel) {
            Some(n) => *n += 1,
            None => {
                self.unanswered.insert(channel.to_owned(), 1);
            }
        }
        self.send(conn, &ClientFrame::Subscribe { channel: channel.to_owned(), cursor });
    }

    fn send_publish(&mut self, conn: ConnId, i: usize) {
        let p = &self.publishes[i];
        let frame = ClientFrame::Publish {
            channel: p.channel.clone(),
            key: p.key.clone(),
            event: p.event.clone(),
            data: p.data.clone(),
        };
        self.send(conn, &frame);
    }

    /// The server closed the WebSocket because a message was over its size
    /// limit (1009). Client frames other than publishes are small, so the
    /// largest waiting publish was it: sent again on every connection, it
    /// would close every one. It fails with `too_large`; the others stay.
    fn reject_largest_publish(&mut self) {
        if self.transport() != Transport::WebSocket {
            return;
        }
        let size = |p: &PendingPublish| p.data.len() + p.event.as_ref().map_or(0, String::len) + p.channel.len();
        let Some(i) = (0..self.publishes.len()).max_by_key(|&i| size(&self.publishes[i])) else {
            return;
        };
        let p = self.take_publish(i);
        tracing::warn!(channel = %p.channel, bytes = p.data.len(), "publish over the server's size limit");
        let message = "the server closed the connection: message too big (1009)".to_owned();
        let result = Err(Error::PublishRejected { code: "too_large".into(), message });
        self.out.push_back(Output::PublishDone { token: p.token, result });
    }

    /// Removes the waiting publish at `i` (an index from `position`).
    fn take_publish(&mut self, i: usize) -> PendingPublish {
        let p = self.publishes.remove(i).expect("index from position");
        self.publish_bytes -= p.data.len() + p.event.as_ref().map_or(0, String::len);
        p
    }

    fn post_publish(&mut self, i: usize) {
        let p = &mut self.publishes[i];
        if p.in_flight {
            return;
        }
        p.in_flight = true;
        let mut url = format!("{}/publish/{}", self.endpoints[self.endpoint].0, p.channel);
        if let Some(ev) = &p.event {
            url.push_str("?event=");
            url.push_str(&percent_encode(ev));
        }
        self.out.push_back(Output::Post { key: p.key.clone(), url, data: p.data.clone() });
    }

    fn send(&mut self, conn: ConnId, frame: &ClientFrame) {
        self.out.push_back(Output::Send { conn, text: encode(frame) });
    }

    fn on_posted(&mut self, key: &str, result: Result<String, PostError>, now: Instant) {
        let Some(i) = self.publishes.iter().position(|p| p.key == key) else {
            return;
        };
        let result = match result {
            Ok(id) => Ok(id),
            Err(PostError::Status { status, message })
                if (400..500).contains(&status) && !matches!(status, 408 | 429) =>
            {
                let (code, message) = rejection(status, message);
                Err(Error::PublishRejected { code, message })
            }
            Err(e) => {
                // Not applied, or not known to be: post again later with the same key.
                tracing::debug!(?e, "publish failed; will retry");
                self.publishes[i].in_flight = false;
                if !self.timers.is_set(Timer::Repost) {
                    let delay = self.config.backoff.ceiling(2);
                    self.timers.set(Timer::Repost, now + delay);
                }
                return;
            }
        };
        let p = self.take_publish(i);
        self.out.push_back(Output::PublishDone { token: p.token, result });
    }

    fn on_text(&mut self, conn: ConnId, text: &str, now: Instant) {
        let frames = self.decode(text);
        self.on_frames(conn, frames, text.len(), now);
    }

    fn decode(&self, text: &str) -> Result<Vec<ServerFrame>, String> {
        self.decode_for(self.transport(), text)
    }

    /// Decodes a text frame of `transport` (a poll response: a batch of frames).
    #[cfg(feature = "json-decode")]
    fn decode_for(&self, transport: Transport, text: &str) -> Result<Vec<ServerFrame>, String> {
        decode_text(transport, text)
    }

    /// Without the `json-decode` feature, the driver decodes frames itself
    /// (in the browser, with `JSON.parse`) and reports [`Input::Frames`].
    #[cfg(not(feature = "json-decode"))]
    fn decode_for(&self, _transport: Transport, _text: &str) -> Result<Vec<ServerFrame>, String> {
        Err("this build decodes no text frames".into())
    }

    /// Frames that arrived in one message (`bytes` long on the wire).
    fn on_frames(&mut self, conn: ConnId, frames: Result<Vec<ServerFrame>, String>, bytes: usize, now: Instant) {
        let limit = match self.transport() {
            Transport::LongPoll => self.config.max_frame_bytes.saturating_mul(POLL_BATCH_FACTOR),
            _ => self.config.max_frame_bytes,
        };
        if bytes > limit {
            let why = format!("frame of {bytes} bytes exceeds the limit of {limit}");
            tracing::warn!(%why, "stopping: resuming would receive the same frame");
            return self.fail(DisconnectReason::Protocol(why), Decision::Stop(Error::FrameTooLarge { limit }), now);
        }
        if let Conn::Open { heartbeat, welcomed: true, .. } = self.conn {
            self.timers.set(Timer::Heartbeat, now + heartbeat);
        }
        let frames = match frames {
            Ok(f) => f,
            Err(why) => return self.protocol_error(why, now),
        };
        for frame in frames {
            if !self.current_open(conn) {
                break; // A frame broke the protocol part-way through a batch.
            }
            self.on_frame(conn, frame, now);
        }
    }

    fn on_frame(&mut self, conn: ConnId, frame: ServerFrame, now: Instant) {
        let greeted = matches!(self.conn, Conn::Open { welcomed: true, .. });
        match frame {
            ServerFrame::Welcome { heartbeat_ms } => self.on_welcome(conn, heartbeat_ms, now),
            // A refused connection says why (an `error` frame about neither a
            // channel nor a publish) instead of greeting.
            ServerFrame::Error { code, channel, key, message } if greeted || channel.is_none() && key.is_none() => {
                self.on_error(code, channel, key, message, now)
            }
            _ if !greeted => self.protocol_error("frame before welcome".into(), now),
            ServerFrame::Subscribed { channel, outcome, reason, head } => {
                self.on_subscribed(channel, outcome, reason, &head, now)
            }
            ServerFrame::Event { channel, id, event, data } => self.on_event(channel, id, event, data, now),
            ServerFrame::Reset { channel, reason, head } => self.on_reset(channel, reason, &head, now),
            ServerFrame::Ping => {}
            ServerFrame::Ack { key, id } => {
                if let Some(i) = self.publishes.iter().position(|p| p.key == key) {
                    let p = self.take_publish(i);
                    self.out.push_back(Output::PublishDone { token: p.token, result: Ok(id) });
                }
            }
            ServerFrame::Presence { channel, action, client_id, data } => {
                if self.subs.contains_key(&channel) {
                    let member = Member { client_id, data };
                    let message = Message::Presence(PresenceEvent { channel, action, member });
                    self.out.push_back(Output::Deliver { message });
                }
            }
            _ => tracing::debug!("ignoring unknown frame type"),
        }
    }

    fn on_welcome(&mut self, conn: ConnId, heartbeat_ms: u64, now: Instant) {
        let Conn::Open { welcomed, heartbeat, transport, .. } = &mut self.conn else {
            return;
        };
        if *welcomed {
            return; // A second welcome changes nothing.
        }
        let transport = *transport;
        let interval = Duration::from_millis(heartbeat_ms).clamp(Duration::from_millis(10), MAX_HINT);
        *heartbeat = match transport {
            // The interval is the hold time; the open timer covers each request.
            Transport::LongPoll => interval * 2 + self.config.open_timeout,
            _ => self.config.heartbeat_timeout.unwrap_or(interval * 2),
        };
        *welcomed = true;
        let heartbeat = *heartbeat;
        self.auth_refusals = 0;
        self.timers.stop(Timer::Open);
        self.timers.set(Timer::Heartbeat, now + heartbeat);
        if self.linked_since.is_some() {
            return; // The next poll, or a stream reopened for new subscriptions.
        }
        self.linked_since = Some(now);
        self.stats.connections += 1;
        if !self.worked.contains(&transport) {
            self.worked.push(transport);
        }
        tracing::debug!(conn = conn.0, heartbeat_ms, %transport, "connected");
        let fallback = self.fallback.clone();
        let endpoint = self.endpoint_url().to_owned();
        self.out.push_back(Output::State(ConnectionState::Connected { transport, fallback, endpoint }));
        if transport != Transport::WebSocket {
            for i in 0..self.publishes.len() {
                self.post_publish(i);
            }
        }
        if self.current > 0
            && let Some(every) = self.config.upgrade_probe
        {
            self.timers.set(Timer::Probe, now + every);
        }
    }

    fn on_subscribed(
        &mut self,
        channel: String,
        outcome: Outcome,
        reason: Option<WireResetReason>,
        head: &str,
        now: Instant,
    ) {
        let Ok(head) = head.parse::<EventId>() else {
            return self.protocol_error(format!("bad head '{head}' for '{channel}'"), now);
        };
        if self.stale_answer(&channel) {
            return; // The answer to a subscribe that a later one replaced.
        }
        let Some(sub) = self.subs.get_mut(&channel).filter(|s| s.carried) else {
            return; // Unsubscribed meanwhile, or subscribed anew since the request.
        };
        let news = !sub.live;
        sub.confirmed = true;
        sub.live = true;
        let reason = reset_reason(reason.unwrap_or(WireResetReason::UnknownCursor));
        let after = sub.cursor.as_ref().map(EventId::to_string);
        let head_seq = head.seq();
        match cursor::start(&mut sub.cursor, outcome, reason, head) {
            Start::Quiet => sub.replay_until = 0,
            // A poll confirms its subscriptions on every answer: only the
            // first confirmation of a link is news.
            Start::Resumed if !news => {}
            Start::Resumed => {
                // Every event up to the head that follows is a replay.
                sub.replay_until = head_seq;
                let after = after.unwrap_or_default();
                self.out.push_back(Output::Deliver { message: Message::Resumed { channel, after } });
            }
            Start::Reset(reason) => self.deliver_reset(channel, reason),
            Start::Violation(why) => self.protocol_error(format!("'{channel}': {why}"), now),
        }
    }

    fn on_event(
        &mut self,
        channel: CompactString,
        id: CompactString,
        event: Option<String>,
        data: String,
        now: Instant,
    ) {
        // The hot path: nothing allocated but the message itself.
        let Some((epoch, seq)) = crate::protocol::split_event_id(&id) else {
            return self.protocol_error(format!("bad event id '{id}'"), now);
        };
        let Some(sub) = self.subs.get_mut(&channel).filter(|s| s.carried) else {
            tracing::debug!(%channel, "event for a subscription this connection does not carry; ignored");
            return;
        };
        let Some(cursor) = sub.cursor.as_mut().filter(|_| sub.confirmed) else {
            if self.unanswered.get(&channel).is_some_and(|n| *n > 0) {
                // Sent for a subscription being replaced, before the answer
                // to the new subscribe: the new one resumes from the cursor.
                return;
            }
            return self.protocol_error(format!("event on '{channel}' before it was confirmed"), now);
        };
        match cursor::next(cursor, epoch, seq) {
            Next::Duplicate => {
                self.stats.duplicates += 1;
                return;
            }
            Next::Gap => {
                let why = format!("gap on '{channel}': {id} after {cursor}");
                return self.protocol_error(why, now);
            }
            Next::Deliver => cursor.set_seq(seq),
        }
        if seq <= sub.replay_until {
            self.stats.replayed += 1;
        }
        self.stats.delivered += 1;
        let message = Message::Event(Event { channel, id, event, data });
        self.out.push_back(Output::Deliver { message });
    }

    fn on_reset(&mut self, channel: String, reason: WireResetReason, head: &str, now: Instant) {
        let Ok(head) = head.parse::<EventId>() else {
            return self.protocol_error(format!("bad head '{head}' for '{channel}'"), now);
        };
        let Some(sub) = self.subs.get_mut(&channel).filter(|s| s.carried) else {
            return;
        };
        if !sub.confirmed {
            if self.unanswered.get(&channel).is_some_and(|n| *n > 0) {
                return; // About a subscription being replaced.
            }
            return self.protocol_error(format!("reset on '{channel}' before it was confirmed"), now);
        }
        sub.replay_until = 0;
        if let Start::Reset(reason) = cursor::start(&mut sub.cursor, Outcome::Reset, reset_reason(reason), head) {
            self.deliver_reset(channel, reason);
        }
    }

    /// Tells the application that `channel` continues after its cursor's new
    /// position (a reset moved it).
    fn deliver_reset(&mut self, channel: String, reason: ResetReason) {
        let Some(sub) = self.subs.get_mut(&channel) else {
            return;
        };
        sub.replay_until = 0;
        let head = sub.cursor.as_ref().map(EventId::to_string).unwrap_or_default();
        self.stats.resets += 1;
        let message = Message::Reset { channel, reason, head };
        self.out.push_back(Output::Deliver { message });
    }

    /// Counts an answer (`subscribed`, or an `error` about the channel) to a
    /// WebSocket `subscribe`: true when a later `subscribe` for the channel
    /// is still unanswered, so that this answer is about one it replaced.
    fn stale_answer(&mut self, channel: &str) -> bool {
        match self.unanswered.get_mut(channel) {
            Some(n) if *n > 1 => {
                *n -= 1;
                true
            }
            Some(n) => {
                *n = 0;
                false
            }
            None => false,
        }
    }

    fn on_error(&mut self, code: String, channel: Option<String>, key: Option<String>, message: String, now: Instant) {
        if let Some(key) = key {
            if let Some(i) = self.publishes.iter().position(|p| p.key == key) {
                let p = self.take_publish(i);
                let result = Err(Error::PublishRejected { code, message });
                self.out.push_back(Output::PublishDone { token: p.token, result });
            }
            return;
        }
        if let Some(channel) = channel {
            if !self.stale_answer(&channel) && self.subs.remove(&channel).is_some() {
                let error = match code.as_str() {
                    "forbidden" | "unauthorized" => Error::Forbidden { channel: channel.clone(), message },
                    _ => Error::BadRequest(format!("{code}: {message}")),
                };
                self.out.push_back(Output::SubscriptionEnded { channel, error });
            }
            return;
        }
        let decision = match code.as_str() {
            "unauthorized" => self.auth_decision(),
            "bad_request" => Decision::Stop(Error::BadRequest(message.clone())),
            "restarting" => Decision::Restart,
            _ => Decision::Retry { hint: None },
        };
        self.fail(DisconnectReason::ServerClosed { code: 0, reason: format!("{code}: {message}") }, decision, now);
    }

    fn protocol_error(&mut self, why: String, now: Instant) {
        tracing::warn!(%why, "protocol error; reconnecting");
        self.fail(DisconnectReason::Protocol(why), Decision::Retry { hint: None }, now);
    }

    /// How a transport failure is reported, and what to do about it.
    fn classify(&self, error: TransportError) -> (DisconnectReason, Decision) {
        let retry = Decision::Retry { hint: None };
        match error {
            TransportError::Connect(e) => (DisconnectReason::ConnectFailed(e), retry),
            TransportError::Lost(e) => (DisconnectReason::Lost(e), retry),
            TransportError::Completed => (DisconnectReason::Lost("stream ended".into()), retry),
            TransportError::Tls(e) => (DisconnectReason::Tls(e.clone()), Decision::Stop(Error::Tls(e))),
            // Counted as a refusal: the next attempt asks again.
            TransportError::NoCredentials(e) => (DisconnectReason::NoCredentials(e), self.auth_decision()),
            TransportError::Unsupported(e) => (DisconnectReason::Unsupported(e), Decision::Fallback),
            TransportError::TooLarge { limit } => (
                DisconnectReason::Protocol(format!("frame over the {limit}-byte limit")),
                Decision::Stop(Error::FrameTooLarge { limit }),
            ),
            // Refused or unreachable, the platform will not say: a transport
            // that never worked here is taken as refused.
            // ... and one that worked is taken as refused once it has failed to
            // open a few times in a row (a proxy that started blocking it).
            TransportError::OpenFailed(e)
                if self.worked.contains(&self.transport()) && self.failures + 1 < OPEN_FAILURES_BEFORE_FALLBACK =>
            {
                (DisconnectReason::ConnectFailed(e), retry)
            }
            TransportError::OpenFailed(e) => (DisconnectReason::Unsupported(e), Decision::Fallback),
            TransportError::Status { status, retry_after } => {
                let refused = DisconnectReason::Refused { status };
                match status {
                    401 => (refused, self.auth_decision()),
                    400 => (refused, Decision::Stop(Error::BadRequest(format!("HTTP {status} on connect")))),
                    204 if self.transport() == Transport::Sse => {
                        (refused, Decision::Stop(Error::BadRequest("the server has nothing to stream (204)".into())))
                    }
                    429 | 503 => (DisconnectReason::Unavailable { retry_after }, Decision::Retry { hint: retry_after }),
                    408 | 500..=599 => (refused, retry),
                    // 403, 404, 405, 426, 501 … and 2xx/3xx that are not what
                    // was asked for: not here.
                    _ => (refused, Decision::Fallback),
                }
            }
            TransportError::Closed { code, reason } => {
                let decision = match code {
                    4400 => Decision::Stop(Error::BadRequest(reason.clone())),
                    4401 => self.auth_decision(),
                    4429 | 4503 => {
                        let hint = parse_seconds(reason.trim()).map(|d| d.min(MAX_HINT));
                        return (DisconnectReason::Unavailable { retry_after: hint }, Decision::Retry { hint });
                    }
                    CLOSE_RESTART => Decision::Restart,
                    _ => retry,
                };
                (DisconnectReason::ServerClosed { code, reason }, decision)
            }
        }
    }

    /// Credentials refused: final without a way to get new ones; with one,
    /// retried (with fresh credentials) until refused [`AUTH_REFUSALS`]
    /// times in a row.
    fn auth_decision(&self) -> Decision {
        if (self.config.refresh_auth || self.config.await_token) && self.auth_refusals + 1 < super::AUTH_REFUSALS {
            Decision::RefreshAuth
        } else {
            Decision::Stop(Error::Unauthorized)
        }
    }

    /// The current connection or attempt ended: decide what comes next.
    fn fail(&mut self, reason: DisconnectReason, decision: Decision, now: Instant) {
        match self.conn.id() {
            Some(id) => self.out.push_back(Output::Disconnect { conn: id }),
            // Without a connection, only getting a token can fail.
            None if self.token_wanted => {}
            None => return,
        }
        let healthy = self.linked_since.is_some_and(|t| now.saturating_duration_since(t) >= self.config.healthy_after);
        let failed = self.transport();
        self.linked_since = None;
        self.cancel_probe();
        for t in [Timer::Open, Timer::Heartbeat, Timer::Probe, Timer::Reopen, Timer::Repost] {
            self.timers.stop(t);
        }
        for sub in self.subs.values_mut() {
            sub.confirmed = false;
            sub.live = false;
        }
        for p in &mut self.publishes {
            p.in_flight = false;
        }
        self.stats.failures += 1;
        if healthy {
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        // Application tokens: the next attempt waits for a fresh one.
        self.token_wanted = self.config.await_token;
        let hint = match decision {
            Decision::Stop(e) => return self.terminate(Some(e)),
            Decision::Retry { hint } => {
                self.rotate(&reason);
                hint
            }
            Decision::Restart => {
                // Told, not failed: the next attempt is the first.
                self.failures = 1;
                self.rotate(&reason);
                None
            }
            Decision::RefreshAuth => {
                self.auth_refusals += 1;
                tracing::info!(refusals = self.auth_refusals, "credentials refused; retrying with fresh ones");
                None
            }
            Decision::Fallback => {
                if self.current + 1 < self.config.transports.len() {
                    self.current += 1;
                    let to = self.config.transports[self.current];
                    tracing::info!(from = %failed, %to, %reason, "falling back");
                    self.fallback = Some(Fallback { from: failed, reason: reason.clone() });
                    return self.schedule_retry(reason, Some(Duration::ZERO), now);
                }
                // Nothing left to fall back to: start again from the top, with
                // backoff (on the next server, if there are several).
                self.current = 0;
                self.fallback = None;
                self.rotate(&reason);
                None
            }
        };
        if self.config.backoff.max_attempts.is_some_and(|m| self.failures >= m) {
            let attempts = self.failures;
            return self.terminate(Some(Error::RetriesExhausted { attempts, last: reason }));
        }
        let delay = match hint {
            // Wait at least as long as asked, spread by up to one base delay so
            // that clients told the same thing do not return together.
            Some(hint) if !hint.is_zero() => hint.min(MAX_HINT) + self.config.backoff.delay(1, &mut self.rng),
            _ => self.config.backoff.delay(self.failures, &mut self.rng),
        };
        self.schedule_retry(reason, Some(delay), now);
    }

    /// Moves on to the next server, when there are several: the one in use
    /// failed, and any other serves the same channels and cursors.
    fn rotate(&mut self, reason: &DisconnectReason) {
        if self.endpoints.len() < 2 {
            return;
        }
        let from = self.endpoint;
        self.endpoint = (self.endpoint + 1) % self.endpoints.len();
        tracing::info!(from = %self.endpoints[from].0, to = %self.endpoint_url(), %reason, "trying the next server");
    }

    fn schedule_retry(&mut self, reason: DisconnectReason, delay: Option<Duration>, now: Instant) {
        let delay = delay.unwrap_or_default();
        let retry_at = now + delay;
        tracing::info!(%reason, attempt = self.failures, delay_ms = delay.as_millis() as u64, "disconnected");
        self.conn = Conn::Idle;
        self.timers.set(Timer::Reconnect, retry_at);
        self.out.push_back(Output::State(ConnectionState::Disconnected {
            reason,
            attempt: self.failures,
            retry_at,
            retry_in: delay,
        }));
    }

    // --- probing a more preferred transport ------------------------------

    fn start_probe(&mut self, now: Instant) {
        if self.probe.is_some() || self.current == 0 || self.linked_since.is_none() {
            return;
        }
        let index = self.next_probe.min(self.current - 1);
        let transport = self.config.transports[index];
        let id = self.new_conn_id();
        self.probe = Some(Probe { id, index, opened: false, subs_version: self.subs_version });
        self.timers.set(Timer::ProbeOpen, now + self.config.open_timeout);
        tracing::debug!(conn = id.0, %transport, "probing a preferred transport");
        let url = self.endpoint(transport);
        self.out.push_back(Output::Connect { conn: id, transport, url });
    }

    fn on_probe_input(&mut self, input: Input, now: Instant) {
        let Some(probe) = self.probe.as_mut() else {
            return;
        };
        match input {
            Input::Opened { .. } => probe.opened = true,
            Input::Received { text, .. } if probe.opened => {
                let transport = self.config.transports[probe.index];
                let frames = self.decode_for(transport, &text);
                self.on_probe_frames(frames, text.len(), now);
            }
            Input::Frames { frames, bytes, .. } if probe.opened => self.on_probe_frames(frames, bytes, now),
            Input::Activity { .. } => {}
            Input::Closed {
                error: TransportError::Status { status: 401, .. } | TransportError::Closed { code: 4401, .. },
                ..
            } => self.end_probe(true, now),
            _ => self.end_probe(false, now),
        }
    }

    /// The first frame of any transport is the welcome: then the probe is up.
    fn on_probe_frames(&mut self, frames: Result<Vec<ServerFrame>, String>, bytes: usize, now: Instant) {
        match frames {
            Ok(f) if matches!(f.first(), Some(ServerFrame::Welcome { .. })) => self.promote_probe(Ok(f), bytes, now),
            Ok(f) => {
                let refused = matches!(f.first(), Some(ServerFrame::Error { code, .. }) if code == "unauthorized");
                self.end_probe(refused, now)
            }
            Err(_) => self.end_probe(false, now),
        }
    }

    /// The probe is up and greeted: it becomes the connection, and the old one
    /// is closed. Subscriptions restart on it from their cursors, so events
    /// the old connection had in flight are replayed, and duplicates dropped.
    fn promote_probe(&mut self, frames: Result<Vec<ServerFrame>, String>, bytes: usize, now: Instant) {
        let Some(probe) = self.probe.take() else {
            return;
        };
        self.timers.stop(Timer::ProbeOpen);
        if let Some(old) = self.conn.id() {
            self.out.push_back(Output::Disconnect { conn: old });
        }
        let transport = self.config.transports[probe.index];
        tracing::info!(from = %self.transport(), to = %transport, "upgraded");
        self.current = probe.index;
        self.next_probe = 0;
        self.fallback = self.fallback.take().filter(|_| self.current > 0);
        self.linked_since = None;
        self.conn = Conn::Open { id: probe.id, transport, welcomed: false, heartbeat: self.config.open_timeout };
        self.unanswered = ChannelMap::default();
        // The probe's URL listed the subscriptions of the moment it was made.
        let carried = transport != Transport::WebSocket && probe.subs_version == self.subs_version;
        for sub in self.subs.values_mut() {
            sub.confirmed = false;
            sub.live = false;
            sub.carried = carried;
        }
        for p in &mut self.publishes {
            p.in_flight = false;
        }
        self.on_frames(probe.id, frames, bytes, now);
        if transport == Transport::WebSocket {
            self.send_all(probe.id);
        } else if !carried {
            // Subscriptions changed while the probe was opening: reopen
            // with the current list.
            self.schedule_reopen(now);
        }
    }

    /// The probe failed: keep the working connection, try again later (the
    /// next more preferred transport first, if there is one). With tokens
    /// from the application, a probe whose token was `refused` is not tried
    /// again on this link: the token is stale, and a fresh one comes with the
    /// next connection (which probes again).
    fn end_probe(&mut self, refused: bool, now: Instant) {
        let Some(probe) = self.probe.take() else {
            return;
        };
        self.timers.stop(Timer::ProbeOpen);
        self.out.push_back(Output::Disconnect { conn: probe.id });
        self.next_probe = if probe.index + 1 < self.current { probe.index + 1 } else { 0 };
        if let Some(every) = self.config.upgrade_probe
            && !(refused && self.config.await_token)
        {
            self.timers.set(Timer::Probe, now + every);
        }
    }

    fn cancel_probe(&mut self) {
        if let Some(probe) = self.probe.take() {
            self.out.push_back(Output::Disconnect { conn: probe.id });
        }
        self.timers.stop(Timer::ProbeOpen);
    }

    fn terminate(&mut self, error: Option<Error>) {
        match self.conn {
            Conn::Closed => return,
            Conn::Opening { id, .. } | Conn::Open { id, .. } => self.out.push_back(Output::Disconnect { conn: id }),
            Conn::Idle => {}
        }
        self.cancel_probe();
        self.conn = Conn::Closed;
        self.linked_since = None;
        self.timers = TimerTable::default();
        let sub_error = error.clone().unwrap_or(Error::Closed);
        for channel in std::mem::take(&mut self.subs).into_keys() {
            if error.is_some() {
                self.out.push_back(Output::SubscriptionEnded { channel, error: sub_error.clone() });
            }
        }
        self.publish_bytes = 0;
        for p in std::mem::take(&mut self.publishes) {
            self.out.push_back(Output::PublishDone { token: p.token, result: Err(sub_error.clone()) });
        }
        self.out.push_back(Output::State(ConnectionState::Closed { error }));
    }
}

/// Decodes the text of one message of `transport`: a frame, or for long
/// polling an answer's frames. Drivers call it off the session's thread and
/// report [`Input::Frames`]; the session uses it for [`Input::Received`].
#[cfg(feature = "json-decode")]
pub fn decode_text(transport: Transport, text: &str) -> Result<Vec<ServerFrame>, String> {
    if transport == Transport::LongPoll {
        if let Some(frames) = ServerFrame::read_events(text) {
            return Ok(frames);
        }
        return serde_json::from_str::<PollBatch>(text).map(|b| b.frames).map_err(|e| json_error("poll response", &e));
    }
    if let Some(frame) = ServerFrame::read_event(text) {
        return Ok(vec![frame]);
    }
    serde_json::from_str::<ServerFrame>(text).map(|f| vec![f]).map_err(|e| json_error("frame", &e))
}

/// Decodes one frame into `out` (for the native driver's connection tasks).
#[cfg(all(feature = "json-decode", not(target_arch = "wasm32")))]
pub(crate) fn decode_frame_into(text: &str, out: &mut Vec<ServerFrame>) -> Result<(), String> {
    out.push(match ServerFrame::read_event(text) {
        Some(frame) => frame,
        None => serde_json::from_str::<ServerFrame>(text).map_err(|e| json_error("frame", &e))?,
    });
    Ok(())
}

/// Where a frame failed to decode (serde_json's own message is not used: its
/// formatting machinery would weigh on small builds).
#[cfg(feature = "json-decode")]
fn json_error(what: &str, e: &serde_json::Error) -> String {
    format!("malformed {what} (line {}, column {})", e.line(), e.column())
}

/// Parses a non-negative decimal number of seconds (`2`, `2.5`, `0.125`) to
/// millisecond precision; `None` for anything else.
fn parse_seconds(s: &str) -> Option<Duration> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Too many seconds to count is "a very long time": the longest hint.
    let secs: u64 = whole.parse().unwrap_or(u64::MAX);
    let millis = frac.bytes().chain(std::iter::repeat(b'0')).take(3).fold(0u64, |n, b| n * 10 + u64::from(b - b'0'));
    Some(Duration::from_secs(secs.min(MAX_HINT.as_secs())) + Duration::from_millis(millis))
}

fn reset_reason(r: WireResetReason) -> ResetReason {
    match r {
        WireResetReason::HistoryTruncated => ResetReason::HistoryTruncated,
        WireResetReason::EpochChanged => ResetReason::EpochChanged,
        WireResetReason::UnknownCursor => ResetReason::UnknownCursor,
        WireResetReason::Other(s) => ResetReason::Other(s),
    }
}

fn encode(frame: &ClientFrame) -> String {
    frame.to_json()
}

/// The query every WebSocket and SSE URL carries: `access_token=…` where
/// headers cannot carry it, then the identity (`client_id=…&presence=…`);
/// empty without either.
fn connection_query(config: &Config) -> Result<String, Error> {
    let mut query = String::new();
    if let Some(token) = &config.access_token {
        query.push_str("access_token=");
        query.push_str(&percent_encode(token));
    }
    let Some(id) = &config.client_id else {
        return Ok(query);
    };
    if !query.is_empty() {
        query.push('&');
    }
    validate_channel(id).map_err(|_| Error::InvalidClientId(id.clone()))?;
    query.push_str("client_id=");
    query.push_str(id);
    if let Some(data) = &config.presence_data {
        if data.len() > MAX_PRESENCE_DATA {
            return Err(Error::InvalidClientId("presence data over 1024 bytes".into()));
        }
        query.push_str("&presence=");
        query.push_str(&percent_encode(data));
    }
    Ok(query)
}

/// The largest presence data a client may give, in bytes.
pub const MAX_PRESENCE_DATA: usize = 1024;

/// Escapes a query value (event types are free text).
fn percent_encode(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
    out
}

/// Checks `host[:port]` of a URL: a DNS name or IPv4 address (letters,
/// digits, `-`, `.`, `_`), or an IPv6 address in brackets; a port of 1-5
/// digits up to 65535. Credentials in the URL are refused (use a token).
fn check_authority(authority: &str) -> Result<(), &'static str> {
    if authority.contains('@') {
        return Err("credentials do not go in the URL; use a token");
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (addr, after) = v6.split_once(']').ok_or("an IPv6 address without its closing ']'")?;
            addr.parse::<std::net::Ipv6Addr>().map_err(|_| "not an IPv6 address in the brackets")?;
            match after {
                "" => return Ok(()),
                _ => ("", after.strip_prefix(':').ok_or("text after the IPv6 address")?),
            }
        }
        None => match authority.split_once(':') {
            Some((host, port)) => (host, port),
            None => (authority, ""),
        },
    };
    if authority.starts_with(|c| c != '[')
        && (host.is_empty() || !host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')))
    {
        return Err("the host must be a name or an address");
    }
    if authority.contains(':') && (port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit())) {
        return Err("the port must be a number");
    }
    if !port.is_empty() && port.parse::<u32>().map_or(true, |p| p > 65_535) {
        return Err("the port must be at most 65535");
    }
    Ok(())
}

/// Derives the HTTP base and the WebSocket endpoint from the server URL
/// (PROTOCOL.md, "Endpoints").
pub(crate) fn endpoints(url: &str) -> Result<(String, String), Error> {
    let bad = |why| Error::InvalidUrl { url: url.to_owned(), why };
    // No indexing into strings here or in the frame encoder: a failed index
    // would print the string's characters, which brings Unicode tables into
    // the browser build.
    let (scheme, rest) =
        url.split_once(':').and_then(|(s, r)| Some((s, r.strip_prefix("//")?))).ok_or_else(|| bad("no scheme"))?;
    let (http, ws) = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => ("http", "ws"),
        "https" | "wss" => ("https", "wss"),
        _ => return Err(bad("scheme must be http, https, ws or wss")),
    };
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if host_end == 0 {
        return Err(bad("no host"));
    }
    check_authority(rest.get(..host_end).unwrap_or_default()).map_err(bad)?;
    if rest.contains(['?', '#']) || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("a base URL has no query, fragment or spaces"));
    }
    let rest = rest.trim_end_matches('/');
    if scheme.to_ascii_lowercase().starts_with("ws") {
        let base = rest.strip_suffix("/ws").unwrap_or(rest);
        return Ok((format!("{http}://{base}"), format!("{ws}://{rest}")));
    }
    Ok((format!("{http}://{rest}"), format!("{ws}://{rest}/ws")))
}

#[cfg(test)]
mod tests;
