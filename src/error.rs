//! The error type shared by every layer.

use crate::core::DisconnectReason;
use crate::protocol::ParseError;

/// Why an operation failed, or why the client stopped.
///
/// Every variant has a stable machine-readable [`code`](Error::code), which the
/// JavaScript and FFI bindings expose as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server refused the credentials (HTTP 401 or close code 4401); retrying would not help.
    #[error("the server refused the credentials")]
    Unauthorized,
    /// The server refused access to a channel.
    #[error("access to channel '{channel}' refused: {message}")]
    Forbidden {
        /// The channel.
        channel: String,
        /// The server's explanation.
        message: String,
    },
    /// The server rejected a request as malformed; retrying the same request would not help.
    #[error("the server rejected the request: {0}")]
    BadRequest(String),
    /// The TLS handshake failed (for example, a certificate did not verify).
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    /// The configured number of consecutive failed attempts was reached.
    #[error("gave up after {attempts} consecutive failed attempts (last: {last})")]
    RetriesExhausted {
        /// How many attempts failed in a row.
        attempts: u32,
        /// The last failure.
        last: DisconnectReason,
    },
    /// The client was closed by the application.
    #[error("the client is closed")]
    Closed,
    /// A subscription to this channel already exists on this client.
    #[error("already subscribed to '{0}'")]
    AlreadySubscribed(String),
    /// A channel name, cursor or event type is malformed.
    #[error(transparent)]
    Parse(#[from] ParseError),
    /// An option cannot be used (an empty list of transports, …).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The server URL cannot be used.
    #[error("invalid server URL '{url}': {why}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The server refused a publish.
    #[error("publish refused ({code}): {message}")]
    PublishRejected {
        /// The server's error code.
        code: String,
        /// The server's explanation.
        message: String,
    },
    #[cfg(not(target_arch = "wasm32"))]
    /// An SSE server answered 204 No Content: it has nothing to stream, and
    /// asks not to reconnect.
    #[error("the server has nothing to stream (HTTP 204)")]
    EndOfStream,
    #[cfg(not(target_arch = "wasm32"))]
    /// A plain SSE server answered with a status other than 200, which the
    /// SSE specification treats as final.
    #[error("the server answered HTTP {status}")]
    HttpStatus {
        /// The status.
        status: u16,
    },
    #[cfg(not(target_arch = "wasm32"))]
    /// A plain SSE server answered with a content type other than
    /// `text/event-stream`.
    #[error("not an event stream: {0}")]
    UnexpectedContentType(String),
    /// The publish outbox is full: too many publishes, or too many bytes of
    /// them, are waiting for a connection or an ack. Nothing was queued;
    /// publish again once some are acknowledged.
    #[error("publish outbox full ({waiting} waiting, {bytes} bytes)")]
    PublishQueueFull {
        /// Publishes waiting.
        waiting: usize,
        /// Their data and event types, in bytes.
        bytes: usize,
    },
    /// A request could not be completed now (the server was unreachable,
    /// answered `5xx`, or answered something unexpected); trying again later
    /// may succeed.
    #[error("request failed: {0}")]
    Unavailable(String),
    /// The cursor store failed: a cursor could not be loaded at subscribe,
    /// or saved as an event was handed out (the subscription then ends,
    /// before that event; its stored cursor is still the previous one).
    #[cfg(not(target_arch = "wasm32"))]
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The client id (or its presence data) given for presence cannot be
    /// used: an id is 1–128 characters from `A-Z a-z 0-9 _ . : -`, the data
    /// at most 1024 bytes.
    #[error("invalid client id for presence: {0}")]
    InvalidClientId(String),
    /// The platform's random number generator failed, so the client could
    /// not draw the idempotency keys that keep its publishes apart from
    /// other clients'.
    #[error("no randomness from the platform: {0}")]
    NoRandomness(String),
    /// The server sent a frame larger than the configured limit
    /// (`max_frame_bytes`). Resuming would receive the same frame again, so
    /// the client stops rather than retry forever; raise the limit.
    #[error("the server sent a frame over the {limit}-byte limit")]
    FrameTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
}

impl Error {
    /// A stable, machine-readable name for the error (`unauthorized`,
    /// `forbidden`, `retries_exhausted`, …).
    pub fn code(&self) -> &'static str {
        match self {
            Error::Unauthorized => "unauthorized",
            Error::Forbidden { .. } => "forbidden",
            Error::BadRequest(_) => "bad_request",
            Error::Tls(_) => "tls",
            Error::RetriesExhausted { .. } => "retries_exhausted",
            Error::Closed => "closed",
            Error::AlreadySubscribed(_) => "already_subscribed",
            Error::Parse(_) | Error::InvalidArgument(_) => "invalid_argument",
            Error::InvalidUrl { .. } => "invalid_url",
            Error::PublishRejected { .. } => "publish_rejected",
            Error::PublishQueueFull { .. } => "publish_queue_full",
            #[cfg(not(target_arch = "wasm32"))]
            Error::EndOfStream => "end_of_stream",
            #[cfg(not(target_arch = "wasm32"))]
            Error::HttpStatus { .. } => "http_status",
            #[cfg(not(target_arch = "wasm32"))]
            Error::UnexpectedContentType(_) => "unexpected_content_type",
            Error::FrameTooLarge { .. } => "frame_too_large",
            Error::NoRandomness(_) => "no_randomness",
            Error::InvalidClientId(_) => "invalid_client_id",
            Error::Unavailable(_) => "unavailable",
            #[cfg(not(target_arch = "wasm32"))]
            Error::Store(_) => "cursor_store",
        }
    }
}
