//! End-to-end tests of the long-polling transport, `GET /poll`, over real
//! sockets with a hand-written HTTP/1.1 client.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{
    HttpReply, WAIT, epoch_of, fixture_with, get, post, quiet_fixture, raw_request, start_binary, wait_until,
};
use resub::protocol::{Outcome, ServerFrame, WireResetReason};
use resub_fixture::{Fixture, FixtureConfig, POLL_MAX_EVENTS};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// The frames of a poll answer.
fn frames(reply: &HttpReply) -> Vec<ServerFrame> {
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let body: serde_json::Value = reply.json();
    let frames = body["frames"].as_array().expect("a frames array");
    frames.iter().map(|f| serde_json::from_value(f.clone()).expect("a server frame")).collect()
}

fn welcome(ms: u64) -> ServerFrame {
    ServerFrame::Welcome { heartbeat_ms: ms }
}

fn subscribed(channel: &str, outcome: Outcome, reason: Option<WireResetReason>, head: &str) -> ServerFrame {
    ServerFrame::Subscribed { channel: channel.to_owned(), outcome, reason, head: head.to_owned() }
}

fn event(channel: &str, id: &str, data: &str) -> ServerFrame {
    ServerFrame::Event { channel: channel.into(), id: id.into(), event: None, data: data.to_owned() }
}

/// Sends a poll in the background.
fn spawn_poll(addr: SocketAddr, path: String) -> JoinHandle<HttpReply> {
    tokio::spawn(async move { get(addr, &path).await })
}

async fn held(fx: &Fixture, count: usize) {
    wait_until("the poll to be held", || fx.stats().polls_held == count).await;
}

async fn answer(task: JoinHandle<HttpReply>) -> HttpReply {
    timeout(WAIT, task).await.expect("the poll was not answered").expect("the poll task")
}

#[tokio::test]
async fn poll_answers_at_once_for_live_and_reset_channels() {
    // The default hold (25 s) is longer than WAIT: an answer proves it was
    // not held.
    let fx = quiet_fixture().await;
    let ids: Vec<String> = (1..=2).map(|i| fx.publish("c", None, &format!("m{i}")).expect("publish")).collect();
    let d_head = fx.head("d");
    let reply = get(fx.addr(), &format!("/poll?channel=c&channel=d@{d_head}")).await;
    assert_eq!(
        frames(&reply),
        [
            welcome(25_000),
            subscribed("c", Outcome::Live, None, &ids[1]),
            subscribed("d", Outcome::Resumed, None, &d_head),
        ]
    );

    // Each reset reason answers at once too.
    fx.truncate("c", 1);
    let garbage = "/poll?channel=c@garbage&timeout_ms=60000";
    let ahead = format!("/poll?channel=c@{}-9", epoch_of(&ids[0]));
    let truncated = format!("/poll?channel=c@{}-0", epoch_of(&ids[0]));
    for (path, reason) in [
        (garbage.to_owned(), WireResetReason::UnknownCursor),
        (ahead, WireResetReason::UnknownCursor),
        (truncated, WireResetReason::HistoryTruncated),
        ("/poll?channel=c@zzzzzzzz-1".to_owned(), WireResetReason::EpochChanged),
    ] {
        let got = frames(&get(fx.addr(), &path).await);
        assert_eq!(got[1], subscribed("c", Outcome::Reset, Some(reason), &ids[1]), "{path}");
        assert_eq!(got.len(), 2, "{path}");
    }
    let stats = fx.stats();
    assert_eq!((stats.polls_accepted, stats.polls_held), (5, 0));
    assert!(stats.handshakes.iter().all(|h| h.transport == "poll"));
}

#[tokio::test]
async fn poll_resumes_with_the_events_after_the_cursors() {
    let fx = quiet_fixture().await;
    let c: Vec<String> = (1..=3).map(|i| fx.publish("c", None, &format!("c{i}")).expect("publish")).collect();
    let d = fx.publish("d", Some("tick"), "d1").expect("publish");
    let path = format!("/poll?channel=c@{}&channel=d@{}-0&channel=e&access_token=x", c[0], epoch_of(&d));
    let e_head = fx.head("e");
    assert_eq!(
        frames(&get(fx.addr(), &path).await),
        [
            welcome(25_000),
            subscribed("c", Outcome::Resumed, None, &c[2]),
            subscribed("d", Outcome::Resumed, None, &d),
            subscribed("e", Outcome::Live, None, &e_head),
            event("c", &c[1], "c2"),
            event("c", &c[2], "c3"),
            ServerFrame::Event {
                channel: "d".into(),
                id: d.as_str().into(),
                event: Some("tick".to_owned()),
                data: "d1".to_owned(),
            },
        ]
    );
}

#[tokio::test]
async fn poll_is_held_until_an_event_is_published() {
    let fx = quiet_fixture().await;
    let c = fx.head("c");
    let d = fx.publish("d", None, "old").expect("publish");
    let task = spawn_poll(fx.addr(), format!("/poll?channel=c@{c}&channel=d@{d}"));
    held(&fx, 1).await;
    assert_eq!(fx.stats().connections_open, 1);

    let next = fx.publish("d", None, "new").expect("publish");
    assert_eq!(
        frames(&answer(task).await),
        [
            welcome(25_000),
            subscribed("c", Outcome::Resumed, None, &c),
            subscribed("d", Outcome::Resumed, None, &next),
            event("d", &next, "new"),
        ]
    );
    assert_eq!(fx.stats().polls_held, 0);
    assert_eq!(fx.stats().polls_accepted, 1);
}

#[tokio::test]
async fn poll_hold_times_out_without_events() {
    let fx = quiet_fixture().await;
    let c = fx.publish("c", None, "x").expect("publish");
    let reply = get(fx.addr(), &format!("/poll?channel=c@{c}&timeout_ms=100")).await;
    assert_eq!(frames(&reply), [welcome(100), subscribed("c", Outcome::Resumed, None, &c)]);
    assert_eq!(fx.stats().polls_held, 0);

    // A hold of 0 answers at once and says so; long ones are capped at 60 s
    // (negative ones are bad requests, see below).
    let reply = get(fx.addr(), &format!("/poll?channel=c@{c}&timeout_ms=0")).await;
    assert_eq!(frames(&reply)[0], welcome(0));
    let reply = get(fx.addr(), "/poll?channel=c&timeout_ms=999999").await;
    assert_eq!(frames(&reply)[0], welcome(60_000));

    // The configured hold applies without timeout_ms.
    let fx = fixture_with(FixtureConfig { poll_hold: Duration::from_millis(80), ..FixtureConfig::default() }).await;
    let head = fx.head("c");
    let reply = get(fx.addr(), &format!("/poll?channel=c@{head}")).await;
    assert_eq!(frames(&reply), [welcome(80), subscribed("c", Outcome::Resumed, None, &head)]);
}

#[tokio::test]
async fn new_epoch_answers_a_held_poll_with_a_reset() {
    let fx = quiet_fixture().await;
    let old = fx.publish("c", None, "x").expect("publish");
    let task = spawn_poll(fx.addr(), format!("/poll?channel=c@{old}"));
    held(&fx, 1).await;
    let head = fx.new_epoch("c");
    assert_eq!(
        frames(&answer(task).await),
        [welcome(25_000), subscribed("c", Outcome::Reset, Some(WireResetReason::EpochChanged), &head),]
    );
}

#[tokio::test]
async fn poll_refusals_and_bad_requests() {
    let fx = quiet_fixture().await;
    // No channel is fine: a client may connect before it subscribes.
    let reply = get(fx.addr(), "/poll?timeout_ms=5").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["frames"].as_array().map(Vec::len), Some(1), "the welcome alone");
    for path in [
        "/poll?channel=a%2Fb",
        "/poll?channel=c&channel=c",
        "/poll?channel=c&timeout_ms=soon",
        "/poll?channel=c&timeout_ms=-1",
    ] {
        let reply = get(fx.addr(), path).await;
        assert_eq!(reply.status, 400, "{path}");
        assert_eq!(reply.json()["code"], "bad_request", "{path}");
    }

    let reply = post(fx.addr(), "/control/poll?enabled=false").await;
    assert_eq!(reply.json(), serde_json::json!({ "poll": false }));
    let reply = get(fx.addr(), "/poll?channel=c").await;
    assert_eq!((reply.status, reply.body.as_str()), (403, "poll refused"));
    fx.set_poll_enabled(true);

    post(fx.addr(), "/control/unavailable?retry_after=2&count=1").await;
    let reply = get(fx.addr(), "/poll?channel=c").await;
    assert_eq!((reply.status, reply.header("retry-after")), (503, Some("2")));
    post(fx.addr(), "/control/auth?reject=true").await;
    assert_eq!(get(fx.addr(), "/poll?channel=c").await.status, 401);
    post(fx.addr(), "/control/auth?reject=false").await;
    assert_eq!(get(fx.addr(), "/poll?channel=c").await.status, 200);

    let log: Vec<(&str, u16)> = fx.stats().handshakes.iter().map(|h| (h.transport, h.status)).collect();
    let mut expected = vec![("poll", 200)];
    expected.extend([("poll", 400); 4]);
    expected.extend([("poll", 403), ("poll", 503), ("poll", 401), ("poll", 200)]);
    assert_eq!(log, expected);
    assert_eq!(fx.stats().handshakes_refused, 7);
}

#[tokio::test]
async fn poll_answer_is_capped() {
    let fx = quiet_fixture().await;
    let total = POLL_MAX_EVENTS + 500;
    let c: Vec<String> = (1..=total).map(|i| fx.publish("c", None, &i.to_string()).expect("publish")).collect();
    let d = fx.publish("d", None, "d1").expect("publish");
    let path = format!("/poll?channel=c@{}-0&channel=d@{}-0", epoch_of(&c[0]), epoch_of(&d));
    let got = frames(&get(fx.addr(), &path).await);
    assert_eq!(got.len(), 3 + POLL_MAX_EVENTS);
    assert_eq!(got[1], subscribed("c", Outcome::Resumed, None, &c[total - 1]));
    assert_eq!(got[2], subscribed("d", Outcome::Resumed, None, &d));
    for (n, frame) in got[3..].iter().enumerate() {
        assert_eq!(*frame, event("c", &c[n], &(n + 1).to_string()));
    }

    // The next poll continues from the new cursors.
    let cursor = &c[POLL_MAX_EVENTS - 1];
    let path = format!("/poll?channel=c@{cursor}&channel=d@{}-0", epoch_of(&d));
    let got = frames(&get(fx.addr(), &path).await);
    assert_eq!(got.len(), 3 + 500 + 1);
    assert_eq!(got[3], event("c", &c[POLL_MAX_EVENTS], &(POLL_MAX_EVENTS + 1).to_string()));
    assert_eq!(got[got.len() - 1], event("d", &d, "d1"));
}

#[tokio::test]
async fn drop_aborts_held_polls() {
    let fx = quiet_fixture().await;
    let head = fx.head("c");
    let path = format!("/poll?channel=c@{head}");
    let addr = fx.addr();
    let task = tokio::spawn(async move { raw_request(addr, "GET", &path, &[], b"").await });
    held(&fx, 1).await;

    let reply = post(fx.addr(), "/control/drop").await;
    assert_eq!(reply.json(), serde_json::json!({ "dropped": 1 }));
    let raw = timeout(WAIT, task).await.expect("aborted").expect("task");
    // The connection closes (or is reset) without any answer.
    if let Ok(bytes) = raw {
        assert!(bytes.is_empty(), "got {:?}", String::from_utf8_lossy(&bytes));
    }
    assert_eq!(fx.stats().connections_open, 0);
}

#[tokio::test]
async fn stall_keeps_held_polls_unanswered_until_the_client_leaves() {
    let fx = quiet_fixture().await;
    let head = fx.head("c");
    let task = spawn_poll(fx.addr(), format!("/poll?channel=c@{head}&timeout_ms=300"));
    held(&fx, 1).await;
    assert_eq!(fx.stall(), 1);
    fx.publish("c", None, "unseen").expect("publish");

    // More than twice the hold time passes without an answer.
    let mut task = task;
    assert!(timeout(Duration::from_millis(700), &mut task).await.is_err(), "a stalled poll was answered");
    assert_eq!(fx.stats().polls_held, 1);

    task.abort();
    let _ = task.await;
    wait_until("the stalled poll to end", || fx.stats().connections_open == 0).await;
}

#[tokio::test]
async fn binary_poll_hold_flag_sets_the_hold() {
    let (mut child, addr) = start_binary(&["--addr", "127.0.0.1:0", "--poll-hold-ms", "120"]).await;

    let head = frames(&get(addr, "/poll?channel=c").await)[1].clone();
    let ServerFrame::Subscribed { head, .. } = head else {
        panic!("expected subscribed, got {head:?}");
    };
    let reply = get(addr, &format!("/poll?channel=c@{head}")).await;
    assert_eq!(frames(&reply), [welcome(120), subscribed("c", Outcome::Resumed, None, &head)]);

    child.start_kill().expect("stop the binary");
    timeout(WAIT, child.wait()).await.expect("the binary exits").expect("wait");
}
