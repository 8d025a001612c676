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

mod chaos_check;

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
                Message::Event(e) => assert_eq!((e.id.as_str(), e.data.as_str()), (id.as_str(), "from the browser")),
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
                ConnectionState::Connected { transport: Transport::Sse, fallback, .. } => {
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

/// `GET {FIXTURE}{path}` as JSON.
async fn get_json(path: &str) -> serde_json::Value {
    let init = web_sys::RequestInit::new();
    let resp: web_sys::Response =
        JsFuture::from(fetch_with_init(&format!("{FIXTURE}{path}"), &init)).await.expect("fetch").unchecked_into();
    assert!(resp.ok(), "GET {path}: {}", resp.status());
    let text = JsFuture::from(resp.text().unwrap()).await.unwrap().as_string().unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The chaos run of `tests/chaos.rs`, smaller, through the browser driver:
/// the fixture publishes over three channels while it injects a seeded fault
/// schedule; every event arrives once and in order except across a typed
/// reset, and resets never outnumber the faults that cause them.
async fn chaos(transports: &[Transport], refusals: &[&str], seed: u64) {
    use chaos_check::Track;
    use std::collections::HashMap;
    const EVENTS: u64 = 3_000;
    const FAULTS: u64 = 30;
    reset_fixture().await;
    post("/control/unavailable?enabled=false", "").await;
    let mut tracks: HashMap<String, Track> = HashMap::new();
    let mut subs = futures::stream::SelectAll::new();
    let c = client(transports);
    let channels: Vec<String> = (0..3).map(|i| unique(&format!("chaos{i}"))).collect();
    for ch in &channels {
        let start = publish(ch, "start").await;
        tracks.insert(ch.clone(), Track::new(&start));
        let name = ch.clone();
        subs.push(c.subscribe_from(ch, &start).await.unwrap().map(move |m| (name.clone(), m)).boxed_local());
    }
    let mut kinds = vec!["drop", "stall", "unavailable", "truncate", "epoch"];
    kinds.extend_from_slice(refusals);
    let plan = serde_json::json!({
        "seed": seed, "events": EVENTS, "faults": FAULTS, "channels": channels, "rate": 1_000, "kinds": kinds,
    });
    post("/control/chaos", &plan.to_string()).await;
    let mut ends: Option<serde_json::Value> = None;
    let mut report = serde_json::Value::Null;
    loop {
        if let Some(ends) = &ends {
            let done =
                ends.as_object().unwrap().iter().all(|(ch, end)| {
                    tracks[ch].at_end(end["head"].as_str().unwrap(), end["published"].as_u64().unwrap())
                });
            if done {
                break;
            }
        }
        futures::select! {
            item = subs.next() => match item {
                Some((ch, Ok(msg))) => {
                    if let Err(broken) = tracks.get_mut(&ch).unwrap().see(&ch, msg) {
                        panic!("the promise broke (seed {seed}): {broken}");
                    }
                }
                Some((ch, Err(e))) => panic!("{ch}: subscription failed: {e}"),
                None => panic!("every subscription ended"),
            },
            // The run's end is known from its report; look every 200 ms.
            () = sleep_ms(200).fuse() => {
                if ends.is_none() {
                    report = get_json("/control/chaos").await;
                    if report["done"] == true {
                        ends = Some(report["channels"].clone());
                    }
                }
            }
        }
    }
    let faults = report["faults"].as_array().unwrap();
    assert_eq!(faults.len() as u64, FAULTS);
    for (ch, t) in &tracks {
        for (kind, n) in &t.resets {
            let injected = faults.iter().filter(|f| f["kind"] == kind.as_str() && f["channel"] == ch.as_str()).count();
            assert!(*n as usize <= injected, "{ch}: {n} {kind} resets for {injected} such faults (seed {seed})");
        }
    }
    let delivered: u64 = tracks.values().map(|t| t.events).sum();
    console_log!("chaos {transports:?}: seed {seed}, {delivered} delivered, {} faults", faults.len());
    c.close().await;
    reset_fixture().await;
}

/// Runs `body`, failing the test if it takes longer than `ms`.
async fn deadline_ms(ms: i32, body: impl Future<Output = ()>) {
    futures::select! {
        () = body.fuse() => {}
        () = sleep_ms(ms).fuse() => panic!("test deadline passed"),
    }
}

fn chaos_seed() -> u64 {
    (js_sys::Math::random() * 1e15) as u64
}

#[wasm_bindgen_test]
async fn chaos_websocket_forced_keeps_the_promise() {
    deadline_ms(90_000, chaos(&[Transport::WebSocket], &["refuse_websocket"], chaos_seed())).await;
}

#[wasm_bindgen_test]
async fn chaos_sse_forced_keeps_the_promise() {
    deadline_ms(90_000, chaos(&[Transport::Sse], &["refuse_sse"], chaos_seed())).await;
}

#[wasm_bindgen_test]
async fn chaos_long_polling_forced_keeps_the_promise() {
    deadline_ms(90_000, chaos(&[Transport::LongPoll], &["refuse_poll"], chaos_seed())).await;
}

#[wasm_bindgen_test]
async fn chaos_with_automatic_fallback_keeps_the_promise() {
    let refusals = ["refuse_websocket", "refuse_sse", "refuse_poll"];
    deadline_ms(90_000, chaos(&Transport::ALL, &refusals, chaos_seed())).await;
}

/// A browser socket cannot be paused: when the application stops reading,
/// the driver closes the connection once its queue is full, and resumes from
/// the cursor when the application reads again: every event arrives, once,
/// in order, over a new connection.
async fn paused_reader(t: Transport) {
    use chaos_check::Track;
    const EVENTS: u64 = 5_000;
    reset_fixture().await;
    let ch = unique("paused");
    let start = publish(&ch, "start").await;
    let c = client(&[t]);
    let mut states = c.states();
    let mut sub = c.subscribe_from(&ch, &start).await.unwrap();
    while !matches!(states.next().await, Some(ConnectionState::Connected { .. })) {}
    let plan = serde_json::json!({
        "seed": 1, "events": EVENTS, "faults": 0, "channels": [ch], "rate": 1_000_000, "kinds": [],
    });
    post("/control/chaos", &plan.to_string()).await;
    let end = loop {
        // The run's end is known from its report; look every 100 ms.
        sleep_ms(100).await;
        let report = get_json("/control/chaos").await;
        if report["done"] == true {
            break report["channels"][&ch].clone();
        }
    };
    // Only now does the application read.
    let mut track = Track::new(&start);
    while !track.at_end(end["head"].as_str().unwrap(), end["published"].as_u64().unwrap()) {
        let msg = sub.next().await.expect("open").expect("no error");
        track.see(&ch, msg).unwrap_or_else(|broken| panic!("{broken}"));
    }
    assert_eq!(track.events, EVENTS, "every event, no reset: the server still held them");
    let stats = c.stats();
    assert!(stats.connections >= 2, "the full queue closed the connection: {stats:?}");
    c.close().await;
}

#[wasm_bindgen_test]
async fn websocket_paused_reader_is_dropped_then_resumed_without_loss() {
    deadline(paused_reader(Transport::WebSocket)).await;
}

#[wasm_bindgen_test]
async fn sse_paused_reader_is_dropped_then_resumed_without_loss() {
    deadline(paused_reader(Transport::Sse)).await;
}

/// An HTTP publish answered with more than 64 KiB (streamed, with no
/// `Content-Length`) is not read whole: that attempt fails, the publish goes
/// again with the same key, and the server applies it once.
#[wasm_bindgen_test]
async fn an_oversized_publish_answer_is_not_read_and_the_publish_is_retried_once() {
    deadline(async {
        reset_fixture().await;
        for t in [Transport::Sse, Transport::LongPoll] {
            let ch = unique("big-answer");
            let c = client(&[t]);
            let mut states = c.states();
            while !matches!(states.next().await, Some(ConnectionState::Connected { .. })) {}
            let before = get_json("/control/stats").await["publish_requests"].as_u64().unwrap();
            post("/control/oversize?what=publish&count=1&bytes=8388608", "").await;
            let id = c.publish(&ch, "x").await.unwrap();
            assert!(id.ends_with("-1"), "{t}: applied once: {id}");
            let after = get_json("/control/stats").await["publish_requests"].as_u64().unwrap();
            assert_eq!(after - before, 2, "{t}: sent again after the oversized answer");
            c.close().await;
        }
    })
    .await;
}

/// A poll answer over the client's bound (16 times the frame limit),
/// streamed with no `Content-Length`, is given up at the bound, not read
/// whole, and stops the client with `frame_too_large` (resuming would get
/// the same answer).
#[wasm_bindgen_test]
async fn an_oversized_poll_answer_stops_the_client_with_frame_too_large() {
    deadline(async {
        reset_fixture().await;
        // 1.2 GB: more than the longest string a browser can make, so that
        // an answer read whole fails as a lost connection rather than as
        // too large; given up at the bound, it costs 16 KiB.
        post("/control/oversize?what=poll&count=1&bytes=1200000000", "").await;
        let c = Client::builder(FIXTURE).transports(&[Transport::LongPoll]).max_frame_bytes(1024).build().unwrap();
        // Listened to before the client's loop first runs: none of its states is missed.
        let mut states = c.states();
        loop {
            match states.next().await {
                Some(ConnectionState::Closed { error: Some(e) }) => {
                    assert_eq!(e.code(), "frame_too_large", "{e}");
                    break;
                }
                Some(ConnectionState::Closed { error: None }) | None => panic!("closed without the error"),
                Some(_) => {}
            }
        }
        post("/control/oversize?what=poll&count=0&bytes=0", "").await;
    })
    .await;
}

/// A cursor ahead of the channel's head in its epoch: a typed reset to the
/// head, then every event published after it, on every transport.
#[wasm_bindgen_test]
async fn a_cursor_ahead_of_the_head_resets_to_it_and_every_later_event_arrives() {
    deadline(async {
        reset_fixture().await;
        for t in Transport::ALL {
            let ch = unique("ahead");
            let head = publish(&ch, "0").await;
            let epoch = head.rsplit_once('-').unwrap().0;
            let c = client(&[t]);
            let mut sub = c.subscribe_from(&ch, &format!("{epoch}-99")).await.unwrap();
            match sub.next().await.unwrap().unwrap() {
                Message::Reset { head: h, reason, .. } => {
                    assert_eq!((reason.as_str(), h.as_str()), ("unknown_cursor", head.as_str()), "{t}")
                }
                other => panic!("{t}: {other:?}"),
            }
            for i in 1..=29 {
                publish(&ch, &i.to_string()).await;
            }
            assert_eq!(events(&mut sub, 29).await, numbers(1..=29), "{t}");
            c.close().await;
        }
    })
    .await;
}
