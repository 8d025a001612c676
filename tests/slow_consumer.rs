#![cfg(not(target_arch = "wasm32"))]
//! Slow consumers: the application stops reading while 1,000,000 events are
//! published. The client must not buffer without bound: its queues fill, it
//! stops reading the connection (TCP pushes back on the server, which drops
//! the connection when its own queue is full), and when the application
//! reads again it gets every event after its cursor in order, or a typed
//! reset where the server no longer holds them.
//!
//! Client memory is measured by a counting allocator; the fixture runs on its
//! own runtime whose threads are not counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use resub::{Client, ConnectionState, Message, ResetReason, Transport};
use resub_fixture::{ChaosPlan, Fixture, FixtureConfig};

mod chaos_check;

/// The documented bound on what the client may hold while the application
/// does not read, for events of about 100 bytes (README, RELIABILITY.md).
const BOUND: isize = 4 << 20;

const EVENTS: u64 = 1_000_000;

thread_local! {
    /// Set on the fixture's threads: their allocations are not the client's.
    static SERVER: Cell<bool> = const { Cell::new(false) };
}

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

struct Counting;

fn counted() -> bool {
    SERVER.try_with(|s| !s.get()).unwrap_or(false)
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() && counted() {
            let live = LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed) + layout.size() as isize;
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        if counted() {
            LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() && counted() {
            let delta = new_size as isize - layout.size() as isize;
            let live = LIVE.fetch_add(delta, Ordering::Relaxed) + delta;
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// A runtime for the fixture whose threads' allocations are not counted.
fn server_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .on_thread_start(|| SERVER.with(|s| s.set(true)))
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn websocket_client_memory_stays_bounded_while_the_application_pauses() {
    paused_reader(Transport::WebSocket);
}

#[test]
fn sse_client_memory_stays_bounded_while_the_application_pauses() {
    paused_reader(Transport::Sse);
}

#[test]
fn long_polling_client_memory_stays_bounded_while_the_application_pauses() {
    paused_reader(Transport::LongPoll);
}

fn paused_reader(transport: Transport) {
    let server = server_runtime();
    let cfg = FixtureConfig { heartbeat: Duration::from_millis(500), ..FixtureConfig::default() };
    let fx = server.block_on(Fixture::start_with("127.0.0.1:0".parse().unwrap(), cfg)).unwrap();
    let client_rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    client_rt.block_on(async {
        let client =
            Client::builder(&fx.url()).transports(&[transport]).poll_hold(Duration::from_secs(2)).build().unwrap();
        let mut states = client.states();
        let head = fx.head("flood");
        let mut track = chaos_check::Track::new(&head);
        let mut sub = client.subscribe_from("flood", &head).await.unwrap();
        while !matches!(states.next().await, Some(ConnectionState::Connected { .. })) {}
        let baseline = LIVE.load(Ordering::Relaxed);
        PEAK.store(baseline, Ordering::Relaxed);

        // The application reads nothing while the server publishes.
        let plan = ChaosPlan {
            seed: 0,
            events: EVENTS,
            faults: 0,
            channels: vec!["flood".into()],
            rate: 10_000_000,
            kinds: vec![],
        };
        {
            let _server = server.enter();
            fx.start_chaos(plan).unwrap();
        }
        let wait = tokio::time::timeout(Duration::from_secs(300), fx.chaos_finished());
        wait.await.expect("the server published within 5 minutes");
        let paused_peak = PEAK.load(Ordering::Relaxed) - baseline;
        let report = fx.chaos_report().unwrap();
        let end = &report.channels["flood"];

        // Reading again: every event, or a typed reset, up to the end.
        let mut resets = 0;
        let read = async {
            while !track.at_end(&end.head, end.published) {
                match sub.next().await {
                    Some(Ok(msg)) => {
                        if let Message::Reset { reason, .. } = &msg {
                            assert_eq!(*reason, ResetReason::HistoryTruncated, "the only reset a flood causes");
                            resets += 1;
                        }
                        track.see("flood", msg).unwrap_or_else(|broken| panic!("{broken}"));
                    }
                    other => panic!("the subscription ended: {other:?}"),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(300), read).await.expect("read to the end within 5 minutes");
        let peak = PEAK.load(Ordering::Relaxed) - baseline;
        let stats = fx.stats();
        println!(
            "{transport}: {EVENTS} published; while paused the client grew by at most {paused_peak} B \
             ({} KiB), {peak} B overall; {} events then delivered, {resets} resets; \
             the server dropped {} slow connections",
            paused_peak / 1024,
            track.events,
            stats.slow_consumer_drops
        );
        assert!(paused_peak < BOUND, "{transport}: {paused_peak} B buffered while paused, bound {BOUND}");
        assert!(peak < BOUND, "{transport}: {peak} B while catching up, bound {BOUND}");
        client.close().await;
    });
    drop(fx);
}
