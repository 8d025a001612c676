//! HTTPS and WSS: a TLS listener for [`axum::serve`], and the server identity
//! (certificate and key) it presents.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes completed but not yet taken by the HTTP server.
const ACCEPT_QUEUE: usize = 64;

/// The certificate chain and private key a TLS fixture presents.
#[derive(Clone)]
pub struct TlsIdentity {
    chain: Vec<CertificateDer<'static>>,
    pem: String,
    key: Arc<PrivateKeyDer<'static>>,
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsIdentity").field("certificates", &self.chain.len()).finish_non_exhaustive()
    }
}

/// Why a [`TlsIdentity`] could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// Generating a self-signed certificate failed.
    #[error("cannot generate a certificate: {0}")]
    Generate(String),
    /// A PEM file could not be read or holds no usable certificate or key.
    #[error("cannot read {what}: {why}")]
    Pem {
        /// Which input: `certificate` or `private key`.
        what: &'static str,
        /// What went wrong.
        why: String,
    },
    /// rustls refused the certificate and key.
    #[error("unusable certificate or key: {0}")]
    Config(String),
}

impl TlsIdentity {
    /// A fresh self-signed certificate (ECDSA P-256) valid for `names`: DNS
    /// names and IP addresses, such as `["localhost", "127.0.0.1"]`. A client
    /// trusts it by adding [`TlsIdentity::certificate_der`] as a root.
    pub fn self_signed(names: &[&str]) -> Result<Self, TlsError> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let certified = rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
        let key = PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
        Ok(Self { chain: vec![certified.cert.der().clone()], pem: certified.cert.pem(), key: Arc::new(key) })
    }

    /// Reads a PEM certificate chain (leaf first) and a PEM private key.
    pub fn from_pem(chain: &str, key: &str) -> Result<Self, TlsError> {
        let pem = chain.to_owned();
        let chain = CertificateDer::pem_slice_iter(chain.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TlsError::Pem { what: "certificate", why: e.to_string() })?;
        if chain.is_empty() {
            return Err(TlsError::Pem { what: "certificate", why: "no CERTIFICATE block".into() });
        }
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes())
            .map_err(|e| TlsError::Pem { what: "private key", why: e.to_string() })?;
        Ok(Self { chain, pem, key: Arc::new(key) })
    }

    /// The leaf certificate, DER-encoded: what a client adds as a trusted
    /// root for a self-signed identity.
    pub fn certificate_der(&self) -> &[u8] {
        &self.chain[0]
    }

    /// The leaf certificate, PEM-encoded (for a self-signed identity, the
    /// file a client such as `curl --cacert` or `tail --root-cert` trusts).
    pub fn certificate_pem(&self) -> &str {
        &self.pem
    }

    pub(crate) fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| TlsError::Config(e.to_string()))?;
        // HTTP/1.1 only: WebSocket upgrades need it.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// A listener whose connections have completed a TLS handshake. Handshakes
/// run in their own tasks, so a client that stalls in one holds up no other.
pub(crate) struct TlsListener {
    addr: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    acceptor: JoinHandle<()>,
}

impl TlsListener {
    /// Accepts on `tcp`, counting failed handshakes in `failures`.
    pub(crate) fn new(
        tcp: TcpListener,
        config: Arc<rustls::ServerConfig>,
        failures: Arc<AtomicU64>,
    ) -> std::io::Result<Self> {
        let addr = tcp.local_addr()?;
        let (tx, ready) = mpsc::channel(ACCEPT_QUEUE);
        let acceptor = TlsAcceptor::from(config);
        let acceptor = tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(ok) => ok,
                    Err(err) => {
                        // Out of descriptors and the like: wait a little rather than spin.
                        tracing::warn!(%err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // Small frames go out at once (see the plain listener).
                let _ = stream.set_nodelay(true);
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                let failures = failures.clone();
                tokio::spawn(async move {
                    // Fallible: the failure is counted before the connection
                    // closes, so a client that sees the close sees the count.
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream).into_fallible()).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err((err, stream))) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%peer, %err, "TLS handshake failed");
                            drop(stream);
                        }
                        Err(_) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                            tracing::debug!(%peer, "TLS handshake timed out");
                        }
                    }
                });
            }
        });
        Ok(Self { addr, ready, acceptor })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The acceptor task is gone only when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}
