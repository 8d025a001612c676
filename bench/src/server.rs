//! The server part: `resub-server` beside a hand-written axum server that
//! fans events out with `tokio::sync::broadcast`, in the same run.
//!
//! - Fan-out: one publisher in the server's process, 1,000 WebSocket
//!   subscribers; deliveries per second from the first publish until every
//!   subscriber has every event.
//! - Latency: the same fan-out at a fixed rate; publish → delivery p50/p99
//!   over every delivery.
//! - Memory: heap per idle connection on each transport, 10,000 connections
//!   held by a child process (so the server's process holds only its own
//!   sockets); only the server's threads are counted.
//! - Two nodes sharing Redis: the fan-out with the subscribers split over
//!   two `resub-server` nodes, published on one.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::{SinkExt, StreamExt};
use resub_server::{Config, Hub, Limits, RedisConfig, Server};
use tokio::io::AsyncBufReadExt;
use tokio::sync::{Notify, broadcast};
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::alloc;
use crate::report::{self, Samples, int, ratio, table};

const CHANNEL: &str = "fan";
/// Heartbeats in the memory measurement: idle connections are measured after
/// [`IDLE_HEARTBEATS`] of them.
const IDLE_HEARTBEAT: Duration = Duration::from_millis(100);
const IDLE_HEARTBEATS: u32 = 10;
/// About 100 bytes of data per event.
const PAD: usize = 80;

/// A clock shared by publishers and subscribers (one process).
fn nanos(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

fn payload(base: Instant) -> String {
    format!("{}|{}", nanos(base), "x".repeat(PAD))
}

/// The hand-written baseline: what a team would write for the same job with
/// axum and `tokio::sync::broadcast`. No resume, no auth, no limits.
struct Baseline {
    tx: broadcast::Sender<Utf8Bytes>,
    next: AtomicU64,
    open: AtomicUsize,
}

impl Baseline {
    fn publish(&self, data: &str) {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        // The frame resub sends, field for field; `data` is escaped as JSON.
        let data = serde_json::to_string(data).expect("a string encodes");
        let json = format!(r#"{{"type":"event","channel":"{CHANNEL}","id":"b-{id}","data":{data}}}"#);
        let _ = self.tx.send(Utf8Bytes::from(json));
    }
}

/// Counts an open connection while it lives.
struct Open(Arc<Baseline>);

impl Open {
    fn new(b: &Arc<Baseline>) -> Self {
        b.open.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(b))
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

fn baseline_router(b: Arc<Baseline>) -> Router {
    Router::new().route("/ws", get(base_ws)).route("/sse", get(base_sse)).route("/poll", get(base_poll)).with_state(b)
}

async fn base_ws(State(b): State<Arc<Baseline>>, upgrade: WebSocketUpgrade) -> Response {
    // The same buffer sizes as resub-server.
    upgrade.read_buffer_size(4 * 1024).write_buffer_size(16 * 1024).on_upgrade(move |mut ws: WebSocket| async move {
        let _open = Open::new(&b);
        let mut rx = b.tx.subscribe();
        if ws.send(Message::Text("ready".into())).await.is_err() {
            return;
        }
        loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Ok(text) => {
                        // What else is ready goes in the same write, as
                        // resub-server does.
                        if ws.feed(Message::Text(text)).await.is_err() { return }
                        for _ in 1..64 {
                            let Ok(text) = rx.try_recv() else { break };
                            if ws.feed(Message::Text(text)).await.is_err() { return }
                        }
                        if ws.flush().await.is_err() { return }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                },
                msg = ws.recv() => if !matches!(msg, Some(Ok(_))) { return },
            }
        }
    })
}

async fn base_sse(State(b): State<Arc<Baseline>>) -> Response {
    let open = Open::new(&b);
    let rx = b.tx.subscribe();
    let stream = futures::stream::unfold((rx, open), |(mut rx, open)| async move {
        loop {
            match rx.recv().await {
                Ok(text) => {
                    let chunk = Bytes::from(format!("data: {}\n\n", text.as_str()));
                    return Some((Ok::<_, std::io::Error>(chunk), (rx, open)));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return None,
            }
        }
    });
    ([("content-type", "text/event-stream")], Body::from_stream(stream)).into_response()
}

async fn base_poll(State(b): State<Arc<Baseline>>) -> Response {
    let _open = Open::new(&b);
    let mut rx = b.tx.subscribe();
    match tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
        Ok(Ok(text)) => format!(r#"{{"frames":[{}]}}"#, text.as_str()).into_response(),
        _ => r#"{"frames":[]}"#.into_response(),
    }
}

/// A server under test.
enum Node {
    Resub(Server),
    Base { b: Arc<Baseline>, url: String, task: tokio::task::JoinHandle<()> },
}

impl Node {
    async fn resub(cfg: Config) -> Node {
        let hub = Hub::new(cfg).await.expect("hub");
        let app = Server::app(&hub);
        Node::Resub(Server::start("127.0.0.1:0".parse().unwrap(), hub, app).await.expect("server"))
    }

    async fn baseline(capacity: usize) -> Node {
        let (tx, _) = broadcast::channel(capacity.max(1));
        let b = Arc::new(Baseline { tx, next: AtomicU64::new(0), open: AtomicUsize::new(0) });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = baseline_router(Arc::clone(&b));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Node::Base { b, url, task }
    }

    fn url(&self) -> String {
        match self {
            Node::Resub(s) => s.url(),
            Node::Base { url, .. } => url.clone(),
        }
    }

    fn is_resub(&self) -> bool {
        matches!(self, Node::Resub(_))
    }

    async fn publish(&self, data: &str) {
        match self {
            Node::Resub(s) => {
                s.hub().publish(CHANNEL, data).await.expect("publish");
            }
            Node::Base { b, .. } => b.publish(data),
        }
    }

    fn open(&self) -> usize {
        match self {
            Node::Resub(s) => s.hub().stats().connections_open,
            Node::Base { b, .. } => b.open.load(Ordering::Relaxed),
        }
    }

    async fn stop(self) {
        match self {
            Node::Resub(s) => s.stop(Duration::from_secs(2)).await,
            Node::Base { task, .. } => task.abort(),
        }
    }
}

fn ws_url(http: &str) -> String {
    format!("{}/ws", http.replacen("http", "ws", 1))
}

/// Counters shared by the subscribers of one run.
#[derive(Default)]
struct Progress {
    ready: AtomicUsize,
    done: AtomicUsize,
    changed: Notify,
}

impl Progress {
    async fn until(&self, what: &str, count: impl Fn(&Self) -> usize, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let notified = self.changed.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if count(self) >= n {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "timed out waiting for {what}");
            let _ = tokio::time::timeout(left, notified).await;
        }
    }

    fn bump(&self, which: &AtomicUsize) {
        which.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
    }
}

/// One WebSocket subscriber: subscribes (resub) or waits for `ready`
/// (baseline), then counts `n` events; with `base`, keeps each event's
/// publish → delivery latency in seconds.
/// The subscribers' WebSocket settings: tungstenite zeroes its whole read
/// buffer (128 KiB by default) on every read, which on 1,000 readers would
/// take more CPU than either server.
fn client_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(16 * 1024)
}

async fn subscriber(url: String, resub: bool, n: u64, p: Arc<Progress>, base: Option<Instant>) -> Vec<f64> {
    let (mut ws, _) =
        tokio_tungstenite::connect_async_with_config(url.as_str(), Some(client_config()), true).await.expect("connect");
    if resub {
        let _welcome = ws.next().await;
        ws.send(Ws::text(format!(r#"{{"type":"subscribe","channel":"{CHANNEL}"}}"#))).await.expect("subscribe");
        loop {
            let msg = ws.next().await.expect("open").expect("read");
            if msg.to_text().is_ok_and(|t| t.contains(r#""type":"subscribed""#)) {
                break;
            }
        }
    } else {
        let _ready = ws.next().await;
    }
    p.bump(&p.ready);
    let mut lat = Vec::new();
    let mut got = 0;
    while got < n {
        let Some(Ok(Ws::Text(text))) = ws.next().await else { panic!("the subscription ended early") };
        if !text.as_str().starts_with(r#"{"type":"event""#) {
            continue;
        }
        got += 1;
        if let Some(base) = base {
            let now = nanos(base);
            let data = text.as_str().split(r#""data":""#).nth(1).expect("data");
            let sent: u64 = data.split('|').next().and_then(|s| s.parse().ok()).expect("a timestamp");
            lat.push(now.saturating_sub(sent) as f64 / 1e9);
        }
    }
    p.bump(&p.done);
    lat
}

/// Connects `subs` subscribers spread over `nodes` (on the client runtime),
/// publishes `n` events on `nodes[0]` (`rate`: per second, or as fast as the
/// publisher goes), and returns the seconds from the first publish until
/// every subscriber had every event, and the latencies when `rate` is set.
async fn fan_out(
    clients: &tokio::runtime::Runtime,
    nodes: &[&Node],
    subs: usize,
    n: u64,
    rate: Option<u32>,
) -> (f64, Vec<f64>) {
    let p = Arc::new(Progress::default());
    let clock = Instant::now();
    let mut tasks = Vec::with_capacity(subs);
    for i in 0..subs {
        let node = nodes[i % nodes.len()];
        let base = rate.map(|_| clock);
        tasks.push(clients.spawn(subscriber(ws_url(&node.url()), node.is_resub(), n, Arc::clone(&p), base)));
    }
    p.until("every subscriber to be subscribed", |p| p.ready.load(Ordering::SeqCst), subs).await;
    let start = Instant::now();
    for i in 0..n {
        if let Some(rate) = rate {
            let due = start + Duration::from_secs_f64(i as f64 / f64::from(rate));
            tokio::time::sleep_until(due.into()).await;
        }
        nodes[0].publish(&payload(clock)).await;
    }
    p.until("every subscriber to have every event", |p| p.done.load(Ordering::SeqCst), subs).await;
    let secs = start.elapsed().as_secs_f64();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("subscriber"));
    }
    (secs, lat)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn fan_config() -> Config {
    Config {
        heartbeat: Duration::from_secs(30),
        limits: Limits { max_connections: 1_000_000, ..Limits::default() },
        ..Config::default()
    }
}

/// The server part.
pub async fn run(out: &Path, subs: usize, n: u64, idle: usize, rate: u32, rounds: usize, redis: Option<String>) {
    let clients = alloc::uncounted_runtime(1);
    let mut text = String::from("## Server\n\n");

    // Fan-out throughput.
    let (mut ours, mut base) = (Samples::default(), Samples::default());
    for round in 0..rounds {
        let node = Node::resub(fan_config()).await;
        let (secs, _) = fan_out(&clients, &[&node], subs, n, None).await;
        node.stop().await;
        ours.push((n as f64 * subs as f64) / secs);
        let node = Node::baseline(n as usize).await;
        let (secs, _) = fan_out(&clients, &[&node], subs, n, None).await;
        node.stop().await;
        base.push((n as f64 * subs as f64) / secs);
        eprintln!("  fan-out round {round}: resub {:.0}/s, baseline {:.0}/s", ours.0[round], base.0[round]);
    }
    let fan_ratio = ours.median() / base.median();
    text += &format!(
        "### Fan-out\n\n{n} events of about 100 bytes published in the server's process on one channel with \
         {subs} WebSocket subscribers (tokio-tungstenite clients in the same process, on a runtime of their \
         own); deliveries per second from the first publish until every subscriber has every event, median \
         of {rounds} alternating rounds (min–max). The baseline is a hand-written axum server fanning out \
         with `tokio::sync::broadcast` (no resume, no auth, no limits), writing what is ready in one flush and with \
         the same WebSocket buffer sizes as resub-server. Target: resub ≥ 0.7× the baseline.\n\n"
    );
    text += &table(
        &["server", "deliveries/s", "ratio"],
        &[
            vec!["axum + broadcast".into(), base.show(int), ratio(1.0)],
            vec!["resub-server".into(), ours.show(int), ratio(fan_ratio)],
        ],
    );
    text += &format!("\nresub / baseline: **{}** ({}).\n\n", ratio(fan_ratio), verdict(fan_ratio >= 0.7));

    // Latency at a fixed rate.
    let lat_n = u64::from(rate) * 3;
    let mut rows = Vec::new();
    for resub in [false, true] {
        let node = if resub { Node::resub(fan_config()).await } else { Node::baseline(lat_n as usize).await };
        let (_, mut lat) = fan_out(&clients, &[&node], subs, lat_n, Some(rate)).await;
        node.stop().await;
        lat.sort_by(f64::total_cmp);
        let name = if resub { "resub-server" } else { "axum + broadcast" };
        rows.push((name, percentile(&lat, 0.5), percentile(&lat, 0.99), lat.len()));
    }
    text += &format!(
        "### Publish → delivery latency under fan-out\n\n{rate} events per second for 3 s to the same {subs} \
         subscribers; percentiles over every delivery (the clock is shared: one process).\n\n"
    );
    text += &table(
        &["server", "p50", "p99", "deliveries", "p50 ratio"],
        &rows
            .iter()
            .map(|(name, p50, p99, count)| {
                vec![(*name).into(), report::ms(*p50), report::ms(*p99), int(*count as f64), ratio(*p50 / rows[0].1)]
            })
            .collect::<Vec<_>>(),
    );
    text.push('\n');

    // Two nodes sharing Redis.
    match redis {
        Some(url) => {
            let mut two = Samples::default();
            for round in 0..rounds {
                let prefix = format!("bench-{}-{round}", std::process::id());
                let cfg =
                    || Config { redis: Some(RedisConfig { url: url.clone(), prefix: prefix.clone() }), ..fan_config() };
                let a = Node::resub(cfg()).await;
                let b = Node::resub(cfg()).await;
                let (secs, _) = fan_out(&clients, &[&a, &b], subs, n, None).await;
                a.stop().await;
                b.stop().await;
                two.push((n as f64 * subs as f64) / secs);
                eprintln!("  two nodes round {round}: {:.0}/s", two.0[round]);
            }
            text += &format!(
                "### Two nodes sharing Redis\n\nThe fan-out above with the {subs} subscribers split over two \
                 resub-server nodes on one local Redis, published on the first; same events. The publisher awaits \
                 each publish, which on Redis is a round trip (the id comes from Redis), so this figure is bound \
                 by one publisher's round trips, not by delivery.\n\n"
            );
            text += &table(
                &["setup", "deliveries/s", "ratio to one node"],
                &[
                    vec!["one node".into(), ours.show(int), ratio(1.0)],
                    vec!["two nodes on Redis".into(), two.show(int), ratio(two.median() / ours.median())],
                ],
            );
            text.push('\n');
        }
        None => text += "### Two nodes sharing Redis\n\nNot measured: no redis-server (`--redis`).\n\n",
    }

    // Memory per idle connection.
    alloc::start_counting();
    let mut rows = Vec::new();
    for transport in ["ws", "sse", "poll"] {
        let mut per = [Samples::default(), Samples::default()];
        for _ in 0..rounds.min(2) {
            for (k, resub) in [true, false].into_iter().enumerate() {
                let cfg = Config { heartbeat: IDLE_HEARTBEAT, poll_hold: Duration::from_secs(60), ..fan_config() };
                let node = if resub { Node::resub(cfg).await } else { Node::baseline(16).await };
                per[k].push(idle_memory(&node, transport, idle).await);
                node.stop().await;
            }
        }
        eprintln!("  memory {transport}: resub {:.0} B, baseline {:.0} B", per[0].median(), per[1].median());
        rows.push(vec![
            transport.to_owned(),
            per[0].show(|b| format!("{} B", int(b))),
            per[1].show(|b| format!("{} B", int(b))),
            ratio(per[0].median() / per[1].median()),
        ]);
    }
    text += &format!(
        "### Server memory per idle connection\n\n{idle} connections held by a child process, one subscription \
         each, measured after {IDLE_HEARTBEATS} heartbeats of {} ms (long polls: held); the server's heap \
         (counting allocator, server threads only) divided by the connections.\n\n",
        IDLE_HEARTBEAT.as_millis()
    );
    text += &table(&["transport", "resub-server", "axum + broadcast", "ratio"], &rows);
    text.push('\n');
    report::write(out, "server", &text);
    clients.shutdown_background();
}

fn verdict(met: bool) -> &'static str {
    if met { "target met" } else { "target not met" }
}

/// Heap bytes per idle connection of `transport` on `node`: `count`
/// connections are opened by a child process (`resub-bench idle-clients`).
async fn idle_memory(node: &Node, transport: &str, count: usize) -> f64 {
    let before = alloc::live();
    let exe = std::env::current_exe().expect("the bench binary");
    let head = match node {
        Node::Resub(s) => s.hub().head(CHANNEL).await.expect("head"),
        Node::Base { .. } => String::new(),
    };
    let mut child = tokio::process::Command::new(exe)
        .args(["idle-clients", "--url", &node.url(), "--transport", transport, "--count", &count.to_string()])
        .args(["--cursor", &head])
        .arg(if node.is_resub() { "--resub" } else { "--baseline" })
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the client process");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(300), lines.next_line()).await.expect("in time");
    assert_eq!(line.ok().flatten().as_deref(), Some("ready"), "the client process opened its connections");
    let deadline = Instant::now() + Duration::from_secs(60);
    while node.open() < count {
        assert!(Instant::now() < deadline, "the server holds {} of {count} connections", node.open());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Heartbeats flow (a benchmark's wait: nothing is synchronised on it).
    tokio::time::sleep(IDLE_HEARTBEAT * IDLE_HEARTBEATS).await;
    let after = alloc::live();
    assert!(node.open() >= count, "every connection still open");
    drop(child.stdin.take());
    let _ = child.wait().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while node.open() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (after - before) as f64 / count as f64
}

/// The child process of the memory measurement: opens `count` idle
/// connections, prints `ready`, and holds them until stdin closes.
pub async fn idle_clients(url: &str, transport: &str, count: usize, cursor: &str, resub: bool) {
    let host = url.strip_prefix("http://").expect("http url").to_owned();
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        match transport {
            "ws" => {
                let (mut ws, _) =
                    tokio_tungstenite::connect_async_with_config(ws_url(url), Some(client_config()), true)
                        .await
                        .expect("connect");
                if resub {
                    let _welcome = ws.next().await;
                    ws.send(Ws::text(format!(r#"{{"type":"subscribe","channel":"{CHANNEL}"}}"#))).await.expect("send");
                }
                let _first = ws.next().await;
                held.push(tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} }));
            }
            path => {
                let query = match path {
                    "sse" => format!("/sse?channel={CHANNEL}"),
                    _ => format!("/poll?channel={CHANNEL}@{cursor}&timeout_ms=60000"),
                };
                let mut s = tokio::net::TcpStream::connect(host.as_str()).await.expect("connect");
                let req = format!("GET {query} HTTP/1.1\r\nhost: {host}\r\n\r\n");
                tokio::io::AsyncWriteExt::write_all(&mut s, req.as_bytes()).await.expect("request");
                held.push(tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    while let Ok(n) = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await {
                        if n == 0 {
                            break;
                        }
                    }
                }));
            }
        }
    }
    println!("ready");
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(_)) = stdin.next_line().await {}
    for t in held {
        t.abort();
    }
}
