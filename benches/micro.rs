//! Microbenchmarks of the hot paths, each beside a baseline in the same group
//! so that the report can give a ratio measured in the same run:
//!
//! - `sse`: `SseParser::feed` over a buffer of many fixture-shaped events,
//!   against a plain memchr line splitter over the same bytes;
//! - `frame`: decoding an event frame into `ServerFrame`, against
//!   `serde_json::from_str::<serde_json::Value>` on the same text;
//! - `core`: one `Session::handle_input` of a received event frame plus
//!   draining `poll_output`, against decoding the same frame alone (the
//!   difference is the core's own work).
//!
//! `bash scripts/bench-micro.sh` runs them and writes bench/results/micro.md.
//! The browser build has no criterion: there this file is an empty program.

#[cfg(not(target_arch = "wasm32"))]
mod native {
    use std::hint::black_box;
    use std::time::Duration;

    use criterion::{BatchSize, Criterion, Throughput};
    use resub::Instant;
    use resub::core::{Config, ConnId, Input, Output, Seeds, Session};
    use resub::protocol::ServerFrame;
    use resub::protocol::sse::{SseItem, SseParser};

    const EPOCH: &str = "k3f9a2x1";

    /// An event frame as the fixture encodes it.
    fn event_frame(seq: u64) -> String {
        format!(r#"{{"type":"event","channel":"trades","id":"{EPOCH}-{seq}","data":"trades:{seq}"}}"#)
    }

    /// `n` events as the fixture's SSE endpoint writes them.
    fn sse_stream(n: u64) -> Vec<u8> {
        let mut out = String::from("retry: 1000\n\n");
        for seq in 1..=n {
            out.push_str(&format!("id: {EPOCH}-{seq}\ndata: {}\n\n", event_frame(seq)));
        }
        out.into_bytes()
    }

    pub fn sse(c: &mut Criterion) {
        const EVENTS: u64 = 1000;
        let bytes = sse_stream(EVENTS);
        let mut g = c.benchmark_group("sse");
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function("sse_parser", |b| {
            b.iter(|| {
                let mut parser = SseParser::default();
                let mut out: Vec<SseItem> = Vec::with_capacity(EVENTS as usize + 1);
                parser.feed(black_box(&bytes), &mut out).expect("parses");
                assert_eq!(out.len(), EVENTS as usize + 1);
                out
            })
        });
        g.bench_function("memchr_lines", |b| {
            b.iter(|| {
                let bytes = black_box(&bytes[..]);
                let mut start = 0;
                let mut lines = 0usize;
                for end in memchr::memchr_iter(b'\n', bytes) {
                    black_box(&bytes[start..end]);
                    start = end + 1;
                    lines += 1;
                }
                lines
            })
        });
        g.finish();
    }

    pub fn frame(c: &mut Criterion) {
        let text = event_frame(123_456);
        let mut g = c.benchmark_group("frame");
        g.throughput(Throughput::Elements(1));
        g.bench_function("server_frame", |b| {
            b.iter(|| serde_json::from_str::<ServerFrame>(black_box(&text)).expect("decodes"))
        });
        g.bench_function("json_value", |b| {
            b.iter(|| serde_json::from_str::<serde_json::Value>(black_box(&text)).expect("decodes"))
        });
        // What a hand-written reader decodes into: the fields it needs, owned.
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct Owned {
            #[serde(rename = "type")]
            kind: String,
            channel: Option<String>,
            id: Option<String>,
            event: Option<String>,
            data: Option<String>,
        }
        g.bench_function("owned_struct", |b| {
            b.iter(|| serde_json::from_str::<Owned>(black_box(&text)).expect("decodes"))
        });
        g.finish();
    }

    /// A session connected over WebSocket and subscribed to "trades" from the
    /// start of the epoch; its connection id.
    fn connected_session(now: Instant) -> (Session, ConnId) {
        let mut s =
            Session::new(Config::default(), "http://bench.test", Seeds { jitter: 1, keys: 1 }, now).expect("session");
        s.subscribe("trades", Some(format!("{EPOCH}-0").parse().expect("id")), now).expect("subscribe");
        let mut conn = None;
        while let Some(o) = s.poll_output() {
            if let Output::Connect { conn: c, .. } = o {
                conn = Some(c);
            }
        }
        let conn = conn.expect("the session asks for a connection");
        s.handle_input(Input::Opened { conn }, now);
        let frames = [
            r#"{"type":"welcome","heartbeat_ms":5000}"#.to_owned(),
            format!(r#"{{"type":"subscribed","channel":"trades","outcome":"resumed","head":"{EPOCH}-0"}}"#),
        ];
        for text in frames {
            s.handle_input(Input::Received { conn, text }, now);
        }
        while s.poll_output().is_some() {}
        (s, conn)
    }

    pub fn core(c: &mut Criterion) {
        let now = Instant::now();
        let (mut session, conn) = connected_session(now);
        let mut g = c.benchmark_group("core");
        g.throughput(Throughput::Elements(1));
        // Each iteration gets the next event of the channel (a repeated id
        // would take the duplicate path); making its text is not timed.
        let mut seq = 0u64;
        g.bench_function("session_step", |b| {
            b.iter_batched(
                || {
                    seq += 1;
                    event_frame(seq)
                },
                |text| {
                    session.handle_input(Input::Received { conn, text }, now);
                    let mut delivered = 0;
                    while let Some(o) = session.poll_output() {
                        delivered += usize::from(matches!(o, Output::Deliver { .. }));
                        black_box(o);
                    }
                    assert_eq!(delivered, 1, "one event delivered per step");
                },
                BatchSize::SmallInput,
            )
        });
        assert_eq!(session.stats().delivered, seq, "every event was delivered once");
        let mut seq = 0u64;
        g.bench_function("frame_decode", |b| {
            b.iter_batched(
                || {
                    seq += 1;
                    event_frame(seq)
                },
                |text| serde_json::from_str::<ServerFrame>(&text).expect("decodes"),
                BatchSize::SmallInput,
            )
        });
        g.finish();
    }

    /// Short runs (about 10 s for the whole file), so that
    /// scripts/bench-micro.sh can repeat it and report the spread between runs.
    pub fn config() -> Criterion {
        Criterion::default()
            .warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_secs(1))
            .sample_size(30)
    }
}

#[cfg(not(target_arch = "wasm32"))]
criterion::criterion_group! {
    name = benches;
    config = native::config();
    targets = native::sse, native::frame, native::core
}
#[cfg(not(target_arch = "wasm32"))]
criterion::criterion_main!(benches);

#[cfg(target_arch = "wasm32")]
fn main() {}
