//! `tail`: subscribe to channels and print every event as a JSON line.
//!
//! ```text
//! cargo run --release --example tail -- [--transport auto|ws|sse|poll] [--from ID] [--count N] [URL] [CHANNEL...]
//! cargo run --release --example tail -- --plain-sse URL [--from ID] [--count N]
//! ```
//!
//! - stdout: one JSON object per event, `{"channel","id","event","data"}`, and
//!   `{"channel","reset"}` when a subscription cannot continue from its cursor.
//! - stderr: connection state changes.
//! - `--plain-sse URL` reads any standard SSE endpoint and prints
//!   `{"id","event","data"}` lines (`id` is null for an event without one).
//! - With no URL, an embedded fixture server starts with a publisher and
//!   periodic faults (abrupt drops, stalls, 503s), and a live status line shows
//!   what was received, replayed and de-duplicated, and that nothing was lost.

// The example is a native program; on wasm32 it builds to nothing.
#[cfg(target_arch = "wasm32")]
fn main() {}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    app::main()
}

#[cfg(not(target_arch = "wasm32"))]
mod app {
    use std::io::{IsTerminal, Write};
    use std::time::Duration;

    use clap::Parser;
    use futures::StreamExt;
    use futures::stream::SelectAll;
    use resub::{Client, ConnectionState, Message, PlainSse, Transport};
    use resub_fixture::{Fixture, FixtureConfig};

    #[derive(Parser, Debug)]
    #[command(about = "Subscribe to resub channels and print events as JSON lines")]
    struct Args {
        /// Transport: auto (WebSocket first), ws, sse or poll.
        #[arg(long, default_value = "auto", value_parser = ["auto", "ws", "sse", "poll"])]
        transport: String,
        /// Start after the event with this id (as /publish returned it).
        #[arg(long)]
        from: Option<String>,
        /// Exit after this many events.
        #[arg(long)]
        count: Option<u64>,
        /// Read a plain SSE endpoint (any server, not the resub protocol).
        #[arg(long, value_name = "URL", conflicts_with = "transport")]
        plain_sse: Option<String>,
        /// Trust the certificates of this PEM file for https:// and wss://,
        /// besides the usual web roots (for example the one the fixture's
        /// `--tls-cert-out` writes).
        #[arg(long, value_name = "FILE")]
        root_cert: Option<std::path::PathBuf>,
        /// Send this bearer token (a secured resub-server's JWT). A channel
        /// the token does not cover ends tail with the error on stderr and
        /// exit status 1.
        #[arg(long, value_name = "T")]
        token: Option<String>,
        /// The server's base URL (http://host:port), then the channels. With no
        /// URL, an embedded fixture with a publisher and faults is started.
        #[arg(value_name = "URL|CHANNEL")]
        args: Vec<String>,
    }

    #[tokio::main]
    pub async fn main() {
        let args = Args::parse();
        let filter = tracing_subscriber::EnvFilter::try_from_env("RESUB_LOG").unwrap_or_else(|_| "warn".into());
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
        if let Some(url) = &args.plain_sse {
            std::process::exit(plain(url, &args).await);
        }
        let (url, channels) = match args.args.split_first() {
            Some((first, rest)) if first.contains("://") => (Some(first.clone()), rest.to_vec()),
            _ => (None, args.args.clone()),
        };
        let code = match url {
            Some(url) if channels.is_empty() => {
                eprintln!("tail: give at least one channel after {url}");
                2
            }
            Some(url) => tail(&url, &channels, &args, None).await,
            None => demo(channels, &args).await,
        };
        std::process::exit(code);
    }

    /// What the demo keeps score of.
    #[derive(Default)]
    struct Score {
        received: u64,
        lost: u64,
        out_of_order: u64,
        resets: u64,
        /// Per channel, the publisher's counter of the last event seen.
        last: std::collections::HashMap<String, u64>,
    }

    async fn tail(url: &str, channels: &[String], args: &Args, demo: Option<&Demo>) -> i32 {
        let transports = match args.transport.as_str() {
            "auto" => Transport::ALL.to_vec(),
            one => vec![one.parse::<Transport>().expect("validated by clap")],
        };
        let mut builder = Client::builder(url).transports(&transports);
        if let Some(token) = &args.token {
            builder = builder.token(token);
        }
        if let Some(path) = &args.root_cert {
            use rustls::pki_types::{CertificateDer, pem::PemObject};
            let certs = match CertificateDer::pem_file_iter(path).and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            {
                Ok(certs) if !certs.is_empty() => certs,
                Ok(_) => {
                    eprintln!("tail: {}: no certificate in the file", path.display());
                    return 2;
                }
                Err(e) => {
                    eprintln!("tail: {}: {e}", path.display());
                    return 2;
                }
            };
            for cert in certs {
                builder = builder.add_root_certificate(cert.to_vec());
            }
        }
        let client = match builder.build() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("tail: {e}");
                return 2;
            }
        };
        let mut states = client.states();
        let mut subs = SelectAll::new();
        for ch in channels {
            let start = demo.and_then(|d| d.starts.iter().find(|(c, _)| c == ch)).map(|(_, id)| id);
            let sub = match args.from.as_ref().or(start) {
                Some(from) => client.subscribe_from(ch, from).await,
                None => client.subscribe(ch).await,
            };
            match sub {
                Ok(s) => subs.push(s),
                Err(e) => {
                    eprintln!("tail: cannot subscribe to {ch:?}: {e}");
                    return 2;
                }
            }
        }
        let mut out = std::io::stdout().lock();
        let mut score = Score::default();
        let mut state = client.state();
        let mut events = 0u64;
        let status_tty = demo.is_some() && std::io::stderr().is_terminal();
        // When events and the status line share a terminal, each event erases the
        // status line, which is then drawn again below it.
        let shared_screen = status_tty && std::io::stdout().is_terminal();
        let mut last_draw = std::time::Instant::now() - Duration::from_secs(1);
        loop {
            tokio::select! {
                msg = subs.next() => {
                    let line = match msg {
                        None => return 0,
                        Some(Err(e)) => {
                            if status_tty { eprintln!(); }
                            eprintln!("tail: {e}");
                            return 1;
                        }
                        Some(Ok(Message::Event(ev))) => {
                            events += 1;
                            if demo.is_some() { score.check(&ev.channel, &ev.data); }
                            serde_json::json!({"channel": ev.channel, "id": ev.id, "event": ev.event_type(), "data": ev.data})
                        }
                        Some(Ok(Message::Reset { channel, reason, .. })) => {
                            score.resets += 1;
                            score.last.remove(&channel);
                            serde_json::json!({"channel": channel, "reset": reason.as_str()})
                        }
                        Some(Ok(_)) => continue,
                    };
                    if shared_screen { eprint!("\r\x1b[2K"); }
                    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                        return 0; // stdout closed (e.g. piped into head)
                    }
                    if args.count.is_some_and(|n| events >= n) {
                        client.close().await;
                        return 0;
                    }
                }
                Some(s) = states.next() => {
                    state = s;
                    if !status_tty { eprintln!("tail: {state}"); }
                    if let ConnectionState::Closed { error: Some(e) } = &state {
                        if status_tty { eprintln!(); }
                        eprintln!("tail: stopped: {e}");
                        return 1;
                    }
                }
            }
            if let Some(d) = demo
                && status_tty
                && (shared_screen || last_draw.elapsed() >= Duration::from_millis(100))
            {
                last_draw = std::time::Instant::now();
                let st = client.stats();
                eprint!(
                    "\r\x1b[2K\x1b[1mreceived {}\x1b[0m · replayed {} · duplicates suppressed {} · \x1b[1mlost {}\x1b[0m · resets {} · faults {} (last: {}) · {}",
                    score.received,
                    st.replayed,
                    st.duplicates,
                    score.lost + score.out_of_order,
                    score.resets,
                    d.faults(),
                    d.last_fault(),
                    state
                );
            }
        }
    }

    impl Score {
        /// The demo publisher numbers its events 1, 2, 3… per channel: anything
        /// but the next number is a loss or a reordering.
        fn check(&mut self, channel: &str, data: &str) {
            self.received += 1;
            let Some(n) = serde_json::from_str::<serde_json::Value>(data).ok().and_then(|v| v["n"].as_u64()) else {
                return;
            };
            match self.last.insert(channel.to_owned(), n) {
                Some(prev) if n == prev + 1 => {}
                Some(prev) if n > prev + 1 => self.lost += n - prev - 1,
                Some(_) => self.out_of_order += 1,
                None => {}
            }
        }
    }

    /// The embedded fixture, its publisher and its fault schedule.
    struct Demo {
        fixture: std::sync::Arc<Fixture>,
        faults: std::sync::Arc<std::sync::Mutex<(u64, &'static str)>>,
        /// Each channel's position before its first event: the demo
        /// subscribes from there, so that event 1 is the first shown.
        starts: Vec<(String, String)>,
    }

    impl Demo {
        fn faults(&self) -> u64 {
            self.faults.lock().unwrap().0
        }
        fn last_fault(&self) -> &'static str {
            self.faults.lock().unwrap().1
        }
    }

    async fn demo(mut channels: Vec<String>, args: &Args) -> i32 {
        if channels.is_empty() {
            channels = vec!["prices".into(), "chat".into()];
        }
        let cfg = FixtureConfig { heartbeat: Duration::from_millis(1000), ..FixtureConfig::default() };
        let fixture = match Fixture::start_with("127.0.0.1:0".parse().unwrap(), cfg).await {
            Ok(f) => f,
            Err(e) => {
                eprintln!("tail: cannot start the embedded fixture: {e}");
                return 1;
            }
        };
        let url = fixture.url();
        eprintln!(
            "tail: embedded fixture at {url}; publishing to {channels:?} with a fault every few seconds (Ctrl-C to stop)"
        );
        let faults = std::sync::Arc::new(std::sync::Mutex::new((0u64, "none")));
        let starts = channels.iter().map(|ch| (ch.clone(), fixture.head(ch))).collect();
        let demo = Demo { fixture: std::sync::Arc::new(fixture), faults: faults.clone(), starts };
        // The publisher: ~25 events a second per channel, numbered per channel.
        {
            let fixture = demo.fixture.clone();
            let channels = channels.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(40));
                for n in 1u64.. {
                    tick.tick().await;
                    for ch in &channels {
                        let data = format!("{{\"n\":{n},\"price\":{}.{:02}}}", 100 + n % 17, n % 100);
                        let _ = fixture.publish(ch, None, &data);
                    }
                }
            });
        }
        // The faults: abrupt drop, stall (half-open connection), 503 + Retry-After.
        {
            let fixture = demo.fixture.clone();
            tokio::spawn(async move {
                let schedule: [&'static str; 3] = ["drop", "stall", "503"];
                for i in 0usize.. {
                    tokio::time::sleep(Duration::from_secs(7)).await;
                    let kind = schedule[i % schedule.len()];
                    match kind {
                        "drop" => {
                            fixture.drop_connections();
                        }
                        "stall" => {
                            fixture.stall();
                        }
                        _ => {
                            fixture.set_unavailable(1, Some(2));
                            fixture.drop_connections();
                        }
                    }
                    *faults.lock().unwrap() = (i as u64 + 1, kind);
                }
            });
        }
        tail(&url, &channels, args, Some(&demo)).await
    }

    /// `--plain-sse URL`: a standard SSE endpoint, ids opaque.
    async fn plain(url: &str, args: &Args) -> i32 {
        let mut builder = PlainSse::builder(url);
        if let Some(from) = &args.from {
            builder = builder.last_event_id(from);
        }
        let mut stream = match builder.build() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("tail: {e}");
                return 2;
            }
        };
        let mut states = stream.states();
        let mut out = std::io::stdout().lock();
        let mut events = 0u64;
        loop {
            tokio::select! {
                item = stream.next() => match item {
                    None => return 0,
                    Some(Err(e)) => {
                        eprintln!("tail: stopped: {e}");
                        return if matches!(e, resub::Error::EndOfStream) { 0 } else { 1 };
                    }
                    Some(Ok(ev)) => {
                        events += 1;
                        let line = serde_json::json!({"id": ev.id, "event": ev.event, "data": ev.data});
                        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                            return 0;
                        }
                        if args.count.is_some_and(|n| events >= n) {
                            stream.close().await;
                            return 0;
                        }
                    }
                },
                Some(s) = states.next() => eprintln!("tail: {s}"),
            }
        }
    }
}
