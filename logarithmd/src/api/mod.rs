//! The HTTP API: routes, shared state and health. Access checks are [`crate::auth`]'s.

pub mod callbacks;
pub mod download;
pub mod error;
pub mod flows;
pub mod ingest;
pub mod ingest_order;
pub mod line_reader;
pub mod loki;
pub mod metrics;
pub mod query;
pub mod read_limits;
pub mod stream;
pub mod trigger;
pub mod ui;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use storage::{ApplyOutcome, Storage, TransitionKind};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::flows::store::DocumentRunStore;
use crate::live::Live;
use crate::metrics::Metrics;
use crate::notify::JobEvents;
use error::ApiError;
use ingest::IngestGate;
use tokio::sync::Notify;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub storage: Arc<dyn Storage>,
    pub config: Arc<Config>,
    pub ingest_gate: Arc<IngestGate>,
    /// Batches stored after the ones they name (ordered ingest).
    pub ingest_order: Arc<ingest_order::IngestOrder>,
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
    /// Tokens and scopes: every route's access check (see [`crate::auth`]).
    pub auth: Arc<Authenticator>,
    /// Open follows per token (see [`crate::auth::follows`]).
    pub follows: Arc<crate::auth::follows::FollowLimiter>,
    /// Secret masks applied to every batch before it is stored (see [`crate::masking`]).
    pub masker: Arc<crate::masking::Masker>,
    /// The values of `[engine.secrets]` (flows' `secrets:`).
    pub flow_secrets: Arc<crate::flows::secrets::FlowSecrets>,
    /// Each ingested job's masks: the global ones and its flow secrets.
    pub run_masks: Arc<crate::masking::run_masks::RunMasks>,
}

impl FromRef<AppState> for Arc<Authenticator> {
    fn from_ref(state: &AppState) -> Arc<Authenticator> {
        state.auth.clone()
    }
}

impl AppState {
    /// Panics if the configuration's tokens or masks are invalid: call [`Config::validate`] first
    /// (`serve` does).
    pub fn new(storage: Arc<dyn Storage>, config: Config) -> AppState {
        let auth = config
            .authenticator()
            .expect("tokens are checked by Config::validate before the state is built");
        let follows = crate::auth::follows::FollowLimiter::new(config.max_follows_per_token);
        let masker = Arc::new(
            crate::masking::Masker::from_config(&config.masking)
                .expect("masks are checked by Config::validate before the state is built"),
        );
        let flow_secrets = Arc::new(
            crate::flows::secrets::FlowSecrets::read(&config.engine.secrets)
                .expect("secrets are checked by Config::validate before the state is built"),
        );
        let run_masks = Arc::new(
            crate::masking::run_masks::RunMasks::new(
                masker.clone(),
                flow_secrets.clone(),
                storage.clone(),
            )
            .expect("secrets are checked by Config::validate before the state is built"),
        );
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
        let ingest_order = Arc::new(ingest_order::IngestOrder::new(
            config.ingest_order_waiting_bytes,
        ));
        AppState {
            live,
            storage,
            metrics,
            config: Arc::new(config),
            ingest_gate: Arc::new(gate),
            ingest_order,
            events: JobEvents::default(),
            webhook_wake: Arc::new(Notify::new()),
            flows: crate::flows::EngineHandle::default(),
            auth: Arc::new(auth),
            masker,
            flow_secrets,
            run_masks,
            follows,
        }
    }

    /// Makes the webhook dispatcher look for due deliveries now.
    pub fn wake_dispatcher(&self) {
        // notify_one keeps a permit when the dispatcher is busy, so no wake-up is lost.
        self.webhook_wake.notify_one();
    }

    /// [`AppState::notify`] and the live followers, for writes made outside ingest (service
    /// jobs): what every commit of job rows is announced to.
    pub fn commit_notifier(&self) -> crate::flows::service::ledger::Notifier {
        let state = self.clone();
        Arc::new(move |write, outcome| {
            state.live.jobs.publish(write, &outcome.events);
            state.notify(outcome);
        })
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
        .merge(webhooks::routes())
        .merge(flows::routes())
        .merge(callbacks::routes())
        .merge(stream::routes())
        .merge(loki::routes())
        .merge(ui::routes())
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
