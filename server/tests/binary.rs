//! The `resub-server` binary as an operator runs it: its first line, its
//! refusal to serve everyone without being told to, its metrics address, and
//! SIGTERM telling connected clients to go elsewhere before it exits.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const DEADLINE: Duration = Duration::from_secs(20);

/// Kills the process when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn server(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_resub-server"));
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).env("RUST_LOG", "warn");
    cmd
}

/// Starts the server and reads its first `lines` stdout lines.
fn start(args: &[&str], lines: usize) -> (Running, Vec<String>) {
    let mut child = server(args).spawn().expect("the binary runs");
    let stdout = child.stdout.take().unwrap();
    let mut reader = BufReader::new(stdout);
    let mut out = Vec::new();
    for _ in 0..lines {
        let mut line = String::new();
        reader.read_line(&mut line).expect("a line");
        out.push(line.trim_end().to_owned());
    }
    (Running(child), out)
}

#[test]
fn a_public_address_without_auth_is_refused_unless_anonymous() {
    let out = server(&["--addr", "0.0.0.0:0"]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--anonymous"), "says how: {stderr}");
    assert!(out.stdout.is_empty(), "never listened");

    let (_server, lines) = start(&["--addr", "0.0.0.0:0", "--anonymous"], 1);
    assert!(lines[0].starts_with("listening on http://0.0.0.0:"), "{lines:?}");
    let (_server, lines) = start(&["--addr", "127.0.0.1:0"], 1);
    assert!(lines[0].starts_with("listening on http://127.0.0.1:"), "loopback needs no flag: {lines:?}");
}

#[test]
fn a_missing_or_empty_secret_file_stops_the_server_at_start() {
    let dir = std::env::temp_dir().join(format!("resub-binary-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty");
    std::fs::write(&empty, "\n").unwrap();
    for file in [dir.join("absent"), empty] {
        let out = server(&["--addr", "127.0.0.1:0", "--jwt-secret-file", file.to_str().unwrap()]).output().unwrap();
        assert!(!out.status.success(), "{file:?}");
        assert!(out.stdout.is_empty());
    }
}

fn hs256(secret: &[u8], claims: serde_json::Value) -> String {
    use jsonwebtoken::{EncodingKey, Header};
    jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(secret)).unwrap()
}

async fn get(addr: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(DEADLINE, s.read_to_string(&mut out)).await.unwrap().unwrap();
    let status = out.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

#[tokio::test]
async fn sigterm_tells_connected_clients_to_reconnect_and_exits() {
    let dir = std::env::temp_dir().join(format!("resub-binary-term-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").unwrap();
    let (server, lines) = start(
        &[
            "--addr",
            "127.0.0.1:0",
            "--jwt-secret-file",
            secret.to_str().unwrap(),
            "--metrics-addr",
            "127.0.0.1:0",
            "--drain-ms",
            "5000",
        ],
        2,
    );
    let base = lines[0].strip_prefix("listening on http://").expect("first line").to_owned();
    let metrics = lines[1].strip_prefix("metrics on http://").expect("second line").to_owned();

    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    // The secret file's trailing newline is not part of the secret.
    let token = hs256(b"0123456789abcdef0123456789abcdef", serde_json::json!({ "exp": now + 60, "subscribe": ["t"] }));
    let mut request = format!("ws://{base}/ws").into_client_request().unwrap();
    request.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.expect("the token is accepted");
    ws.send(Message::Text(r#"{"type":"subscribe","channel":"t"}"#.into())).await.unwrap();
    // welcome, then subscribed.
    for want in ["welcome", "subscribed"] {
        let msg = tokio::time::timeout(DEADLINE, ws.next()).await.unwrap().unwrap().unwrap();
        assert!(msg.to_text().unwrap().contains(want), "{msg:?}");
    }
    let (status, text) = get(&metrics, "/metrics").await;
    assert_eq!(status, 200);
    assert!(text.contains("resub_connections{transport=\"ws\"} 1"), "{text}");

    // Without a token the connection is refused.
    let refused = tokio_tungstenite::connect_async(format!("ws://{base}/ws")).await;
    assert!(refused.is_err(), "no token, no connection");

    let pid = server.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let close = loop {
        match tokio::time::timeout(DEADLINE, ws.next()).await.expect("told in time") {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close.map(|f| u16::from(f.code)), Some(1012), "reconnect at once");
    drop(ws);
    let status = tokio::task::spawn_blocking(move || {
        let mut running = server;
        running.0.wait()
    })
    .await
    .unwrap()
    .unwrap();
    assert!(status.success(), "exits cleanly after the drain: {status:?}");
}
