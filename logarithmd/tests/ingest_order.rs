//! Ordered ingest through the router on a real SQLite database: a batch that names its
//! predecessor (`logarithm-batch-after`) is decoded at once and stored after it; one whose
//! predecessor never comes is answered 503 `out_of_order`; every answer says the server
//! orders batches.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use logarithmd::api::{router, AppState};
use logarithmd::Config;
use serde_json::{json, Value};
use tower::ServiceExt;

const CID: &str = "feedfacefeedfacefeedfacefeedfacefeedfacefeedfacefeedfacefeedface";

async fn app() -> axum::Router {
    let store = storage::open(&storage::StorageConfig::new("sqlite::memory:"))
        .await
        .unwrap();
    let config = Config {
        ingest_tokens: vec!["t0k".into()],
        anonymous_read: true,
        ..Config::default()
    };
    router(AppState::new(store, config))
}

fn batch(seqs: std::ops::RangeInclusive<u64>, meta: bool) -> Value {
    let records: Vec<Value> = seqs
        .map(|s| json!({"seq": s, "ts": 1000 + s as i64, "stream": "stdout", "text": format!("line {s}")}))
        .collect();
    let mut seg = json!({"container_id": CID, "records": records});
    if meta {
        seg["meta"] = json!({"name": "ordered", "image": "i", "labels": {}, "created_at": 1, "started_at": 2});
    }
    json!({"version": 1, "agent": {"id": "a", "node": "n"}, "segments": [seg]})
}

/// POSTs `body` with the ordering headers; the status, the ordering answer header and the
/// body.
async fn post(
    app: &axum::Router,
    body: &Value,
    id: Option<&str>,
    after: Option<&str>,
) -> (StatusCode, Option<String>, Value) {
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
    let status = resp.status();
    let ordered = resp
        .headers()
        .get(protocol::ORDERED_INGEST_HEADER)
        .map(|v| v.to_str().unwrap().to_string());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        ordered,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

async fn stored_seqs(app: &axum::Router) -> Vec<u64> {
    let req = Request::get("/api/v1/jobs").body(Body::empty()).unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let jobs: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let id = jobs["jobs"][0]["id"].as_str().unwrap().to_string();
    let req = Request::get(format!("/api/v1/jobs/{id}/logs?after=0&limit=1000"))
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let page: Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    page["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["seq"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn a_batch_sent_before_its_predecessor_is_stored_after_it() {
    let app = app().await;
    // The second batch arrives first and names the first.
    let second = {
        let app = app.clone();
        tokio::spawn(async move {
            let r = post(&app, &batch(11..=20, false), Some("ab-2"), Some("ab-1")).await;
            (r, tokio::time::Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!second.is_finished(), "stored before the batch it follows");
    let (status, ordered, ack) = post(&app, &batch(1..=10, true), Some("ab-1"), None).await;
    let first_done = tokio::time::Instant::now();
    assert_eq!(status, StatusCode::OK, "{ack}");
    assert_eq!(ordered.as_deref(), Some("1"));
    let ((status, ordered, ack), second_done) = second.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{ack}");
    assert_eq!(ordered.as_deref(), Some("1"));
    assert_eq!(ack["stored"], 10);
    assert!(second_done >= first_done);
    assert_eq!(stored_seqs(&app).await, (1..=20).collect::<Vec<_>>());
    // A third naming a committed batch goes at once.
    let (status, _, _) = post(&app, &batch(21..=30, false), Some("ab-3"), Some("ab-2")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_batch_whose_predecessor_never_comes_is_answered_out_of_order() {
    let app = app().await;
    let (status, _, _) = post(&app, &batch(1..=10, true), Some("cd-1"), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, ordered, body) =
        post(&app, &batch(21..=30, false), Some("cd-3"), Some("cd-2")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "out_of_order");
    assert_eq!(ordered, None);
    // Nothing of it was stored; sent again without the header, it is.
    assert_eq!(stored_seqs(&app).await, (1..=10).collect::<Vec<_>>());
    let (status, _, _) = post(&app, &batch(21..=30, false), Some("cd-3"), None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn malformed_ordering_headers_are_refused() {
    let app = app().await;
    for (id, after) in [(Some("a b"), None), (None, Some("x,,y")), (Some(""), None)] {
        let (status, _, body) = post(&app, &batch(1..=1, true), id, after).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{id:?} {after:?}: {body}");
        assert_eq!(body["error"]["code"], "invalid_header");
    }
}
