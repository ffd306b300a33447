//! The HTTP API: routes, shared state, authentication and health.

pub mod error;
pub mod flows;
pub mod ingest;
pub mod metrics;
pub mod query;
pub mod stream;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use storage::{ApplyOutcome, Storage, TransitionKind};
use subtle::ConstantTimeEq;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::config::Config;
use crate::flows::store::DocumentRunStore;
use crate::live::Live;
use crate::metrics::Metrics;
use crate::notify::JobEvents;
use error::{ApiError, ApiResult};
use ingest::IngestGate;
use tokio::sync::Notify;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub storage: Arc<dyn Storage>,
    pub config: Arc<Config>,
    pub ingest_gate: Arc<IngestGate>,
    /// Prometheus metrics, served on `GET /metrics`.
    pub metrics: Arc<Metrics>,
    /// In-process job events, published after each commit (see [`crate::notify`]).
    pub events: JobEvents,
    /// Woken after a commit that may have written webhook deliveries.
    pub webhook_wake: Arc<Notify>,
    /// The flow engine, once it runs (see [`crate::flows`]).
    pub flows: crate::flows::EngineHandle,
    /// Live follow of job logs and runs (see [`crate::live`]).
    pub live: Live,
}

impl AppState {
    pub fn new(storage: Arc<dyn Storage>, config: Config) -> AppState {
        let gate = IngestGate::new(
            config.ingest_concurrency,
            config.ingest_queue,
            config.ingest_queue_timeout,
        );
        let metrics = Arc::new(Metrics::new(storage.backend()));
        let live = Live::new(
            storage.clone(),
            Arc::new(DocumentRunStore::new(storage.clone())),
            config.live.clone(),
        );
        AppState {
            live,
            storage,
            metrics,
            config: Arc::new(config),
            ingest_gate: Arc::new(gate),
            events: JobEvents::default(),
            webhook_wake: Arc::new(Notify::new()),
            flows: crate::flows::EngineHandle::default(),
        }
    }

    /// Makes the webhook dispatcher look for due deliveries now.
    pub fn wake_dispatcher(&self) {
        // notify_one keeps a permit when the dispatcher is busy, so no wake-up is lost.
        self.webhook_wake.notify_one();
    }

    /// Accepts `Authorization: Bearer <token>` matching one configured token, compared in
    /// constant time. With no tokens configured, ingest is open.
    pub fn check_ingest_token(&self, headers: &HeaderMap) -> ApiResult<()> {
        if self.config.ingest_tokens.is_empty() {
            return Ok(());
        }
        let presented = bearer(headers).ok_or_else(ApiError::unauthorized)?;
        // Compare against every token so the time taken does not depend on which matched.
        let mut ok = subtle::Choice::from(0u8);
        for t in &self.config.ingest_tokens {
            ok |= t.as_bytes().ct_eq(presented.as_bytes());
        }
        if bool::from(ok) {
            Ok(())
        } else {
            Err(ApiError::unauthorized())
        }
    }

    /// Accepts `Authorization: Bearer <admin_token>` (constant-time). `what` names the
    /// guarded action for the error when no admin token is configured at all.
    pub fn check_admin_token(&self, headers: &HeaderMap, what: &str) -> ApiResult<()> {
        let Some(expected) = self.config.admin_token.as_deref() else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                format!("{what} needs an admin_token, and none is configured"),
            ));
        };
        let presented = bearer(headers).ok_or_else(ApiError::unauthorized)?;
        if bool::from(expected.as_bytes().ct_eq(presented.as_bytes())) {
            Ok(())
        } else {
            Err(ApiError::unauthorized())
        }
    }

    /// Called after a batch is committed (never before): publishes its events in-process
    /// and wakes the webhook dispatcher for the deliveries the commit wrote.
    pub fn notify(&self, outcome: &ApplyOutcome) {
        metrics::count_job_events(&self.metrics, outcome);
        if !outcome.events.is_empty() {
            self.events.publish(&outcome.events);
            self.wake_dispatcher();
        }
        for t in &outcome.transitions {
            match t.kind {
                TransitionKind::Started => tracing::info!(job_id = t.job_id, "job started"),
                TransitionKind::Finished => tracing::info!(job_id = t.job_id, "job finished"),
            }
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(protocol::AUTH_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// All routes.
pub fn router(state: AppState) -> Router {
    let timeout = state.config.request_timeout;
    Router::new()
        .route(protocol::INGEST_PATH, post(ingest::ingest))
        .route("/api/v1/jobs", get(query::list_jobs))
        .route("/api/v1/jobs/{id}", get(query::get_job))
        .route("/api/v1/jobs/{id}/logs", get(query::job_logs))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::metrics))
        .merge(crate::webhooks::api::routes())
        .merge(flows::routes())
        .merge(stream::routes())
        .fallback(|| async { ApiError::not_found("no such route") })
        .layer(TraceLayer::new_for_http())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout,
        ))
        // Outermost, so requests that time out are counted too.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::track_http,
        ))
        .with_state(state)
}

/// Liveness: the process serves HTTP.
async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Readiness: storage answers within 2 s.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if state.flows.is_starting() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                serde_json::json!({ "status": "not ready", "reason": "the flow engine is starting" }),
            ),
        );
    }
    match tokio::time::timeout(Duration::from_secs(2), state.storage.ping()).await {
        Ok(Ok(())) => (
            StatusCode::OK,
            Json(serde_json::json!({ "status": "ready", "storage": state.storage.backend() })),
        ),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "not ready", "reason": e.to_string() })),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                serde_json::json!({ "status": "not ready", "reason": "storage did not answer within 2 s" }),
            ),
        ),
    }
}
