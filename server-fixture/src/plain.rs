//! A plain SSE server that knows nothing of the resub protocol: opaque event
//! ids, `Last-Event-ID` replay, multi-line data, mixed line endings and
//! comment keep-alives, for testing a client against an ordinary SSE
//! endpoint.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tower_http::cors::{Any, CorsLayer};

/// The `Last-Event-ID` request header.
const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// The reconnection delay announced on every stream, in milliseconds.
const RETRY_MS: u64 = 500;

/// How often an open stream writes a `: keepalive` comment.
const KEEPALIVE: Duration = Duration::from_secs(1);

/// Chunks queued per stream before the stream is dropped as too slow.
const STREAM_QUEUE: usize = 4_096;

/// How long [`PlainSse::shutdown`] waits for in-flight requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// One request the plain SSE server answered (its control routes `POST /push`
/// and `POST /drop` are not recorded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainRequest {
    /// The path and query string, as requested (e.g. `/events`).
    pub path: String,
    /// The `Last-Event-ID` request header, if any.
    pub last_event_id: Option<String>,
    /// The status it was answered with.
    pub status: u16,
}

/// A running plain SSE server (not the resub protocol): `GET /events` is a
/// standard `text/event-stream` whose events are those given to
/// [`PlainSse::push`].
///
/// Every stream starts with `retry: 500`, then, when the request carries
/// `Last-Event-ID`, every pushed event after the newest one with that id (none
/// when no pushed event has it), then events as they are pushed. Events are
/// written in the forms the SSE specification allows, alternating between
/// them: even-numbered events (0, 2, ...) use `\n` line endings and
/// `field: value`, odd-numbered ones `\r\n` and `field:value` (with the space
/// kept when the value itself starts with one). Data with line breaks is
/// written as several `data:` lines; an event pushed without an id has no
/// `id:` line. A `: keepalive` comment line is written every second.
///
/// Dropping it stops the server, as [`PlainSse::shutdown`] does without
/// waiting.
pub struct PlainSse {
    shared: Arc<PlainShared>,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl fmt::Debug for PlainSse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlainSse").field("addr", &self.addr).finish_non_exhaustive()
    }
}

struct PlainShared {
    state: Mutex<PlainState>,
}

#[derive(Default)]
struct PlainState {
    log: Vec<Logged>,
    streams: HashMap<u64, mpsc::Sender<Bytes>>,
    next_stream: u64,
    requests: Vec<PlainRequest>,
    status: Option<(u16, Option<&'static str>)>,
    closed: bool,
}

/// A pushed event, already written in its wire form.
struct Logged {
    id: Option<String>,
    bytes: Bytes,
}

impl PlainShared {
    fn lock(&self) -> MutexGuard<'_, PlainState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, id: Option<&str>, event: Option<&str>, data: &str) -> usize {
        for (name, value) in [("id", id), ("event", event)] {
            if let Some(value) = value {
                assert!(!value.contains(['\r', '\n']), "an SSE {name} cannot contain a line break: {value:?}");
            }
        }
        let mut st = self.lock();
        let bytes = format_event(st.log.len(), id, event, data);
        st.log.push(Logged { id: id.map(str::to_owned), bytes: bytes.clone() });
        // A stream whose queue is full or gone is dropped.
        st.streams.retain(|_, tx| tx.try_send(bytes.clone()).is_ok());
        st.streams.len()
    }

    fn drop_all(&self) -> usize {
        let mut st = self.lock();
        let count = st.streams.len();
        st.streams.clear();
        tracing::info!(count, "plain sse: dropped every stream");
        count
    }
}

/// Writes one event. See [`PlainSse`] for the forms used.
fn format_event(index: usize, id: Option<&str>, event: Option<&str>, data: &str) -> Bytes {
    let crlf = index % 2 == 1;
    let eol = if crlf { "\r\n" } else { "\n" };
    let mut out = String::new();
    let mut field = |name: &str, value: &str| {
        out.push_str(name);
        out.push(':');
        if !crlf || value.starts_with(' ') {
            out.push(' ');
        }
        out.push_str(value);
        out.push_str(eol);
    };
    if let Some(id) = id {
        field("id", id);
    }
    if let Some(event) = event {
        field("event", event);
    }
    for line in data_lines(data) {
        field("data", line);
    }
    out.push_str(eol);
    Bytes::from(out)
}

/// Splits data at `\r\n`, `\r` and `\n`, as an SSE parser joins `data:` lines
/// (an empty last line stands for a trailing line break).
fn data_lines(data: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut rest = data;
    loop {
        match rest.find(['\r', '\n']) {
            None => {
                lines.push(rest);
                return lines;
            }
            Some(at) => {
                lines.push(&rest[..at]);
                let skip = if rest[at..].starts_with("\r\n") { 2 } else { 1 };
                rest = &rest[at + skip..];
            }
        }
    }
}

impl PlainSse {
    /// Starts a plain SSE server on `127.0.0.1` with an ephemeral port. Must
    /// be called within a Tokio runtime.
    pub async fn start() -> io::Result<PlainSse> {
        Self::start_with(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
    }

    /// Binds `addr` and starts a plain SSE server. Must be called within a
    /// Tokio runtime.
    pub async fn start_with(addr: SocketAddr) -> io::Result<PlainSse> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(PlainShared { state: Mutex::new(PlainState::default()) });
        let cors = CorsLayer::new().allow_origin(Any).allow_methods(Any).allow_headers([LAST_EVENT_ID, CONTENT_TYPE]);
        let app = Router::new()
            .route("/events", get(events))
            .route("/push", post(push_route))
            .route("/drop", post(drop_route))
            .fallback(not_found)
            .layer(cors)
            .with_state(Arc::clone(&shared));
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let signal = async move {
                let _ = stopped.await;
            };
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            if let Err(err) = axum::serve(listener, app).with_graceful_shutdown(signal).await {
                tracing::error!(%err, "plain sse server failed");
            }
        });
        tracing::debug!(%addr, "plain sse server listening");
        Ok(PlainSse { shared, addr, stop: Some(stop), server: Some(server) })
    }

    /// The address the server is bound to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL, `http://IP:PORT` (no trailing slash). The stream is at
    /// `/events`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Appends an event to the log and writes it to every open stream. `id`
    /// is an opaque string (`None`: the event has no `id:` line); `event` is
    /// the event type (`None`: no `event:` line, i.e. `message`); `data` may
    /// hold line breaks.
    ///
    /// # Panics
    ///
    /// If `id` or `event` contains a line break.
    pub fn push(&self, id: Option<&str>, event: Option<&str>, data: &str) {
        self.shared.push(id, event, data);
    }

    /// Aborts every open stream: the TCP connection is dropped without the
    /// end of the chunked body. Returns how many were open.
    pub fn drop_connections(&self) -> usize {
        self.shared.drop_all()
    }

    /// How many streams are open now.
    pub fn open_streams(&self) -> usize {
        self.shared.lock().streams.len()
    }

    /// Every request answered so far, oldest first.
    pub fn requests(&self) -> Vec<PlainRequest> {
        self.shared.lock().requests.clone()
    }

    /// Makes `GET /events` answer with `status` and, if given, that
    /// `Content-Type` (none otherwise) and a short text body (none for `204`
    /// and `304`) instead of a stream, until called with `None`.
    ///
    /// # Panics
    ///
    /// If the status is not in `100..=999`.
    pub fn set_status(&self, next: Option<(u16, Option<&'static str>)>) {
        if let Some((status, _)) = next {
            assert!(StatusCode::from_u16(status).is_ok(), "invalid HTTP status {status}");
        }
        self.shared.lock().status = next;
    }

    /// Stops the server: every stream is dropped abruptly, and in-flight
    /// requests get a few seconds to finish.
    pub async fn shutdown(mut self) {
        self.stop_server();
        if let Some(server) = self.server.take() {
            let abort = server.abort_handle();
            if tokio::time::timeout(SHUTDOWN_GRACE, server).await.is_err() {
                abort.abort();
            }
        }
    }

    fn stop_server(&mut self) {
        self.shared.lock().closed = true;
        self.shared.drop_all();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for PlainSse {
    fn drop(&mut self) {
        self.stop_server();
    }
}

type PlainAppState = Arc<PlainShared>;

/// Removes a stream from the registry when hyper drops its body.
struct StreamGuard {
    shared: Arc<PlainShared>,
    id: u64,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.shared.lock().streams.remove(&self.id);
    }
}

struct PlainStream {
    _guard: StreamGuard,
    first: Option<Bytes>,
    rx: mpsc::Receiver<Bytes>,
    keepalive: tokio::time::Interval,
    done: bool,
}

async fn next_chunk(mut s: PlainStream) -> Option<(Result<Bytes, io::Error>, PlainStream)> {
    if s.done {
        return None;
    }
    if let Some(first) = s.first.take() {
        return Some((Ok(first), s));
    }
    tokio::select! {
        chunk = s.rx.recv() => match chunk {
            Some(chunk) => Some((Ok(chunk), s)),
            None => {
                s.done = true;
                let err = io::Error::new(io::ErrorKind::ConnectionAborted, "stream dropped");
                Some((Err(err), s))
            }
        },
        _ = s.keepalive.tick() => Some((Ok(Bytes::from_static(b": keepalive\n")), s)),
    }
}

fn record(st: &mut PlainState, uri: &Uri, last_event_id: Option<String>, status: u16) {
    let path = uri.path_and_query().map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
    st.requests.push(PlainRequest { path, last_event_id, status });
}

async fn events(State(shared): State<PlainAppState>, uri: Uri, headers: HeaderMap) -> Response {
    let last_event_id = headers.get(&LAST_EVENT_ID).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let mut st = shared.lock();
    if let Some((status, content_type)) = st.status {
        record(&mut st, &uri, last_event_id, status);
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = if matches!(status, 204 | 304) { String::new() } else { format!("status {status}\n") };
        let mut response = (code, body).into_response();
        let headers = response.headers_mut();
        headers.remove(CONTENT_TYPE);
        if let Some(value) = content_type.and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.insert(CONTENT_TYPE, value);
        }
        return response;
    }
    if st.closed {
        record(&mut st, &uri, last_event_id, 503);
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    let mut first = format!("retry: {RETRY_MS}\n\n").into_bytes();
    if let Some(last) = &last_event_id {
        if let Some(at) = st.log.iter().rposition(|e| e.id.as_deref() == Some(last.as_str())) {
            for logged in &st.log[at + 1..] {
                first.extend_from_slice(&logged.bytes);
            }
        }
    }
    record(&mut st, &uri, last_event_id, 200);
    let (tx, rx) = mpsc::channel(STREAM_QUEUE);
    st.next_stream += 1;
    let id = st.next_stream;
    st.streams.insert(id, tx);
    drop(st);
    let mut keepalive = tokio::time::interval_at(Instant::now() + KEEPALIVE, KEEPALIVE);
    keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let stream = PlainStream {
        _guard: StreamGuard { shared: Arc::clone(&shared), id },
        first: Some(Bytes::from(first)),
        rx,
        keepalive,
        done: false,
    };
    (
        [(CONTENT_TYPE, "text/event-stream"), (CACHE_CONTROL, "no-cache")],
        Body::from_stream(futures::stream::unfold(stream, next_chunk)),
    )
        .into_response()
}

#[derive(Deserialize)]
struct PushQuery {
    id: Option<String>,
    event: Option<String>,
}

async fn push_route(State(shared): State<PlainAppState>, Query(query): Query<PushQuery>, body: Bytes) -> Response {
    let Ok(data) = std::str::from_utf8(&body) else {
        return (StatusCode::BAD_REQUEST, "the body must be UTF-8").into_response();
    };
    let fields = [query.id.as_deref(), query.event.as_deref()];
    if fields.iter().flatten().any(|v| v.contains(['\r', '\n'])) {
        return (StatusCode::BAD_REQUEST, "id and event cannot hold line breaks").into_response();
    }
    let streams = shared.push(query.id.as_deref(), query.event.as_deref(), data);
    axum::Json(json!({ "streams": streams })).into_response()
}

async fn drop_route(State(shared): State<PlainAppState>) -> Response {
    axum::Json(json!({ "dropped": shared.drop_all() })).into_response()
}

async fn not_found(State(shared): State<PlainAppState>, uri: Uri, headers: HeaderMap) -> Response {
    let last_event_id = headers.get(&LAST_EVENT_ID).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    record(&mut shared.lock(), &uri, last_event_id, 404);
    (StatusCode::NOT_FOUND, "not found").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_alternate_forms_and_split_data_lines() {
        let even = format_event(0, Some("a1"), None, "x\ny");
        assert_eq!(&even[..], b"id: a1\ndata: x\ndata: y\n\n");
        let odd = format_event(1, None, Some("t"), " lead\r\nz\r");
        assert_eq!(&odd[..], b"event:t\r\ndata:  lead\r\ndata:z\r\ndata:\r\n\r\n");
    }
}
