//! Local senders that push pre-encoded frames as fast as the reader takes
//! them, so that the reader is the bottleneck. Each speaks just enough of the
//! protocol for a resub client: `welcome`, `subscribed` (live, head `e-0`)
//! and events `e-1` … `e-N` on channel `c`.

use std::sync::Arc;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// The JSON of event `n` (about 100 bytes).
pub fn event_json(n: u64) -> String {
    format!(
        r#"{{"type":"event","channel":"c","id":"e-{n}","data":"{{\"px\":101.25,\"qty\":3,\"side\":\"buy\",\"n\":{n}}}"}}"#
    )
}

const WELCOME: &str = r#"{"type":"welcome","heartbeat_ms":60000}"#;
const SUBSCRIBED: &str = r#"{"type":"subscribed","channel":"c","outcome":"live","head":"e-0"}"#;

/// A running sender; dropping it stops accepting.
pub struct Sender {
    pub url: String,
    task: JoinHandle<()>,
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn listen() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    (listener, url)
}

fn serve<F, Fut>(listener: TcpListener, each: F) -> JoinHandle<()>
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(each(stream));
        }
    })
}

/// Pre-encoded WebSocket event messages `e-1` … `e-n`.
pub fn ws_frames(n: u64) -> Arc<Vec<Utf8Bytes>> {
    Arc::new((1..=n).map(|i| Utf8Bytes::from(event_json(i))).collect())
}

/// WebSocket: after the first client message (the subscribe), every frame.
pub async fn websocket(frames: Arc<Vec<Utf8Bytes>>) -> Sender {
    let (listener, url) = listen().await;
    let task = serve(listener, move |stream| {
        let frames = frames.clone();
        async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else { return };
            if ws.send(Message::text(WELCOME)).await.is_err() {
                return;
            }
            let _subscribe = ws.next().await;
            let _ = ws.feed(Message::text(SUBSCRIBED)).await;
            for f in frames.iter() {
                if ws.feed(Message::Text(f.clone())).await.is_err() {
                    return;
                }
            }
            let _ = ws.flush().await;
            // Hold the connection until the reader goes away.
            while let Some(Ok(_)) = ws.next().await {}
        }
    });
    Sender { url, task }
}

/// The SSE body of events `e-1` … `e-n`, each with its `id:`.
pub fn sse_body(n: u64) -> Bytes {
    let mut body = String::with_capacity(n as usize * 130);
    for i in 1..=n {
        body.push_str("id: e-");
        body.push_str(&i.to_string());
        body.push_str("\ndata: ");
        body.push_str(&event_json(i));
        body.push_str("\n\n");
    }
    Bytes::from(body)
}

async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 || head.len() > 65_536 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// SSE: a request for channel `c` gets `welcome`, `subscribed` and the body;
/// any other gets `welcome` only. Streams stay open until the reader leaves.
pub async fn sse(body: Bytes) -> Sender {
    let (listener, url) = listen().await;
    let task = serve(listener, move |mut stream| {
        let body = body.clone();
        async move {
            let Some(head) = read_head(&mut stream).await else { return };
            let wants_c = head.lines().next().is_some_and(|l| l.contains("channel=c"));
            let mut start = String::from(
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n",
            );
            start.push_str(&format!("data: {WELCOME}\n\n"));
            if wants_c {
                start.push_str(&format!("data: {SUBSCRIBED}\n\n"));
            }
            if stream.write_all(start.as_bytes()).await.is_err() {
                return;
            }
            if wants_c && stream.write_all(&body).await.is_err() {
                return;
            }
            let mut sink = [0u8; 64];
            while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
        }
    });
    Sender { url, task }
}

/// Long polling with a fixed batch size: a poll from cursor `e-K` is answered
/// with events `e-(K+1)` … `e-(K+batch)` (none past `n`).
pub async fn poll(n: u64, batch: u64) -> Sender {
    let batches: Arc<Vec<Bytes>> = Arc::new(
        (0..n.div_ceil(batch))
            .map(|b| {
                let first = b * batch + 1;
                let last = ((b + 1) * batch).min(n);
                let (outcome, head) = if b == 0 { ("live", 0) } else { ("resumed", first - 1) };
                let mut body = format!(
                    r#"{{"frames":[{{"type":"welcome","heartbeat_ms":25000}},{{"type":"subscribed","channel":"c","outcome":"{outcome}","head":"e-{head}"}}"#
                );
                for i in first..=last {
                    body.push(',');
                    body.push_str(&event_json(i));
                }
                body.push_str("]}");
                Bytes::from(body)
            })
            .collect(),
    );
    let (listener, url) = listen().await;
    let task = serve(listener, move |mut stream| {
        let batches = batches.clone();
        async move {
            while let Some(head) = read_head(&mut stream).await {
                let line = head.lines().next().unwrap_or("");
                let cursor = line
                    .split_once("channel=c@e-")
                    .or_else(|| line.split_once("channel=c%40e-"))
                    .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next()?.parse::<u64>().ok());
                let index = cursor.map_or(0, |k| (k / batch) as usize);
                let body = batches.get(index).cloned().unwrap_or_else(|| {
                    Bytes::from(format!(
                        r#"{{"frames":[{{"type":"welcome","heartbeat_ms":25000}},{{"type":"subscribed","channel":"c","outcome":"resumed","head":"e-{n}"}}]}}"#
                    ))
                });
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                if stream.write_all(head.as_bytes()).await.is_err() || stream.write_all(&body).await.is_err() {
                    return;
                }
            }
        }
    });
    Sender { url, task }
}
