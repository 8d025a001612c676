//! HTTP routes: the WebSocket, SSE and long-polling endpoints, publishing
//! and presence.

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
use axum::http::{HeaderMap, HeaderName, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use resub::protocol::validate_channel;
use serde::Deserialize;
use serde_json::json;
use tower_http::cors::{Any, CorsLayer};

use crate::auth::{AuthError, Identity};
use crate::hub::Hub;
use crate::state::{ChannelCursor, ClientInfo, NotRegistered, PollStart, Refusal, Shared, Transport};
use crate::{MAX_PRESENCE_DATA, POLL_MAX_HOLD_MS, ServerError};

type AppState = Hub;

/// The `Idempotency-Key` request header.
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// The `Last-Event-ID` request header (allowed by CORS for SSE clients).
const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");
/// Asks nginx-like proxies not to buffer the SSE stream.
const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// The routes of the protocol for `hub`: `GET /ws`, `GET /sse`,
/// `GET /poll`, `POST /publish/{channel}` and `GET /presence/{channel}`,
/// with CORS open to any origin (browsers connect from the application's
/// pages). Mount it under any prefix:
///
/// ```no_run
/// # async fn demo(hub: resub_server::Hub) {
/// let app = axum::Router::new().nest("/rt", resub_server::router(hub));
/// # let _: axum::Router = app;
/// # }
/// ```
///
/// The hub's background work (Redis following, long-poll expiry) runs as
/// long as a clone of the hub or a router made from it exists.
pub fn router(hub: Hub) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods(Any)
        .allow_headers([IDEMPOTENCY_KEY, LAST_EVENT_ID, AUTHORIZATION, CONTENT_TYPE])
        .expose_headers([RETRY_AFTER]);
    let max_payload = hub.shared().cfg.limits.max_payload;
    Router::new()
        .route("/ws", get(websocket))
        .route("/sse", get(sse))
        .route("/poll", get(poll))
        .route("/publish/{channel}", post(publish).layer(DefaultBodyLimit::max(max_payload)))
        .route("/presence/{channel}", get(presence))
        .layer(cors)
        .with_state(hub)
}

/// The WebSocket read buffer of a connection: client frames are small
/// (subscribe, publish); a larger message grows it while it is read.
const WS_READ_BUFFER: usize = 4 * 1024;

/// Frames are written out once this much is buffered, or at each flush.
const WS_WRITE_BUFFER: usize = 16 * 1024;

/// WebSocket messages above this size are refused by the WebSocket layer
/// (close code 1009): a `publish` frame carries at most `max_payload` bytes
/// of data, JSON-escaped, plus the frame's other fields.
fn max_message(max_payload: usize) -> usize {
    max_payload.saturating_mul(2).saturating_add(64 * 1024)
}

/// Decides a request's token: the configured authorizer's answer, or an
/// anonymous identity without one.
async fn authorize(shared: &Shared, token: Option<&str>) -> Result<Arc<Identity>, AuthError> {
    match &shared.cfg.authorizer {
        None => Ok(Arc::clone(&shared.anonymous)),
        Some(authorizer) => authorizer.authorize(token).await.map(Arc::new),
    }
}

/// Authorizes an HTTP request's token and checks its identity's `rights`
/// on the channel: the refusal to answer with otherwise (counted).
async fn permitted(
    shared: &Shared,
    token: Option<&str>,
    rights: impl FnOnce(&Identity) -> bool,
    denied: &'static str,
) -> Result<(), Response> {
    let identity = authorize(shared, token).await.map_err(|err| auth_refused(shared, &err))?;
    if rights(&identity) {
        return Ok(());
    }
    shared.count_refusal("forbidden");
    Err(refused(StatusCode::FORBIDDEN, "forbidden", denied))
}

/// The answer to a failed hub operation: `503` when the storage failed,
/// else `400`.
fn failed(err: &ServerError) -> Response {
    match err {
        ServerError::Storage(_) => unavailable(err),
        _ => bad_request(err.to_string()),
    }
}

/// The status a refused token is answered with: `503` when the authorizer
/// could not decide, else `401`.
fn auth_status(err: &AuthError) -> u16 {
    match err {
        AuthError::Unavailable(_) | AuthError::Key(_) => 503,
        _ => 401,
    }
}

/// The handshake's outcome before faults: `Err(status)` for an invalid
/// request or refused credentials.
fn request_status<T>(parsed: &Result<ConnRequest, String>, auth: &Result<T, AuthError>) -> Option<u16> {
    match (parsed, auth) {
        (Err(_), _) => Some(400),
        (Ok(_), Err(err)) => Some(auth_status(err)),
        (Ok(_), Ok(_)) => None,
    }
}

/// The answer to refused credentials, told in band when the token came in
/// the query (PROTOCOL.md §6).
fn auth_refused(shared: &Shared, err: &AuthError) -> Response {
    tracing::debug!(%err, "credentials refused");
    match auth_status(err) {
        503 => {
            tracing::warn!(%err, "authorization unavailable");
            (StatusCode::SERVICE_UNAVAILABLE, [(RETRY_AFTER, "1")], err.to_string()).into_response()
        }
        _ => {
            shared.count_refusal("unauthorized");
            refused(StatusCode::UNAUTHORIZED, "unauthorized", err.to_string())
        }
    }
}

/// A connection's presence identity: with an authenticated subject, the
/// subject is its client id, whatever the query says.
fn presence_client(client: Option<ClientInfo>, identity: &Identity) -> Option<ClientInfo> {
    match (&identity.subject, client) {
        (Some(subject), Some(client)) => Some(ClientInfo { id: subject.clone(), data: client.data }),
        (_, client) => client,
    }
}

/// The answer to an SSE request the registry did not take: while the
/// server drains, a stream carrying only the `restarting` frame (the client
/// goes elsewhere at once); at the connection limit, `503`.
fn not_registered(why: NotRegistered) -> Response {
    match why {
        NotRegistered::Closing => {
            let mut body = Vec::new();
            crate::sse::write_event(&crate::state::encode(&crate::sse::restarting()), &mut body);
            ([(CONTENT_TYPE, "text/event-stream"), (CACHE_CONTROL, "no-cache")], body).into_response()
        }
        NotRegistered::TooMany => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(RETRY_AFTER, "1")],
            Json(json!({ "code": "too_many_connections", "message": "the server is at its connection limit" })),
        )
            .into_response(),
    }
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
fn unavailable(err: &ServerError) -> Response {
    tracing::warn!(%err, "request failed");
    (StatusCode::SERVICE_UNAVAILABLE, [(RETRY_AFTER, "1")], err.to_string()).into_response()
}

/// The bearer token of a request: `Authorization: Bearer T`, else the
/// `access_token` query parameter (where a browser cannot set headers).
fn token<'a>(headers: &'a HeaderMap, request: &'a Result<ConnRequest, String>) -> Option<&'a str> {
    bearer(headers).or_else(|| request.as_ref().ok()?.access_token.as_deref())
}

/// The token of an `Authorization: Bearer T` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "))
}

/// Whether refused credentials are told in band (close code `4401` on a
/// WebSocket, an `error` frame on SSE) rather than as `401`: when the token
/// came in the query, as a browser sends it, since a browser hides the
/// status of a refused WebSocket upgrade or EventSource (PROTOCOL.md §6).
fn in_band(headers: &HeaderMap, request: &Result<ConnRequest, String>) -> bool {
    !headers.contains_key(AUTHORIZATION) && request.as_ref().is_ok_and(|r| r.access_token.is_some())
}

/// Closes an upgraded WebSocket with 4401: refused credentials, told in
/// band.
fn close_unauthorized(upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(|mut ws| async move {
        let reason = "the token was refused".into();
        let _ = ws.send(Message::Close(Some(CloseFrame { code: 4401, reason }))).await;
    })
}

async fn websocket(
    State(hub): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let shared = hub.shared();
    let request = parse_request(&uri, None, false);
    let auth = authorize(shared, token(&headers, &request)).await;
    let upgrade_error = upgrade.as_ref().err().map(|r| r.status().as_u16()).or(request_status(&request, &auth));
    let in_band = in_band(&headers, &request);
    if let Some(refused) = shared.admit(Transport::WebSocket, upgrade_error, token(&headers, &request)) {
        if let (Refusal::Unauthorized, true, Ok(upgrade)) = (refused, in_band, upgrade) {
            return close_unauthorized(upgrade);
        }
        return refusal(refused);
    }
    let client = match request {
        Ok(request) => request.client,
        Err(message) => return bad_request(message),
    };
    let identity = match auth {
        Ok(identity) => identity,
        Err(err) => match upgrade {
            Ok(upgrade) if auth_status(&err) == 401 && in_band => {
                shared.count_refusal("unauthorized");
                return close_unauthorized(upgrade);
            }
            _ => return auth_refused(shared, &err),
        },
    };
    let client = presence_client(client, &identity);
    let max = max_message(shared.cfg.limits.max_payload);
    let shared = Arc::clone(shared);
    match upgrade {
        Ok(upgrade) => {
            upgrade
                .max_message_size(max)
                // tungstenite's defaults are 128 KiB each, per connection.
                .read_buffer_size(WS_READ_BUFFER)
                .write_buffer_size(WS_WRITE_BUFFER)
                .on_upgrade(move |ws| crate::conn::run(shared, ws, client, identity))
        }
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

/// An SSE answer carrying one `error` frame `unauthorized`: refused
/// credentials, told in band.
fn sse_unauthorized() -> Response {
    let frame = resub::protocol::ServerFrame::Error {
        code: "unauthorized".into(),
        channel: None,
        key: None,
        message: "the token was refused".into(),
    };
    let mut body = Vec::new();
    crate::sse::write_event(&crate::state::encode(&frame), &mut body);
    ([(CONTENT_TYPE, "text/event-stream"), (CACHE_CONTROL, "no-cache")], body).into_response()
}

async fn sse(State(hub): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    let shared = hub.shared();
    let last_event_id = headers.get(&LAST_EVENT_ID).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let parsed = parse_request(&uri, last_event_id.as_deref(), false);
    let auth = authorize(shared, token(&headers, &parsed)).await;
    let in_band = in_band(&headers, &parsed);
    if let Some(refused) = shared.admit(Transport::Sse, request_status(&parsed, &auth), token(&headers, &parsed)) {
        if matches!(refused, Refusal::Unauthorized) && in_band {
            return sse_unauthorized();
        }
        return refusal(refused);
    }
    let request = match parsed {
        Ok(request) => request,
        Err(message) => return bad_request(message),
    };
    let identity = match auth {
        Ok(identity) => identity,
        Err(err) if auth_status(&err) == 401 && in_band => {
            shared.count_refusal("unauthorized");
            return sse_unauthorized();
        }
        Err(err) => return auth_refused(shared, &err),
    };
    for (channel, _) in &request.channels {
        if let Err(err) = shared.sync_channel(channel).await {
            return unavailable(&err);
        }
    }
    let client = presence_client(request.client, &identity);
    let registered = match shared.register(Transport::Sse, shared.cfg.max_connection_queue, client, identity) {
        Ok(registered) => registered,
        Err(why) => return not_registered(why),
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

async fn poll(State(hub): State<AppState>, uri: Uri, headers: HeaderMap) -> Response {
    let shared = hub.shared();
    let parsed = parse_request(&uri, None, true);
    let auth = authorize(shared, token(&headers, &parsed)).await;
    if let Some(refused) = shared.admit(Transport::Poll, request_status(&parsed, &auth), token(&headers, &parsed)) {
        return refusal(refused);
    }
    let request = match parsed {
        Ok(request) => request,
        Err(message) => return bad_request(message),
    };
    // A poll's refusal is a plain 401: `fetch` sees the status.
    let identity = match auth {
        Ok(identity) => identity,
        Err(err) => return auth_refused(shared, &err),
    };
    let client = presence_client(request.client, &identity);
    if !shared.accepting() {
        // Draining: go elsewhere at once.
        let frame = crate::state::encode(&crate::sse::restarting());
        let body = format!(r#"{{"frames":[{}]}}"#, frame.json.as_str());
        return ([(CONTENT_TYPE, "application/json"), (CACHE_CONTROL, "no-store")], body).into_response();
    }
    for (channel, _) in &request.channels {
        if let Err(err) = shared.sync_channel(channel).await {
            return unavailable(&err);
        }
    }
    let hold_ms =
        request.timeout_ms.unwrap_or_else(|| u64::try_from(shared.cfg.poll_hold.as_millis()).unwrap_or(u64::MAX));
    let answer = match shared.poll_start(&request.channels, hold_ms, hold_ms > 0, client.as_ref(), &identity) {
        PollStart::Answer(body) => body,
        PollStart::Hold(registered) => {
            match crate::poll::hold(shared, registered, &request.channels, hold_ms, identity).await {
                Some(body) => body,
                None => return aborted(),
            }
        }
    };
    *shared.last_poll.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(std::time::Instant::now());
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
    access_token: Option<String>,
}

async fn publish(
    State(hub): State<AppState>,
    Path(channel): Path<String>,
    Query(query): Query<PublishQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let shared = hub.shared();
    let token = bearer(&headers).or(query.access_token.as_deref());
    let rights = |id: &Identity| id.publish.allows(&channel);
    if let Err(refusal) = permitted(shared, token, rights, "this token may not publish to the channel").await {
        return refusal;
    }
    let body = match body {
        Ok(body) => body,
        Err(BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_))) => {
            shared.count_refusal("too_large");
            let limit = shared.cfg.limits.max_payload;
            return refused(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("the limit is {limit} bytes"));
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
        Err(err) => failed(&err),
    }
}

#[derive(Deserialize)]
struct PresenceQuery {
    access_token: Option<String>,
}

/// `GET /presence/{channel}`: who is present, sorted by client id. Needs the
/// right to subscribe to the channel.
async fn presence(
    State(hub): State<AppState>,
    Path(channel): Path<String>,
    Query(query): Query<PresenceQuery>,
    headers: HeaderMap,
) -> Response {
    let shared = hub.shared();
    let token = bearer(&headers).or(query.access_token.as_deref());
    let rights = |id: &Identity| id.subscribe.allows(&channel);
    if let Err(refusal) = permitted(shared, token, rights, "this token may not read the channel").await {
        return refusal;
    }
    match shared.presence(&channel).await {
        Ok(members) => {
            let members: Vec<_> =
                members.into_iter().map(|(id, data)| json!({ "client_id": id, "data": data })).collect();
            ([(CACHE_CONTROL, "no-store")], Json(json!({ "channel": channel, "members": members }))).into_response()
        }
        Err(err) => failed(&err),
    }
}
