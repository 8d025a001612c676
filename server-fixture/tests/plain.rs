//! End-to-end tests of the plain SSE server (`PlainSse`), which knows nothing
//! of the resub protocol.

mod common;

use common::{End, SseClient, WAIT, get, http, start_binary};
use resub_fixture::{PlainRequest, PlainSse};
use tokio::time::timeout;

async fn plain() -> PlainSse {
    PlainSse::start().await.expect("plain server starts")
}

/// Opens `/events` and checks the answer and its first block, `retry: 500`.
async fn open(server: &PlainSse, last_event_id: Option<&str>) -> SseClient {
    let headers: Vec<(&str, &str)> = last_event_id.map(|id| ("Last-Event-ID", id)).into_iter().collect();
    let mut sse = SseClient::open(server.addr(), "/events", &headers).await;
    assert_eq!(sse.status, 200);
    assert_eq!(sse.header("content-type"), Some("text/event-stream"));
    assert_eq!(sse.next_block().await.raw, b"retry: 500\n\n");
    sse
}

#[tokio::test]
async fn plain_replays_after_last_event_id_then_goes_live() {
    let server = plain().await;
    assert!(server.url().starts_with("http://127.0.0.1:"));
    server.push(Some("a1"), None, "one");
    server.push(Some("b2"), Some("note"), "two");
    server.push(None, None, "three");

    let mut sse = open(&server, Some("a1")).await;
    let block = sse.next_event().await;
    assert_eq!(block.id(), Some("b2"));
    assert_eq!(block.field("event"), ["note"]);
    assert_eq!(block.data(), "two");
    let block = sse.next_event().await;
    assert_eq!((block.id(), block.data().as_str()), (None, "three"));

    server.push(Some("c3"), None, "four");
    let block = sse.next_event().await;
    assert_eq!((block.id(), block.data().as_str()), (Some("c3"), "four"));

    // A keep-alive comment line arrives every second, on its own line (it
    // does not end a block).
    sse.wait_for(b": keepalive\n").await;

    // Without Last-Event-ID (or with an unknown one) nothing is replayed.
    let mut fresh = open(&server, Some("unknown")).await;
    server.push(Some("d4"), None, "five");
    assert_eq!(fresh.next_event().await.id(), Some("d4"));
    let block = sse.next_event().await;
    assert_eq!(block.comments()[0], ": keepalive");
    assert_eq!((block.id(), block.data().as_str()), (Some("d4"), "five"));
    drop(open(&server, None).await);

    assert_eq!(
        server.requests(),
        [
            PlainRequest { path: "/events".to_owned(), last_event_id: Some("a1".to_owned()), status: 200 },
            PlainRequest { path: "/events".to_owned(), last_event_id: Some("unknown".to_owned()), status: 200 },
            PlainRequest { path: "/events".to_owned(), last_event_id: None, status: 200 },
        ]
    );
}

#[tokio::test]
async fn plain_writes_multi_line_data_id_less_events_and_both_line_endings() {
    let server = plain().await;
    let mut sse = open(&server, None).await;
    server.push(Some("x1"), None, "line 1\nline 2");
    server.push(None, Some("note"), "a\r\nb");
    server.push(Some("x3"), None, " leading space");
    server.push(None, None, "");

    let block = sse.next_event().await;
    assert_eq!(block.raw, b"id: x1\ndata: line 1\ndata: line 2\n\n");
    assert_eq!(block.data(), "line 1\nline 2");

    let block = sse.next_event().await;
    assert_eq!(block.raw, b"event:note\r\ndata:a\r\ndata:b\r\n\r\n");
    assert_eq!((block.id(), block.data().as_str()), (None, "a\nb"));

    let block = sse.next_event().await;
    assert_eq!(block.data(), " leading space");

    let block = sse.next_event().await;
    assert_eq!(block.raw, b"data:\r\n\r\n");
    assert_eq!(block.data(), "");
}

#[tokio::test]
async fn plain_set_status_overrides_answers_until_cleared() {
    let server = plain().await;
    server.set_status(Some((204, None)));
    let reply = get(server.addr(), "/events").await;
    assert_eq!((reply.status, reply.body.as_str()), (204, ""));
    assert_eq!(reply.header("content-type"), None);

    server.set_status(Some((200, Some("text/html"))));
    let reply = http(server.addr(), "GET", "/events", &[("Last-Event-ID", "q")], b"").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("text/html"));

    server.set_status(Some((500, None)));
    assert_eq!(get(server.addr(), "/events").await.status, 500);

    server.set_status(None);
    let _sse = open(&server, None).await;
    assert_eq!(get(server.addr(), "/elsewhere").await.status, 404);

    let statuses: Vec<(u16, Option<String>)> =
        server.requests().into_iter().map(|r| (r.status, r.last_event_id)).collect();
    assert_eq!(statuses, [(204, None), (200, Some("q".to_owned())), (500, None), (200, None), (404, None),]);
}

#[tokio::test]
async fn plain_drop_aborts_open_streams() {
    let server = plain().await;
    let mut a = open(&server, None).await;
    let mut b = open(&server, None).await;
    assert_eq!(server.open_streams(), 2);
    assert_eq!(server.drop_connections(), 2);
    assert_eq!(a.end().await, End::Abrupt);
    assert_eq!(b.end().await, End::Abrupt);
    assert_eq!(server.open_streams(), 0);
}

#[tokio::test]
async fn plain_binary_mode_serves_and_takes_control_requests() {
    let (mut child, addr) = start_binary(&["--plain-sse", "--addr", "127.0.0.1:0"]).await;

    let reply = http(addr, "POST", "/push?id=k1", &[], b"first").await;
    assert_eq!(reply.json(), serde_json::json!({ "streams": 0 }));
    http(addr, "POST", "/push?id=k2&event=tick", &[], b"two\nlines").await;

    let mut sse = SseClient::open(addr, "/events", &[("Last-Event-ID", "k1")]).await;
    assert_eq!(sse.next_block().await.raw, b"retry: 500\n\n");
    let block = sse.next_event().await;
    assert_eq!(block.id(), Some("k2"));
    assert_eq!(block.field("event"), ["tick"]);
    assert_eq!(block.data(), "two\nlines");

    let reply = http(addr, "POST", "/push", &[], b"live").await;
    assert_eq!(reply.json(), serde_json::json!({ "streams": 1 }));
    let block = sse.next_event().await;
    assert_eq!((block.id(), block.data().as_str()), (None, "live"));

    let reply = http(addr, "POST", "/drop", &[], b"").await;
    assert_eq!(reply.json(), serde_json::json!({ "dropped": 1 }));
    assert_eq!(sse.end().await, End::Abrupt);

    child.start_kill().expect("stop the binary");
    timeout(WAIT, child.wait()).await.expect("the binary exits").expect("wait");
}
