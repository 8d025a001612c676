//! Fixture nodes sharing channels through a storage: ids, replay,
//! idempotency keys, epochs, truncation and presence across nodes, through
//! the resub client on each transport. Each shared-storage test runs twice:
//! `redis` on its own `redis-server` (Redis Streams), and `memory` on one
//! in-process `MemoryStorage` (the same model without a server).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{WAIT, post};
use futures::StreamExt;
use resub::{Client, Message, PresenceAction, ResetReason, Subscription, Transport};
use resub_fixture::{Fixture, FixtureConfig, FixtureError, MemoryStorage, RedisConfig, RedisServer};
use tokio::time::timeout;

async fn redis() -> RedisServer {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    RedisServer::start().await.expect("redis-server starts (scripts/test.sh installs it)")
}

/// Where the nodes of a test share their channels.
enum Shared {
    Redis(RedisServer),
    Memory(Arc<MemoryStorage>),
}

impl Shared {
    async fn redis() -> Self {
        Self::Redis(redis().await)
    }

    fn memory() -> Self {
        Self::Memory(Arc::new(MemoryStorage::new()))
    }
}

/// Runs `$case` once on Redis and once on a `MemoryStorage`, as the tests
/// `$case::redis` and `$case::memory`.
macro_rules! on_both_storages {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            #[tokio::test]
            async fn redis() {
                super::$case(super::Shared::redis().await).await;
            }

            #[tokio::test]
            async fn memory() {
                super::$case(super::Shared::memory()).await;
            }
        }
    )*};
}

on_both_storages!(
    an_event_published_on_either_node_reaches_both_with_one_id,
    a_cursor_from_one_node_resumes_on_the_other,
    an_idempotency_key_is_applied_once_across_nodes,
    a_new_epoch_on_one_node_resets_the_subscribers_of_the_other,
    history_truncated_on_one_node_is_reported_on_the_other,
    presence_spans_nodes_and_a_client_that_goes_leaves,
);

fn node_config(shared: &Shared) -> FixtureConfig {
    let cfg = FixtureConfig {
        heartbeat: Duration::from_millis(500),
        presence_ttl: Duration::from_secs(2),
        ..FixtureConfig::default()
    };
    match shared {
        Shared::Redis(redis) => FixtureConfig { redis: Some(RedisConfig::new(redis.url())), ..cfg },
        Shared::Memory(storage) => FixtureConfig { storage: Some(storage.clone()), ..cfg },
    }
}

async fn node(shared: &Shared) -> Fixture {
    node_with(node_config(shared)).await
}

async fn node_with(cfg: FixtureConfig) -> Fixture {
    Fixture::start_with(SocketAddr::from(([127, 0, 0, 1], 0)), cfg).await.expect("node starts")
}

fn client(node: &Fixture, transport: Transport) -> Client {
    Client::builder(&node.url()).transports(&[transport]).build().expect("client")
}

/// The next message, within the tests' deadline.
async fn next(sub: &mut Subscription) -> Message {
    timeout(WAIT, sub.next()).await.expect("a message in time").expect("not ended").expect("not an error")
}

async fn next_event(sub: &mut Subscription) -> resub::Event {
    loop {
        match next(sub).await {
            Message::Event(e) => return e,
            Message::Resumed { .. } => {}
            other => panic!("expected an event, got {other:?}"),
        }
    }
}

/// Subscribes after the channel's current head: whatever is published next
/// follows, however late the subscription reaches the server. (A long poll
/// at the head is held, so its `Resumed` comes with the first event.)
async fn subscribe_at_head(client: &Client, node: &Fixture, channel: &str) -> Subscription {
    let head = node.head_async(channel).await.expect("head");
    client.subscribe_from(channel, &head).await.expect("subscribe")
}

async fn an_event_published_on_either_node_reaches_both_with_one_id(shared: Shared) {
    let (a, b) = (node(&shared).await, node(&shared).await);
    for transport in Transport::ALL {
        let channel = format!("shared-{transport}");
        let (ca, cb) = (client(&a, transport), client(&b, transport));
        let mut on_a = subscribe_at_head(&ca, &a, &channel).await;
        let mut on_b = subscribe_at_head(&cb, &b, &channel).await;
        let mut ids = Vec::new();
        for i in 0..20 {
            let publisher = if i % 2 == 0 { &a } else { &b };
            ids.push(publisher.publish_async(&channel, None, None, &format!("m{i}")).await.unwrap());
        }
        for (i, id) in ids.iter().enumerate() {
            for sub in [&mut on_a, &mut on_b] {
                let e = next_event(sub).await;
                assert_eq!((e.id.as_str(), e.data.as_str()), (id.as_str(), format!("m{i}").as_str()), "{transport}");
            }
        }
        ca.close().await;
        cb.close().await;
    }
}

async fn a_cursor_from_one_node_resumes_on_the_other(shared: Shared) {
    let (a, b) = (node(&shared).await, node(&shared).await);
    for transport in Transport::ALL {
        let channel = format!("resume-{transport}");
        let ca = client(&a, transport);
        let mut on_a = subscribe_at_head(&ca, &a, &channel).await;
        for i in 0..5 {
            a.publish_async(&channel, None, None, &i.to_string()).await.unwrap();
        }
        let mut cursor = String::new();
        for i in 0..5 {
            let e = next_event(&mut on_a).await;
            assert_eq!(e.data, i.to_string());
            cursor = e.id.into();
        }
        ca.close().await;
        // Published while the subscriber is away, on the other node.
        for i in 5..10 {
            b.publish_async(&channel, None, None, &i.to_string()).await.unwrap();
        }
        let cb = client(&b, transport);
        let mut on_b = cb.subscribe_from(&channel, &cursor).await.unwrap();
        assert_eq!(next(&mut on_b).await, Message::Resumed { channel: channel.clone(), after: cursor.clone() });
        for i in 5..10 {
            assert_eq!(next_event(&mut on_b).await.data, i.to_string(), "{transport}");
        }
        cb.close().await;
    }
}

async fn an_idempotency_key_is_applied_once_across_nodes(shared: Shared) {
    let (a, b) = (node(&shared).await, node(&shared).await);
    let first = a.publish_async("keys", Some("k-1"), None, "x").await.unwrap();
    let again = b.publish_async("keys", Some("k-1"), None, "x").await.unwrap();
    assert_eq!(first, again);
    assert_eq!(b.head_async("keys").await.unwrap(), first, "nothing published the second time");
    let other = b.publish_async("keys", Some("k-2"), None, "y").await.unwrap();
    assert_ne!(other, first);
    assert_eq!(a.stats().events_published + b.stats().events_published, 2);
}

async fn a_new_epoch_on_one_node_resets_the_subscribers_of_the_other(shared: Shared) {
    let (a, b) = (node(&shared).await, node(&shared).await);
    let cb = client(&b, Transport::WebSocket);
    let mut on_b = subscribe_at_head(&cb, &b, "epochs").await;
    assert!(matches!(next(&mut on_b).await, Message::Resumed { .. }), "confirmed before the epoch changes");
    a.publish_async("epochs", None, None, "old").await.unwrap();
    assert_eq!(next_event(&mut on_b).await.data, "old");
    let head = a.new_epoch_async("epochs").await.unwrap();
    assert!(head.ends_with("-0"));
    assert_eq!(
        next(&mut on_b).await,
        Message::Reset { channel: "epochs".into(), reason: ResetReason::EpochChanged, head: head.clone() }
    );
    let id = a.publish_async("epochs", None, None, "new").await.unwrap();
    let e = next_event(&mut on_b).await;
    assert_eq!((e.id.as_str(), e.data.as_str()), (id.as_str(), "new"));
    assert_eq!(common::epoch_of(&id), common::epoch_of(&head));
    cb.close().await;
}

async fn history_truncated_on_one_node_is_reported_on_the_other(shared: Shared) {
    let (a, b) = (node(&shared).await, node(&shared).await);
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(a.publish_async("trim", None, None, &i.to_string()).await.unwrap());
    }
    assert_eq!(a.truncate_async("trim", 2).await.unwrap().as_deref(), Some(ids[8].as_str()));
    let cb = client(&b, Transport::Sse);
    let mut sub = cb.subscribe_from("trim", &ids[2]).await.unwrap();
    assert_eq!(
        next(&mut sub).await,
        Message::Reset { channel: "trim".into(), reason: ResetReason::HistoryTruncated, head: ids[9].clone() }
    );
    drop(sub);
    // A cursor within what is kept still resumes.
    let mut sub = cb.subscribe_from("trim-2", &a.head_async("trim-2").await.unwrap()).await.unwrap();
    assert!(matches!(next(&mut sub).await, Message::Resumed { .. }));
    drop(sub);
    let mut kept = cb.subscribe_from("trim", &ids[8]).await.unwrap();
    assert!(matches!(next(&mut kept).await, Message::Resumed { .. }));
    assert_eq!(next_event(&mut kept).await.data, "9");
    cb.close().await;
}

/// The next presence change on `sub`, skipping events.
async fn next_presence(sub: &mut Subscription) -> (PresenceAction, String, String) {
    loop {
        if let Message::Presence(p) = next(sub).await {
            return (p.action, p.member.client_id, p.member.data);
        }
    }
}

async fn presence_spans_nodes_and_a_client_that_goes_leaves(shared: Shared) {
    let (a, b) = (node(&shared).await, node(&shared).await);
    for transport in [Transport::WebSocket, Transport::Sse] {
        let channel = format!("room-{transport}");
        let watcher = Client::builder(&a.url()).transports(&[transport]).presence("watcher", "").build().unwrap();
        let mut watching = watcher.subscribe(&channel).await.unwrap();
        assert_eq!(next_presence(&mut watching).await, (PresenceAction::Join, "watcher".into(), String::new()));
        let alice = Client::builder(&b.url())
            .transports(&[transport])
            .presence("alice", r#"{"name":"Alice"}"#)
            .build()
            .unwrap();
        let _alice_sub = alice.subscribe(&channel).await.unwrap();
        assert_eq!(
            next_presence(&mut watching).await,
            (PresenceAction::Join, "alice".into(), r#"{"name":"Alice"}"#.into()),
            "{transport}: a join on the other node"
        );
        let listed = watcher.presence(&channel).await.unwrap();
        let listed: Vec<(&str, &str)> = listed.iter().map(|m| (m.client_id.as_str(), m.data.as_str())).collect();
        assert_eq!(listed, [("alice", r#"{"name":"Alice"}"#), ("watcher", "")]);
        alice.close().await;
        assert_eq!(
            next_presence(&mut watching).await,
            (PresenceAction::Leave, "alice".into(), r#"{"name":"Alice"}"#.into()),
            "{transport}: a client that closes leaves"
        );
        let listed = watcher.presence(&channel).await.unwrap();
        assert_eq!(listed.len(), 1);
        watcher.close().await;
    }
}

#[tokio::test]
async fn presence_on_a_single_node_and_its_http_listing() {
    let node = common::fixture_with(FixtureConfig::default()).await;
    let bob = Client::builder(&node.url()).presence("bob", "b").build().unwrap();
    let mut sub = bob.subscribe("solo").await.unwrap();
    assert_eq!(next_presence(&mut sub).await, (PresenceAction::Join, "bob".into(), "b".into()));
    let carol = Client::builder(&node.url()).presence("carol", "").build().unwrap();
    let carol_sub = carol.subscribe("solo").await.unwrap();
    assert_eq!(next_presence(&mut sub).await.1, "carol");
    let reply = common::get(node.addr(), "/presence/solo").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json(),
        serde_json::json!({"channel": "solo", "members": [
            {"client_id": "bob", "data": "b"}, {"client_id": "carol", "data": ""}
        ]})
    );
    drop(carol_sub);
    assert_eq!(next_presence(&mut sub).await, (PresenceAction::Leave, "carol".into(), String::new()));
    assert_eq!(common::get(node.addr(), "/presence/bad%20name").await.status, 400);
    assert_eq!(common::get(node.addr(), "/ws?client_id=bad%20id").await.status, 400);
    bob.close().await;
    carol.close().await;
}

#[tokio::test]
async fn a_node_that_loses_redis_answers_unavailable() {
    let shared = Shared::redis().await;
    let a = node(&shared).await;
    let Shared::Redis(mut redis) = shared else { unreachable!() };
    a.publish_async("c", None, None, "ok").await.unwrap();
    redis.kill().await.unwrap();
    let err = a.publish_async("c", None, None, "lost").await.unwrap_err();
    assert!(matches!(err, FixtureError::Storage(_)), "{err:?}");
    let reply = post(a.addr(), "/publish/c").await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert!(reply.header("retry-after").is_some());
    assert!(matches!(a.publish("c", None, "x"), Err(FixtureError::NeedsAsync)));
}

#[tokio::test]
async fn a_node_does_not_start_without_its_redis() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = FixtureConfig {
        redis: Some(RedisConfig::new(format!("redis://127.0.0.1:{port}"))),
        ..FixtureConfig::default()
    };
    let err = Fixture::start_with(SocketAddr::from(([127, 0, 0, 1], 0)), cfg).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
}

#[tokio::test]
async fn a_long_polling_client_is_present_while_it_polls() {
    let node = common::fixture_with(FixtureConfig::default()).await;
    let watcher = Client::builder(&node.url()).presence("watcher", "").build().unwrap();
    let mut watching = watcher.subscribe("polled").await.unwrap();
    assert_eq!(next_presence(&mut watching).await.1, "watcher");
    let poller = Client::builder(&node.url())
        .transports(&[Transport::LongPoll])
        .poll_hold(Duration::from_millis(300))
        .presence("p", "polling")
        .build()
        .unwrap();
    let _polling = poller.subscribe("polled").await.unwrap();
    assert_eq!(next_presence(&mut watching).await, (PresenceAction::Join, "p".into(), "polling".into()));
    // Many polls later, still one member and no leave.
    let polls = node.stats().polls_accepted;
    common::wait_until("five more polls", || node.stats().polls_accepted >= polls + 5).await;
    if let Some(m) = futures::FutureExt::now_or_never(watching.next()) {
        panic!("nothing while p polls: {m:?}");
    }
    let listed = watcher.presence("polled").await.unwrap();
    assert_eq!(listed.iter().map(|m| m.client_id.as_str()).collect::<Vec<_>>(), ["p", "watcher"]);
    poller.close().await;
    assert_eq!(
        next_presence(&mut watching).await,
        (PresenceAction::Leave, "p".into(), "polling".into()),
        "a poller that stops leaves after the grace period"
    );
    watcher.close().await;
}
