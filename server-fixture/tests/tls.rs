//! The fixture over TLS: `--tls` serves HTTPS with a self-signed certificate
//! it writes out for clients to trust, and counts refused handshakes.

mod common;

use std::sync::Arc;

use common::{WAIT, start_binary};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `GET path` over TLS trusting `root`; the whole answer.
async fn https_get(addr: std::net::SocketAddr, root: CertificateDer<'static>, path: &str) -> String {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let exchange = async {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        let head = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        tls.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        // A peer closing without close_notify is an error in rustls; what was
        // read before it is the answer.
        let _ = tls.read_to_end(&mut answer).await;
        String::from_utf8(answer).unwrap()
    };
    tokio::time::timeout(WAIT, exchange).await.expect("the HTTPS request timed out")
}

#[tokio::test]
async fn tls_flag_serves_https_with_a_certificate_written_for_clients() {
    let dir = std::env::temp_dir().join(format!("resub-fixture-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = dir.join("cert.pem");
    let (mut child, addr) =
        start_binary(&["--addr", "127.0.0.1:0", "--tls", "--tls-cert-out", cert.to_str().unwrap()]).await;
    let root = CertificateDer::from_pem_file(&cert).expect("a PEM certificate was written");
    // A plain-HTTP request is a failed handshake; the server goes on.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain.write_all(b"GET /control/stats HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(WAIT, plain.read_to_end(&mut sink)).await.expect("closed after a bad handshake");
    let answer = https_get(addr, root, "/control/stats").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
    let stats: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(stats["tls_failures"], 1, "{stats}");
    child.kill().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
