#![cfg(not(target_arch = "wasm32"))]
//! Token providers: asked on every connect; a refused token is retried with a
//! fresh one without losing the subscription's place; refusal after refusal
//! stops the client with `Error::Unauthorized`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use resub::core::Backoff;
use resub::{Client, ConnectionState, Error, Message, Subscription, Transport};
use resub_fixture::Fixture;

const DEADLINE: Duration = Duration::from_secs(20);

/// Hands out the queued tokens in turn, then the last one forever; counts
/// the calls.
#[derive(Clone, Default)]
struct Tokens {
    queue: Arc<Mutex<VecDeque<String>>>,
    last: Arc<Mutex<String>>,
    calls: Arc<Mutex<u32>>,
}

impl Tokens {
    fn then(&self, token: &str) {
        self.queue.lock().unwrap().push_back(token.to_owned());
    }

    fn calls(&self) -> u32 {
        *self.calls.lock().unwrap()
    }

    fn provider(&self) -> impl resub::auth::TokenProvider {
        let tokens = self.clone();
        move || {
            let tokens = tokens.clone();
            async move {
                *tokens.calls.lock().unwrap() += 1;
                let mut last = tokens.last.lock().unwrap();
                if let Some(next) = tokens.queue.lock().unwrap().pop_front() {
                    *last = next;
                }
                Ok::<_, Error>(last.clone())
            }
        }
    }
}

fn client(fx: &Fixture, transport: Transport, tokens: &Tokens) -> Client {
    Client::builder(&fx.url())
        .transports(&[transport])
        .backoff(Backoff {
            base: Duration::from_millis(20),
            factor: 2.0,
            cap: Duration::from_millis(200),
            max_attempts: None,
        })
        .token_provider(tokens.provider())
        .build()
        .unwrap()
}

async fn datas(sub: &mut Subscription, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < n {
        match tokio::time::timeout(DEADLINE, sub.next()).await.expect("in time").expect("open").expect("no error") {
            Message::Event(e) => out.push(e.data),
            Message::Reset { .. } => panic!("a reset: the refresh lost the cursor"),
            _ => {}
        }
    }
    out
}

#[tokio::test]
async fn a_refused_token_is_refreshed_and_the_subscription_goes_on() {
    let fx = Fixture::start().await.unwrap();
    for transport in Transport::ALL {
        fx.set_tokens(Some(&["t1"]));
        let tokens = Tokens::default();
        tokens.then("t1");
        let c = client(&fx, transport, &tokens);
        let channel = format!("auth-{transport}");
        let start = fx.publish(&channel, None, "0").unwrap();
        let mut sub = c.subscribe_from(&channel, &start).await.unwrap();
        for i in 1..=3 {
            fx.publish(&channel, None, &i.to_string()).unwrap();
        }
        assert_eq!(datas(&mut sub, 3).await, ["1", "2", "3"], "{transport}");
        let before = tokens.calls();
        assert!(before >= 1, "{transport}: the provider was asked");

        // The server now wants t2, and drops everyone. The provider still
        // hands out t1 once (its cache is stale), then t2.
        fx.set_tokens(Some(&["t2"]));
        tokens.then("t1");
        tokens.then("t2");
        fx.drop_connections();
        for i in 4..=6 {
            fx.publish(&channel, None, &i.to_string()).unwrap();
        }
        assert_eq!(datas(&mut sub, 3).await, ["4", "5", "6"], "{transport}: nothing lost across the refresh");
        assert!(tokens.calls() >= before + 2, "{transport}: asked again after the refusal");
        let refused = fx.stats().handshakes.iter().filter(|h| h.status == 401).count();
        assert!(refused >= 1, "{transport}: the stale token was refused");
        c.close().await;
    }
    fx.set_tokens(None);
}

#[tokio::test]
async fn tokens_refused_three_times_in_a_row_stop_the_client() {
    let fx = Fixture::start().await.unwrap();
    fx.set_tokens(Some(&["good"]));
    for transport in Transport::ALL {
        let tokens = Tokens::default();
        tokens.then("bad");
        let c = client(&fx, transport, &tokens);
        let mut sub = c.subscribe(&format!("never-{transport}")).await.unwrap();
        let end = tokio::time::timeout(DEADLINE, sub.next()).await.expect("ends in time");
        assert!(matches!(end, Some(Err(Error::Unauthorized))), "{transport}: {end:?}");
        assert!(matches!(c.state(), ConnectionState::Closed { error: Some(Error::Unauthorized) }));
        // One token per request: three refused attempts, and on SSE and long
        // polling maybe one more request that the subscription replaced
        // (the stream reopens to carry the new channel) before its answer.
        let calls = tokens.calls();
        assert!((3..=4).contains(&calls), "{transport}: asked {calls} times for three refusals");
    }
}

#[tokio::test]
async fn a_failing_provider_counts_as_a_refusal() {
    let fx = Fixture::start().await.unwrap();
    let calls = Arc::new(Mutex::new(0u32));
    let counted = calls.clone();
    let c = Client::builder(&fx.url())
        .backoff(Backoff {
            base: Duration::from_millis(20),
            factor: 2.0,
            cap: Duration::from_millis(200),
            max_attempts: None,
        })
        .token_provider(move || {
            *counted.lock().unwrap() += 1;
            async { Err::<String, _>(Error::Unavailable("identity service down".into())) }
        })
        .build()
        .unwrap();
    let mut states = c.states();
    loop {
        match tokio::time::timeout(DEADLINE, states.next()).await.unwrap().unwrap() {
            ConnectionState::Closed { error } => {
                assert_eq!(error, Some(Error::Unauthorized));
                break;
            }
            ConnectionState::Connected { .. } => panic!("connected without a token"),
            _ => {}
        }
    }
    assert_eq!(*calls.lock().unwrap(), 3);
}

#[tokio::test]
async fn without_a_provider_a_401_stops_at_once() {
    let fx = Fixture::start().await.unwrap();
    fx.set_tokens(Some(&["good"]));
    let c = Client::builder(&fx.url()).token("bad").build().unwrap();
    let mut states = c.states();
    loop {
        if let ConnectionState::Closed { error } = tokio::time::timeout(DEADLINE, states.next()).await.unwrap().unwrap()
        {
            assert_eq!(error, Some(Error::Unauthorized));
            break;
        }
    }
    assert_eq!(fx.stats().handshakes.iter().filter(|h| h.status == 401).count(), 1, "one attempt");
}

#[tokio::test]
async fn a_fixed_token_is_sent_on_every_transport_and_with_publishes() {
    let fx = Fixture::start().await.unwrap();
    fx.set_tokens(Some(&["good"]));
    for transport in Transport::ALL {
        let c = Client::builder(&fx.url()).transports(&[transport]).token("good").build().unwrap();
        let channel = format!("fixed-{transport}");
        let mut sub = c.subscribe_from(&channel, &fx.head(&channel)).await.unwrap();
        // Over SSE and long polling the publish is an HTTP POST carrying it.
        tokio::time::timeout(DEADLINE, c.publish(&channel, "x")).await.unwrap().unwrap();
        loop {
            match tokio::time::timeout(DEADLINE, sub.next()).await.unwrap().unwrap().unwrap() {
                Message::Event(e) => {
                    assert_eq!(e.data, "x", "{transport}");
                    break;
                }
                Message::Resumed { .. } => {}
                other => panic!("{transport}: unexpected {other:?}"),
            }
        }
        c.close().await;
    }
    assert_eq!(fx.stats().handshakes.iter().filter(|h| h.status == 401).count(), 0, "never refused");
}
