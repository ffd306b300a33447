//! The read side of Loki's HTTP API, so Grafana's Loki data source (Explore, logs panels,
//! live tail) shows job logs.
//!
//! Streams are a job's stdout and stderr; their labels are described in [`labels`]. Queries
//! are the LogQL subset of [`logql`]; anything else is answered 400 naming what is
//! supported, never approximated. Every query is bounded: it needs a `flow`, `run`, `job`
//! or `job_id` equality matcher, or a time range of at most `loki_max_range`; it examines at
//! most `loki_max_jobs` jobs and `max_scan_lines` lines, and answers 400 rather than a
//! partial result past either.
//!
//! # Layout
//! - [`logql`]: the query parser (pure).
//! - [`labels`]: a job's stream labels (built-in names and its own labels made
//!   Prometheus-safe).
//! - [`params`]: Loki's request parameters (times, limit, direction) and errors.
//! - [`select`]: finding the jobs a selector matches, within the bounds.
//! - [`query`]: `query_range` and `query` (streams; constant vectors for the health check).
//! - [`metadata`]: `labels`, `label/{name}/values`, `series`.
//! - [`tail`]: `tail` over WebSocket.

pub mod labels;
pub mod logql;
pub mod metadata;
pub mod params;
pub mod query;
pub mod select;
pub mod tail;

use axum::routing::get;
use axum::Router;

use super::AppState;

/// The Loki routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/loki/api/v1/query_range", get(query::query_range))
        .route("/loki/api/v1/query", get(query::query))
        .route("/loki/api/v1/labels", get(metadata::labels))
        .route(
            "/loki/api/v1/label/{name}/values",
            get(metadata::label_values),
        )
        .route("/loki/api/v1/series", get(metadata::series))
        .route("/loki/api/v1/tail", get(tail::tail))
}
