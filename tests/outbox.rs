#![cfg(not(target_arch = "wasm32"))]
//! The publish outbox: publishes made while disconnected wait (bounded in
//! count and bytes, with a typed error when full) and go out on reconnect;
//! a publish whose acknowledgement is lost is sent again with the same
//! idempotency key and applied once.

use std::time::Duration;

use futures::StreamExt;
use futures::future::join_all;
use resub::core::Backoff;
use resub::{Client, Error, Message, Transport};
use resub_fixture::Fixture;

const DEADLINE: Duration = Duration::from_secs(20);

fn client(fx: &Fixture, transport: Transport) -> resub::ClientBuilder {
    Client::builder(&fx.url()).transports(&[transport]).backoff(Backoff {
        base: Duration::from_millis(20),
        factor: 2.0,
        cap: Duration::from_millis(200),
        max_attempts: None,
    })
}

fn refuse_all(fx: &Fixture, refuse: bool) {
    fx.set_websocket_enabled(!refuse);
    fx.set_sse_enabled(!refuse);
    fx.set_poll_enabled(!refuse);
}

#[tokio::test]
async fn publishes_wait_in_a_bounded_outbox_while_disconnected_and_are_applied_once() {
    let fx = Fixture::start().await.unwrap();
    for transport in Transport::ALL {
        let channel = format!("outbox-{transport}");
        let start = fx.publish(&channel, None, "0").unwrap();
        refuse_all(&fx, true);
        let c = client(&fx, transport).max_pending_publishes(5).max_pending_publish_bytes(64).build().unwrap();
        // Five wait; the sixth is refused at once, with the outbox's size.
        // Each publish is polled once, which hands it to the client's loop;
        // the loop takes them in order, so the sixth comes after the five.
        let mut waiting = Vec::new();
        for i in 1..=5 {
            let mut publish = Box::pin(c.publish(&channel, format!("m{i}")));
            assert!(futures::poll!(&mut publish).is_pending(), "{transport}: nowhere to publish yet");
            waiting.push(publish);
        }
        let full =
            tokio::time::timeout(DEADLINE, c.publish(&channel, "m6")).await.expect("refused at once").unwrap_err();
        assert_eq!(full, Error::PublishQueueFull { waiting: 5, bytes: 10 }, "{transport}");
        assert_eq!(full.code(), "publish_queue_full");
        // Bytes: 10 held of 64; a 55-byte publish does not fit.
        let too_big = c.publish(&channel, "x".repeat(55)).await;
        assert!(matches!(too_big, Err(Error::PublishQueueFull { .. })), "{transport}: {too_big:?}");

        refuse_all(&fx, false);
        let ids: Vec<String> = tokio::time::timeout(DEADLINE, join_all(waiting))
            .await
            .expect("acked after the reconnect")
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        let mut sorted = ids.clone();
        sorted.dedup();
        assert_eq!(sorted.len(), 5, "{transport}: five distinct ids");
        // Applied once each: the channel holds exactly them after `start`.
        let reader = Client::builder(&fx.url()).build().unwrap();
        let mut sub = reader.subscribe_from(&channel, &start).await.unwrap();
        fx.publish(&channel, None, "end").unwrap();
        let mut got = Vec::new();
        loop {
            match tokio::time::timeout(DEADLINE, sub.next()).await.unwrap().unwrap().unwrap() {
                Message::Event(e) if e.data == "end" => break,
                Message::Event(e) => got.push(e.data),
                _ => {}
            }
        }
        got.sort();
        assert_eq!(got, ["m1", "m2", "m3", "m4", "m5"], "{transport}");
        c.close().await;
        reader.close().await;
    }
}

#[tokio::test]
async fn a_publish_whose_ack_is_lost_is_sent_again_and_applied_once() {
    let fx = Fixture::start().await.unwrap();
    for transport in Transport::ALL {
        let channel = format!("lost-ack-{transport}");
        let c = client(&fx, transport).build().unwrap();
        // Connected first, so that the publish goes out (and is applied) at once.
        c.publish(&channel, "warm-up").await.unwrap();
        let head = fx.head(&channel);
        fx.drop_next_acks(1);
        let id = tokio::time::timeout(DEADLINE, c.publish(&channel, "once")).await.expect("acked in time").unwrap();
        let (epoch, seq) = head.rsplit_once('-').unwrap();
        assert_eq!(id, format!("{epoch}-{}", seq.parse::<u64>().unwrap() + 1), "{transport}: the first id");
        assert_eq!(fx.head(&channel), id, "{transport}: applied once, though sent twice");
        c.close().await;
    }
}

/// Idempotency keys come from the operating system, not from the jitter
/// seed: two clients built with the same `.seed()` publish with different
/// keys, so the server applies both clients' publishes instead of acking the
/// second one's with the first one's ids.
#[tokio::test]
async fn clients_built_with_the_same_seed_have_both_their_publishes_applied() {
    let fx = Fixture::start().await.unwrap();
    for transport in Transport::ALL {
        let channel = format!("same-seed-{transport}");
        let first = client(&fx, transport).seed(7).build().unwrap();
        let second = client(&fx, transport).seed(7).build().unwrap();
        let mut ids = Vec::new();
        for (n, c) in [&first, &second, &first, &second].into_iter().enumerate() {
            let id = tokio::time::timeout(DEADLINE, c.publish(&channel, format!("p{n}"))).await.unwrap().unwrap();
            ids.push(id);
        }
        let mut distinct = ids.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 4, "{transport}: every publish got its own event: {ids:?}");
        let head: resub::protocol::EventId = fx.head(&channel).parse().unwrap();
        assert_eq!(head.seq(), 4, "{transport}: the server applied all four");
        first.close().await;
        second.close().await;
    }
}
