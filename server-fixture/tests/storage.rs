//! The `Storage` contract (the model in `resub_server::Storage`'s module
//! documentation), checked on both implementations: every case runs as
//! `CASE::memory` on a `MemoryStorage` and as `CASE::redis` on a
//! `RedisStorage` over its own `redis-server`. A third implementation can be
//! held to the same cases.

use std::sync::Arc;
use std::time::Duration;

use resub_fixture::{MemoryStorage, RedisConfig, RedisServer, RedisStorage, Storage};
use resub_server::{
    ChannelSnapshot, Config, Error, Follow, Hub, NewEvent, PAGE, Position, PresenceChange, PresenceMember, StreamItem,
};

/// How long a case waits for a change that must come.
const WAIT: Duration = Duration::from_secs(10);

/// A storage under test, and what keeps it alive.
struct Under {
    storage: Arc<dyn Storage>,
    _redis: Option<RedisServer>,
}

async fn memory() -> Under {
    Under { storage: Arc::new(MemoryStorage::new()), _redis: None }
}

async fn redis() -> Under {
    let server = RedisServer::start().await.expect("redis-server starts (scripts/test.sh installs it)");
    let storage = RedisStorage::connect(&RedisConfig::new(server.url())).await.expect("connects");
    Under { storage: Arc::new(storage), _redis: Some(server) }
}

macro_rules! on_both {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[tokio::test]
            async fn memory() {
                let under = super::memory().await;
                super::$case(&*under.storage).await;
            }

            #[tokio::test]
            async fn redis() {
                let under = super::redis().await;
                super::$case(&*under.storage).await;
            }
        }
    )*};
}

on_both!(
    a_new_channel_starts_at_generation_one_with_nothing,
    publishes_get_consecutive_ids_and_a_repeated_key_publishes_nothing,
    retention_keeps_the_newest_events_of_the_epoch,
    a_snapshot_reads_after_a_position_in_pages,
    changes_come_in_order_and_wake_a_waiting_follower,
    a_follower_given_up_midway_reads_on_afterwards,
    a_new_epoch_is_a_marker_then_events_of_the_next_generation,
    truncation_leaves_a_gap_a_follower_can_see,
    presence_logs_joins_and_leaves_once_and_expires_members,
);

fn event(data: &str) -> NewEvent<'_> {
    NewEvent { event: None, key: None, data, retain: 100 }
}

async fn publish(storage: &dyn Storage, channel: &str, data: &str) -> String {
    let published = storage.publish(channel, event(data)).await.expect("publish");
    assert!(published.applied);
    published.id
}

async fn snapshot(storage: &dyn Storage, channel: &str, after: Option<Position>, limit: usize) -> ChannelSnapshot {
    storage.snapshot(channel, after, limit).await.expect("snapshot")
}

fn seqs(snap: &ChannelSnapshot) -> Vec<u64> {
    snap.events.iter().map(|e| e.seq).collect()
}

/// Stream items after `after` and presence changes after `presence`,
/// waiting until at least `items` items and `changes` presence changes came.
async fn follow(
    storage: &dyn Storage,
    channel: &str,
    after: Position,
    presence: &str,
    (want_items, want_changes): (usize, usize),
) -> (Vec<StreamItem>, Vec<PresenceChange>, Option<String>) {
    let mut follow = Follow { channel: channel.into(), after, presence_after: presence.into() };
    let (mut items, mut changes, mut cursor) = (Vec::new(), Vec::new(), None);
    tokio::time::timeout(WAIT, async {
        while items.len() < want_items || changes.len() < want_changes {
            for c in storage.changes(std::slice::from_ref(&follow), PAGE).await.expect("changes") {
                assert_eq!(c.channel, channel);
                if let Some(at) = c.items.last().map(position) {
                    follow.after = at;
                }
                if let Some(last) = &c.presence_cursor {
                    follow.presence_after.clone_from(last);
                    cursor = Some(last.clone());
                }
                items.extend(c.items);
                changes.extend(c.presence);
            }
        }
    })
    .await
    .expect("the changes come");
    (items, changes, cursor)
}

fn position(item: &StreamItem) -> Position {
    match item {
        StreamItem::Epoch { generation, .. } => Position { generation: *generation, seq: 0 },
        StreamItem::Event { generation, event } => Position { generation: *generation, seq: event.seq },
    }
}

fn datas(items: &[StreamItem]) -> Vec<&str> {
    items
        .iter()
        .filter_map(|i| match i {
            StreamItem::Event { event, .. } => Some(event.data.as_str()),
            StreamItem::Epoch { .. } => None,
        })
        .collect()
}

async fn a_new_channel_starts_at_generation_one_with_nothing(storage: &dyn Storage) {
    let snap = snapshot(storage, "fresh", None, PAGE).await;
    assert_eq!((snap.generation, snap.head, snap.events.len()), (1, 0, 0));
    assert_eq!(snap.epoch.len(), 8, "{snap:?}");
    assert!(snap.epoch.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()), "{snap:?}");
    let again = snapshot(storage, "fresh", None, 0).await;
    assert_eq!(again.epoch, snap.epoch, "the channel was created once");
    storage.ping().await.expect("ping");
}

async fn publishes_get_consecutive_ids_and_a_repeated_key_publishes_nothing(storage: &dyn Storage) {
    let epoch = snapshot(storage, "ids", None, 0).await.epoch;
    assert_eq!(publish(storage, "ids", "a").await, format!("{epoch}-1"));
    assert_eq!(publish(storage, "ids", "b").await, format!("{epoch}-2"));
    let keyed = NewEvent { event: Some("kind"), key: Some("k1"), data: "c", retain: 100 };
    let first = storage.publish("ids", keyed).await.unwrap();
    assert_eq!((first.id.as_str(), first.applied), (format!("{epoch}-3").as_str(), true));
    let again = storage.publish("ids", NewEvent { data: "other", ..keyed }).await.unwrap();
    assert_eq!((again.id, again.applied), (first.id, false), "a repeated key returns its first id");
    let snap = snapshot(storage, "ids", None, PAGE).await;
    assert_eq!(snap.head, 3, "nothing published the second time");
    let last = snap.events.last().unwrap();
    assert_eq!((last.event.as_deref(), last.data.as_str()), (Some("kind"), "c"));
    // Keys are per channel.
    let elsewhere = storage.publish("ids-2", keyed).await.unwrap();
    assert!(elsewhere.applied);
}

async fn retention_keeps_the_newest_events_of_the_epoch(storage: &dyn Storage) {
    for i in 1..=5 {
        storage.publish("kept", NewEvent { retain: 3, ..event(&i.to_string()) }).await.unwrap();
    }
    let snap = snapshot(storage, "kept", None, PAGE).await;
    assert_eq!((snap.head, seqs(&snap)), (5, vec![3, 4, 5]));
}

async fn a_snapshot_reads_after_a_position_in_pages(storage: &dyn Storage) {
    for i in 1..=10 {
        publish(storage, "paged", &i.to_string()).await;
    }
    let gen1 = |seq| Some(Position { generation: 1, seq });
    assert_eq!(seqs(&snapshot(storage, "paged", gen1(4), PAGE).await), (5..=10).collect::<Vec<_>>());
    assert_eq!(seqs(&snapshot(storage, "paged", gen1(4), 3).await), vec![5, 6, 7]);
    assert_eq!(seqs(&snapshot(storage, "paged", gen1(10), PAGE).await), Vec::<u64>::new());
    assert_eq!(snapshot(storage, "paged", None, 0).await.events.len(), 0);
    // A position in another generation reads the epoch from its start.
    let other = Some(Position { generation: 7, seq: 9 });
    assert_eq!(seqs(&snapshot(storage, "paged", other, 2).await), vec![1, 2]);
}

async fn changes_come_in_order_and_wake_a_waiting_follower(storage: &dyn Storage) {
    let start = Position { generation: 1, seq: 0 };
    publish(storage, "live", "0").await;
    let (items, _, _) = follow(storage, "live", start, "0", (1, 0)).await;
    assert_eq!(datas(&items), ["0"]);
    // A follower that asked before the publishes gets them (liveness): the
    // follower is polled first and waits, then the publisher runs.
    let after = position(&items[0]);
    let (waiting, ()) = tokio::join!(follow(storage, "live", after, "0", (3, 0)), async {
        tokio::task::yield_now().await;
        for i in 1..=3 {
            publish(storage, "live", &i.to_string()).await;
        }
    });
    assert_eq!(datas(&waiting.0), ["1", "2", "3"], "in order, nothing twice");
    // Nothing new: an empty answer, after a bounded wait.
    let idle = Follow { channel: "live".into(), after: position(&waiting.0[2]), presence_after: "0".into() };
    let nothing = tokio::time::timeout(WAIT, storage.changes(std::slice::from_ref(&idle), PAGE)).await;
    assert!(nothing.expect("answers within its block time").expect("no error").is_empty());
}

async fn a_follower_given_up_midway_reads_on_afterwards(storage: &dyn Storage) {
    let start = Position { generation: 1, seq: 0 };
    let f = Follow { channel: "dropped".into(), after: start, presence_after: "0".into() };
    snapshot(storage, "dropped", None, 0).await;
    // The node gives a read up when it starts following another channel.
    let given_up =
        tokio::time::timeout(Duration::from_millis(20), storage.changes(std::slice::from_ref(&f), PAGE)).await;
    assert!(given_up.is_err(), "nothing to read yet: still waiting");
    publish(storage, "dropped", "after").await;
    let (items, _, _) = follow(storage, "dropped", start, "0", (1, 0)).await;
    assert_eq!(datas(&items), ["after"]);
}

async fn a_new_epoch_is_a_marker_then_events_of_the_next_generation(storage: &dyn Storage) {
    let first = snapshot(storage, "epochs", None, 0).await.epoch;
    publish(storage, "epochs", "old").await;
    let head = storage.new_epoch("epochs").await.unwrap();
    let (name, seq) = head.rsplit_once('-').unwrap();
    assert_eq!(seq, "0");
    assert_ne!(name, first, "an epoch name is never reused");
    let id = publish(storage, "epochs", "new").await;
    assert_eq!(id, format!("{name}-1"));
    let snap = snapshot(storage, "epochs", Some(Position { generation: 1, seq: 1 }), PAGE).await;
    assert_eq!((snap.generation, snap.epoch.as_str(), snap.head), (2, name, 1));
    assert_eq!(seqs(&snap), vec![1], "the new epoch from its start");
    let (items, _, _) = follow(storage, "epochs", Position { generation: 1, seq: 1 }, "0", (2, 0)).await;
    assert_eq!(items[0], StreamItem::Epoch { generation: 2, name: name.to_owned() });
    assert_eq!(position(&items[1]), Position { generation: 2, seq: 1 });
    assert_eq!(datas(&items), ["new"]);
}

async fn truncation_leaves_a_gap_a_follower_can_see(storage: &dyn Storage) {
    let mut ids = Vec::new();
    for i in 1..=10 {
        ids.push(publish(storage, "trim", &i.to_string()).await);
    }
    assert_eq!(storage.truncate("trim", 2).await.unwrap().as_deref(), Some(ids[8].as_str()));
    assert_eq!(seqs(&snapshot(storage, "trim", None, PAGE).await), vec![9, 10]);
    let (items, _, _) = follow(storage, "trim", Position { generation: 1, seq: 3 }, "0", (2, 0)).await;
    assert_eq!(position(&items[0]), Position { generation: 1, seq: 9 }, "the follower sees a jump from 3 to 9");
    assert_eq!(storage.truncate("trim-empty", 5).await.unwrap(), None);
}

async fn presence_logs_joins_and_leaves_once_and_expires_members(storage: &dyn Storage) {
    let cursor = snapshot(storage, "room", None, 0).await.presence_cursor;
    let far = u64::MAX / 2;
    let member = |client_id, node, expires_ms| PresenceMember { client_id, data: "d", node, expires_ms };
    storage.presence_join("room", member("alice", "n1", far)).await.unwrap();
    storage.presence_join("room", member("bob", "n2", 1_000)).await.unwrap();
    // A refresh logs nothing.
    storage.presence_join("room", member("alice", "n1", far)).await.unwrap();
    let (_, changes, cursor) = follow(storage, "room", Position { generation: 1, seq: 0 }, &cursor, (0, 2)).await;
    let joins: Vec<(bool, &str)> = changes.iter().map(|c| (c.join, c.client_id.as_str())).collect();
    assert_eq!(joins, [(true, "alice"), (true, "bob")]);
    let cursor = cursor.expect("a cursor after the changes");
    // Only the owning node removes a member.
    storage.presence_leave("room", "alice", "n2").await.unwrap();
    assert_eq!(storage.presence("room", 0).await.unwrap(), [("alice".into(), "d".into()), ("bob".into(), "d".into())]);
    storage.presence_leave("room", "alice", "n1").await.unwrap();
    // Bob's node stopped refreshing him: gone once his expiry passed.
    assert_eq!(storage.presence("room", 2_000).await.unwrap(), Vec::<(String, String)>::new());
    let (_, changes, _) = follow(storage, "room", Position { generation: 1, seq: 0 }, &cursor, (0, 2)).await;
    let leaves: Vec<(bool, &str)> = changes.iter().map(|c| (c.join, c.client_id.as_str())).collect();
    assert_eq!(leaves, [(false, "alice"), (false, "bob")]);
}

#[tokio::test]
async fn a_hub_takes_a_storage_or_redis_not_both() {
    let config = Config {
        storage: Some(Arc::new(MemoryStorage::new())),
        redis: Some(RedisConfig::new("redis://127.0.0.1:1")),
        ..Config::default()
    };
    let err = Hub::new(config).await.unwrap_err();
    assert!(matches!(err, Error::Storage(_)), "{err:?}");
}

#[tokio::test]
async fn hubs_sharing_a_memory_storage_publish_one_sequence() {
    let storage = Arc::new(MemoryStorage::new());
    let config = || Config { storage: Some(storage.clone()), ..Config::default() };
    let (a, b) = (Hub::new(config()).await.unwrap(), Hub::new(config()).await.unwrap());
    let first = a.publish("orders", "1").await.unwrap();
    let second = b.publish("orders", "2").await.unwrap();
    let epoch = first.rsplit_once('-').unwrap().0;
    assert_eq!(second, format!("{epoch}-2"));
    assert_eq!(a.head("orders").await.unwrap(), second);
}
