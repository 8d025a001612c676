//! The benchmark parts. Each alternates resub and its baseline round by
//! round, so that drift in the machine's load hits both alike.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use resub::core::Backoff;
use resub::{Client, ConnectionState, Message, Transport};
use resub_fixture::{Fixture, FixtureConfig};
use tokio_tungstenite::tungstenite::Message as Ws;

use crate::alloc;
use crate::readers;
use crate::report::{self, Samples, int, ratio, table};
use crate::senders;

fn rate_row(name: &str, n: u64, secs: &Samples, baseline: f64) -> Vec<String> {
    let rates = Samples(secs.0.iter().map(|s| (n - 1) as f64 / s).collect());
    vec![name.to_owned(), rates.show(int), ratio(rates.median() / baseline)]
}

fn median_rate(n: u64, secs: &Samples) -> f64 {
    (n - 1) as f64 / secs.median()
}

/// WebSocket, SSE and long polling: events per second, reader-bound.
pub async fn throughput(out: &Path, n: u64, rounds: usize, current_thread: bool) {
    let rt = if current_thread { "current-thread runtime" } else { "multi-thread runtime, 2 workers" };
    eprintln!("throughput: encoding {n} events");
    let server = alloc::server_runtime(1);
    let frames = senders::ws_frames(n);
    let ws = server.spawn(senders::websocket(frames)).await.expect("sender");
    let (mut raw, mut ours) = (Samples::default(), Samples::default());
    for round in 0..rounds {
        raw.push(readers::raw_websocket(&ws.url, n).await);
        ours.push(readers::resub(&ws.url, Transport::WebSocket, n).await);
        eprintln!("  ws round {round}: raw {:.3}s, resub {:.3}s", raw.0[round], ours.0[round]);
    }
    drop(ws);
    let base = median_rate(n, &raw);
    let ws_ratio = median_rate(n, &ours) / base;
    let mut text = format!(
        "## WebSocket throughput ({rt})\n\n{n} JSON events of about 100 bytes to one subscriber, from a local sender \
         writing pre-encoded frames as fast as the reader takes them (the reader is the bottleneck); \
         events per second from the first event to the last, median of {rounds} alternating rounds \
         (min–max). Target: resub ≥ 0.9× the raw reader.\n\n"
    );
    text += &table(
        &["reader", "events/s", "ratio"],
        &[
            rate_row("raw tokio-tungstenite + serde_json into a struct", n, &raw, base),
            rate_row("resub (WebSocket)", n, &ours, base),
        ],
    );
    text += &format!("\nresub / raw: **{}** ({}).\n\n", ratio(ws_ratio), verdict(ws_ratio >= 0.9));

    let body = senders::sse_body(n);
    let sse = server.spawn(senders::sse(body)).await.expect("sender");
    let mut samples: Vec<(&str, Samples)> = vec![
        ("raw", Samples::default()),
        ("resub", Samples::default()),
        ("es", Samples::default()),
        ("esc", Samples::default()),
    ];
    for round in 0..rounds {
        samples[0].1.push(readers::raw_sse(&sse.url, n).await);
        samples[1].1.push(readers::resub(&sse.url, Transport::Sse, n).await);
        samples[2].1.push(readers::eventsource_stream(&sse.url, n).await);
        samples[3].1.push(readers::eventsource_client(&sse.url, n).await);
        eprintln!(
            "  sse round {round}: raw {:.3}s, resub {:.3}s, eventsource-stream {:.3}s, eventsource-client {:.3}s",
            samples[0].1.0[round], samples[1].1.0[round], samples[2].1.0[round], samples[3].1.0[round]
        );
    }
    drop(sse);
    let base = median_rate(n, &samples[0].1);
    let resub_rate = median_rate(n, &samples[1].1);
    let vs_raw = resub_rate / base;
    let vs_es = resub_rate / median_rate(n, &samples[2].1);
    text += &format!(
        "## SSE throughput ({rt})\n\nThe same {n} events as an event stream (`id:` and `data:` per event) from a local \
         sender; median of {rounds} alternating rounds (min–max); ratios to the raw reader. Targets: resub ≥ 0.9× \
         raw and ≥ 2.5× eventsource-stream.\n\n"
    );
    text += &table(
        &["reader", "events/s", "ratio to raw"],
        &[
            rate_row("raw reqwest byte stream + memchr splitter + serde_json", n, &samples[0].1, base),
            rate_row("resub (SSE)", n, &samples[1].1, base),
            rate_row(
                "eventsource-stream 0.2 over reqwest (as reqwest-eventsource) + serde_json",
                n,
                &samples[2].1,
                base,
            ),
            rate_row("eventsource-client 0.18 (hyper) + serde_json", n, &samples[3].1, base),
        ],
    );
    text += &format!(
        "\nresub / raw: **{}** ({}); resub / eventsource-stream: **{}** ({}).\n\n",
        ratio(vs_raw),
        verdict(vs_raw >= 0.9),
        ratio(vs_es),
        verdict(vs_es >= 2.5)
    );

    let batch = 1_000;
    let poll = server.spawn(senders::poll(n, batch)).await.expect("sender");
    let (mut raw, mut ours) = (Samples::default(), Samples::default());
    for round in 0..rounds {
        raw.push(readers::raw_poll(&poll.url, n).await);
        ours.push(readers::resub(&poll.url, Transport::LongPoll, n).await);
        eprintln!("  poll round {round}: raw {:.3}s, resub {:.3}s", raw.0[round], ours.0[round]);
    }
    drop(poll);
    let base = median_rate(n, &raw);
    text += &format!(
        "## Long-polling throughput ({rt})\n\nThe same {n} events in answers of {batch} events each; the \
         next poll is sent when an answer has been read. Median of {rounds} alternating rounds (min–max). \
         Target: resub ≥ 0.9× the raw reader.\n\n"
    );
    text += &table(
        &["reader", "events/s", "ratio"],
        &[
            rate_row("raw reqwest + serde_json, poll after poll", n, &raw, base),
            rate_row("resub (long polling)", n, &ours, base),
        ],
    );
    let poll_ratio = median_rate(n, &ours) / base;
    text += &format!("\nresub / raw: **{}** ({}).\n", ratio(poll_ratio), verdict(poll_ratio >= 0.9));
    report::write(out, if current_thread { "throughput-current-thread" } else { "throughput" }, &text);
    server.shutdown_background();
}

fn verdict(met: bool) -> &'static str {
    if met { "target met" } else { "target missed" }
}

async fn fixture_on(server: &tokio::runtime::Runtime, cfg: FixtureConfig) -> Fixture {
    server
        .spawn(async move { Fixture::start_with("127.0.0.1:0".parse::<SocketAddr>().expect("addr"), cfg).await })
        .await
        .expect("task")
        .expect("fixture")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Publishes on `channel` at `rate` for `secs`, each event carrying its
/// publish time (µs since `base`).
async fn publish_timed(fx: Arc<Fixture>, channel: String, rate: u32, secs: u64, base: Instant) {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for _ in 0..u64::from(rate) * secs {
        tick.tick().await;
        let us = base.elapsed().as_micros().to_string();
        fx.publish(&channel, None, &us).expect("publish");
    }
}

fn latency_of(base: Instant, data: &str) -> f64 {
    let sent: u64 = data.parse().expect("a timestamp");
    base.elapsed().as_secs_f64() - sent as f64 / 1e6
}

/// Publish → delivery at a fixed rate through the fixture.
pub async fn latency(out: &Path, rate: u32, secs: u64, rounds: usize) {
    let server = alloc::server_runtime(1);
    let fx = Arc::new(fixture_on(&server, FixtureConfig::default()).await);
    let base = Instant::now();
    let n = u64::from(rate) * secs;
    let mut results: Vec<[Samples; 3]> = vec![Default::default(), Default::default()];
    for round in 0..rounds {
        for (which, is_resub) in [(0, false), (1, true)] {
            let channel = format!("lat-{round}-{which}");
            let mut lat = Vec::with_capacity(n as usize);
            if is_resub {
                let client = Client::builder(&fx.url()).transports(&[Transport::WebSocket]).build().expect("client");
                // From the head: the marker published next arrives whether or
                // not the server has seen the subscribe yet.
                let mut sub = client.subscribe_from(&channel, &fx.head(&channel)).await.expect("subscribe");
                fx.publish(&channel, None, "0").expect("publish");
                while !matches!(sub.next().await, Some(Ok(Message::Event(_)))) {}
                let publisher = server.spawn(publish_timed(fx.clone(), channel.clone(), rate, secs, base));
                while (lat.len() as u64) < n {
                    if let Some(Ok(Message::Event(e))) = sub.next().await {
                        lat.push(latency_of(base, &e.data));
                    }
                }
                publisher.await.expect("publisher");
                client.close().await;
            } else {
                let ws_url = format!("{}/ws", fx.url().replacen("http", "ws", 1));
                let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.expect("connect");
                let _welcome = ws.next().await;
                let sub = format!(r#"{{"type":"subscribe","channel":"{channel}","cursor":"{}"}}"#, fx.head(&channel));
                ws.send(Ws::text(sub)).await.expect("subscribe");
                fx.publish(&channel, None, "0").expect("publish");
                loop {
                    let Some(Ok(Ws::Text(t))) = ws.next().await else { panic!("raw reader ended") };
                    let f: readers::RawFrame = serde_json::from_str(t.as_str()).expect("frame");
                    if f.kind == "event" {
                        break;
                    }
                }
                let publisher = server.spawn(publish_timed(fx.clone(), channel.clone(), rate, secs, base));
                while (lat.len() as u64) < n {
                    let Some(Ok(msg)) = ws.next().await else { panic!("raw reader ended") };
                    if let Ws::Text(t) = msg {
                        let f: readers::RawFrame = serde_json::from_str(t.as_str()).expect("frame");
                        if f.kind == "event" {
                            lat.push(latency_of(base, f.data.as_deref().unwrap_or("0")));
                        }
                    }
                }
                publisher.await.expect("publisher");
            }
            lat.sort_by(f64::total_cmp);
            for (i, p) in [0.5, 0.99, 0.999].into_iter().enumerate() {
                results[which][i].push(percentile(&lat, p));
            }
        }
        eprintln!(
            "  latency round {round}: p50 raw {} resub {}",
            report::us(results[0][0].0[round]),
            report::us(results[1][0].0[round])
        );
    }
    let mut text = format!(
        "## Latency\n\nPublish (in the fixture, in process) → delivered to the application, over WebSocket on \
         loopback, {rate} events/s for {secs} s per round ({n} events), each reader alone in its round; \
         percentiles per round, then the median of {rounds} rounds (min–max). Ratio = resub / raw (lower is \
         better; 1.00× is no overhead).\n\n"
    );
    let names = ["p50", "p99", "p99.9"];
    let rows: Vec<Vec<String>> = (0..3)
        .map(|i| {
            vec![
                names[i].to_owned(),
                results[0][i].show(report::us),
                results[1][i].show(report::us),
                ratio(results[1][i].median() / results[0][i].median()),
            ]
        })
        .collect();
    text += &table(&["percentile", "raw tokio-tungstenite + serde_json", "resub", "ratio"], &rows);
    report::write(out, "latency", &text);
    drop(fx);
    server.shutdown_background();
}

/// Waits until `cond` holds, looking every 10 ms, for at most 60 s.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(60), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Heartbeat interval of the fixture in the memory scenario; idle clients
/// are measured after [`IDLE_HEARTBEATS`] of them.
const IDLE_HEARTBEAT: Duration = Duration::from_millis(100);
const IDLE_HEARTBEATS: u32 = 10;

/// Whether the fixture counts `n` open connections (or held polls) of
/// `transport`.
fn open_on(fx: &Fixture, transport: Transport, n: usize) -> bool {
    let s = fx.stats();
    match transport {
        Transport::Sse => s.sse_open == n,
        // Polls are answered every hold and sent again at once: most, not
        // all, are held at any instant.
        Transport::LongPoll if n > 0 => s.polls_held >= n * 9 / 10,
        Transport::LongPoll => s.polls_held == 0,
        _ => s.websocket_open == n,
    }
}

/// Every transport, in the order the tables list them.
pub const ALL_TRANSPORTS: [Transport; 3] = [Transport::WebSocket, Transport::Sse, Transport::LongPoll];

/// The transport named `name` on the command line (`ws`, `sse`, `poll`).
pub fn transport(name: &str) -> Transport {
    match name {
        "ws" => Transport::WebSocket,
        "sse" => Transport::Sse,
        "poll" => Transport::LongPoll,
        other => panic!("unknown transport {other:?}: ws, sse or poll"),
    }
}

/// Client heap per idle connection (on each of `transports`) and per
/// subscription.
pub async fn memory(out: &Path, conns: usize, subs: usize, rounds: usize, transports: &[Transport]) {
    alloc::start_counting();
    // Raw: what a minimal client keeps per subscription, a channel name and
    // its cursor in a map. Measured first, while no other task of this
    // process runs: a client closed just before could still be freeing
    // memory (counted against the map).
    let mut per_sub_raw = Samples::default();
    for round in 0..rounds {
        let before = alloc::live();
        let mut cursors = std::collections::HashMap::new();
        for i in 0..subs {
            cursors.insert(format!("s{round}-{i}"), format!("abcdefgh-{i}"));
        }
        per_sub_raw.push((alloc::live() - before) as f64 / subs as f64);
        drop(cursors);
    }
    let server = alloc::server_runtime(2);
    let cfg = FixtureConfig {
        heartbeat: IDLE_HEARTBEAT,
        poll_hold: IDLE_HEARTBEAT,
        // One connection holds `subs` subscriptions and one more below.
        limits: resub_server::Limits { max_subscriptions: subs + 1, ..Default::default() },
        ..FixtureConfig::default()
    };
    let fx = Arc::new(fixture_on(&server, cfg).await);
    let mut per_conn: Vec<Samples> = transports.iter().map(|_| Samples::default()).collect();
    let mut per_conn_raw = Samples::default();
    for round in 0..rounds {
        // resub: one client and one subscription per connection, measured
        // once heartbeats (on long polling: answered polls) have flowed.
        for (t, &transport) in transports.iter().enumerate() {
            let before = alloc::live();
            let mut clients = Vec::with_capacity(conns);
            let mut held = Vec::with_capacity(conns);
            for i in 0..conns {
                let c = Client::builder(&fx.url())
                    .transports(&[transport])
                    .poll_hold(IDLE_HEARTBEAT)
                    .build()
                    .expect("client");
                held.push(c.subscribe(&format!("idle-{i}")).await.expect("subscribe"));
                clients.push(c);
            }
            until("every resub client connected", || {
                clients.iter().all(|c| matches!(c.state(), ConnectionState::Connected { .. }))
            })
            .await;
            // Heartbeats flow (a benchmark's wait: nothing is synchronised
            // on it), then the fixture must still count every connection.
            tokio::time::sleep(IDLE_HEARTBEAT * IDLE_HEARTBEATS).await;
            until("every connection open", || open_on(&fx, transport, conns)).await;
            per_conn[t].push((alloc::live() - before) as f64 / conns as f64);
            for c in &clients {
                c.close().await;
            }
            drop((clients, held));
            until("the server saw them go", || open_on(&fx, transport, 0)).await;
        }

        // Raw: a tokio-tungstenite connection per subscription, read by a task.
        let before = alloc::live();
        let mut tasks = Vec::with_capacity(conns);
        let ws_url = format!("{}/ws", fx.url().replacen("http", "ws", 1));
        for i in 0..conns {
            let (mut ws, _) = tokio_tungstenite::connect_async(ws_url.as_str()).await.expect("connect");
            let _welcome = ws.next().await;
            ws.send(Ws::text(format!(r#"{{"type":"subscribe","channel":"idle-{i}"}}"#))).await.expect("subscribe");
            let _subscribed = ws.next().await;
            tasks.push(tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} }));
        }
        tokio::time::sleep(IDLE_HEARTBEAT * IDLE_HEARTBEATS).await;
        per_conn_raw.push((alloc::live() - before) as f64 / conns as f64);
        for t in &tasks {
            t.abort();
        }
        drop(tasks);
        until("the server saw them go", || fx.stats().websocket_open == 0).await;
        let each: Vec<String> =
            transports.iter().zip(&per_conn).map(|(t, s)| format!("{:.0} B {t:?}", s.0[round])).collect();
        eprintln!(
            "  memory round {round}: resub {}; raw {:.0} B per connection",
            each.join(", "),
            per_conn_raw.0[round]
        );
    }

    // Subscriptions on one connection.
    let mut per_sub = Samples::default();
    for round in 0..rounds {
        let client = Client::builder(&fx.url()).transports(&[Transport::WebSocket]).build().expect("client");
        let first_channel = format!("s{round}-first");
        let mut first = client.subscribe_from(&first_channel, &fx.head(&first_channel)).await.expect("subscribe");
        fx.publish(&format!("s{round}-first"), None, "x").expect("publish");
        while !matches!(first.next().await, Some(Ok(Message::Event(_)))) {}
        let before = alloc::live();
        let mut held = Vec::with_capacity(subs);
        let last = format!("s{round}-{}", subs - 1);
        let last_head = fx.head(&last);
        for i in 0..subs - 1 {
            held.push(client.subscribe(&format!("s{round}-{i}")).await.expect("subscribe"));
        }
        held.push(client.subscribe_from(&last, &last_head).await.expect("subscribe"));
        // Every subscribe was answered once the last one carries an event.
        fx.publish(&last, None, "x").expect("publish");
        let tail = held.last_mut().expect("a subscription");
        loop {
            match tail.next().await {
                Some(Ok(Message::Event(_))) => break,
                Some(Ok(_)) => {}
                other => panic!("the last subscription ended: {other:?}"),
            }
        }
        per_sub.push((alloc::live() - before) as f64 / subs as f64);
        client.close().await;
        drop(held);
    }
    let mut text = format!(
        "## Memory\n\nClient heap measured by a counting allocator (the fixture runs on its own runtime, whose \
         threads are not counted), median of {rounds} rounds (min–max). Idle connections are measured after \
         {IDLE_HEARTBEATS} heartbeats of {} ms (long polling: polls held {} ms, answered and sent again). \
         Target: ≤ 16 KiB per idle connection on every transport.\n\n",
        IDLE_HEARTBEAT.as_millis(),
        IDLE_HEARTBEAT.as_millis()
    );
    let bytes = |v: f64| format!("{} B", int(v));
    let mut rows = Vec::new();
    for (t, transport) in transports.iter().enumerate() {
        rows.push(vec![
            format!("per idle connection, {transport:?} ({conns} connections, one subscription each)"),
            format!("{} (tokio-tungstenite, read by a task)", per_conn_raw.show(bytes)),
            per_conn[t].show(bytes),
            ratio(per_conn[t].median() / per_conn_raw.median()),
        ]);
    }
    rows.push(vec![
        format!("per subscription ({subs} on one connection)"),
        format!("{} (channel → cursor map)", per_sub_raw.show(bytes)),
        per_sub.show(bytes),
        ratio(per_sub.median() / per_sub_raw.median()),
    ]);
    text += &table(&["measure", "raw baseline", "resub", "ratio"], &rows);
    text += "\nresub per idle connection:";
    for (t, transport) in transports.iter().enumerate() {
        let kib = per_conn[t].median() / 1024.0;
        text += &format!(" {transport:?} **{kib:.1} KiB** ({});", verdict(kib <= 16.0));
    }
    text.pop();
    text += ".\n";
    report::write(out, "memory", &text);
    drop(fx);
    server.shutdown_background();
}

/// Arrival times (s after the drop) of the WebSocket handshakes accepted
/// after `t0`, once `expected` have arrived.
async fn arrivals(fx: &Fixture, t0: Instant, accepted_before: u64, expected: u64) -> Vec<f64> {
    until("every client back", || fx.stats().websocket_accepted >= accepted_before + expected).await;
    fx.stats()
        .handshakes
        .iter()
        .filter(|h| h.status == 101 && h.at >= t0)
        .map(|h| h.at.duration_since(t0).as_secs_f64())
        .collect()
}

/// Reconnect arrivals per 100 ms after the server drops every client at once.
pub async fn storm(out: &Path, clients: usize, png: &Path) {
    let server = alloc::server_runtime(2);
    let fx = Arc::new(fixture_on(&server, FixtureConfig::default()).await);
    let backoff = Backoff::default();

    // resub, default policy: exponential backoff with full jitter.
    let mut cs = Vec::with_capacity(clients);
    let mut subs = Vec::with_capacity(clients);
    for i in 0..clients {
        let c = Client::builder(&fx.url()).transports(&[Transport::WebSocket]).build().expect("client");
        subs.push(c.subscribe(&format!("storm-{}", i % 10)).await.expect("subscribe"));
        cs.push(c);
    }
    until("every resub client connected", || fx.stats().websocket_open == clients).await;
    let accepted = fx.stats().websocket_accepted;
    let t0 = Instant::now();
    fx.drop_connections();
    let jitter = arrivals(&fx, t0, accepted, clients as u64).await;
    for c in &cs {
        c.close().await;
    }
    drop((cs, subs));
    until("the server saw them go", || fx.stats().websocket_open == 0).await;

    // The same schedule without jitter: min(cap, base · factor^(n-1)).
    let ws_url = format!("{}/ws", fx.url().replacen("http", "ws", 1));
    let mut tasks = Vec::with_capacity(clients);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    for _ in 0..clients {
        let (url, tx, backoff) = (ws_url.clone(), tx.clone(), backoff.clone());
        tasks.push(tokio::spawn(async move {
            let mut failures = 0u32;
            loop {
                if let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url.as_str()).await {
                    failures = 0;
                    let _ = tx.send(());
                    while let Some(Ok(_)) = ws.next().await {}
                }
                failures += 1;
                let delay = backoff.base.as_secs_f64() * backoff.factor.powi(failures as i32 - 1);
                tokio::time::sleep(Duration::from_secs_f64(delay.min(backoff.cap.as_secs_f64()))).await;
            }
        }));
    }
    for _ in 0..clients {
        rx.recv().await;
    }
    until("every plain client connected", || fx.stats().websocket_open == clients).await;
    let accepted = fx.stats().websocket_accepted;
    let t0 = Instant::now();
    fx.drop_connections();
    let fixed = arrivals(&fx, t0, accepted, clients as u64).await;
    for t in &tasks {
        t.abort();
    }

    let bucket = 0.1;
    let hist = |xs: &[f64]| -> Vec<u64> {
        let last = xs.iter().copied().fold(0.0, f64::max);
        let mut h = vec![0u64; (last / bucket) as usize + 1];
        for x in xs {
            h[(x / bucket) as usize] += 1;
        }
        h
    };
    let (hj, hf) = (hist(&jitter), hist(&fixed));
    let stats = |h: &[u64]| {
        let first = h.iter().position(|c| *c > 0).unwrap_or(0);
        let span = &h[first..];
        let peak = span.iter().copied().max().unwrap_or(0) as f64;
        let mean = span.iter().sum::<u64>() as f64 / span.len().max(1) as f64;
        (peak, mean, span.len())
    };
    let (pj, mj, bj) = stats(&hj);
    let (pf, mf, bf) = stats(&hf);
    let mut text = format!(
        "## Reconnect storm\n\n{clients} clients on one fixture; the fixture drops them all at once; the \
         reconnections it accepts are counted per 100 ms. resub's policy (exponential backoff, full jitter, \
         base {} ms) against the same schedule without jitter, in the same run. Peak and mean are over the \
         buckets from the first arrival to the last. Target: resub's peak ≤ 2× its mean.\n\n",
        backoff.base.as_millis()
    );
    text += &table(
        &["policy", "peak / 100 ms", "mean / 100 ms", "buckets", "peak ÷ mean"],
        &[
            vec!["resub (full jitter)".into(), int(pj), format!("{mj:.0}"), bj.to_string(), ratio(pj / mj)],
            vec!["no jitter".into(), int(pf), format!("{mf:.0}"), bf.to_string(), ratio(pf / mf)],
        ],
    );
    let buckets = hj.len().max(hf.len());
    let rows: Vec<Vec<String>> = (0..buckets)
        .map(|i| {
            vec![
                format!("{}–{} ms", i * 100, (i + 1) * 100),
                hj.get(i).copied().unwrap_or(0).to_string(),
                hf.get(i).copied().unwrap_or(0).to_string(),
            ]
        })
        .collect();
    text += &format!("\nresub: peak ÷ mean **{}** ({}).\n\n", ratio(pj / mj), verdict(pj / mj <= 2.0));
    text += &table(&["after the drop", "resub", "no jitter"], &rows);
    match crate::plot::histogram(png, &hj, &hf) {
        Ok(()) => text += &format!("\n![Reconnect arrivals per 100 ms]({})\n", png.display()),
        Err(e) => eprintln!("no PNG: {e}"),
    }
    report::write(out, "storm", &text);
    drop(fx);
    server.shutdown_background();
}

/// From the server accepting again to the first replayed event.
pub async fn resume(out: &Path, rounds: usize) {
    let server = alloc::server_runtime(1);
    let fx = Arc::new(fixture_on(&server, FixtureConfig::default()).await);
    let backoff =
        Backoff { base: Duration::from_millis(200), factor: 2.0, cap: Duration::from_secs(2), max_attempts: None };
    let client =
        Client::builder(&fx.url()).transports(&[Transport::WebSocket]).backoff(backoff).build().expect("client");
    let mut states = client.states();
    let mut sub = client.subscribe_from("resume", &fx.head("resume")).await.expect("subscribe");
    fx.publish("resume", None, "first").expect("publish");
    while !matches!(sub.next().await, Some(Ok(Message::Event(_)))) {}
    let (mut total, mut waited, mut overhead, mut raw) =
        (Samples::default(), Samples::default(), Samples::default(), Samples::default());
    let ws_url = format!("{}/ws", fx.url().replacen("http", "ws", 1));
    for round in 0..rounds {
        // The server goes away: connections dropped, handshakes refused.
        fx.set_unavailable(0, None);
        fx.drop_connections();
        let mut last_retry = loop {
            if let Some(ConnectionState::Disconnected { retry_at, .. }) = states.next().await {
                break Some(retry_at);
            }
        };
        let mut cursor = String::new();
        for i in 0..100 {
            cursor = fx.publish("resume", None, &format!("missed-{round}-{i}")).expect("publish");
        }
        // It comes back.
        let t0 = Instant::now();
        fx.clear_unavailable();
        let first_replayed = loop {
            tokio::select! {
                msg = sub.next() => if let Some(Ok(Message::Event(_))) = msg { break Instant::now() },
                state = states.next() => if let Some(ConnectionState::Disconnected { retry_at, .. }) = state {
                    last_retry = Some(retry_at);
                },
            }
        };
        while !matches!(sub.next().await, Some(Ok(Message::Event(e))) if e.id == cursor) {}
        let retry_at = last_retry.expect("a retry time");
        let start = if retry_at > t0 { retry_at } else { t0 };
        total.push(first_replayed.duration_since(t0).as_secs_f64());
        waited.push(retry_at.saturating_duration_since(t0).as_secs_f64());
        overhead.push(first_replayed.saturating_duration_since(start).as_secs_f64());

        // Baseline: a fresh raw connection, subscribe from an old cursor,
        // first replayed event.
        let from = fx.head("resume");
        fx.publish("resume", None, "one more").expect("publish");
        let t = Instant::now();
        let (mut ws, _) = tokio_tungstenite::connect_async(ws_url.as_str()).await.expect("connect");
        let _welcome = ws.next().await;
        let sub_frame = format!(r#"{{"type":"subscribe","channel":"resume","cursor":"{from}"}}"#);
        ws.send(Ws::text(sub_frame)).await.expect("subscribe");
        loop {
            let Some(Ok(Ws::Text(text))) = ws.next().await else { panic!("raw reader ended") };
            let f: readers::RawFrame = serde_json::from_str(text.as_str()).expect("frame");
            if f.kind == "event" {
                break;
            }
        }
        raw.push(t.elapsed().as_secs_f64());
        while !matches!(sub.next().await, Some(Ok(Message::Event(e))) if e.data == "one more") {}
        eprintln!(
            "  resume round {round}: {} after accept, backoff wait {}, reconnect+replay {}, raw {}",
            report::ms(total.0[round]),
            report::ms(waited.0[round]),
            report::ms(overhead.0[round]),
            report::ms(raw.0[round])
        );
    }
    client.close().await;
    let mut text = format!(
        "## Resume latency\n\nThe fixture drops the client and refuses it (503) while 100 events are published, \
         then accepts again at t0. Measured from t0 to the first replayed event, split into the wait the backoff \
         had already chosen (its next attempt was due then) and the reconnect + resubscribe + replay after it; \
         the baseline is a fresh raw tokio-tungstenite connection subscribing from a cursor to its first \
         replayed event. Backoff base 200 ms, cap 2 s; median of {rounds} rounds (min–max).\n\n"
    );
    text += &table(
        &["measure", "time", "ratio to raw"],
        &[
            vec!["t0 → first replayed event (resub)".into(), total.show(report::ms), "".into()],
            vec!["of which: backoff wait still due at t0".into(), waited.show(report::ms), "".into()],
            vec![
                "of which: reconnect + replay (resub)".into(),
                overhead.show(report::ms),
                ratio(overhead.median() / raw.median()),
            ],
            vec!["connect + subscribe + first replay (raw)".into(), raw.show(report::ms), ratio(1.0)],
        ],
    );
    report::write(out, "resume", &text);
    drop(fx);
    server.shutdown_background();
}

/// Runs one reader once and prints its rate.
pub async fn profile(reader: &str, n: u64) {
    let server = alloc::server_runtime(1);
    let (kind, transport) = reader.split_once('-').unwrap_or((reader, "ws"));
    let sender = match transport {
        "ws" => server.spawn(senders::websocket(senders::ws_frames(n))).await,
        "sse" => server.spawn(senders::sse(senders::sse_body(n))).await,
        _ => server.spawn(senders::poll(n, 1_000)).await,
    }
    .expect("sender");
    let secs = match (kind, transport) {
        ("resub", "ws") => readers::resub(&sender.url, Transport::WebSocket, n).await,
        ("resub", "sse") => readers::resub(&sender.url, Transport::Sse, n).await,
        ("resub", _) => readers::resub(&sender.url, Transport::LongPoll, n).await,
        (_, "ws") => readers::raw_websocket(&sender.url, n).await,
        (_, "sse") => readers::raw_sse(&sender.url, n).await,
        _ => readers::raw_poll(&sender.url, n).await,
    };
    println!("{reader}: {} events/s", int((n - 1) as f64 / secs));
    drop(sender);
    server.shutdown_background();
}
