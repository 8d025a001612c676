#![cfg(not(target_arch = "wasm32"))]
//! Every buffer the client fills from the application or the network is
//! bounded: the application's publishes while the client's loop waits for a
//! slow subscription, a WebSocket's queue of frames to send when the server
//! stops reading, and the answer to an HTTP publish.

use std::time::Duration;

use futures::{FutureExt, StreamExt};
use resub::core::Backoff;
use resub::{Client, ConnectionState, DisconnectReason, Error, Transport};
use resub_fixture::Fixture;
use tokio::net::TcpListener;

const DEADLINE: Duration = Duration::from_secs(20);

fn backoff() -> Backoff {
    Backoff { base: Duration::from_millis(20), factor: 2.0, cap: Duration::from_millis(200), max_attempts: None }
}

/// The client's loop waits for a subscription nobody reads, and takes no
/// command meanwhile: publishes are counted against the outbox's bound when
/// they are made, not when the loop takes them, so every publish past the
/// bound fails at once instead of queueing for the loop. (On this
/// single-threaded runtime the loop cannot run while the test publishes:
/// the loop takes nothing, whatever it waits for.)
#[tokio::test(flavor = "current_thread")]
async fn publishes_made_while_the_loop_takes_no_command_are_bounded_by_the_outbox() {
    let fx = Fixture::start().await.unwrap();
    let c = Client::builder(&fx.url()).transports(&[Transport::WebSocket]).max_pending_publishes(16).build().unwrap();
    let mut slow = c.subscribe("slow").await.unwrap();
    let mut states = c.states();
    while !matches!(states.next().await, Some(ConnectionState::Connected { .. })) {}
    // Once the subscription is live, fill its queue and then some.
    let mut first = None;
    while first.is_none() {
        fx.publish("slow", None, "0").unwrap();
        first = tokio::time::timeout(Duration::from_millis(200), slow.next()).await.ok();
    }
    for i in 0..5_000 {
        fx.publish("slow", None, &i.to_string()).unwrap();
    }
    // Each publish is polled once: the first 16 are taken, the rest refused.
    let mut waiting = Vec::new();
    let mut refused = 0;
    for i in 0..10_000 {
        let mut p = Box::pin(c.publish("other", format!("p{i}")));
        match (&mut p).now_or_never() {
            Some(Err(Error::PublishQueueFull { waiting, .. })) => {
                assert_eq!(waiting, 16);
                refused += 1;
            }
            Some(other) => panic!("publish {i} settled while the loop waits: {other:?}"),
            None => waiting.push(p),
        }
    }
    assert_eq!((waiting.len(), refused), (16, 10_000 - 16));
    // Reading again lets the loop go on: the 16 are applied.
    let reader = tokio::spawn(async move { while slow.next().await.is_some() {} });
    let ids = tokio::time::timeout(DEADLINE, futures::future::join_all(waiting)).await.expect("applied");
    assert!(ids.iter().all(Result::is_ok), "{ids:?}");
    c.close().await;
    reader.await.unwrap();
}

/// A WebSocket server that greets and then never reads: the client's queue
/// of frames to send reaches its bound and the connection is given up,
/// instead of the queue growing with every frame.
#[tokio::test]
async fn a_websocket_whose_server_stops_reading_is_given_up_at_the_send_queue_bound() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
            use futures::SinkExt;
            ws.send(tokio_tungstenite::tungstenite::Message::text(r#"{"type":"welcome","heartbeat_ms":60000}"#))
                .await
                .unwrap();
            held.push(ws); // kept open, never read
        }
    });
    let c = Client::builder(&format!("http://{addr}"))
        .transports(&[Transport::WebSocket])
        .backoff(backoff())
        .max_pending_publish_bytes(1024)
        .max_frame_bytes(4096)
        .build()
        .unwrap();
    let mut states = c.states();
    while !matches!(states.next().await, Some(ConnectionState::Connected { .. })) {}
    // Subscribe and unsubscribe in a loop: two frames each time, for a
    // server that reads none of them (the socket's buffers fill first).
    let given_up = async {
        let mut i = 0u64;
        loop {
            let channel = format!("c{}", i % 64);
            drop(c.subscribe(&channel).await.unwrap());
            i += 1;
            if let Some(Some(ConnectionState::Disconnected { reason, .. })) = states.next().now_or_never() {
                return (i, reason);
            }
            if i % 64 == 0 {
                tokio::task::yield_now().await;
            }
        }
    };
    let (frames, reason) = tokio::time::timeout(Duration::from_secs(60), given_up).await.expect("given up");
    assert!(
        matches!(&reason, DisconnectReason::Lost(why) if why.contains("send queue full")),
        "after {frames} subscribes: {reason}"
    );
    c.close().await;
    server.abort();
}

/// An HTTP publish answered with more than 64 KiB is not read whole: that
/// attempt fails, the publish is sent again with the same key, and the
/// server applies it once.
#[tokio::test]
async fn an_oversized_answer_to_an_http_publish_is_not_read_and_the_publish_is_retried_once() {
    let fx = Fixture::start().await.unwrap();
    for transport in [Transport::Sse, Transport::LongPoll] {
        let channel = format!("big-answer-{transport}");
        let c = Client::builder(&fx.url()).transports(&[transport]).backoff(backoff()).build().unwrap();
        let mut states = c.states();
        while !matches!(states.next().await, Some(ConnectionState::Connected { .. })) {}
        let before = fx.stats().publish_requests;
        fx.oversize_next_publish_answers(1, 8 << 20);
        let id = tokio::time::timeout(DEADLINE, c.publish(&channel, "x")).await.expect("acked").unwrap();
        assert_eq!(id, fx.head(&channel), "{transport}: applied once, under the first id");
        assert_eq!(fx.stats().publish_requests - before, 2, "{transport}: sent again after the oversized answer");
        c.close().await;
    }
}

/// PROTOCOL.md §5: WebSocket ping control frames are not protocol frames. A
/// server that sends only those after its welcome is silent, and the client
/// replaces the connection after twice the heartbeat interval, as a browser
/// (which cannot see them) would.
#[tokio::test]
async fn websocket_control_pings_do_not_count_as_liveness() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        use futures::SinkExt;
        use tokio_tungstenite::tungstenite::Message as Ws;
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
                ws.send(Ws::text(r#"{"type":"welcome","heartbeat_ms":100}"#)).await.unwrap();
                let mut tick = tokio::time::interval(Duration::from_millis(20));
                loop {
                    tick.tick().await;
                    if ws.send(Ws::Ping(Vec::new().into())).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let c = Client::builder(&format!("http://{addr}")).transports(&[Transport::WebSocket]).backoff(backoff()).build();
    let c = c.unwrap();
    let mut states = c.states();
    let reason = tokio::time::timeout(DEADLINE, async {
        loop {
            if let Some(ConnectionState::Disconnected { reason, .. }) = states.next().await {
                return reason;
            }
        }
    })
    .await
    .expect("the connection is replaced");
    assert_eq!(reason, DisconnectReason::HeartbeatTimeout);
    c.close().await;
    server.abort();
}
