#![cfg(not(target_arch = "wasm32"))]
//! The client against the server teams deploy (`resub-server`), as a
//! newcomer sets it up: JWT auth, limits, metrics, and a graceful shutdown
//! that sends clients to the other node of a pair sharing Redis.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jsonwebtoken::{EncodingKey, Header};
use resub::core::Backoff;
use resub::{Client, ConnectionState, DisconnectReason, Error, Message, Subscription, Transport};
use resub_fixture::RedisServer;
use resub_server::{Config, Hub, JwtAuthorizer, Limits, RedisConfig, Server};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DEADLINE: Duration = Duration::from_secs(20);
const SECRET: &[u8] = b"a shared secret of 32 bytes or more";

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// A token for `sub` with these rights, valid for an hour (or expired an
/// hour ago).
fn token(sub: &str, subscribe: &[&str], publish: &[&str], expired: bool) -> String {
    let exp = if expired { now_secs() - 3600 } else { now_secs() + 3600 };
    let claims = json!({ "sub": sub, "exp": exp, "subscribe": subscribe, "publish": publish });
    jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET)).unwrap()
}

fn jwt_config() -> Config {
    Config { authorizer: Some(Arc::new(JwtAuthorizer::hs256(SECRET))), ..Config::default() }
}

async fn start(cfg: Config) -> Server {
    let hub = Hub::new(cfg).await.unwrap();
    Server::start(SocketAddr::from(([127, 0, 0, 1], 0)), hub.clone(), Server::app(&hub)).await.unwrap()
}

fn fast() -> Backoff {
    Backoff { base: Duration::from_millis(20), factor: 2.0, cap: Duration::from_millis(200), max_attempts: None }
}

fn client(url: &str, transport: Transport, token: Option<&str>) -> Client {
    // Held polls end soon after the client leaves.
    let mut b = Client::builder(url).transports(&[transport]).backoff(fast()).poll_hold(Duration::from_millis(200));
    if let Some(t) = token {
        b = b.token(t);
    }
    b.build().unwrap()
}

/// The next message that is not presence, in time.
async fn next(sub: &mut Subscription) -> Option<Result<Message, Error>> {
    loop {
        match tokio::time::timeout(DEADLINE, sub.next()).await.expect("in time") {
            Some(Ok(Message::Presence(_) | Message::Resumed { .. })) => continue,
            other => return other,
        }
    }
}

async fn event_data(sub: &mut Subscription) -> String {
    match next(sub).await {
        Some(Ok(Message::Event(e))) => e.data,
        other => panic!("expected an event, got {other:?}"),
    }
}

/// Waits until the client is connected (so that what is published next is
/// live for its subscriptions).
async fn connected(c: &Client) {
    let mut states = c.states();
    tokio::time::timeout(DEADLINE, async {
        while !matches!(c.state(), ConnectionState::Connected { .. }) {
            states.next().await;
        }
    })
    .await
    .expect("connected in time");
}

/// Waits until `hub` has `n` subscriptions open.
async fn subscriptions(hub: &Hub, n: usize) {
    tokio::time::timeout(DEADLINE, async {
        loop {
            if hub.stats().subscriptions_open >= n {
                return;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("subscribed in time");
}

async fn closed_with(c: &Client) -> Option<Error> {
    let mut states = c.states();
    tokio::time::timeout(DEADLINE, async {
        loop {
            if let ConnectionState::Closed { error } = c.state() {
                return error;
            }
            states.next().await;
        }
    })
    .await
    .expect("closed in time")
}

/// `GET path` over plain HTTP/1.1: the status and the body.
async fn http_get(addr: SocketAddr, path: &str, bearer: Option<&str>) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = bearer.map(|t| format!("authorization: Bearer {t}\r\n")).unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\n{auth}connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut out)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn a_forbidden_channel_ends_that_subscription_and_the_others_go_on() {
    let server = start(jwt_config()).await;
    let t = token("alice", &["news", "orders.*"], &[], false);
    for transport in Transport::ALL {
        let c = client(&server.url(), transport, Some(&t));
        let mut secret = c.subscribe("secret").await.unwrap();
        let mut news = c.subscribe("news").await.unwrap();
        let mut orders = c.subscribe("orders.eu").await.unwrap();
        match next(&mut secret).await {
            Some(Err(Error::Forbidden { channel, .. })) => assert_eq!(channel, "secret", "{transport}"),
            other => panic!("{transport}: expected forbidden, got {other:?}"),
        }
        assert!(next(&mut secret).await.is_none(), "{transport}: the refused subscription ends");
        connected(&c).await;
        subscriptions(server.hub(), 2).await;
        // Liveness: the allowed subscriptions get what follows.
        server.hub().publish("news", &format!("n-{transport}")).await.unwrap();
        server.hub().publish("orders.eu", &format!("o-{transport}")).await.unwrap();
        assert_eq!(event_data(&mut news).await, format!("n-{transport}"));
        assert_eq!(event_data(&mut orders).await, format!("o-{transport}"));
        assert!(matches!(c.state(), ConnectionState::Connected { .. }), "{transport}: the connection went on");
        c.close().await;
        drop((news, orders));
        subscriptions_closed(server.hub()).await;
    }
    assert!(server.hub().stats().refusals.get("forbidden").copied().unwrap_or(0) >= 3);
}

/// Waits until every connection of `hub` has ended.
async fn subscriptions_closed(hub: &Hub) {
    tokio::time::timeout(DEADLINE, async {
        while hub.stats().subscriptions_open > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("closed in time");
}

#[tokio::test]
async fn a_missing_expired_or_forged_token_is_unauthorized_on_every_transport() {
    let server = start(jwt_config()).await;
    let forged = {
        let claims = json!({ "sub": "mallory", "exp": now_secs() + 3600, "subscribe": ["*"] });
        jsonwebtoken::encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(b"another secret, 32 bytes long..."),
        )
        .unwrap()
    };
    let expired = token("alice", &["*"], &[], true);
    for transport in Transport::ALL {
        for bad in [None, Some(expired.as_str()), Some(forged.as_str())] {
            let c = client(&server.url(), transport, bad);
            let _sub = c.subscribe("news").await.unwrap();
            assert_eq!(closed_with(&c).await, Some(Error::Unauthorized), "{transport} with {bad:?}");
        }
    }
    // The same refusal on the HTTP routes.
    assert_eq!(http_get(server.addr(), "/presence/news", None).await.0, 401);
    assert_eq!(http_get(server.addr(), "/presence/news", Some(&expired)).await.0, 401);
    let ok = token("alice", &["news"], &[], false);
    assert_eq!(http_get(server.addr(), "/presence/news", Some(&ok)).await.0, 200);
    assert_eq!(http_get(server.addr(), "/presence/other", Some(&ok)).await.0, 403);
}

#[tokio::test]
async fn publishes_outside_the_tokens_rights_are_refused_and_the_connection_goes_on() {
    let server = start(jwt_config()).await;
    let t = token("alice", &["chat"], &["chat"], false);
    for transport in Transport::ALL {
        let c = client(&server.url(), transport, Some(&t));
        // From the head: the event published next arrives however soon the
        // subscription is set up.
        let head = server.hub().head("chat").await.unwrap();
        let mut chat = c.subscribe_from("chat", &head).await.unwrap();
        match tokio::time::timeout(DEADLINE, c.publish("news", "x")).await.unwrap() {
            Err(Error::PublishRejected { code, .. }) => assert_eq!(code, "forbidden", "{transport}"),
            other => panic!("{transport}: expected a refusal, got {other:?}"),
        }
        let id = tokio::time::timeout(DEADLINE, c.publish("chat", "hello")).await.unwrap().unwrap();
        match next(&mut chat).await {
            Some(Ok(Message::Event(e))) => assert_eq!((e.id.as_str(), e.data.as_str()), (id.as_str(), "hello")),
            other => panic!("{transport}: expected the event, got {other:?}"),
        }
        c.close().await;
    }
}

#[tokio::test]
async fn limits_refuse_with_typed_answers_and_disturb_nothing_else() {
    let cfg = Config {
        limits: Limits { max_connections: 2, max_subscriptions: 2, max_payload: 16, publish_rate: 2 },
        ..Config::default()
    };
    let server = start(cfg).await;
    let c = client(&server.url(), Transport::WebSocket, None);
    let mut a = c.subscribe("a").await.unwrap();
    let mut b = c.subscribe("b").await.unwrap();
    connected(&c).await;
    subscriptions(server.hub(), 2).await;
    let mut third = c.subscribe("c").await.unwrap();
    match next(&mut third).await {
        Some(Err(Error::BadRequest(why))) => assert!(why.starts_with("too_many_subscriptions"), "{why}"),
        other => panic!("expected too_many_subscriptions, got {other:?}"),
    }
    // Payload and rate: the publish is refused, the connection goes on.
    match c.publish("a", "x".repeat(17)).await {
        Err(Error::PublishRejected { code, .. }) => assert_eq!(code, "too_large"),
        other => panic!("expected too_large, got {other:?}"),
    }
    let mut codes = Vec::new();
    for i in 0..3 {
        match c.publish("a", format!("p{i}")).await {
            Ok(_) => codes.push("ok".to_owned()),
            Err(Error::PublishRejected { code, .. }) => codes.push(code),
            Err(e) => panic!("{e}"),
        }
    }
    assert!(codes.contains(&"rate_limited".to_owned()), "a burst over 2/s is refused: {codes:?}");
    assert_eq!(event_data(&mut a).await, "p0");
    server.hub().publish("b", "still here").await.unwrap();
    assert_eq!(event_data(&mut b).await, "still here");
    // Connections: one more fits, the next is refused with 503 and a code.
    let second = client(&server.url(), Transport::Sse, None);
    let _s = second.subscribe("a").await.unwrap();
    connected(&second).await;
    // The stream that carries the subscription (SSE opens a new one for a
    // new channel set).
    subscriptions(server.hub(), 3).await;
    let (status, body) = http_get(server.addr(), "/sse?channel=a", None).await;
    assert_eq!(status, 503);
    assert!(body.contains("too_many_connections"), "{body}");
    let refusals = server.hub().stats().refusals;
    for reason in ["too_many_subscriptions", "too_large", "rate_limited", "too_many_connections"] {
        assert!(refusals.get(reason).copied().unwrap_or(0) >= 1, "{reason} counted: {refusals:?}");
    }
}

#[tokio::test]
async fn metrics_health_and_readiness_follow_the_server() {
    let server = start(Config::default()).await;
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = metrics.local_addr().unwrap();
    let app = resub_server::metrics_router(server.hub().clone());
    tokio::spawn(async move { axum_serve(metrics, app).await });
    let c = client(&server.url(), Transport::WebSocket, None);
    let mut sub = c.subscribe("m").await.unwrap();
    connected(&c).await;
    subscriptions(server.hub(), 1).await;
    for i in 0..3 {
        server.hub().publish("m", &i.to_string()).await.unwrap();
    }
    for i in 0..3 {
        assert_eq!(event_data(&mut sub).await, i.to_string());
    }
    let (status, text) = http_get(metrics_addr, "/metrics", None).await;
    assert_eq!(status, 200);
    for line in [
        "resub_connections{transport=\"ws\"} 1",
        "resub_subscriptions 1",
        "resub_events_published_total 3",
        "resub_events_delivered_total 3",
        "resub_subscribes_total{outcome=\"live\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line:?} in:\n{text}");
    }
    assert_eq!(http_get(metrics_addr, "/healthz", None).await.0, 200);
    assert_eq!(http_get(metrics_addr, "/readyz", None).await.0, 200);
    server.hub().drain();
    assert_eq!(http_get(metrics_addr, "/readyz", None).await.0, 503, "a draining node is not ready");
}

async fn axum_serve(listener: tokio::net::TcpListener, app: axum::Router) {
    let _ = axum::serve(listener, app).await;
}

/// A node on `redis` under `prefix`, with JWT auth.
async fn node(redis: &RedisServer, prefix: &str) -> Server {
    let cfg = Config {
        redis: Some(RedisConfig { url: redis.url(), prefix: prefix.to_owned() }),
        poll_hold: Duration::from_millis(200),
        ..jwt_config()
    };
    start(cfg).await
}

/// Two nodes sharing Redis, JWT on both, behind no balancer: the client
/// knows both. SIGTERM on the node in use (its graceful shutdown) sends the
/// client to the other at once, where it resumes from its cursor: nothing
/// lost, nothing repeated, on every transport.
#[tokio::test]
async fn a_draining_node_sends_its_clients_to_the_other_at_once_and_nothing_is_lost() {
    let redis = RedisServer::start().await.expect("redis-server starts (scripts/test.sh installs it)");
    for transport in Transport::ALL {
        let prefix = format!("drain-{transport}");
        let a = node(&redis, &prefix).await;
        let b = node(&redis, &prefix).await;
        let t = token("alice", &["orders"], &[], false);
        // The backoff is long: only the drain's "at once" reconnects fast.
        let slow =
            Backoff { base: Duration::from_millis(200), factor: 2.0, cap: Duration::from_secs(30), max_attempts: None };
        let c = Client::builder(&a.url())
            .endpoints(&[b.url()])
            .transports(&[transport])
            .backoff(slow)
            .token(&t)
            .build()
            .unwrap();
        let mut sub = c.subscribe("orders").await.unwrap();
        connected(&c).await;
        subscriptions(a.hub(), 1).await;
        let mut states = c.states();
        let told = tokio::spawn(async move {
            // The first disconnection after this point, and why.
            while let Some(state) = states.next().await {
                if let ConnectionState::Disconnected { reason, .. } = state {
                    return reason;
                }
            }
            panic!("no disconnection");
        });
        let publisher = b.hub().clone();
        for i in 0..5 {
            publisher.publish("orders", &format!("e{i}")).await.unwrap();
        }
        for i in 0..5 {
            assert_eq!(event_data(&mut sub).await, format!("e{i}"), "{transport}");
        }
        let a_url = a.url();
        let drained = tokio::spawn(a.shutdown(Duration::from_secs(5)));
        // Published while the client moves: it must arrive from b.
        for i in 5..10 {
            publisher.publish("orders", &format!("e{i}")).await.unwrap();
        }
        for i in 5..10 {
            assert_eq!(event_data(&mut sub).await, format!("e{i}"), "{transport}: in order, once");
        }
        let reason = tokio::time::timeout(DEADLINE, told).await.unwrap().unwrap();
        let said = match &reason {
            DisconnectReason::ServerClosed { code: 1012, .. } => true,
            DisconnectReason::ServerClosed { reason, .. } => reason.starts_with("restarting"),
            _ => false,
        };
        assert!(said, "{transport}: the server told the client to go: {reason:?}");
        let ConnectionState::Connected { endpoint, .. } = c.state() else { panic!("{transport}: connected") };
        assert_ne!(endpoint, a_url, "{transport}: on the other node");
        let stats = c.stats();
        assert!(stats.resets == 0, "{transport}: resumed, not reset: {stats:?}");
        tokio::time::timeout(DEADLINE, drained).await.expect("drained in time").unwrap();
        c.close().await;
        drop(b);
    }
}

#[tokio::test]
async fn an_oversized_frame_closes_only_its_own_connection() {
    use futures::SinkExt;
    use tokio_tungstenite::tungstenite::Message as Ws;

    let cfg = Config { limits: Limits { max_payload: 1024, ..Limits::default() }, ..Config::default() };
    let server = start(cfg).await;
    let c = client(&server.url(), Transport::WebSocket, None);
    let mut sub = c.subscribe("calm").await.unwrap();
    connected(&c).await;
    subscriptions(server.hub(), 1).await;

    let url = format!("{}/ws", server.url().replacen("http", "ws", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    // Twice the payload limit plus the frame's room: refused by the WebSocket layer.
    let huge = format!(r#"{{"type":"publish","channel":"calm","key":"k","data":"{}"}}"#, "x".repeat(200 * 1024));
    let _ = ws.send(Ws::text(huge)).await;
    let close = loop {
        match tokio::time::timeout(DEADLINE, ws.next()).await.expect("answered in time") {
            Some(Ok(Ws::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => break None,
        }
    };
    assert_eq!(close, Some(1009), "closed as too big");
    // Nothing was published, and the other connection goes on.
    server.hub().publish("calm", "after").await.unwrap();
    assert_eq!(event_data(&mut sub).await, "after");
    assert!(matches!(c.state(), ConnectionState::Connected { .. }));
    assert_eq!(server.hub().stats().events_published, 1);

    // A resub client publishing that much is told, once; its next publish
    // goes through on the new connection.
    let big = tokio::time::timeout(DEADLINE, c.publish("calm", "x".repeat(200 * 1024))).await.expect("told in time");
    match big {
        Err(Error::PublishRejected { code, .. }) => assert_eq!(code, "too_large"),
        other => panic!("expected too_large, got {other:?}"),
    }
    let id = tokio::time::timeout(DEADLINE, c.publish("calm", "small")).await.unwrap().unwrap();
    match next(&mut sub).await {
        Some(Ok(Message::Event(e))) => assert_eq!((e.id.as_str(), e.data.as_str()), (id.as_str(), "small")),
        other => panic!("expected the small event, got {other:?}"),
    }
}

#[tokio::test]
async fn the_router_mounted_under_a_prefix_serves_every_transport() {
    let hub = Hub::new(Config::default()).await.unwrap();
    let app = axum::Router::new().nest("/rt", resub_server::router(hub.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/rt", listener.local_addr().unwrap());
    tokio::spawn(axum_serve(listener, app));
    for transport in Transport::ALL {
        let c = client(&base, transport, None);
        let ch = format!("mounted-{transport}");
        // From the head: what is published next arrives whenever the
        // subscription is set up.
        let head = hub.head(&ch).await.unwrap();
        let mut sub = c.subscribe_from(&ch, &head).await.unwrap();
        connected(&c).await;
        // The client's publish goes over the transport in use (HTTP under
        // the prefix on SSE and polling).
        let id = tokio::time::timeout(DEADLINE, c.publish(&ch, "via the client")).await.unwrap().unwrap();
        let from_app = hub.publish(&ch, "from the application").await.unwrap();
        let mut got = Vec::new();
        while got.len() < 2 {
            match next(&mut sub).await {
                Some(Ok(Message::Event(e))) => got.push((e.id.to_string(), e.data)),
                other => panic!("{transport}: {other:?}"),
            }
        }
        assert_eq!(got, [(id, "via the client".to_owned()), (from_app, "from the application".to_owned())]);
        c.close().await;
    }
}
