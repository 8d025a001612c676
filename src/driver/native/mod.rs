//! Native I/O: tokio tasks, tokio-tungstenite WebSockets, rustls.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};

use super::ConnEvent;
use crate::core::{ConnId, TransportError};

/// What a connection needs besides its URL.
#[derive(Clone)]
pub(crate) struct ConnectOptions {
    pub headers: Vec<(String, String)>,
    pub tls: Arc<rustls::ClientConfig>,
    pub max_frame_bytes: usize,
}

/// A TLS configuration with the webpki roots and, if given, extra roots.
pub(crate) fn tls_config(
    extra_roots: &[Vec<u8>],
) -> Result<Arc<rustls::ClientConfig>, crate::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for der in extra_roots {
        roots
            .add(rustls::pki_types::CertificateDer::from(der.clone()))
            .map_err(|e| crate::Error::Tls(format!("bad root certificate: {e}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| crate::Error::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A running connection: frames to send go in `tx`; dropping it ends the task.
pub(crate) struct ConnHandle {
    tx: mpsc::UnboundedSender<String>,
    task: tokio::task::JoinHandle<()>,
    graceful: bool,
}

impl ConnHandle {
    pub(crate) fn send(&self, text: String) {
        let _ = self.tx.send(text);
    }

    /// Ends the connection with a close handshake instead of cutting it.
    pub(crate) fn close_gracefully(mut self) {
        self.graceful = true;
    }
}

impl Drop for ConnHandle {
    fn drop(&mut self) {
        // Abrupt unless asked otherwise: the core drops connections it
        // considers dead or replaced, and wants nothing more from them.
        // A graceful close lets the task send a close frame (its sender is
        // dropped with this handle) and end by itself.
        if !self.graceful {
            self.task.abort();
        }
    }
}

/// Starts a WebSocket connection task that reports to `events`.
pub(crate) fn connect_websocket(
    conn: ConnId,
    url: String,
    opts: ConnectOptions,
    events: mpsc::Sender<ConnEvent>,
) -> ConnHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let error = run_websocket(conn, &url, &opts, &events, rx).await;
        let _ = events.send(ConnEvent::Closed(conn, error)).await;
    });
    ConnHandle {
        tx,
        task,
        graceful: false,
    }
}

async fn run_websocket(
    conn: ConnId,
    url: &str,
    opts: &ConnectOptions,
    events: &mpsc::Sender<ConnEvent>,
    mut outgoing: mpsc::UnboundedReceiver<String>,
) -> TransportError {
    let mut request = match url.into_client_request() {
        Ok(r) => r,
        Err(e) => return TransportError::Connect(format!("bad URL: {e}")),
    };
    for (name, value) in &opts.headers {
        let (Ok(name), Ok(value)) = (
            name.parse::<tungstenite::http::HeaderName>(),
            HeaderValue::from_str(value),
        ) else {
            return TransportError::Connect(format!("invalid header {name:?}"));
        };
        request.headers_mut().insert(name, value);
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(opts.max_frame_bytes))
        .max_frame_size(Some(opts.max_frame_bytes));
    let connector = tokio_tungstenite::Connector::Rustls(opts.tls.clone());
    let (mut ws, _response) = match tokio_tungstenite::connect_async_tls_with_config(
        request,
        Some(config),
        true,
        Some(connector),
    )
    .await
    {
        Ok(ok) => ok,
        Err(e) => return handshake_error(e),
    };
    if events.send(ConnEvent::Opened(conn)).await.is_err() {
        return TransportError::Lost("driver gone".into());
    }
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(WsMessage::Text(t))) => {
                    if events.send(ConnEvent::Received(conn, t.as_str().to_owned())).await.is_err() {
                        return TransportError::Lost("driver gone".into());
                    }
                }
                Some(Ok(WsMessage::Binary(b))) => match String::from_utf8(b.to_vec()) {
                    Ok(t) => {
                        if events.send(ConnEvent::Received(conn, t)).await.is_err() {
                            return TransportError::Lost("driver gone".into());
                        }
                    }
                    Err(_) => return TransportError::Lost("binary frame that is not UTF-8".into()),
                },
                Some(Ok(WsMessage::Close(frame))) => {
                    return match frame {
                        Some(f) => TransportError::Closed { code: u16::from(f.code), reason: f.reason.as_str().to_owned() },
                        None => TransportError::Closed { code: u16::from(CloseCode::Status), reason: String::new() },
                    };
                }
                Some(Ok(_)) => {} // ping/pong are answered by tungstenite
                Some(Err(e)) => return TransportError::Lost(e.to_string()),
                None => return TransportError::Lost("connection closed without a close frame".into()),
            },
            out = outgoing.recv() => match out {
                Some(text) => {
                    if let Err(e) = ws.send(WsMessage::text(text)).await {
                        return TransportError::Lost(e.to_string());
                    }
                }
                None => {
                    let _ = ws.close(None).await;
                    return TransportError::Lost("closed by client".into());
                }
            },
        }
    }
}

fn handshake_error(e: tungstenite::Error) -> TransportError {
    match e {
        tungstenite::Error::Http(resp) => {
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            TransportError::Status {
                status: resp.status().as_u16(),
                retry_after,
            }
        }
        tungstenite::Error::Tls(e) => TransportError::Tls(e.to_string()),
        tungstenite::Error::Io(e) => {
            let is_tls = e
                .get_ref()
                .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some());
            if is_tls {
                TransportError::Tls(e.to_string())
            } else {
                TransportError::Connect(e.to_string())
            }
        }
        other => TransportError::Connect(other.to_string()),
    }
}
