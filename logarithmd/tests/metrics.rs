//! `/metrics` through `router().oneshot(..)` on in-memory SQLite: the counters agree with
//! the requests that were made.

mod common;
mod ordered;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::call;
use logarithmd::Config;
use serde_json::{json, Value};

async fn app() -> axum::Router {
    ordered::app(Config::default()).await
}

async fn ingest(app: &axum::Router, token: &str, batch: &Value) -> StatusCode {
    let req = Request::post("/api/v1/ingest")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(batch).unwrap()))
        .unwrap();
    call(app, req).await.0
}

fn batch(container: &str, result: &str, exit_code: i64) -> Value {
    json!({
        "version": 1,
        "agent": {"id": "a", "node": "node-1"},
        "segments": [{
            "container_id": container,
            "meta": {"name": "c", "image": "i", "labels": {}, "created_at": 1,
                     "started_at": 1_000_000_000i64},
            "records": [
                {"seq": 1, "ts": 10, "stream": "stdout", "text": "hello"},
                {"seq": 2, "ts": 11, "stream": "stdout", "text": "[COUT] URL = x"},
                {"seq": 3, "ts": 12, "stream": "stdout", "text": format!("[COUT] CO_RESULT = {result}")}
            ],
            "exit": {"exit_code": exit_code, "finished_at": 4_000_000_000i64, "last_seq": 3,
                     "restart_count": 0}
        }]
    })
}

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

#[tokio::test]
async fn counters_follow_requests() {
    let app = app().await;
    let (s, text) = call(&app, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(value(&text, "logarithmd_ingest_lines_total"), 0.0);
    assert_eq!(value(&text, "logarithmd_ingest_queue_depth"), 0.0);

    assert_eq!(
        ingest(&app, "t0k", &batch("c-one", "true", 0)).await,
        StatusCode::OK
    );
    assert_eq!(
        ingest(&app, "t0k", &batch("c-two", "false", 0)).await,
        StatusCode::OK
    );
    // Resent: duplicates, no new job transitions.
    assert_eq!(
        ingest(&app, "t0k", &batch("c-two", "false", 0)).await,
        StatusCode::OK
    );
    assert_eq!(
        ingest(&app, "wrong", &batch("c-3", "true", 0)).await,
        StatusCode::UNAUTHORIZED
    );
    let (s, _) = call(
        &app,
        Request::get("/api/v1/jobs/12345")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = call(
        &app,
        Request::get("/no/such/path").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let (_, t) = call(&app, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    for (series, want) in [
        ("logarithmd_ingest_lines_total", 6.0),
        ("logarithmd_ingest_duplicate_lines_total", 3.0),
        ("logarithmd_ingest_requests_total{status=\"200\"}", 3.0),
        ("logarithmd_ingest_requests_total{status=\"401\"}", 1.0),
        ("logarithmd_ingest_batch_records_count", 3.0),
        ("logarithmd_ingest_commit_latency_seconds_count", 3.0),
        ("logarithmd_storage_write_duration_seconds_count", 3.0),
        ("logarithmd_jobs_started_total", 2.0),
        ("logarithmd_jobs_finished_total{result=\"success\"}", 1.0),
        ("logarithmd_jobs_finished_total{result=\"failure\"}", 1.0),
        // Started at 1 s, exited at 4 s.
        ("logarithmd_job_duration_seconds_sum{result=\"success\"}", 3.0),
        ("logarithmd_cout_outputs_total{kind=\"co_result\"}", 3.0),
        ("logarithmd_cout_outputs_total{kind=\"output\"}", 3.0),
        (
            "logarithmd_http_requests_total{method=\"POST\",route=\"/api/v1/ingest\",status=\"200\"}",
            3.0,
        ),
        (
            "logarithmd_http_requests_total{method=\"GET\",route=\"/api/v1/jobs/{id}\",status=\"404\"}",
            1.0,
        ),
        (
            "logarithmd_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"}",
            1.0,
        ),
    ] {
        assert_eq!(value(&t, series), want, "{series}");
    }
    // Raw paths never become labels.
    assert!(!t.contains("12345") && !t.contains("/no/such/path"), "{t}");
}
