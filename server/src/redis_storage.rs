//! [`RedisStorage`]: channel history, epochs, idempotency keys and presence
//! in Redis Streams, so that nodes in separate processes serve the same
//! channels.
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
//! (`XADD … MINID`) keeps exactly the newest `retain` events of the epoch.
//! Stream entry ids are the [`Position`]s of the storage model, so a node
//! following the stream with `XREAD` sees events in order, an epoch change
//! as a `GEN-0` entry, and a hole as a jump.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::streams::{StreamId, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, AsyncConnectionConfig, Script};

use crate::Error;
use crate::storage::{
    Changes, ChannelSnapshot, FOLLOW_BLOCK, Follow, NewEvent, PRESENCE_LOG, Position, PresenceChange, PresenceMember,
    Published, Storage, StorageFuture, StoredEvent, StreamItem, fresh_epoch_name,
};

/// How long an idempotency key is remembered (24 hours).
pub const IDEMPOTENCY_TTL_SECS: u64 = 24 * 3600;

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

/// [`Storage`] in Redis Streams (see the [module](self) for the layout).
pub struct RedisStorage {
    client: redis::Client,
    conn: MultiplexedConnection,
    /// The connection of the blocking reads of [`Storage::changes`]: taken
    /// while a read runs and put back when it ends, so a read given up
    /// midway closes its connection (Redis ends a blocked `XREAD` no other
    /// way).
    follower: Mutex<Option<MultiplexedConnection>>,
    prefix: String,
    publish: Script,
    snapshot: Script,
    new_epoch: Script,
    truncate: Script,
    join: Script,
    leave: Script,
    sweep: Script,
}

impl std::fmt::Debug for RedisStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStorage").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

fn redis_error(e: redis::RedisError) -> Error {
    Error::Storage(format!("redis: {e}"))
}

/// Parses a stream id `GEN-SEQ`.
fn parse_stream_id(id: &str) -> Option<Position> {
    let (g, s) = id.split_once('-')?;
    Some(Position { generation: g.parse().ok()?, seq: s.parse().ok()? })
}

fn event_from_fields(seq: u64, fields: &[String]) -> StoredEvent {
    let mut event = StoredEvent { seq, event: None, data: String::new() };
    for pair in fields.chunks_exact(2) {
        match pair[0].as_str() {
            "d" => event.data.clone_from(&pair[1]),
            "e" => event.event = Some(pair[1].clone()),
            _ => {}
        }
    }
    event
}

/// Commands answer fast; a Redis that does not is treated as down.
fn command_config() -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(3)))
        .set_response_timeout(Some(Duration::from_secs(3)))
}

fn text(item: &StreamId, name: &str) -> Option<String> {
    item.map.get(name).and_then(|v| redis::from_redis_value_ref::<String>(v).ok())
}

/// Decodes the entries `XREAD` returned for a channel's event stream.
fn stream_items(ids: &[StreamId]) -> Vec<StreamItem> {
    ids.iter()
        .filter_map(|item| {
            let at = parse_stream_id(&item.id)?;
            if at.seq == 0 {
                return Some(StreamItem::Epoch { generation: at.generation, name: text(item, "x")? });
            }
            let event = StoredEvent { seq: at.seq, event: text(item, "e"), data: text(item, "d").unwrap_or_default() };
            Some(StreamItem::Event { generation: at.generation, event })
        })
        .collect()
}

/// Decodes the entries `XREAD` returned for a channel's presence log.
fn presence_changes(ids: &[StreamId]) -> Vec<PresenceChange> {
    ids.iter()
        .filter_map(|item| {
            Some(PresenceChange {
                join: text(item, "a")? == "join",
                client_id: text(item, "c")?,
                data: text(item, "d").unwrap_or_default(),
            })
        })
        .collect()
}

impl RedisStorage {
    /// Connects to Redis; fails with [`Error::Storage`] when it cannot be
    /// reached within a few seconds.
    pub async fn connect(cfg: &RedisConfig) -> Result<Self, Error> {
        let client = redis::Client::open(cfg.url.as_str()).map_err(redis_error)?;
        let conn = client.get_multiplexed_async_connection_with_config(&command_config()).await.map_err(redis_error)?;
        let script = |body: &str| Script::new(&format!("{ENSURE}{body}"));
        Ok(Self {
            client,
            conn,
            follower: Mutex::new(None),
            prefix: cfg.prefix.clone(),
            publish: script(PUBLISH),
            snapshot: script(SNAPSHOT),
            new_epoch: script(NEW_EPOCH),
            truncate: script(TRUNCATE),
            join: Script::new(PRESENCE_JOIN),
            leave: Script::new(PRESENCE_LEAVE),
            sweep: Script::new(PRESENCE_SWEEP),
        })
    }

    /// A separate connection for blocking reads.
    async fn follower_connection(&self) -> Result<MultiplexedConnection, Error> {
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(FOLLOW_BLOCK + Duration::from_secs(2)));
        self.client.get_multiplexed_async_connection_with_config(&cfg).await.map_err(redis_error)
    }

    fn key(&self, channel: &str, what: &str) -> String {
        format!("{}:{{{channel}}}:{what}", self.prefix)
    }

    fn presence_keys<'a>(&self, script: &'a Script, channel: &str) -> redis::ScriptInvocation<'a> {
        let mut inv = script.prepare_invoke();
        for what in ["presence", "pdata", "powner", "plog"] {
            inv.key(self.key(channel, what));
        }
        inv
    }

    async fn read_changes(&self, follow: &[Follow], limit: usize) -> Result<Vec<Changes>, Error> {
        let taken = self.follower.lock().unwrap_or_else(PoisonError::into_inner).take();
        let mut conn = match taken {
            Some(conn) => conn,
            None => self.follower_connection().await?,
        };
        let mut keys = Vec::with_capacity(follow.len() * 2);
        let mut ids = Vec::with_capacity(follow.len() * 2);
        for f in follow {
            keys.push(self.key(&f.channel, "events"));
            ids.push(format!("{}-{}", f.after.generation, f.after.seq));
            keys.push(self.key(&f.channel, "plog"));
            ids.push(f.presence_after.clone());
        }
        let block = usize::try_from(FOLLOW_BLOCK.as_millis()).unwrap_or(usize::MAX);
        let opts = StreamReadOptions::default().block(block).count(limit);
        let reply: Option<StreamReadReply> = conn.xread_options(&keys, &ids, &opts).await.map_err(redis_error)?;
        *self.follower.lock().unwrap_or_else(PoisonError::into_inner) = Some(conn);
        let mut out: Vec<Changes> = Vec::new();
        for stream in reply.map(|r| r.keys).unwrap_or_default() {
            let Some(i) = keys.iter().position(|k| *k == stream.key) else {
                continue;
            };
            let channel = &follow[i / 2].channel;
            let at = match out.iter().position(|c| c.channel == *channel) {
                Some(at) => at,
                None => {
                    out.push(Changes { channel: channel.clone(), ..Changes::default() });
                    out.len() - 1
                }
            };
            if i % 2 == 1 {
                out[at].presence = presence_changes(&stream.ids);
                out[at].presence_cursor = stream.ids.last().map(|item| item.id.clone());
            } else {
                out[at].items = stream_items(&stream.ids);
            }
        }
        Ok(out)
    }
}

impl Storage for RedisStorage {
    fn publish<'a>(&'a self, channel: &'a str, new: NewEvent<'a>) -> StorageFuture<'a, Published> {
        Box::pin(async move {
            let idem = self.key(channel, &format!("idem:{}", new.key.unwrap_or("")));
            let (id, applied): (String, u8) = self
                .publish
                .key(self.key(channel, "meta"))
                .key(self.key(channel, "events"))
                .key(self.key(channel, "epochs"))
                .key(idem)
                .arg(fresh_epoch_name())
                .arg(new.retain)
                .arg(if new.key.is_some() { "1" } else { "0" })
                .arg(IDEMPOTENCY_TTL_SECS)
                .arg(new.data)
                .arg(new.event.unwrap_or(""))
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(redis_error)?;
            Ok(Published { id, applied: applied == 1 })
        })
    }

    fn snapshot<'a>(
        &'a self,
        channel: &'a str,
        after: Option<Position>,
        limit: usize,
    ) -> StorageFuture<'a, ChannelSnapshot> {
        Box::pin(async move {
            type Raw = (String, u64, u64, Vec<(String, Vec<String>)>, String);
            let (g, s) =
                after.map_or((String::new(), String::new()), |p| (p.generation.to_string(), p.seq.to_string()));
            let (epoch, generation, head, raw, presence_cursor): Raw = self
                .snapshot
                .key(self.key(channel, "meta"))
                .key(self.key(channel, "events"))
                .key(self.key(channel, "epochs"))
                .key(self.key(channel, "plog"))
                .arg(fresh_epoch_name())
                .arg(g)
                .arg(s)
                .arg(limit)
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(redis_error)?;
            let events = raw
                .iter()
                .filter_map(|(id, fields)| Some(event_from_fields(parse_stream_id(id)?.seq, fields)))
                .collect();
            Ok(ChannelSnapshot { epoch, generation, head, events, presence_cursor })
        })
    }

    fn changes<'a>(&'a self, follow: &'a [Follow], limit: usize) -> StorageFuture<'a, Vec<Changes>> {
        Box::pin(self.read_changes(follow, limit))
    }

    fn new_epoch<'a>(&'a self, channel: &'a str) -> StorageFuture<'a, String> {
        Box::pin(async move {
            loop {
                let head: Option<String> = self
                    .new_epoch
                    .key(self.key(channel, "meta"))
                    .key(self.key(channel, "events"))
                    .key(self.key(channel, "epochs"))
                    .arg(fresh_epoch_name())
                    .arg(fresh_epoch_name())
                    .invoke_async(&mut self.conn.clone())
                    .await
                    .map_err(redis_error)?;
                if let Some(head) = head {
                    return Ok(head);
                }
            }
        })
    }

    fn truncate<'a>(&'a self, channel: &'a str, keep: usize) -> StorageFuture<'a, Option<String>> {
        Box::pin(async move {
            self.truncate
                .key(self.key(channel, "meta"))
                .key(self.key(channel, "events"))
                .key(self.key(channel, "epochs"))
                .arg(fresh_epoch_name())
                .arg(keep)
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(redis_error)
        })
    }

    fn presence_join<'a>(&'a self, channel: &'a str, member: PresenceMember<'a>) -> StorageFuture<'a, ()> {
        Box::pin(async move {
            let mut inv = self.presence_keys(&self.join, channel);
            inv.arg(member.client_id).arg(member.data).arg(member.node).arg(member.expires_ms).arg(PRESENCE_LOG);
            inv.invoke_async::<u8>(&mut self.conn.clone()).await.map_err(redis_error)?;
            Ok(())
        })
    }

    fn presence_leave<'a>(&'a self, channel: &'a str, client_id: &'a str, node: &'a str) -> StorageFuture<'a, ()> {
        Box::pin(async move {
            let mut inv = self.presence_keys(&self.leave, channel);
            inv.arg(client_id).arg(node).arg(PRESENCE_LOG);
            inv.invoke_async::<u8>(&mut self.conn.clone()).await.map_err(redis_error)?;
            Ok(())
        })
    }

    fn presence<'a>(&'a self, channel: &'a str, now_ms: u64) -> StorageFuture<'a, Vec<(String, String)>> {
        Box::pin(async move {
            let mut inv = self.presence_keys(&self.sweep, channel);
            inv.arg(now_ms).arg(PRESENCE_LOG);
            let flat: Vec<String> = inv.invoke_async(&mut self.conn.clone()).await.map_err(redis_error)?;
            let mut members: Vec<(String, String)> =
                flat.chunks_exact(2).map(|p| (p[0].clone(), p[1].clone())).collect();
            members.sort();
            Ok(members)
        })
    }

    fn ping(&self) -> StorageFuture<'_, ()> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            redis::cmd("PING").query_async::<String>(&mut conn).await.map(drop).map_err(redis_error)
        })
    }
}
