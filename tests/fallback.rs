#![cfg(not(target_arch = "wasm32"))]
//! Automatic transport selection against the fixture: fall back when a
//! transport is refused, return to the preferred one when it is allowed
//! again, and lose or repeat nothing at any switch.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use resub::core::Backoff;
use resub::{Client, ConnectionState, DisconnectReason, Message, States, Transport};
use resub_fixture::{Fixture, FixtureConfig};

const DEADLINE: Duration = Duration::from_secs(30);

async fn connected_via(states: &mut States, want: Transport) -> ConnectionState {
    let seen = std::sync::Mutex::new(Vec::new());
    let fut = async {
        while let Some(s) = states.next().await {
            if matches!(&s, ConnectionState::Connected { transport, .. } if *transport == want) {
                return s;
            }
            seen.lock().unwrap().push(s.to_string());
        }
        panic!("state stream ended before connecting via {want}");
    };
    tokio::time::timeout(DEADLINE, fut)
        .await
        .unwrap_or_else(|_| panic!("not connected via {want} in time; states meanwhile: {:?}", seen.lock().unwrap()))
}

async fn until(what: &str, cond: impl Fn() -> bool) {
    tokio::time::timeout(DEADLINE, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what} did not happen"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_falls_back_to_sse_then_poll_and_returns_to_websocket_without_loss() {
    let cfg = FixtureConfig { heartbeat: Duration::from_millis(200), ..FixtureConfig::default() };
    let fx = Arc::new(Fixture::start_with("127.0.0.1:0".parse().unwrap(), cfg).await.unwrap());
    fx.set_websocket_enabled(false);
    let client = Client::builder(&fx.url())
        .backoff(Backoff {
            base: Duration::from_millis(20),
            factor: 2.0,
            cap: Duration::from_millis(300),
            max_attempts: None,
        })
        .upgrade_probe(Some(Duration::from_millis(300)))
        // Long enough that a slow moment of a loaded machine is not taken
        // for a transport that cannot open (which would skip SSE, the step
        // this test checks); every switch here is a refusal, not a timeout.
        .open_timeout(Duration::from_secs(10))
        .poll_hold(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut states = client.states();
    let mut sub = client.subscribe_from("c", &fx.head("c")).await.unwrap();

    // The application reads everything, concurrently, until the end marker.
    let received = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let reader = tokio::spawn({
        let received = received.clone();
        async move {
            let mut got = Vec::new();
            while let Some(msg) = sub.next().await {
                match msg.expect("no error") {
                    Message::Event(e) if e.data == "end" => return got,
                    Message::Event(e) => {
                        got.push(e.data.parse::<u64>().unwrap());
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                    Message::Resumed { .. } => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
            panic!("subscription ended early");
        }
    });
    // Events flow for a while on each transport before the next switch.
    let flowing = |received: Arc<std::sync::atomic::AtomicU64>| async move {
        let from = received.load(Ordering::Relaxed);
        until("events flowing", || received.load(Ordering::Relaxed) >= from + 100).await;
    };
    // A publisher that does not stop for the switches.
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let (fx, stop) = (fx.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                fx.publish("c", None, &n.to_string()).unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            n
        })
    };

    // WebSocket refused: SSE, and the state says why.
    let ConnectionState::Connected { fallback, .. } = connected_via(&mut states, Transport::Sse).await else {
        unreachable!()
    };
    let fallback = fallback.expect("a fallback reason");
    assert_eq!(fallback.from, Transport::WebSocket);
    assert_eq!(fallback.reason, DisconnectReason::Refused { status: 403 });
    flowing(received.clone()).await;

    // SSE refused too: the stream is dropped, and the client ends on long polling.
    fx.set_sse_enabled(false);
    until("an SSE stream is open", || fx.stats().sse_open > 0).await;
    fx.drop_connections();
    connected_via(&mut states, Transport::LongPoll).await;
    flowing(received.clone()).await;

    // WebSocket allowed again: a probe finds it and the client moves back.
    fx.set_websocket_enabled(true);
    let back = connected_via(&mut states, Transport::WebSocket).await;
    let endpoint = fx.url();
    assert_eq!(back, ConnectionState::Connected { transport: Transport::WebSocket, fallback: None, endpoint });
    flowing(received.clone()).await;

    stop.store(true, Ordering::Relaxed);
    let published = publisher.await.unwrap();
    fx.publish("c", None, "end").unwrap();
    let got = tokio::time::timeout(DEADLINE, reader).await.expect("reader finished").unwrap();
    assert_eq!(got.len() as u64, published, "every event exactly once");
    assert!(got.iter().copied().eq(1..=published), "in order, no duplicates");
    let st = client.stats();
    eprintln!("{published} events across ws→sse→poll→ws; {} duplicates dropped", st.duplicates);
}

#[tokio::test]
async fn a_transport_that_worked_is_kept_after_an_ordinary_drop() {
    let fx = Fixture::start().await.unwrap();
    fx.set_websocket_enabled(false);
    let client = Client::builder(&fx.url())
        .backoff(Backoff {
            base: Duration::from_millis(20),
            factor: 2.0,
            cap: Duration::from_millis(200),
            max_attempts: None,
        })
        .upgrade_probe(None)
        .build()
        .unwrap();
    let mut states = client.states();
    let mut sub = client.subscribe_from("c", &fx.head("c")).await.unwrap();
    connected_via(&mut states, Transport::Sse).await;
    fx.set_websocket_enabled(true);
    until("an SSE stream is open", || fx.stats().sse_open > 0).await;
    fx.drop_connections();
    // Reconnects on SSE (what worked), not on the preferred WebSocket.
    let next = tokio::time::timeout(DEADLINE, async {
        loop {
            if let Some(ConnectionState::Connected { transport, .. }) = states.next().await {
                return transport;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(next, Transport::Sse);
    fx.publish("c", None, "x").unwrap();
    loop {
        match tokio::time::timeout(DEADLINE, sub.next()).await.unwrap().unwrap().unwrap() {
            Message::Event(e) => break assert_eq!(e.data, "x"),
            Message::Resumed { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(fx.stats().websocket_accepted, 0);
}
