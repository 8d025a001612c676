//! [`Server`]: a hub served on its own listener, plain or TLS, with a
//! graceful shutdown.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::HeaderValue;
use axum::http::header::CONTENT_TYPE;
use axum::middleware::map_response;
use axum::response::Response;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower_http::services::ServeDir;

use crate::hub::Hub;
use crate::tls;

/// How long after its last answer a long-polling client is expected back.
const POLL_RETURN: Duration = Duration::from_secs(1);

/// Whether a server without authentication may listen on `addr`: only on a
/// loopback address, unless `anonymous` says that anyone reaching the
/// address may subscribe and publish on every channel. The binary refuses
/// to start when this fails.
pub fn exposure_check(addr: &SocketAddr, authenticated: bool, anonymous: bool) -> Result<(), String> {
    if authenticated || anonymous || addr.ip().is_loopback() {
        return Ok(());
    }
    Err(format!(
        "refusing to serve {addr} without authentication: anyone reaching it could read and publish on every \
         channel. Configure a token verifier (--jwt-secret-file or --jwt-public-key), listen on a loopback \
         address, or pass --anonymous to accept that."
    ))
}

/// A hub served on a listener of its own.
///
/// Dropping it stops the server abruptly; [`Server::shutdown`] stops it
/// gracefully.
pub struct Server {
    hub: Hub,
    addr: SocketAddr,
    tls: bool,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Server {
    /// The application a standalone server serves for `hub`: the protocol's
    /// [`crate::router`] at the root and, with [`crate::Config::static_dir`],
    /// the directory's files for every other path.
    pub fn app(hub: &Hub) -> Router {
        let router = crate::router(hub.clone());
        match &hub.config().static_dir {
            // Only paths that no route matches reach the files.
            Some(dir) => router.fallback_service(
                Router::new().fallback_service(ServeDir::new(dir)).layer(map_response(javascript_type)),
            ),
            None => router,
        }
    }

    /// Binds `addr` and serves `app` (usually [`Server::app`], maybe with
    /// routes of the caller's own) for `hub`, over TLS when
    /// [`crate::Config::tls`] is set. Must be called within a Tokio runtime.
    ///
    /// An identity that rustls refuses fails with
    /// [`std::io::ErrorKind::InvalidInput`].
    pub async fn start(addr: SocketAddr, hub: Hub, app: Router) -> std::io::Result<Server> {
        let tls_config = match &hub.config().tls {
            Some(identity) => Some(
                identity
                    .server_config()
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?,
            ),
            None => None,
        };
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let signal = async move {
            let _ = stopped.await;
        };
        let tls = tls_config.is_some();
        let task = match tls_config {
            Some(config) => {
                let failures = Arc::clone(&hub.shared().tls_failures);
                let listener = tls::TlsListener::new(listener, config, failures)?;
                tokio::spawn(async move {
                    if let Err(err) = axum::serve(listener, app).with_graceful_shutdown(signal).await {
                        tracing::error!(%err, "server failed");
                    }
                })
            }
            None => tokio::spawn(async move {
                // Frames are small writes: without TCP_NODELAY the second of
                // two (a `subscribed` after a `welcome`) can wait 40 ms for a
                // delayed ACK.
                let listener = listener.tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                });
                if let Err(err) = axum::serve(listener, app).with_graceful_shutdown(signal).await {
                    tracing::error!(%err, "server failed");
                }
            }),
        };
        tracing::debug!(%addr, "listening");
        Ok(Server { hub, addr, tls, stop: Some(stop), task: Some(task) })
    }

    /// The address the server is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL, `http://IP:PORT` (`https://` with TLS; no trailing
    /// slash). The WebSocket endpoint is `ws://IP:PORT/ws` (`wss://`).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The hub it serves.
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Stops gracefully, as on SIGTERM: `/readyz` turns `503` and every
    /// connected client is told to reconnect at once, elsewhere if it can
    /// (see [`Hub::drain`]); handshakes that still arrive are told the same.
    /// Once every connection has ended, or `drain` has passed, the listener
    /// closes, whatever is left is closed, and in-flight requests get what
    /// remains of `drain` to finish.
    pub async fn shutdown(mut self, drain: Duration) {
        let deadline = tokio::time::Instant::now() + drain;
        let told = self.hub.drain();
        if tokio::time::timeout_at(deadline, self.hub.drained()).await.is_err() {
            tracing::warn!(told, left = self.hub.stats().connections_open, "drain time over; closing the rest");
        }
        // A long-polling client has no connection between two polls: one
        // answered lately comes back, and is told to go rather than finding
        // the port closed.
        let last_poll = *self.hub.shared().last_poll.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(at) = last_poll {
            let linger = tokio::time::Instant::from_std(at) + POLL_RETURN;
            tokio::time::sleep_until(linger.min(deadline)).await;
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.hub.close();
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            // Whatever is in flight gets the rest of the drain time, and at
            // least a moment to write its answer.
            let grace = deadline.max(tokio::time::Instant::now() + Duration::from_millis(100));
            if tokio::time::timeout_at(grace, task).await.is_err() {
                tracing::warn!("in-flight requests did not finish; aborting");
                abort.abort();
            }
        }
        tracing::info!("stopped");
    }

    /// Stops at once: every connection is dropped without a word (clients
    /// reconnect with backoff), then in-flight requests get up to `grace`.
    pub async fn stop(mut self, grace: Duration) {
        self.hub.close();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(grace, task).await.is_err() {
                tracing::warn!("in-flight requests did not finish; aborting the server");
                abort.abort();
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            self.hub.close();
            let _ = stop.send(());
        }
    }
}

/// Answers JavaScript as `text/javascript` (RFC 9239), whatever the extension
/// (`.js`, `.mjs`), instead of the older `application/javascript`.
async fn javascript_type(mut response: Response) -> Response {
    let headers = response.headers_mut();
    if headers.get(CONTENT_TYPE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"application/javascript")) {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/javascript"));
    }
    response
}
