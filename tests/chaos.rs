#![cfg(not(target_arch = "wasm32"))]
//! Chaos: the fixture publishes over several channels while it injects a
//! seeded random schedule of faults (abrupt drops, stalls, refused
//! transports, 503 + Retry-After, truncated history, new epochs), once with
//! each transport forced and once with automatic fallback. Per channel, every
//! event after the cursor must arrive exactly once and in order, except
//! across a typed reset, and every reset's reason must match a fault injected
//! on that channel.
//!
//! `cluster_failover` runs the same against two fixture nodes sharing Redis:
//! the seeded chaos on node A (its truncations and new epochs reach node B
//! through Redis), seeded abrupt drops on node B, and a client that knows
//! both and moves between them. `cluster_failover_in_memory` runs it again
//! with the two nodes sharing one in-process `MemoryStorage` instead.
//!
//! CI runs a smaller size; the full size (100,000 events, 1,000 faults per
//! mode) is
//! `RESUB_CHAOS_EVENTS=100000 RESUB_CHAOS_FAULTS=1000 cargo test --release --test chaos -- --nocapture`.
//! `RESUB_CHAOS_SEED` replays a run; `RESUB_CHAOS_RATE` sets publishes per
//! second.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::SelectAll;
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use resub::core::Backoff;
use resub::{Client, ConnectionState, Transport};
use resub_fixture::{
    ChaosPlan, ChaosReport, FaultKind, Fixture, FixtureConfig, MemoryStorage, RedisConfig, RedisServer,
};

mod chaos_check;

use chaos_check::Track;

const CHANNELS: usize = 4;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Size {
    events: u64,
    faults: u64,
    rate: u32,
    seed: u64,
}

fn size(mode: u64) -> Size {
    let seed = std::env::var("RESUB_CHAOS_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    Size {
        events: env_u64("RESUB_CHAOS_EVENTS", 20_000),
        faults: env_u64("RESUB_CHAOS_FAULTS", 200),
        rate: u32::try_from(env_u64("RESUB_CHAOS_RATE", 2_000)).unwrap_or(2_000),
        seed: seed.wrapping_add(mode),
    }
}

/// Where the client connects.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Nodes {
    /// One fixture, keeping history in memory.
    One,
    /// Two fixture nodes sharing history on Redis.
    TwoOnRedis,
    /// Two fixture nodes sharing history in one `MemoryStorage`.
    TwoInMemory,
}

const ALL_REFUSALS: [FaultKind; 3] = [FaultKind::RefuseWebsocket, FaultKind::RefuseSse, FaultKind::RefusePoll];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_forced() {
    let kinds = [FaultKind::RefuseWebsocket];
    chaos("ws", &[Transport::WebSocket], &kinds, size(0), Nodes::One).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_forced() {
    chaos("sse", &[Transport::Sse], &[FaultKind::RefuseSse], size(1), Nodes::One).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polling_forced() {
    chaos("poll", &[Transport::LongPoll], &[FaultKind::RefusePoll], size(2), Nodes::One).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_fallback() {
    chaos("auto", &Transport::ALL, &ALL_REFUSALS, size(3), Nodes::One).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_failover() {
    chaos("cluster", &Transport::ALL, &ALL_REFUSALS, size(4), Nodes::TwoOnRedis).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_failover_in_memory() {
    chaos("memory", &Transport::ALL, &ALL_REFUSALS, size(5), Nodes::TwoInMemory).await;
}

/// Connection outages seen on the state stream.
#[derive(Default)]
struct Outages {
    reconnects: u64,
    longest: Duration,
    down_since: Option<Instant>,
    /// Connections made, per server.
    per_node: BTreeMap<String, u64>,
}

async fn chaos(mode: &str, transports: &[Transport], refusals: &[FaultKind], size: Size, nodes: Nodes) {
    let Size { events, faults, rate, seed } = size;
    let replay = format!(
        "replay: RESUB_CHAOS_SEED={} RESUB_CHAOS_EVENTS={events} RESUB_CHAOS_FAULTS={faults} RESUB_CHAOS_RATE={rate} (mode {mode})",
        seed.wrapping_sub(match mode {
            "ws" => 0,
            "sse" => 1,
            "poll" => 2,
            "auto" => 3,
            "cluster" => 4,
            _ => 5,
        })
    );
    println!("chaos {mode}: seed {seed}; {replay}");
    let cfg = FixtureConfig {
        heartbeat: Duration::from_millis(100),
        // Large enough that only injected truncations cut history short.
        history: usize::try_from(events).unwrap_or(usize::MAX).saturating_add(1),
        poll_hold: Duration::from_millis(500),
        ..FixtureConfig::default()
    };
    let redis = match nodes {
        Nodes::One | Nodes::TwoInMemory => None,
        Nodes::TwoOnRedis => {
            Some(RedisServer::start().await.expect("redis-server starts (scripts/test.sh installs it)"))
        }
    };
    let cfg = FixtureConfig { redis: redis.as_ref().map(|r| RedisConfig::new(r.url())), ..cfg };
    let cfg = match nodes {
        Nodes::TwoInMemory => FixtureConfig { storage: Some(Arc::new(MemoryStorage::new())), ..cfg },
        _ => cfg,
    };
    let fx = Fixture::start_with("127.0.0.1:0".parse().unwrap(), cfg.clone()).await.unwrap();
    // Node B: no chaos of its own, but its connections are dropped at seeded
    // random times, so that the client keeps moving between the nodes.
    let other = match nodes {
        Nodes::One => None,
        Nodes::TwoOnRedis | Nodes::TwoInMemory => {
            Some(Arc::new(Fixture::start_with("127.0.0.1:0".parse().unwrap(), cfg).await.unwrap()))
        }
    };
    let endpoints: Vec<String> = other.iter().map(|b| b.url()).collect();
    let endpoints: Vec<&str> = endpoints.iter().map(String::as_str).collect();
    let channels: Vec<String> = (0..CHANNELS).map(|i| format!("chaos.{i}")).collect();
    let client = Client::builder(&fx.url())
        .endpoints(&endpoints)
        .transports(transports)
        .backoff(Backoff {
            base: Duration::from_millis(5),
            factor: 2.0,
            cap: Duration::from_millis(100),
            max_attempts: None,
        })
        .healthy_after(Duration::from_millis(50))
        .open_timeout(Duration::from_secs(2))
        .poll_hold(Duration::from_millis(500))
        .upgrade_probe(Some(Duration::from_millis(300)))
        .seed(seed)
        .build()
        .unwrap();

    let outages = Arc::new(Mutex::new(Outages::default()));
    let watcher = {
        let mut states = client.states();
        let outages = outages.clone();
        tokio::spawn(async move {
            while let Some(s) = states.next().await {
                let mut o = outages.lock().unwrap();
                match s {
                    ConnectionState::Connected { endpoint, .. } => {
                        *o.per_node.entry(endpoint).or_default() += 1;
                        if let Some(since) = o.down_since.take() {
                            o.reconnects += 1;
                            o.longest = o.longest.max(since.elapsed());
                        }
                    }
                    _ => {
                        if o.down_since.is_none() {
                            o.down_since = Some(Instant::now());
                        }
                    }
                }
            }
        })
    };

    let mut tracks: HashMap<String, Track> = HashMap::new();
    let mut subs = SelectAll::new();
    for ch in &channels {
        let head = fx.head_async(ch).await.unwrap();
        tracks.insert(ch.clone(), Track::new(&head));
        let sub = client.subscribe_from(ch, &head).await.unwrap();
        let name = ch.clone();
        subs.push(sub.map(move |m| (name.clone(), m)).boxed());
    }

    let mut kinds =
        vec![FaultKind::Drop, FaultKind::Stall, FaultKind::Unavailable, FaultKind::Truncate, FaultKind::Epoch];
    kinds.extend_from_slice(refusals);
    let plan = ChaosPlan { seed, events, faults, channels: channels.clone(), rate, kinds };
    let started = Instant::now();
    fx.start_chaos(plan).unwrap();
    let node_b_drops = Arc::new(AtomicU64::new(0));
    let dropping = other.clone().map(|b| {
        let mut rng = SmallRng::seed_from_u64(seed);
        let drops = node_b_drops.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(rng.random_range(20..=300))).await;
                b.drop_connections();
                drops.fetch_add(1, Ordering::Relaxed);
            }
        })
    });
    let publishing = Duration::from_secs_f64(events as f64 / f64::from(rate));
    let deadline = publishing * 3 + Duration::from_secs(60);

    let mut report: Option<ChaosReport> = None;
    let mut finished = Box::pin(fx.chaos_finished());
    let outcome = tokio::time::timeout(deadline, async {
        loop {
            if let Some(r) = &report {
                if r.channels.iter().all(|(ch, end)| tracks[ch].at_end(&end.head, end.published)) {
                    return Ok(());
                }
            }
            tokio::select! {
                () = &mut finished, if report.is_none() => {
                    report = fx.chaos_report();
                }
                item = subs.next() => match item {
                    Some((ch, Ok(msg))) => tracks.get_mut(&ch).unwrap().see(&ch, msg)?,
                    Some((ch, Err(e))) => return Err(format!("{ch}: subscription failed: {e}")),
                    None => return Err("every subscription ended".to_owned()),
                },
            }
        }
    })
    .await;
    let elapsed = started.elapsed();
    if let Some(task) = dropping {
        task.abort();
    }
    let node_b_drops = node_b_drops.load(Ordering::Relaxed);
    let report = report.or_else(|| fx.chaos_report()).expect("a chaos report");
    let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
    let mut per_channel: HashMap<(String, String), u64> = HashMap::new();
    for f in &report.faults {
        let kind = serde_json::to_value(f.kind).unwrap().as_str().unwrap().to_owned();
        *by_kind.entry(kind.clone()).or_default() += 1;
        if let Some(ch) = &f.channel {
            *per_channel.entry((ch.clone(), kind)).or_default() += 1;
        }
    }
    let delivered: u64 = tracks.values().map(|t| t.events).sum();
    let resets: u64 = tracks.values().flat_map(|t| t.resets.values()).sum();
    let stats = client.stats();
    let (reconnects, longest, per_node) = {
        let o = outages.lock().unwrap();
        (o.reconnects, o.longest, o.per_node.clone())
    };
    println!(
        "chaos {mode}: {} events published, {delivered} delivered, {} faults {by_kind:?}, {resets} resets, \
         {reconnects} reconnects ({} connections), longest outage {longest:?}, {} duplicates dropped, \
         {node_b_drops} drops on node B, connections per node {per_node:?}, publishing {:?}, total {elapsed:?}, \
         seed {seed}",
        report.published,
        report.faults.len(),
        stats.connections,
        stats.duplicates,
        Duration::from_millis(report.duration_ms),
    );
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(broken)) => panic!("chaos {mode}: the promise broke: {broken}\n{replay}"),
        Err(_) => {
            let behind: Vec<String> = report
                .channels
                .iter()
                .map(|(ch, end)| {
                    format!(
                        "{ch} at {}-{} (#{}) of {} (#{})",
                        tracks[ch].epoch, tracks[ch].seq, tracks[ch].last_n, end.head, end.published
                    )
                })
                .collect();
            panic!("chaos {mode}: not every channel reached its head within {deadline:?}: {behind:?}\n{replay}");
        }
    }
    assert_eq!(report.faults.len() as u64, faults, "every fault was injected");
    if nodes != Nodes::One {
        assert_eq!(per_node.len(), 2, "chaos {mode}: the client used both nodes: {per_node:?}\n{replay}");
    }
    for (ch, t) in &tracks {
        for (kind, n) in &t.resets {
            let injected = per_channel.get(&(ch.clone(), kind.clone())).copied().unwrap_or(0);
            assert!(*n <= injected, "chaos {mode}: {ch} had {n} {kind} resets for {injected} such faults\n{replay}");
        }
    }
    client.close().await;
    watcher.await.unwrap();
}
