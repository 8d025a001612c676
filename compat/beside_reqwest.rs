//! A service that depends on resub and on reqwest of its own, built twice:
//! with reqwest's default features and with `default-features = false`.
//!
//! Cargo builds one reqwest for the whole program, with the union of every
//! crate's features, so a feature resub turned on would reach this program's
//! reqwest. The program checks that its reqwest builds a client as it would
//! without resub (`reqwest::Client::new()` once panicked here), that it
//! publishes with it, and that resub receives those events on every transport
//! and publishes through its own HTTP client.
//!
//! Usage: `beside-reqwest-… URL` (a resub server, such as `resub-fixture`).

use std::time::Duration;

use futures::StreamExt;
use resub::{Client, Message, Transport};

/// How long one step may take before the program gives up.
const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::main]
async fn main() {
    let url = std::env::args().nth(1).expect("usage: beside-reqwest URL");
    let url = url.trim_end_matches('/');
    let app_http = reqwest::Client::new();
    for transport in [Transport::WebSocket, Transport::Sse, Transport::LongPoll] {
        let channel = format!("beside-reqwest-{}-{transport:?}", std::process::id());
        let first = publish(&app_http, url, &channel, "0").await;
        let client = Client::builder(url).transports(&[transport]).build().expect("a resub client");
        let mut sub = client.subscribe_from(&channel, &first).await.expect("subscribed");
        for n in 1..=3 {
            publish(&app_http, url, &channel, &n.to_string()).await;
        }
        let id = tokio::time::timeout(DEADLINE, client.publish(&channel, "4")).await.expect("in time");
        id.expect("resub's publish");
        let mut got = Vec::new();
        while got.len() < 4 {
            let next = tokio::time::timeout(DEADLINE, sub.next()).await.expect("every event in time");
            match next.expect("the subscription goes on").expect("no error") {
                Message::Event(e) => got.push(e.data),
                Message::Resumed { .. } => {}
                other => panic!("{transport:?}: unexpected {other:?}"),
            }
        }
        assert_eq!(got, ["1", "2", "3", "4"], "{transport:?}");
        client.close().await;
        println!("{transport:?}: the application's reqwest published 3 events, resub received them and published one");
    }
}

/// Publishes `data` with the application's reqwest; the event's id.
async fn publish(http: &reqwest::Client, url: &str, channel: &str, data: &str) -> String {
    let send = http.post(format!("{url}/publish/{channel}")).body(data.to_string()).send();
    let resp = tokio::time::timeout(DEADLINE, send).await.expect("in time").expect("the application's publish");
    assert!(resp.status().is_success(), "publish answered {}", resp.status());
    let body: serde_json::Value = serde_json::from_slice(&resp.bytes().await.expect("an answer")).expect("JSON");
    body["id"].as_str().expect("an id").to_string()
}
