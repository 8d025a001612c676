#![cfg(not(target_arch = "wasm32"))]
//! The native client against the fixture server, every test run on each
//! transport (WebSocket, SSE, long polling): resume, faults and typed
//! outcomes. Every wait is on an observable event (a message, a state, a
//! server counter), bounded by a deadline so that a failure cannot hang the
//! suite.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use resub::core::Backoff;
use resub::{Client, ConnectionState, DisconnectReason, Error, Message, ResetReason, Subscription, Transport};
use resub_fixture::{Fixture, FixtureConfig};

const DEADLINE: Duration = Duration::from_secs(20);

async fn fixture(heartbeat_ms: u64) -> Arc<Fixture> {
    let cfg = FixtureConfig { heartbeat: Duration::from_millis(heartbeat_ms), ..FixtureConfig::default() };
    Arc::new(Fixture::start_with("127.0.0.1:0".parse().unwrap(), cfg).await.unwrap())
}

fn client(url: &str, transport: Transport) -> Client {
    Client::builder(url)
        .transports(&[transport])
        .backoff(Backoff {
            base: Duration::from_millis(20),
            factor: 2.0,
            cap: Duration::from_millis(500),
            max_attempts: None,
        })
        .healthy_after(Duration::from_millis(200))
        .open_timeout(Duration::from_secs(2))
        .poll_hold(Duration::from_secs(2))
        .seed(42)
        .build()
        .unwrap()
}

/// Waits until the fixture holds an open connection of `transport` (for long
/// polling: a held poll), so that a fault injected next hits it.
async fn until_open(fx: &Fixture, transport: Transport) {
    let open = || {
        let st = fx.stats();
        match transport {
            Transport::WebSocket => st.websocket_open,
            Transport::Sse => st.sse_open,
            _ => st.polls_held,
        }
    };
    tokio::time::timeout(DEADLINE, async {
        while open() == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("no open connection");
}

/// Runs each listed test once per transport.
macro_rules! per_transport {
    ($($name:ident),* $(,)?) => {
        mod ws { $( #[tokio::test] async fn $name() { super::$name(resub::Transport::WebSocket).await } )* }
        mod sse { $( #[tokio::test] async fn $name() { super::$name(resub::Transport::Sse).await } )* }
        mod poll { $( #[tokio::test] async fn $name() { super::$name(resub::Transport::LongPoll).await } )* }
    };
}

per_transport!(
    resumes_after_an_abrupt_drop_without_loss_or_duplicates,
    a_stall_is_detected_by_the_heartbeat_and_the_connection_replaced,
    wake_replaces_a_stalled_connection_long_before_the_heartbeat_would,
    a_new_epoch_gives_a_typed_reset_live_and_on_resume,
    truncated_history_gives_a_typed_reset_then_live_events,
    a_cursor_ahead_of_the_head_resets_to_it_and_every_later_event_arrives,
    retry_after_from_a_503_is_honoured,
    unauthorized_stops_retrying_with_a_typed_error,
    the_first_connect_is_retried_while_the_server_is_down,
    many_subscriptions_share_one_connection,
    a_thousand_events_with_a_drop_every_fifty_arrive_complete_and_in_order,
    publish_is_acked_with_the_id_subscribers_see,
    closing_ends_subscriptions_and_the_state_stream,
);

async fn next(sub: &mut Subscription) -> Message {
    match tokio::time::timeout(DEADLINE, sub.next()).await {
        Ok(Some(Ok(m))) => m,
        Ok(Some(Err(e))) => panic!("subscription failed: {e}"),
        Ok(None) => panic!("subscription ended"),
        Err(_) => panic!("no message within {DEADLINE:?}"),
    }
}

/// The data of the next `n` events, skipping `Resumed` notices; panics on a reset.
async fn events(sub: &mut Subscription, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        match next(sub).await {
            Message::Event(e) => out.push(e.data),
            Message::Resumed { .. } => {}
            other => panic!("unexpected {other:?} after {} events", out.len()),
        }
    }
    out
}

async fn wait_state(
    states: &mut resub::States,
    what: &str,
    pred: impl Fn(&ConnectionState) -> bool,
) -> ConnectionState {
    let fut = async {
        while let Some(s) = states.next().await {
            if pred(&s) {
                return s;
            }
        }
        panic!("state stream ended while waiting for {what}");
    };
    tokio::time::timeout(DEADLINE, fut).await.unwrap_or_else(|_| panic!("no {what} state within {DEADLINE:?}"))
}

fn numbers(r: std::ops::RangeInclusive<u32>) -> Vec<String> {
    r.map(|i| i.to_string()).collect()
}

async fn resumes_after_an_abrupt_drop_without_loss_or_duplicates(t: Transport) {
    let fx = fixture(1000).await;
    let c = client(&fx.url(), t);
    let mut sub = c.subscribe_from("c", &fx.head("c")).await.unwrap();
    for i in 1..=10 {
        fx.publish("c", None, &i.to_string()).unwrap();
    }
    assert_eq!(events(&mut sub, 10).await, numbers(1..=10));
    until_open(&fx, t).await;
    assert_eq!(fx.drop_connections(), 1);
    for i in 11..=20 {
        fx.publish("c", None, &i.to_string()).unwrap();
    }
    assert_eq!(events(&mut sub, 10).await, numbers(11..=20));
    // A marker published last proves nothing else (no duplicate) came before it.
    fx.publish("c", None, "end").unwrap();
    assert_eq!(events(&mut sub, 1).await, ["end"]);
    assert!(c.stats().connections >= 2, "the client reconnected");
}

async fn a_stall_is_detected_by_the_heartbeat_and_the_connection_replaced(t: Transport) {
    let fx = fixture(100).await;
    let c = client(&fx.url(), t);
    let mut states = c.states();
    let mut sub = c.subscribe_from("c", &fx.head("c")).await.unwrap();
    fx.publish("c", None, "before").unwrap();
    assert_eq!(events(&mut sub, 1).await, ["before"]);
    until_open(&fx, t).await;
    assert_eq!(fx.stall(), 1);
    fx.publish("c", None, "during").unwrap();
    wait_state(&mut states, "heartbeat timeout", |s| {
        matches!(s, ConnectionState::Disconnected { reason: DisconnectReason::HeartbeatTimeout, .. })
    })
    .await;
    wait_state(&mut states, "connected", |s| matches!(s, ConnectionState::Connected { .. })).await;
    fx.publish("c", None, "after").unwrap();
    assert_eq!(events(&mut sub, 2).await, ["during", "after"]);
}

/// An app back in the foreground calls `wake()`: a stalled connection of
/// any transport is replaced within the liveness probe (3 s), not after
/// the heartbeat timeout (here a minute).
async fn wake_replaces_a_stalled_connection_long_before_the_heartbeat_would(t: Transport) {
    let fx = fixture(30_000).await;
    let c = client(&fx.url(), t);
    let mut sub = c.subscribe_from("c", &fx.head("c")).await.unwrap();
    fx.publish("c", None, "1").unwrap();
    assert_eq!(events(&mut sub, 1).await, ["1"]);
    until_open(&fx, t).await;
    assert!(fx.stall() >= 1);
    fx.publish("c", None, "2").unwrap();
    let before = fx.stats().connections_accepted;
    c.wake();
    // DEADLINE (20 s) is a third of the heartbeat timeout. A WebSocket
    // misses its ping's deadline and reconnects; an SSE stream or a held
    // poll is replaced by a fresh request at once.
    assert_eq!(events(&mut sub, 1).await, ["2"]);
    assert!(fx.stats().connections_accepted > before, "a new connection carried it");
    c.close().await;
}

async fn a_new_epoch_gives_a_typed_reset_live_and_on_resume(t: Transport) {
    let fx = fixture(1000).await;
    let first = fx.head("c");
    fx.publish("c", None, "old").unwrap();
    let c = client(&fx.url(), t);
    let mut sub = c.subscribe_from("c", &first).await.unwrap();
    assert_eq!(events(&mut sub, 1).await, ["old"]);
    let head = fx.new_epoch("c");
    match next(&mut sub).await {
        Message::Reset { reason: ResetReason::EpochChanged, head: h, .. } => assert_eq!(h, head),
        other => panic!("expected a reset, got {other:?}"),
    }
    fx.publish("c", None, "new").unwrap();
    assert_eq!(events(&mut sub, 1).await, ["new"]);
    // A cursor from the old epoch cannot be resumed either.
    let c2 = client(&fx.url(), t);
    let mut sub2 = c2.subscribe_from("c", &first).await.unwrap();
    assert!(matches!(next(&mut sub2).await, Message::Reset { reason: ResetReason::EpochChanged, .. }));
}

async fn truncated_history_gives_a_typed_reset_then_live_events(t: Transport) {
    let fx = fixture(1000).await;
    let first = fx.publish("c", None, "1").unwrap();
    for i in 2..=10 {
        fx.publish("c", None, &i.to_string()).unwrap();
    }
    fx.truncate("c", 2);
    let c = client(&fx.url(), t);
    let mut sub = c.subscribe_from("c", &first).await.unwrap();
    match next(&mut sub).await {
        Message::Reset { reason: ResetReason::HistoryTruncated, head, .. } => assert_eq!(head, fx.head("c")),
        other => panic!("expected a reset, got {other:?}"),
    }
    fx.publish("c", None, "11").unwrap();
    assert_eq!(events(&mut sub, 1).await, ["11"]);
}

/// A cursor ahead of the channel's head in its epoch (a node that lost
/// writes, a cursor from elsewhere): a typed reset to the head, then every
/// event published after it, none dropped as a "duplicate" of the old cursor.
async fn a_cursor_ahead_of_the_head_resets_to_it_and_every_later_event_arrives(t: Transport) {
    let fx = fixture(1000).await;
    let head = fx.publish("c", None, "0").unwrap();
    let epoch = head.rsplit_once('-').unwrap().0;
    let c = client(&fx.url(), t);
    let mut sub = c.subscribe_from("c", &format!("{epoch}-99")).await.unwrap();
    match next(&mut sub).await {
        Message::Reset { reason: ResetReason::UnknownCursor, head: h, .. } => assert_eq!(h, head),
        other => panic!("{other:?}"),
    }
    for i in 1..=29 {
        fx.publish("c", None, &i.to_string()).unwrap();
    }
    assert_eq!(events(&mut sub, 29).await, numbers(1..=29));
    // Across a drop too: the cursor is the last event, not the old one.
    until_open(&fx, t).await;
    fx.drop_connections();
    fx.publish("c", None, "30").unwrap();
    assert_eq!(events(&mut sub, 1).await, ["30"]);
    c.close().await;
}

async fn retry_after_from_a_503_is_honoured(t: Transport) {
    let fx = fixture(1000).await;
    let c = client(&fx.url(), t);
    let mut states = c.states();
    let mut sub = c.subscribe_from("c", &fx.head("c")).await.unwrap();
    fx.publish("c", None, "a").unwrap();
    assert_eq!(events(&mut sub, 1).await, ["a"]);
    until_open(&fx, t).await;
    fx.set_unavailable(1, Some(1));
    fx.drop_connections();
    let s = wait_state(&mut states, "unavailable", |s| {
        matches!(s, ConnectionState::Disconnected { reason: DisconnectReason::Unavailable { .. }, .. })
    })
    .await;
    let ConnectionState::Disconnected { reason, retry_in, .. } = s else { unreachable!() };
    assert_eq!(reason, DisconnectReason::Unavailable { retry_after: Some(Duration::from_secs(1)) });
    assert!(retry_in >= Duration::from_secs(1));
    wait_state(&mut states, "connected", |s| matches!(s, ConnectionState::Connected { .. })).await;
    // The server saw the next handshake no sooner than Retry-After.
    let log = fx.stats().handshakes;
    let i = log.iter().position(|h| h.status == 503).expect("a 503 was answered");
    let after = log[i + 1];
    assert!(matches!(after.status, 101 | 200), "{after:?}");
    assert!(after.at.duration_since(log[i].at) >= Duration::from_secs(1), "retried too early");
    fx.publish("c", None, "b").unwrap();
    assert_eq!(events(&mut sub, 1).await, ["b"]);
}

async fn unauthorized_stops_retrying_with_a_typed_error(t: Transport) {
    let fx = fixture(1000).await;
    fx.set_reject_auth(true);
    let c = client(&fx.url(), t);
    let states = c.states();
    let mut sub = c.subscribe("c").await.unwrap();
    match tokio::time::timeout(DEADLINE, sub.next()).await.unwrap() {
        Some(Err(Error::Unauthorized)) => {}
        other => panic!("expected unauthorized, got {other:?}"),
    }
    assert!(tokio::time::timeout(DEADLINE, sub.next()).await.unwrap().is_none(), "the subscription ended");
    assert_eq!(c.state(), ConnectionState::Closed { error: Some(Error::Unauthorized) });
    let seen: Vec<ConnectionState> = tokio::time::timeout(DEADLINE, states.collect()).await.unwrap();
    assert_eq!(seen.last(), Some(&ConnectionState::Closed { error: Some(Error::Unauthorized) }));
    let attempts = seen.iter().filter(|s| matches!(s, ConnectionState::Connecting { .. })).count();
    assert!(attempts <= 1, "retried after 401: {seen:?}");
    let refused = fx.stats().handshakes.iter().filter(|h| h.status == 401).count();
    // On SSE and long polling the first request, sent before the subscription,
    // is replaced by one that carries it; the server may have refused both.
    let most = if t == Transport::WebSocket { 1 } else { 2 };
    assert!((1..=most).contains(&refused), "{refused} refusals: retried after 401");
    // Later calls say why the client stopped.
    assert_eq!(c.publish("c", "x").await, Err(Error::Unauthorized));
    assert_eq!(c.subscribe("d").await.err(), Some(Error::Unauthorized));
}

async fn the_first_connect_is_retried_while_the_server_is_down(t: Transport) {
    // Reserve a port, then free it so that nothing listens there yet.
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let c = client(&format!("http://{addr}"), t);
    let mut states = c.states();
    let mut sub = c.subscribe_from("c", "e0-0").await.unwrap_or_else(|e| panic!("{e}"));
    for _ in 0..2 {
        wait_state(&mut states, "connect failure", |s| {
            matches!(s, ConnectionState::Disconnected { reason: DisconnectReason::ConnectFailed(_), .. })
        })
        .await;
    }
    let fx = Fixture::start_with(addr, FixtureConfig::default()).await.unwrap();
    wait_state(&mut states, "connected", |s| matches!(s, ConnectionState::Connected { .. })).await;
    // The fixture's epoch is not `e0`: the client is told its cursor is gone.
    assert!(matches!(next(&mut sub).await, Message::Reset { .. }));
    fx.publish("c", None, "hello").unwrap();
    assert_eq!(events(&mut sub, 1).await, ["hello"]);
}

async fn many_subscriptions_share_one_connection(t: Transport) {
    let fx = fixture(1000).await;
    let c = client(&fx.url(), t);
    let mut subs = Vec::new();
    for i in 0..50 {
        let ch = format!("ch{i}");
        subs.push(c.subscribe_from(&ch, &fx.head(&ch)).await.unwrap());
    }
    for i in 0..50 {
        fx.publish(&format!("ch{i}"), None, &format!("to {i}")).unwrap();
    }
    for (i, sub) in subs.iter_mut().enumerate() {
        assert_eq!(events(sub, 1).await, [format!("to {i}")]);
    }
    assert_eq!(c.stats().connections, 1, "one connection carried every subscription");
    if t == Transport::WebSocket {
        assert_eq!(fx.stats().websocket_accepted, 1);
    }
    assert!(matches!(c.subscribe("ch3").await, Err(Error::AlreadySubscribed(_))));
}

async fn a_thousand_events_with_a_drop_every_fifty_arrive_complete_and_in_order(t: Transport) {
    let fx = fixture(1000).await;
    let c = client(&fx.url(), t);
    let mut states = c.states();
    let mut sub = c.subscribe_from("c", &fx.head("c")).await.unwrap();
    let publisher = {
        let fx = fx.clone();
        tokio::spawn(async move {
            let mut dropped = 0;
            let mut connected = 0;
            for i in 1..=1000 {
                fx.publish("c", None, &i.to_string()).unwrap();
                if i % 50 == 0 {
                    // Drop the k-th connection once the client has made it, so
                    // that every drop hits a live stream.
                    while connected < i / 50 {
                        let s = states.next().await.expect("client alive");
                        connected += u32::from(matches!(s, ConnectionState::Connected { .. }));
                    }
                    until_open(&fx, t).await;
                    dropped += fx.drop_connections();
                }
                tokio::task::yield_now().await;
            }
            dropped
        })
    };
    assert_eq!(events(&mut sub, 1000).await, numbers(1..=1000));
    let dropped = publisher.await.unwrap();
    fx.publish("c", None, "end").unwrap();
    assert_eq!(events(&mut sub, 1).await, ["end"]);
    assert_eq!(dropped, 20, "every drop hit a live connection");
    assert!(c.stats().connections >= 21);
}

async fn publish_is_acked_with_the_id_subscribers_see(t: Transport) {
    let fx = fixture(1000).await;
    let c = client(&fx.url(), t);
    let mut sub = c.subscribe_from("c", &fx.head("c")).await.unwrap();
    let id = c.publish("c", "hi").await.unwrap();
    loop {
        match next(&mut sub).await {
            Message::Resumed { .. } => continue,
            Message::Event(e) => {
                assert_eq!(e.id, id);
                assert_eq!(e.data, "hi");
                break;
            }
            other => panic!("{other:?}"),
        }
    }
}

async fn closing_ends_subscriptions_and_the_state_stream(t: Transport) {
    let fx = fixture(1000).await;
    let c = client(&fx.url(), t);
    let mut sub = c.subscribe("c").await.unwrap();
    let mut states = c.states();
    c.close().await;
    assert!(tokio::time::timeout(DEADLINE, sub.next()).await.unwrap().is_none());
    assert_eq!(c.state(), ConnectionState::Closed { error: None });
    let last = tokio::time::timeout(DEADLINE, async {
        let mut last = None;
        while let Some(s) = states.next().await {
            last = Some(s);
        }
        last
    })
    .await
    .unwrap();
    assert_eq!(last, Some(ConnectionState::Closed { error: None }));
}

/// An application that stops reading a subscription holds the client's loop
/// (back-pressure); closing the client must still work.
#[tokio::test]
async fn close_returns_while_a_subscription_is_not_read() {
    let cfg =
        FixtureConfig { heartbeat: Duration::from_secs(60), max_connection_queue: 4_096, ..FixtureConfig::default() };
    let fx = Fixture::start_with("127.0.0.1:0".parse().unwrap(), cfg).await.unwrap();
    // On the streaming transports the server sees the client stop reading:
    // its queue for the connection fills and it drops the connection. The
    // mechanism (the loop waiting on the subscription) is the same on
    // long polling.
    for transport in [Transport::WebSocket, Transport::Sse] {
        let c = client(&fx.url(), transport);
        let channel = format!("unread-{transport}");
        let head = fx.head(&channel);
        let _unread = c.subscribe_from(&channel, &head).await.unwrap();
        let drops = fx.stats().slow_consumer_drops;
        let data = "x".repeat(200);
        let deadline = tokio::time::Instant::now() + DEADLINE;
        // Publish until the server gives up on the client: by then the
        // client's loop waits for the application, since while it runs it
        // reads whatever its connection receives.
        while fx.stats().slow_consumer_drops == drops {
            assert!(tokio::time::Instant::now() < deadline, "{transport}: the server never saw the client stop");
            // Bursts well under the server's queue, so that only a client
            // that stopped reading can fill it.
            for _ in 0..256 {
                fx.publish(&channel, None, &data).unwrap();
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::timeout(DEADLINE, c.close()).await.unwrap_or_else(|_| panic!("{transport}: close hung"));
        assert!(matches!(c.state(), ConnectionState::Closed { error: None }));
    }
}
