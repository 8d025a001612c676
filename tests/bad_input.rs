#![cfg(not(target_arch = "wasm32"))]
//! Hostile and broken servers: one test per row of the table in
//! RELIABILITY.md. Each server here is scripted over raw TCP (and, for
//! WebSocket frames, tokio-tungstenite), so it can send what no correct
//! server would. Every test checks the typed outcome and the decision the
//! client takes: retry (another attempt on the same transport), fall back
//! (the next transport), or stop (a final `Closed` with the error).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use resub::core::Backoff;
use resub::{Client, ConnectionState, DisconnectReason, Error, Message, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message as Ws;

const DEADLINE: Duration = Duration::from_secs(20);

/// A server whose every connection runs `script(index, stream)`; it records
/// the request line of each HTTP request it reads through [`Conn`].
struct Hostile {
    url: String,
    connections: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One accepted connection of a [`Hostile`] server.
struct Conn {
    index: usize,
    stream: TcpStream,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Conn {
    /// Reads the request head (up to 64 KiB) and records its first line;
    /// returns the path.
    async fn read_request(&mut self) -> String {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 65_536 {
            if self.stream.read(&mut byte).await.unwrap_or(0) == 0 {
                break;
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        let line = head.lines().next().unwrap_or("").to_owned();
        self.requests.lock().unwrap().push(line.clone());
        line.split(' ').nth(1).unwrap_or("").to_owned()
    }

    async fn write(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    /// Completes the WebSocket handshake (recording the request) and sends
    /// `welcome`.
    async fn websocket(self, heartbeat_ms: u64) -> tokio_tungstenite::WebSocketStream<TcpStream> {
        let requests = self.requests.clone();
        // The callback's signature is tungstenite's.
        #[allow(clippy::result_large_err)]
        let callback = move |req: &tokio_tungstenite::tungstenite::handshake::server::Request, resp| {
            requests.lock().unwrap().push(format!("GET {} HTTP/1.1", req.uri()));
            Ok(resp)
        };
        let mut ws = tokio_tungstenite::accept_hdr_async(self.stream, callback).await.expect("a WebSocket handshake");
        ws.send(Ws::text(format!(r#"{{"type":"welcome","heartbeat_ms":{heartbeat_ms}}}"#))).await.unwrap();
        ws
    }
}

async fn hostile<F, Fut>(script: F) -> Hostile
where
    F: Fn(Conn) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let (count, reqs) = (connections.clone(), requests.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let index = count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(script(Conn { index, stream, requests: reqs.clone() }));
        }
    });
    Hostile { url, connections, requests, task }
}

fn client(url: &str, transports: &[Transport]) -> Client {
    builder(url, transports).build().unwrap()
}

fn builder(url: &str, transports: &[Transport]) -> resub::ClientBuilder {
    Client::builder(url)
        .transports(transports)
        .backoff(Backoff {
            base: Duration::from_millis(10),
            factor: 2.0,
            cap: Duration::from_millis(50),
            max_attempts: None,
        })
        .open_timeout(Duration::from_millis(1500))
        .poll_hold(Duration::from_secs(2))
        .upgrade_probe(None)
        .seed(3)
}

/// Waits for a state matching `pred`, returning it.
async fn until_state(
    states: &mut resub::States,
    what: &str,
    pred: impl Fn(&ConnectionState) -> bool,
) -> ConnectionState {
    let wait = async {
        while let Some(s) = states.next().await {
            if pred(&s) {
                return s;
            }
        }
        panic!("states ended before {what}");
    };
    tokio::time::timeout(DEADLINE, wait).await.unwrap_or_else(|_| panic!("no {what} within {DEADLINE:?}"))
}

/// Waits until the server has seen `n` connections: the client retried.
async fn until_connections(server: &Hostile, n: usize) {
    let wait = async {
        while server.connections.load(Ordering::SeqCst) < n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(DEADLINE, wait).await.unwrap_or_else(|_| panic!("fewer than {n} connections"));
}

/// Waits until the server has recorded a request whose line contains `path`.
async fn until_request(server: &Hostile, path: &str) -> Vec<String> {
    let wait = async {
        loop {
            let seen = server.requests.lock().unwrap().clone();
            if seen.iter().any(|r| r.contains(path)) {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(DEADLINE, wait).await.unwrap_or_else(|_| panic!("no request for {path}"))
}

/// Subscribes to `c` on `client`, waits for a disconnect whose reason
/// matches `reason`, then for the server's next connection: the decision was
/// to retry. Returns the disconnect.
async fn disconnect_then_retry(
    server: &Hostile,
    client: &Client,
    channel: Option<&str>,
    what: &str,
    reason: impl Fn(&DisconnectReason) -> bool,
) -> ConnectionState {
    let before = server.connections.load(Ordering::SeqCst).max(1);
    let mut states = client.states();
    let _sub = match channel {
        Some(from) => client.subscribe_from("c", from).await.unwrap(),
        None => client.subscribe("c").await.unwrap(),
    };
    let s =
        until_state(&mut states, what, |s| matches!(s, ConnectionState::Disconnected { reason: r, .. } if reason(r)))
            .await;
    until_connections(server, before + 1).await;
    s
}

/// The client stops with `expected`: the subscription yields it and ends,
/// the state is final.
async fn expect_stop(client: &Client, sub: &mut resub::Subscription, expected: &Error) {
    loop {
        match tokio::time::timeout(DEADLINE, sub.next()).await.expect("an outcome") {
            Some(Ok(Message::Resumed { .. })) => {}
            Some(Err(e)) => {
                assert_eq!(&e, expected);
                break;
            }
            other => panic!("expected {expected:?}, got {other:?}"),
        }
    }
    assert!(tokio::time::timeout(DEADLINE, sub.next()).await.unwrap().is_none());
    assert_eq!(client.state(), ConnectionState::Closed { error: Some(expected.clone()) });
}

fn http_response(status: &str, headers: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(body);
    out.into_bytes()
}

/// A WebSocket server that greets, confirms `c` as resumed from `e-0` with
/// head `e-3`, then runs `then` on the socket (first connection only; later
/// ones are greeted and kept open).
async fn ws_after_subscribe<F, Fut>(then: F) -> Hostile
where
    F: Fn(tokio_tungstenite::WebSocketStream<TcpStream>) -> Fut + Send + Sync + 'static + Clone,
    Fut: Future<Output = ()> + Send + 'static,
{
    hostile(move |conn: Conn| {
        let then = then.clone();
        async move {
            let first = conn.index == 0;
            let mut ws = conn.websocket(60_000).await;
            // The subscribe frame.
            let _ = ws.next().await;
            ws.send(Ws::text(r#"{"type":"subscribed","channel":"c","outcome":"resumed","head":"e-3"}"#)).await.unwrap();
            if first {
                then(ws).await;
            } else {
                std::future::pending::<()>().await;
            }
        }
    })
    .await
}

fn event(id: &str, data: &str) -> Ws {
    Ws::text(format!(r#"{{"type":"event","channel":"c","id":"{id}","data":"{data}"}}"#))
}

async fn next_event(sub: &mut resub::Subscription) -> (String, String) {
    loop {
        match tokio::time::timeout(DEADLINE, sub.next()).await.expect("a message") {
            Some(Ok(Message::Event(e))) => return (e.id.into(), e.data),
            Some(Ok(Message::Resumed { .. })) => {}
            other => panic!("expected an event, got {other:?}"),
        }
    }
}

// ---- Frames ----

#[tokio::test]
async fn malformed_json_is_a_protocol_error_and_the_client_reconnects() {
    let server = ws_after_subscribe(|mut ws| async move {
        ws.send(Ws::text("{not json")).await.unwrap();
        std::future::pending::<()>().await;
    })
    .await;
    let c = client(&server.url, &[Transport::WebSocket]);
    disconnect_then_retry(&server, &c, Some("e-0"), "a protocol error", |r| matches!(r, DisconnectReason::Protocol(_)))
        .await;
}

#[tokio::test]
async fn a_websocket_text_frame_with_invalid_utf8_drops_the_connection_and_the_client_reconnects() {
    let server = ws_after_subscribe(|ws| async move {
        // A text frame (FIN, opcode 1, unmasked, 2 bytes) that is not UTF-8.
        let mut tcp = ws.into_inner();
        tcp.write_all(&[0x81, 0x02, 0xFF, 0xFE]).await.unwrap();
        std::future::pending::<()>().await;
    })
    .await;
    let c = client(&server.url, &[Transport::WebSocket]);
    disconnect_then_retry(&server, &c, Some("e-0"), "a lost connection", |r| matches!(r, DisconnectReason::Lost(_)))
        .await;
}

#[tokio::test]
async fn a_binary_websocket_frame_that_is_not_utf8_drops_the_connection_and_the_client_reconnects() {
    let server = ws_after_subscribe(|mut ws| async move {
        ws.send(Ws::binary(vec![0xFF, 0xFE, 0xFD])).await.unwrap();
        std::future::pending::<()>().await;
    })
    .await;
    let c = client(&server.url, &[Transport::WebSocket]);
    let s = disconnect_then_retry(&server, &c, Some("e-0"), "a lost connection", |r| {
        matches!(r, DisconnectReason::Lost(_))
    })
    .await;
    assert!(format!("{s:?}").contains("UTF-8"), "{s:?}");
}

/// An SSE server: `body(index)` is written after a `200 text/event-stream`
/// head, then the connection is held open.
async fn sse_server(body: impl Fn(usize) -> Vec<u8> + Send + Sync + 'static) -> Hostile {
    let body = Arc::new(body);
    hostile(move |mut conn: Conn| {
        let body = body.clone();
        async move {
            conn.read_request().await;
            conn.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n").await;
            conn.write(&body(conn.index)).await;
            std::future::pending::<()>().await;
        }
    })
    .await
}

const SSE_WELCOME: &str = "data: {\"type\":\"welcome\",\"heartbeat_ms\":60000}\n\n";

#[tokio::test]
async fn invalid_utf8_in_a_resub_sse_stream_drops_the_connection_instead_of_altering_data() {
    let server = sse_server(|_| {
        let mut body = SSE_WELCOME.as_bytes().to_vec();
        body.extend_from_slice(b"data: {\"type\":\"ping\",\"x\":\"\xFF\"}\n\n");
        body
    })
    .await;
    let c = client(&server.url, &[Transport::Sse]);
    let s = disconnect_then_retry(&server, &c, None, "a lost stream", |r| matches!(r, DisconnectReason::Lost(_))).await;
    assert!(format!("{s:?}").contains("UTF-8"), "{s:?}");
}

#[tokio::test]
async fn unknown_frame_types_and_fields_are_ignored() {
    let server = ws_after_subscribe(|mut ws| async move {
        ws.send(Ws::text(r#"{"type":"presence_v9","who":["a"]}"#)).await.unwrap();
        ws.send(Ws::text(r#"{"type":"event","channel":"c","id":"e-1","data":"one","shiny":true}"#)).await.unwrap();
        std::future::pending::<()>().await;
    })
    .await;
    let c = client(&server.url, &[Transport::WebSocket]);
    let mut sub = c.subscribe_from("c", "e-0").await.unwrap();
    assert_eq!(next_event(&mut sub).await, ("e-1".into(), "one".into()));
    assert_eq!(c.stats().failures, 0, "no disconnect");
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_oversized_websocket_frame_stops_with_frame_too_large() {
    let server = ws_after_subscribe(|mut ws| async move {
        ws.send(event("e-1", &"x".repeat(4096))).await.unwrap();
        std::future::pending::<()>().await;
    })
    .await;
    let c = builder(&server.url, &[Transport::WebSocket]).max_frame_bytes(1024).build().unwrap();
    let mut sub = c.subscribe_from("c", "e-0").await.unwrap();
    expect_stop(&c, &mut sub, &Error::FrameTooLarge { limit: 1024 }).await;
    assert_eq!(server.connections.load(Ordering::SeqCst), 1, "not retried");
}

#[tokio::test]
async fn an_oversized_sse_event_stops_with_frame_too_large() {
    let server = sse_server(|_| {
        let big = format!("data: {{\"type\":\"ping\",\"pad\":\"{}\"}}\n\n", "x".repeat(4096));
        format!("{SSE_WELCOME}{big}").into_bytes()
    })
    .await;
    let c = builder(&server.url, &[Transport::Sse]).max_frame_bytes(1024).build().unwrap();
    let mut sub = c.subscribe("c").await.unwrap();
    expect_stop(&c, &mut sub, &Error::FrameTooLarge { limit: 1024 }).await;
}

#[tokio::test]
async fn events_before_an_oversized_sse_line_in_the_same_write_are_delivered_first() {
    // One write: the welcome, the subscription's answer, two events, then a
    // line over the limit. The events are complete before the bad line.
    let server = hostile(|mut conn: Conn| async move {
        let path = conn.read_request().await;
        conn.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n").await;
        let mut body = SSE_WELCOME.to_owned();
        if path.contains("channel=c") {
            body += "data: {\"type\":\"subscribed\",\"channel\":\"c\",\"outcome\":\"resumed\",\"head\":\"e-2\"}\n\n";
            body += "data: {\"type\":\"event\",\"channel\":\"c\",\"id\":\"e-1\",\"data\":\"one\"}\n\n";
            body += "data: {\"type\":\"event\",\"channel\":\"c\",\"id\":\"e-2\",\"data\":\"two\"}\n\n";
            body += &format!("data: {}\n\n", "x".repeat(4096));
        }
        conn.write(body.as_bytes()).await;
        std::future::pending::<()>().await;
    })
    .await;
    let c = builder(&server.url, &[Transport::Sse]).max_frame_bytes(1024).build().unwrap();
    let mut sub = c.subscribe_from("c", "e-0").await.unwrap();
    assert_eq!(next_event(&mut sub).await, ("e-1".into(), "one".into()));
    assert_eq!(next_event(&mut sub).await, ("e-2".into(), "two".into()));
    expect_stop(&c, &mut sub, &Error::FrameTooLarge { limit: 1024 }).await;
}

#[tokio::test]
async fn an_oversized_poll_answer_stops_with_frame_too_large() {
    // Over max_frame_bytes × POLL_BATCH_FACTOR (16).
    let body = format!(r#"{{"frames":[{{"type":"ping","pad":"{}"}}]}}"#, "x".repeat(20_000));
    let server = hostile(move |mut conn: Conn| {
        let body = body.clone();
        async move {
            conn.read_request().await;
            conn.write(&http_response("200 OK", &[("Content-Type", "application/json")], &body)).await;
        }
    })
    .await;
    let c = builder(&server.url, &[Transport::LongPoll]).max_frame_bytes(1024).build().unwrap();
    let mut sub = c.subscribe("c").await.unwrap();
    expect_stop(&c, &mut sub, &Error::FrameTooLarge { limit: 1024 * 16 }).await;
}

#[tokio::test]
async fn ids_going_backwards_are_dropped_as_duplicates() {
    let server = ws_after_subscribe(|mut ws| async move {
        for (id, data) in [("e-1", "one"), ("e-2", "two"), ("e-1", "one again"), ("e-2", "two again"), ("e-3", "three")]
        {
            ws.send(event(id, data)).await.unwrap();
        }
        std::future::pending::<()>().await;
    })
    .await;
    let c = client(&server.url, &[Transport::WebSocket]);
    let mut sub = c.subscribe_from("c", "e-0").await.unwrap();
    assert_eq!(next_event(&mut sub).await.1, "one");
    assert_eq!(next_event(&mut sub).await.1, "two");
    assert_eq!(next_event(&mut sub).await.1, "three");
    assert_eq!(c.stats().duplicates, 2);
    assert_eq!(c.stats().failures, 0);
}

#[tokio::test]
async fn a_gap_or_a_foreign_epoch_is_a_protocol_error_and_the_client_resumes_from_its_cursor() {
    for bad in ["e-3", "other-2"] {
        let server = hostile(move |conn: Conn| async move {
            let first = conn.index == 0;
            let mut ws = conn.websocket(60_000).await;
            let subscribe = ws.next().await.unwrap().unwrap().into_text().unwrap();
            ws.send(Ws::text(r#"{"type":"subscribed","channel":"c","outcome":"resumed","head":"e-3"}"#)).await.unwrap();
            if first {
                ws.send(event("e-1", "one")).await.unwrap();
                ws.send(event(bad, "skipped ahead")).await.unwrap();
            } else {
                // The retry resumes after the last event delivered.
                assert!(subscribe.contains(r#""cursor":"e-1""#), "{subscribe}");
                ws.send(event("e-2", "two")).await.unwrap();
            }
            std::future::pending::<()>().await;
        })
        .await;
        let c = client(&server.url, &[Transport::WebSocket]);
        let mut states = c.states();
        let mut sub = c.subscribe_from("c", "e-0").await.unwrap();
        assert_eq!(next_event(&mut sub).await.1, "one");
        until_state(&mut states, "a protocol error", |s| {
            matches!(s, ConnectionState::Disconnected { reason: DisconnectReason::Protocol(_), .. })
        })
        .await;
        assert_eq!(next_event(&mut sub).await, ("e-2".into(), "two".into()), "after {bad}");
    }
}

#[tokio::test]
async fn events_for_channels_never_subscribed_are_ignored() {
    let server = ws_after_subscribe(|mut ws| async move {
        ws.send(Ws::text(r#"{"type":"event","channel":"elsewhere","id":"x-1","data":"not yours"}"#)).await.unwrap();
        ws.send(event("e-1", "one")).await.unwrap();
        std::future::pending::<()>().await;
    })
    .await;
    let c = client(&server.url, &[Transport::WebSocket]);
    let mut sub = c.subscribe_from("c", "e-0").await.unwrap();
    assert_eq!(next_event(&mut sub).await.1, "one");
    assert_eq!(c.stats().failures, 0);
    assert_eq!(c.stats().delivered, 1);
}

// ---- HTTP answers ----

/// Answers every request with `response`.
async fn answering(response: Vec<u8>) -> Hostile {
    let response = Arc::new(response);
    hostile(move |mut conn: Conn| {
        let response = response.clone();
        async move {
            conn.read_request().await;
            conn.write(&response).await;
        }
    })
    .await
}

#[tokio::test]
async fn an_sse_answer_with_the_wrong_content_type_falls_back_to_long_polling() {
    let server = answering(http_response("200 OK", &[("Content-Type", "text/plain")], "data: hello\n\n")).await;
    let c = client(&server.url, &[Transport::Sse, Transport::LongPoll]);
    let mut states = c.states();
    let _sub = c.subscribe("c").await.unwrap();
    until_state(&mut states, "the SSE refusal", |s| {
        matches!(s, ConnectionState::Disconnected { reason: DisconnectReason::Unsupported(_), .. })
    })
    .await;
    until_state(&mut states, "a poll attempt", |s| {
        matches!(s, ConnectionState::Connecting { transport: Transport::LongPoll, .. })
    })
    .await;
    until_request(&server, "/poll").await;
}

#[tokio::test]
async fn a_200_with_an_html_body_falls_back_on_every_transport_then_starts_over() {
    let page = "<!doctype html><title>Sign in</title>";
    let server = answering(http_response("200 OK", &[("Content-Type", "text/html")], page)).await;
    let c = client(&server.url, &Transport::ALL);
    let _sub = c.subscribe("c").await.unwrap();
    // /ws (200 instead of 101) → /sse (HTML) → /poll (HTML) → /ws again.
    let wait = async {
        loop {
            let seen = server.requests.lock().unwrap().clone();
            let paths: Vec<&str> =
                seen.iter().filter_map(|r| r.split(' ').nth(1)).map(|p| &p[..p.find('?').unwrap_or(p.len())]).collect();
            if paths.len() >= 4 {
                return paths.iter().map(|p| p.to_string()).collect::<Vec<_>>();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let paths = tokio::time::timeout(DEADLINE, wait).await.expect("four attempts");
    assert_eq!(paths[..4], ["/ws", "/sse", "/poll", "/ws"], "{paths:?}");
    assert!(!matches!(c.state(), ConnectionState::Connected { .. } | ConnectionState::Closed { .. }));
}

#[tokio::test]
async fn a_redirect_loop_is_a_connect_failure_retried_with_backoff() {
    let server = hostile(|mut conn: Conn| async move {
        let path = conn.read_request().await;
        conn.write(&http_response("302 Found", &[("Location", &path)], "")).await;
    })
    .await;
    let c = client(&server.url, &[Transport::Sse]);
    let mut states = c.states();
    let _sub = c.subscribe("c").await.unwrap();
    let s = until_state(&mut states, "a connect failure", |s| {
        matches!(s, ConnectionState::Disconnected { reason: DisconnectReason::ConnectFailed(_), .. })
    })
    .await;
    assert!(format!("{s:?}").contains("redirect"), "{s:?}");
    until_state(&mut states, "another attempt", |s| matches!(s, ConnectionState::Connecting { attempt: 1.., .. }))
        .await;
}

/// What the client does with an HTTP status on the WebSocket handshake,
/// configured with WebSocket then SSE.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Decision {
    Stop,
    FallBack,
    Retry,
}

#[tokio::test]
async fn http_statuses_on_connect_get_the_documented_decision() {
    let table = [
        (401, Decision::Stop),
        (403, Decision::FallBack),
        (404, Decision::FallBack),
        (410, Decision::FallBack),
        (429, Decision::Retry),
        (500, Decision::Retry),
        (502, Decision::Retry),
        (503, Decision::Retry),
        (504, Decision::Retry),
    ];
    for (status, decision) in table {
        for transport in [Transport::WebSocket, Transport::Sse] {
            let head = format!("{status} Status");
            let server =
                answering(http_response(&head, &[("Retry-After", "0"), ("Content-Type", "text/plain")], "no")).await;
            let next = if transport == Transport::WebSocket { Transport::Sse } else { Transport::LongPoll };
            let c = client(&server.url, &[transport, next]);
            let mut states = c.states();
            let mut sub = c.subscribe("c").await.unwrap();
            let what = format!("{status} on {transport}");
            match decision {
                Decision::Stop => expect_stop(&c, &mut sub, &Error::Unauthorized).await,
                Decision::FallBack => {
                    until_state(&mut states, &what, |s| {
                        matches!(s, ConnectionState::Disconnected { reason: DisconnectReason::Refused { status: s }, .. } if *s == status)
                    })
                    .await;
                    let s = until_state(&mut states, &what, |s| matches!(s, ConnectionState::Connecting { .. })).await;
                    assert!(
                        matches!(s, ConnectionState::Connecting { transport: t, .. } if t == next),
                        "{what}: {s:?}"
                    );
                }
                Decision::Retry => {
                    let s =
                        until_state(&mut states, &what, |s| matches!(s, ConnectionState::Disconnected { .. })).await;
                    let expected_reason = match status {
                        429 | 503 => DisconnectReason::Unavailable { retry_after: Some(Duration::ZERO) },
                        _ => DisconnectReason::Refused { status },
                    };
                    assert!(
                        matches!(&s, ConnectionState::Disconnected { reason, .. } if *reason == expected_reason),
                        "{what}: {s:?}"
                    );
                    let s = until_state(&mut states, &what, |s| matches!(s, ConnectionState::Connecting { .. })).await;
                    assert!(
                        matches!(s, ConnectionState::Connecting { transport: t, attempt: 1.., .. } if t == transport),
                        "{what}: {s:?}"
                    );
                }
            }
            c.close().await;
        }
    }
}

// ---- The network ----

#[tokio::test]
async fn a_dns_failure_is_a_connect_failure_retried_with_backoff() {
    let c = client("http://resub-test.invalid", &[Transport::WebSocket]);
    let mut states = c.states();
    let _sub = c.subscribe("c").await.unwrap();
    until_state(&mut states, "a connect failure", |s| {
        matches!(s, ConnectionState::Disconnected { reason: DisconnectReason::ConnectFailed(_), .. })
    })
    .await;
    until_state(&mut states, "another attempt", |s| matches!(s, ConnectionState::Connecting { attempt: 1.., .. }))
        .await;
}

#[tokio::test]
async fn a_refused_connection_is_retried_with_backoff() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    for t in Transport::ALL {
        let c = client(&format!("http://{addr}"), &[t]);
        let mut states = c.states();
        let _sub = c.subscribe("c").await.unwrap();
        until_state(&mut states, "a connect failure", |s| {
            matches!(s, ConnectionState::Disconnected { reason: DisconnectReason::ConnectFailed(_), .. })
        })
        .await;
        until_state(&mut states, "another attempt", |s| matches!(s, ConnectionState::Connecting { attempt: 1.., .. }))
            .await;
        c.close().await;
    }
}

#[tokio::test]
async fn a_server_that_accepts_and_never_answers_hits_the_open_timeout_and_is_retried() {
    let server = hostile(|mut conn: Conn| async move {
        conn.read_request().await;
        std::future::pending::<()>().await;
    })
    .await;
    for t in Transport::ALL {
        let before = server.connections.load(Ordering::SeqCst);
        let c = builder(&server.url, &[t]).open_timeout(Duration::from_millis(300)).build().unwrap();
        let mut states = c.states();
        let _sub = c.subscribe("c").await.unwrap();
        until_state(&mut states, "an open timeout", |s| {
            matches!(s, ConnectionState::Disconnected { reason: DisconnectReason::OpenTimeout, .. })
        })
        .await;
        until_connections(&server, before + 2).await;
        c.close().await;
    }
}

/// Writes `bytes` one per `every`.
async fn trickle(conn: &mut Conn, bytes: &[u8], every: Duration) {
    for b in bytes {
        conn.write(std::slice::from_ref(b)).await;
        tokio::time::sleep(every).await;
    }
}

#[tokio::test]
async fn a_server_trickling_its_answer_one_byte_a_second_hits_the_open_timeout() {
    let server = hostile(|mut conn: Conn| async move {
        conn.read_request().await;
        let head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n";
        trickle(&mut conn, head, Duration::from_secs(1)).await;
    })
    .await;
    let c = builder(&server.url, &[Transport::Sse]).open_timeout(Duration::from_millis(1500)).build().unwrap();
    disconnect_then_retry(&server, &c, None, "an open timeout", |r| matches!(r, DisconnectReason::OpenTimeout)).await;
}

#[tokio::test]
async fn a_stream_trickling_a_frame_one_byte_a_second_hits_the_heartbeat_timeout() {
    // Bytes that never complete a frame are not a sign of life.
    let server = hostile(|mut conn: Conn| async move {
        conn.read_request().await;
        conn.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n").await;
        conn.write(b"data: {\"type\":\"welcome\",\"heartbeat_ms\":300}\n\n").await;
        trickle(&mut conn, b"data: {\"type\":\"ping\"}", Duration::from_secs(1)).await;
    })
    .await;
    let c = client(&server.url, &[Transport::Sse]);
    let mut states = c.states();
    let _sub = c.subscribe("c").await.unwrap();
    until_state(&mut states, "connected", |s| matches!(s, ConnectionState::Connected { .. })).await;
    until_state(&mut states, "a heartbeat timeout", |s| {
        matches!(s, ConnectionState::Disconnected { reason: DisconnectReason::HeartbeatTimeout, .. })
    })
    .await;
    until_connections(&server, 2).await;
}
