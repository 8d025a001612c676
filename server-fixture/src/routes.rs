//! HTTP routes: the WebSocket, SSE and long-polling endpoints, publishing,
//! the `/control/*` fault switches, and optionally static files for every
//! other path.

use std::collections::HashSet;
use std::io;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::header::{AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::middleware::map_response;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use resub::protocol::validate_channel;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tower_http::cors::{Any, CorsLayer};
use tower_http::services::ServeDir;

use crate::state::{ChannelCursor, ClientInfo, PollStart, Refusal, Shared, Transport};
use crate::{ChaosPlan, FixtureError, MAX_PAYLOAD, MAX_PRESENCE_DATA, POLL_MAX_HOLD_MS};

type AppState = Arc<Shared>;

/// The `Idempotency-Key` request header.
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// The `Last-Event-ID` request header (allowed by CORS for SSE clients).
const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");
/// Asks nginx-like proxies not to buffer the SSE stream.
const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// WebSocket messages above this size are refused by the WebSocket layer: a
/// `publish` frame carries at most [`MAX_PAYLOAD`] of data plus JSON overhead.
const MAX_MESSAGE: usize = 2 * MAX_PAYLOAD + 64 * 1024;

pub(crate) fn router(shared: AppState) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods(Any)
        .allow_headers([IDEMPOTENCY_KEY, LAST_EVENT_ID, AUTHORIZATION, CONTENT_TYPE])
        .expose_headers([RETRY_AFTER]);
    let mut router = Router::new()
        .route("/ws", get(websocket))
        .route("/sse", get(sse))
        .route("/poll", get(poll))
        .route("/publish/{channel}", post(publish).layer(DefaultBodyLimit::max(MAX_PAYLOAD)))
        .route("/presence/{channel}", get(presence))
        .route("/control/drop", post(control_drop))
        .route("/control/websocket", post(control_websocket))
        .route("/control/sse", post(control_sse))
        .route("/control/poll", post(control_poll))
        .route("/control/stall", post(control_stall))
        .route("/control/unavailable", post(control_unavailable))
        .route("/control/truncate/{channel}", post(control_truncate))
        .route("/control/epoch/{channel}", post(control_epoch))
        .route("/control/auth", post(control_auth))
        .route("/control/tokens", post(control_tokens))
        .route("/control/drop-acks", post(control_drop_acks))
        .route("/control/oversize", post(control_oversize))
        .route("/control/stats", get(control_stats))
        .route("/control/chaos", post(control_chaos_start).get(control_chaos_report));
    if let Some(dir) = &shared.cfg.static_dir {
        // Only paths that no route above matches reach the files.
        let files = Router::new().fallback_service(ServeDir::new(dir)).layer(map_response(javascript_type));
        router = router.fallback_service(files);
    }
    router.layer(cors).with_state(shared)
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

/// `400` with a body shaped like an `error` frame (PROTOCOL.md §7.4).
fn bad_request(message: impl Into<String>) -> Response {
    refused(StatusCode::BAD_REQUEST, "bad_request", message)
}

fn refused(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, Json(json!({ "code": code, "message": message.into() }))).into_response()
}

/// The answer to a handshake refused by a fault switch.
fn refusal(refusal: Refusal) -> Response {
    match refusal {
        Refusal::Disabled(transport) => {
            let text = match transport {
                Transport::WebSocket => "websocket upgrades refused",
                Transport::Sse => "sse refused",
                Transport::Poll => "poll refused",
            };
            (StatusCode::FORBIDDEN, text).into_response()
        }
        Refusal::Unavailable(secs) => {
            (StatusCode::SERVICE_UNAVAILABLE, [(RETRY_AFTER, secs.to_string())], "service unavailable").into_response()
        }
        Refusal::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized").into_response(),
    }
}

/// A response whose body fails at once, so that hyper aborts the connection
/// instead of completing the answer.
fn aborted() -> Response {
    let error = io::Error::new(io::ErrorKind::ConnectionAborted, "connection dropped by the fixture");
    let body = futures::stream::once(std::future::ready(Err::<Bytes, _>(error)));
    Body::from_stream(body).into_response()
}

/// A service that cannot reach its shared storage answers `503`, so that
/// clients retry (elsewhere, given several endpoints).
fn unavailable(err: &FixtureError) -> Response {
    tracing::warn!(%err, "request failed");
    (StatusCode::SERVICE_UNAVAILABLE, [(RETRY_AFTER, "1")], err.to_string()).into_response()
}

/// The bearer token of a request: `Authorization: Bearer T`, else the
/// `access_token` query parameter (where a browser cannot set headers).
fn token<'a>(headers: &'a HeaderMap, request: &'a Result<ConnRequest, String>) -> Option<&'a str> {
    let header = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    header.or_else(|| request.as_ref().ok()?.access_token.as_deref())
}

/// Whether refused credentials are told in band (close code `4401` on a
/// WebSocket, an `error` frame on SSE) rather than as `401`: when the token
/// came in the query, as a browser sends it, since a browser hides the
/// status of a refused WebSocket upgrade or EventSource (PROTOCOL.md §6).
fn in_band(headers: &HeaderMap, request: &Result<ConnRequest, String>) -> bool {
    !headers.contains_key(AUTHORIZATION) && request.as_ref().is_ok_and(|r| r.access_token.is_some())
}

async fn websocket(
    State(shared): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let request = parse_request(&uri, None, false);
    let upgrade_error = upgrade.as_ref().err().map(|r| r.status().as_u16()).or(request.as_ref().err().map(|_| 400));
    if let Some(refused) = shared.admit(Transport::WebSocket, upgrade_error, token(&headers, &request)) {
        if let (Refusal::Unauthorized, true, Ok(upgrade)) = (refused, in_band(&headers, &request), upgrade) {
            return upgrade.on_upgrade(|mut ws| async move {
                let reason = "the token was refused".into();
                let _ = ws.send(Message::Close(Some(CloseFrame { code: 4401, reason }))).await;
            });
        }
        return refusal(refused);
    }
    let client = match request {
        Ok(request) => request.client,
        Err(message) => return bad_request(message),
    };
    match upgrade {
        Ok(upgrade) => upgrade.max_message_size(MAX_MESSAGE).on_upgrade(move |ws| crate::conn::run(shared, ws, client)),
        Err(rejection) => rejection.into_response(),
    }
}

/// What the query of a `/ws`, `/sse` or `/poll` request asks for.
struct ConnRequest {
    /// The channels and their cursors (SSE and polls).
    channels: Vec<ChannelCursor>,
    /// How long a poll may be held.
    timeout_ms: Option<u64>,
    /// Who the connection is, for presence (`client_id`, `presence`);
    /// without `client_id` it takes no part in it.
    client: Option<ClientInfo>,
    /// The `access_token` parameter.
    access_token: Option<String>,
}

/// Parses `channel=NAME[@CURSOR]` parameters (and `timeout_ms` for polls),
/// `client_id`, `presence` and `access_token`. For a single channel without
/// a cursor, `last_event_id` is its cursor.
fn parse_request(uri: &Uri, last_event_id: Option<&str>, with_timeout: bool) -> Result<ConnRequest, String> {
    let Query(params) =
        Query::<Vec<(String, String)>>::try_from_uri(uri).map_err(|err| format!("invalid query string: {err}"))?;
    let mut channels: Vec<ChannelCursor> = Vec::new();
    let mut names = HashSet::new();
    let mut timeout_ms = None;
    let mut client_id = None;
    let mut data = String::new();
    let mut access_token = None;
    for (key, value) in params {
        match key.as_str() {
            "channel" => {
                let (name, cursor) = match value.split_once('@') {
                    Some((name, cursor)) => (name.to_owned(), Some(cursor.to_owned())),
                    None => (value, None),
                };
                validate_channel(&name).map_err(|err| err.to_string())?;
                if !names.insert(name.clone()) {
                    return Err(format!("channel {name:?} is given more than once"));
                }
                channels.push((name, cursor));
            }
            "timeout_ms" if with_timeout => {
                let ms: u64 =
                    value.parse().map_err(|_| format!("timeout_ms must be a non-negative integer, not {value:?}"))?;
                timeout_ms = Some(ms.min(POLL_MAX_HOLD_MS));
            }
            "client_id" => {
                validate_channel(&value)
                    .map_err(|_| format!("invalid client_id {value:?}: 1-128 characters from A-Z a-z 0-9 _ . : -"))?;
                client_id = Some(value);
            }
            "presence" => {
                if value.len() > MAX_PRESENCE_DATA {
                    return Err(format!("presence data over {MAX_PRESENCE_DATA} bytes"));
                }
                data = value;
            }
            "access_token" => access_token = Some(value),
            // Anything else is accepted and ignored.
            _ => {}
        }
    }
    // No channel at all is allowed: the stream carries the welcome and
    // heartbeats (a client connects before its first subscription).
    if let ([(_, cursor @ None)], Some(id)) = (channels.as_mut_slice(), last_event_id) {
        if !id.is_empty() {
            *cursor = Some(id.to_owned());
        }
    }
    let client = client_id.map(|id| ClientInfo { id, data });
    Ok(ConnRequest { channels, timeout_ms, client, access_token })
}

async fn sse(State(shared): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    let last_event_id = headers.get(&LAST_EVENT_ID).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let parsed = parse_request(&uri, last_event_id.as_deref(), false);
    if let Some(refused) = shared.admit(Transport::Sse, parsed.as_ref().err().map(|_| 400), token(&headers, &parsed)) {
        if matches!(refused, Refusal::Unauthorized) && in_band(&headers, &parsed) {
            let frame = resub::protocol::ServerFrame::Error {
                code: "unauthorized".into(),
                channel: None,
                key: None,
                message: "the token was refused".into(),
            };
            let mut body = Vec::new();
            crate::sse::write_event(&crate::state::encode(&frame), &mut body);
            return ([(CONTENT_TYPE, "text/event-stream"), (CACHE_CONTROL, "no-cache")], body).into_response();
        }
        return refusal(refused);
    }
    let request = match parsed {
        Ok(request) => request,
        Err(message) => return bad_request(message),
    };
    for (channel, _) in &request.channels {
        if let Err(err) = shared.sync_channel(channel).await {
            return unavailable(&err);
        }
    }
    let Some(registered) = shared.register(Transport::Sse, shared.cfg.max_connection_queue, request.client) else {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    };
    let id = registered.registration.id();
    for (channel, cursor) in &request.channels {
        shared.subscribe(id, channel, cursor.as_deref());
    }
    tracing::debug!(conn = id, channels = request.channels.len(), "sse stream open");
    (
        [(CONTENT_TYPE, "text/event-stream"), (CACHE_CONTROL, "no-cache"), (X_ACCEL_BUFFERING, "no")],
        crate::sse::body(registered, shared.cfg.heartbeat),
    )
        .into_response()
}

async fn poll(State(shared): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    let parsed = parse_request(&uri, None, true);
    if let Some(refused) = shared.admit(Transport::Poll, parsed.as_ref().err().map(|_| 400), token(&headers, &parsed)) {
        return refusal(refused);
    }
    let request = match parsed {
        Ok(request) => request,
        Err(message) => return bad_request(message),
    };
    for (channel, _) in &request.channels {
        if let Err(err) = shared.sync_channel(channel).await {
            return unavailable(&err);
        }
    }
    let hold_ms =
        request.timeout_ms.unwrap_or_else(|| u64::try_from(shared.cfg.poll_hold.as_millis()).unwrap_or(u64::MAX));
    let answer = match shared.poll_start(&request.channels, hold_ms, hold_ms > 0, request.client.as_ref()) {
        PollStart::Answer(body) => body,
        PollStart::Hold(registered) => match crate::poll::hold(&shared, registered, &request.channels, hold_ms).await {
            Some(body) => body,
            None => return aborted(),
        },
    };
    if let Some(bytes) = shared.take_oversize(false) {
        // The answer's frames, then a padding field: valid JSON past any bound.
        let frames = answer.strip_suffix('}').unwrap_or(&answer);
        return padded(&format!(r#"{frames},"pad":""#), r#""}"#, bytes);
    }
    ([(CONTENT_TYPE, "application/json"), (CACHE_CONTROL, "no-store")], answer).into_response()
}

/// A JSON answer `head` + padding + `tail` of `bytes` bytes in all, streamed
/// in 64 KiB chunks with no `Content-Length`.
fn padded(head: &str, tail: &str, bytes: usize) -> Response {
    const CHUNK: usize = 64 * 1024;
    let pad = bytes.saturating_sub(head.len() + tail.len());
    let chunks = pad.div_ceil(CHUNK);
    let body = futures::stream::iter(
        std::iter::once(Bytes::from(head.to_owned()))
            .chain((0..chunks).map(move |i| Bytes::from(vec![b'x'; CHUNK.min(pad - i * CHUNK)])))
            .chain(std::iter::once(Bytes::from(tail.to_owned())))
            .map(Ok::<_, io::Error>),
    );
    ([(CONTENT_TYPE, "application/json"), (CACHE_CONTROL, "no-store")], Body::from_stream(body)).into_response()
}

#[derive(Deserialize)]
struct PublishQuery {
    event: Option<String>,
}

async fn publish(
    State(shared): State<AppState>,
    Path(channel): Path<String>,
    Query(query): Query<PublishQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let body = match body {
        Ok(body) => body,
        Err(BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_))) => {
            return refused(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("the limit is {MAX_PAYLOAD} bytes"));
        }
        Err(rejection) => return bad_request(rejection.body_text()),
    };
    let key = match headers.get(&IDEMPOTENCY_KEY).map(|v| v.to_str()) {
        None => None,
        Some(Ok(key)) => Some(key),
        Some(Err(_)) => return bad_request("Idempotency-Key must be visible ASCII"),
    };
    shared.count_publish_request();
    let Ok(data) = std::str::from_utf8(&body) else {
        return bad_request("the body must be UTF-8");
    };
    match shared.publish(&channel, key, query.event.as_deref().filter(|e| !e.is_empty()), data).await {
        Ok(_) if shared.take_drop_ack() => aborted(),
        Ok(id) => match shared.take_oversize(true) {
            Some(bytes) => padded(&format!(r#"{{"id":"{id}","pad":""#), r#""}"#, bytes),
            None => Json(json!({ "id": id })).into_response(),
        },
        Err(err @ FixtureError::Redis(_)) => unavailable(&err),
        Err(err) => bad_request(err.to_string()),
    }
}

/// `GET /presence/{channel}`: who is present, sorted by client id.
async fn presence(State(shared): State<AppState>, Path(channel): Path<String>) -> Response {
    match shared.presence(&channel).await {
        Ok(members) => {
            let members: Vec<_> =
                members.into_iter().map(|(id, data)| json!({ "client_id": id, "data": data })).collect();
            ([(CACHE_CONTROL, "no-store")], Json(json!({ "channel": channel, "members": members }))).into_response()
        }
        Err(err @ FixtureError::Redis(_)) => unavailable(&err),
        Err(err) => bad_request(err.to_string()),
    }
}

async fn control_drop(State(shared): State<AppState>) -> Response {
    Json(json!({ "dropped": shared.drop_all() })).into_response()
}

#[derive(Deserialize)]
struct EnabledQuery {
    enabled: bool,
}

async fn control_websocket(State(shared): State<AppState>, Query(query): Query<EnabledQuery>) -> Response {
    shared.set_enabled(Transport::WebSocket, query.enabled);
    Json(json!({ "websocket": shared.enabled(Transport::WebSocket) })).into_response()
}

async fn control_sse(State(shared): State<AppState>, Query(query): Query<EnabledQuery>) -> Response {
    shared.set_enabled(Transport::Sse, query.enabled);
    Json(json!({ "sse": shared.enabled(Transport::Sse) })).into_response()
}

async fn control_poll(State(shared): State<AppState>, Query(query): Query<EnabledQuery>) -> Response {
    shared.set_enabled(Transport::Poll, query.enabled);
    Json(json!({ "poll": shared.enabled(Transport::Poll) })).into_response()
}

async fn control_stall(State(shared): State<AppState>) -> Response {
    Json(json!({ "stalled": shared.stall_all() })).into_response()
}

#[derive(Deserialize)]
struct UnavailableQuery {
    retry_after: Option<u64>,
    count: Option<u32>,
    enabled: Option<bool>,
}

async fn control_unavailable(State(shared): State<AppState>, Query(query): Query<UnavailableQuery>) -> Response {
    if query.enabled == Some(false) {
        shared.clear_unavailable();
        return Json(json!({ "unavailable": false })).into_response();
    }
    let retry_after = query.retry_after.unwrap_or(1);
    shared.set_unavailable(retry_after, query.count);
    Json(json!({
        "unavailable": query.count != Some(0),
        "retry_after": retry_after,
        "count": query.count,
    }))
    .into_response()
}

#[derive(Deserialize)]
struct TruncateQuery {
    #[serde(default)]
    keep: usize,
}

async fn control_truncate(
    State(shared): State<AppState>,
    Path(channel): Path<String>,
    Query(query): Query<TruncateQuery>,
) -> Response {
    match shared.truncate(&channel, query.keep).await {
        Ok(oldest) => Json(json!({ "oldest_retained": oldest })).into_response(),
        Err(err) => bad_request(err.to_string()),
    }
}

async fn control_epoch(State(shared): State<AppState>, Path(channel): Path<String>) -> Response {
    match shared.new_epoch(&channel).await {
        Ok(head) => Json(json!({ "head": head })).into_response(),
        Err(err) => bad_request(err.to_string()),
    }
}

#[derive(Deserialize)]
struct AuthQuery {
    reject: bool,
}

async fn control_auth(State(shared): State<AppState>, Query(query): Query<AuthQuery>) -> Response {
    shared.set_reject_auth(query.reject);
    Json(json!({ "reject": query.reject })).into_response()
}

#[derive(Deserialize)]
struct CountQuery {
    count: u32,
}

async fn control_drop_acks(State(shared): State<AppState>, Query(query): Query<CountQuery>) -> Response {
    shared.set_drop_acks(query.count);
    Json(json!({ "drop_acks": query.count })).into_response()
}

#[derive(Deserialize)]
struct OversizeQuery {
    /// `publish` or `poll`.
    what: String,
    count: u32,
    bytes: usize,
}

async fn control_oversize(State(shared): State<AppState>, Query(q): Query<OversizeQuery>) -> Response {
    let publish = match q.what.as_str() {
        "publish" => true,
        "poll" => false,
        other => return bad_request(format!("what must be publish or poll, not {other:?}")),
    };
    shared.set_oversize(publish, q.count, q.bytes);
    Json(json!({ "what": q.what, "count": q.count, "bytes": q.bytes })).into_response()
}

#[derive(Deserialize)]
struct TokensQuery {
    /// Comma-separated tokens to accept; absent or empty: any.
    accept: Option<String>,
}

async fn control_tokens(State(shared): State<AppState>, Query(query): Query<TokensQuery>) -> Response {
    let tokens: Option<HashSet<String>> = query
        .accept
        .filter(|a| !a.is_empty())
        .map(|a| a.split(',').filter(|t| !t.is_empty()).map(str::to_owned).collect());
    let count = tokens.as_ref().map(HashSet::len);
    shared.set_tokens(tokens);
    Json(json!({ "tokens": count })).into_response()
}

#[derive(Serialize)]
struct StatsBody {
    connections_accepted: u64,
    websocket_accepted: u64,
    sse_accepted: u64,
    polls_accepted: u64,
    connections_open: usize,
    websocket_open: usize,
    sse_open: usize,
    polls_held: usize,
    handshakes_refused: u64,
    slow_consumer_drops: u64,
    mirror_rebuilds: u64,
    events_published: u64,
    publish_requests: u64,
    subscribes: u64,
    tls_failures: u64,
    handshakes: Vec<HandshakeBody>,
}

#[derive(Serialize)]
struct HandshakeBody {
    /// Milliseconds since the fixture started.
    at_ms: u64,
    status: u16,
    /// `ws`, `sse` or `poll`.
    transport: &'static str,
}

async fn control_stats(State(shared): State<AppState>) -> Response {
    let stats = shared.stats();
    let started = shared.started;
    let body = StatsBody {
        connections_accepted: stats.connections_accepted,
        websocket_accepted: stats.websocket_accepted,
        sse_accepted: stats.sse_accepted,
        polls_accepted: stats.polls_accepted,
        connections_open: stats.connections_open,
        websocket_open: stats.websocket_open,
        sse_open: stats.sse_open,
        polls_held: stats.polls_held,
        handshakes_refused: stats.handshakes_refused,
        slow_consumer_drops: stats.slow_consumer_drops,
        mirror_rebuilds: stats.mirror_rebuilds,
        events_published: stats.events_published,
        publish_requests: stats.publish_requests,
        subscribes: stats.subscribes,
        tls_failures: stats.tls_failures,
        handshakes: stats
            .handshakes
            .iter()
            .map(|h| HandshakeBody {
                at_ms: u64::try_from(h.at.saturating_duration_since(started).as_millis()).unwrap_or(u64::MAX),
                status: h.status,
                transport: h.transport,
            })
            .collect(),
    };
    Json(body).into_response()
}

/// The body is a JSON [`ChaosPlan`], whatever its content type (so that
/// `curl -d` and a browser's `fetch` with a string body both work).
async fn control_chaos_start(State(shared): State<AppState>, body: Bytes) -> Response {
    let plan: ChaosPlan = match serde_json::from_slice(&body) {
        Ok(plan) => plan,
        Err(err) => return bad_request(format!("invalid chaos plan: {err}")),
    };
    match crate::chaos::start(&shared, plan) {
        Ok(()) => (StatusCode::ACCEPTED, Json(json!({ "started": true }))).into_response(),
        Err(FixtureError::Busy) => (StatusCode::CONFLICT, FixtureError::Busy.to_string()).into_response(),
        Err(err) => bad_request(err.to_string()),
    }
}

async fn control_chaos_report(State(shared): State<AppState>) -> Response {
    match shared.chaos.report() {
        Some(report) => Json(report).into_response(),
        None => (StatusCode::NOT_FOUND, "no chaos run yet").into_response(),
    }
}
