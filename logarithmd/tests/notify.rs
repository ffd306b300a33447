//! In-process job events and the webhook outbox through the router (no socket), on an
//! in-memory SQLite storage: events are published after the commit, carry the committed
//! job, and a rejected batch publishes nothing.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use logarithmd::api::{router, AppState};
use logarithmd::notify::EventKind;
use logarithmd::Config;
use serde_json::{json, Value};
use tower::ServiceExt;

async fn state() -> AppState {
    let store = storage::open(&storage::StorageConfig::new("sqlite::memory:"))
        .await
        .unwrap();
    let config = Config {
        admin_token: Some("adm".into()),
        anonymous_read: true,
        ..Config::default()
    };
    AppState::new(store, config)
}

async fn call(app: &axum::Router, req: Request<Body>) -> (StatusCode, Value) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// A JSON POST; `token` empty sends no `Authorization` header (ingest is open here).
fn post(uri: &str, token: &str, body: &Value) -> Request<Body> {
    let mut r = Request::post(uri).header("content-type", "application/json");
    if !token.is_empty() {
        r = r.header("authorization", format!("Bearer {token}"));
    }
    r.body(Body::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

fn batch(container: &str, seq_ok: bool) -> Value {
    json!({
        "version": 1,
        "agent": {"id": "t", "node": "n"},
        "segments": [{
            "container_id": container,
            "meta": {"name": "c", "image": "i", "labels": {"io.containerops.flow": "f"},
                     "created_at": 1, "started_at": 2},
            "records": [
                {"seq": 1, "ts": 10, "stream": "stdout", "text": "[COUT] OUT = 1"},
                {"seq": if seq_ok { 2 } else { 1 }, "ts": 11, "stream": "stdout",
                 "text": "[COUT] CO_RESULT = false"}
            ],
            "exit": {"exit_code": 0, "finished_at": 20, "last_seq": 2}
        }]
    })
}

#[tokio::test]
async fn committed_events_reach_in_process_subscribers_and_the_outbox() {
    let state = state().await;
    let mut events = state.events.subscribe();
    let storage = state.storage.clone();
    let app = router(state);

    let (s, sub) = call(
        &app,
        post(
            "/api/v1/webhooks",
            "adm",
            &json!({"url": "http://127.0.0.1:9/h", "secret": "k", "events": ["job.finished"],
                    "filters": {"io.containerops.flow": "f"}}),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{sub}");
    assert!(sub.get("secret").is_none());

    // A rejected batch commits nothing and publishes nothing.
    let (s, _) = call(
        &app,
        post("/api/v1/ingest", "", &batch(&"b".repeat(64), false)),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(events.try_recv().is_none());

    let c = "a".repeat(64);
    let (s, ack) = call(&app, post("/api/v1/ingest", "", &batch(&c, true))).await;
    assert_eq!(s, StatusCode::OK, "{ack}");
    let started = events.recv().await.unwrap();
    assert_eq!(started.kind, EventKind::JobStarted);
    assert_eq!(started.job.container_id, c);
    let finished = events.recv().await.unwrap();
    assert_eq!(finished.kind, EventKind::JobFinished);
    assert_eq!(finished.job.status, storage::JobStatus::Failure);
    assert_eq!(finished.job.reason.as_deref(), Some("CO_RESULT = false"));
    assert_eq!(
        finished.job.outputs.get("OUT").map(String::as_str),
        Some("1")
    );
    // By the time it is published, it is in storage.
    let stored = storage.get_job(finished.job.id).await.unwrap().unwrap();
    assert_eq!(stored, finished.job);
    assert!(events.try_recv().is_none());

    // The same commit wrote the outbox row for the matching subscription.
    let id: i64 = sub["id"].as_str().unwrap().parse().unwrap();
    let deliveries = storage.list_deliveries(id, 10).await.unwrap();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].delivery.event, EventKind::JobFinished);
    assert_eq!(deliveries[0].delivery.job.as_ref(), Some(&finished.job));

    // The same batch again: no transition, no event, no delivery.
    let (s, _) = call(&app, post("/api/v1/ingest", "", &batch(&c, true))).await;
    assert_eq!(s, StatusCode::OK);
    assert!(events.try_recv().is_none());
    assert_eq!(storage.list_deliveries(id, 10).await.unwrap().len(), 1);
}
