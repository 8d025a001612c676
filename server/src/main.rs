//! `resub-server`: serves the resub protocol until SIGTERM or Ctrl-C, then
//! drains.
//!
//! The first line on stdout is `listening on http://ADDR` (`https://` with
//! TLS), printed once the listener is bound; with `--metrics-addr`, the
//! second is `metrics on http://ADDR`. Logs go to stderr, filtered by
//! `RUST_LOG` (default `info`); `--log-format json` writes one JSON object
//! per line.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use resub_server::{Authorizer, Config, Hub, JwtAuthorizer, Limits, NodeArgs, Server, TlsIdentity};
use tracing_subscriber::EnvFilter;

/// The resub protocol server: WebSocket, SSE and long polling with resume,
/// on one node or many sharing Redis.
#[derive(Debug, Parser)]
#[command(name = "resub-server", version, about)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Verify HS256 tokens with the secret in FILE.
    #[arg(long, value_name = "FILE", conflicts_with = "jwt_public_key")]
    jwt_secret_file: Option<PathBuf>,
    /// Verify RS256 or ES256 tokens with the PEM public key in FILE.
    #[arg(long, value_name = "FILE")]
    jwt_public_key: Option<PathBuf>,
    /// With a token verifier: also require this `aud` claim.
    #[arg(long, value_name = "AUD")]
    jwt_audience: Option<String>,
    /// With a token verifier: also require this `iss` claim.
    #[arg(long, value_name = "ISS")]
    jwt_issuer: Option<String>,
    /// Serve without authentication on a non-loopback address: anyone who
    /// reaches it may subscribe and publish on every channel.
    #[arg(long)]
    anonymous: bool,
    /// Serve Prometheus metrics, `/healthz` and `/readyz` on this address.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// On SIGTERM, how long connected clients get to leave before the rest
    /// are closed, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    drain_ms: u64,
    #[command(flatten)]
    node: NodeArgs,
    /// Most open connections (WebSocket, SSE and held polls together).
    #[arg(long, default_value_t = Limits::default().max_connections)]
    max_connections: usize,
    /// Most subscriptions per connection.
    #[arg(long, default_value_t = Limits::default().max_subscriptions)]
    max_subscriptions: usize,
    /// Largest event data a publish may carry, in bytes.
    #[arg(long, default_value_t = Limits::default().max_payload)]
    max_payload: usize,
    /// Publishes per second per WebSocket connection (0: unlimited).
    #[arg(long, default_value_t = Limits::default().publish_rate)]
    publish_rate: u32,
    /// Serve HTTPS and WSS with this PEM certificate chain.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of `--tls-cert`.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter);
    match args.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err}");
            ExitCode::FAILURE
        }
    }
}

fn authorizer(args: &Args) -> Result<Option<Arc<dyn Authorizer>>, String> {
    let jwt = match (&args.jwt_secret_file, &args.jwt_public_key) {
        (Some(file), _) => JwtAuthorizer::hs256_file(file),
        (None, Some(file)) => JwtAuthorizer::public_key_file(file),
        (None, None) => return Ok(None),
    };
    let mut jwt = jwt.map_err(|e| e.to_string())?;
    if let Some(aud) = &args.jwt_audience {
        jwt = jwt.with_audience(&[aud]);
    }
    if let Some(iss) = &args.jwt_issuer {
        jwt = jwt.with_issuer(&[iss]);
    }
    Ok(Some(Arc::new(jwt)))
}

async fn run(args: Args) -> Result<(), String> {
    let authorizer = authorizer(&args)?;
    resub_server::exposure_check(&args.addr, authorizer.is_some(), args.anonymous)?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let read = |p: &PathBuf| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
            Some(TlsIdentity::from_pem(&read(cert)?, &read(key)?).map_err(|e| e.to_string())?)
        }
        _ => None,
    };
    let cfg = Config {
        tls,
        authorizer,
        limits: Limits {
            max_connections: args.max_connections,
            max_subscriptions: args.max_subscriptions,
            max_payload: args.max_payload,
            publish_rate: args.publish_rate,
        },
        ..args.node.apply(Config::default())
    };
    let auth = if cfg.authorizer.is_some() { "jwt" } else { "anonymous" };
    let hub = Hub::new(cfg).await.map_err(|e| format!("cannot start: {e}"))?;
    let server = Server::start(args.addr, hub.clone(), Server::app(&hub))
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.addr))?;
    print_line(&format!("listening on {}", server.url()));
    let metrics = match args.metrics_addr {
        Some(addr) => {
            let listener =
                tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("cannot listen on {addr}: {e}"))?;
            let local = listener.local_addr().map_err(|e| e.to_string())?;
            print_line(&format!("metrics on http://{local}"));
            let app = resub_server::metrics_router(hub.clone());
            Some(tokio::spawn(async move { axum::serve(listener, app).await }))
        }
        None => None,
    };
    tracing::info!(addr = %server.addr(), auth, redis = args.node.redis.is_some(), "serving");
    wait_for_signal().await;
    tracing::info!(drain_ms = args.drain_ms, "shutting down: telling clients to reconnect");
    server.shutdown(Duration::from_millis(args.drain_ms)).await;
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    Ok(())
}

/// Prints a line on stdout at once: tools wait for the address.
fn print_line(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// SIGTERM (how orchestrators stop a process) or Ctrl-C.
async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(err) => {
                tracing::warn!(%err, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
