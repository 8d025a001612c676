//! The session state machine.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use super::{
    Config, ConnectionState, DisconnectReason, Event, Message, ResetReason, Stats, Transport,
    TransportError,
};
use crate::protocol::{
    ClientFrame, EventId, Outcome, ServerFrame, WireResetReason, validate_channel,
};
use crate::{Error, Instant};

/// Longest delay a server hint (Retry-After, heartbeat interval) may impose;
/// larger values are clamped so that hostile input cannot overflow a deadline.
const MAX_HINT: Duration = Duration::from_secs(3600);

/// Identifies one connection attempt. Inputs about an older attempt are ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// What the session asks the driver (and the application) to do.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Output {
    /// Open a connection; report [`Input::Opened`], [`Input::Received`] and
    /// [`Input::Closed`] with this id.
    Connect {
        /// The attempt's id.
        conn: ConnId,
        /// The transport to use.
        transport: Transport,
        /// Where to connect.
        url: String,
    },
    /// Send one text frame on the connection.
    Send {
        /// The connection.
        conn: ConnId,
        /// The encoded frame.
        text: String,
    },
    /// Close the connection and report nothing more about it.
    Disconnect {
        /// The connection.
        conn: ConnId,
    },
    /// Hand a message to the subscription of `channel`.
    Deliver {
        /// The channel.
        channel: String,
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
    /// The connection opened.
    Opened {
        /// The connection.
        conn: ConnId,
    },
    /// A text frame arrived.
    Received {
        /// The connection.
        conn: ConnId,
        /// The frame.
        text: String,
    },
    /// The attempt failed or the connection ended.
    Closed {
        /// The connection.
        conn: ConnId,
        /// How.
        error: TransportError,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// Start the next connection attempt.
    Reconnect,
    /// The attempt must be greeted by then.
    Open,
    /// Something must arrive by then.
    Heartbeat,
}

const TIMERS: [Timer; 3] = [Timer::Reconnect, Timer::Open, Timer::Heartbeat];

#[derive(Debug, Default)]
struct TimerTable([Option<Instant>; 3]);

impl TimerTable {
    fn set(&mut self, t: Timer, at: Instant) {
        self.0[t as usize] = Some(at);
    }
    fn stop(&mut self, t: Timer) {
        self.0[t as usize] = None;
    }
    fn next(&self) -> Option<Instant> {
        self.0.iter().flatten().min().copied()
    }
    fn expired(&self, t: Timer, now: Instant) -> bool {
        self.0[t as usize].is_some_and(|at| at <= now)
    }
}

#[derive(Debug)]
enum Conn {
    /// Waiting for the reconnect timer.
    Idle,
    /// An attempt is under way (not yet opened).
    Opening { id: ConnId },
    /// Open; greeted once `welcomed_at` is set.
    Open {
        id: ConnId,
        welcomed_at: Option<Instant>,
        heartbeat: Duration,
    },
    /// Stopped for good.
    Closed,
}

#[derive(Debug)]
struct Sub {
    /// The id of the last event delivered (or the position after a reset).
    cursor: Option<EventId>,
    /// The server confirmed the subscription on the current connection.
    confirmed: bool,
    /// Events up to this sequence number in the cursor's epoch are replays.
    replay_until: u64,
}

#[derive(Debug)]
struct PendingPublish {
    token: u64,
    key: String,
    text: String,
}

/// What to do after a connection failed.
enum Decision {
    Retry { hint: Option<Duration> },
    Stop(Error),
}

/// The resub session: subscriptions, cursors, connection policy.
///
/// See the [module documentation](crate::core) for the run-loop contract.
#[derive(Debug)]
pub struct Session {
    config: Config,
    url: String,
    rng: SmallRng,
    key_prefix: u64,
    next_key: u64,
    conn: Conn,
    next_conn: u64,
    failures: u32,
    subs: BTreeMap<String, Sub>,
    publishes: VecDeque<PendingPublish>,
    out: VecDeque<Output>,
    timers: TimerTable,
    stats: Stats,
}

impl Session {
    /// Creates a session for the server at `url` and asks for the first
    /// connection at once.
    ///
    /// `url` is the server's base URL (`http://host:port/prefix`, `https://…`);
    /// the WebSocket endpoint is derived from it as PROTOCOL.md says.
    /// A `ws://` or `wss://` URL is used as the WebSocket endpoint as is.
    /// `seed` seeds the generator used for jitter and idempotency keys.
    pub fn new(config: Config, url: &str, seed: u64, now: Instant) -> Result<Self, Error> {
        let url = websocket_url(url)?;
        let mut rng = SmallRng::seed_from_u64(seed);
        let key_prefix = rng.random::<u64>();
        let mut s = Self {
            config,
            url,
            rng,
            key_prefix,
            next_key: 0,
            conn: Conn::Idle,
            next_conn: 0,
            failures: 0,
            subs: BTreeMap::new(),
            publishes: VecDeque::new(),
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

    /// Starts a subscription to `channel`, after `from` if given (else live).
    pub fn subscribe(&mut self, channel: &str, from: Option<EventId>) -> Result<(), Error> {
        validate_channel(channel)?;
        if self.is_closed() {
            return Err(Error::Closed);
        }
        if self.subs.contains_key(channel) {
            return Err(Error::AlreadySubscribed(channel.to_owned()));
        }
        self.subs.insert(
            channel.to_owned(),
            Sub {
                cursor: from,
                confirmed: false,
                replay_until: 0,
            },
        );
        if let Conn::Open { id, .. } = self.conn {
            self.send_subscribe(id, channel);
        }
        Ok(())
    }

    /// Ends the subscription to `channel` (nothing happens if there is none).
    pub fn unsubscribe(&mut self, channel: &str) {
        if self.subs.remove(channel).is_some()
            && let Conn::Open { id, .. } = self.conn
        {
            self.send(
                id,
                &ClientFrame::Unsubscribe {
                    channel: channel.to_owned(),
                },
            );
        }
    }

    /// Publishes `data` to `channel`; the result comes as
    /// [`Output::PublishDone`] with `token`. A publish made while disconnected
    /// waits for the next connection; one in flight when a connection drops is
    /// sent again with the same idempotency key, so it is applied once.
    pub fn publish(
        &mut self,
        token: u64,
        channel: &str,
        event: Option<String>,
        data: String,
    ) -> Result<(), Error> {
        validate_channel(channel)?;
        if self.is_closed() {
            return Err(Error::Closed);
        }
        if self.publishes.len() >= self.config.max_pending_publishes {
            return Err(Error::PublishQueueFull(self.publishes.len()));
        }
        let key = format!("{:016x}-{}", self.key_prefix, self.next_key);
        self.next_key += 1;
        let frame = ClientFrame::Publish {
            channel: channel.to_owned(),
            key: key.clone(),
            event,
            data,
        };
        let text = encode(&frame);
        if let Conn::Open { id, .. } = self.conn {
            self.out.push_back(Output::Send {
                conn: id,
                text: text.clone(),
            });
        }
        self.publishes
            .push_back(PendingPublish { token, key, text });
        Ok(())
    }

    /// Closes the session: the connection is closed, subscriptions end,
    /// waiting publishes fail with [`Error::Closed`].
    pub fn close(&mut self) {
        self.terminate(None);
    }

    /// Feeds what happened on a connection.
    pub fn handle_input(&mut self, input: Input, now: Instant) {
        match input {
            Input::Opened { conn } => self.on_opened(conn, now),
            Input::Received { conn, text } => {
                if self.current_open(conn) {
                    self.on_text(conn, &text, now);
                }
            }
            Input::Closed { conn, error } => {
                if self.current(conn) {
                    let (reason, decision) = classify(error);
                    self.fail(reason, decision, now);
                }
            }
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
                Timer::Reconnect => {
                    if matches!(self.conn, Conn::Idle) {
                        self.connect(now);
                    }
                }
                Timer::Open => {
                    self.fail(
                        DisconnectReason::OpenTimeout,
                        Decision::Retry { hint: None },
                        now,
                    );
                }
                Timer::Heartbeat => {
                    self.fail(
                        DisconnectReason::HeartbeatTimeout,
                        Decision::Retry { hint: None },
                        now,
                    );
                }
            }
        }
    }

    fn current(&self, conn: ConnId) -> bool {
        matches!(self.conn, Conn::Opening { id } | Conn::Open { id, .. } if id == conn)
    }

    fn current_open(&self, conn: ConnId) -> bool {
        matches!(self.conn, Conn::Open { id, .. } if id == conn)
    }

    fn connect(&mut self, now: Instant) {
        let id = ConnId(self.next_conn);
        self.next_conn += 1;
        self.conn = Conn::Opening { id };
        self.timers.set(Timer::Open, now + self.config.open_timeout);
        let transport = Transport::WebSocket;
        tracing::debug!(conn = id.0, %transport, url = %self.url, "connecting");
        self.out
            .push_back(Output::State(ConnectionState::Connecting {
                transport,
                attempt: self.failures,
            }));
        self.out.push_back(Output::Connect {
            conn: id,
            transport,
            url: self.url.clone(),
        });
    }

    fn on_opened(&mut self, conn: ConnId, now: Instant) {
        if !matches!(self.conn, Conn::Opening { id } if id == conn) {
            return;
        }
        // Until the welcome arrives, the open timer guards the connection.
        self.conn = Conn::Open {
            id: conn,
            welcomed_at: None,
            heartbeat: self.config.open_timeout,
        };
        let _ = now;
        let channels: Vec<String> = self.subs.keys().cloned().collect();
        for ch in channels {
            self.send_subscribe(conn, &ch);
        }
        for p in &self.publishes {
            self.out.push_back(Output::Send {
                conn,
                text: p.text.clone(),
            });
        }
    }

    fn send_subscribe(&mut self, conn: ConnId, channel: &str) {
        let Some(sub) = self.subs.get_mut(channel) else {
            return;
        };
        sub.confirmed = false;
        let cursor = sub.cursor.as_ref().map(EventId::to_string);
        self.send(
            conn,
            &ClientFrame::Subscribe {
                channel: channel.to_owned(),
                cursor,
            },
        );
    }

    fn send(&mut self, conn: ConnId, frame: &ClientFrame) {
        self.out.push_back(Output::Send {
            conn,
            text: encode(frame),
        });
    }

    fn on_text(&mut self, conn: ConnId, text: &str, now: Instant) {
        if text.len() > self.config.max_frame_bytes {
            let why = format!(
                "frame of {} bytes exceeds the limit of {}",
                text.len(),
                self.config.max_frame_bytes
            );
            return self.protocol_error(why, now);
        }
        let frame: ServerFrame = match serde_json::from_str(text) {
            Ok(f) => f,
            Err(e) => return self.protocol_error(format!("malformed frame: {e}"), now),
        };
        if let Conn::Open {
            heartbeat,
            welcomed_at: Some(_),
            ..
        } = self.conn
        {
            self.timers.set(Timer::Heartbeat, now + heartbeat);
        }
        match frame {
            ServerFrame::Welcome { heartbeat_ms } => self.on_welcome(conn, heartbeat_ms, now),
            _ if !matches!(
                self.conn,
                Conn::Open {
                    welcomed_at: Some(_),
                    ..
                }
            ) =>
            {
                self.protocol_error("frame before welcome".into(), now)
            }
            ServerFrame::Subscribed {
                channel,
                outcome,
                reason,
                head,
            } => self.on_subscribed(channel, outcome, reason, &head, now),
            ServerFrame::Event {
                channel,
                id,
                event,
                data,
            } => self.on_event(channel, &id, event, data, now),
            ServerFrame::Reset {
                channel,
                reason,
                head,
            } => self.on_reset(channel, reason, &head, now),
            ServerFrame::Ping => {}
            ServerFrame::Ack { key, id } => {
                if let Some(i) = self.publishes.iter().position(|p| p.key == key) {
                    let p = self.publishes.remove(i).expect("index from position");
                    self.out.push_back(Output::PublishDone {
                        token: p.token,
                        result: Ok(id),
                    });
                }
            }
            ServerFrame::Error {
                code,
                channel,
                key,
                message,
            } => self.on_error(code, channel, key, message, now),
            _ => tracing::debug!("ignoring unknown frame type"),
        }
    }

    fn on_welcome(&mut self, conn: ConnId, heartbeat_ms: u64, now: Instant) {
        let Conn::Open {
            welcomed_at,
            heartbeat,
            ..
        } = &mut self.conn
        else {
            return;
        };
        if welcomed_at.is_some() {
            return; // A second welcome changes nothing.
        }
        let interval =
            Duration::from_millis(heartbeat_ms).clamp(Duration::from_millis(10), MAX_HINT);
        *heartbeat = self.config.heartbeat_timeout.unwrap_or(interval * 2);
        *welcomed_at = Some(now);
        self.timers.stop(Timer::Open);
        self.timers.set(Timer::Heartbeat, now + *heartbeat);
        self.stats.connections += 1;
        tracing::debug!(conn = conn.0, heartbeat_ms, "connected");
        self.out
            .push_back(Output::State(ConnectionState::Connected {
                transport: Transport::WebSocket,
            }));
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
            return self.protocol_error(format!("bad head {head:?} for {channel:?}"), now);
        };
        let Some(sub) = self.subs.get_mut(&channel) else {
            return; // Unsubscribed meanwhile.
        };
        sub.confirmed = true;
        sub.replay_until = 0;
        let reset = match (outcome, sub.cursor.take()) {
            (Outcome::Resumed, Some(cursor)) => {
                if cursor.epoch() != head.epoch() || cursor.seq() > head.seq() {
                    sub.cursor = Some(cursor);
                    let why = format!(
                        "resumed {channel:?} with head {head} that does not follow the cursor"
                    );
                    return self.protocol_error(why, now);
                }
                sub.replay_until = head.seq();
                let after = cursor.to_string();
                sub.cursor = Some(cursor);
                self.out.push_back(Output::Deliver {
                    channel: channel.clone(),
                    message: Message::Resumed { channel, after },
                });
                return;
            }
            (Outcome::Live, None) => None,
            (Outcome::Resumed, None) => None,
            // A cursor was asked for and not honoured: the application must know.
            (Outcome::Live, Some(_)) => Some(ResetReason::UnknownCursor),
            (Outcome::Reset, _) => Some(reset_reason(
                reason.unwrap_or(WireResetReason::UnknownCursor),
            )),
        };
        sub.cursor = Some(head.clone());
        if let Some(reason) = reset {
            self.stats.resets += 1;
            let message = Message::Reset {
                channel: channel.clone(),
                reason,
                head: head.to_string(),
            };
            self.out.push_back(Output::Deliver { channel, message });
        }
    }

    fn on_event(
        &mut self,
        channel: String,
        id: &str,
        event: Option<String>,
        data: String,
        now: Instant,
    ) {
        let Ok(eid) = id.parse::<EventId>() else {
            return self.protocol_error(format!("bad event id {id:?}"), now);
        };
        let Some(sub) = self.subs.get_mut(&channel) else {
            tracing::debug!(%channel, "event for a channel not subscribed; ignored");
            return;
        };
        let Some(cursor) = sub.cursor.as_ref().filter(|_| sub.confirmed) else {
            return self
                .protocol_error(format!("event on {channel:?} before it was confirmed"), now);
        };
        if cursor.epoch() != eid.epoch() {
            // Only a reset may move a subscription to a new epoch.
            let why = format!(
                "event {eid} on {channel:?} is not of epoch {}",
                cursor.epoch()
            );
            return self.protocol_error(why, now);
        }
        if eid.seq() <= cursor.seq() {
            self.stats.duplicates += 1;
            return;
        }
        if eid.seq() != cursor.seq() + 1 {
            let why = format!("gap on {channel:?}: {eid} after {cursor}");
            return self.protocol_error(why, now);
        }
        if eid.seq() <= sub.replay_until {
            self.stats.replayed += 1;
        }
        self.stats.delivered += 1;
        sub.cursor = Some(eid);
        let message = Message::Event(Event {
            channel: channel.clone(),
            id: id.to_owned(),
            event,
            data,
        });
        self.out.push_back(Output::Deliver { channel, message });
    }

    fn on_reset(&mut self, channel: String, reason: WireResetReason, head: &str, now: Instant) {
        let Ok(head) = head.parse::<EventId>() else {
            return self.protocol_error(format!("bad head {head:?} for {channel:?}"), now);
        };
        let Some(sub) = self.subs.get_mut(&channel) else {
            return;
        };
        if !sub.confirmed {
            return self
                .protocol_error(format!("reset on {channel:?} before it was confirmed"), now);
        }
        sub.cursor = Some(head.clone());
        sub.replay_until = 0;
        self.stats.resets += 1;
        let message = Message::Reset {
            channel: channel.clone(),
            reason: reset_reason(reason),
            head: head.to_string(),
        };
        self.out.push_back(Output::Deliver { channel, message });
    }

    fn on_error(
        &mut self,
        code: String,
        channel: Option<String>,
        key: Option<String>,
        message: String,
        now: Instant,
    ) {
        if let Some(key) = key {
            if let Some(i) = self.publishes.iter().position(|p| p.key == key) {
                let p = self.publishes.remove(i).expect("index from position");
                let result = Err(Error::PublishRejected { code, message });
                self.out.push_back(Output::PublishDone {
                    token: p.token,
                    result,
                });
            }
            return;
        }
        if let Some(channel) = channel {
            if self.subs.remove(&channel).is_some() {
                let error = match code.as_str() {
                    "forbidden" | "unauthorized" => Error::Forbidden {
                        channel: channel.clone(),
                        message,
                    },
                    _ => Error::BadRequest(format!("{code}: {message}")),
                };
                self.out
                    .push_back(Output::SubscriptionEnded { channel, error });
            }
            return;
        }
        let decision = match code.as_str() {
            "unauthorized" => Decision::Stop(Error::Unauthorized),
            "bad_request" => Decision::Stop(Error::BadRequest(message.clone())),
            _ => Decision::Retry { hint: None },
        };
        self.fail(
            DisconnectReason::ServerClosed {
                code: 0,
                reason: format!("{code}: {message}"),
            },
            decision,
            now,
        );
    }

    fn protocol_error(&mut self, why: String, now: Instant) {
        tracing::warn!(%why, "protocol error; reconnecting");
        self.fail(
            DisconnectReason::Protocol(why),
            Decision::Retry { hint: None },
            now,
        );
    }

    /// The current connection or attempt ended: decide what comes next.
    fn fail(&mut self, reason: DisconnectReason, decision: Decision, now: Instant) {
        let healthy = match self.conn {
            Conn::Open {
                id, welcomed_at, ..
            } => {
                self.out.push_back(Output::Disconnect { conn: id });
                welcomed_at
                    .is_some_and(|t| now.saturating_duration_since(t) >= self.config.healthy_after)
            }
            Conn::Opening { id } => {
                self.out.push_back(Output::Disconnect { conn: id });
                false
            }
            Conn::Idle | Conn::Closed => return,
        };
        self.timers.stop(Timer::Open);
        self.timers.stop(Timer::Heartbeat);
        for sub in self.subs.values_mut() {
            sub.confirmed = false;
        }
        self.stats.failures += 1;
        if healthy {
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        let hint = match decision {
            Decision::Stop(e) => return self.terminate(Some(e)),
            Decision::Retry { hint } => hint,
        };
        if self
            .config
            .backoff
            .max_attempts
            .is_some_and(|m| self.failures >= m)
        {
            let attempts = self.failures;
            return self.terminate(Some(Error::RetriesExhausted {
                attempts,
                last: reason,
            }));
        }
        let mut delay = self.config.backoff.delay(self.failures, &mut self.rng);
        if let Some(hint) = hint {
            // Wait at least as long as asked, spread by up to one base delay so
            // that clients told the same thing do not return together.
            let spread = self.config.backoff.delay(1, &mut self.rng);
            delay = hint.min(MAX_HINT) + spread;
        }
        let retry_at = now + delay;
        tracing::info!(%reason, attempt = self.failures, delay_ms = delay.as_millis() as u64, "disconnected");
        self.conn = Conn::Idle;
        self.timers.set(Timer::Reconnect, retry_at);
        self.out
            .push_back(Output::State(ConnectionState::Disconnected {
                reason,
                attempt: self.failures,
                retry_at,
                retry_in: delay,
            }));
    }

    fn terminate(&mut self, error: Option<Error>) {
        match self.conn {
            Conn::Closed => return,
            Conn::Opening { id } | Conn::Open { id, .. } => {
                self.out.push_back(Output::Disconnect { conn: id })
            }
            Conn::Idle => {}
        }
        self.conn = Conn::Closed;
        self.timers = TimerTable::default();
        let sub_error = error.clone().unwrap_or(Error::Closed);
        for channel in std::mem::take(&mut self.subs).into_keys() {
            if error.is_some() {
                self.out.push_back(Output::SubscriptionEnded {
                    channel,
                    error: sub_error.clone(),
                });
            }
        }
        for p in std::mem::take(&mut self.publishes) {
            self.out.push_back(Output::PublishDone {
                token: p.token,
                result: Err(sub_error.clone()),
            });
        }
        self.out
            .push_back(Output::State(ConnectionState::Closed { error }));
    }
}

/// How a transport failure is reported, and what to do about it.
fn classify(error: TransportError) -> (DisconnectReason, Decision) {
    let retry = Decision::Retry { hint: None };
    match error {
        TransportError::Connect(e) => (DisconnectReason::ConnectFailed(e), retry),
        TransportError::Lost(e) => (DisconnectReason::Lost(e), retry),
        TransportError::Tls(e) => (
            DisconnectReason::Tls(e.clone()),
            Decision::Stop(Error::Tls(e)),
        ),
        TransportError::Status {
            status,
            retry_after,
        } => match status {
            401 => (
                DisconnectReason::Refused { status },
                Decision::Stop(Error::Unauthorized),
            ),
            400 => (
                DisconnectReason::Refused { status },
                Decision::Stop(Error::BadRequest(format!("HTTP {status} on connect"))),
            ),
            429 | 503 => (
                DisconnectReason::Unavailable { retry_after },
                Decision::Retry { hint: retry_after },
            ),
            _ => (DisconnectReason::Refused { status }, retry),
        },
        TransportError::Closed { code, reason } => {
            let decision = match code {
                4400 => Decision::Stop(Error::BadRequest(reason.clone())),
                4401 => Decision::Stop(Error::Unauthorized),
                4429 | 4503 => {
                    let hint = reason
                        .trim()
                        .parse::<f64>()
                        .ok()
                        .filter(|s| s.is_finite() && *s >= 0.0);
                    let hint = hint.map(|s| Duration::from_secs_f64(s.min(MAX_HINT.as_secs_f64())));
                    return (
                        DisconnectReason::Unavailable { retry_after: hint },
                        Decision::Retry { hint },
                    );
                }
                _ => retry,
            };
            (DisconnectReason::ServerClosed { code, reason }, decision)
        }
    }
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
    serde_json::to_string(frame).expect("client frames always serialize")
}

/// Derives the WebSocket endpoint from the server's base URL (PROTOCOL.md,
/// "Endpoints").
pub(crate) fn websocket_url(base: &str) -> Result<String, Error> {
    let bad = |why| Error::InvalidUrl {
        url: base.to_owned(),
        why,
    };
    let (scheme, rest) = base.split_once("://").ok_or_else(|| bad("no scheme"))?;
    let ws_scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => "ws",
        "https" | "wss" => "wss",
        _ => return Err(bad("scheme must be http, https, ws or wss")),
    };
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if rest[..host_end].is_empty() {
        return Err(bad("no host"));
    }
    if rest.contains(['?', '#']) || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("a base URL has no query, fragment or spaces"));
    }
    if scheme.starts_with("ws") {
        return Ok(format!("{ws_scheme}://{rest}"));
    }
    Ok(format!("{ws_scheme}://{}/ws", rest.trim_end_matches('/')))
}

#[cfg(test)]
mod tests;
