//! Channel history, epochs and presence kept in Redis, so that several
//! fixture nodes serve the same channels.
//!
//! Layout, for a key prefix `P` and a channel `C` (the braces are a Redis
//! Cluster hash tag: every key of a channel lives in one slot):
//!
//! | key | type | what |
//! |---|---|---|
//! | `P:{C}:meta` | hash | `epoch` (name), `gen` (the generation: 1, 2, … one per epoch), `seq` (the head) |
//! | `P:{C}:events` | stream | entry `GEN-SEQ` per event, fields `d` (data) and `e` (event type, if any); entry `GEN-0` with field `x` (the epoch's name) starts an epoch |
//! | `P:{C}:epochs` | set | every epoch name the channel had, so none is reused |
//! | `P:{C}:idem:KEY` | string | the id an idempotency key was applied as; expires after [`IDEMPOTENCY_TTL_SECS`] |
//! | `P:{C}:presence` | sorted set | client ids present, scored by when they expire (ms) |
//! | `P:{C}:pdata` | hash | client id → presence data |
//! | `P:{C}:powner` | hash | client id → the node that last refreshed it |
//! | `P:{C}:plog` | stream | presence changes: fields `a` (`join`/`leave`), `c` (client id), `d` (data) |
//!
//! Every change is one Lua script, so that two nodes publishing to the same
//! channel cannot hand out the same sequence number, and retention
//! (`XADD … MINID`) keeps exactly the newest `history` events of the epoch.
//! Stream entry ids carry the generation and the sequence number, so that a
//! node following the stream with `XREAD` sees events in id order, an epoch
//! change as a `GEN-0` entry, and a hole as a jump.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, AsyncConnectionConfig, Script};
use tracing::{debug, warn};

use crate::ServerError;
use crate::state::{Shared, unix_ms};

/// How long an idempotency key is remembered in Redis (24 hours).
pub const IDEMPOTENCY_TTL_SECS: u64 = 24 * 3600;

/// The most entries one snapshot or `XREAD` returns; longer histories come
/// in several pages.
pub(crate) const PAGE: usize = 1_000;

/// How long the follower's `XREAD` blocks when nothing arrives.
pub(crate) const FOLLOW_BLOCK_MS: usize = 200;

/// Where a node keeps its channels in Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// The server, `redis://HOST:PORT[/DB]`.
    pub url: String,
    /// Prefix of every key the node uses (default `resub`). Nodes that share
    /// channels must use the same prefix, the same
    /// [`history`](crate::Config::history) and the same
    /// [`presence_ttl`](crate::Config::presence_ttl).
    pub prefix: String,
}

impl RedisConfig {
    /// Redis at `url` with the default key prefix `resub`.
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), prefix: "resub".to_owned() }
    }
}

const ENSURE: &str = r"
local function ensure(meta, epochs, fresh)
  if redis.call('EXISTS', meta) == 0 then
    redis.call('HSET', meta, 'epoch', fresh, 'gen', 1, 'seq', 0)
    redis.call('SADD', epochs, fresh)
  end
end
";

/// KEYS: meta, events, epochs, idem. ARGV: fresh epoch, history, has key
/// (`1`/`0`), key ttl, data, event type (`""`: none).
/// Returns `{id, applied}` (applied 0 for a repeated key).
const PUBLISH: &str = r"
ensure(KEYS[1], KEYS[3], ARGV[1])
if ARGV[3] == '1' then
  local prev = redis.call('GET', KEYS[4])
  if prev then return {prev, 0} end
end
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local gen = redis.call('HGET', KEYS[1], 'gen')
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local min = seq - tonumber(ARGV[2]) + 1
if min < 0 then min = 0 end
if ARGV[6] == '' then
  redis.call('XADD', KEYS[2], 'MINID', '=', gen .. '-' .. min, gen .. '-' .. seq, 'd', ARGV[5])
else
  redis.call('XADD', KEYS[2], 'MINID', '=', gen .. '-' .. min, gen .. '-' .. seq, 'd', ARGV[5], 'e', ARGV[6])
end
local id = epoch .. '-' .. seq
if ARGV[3] == '1' then redis.call('SET', KEYS[4], id, 'EX', ARGV[4]) end
return {id, 1}
";

/// KEYS: meta, events, epochs, plog. ARGV: fresh epoch, after gen (`""`:
/// from the start of the epoch), after seq, count (0: no entries).
/// Returns `{epoch, generation, head, entries, plog last id}`; entries are those of
/// the current epoch after `after gen-after seq` when that is the current
/// generation, else all of the current epoch.
const SNAPSHOT: &str = r"
ensure(KEYS[1], KEYS[3], ARGV[1])
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local gen = redis.call('HGET', KEYS[1], 'gen')
local head = redis.call('HGET', KEYS[1], 'seq')
local from = gen .. '-1'
if ARGV[2] == gen then from = '(' .. gen .. '-' .. ARGV[3] end
local entries = {}
if tonumber(ARGV[4]) > 0 then
  entries = redis.call('XRANGE', KEYS[2], from, gen .. '-18446744073709551615', 'COUNT', ARGV[4])
end
local last = redis.call('XREVRANGE', KEYS[4], '+', '-', 'COUNT', 1)
local plog = '0-0'
if #last > 0 then plog = last[1][1] end
return {epoch, tonumber(gen), tonumber(head), entries, plog}
";

/// KEYS: meta, events, epochs. ARGV: fresh epoch for a new channel, the new
/// epoch's name. Returns the new head, or false when the name was used
/// before (the caller draws another).
#[cfg(feature = "fault-injection")]
const NEW_EPOCH: &str = r"
ensure(KEYS[1], KEYS[3], ARGV[1])
if redis.call('SISMEMBER', KEYS[3], ARGV[2]) == 1 then return false end
redis.call('SADD', KEYS[3], ARGV[2])
local gen = redis.call('HINCRBY', KEYS[1], 'gen', 1)
redis.call('HSET', KEYS[1], 'epoch', ARGV[2], 'seq', 0)
redis.call('XADD', KEYS[2], 'MINID', '=', gen .. '-0', gen .. '-0', 'x', ARGV[2])
return ARGV[2] .. '-0'
";

/// KEYS: meta, events, epochs. ARGV: fresh epoch, keep. Returns the oldest
/// retained id, or false when none is.
#[cfg(feature = "fault-injection")]
const TRUNCATE: &str = r"
ensure(KEYS[1], KEYS[3], ARGV[1])
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local gen = redis.call('HGET', KEYS[1], 'gen')
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq'))
local min = seq - tonumber(ARGV[2]) + 1
if min < 1 then min = 1 end
redis.call('XTRIM', KEYS[2], 'MINID', '=', gen .. '-' .. min)
local first = redis.call('XRANGE', KEYS[2], gen .. '-1', '+', 'COUNT', 1)
if #first == 0 then return false end
local s = string.match(first[1][1], '-(%d+)$')
return epoch .. '-' .. s
";

/// KEYS: presence, pdata, powner, plog. ARGV: client id, data, node, expiry
/// (ms), plog length. Adds or refreshes a member owned by this node; logs a
/// `join` when it was not present.
const PRESENCE_JOIN: &str = r"
local was = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
if not was then
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*', 'a', 'join', 'c', ARGV[1], 'd', ARGV[2])
  return 1
end
return 0
";

/// KEYS: presence, pdata, powner, plog. ARGV: client id, node, plog length.
/// Removes a member if this node owns it, logging a `leave`.
const PRESENCE_LEAVE: &str = r"
if redis.call('HGET', KEYS[3], ARGV[1]) ~= ARGV[2] then return 0 end
local data = redis.call('HGET', KEYS[2], ARGV[1]) or ''
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[3], '*', 'a', 'leave', 'c', ARGV[1], 'd', data)
return 1
";

/// KEYS: presence, pdata, powner, plog. ARGV: now (ms), plog length.
/// Removes every member whose expiry passed, logging a `leave` for each;
/// returns the members left as `{client id, data, …}`.
const PRESENCE_SWEEP: &str = r"
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for _, c in ipairs(gone) do
  local data = redis.call('HGET', KEYS[2], c) or ''
  redis.call('ZREM', KEYS[1], c)
  redis.call('HDEL', KEYS[2], c)
  redis.call('HDEL', KEYS[3], c)
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[2], '*', 'a', 'leave', 'c', c, 'd', data)
end
local out = {}
for _, c in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  table.insert(out, c)
  table.insert(out, redis.call('HGET', KEYS[2], c) or '')
end
return out
";

/// How many presence changes each channel's log keeps (about).
const PLOG_LEN: u32 = 1_000;

/// One event entry of a channel's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) seq: u64,
    pub(crate) event: Option<String>,
    pub(crate) data: String,
}

/// A channel as Redis has it at one moment.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(crate) epoch: String,
    pub(crate) generation: u64,
    pub(crate) head: u64,
    pub(crate) entries: Vec<Entry>,
    /// The id of the newest presence change, to follow the log after it.
    pub(crate) plog: String,
}

/// One entry read from a channel's event stream by the follower.
#[derive(Debug)]
pub(crate) enum StreamItem {
    /// `GEN-0`: the epoch `name` starts.
    Epoch { generation: u64, name: String },
    /// `GEN-SEQ`: an event.
    Event { generation: u64, entry: Entry },
}

/// One presence change read from a channel's presence log.
#[derive(Debug, Clone)]
pub(crate) struct PresenceChange {
    pub(crate) join: bool,
    pub(crate) client_id: String,
    pub(crate) data: String,
}

/// The Redis side of a node: a connection for commands and the scripts.
pub(crate) struct Store {
    client: redis::Client,
    conn: MultiplexedConnection,
    prefix: String,
    history: usize,
    publish: Script,
    snapshot: Script,
    #[cfg(feature = "fault-injection")]
    new_epoch: Script,
    #[cfg(feature = "fault-injection")]
    truncate: Script,
    join: Script,
    leave: Script,
    sweep: Script,
}

fn redis_error(e: redis::RedisError) -> ServerError {
    ServerError::Redis(e.to_string())
}

/// Parses a stream id `GEN-SEQ`.
pub(crate) fn parse_stream_id(id: &str) -> Option<(u64, u64)> {
    let (g, s) = id.split_once('-')?;
    Some((g.parse().ok()?, s.parse().ok()?))
}

fn entry_from_fields(seq: u64, fields: &[String]) -> Entry {
    let mut entry = Entry { seq, event: None, data: String::new() };
    for pair in fields.chunks_exact(2) {
        match pair[0].as_str() {
            "d" => entry.data.clone_from(&pair[1]),
            "e" => entry.event = Some(pair[1].clone()),
            _ => {}
        }
    }
    entry
}

impl Store {
    /// Connects to Redis; fails when it cannot be reached within a few
    /// seconds.
    pub(crate) async fn connect(cfg: &RedisConfig, history: usize) -> Result<Self, ServerError> {
        let client = redis::Client::open(cfg.url.as_str()).map_err(redis_error)?;
        let conn = client.get_multiplexed_async_connection_with_config(&command_config()).await.map_err(redis_error)?;
        let script = |body: &str| Script::new(&format!("{ENSURE}{body}"));
        Ok(Self {
            client,
            conn,
            prefix: cfg.prefix.clone(),
            history,
            publish: script(PUBLISH),
            snapshot: script(SNAPSHOT),
            #[cfg(feature = "fault-injection")]
            new_epoch: script(NEW_EPOCH),
            #[cfg(feature = "fault-injection")]
            truncate: script(TRUNCATE),
            join: Script::new(PRESENCE_JOIN),
            leave: Script::new(PRESENCE_LEAVE),
            sweep: Script::new(PRESENCE_SWEEP),
        })
    }

    /// Whether Redis answers a `PING`.
    pub(crate) async fn ping(&self) -> Result<(), ServerError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING").query_async::<String>(&mut conn).await.map(drop).map_err(redis_error)
    }

    /// A separate connection for blocking reads.
    pub(crate) async fn follower_connection(&self) -> Result<MultiplexedConnection, ServerError> {
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_millis(FOLLOW_BLOCK_MS as u64 + 2_000)));
        self.client.get_multiplexed_async_connection_with_config(&cfg).await.map_err(redis_error)
    }

    pub(crate) fn key(&self, channel: &str, what: &str) -> String {
        format!("{}:{{{channel}}}:{what}", self.prefix)
    }

    /// Publishes; returns the id and whether it was applied now (false for a
    /// repeated idempotency key).
    pub(crate) async fn publish(
        &self,
        channel: &str,
        key: Option<&str>,
        event: Option<&str>,
        data: &str,
    ) -> Result<(String, bool), ServerError> {
        let idem = self.key(channel, &format!("idem:{}", key.unwrap_or("")));
        let (id, applied): (String, u8) = self
            .publish
            .key(self.key(channel, "meta"))
            .key(self.key(channel, "events"))
            .key(self.key(channel, "epochs"))
            .key(idem)
            .arg(crate::state::new_epoch_name())
            .arg(self.history)
            .arg(if key.is_some() { "1" } else { "0" })
            .arg(IDEMPOTENCY_TTL_SECS)
            .arg(data)
            .arg(event.unwrap_or(""))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        Ok((id, applied == 1))
    }

    /// The channel's state, with its events after `after` (generation and
    /// seq) when that is the current generation, else from the epoch's start;
    /// at most [`PAGE`] events.
    pub(crate) async fn snapshot(
        &self,
        channel: &str,
        after: Option<(u64, u64)>,
        count: usize,
    ) -> Result<Snapshot, ServerError> {
        type Raw = (String, u64, u64, Vec<(String, Vec<String>)>, String);
        let (g, s) = after.map_or((String::new(), String::new()), |(g, s)| (g.to_string(), s.to_string()));
        let (epoch, generation, head, raw, plog): Raw = self
            .snapshot
            .key(self.key(channel, "meta"))
            .key(self.key(channel, "events"))
            .key(self.key(channel, "epochs"))
            .key(self.key(channel, "plog"))
            .arg(crate::state::new_epoch_name())
            .arg(g)
            .arg(s)
            .arg(count)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)?;
        let entries = raw
            .iter()
            .filter_map(|(id, fields)| {
                let (_, seq) = parse_stream_id(id)?;
                Some(entry_from_fields(seq, fields))
            })
            .collect();
        Ok(Snapshot { epoch, generation, head, entries, plog })
    }

    /// Starts a new epoch; returns its head, `<epoch>-0`.
    #[cfg(feature = "fault-injection")]
    pub(crate) async fn new_epoch(&self, channel: &str) -> Result<String, ServerError> {
        loop {
            let head: Option<String> = self
                .new_epoch
                .key(self.key(channel, "meta"))
                .key(self.key(channel, "events"))
                .key(self.key(channel, "epochs"))
                .arg(crate::state::new_epoch_name())
                .arg(crate::state::new_epoch_name())
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(redis_error)?;
            if let Some(head) = head {
                return Ok(head);
            }
        }
    }

    /// Keeps the newest `keep` events; returns the oldest retained id.
    #[cfg(feature = "fault-injection")]
    pub(crate) async fn truncate(&self, channel: &str, keep: usize) -> Result<Option<String>, ServerError> {
        self.truncate
            .key(self.key(channel, "meta"))
            .key(self.key(channel, "events"))
            .key(self.key(channel, "epochs"))
            .arg(crate::state::new_epoch_name())
            .arg(keep)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(redis_error)
    }

    fn presence_keys<'a>(&self, script: &'a Script, channel: &str) -> redis::ScriptInvocation<'a> {
        let mut inv = script.prepare_invoke();
        for what in ["presence", "pdata", "powner", "plog"] {
            inv.key(self.key(channel, what));
        }
        inv
    }

    /// Adds or refreshes a member owned by `node` until `expires_ms`.
    pub(crate) async fn presence_join(
        &self,
        channel: &str,
        client_id: &str,
        data: &str,
        node: &str,
        expires_ms: u64,
    ) -> Result<(), ServerError> {
        let mut inv = self.presence_keys(&self.join, channel);
        inv.arg(client_id).arg(data).arg(node).arg(expires_ms).arg(PLOG_LEN);
        inv.invoke_async::<u8>(&mut self.conn.clone()).await.map_err(redis_error)?;
        Ok(())
    }

    /// Removes a member if `node` owns it.
    pub(crate) async fn presence_leave(&self, channel: &str, client_id: &str, node: &str) -> Result<(), ServerError> {
        let mut inv = self.presence_keys(&self.leave, channel);
        inv.arg(client_id).arg(node).arg(PLOG_LEN);
        inv.invoke_async::<u8>(&mut self.conn.clone()).await.map_err(redis_error)?;
        Ok(())
    }

    /// Removes expired members; returns those present, sorted by client id.
    pub(crate) async fn presence(&self, channel: &str, now_ms: u64) -> Result<Vec<(String, String)>, ServerError> {
        let mut inv = self.presence_keys(&self.sweep, channel);
        inv.arg(now_ms).arg(PLOG_LEN);
        let flat: Vec<String> = inv.invoke_async(&mut self.conn.clone()).await.map_err(redis_error)?;
        let mut members: Vec<(String, String)> = flat.chunks_exact(2).map(|p| (p[0].clone(), p[1].clone())).collect();
        members.sort();
        Ok(members)
    }
}

/// Commands answer fast; a Redis that does not is treated as down.
fn command_config() -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(3)))
        .set_response_timeout(Some(Duration::from_secs(3)))
}

/// Decodes the entries `XREAD` returned for a channel's event stream.
pub(crate) fn stream_items(ids: Vec<redis::streams::StreamId>) -> Vec<StreamItem> {
    ids.into_iter()
        .filter_map(|item| {
            let (generation, seq) = parse_stream_id(&item.id)?;
            let text = |name: &str| item.map.get(name).and_then(|v| redis::from_redis_value_ref::<String>(v).ok());
            if seq == 0 {
                return Some(StreamItem::Epoch { generation, name: text("x")? });
            }
            let entry = Entry { seq, event: text("e"), data: text("d").unwrap_or_default() };
            Some(StreamItem::Event { generation, entry })
        })
        .collect()
}

/// Decodes the entries `XREAD` returned for a channel's presence log.
pub(crate) fn presence_changes(ids: &[redis::streams::StreamId]) -> Vec<PresenceChange> {
    ids.iter()
        .filter_map(|item| {
            let text = |name: &str| item.map.get(name).and_then(|v| redis::from_redis_value_ref::<String>(v).ok());
            Some(PresenceChange {
                join: text("a")? == "join",
                client_id: text("c")?,
                data: text("d").unwrap_or_default(),
            })
        })
        .collect()
}

/// The longest pause between attempts to reach Redis again.
const MAX_RETRY: Duration = Duration::from_secs(2);

fn retry_delay(failures: u32) -> Duration {
    (Duration::from_millis(50) * 2u32.saturating_pow(failures.min(6))).min(MAX_RETRY)
}

/// Follows every mirrored channel's event stream and presence log with
/// `XREAD`, applying what arrives to the mirrors (and so delivering it to
/// this node's subscribers). Runs until the node stops.
pub(crate) async fn follow(shared: Arc<Shared>) {
    let Some(store) = &shared.store else {
        return;
    };
    let mut conn: Option<MultiplexedConnection> = None;
    let mut failures = 0u32;
    loop {
        let follow = shared.follow_list();
        if follow.is_empty() {
            shared.follow_wake.notified().await;
            continue;
        }
        let c = match &mut conn {
            Some(c) => c,
            None => match store.follower_connection().await {
                Ok(c) => conn.insert(c),
                Err(err) => {
                    warn!(%err, "cannot reach redis to follow channels");
                    tokio::time::sleep(retry_delay(failures)).await;
                    failures += 1;
                    continue;
                }
            },
        };
        let mut keys = Vec::with_capacity(follow.len() * 2);
        let mut ids = Vec::with_capacity(follow.len() * 2);
        let mut by_key: HashMap<String, (usize, bool)> = HashMap::with_capacity(follow.len() * 2);
        for (i, (name, after, plog)) in follow.iter().enumerate() {
            for (what, id, presence) in [("events", after, false), ("plog", plog, true)] {
                let key = store.key(name, what);
                by_key.insert(key.clone(), (i, presence));
                keys.push(key);
                ids.push(id.clone());
            }
        }
        let opts = StreamReadOptions::default().block(FOLLOW_BLOCK_MS).count(PAGE);
        let read = c.xread_options::<_, _, Option<StreamReadReply>>(&keys, &ids, &opts);
        let reply = tokio::select! {
            reply = read => reply,
            () = shared.follow_wake.notified() => {
                // A channel was mirrored for the first time: read it too, now.
                // Redis only ends the blocked read when its connection closes.
                conn = None;
                continue;
            }
        };
        let reply = match reply {
            Ok(reply) => reply,
            Err(err) => {
                warn!(%err, "following channels failed; reconnecting");
                conn = None;
                tokio::time::sleep(retry_delay(failures)).await;
                failures += 1;
                continue;
            }
        };
        failures = 0;
        for stream in reply.map(|r| r.keys).unwrap_or_default() {
            let Some(&(i, presence)) = by_key.get(&stream.key) else {
                continue;
            };
            let channel = &follow[i].0;
            if presence {
                if let Some(last) = stream.ids.last().map(|item| item.id.clone()) {
                    shared.follow_presence(channel, &presence_changes(&stream.ids), &last);
                }
                continue;
            }
            if !shared.follow_events(channel, &stream_items(stream.ids)) {
                debug!(channel, "stream does not follow the mirror; fetching a snapshot");
                if let Err(err) = shared.sync_channel(channel).await {
                    warn!(channel, %err, "cannot resync a channel");
                }
            }
        }
    }
}

/// Keeps this node's presence in Redis: adds members as they subscribe,
/// removes them as they leave, refreshes their expiry every quarter of
/// `presence_ttl` (each refresh holds for half of it), and every quarter of
/// it removes the members of the channels it mirrors whose node stopped
/// refreshing them. A crashed node's members are thus gone within
/// `presence_ttl` of its last refresh.
pub(crate) async fn keep_presence(shared: Arc<Shared>) {
    let Some(store) = &shared.store else {
        return;
    };
    let ttl = shared.cfg.presence_ttl.max(Duration::from_millis(100));
    let quarter = ttl / 4;
    let hold = u64::try_from((ttl / 2).as_millis()).unwrap_or(u64::MAX);
    let mut ticker = tokio::time::interval(Duration::from_millis(100).min(ttl / 8));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut synced: HashMap<(String, String), String> = HashMap::new();
    let mut last_refresh = Instant::now();
    let mut last_sweep = Instant::now();
    loop {
        ticker.tick().await;
        let local = shared.local_presence();
        let refresh = last_refresh.elapsed() >= quarter;
        if refresh {
            last_refresh = Instant::now();
        }
        let expires = unix_ms().saturating_add(hold);
        for ((channel, id), data) in &local {
            let key = (channel.clone(), id.clone());
            if !refresh && synced.get(&key) == Some(data) {
                continue;
            }
            match store.presence_join(channel, id, data, &shared.node, expires).await {
                Ok(()) => {
                    synced.insert(key, data.clone());
                }
                Err(err) => warn!(channel, client_id = %id, %err, "cannot record presence"),
            }
        }
        let gone: Vec<(String, String)> = synced.keys().filter(|k| !local.contains_key(*k)).cloned().collect();
        for key in gone {
            match store.presence_leave(&key.0, &key.1, &shared.node).await {
                Ok(()) => {
                    synced.remove(&key);
                }
                Err(err) => warn!(channel = %key.0, client_id = %key.1, %err, "cannot record a leave"),
            }
        }
        if last_sweep.elapsed() >= quarter {
            last_sweep = Instant::now();
            for channel in shared.mirrored() {
                if let Err(err) = store.presence(&channel, unix_ms()).await {
                    warn!(channel, %err, "cannot sweep presence");
                }
            }
        }
    }
}
