//! Readers of a stream of `n` events on channel `c`: resub on each transport
//! and the raw baselines. Each returns the seconds from its first event to
//! its `n`-th.

use std::time::Instant;

use eventsource_stream::Eventsource;
use futures::{SinkExt, StreamExt};
use resub::{Client, Message, Transport};
use serde::Deserialize;
use tokio_tungstenite::tungstenite::Message as Ws;

/// A frame as a raw reader decodes it: owned, like what resub hands out.
#[derive(Debug, Deserialize)]
#[allow(dead_code)]
pub struct RawFrame {
    #[serde(rename = "type")]
    pub kind: String,
    pub channel: Option<String>,
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: Option<String>,
}

/// Counts event frames; returns the seconds from the first to the `n`-th.
struct Clock {
    n: u64,
    seen: u64,
    start: Option<Instant>,
}

impl Clock {
    fn new(n: u64) -> Self {
        Self { n, seen: 0, start: None }
    }

    /// Records one event; `Some(secs)` at the last.
    fn tick(&mut self) -> Option<f64> {
        self.seen += 1;
        let start = *self.start.get_or_insert_with(Instant::now);
        (self.seen == self.n).then(|| start.elapsed().as_secs_f64())
    }

    fn event_frame(&mut self, text: &str) -> Option<f64> {
        let frame: RawFrame = serde_json::from_str(text).expect("a JSON frame");
        if frame.kind == "event" { self.tick() } else { None }
    }
}

pub async fn resub(url: &str, transport: Transport, n: u64) -> f64 {
    let client = Client::builder(url).transports(&[transport]).build().expect("client");
    let mut sub = client.subscribe("c").await.expect("subscribe");
    let mut clock = Clock::new(n);
    let secs = loop {
        match sub.next().await {
            Some(Ok(Message::Event(_))) => {
                if let Some(secs) = clock.tick() {
                    break secs;
                }
            }
            Some(Ok(_)) => {}
            other => panic!("resub {transport}: {other:?} after {} events", clock.seen),
        }
    };
    client.close().await;
    secs
}

pub async fn raw_websocket(url: &str, n: u64) -> f64 {
    let ws_url = format!("{}/ws", url.replacen("http", "ws", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.expect("connect");
    let _welcome = ws.next().await;
    ws.send(Ws::text(r#"{"type":"subscribe","channel":"c"}"#)).await.expect("subscribe");
    let mut clock = Clock::new(n);
    while let Some(msg) = ws.next().await {
        if let Ws::Text(text) = msg.expect("a message") {
            if let Some(secs) = clock.event_frame(text.as_str()) {
                return secs;
            }
        }
    }
    panic!("raw websocket ended after {} events", clock.seen);
}

/// reqwest's byte stream split into SSE blocks with memchr, `data` decoded
/// with serde_json.
pub async fn raw_sse(url: &str, n: u64) -> f64 {
    let resp = reqwest::get(format!("{url}/sse?channel=c")).await.expect("GET");
    let mut body = resp.bytes_stream();
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 16);
    let mut clock = Clock::new(n);
    let finder = memchr::memmem::Finder::new(b"\n\n");
    while let Some(chunk) = body.next().await {
        buf.extend_from_slice(&chunk.expect("a chunk"));
        let mut start = 0;
        while let Some(end) = finder.find(&buf[start..]) {
            let block = &buf[start..start + end];
            start += end + 2;
            for line in block.split(|b| *b == b'\n') {
                if let Some(data) = line.strip_prefix(b"data: ") {
                    let text = std::str::from_utf8(data).expect("UTF-8");
                    if let Some(secs) = clock.event_frame(text) {
                        return secs;
                    }
                }
            }
        }
        buf.drain(..start);
    }
    panic!("raw SSE ended after {} events", clock.seen);
}

/// eventsource-stream over reqwest's byte stream (what reqwest-eventsource
/// runs).
pub async fn eventsource_stream(url: &str, n: u64) -> f64 {
    let resp = reqwest::get(format!("{url}/sse?channel=c")).await.expect("GET");
    let mut events = resp.bytes_stream().eventsource();
    let mut clock = Clock::new(n);
    while let Some(ev) = events.next().await {
        if let Some(secs) = clock.event_frame(&ev.expect("an event").data) {
            return secs;
        }
    }
    panic!("eventsource-stream ended after {} events", clock.seen);
}

/// eventsource-client (LaunchDarkly) with its hyper transport.
pub async fn eventsource_client(url: &str, n: u64) -> f64 {
    use eventsource_client::{Client as _, ClientBuilder, ReconnectOptions, SSE};
    let transport = launchdarkly_sdk_transport::HyperTransport::builder().build_http().expect("transport");
    let client = ClientBuilder::for_url(&format!("{url}/sse?channel=c"))
        .expect("URL")
        .reconnect(ReconnectOptions::reconnect(false).build())
        .build_with_transport(transport);
    let mut stream = client.stream();
    let mut clock = Clock::new(n);
    while let Some(item) = stream.next().await {
        if let SSE::Event(ev) = item.expect("an item") {
            if let Some(secs) = clock.event_frame(&ev.data) {
                return secs;
            }
        }
    }
    panic!("eventsource-client ended after {} events", clock.seen);
}

/// Long polls with reqwest, each answer decoded with serde_json.
pub async fn raw_poll(url: &str, n: u64) -> f64 {
    #[derive(Deserialize)]
    struct Answer {
        frames: Vec<RawFrame>,
    }
    let http = reqwest::Client::new();
    let mut cursor: Option<String> = None;
    let mut clock = Clock::new(n);
    loop {
        let query = match &cursor {
            Some(c) => format!("channel=c@{c}"),
            None => "channel=c".to_owned(),
        };
        let body = http.get(format!("{url}/poll?{query}")).send().await.expect("GET").bytes().await.expect("body");
        let answer: Answer = serde_json::from_slice(&body).expect("a JSON answer");
        for frame in answer.frames {
            if frame.kind == "event" {
                cursor = frame.id;
                if let Some(secs) = clock.tick() {
                    return secs;
                }
            }
        }
    }
}
