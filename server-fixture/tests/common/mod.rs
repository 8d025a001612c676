//! Helpers shared by the HTTP transport tests: fixtures, a one-shot HTTP/1.1
//! client, and a streaming HTTP/1.1 client that decodes chunked bodies and
//! splits them into SSE blocks.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use resub_fixture::{Fixture, FixtureConfig};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

/// Upper bound for anything the tests wait for.
pub const WAIT: Duration = Duration::from_secs(10);

/// A fixture whose heartbeat is long enough not to interleave pings.
pub async fn quiet_fixture() -> Fixture {
    fixture_with(FixtureConfig { heartbeat: Duration::from_secs(600), ..FixtureConfig::default() }).await
}

pub async fn fixture_with(cfg: FixtureConfig) -> Fixture {
    Fixture::start_with(SocketAddr::from(([127, 0, 0, 1], 0)), cfg).await.expect("fixture starts")
}

/// Waits until `cond` holds, checking it every few milliseconds.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The epoch of an event id.
pub fn epoch_of(id: &str) -> &str {
    id.rsplit_once('-').expect("an event id").0
}

pub struct HttpReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

fn request_head(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body_len: usize) -> String {
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {body_len}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`); the raw
/// bytes read until the server closed the connection, or the read error.
pub async fn raw_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Vec<u8>> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let head = request_head(addr, method, path, headers, body.len());
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok(raw)
    };
    timeout(WAIT, exchange).await.expect("HTTP request timed out")
}

/// One HTTP/1.1 request with a body of known length (not chunked).
pub async fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpReply {
    let raw = raw_request(addr, method, path, headers, body).await.expect("a reply");
    let text = String::from_utf8(raw).expect("UTF-8 reply");
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete reply");
    let mut lines = head.lines();
    let status =
        lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse().ok()).expect("a status line");
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned())).collect();
    if let Some(len) = find_header(&headers, "content-length") {
        assert_eq!(len.parse::<usize>().ok(), Some(body.len()), "truncated body");
    }
    HttpReply { status, headers, body: body.to_owned() }
}

pub async fn get(addr: SocketAddr, path: &str) -> HttpReply {
    http(addr, "GET", path, &[], b"").await
}

pub async fn post(addr: SocketAddr, path: &str) -> HttpReply {
    http(addr, "POST", path, &[], b"").await
}

/// How a streamed body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The last chunk (`0\r\n\r\n`) arrived.
    Clean,
    /// The connection closed or failed before the last chunk.
    Abrupt,
}

/// One SSE block: the lines up to a blank line, without their line endings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub lines: Vec<String>,
    /// The bytes of the block as received, blank line included.
    pub raw: Vec<u8>,
}

impl Block {
    /// The values of the non-comment lines named `name`, with the single
    /// space after the colon removed, as an SSE parser does.
    pub fn field(&self, name: &str) -> Vec<&str> {
        self.lines
            .iter()
            .filter_map(|line| {
                let (field, value) = line.split_once(':').unwrap_or((line.as_str(), ""));
                (field == name).then(|| value.strip_prefix(' ').unwrap_or(value))
            })
            .collect()
    }

    /// The event's data: its `data` lines joined with `\n`.
    pub fn data(&self) -> String {
        self.field("data").join("\n")
    }

    /// The `id` field, if any.
    pub fn id(&self) -> Option<&str> {
        self.field("id").last().copied()
    }

    /// The comment lines (starting with `:`).
    pub fn comments(&self) -> Vec<&str> {
        self.lines.iter().filter(|l| l.starts_with(':')).map(String::as_str).collect()
    }

    /// Whether every line is a comment.
    pub fn is_comment(&self) -> bool {
        self.lines.iter().all(|l| l.starts_with(':'))
    }

    /// The `data` line decoded as a server frame.
    pub fn frame(&self) -> resub::protocol::ServerFrame {
        let data = self.data();
        serde_json::from_str(&data).unwrap_or_else(|err| panic!("bad frame {data:?}: {err}"))
    }
}

/// A streaming HTTP/1.1 client for `text/event-stream` answers.
pub struct SseClient {
    reader: BufReader<TcpStream>,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    chunked: bool,
    body: Vec<u8>,
    ended: Option<End>,
}

impl SseClient {
    /// Sends `GET path` and reads the status line and headers.
    pub async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> SseClient {
        let open = async {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            let mut head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
            for (name, value) in headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            head.push_str("\r\n");
            stream.write_all(head.as_bytes()).await.expect("write head");
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            reader.read_line(&mut line).await.expect("status line");
            let status = line
                .split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("bad status line {line:?}"));
            let mut headers = Vec::new();
            loop {
                line.clear();
                reader.read_line(&mut line).await.expect("header line");
                let trimmed = line.trim_end();
                if trimmed.is_empty() {
                    break;
                }
                let (k, v) = trimmed.split_once(':').expect("a header");
                headers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
            let chunked = find_header(&headers, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
            SseClient { reader, status, headers, chunked, body: Vec::new(), ended: None }
        };
        timeout(WAIT, open).await.expect("response head timed out")
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// Reads one more piece of the body; false once the body has ended.
    async fn fill(&mut self) -> bool {
        if self.ended.is_some() {
            return false;
        }
        let end = if self.chunked {
            self.read_chunk().await
        } else {
            let mut buf = [0u8; 4096];
            match self.reader.read(&mut buf).await {
                Ok(0) | Err(_) => Some(End::Abrupt),
                Ok(n) => {
                    self.body.extend_from_slice(&buf[..n]);
                    None
                }
            }
        };
        self.ended = end;
        end.is_none()
    }

    async fn read_chunk(&mut self) -> Option<End> {
        let mut line = String::new();
        match self.reader.read_line(&mut line).await {
            Ok(0) | Err(_) => return Some(End::Abrupt),
            Ok(_) => {}
        }
        let size = line.trim_end().split(';').next().unwrap_or_default();
        let Ok(size) = usize::from_str_radix(size, 16) else {
            return Some(End::Abrupt);
        };
        if size == 0 {
            // Trailers, then the blank line.
            loop {
                line.clear();
                match self.reader.read_line(&mut line).await {
                    Ok(0) | Err(_) => return Some(End::Abrupt),
                    Ok(_) if line.trim_end().is_empty() => return Some(End::Clean),
                    Ok(_) => {}
                }
            }
        }
        let mut chunk = vec![0u8; size + 2];
        if self.reader.read_exact(&mut chunk).await.is_err() || !chunk.ends_with(b"\r\n") {
            return Some(End::Abrupt);
        }
        chunk.truncate(size);
        self.body.extend_from_slice(&chunk);
        None
    }

    /// Takes one complete block from the buffered body, if there is one.
    fn take_block(&mut self) -> Option<Block> {
        let mut lines = Vec::new();
        let mut pos = 0;
        loop {
            let rest = &self.body[pos..];
            let at = rest.iter().position(|&b| b == b'\r' || b == b'\n')?;
            let len = if rest[at] == b'\r' {
                match rest.get(at + 1) {
                    Some(b'\n') => 2,
                    Some(_) => 1,
                    // A lone `\r` at the end may be the start of `\r\n`.
                    None if self.ended.is_none() => return None,
                    None => 1,
                }
            } else {
                1
            };
            let line = String::from_utf8(rest[..at].to_vec()).expect("UTF-8 line");
            pos += at + len;
            if line.is_empty() {
                let raw = self.body.drain(..pos).collect();
                return Some(Block { lines, raw });
            }
            lines.push(line);
        }
    }

    /// The next block; panics when the body ends first or nothing arrives in
    /// time.
    pub async fn next_block(&mut self) -> Block {
        let read = async {
            loop {
                if let Some(block) = self.take_block() {
                    return block;
                }
                if !self.fill().await {
                    panic!("the stream ended ({:?}) before a full block", self.ended);
                }
            }
        };
        timeout(WAIT, read).await.expect("timed out waiting for a block")
    }

    /// The next block that is not only comments.
    pub async fn next_event(&mut self) -> Block {
        loop {
            let block = self.next_block().await;
            if !block.is_comment() {
                return block;
            }
        }
    }

    /// The next block with a `data` line, as a server frame, skipping comment
    /// heartbeats.
    pub async fn next_frame(&mut self) -> resub::protocol::ServerFrame {
        self.next_event().await.frame()
    }

    /// Waits until the unread body holds `pattern`.
    pub async fn wait_for(&mut self, pattern: &[u8]) {
        let read = async {
            while !self.body.windows(pattern.len()).any(|w| w == pattern) {
                if !self.fill().await {
                    panic!("the stream ended ({:?}) before {pattern:?}", self.ended);
                }
            }
        };
        timeout(WAIT, read).await.expect("timed out waiting for bytes");
    }

    /// Waits for the body to end, discarding what arrives; returns how it
    /// ended.
    pub async fn end(&mut self) -> End {
        let read = async {
            while self.fill().await {}
            self.ended.expect("ended")
        };
        timeout(WAIT, read).await.expect("the stream did not end")
    }

    /// Whether anything arrives within `window`: a body byte, or the end.
    pub async fn silent_for(&mut self, window: Duration) -> bool {
        if !self.body.is_empty() || self.ended.is_some() {
            return false;
        }
        timeout(window, self.fill()).await.is_err()
    }
}

/// Starts a fixture node on Redis (heartbeat 500 ms) under `prefix`, with
/// `more` arguments; see [`start_binary`].
pub async fn start_redis_node(
    redis: &resub_fixture::RedisServer,
    prefix: &str,
    more: &[&str],
) -> (tokio::process::Child, SocketAddr) {
    let url = redis.url();
    let mut args = vec!["--addr", "127.0.0.1:0", "--heartbeat-ms", "500", "--redis", &url, "--redis-prefix", prefix];
    args.extend_from_slice(more);
    start_binary(&args).await
}

/// Starts the fixture binary with `args` and reads its first line,
/// `listening on http://ADDR`; the child is killed when dropped.
pub async fn start_binary(args: &[&str]) -> (tokio::process::Child, SocketAddr) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_resub-fixture"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    tokio::time::timeout(std::time::Duration::from_secs(20), BufReader::new(stdout).read_line(&mut line))
        .await
        .expect("timed out waiting for the first line")
        .expect("read stdout");
    let addr: SocketAddr = line
        .trim_end()
        .strip_prefix("listening on http://")
        .or_else(|| line.trim_end().strip_prefix("listening on https://"))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    (child, addr)
}
