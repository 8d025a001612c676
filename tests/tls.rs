#![cfg(not(target_arch = "wasm32"))]
//! `https://` and `wss://` through rustls, against the fixture serving a
//! self-signed certificate: with the certificate configured as a root the
//! client streams and resumes on every transport; a certificate that does not
//! verify stops the client with a typed, non-retryable error.

use std::time::Duration;

use futures::StreamExt;
use resub::core::Backoff;
use resub::{Client, ConnectionState, DisconnectReason, Error, Message, Subscription, Transport};
use resub_fixture::{Fixture, FixtureConfig, TlsIdentity};

const DEADLINE: Duration = Duration::from_secs(20);

async fn tls_fixture(identity: TlsIdentity) -> Fixture {
    let cfg = FixtureConfig { heartbeat: Duration::from_millis(500), tls: Some(identity), ..FixtureConfig::default() };
    Fixture::start_with("127.0.0.1:0".parse().unwrap(), cfg).await.unwrap()
}

fn client(url: &str, transport: Transport, root: Option<&[u8]>) -> Client {
    let mut builder = Client::builder(url)
        .transports(&[transport])
        .backoff(Backoff {
            base: Duration::from_millis(20),
            factor: 2.0,
            cap: Duration::from_millis(200),
            max_attempts: None,
        })
        .open_timeout(Duration::from_secs(5))
        .poll_hold(Duration::from_secs(2))
        .seed(7);
    if let Some(der) = root {
        builder = builder.add_root_certificate(der.to_vec());
    }
    builder.build().unwrap()
}

macro_rules! per_transport {
    ($($name:ident),* $(,)?) => {
        mod ws { $( #[tokio::test] async fn $name() { super::$name(resub::Transport::WebSocket).await } )* }
        mod sse { $( #[tokio::test] async fn $name() { super::$name(resub::Transport::Sse).await } )* }
        mod poll { $( #[tokio::test] async fn $name() { super::$name(resub::Transport::LongPoll).await } )* }
    };
}

per_transport!(
    a_custom_root_lets_the_client_stream_publish_and_resume_over_tls,
    a_self_signed_certificate_that_is_not_trusted_stops_with_a_tls_error,
    a_certificate_for_another_name_stops_with_a_tls_error,
);

async fn next_event(sub: &mut Subscription) -> String {
    loop {
        match tokio::time::timeout(DEADLINE, sub.next()).await {
            Ok(Some(Ok(Message::Event(e)))) => return e.data,
            Ok(Some(Ok(Message::Resumed { .. }))) => {}
            other => panic!("expected an event, got {other:?}"),
        }
    }
}

async fn a_custom_root_lets_the_client_stream_publish_and_resume_over_tls(t: Transport) {
    let identity = TlsIdentity::self_signed(&["localhost", "127.0.0.1"]).unwrap();
    let fx = tls_fixture(identity.clone()).await;
    assert!(fx.url().starts_with("https://"));
    let c = client(&fx.url(), t, Some(identity.certificate_der()));
    let mut sub = c.subscribe_from("c", &fx.head("c")).await.unwrap();
    // A publish through the client crosses TLS too (a WebSocket frame, or an
    // HTTPS POST on the HTTP transports).
    let id = tokio::time::timeout(DEADLINE, c.publish("c", "one")).await.unwrap().unwrap();
    assert_eq!(next_event(&mut sub).await, "one");
    fx.drop_connections();
    fx.publish("c", None, "two").unwrap();
    assert_eq!(next_event(&mut sub).await, "two", "resumed after {id} over TLS");
    assert!(matches!(c.state(), ConnectionState::Connected { transport, .. } if transport == t));
    c.close().await;
}

async fn expect_tls_stop(fx: &Fixture, c: &Client) {
    let states = c.states();
    let mut sub = c.subscribe("c").await.unwrap();
    match tokio::time::timeout(DEADLINE, sub.next()).await.unwrap() {
        Some(Err(Error::Tls(why))) => assert!(!why.is_empty()),
        other => panic!("expected a TLS error, got {other:?}"),
    }
    assert!(tokio::time::timeout(DEADLINE, sub.next()).await.unwrap().is_none(), "the subscription ended");
    let seen: Vec<ConnectionState> = tokio::time::timeout(DEADLINE, states.collect()).await.unwrap();
    assert!(matches!(seen.last(), Some(ConnectionState::Closed { error: Some(Error::Tls(_)) })), "{seen:?}");
    assert!(
        !seen.iter().any(|s| matches!(s, ConnectionState::Disconnected { reason: DisconnectReason::Tls(_), .. })),
        "a TLS failure is final, not a disconnect to retry: {seen:?}"
    );
    let attempts = seen.iter().filter(|s| matches!(s, ConnectionState::Connecting { .. })).count();
    assert!(attempts <= 1, "retried after a TLS failure: {seen:?}");
    // The server saw the refused handshake (it learns of it from the
    // client's alert, which may arrive after the client has stopped). On SSE
    // and long polling the first request, sent before the subscription, may
    // be replaced by one that carries it; both may have reached the server.
    let failures = tokio::time::timeout(DEADLINE, async {
        loop {
            let n = fx.stats().tls_failures;
            if n > 0 {
                return n;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the server saw no failed handshake");
    assert!(failures <= 2, "{failures} failed handshakes: retried after a TLS failure");
    assert!(matches!(c.publish("c", "x").await, Err(Error::Tls(_))));
}

async fn a_self_signed_certificate_that_is_not_trusted_stops_with_a_tls_error(t: Transport) {
    let fx = tls_fixture(TlsIdentity::self_signed(&["localhost", "127.0.0.1"]).unwrap()).await;
    let c = client(&fx.url(), t, None);
    expect_tls_stop(&fx, &c).await;
}

async fn a_certificate_for_another_name_stops_with_a_tls_error(t: Transport) {
    let identity = TlsIdentity::self_signed(&["example.org"]).unwrap();
    let fx = tls_fixture(identity.clone()).await;
    let c = client(&fx.url(), t, Some(identity.certificate_der()));
    expect_tls_stop(&fx, &c).await;
}
