//! What the ordered-ingest tests share: batches of one container, POSTs with the ordering
//! headers, the lines a job stored and the metrics, all through the router.

#![allow(dead_code)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use logarithmd::api::{router, AppState};
use logarithmd::Config;
use serde_json::{json, Value};
use tower::ServiceExt;

/// A router on an in-memory SQLite database with `config`, ingest by token `t0k`, reads
/// open.
pub async fn app(config: Config) -> axum::Router {
    let store = storage::open(&storage::StorageConfig::new("sqlite::memory:"))
        .await
        .unwrap();
    let config = Config {
        ingest_tokens: vec!["t0k".into()],
        anonymous_read: true,
        ..config
    };
    config.validate().unwrap();
    router(AppState::new(store, config))
}

/// One record of a batch.
pub fn record(seq: u64, text: &str, cont: bool) -> Value {
    json!({"seq": seq, "ts": 1000 + seq as i64, "stream": "stdout", "text": text, "cont": cont})
}

/// A batch of one container; `meta` with its first batch.
pub fn batch(cid: &str, records: Vec<Value>, meta: bool) -> Value {
    let mut seg = json!({"container_id": cid, "records": records});
    if meta {
        seg["meta"] = json!({"name": "ordered", "image": "i", "labels": {}, "created_at": 1, "started_at": 2});
    }
    json!({"version": 1, "agent": {"id": "a", "node": "n"}, "segments": [seg]})
}

/// What logarithmd answered to an ingest request.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    /// `logarithm-ordered-ingest`.
    pub ordered: Option<String>,
    pub retry_after: Option<String>,
    pub body: Value,
}

/// POSTs `body` (token `t0k`) with the ordering headers.
pub async fn post(
    app: &axum::Router,
    body: &Value,
    id: Option<&str>,
    after: Option<&str>,
) -> Answer {
    let mut req = Request::post("/api/v1/ingest")
        .header("authorization", "Bearer t0k")
        .header("content-type", "application/json");
    if let Some(id) = id {
        req = req.header(protocol::BATCH_ID_HEADER, id);
    }
    if let Some(after) = after {
        req = req.header(protocol::BATCH_AFTER_HEADER, after);
    }
    let req = req
        .body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let (status, ordered, retry_after) = (
        resp.status(),
        header(resp.headers(), protocol::ORDERED_INGEST_HEADER),
        header(resp.headers(), "retry-after"),
    );
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        ordered,
        retry_after,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    }
}

fn header(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers.get(name).map(|v| v.to_str().unwrap().to_string())
}

async fn get(app: &axum::Router, uri: &str) -> String {
    let req = Request::get(uri).body(Body::empty()).unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{uri}");
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// The container's stored lines, in order: (seq, text), a line continued over records
/// joined (as the logs API answers).
pub async fn stored(app: &axum::Router, cid: &str) -> Vec<(u64, String)> {
    let id = storage::job_id_for_container(cid);
    let page: Value = serde_json::from_str(
        &get(app, &format!("/api/v1/jobs/{id}/logs?after=0&limit=10000")).await,
    )
    .unwrap();
    assert_eq!(page["more"], false);
    page["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["seq"].as_u64().unwrap(),
                l["text"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The value of one series of `GET /metrics`.
pub async fn metric(app: &axum::Router, series: &str) -> f64 {
    let text = get(app, "/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

/// Polls `series` until it is `want` (it follows requests still on their way).
pub async fn metric_reaches(app: &axum::Router, series: &str, want: f64) {
    for _ in 0..6000 {
        if metric(app, series).await == want {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{series} never reached {want}");
}
