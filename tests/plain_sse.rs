#![cfg(not(target_arch = "wasm32"))]
//! `PlainSse` against a standard SSE endpoint that knows nothing of the resub
//! protocol (opaque ids, Last-Event-ID, retry:, 204).

use std::time::Duration;

use futures::StreamExt;
use resub::core::Backoff;
use resub::{Error, PlainEvent, PlainSse};
use resub_fixture::PlainSse as PlainServer;

const DEADLINE: Duration = Duration::from_secs(20);

fn stream(server: &PlainServer) -> PlainSse {
    PlainSse::builder(&format!("{}/events", server.url()))
        .backoff(Backoff {
            base: Duration::from_millis(20),
            factor: 2.0,
            cap: Duration::from_millis(200),
            max_attempts: None,
        })
        .build()
        .unwrap()
}

async fn next(s: &mut PlainSse) -> Option<Result<PlainEvent, Error>> {
    tokio::time::timeout(DEADLINE, s.next()).await.expect("an item in time")
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

#[tokio::test]
async fn reads_a_plain_stream_and_resumes_with_last_event_id_after_a_drop() {
    let server = PlainServer::start().await.unwrap();
    let mut s = stream(&server);
    // The server streams live events to a client that sends no Last-Event-ID.
    until("the stream is open", || server.open_streams() > 0).await;
    for i in 1..=3 {
        server.push(Some(&format!("a{i}")), None, &format!("d{i}"));
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        let ev = next(&mut s).await.unwrap().unwrap();
        got.push((ev.id.unwrap(), ev.data));
    }
    assert_eq!(got, [("a1".into(), "d1".into()), ("a2".into(), "d2".into()), ("a3".into(), "d3".into())]);
    assert_eq!(server.drop_connections(), 1);
    server.push(Some("a4"), None, "d4");
    server.push(Some("a5"), None, "d5");
    let a4 = next(&mut s).await.unwrap().unwrap();
    let a5 = next(&mut s).await.unwrap().unwrap();
    assert_eq!((a4.data.as_str(), a5.data.as_str()), ("d4", "d5"), "nothing lost or repeated across the drop");
    let resumed = server.requests().iter().any(|r| r.last_event_id.as_deref() == Some("a3"));
    assert!(resumed, "reconnected with Last-Event-ID: {:?}", server.requests());
}

#[tokio::test]
async fn multi_line_data_and_events_without_an_id_come_through() {
    let server = PlainServer::start().await.unwrap();
    let mut s = stream(&server);
    until("the stream is open", || server.open_streams() > 0).await;
    server.push(None, Some("note"), "line one\nline two");
    let ev = next(&mut s).await.unwrap().unwrap();
    assert_eq!(ev, PlainEvent { id: None, event: "note".into(), data: "line one\nline two".into() });
}

#[tokio::test]
async fn http_204_ends_the_stream_for_good() {
    let server = PlainServer::start().await.unwrap();
    server.set_status(Some((204, None)));
    let mut s = stream(&server);
    assert_eq!(next(&mut s).await, Some(Err(Error::EndOfStream)));
    assert_eq!(next(&mut s).await, None);
    assert_eq!(server.requests().len(), 1, "no reconnect after 204");
}

#[tokio::test]
async fn html_instead_of_an_event_stream_is_refused() {
    let server = PlainServer::start().await.unwrap();
    server.set_status(Some((200, Some("text/html"))));
    let mut s = stream(&server);
    assert!(matches!(next(&mut s).await, Some(Err(Error::UnexpectedContentType(_)))));
}

#[tokio::test]
async fn an_error_status_fails_the_stream_as_the_spec_says() {
    let server = PlainServer::start().await.unwrap();
    server.set_status(Some((500, Some("text/plain"))));
    let mut s = stream(&server);
    assert_eq!(next(&mut s).await, Some(Err(Error::HttpStatus { status: 500 })));
}

#[tokio::test]
async fn a_refused_connection_is_retried_until_the_server_comes() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut s = PlainSse::builder(&format!("http://{addr}/events"))
        .backoff(Backoff {
            base: Duration::from_millis(20),
            factor: 2.0,
            cap: Duration::from_millis(200),
            max_attempts: None,
        })
        .build()
        .unwrap();
    let mut states = s.states();
    let mut failures = 0;
    while failures < 2 {
        let st = tokio::time::timeout(DEADLINE, states.next()).await.unwrap().unwrap();
        failures += usize::from(matches!(st, resub::ConnectionState::Disconnected { .. }));
    }
    let server = PlainServer::start_with(addr).await.unwrap();
    until("the stream is open", || server.open_streams() > 0).await;
    server.push(Some("x1"), None, "hello");
    assert_eq!(next(&mut s).await.unwrap().unwrap().data, "hello");
}
