#![cfg(target_arch = "wasm32")]
//! The browser driver in headless Chromium against the fixture binary, whose
//! address comes at compile time in `RESUB_FIXTURE_URL` (the test command
//! starts it). Every test runs under its own deadline, since one hung test
//! would stop the whole binary.

use std::future::Future;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use js_sys::Promise;
use resub::core::Backoff;
use resub::{Client, ConnectionState, Message, Subscription, Transport};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

const FIXTURE: &str = match option_env!("RESUB_FIXTURE_URL") {
    Some(url) => url,
    None => "http://127.0.0.1:8787",
};

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timer(callback: &js_sys::Function, ms: u32);
    #[wasm_bindgen(js_name = fetch)]
    fn fetch_with_init(url: &str, init: &web_sys::RequestInit) -> Promise;
}

async fn sleep_ms(ms: i32) {
    let p = Promise::new(&mut |resolve, _| {
        set_timer(&resolve, ms as u32);
    });
    let _ = JsFuture::from(p).await;
}

/// Runs `body`, failing the test if it takes longer than 30 s.
async fn deadline(body: impl Future<Output = ()>) {
    futures::select! {
        () = body.fuse() => {}
        () = sleep_ms(30_000).fuse() => panic!("test deadline passed"),
    }
}

/// `POST {FIXTURE}{path}` with `body`; returns the response text.
async fn post(path: &str, body: &str) -> String {
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    init.set_body(&JsValue::from_str(body));
    let resp: web_sys::Response =
        JsFuture::from(fetch_with_init(&format!("{FIXTURE}{path}"), &init)).await.expect("fetch").unchecked_into();
    assert!(resp.ok(), "POST {path}: {}", resp.status());
    JsFuture::from(resp.text().unwrap()).await.unwrap().as_string().unwrap()
}

async fn publish(channel: &str, data: &str) -> String {
    let body = post(&format!("/publish/{channel}"), data).await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["id"].as_str().unwrap().to_owned()
}

/// Every transport allowed, whatever an earlier test left.
async fn reset_fixture() {
    post("/control/websocket?enabled=true", "").await;
    post("/control/sse?enabled=true", "").await;
    post("/control/poll?enabled=true", "").await;
}

fn client(transports: &[Transport]) -> Client {
    Client::builder(FIXTURE)
        .transports(transports)
        .backoff(Backoff {
            base: Duration::from_millis(20),
            factor: 2.0,
            cap: Duration::from_millis(300),
            max_attempts: None,
        })
        .upgrade_probe(Some(Duration::from_millis(300)))
        .poll_hold(Duration::from_secs(2))
        .open_timeout(Duration::from_secs(3))
        .build()
        .unwrap()
}

fn unique(name: &str) -> String {
    format!("{name}-{}", (js_sys::Math::random() * 1e9) as u64)
}

async fn events(sub: &mut Subscription, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < n {
        match sub.next().await.expect("subscription open").expect("no error") {
            Message::Event(e) => out.push(e.data),
            Message::Resumed { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    out
}

fn numbers(r: std::ops::RangeInclusive<u32>) -> Vec<String> {
    r.map(|i| i.to_string()).collect()
}

async fn resumes_after_an_abrupt_drop(t: Transport) {
    reset_fixture().await;
    let ch = unique(t.name());
    let start = publish(&ch, "0").await;
    let c = client(&[t]);
    let mut sub = c.subscribe_from(&ch, &start).await.unwrap();
    for i in 1..=5 {
        publish(&ch, &i.to_string()).await;
    }
    assert_eq!(events(&mut sub, 5).await, numbers(1..=5));
    post("/control/drop", "").await;
    for i in 6..=10 {
        publish(&ch, &i.to_string()).await;
    }
    assert_eq!(events(&mut sub, 5).await, numbers(6..=10));
    publish(&ch, "end").await;
    assert_eq!(events(&mut sub, 1).await, ["end"], "nothing repeated before the marker");
    c.close().await;
}

#[wasm_bindgen_test]
async fn websocket_resumes_after_an_abrupt_drop_without_loss_or_duplicates() {
    deadline(resumes_after_an_abrupt_drop(Transport::WebSocket)).await;
}

#[wasm_bindgen_test]
async fn sse_resumes_after_an_abrupt_drop_without_loss_or_duplicates() {
    deadline(resumes_after_an_abrupt_drop(Transport::Sse)).await;
}

#[wasm_bindgen_test]
async fn long_polling_resumes_after_an_abrupt_drop_without_loss_or_duplicates() {
    deadline(resumes_after_an_abrupt_drop(Transport::LongPoll)).await;
}

#[wasm_bindgen_test]
async fn publishing_works_on_every_transport() {
    deadline(async {
        reset_fixture().await;
        for t in Transport::ALL {
            let ch = unique("pub");
            let start = publish(&ch, "0").await;
            let c = client(&[t]);
            let mut sub = c.subscribe_from(&ch, &start).await.unwrap();
            let id = c.publish(&ch, "from the browser").await.unwrap();
            match sub.next().await.unwrap().unwrap() {
                Message::Event(e) => assert_eq!((e.id, e.data.as_str()), (id, "from the browser")),
                Message::Resumed { .. } => {
                    assert_eq!(events(&mut sub, 1).await, ["from the browser"]);
                }
                other => panic!("{other:?}"),
            }
            c.close().await;
        }
    })
    .await;
}

#[wasm_bindgen_test]
async fn falls_back_when_websocket_is_refused_and_returns_when_allowed() {
    deadline(async {
        reset_fixture().await;
        post("/control/websocket?enabled=false", "").await;
        let ch = unique("fallback");
        let start = publish(&ch, "0").await;
        let c = client(&Transport::ALL);
        let mut states = c.states();
        let mut sub = c.subscribe_from(&ch, &start).await.unwrap();
        loop {
            match states.next().await.unwrap() {
                ConnectionState::Connected { transport: Transport::Sse, fallback } => {
                    assert_eq!(fallback.unwrap().from, Transport::WebSocket);
                    break;
                }
                ConnectionState::Connected { transport, .. } => panic!("connected via {transport}"),
                _ => {}
            }
        }
        publish(&ch, "1").await;
        assert_eq!(events(&mut sub, 1).await, ["1"]);
        post("/control/websocket?enabled=true", "").await;
        loop {
            if let ConnectionState::Connected { transport: Transport::WebSocket, .. } = states.next().await.unwrap() {
                break;
            }
        }
        publish(&ch, "2").await;
        assert_eq!(events(&mut sub, 1).await, ["2"], "nothing lost or repeated at the switches");
        c.close().await;
    })
    .await;
}

#[wasm_bindgen_test]
async fn closing_ends_the_subscription() {
    deadline(async {
        reset_fixture().await;
        let c = client(&[Transport::WebSocket]);
        let mut sub = c.subscribe(&unique("close")).await.unwrap();
        c.close().await;
        assert!(sub.next().await.is_none());
    })
    .await;
}
