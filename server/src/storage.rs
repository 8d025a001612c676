//! [`Storage`]: where the channels of several nodes live, so that they serve
//! the same channels with the same ids.
//!
//! A node without storage keeps its channels in its own memory (the fastest
//! choice for one node). With a storage, every node keeps a *mirror* of each
//! channel its clients use: it publishes through the storage, follows the
//! storage's changes ([`Storage::changes`]) and delivers them to its own
//! subscribers. Two implementations come with the crate:
//!
//! - [`RedisStorage`](crate::RedisStorage): Redis Streams, for nodes in
//!   separate processes and machines ([`Config::redis`](crate::Config::redis)
//!   sets it up).
//! - [`MemoryStorage`]: the same model in this process, for several hubs in
//!   one program (tests, a server that mounts several routers) and as the
//!   reference for writing another implementation.
//!
//! # The model an implementation keeps, per channel
//!
//! - An *epoch* with a name (never reused on the channel) and a
//!   *generation* (1, 2, … one per epoch), and the *head*: the seq of the
//!   epoch's newest event (0 when it has none). A channel that does not exist
//!   is created on first use with generation 1, a fresh name
//!   ([`fresh_epoch_name`]) and head 0.
//! - An ordered stream: one item per event, at position
//!   `(generation, seq)`, and an epoch marker at `(generation, 0)` when an
//!   epoch starts. Publishing keeps the newest `retain` events of the epoch
//!   and drops everything older (markers included).
//! - Idempotency keys: the id each key was first published as, for
//!   [`IDEMPOTENCY_TTL_SECS`](crate::IDEMPOTENCY_TTL_SECS).
//! - Presence: members (client id, data, the node that owns it, when it
//!   expires) and a bounded log of joins and leaves, read after an opaque
//!   cursor.
//!
//! Every operation on one channel is atomic: two nodes publishing to the
//! same channel never get the same seq.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio::sync::watch;

use crate::Error;

/// The most items [`Storage::snapshot`] and [`Storage::changes`] are asked
/// for at once, per channel; longer histories come in several pages.
pub const PAGE: usize = 1_000;

/// How long [`Storage::changes`] waits for something new before it answers
/// with nothing.
pub const FOLLOW_BLOCK: Duration = Duration::from_millis(200);

/// How many presence changes each channel's log keeps (about).
pub const PRESENCE_LOG: usize = 1_000;

/// The future a [`Storage`] method returns.
pub type StorageFuture<'a, T> = BoxFuture<'a, Result<T, Error>>;

/// A place in a channel's stream: the epoch's generation and the seq in it
/// (0 for the epoch's marker).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// The epoch's generation: 1 for the channel's first epoch.
    pub generation: u64,
    /// The event's seq in the epoch; 0 is the epoch's start.
    pub seq: u64,
}

/// An event as the storage keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Its seq in the epoch (the id is `<epoch>-<seq>`).
    pub seq: u64,
    /// Its event type, if it has one.
    pub event: Option<String>,
    /// Its data.
    pub data: String,
}

/// An event to publish.
#[derive(Debug, Clone, Copy)]
pub struct NewEvent<'a> {
    /// The event type, if any.
    pub event: Option<&'a str>,
    /// The idempotency key, if any: a key already applied on the channel
    /// returns its first id and publishes nothing.
    pub key: Option<&'a str>,
    /// The data.
    pub data: &'a str,
    /// How many of the epoch's newest events to keep (the node's
    /// [`Config::history`](crate::Config::history)).
    pub retain: usize,
}

/// What a publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The event's id, `<epoch>-<seq>` (for a repeated key, the first one's).
    pub id: String,
    /// False when the key was applied before and nothing was published.
    pub applied: bool,
}

/// A channel as the storage has it at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSnapshot {
    /// The current epoch's name.
    pub epoch: String,
    /// The current epoch's generation.
    pub generation: u64,
    /// The seq of the epoch's newest event; 0 when it has none.
    pub head: u64,
    /// Events of the current epoch, in order: those after the position asked
    /// for when it is in the current generation, else from the epoch's
    /// oldest retained event; at most the number asked for.
    pub events: Vec<StoredEvent>,
    /// Where the channel's presence log is now: follow it after this.
    pub presence_cursor: String,
}

/// One item of a channel's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamItem {
    /// The epoch `name` of generation `generation` starts.
    Epoch {
        /// The epoch's generation.
        generation: u64,
        /// The epoch's name.
        name: String,
    },
    /// An event of generation `generation`.
    Event {
        /// The epoch's generation.
        generation: u64,
        /// The event.
        event: StoredEvent,
    },
}

/// A join or leave in a channel's presence log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceChange {
    /// True for a join, false for a leave.
    pub join: bool,
    /// The member's client id.
    pub client_id: String,
    /// Its presence data.
    pub data: String,
}

/// A channel a node follows, and how far it has read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Follow {
    /// The channel.
    pub channel: String,
    /// The stream's items after this position are wanted.
    pub after: Position,
    /// The presence log's changes after this cursor are wanted.
    pub presence_after: String,
}

/// What changed on one followed channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// The channel.
    pub channel: String,
    /// Stream items after the followed position, in order (epoch markers and
    /// events of any later generation included); items that retention
    /// removed are missing, which the node notices as a gap.
    pub items: Vec<StreamItem>,
    /// Presence changes after the followed cursor, in order.
    pub presence: Vec<PresenceChange>,
    /// The cursor after the last of `presence`, when there are any.
    pub presence_cursor: Option<String>,
}

/// A member to add to or refresh in a channel's presence.
#[derive(Debug, Clone, Copy)]
pub struct PresenceMember<'a> {
    /// The client id.
    pub client_id: &'a str,
    /// Its presence data.
    pub data: &'a str,
    /// The node whose connection holds it: only that node removes it.
    pub node: &'a str,
    /// When it expires unless refreshed, in milliseconds since the Unix
    /// epoch.
    pub expires_ms: u64,
}

/// Where the channels of several nodes live: history, epochs, idempotency
/// keys and presence (see the [module](self) for the model).
///
/// Every node sharing a storage must be configured with the same
/// [`history`](crate::Config::history) and
/// [`presence_ttl`](crate::Config::presence_ttl). Errors are
/// [`Error::Storage`]; a node answers them as "unavailable, retry".
pub trait Storage: Send + Sync + 'static {
    /// Publishes an event (see [`NewEvent`]).
    fn publish<'a>(&'a self, channel: &'a str, event: NewEvent<'a>) -> StorageFuture<'a, Published>;

    /// The channel now, with at most `limit` events (see
    /// [`ChannelSnapshot::events`]); `limit` 0 reads the head alone.
    fn snapshot<'a>(
        &'a self,
        channel: &'a str,
        after: Option<Position>,
        limit: usize,
    ) -> StorageFuture<'a, ChannelSnapshot>;

    /// What changed on the followed channels, at most `limit` items of each
    /// kind per channel; channels without changes are left out. Waits up to
    /// about [`FOLLOW_BLOCK`] for a change before answering with none. The
    /// node drops the future when it starts following another channel, and
    /// calls again.
    fn changes<'a>(&'a self, follow: &'a [Follow], limit: usize) -> StorageFuture<'a, Vec<Changes>>;

    /// Starts a new epoch with a name the channel never had; returns its
    /// head, `<epoch>-0`.
    fn new_epoch<'a>(&'a self, channel: &'a str) -> StorageFuture<'a, String>;

    /// Keeps the newest `keep` events of the epoch; returns the oldest
    /// retained event's id, or `None` when none is.
    fn truncate<'a>(&'a self, channel: &'a str, keep: usize) -> StorageFuture<'a, Option<String>>;

    /// Adds or refreshes a member, logging a join when it was not present.
    fn presence_join<'a>(&'a self, channel: &'a str, member: PresenceMember<'a>) -> StorageFuture<'a, ()>;

    /// Removes a member if `node` owns it, logging a leave.
    fn presence_leave<'a>(&'a self, channel: &'a str, client_id: &'a str, node: &'a str) -> StorageFuture<'a, ()>;

    /// Removes the members that expired by `now_ms` (logging a leave for
    /// each) and returns those left, as (client id, data) sorted by client
    /// id.
    fn presence<'a>(&'a self, channel: &'a str, now_ms: u64) -> StorageFuture<'a, Vec<(String, String)>>;

    /// Whether the storage answers (what `/readyz` asks).
    fn ping(&self) -> StorageFuture<'_, ()>;
}

/// A fresh random epoch name: 8 characters from `a-z0-9`.
pub fn fresh_epoch_name() -> String {
    crate::state::new_epoch_name()
}

/// How many idempotency keys a [`MemoryStorage`] channel remembers at most
/// (the oldest go first; each also expires after
/// [`IDEMPOTENCY_TTL_SECS`](crate::IDEMPOTENCY_TTL_SECS)).
pub const MEMORY_IDEMPOTENCY_KEYS: usize = 100_000;

/// [`Storage`] in this process: hubs given clones of one `MemoryStorage`
/// share their channels as nodes on Redis do, without a Redis server.
///
/// ```no_run
/// # async fn demo() -> Result<(), resub_server::Error> {
/// use std::sync::Arc;
/// use resub_server::{Config, Hub, MemoryStorage};
///
/// let storage = Arc::new(MemoryStorage::new());
/// let config = || Config { storage: Some(storage.clone()), ..Config::default() };
/// let (a, b) = (Hub::new(config()).await?, Hub::new(config()).await?);
/// let id = a.publish("orders", "{}").await?;
/// assert_eq!(b.head("orders").await?, id);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct MemoryStorage {
    inner: Arc<MemoryInner>,
}

#[derive(Debug)]
struct MemoryInner {
    channels: Mutex<HashMap<String, MemChannel>>,
    /// Bumped on every change a follower may be waiting for.
    version: watch::Sender<u64>,
}

#[derive(Debug)]
struct MemChannel {
    epoch: String,
    generation: u64,
    seq: u64,
    used_epochs: HashSet<String>,
    stream: VecDeque<(Position, StreamItem)>,
    keys: HashMap<String, (String, Instant)>,
    key_order: VecDeque<String>,
    members: HashMap<String, MemMember>,
    presence_log: VecDeque<(u64, PresenceChange)>,
    presence_next: u64,
}

#[derive(Debug)]
struct MemMember {
    data: String,
    node: String,
    expires_ms: u64,
}

impl MemChannel {
    fn new() -> Self {
        let epoch = fresh_epoch_name();
        Self {
            used_epochs: HashSet::from([epoch.clone()]),
            epoch,
            generation: 1,
            seq: 0,
            stream: VecDeque::new(),
            keys: HashMap::new(),
            key_order: VecDeque::new(),
            members: HashMap::new(),
            presence_log: VecDeque::new(),
            presence_next: 1,
        }
    }

    /// Drops every stream item before `min`.
    fn trim(&mut self, min: Position) {
        while self.stream.front().is_some_and(|(at, _)| *at < min) {
            self.stream.pop_front();
        }
    }

    fn key(&mut self, key: &str) -> Option<String> {
        let ttl = Duration::from_secs(crate::IDEMPOTENCY_TTL_SECS);
        match self.keys.get(key) {
            Some((id, at)) if at.elapsed() < ttl => Some(id.clone()),
            Some(_) => {
                self.keys.remove(key);
                None
            }
            None => None,
        }
    }

    fn remember(&mut self, key: &str, id: &str) {
        if self.keys.insert(key.to_owned(), (id.to_owned(), Instant::now())).is_none() {
            self.key_order.push_back(key.to_owned());
        }
        while self.key_order.len() > MEMORY_IDEMPOTENCY_KEYS {
            if let Some(old) = self.key_order.pop_front() {
                self.keys.remove(&old);
            }
        }
    }

    fn log_presence(&mut self, change: PresenceChange) {
        self.presence_log.push_back((self.presence_next, change));
        self.presence_next += 1;
        while self.presence_log.len() > PRESENCE_LOG {
            self.presence_log.pop_front();
        }
    }

    fn presence_cursor(&self) -> String {
        (self.presence_next - 1).to_string()
    }
}

impl Default for MemoryStorage {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStorage {
    /// An empty storage.
    pub fn new() -> Self {
        Self { inner: Arc::new(MemoryInner { channels: Mutex::new(HashMap::new()), version: watch::channel(0).0 }) }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, MemChannel>> {
        self.inner.channels.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on the channel (created on first use); wakes followers when
    /// `f` says it changed something.
    fn with<T>(&self, channel: &str, f: impl FnOnce(&mut MemChannel) -> (T, bool)) -> T {
        let (out, changed) = {
            let mut channels = self.lock();
            f(channels.entry(channel.to_owned()).or_insert_with(MemChannel::new))
        };
        if changed {
            self.inner.version.send_modify(|v| *v = v.wrapping_add(1));
        }
        out
    }

    fn collect(&self, follow: &[Follow], limit: usize) -> Vec<Changes> {
        let channels = self.lock();
        let mut out = Vec::new();
        for f in follow {
            let Some(ch) = channels.get(&f.channel) else {
                continue;
            };
            let items: Vec<StreamItem> =
                ch.stream.iter().filter(|(at, _)| *at > f.after).take(limit).map(|(_, item)| item.clone()).collect();
            let after: u64 = f.presence_after.parse().unwrap_or(0);
            let changes: Vec<&(u64, PresenceChange)> =
                ch.presence_log.iter().filter(|(id, _)| *id > after).take(limit).collect();
            let presence_cursor = changes.last().map(|(id, _)| id.to_string());
            let presence = changes.into_iter().map(|(_, c)| c.clone()).collect::<Vec<_>>();
            if !items.is_empty() || !presence.is_empty() {
                out.push(Changes { channel: f.channel.clone(), items, presence, presence_cursor });
            }
        }
        out
    }
}

impl Storage for MemoryStorage {
    fn publish<'a>(&'a self, channel: &'a str, new: NewEvent<'a>) -> StorageFuture<'a, Published> {
        let published = self.with(channel, |ch| {
            if let Some(first) = new.key.and_then(|k| ch.key(k)) {
                return (Published { id: first, applied: false }, false);
            }
            ch.seq += 1;
            let seq = ch.seq;
            let min = (seq + 1).saturating_sub(new.retain as u64);
            ch.trim(Position { generation: ch.generation, seq: min });
            let event = StoredEvent { seq, event: new.event.map(str::to_owned), data: new.data.to_owned() };
            let at = Position { generation: ch.generation, seq };
            ch.stream.push_back((at, StreamItem::Event { generation: ch.generation, event }));
            let id = format!("{}-{seq}", ch.epoch);
            if let Some(key) = new.key {
                ch.remember(key, &id);
            }
            (Published { id, applied: true }, true)
        });
        Box::pin(async move { Ok(published) })
    }

    fn snapshot<'a>(
        &'a self,
        channel: &'a str,
        after: Option<Position>,
        limit: usize,
    ) -> StorageFuture<'a, ChannelSnapshot> {
        let snap = self.with(channel, |ch| {
            let from = match after {
                Some(p) if p.generation == ch.generation => p,
                _ => Position { generation: ch.generation, seq: 0 },
            };
            let events = ch
                .stream
                .iter()
                .filter(|(at, _)| at.generation == ch.generation && *at > from)
                .filter_map(|(_, item)| match item {
                    StreamItem::Event { event, .. } => Some(event.clone()),
                    StreamItem::Epoch { .. } => None,
                })
                .take(limit)
                .collect();
            let snap = ChannelSnapshot {
                epoch: ch.epoch.clone(),
                generation: ch.generation,
                head: ch.seq,
                events,
                presence_cursor: ch.presence_cursor(),
            };
            (snap, false)
        });
        Box::pin(async move { Ok(snap) })
    }

    fn changes<'a>(&'a self, follow: &'a [Follow], limit: usize) -> StorageFuture<'a, Vec<Changes>> {
        Box::pin(async move {
            let mut version = self.inner.version.subscribe();
            let deadline = tokio::time::sleep(FOLLOW_BLOCK);
            tokio::pin!(deadline);
            loop {
                // Seen before looking, so a change made while looking wakes
                // the wait below.
                version.borrow_and_update();
                let changes = self.collect(follow, limit);
                if !changes.is_empty() {
                    return Ok(changes);
                }
                tokio::select! {
                    _ = version.changed() => {}
                    () = &mut deadline => return Ok(Vec::new()),
                }
            }
        })
    }

    fn new_epoch<'a>(&'a self, channel: &'a str) -> StorageFuture<'a, String> {
        let head = self.with(channel, |ch| {
            let mut name = fresh_epoch_name();
            while !ch.used_epochs.insert(name.clone()) {
                name = fresh_epoch_name();
            }
            ch.generation += 1;
            ch.seq = 0;
            ch.epoch.clone_from(&name);
            let at = Position { generation: ch.generation, seq: 0 };
            ch.trim(at);
            ch.stream.push_back((at, StreamItem::Epoch { generation: ch.generation, name: name.clone() }));
            (format!("{name}-0"), true)
        });
        Box::pin(async move { Ok(head) })
    }

    fn truncate<'a>(&'a self, channel: &'a str, keep: usize) -> StorageFuture<'a, Option<String>> {
        let oldest = self.with(channel, |ch| {
            let min = (ch.seq + 1).saturating_sub(keep as u64).max(1);
            ch.trim(Position { generation: ch.generation, seq: min });
            let oldest = ch.stream.iter().find_map(|(at, item)| match item {
                StreamItem::Event { .. } if at.generation == ch.generation => Some(at.seq),
                _ => None,
            });
            (oldest.map(|seq| format!("{}-{seq}", ch.epoch)), false)
        });
        Box::pin(async move { Ok(oldest) })
    }

    fn presence_join<'a>(&'a self, channel: &'a str, member: PresenceMember<'a>) -> StorageFuture<'a, ()> {
        self.with(channel, |ch| {
            let previous = ch.members.insert(
                member.client_id.to_owned(),
                MemMember { data: member.data.to_owned(), node: member.node.to_owned(), expires_ms: member.expires_ms },
            );
            if previous.is_some() {
                return ((), false);
            }
            ch.log_presence(PresenceChange {
                join: true,
                client_id: member.client_id.to_owned(),
                data: member.data.to_owned(),
            });
            ((), true)
        });
        Box::pin(async { Ok(()) })
    }

    fn presence_leave<'a>(&'a self, channel: &'a str, client_id: &'a str, node: &'a str) -> StorageFuture<'a, ()> {
        self.with(channel, |ch| {
            if ch.members.get(client_id).is_none_or(|m| m.node != node) {
                return ((), false);
            }
            let data = ch.members.remove(client_id).map(|m| m.data).unwrap_or_default();
            ch.log_presence(PresenceChange { join: false, client_id: client_id.to_owned(), data });
            ((), true)
        });
        Box::pin(async { Ok(()) })
    }

    fn presence<'a>(&'a self, channel: &'a str, now_ms: u64) -> StorageFuture<'a, Vec<(String, String)>> {
        let members = self.with(channel, |ch| {
            let mut gone: Vec<String> =
                ch.members.iter().filter(|(_, m)| m.expires_ms <= now_ms).map(|(id, _)| id.clone()).collect();
            gone.sort();
            for id in &gone {
                let data = ch.members.remove(id).map(|m| m.data).unwrap_or_default();
                ch.log_presence(PresenceChange { join: false, client_id: id.clone(), data });
            }
            let mut members: Vec<(String, String)> =
                ch.members.iter().map(|(id, m)| (id.clone(), m.data.clone())).collect();
            members.sort();
            (members, !gone.is_empty())
        });
        Box::pin(async move { Ok(members) })
    }

    fn ping(&self) -> StorageFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With time paused, the follower's block time cannot pass while the
    /// publish runs: the one `changes` call answers with the event only if
    /// the publish woke it.
    #[tokio::test(start_paused = true)]
    async fn a_publish_wakes_a_follower_waiting_in_memory() {
        let storage = MemoryStorage::new();
        storage.snapshot("c", None, 0).await.unwrap();
        let follow =
            [Follow { channel: "c".into(), after: Position { generation: 1, seq: 0 }, presence_after: "0".into() }];
        let waiting = storage.changes(&follow, PAGE);
        let publish = async {
            tokio::task::yield_now().await;
            storage.publish("c", NewEvent { event: None, key: None, data: "x", retain: 10 }).await.unwrap();
        };
        let (changes, ()) = tokio::join!(waiting, publish);
        let changes = changes.unwrap();
        assert_eq!(changes.len(), 1, "{changes:?}");
        assert!(matches!(&changes[0].items[..], [StreamItem::Event { event, .. }] if event.data == "x"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_with_nothing_to_read_answers_empty_after_its_block_time() {
        let storage = MemoryStorage::new();
        let follow =
            [Follow { channel: "c".into(), after: Position { generation: 1, seq: 0 }, presence_after: "0".into() }];
        let started = tokio::time::Instant::now();
        assert!(storage.changes(&follow, PAGE).await.unwrap().is_empty());
        assert_eq!(started.elapsed(), FOLLOW_BLOCK);
    }
}
