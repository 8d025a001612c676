//! The sans-IO session: every policy decision of resub, and nothing else.
//!
//! The core is a deterministic state machine. It opens no socket, reads no
//! clock and draws no randomness of its own: the driver feeds it what happened
//! ([`Session::handle_input`], [`Session::handle_timeout`], each with the
//! current time as an argument) and carries out what it asks for
//! ([`Session::poll_output`]), waking it again at [`Session::poll_timeout`].
//! Randomness comes in at construction ([`Seeds`]): a seed for the backoff
//! jitter's generator, and the operating system's randomness for the prefix
//! of idempotency keys. The same inputs at the same times therefore give the same
//! outputs, which is how the tests drive thousands of fault schedules a second
//! with simulated time.
//!
//! The run-loop invariant: after every `handle_*` call and every `subscribe`,
//! `unsubscribe`, `publish` or `close`, drain `poll_output` until it returns
//! `None`, then sleep until `poll_timeout` or the next input, whichever comes
//! first.

mod backoff;
mod channels;
mod cursor;
// Plain SSE is a native client only (a page has its own EventSource).
#[cfg(not(target_arch = "wasm32"))]
pub mod plain;
mod session;

pub use backoff::Backoff;
pub(crate) use channels::ChannelMap;
#[cfg(all(feature = "json-decode", not(target_arch = "wasm32")))]
pub(crate) use session::decode_frame_into;
#[cfg(feature = "json-decode")]
pub use session::decode_text;
pub use session::{ConnId, Input, Output, POLL_BATCH_FACTOR, PostError, Seeds, Session};

/// The string type of an event's channel and id: inline up to 24 bytes.
pub use compact_str::CompactString;
use std::fmt;
use std::time::Duration;

use crate::Error;
use crate::Instant;
pub use crate::protocol::PresenceAction;

/// A way of carrying the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Transport {
    /// WebSocket, JSON text frames both ways.
    WebSocket,
    /// Server-Sent Events down, HTTP POST up.
    Sse,
    /// Long polling: held GET requests down, HTTP POST up.
    LongPoll,
}

impl Transport {
    /// Every transport, in the default order of preference.
    pub const ALL: [Transport; 3] = [Transport::WebSocket, Transport::Sse, Transport::LongPoll];

    /// The short name used in options and logs: `ws`, `sse` or `poll`.
    pub fn name(self) -> &'static str {
        match self {
            Transport::WebSocket => "ws",
            Transport::Sse => "sse",
            Transport::LongPoll => "poll",
        }
    }
}

impl std::str::FromStr for Transport {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ws" | "websocket" => Ok(Transport::WebSocket),
            "sse" => Ok(Transport::Sse),
            "poll" | "long-poll" | "longpoll" => Ok(Transport::LongPoll),
            _ => Err(format!("unknown transport '{s}': expected ws, sse or poll")),
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a driver reports when a connection attempt or an open connection ends.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportError {
    /// No connection could be made (DNS failure, refused, unreachable).
    Connect(String),
    /// The server answered the opening request with an HTTP status instead of
    /// accepting it, with its `Retry-After` if it gave one.
    Status {
        /// The HTTP status code.
        status: u16,
        /// The parsed `Retry-After` header.
        retry_after: Option<Duration>,
    },
    /// The TLS handshake failed.
    Tls(String),
    /// No credentials could be had for the attempt (the token provider
    /// failed, or did not answer in time), so none was made.
    NoCredentials(String),
    /// The server (or a proxy) answered in a way that says this transport is
    /// not available here, for example an SSE request answered with HTML.
    Unsupported(String),
    /// The attempt failed before opening, and the platform does not say why
    /// (a browser hides whether a WebSocket or EventSource was refused or the
    /// server was unreachable).
    OpenFailed(String),
    /// An open connection ended without a close handshake (reset, EOF, I/O error).
    Lost(String),
    /// The server sent a frame (or an SSE event, or a poll answer) larger
    /// than the configured limit.
    TooLarge {
        /// The limit that was exceeded, in bytes.
        limit: usize,
    },
    /// A long-poll request completed normally.
    Completed,
    /// The server closed the connection with a close code and reason.
    Closed {
        /// The WebSocket close code.
        code: u16,
        /// The close reason text.
        reason: String,
    },
}

/// Why the client is not connected at the moment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DisconnectReason {
    /// No connection could be made.
    ConnectFailed(String),
    /// The server answered the opening request with this HTTP status.
    Refused {
        /// The HTTP status.
        status: u16,
    },
    /// The answer showed that this transport is not available here.
    Unsupported(String),
    /// The server asked to come back later (HTTP 429/503, close code 4429/4503).
    Unavailable {
        /// How long the server asked to wait, if it said.
        retry_after: Option<Duration>,
    },
    /// The connection broke without a close handshake.
    Lost(String),
    /// The server closed the connection.
    ServerClosed {
        /// The close code.
        code: u16,
        /// The close reason.
        reason: String,
    },
    /// Nothing arrived for longer than the heartbeat timeout.
    HeartbeatTimeout,
    /// The connection did not open (and greet) within the open timeout.
    OpenTimeout,
    /// The server broke the protocol (malformed frame, gap, frame out of order).
    Protocol(String),
    /// The TLS handshake failed.
    Tls(String),
    /// The host reports no network; attempts resume when it is back.
    Offline,
    /// The token provider failed or did not answer, so no attempt was made
    /// (counts as a refusal of credentials).
    NoCredentials(String),
}

impl DisconnectReason {
    /// A stable, machine-readable name for the reason, the same on every
    /// surface: `connect_failed`, `refused`, `unsupported`, `unavailable`,
    /// `lost`, `server_closed`, `heartbeat_timeout`, `open_timeout`,
    /// `protocol`, `tls`, `offline`, `no_credentials`.
    pub fn code(&self) -> &'static str {
        match self {
            DisconnectReason::ConnectFailed(_) => "connect_failed",
            DisconnectReason::Refused { .. } => "refused",
            DisconnectReason::Unsupported(_) => "unsupported",
            DisconnectReason::Unavailable { .. } => "unavailable",
            DisconnectReason::Lost(_) => "lost",
            DisconnectReason::ServerClosed { .. } => "server_closed",
            DisconnectReason::HeartbeatTimeout => "heartbeat_timeout",
            DisconnectReason::OpenTimeout => "open_timeout",
            DisconnectReason::Protocol(_) => "protocol",
            DisconnectReason::Tls(_) => "tls",
            DisconnectReason::Offline => "offline",
            DisconnectReason::NoCredentials(_) => "no_credentials",
        }
    }
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DisconnectReason::ConnectFailed(e) => write!(f, "connect failed: {e}"),
            DisconnectReason::Refused { status } => write!(f, "refused with HTTP {status}"),
            DisconnectReason::Unsupported(e) => write!(f, "transport not available: {e}"),
            DisconnectReason::Unavailable { retry_after: Some(d) } => {
                write!(f, "server unavailable, retry after {}", Secs(*d))
            }
            DisconnectReason::Unavailable { retry_after: None } => f.write_str("server unavailable"),
            DisconnectReason::Lost(e) => write!(f, "connection lost: {e}"),
            DisconnectReason::ServerClosed { code, reason } => {
                write!(f, "closed by server ({code} {reason})")
            }
            DisconnectReason::HeartbeatTimeout => f.write_str("heartbeat timeout"),
            DisconnectReason::OpenTimeout => f.write_str("open timeout"),
            DisconnectReason::Protocol(e) => write!(f, "protocol error: {e}"),
            DisconnectReason::Tls(e) => write!(f, "TLS failed: {e}"),
            DisconnectReason::Offline => f.write_str("offline, waiting for the network"),
            DisconnectReason::NoCredentials(e) => write!(f, "no credentials: {e}"),
        }
    }
}

/// Seconds with two decimals, without pulling float formatting into the
/// browser build.
struct Secs(Duration);

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}s", self.0.as_secs(), self.0.subsec_millis() / 10)
    }
}

/// The connection's state, as the application sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionState {
    /// A connection attempt is under way.
    Connecting {
        /// The transport being tried.
        transport: Transport,
        /// Consecutive failures before this attempt (0 for a first try).
        attempt: u32,
        /// The server being tried: its base URL (`http://host:port/prefix`),
        /// one of the endpoints configured.
        endpoint: String,
    },
    /// Connected and greeted by the server.
    Connected {
        /// The transport in use.
        transport: Transport,
        /// Why a more preferred transport is not in use, if one is not.
        fallback: Option<Fallback>,
        /// The server in use: its base URL.
        endpoint: String,
    },
    /// Not connected; the next attempt is scheduled.
    Disconnected {
        /// Why the last connection or attempt ended.
        reason: DisconnectReason,
        /// Consecutive failures so far.
        attempt: u32,
        /// When the next attempt starts.
        retry_at: Instant,
        /// The delay chosen, from the moment of the failure.
        retry_in: Duration,
    },
    /// Stopped for good: closed by the application (`None`) or by an error
    /// that retrying would not fix.
    Closed {
        /// The error that stopped the client, if one did.
        error: Option<Error>,
    },
}

impl fmt::Display for ConnectionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectionState::Connecting { transport, attempt, endpoint } => {
                write!(f, "connecting to {endpoint} via {transport} (attempt {})", attempt + 1)
            }
            ConnectionState::Connected { transport, fallback: None, endpoint } => {
                write!(f, "connected to {endpoint} via {transport}")
            }
            ConnectionState::Connected { transport, fallback: Some(fb), endpoint } => {
                write!(f, "connected to {endpoint} via {transport} (fell back from {}: {})", fb.from, fb.reason)
            }
            ConnectionState::Disconnected { reason, attempt, retry_in, .. } => {
                write!(f, "disconnected: {reason}; retry {attempt} in {:.2}s", retry_in.as_secs_f64())
            }
            ConnectionState::Closed { error: None } => f.write_str("closed"),
            ConnectionState::Closed { error: Some(e) } => write!(f, "closed: {e}"),
        }
    }
}

/// Why the client fell back from a more preferred transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback {
    /// The transport that was given up.
    pub from: Transport,
    /// How it failed.
    pub reason: DisconnectReason,
}

/// One event delivered to the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The channel it belongs to. A string held inline up to 24 bytes (it
    /// derefs to `&str`), so that an event costs one allocation: its data.
    pub channel: CompactString,
    /// Its id (`<epoch>-<seq>`): pass it as a starting cursor to resume
    /// after it. Held inline up to 24 bytes, like the channel.
    pub id: CompactString,
    /// The event type, if the publisher gave one.
    pub event: Option<String>,
    /// The payload, exactly as published.
    pub data: String,
}

impl Event {
    /// The event type, `message` when the publisher gave none (as in SSE).
    pub fn event_type(&self) -> &str {
        self.event.as_deref().unwrap_or("message")
    }
}

/// Why a subscription could not continue from its cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResetReason {
    /// The server no longer holds the events after the cursor.
    HistoryTruncated,
    /// The channel's history was lost or reset (a new epoch).
    EpochChanged,
    /// The server does not know the cursor.
    UnknownCursor,
    /// A reason this version does not know, as the server named it.
    Other(String),
}

impl ResetReason {
    /// The reason's wire name (`history_truncated`, `epoch_changed`, …).
    pub fn as_str(&self) -> &str {
        match self {
            ResetReason::HistoryTruncated => "history_truncated",
            ResetReason::EpochChanged => "epoch_changed",
            ResetReason::UnknownCursor => "unknown_cursor",
            ResetReason::Other(s) => s,
        }
    }
}

impl fmt::Display for ResetReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a subscription yields.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message {
    /// The next event after the cursor.
    Event(Event),
    /// A (re)subscription resumed from the cursor: nothing was lost.
    Resumed {
        /// The channel.
        channel: String,
        /// The cursor the subscription resumed after.
        after: String,
    },
    /// The subscription could not continue from its cursor: events may have
    /// been missed. It continues with the events after `head`.
    Reset {
        /// The channel.
        channel: String,
        /// Why.
        reason: ResetReason,
        /// The position the subscription continues after.
        head: String,
    },
    /// Someone joined or left the channel's presence. Only clients with a
    /// [`Config::client_id`] receive these, and only on the streaming
    /// transports (WebSocket, SSE); the current list is
    /// `Client::presence` (over HTTP, on every transport).
    Presence(PresenceEvent),
}

impl Message {
    /// The channel the message is about.
    pub fn channel(&self) -> &str {
        match self {
            Message::Event(e) => &e.channel,
            Message::Resumed { channel, .. } | Message::Reset { channel, .. } => channel,
            Message::Presence(p) => &p.channel,
        }
    }

    /// The position this message moves its subscription to (an event's id,
    /// a reset's head), which a cursor store saves before the application
    /// sees the message, so that a restart neither repeats nor skips it;
    /// `None` for a message that does not move it.
    pub fn cursor(&self) -> Option<&str> {
        match self {
            Message::Event(e) => Some(&e.id),
            Message::Reset { head, .. } => Some(head),
            Message::Resumed { .. } | Message::Presence(_) => None,
        }
    }
}

/// A member of a channel's presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The client id it connected with.
    pub client_id: String,
    /// Its presence data (free text, often JSON); `""` if none.
    pub data: String,
}

/// A change to a channel's presence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceEvent {
    /// The channel.
    pub channel: String,
    /// Joined or left.
    pub action: PresenceAction,
    /// Who.
    pub member: Member,
}

/// Counters kept by the session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Events delivered to the application.
    pub delivered: u64,
    /// Of those, events that were replayed from history on (re)subscribe.
    pub replayed: u64,
    /// Events received again and dropped (already delivered).
    pub duplicates: u64,
    /// Resets delivered.
    pub resets: u64,
    /// Connections opened and greeted.
    pub connections: u64,
    /// Connections or attempts that ended in failure.
    pub failures: u64,
}

/// Tunables of the session. `Config::default()` is a sensible production setting.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Reconnect delays.
    pub backoff: Backoff,
    /// A connection must stay up this long before the failure count resets, so
    /// that a server accepting and dropping at once cannot cause a tight loop.
    pub healthy_after: Duration,
    /// How long an attempt may take from connect to the server's welcome.
    pub open_timeout: Duration,
    /// Silence longer than this closes the connection. `None`: twice the
    /// interval the server states in its welcome.
    pub heartbeat_timeout: Option<Duration>,
    /// Most publishes that may wait for a connection or an ack at once (the
    /// outbox).
    pub max_pending_publishes: usize,
    /// Most bytes (data and event types) the waiting publishes may hold
    /// together. A single publish larger than this is refused too.
    pub max_pending_publish_bytes: usize,
    /// Largest frame accepted from the server, in bytes; larger frames are a
    /// protocol error.
    pub max_frame_bytes: usize,
    /// Transports to use, most preferred first. The client falls back along
    /// this list when a transport is not available, remembers what worked,
    /// and probes back up (see `upgrade_probe`).
    pub transports: Vec<Transport>,
    /// While on a less preferred transport, how often to try a better one
    /// (without dropping the working connection until the better one is up).
    /// `None` never probes.
    pub upgrade_probe: Option<Duration>,
    /// How long a long-poll request may be held by the server.
    pub poll_hold: Duration,
    /// When the host doubts the connection ([`Input::Wake`]), how long the
    /// server has to answer a ping before the connection is replaced.
    pub liveness_probe: Duration,
    /// Further base URLs of servers sharing the same channels (the nodes of
    /// a cluster), tried after the URL the session was created with. On a
    /// failure the session moves on to the next one, with the usual backoff;
    /// it stays on one as long as it works. A cursor from one resumes on
    /// another.
    pub endpoints: Vec<String>,
    /// Who the client is, for presence: with an id, every subscription makes
    /// it a member of its channel's presence and brings the channel's
    /// join and leave events. 1–128 characters from `A-Z a-z 0-9 _ . : -`.
    pub client_id: Option<String>,
    /// Data shown with the client id in presence (at most 1024 bytes;
    /// often JSON).
    pub presence_data: Option<String>,
    /// A token to put in the WebSocket and SSE URLs as `access_token`, for
    /// platforms that cannot send an `Authorization` header on those (a
    /// browser). URLs end up in logs: prefer short-lived tokens.
    pub access_token: Option<String>,
    /// Credentials are fetched afresh for every connection (a token
    /// provider): a `401` or close code `4401` is retried with new ones,
    /// up to [`AUTH_REFUSALS`] refusals in a row, instead of stopping at once.
    pub refresh_auth: bool,
    /// The application hands tokens in with [`Input::Token`] (the browser's
    /// token provider, asked whenever the connection is down): the session
    /// makes no connection before the first token, nor after a failure
    /// until the next one, so every connection starts with a fresh token and
    /// a refused one is never tried again. Refusals count as with
    /// `refresh_auth`; so does a failure to get a token
    /// (`Input::Token(None)`), except while the host is offline. The
    /// application should therefore ask for a token at the start, on every
    /// `Disconnected` state and when the network comes back.
    pub await_token: bool,
}

/// The largest answer to an HTTP publish a driver reads, in bytes (an
/// answer is an event id or an error message). A longer one fails that
/// attempt, which is retried with the same idempotency key.
pub const MAX_POST_ANSWER: usize = 64 * 1024;

/// With [`Config::refresh_auth`], how many refusals (`401`, `4401`) in a row
/// stop the session with [`Error::Unauthorized`].
pub const AUTH_REFUSALS: u32 = 3;

/// How long a token provider may take; one that takes longer has failed,
/// which counts as a refusal.
pub const TOKEN_TIMEOUT: Duration = Duration::from_secs(10);

/// What an HTTP answer to a request for a stream or a long poll means: `Ok`
/// when its body is what was asked for (status 200 and the `expected` media
/// type), else the failure the session judges: the status with its
/// `Retry-After`, or a content type that says this server does not speak
/// the transport. Every driver asks this.
pub fn http_answer(
    status: u16,
    content_type: &str,
    retry_after: Option<&str>,
    expected: &str,
) -> Result<(), TransportError> {
    if status != 200 {
        let retry_after = retry_after.and_then(crate::protocol::parse_retry_after);
        return Err(TransportError::Status { status, retry_after });
    }
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case(expected) {
        return Err(TransportError::Unsupported(format!("answered '{content_type}' instead of {expected}")));
    }
    Ok(())
}

/// How a browser's WebSocket that had opened ended: close code 1006 is the
/// browser's word for a connection lost without a close frame; any other
/// code is the peer's, with its reason.
pub fn websocket_closed(code: u16, reason: String) -> TransportError {
    if code == 1006 {
        TransportError::Lost("connection closed without a close frame".into())
    } else {
        TransportError::Closed { code, reason }
    }
}

/// What an answer to `GET /presence/{channel}` with status `status` and
/// body `body` (for the message) means: `Ok` when its body is the list,
/// else the error for the application. Every driver asks this.
pub fn presence_answer(status: u16, body: &str) -> Result<(), crate::Error> {
    match status {
        200 => Ok(()),
        401 => Err(crate::Error::Unauthorized),
        400..=499 if !matches!(status, 408 | 429) => {
            let mut message = format!("HTTP {status}: ");
            message.extend(body.chars().take(200));
            Err(crate::Error::BadRequest(message))
        }
        _ => Err(crate::Error::Unavailable(format!("HTTP {status}"))),
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            backoff: Backoff::default(),
            healthy_after: Duration::from_secs(5),
            open_timeout: Duration::from_secs(10),
            heartbeat_timeout: None,
            max_pending_publishes: 1024,
            max_pending_publish_bytes: 4 << 20,
            max_frame_bytes: 1 << 20,
            transports: Transport::ALL.to_vec(),
            upgrade_probe: Some(Duration::from_secs(60)),
            poll_hold: Duration::from_secs(25),
            liveness_probe: Duration::from_secs(3),
            endpoints: Vec::new(),
            client_id: None,
            presence_data: None,
            refresh_auth: false,
            await_token: false,
            access_token: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{
        Event, Member, Message, PresenceAction, PresenceEvent, ResetReason, TransportError, http_answer,
        presence_answer, websocket_closed,
    };
    use crate::Error;

    #[test]
    fn an_http_answer_is_read_only_with_status_200_and_the_type_asked_for() {
        assert_eq!(http_answer(200, "application/json; charset=utf-8", None, "application/json"), Ok(()));
        assert_eq!(http_answer(200, "Text/Event-Stream", None, "text/event-stream"), Ok(()));
        let status = TransportError::Status { status: 503, retry_after: Some(Duration::from_secs(2)) };
        assert_eq!(http_answer(503, "application/json", Some("2"), "application/json"), Err(status));
        match http_answer(200, "text/html", None, "application/json") {
            Err(TransportError::Unsupported(why)) => {
                assert_eq!(why, "answered 'text/html' instead of application/json")
            }
            other => panic!("text/html: {other:?}"),
        }
    }

    #[test]
    fn a_websocket_closed_with_1006_was_lost_any_other_code_is_the_peers() {
        assert!(matches!(websocket_closed(1006, String::new()), TransportError::Lost(_)));
        let closed = TransportError::Closed { code: 4401, reason: "unauthorized".into() };
        assert_eq!(websocket_closed(4401, "unauthorized".into()), closed);
    }

    #[test]
    fn events_and_resets_move_the_cursor_notices_and_presence_do_not() {
        let event = Event { channel: "c".into(), id: "e-7".into(), event: None, data: "d".into() };
        assert_eq!(Message::Event(event).cursor(), Some("e-7"));
        let reset = Message::Reset { channel: "c".into(), reason: ResetReason::HistoryTruncated, head: "e-9".into() };
        assert_eq!(reset.cursor(), Some("e-9"));
        assert_eq!(Message::Resumed { channel: "c".into(), after: "e-7".into() }.cursor(), None);
        let member = Member { client_id: "x".into(), data: String::new() };
        let presence = PresenceEvent { channel: "c".into(), action: PresenceAction::Join, member };
        assert_eq!(Message::Presence(presence).cursor(), None);
    }

    #[test]
    fn presence_answers_mean_what_every_driver_says() {
        assert!(presence_answer(200, "{}").is_ok());
        assert!(matches!(presence_answer(401, ""), Err(Error::Unauthorized)));
        // A refused request is final; the body says why, cut at 200 characters.
        let long = "x".repeat(300);
        match presence_answer(403, &long) {
            Err(Error::BadRequest(m)) => assert_eq!(m, format!("HTTP 403: {}", &long[..200])),
            other => panic!("403: {other:?}"),
        }
        // Timeouts, throttling and server errors may pass: trying later may succeed.
        for status in [408, 429, 500, 503, 302] {
            assert!(matches!(presence_answer(status, "busy"), Err(Error::Unavailable(_))), "{status}");
        }
    }
}
