//! End-to-end tests of the SSE transport, `GET /sse`, over real sockets with
//! a hand-written HTTP/1.1 client.

mod common;

use std::time::Duration;

use common::{End, SseClient, epoch_of, fixture_with, get, http, post, quiet_fixture, raw_request, wait_until};
use resub::protocol::{Outcome, ServerFrame, WireResetReason};
use resub_fixture::FixtureConfig;

fn subscribed(channel: &str, outcome: Outcome, reason: Option<WireResetReason>, head: &str) -> ServerFrame {
    ServerFrame::Subscribed { channel: channel.to_owned(), outcome, reason, head: head.to_owned() }
}

fn event(channel: &str, id: &str, data: &str) -> ServerFrame {
    ServerFrame::Event { channel: channel.into(), id: id.into(), event: None, data: data.to_owned() }
}

/// Asserts the block is an event frame with its id on an `id:` line before
/// the data line, and returns the frame.
fn event_block(block: &common::Block) -> ServerFrame {
    let frame = block.frame();
    let ServerFrame::Event { id, .. } = &frame else {
        panic!("expected an event, got {frame:?}");
    };
    assert_eq!(block.lines.len(), 2, "{block:?}");
    assert_eq!(block.lines[0], format!("id: {id}"));
    assert!(block.lines[1].starts_with("data: {"));
    frame
}

#[tokio::test]
async fn sse_starts_with_retry_and_welcome_then_replays_and_goes_live() {
    let fx = quiet_fixture().await;
    let ids: Vec<String> = (1..=3).map(|i| fx.publish("c", None, &format!("m{i}")).expect("publish")).collect();
    let path = format!("/sse?channel=c@{}&channel=d&access_token=ignored", ids[0]);
    let mut sse = SseClient::open(fx.addr(), &path, &[("Origin", "http://example.test")]).await;
    assert_eq!(sse.status, 200);
    assert_eq!(sse.header("content-type"), Some("text/event-stream"));
    assert_eq!(sse.header("cache-control"), Some("no-cache"));
    assert_eq!(sse.header("x-accel-buffering"), Some("no"));
    assert_eq!(sse.header("access-control-allow-origin"), Some("*"));

    let first = sse.next_block().await;
    assert_eq!(first.raw, b"retry: 1000\ndata: {\"type\":\"welcome\",\"heartbeat_ms\":600000}\n\n");
    assert_eq!(first.frame(), ServerFrame::Welcome { heartbeat_ms: 600_000 });

    let block = sse.next_block().await;
    assert_eq!(block.lines.len(), 1, "no id line on subscribed: {block:?}");
    assert_eq!(block.frame(), subscribed("c", Outcome::Resumed, None, &ids[2]));
    for (n, id) in ids.iter().enumerate().skip(1) {
        let block = sse.next_block().await;
        assert_eq!(event_block(&block), event("c", id, &format!("m{}", n + 1)));
    }
    let d_head = format!("{}-0", epoch_of(&fx.head("d")));
    assert_eq!(sse.next_block().await.frame(), subscribed("d", Outcome::Live, None, &d_head));

    let reply = http(fx.addr(), "POST", "/publish/d", &[], b"live-d").await;
    let live_d = reply.json()["id"].as_str().expect("an id").to_owned();
    let live_c = fx.publish("c", Some("tick"), "live-c").expect("publish");
    assert_eq!(event_block(&sse.next_block().await), event("d", &live_d, "live-d"));
    let block = sse.next_block().await;
    assert_eq!(
        event_block(&block),
        ServerFrame::Event {
            channel: "c".into(),
            id: live_c.as_str().into(),
            event: Some("tick".to_owned()),
            data: "live-c".to_owned(),
        }
    );

    // A new epoch reaches the stream as a reset frame, without an id line.
    let head = fx.new_epoch("c");
    let block = sse.next_block().await;
    assert_eq!(block.lines.len(), 1);
    assert_eq!(
        block.frame(),
        ServerFrame::Reset { channel: "c".to_owned(), reason: WireResetReason::EpochChanged, head }
    );

    let stats = fx.stats();
    assert_eq!((stats.sse_accepted, stats.sse_open), (1, 1));
    assert_eq!(stats.connections_accepted, 1);
    let last = stats.handshakes.last().expect("a handshake");
    assert_eq!((last.transport, last.status), ("sse", 200));
}

#[tokio::test]
async fn sse_honours_last_event_id_for_a_single_channel() {
    let fx = quiet_fixture().await;
    let ids: Vec<String> = (1..=3).map(|i| fx.publish("c", None, &format!("m{i}")).expect("publish")).collect();

    // Single channel without a cursor: the header is the cursor.
    let mut sse = SseClient::open(fx.addr(), "/sse?channel=c", &[("Last-Event-ID", &ids[0])]).await;
    assert!(matches!(sse.next_frame().await, ServerFrame::Welcome { .. }));
    assert_eq!(sse.next_frame().await, subscribed("c", Outcome::Resumed, None, &ids[2]));
    assert_eq!(event_block(&sse.next_block().await), event("c", &ids[1], "m2"));
    assert_eq!(event_block(&sse.next_block().await), event("c", &ids[2], "m3"));

    // A cursor in the query wins over the header.
    let path = format!("/sse?channel=c@{}", ids[1]);
    let mut sse = SseClient::open(fx.addr(), &path, &[("Last-Event-ID", &ids[0])]).await;
    sse.next_frame().await;
    assert_eq!(sse.next_frame().await, subscribed("c", Outcome::Resumed, None, &ids[2]));
    assert_eq!(event_block(&sse.next_block().await), event("c", &ids[2], "m3"));

    // With several channels the header is ignored.
    let mut sse = SseClient::open(fx.addr(), "/sse?channel=c&channel=e", &[("Last-Event-ID", &ids[0])]).await;
    sse.next_frame().await;
    assert_eq!(sse.next_frame().await, subscribed("c", Outcome::Live, None, &ids[2]));

    // A Last-Event-ID of another epoch resets, as a cursor would.
    let mut sse = SseClient::open(fx.addr(), "/sse?channel=c", &[("Last-Event-ID", "zzzzzzzz-1")]).await;
    sse.next_frame().await;
    assert_eq!(sse.next_frame().await, subscribed("c", Outcome::Reset, Some(WireResetReason::EpochChanged), &ids[2]));
}

/// The bytes of one SSE heartbeat: a comment line and a `ping` frame event.
const HEARTBEAT: &[u8] = b": ping\ndata: {\"type\":\"ping\"}\n\n";

#[tokio::test]
async fn sse_heartbeats_carry_a_comment_and_a_ping_frame() {
    let fx = fixture_with(FixtureConfig { heartbeat: Duration::from_millis(50), ..FixtureConfig::default() }).await;
    let mut sse = SseClient::open(fx.addr(), "/sse?channel=c", &[]).await;
    assert_eq!(sse.next_block().await.frame(), ServerFrame::Welcome { heartbeat_ms: 50 });
    assert!(matches!(sse.next_block().await.frame(), ServerFrame::Subscribed { .. }));
    for _ in 0..2 {
        let block = sse.next_block().await;
        assert_eq!(block.raw, HEARTBEAT, "{block:?}");
        // One block: the comment for any SSE reader, the event for a browser
        // EventSource (which hides comments), without an id line.
        assert_eq!(block.comments(), [": ping"]);
        assert!(!block.is_comment());
        assert_eq!(block.id(), None);
        assert_eq!(block.frame(), ServerFrame::Ping);
    }
    // An event resets the heartbeat timer and is not merged with a ping.
    let id = fx.publish("c", None, "x").expect("publish");
    let mut block = sse.next_block().await;
    while block.raw == HEARTBEAT {
        block = sse.next_block().await;
    }
    assert_eq!(event_block(&block), event("c", &id, "x"));
    assert_eq!(sse.next_block().await.raw, HEARTBEAT);
}

#[tokio::test]
async fn sse_refusals_and_bad_requests() {
    let fx = quiet_fixture().await;
    for path in ["/sse?channel=", "/sse?channel=a%2Fb", "/sse?channel=a%20b@x-1", "/sse?channel=c&channel=c@x-1"] {
        let reply = get(fx.addr(), path).await;
        assert_eq!(reply.status, 400, "{path}");
        assert!(!reply.body.is_empty());
    }

    let reply = post(fx.addr(), "/control/sse?enabled=false").await;
    assert_eq!(reply.json(), serde_json::json!({ "sse": false }));
    let reply = get(fx.addr(), "/sse?channel=c").await;
    assert_eq!((reply.status, reply.body.as_str()), (403, "sse refused"));
    // Other transports are not affected.
    assert_eq!(get(fx.addr(), "/poll?channel=c").await.status, 200);
    fx.set_sse_enabled(true);

    fx.set_unavailable(4, Some(1));
    let reply = get(fx.addr(), "/sse?channel=c").await;
    assert_eq!((reply.status, reply.header("retry-after")), (503, Some("4")));

    fx.set_reject_auth(true);
    assert_eq!(get(fx.addr(), "/sse?channel=c").await.status, 401);
    // A fault refusal takes precedence over a bad request.
    assert_eq!(get(fx.addr(), "/sse").await.status, 401);
    fx.set_reject_auth(false);

    let sse = SseClient::open(fx.addr(), "/sse?channel=c", &[]).await;
    assert_eq!(sse.status, 200);

    let log: Vec<(&str, u16)> = fx.stats().handshakes.iter().map(|h| (h.transport, h.status)).collect();
    let mut expected = vec![("sse", 400); 4];
    expected.extend([("sse", 403), ("poll", 200), ("sse", 503), ("sse", 401), ("sse", 401), ("sse", 200)]);
    assert_eq!(log, expected);
    let stats = fx.stats();
    assert_eq!(stats.handshakes_refused, 8);
    assert_eq!((stats.sse_accepted, stats.polls_accepted), (1, 1));
    assert_eq!(stats.connections_accepted, 2);
    let json = get(fx.addr(), "/control/stats").await.json();
    assert_eq!(json["handshakes"][4]["transport"], "sse");
    assert_eq!(json["handshakes"][5]["transport"], "poll");
    assert_eq!(json["sse_open"], 1);
    drop(sse);
}

#[tokio::test]
async fn sse_refuses_a_query_token_with_an_error_frame() {
    let fx = quiet_fixture().await;
    fx.set_tokens(Some(&["good"]));
    // A browser's EventSource hides a 401: the refusal comes as a frame.
    let mut sse = SseClient::open(fx.addr(), "/sse?channel=c&access_token=bad", &[]).await;
    assert_eq!(sse.status, 200);
    assert_eq!(sse.header("content-type"), Some("text/event-stream"));
    let frame = sse.next_block().await.frame();
    assert_eq!(
        frame,
        ServerFrame::Error {
            code: "unauthorized".into(),
            channel: None,
            key: None,
            message: "the token was refused".into()
        }
    );
    assert_eq!(
        get(fx.addr(), "/sse?channel=c&access_token=bad").await.body.matches("data: ").count(),
        1,
        "and nothing else"
    );
    let reply = http(fx.addr(), "GET", "/sse?channel=c", &[("authorization", "Bearer bad")], b"").await;
    assert_eq!(reply.status, 401);
    let mut sse = SseClient::open(fx.addr(), "/sse?channel=c&access_token=good", &[]).await;
    assert_eq!(sse.status, 200);
    assert!(matches!(sse.next_event().await.frame(), ServerFrame::Welcome { .. }));
}

#[tokio::test]
async fn sse_drop_ends_streams_abruptly() {
    let fx = quiet_fixture().await;
    let mut a = SseClient::open(fx.addr(), "/sse?channel=c", &[]).await;
    let mut b = SseClient::open(fx.addr(), "/sse?channel=c&channel=d", &[]).await;
    a.next_frame().await;
    a.next_frame().await;
    b.next_frame().await;
    assert_eq!(fx.stats().sse_open, 2);

    let reply = post(fx.addr(), "/control/drop").await;
    assert_eq!(reply.json(), serde_json::json!({ "dropped": 2 }));
    assert_eq!(a.end().await, End::Abrupt);
    assert_eq!(b.end().await, End::Abrupt);
    assert_eq!(fx.stats().connections_open, 0);

    // New streams work.
    let mut c = SseClient::open(fx.addr(), "/sse?channel=c", &[]).await;
    c.next_frame().await;
    c.next_frame().await;
    let id = fx.publish("c", None, "x").expect("publish");
    assert_eq!(event_block(&c.next_block().await), event("c", &id, "x"));
    assert_eq!(fx.drop_connections(), 1);
    assert_eq!(c.end().await, End::Abrupt);
}

#[tokio::test]
async fn sse_stall_silences_the_stream_until_the_client_leaves() {
    let fx = fixture_with(FixtureConfig { heartbeat: Duration::from_millis(50), ..FixtureConfig::default() }).await;
    let mut sse = SseClient::open(fx.addr(), "/sse?channel=c", &[]).await;
    sse.next_frame().await;
    assert!(matches!(sse.next_frame().await, ServerFrame::Subscribed { .. }));
    let reply = post(fx.addr(), "/control/stall").await;
    assert_eq!(reply.json(), serde_json::json!({ "stalled": 1 }));
    fx.publish("c", None, "unseen").expect("publish");

    // A ping already on its way may still arrive; after that nothing does for
    // many heartbeat intervals.
    let mut late = 0;
    while !sse.silent_for(Duration::from_millis(500)).await {
        let block = sse.next_block().await;
        assert_eq!(block.raw, HEARTBEAT, "stalled stream sent {block:?}");
        late += 1;
        assert!(late < 2, "pings continue after stall");
    }
    assert_eq!(fx.stats().sse_open, 1);

    drop(sse);
    wait_until("the stalled stream to close", || fx.stats().connections_open == 0).await;
}

#[tokio::test]
async fn sse_slow_consumer_is_dropped() {
    let fx = fixture_with(FixtureConfig {
        heartbeat: Duration::from_secs(600),
        max_connection_queue: 4,
        ..FixtureConfig::default()
    })
    .await;
    for i in 0..10 {
        fx.publish("c", None, &i.to_string()).expect("publish");
    }
    // The replay does not fit the queue: the stream is dropped at once, and
    // the answer never completes.
    let path = format!("/sse?channel=c@{}-0", epoch_of(&fx.head("c")));
    if let Ok(raw) = raw_request(fx.addr(), "GET", &path, &[], b"").await {
        assert!(!raw.ends_with(b"0\r\n\r\n"), "a complete answer");
    }
    assert_eq!(fx.stats().slow_consumer_drops, 1);
    assert_eq!(fx.stats().connections_open, 0);
}

#[tokio::test]
async fn drop_and_stall_count_every_transport() {
    let fx = quiet_fixture().await;
    let head = fx.head("c");
    let connect = || async {
        let url = format!("ws://{}/ws", fx.addr());
        let (ws, _) = tokio_tungstenite::connect_async(url).await.expect("handshake succeeds");
        ws
    };
    let addr = fx.addr();
    let poll_path = format!("/poll?channel=c@{head}");

    let _ws = connect().await;
    let mut sse = SseClient::open(fx.addr(), "/sse?channel=c", &[]).await;
    let path = poll_path.clone();
    let poll = tokio::spawn(async move { raw_request(addr, "GET", &path, &[], b"").await });
    wait_until("three open connections", || {
        let stats = fx.stats();
        (stats.websocket_open, stats.sse_open, stats.polls_held) == (1, 1, 1)
    })
    .await;
    assert_eq!(fx.stats().connections_open, 3);
    assert_eq!(fx.stall(), 3);
    assert_eq!(fx.stall(), 0, "already stalled");
    // Stalled connections are dropped too.
    assert_eq!(fx.drop_connections(), 3);
    assert_eq!(sse.end().await, End::Abrupt);
    let raw = poll.await.expect("poll task");
    assert!(raw.map_or(true, |bytes| bytes.is_empty()));
    wait_until("every connection to close", || fx.stats().connections_open == 0).await;

    let stats = fx.stats();
    assert_eq!((stats.websocket_accepted, stats.sse_accepted, stats.polls_accepted), (1, 1, 1));
    assert_eq!(stats.connections_accepted, 3);
}
