//! The records, enums and errors of the bindings, and their conversions from
//! the Rust client's types. Names follow the one contract of every surface
//! (README, "One contract, three surfaces"): message kinds, state fields,
//! disconnect reason codes and error codes are the core's.

use resub::{ConnectionState, Transport};

/// Every error: one variant (one exception class) per stable code, the
/// same codes as the Rust and JavaScript APIs, each with its message.
/// (Flat: a Kotlin exception's `message` is the message; the wrappers add a
/// `code` property.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, uniffi::Error)]
#[uniffi(flat_error)]
#[non_exhaustive]
pub enum ResubError {
    /// The server refused the credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// The server refused access to a channel.
    #[error("{0}")]
    Forbidden(String),
    /// The server rejected the request as malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The TLS handshake failed.
    #[error("{0}")]
    Tls(String),
    /// The configured number of attempts failed in a row.
    #[error("{0}")]
    RetriesExhausted(String),
    /// The client is closed.
    #[error("{0}")]
    Closed(String),
    /// A subscription to this channel exists already.
    #[error("{0}")]
    AlreadySubscribed(String),
    /// A channel name, cursor, event type or option is malformed.
    #[error("{0}")]
    InvalidArgument(String),
    /// The server URL cannot be used.
    #[error("{0}")]
    InvalidUrl(String),
    /// The server refused a publish.
    #[error("{0}")]
    PublishRejected(String),
    /// The publish outbox is full.
    #[error("{0}")]
    PublishQueueFull(String),
    /// The server sent a frame over the limit.
    #[error("{0}")]
    FrameTooLarge(String),
    /// The presence client id or data cannot be used.
    #[error("{0}")]
    InvalidClientId(String),
    /// A request could not be completed now; later may work.
    #[error("{0}")]
    Unavailable(String),
    /// The cursor store failed.
    #[error("{0}")]
    CursorStore(String),
    /// The platform's random number generator failed.
    #[error("{0}")]
    NoRandomness(String),
    /// An error this version of the bindings has no variant for.
    #[error("{0}")]
    Other(String),
}

impl ResubError {
    /// The stable code (`Error::code` of the Rust client).
    pub fn code(&self) -> &'static str {
        match self {
            ResubError::Unauthorized(_) => "unauthorized",
            ResubError::Forbidden(_) => "forbidden",
            ResubError::BadRequest(_) => "bad_request",
            ResubError::Tls(_) => "tls",
            ResubError::RetriesExhausted(_) => "retries_exhausted",
            ResubError::Closed(_) => "closed",
            ResubError::AlreadySubscribed(_) => "already_subscribed",
            ResubError::InvalidArgument(_) => "invalid_argument",
            ResubError::InvalidUrl(_) => "invalid_url",
            ResubError::PublishRejected(_) => "publish_rejected",
            ResubError::PublishQueueFull(_) => "publish_queue_full",
            ResubError::FrameTooLarge(_) => "frame_too_large",
            ResubError::InvalidClientId(_) => "invalid_client_id",
            ResubError::Unavailable(_) => "unavailable",
            ResubError::CursorStore(_) => "cursor_store",
            ResubError::NoRandomness(_) => "no_randomness",
            ResubError::Other(_) => "other",
        }
    }
}

impl From<resub::Error> for ResubError {
    fn from(e: resub::Error) -> Self {
        let message = e.to_string();
        match e.code() {
            "unauthorized" => ResubError::Unauthorized(message),
            "forbidden" => ResubError::Forbidden(message),
            "bad_request" => ResubError::BadRequest(message),
            "tls" => ResubError::Tls(message),
            "retries_exhausted" => ResubError::RetriesExhausted(message),
            "closed" => ResubError::Closed(message),
            "already_subscribed" => ResubError::AlreadySubscribed(message),
            "invalid_argument" => ResubError::InvalidArgument(message),
            "invalid_url" => ResubError::InvalidUrl(message),
            "publish_rejected" => ResubError::PublishRejected(message),
            "publish_queue_full" => ResubError::PublishQueueFull(message),
            "frame_too_large" => ResubError::FrameTooLarge(message),
            "invalid_client_id" => ResubError::InvalidClientId(message),
            "unavailable" => ResubError::Unavailable(message),
            "cursor_store" => ResubError::CursorStore(message),
            "no_randomness" => ResubError::NoRandomness(message),
            _ => ResubError::Other(message),
        }
    }
}

/// What a callback returns when it fails (a foreign exception); the client
/// logs it (through the log listener, see `set_log_listener`) and carries on.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum ListenerError {
    /// The callback raised.
    #[error("callback failed: {reason}")]
    Failed {
        /// What it said.
        reason: String,
    },
}

impl From<uniffi::UnexpectedUniFFICallbackError> for ListenerError {
    fn from(e: uniffi::UnexpectedUniFFICallbackError) -> Self {
        ListenerError::Failed { reason: e.reason }
    }
}

/// A transport, as `tail --transport` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum TransportKind {
    /// WebSocket.
    Ws,
    /// Server-Sent Events.
    Sse,
    /// Long polling.
    Poll,
}

impl From<TransportKind> for Transport {
    fn from(t: TransportKind) -> Self {
        match t {
            TransportKind::Ws => Transport::WebSocket,
            TransportKind::Sse => Transport::Sse,
            TransportKind::Poll => Transport::LongPoll,
        }
    }
}

impl From<Transport> for TransportKind {
    fn from(t: Transport) -> Self {
        match t {
            Transport::Sse => TransportKind::Sse,
            Transport::LongPoll => TransportKind::Poll,
            _ => TransportKind::Ws,
        }
    }
}

/// Client configuration. Only `url` is required: every other field left
/// out (`None`) takes the Rust client's default (`resub::core::Config`), so
/// `ClientConfig(url = "https://…")` is a production setting. Durations
/// are milliseconds.
#[derive(Debug, Clone, uniffi::Record)]
pub struct ClientConfig {
    /// The server's base URL (`https://host:port/prefix`).
    pub url: String,
    /// Transports, most preferred first (default: ws, sse, poll). An empty
    /// list is refused with `invalid_argument`.
    #[uniffi(default)]
    pub transports: Option<Vec<TransportKind>>,
    /// Upper bound of the first reconnect delay (default 500).
    #[uniffi(default)]
    pub backoff_base_ms: Option<i64>,
    /// Growth per consecutive failure (default 2).
    #[uniffi(default)]
    pub backoff_factor: Option<f64>,
    /// Largest upper bound of a delay (default 20,000).
    #[uniffi(default)]
    pub backoff_cap_ms: Option<i64>,
    /// Give up after this many consecutive failures (default: never).
    #[uniffi(default)]
    pub max_attempts: Option<u32>,
    /// A connection must stay up this long before the failure count resets
    /// (default 5,000).
    #[uniffi(default)]
    pub healthy_after_ms: Option<i64>,
    /// How long an attempt may take until the server's welcome (default 10,000).
    #[uniffi(default)]
    pub open_timeout_ms: Option<i64>,
    /// Silence after which a connection is dead (default: twice the
    /// server's heartbeat).
    #[uniffi(default)]
    pub heartbeat_timeout_ms: Option<i64>,
    /// How often to try a better transport while on a fallback (default
    /// 60,000); 0 never tries.
    #[uniffi(default)]
    pub upgrade_probe_ms: Option<i64>,
    /// How long the server may hold a long poll (default 25,000).
    #[uniffi(default)]
    pub poll_hold_ms: Option<i64>,
    /// Most publishes waiting for a connection or an ack (default 1,024).
    #[uniffi(default)]
    pub max_pending_publishes: Option<u32>,
    /// Most bytes those publishes may hold (default 4 MiB).
    #[uniffi(default)]
    pub max_pending_publish_bytes: Option<u32>,
    /// Largest frame accepted from the server (default 1 MiB).
    #[uniffi(default)]
    pub max_frame_bytes: Option<u32>,
    /// Sent as `Authorization: Bearer <token>`.
    #[uniffi(default)]
    pub token: Option<String>,
    /// Further servers sharing the same channels, tried in turn when the
    /// one in use fails.
    #[uniffi(default)]
    pub endpoints: Option<Vec<String>>,
    /// Take part in presence under this client id.
    #[uniffi(default)]
    pub client_id: Option<String>,
    /// Presence data shown with the client id (at most 1024 bytes).
    #[uniffi(default)]
    pub presence_data: Option<String>,
    /// Keep cursors in this directory (one small file per channel, written
    /// atomically), so that `subscribe` without `from` resumes after the
    /// last event a previous run took; e.g. the app's files directory.
    #[uniffi(default)]
    pub cursor_dir: Option<String>,
}

/// One event, with `data` exactly as published.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct EventMessage {
    /// The channel.
    pub channel: String,
    /// Its id: pass it as `from` to resume after it.
    pub id: String,
    /// The event type (`message` when none was given).
    pub event: String,
    /// The payload.
    pub data: String,
}

/// A member of a channel's presence.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct PresenceMember {
    /// Its client id.
    pub client_id: String,
    /// Its presence data; `""` if none.
    pub data: String,
}

/// An error carried in a state.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct ErrorInfo {
    /// The stable code.
    pub code: String,
    /// The message.
    pub message: String,
}

/// Why the client is not connected: the core's stable reason codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum DisconnectCode {
    /// No connection could be made.
    ConnectFailed,
    /// The server answered the opening request with an HTTP status.
    Refused,
    /// This transport is not available here.
    Unsupported,
    /// The server asked to come back later (429, 503, 4429, 4503).
    Unavailable,
    /// The connection broke without a close handshake.
    Lost,
    /// The server closed the connection.
    ServerClosed,
    /// Nothing arrived within the heartbeat timeout (or a wake's probe).
    HeartbeatTimeout,
    /// The connection did not open and greet in time.
    OpenTimeout,
    /// The server broke the protocol.
    Protocol,
    /// The TLS handshake failed.
    Tls,
    /// The host reports no network.
    Offline,
    /// The token provider failed or did not answer.
    NoCredentials,
}

impl DisconnectCode {
    fn of(reason: &resub::DisconnectReason) -> Self {
        match reason.code() {
            "connect_failed" => DisconnectCode::ConnectFailed,
            "refused" => DisconnectCode::Refused,
            "unsupported" => DisconnectCode::Unsupported,
            "unavailable" => DisconnectCode::Unavailable,
            "server_closed" => DisconnectCode::ServerClosed,
            "heartbeat_timeout" => DisconnectCode::HeartbeatTimeout,
            "open_timeout" => DisconnectCode::OpenTimeout,
            "protocol" => DisconnectCode::Protocol,
            "tls" => DisconnectCode::Tls,
            "offline" => DisconnectCode::Offline,
            "no_credentials" => DisconnectCode::NoCredentials,
            _ => DisconnectCode::Lost,
        }
    }
}

/// The connection state.
#[derive(Debug, Clone, PartialEq, uniffi::Enum)]
pub enum State {
    /// An attempt is under way.
    Connecting {
        /// The transport tried.
        transport: TransportKind,
        /// Consecutive failures before it.
        attempt: u32,
        /// The server tried (base URL).
        endpoint: String,
    },
    /// Connected.
    Connected {
        /// The transport in use.
        transport: TransportKind,
        /// The more preferred transport given up, if any.
        fallback_from: Option<TransportKind>,
        /// Why it was given up (its code).
        fallback_reason: Option<DisconnectCode>,
        /// The server in use (base URL).
        endpoint: String,
    },
    /// Not connected; the next attempt is scheduled.
    Disconnected {
        /// Why, as a stable code.
        reason: DisconnectCode,
        /// Why, for people (the provider's message for `NoCredentials`, …).
        detail: String,
        /// Consecutive failures.
        attempt: u32,
        /// Delay until the next attempt.
        retry_in_ms: i64,
    },
    /// Stopped for good.
    Closed {
        /// The error that stopped it, if one did.
        error: Option<ErrorInfo>,
    },
}

impl From<ConnectionState> for State {
    fn from(s: ConnectionState) -> Self {
        match s {
            ConnectionState::Connecting { transport, attempt, endpoint } => {
                State::Connecting { transport: transport.into(), attempt, endpoint }
            }
            ConnectionState::Connected { transport, fallback, endpoint } => State::Connected {
                transport: transport.into(),
                fallback_from: fallback.as_ref().map(|f| f.from.into()),
                fallback_reason: fallback.map(|f| DisconnectCode::of(&f.reason)),
                endpoint,
            },
            ConnectionState::Disconnected { reason, attempt, retry_in, .. } => State::Disconnected {
                reason: DisconnectCode::of(&reason),
                detail: reason.to_string(),
                attempt,
                retry_in_ms: i64::try_from(retry_in.as_millis()).unwrap_or(i64::MAX),
            },
            ConnectionState::Closed { error } => {
                State::Closed { error: error.map(|e| ErrorInfo { code: e.code().to_owned(), message: e.to_string() }) }
            }
            _ => State::Closed { error: None },
        }
    }
}

/// The client's counters (as `Client::stats` in Rust, `client.stats` in JS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Record)]
pub struct Stats {
    /// Events delivered.
    pub delivered: u64,
    /// Of those, events replayed from history on (re)subscribe.
    pub replayed: u64,
    /// Events received again and dropped.
    pub duplicates: u64,
    /// Resets delivered.
    pub resets: u64,
    /// Connections opened and greeted.
    pub connections: u64,
    /// Connections or attempts that ended in failure.
    pub failures: u64,
}

impl From<resub::Stats> for Stats {
    fn from(s: resub::Stats) -> Self {
        Stats {
            delivered: s.delivered,
            replayed: s.replayed,
            duplicates: s.duplicates,
            resets: s.resets,
            connections: s.connections,
            failures: s.failures,
        }
    }
}

/// A duration option in milliseconds: negative values are refused.
pub(crate) fn millis(name: &str, ms: i64) -> Result<std::time::Duration, ResubError> {
    u64::try_from(ms)
        .map(std::time::Duration::from_millis)
        .map_err(|_| ResubError::from(resub::Error::InvalidArgument(format!("{name} must not be negative (got {ms})"))))
}
