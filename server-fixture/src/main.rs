//! `resub-fixture`: runs the reference server until interrupted, or with
//! `--plain-sse` a plain SSE server (not the resub protocol) instead.
//!
//! The first line on stdout is `listening on http://ADDR`, printed once the
//! listener is bound. Logs go to stderr, filtered by `RUST_LOG` (default
//! `info`).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use resub_fixture::{Fixture, FixtureConfig, PlainSse};
use tracing_subscriber::EnvFilter;

/// Reference server for the resub protocol, with fault injection.
#[derive(Debug, Parser)]
#[command(name = "resub-fixture", version, about)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Heartbeat interval in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    heartbeat_ms: u64,
    /// Events retained per channel for replay.
    #[arg(long, default_value_t = 10_000)]
    history: usize,
    /// Capacity of each connection's outbound queue, in frames.
    #[arg(long, default_value_t = 65_536)]
    max_connection_queue: usize,
    /// How long a long poll without `timeout_ms` is held, in milliseconds.
    #[arg(long, default_value_t = 25_000)]
    poll_hold_ms: u64,
    /// Serve the files of DIR for `GET` requests that no route matches (a
    /// directory answers with its `index.html`).
    #[arg(long = "static", value_name = "DIR")]
    static_dir: Option<PathBuf>,
    /// Run only a plain SSE server (not the resub protocol) on `--addr`:
    /// `GET /events`, with `POST /push?id=X&event=Y` (body = data) and
    /// `POST /drop` to control it.
    #[arg(long)]
    plain_sse: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .init();

    if args.plain_sse {
        let server = match PlainSse::start_with(args.addr).await {
            Ok(server) => server,
            Err(err) => {
                tracing::error!(addr = %args.addr, %err, "cannot listen");
                return ExitCode::FAILURE;
            }
        };
        print_address(&server.url());
        wait_for_signal().await;
        tracing::info!("shutting down");
        server.shutdown().await;
        return ExitCode::SUCCESS;
    }

    if let Some(dir) = &args.static_dir {
        if !dir.is_dir() {
            tracing::error!(dir = %dir.display(), "--static is not a directory");
            return ExitCode::FAILURE;
        }
    }
    let cfg = FixtureConfig {
        heartbeat: Duration::from_millis(args.heartbeat_ms),
        history: args.history,
        max_connection_queue: args.max_connection_queue,
        poll_hold: Duration::from_millis(args.poll_hold_ms),
        static_dir: args.static_dir,
        ..FixtureConfig::default()
    };
    let fixture = match Fixture::start_with(args.addr, cfg).await {
        Ok(fixture) => fixture,
        Err(err) => {
            tracing::error!(addr = %args.addr, %err, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    print_address(&fixture.url());

    wait_for_signal().await;
    tracing::info!("shutting down");
    fixture.shutdown().await;
    ExitCode::SUCCESS
}

/// Prints `listening on URL` as the first line of stdout.
fn print_address(url: &str) {
    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "listening on {url}").and_then(|()| stdout.flush()).is_err() {
        tracing::warn!("cannot write the address to stdout");
    }
}

/// Completes on Ctrl-C, or SIGTERM on Unix.
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(err) => {
                tracing::warn!(%err, "cannot watch SIGTERM");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
