//! Shared server state: channels with their history and subscribers, the
//! connection registry, fault switches and counters. Everything lives behind
//! one `std::sync::Mutex` that is never held across an `.await`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use axum::extract::ws::Utf8Bytes;
use rand::RngExt;
use resub::protocol::{EventId, Outcome, ServerFrame, WireResetReason, validate_channel};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use crate::{FixtureConfig, FixtureError, FixtureStats, HANDSHAKE_LOG, HandshakeRecord};

/// An encoded server frame, cheap to clone (shared bytes).
pub(crate) type Frame = Utf8Bytes;

/// Encodes a server frame as JSON text.
pub(crate) fn encode(frame: &ServerFrame) -> Frame {
    // The frame types hold only strings, integers and unit enums; encoding
    // them cannot fail.
    serde_json::to_string(frame)
        .expect("server frames always encode")
        .into()
}

/// An `Error` frame with code `bad_request`.
pub(crate) fn bad_request(
    channel: Option<&str>,
    key: Option<&str>,
    message: impl Into<String>,
) -> ServerFrame {
    error_frame("bad_request", channel, key, message)
}

/// An `Error` frame.
pub(crate) fn error_frame(
    code: &str,
    channel: Option<&str>,
    key: Option<&str>,
    message: impl Into<String>,
) -> ServerFrame {
    ServerFrame::Error {
        code: code.to_owned(),
        channel: channel.map(str::to_owned),
        key: key.map(str::to_owned),
        message: message.into(),
    }
}

/// What a connection task is told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Serve the connection.
    Normal,
    /// Send nothing, ignore what arrives, wait for the client to close.
    Stalled,
    /// Drop the socket now, without a close frame.
    Dropped,
}

/// Why a handshake on `/ws` is refused by a fault switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `403`: WebSocket upgrades are disabled.
    WebSocketDisabled,
    /// `503` with `Retry-After` in seconds.
    Unavailable(u64),
    /// `401`: authentication is rejected.
    Unauthorized,
}

impl Refusal {
    fn status(self) -> u16 {
        match self {
            Self::WebSocketDisabled => 403,
            Self::Unavailable(_) => 503,
            Self::Unauthorized => 401,
        }
    }
}

/// State shared by the routes, the connection tasks and [`crate::Fixture`].
pub(crate) struct Shared {
    pub(crate) cfg: FixtureConfig,
    pub(crate) started: Instant,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    channels: HashMap<String, Channel>,
    conns: HashMap<u64, Conn>,
    next_conn: u64,
    /// Set on shutdown: new connections are dropped at once.
    closed: bool,
    websocket_disabled: bool,
    unavailable: Option<Unavailable>,
    reject_auth: bool,
    accepted: u64,
    refused: u64,
    slow_drops: u64,
    published: u64,
    handshakes: VecDeque<HandshakeRecord>,
}

struct Unavailable {
    retry_after: u64,
    /// Attempts still to refuse; `None` means until cleared.
    remaining: Option<u32>,
}

struct Conn {
    tx: mpsc::Sender<Frame>,
    mode: watch::Sender<Mode>,
    stalled: bool,
    subscriptions: HashSet<String>,
}

struct Channel {
    epoch: String,
    /// Every epoch the channel had, so a new one is never a reused value.
    used_epochs: HashSet<String>,
    /// The seq the next event gets; the head is `next_seq - 1`.
    next_seq: u64,
    history: VecDeque<Stored>,
    subscribers: HashSet<u64>,
    keys: HashMap<String, String>,
    key_order: VecDeque<String>,
}

struct Stored {
    seq: u64,
    frame: Frame,
}

fn new_epoch_name() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..8)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

impl Channel {
    fn new() -> Self {
        let epoch = new_epoch_name();
        Self {
            used_epochs: HashSet::from([epoch.clone()]),
            epoch,
            next_seq: 1,
            history: VecDeque::new(),
            subscribers: HashSet::new(),
            keys: HashMap::new(),
            key_order: VecDeque::new(),
        }
    }

    fn head_seq(&self) -> u64 {
        self.next_seq - 1
    }

    fn head(&self) -> String {
        format!("{}-{}", self.epoch, self.head_seq())
    }

    /// The seq of the oldest retained event, or the next seq when none is.
    fn oldest_seq(&self) -> u64 {
        self.history.front().map_or(self.next_seq, |e| e.seq)
    }

    fn oldest_retained(&self) -> Option<String> {
        self.history
            .front()
            .map(|e| format!("{}-{}", self.epoch, e.seq))
    }

    fn remember_key(&mut self, key: &str, id: &str, limit: usize) {
        if limit == 0 {
            return;
        }
        self.keys.insert(key.to_owned(), id.to_owned());
        self.key_order.push_back(key.to_owned());
        while self.key_order.len() > limit {
            if let Some(old) = self.key_order.pop_front() {
                self.keys.remove(&old);
            }
        }
    }

    /// How a subscription with `cursor` starts, and the seq after which
    /// events are replayed when it resumes.
    fn outcome(&self, cursor: Option<&str>) -> (Outcome, Option<WireResetReason>, Option<u64>) {
        let Some(cursor) = cursor else {
            return (Outcome::Live, None, None);
        };
        match cursor.parse::<EventId>() {
            Err(_) => (Outcome::Reset, Some(WireResetReason::UnknownCursor), None),
            Ok(id) if id.epoch() != self.epoch => {
                (Outcome::Reset, Some(WireResetReason::EpochChanged), None)
            }
            Ok(id) if id.seq() > self.head_seq() => {
                (Outcome::Reset, Some(WireResetReason::UnknownCursor), None)
            }
            Ok(id) if id.seq().saturating_add(1) < self.oldest_seq() => (
                Outcome::Reset,
                Some(WireResetReason::HistoryTruncated),
                None,
            ),
            Ok(id) => (Outcome::Resumed, None, Some(id.seq())),
        }
    }
}

fn check_channel(name: &str) -> Result<(), FixtureError> {
    validate_channel(name).map_err(|_| FixtureError::InvalidChannel(name.to_owned()))
}

/// Queues `frame` on every subscriber; returns the connections whose queue
/// is full or gone.
fn deliver(subscribers: &HashSet<u64>, conns: &HashMap<u64, Conn>, frame: &Frame) -> Vec<u64> {
    subscribers
        .iter()
        .copied()
        .filter(|id| match conns.get(id) {
            Some(conn) => conn.tx.try_send(frame.clone()).is_err(),
            None => true,
        })
        .collect()
}

impl State {
    fn channel(&mut self, name: &str) -> Result<&mut Channel, FixtureError> {
        check_channel(name)?;
        Ok(self
            .channels
            .entry(name.to_owned())
            .or_insert_with(Channel::new))
    }

    /// Removes a connection from the registry and from its channels, and
    /// tells its task to drop the socket. Returns whether it was registered.
    fn kill(&mut self, id: u64) -> bool {
        let Some(conn) = self.conns.remove(&id) else {
            return false;
        };
        conn.mode.send_replace(Mode::Dropped);
        for name in &conn.subscriptions {
            if let Some(ch) = self.channels.get_mut(name) {
                ch.subscribers.remove(&id);
            }
        }
        true
    }

    /// Drops connections whose queue overflowed.
    fn kill_slow(&mut self, ids: Vec<u64>) {
        for id in ids {
            if self.kill(id) {
                self.slow_drops += 1;
                warn!(conn = id, "outbound queue full; connection dropped");
            }
        }
    }

    fn record_handshake(&mut self, status: u16) {
        if status == 101 {
            self.accepted += 1;
        } else {
            self.refused += 1;
        }
        self.handshakes.push_back(HandshakeRecord {
            at: Instant::now(),
            status,
        });
        while self.handshakes.len() > HANDSHAKE_LOG {
            self.handshakes.pop_front();
        }
    }
}

impl Shared {
    pub(crate) fn new(cfg: FixtureConfig) -> Self {
        Self {
            cfg,
            started: Instant::now(),
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes an event; a key already seen on the channel returns the first
    /// id without publishing.
    pub(crate) fn publish(
        &self,
        channel: &str,
        key: Option<&str>,
        event: Option<&str>,
        data: &str,
    ) -> Result<String, FixtureError> {
        let history = self.cfg.history;
        let key_limit = self.cfg.idempotency_keys;
        let mut st = self.lock();
        let st = &mut *st;
        check_channel(channel)?;
        let ch = st
            .channels
            .entry(channel.to_owned())
            .or_insert_with(Channel::new);
        if let Some(first) = key.and_then(|k| ch.keys.get(k)) {
            debug!(channel, id = %first, "repeated idempotency key");
            return Ok(first.clone());
        }
        let seq = ch.next_seq;
        ch.next_seq += 1;
        let id = format!("{}-{seq}", ch.epoch);
        let frame = encode(&ServerFrame::Event {
            channel: channel.to_owned(),
            id: id.clone(),
            event: event.map(str::to_owned),
            data: data.to_owned(),
        });
        ch.history.push_back(Stored {
            seq,
            frame: frame.clone(),
        });
        while ch.history.len() > history {
            ch.history.pop_front();
        }
        if let Some(key) = key {
            ch.remember_key(key, &id, key_limit);
        }
        let slow = deliver(&ch.subscribers, &st.conns, &frame);
        st.published += 1;
        st.kill_slow(slow);
        debug!(channel, %id, "published");
        Ok(id)
    }

    /// Registers a new connection; `None` once the server is shutting down.
    pub(crate) fn register(
        &self,
        tx: mpsc::Sender<Frame>,
        mode: watch::Sender<Mode>,
    ) -> Option<u64> {
        let mut st = self.lock();
        if st.closed {
            return None;
        }
        st.next_conn += 1;
        let id = st.next_conn;
        st.conns.insert(
            id,
            Conn {
                tx,
                mode,
                stalled: false,
                subscriptions: HashSet::new(),
            },
        );
        Some(id)
    }

    /// Removes a connection whose task ended.
    pub(crate) fn unregister(&self, id: u64) {
        self.lock().kill(id);
    }

    /// Subscribes a connection: computes the outcome, queues `subscribed` and
    /// the replay, and registers the connection as a live subscriber, all
    /// under one lock so no event is missed or repeated between replay and
    /// live delivery.
    pub(crate) fn subscribe(&self, conn_id: u64, channel: &str, cursor: Option<&str>) {
        let mut st = self.lock();
        let st = &mut *st;
        let Some(conn) = st.conns.get_mut(&conn_id) else {
            return;
        };
        if conn.stalled {
            return;
        }
        if check_channel(channel).is_err() {
            let frame = encode(&bad_request(
                Some(channel),
                None,
                format!("invalid channel name {channel:?}"),
            ));
            if conn.tx.try_send(frame).is_err() {
                st.kill_slow(vec![conn_id]);
            }
            return;
        }
        let ch = st
            .channels
            .entry(channel.to_owned())
            .or_insert_with(Channel::new);
        let (outcome, reason, replay_after) = ch.outcome(cursor);
        debug!(
            conn = conn_id,
            channel,
            ?cursor,
            ?outcome,
            ?reason,
            "subscribe"
        );
        let subscribed = encode(&ServerFrame::Subscribed {
            channel: channel.to_owned(),
            outcome,
            reason,
            head: ch.head(),
        });
        let mut ok = conn.tx.try_send(subscribed).is_ok();
        if let Some(after) = replay_after {
            let start = ch.history.partition_point(|e| e.seq <= after);
            for stored in ch.history.range(start..) {
                if !ok {
                    break;
                }
                ok = conn.tx.try_send(stored.frame.clone()).is_ok();
            }
        }
        if ok {
            ch.subscribers.insert(conn_id);
            conn.subscriptions.insert(channel.to_owned());
        } else {
            st.kill_slow(vec![conn_id]);
        }
    }

    /// Stops delivering a channel's events to a connection.
    pub(crate) fn unsubscribe(&self, conn_id: u64, channel: &str) {
        let mut st = self.lock();
        if let Some(conn) = st.conns.get_mut(&conn_id) {
            conn.subscriptions.remove(channel);
        }
        if let Some(ch) = st.channels.get_mut(channel) {
            ch.subscribers.remove(&conn_id);
        }
    }

    pub(crate) fn drop_all(&self) -> usize {
        let mut st = self.lock();
        let ids: Vec<u64> = st.conns.keys().copied().collect();
        for &id in &ids {
            st.kill(id);
        }
        info!(count = ids.len(), "dropped every connection");
        ids.len()
    }

    pub(crate) fn stall_all(&self) -> usize {
        let mut st = self.lock();
        let st = &mut *st;
        let mut count = 0;
        for (&id, conn) in st.conns.iter_mut() {
            if conn.stalled {
                continue;
            }
            conn.stalled = true;
            for name in conn.subscriptions.drain() {
                if let Some(ch) = st.channels.get_mut(&name) {
                    ch.subscribers.remove(&id);
                }
            }
            conn.mode.send_replace(Mode::Stalled);
            count += 1;
        }
        info!(count, "stalled every open connection");
        count
    }

    pub(crate) fn set_websocket_enabled(&self, on: bool) {
        self.lock().websocket_disabled = !on;
        info!(enabled = on, "websocket upgrades");
    }

    pub(crate) fn websocket_enabled(&self) -> bool {
        !self.lock().websocket_disabled
    }

    pub(crate) fn set_unavailable(&self, retry_after: u64, count: Option<u32>) {
        let mut st = self.lock();
        st.unavailable = match count {
            Some(0) => None,
            remaining => Some(Unavailable {
                retry_after,
                remaining,
            }),
        };
        info!(retry_after, ?count, "handshakes answered 503");
    }

    pub(crate) fn clear_unavailable(&self) {
        self.lock().unavailable = None;
        info!("handshakes no longer answered 503");
    }

    pub(crate) fn set_reject_auth(&self, on: bool) {
        self.lock().reject_auth = on;
        info!(reject = on, "handshake authentication");
    }

    pub(crate) fn truncate(
        &self,
        channel: &str,
        keep: usize,
    ) -> Result<Option<String>, FixtureError> {
        let mut st = self.lock();
        let ch = st.channel(channel)?;
        while ch.history.len() > keep {
            ch.history.pop_front();
        }
        let oldest = ch.oldest_retained();
        info!(channel, keep, ?oldest, "history truncated");
        Ok(oldest)
    }

    pub(crate) fn new_epoch(&self, channel: &str) -> Result<String, FixtureError> {
        let mut st = self.lock();
        let st = &mut *st;
        check_channel(channel)?;
        let ch = st
            .channels
            .entry(channel.to_owned())
            .or_insert_with(Channel::new);
        let mut epoch = new_epoch_name();
        while !ch.used_epochs.insert(epoch.clone()) {
            epoch = new_epoch_name();
        }
        ch.epoch = epoch;
        ch.next_seq = 1;
        ch.history.clear();
        let head = ch.head();
        let frame = encode(&ServerFrame::Reset {
            channel: channel.to_owned(),
            reason: WireResetReason::EpochChanged,
            head: head.clone(),
        });
        let slow = deliver(&ch.subscribers, &st.conns, &frame);
        st.kill_slow(slow);
        info!(channel, %head, "new epoch");
        Ok(head)
    }

    pub(crate) fn head(&self, channel: &str) -> Result<String, FixtureError> {
        Ok(self.lock().channel(channel)?.head())
    }

    /// Decides a handshake on `/ws` and records it. `upgrade_error` is the
    /// status of an invalid upgrade request. Returns the fault refusing it, if
    /// any; a refusal by a fault takes precedence over an invalid upgrade.
    pub(crate) fn admit(&self, upgrade_error: Option<u16>) -> Option<Refusal> {
        let mut st = self.lock();
        let refusal = if st.websocket_disabled {
            Some(Refusal::WebSocketDisabled)
        } else if let Some(unavailable) = &mut st.unavailable {
            let retry_after = unavailable.retry_after;
            if let Some(remaining) = &mut unavailable.remaining {
                *remaining = remaining.saturating_sub(1);
                if *remaining == 0 {
                    st.unavailable = None;
                }
            }
            Some(Refusal::Unavailable(retry_after))
        } else if st.reject_auth {
            Some(Refusal::Unauthorized)
        } else {
            None
        };
        let status = match (refusal, upgrade_error) {
            (Some(refusal), _) => refusal.status(),
            (None, Some(status)) => status,
            (None, None) => 101,
        };
        st.record_handshake(status);
        debug!(status, "handshake");
        refusal
    }

    /// Marks the server as shutting down and drops every connection.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.drop_all();
    }

    pub(crate) fn stats(&self) -> FixtureStats {
        let st = self.lock();
        FixtureStats {
            connections_accepted: st.accepted,
            connections_open: st.conns.len(),
            handshakes_refused: st.refused,
            slow_consumer_drops: st.slow_drops,
            events_published: st.published,
            handshakes: st.handshakes.iter().copied().collect(),
        }
    }
}
