//! A sans-IO session for plain SSE endpoints: any `text/event-stream`
//! server, with no knowledge of the resub protocol.
//!
//! It follows the WHATWG EventSource processing model: reconnect after the
//! stream ends or the network fails, sending `Last-Event-ID`; honour `retry:`;
//! stop on HTTP 204, on any other status than 200, and on a content type other
//! than `text/event-stream`. On top of that it backs off with full jitter
//! (never sooner than the server's `retry:` time) and, if configured, treats a
//! silent stream as dead. Ids are opaque: the server alone knows whether it
//! replays from them, so there is no gap detection here.

use std::collections::VecDeque;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::SmallRng;

use super::{Config, ConnId, ConnectionState, DisconnectReason, Transport, TransportError};
use crate::protocol::sse::SseItem;
use crate::{Error, Instant};

/// One event of a plain SSE stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainEvent {
    /// The `id` field of this event, if it had one.
    pub id: Option<String>,
    /// The event type (`message` by default).
    pub event: String,
    /// The data lines, joined with LF.
    pub data: String,
}

/// What the plain session asks the driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlainOutput {
    /// Open the stream, with `Last-Event-ID` if given.
    Connect {
        /// The attempt's id.
        conn: ConnId,
        /// The stream's URL.
        url: String,
        /// The value for the `Last-Event-ID` header.
        last_event_id: Option<String>,
    },
    /// Close the stream.
    Disconnect {
        /// The connection.
        conn: ConnId,
    },
    /// Hand an event to the application.
    Deliver(PlainEvent),
    /// The connection state changed.
    State(ConnectionState),
}

/// What happened on the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlainInput {
    /// The server answered 200 with `text/event-stream`.
    Opened {
        /// The connection.
        conn: ConnId,
    },
    /// The parser produced an item.
    Item {
        /// The connection.
        conn: ConnId,
        /// The item.
        item: SseItem,
    },
    /// The attempt failed or the stream ended.
    Closed {
        /// The connection.
        conn: ConnId,
        /// How.
        error: TransportError,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Conn {
    Idle,
    Opening(ConnId),
    Open(ConnId),
    Closed,
}

/// The plain SSE session.
#[derive(Debug)]
pub struct PlainSession {
    config: Config,
    url: String,
    rng: SmallRng,
    conn: Conn,
    next_conn: u64,
    failures: u32,
    opened_at: Option<Instant>,
    last_event_id: String,
    retry: Option<Duration>,
    reconnect_at: Option<Instant>,
    deadline: Option<Instant>,
    out: VecDeque<PlainOutput>,
}

impl PlainSession {
    /// Starts a session for the stream at `url` (http or https), resuming
    /// after `last_event_id` if given; asks for the first connection at once.
    pub fn new(
        config: Config,
        url: &str,
        last_event_id: Option<String>,
        seed: u64,
        now: Instant,
    ) -> Result<Self, Error> {
        let lower = url.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://")) || url.len() <= "http://".len() {
            return Err(Error::InvalidUrl { url: url.to_owned(), why: "an SSE URL starts with http:// or https://" });
        }
        let mut s = Self {
            config,
            url: url.to_owned(),
            rng: SmallRng::seed_from_u64(seed),
            conn: Conn::Idle,
            next_conn: 0,
            failures: 0,
            opened_at: None,
            last_event_id: last_event_id.unwrap_or_default(),
            retry: None,
            reconnect_at: None,
            deadline: None,
            out: VecDeque::new(),
        };
        s.connect(now);
        Ok(s)
    }

    /// The next thing to do; `None` when there is nothing left.
    pub fn poll_output(&mut self) -> Option<PlainOutput> {
        self.out.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.reconnect_at, self.deadline].into_iter().flatten().min()
    }

    /// Whether the session has stopped for good.
    pub fn is_closed(&self) -> bool {
        self.conn == Conn::Closed
    }

    /// The last event id seen (sent as `Last-Event-ID` on reconnect).
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// Stops the session.
    pub fn close(&mut self) {
        self.stop(None);
    }

    /// Feeds what happened on the stream.
    pub fn handle_input(&mut self, input: PlainInput, now: Instant) {
        match input {
            PlainInput::Opened { conn } if self.conn == Conn::Opening(conn) => {
                self.conn = Conn::Open(conn);
                self.opened_at = Some(now);
                self.deadline = self.config.heartbeat_timeout.map(|t| now + t);
                self.out.push_back(PlainOutput::State(ConnectionState::Connected {
                    transport: Transport::Sse,
                    fallback: None,
                    endpoint: self.url.clone(),
                }));
            }
            PlainInput::Item { conn, item } if self.conn == Conn::Open(conn) => {
                self.deadline = self.config.heartbeat_timeout.map(|t| now + t);
                match item {
                    SseItem::Event(ev) => {
                        self.last_event_id = ev.last_event_id;
                        self.out.push_back(PlainOutput::Deliver(PlainEvent {
                            id: ev.id,
                            event: ev.event,
                            data: ev.data,
                        }));
                    }
                    SseItem::Retry(ms) => self.retry = Some(Duration::from_millis(ms.min(3_600_000))),
                    SseItem::Comment => {}
                }
            }
            PlainInput::Closed { conn, error } if matches!(self.conn, Conn::Opening(c) | Conn::Open(c) if c == conn) => {
                self.fail(error, now);
            }
            _ => {}
        }
    }

    /// Fires what is due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.deadline.is_some_and(|d| d <= now) {
            self.deadline = None;
            let error = match self.conn {
                Conn::Opening(_) => TransportError::Lost("open timeout".into()),
                _ => TransportError::Lost("silent for longer than the heartbeat timeout".into()),
            };
            self.fail(error, now);
        }
        if self.reconnect_at.is_some_and(|t| t <= now) {
            self.reconnect_at = None;
            if self.conn == Conn::Idle {
                self.connect(now);
            }
        }
    }

    fn connect(&mut self, now: Instant) {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.conn = Conn::Opening(conn);
        self.deadline = Some(now + self.config.open_timeout);
        let attempt = self.failures;
        self.out.push_back(PlainOutput::State(ConnectionState::Connecting {
            transport: Transport::Sse,
            attempt,
            endpoint: self.url.clone(),
        }));
        let last_event_id = Some(self.last_event_id.clone()).filter(|s| !s.is_empty());
        self.out.push_back(PlainOutput::Connect { conn, url: self.url.clone(), last_event_id });
    }

    fn fail(&mut self, error: TransportError, now: Instant) {
        let (Conn::Opening(conn) | Conn::Open(conn)) = self.conn else {
            return;
        };
        self.out.push_back(PlainOutput::Disconnect { conn });
        self.deadline = None;
        let (reason, stop) = match error {
            TransportError::Tls(e) => (DisconnectReason::Tls(e.clone()), Some(Error::Tls(e))),
            TransportError::Status { status: 204, .. } => {
                (DisconnectReason::Refused { status: 204 }, Some(Error::EndOfStream))
            }
            // The EventSource model fails the connection for good on any
            // other status, and on any other content type.
            TransportError::Status { status, .. } => {
                (DisconnectReason::Refused { status }, Some(Error::HttpStatus { status }))
            }
            TransportError::Unsupported(e) => {
                (DisconnectReason::Unsupported(e.clone()), Some(Error::UnexpectedContentType(e)))
            }
            TransportError::Connect(e) | TransportError::OpenFailed(e) => (DisconnectReason::ConnectFailed(e), None),
            TransportError::Lost(e) => (DisconnectReason::Lost(e), None),
            TransportError::NoCredentials(e) => (DisconnectReason::NoCredentials(e), None),
            TransportError::Completed => (DisconnectReason::Lost("stream ended".into()), None),
            TransportError::Closed { code, reason } => (DisconnectReason::ServerClosed { code, reason }, None),
            // Reconnecting with the same Last-Event-ID would receive it again.
            TransportError::TooLarge { limit } => (
                DisconnectReason::Protocol(format!("event over the {limit}-byte limit")),
                Some(Error::FrameTooLarge { limit }),
            ),
        };
        if let Some(e) = stop {
            return self.stop(Some(e));
        }
        let healthy =
            self.opened_at.take().is_some_and(|t| now.saturating_duration_since(t) >= self.config.healthy_after);
        if healthy {
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        if self.config.backoff.max_attempts.is_some_and(|m| self.failures >= m) {
            let attempts = self.failures;
            return self.stop(Some(Error::RetriesExhausted { attempts, last: reason }));
        }
        // The server's reconnection time is a floor; backoff grows above it.
        let delay = self.config.backoff.delay(self.failures, &mut self.rng).max(self.retry.unwrap_or_default());
        let retry_at = now + delay;
        self.conn = Conn::Idle;
        self.reconnect_at = Some(retry_at);
        self.out.push_back(PlainOutput::State(ConnectionState::Disconnected {
            reason,
            attempt: self.failures,
            retry_at,
            retry_in: delay,
        }));
    }

    fn stop(&mut self, error: Option<Error>) {
        match self.conn {
            Conn::Closed => return,
            Conn::Opening(conn) | Conn::Open(conn) => self.out.push_back(PlainOutput::Disconnect { conn }),
            Conn::Idle => {}
        }
        self.conn = Conn::Closed;
        self.reconnect_at = None;
        self.deadline = None;
        self.out.push_back(PlainOutput::State(ConnectionState::Closed { error }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::sse::SseEvent;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn session() -> (PlainSession, Instant) {
        let now = Instant::now();
        (PlainSession::new(Config::default(), "http://h/events", None, 3, now).unwrap(), now)
    }

    fn drain(s: &mut PlainSession) -> Vec<PlainOutput> {
        std::iter::from_fn(|| s.poll_output()).collect()
    }

    fn event(id: Option<&str>, last: &str, data: &str) -> SseItem {
        SseItem::Event(SseEvent {
            id: id.map(Into::into),
            last_event_id: last.into(),
            event: "message".into(),
            data: data.into(),
        })
    }

    #[test]
    fn reconnects_with_last_event_id_no_sooner_than_retry() {
        let (mut s, now) = session();
        drain(&mut s);
        let conn = ConnId(0);
        s.handle_input(PlainInput::Opened { conn }, now);
        s.handle_input(PlainInput::Item { conn, item: SseItem::Retry(3000) }, now);
        s.handle_input(PlainInput::Item { conn, item: event(Some("a7"), "a7", "x") }, now);
        s.handle_input(PlainInput::Item { conn, item: event(None, "a7", "y") }, now);
        let out = drain(&mut s);
        assert!(out.contains(&PlainOutput::Deliver(PlainEvent {
            id: None,
            event: "message".into(),
            data: "y".into()
        })));
        s.handle_input(PlainInput::Closed { conn, error: TransportError::Lost("eof".into()) }, now);
        assert!(s.poll_timeout().unwrap() >= now + Duration::from_millis(3000));
        s.handle_timeout(s.poll_timeout().unwrap());
        let out = drain(&mut s);
        assert!(out.contains(&PlainOutput::Connect {
            conn: ConnId(1),
            url: "http://h/events".into(),
            last_event_id: Some("a7".into())
        }));
    }

    #[test]
    fn status_204_stops_and_other_statuses_fail_for_good() {
        for (status, want) in [(204, Error::EndOfStream), (500, Error::HttpStatus { status: 500 })] {
            let (mut s, now) = session();
            s.handle_input(
                PlainInput::Closed { conn: ConnId(0), error: TransportError::Status { status, retry_after: None } },
                now,
            );
            assert!(s.is_closed());
            assert_eq!(drain(&mut s).last(), Some(&PlainOutput::State(ConnectionState::Closed { error: Some(want) })));
        }
        let (mut s, now) = session();
        s.handle_input(
            PlainInput::Closed { conn: ConnId(0), error: TransportError::Unsupported("text/html".into()) },
            now,
        );
        assert!(matches!(
            drain(&mut s).last(),
            Some(PlainOutput::State(ConnectionState::Closed { error: Some(Error::UnexpectedContentType(_)) }))
        ));
    }

    #[test]
    fn network_failures_are_retried_with_growing_backoff() {
        let (mut s, mut now) = session();
        for n in 1..=5 {
            let conn = ConnId(n - 1);
            s.handle_input(PlainInput::Closed { conn, error: TransportError::Connect("refused".into()) }, now);
            let due = s.poll_timeout().unwrap();
            assert!(due <= now + Config::default().backoff.ceiling(n as u32));
            now = due;
            s.handle_timeout(now);
        }
        assert!(!s.is_closed());
    }
}
