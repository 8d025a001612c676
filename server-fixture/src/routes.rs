//! HTTP routes: the WebSocket endpoint, publishing, and the `/control/*`
//! fault switches.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tower_http::cors::{Any, CorsLayer};

use crate::MAX_PAYLOAD;
use crate::state::{Refusal, Shared};

type AppState = Arc<Shared>;

/// The `Idempotency-Key` request header.
const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// The `Last-Event-ID` request header (allowed by CORS for SSE clients).
const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// WebSocket messages above this size are refused by the WebSocket layer: a
/// `publish` frame carries at most [`MAX_PAYLOAD`] of data plus JSON overhead.
const MAX_MESSAGE: usize = 2 * MAX_PAYLOAD + 64 * 1024;

pub(crate) fn router(shared: AppState) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods(Any)
        .allow_headers([IDEMPOTENCY_KEY, LAST_EVENT_ID, AUTHORIZATION, CONTENT_TYPE])
        .expose_headers([RETRY_AFTER]);
    Router::new()
        .route("/ws", get(websocket))
        .route(
            "/publish/{channel}",
            post(publish).layer(DefaultBodyLimit::max(MAX_PAYLOAD)),
        )
        .route("/control/drop", post(control_drop))
        .route("/control/websocket", post(control_websocket))
        .route("/control/stall", post(control_stall))
        .route("/control/unavailable", post(control_unavailable))
        .route("/control/truncate/{channel}", post(control_truncate))
        .route("/control/epoch/{channel}", post(control_epoch))
        .route("/control/auth", post(control_auth))
        .route("/control/stats", get(control_stats))
        .layer(cors)
        .with_state(shared)
}

fn bad_request(message: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, message.into()).into_response()
}

async fn websocket(
    State(shared): State<AppState>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade_error = upgrade.as_ref().err().map(|r| r.status().as_u16());
    match shared.admit(upgrade_error) {
        Some(Refusal::WebSocketDisabled) => {
            (StatusCode::FORBIDDEN, "websocket upgrades refused").into_response()
        }
        Some(Refusal::Unavailable(secs)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(RETRY_AFTER, secs.to_string())],
            "service unavailable",
        )
            .into_response(),
        Some(Refusal::Unauthorized) => (StatusCode::UNAUTHORIZED, "unauthorized").into_response(),
        None => match upgrade {
            Ok(upgrade) => upgrade
                .max_message_size(MAX_MESSAGE)
                .on_upgrade(move |ws| crate::conn::run(shared, ws)),
            Err(rejection) => rejection.into_response(),
        },
    }
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
    body: Bytes,
) -> Response {
    let key = match headers.get(&IDEMPOTENCY_KEY).map(|v| v.to_str()) {
        None => None,
        Some(Ok(key)) => Some(key),
        Some(Err(_)) => return bad_request("Idempotency-Key must be visible ASCII"),
    };
    let Ok(data) = std::str::from_utf8(&body) else {
        return bad_request("the body must be UTF-8");
    };
    match shared.publish(
        &channel,
        key,
        query.event.as_deref().filter(|e| !e.is_empty()),
        data,
    ) {
        Ok(id) => Json(json!({ "id": id })).into_response(),
        Err(err) => bad_request(err.to_string()),
    }
}

async fn control_drop(State(shared): State<AppState>) -> Response {
    Json(json!({ "dropped": shared.drop_all() })).into_response()
}

#[derive(Deserialize)]
struct WebSocketQuery {
    enabled: bool,
}

async fn control_websocket(
    State(shared): State<AppState>,
    Query(query): Query<WebSocketQuery>,
) -> Response {
    shared.set_websocket_enabled(query.enabled);
    Json(json!({ "websocket": shared.websocket_enabled() })).into_response()
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

async fn control_unavailable(
    State(shared): State<AppState>,
    Query(query): Query<UnavailableQuery>,
) -> Response {
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
    match shared.truncate(&channel, query.keep) {
        Ok(oldest) => Json(json!({ "oldest_retained": oldest })).into_response(),
        Err(err) => bad_request(err.to_string()),
    }
}

async fn control_epoch(State(shared): State<AppState>, Path(channel): Path<String>) -> Response {
    match shared.new_epoch(&channel) {
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

#[derive(Serialize)]
struct StatsBody {
    connections_accepted: u64,
    connections_open: usize,
    handshakes_refused: u64,
    slow_consumer_drops: u64,
    events_published: u64,
    handshakes: Vec<HandshakeBody>,
}

#[derive(Serialize)]
struct HandshakeBody {
    /// Milliseconds since the fixture started.
    at_ms: u64,
    status: u16,
}

async fn control_stats(State(shared): State<AppState>) -> Response {
    let stats = shared.stats();
    let started = shared.started;
    let body = StatsBody {
        connections_accepted: stats.connections_accepted,
        connections_open: stats.connections_open,
        handshakes_refused: stats.handshakes_refused,
        slow_consumer_drops: stats.slow_consumer_drops,
        events_published: stats.events_published,
        handshakes: stats
            .handshakes
            .iter()
            .map(|h| HandshakeBody {
                at_ms: u64::try_from(h.at.saturating_duration_since(started).as_millis())
                    .unwrap_or(u64::MAX),
                status: h.status,
            })
            .collect(),
    };
    Json(body).into_response()
}
