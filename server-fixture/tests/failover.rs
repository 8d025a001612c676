//! A node dies and its clients move on: two fixture processes on one Redis,
//! a client on node A, a publisher on node B at a steady rate, node A killed
//! (SIGKILL). The client fails over to B and receives every event exactly
//! once and in order; presence shows the crashed node's other client gone
//! within the presence TTL, and the client that moved never left.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use resub::{Client, ConnectionState, Message, PresenceAction, Transport};
use resub_fixture::RedisServer;
use tokio::time::{Instant, timeout};

/// The presence TTL the nodes run with.
const TTL: Duration = Duration::from_secs(3);
/// Upper bound for the whole exchange.
const DEADLINE: Duration = Duration::from_secs(60);

async fn start_node(redis: &RedisServer, prefix: &str) -> (tokio::process::Child, SocketAddr) {
    let ttl = TTL.as_millis().to_string();
    common::start_redis_node(redis, prefix, &["--presence-ttl-ms", &ttl]).await
}

/// Publishes `1`, `2`, … to `channel` on `addr` every 2 ms until `stop`;
/// returns the last number published.
async fn publisher(addr: SocketAddr, channel: &str, stop: Arc<AtomicBool>, count: Arc<AtomicU64>) -> u64 {
    let mut tick = tokio::time::interval(Duration::from_millis(2));
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        n += 1;
        let path = format!("/publish/{channel}");
        let reply = common::http(addr, "POST", &path, &[], n.to_string().as_bytes()).await;
        assert_eq!(reply.status, 200, "publish {n}: {}", reply.body);
        count.store(n, Ordering::Relaxed);
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_fails_over_to_another_node_without_losing_or_repeating_an_event() {
    for transport in [Transport::WebSocket, Transport::Sse, Transport::LongPoll] {
        timeout(DEADLINE, failover(transport)).await.unwrap_or_else(|_| panic!("{transport}: timed out"));
    }
}

async fn failover(transport: Transport) {
    let redis = RedisServer::start().await.expect("redis-server starts (scripts/test.sh installs it)");
    let prefix = format!("failover-{transport}");
    let (mut node_a, a) = start_node(&redis, &prefix).await;
    let (_node_b, b) = start_node(&redis, &prefix).await;
    let (url_a, url_b) = (format!("http://{a}"), format!("http://{b}"));
    let channel = "ticks";

    // Watches presence from node B.
    let watcher = Client::builder(&url_b).presence("watcher", "").build().unwrap();
    let mut watching = watcher.subscribe(channel).await.unwrap();
    // The client under test: node A first, B as the alternative.
    let x = Client::builder(&url_a)
        .endpoints(&[&url_b])
        .transports(&[transport])
        .presence("x", r#"{"role":"moves"}"#)
        .build()
        .unwrap();
    let mut states = x.states();
    // A client that knows only node A: it cannot come back, so presence must
    // drop it once A is gone.
    let y = Client::builder(&url_a).transports(&[transport]).presence("y", "").build().unwrap();
    let _y_sub = y.subscribe(channel).await.unwrap();

    let start = common::http(b, "POST", &format!("/publish/{channel}"), &[], b"0").await.json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut sub = x.subscribe_from(channel, &start).await.unwrap();

    // Presence shows both clients of A, as seen from B.
    let mut joined = Vec::new();
    let mut left = Vec::new();
    while !(joined.contains(&"x".to_owned()) && joined.contains(&"y".to_owned())) {
        match watching.next().await.unwrap().unwrap() {
            Message::Presence(p) if p.action == PresenceAction::Join => joined.push(p.member.client_id),
            Message::Event(_) => {}
            other => panic!("{transport}: unexpected {other:?}"),
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let publishing = tokio::spawn(publisher(b, channel, stop.clone(), published.clone()));

    // Receive on A for a while, then kill A.
    let mut received: Vec<(String, u64)> = Vec::new();
    let next_event = async |sub: &mut resub::Subscription, received: &mut Vec<(String, u64)>| loop {
        match sub.next().await.expect("not ended").expect("no error") {
            Message::Event(e) => {
                received.push((e.id.into(), e.data.parse().expect("a number")));
                return;
            }
            // x takes part in presence: it sees the joins of the channel.
            Message::Resumed { .. } | Message::Presence(_) => {}
            Message::Reset { .. } => panic!("{transport}: a reset: something was lost"),
            other => panic!("{transport}: unexpected {other:?}"),
        }
    };
    while received.len() < 200 {
        next_event(&mut sub, &mut received).await;
    }
    assert!(
        matches!(x.state(), ConnectionState::Connected { ref endpoint, .. } if *endpoint == url_a),
        "{transport}: on node A before the crash: {:?}",
        x.state()
    );
    node_a.kill().await.unwrap();
    let killed = Instant::now();

    // The client moves to B by itself, and goes on receiving.
    loop {
        match states.next().await.unwrap() {
            ConnectionState::Connected { endpoint, .. } if endpoint == url_b => break,
            ConnectionState::Closed { error } => panic!("{transport}: closed: {error:?}"),
            _ => {}
        }
    }
    let at_failover = received.len();
    while received.len() < at_failover + 200 {
        next_event(&mut sub, &mut received).await;
    }
    stop.store(true, Ordering::Relaxed);
    let last = publishing.await.unwrap();
    while received.last().unwrap().1 < last {
        next_event(&mut sub, &mut received).await;
    }

    // Exactly once, in order, with consecutive ids of one epoch.
    let numbers: Vec<u64> = received.iter().map(|(_, n)| *n).collect();
    assert_eq!(numbers, (1..=last).collect::<Vec<_>>(), "{transport}: every event once, in order");
    let (epoch, first_seq) = start.rsplit_once('-').unwrap();
    let first_seq: u64 = first_seq.parse().unwrap();
    for (i, (id, _)) in received.iter().enumerate() {
        assert_eq!(*id, format!("{epoch}-{}", first_seq + 1 + i as u64), "{transport}: ids follow each other");
    }

    // Presence: y (left behind on A) leaves within the TTL; x never does.
    while !left.contains(&"y".to_owned()) {
        match timeout(TTL, watching.next()).await {
            Ok(Some(Ok(Message::Presence(p)))) => {
                if p.action == PresenceAction::Leave {
                    left.push(p.member.client_id);
                }
            }
            // The watcher receives the channel's events too.
            Ok(Some(Ok(Message::Event(_)))) => {}
            Ok(other) => panic!("{transport}: unexpected {other:?}"),
            Err(_) => panic!("{transport}: y did not leave within {TTL:?} of the crash"),
        }
    }
    let gone_after = killed.elapsed();
    assert!(gone_after <= TTL, "{transport}: y left {gone_after:?} after the crash; the TTL is {TTL:?}");
    assert_eq!(left, ["y"], "{transport}: only the client left behind leaves");
    let members: Vec<String> = watcher.presence(channel).await.unwrap().into_iter().map(|m| m.client_id).collect();
    assert_eq!(members, ["watcher", "x"], "{transport}");
    println!(
        "{transport}: {} events exactly once ({} after failing over); y left presence {} ms after the crash",
        received.len(),
        received.len() - at_failover,
        gone_after.as_millis()
    );
    for c in [x, y, watcher] {
        c.close().await;
    }
}
