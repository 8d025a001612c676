//! `resub-fixture`: runs the reference server until interrupted, or with
//! `--plain-sse` a plain SSE server (not the resub protocol) instead.
//!
//! The first line on stdout is `listening on http://ADDR` (`https://` with
//! `--tls`), printed once the listener is bound. Logs go to stderr, filtered by `RUST_LOG` (default
//! `info`).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use resub_fixture::{Fixture, FixtureConfig, NodeArgs, PlainSse, TlsIdentity};
use tracing_subscriber::EnvFilter;

/// Reference server for the resub protocol, with fault injection.
#[derive(Debug, Parser)]
#[command(name = "resub-fixture", version, about)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    #[command(flatten)]
    node: NodeArgs,
    /// Serve the files of DIR for `GET` requests that no route matches (a
    /// directory answers with its `index.html`).
    #[arg(long = "static", value_name = "DIR")]
    static_dir: Option<PathBuf>,
    /// Run only a plain SSE server (not the resub protocol) on `--addr`:
    /// `GET /events`, with `POST /push?id=X&event=Y` (body = data) and
    /// `POST /drop` to control it.
    #[arg(long)]
    plain_sse: bool,
    /// Serve HTTPS and WSS with a fresh self-signed certificate for
    /// localhost, 127.0.0.1 and ::1 (or with `--tls-cert` and `--tls-key`).
    #[arg(long)]
    tls: bool,
    /// With `--tls`: the PEM certificate chain to present instead of a
    /// self-signed one.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// With `--tls`: the PEM private key of `--tls-cert`.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// With `--tls`: write the certificate (PEM) to FILE before listening,
    /// for clients to trust.
    #[arg(long, value_name = "FILE")]
    tls_cert_out: Option<PathBuf>,
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
    let tls = if args.tls || args.tls_cert.is_some() {
        match tls_identity(&args) {
            Ok(identity) => Some(identity),
            Err(err) => {
                tracing::error!(%err, "cannot set up TLS");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let cfg = FixtureConfig { static_dir: args.static_dir, tls, ..args.node.apply(FixtureConfig::default()) };
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

/// The identity `--tls` asks for; writes its certificate to `--tls-cert-out`.
fn tls_identity(args: &Args) -> Result<TlsIdentity, String> {
    let identity = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let read = |p: &PathBuf| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
            TlsIdentity::from_pem(&read(cert)?, &read(key)?).map_err(|e| e.to_string())?
        }
        _ => TlsIdentity::self_signed(&["localhost", "127.0.0.1", "::1"]).map_err(|e| e.to_string())?,
    };
    if let Some(out) = &args.tls_cert_out {
        std::fs::write(out, identity.certificate_pem()).map_err(|e| format!("{}: {e}", out.display()))?;
    }
    Ok(identity)
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
