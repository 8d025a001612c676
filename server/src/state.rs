//! Shared server state: channels with their history and subscribers, the
//! connection registry (WebSocket connections, SSE streams and held polls),
//! fault switches and counters. Everything lives behind one
//! `std::sync::Mutex` that is never held across an `.await`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::extract::ws::Utf8Bytes;
use rand::RngExt;
use resub::protocol::{EventId, Outcome, PresenceAction, ServerFrame, WireResetReason, validate_channel};
use tokio::sync::{Notify, mpsc, watch};
use tracing::{debug, info, warn};

use crate::auth::Identity;
use crate::storage::{
    ChannelSnapshot as Snapshot, Follow, NewEvent, PAGE, Position, PresenceChange, Storage, StoredEvent as Entry,
    StreamItem,
};
use crate::{Config, HANDSHAKE_LOG, HandshakeRecord, POLL_MAX_EVENTS, ServerError, Stats};

/// An encoded server frame, cheap to clone: one reference count (the
/// shared bytes). A frame is cloned once per subscriber.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    /// The frame as JSON text, on one line.
    pub(crate) json: Utf8Bytes,
    /// For `event` frames, where the event id sits in `json` (start, length):
    /// SSE writes it as an `id:` line.
    id_at: Option<(u32, u32)>,
}

impl Frame {
    /// The event id of an `event` frame.
    pub(crate) fn event_id(&self) -> Option<&str> {
        let (start, len) = self.id_at?;
        self.json.as_str().get(start as usize..(start + len) as usize)
    }
}

/// Encodes a server frame as JSON text.
pub(crate) fn encode(frame: &ServerFrame) -> Frame {
    // The frame types hold only strings, integers and unit enums; encoding
    // them cannot fail.
    let json = serde_json::to_string(frame).expect("server frames always encode");
    let id_at = match frame {
        ServerFrame::Event { id, .. } => id_position(&json, id),
        _ => None,
    };
    Frame { json: json.into(), id_at }
}

/// Where `id` sits in an encoded event frame: after `"id":"`. Ids are
/// `epoch-seq` (no character JSON escapes) and the frame's fields before it
/// are `type` and a channel name (none either), so the first `"id":"` is it.
fn id_position(json: &str, id: &str) -> Option<(u32, u32)> {
    const KEY: &str = r#""id":""#;
    let start = json.find(KEY)? + KEY.len();
    (json.get(start..start + id.len()) == Some(id)).then_some((start as u32, id.len() as u32))
}

/// The transports a client connects with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transport {
    /// `GET /ws`.
    WebSocket,
    /// `GET /sse`.
    Sse,
    /// `GET /poll`.
    Poll,
}

impl Transport {
    /// The name recorded in [`HandshakeRecord::transport`].
    pub fn name(self) -> &'static str {
        match self {
            Self::WebSocket => "ws",
            Self::Sse => "sse",
            Self::Poll => "poll",
        }
    }

    /// The status of an accepted handshake.
    fn accepted_status(self) -> u16 {
        match self {
            Self::WebSocket => 101,
            Self::Sse | Self::Poll => 200,
        }
    }
}

/// An `Error` frame with code `bad_request`.
pub(crate) fn bad_request(channel: Option<&str>, key: Option<&str>, message: impl Into<String>) -> ServerFrame {
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
    #[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
    Stalled,
    /// Drop the socket now, without a close frame.
    Dropped,
    /// The server is shutting down: tell the client to reconnect at once
    /// (elsewhere), then end (close code 1012, or a `restarting` error
    /// frame).
    Restart,
}

/// Why a handshake on `/ws`, `/sse` or `/poll` is refused by a fault switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `403`: the transport is disabled.
    Disabled(Transport),
    /// `503` with `Retry-After` in seconds.
    Unavailable(u64),
    /// `401`: authentication is rejected.
    Unauthorized,
}

impl Refusal {
    fn status(self) -> u16 {
        match self {
            Self::Disabled(_) => 403,
            Self::Unavailable(_) => 503,
            Self::Unauthorized => 401,
        }
    }
}

/// Who a connection says it is, for presence: the `client_id` and `presence`
/// query parameters of its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientInfo {
    pub(crate) id: String,
    pub(crate) data: String,
}

/// One channel of an SSE or long-poll request, with its optional cursor.
pub(crate) type ChannelCursor = (String, Option<String>);

/// Removes a connection from the registry however its task, stream or request
/// ends.
pub(crate) struct Registration {
    shared: Arc<Shared>,
    id: u64,
}

impl Registration {
    pub(crate) fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.shared.unregister(self.id);
    }
}

/// A registered connection: its registration, outbound queue and fault mode.
pub(crate) struct Registered {
    pub(crate) registration: Registration,
    /// A sender of the outbound queue, for replies (WebSocket).
    pub(crate) tx: mpsc::Sender<Frame>,
    pub(crate) rx: mpsc::Receiver<Frame>,
    pub(crate) mode: watch::Receiver<Mode>,
}

/// How a long poll starts.
pub(crate) enum PollStart {
    /// Answer at once with this body.
    Answer(String),
    /// Hold the request: the connection wakes when an event or a `reset` is
    /// queued, or when a fault switch changes its mode.
    Hold(Registered),
}

/// State shared by the routes, the connection tasks and [`crate::Fixture`].
pub(crate) struct Shared {
    pub(crate) cfg: Config,
    #[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
    pub(crate) started: Instant,
    /// Failed TLS handshakes, counted by the TLS listener.
    pub(crate) tls_failures: Arc<AtomicU64>,
    /// Observed latency of the storage's answers.
    pub(crate) storage_latency: crate::metrics::Latency,
    /// What every connection may do when no authorizer is configured.
    pub(crate) anonymous: Arc<Identity>,
    /// Where channels live when the node shares them with others.
    pub(crate) store: Option<Arc<dyn Storage>>,
    /// This node's name in presence ownership.
    pub(crate) node: String,
    /// Wakes the follower when a channel is mirrored for the first time.
    pub(crate) follow_wake: Notify,
    /// Wakes [`Shared::drained`] when the last connection ends.
    drained: Notify,
    /// When a poll was last answered with events or a timeout (not told to
    /// go): its client polls again soon.
    pub(crate) last_poll: Mutex<Option<Instant>>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Channels live in Redis; `channels` mirrors them.
    clustered: bool,
    channels: HashMap<String, Channel>,
    conns: HashMap<u64, Conn>,
    next_conn: u64,
    /// Set on shutdown: new connections are dropped at once.
    closed: bool,
    /// Transports whose handshakes are answered `403`.
    disabled: HashSet<Transport>,
    unavailable: Option<Unavailable>,
    reject_auth: bool,
    /// When set, only these bearer tokens are accepted on `/ws`, `/sse` and
    /// `/poll`.
    tokens: Option<HashSet<String>>,
    /// Publishes still to apply without answering (the connection or request
    /// is dropped instead): a lost acknowledgement.
    drop_acks: u32,
    /// Answers still to pad past any client's bound: (count, bytes) for
    /// HTTP publishes and for polls.
    oversize_acks: (u32, usize),
    oversize_polls: (u32, usize),
    /// HTTP publish requests received (repeated keys included).
    publish_requests: u64,
    /// Subscriptions made on WebSocket and SSE connections.
    subscribes: u64,
    accepted: HashMap<Transport, u64>,
    refused: u64,
    slow_drops: u64,
    /// Events queued for subscribers.
    delivered: u64,
    /// Subscriptions by how they started.
    resumes: BTreeMap<&'static str, u64>,
    /// Refusals by reason.
    refusals: BTreeMap<&'static str, u64>,
    /// Mirrors rebuilt because they fell behind Redis' retention.
    rebuilds: u64,
    published: u64,
    handshakes: VecDeque<HandshakeRecord>,
}

struct Unavailable {
    retry_after: u64,
    /// Attempts still to refuse; `None` means until cleared.
    remaining: Option<u32>,
}

struct Conn {
    transport: Transport,
    tx: mpsc::Sender<Frame>,
    mode: watch::Sender<Mode>,
    stalled: bool,
    subscriptions: HashSet<String>,
    /// Set when the connection takes part in presence.
    client: Option<ClientInfo>,
    /// What it may do.
    identity: Arc<Identity>,
}

impl Conn {
    /// Whether presence changes are sent to this connection: it takes part in
    /// presence, and it is a stream (a long poll answers with events only).
    fn wants_presence(&self) -> bool {
        self.client.is_some() && self.transport != Transport::Poll && !self.stalled
    }
}

/// A client id present on a channel through this node's connections.
#[derive(Debug, Clone)]
pub(crate) struct LocalMember {
    data: String,
    /// How many of this node's connections it is subscribed with.
    refs: usize,
    /// Until when its last long poll keeps it present: a polling client has
    /// no connection between requests.
    poll_until: Option<Instant>,
}

impl LocalMember {
    fn new() -> Self {
        Self { data: String::new(), refs: 0, poll_until: None }
    }

    fn present(&self, now: Instant) -> bool {
        self.refs > 0 || self.poll_until.is_some_and(|t| t > now)
    }
}

/// How long after a long poll's hold ends its client stays present without
/// polling again.
pub(crate) const POLL_PRESENCE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

struct Channel {
    /// On a node on Redis, the epoch's generation (its stream ids are
    /// `generation-seq`); 0 otherwise.
    generation: u64,
    /// On a node on Redis, the id of the last presence change followed.
    plog: String,
    /// Client ids subscribed through this node's connections.
    presence: HashMap<String, LocalMember>,
    epoch: String,
    /// Every epoch the channel had, so a new one is never a reused value.
    used_epochs: HashSet<String>,
    /// The seq the next event gets; the head is `next_seq - 1`.
    next_seq: u64,
    history: VecDeque<Stored>,
    /// Live subscribers by connection, with their queues: an event goes to
    /// each without a look-up in the registry.
    subscribers: HashMap<u64, Subscriber>,
    keys: HashMap<String, String>,
    key_order: VecDeque<String>,
}

struct Stored {
    seq: u64,
    frame: Frame,
}

/// A fresh random epoch name: 8 characters from `a-z0-9`.
pub(crate) fn new_epoch_name() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..8).map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())])).collect()
}

impl Channel {
    fn new() -> Self {
        let epoch = new_epoch_name();
        Self {
            generation: 0,
            plog: "0-0".to_owned(),
            presence: HashMap::new(),
            used_epochs: HashSet::from([epoch.clone()]),
            epoch,
            next_seq: 1,
            history: VecDeque::new(),
            subscribers: HashMap::new(),
            keys: HashMap::new(),
            key_order: VecDeque::new(),
        }
    }

    fn head_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// A mirror of a channel as a Redis snapshot has it (subscribers come
    /// later).
    fn mirrored(snap: &Snapshot) -> Self {
        let mut ch = Self::new();
        ch.generation = snap.generation;
        ch.epoch.clone_from(&snap.epoch);
        ch.used_epochs = HashSet::from([snap.epoch.clone()]);
        ch.plog.clone_from(&snap.presence_cursor);
        ch.next_seq = snap.events.first().map_or(snap.head + 1, |e| e.seq);
        ch
    }

    fn head(&self) -> String {
        format!("{}-{}", self.epoch, self.head_seq())
    }

    /// The seq of the oldest retained event, or the next seq when none is.
    fn oldest_seq(&self) -> u64 {
        self.history.front().map_or(self.next_seq, |e| e.seq)
    }

    #[cfg(feature = "fault-injection")]
    fn oldest_retained(&self) -> Option<String> {
        self.history.front().map(|e| format!("{}-{}", self.epoch, e.seq))
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
            Ok(id) if id.epoch() != self.epoch => (Outcome::Reset, Some(WireResetReason::EpochChanged), None),
            Ok(id) if id.seq() > self.head_seq() => (Outcome::Reset, Some(WireResetReason::UnknownCursor), None),
            Ok(id) if id.seq().saturating_add(1) < self.oldest_seq() => {
                (Outcome::Reset, Some(WireResetReason::HistoryTruncated), None)
            }
            Ok(id) => (Outcome::Resumed, None, Some(id.seq())),
        }
    }
}

/// PROTOCOL.md §7.4: an event type is 1-128 bytes without control
/// characters, a key 1-128 visible ASCII characters.
fn check_publish(key: Option<&str>, event: Option<&str>) -> Result<(), ServerError> {
    if let Some(event) = event {
        resub::protocol::validate_event_type(event).map_err(|e| ServerError::InvalidPublish(e.to_string()))?;
    }
    if let Some(key) = key
        && (key.is_empty() || key.len() > 128 || !key.bytes().all(|b| b.is_ascii_graphic()))
    {
        return Err(ServerError::InvalidPublish(format!(
            "invalid idempotency key {:?}: 1-128 visible ASCII characters",
            key.chars().take(140).collect::<String>()
        )));
    }
    Ok(())
}

fn check_channel(name: &str) -> Result<(), ServerError> {
    validate_channel(name).map_err(|_| ServerError::InvalidChannel(name.to_owned()))
}

/// Queues `frame` on every subscriber; returns the connections whose queue
/// is full or gone. A held poll's queue only wakes it up: a full one is fine.
fn deliver(subscribers: &HashMap<u64, Subscriber>, frame: &Frame, delivered: &mut u64) -> Vec<u64> {
    let mut slow = Vec::new();
    for (&id, sub) in subscribers {
        match sub.tx.try_send(frame.clone()) {
            Ok(()) => *delivered += u64::from(frame.id_at.is_some()),
            Err(_) if sub.poll => {}
            Err(_) => slow.push(id),
        }
    }
    slow
}

/// A channel's live subscriber: its connection's queue.
struct Subscriber {
    tx: mpsc::Sender<Frame>,
    /// A held poll: its queue only wakes it, a full one is fine.
    poll: bool,
}

impl Subscriber {
    fn of(conn: &Conn) -> Self {
        Self { tx: conn.tx.clone(), poll: conn.transport == Transport::Poll }
    }
}

/// The name a subscription's start is counted under in [`Stats::resumes`].
fn outcome_name(outcome: Outcome, reason: Option<&WireResetReason>) -> &'static str {
    match (outcome, reason) {
        (Outcome::Resumed, _) => "resumed",
        (Outcome::Reset, Some(WireResetReason::HistoryTruncated)) => "history_truncated",
        (Outcome::Reset, Some(WireResetReason::EpochChanged)) => "epoch_changed",
        (Outcome::Reset, _) => "unknown_cursor",
        _ => "live",
    }
}

/// The reason an error code is counted under in [`Stats::refusals`].
pub(crate) fn refusal_reason(code: &str) -> &'static str {
    match code {
        "unauthorized" => "unauthorized",
        "forbidden" => "forbidden",
        "too_many_connections" => "too_many_connections",
        "too_many_subscriptions" => "too_many_subscriptions",
        "too_large" => "too_large",
        "rate_limited" => "rate_limited",
        _ => "bad_request",
    }
}

/// Why a connection could not be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotRegistered {
    /// The server is shutting down.
    Closing,
    /// [`crate::Limits::max_connections`] are open.
    TooMany,
}

impl State {
    fn channel(&mut self, name: &str) -> Result<&mut Channel, ServerError> {
        check_channel(name)?;
        Ok(self.channels.entry(name.to_owned()).or_insert_with(Channel::new))
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
            match &conn.client {
                // Never added to this channel's presence.
                Some(_) if !conn.identity.presence.allows(name) => {}
                // A held poll ended: its client stays present a little
                // longer, for its next poll.
                Some(client) if conn.transport == Transport::Poll => {
                    if let Some(m) = self.channels.get_mut(name).and_then(|ch| ch.presence.get_mut(&client.id)) {
                        m.refs = m.refs.saturating_sub(1);
                    }
                    self.presence_poll(name, client, Instant::now() + POLL_PRESENCE_GRACE);
                }
                Some(client) => self.presence_remove(name, client),
                None => {}
            }
        }
        true
    }

    /// Appends the event after the head of a mirrored channel and delivers it.
    fn append(&mut self, name: &str, entry: &Entry, history: usize) {
        let Some(ch) = self.channels.get_mut(name) else {
            return;
        };
        debug_assert_eq!(entry.seq, ch.next_seq);
        let id = format!("{}-{}", ch.epoch, entry.seq);
        let frame = encode(&ServerFrame::Event {
            channel: name.into(),
            id: id.into(),
            event: entry.event.clone(),
            data: entry.data.clone(),
        });
        ch.next_seq = entry.seq + 1;
        ch.history.push_back(Stored { seq: entry.seq, frame: frame.clone() });
        while ch.history.len() > history {
            ch.history.pop_front();
        }
        let slow = deliver(&ch.subscribers, &frame, &mut self.delivered);
        self.kill_slow(slow);
    }

    /// Appends, in order, those of `entries` that follow the mirror's head.
    fn append_following(&mut self, channel: &str, entries: &[Entry], history: usize) {
        for entry in entries {
            if self.channels.get(channel).is_some_and(|ch| entry.seq == ch.next_seq) {
                self.append(channel, entry, history);
            }
        }
    }

    /// A mirrored channel starts the epoch `name` of generation `generation`: its
    /// subscribers get a `reset`, as on a single node.
    fn mirror_epoch(&mut self, channel: &str, epoch: &str, generation: u64) {
        let Some(ch) = self.channels.get_mut(channel) else {
            return;
        };
        ch.generation = generation;
        ch.epoch = epoch.to_owned();
        ch.used_epochs.insert(epoch.to_owned());
        ch.next_seq = 1;
        ch.history.clear();
        let head = ch.head();
        let frame =
            encode(&ServerFrame::Reset { channel: channel.to_owned(), reason: WireResetReason::EpochChanged, head });
        let slow = deliver(&ch.subscribers, &frame, &mut self.delivered);
        self.kill_slow(slow);
        info!(channel, epoch, "new epoch from redis");
    }

    /// The mirror of `channel` missed events it can no longer fetch (it fell
    /// behind Redis' retention): its subscribers are dropped, so that each
    /// resumes and is told by its `subscribed` answer what it lost, and the
    /// mirror restarts from `snap`.
    fn rebuild(&mut self, channel: &str, snap: &Snapshot, history: usize) {
        let subscribers: Vec<u64> =
            self.channels.get(channel).map(|ch| ch.subscribers.keys().copied().collect()).unwrap_or_default();
        warn!(channel, dropped = subscribers.len(), "mirror fell behind redis; its subscribers resume");
        self.rebuilds += 1;
        for id in subscribers {
            self.kill(id);
        }
        self.install(channel, snap, history);
    }

    /// (Re)creates the mirror of `channel` from a snapshot, keeping its local
    /// presence.
    fn install(&mut self, channel: &str, snap: &Snapshot, history: usize) {
        let presence = self.channels.remove(channel).map(|ch| ch.presence).unwrap_or_default();
        let mut ch = Channel::mirrored(snap);
        ch.presence = presence;
        self.channels.insert(channel.to_owned(), ch);
        self.append_following(channel, &snap.events, history);
    }

    /// Brings a mirror up to date with a snapshot (events after the mirror's
    /// head, or the whole epoch when the snapshot's generation is newer).
    fn apply_snapshot(&mut self, channel: &str, snap: &Snapshot, history: usize) -> bool {
        let Some(ch) = self.channels.get(channel) else {
            self.install(channel, snap, history);
            return true;
        };
        if snap.generation < ch.generation {
            return false; // Older than what the follower already applied.
        }
        if snap.generation > ch.generation {
            let continuous = snap.events.first().map_or(snap.head == 0, |e| e.seq == 1);
            if !continuous {
                self.rebuild(channel, snap, history);
                return true;
            }
            self.mirror_epoch(channel, &snap.epoch, snap.generation);
        } else {
            let next = ch.next_seq;
            let continuous = match snap.events.iter().find(|e| e.seq >= next) {
                Some(e) => e.seq == next,
                None => snap.head < next,
            };
            if !continuous {
                self.rebuild(channel, snap, history);
                return true;
            }
        }
        self.append_following(channel, &snap.events, history);
        false
    }

    /// Applies what the follower read from a channel's stream; false when
    /// the entries do not follow the mirror (the caller fetches a snapshot).
    fn apply_items(&mut self, channel: &str, items: &[StreamItem], history: usize) -> bool {
        for item in items {
            let Some(ch) = self.channels.get(channel) else {
                return false;
            };
            match item {
                StreamItem::Event { generation, event: entry }
                    if *generation == ch.generation && entry.seq < ch.next_seq => {}
                StreamItem::Event { generation, event: entry }
                    if *generation == ch.generation && entry.seq == ch.next_seq =>
                {
                    self.append(channel, entry, history);
                }
                StreamItem::Epoch { generation, .. } | StreamItem::Event { generation, .. }
                    if *generation < ch.generation => {}
                StreamItem::Epoch { generation, name } if *generation > ch.generation => {
                    self.mirror_epoch(channel, name, *generation)
                }
                _ => return false,
            }
        }
        true
    }

    /// Sends a presence change to the channel's subscribers that take part
    /// in presence.
    fn deliver_presence(&mut self, channel: &str, change: &PresenceChange) {
        let Some(ch) = self.channels.get(channel) else {
            return;
        };
        let frame = encode(&ServerFrame::Presence {
            channel: channel.to_owned(),
            action: if change.join { PresenceAction::Join } else { PresenceAction::Leave },
            client_id: change.client_id.clone(),
            data: change.data.clone(),
        });
        let conns = &self.conns;
        let slow: Vec<u64> = ch
            .subscribers
            .keys()
            .copied()
            .filter(|id| conns.get(id).is_some_and(|c| c.wants_presence() && c.tx.try_send(frame.clone()).is_err()))
            .collect();
        self.kill_slow(slow);
    }

    /// A connection's client joins a channel's local presence.
    fn presence_add(&mut self, channel: &str, client: &ClientInfo) {
        self.presence_mark(channel, client, |m| m.refs += 1);
    }

    /// A long-polling client is present on a channel until `until`.
    fn presence_poll(&mut self, channel: &str, client: &ClientInfo, until: Instant) {
        self.presence_mark(channel, client, |m| m.poll_until = m.poll_until.max(Some(until)));
    }

    /// Keeps `client` present on `channel` by `mark` (a connection's
    /// reference, a poll's lease); on a single node, a join is sent when it
    /// was not present.
    fn presence_mark(&mut self, channel: &str, client: &ClientInfo, mark: impl FnOnce(&mut LocalMember)) {
        let Some(ch) = self.channels.get_mut(channel) else {
            return;
        };
        let member = ch.presence.entry(client.id.clone()).or_insert_with(LocalMember::new);
        let was = member.present(Instant::now());
        mark(member);
        member.data.clone_from(&client.data);
        if !was && !self.clustered {
            let change = PresenceChange { join: true, client_id: client.id.clone(), data: client.data.clone() };
            self.deliver_presence(channel, &change);
        }
    }

    /// Removes the long-polling members that stopped polling.
    fn expire_polls(&mut self, now: Instant) {
        let mut gone = Vec::new();
        for (name, ch) in &mut self.channels {
            ch.presence.retain(|id, m| {
                let keep = m.present(now);
                if !keep {
                    gone.push((
                        name.clone(),
                        PresenceChange { join: false, client_id: id.clone(), data: m.data.clone() },
                    ));
                }
                keep
            });
        }
        if !self.clustered {
            for (name, change) in gone {
                self.deliver_presence(&name, &change);
            }
        }
    }

    /// A connection's client leaves a channel's local presence.
    fn presence_remove(&mut self, channel: &str, client: &ClientInfo) {
        let Some(ch) = self.channels.get_mut(channel) else {
            return;
        };
        let Some(member) = ch.presence.get_mut(&client.id) else {
            return;
        };
        member.refs -= 1;
        if member.present(Instant::now()) {
            return;
        }
        let data = ch.presence.remove(&client.id).map(|m| m.data).unwrap_or_default();
        if !self.clustered {
            let change = PresenceChange { join: false, client_id: client.id.clone(), data };
            self.deliver_presence(channel, &change);
        }
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

    /// The body of a long-poll answer, and whether the request may be held
    /// (every channel resumes and no event follows any cursor).
    fn poll_answer(
        &mut self,
        channels: &[ChannelCursor],
        hold_ms: u64,
        identity: &Identity,
        max_subscriptions: usize,
    ) -> (String, bool) {
        let mut body = String::from(r#"{"frames":["#);
        body.push_str(encode(&ServerFrame::Welcome { heartbeat_ms: hold_ms }).json.as_str());
        let mut replays = Vec::new();
        let mut holdable = true;
        for (i, (name, cursor)) in channels.iter().enumerate() {
            if check_channel(name).is_err() {
                continue;
            }
            if let Some(frame) = self.subscription_refusal(identity, name, i >= max_subscriptions, max_subscriptions) {
                body.push(',');
                body.push_str(encode(&frame).json.as_str());
                holdable = false;
                continue;
            }
            let ch = self.channels.entry(name.clone()).or_insert_with(Channel::new);
            let (outcome, reason, replay_after) = ch.outcome(cursor.as_deref());
            if outcome != Outcome::Resumed {
                holdable = false;
            }
            let subscribed =
                encode(&ServerFrame::Subscribed { channel: name.clone(), outcome, reason, head: ch.head() });
            body.push(',');
            body.push_str(subscribed.json.as_str());
            if let Some(after) = replay_after {
                replays.push((name, after));
            }
        }
        let mut budget = POLL_MAX_EVENTS;
        for (name, after) in replays {
            let Some(ch) = self.channels.get(name) else {
                continue;
            };
            let start = ch.history.partition_point(|e| e.seq <= after);
            for stored in ch.history.range(start..).take(budget) {
                body.push(',');
                body.push_str(stored.frame.json.as_str());
                budget -= 1;
                holdable = false;
            }
        }
        body.push_str("]}");
        (body, holdable)
    }

    /// Why a subscription to `channel` is refused, if it is (counted):
    /// the identity may not subscribe to it, or it would be one more than
    /// `limit` (`over`).
    fn subscription_refusal(
        &mut self,
        identity: &Identity,
        channel: &str,
        over: bool,
        limit: usize,
    ) -> Option<ServerFrame> {
        let (code, message) = if !identity.subscribe.allows(channel) {
            ("forbidden", "this token may not subscribe to the channel".to_owned())
        } else if over {
            ("too_many_subscriptions", format!("at most {limit} subscriptions per connection or poll"))
        } else {
            return None;
        };
        self.refuse(refusal_reason(code));
        Some(error_frame(code, Some(channel), None, message))
    }

    fn refuse(&mut self, reason: &'static str) {
        *self.refusals.entry(reason).or_default() += 1;
    }

    fn record_handshake(&mut self, transport: Transport, status: u16) {
        if status == transport.accepted_status() {
            *self.accepted.entry(transport).or_default() += 1;
        } else {
            self.refused += 1;
        }
        self.handshakes.push_back(HandshakeRecord { at: Instant::now(), status, transport: transport.name() });
        while self.handshakes.len() > HANDSHAKE_LOG {
            self.handshakes.pop_front();
        }
    }
}

impl Shared {
    pub(crate) fn new(cfg: Config, store: Option<Arc<dyn Storage>>) -> Self {
        let state = State { clustered: store.is_some(), ..State::default() };
        Self {
            cfg,
            started: Instant::now(),
            tls_failures: Arc::default(),
            storage_latency: crate::metrics::Latency::default(),
            anonymous: Arc::new(Identity::anonymous()),
            node: new_epoch_name(),
            store,
            follow_wake: Notify::new(),
            drained: Notify::new(),
            last_poll: Mutex::new(None),
            state: Mutex::new(state),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes an event; a key already seen on the channel returns the first
    /// id without publishing. On Redis, subscribers get it through the
    /// follower (of whichever node).
    pub(crate) async fn publish(
        &self,
        channel: &str,
        key: Option<&str>,
        event: Option<&str>,
        data: &str,
    ) -> Result<String, ServerError> {
        check_publish(key, event)?;
        let Some(store) = &self.store else {
            return self.publish_local(channel, key, event, data);
        };
        check_channel(channel)?;
        let started = Instant::now();
        let new = NewEvent { event, key, data, retain: self.cfg.history };
        let result = store.publish(channel, new).await;
        self.storage_latency.observe(started.elapsed());
        let crate::storage::Published { id, applied } = result?;
        if applied {
            self.lock().published += 1;
        }
        debug!(channel, %id, applied, "published to redis");
        Ok(id)
    }

    /// [`Shared::publish`] on a node without Redis.
    pub(crate) fn publish_local(
        &self,
        channel: &str,
        key: Option<&str>,
        event: Option<&str>,
        data: &str,
    ) -> Result<String, ServerError> {
        let history = self.cfg.history;
        let key_limit = self.cfg.idempotency_keys;
        let mut st = self.lock();
        let st = &mut *st;
        check_channel(channel)?;
        let ch = st.channels.entry(channel.to_owned()).or_insert_with(Channel::new);
        if let Some(first) = key.and_then(|k| ch.keys.get(k)) {
            debug!(channel, id = %first, "repeated idempotency key");
            return Ok(first.clone());
        }
        let seq = ch.next_seq;
        ch.next_seq += 1;
        let id = format!("{}-{seq}", ch.epoch);
        let frame = encode(&ServerFrame::Event {
            channel: channel.into(),
            id: id.as_str().into(),
            event: event.map(str::to_owned),
            data: data.to_owned(),
        });
        ch.history.push_back(Stored { seq, frame: frame.clone() });
        while ch.history.len() > history {
            ch.history.pop_front();
        }
        if let Some(key) = key {
            ch.remember_key(key, &id, key_limit);
        }
        let slow = deliver(&ch.subscribers, &frame, &mut st.delivered);
        st.published += 1;
        st.kill_slow(slow);
        debug!(channel, %id, "published");
        Ok(id)
    }

    /// Registers a new connection with an outbound queue of `capacity`
    /// frames; refused once the server is shutting down, or when
    /// [`crate::Limits::max_connections`] are open.
    pub(crate) fn register(
        self: &Arc<Self>,
        transport: Transport,
        capacity: usize,
        client: Option<ClientInfo>,
        identity: Arc<Identity>,
    ) -> Result<Registered, NotRegistered> {
        let mut st = self.lock();
        Self::register_locked(self, &mut st, transport, capacity, client, identity)
    }

    fn register_locked(
        self: &Arc<Self>,
        st: &mut State,
        transport: Transport,
        capacity: usize,
        client: Option<ClientInfo>,
        identity: Arc<Identity>,
    ) -> Result<Registered, NotRegistered> {
        if st.closed {
            return Err(NotRegistered::Closing);
        }
        if st.conns.len() >= self.cfg.limits.max_connections {
            st.refuse("too_many_connections");
            return Err(NotRegistered::TooMany);
        }
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let (mode_tx, mode) = watch::channel(Mode::Normal);
        st.next_conn += 1;
        let id = st.next_conn;
        let conn = Conn {
            transport,
            tx: tx.clone(),
            mode: mode_tx,
            stalled: false,
            subscriptions: HashSet::new(),
            client,
            identity,
        };
        st.conns.insert(id, conn);
        Ok(Registered { registration: Registration { shared: Arc::clone(self), id }, tx, rx, mode })
    }

    /// Counts a refusal that happened outside the registry (an unauthorized
    /// handshake, a forbidden publish, a rate limit).
    pub(crate) fn count_refusal(&self, reason: &'static str) {
        self.lock().refuse(reason);
    }

    /// Removes a connection whose task ended.
    pub(crate) fn unregister(&self, id: u64) {
        let mut st = self.lock();
        st.kill(id);
        if st.conns.is_empty() {
            self.drained.notify_waiters();
        }
    }

    /// Subscribes a connection: computes the outcome, queues `subscribed` and
    /// the replay, and registers the connection as a live subscriber, all
    /// under one lock so no event is missed or repeated between replay and
    /// live delivery.
    pub(crate) fn subscribe(&self, conn_id: u64, channel: &str, cursor: Option<&str>) {
        let mut st = self.lock();
        let st = &mut *st;
        st.subscribes += 1;
        let Some(conn) = st.conns.get_mut(&conn_id) else {
            return;
        };
        if conn.stalled {
            return;
        }
        let limit = self.cfg.limits.max_subscriptions;
        let over = !conn.subscriptions.contains(channel) && conn.subscriptions.len() >= limit;
        let refusal = if check_channel(channel).is_err() {
            let frame = bad_request(Some(channel), None, format!("invalid channel name {channel:?}"));
            *st.refusals.entry(refusal_reason("bad_request")).or_default() += 1;
            Some(frame)
        } else {
            let identity = Arc::clone(&conn.identity);
            st.subscription_refusal(&identity, channel, over, limit)
        };
        let Some(conn) = st.conns.get_mut(&conn_id) else {
            return;
        };
        if let Some(frame) = refusal {
            if conn.tx.try_send(encode(&frame)).is_err() {
                st.kill_slow(vec![conn_id]);
            }
            return;
        }
        let ch = st.channels.entry(channel.to_owned()).or_insert_with(Channel::new);
        let (outcome, reason, replay_after) = ch.outcome(cursor);
        *st.resumes.entry(outcome_name(outcome, reason.as_ref())).or_default() += 1;
        debug!(conn = conn_id, channel, ?cursor, ?outcome, ?reason, "subscribe");
        let subscribed =
            encode(&ServerFrame::Subscribed { channel: channel.to_owned(), outcome, reason, head: ch.head() });
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
        if !ok {
            return st.kill_slow(vec![conn_id]);
        }
        ch.subscribers.insert(conn_id, Subscriber::of(conn));
        if conn.subscriptions.insert(channel.to_owned())
            && conn.identity.presence.allows(channel)
            && let Some(client) = conn.client.clone()
        {
            st.presence_add(channel, &client);
        }
    }

    /// Stops delivering a channel's events to a connection.
    pub(crate) fn unsubscribe(&self, conn_id: u64, channel: &str) {
        let mut st = self.lock();
        let mut left = None;
        if let Some(conn) = st.conns.get_mut(&conn_id)
            && conn.subscriptions.remove(channel)
            && conn.identity.presence.allows(channel)
        {
            left = conn.client.clone();
        }
        if let Some(ch) = st.channels.get_mut(channel) {
            ch.subscribers.remove(&conn_id);
        }
        if let Some(client) = left {
            st.presence_remove(channel, &client);
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

    #[cfg(feature = "fault-injection")]
    pub(crate) fn stall_all(&self) -> usize {
        let mut st = self.lock();
        let st = &mut *st;
        let mut count = 0;
        let mut left = Vec::new();
        for (&id, conn) in st.conns.iter_mut() {
            if conn.stalled {
                continue;
            }
            conn.stalled = true;
            for name in conn.subscriptions.drain() {
                if let Some(ch) = st.channels.get_mut(&name) {
                    ch.subscribers.remove(&id);
                }
                if let Some(client) = &conn.client
                    && conn.identity.presence.allows(&name)
                {
                    left.push((name, client.clone()));
                }
            }
            conn.mode.send_replace(Mode::Stalled);
            count += 1;
        }
        for (name, client) in left {
            st.presence_remove(&name, &client);
        }
        info!(count, "stalled every open connection");
        count
    }

    #[cfg(feature = "fault-injection")]
    pub(crate) fn set_enabled(&self, transport: Transport, on: bool) {
        let mut st = self.lock();
        if on {
            st.disabled.remove(&transport);
        } else {
            st.disabled.insert(transport);
        }
        info!(transport = transport.name(), enabled = on, "transport switch");
    }

    #[cfg(feature = "fault-injection")]
    pub(crate) fn enabled(&self, transport: Transport) -> bool {
        !self.lock().disabled.contains(&transport)
    }

    #[cfg(feature = "fault-injection")]
    pub(crate) fn set_unavailable(&self, retry_after: u64, count: Option<u32>) {
        let mut st = self.lock();
        st.unavailable = match count {
            Some(0) => None,
            remaining => Some(Unavailable { retry_after, remaining }),
        };
        info!(retry_after, ?count, "handshakes answered 503");
    }

    #[cfg(feature = "fault-injection")]
    pub(crate) fn clear_unavailable(&self) {
        self.lock().unavailable = None;
        info!("handshakes no longer answered 503");
    }

    #[cfg(feature = "fault-injection")]
    pub(crate) fn set_drop_acks(&self, count: u32) {
        info!(count, "publishes to apply without an answer");
        self.lock().drop_acks = count;
    }

    #[cfg(feature = "fault-injection")]
    /// Pads the next `count` answers to HTTP publishes (`publish`) or polls
    /// to `bytes` bytes.
    pub(crate) fn set_oversize(&self, publish: bool, count: u32, bytes: usize) {
        info!(publish, count, bytes, "oversized answers");
        let mut st = self.lock();
        if publish { st.oversize_acks = (count, bytes) } else { st.oversize_polls = (count, bytes) }
    }

    /// The size to pad this answer to, if it is to be oversized (counts it).
    pub(crate) fn take_oversize(&self, publish: bool) -> Option<usize> {
        let mut st = self.lock();
        let slot = if publish { &mut st.oversize_acks } else { &mut st.oversize_polls };
        let due = slot.0 > 0;
        slot.0 = slot.0.saturating_sub(1);
        due.then_some(slot.1)
    }

    /// Counts an HTTP publish request.
    pub(crate) fn count_publish_request(&self) {
        self.lock().publish_requests += 1;
    }

    /// Whether this publish's answer is to be lost (counts it).
    pub(crate) fn take_drop_ack(&self) -> bool {
        let mut st = self.lock();
        let due = st.drop_acks > 0;
        st.drop_acks = st.drop_acks.saturating_sub(1);
        due
    }

    #[cfg(feature = "fault-injection")]
    pub(crate) fn set_tokens(&self, tokens: Option<HashSet<String>>) {
        info!(tokens = ?tokens.as_ref().map(HashSet::len), "accepted tokens");
        self.lock().tokens = tokens;
    }

    #[cfg(feature = "fault-injection")]
    pub(crate) fn set_reject_auth(&self, on: bool) {
        self.lock().reject_auth = on;
        info!(reject = on, "handshake authentication");
    }

    #[cfg(feature = "fault-injection")]
    /// Keeps the newest `keep` events of the channel (in Redis and in this
    /// node's mirror); returns the oldest retained id.
    pub(crate) async fn truncate(&self, channel: &str, keep: usize) -> Result<Option<String>, ServerError> {
        let Some(store) = &self.store else {
            return self.truncate_local(channel, keep);
        };
        check_channel(channel)?;
        let oldest = store.truncate(channel, keep).await?;
        self.sync_channel(channel).await?;
        if let Some(ch) = self.lock().channels.get_mut(channel) {
            while ch.history.len() > keep {
                ch.history.pop_front();
            }
        }
        info!(channel, keep, ?oldest, "history truncated in redis");
        Ok(oldest)
    }

    #[cfg(feature = "fault-injection")]
    pub(crate) fn truncate_local(&self, channel: &str, keep: usize) -> Result<Option<String>, ServerError> {
        let mut st = self.lock();
        let ch = st.channel(channel)?;
        while ch.history.len() > keep {
            ch.history.pop_front();
        }
        let oldest = ch.oldest_retained();
        info!(channel, keep, ?oldest, "history truncated");
        Ok(oldest)
    }

    #[cfg(feature = "fault-injection")]
    /// Starts a new epoch; on Redis, this node's subscribers get their
    /// `reset` before it returns, the other nodes' through their followers.
    pub(crate) async fn new_epoch(&self, channel: &str) -> Result<String, ServerError> {
        let Some(store) = &self.store else {
            return self.new_epoch_local(channel);
        };
        check_channel(channel)?;
        let head = store.new_epoch(channel).await?;
        self.sync_channel(channel).await?;
        Ok(head)
    }

    #[cfg(feature = "fault-injection")]
    pub(crate) fn new_epoch_local(&self, channel: &str) -> Result<String, ServerError> {
        let mut st = self.lock();
        let st = &mut *st;
        check_channel(channel)?;
        let ch = st.channels.entry(channel.to_owned()).or_insert_with(Channel::new);
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
        let slow = deliver(&ch.subscribers, &frame, &mut st.delivered);
        st.kill_slow(slow);
        info!(channel, %head, "new epoch");
        Ok(head)
    }

    /// The channel's head (on Redis, as Redis has it now).
    pub(crate) async fn head(&self, channel: &str) -> Result<String, ServerError> {
        let Some(store) = &self.store else {
            return self.head_local(channel);
        };
        check_channel(channel)?;
        let snap = store.snapshot(channel, None, 0).await?;
        Ok(format!("{}-{}", snap.epoch, snap.head))
    }

    pub(crate) fn head_local(&self, channel: &str) -> Result<String, ServerError> {
        Ok(self.lock().channel(channel)?.head())
    }

    /// On Redis, brings this node's mirror of `channel` up to date (creating
    /// it on first use), so that a subscribe decides its outcome on
    /// everything published before it on any node. Nothing to do otherwise.
    pub(crate) async fn sync_channel(&self, channel: &str) -> Result<(), ServerError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        check_channel(channel)?;
        let history = self.cfg.history;
        loop {
            let after =
                self.lock().channels.get(channel).map(|ch| Position { generation: ch.generation, seq: ch.head_seq() });
            let started = Instant::now();
            let snap = store.snapshot(channel, after, PAGE).await;
            self.storage_latency.observe(started.elapsed());
            let snap = snap?;
            let full = snap.events.len() >= PAGE;
            let created = {
                let mut st = self.lock();
                let created = !st.channels.contains_key(channel);
                st.apply_snapshot(channel, &snap, history);
                created
            };
            if created {
                self.follow_wake.notify_one();
            }
            if !full {
                return Ok(());
            }
        }
    }

    /// The streams the follower reads: for each mirrored channel, its event
    /// stream and its presence log, each with the id to read after.
    pub(crate) fn follow_list(&self) -> Vec<Follow> {
        self.lock()
            .channels
            .iter()
            .filter(|(_, ch)| ch.generation > 0)
            .map(|(name, ch)| Follow {
                channel: name.clone(),
                after: Position { generation: ch.generation, seq: ch.head_seq() },
                presence_after: ch.plog.clone(),
            })
            .collect()
    }

    /// Applies entries the follower read from a channel's event stream;
    /// false when they do not follow the mirror.
    pub(crate) fn follow_events(&self, channel: &str, items: &[StreamItem]) -> bool {
        self.lock().apply_items(channel, items, self.cfg.history)
    }

    /// Delivers presence changes the follower read, and records how far the
    /// log was read.
    pub(crate) fn follow_presence(&self, channel: &str, changes: &[PresenceChange], last: &str) {
        let mut st = self.lock();
        if let Some(ch) = st.channels.get_mut(channel) {
            ch.plog = last.to_owned();
        }
        for change in changes {
            st.deliver_presence(channel, change);
        }
    }

    /// Every client id present on some channel through this node's
    /// connections, with its data.
    pub(crate) fn local_presence(&self) -> HashMap<(String, String), String> {
        let st = self.lock();
        let mut out = HashMap::new();
        for (name, ch) in &st.channels {
            for (id, member) in &ch.presence {
                out.insert((name.clone(), id.clone()), member.data.clone());
            }
        }
        out
    }

    /// Removes the long-polling members whose last poll is too long ago.
    pub(crate) fn expire_polls(&self) {
        self.lock().expire_polls(Instant::now());
    }

    /// The mirrored channels (on Redis).
    pub(crate) fn mirrored(&self) -> Vec<String> {
        self.lock().channels.iter().filter(|(_, ch)| ch.generation > 0).map(|(name, _)| name.clone()).collect()
    }

    /// Who is present on `channel`, sorted by client id: on Redis, over every
    /// node (expired members are removed first); else this node's.
    pub(crate) async fn presence(&self, channel: &str) -> Result<Vec<(String, String)>, ServerError> {
        check_channel(channel)?;
        match &self.store {
            Some(store) => {
                let started = Instant::now();
                let members = store.presence(channel, unix_ms()).await;
                self.storage_latency.observe(started.elapsed());
                members
            }
            None => {
                let st = self.lock();
                let mut members: Vec<(String, String)> = st
                    .channels
                    .get(channel)
                    .map(|ch| ch.presence.iter().map(|(id, m)| (id.clone(), m.data.clone())).collect())
                    .unwrap_or_default();
                members.sort();
                Ok(members)
            }
        }
    }

    /// Decides a handshake on `/ws`, `/sse` or `/poll` and records it.
    /// `request_error` is the status of an invalid request (not an upgrade,
    /// bad query parameters). Returns the fault refusing it, if any; a refusal
    /// by a fault takes precedence over an invalid request.
    pub(crate) fn admit(
        &self,
        transport: Transport,
        request_error: Option<u16>,
        token: Option<&str>,
    ) -> Option<Refusal> {
        let mut st = self.lock();
        let refusal = if st.disabled.contains(&transport) {
            Some(Refusal::Disabled(transport))
        } else if let Some(unavailable) = &mut st.unavailable {
            let retry_after = unavailable.retry_after;
            if let Some(remaining) = &mut unavailable.remaining {
                *remaining = remaining.saturating_sub(1);
                if *remaining == 0 {
                    st.unavailable = None;
                }
            }
            Some(Refusal::Unavailable(retry_after))
        } else if st.reject_auth || st.tokens.as_ref().is_some_and(|ok| !token.is_some_and(|t| ok.contains(t))) {
            Some(Refusal::Unauthorized)
        } else {
            None
        };
        let status = match (refusal, request_error) {
            (Some(refusal), _) => refusal.status(),
            (None, Some(status)) => status,
            (None, None) => transport.accepted_status(),
        };
        st.record_handshake(transport, status);
        debug!(transport = transport.name(), status, "handshake");
        refusal
    }

    /// Starts a long poll: decides every channel's outcome and collects the
    /// events after the cursors, under the lock. When every channel resumes
    /// with nothing to send and `hold` is set, registers the request as a
    /// subscriber of its channels under the same lock, so no event published
    /// after the check is missed.
    pub(crate) fn poll_start(
        self: &Arc<Self>,
        channels: &[ChannelCursor],
        hold_ms: u64,
        hold: bool,
        client: Option<&ClientInfo>,
        identity: &Arc<Identity>,
    ) -> PollStart {
        let mut st = self.lock();
        let st = &mut *st;
        let (body, holdable) = st.poll_answer(channels, hold_ms, identity, self.cfg.limits.max_subscriptions);
        let held = hold && holdable;
        if let Some(client) = client {
            // Present for a grace period after each poll is answered, and
            // while one is held (counted below).
            let until = Instant::now() + POLL_PRESENCE_GRACE;
            for (name, _) in channels {
                if identity.presence.allows(name) {
                    st.presence_poll(name, client, until);
                }
            }
        }
        if !held {
            return PollStart::Answer(body);
        }
        let registered = Self::register_locked(self, st, Transport::Poll, 1, client.cloned(), Arc::clone(identity));
        let Ok(registered) = registered else {
            // Not held (shutting down, or at the connection limit): the
            // client polls again.
            return PollStart::Answer(body);
        };
        let id = registered.registration.id();
        for (name, _) in channels {
            if let Some(ch) = st.channels.get_mut(name) {
                ch.subscribers.insert(id, Subscriber { tx: registered.tx.clone(), poll: true });
            }
        }
        if let Some(conn) = st.conns.get_mut(&id) {
            conn.subscriptions = channels.iter().map(|(name, _)| name.clone()).collect();
        }
        if let Some(client) = client {
            for (name, _) in channels {
                if identity.presence.allows(name) {
                    st.presence_mark(name, client, |m| m.refs += 1);
                }
            }
        }
        debug!(conn = id, "poll held");
        PollStart::Hold(registered)
    }

    /// The answer to a long poll at this moment.
    pub(crate) fn poll_answer(&self, channels: &[ChannelCursor], hold_ms: u64, identity: &Identity) -> String {
        self.lock().poll_answer(channels, hold_ms, identity, self.cfg.limits.max_subscriptions).0
    }

    /// Marks the server as shutting down and drops every connection.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.drop_all();
    }

    /// Starts a graceful shutdown: new connections are refused, and every
    /// open one is told to reconnect at once (elsewhere, given a choice) and
    /// ends. Returns how many were told.
    pub(crate) fn drain(&self) -> usize {
        let mut st = self.lock();
        st.closed = true;
        for conn in st.conns.values() {
            conn.mode.send_replace(Mode::Restart);
        }
        info!(count = st.conns.len(), "draining: every connection is told to reconnect");
        st.conns.len()
    }

    /// Completes when no connection is open.
    pub(crate) async fn drained(&self) {
        loop {
            let notified = self.drained.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.lock().conns.is_empty() {
                return;
            }
            notified.await;
        }
    }

    /// Whether the server accepts new connections (not shutting down).
    pub(crate) fn accepting(&self) -> bool {
        !self.lock().closed
    }

    pub(crate) fn stats(&self) -> Stats {
        let st = self.lock();
        let accepted = |t: Transport| st.accepted.get(&t).copied().unwrap_or(0);
        let open = |t: Transport| st.conns.values().filter(|c| c.transport == t).count();
        Stats {
            connections_accepted: st.accepted.values().sum(),
            websocket_accepted: accepted(Transport::WebSocket),
            sse_accepted: accepted(Transport::Sse),
            polls_accepted: accepted(Transport::Poll),
            connections_open: st.conns.len(),
            websocket_open: open(Transport::WebSocket),
            sse_open: open(Transport::Sse),
            polls_held: open(Transport::Poll),
            subscriptions_open: st.conns.values().map(|c| c.subscriptions.len()).sum(),
            events_delivered: st.delivered,
            resumes: st.resumes.clone(),
            refusals: st.refusals.clone(),
            handshakes_refused: st.refused,
            slow_consumer_drops: st.slow_drops,
            mirror_rebuilds: st.rebuilds,
            events_published: st.published,
            publish_requests: st.publish_requests,
            subscribes: st.subscribes,
            handshakes: st.handshakes.iter().copied().collect(),
            tls_failures: self.tls_failures.load(Ordering::Relaxed),
        }
    }
}

/// Milliseconds since the Unix epoch (presence expiry is shared between
/// nodes, so it is wall-clock time).
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_frame_knows_where_its_id_is() {
        for (channel, id, data) in [
            ("c", "ab12cd34-1", "x"),
            ("orders.eu:2-x_y", "zz99zz99-18446744073709551615", r#"{"id":"not this one"}"#),
            ("id", "e-7", "\"id\":\""),
        ] {
            let frame = encode(&ServerFrame::Event {
                channel: channel.into(),
                id: id.into(),
                event: Some("id".into()),
                data: data.into(),
            });
            assert_eq!(frame.event_id(), Some(id), "{}", frame.json.as_str());
        }
        assert_eq!(encode(&ServerFrame::Ping).event_id(), None);
    }
}
