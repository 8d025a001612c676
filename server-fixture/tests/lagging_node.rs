//! A node falls behind: frozen (SIGSTOP, as a long GC pause or a suspended
//! VM would) while the other node publishes more events than Redis keeps.
//! When it runs again, its mirror of the channel cannot be brought up to date
//! event by event: it rebuilds the mirror, drops the channel's subscribers,
//! and its client resumes with a typed `history_truncated` reset, then gets
//! every later event once, in order. Nothing is skipped silently.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use resub::{Client, Message, ResetReason, Transport};
use resub_fixture::RedisServer;
use tokio::time::timeout;

/// Events each node (and Redis) keeps per channel.
const HISTORY: u64 = 50;
/// Events published while node A is frozen: well past `HISTORY`.
const WHILE_FROZEN: u64 = 190;
/// Upper bound for one transport's exchange.
const DEADLINE: Duration = Duration::from_secs(60);

async fn start_node(redis: &RedisServer, prefix: &str) -> (tokio::process::Child, SocketAddr) {
    let history = HISTORY.to_string();
    common::start_redis_node(redis, prefix, &["--history", &history]).await
}

/// Sends `signal` (`STOP`, `CONT`) to the process.
fn signal(child: &tokio::process::Child, signal: &str) {
    let pid = child.id().expect("the node is running").to_string();
    let status = std::process::Command::new("kill").args([&format!("-{signal}"), &pid]).status().expect("kill runs");
    assert!(status.success(), "kill -{signal} {pid}");
}

async fn publish(addr: SocketAddr, channel: &str, data: &str) -> String {
    let reply = common::http(addr, "POST", &format!("/publish/{channel}"), &[], data.as_bytes()).await;
    assert_eq!(reply.status, 200, "publish {data}: {}", reply.body);
    reply.json()["id"].as_str().expect("an id").to_owned()
}

/// The next message that is not a `Resumed` notice.
async fn next(sub: &mut resub::Subscription, transport: Transport) -> Message {
    loop {
        let message = timeout(Duration::from_secs(20), sub.next())
            .await
            .unwrap_or_else(|_| panic!("{transport}: nothing within 20 s"))
            .expect("the subscription goes on")
            .expect("no error");
        if !matches!(message, Message::Resumed { .. }) {
            return message;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_frozen_past_redis_retention_resumes_its_clients_with_a_typed_reset() {
    for transport in [Transport::WebSocket, Transport::Sse, Transport::LongPoll] {
        timeout(DEADLINE, lag(transport)).await.unwrap_or_else(|_| panic!("{transport}: timed out"));
    }
}

async fn lag(transport: Transport) {
    let redis = RedisServer::start().await.expect("redis-server starts (scripts/test.sh installs it)");
    let prefix = format!("lag-{transport}");
    let (node_a, a) = start_node(&redis, &prefix).await;
    let (_node_b, b) = start_node(&redis, &prefix).await;
    let channel = "ticks";
    let start = publish(b, channel, "0").await;
    let client = Client::builder(&format!("http://{a}")).transports(&[transport]).build().unwrap();
    let mut sub = client.subscribe_from(channel, &start).await.unwrap();

    // Events published on B reach the client on A.
    for n in 1..=10 {
        publish(b, channel, &n.to_string()).await;
    }
    let mut before: Vec<(String, u64)> = Vec::new();
    while before.len() < 10 {
        match next(&mut sub, transport).await {
            Message::Event(e) => before.push((e.id.into(), e.data.parse().unwrap())),
            other => panic!("{transport}: unexpected {other:?}"),
        }
    }

    // A stops; B publishes far more than Redis keeps; A runs again.
    signal(&node_a, "STOP");
    let mut last_id = String::new();
    for n in 11..=10 + WHILE_FROZEN {
        last_id = publish(b, channel, &n.to_string()).await;
    }
    signal(&node_a, "CONT");

    // The client may still get what A had read before it stopped; then it
    // is told, with a reason, that it missed events.
    let head = loop {
        match next(&mut sub, transport).await {
            Message::Event(e) => before.push((e.id.into(), e.data.parse().unwrap())),
            Message::Reset { reason, head, .. } => {
                assert_eq!(reason, ResetReason::HistoryTruncated, "{transport}");
                break head;
            }
            other => panic!("{transport}: unexpected {other:?}"),
        }
    };
    let numbers: Vec<u64> = before.iter().map(|(_, n)| *n).collect();
    assert_eq!(numbers, (1..=numbers.len() as u64).collect::<Vec<_>>(), "{transport}: in order before the reset");
    assert!(numbers.len() < (10 + WHILE_FROZEN - HISTORY) as usize, "{transport}: the reset stands for lost events");
    assert_eq!(head, last_id, "{transport}: the reset's head is the channel's head");

    // After the reset: every later event, once and in order.
    for n in 201..=210 {
        publish(b, channel, &n.to_string()).await;
    }
    for n in 201..=210u64 {
        match next(&mut sub, transport).await {
            Message::Event(e) => assert_eq!(e.data, n.to_string(), "{transport}: after the reset"),
            other => panic!("{transport}: unexpected {other:?}"),
        }
    }
    let stats = common::http(a, "GET", "/control/stats", &[], b"").await.json();
    let rebuilds = stats["mirror_rebuilds"].as_u64().expect("mirror_rebuilds");
    assert!(rebuilds >= 1, "{transport}: node A rebuilt its mirror ({stats})");
    println!(
        "{transport}: {} events before the freeze and reset, then 201-210; {rebuilds} mirror rebuild(s)",
        before.len()
    );
    client.close().await;
}
