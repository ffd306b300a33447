//! `GET /metrics` (Prometheus text format) and the middleware that counts every HTTP
//! request by matched route, method and status.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use storage::{ApplyOutcome, EventKind};

use crate::metrics::Metrics;

use super::AppState;

/// Content type of the Prometheus text exposition format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves every metric. Gauges that mirror live state are read now, at scrape time.
pub async fn metrics(State(state): State<AppState>) -> Response {
    state
        .metrics
        .ingest_queue_depth
        .set(i64::try_from(state.ingest_gate.waiting()).unwrap_or(i64::MAX));
    let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    let waiting = state.ingest_order.waiting();
    state
        .metrics
        .ingest_order_waiting
        .set(gauge(waiting.batches));
    state
        .metrics
        .ingest_order_waiting_bytes
        .set(gauge(waiting.bytes));
    let followers = &state.metrics.live_followers;
    followers
        .with_label_values(&["job"])
        .set(gauge(state.live.jobs.followers()));
    followers
        .with_label_values(&["run"])
        .set(gauge(state.live.runs.followers()));
    let mut resp = state.metrics.render().into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT_FORMAT));
    resp
}

/// Counts and times one request. The route label is the matched route pattern
/// (`/api/v1/jobs/{id}`), never the raw path, so its values are bounded; a path that
/// matches no route is `unmatched`.
pub async fn track_http(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = method_label(req.method());
    let resp = next.run(req).await;
    state
        .metrics
        .http_answered(&route, method, resp.status().as_u16(), start.elapsed());
    resp
}

/// Standard methods by name; anything else is `other` (the label stays bounded).
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// Counts the job events of a committed batch, from the job as the commit left it (so the
/// result needs no second read).
pub fn count_job_events(metrics: &Metrics, outcome: &ApplyOutcome) {
    for ev in &outcome.events {
        match ev.kind {
            EventKind::JobStarted => metrics.jobs_started.inc(),
            EventKind::JobFinished => {
                let job = &ev.job;
                // Docker may stamp a very short run's exit a little before its start:
                // that run took no time.
                let duration = job
                    .finished_at
                    .filter(|_| job.started_at > 0)
                    .map(|f| Duration::from_nanos(u64::try_from(f - job.started_at).unwrap_or(0)));
                let result = if job.status.is_final() {
                    job.status.as_str()
                } else {
                    "unknown"
                };
                metrics.job_finished(result, duration);
            }
            EventKind::FlowFinished => {}
        }
    }
}
