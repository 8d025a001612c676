//! End-to-end tests of the fixture over real sockets, with tokio-tungstenite
//! as a raw WebSocket client and a minimal HTTP/1.1 client for the routes.

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use resub::protocol::{ClientFrame, Outcome, ServerFrame, WireResetReason};
use resub_fixture::{Fixture, FixtureConfig};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Upper bound for anything the tests wait for.
const WAIT: Duration = Duration::from_secs(10);

/// A fixture whose heartbeat is long enough not to interleave pings.
async fn quiet_fixture() -> Fixture {
    fixture_with(FixtureConfig { heartbeat: Duration::from_secs(600), ..FixtureConfig::default() }).await
}

async fn fixture_with(cfg: FixtureConfig) -> Fixture {
    Fixture::start_with(SocketAddr::from(([127, 0, 0, 1], 0)), cfg).await.expect("fixture starts")
}

fn ws_url(addr: SocketAddr) -> String {
    format!("ws://{addr}/ws")
}

async fn try_connect(addr: SocketAddr) -> Result<Ws, tungstenite::Error> {
    timeout(WAIT, tokio_tungstenite::connect_async(ws_url(addr))).await.expect("handshake timed out").map(|(ws, _)| ws)
}

/// Connects and reads the `welcome` frame.
async fn connect(addr: SocketAddr) -> Ws {
    let mut ws = try_connect(addr).await.expect("handshake succeeds");
    assert!(matches!(recv(&mut ws).await, ServerFrame::Welcome { .. }));
    ws
}

/// The next server frame.
async fn recv(ws: &mut Ws) -> ServerFrame {
    let msg = timeout(WAIT, ws.next())
        .await
        .expect("timed out waiting for a frame")
        .expect("stream ended")
        .expect("read failed");
    match msg {
        Message::Text(text) => serde_json::from_str(text.as_str()).expect("a valid server frame"),
        other => panic!("unexpected message {other:?}"),
    }
}

async fn send(ws: &mut Ws, frame: &ClientFrame) {
    let text = serde_json::to_string(frame).expect("client frames encode");
    ws.send(Message::text(text)).await.expect("send succeeds");
}

async fn subscribe(ws: &mut Ws, channel: &str, cursor: Option<&str>) {
    let frame = ClientFrame::Subscribe { channel: channel.to_owned(), cursor: cursor.map(str::to_owned) };
    send(ws, &frame).await;
}

/// Asserts the next frame is `subscribed` and returns it as a tuple.
async fn recv_subscribed(ws: &mut Ws) -> (Outcome, Option<WireResetReason>, String) {
    match recv(ws).await {
        ServerFrame::Subscribed { outcome, reason, head, .. } => (outcome, reason, head),
        other => panic!("expected subscribed, got {other:?}"),
    }
}

/// Asserts the next frame is an event and returns `(id, event, data)`.
async fn recv_event(ws: &mut Ws) -> (String, Option<String>, String) {
    match recv(ws).await {
        ServerFrame::Event { id, event, data, .. } => (id.into(), event, data),
        other => panic!("expected an event, got {other:?}"),
    }
}

/// Asserts the connection ends without a close frame.
async fn assert_dropped_abruptly(ws: &mut Ws) {
    match timeout(WAIT, ws.next()).await.expect("connection not closed") {
        None | Some(Err(_)) => {}
        Some(Ok(Message::Close(frame))) => panic!("got a close frame {frame:?}"),
        Some(Ok(other)) => panic!("got {other:?} instead of a dropped connection"),
    }
}

struct HttpReply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl HttpReply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`).
async fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpReply {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await.expect("write head");
        stream.write_all(body).await.expect("write body");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read reply");
        raw
    };
    let raw = timeout(WAIT, exchange).await.expect("HTTP request timed out");
    let text = String::from_utf8(raw).expect("UTF-8 reply");
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete reply");
    let mut lines = head.lines();
    let status =
        lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse().ok()).expect("a status line");
    let headers =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())).collect();
    HttpReply { status, headers, body: body.to_owned() }
}

async fn post(addr: SocketAddr, path: &str) -> HttpReply {
    http(addr, "POST", path, &[], b"").await
}

#[tokio::test]
async fn welcome_comes_first_and_pings_follow() {
    let fx = fixture_with(FixtureConfig { heartbeat: Duration::from_millis(50), ..FixtureConfig::default() }).await;
    let mut ws = try_connect(fx.addr()).await.expect("handshake succeeds");
    assert_eq!(recv(&mut ws).await, ServerFrame::Welcome { heartbeat_ms: 50 });
    assert_eq!(recv(&mut ws).await, ServerFrame::Ping);
    assert_eq!(recv(&mut ws).await, ServerFrame::Ping);
    let stats = fx.stats();
    assert_eq!(stats.connections_accepted, 1);
    assert_eq!(stats.connections_open, 1);
}

#[tokio::test]
async fn client_ping_is_answered_at_once() {
    // With a 60 s heartbeat, a ping arriving within WAIT is the answer, not a
    // heartbeat.
    let fx = fixture_with(FixtureConfig { heartbeat: Duration::from_secs(60), ..FixtureConfig::default() }).await;
    let mut ws = try_connect(fx.addr()).await.expect("handshake succeeds");
    assert_eq!(recv(&mut ws).await, ServerFrame::Welcome { heartbeat_ms: 60_000 });

    ws.send(Message::text(r#"{"type":"ping"}"#)).await.expect("send");
    assert_eq!(recv(&mut ws).await, ServerFrame::Ping);
    // Unknown fields are ignored; replies keep the order of the requests.
    subscribe(&mut ws, "c", None).await;
    ws.send(Message::text(r#"{"type":"ping","nonce":7}"#)).await.expect("send");
    assert_eq!(recv_subscribed(&mut ws).await.0, Outcome::Live);
    assert_eq!(recv(&mut ws).await, ServerFrame::Ping);
    // The connection carries on as before.
    let id = fx.publish("c", None, "after").expect("publish");
    assert_eq!(recv_event(&mut ws).await, (id, None, "after".to_owned()));
    // Only an object whose type is "ping" is a ping.
    ws.send(Message::text(r#""ping""#)).await.expect("send");
    assert!(matches!(recv(&mut ws).await, ServerFrame::Error { code, .. } if code == "bad_request"));
}

#[tokio::test]
async fn subscribe_with_cursor_replays_then_goes_live() {
    let fx = quiet_fixture().await;
    let ids: Vec<String> = (1..=5).map(|i| fx.publish("c", None, &format!("m{i}")).expect("publish")).collect();
    let epoch = ids[0].rsplit_once('-').expect("an id").0.to_owned();
    assert_eq!(ids[4], format!("{epoch}-5"));

    let mut ws = connect(fx.addr()).await;
    subscribe(&mut ws, "c", Some(&ids[1])).await;
    assert_eq!(recv_subscribed(&mut ws).await, (Outcome::Resumed, None, ids[4].clone()));
    for (n, expected) in ids.iter().enumerate().skip(2) {
        let (id, event, data) = recv_event(&mut ws).await;
        assert_eq!((&id, event, data), (expected, None, format!("m{}", n + 1)));
    }

    let reply = http(fx.addr(), "POST", "/publish/c?event=tick", &[], b"live").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let live_id = format!("{epoch}-6");
    assert_eq!(reply.json(), serde_json::json!({ "id": live_id }));
    assert_eq!(recv_event(&mut ws).await, (live_id.clone(), Some("tick".to_owned()), "live".to_owned()));

    // A subscription without a cursor starts live at the head.
    let mut other = connect(fx.addr()).await;
    subscribe(&mut other, "c", None).await;
    assert_eq!(recv_subscribed(&mut other).await, (Outcome::Live, None, live_id.clone()));
    // A cursor at the head resumes with nothing to replay.
    subscribe(&mut ws, "c", Some(&live_id)).await;
    assert_eq!(recv_subscribed(&mut ws).await, (Outcome::Resumed, None, live_id.clone()));
    let next = fx.publish("c", None, "m7").expect("publish");
    assert_eq!(recv_event(&mut other).await.0, next);
    assert_eq!(recv_event(&mut ws).await.0, next);
}

#[tokio::test]
async fn unknown_cursors_reset() {
    let fx = quiet_fixture().await;
    let head = fx.publish("c", None, "x").expect("publish");
    let epoch = head.rsplit_once('-').expect("an id").0.to_owned();
    let mut ws = connect(fx.addr()).await;
    for cursor in ["garbage".to_owned(), format!("{epoch}-2")] {
        subscribe(&mut ws, "c", Some(&cursor)).await;
        assert_eq!(
            recv_subscribed(&mut ws).await,
            (Outcome::Reset, Some(WireResetReason::UnknownCursor), head.clone()),
            "cursor {cursor}"
        );
    }
}

#[tokio::test]
async fn truncated_history_resets_with_history_truncated() {
    let fx = quiet_fixture().await;
    let ids: Vec<String> = (1..=5).map(|i| fx.publish("c", None, &format!("m{i}")).expect("publish")).collect();
    let reply = post(fx.addr(), "/control/truncate/c?keep=2").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json(), serde_json::json!({ "oldest_retained": ids[3] }));

    let mut ws = connect(fx.addr()).await;
    subscribe(&mut ws, "c", Some(&ids[1])).await;
    assert_eq!(
        recv_subscribed(&mut ws).await,
        (Outcome::Reset, Some(WireResetReason::HistoryTruncated), ids[4].clone())
    );
    // No replay: the next frame is the next live event.
    let live = fx.publish("c", None, "m6").expect("publish");
    assert_eq!(recv_event(&mut ws).await.0, live);

    // The cursor just before the oldest retained event still resumes.
    let mut ws = connect(fx.addr()).await;
    subscribe(&mut ws, "c", Some(&ids[2])).await;
    assert_eq!(recv_subscribed(&mut ws).await, (Outcome::Resumed, None, live.clone()));
    assert_eq!(recv_event(&mut ws).await.0, ids[3]);
    assert_eq!(recv_event(&mut ws).await.0, ids[4]);
    assert_eq!(recv_event(&mut ws).await.0, live);

    let reply = post(fx.addr(), "/control/truncate/c").await;
    assert_eq!(reply.json(), serde_json::json!({ "oldest_retained": null }));
}

#[tokio::test]
async fn new_epoch_resets_live_subscribers_and_old_cursors() {
    let fx = quiet_fixture().await;
    let mut live = connect(fx.addr()).await;
    subscribe(&mut live, "c", None).await;
    let (outcome, _, _) = recv_subscribed(&mut live).await;
    assert_eq!(outcome, Outcome::Live);
    let old = fx.publish("c", None, "before").expect("publish");
    assert_eq!(recv_event(&mut live).await.0, old);

    let reply = post(fx.addr(), "/control/epoch/c").await;
    assert_eq!(reply.status, 200);
    let head = reply.json()["head"].as_str().expect("a head id").to_owned();
    let new_epoch = head.strip_suffix("-0").expect("seq 0").to_owned();
    assert!(!old.starts_with(&format!("{new_epoch}-")));
    assert_eq!(
        recv(&mut live).await,
        ServerFrame::Reset { channel: "c".to_owned(), reason: WireResetReason::EpochChanged, head: head.clone() }
    );

    let mut again = connect(fx.addr()).await;
    subscribe(&mut again, "c", Some(&old)).await;
    assert_eq!(recv_subscribed(&mut again).await, (Outcome::Reset, Some(WireResetReason::EpochChanged), head.clone()));

    let first = fx.publish("c", None, "after").expect("publish");
    assert_eq!(first, format!("{new_epoch}-1"));
    assert_eq!(recv_event(&mut live).await.0, first);
    assert_eq!(recv_event(&mut again).await.0, first);
    assert_eq!(fx.new_epoch("c").len(), head.len());
}

#[tokio::test]
async fn refused_handshakes_get_403_503_and_401() {
    let fx = quiet_fixture().await;
    let expect_refusal = |result: Result<Ws, tungstenite::Error>, status: u16| match result {
        Err(tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status().as_u16(), status);
            resp
        }
        Err(other) => panic!("expected HTTP {status}, got {other:?}"),
        Ok(_) => panic!("expected HTTP {status}, got a connection"),
    };

    let reply = post(fx.addr(), "/control/websocket?enabled=false").await;
    assert_eq!(reply.json(), serde_json::json!({ "websocket": false }));
    let resp = expect_refusal(try_connect(fx.addr()).await, 403);
    assert_eq!(resp.body().as_deref(), Some(&b"websocket upgrades refused"[..]));
    let reply = post(fx.addr(), "/control/websocket?enabled=true").await;
    assert_eq!(reply.json(), serde_json::json!({ "websocket": true }));

    let reply = post(fx.addr(), "/control/unavailable?retry_after=7&count=2").await;
    assert_eq!(reply.status, 200);
    for _ in 0..2 {
        let resp = expect_refusal(try_connect(fx.addr()).await, 503);
        let retry = resp.headers().get("retry-after").map(|v| v.as_bytes());
        assert_eq!(retry, Some(&b"7"[..]));
    }
    let _ws = connect(fx.addr()).await;

    post(fx.addr(), "/control/unavailable?retry_after=3").await;
    expect_refusal(try_connect(fx.addr()).await, 503);
    post(fx.addr(), "/control/unavailable?enabled=false").await;

    let reply = post(fx.addr(), "/control/auth?reject=true").await;
    assert_eq!(reply.status, 200);
    expect_refusal(try_connect(fx.addr()).await, 401);
    post(fx.addr(), "/control/auth?reject=false").await;
    let _ws2 = connect(fx.addr()).await;

    let stats = fx.stats();
    let statuses: Vec<u16> = stats.handshakes.iter().map(|h| h.status).collect();
    assert_eq!(statuses, [403, 503, 503, 101, 503, 401, 101]);
    assert!(stats.handshakes.windows(2).all(|w| w[0].at <= w[1].at));
    assert_eq!(stats.connections_accepted, 2);
    assert_eq!(stats.handshakes_refused, 5);

    let reply = http(fx.addr(), "GET", "/control/stats", &[], b"").await;
    let json = reply.json();
    assert_eq!(json["connections_accepted"], 2);
    assert_eq!(json["handshakes"][0]["status"], 403);
}

#[tokio::test]
async fn refused_query_tokens_are_told_in_band_and_header_tokens_with_401() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let fx = quiet_fixture().await;
    fx.set_tokens(Some(&["good"]));
    let open = |url: String, header: Option<&str>| {
        let mut request = url.into_client_request().unwrap();
        if let Some(h) = header {
            request.headers_mut().insert("authorization", h.parse().unwrap());
        }
        async move { timeout(WAIT, tokio_tungstenite::connect_async(request)).await.expect("handshake timed out") }
    };
    // As a browser sends it, in the query: the upgrade succeeds and the close
    // code says why, since a browser never sees the status of a refused upgrade.
    let (mut ws, _) = open(format!("{}?access_token=bad", ws_url(fx.addr())), None).await.expect("upgraded");
    let msg = timeout(WAIT, ws.next()).await.expect("a close frame in time").expect("a message").expect("read");
    let Message::Close(Some(close)) = msg else { panic!("expected a close frame, got {msg:?}") };
    assert_eq!(u16::from(close.code), 4401);
    // In a header: a plain 401.
    match open(ws_url(fx.addr()), Some("Bearer bad")).await {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status().as_u16(), 401),
        other => panic!("expected HTTP 401, got {other:?}"),
    }
    // The accepted token, either way.
    let (mut ws, _) = open(format!("{}?access_token=good", ws_url(fx.addr())), None).await.expect("upgraded");
    assert!(matches!(recv(&mut ws).await, ServerFrame::Welcome { .. }));
    let (mut ws, _) = open(ws_url(fx.addr()), Some("Bearer good")).await.expect("upgraded");
    assert!(matches!(recv(&mut ws).await, ServerFrame::Welcome { .. }));
    let statuses: Vec<u16> = fx.stats().handshakes.iter().map(|h| h.status).collect();
    assert_eq!(statuses, [401, 401, 101, 101], "both refusals are counted as refusals");
}

#[tokio::test]
async fn drop_closes_connections_without_a_close_frame() {
    let fx = quiet_fixture().await;
    let mut a = connect(fx.addr()).await;
    let mut b = connect(fx.addr()).await;
    subscribe(&mut a, "c", None).await;
    recv_subscribed(&mut a).await;
    let reply = post(fx.addr(), "/control/drop").await;
    assert_eq!(reply.json(), serde_json::json!({ "dropped": 2 }));
    assert_dropped_abruptly(&mut a).await;
    assert_dropped_abruptly(&mut b).await;
    assert_eq!(fx.stats().connections_open, 0);
    // The channel keeps working for new connections.
    let mut c = connect(fx.addr()).await;
    subscribe(&mut c, "c", None).await;
    recv_subscribed(&mut c).await;
    let id = fx.publish("c", None, "x").expect("publish");
    assert_eq!(recv_event(&mut c).await.0, id);
}

#[tokio::test]
async fn stall_silences_open_connections() {
    let fx = fixture_with(FixtureConfig { heartbeat: Duration::from_millis(50), ..FixtureConfig::default() }).await;
    let mut stalled = connect(fx.addr()).await;
    subscribe(&mut stalled, "c", None).await;
    loop {
        match recv(&mut stalled).await {
            ServerFrame::Ping => {}
            ServerFrame::Subscribed { .. } => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    let reply = post(fx.addr(), "/control/stall").await;
    assert_eq!(reply.json(), serde_json::json!({ "stalled": 1 }));
    fx.publish("c", None, "unseen").expect("publish");

    // A ping already on its way may still arrive; after that, nothing does
    // for many heartbeat intervals.
    let mut late_pings = 0;
    loop {
        match timeout(Duration::from_millis(500), stalled.next()).await {
            Err(_) => break,
            Ok(Some(Ok(Message::Text(text)))) if text.as_str() == r#"{"type":"ping"}"# => {
                late_pings += 1;
                assert!(late_pings < 2, "pings continue after stall");
            }
            Ok(other) => panic!("stalled connection sent {other:?}"),
        }
    }
    assert_eq!(fx.stats().connections_open, 1);

    // New connections are served normally.
    let mut fresh = connect(fx.addr()).await;
    assert_eq!(recv(&mut fresh).await, ServerFrame::Ping);

    // The stalled connection stays open until the client closes it.
    stalled.close(None).await.expect("close");
    loop {
        match timeout(WAIT, stalled.next()).await.expect("close completes") {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
            Some(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn idempotency_key_publishes_once() {
    let fx = quiet_fixture().await;
    let key = [("Idempotency-Key", "k-1")];
    let first = http(fx.addr(), "POST", "/publish/c", &key, b"one").await;
    let second = http(fx.addr(), "POST", "/publish/c", &key, b"two").await;
    assert_eq!(first.status, 200);
    assert_eq!(first.json(), second.json());
    let id = first.json()["id"].as_str().expect("an id").to_owned();

    // The same key over WebSocket is acknowledged with the same id.
    let mut ws = connect(fx.addr()).await;
    let publish = |data: &str, key: &str| ClientFrame::Publish {
        channel: "c".to_owned(),
        key: key.to_owned(),
        event: None,
        data: data.to_owned(),
    };
    send(&mut ws, &publish("three", "k-1")).await;
    assert_eq!(recv(&mut ws).await, ServerFrame::Ack { key: "k-1".to_owned(), id: id.clone() });

    // Exactly one event exists.
    let epoch = id.strip_suffix("-1").expect("the first event");
    subscribe(&mut ws, "c", Some(&format!("{epoch}-0"))).await;
    assert_eq!(recv_subscribed(&mut ws).await, (Outcome::Resumed, None, id.clone()));
    assert_eq!(recv_event(&mut ws).await, (id.clone(), None, "one".to_owned()));

    // A new key publishes; the event reaches the publisher before its ack.
    send(&mut ws, &publish("four", "k-2")).await;
    let (second_id, _, data) = recv_event(&mut ws).await;
    assert_eq!(data, "four");
    assert_eq!(recv(&mut ws).await, ServerFrame::Ack { key: "k-2".to_owned(), id: second_id });
    assert_eq!(fx.stats().events_published, 2);
    assert_eq!(fx.publish_with_key("c", "k-2", None, "five").ok(), fx.publish_with_key("c", "k-2", None, "six").ok());
}

#[tokio::test]
async fn bad_client_frames_get_bad_request_and_keep_the_connection() {
    let fx = quiet_fixture().await;
    let mut ws = connect(fx.addr()).await;
    let bad_request = |frame: ServerFrame| match frame {
        ServerFrame::Error { code, channel, key, .. } => {
            assert_eq!(code, "bad_request");
            (channel, key)
        }
        other => panic!("expected an error, got {other:?}"),
    };

    ws.send(Message::text("not json")).await.expect("send");
    assert_eq!(bad_request(recv(&mut ws).await), (None, None));
    ws.send(Message::text(r#"{"type":"dance"}"#)).await.expect("send");
    assert_eq!(bad_request(recv(&mut ws).await), (None, None));
    ws.send(Message::binary(vec![1, 2, 3])).await.expect("send");
    assert_eq!(bad_request(recv(&mut ws).await), (None, None));

    subscribe(&mut ws, "no spaces", None).await;
    assert_eq!(bad_request(recv(&mut ws).await), (Some("no spaces".to_owned()), None));
    let publish =
        ClientFrame::Publish { channel: "a/b".to_owned(), key: "k".to_owned(), event: None, data: "x".to_owned() };
    send(&mut ws, &publish).await;
    // About the publish (its channel named too): only it fails.
    assert_eq!(bad_request(recv(&mut ws).await), (Some("a/b".to_owned()), Some("k".to_owned())));
    // A frame of a known type with a field missing names what it had.
    ws.send(Message::text(r#"{"type":"publish","channel":"c","key":"k2"}"#)).await.expect("send");
    assert_eq!(bad_request(recv(&mut ws).await), (Some("c".to_owned()), Some("k2".to_owned())));
    ws.send(Message::text(r#"{"type":"subscribe","channel":"c","cursor":7}"#)).await.expect("send");
    assert_eq!(bad_request(recv(&mut ws).await), (Some("c".to_owned()), None));
    let bad_type = ClientFrame::Publish {
        channel: "c".to_owned(),
        key: "k3".to_owned(),
        event: Some("two\nlines".to_owned()),
        data: "x".to_owned(),
    };
    send(&mut ws, &bad_type).await;
    assert_eq!(bad_request(recv(&mut ws).await), (Some("c".to_owned()), Some("k3".to_owned())));

    subscribe(&mut ws, "ok", None).await;
    assert_eq!(recv_subscribed(&mut ws).await.0, Outcome::Live);
    send(&mut ws, &ClientFrame::Unsubscribe { channel: "ok".to_owned() }).await;
    // Frames are handled in order: once "other" is answered, the
    // unsubscribe has taken effect.
    subscribe(&mut ws, "other", None).await;
    assert_eq!(recv_subscribed(&mut ws).await.0, Outcome::Live);
    fx.publish("ok", None, "not delivered").expect("publish");
    subscribe(&mut ws, "third", None).await;
    // The unsubscribed event would have come before this answer.
    assert_eq!(recv_subscribed(&mut ws).await.0, Outcome::Live);
}

#[tokio::test]
async fn publish_route_validates_its_input() {
    let fx = quiet_fixture().await;
    // PROTOCOL.md §7.4: refusals carry a JSON body shaped like an error frame.
    let refused = |reply: HttpReply, status: u16, code: &str| {
        assert_eq!(reply.status, status, "{}", reply.body);
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_eq!(reply.json()["code"], code, "{}", reply.body);
        assert!(reply.json()["message"].as_str().is_some_and(|m| !m.is_empty()));
    };
    refused(post(fx.addr(), "/publish/a%20b").await, 400, "bad_request");
    refused(http(fx.addr(), "POST", "/publish/c", &[], &[0xff, 0xfe]).await, 400, "bad_request");
    let too_large = vec![b'x'; resub_fixture::MAX_PAYLOAD + 1];
    refused(http(fx.addr(), "POST", "/publish/c", &[], &too_large).await, 413, "too_large");
    for event in ["two%0Alines", &"t".repeat(129)] {
        refused(post(fx.addr(), &format!("/publish/c?event={event}")).await, 400, "bad_request");
    }
    let long_key = "k".repeat(129);
    for key in [long_key.as_str(), "has space"] {
        refused(http(fx.addr(), "POST", "/publish/c", &[("idempotency-key", key)], b"x").await, 400, "bad_request");
    }
    let largest = vec![b'x'; resub_fixture::MAX_PAYLOAD];
    assert_eq!(http(fx.addr(), "POST", "/publish/c", &[], &largest).await.status, 200);
    // An empty event type is none; a 128-byte one is allowed.
    assert_eq!(post(fx.addr(), "/publish/c?event=").await.status, 200);
    assert_eq!(post(fx.addr(), &format!("/publish/c?event={}", "t".repeat(128))).await.status, 200);
    refused(post(fx.addr(), "/control/epoch/a%2Fb").await, 400, "bad_request");
    assert_eq!(fx.stats().events_published, 3);
}

/// PROTOCOL.md §7.4: a key is kept across a new epoch; it answers with its
/// first id (of the old epoch) and publishes nothing.
#[tokio::test]
async fn an_idempotency_key_survives_a_new_epoch() {
    let fx = quiet_fixture().await;
    let first = http(fx.addr(), "POST", "/publish/c", &[("idempotency-key", "k1")], b"x").await.json();
    fx.new_epoch("c");
    let again = http(fx.addr(), "POST", "/publish/c", &[("idempotency-key", "k1")], b"x").await.json();
    assert_eq!(first["id"], again["id"]);
    assert_eq!(fx.head("c").rsplit_once('-').unwrap().1, "0", "nothing published in the new epoch");
}

/// PROTOCOL.md §4: epochs are compared before sequence numbers, and a
/// malformed cursor (a leading zero) is `unknown_cursor`.
#[tokio::test]
async fn outcomes_compare_epochs_before_sequence_numbers() {
    let fx = quiet_fixture().await;
    let head = fx.publish("c", None, "x").unwrap();
    let epoch = head.rsplit_once('-').unwrap().0;
    let mut ws = connect(fx.addr()).await;
    let cases = [
        ("zz9-999999".to_owned(), WireResetReason::EpochChanged),
        (format!("{epoch}-999999"), WireResetReason::UnknownCursor),
        (format!("{epoch}-01"), WireResetReason::UnknownCursor),
    ];
    for (cursor, reason) in cases {
        subscribe(&mut ws, "c", Some(&cursor)).await;
        match recv(&mut ws).await {
            ServerFrame::Subscribed { outcome: Outcome::Reset, reason: Some(r), head: h, .. } => {
                assert_eq!((r, h.as_str()), (reason, head.as_str()), "{cursor}");
            }
            other => panic!("{cursor}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn cors_preflight_allows_any_origin() {
    let fx = quiet_fixture().await;
    let reply = http(
        fx.addr(),
        "OPTIONS",
        "/publish/c",
        &[
            ("Origin", "http://example.test"),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "idempotency-key,content-type"),
        ],
        b"",
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    let allowed = reply.header("access-control-allow-headers").expect("allowed headers").to_ascii_lowercase();
    for name in ["idempotency-key", "last-event-id", "authorization", "content-type"] {
        assert!(allowed.contains(name), "{name} not allowed: {allowed}");
    }

    let reply = http(fx.addr(), "POST", "/publish/c", &[("Origin", "http://example.test")], b"x").await;
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    let exposed = reply.header("access-control-expose-headers").expect("exposed headers").to_ascii_lowercase();
    assert!(exposed.contains("retry-after"));
}

#[tokio::test]
async fn slow_consumer_is_dropped() {
    let fx = fixture_with(FixtureConfig {
        heartbeat: Duration::from_secs(600),
        max_connection_queue: 4,
        ..FixtureConfig::default()
    })
    .await;
    let mut ws = connect(fx.addr()).await;
    subscribe(&mut ws, "c", None).await;
    recv_subscribed(&mut ws).await;
    // On this single-threaded runtime the connection task cannot drain its
    // queue while this loop runs, so the fifth event overflows it.
    for i in 0..10 {
        fx.publish("c", None, &i.to_string()).expect("publish");
    }
    assert_eq!(fx.stats().slow_consumer_drops, 1);
    assert_eq!(fx.stats().connections_open, 0);
    assert_dropped_abruptly(&mut ws).await;
}

#[tokio::test]
async fn shutdown_stops_the_server_and_drops_connections() {
    let fx = quiet_fixture().await;
    let addr = fx.addr();
    let mut ws = connect(addr).await;
    fx.shutdown().await;
    assert_dropped_abruptly(&mut ws).await;
    assert!(TcpStream::connect(addr).await.is_err(), "still listening");
}

#[tokio::test]
async fn binary_prints_listening_address_first() {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_resub-fixture"))
        .args(["--addr", "127.0.0.1:0", "--heartbeat-ms", "100"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    timeout(WAIT, BufReader::new(stdout).read_line(&mut line))
        .await
        .expect("timed out waiting for the first line")
        .expect("read stdout");
    let line = line.trim_end();
    let addr =
        line.strip_prefix("listening on http://127.0.0.1:").unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let port: u16 = addr.parse().expect("a port number");
    assert_ne!(port, 0);

    let mut ws = try_connect(SocketAddr::from(([127, 0, 0, 1], port))).await.expect("the binary accepts WebSockets");
    assert_eq!(recv(&mut ws).await, ServerFrame::Welcome { heartbeat_ms: 100 });

    child.start_kill().expect("stop the binary");
    timeout(WAIT, child.wait()).await.expect("the binary exits").expect("wait");
}
