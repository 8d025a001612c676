//! Operating a server: Prometheus metrics, `/healthz` and `/readyz`, on a
//! router meant for a separate, private address.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::hub::Hub;

/// Latency of the storage's answers, in seconds: buckets from 0.25 ms to 4 s.
#[derive(Clone)]
pub(crate) struct Latency(Histogram);

impl Default for Latency {
    fn default() -> Self {
        Self(Histogram::new(exponential_buckets(0.000_25, 2.0, 15)))
    }
}

impl Latency {
    pub(crate) fn observe(&self, took: Duration) {
        self.0.observe(took.as_secs_f64());
    }
}

/// The operator's routes for `hub`, to serve on a separate address (the
/// binary's `--metrics-addr`):
///
/// - `GET /metrics`: metrics in the OpenMetrics text format, every name
///   prefixed `resub_`: connections open and accepted by transport,
///   subscriptions open, events published and delivered, subscriptions by
///   how they started (resumed, live, or the reset reason), refusals by
///   reason, slow consumers dropped, storage (Redis) latency;
/// - `GET /healthz`: `200` while the process serves;
/// - `GET /readyz`: `200` while the hub takes connections (not draining, and
///   Redis answers when configured), else `503`: take the node out of the
///   load balancer.
pub fn metrics_router(hub: Hub) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(hub)
}

async fn readyz(State(hub): State<Hub>) -> Response {
    if hub.ready().await {
        "ready".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

type Labels = [(&'static str, &'static str); 1];

fn counter(value: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(value);
    c
}

fn gauge(value: usize) -> Gauge {
    let g = Gauge::default();
    g.set(i64::try_from(value).unwrap_or(i64::MAX));
    g
}

async fn metrics(State(hub): State<Hub>) -> Response {
    let stats = hub.stats();
    let mut registry = Registry::with_prefix("resub");

    let open = Family::<Labels, Gauge>::default();
    let accepted = Family::<Labels, Counter>::default();
    for (name, now, total) in [
        ("ws", stats.websocket_open, stats.websocket_accepted),
        ("sse", stats.sse_open, stats.sse_accepted),
        ("poll", stats.polls_held, stats.polls_accepted),
    ] {
        open.get_or_create(&[("transport", name)]).set(i64::try_from(now).unwrap_or(i64::MAX));
        accepted.get_or_create(&[("transport", name)]).inc_by(total);
    }
    registry.register("connections", "Open connections (SSE streams and held polls included)", open);
    registry.register("connections_accepted", "Handshakes accepted", accepted);
    registry.register("subscriptions", "Subscriptions open", gauge(stats.subscriptions_open));
    registry.register(
        "events_published",
        "Events published (repeated idempotency keys not counted)",
        counter(stats.events_published),
    );
    registry.register(
        "events_delivered",
        "Events queued for subscribers, one per subscriber",
        counter(stats.events_delivered),
    );
    let resumes = Family::<Labels, Counter>::default();
    for (outcome, n) in &stats.resumes {
        resumes.get_or_create(&[("outcome", outcome)]).inc_by(*n);
    }
    registry.register("subscribes", "Subscriptions by how they started: live, resumed, or the reset reason", resumes);
    let refusals = Family::<Labels, Counter>::default();
    for (reason, n) in &stats.refusals {
        refusals.get_or_create(&[("reason", reason)]).inc_by(*n);
    }
    registry.register("refusals", "Requests, subscriptions and publishes refused, by reason", refusals);
    registry.register(
        "handshakes_refused",
        "Handshakes answered with an error status",
        counter(stats.handshakes_refused),
    );
    registry.register(
        "slow_consumer_drops",
        "Connections dropped because their queue was full",
        counter(stats.slow_consumer_drops),
    );
    if hub.shared().store.is_some() {
        registry.register(
            "storage_seconds",
            "Latency of the storage (Redis) on the publish, subscribe and presence paths",
            hub.shared().storage_latency.0.clone(),
        );
        registry.register(
            "mirror_rebuilds",
            "Channel mirrors rebuilt after falling behind the storage",
            counter(stats.mirror_rebuilds),
        );
    }

    let mut body = String::new();
    if let Err(err) = encode(&mut body, &registry) {
        tracing::error!(%err, "cannot encode metrics");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    ([(CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response()
}
