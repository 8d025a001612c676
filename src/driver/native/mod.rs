//! Native I/O: tokio tasks, tokio-tungstenite WebSockets, hyper, rustls.

mod h1;
mod http_client;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use futures::channel::mpsc as fmpsc;
use futures::future::{AbortHandle, Abortable};
use futures::{FutureExt, SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};

use super::{ConnEvent, EventSender};
use crate::core::{ConnId, PostError, Transport, TransportError};
use crate::protocol::parse_retry_after;
use crate::protocol::sse::{SseError, SseParser, SseRef};

/// What a connection needs besides its URL.
#[derive(Clone)]
pub(crate) struct ConnectOptions {
    /// Sent on every request (checked once, when the client is built).
    pub headers: http::HeaderMap,
    /// Asked for a token before each request, when set.
    pub token: Option<Arc<dyn crate::auth::TokenProvider>>,
    pub tls: Arc<rustls::ClientConfig>,
    /// The HTTP client, made on first use: a client that stays on WebSocket
    /// never pays for one.
    http: Arc<std::sync::OnceLock<http_client::Http>>,
    /// The reader of event streams and long polls, made on first use.
    streams: Arc<std::sync::OnceLock<h1::Streams>>,
    pub max_frame_bytes: usize,
    /// Most bytes a WebSocket connection may hold queued for sending.
    send_queue_bytes: usize,
}

impl ConnectOptions {
    /// Options with these headers on every request and these extra TLS roots.
    pub(crate) fn new(
        headers: &[(String, String)],
        roots: &[Vec<u8>],
        max_frame_bytes: usize,
        send_queue_bytes: usize,
    ) -> Result<Self, crate::Error> {
        let tls = tls_config(roots)?;
        let headers = http_client::header_map(headers)?;
        Ok(Self {
            headers,
            token: None,
            tls,
            http: Arc::default(),
            streams: Arc::default(),
            max_frame_bytes,
            send_queue_bytes,
        })
    }

    /// The HTTP client for the SSE and long-polling transports and HTTP
    /// publishes.
    fn http(&self) -> &http_client::Http {
        self.http.get_or_init(|| http_client::Http::new(&self.tls, self.headers.clone()))
    }

    /// The reader of SSE streams and long polls.
    fn streams(&self) -> &h1::Streams {
        self.streams.get_or_init(|| h1::Streams::new(Arc::clone(&self.tls), self.headers.clone()))
    }
}

/// The `Authorization` value for a request made now, from the token
/// provider (`None` without one: the fixed headers carry any credentials).
/// A provider that fails or hangs counts as refused credentials.
async fn bearer(opts: &ConnectOptions) -> Result<Option<String>, TransportError> {
    let Some(provider) = &opts.token else { return Ok(None) };
    match tokio::time::timeout(crate::core::TOKEN_TIMEOUT, provider.token()).await {
        Ok(Ok(token)) => Ok(Some(format!("Bearer {token}"))),
        Ok(Err(e)) => {
            tracing::warn!(%e, "the token provider failed");
            let why = match e {
                crate::Error::Unavailable(why) => why,
                other => other.to_string(),
            };
            Err(TransportError::NoCredentials(format!("the token provider failed: {why}")))
        }
        Err(_) => {
            tracing::warn!(timeout = ?crate::core::TOKEN_TIMEOUT, "the token provider did not answer in time");
            Err(TransportError::NoCredentials("the token provider did not answer within 10 s".into()))
        }
    }
}

/// Starts a connection (for long polling: one request) on `transport`.
pub(crate) fn connect(
    conn: ConnId,
    transport: Transport,
    url: String,
    opts: &ConnectOptions,
    mut events: EventSender,
) -> ConnHandle {
    let opts = opts.clone();
    match transport {
        Transport::WebSocket => connect_websocket(conn, url, opts, events),
        Transport::Sse | Transport::LongPoll => {
            // Nothing is sent on an HTTP transport's connection.
            ConnHandle::new(None, async move {
                let error = if transport == Transport::Sse {
                    run_sse(conn, &url, &opts, &mut events).await
                } else {
                    run_poll(conn, &url, &opts, &mut events).await
                };
                let _ = events.send(ConnEvent::Closed(conn, error)).await;
            })
        }
    }
}

/// Sends an HTTP publish and reports the result.
/// `GET url` (a server's `/presence/{channel}`): the members it lists. The
/// answer may be [`POLL_BATCH_FACTOR`](crate::core::POLL_BATCH_FACTOR) times
/// the frame limit.
pub(crate) async fn presence(url: &str, opts: &ConnectOptions) -> Result<Vec<crate::Member>, crate::Error> {
    use crate::Error;
    let auth = bearer(opts).await.map_err(|_| Error::Unauthorized)?;
    let headers: Vec<_> = auth.iter().map(|a| (http::header::AUTHORIZATION, a.as_str())).collect();
    let resp = opts.http().send(http::Method::GET, url, &headers, Bytes::new()).await;
    let resp = resp.map_err(|e| Error::Unavailable(error_chain(&*e)))?;
    let status = resp.status().as_u16();
    let limit = opts.max_frame_bytes.saturating_mul(crate::core::POLL_BATCH_FACTOR);
    let mut body = Vec::new();
    let mut stream = resp.into_body();
    while let Some(chunk) = http_client::chunk(&mut stream).await {
        let chunk = chunk.map_err(|e| Error::Unavailable(error_chain(&e)))?;
        if body.len() + chunk.len() > limit {
            return Err(Error::FrameTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    let text = String::from_utf8_lossy(&body);
    crate::core::presence_answer(status, &text)?;
    #[derive(serde::Deserialize)]
    struct Listed {
        client_id: String,
        #[serde(default)]
        data: String,
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        members: Vec<Listed>,
    }
    let answer: Answer = serde_json::from_str(&text).map_err(|e| {
        Error::Unavailable(format!("unexpected presence answer (line {}, column {})", e.line(), e.column()))
    })?;
    Ok(answer.members.into_iter().map(|m| crate::Member { client_id: m.client_id, data: m.data }).collect())
}

pub(crate) fn post(key: String, url: String, data: String, opts: &ConnectOptions, mut events: EventSender) {
    let opts = opts.clone();
    tokio::spawn(async move {
        let result = async {
            // No token now: not applied, posted again later like a failed request.
            let auth = bearer(&opts).await.map_err(|_| PostError::Failed("no token".into()))?;
            let mut headers = vec![
                (http::header::HeaderName::from_static("idempotency-key"), key.as_str()),
                (http::header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            ];
            headers.extend(auth.iter().map(|a| (http::header::AUTHORIZATION, a.as_str())));
            let resp = opts.http().send(http::Method::POST, &url, &headers, Bytes::from(data)).await;
            let resp = resp.map_err(|e| PostError::Failed(error_chain(&*e)))?;
            let status = resp.status().as_u16();
            // An answer is an id (or an error message): anything longer is
            // not read, and the publish is sent again with the same key.
            // An error's message is cut there.
            let mut body = Vec::new();
            let mut stream = resp.into_body();
            while let Some(chunk) = http_client::chunk(&mut stream).await {
                let chunk = chunk.map_err(|e| PostError::Failed(error_chain(&e)))?;
                if body.len() + chunk.len() > crate::core::MAX_POST_ANSWER {
                    if status == 200 {
                        let why = format!("answer over {} bytes", crate::core::MAX_POST_ANSWER);
                        return Err(PostError::Failed(why));
                    }
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            let body = String::from_utf8_lossy(&body);
            if status != 200 {
                return Err(PostError::Status { status, message: body.chars().take(200).collect() });
            }
            #[derive(serde::Deserialize)]
            struct Ack {
                id: String,
            }
            serde_json::from_str::<Ack>(&body)
                .map(|a| a.id)
                .map_err(|e| PostError::Status { status, message: format!("unexpected answer: {e}") })
        }
        .await;
        let _ = events.send(ConnEvent::Posted(key, result)).await;
    });
}

/// Sends the request of an HTTP transport and checks that the answer is the
/// stream or document asked for.
async fn open_http(
    url: &str,
    accept: &str,
    last_event_id: Option<&str>,
    opts: &ConnectOptions,
) -> Result<h1::Answer, TransportError> {
    use http::header;
    let auth = bearer(opts).await?;
    let mut headers = vec![(header::ACCEPT, accept), (header::CACHE_CONTROL, "no-cache")];
    if let Some(id) = last_event_id {
        headers.push((header::HeaderName::from_static("last-event-id"), id));
    }
    headers.extend(auth.iter().map(|a| (header::AUTHORIZATION, a.as_str())));
    let resp = opts.streams().get(url, &headers).await.map_err(http_error)?;
    let (status, ctype) = (resp.head.status, resp.head.header("content-type").unwrap_or(""));
    crate::core::http_answer(status, ctype, resp.head.header("retry-after"), accept)?;
    Ok(resp)
}

async fn run_sse(conn: ConnId, url: &str, opts: &ConnectOptions, events: &mut EventSender) -> TransportError {
    let sink = FrameSink { conn, frames: Vec::new(), bytes: 0, alive: false, failed: false };
    read_sse(url, None, opts, true, events, ConnEvent::Opened(conn), sink).await
}

/// What reads the items of an event stream: `item` for each as the parser
/// completes it (borrowed from the parser), `end` after each chunk; both
/// queue what the loop is to be sent.
pub(crate) trait SseSink {
    /// What the loop is sent.
    type Out;
    /// One item.
    fn item(&mut self, item: SseRef<'_>, out: &mut Vec<Self::Out>);
    /// The chunk's items are all in.
    fn end(&mut self, _out: &mut Vec<Self::Out>) {}
}

/// The frames of a resub event stream, decoded here (off the loop's thread)
/// and sent as one event per chunk (at most [`BURST`] frames each); a frame
/// that does not decode ends the stream's frames, after those before it.
/// Comments alone are a sign of life.
#[cfg_attr(not(feature = "json-decode"), allow(dead_code))]
struct FrameSink {
    conn: ConnId,
    frames: Vec<crate::protocol::ServerFrame>,
    /// The largest message among `frames`.
    bytes: usize,
    alive: bool,
    failed: bool,
}

impl SseSink for FrameSink {
    type Out = ConnEvent;

    #[cfg(feature = "json-decode")]
    fn item(&mut self, item: SseRef<'_>, out: &mut Vec<ConnEvent>) {
        let conn = self.conn;
        match item {
            SseRef::Event { .. } if self.failed => {}
            SseRef::Event { data, .. } => {
                self.bytes = self.bytes.max(data.len());
                if let Err(why) = crate::core::decode_frame_into(data, &mut self.frames) {
                    out.push(ConnEvent::Frames(conn, Ok(std::mem::take(&mut self.frames)), self.bytes));
                    out.push(ConnEvent::Frames(conn, Err(why), data.len()));
                    self.failed = true;
                } else if self.frames.len() == BURST {
                    // Events stay at most BURST frames, which bounds the queue.
                    out.push(ConnEvent::Frames(conn, Ok(std::mem::take(&mut self.frames)), self.bytes));
                    self.bytes = 0;
                }
            }
            SseRef::Retry(_) | SseRef::Comment => self.alive = true,
        }
    }

    /// Without a JSON decoder, the session decodes: one event per item.
    #[cfg(not(feature = "json-decode"))]
    fn item(&mut self, item: SseRef<'_>, out: &mut Vec<ConnEvent>) {
        out.push(match item {
            SseRef::Event { data, .. } => ConnEvent::Received(self.conn, data.to_owned()),
            SseRef::Retry(_) | SseRef::Comment => ConnEvent::Activity(self.conn),
        });
    }

    fn end(&mut self, out: &mut Vec<ConnEvent>) {
        if !self.frames.is_empty() {
            out.push(ConnEvent::Frames(self.conn, Ok(std::mem::take(&mut self.frames)), self.bytes));
        } else if self.alive && out.is_empty() {
            out.push(ConnEvent::Activity(self.conn));
        }
        self.bytes = 0;
        self.alive = false;
    }
}

/// Opens an event stream and sends what `sink` makes of each chunk's items
/// to `events`; returns how the stream ended.
///
/// `strict_utf8` makes invalid UTF-8 end the stream (for the resub protocol,
/// whose servers send UTF-8) instead of being replaced with U+FFFD as plain
/// SSE requires.
pub(crate) async fn read_sse<S: SseSink>(
    url: &str,
    last_event_id: Option<&str>,
    opts: &ConnectOptions,
    strict_utf8: bool,
    events: &mut fmpsc::Sender<S::Out>,
    opened: S::Out,
    mut sink: S,
) -> TransportError {
    let resp = match open_http(url, "text/event-stream", last_event_id, opts).await {
        Ok(r) => r,
        Err(e) => return e,
    };
    if events.send(opened).await.is_err() {
        return TransportError::Lost("driver gone".into());
    }
    let mut parser = SseParser::new(opts.max_frame_bytes);
    if strict_utf8 {
        parser = parser.strict_utf8();
    }
    let mut out = Vec::new();
    let mut body = resp.into_body();
    loop {
        let chunk = match body.chunk().await {
            Some(Ok(c)) => c,
            Some(Err(e)) => return TransportError::Lost(e.to_string()),
            None => return TransportError::Completed,
        };
        let parsed = parser.feed_each(chunk, |item| sink.item(item, &mut out));
        // What the chunk completed before a parse error is sent first.
        sink.end(&mut out);
        for ev in out.drain(..) {
            if events.send(ev).await.is_err() {
                return TransportError::Lost("driver gone".into());
            }
        }
        match parsed {
            Ok(()) => {}
            Err(SseError::TooLarge { limit }) => return TransportError::TooLarge { limit },
            Err(e) => return TransportError::Lost(e.to_string()),
        }
    }
}

async fn run_poll(conn: ConnId, url: &str, opts: &ConnectOptions, events: &mut EventSender) -> TransportError {
    let resp = match open_http(url, "application/json", None, opts).await {
        Ok(r) => r,
        Err(e) => return e,
    };
    if events.send(ConnEvent::Opened(conn)).await.is_err() {
        return TransportError::Lost("driver gone".into());
    }
    let limit = opts.max_frame_bytes.saturating_mul(crate::core::POLL_BATCH_FACTOR);
    let mut body = Vec::new();
    let mut stream = resp.into_body();
    while let Some(chunk) = stream.chunk().await {
        match chunk {
            Ok(c) if body.len() + c.len() <= limit => body.extend_from_slice(c),
            Ok(_) => return TransportError::TooLarge { limit },
            Err(e) => return TransportError::Lost(e.to_string()),
        }
    }
    let Ok(text) = String::from_utf8(body) else {
        return TransportError::Lost("poll response is not UTF-8".into());
    };
    #[cfg(feature = "json-decode")]
    let ev = ConnEvent::Frames(conn, crate::core::decode_text(Transport::LongPoll, &text), text.len());
    #[cfg(not(feature = "json-decode"))]
    let ev = ConnEvent::Received(conn, text);
    if events.send(ev).await.is_err() {
        return TransportError::Lost("driver gone".into());
    }
    TransportError::Completed
}

/// Maps a failed HTTP request: TLS failures are told apart (they stop the
/// client), everything else is a connection failure.
fn http_error(e: http_client::Failure) -> TransportError {
    if caused_by_tls(&*e) {
        return TransportError::Tls(error_chain(&*e));
    }
    TransportError::Connect(error_chain(&*e))
}

/// Whether a rustls error is among `e`'s causes. An `io::Error`'s `source()`
/// skips the error it wraps (and HTTP stacks nest them), so each one is
/// looked inside as well.
fn caused_by_tls(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(err) = source {
        if err.is::<rustls::Error>() {
            return true;
        }
        if let Some(inner) = err.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()) {
            if caused_by_tls(inner) {
                return true;
            }
        }
        source = err.source();
    }
    false
}

/// The error and its sources, joined by `: `.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(err) = source {
        msg.push_str(": ");
        msg.push_str(&err.to_string());
        source = err.source();
    }
    msg
}

/// A TLS configuration with the webpki roots and, if given, extra roots.
pub(crate) fn tls_config(extra_roots: &[Vec<u8>]) -> Result<Arc<rustls::ClientConfig>, crate::Error> {
    // Without extra roots every client shares one configuration: the parsed
    // web roots are tens of KiB.
    static DEFAULT: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    if extra_roots.is_empty() {
        if let Some(config) = DEFAULT.get() {
            return Ok(config.clone());
        }
        let config = build_tls_config(&[])?;
        return Ok(DEFAULT.get_or_init(|| config).clone());
    }
    build_tls_config(extra_roots)
}

fn build_tls_config(extra_roots: &[Vec<u8>]) -> Result<Arc<rustls::ClientConfig>, crate::Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for der in extra_roots {
        roots
            .add(rustls::pki_types::CertificateDer::from(der.clone()))
            .map_err(|e| crate::Error::Tls(format!("bad root certificate: {e}")))?;
    }
    // The application's choice when it installed a process-wide provider;
    // else ring, explicitly: resub installs nothing process-wide, so the
    // application's own TLS clients behave as they would without it. (rustls
    // 0.23.48 deprecates ring's provider for lacking post-quantum key
    // exchange; an application that wants that installs aws-lc-rs's.)
    #[allow(deprecated)]
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| crate::Error::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A running connection: frames to send go in its queue; dropping it ends
/// its work.
pub(crate) struct ConnHandle {
    queue: Option<SendQueue>,
    abort: AbortHandle,
    /// The connection's work (connect, read, decode, write), until the loop
    /// takes it into its [`Conns`].
    work: Option<Abortable<Work>>,
    graceful: bool,
}

/// What a connection does, from connecting to reporting its end.
type Work = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// The connections' work, run inside the loop's task rather than each in a
/// task of its own: a burst read from a socket is decoded and handed to the
/// session on the same thread, with no wake-up of another task between
/// (on a multi-thread runtime, no hand-over between threads).
#[derive(Default)]
pub(crate) struct Conns {
    running: futures::stream::FuturesUnordered<Abortable<Work>>,
}

impl Conns {
    /// Takes `handle`'s work to run from now on.
    pub(crate) fn run(&mut self, handle: &mut ConnHandle) {
        if let Some(work) = handle.work.take() {
            self.running.push(work);
        }
    }

    /// Moves every connection on as far as it can go; never completes.
    /// What the connections read reaches the loop through its event queue.
    pub(crate) fn poll_drive(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        while let std::task::Poll::Ready(Some(_)) = self.running.poll_next_unpin(cx) {}
        std::task::Poll::Pending
    }

    /// The loop is over: what is still running (connections saying goodbye
    /// with a close handshake) finishes on a task of its own.
    pub(crate) fn detach(self) {
        for work in self.running {
            tokio::spawn(work);
        }
    }
}

/// Frames waiting for a WebSocket connection's writer, bounded in bytes.
struct SendQueue {
    /// A `futures` queue: it allocates per frame queued, nothing ahead (an
    /// idle connection holds a few dozen bytes for it).
    tx: fmpsc::UnboundedSender<String>,
    /// Bytes queued and not written yet; the writer takes off what it wrote.
    queued: Arc<AtomicUsize>,
    limit: usize,
}

impl ConnHandle {
    fn new(queue: Option<SendQueue>, work: impl std::future::Future<Output = ()> + Send + 'static) -> Self {
        let (work, abort) = futures::future::abortable(Box::pin(work) as Work);
        ConnHandle { queue, abort, work: Some(work), graceful: false }
    }

    /// Queues a frame to send. `false` when the queue would go over its
    /// bound: the peer has stopped reading, and the connection is to be
    /// given up (what it did not send, the next one sends again).
    pub(crate) fn send(&self, text: String) -> bool {
        let Some(q) = &self.queue else { return false };
        let len = text.len();
        if q.queued.fetch_add(len, Ordering::AcqRel) + len > q.limit {
            return false;
        }
        let _ = q.tx.unbounded_send(text);
        true
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
        // A graceful close lets the work send a close frame (its sender is
        // dropped with this handle) and end by itself.
        if !self.graceful {
            self.abort.abort();
        }
    }
}

/// Starts a WebSocket connection that reports to `events`.
fn connect_websocket(conn: ConnId, url: String, opts: ConnectOptions, mut events: EventSender) -> ConnHandle {
    let (tx, rx) = fmpsc::unbounded();
    let queued = Arc::new(AtomicUsize::new(0));
    let queue = Some(SendQueue { tx, queued: queued.clone(), limit: opts.send_queue_bytes });
    ConnHandle::new(queue, async move {
        let error = run_websocket(conn, &url, &opts, &mut events, rx, &queued).await;
        let _ = events.send(ConnEvent::Closed(conn, error)).await;
    })
}

async fn run_websocket(
    conn: ConnId,
    url: &str,
    opts: &ConnectOptions,
    events: &mut EventSender,
    mut outgoing: fmpsc::UnboundedReceiver<String>,
    queued: &AtomicUsize,
) -> TransportError {
    let mut request = match url.into_client_request() {
        Ok(r) => r,
        Err(e) => return TransportError::Connect(format!("bad URL: {e}")),
    };
    request.headers_mut().extend(opts.headers.clone());
    match bearer(opts).await {
        Ok(Some(auth)) => match HeaderValue::from_str(&auth) {
            Ok(v) => {
                request.headers_mut().insert(tungstenite::http::header::AUTHORIZATION, v);
            }
            Err(_) => return TransportError::Status { status: 401, retry_after: None },
        },
        Ok(None) => {}
        Err(e) => return e,
    }
    // A small read buffer: an idle connection holds it for its lifetime
    // (tungstenite's default is 128 KiB); reads of a busy one simply loop.
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .max_message_size(Some(opts.max_frame_bytes))
        .max_frame_size(Some(opts.max_frame_bytes));
    let connector = tokio_tungstenite::Connector::Rustls(opts.tls.clone());
    // Boxed: the handshake's state is several KiB, and a future keeps room
    // for its largest state for as long as the connection lives.
    let handshake =
        Box::pin(tokio_tungstenite::connect_async_tls_with_config(request, Some(config), true, Some(connector)));
    // The handshake's response is dropped here, not held for the
    // connection's lifetime (its headers are a KiB).
    let (mut ws, _) = match handshake.await {
        Ok(ok) => ok,
        Err(e) => return handshake_error(e),
    };
    if events.send(ConnEvent::Opened(conn)).await.is_err() {
        return TransportError::Lost("driver gone".into());
    }
    // A message read ahead while collecting a burst, to handle next.
    let mut ahead = None;
    loop {
        let msg = match ahead.take() {
            Some(msg) => msg,
            None => tokio::select! {
                msg = ws.next() => msg,
                out = outgoing.next() => {
                    match out {
                        Some(text) => {
                            let len = text.len();
                            if let Err(e) = ws.send(WsMessage::text(text)).await {
                                return TransportError::Lost(e.to_string());
                            }
                            queued.fetch_sub(len, Ordering::AcqRel);
                        }
                        None => {
                            let _ = ws.close(None).await;
                            return TransportError::Lost("closed by client".into());
                        }
                    }
                    continue;
                }
            },
        };
        let text = match msg {
            Some(Ok(WsMessage::Text(t))) => t,
            Some(Ok(WsMessage::Binary(b))) => match tungstenite::Utf8Bytes::try_from(b) {
                Ok(t) => t,
                Err(_) => return TransportError::Lost("binary frame that is not UTF-8".into()),
            },
            Some(Ok(WsMessage::Close(frame))) => {
                return match frame {
                    Some(f) => TransportError::Closed { code: u16::from(f.code), reason: f.reason.as_str().to_owned() },
                    None => TransportError::Closed { code: u16::from(CloseCode::Status), reason: String::new() },
                };
            }
            Some(Ok(_)) => continue, // ping/pong are answered by tungstenite
            Some(Err(tungstenite::Error::Capacity(_))) => {
                return TransportError::TooLarge { limit: opts.max_frame_bytes };
            }
            Some(Err(e)) => return TransportError::Lost(e.to_string()),
            None => return TransportError::Lost("connection closed without a close frame".into()),
        };
        for ev in burst(conn, text.as_str(), &mut ws, &mut ahead) {
            if events.send(ev).await.is_err() {
                return TransportError::Lost("driver gone".into());
            }
        }
    }
}

/// Most frames sent to the loop as one event.
const BURST: usize = 64;

/// Bytes a WebSocket connection reserves per read. A power of two: the
/// buffers that replace it as frames are handed out are rounded to one.
/// 4 KiB reads as fast as 8 KiB on a saturated loopback stream (resub-bench,
/// both runtimes) and an idle connection holds 4 KiB less.
const READ_BUFFER: usize = 4 * 1024;

/// `first` and the text frames already read from the socket after it,
/// decoded here (off the loop's thread) and sent as one event: one wake-up of
/// the loop per burst rather than per frame. A frame that does not decode
/// ends the burst, after the frames before it. Anything but a text frame is
/// left in `ahead`.
#[cfg(feature = "json-decode")]
fn burst<S>(conn: ConnId, first: &str, ws: &mut S, ahead: &mut Option<Option<WsResult>>) -> Vec<ConnEvent>
where
    S: futures::Stream<Item = WsResult> + Unpin,
{
    let mut frames = Vec::new();
    let mut bytes = first.len();
    if let Err(why) = crate::core::decode_frame_into(first, &mut frames) {
        return vec![ConnEvent::Frames(conn, Err(why), bytes)];
    }
    while frames.len() < BURST {
        match ws.next().now_or_never() {
            Some(Some(Ok(WsMessage::Text(t)))) => {
                bytes = bytes.max(t.len());
                if frames.len() == 1 {
                    // A burst: room for all of it at once, not by doubling.
                    frames.reserve_exact(BURST - 1);
                }
                if let Err(why) = crate::core::decode_frame_into(t.as_str(), &mut frames) {
                    return vec![
                        ConnEvent::Frames(conn, Ok(frames), bytes),
                        ConnEvent::Frames(conn, Err(why), t.len()),
                    ];
                }
            }
            Some(other) => {
                *ahead = Some(other);
                break;
            }
            None => break,
        }
    }
    vec![ConnEvent::Frames(conn, Ok(frames), bytes)]
}

/// Without a JSON decoder, the session decodes: one frame per event.
#[cfg(not(feature = "json-decode"))]
fn burst<S>(conn: ConnId, first: &str, _ws: &mut S, _ahead: &mut Option<Option<WsResult>>) -> Vec<ConnEvent> {
    vec![ConnEvent::Received(conn, first.to_owned())]
}

type WsResult = Result<WsMessage, tungstenite::Error>;

fn handshake_error(e: tungstenite::Error) -> TransportError {
    match e {
        tungstenite::Error::Http(resp) => {
            let retry_after =
                resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
            TransportError::Status { status: resp.status().as_u16(), retry_after }
        }
        tungstenite::Error::Tls(e) => TransportError::Tls(e.to_string()),
        tungstenite::Error::Io(e) => {
            if caused_by_tls(&e) {
                TransportError::Tls(error_chain(&e))
            } else {
                TransportError::Connect(error_chain(&e))
            }
        }
        other => TransportError::Connect(other.to_string()),
    }
}

/// Runs `fut` on the tokio runtime.
pub(crate) fn spawn(fut: impl std::future::Future<Output = ()> + Send + 'static) {
    tokio::spawn(fut);
}

/// Completes at `deadline`.
pub(crate) async fn sleep_until(deadline: crate::Instant) {
    tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)).await;
}

/// Native hosts have no page or network signals to watch; they come through
/// the FFI layer where there is a host that has them.
pub(crate) fn watch_signals(_events: EventSender) -> Signals {
    Signals
}

/// Nothing to stop listening to.
pub(crate) struct Signals;
