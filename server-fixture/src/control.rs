//! The `/control/*` routes: the fault switches of [`crate::Fixture`] over
//! HTTP, for tests in other processes and languages.

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use resub_server::{Faults, Hub, Transport};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tower_http::cors::{Any, CorsLayer};

use crate::chaos::ChaosState;
use crate::{ChaosPlan, FixtureError};

/// What the control routes act on.
#[derive(Clone)]
pub(crate) struct Control {
    pub(crate) hub: Hub,
    pub(crate) faults: Faults,
    pub(crate) chaos: Arc<ChaosState>,
}

type AppState = Control;

pub(crate) fn router(control: Control) -> Router {
    Router::new()
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
        .route("/control/chaos", post(control_chaos_start).get(control_chaos_report))
        // Pages on other origins drive the faults too (the package tests).
        .layer(CorsLayer::new().allow_origin(Any).allow_methods(Any).allow_headers(Any))
        .with_state(control)
}

/// `400` with a body shaped like an `error` frame.
fn bad_request(message: impl Into<String>) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "code": "bad_request", "message": message.into() }))).into_response()
}

async fn control_drop(State(c): State<AppState>) -> Response {
    Json(json!({ "dropped": c.faults.drop_all() })).into_response()
}

#[derive(Deserialize)]
struct EnabledQuery {
    enabled: bool,
}

async fn control_websocket(State(c): State<AppState>, Query(query): Query<EnabledQuery>) -> Response {
    c.faults.set_enabled(Transport::WebSocket, query.enabled);
    Json(json!({ "websocket": c.faults.enabled(Transport::WebSocket) })).into_response()
}

async fn control_sse(State(c): State<AppState>, Query(query): Query<EnabledQuery>) -> Response {
    c.faults.set_enabled(Transport::Sse, query.enabled);
    Json(json!({ "sse": c.faults.enabled(Transport::Sse) })).into_response()
}

async fn control_poll(State(c): State<AppState>, Query(query): Query<EnabledQuery>) -> Response {
    c.faults.set_enabled(Transport::Poll, query.enabled);
    Json(json!({ "poll": c.faults.enabled(Transport::Poll) })).into_response()
}

async fn control_stall(State(c): State<AppState>) -> Response {
    Json(json!({ "stalled": c.faults.stall_all() })).into_response()
}

#[derive(Deserialize)]
struct UnavailableQuery {
    retry_after: Option<u64>,
    count: Option<u32>,
    enabled: Option<bool>,
}

async fn control_unavailable(State(c): State<AppState>, Query(query): Query<UnavailableQuery>) -> Response {
    if query.enabled == Some(false) {
        c.faults.clear_unavailable();
        return Json(json!({ "unavailable": false })).into_response();
    }
    let retry_after = query.retry_after.unwrap_or(1);
    c.faults.set_unavailable(retry_after, query.count);
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
    State(c): State<AppState>,
    Path(channel): Path<String>,
    Query(query): Query<TruncateQuery>,
) -> Response {
    match c.faults.truncate(&channel, query.keep).await {
        Ok(oldest) => Json(json!({ "oldest_retained": oldest })).into_response(),
        Err(err) => bad_request(err.to_string()),
    }
}

async fn control_epoch(State(c): State<AppState>, Path(channel): Path<String>) -> Response {
    match c.faults.new_epoch(&channel).await {
        Ok(head) => Json(json!({ "head": head })).into_response(),
        Err(err) => bad_request(err.to_string()),
    }
}

#[derive(Deserialize)]
struct AuthQuery {
    reject: bool,
}

async fn control_auth(State(c): State<AppState>, Query(query): Query<AuthQuery>) -> Response {
    c.faults.set_reject_auth(query.reject);
    Json(json!({ "reject": query.reject })).into_response()
}

#[derive(Deserialize)]
struct CountQuery {
    count: u32,
}

async fn control_drop_acks(State(c): State<AppState>, Query(query): Query<CountQuery>) -> Response {
    c.faults.set_drop_acks(query.count);
    Json(json!({ "drop_acks": query.count })).into_response()
}

#[derive(Deserialize)]
struct OversizeQuery {
    /// `publish` or `poll`.
    what: String,
    count: u32,
    bytes: usize,
}

async fn control_oversize(State(c): State<AppState>, Query(q): Query<OversizeQuery>) -> Response {
    let publish = match q.what.as_str() {
        "publish" => true,
        "poll" => false,
        other => return bad_request(format!("what must be publish or poll, not {other:?}")),
    };
    c.faults.set_oversize(publish, q.count, q.bytes);
    Json(json!({ "what": q.what, "count": q.count, "bytes": q.bytes })).into_response()
}

#[derive(Deserialize)]
struct TokensQuery {
    /// Comma-separated tokens to accept; absent or empty: any.
    accept: Option<String>,
}

async fn control_tokens(State(c): State<AppState>, Query(query): Query<TokensQuery>) -> Response {
    let tokens: Option<HashSet<String>> = query
        .accept
        .filter(|a| !a.is_empty())
        .map(|a| a.split(',').filter(|t| !t.is_empty()).map(str::to_owned).collect());
    let count = tokens.as_ref().map(HashSet::len);
    c.faults.set_tokens(tokens);
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

async fn control_stats(State(c): State<AppState>) -> Response {
    let stats = c.hub.stats();
    let started = c.faults.started();
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
async fn control_chaos_start(State(c): State<AppState>, body: Bytes) -> Response {
    let plan: ChaosPlan = match serde_json::from_slice(&body) {
        Ok(plan) => plan,
        Err(err) => return bad_request(format!("invalid chaos plan: {err}")),
    };
    match crate::chaos::start(&c.hub, &c.faults, &c.chaos, plan) {
        Ok(()) => (StatusCode::ACCEPTED, Json(json!({ "started": true }))).into_response(),
        Err(FixtureError::Busy) => (StatusCode::CONFLICT, FixtureError::Busy.to_string()).into_response(),
        Err(err) => bad_request(err.to_string()),
    }
}

async fn control_chaos_report(State(c): State<AppState>) -> Response {
    match c.chaos.report() {
        Some(report) => Json(report).into_response(),
        None => (StatusCode::NOT_FOUND, "no chaos run yet").into_response(),
    }
}
