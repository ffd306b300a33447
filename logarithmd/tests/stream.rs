//! SSE contract tests for live follow (`/api/v1/jobs/{id}/logs/stream`,
//! `/api/v1/runs/{id}/stream`), through `router().oneshot(..)` on a real SQLite storage:
//! resume with `Last-Event-ID`, the `end` event, heartbeats, 200 followers of one job,
//! continuation records, lines committed by another replica, run saves, shutdown.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use logarithmd::api::{router, AppState};
use logarithmd::live::LiveSettings;
use logarithmd::Config;
use serde_json::json;
use tower::ServiceExt;

mod sse;
use sse::{batch, ingest, job_id, lines, record, Reader};

fn config() -> Config {
    Config {
        live: LiveSettings {
            heartbeat: Duration::from_millis(200),
            catch_up_interval: Duration::from_millis(100),
            ..LiveSettings::default()
        },
        anonymous_read: true,
        ..Config::default()
    }
}

async fn state_on(store: Arc<dyn storage::Storage>) -> (axum::Router, AppState) {
    let state = AppState::new(store, config());
    (router(state.clone()), state)
}

async fn state() -> (axum::Router, AppState) {
    let store = storage::open(&storage::StorageConfig::new("sqlite::memory:"))
        .await
        .unwrap();
    state_on(store).await
}

fn expected(range: std::ops::RangeInclusive<u64>) -> Vec<(String, String)> {
    range
        .map(|i| (i.to_string(), format!("line {i}")))
        .collect()
}

#[tokio::test]
async fn stream_sends_stored_then_pushed_lines_then_end_with_the_verdict() {
    let (app, _) = state().await;
    ingest(&app, batch(lines(1..=3), None)).await;
    let uri = format!("/api/v1/jobs/{}/logs/stream", job_id());
    let mut r = Reader::open(&app, &uri, None).await;
    let first = r.next_block().await.unwrap();
    assert_eq!(first.comment.as_deref(), Some("live"));
    assert_eq!(r.lines(3).await, expected(1..=3));
    ingest(&app, batch(lines(4..=5), None)).await;
    assert_eq!(r.lines(2).await, expected(4..=5));
    ingest(
        &app,
        batch(
            vec![
                record(6, "stderr", "line 6"),
                record(7, "stdout", "[COUT] CO_RESULT = true"),
            ],
            Some(7),
        ),
    )
    .await;
    let six = r.next_event().await.unwrap();
    assert_eq!(six.json()["stream"], "stderr");
    assert_eq!(six.json()["seq"], 6);
    assert_eq!(
        r.lines(1).await,
        vec![("7".into(), "[COUT] CO_RESULT = true".into())]
    );
    let end = r.next_event().await.unwrap();
    assert_eq!(end.event.as_deref(), Some("end"));
    let job = end.json();
    assert_eq!(job["status"], "success");
    assert_eq!(job["result"], true);
    assert_eq!(job["reason"], "CO_RESULT = true");
    assert_eq!(job["exit_code"], 0);
    assert_eq!(job["id"], job_id());
    r.assert_closed().await;

    // A finished job streams what it has, then its end, at once.
    let mut again = Reader::open(&app, &format!("{uri}?after=5"), None).await;
    assert_eq!(again.next_event().await.unwrap().id.as_deref(), Some("6"));
    assert_eq!(again.next_event().await.unwrap().id.as_deref(), Some("7"));
    assert_eq!(
        again.next_event().await.unwrap().event.as_deref(),
        Some("end")
    );
    again.assert_closed().await;
}

#[tokio::test]
async fn last_event_id_resumes_with_no_gap_and_no_duplicate() {
    let (app, _) = state().await;
    ingest(&app, batch(lines(1..=5), None)).await;
    let uri = format!("/api/v1/jobs/{}/logs/stream", job_id());
    let mut r = Reader::open(&app, &uri, None).await;
    assert_eq!(r.lines(5).await, expected(1..=5));
    drop(r);
    // Lines committed while nobody listened, and a resend of stored ones.
    ingest(&app, batch(lines(4..=8), None)).await;
    let mut r = Reader::open(&app, &uri, Some("5")).await;
    assert_eq!(r.lines(3).await, expected(6..=8));
    ingest(&app, batch(lines(7..=10), Some(10))).await;
    assert_eq!(r.lines(2).await, expected(9..=10));
    assert_eq!(r.next_event().await.unwrap().event.as_deref(), Some("end"));
    r.assert_closed().await;

    let bad = Request::get(&uri)
        .header("last-event-id", "abc")
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(bad).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let missing = Request::get("/api/v1/jobs/42/logs/stream")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        app.clone().oneshot(missing).await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn idle_streams_carry_heartbeats() {
    let (app, _) = state().await;
    ingest(&app, batch(lines(1..=1), None)).await;
    let uri = format!("/api/v1/jobs/{}/logs/stream", job_id());
    let mut r = Reader::open(&app, &uri, None).await;
    assert_eq!(r.lines(1).await, expected(1..=1));
    // heartbeat = 200ms in this config: three in a row, no events between.
    for _ in 0..3 {
        let b = r.next_block().await.unwrap();
        assert_eq!(b.event, None, "{b:?}");
        assert_eq!(b.comment.as_deref(), Some("heartbeat"));
    }
}

#[tokio::test]
async fn two_hundred_followers_of_one_job_each_get_every_line_once() {
    let (app, state) = state().await;
    ingest(&app, batch(lines(1..=2), None)).await;
    let uri = format!("/api/v1/jobs/{}/logs/stream", job_id());
    let mut readers = Vec::new();
    for _ in 0..200 {
        let mut r = Reader::open(&app, &uri, None).await;
        assert_eq!(r.lines(2).await, expected(1..=2));
        readers.push(r);
    }
    assert_eq!(state.live.followers(), 200);
    assert!(
        metrics(&app)
            .await
            .contains("logarithmd_live_followers{kind=\"job\"} 200"),
        "the gauge counts the followers"
    );
    for i in 0..10 {
        ingest(&app, batch(lines(3 + i * 10..=12 + i * 10), None)).await;
    }
    ingest(&app, batch(lines(103..=103), Some(103))).await;
    let tasks: Vec<_> = readers
        .into_iter()
        .map(|mut r| {
            tokio::spawn(async move {
                let got = r.lines(101).await;
                let end = r.next_event().await.unwrap();
                r.assert_closed().await;
                (got, end.event)
            })
        })
        .collect();
    for t in tasks {
        let (got, end) = t.await.unwrap();
        assert_eq!(got, expected(3..=103));
        assert_eq!(end.as_deref(), Some("end"));
    }
    assert_eq!(state.live.followers(), 0);
    assert!(metrics(&app)
        .await
        .contains("logarithmd_live_followers{kind=\"job\"} 0"));
}

async fn metrics(app: &axum::Router) -> String {
    let req = Request::get("/metrics").body(Body::empty()).unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

#[tokio::test]
async fn continuation_records_are_one_line_even_across_batches() {
    let (app, _) = state().await;
    let uri = format!("/api/v1/jobs/{}/logs/stream", job_id());
    ingest(&app, batch(lines(1..=1), None)).await;
    let mut r = Reader::open(&app, &uri, None).await;
    assert_eq!(r.lines(1).await, expected(1..=1));
    ingest(
        &app,
        batch(
            vec![json!({"seq": 2, "ts": 5, "stream": "stdout", "text": "long-", "cont": true})],
            None,
        ),
    )
    .await;
    ingest(
        &app,
        batch(
            vec![
                json!({"seq": 3, "ts": 5, "stream": "stdout", "text": "line", "cont": false}),
                record(4, "stdout", "after"),
            ],
            None,
        ),
    )
    .await;
    let joined = r.next_event().await.unwrap();
    assert_eq!(joined.id.as_deref(), Some("3"));
    assert_eq!(
        (joined.json()["seq"].clone(), joined.json()["text"].clone()),
        (json!(2), json!("long-line"))
    );
    assert_eq!(r.lines(1).await, vec![("4".into(), "after".into())]);
    // Resuming after the joined line starts at the next one.
    let mut again = Reader::open(&app, &uri, Some("3")).await;
    assert_eq!(again.lines(1).await, vec![("4".into(), "after".into())]);
}

/// Two replicas on one database: lines and the end committed through replica B reach a
/// follower on replica A through A's catch-up read (B's hub never sees A's followers).
#[tokio::test]
async fn lines_committed_by_another_replica_reach_followers() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("l.db").display());
    let store_a = storage::open(&storage::StorageConfig::new(url.clone()))
        .await
        .unwrap();
    let store_b = storage::open(&storage::StorageConfig::new(url))
        .await
        .unwrap();
    let (a, _) = state_on(store_a).await;
    let (b, _) = state_on(store_b).await;
    ingest(&a, batch(lines(1..=2), None)).await;
    let uri = format!("/api/v1/jobs/{}/logs/stream", job_id());
    let mut r = Reader::open(&a, &uri, None).await;
    assert_eq!(r.lines(2).await, expected(1..=2));
    ingest(&b, batch(lines(3..=5), None)).await;
    assert_eq!(r.lines(3).await, expected(3..=5));
    // Mixed: A pushes 7..8 before it learns of B's 6; the gap sends it to storage.
    ingest(&b, batch(lines(6..=6), None)).await;
    ingest(&a, batch(lines(7..=8), None)).await;
    assert_eq!(r.lines(3).await, expected(6..=8));
    ingest(&b, batch(lines(9..=9), Some(9))).await;
    assert_eq!(r.lines(1).await, expected(9..=9));
    let end = r.next_event().await.unwrap();
    assert_eq!(end.event.as_deref(), Some("end"));
    assert_eq!(end.json()["status"], "success");
    r.assert_closed().await;
}

#[tokio::test]
async fn shutdown_ends_streams_without_an_end_event() {
    let (app, state) = state().await;
    ingest(&app, batch(lines(1..=2), None)).await;
    let uri = format!("/api/v1/jobs/{}/logs/stream", job_id());
    let mut r = Reader::open(&app, &uri, None).await;
    assert_eq!(r.lines(2).await, expected(1..=2));
    state.live.close();
    // Closed without an end event: the client resumes with Last-Event-ID.
    r.assert_closed().await;
}

#[tokio::test]
async fn run_stream_pushes_each_save_then_ends() {
    let (app, state) = state().await;
    let flow = engine::Flow::from_yaml(include_str!("../../examples/demo.yaml")).unwrap();
    let store = logarithmd::flows::store::DocumentRunStore::new(state.storage.clone())
        .publishing_to(state.live.runs.clone());
    use engine::RunStore;
    let mut run = engine::Run::new("run-live-1".into(), flow, None, 10);
    let v1 = store.put_run(&run, 0).await.unwrap();
    let mut r = Reader::open(&app, "/api/v1/runs/run-live-1/stream", None).await;
    let first = r.next_event().await.unwrap();
    assert_eq!(
        (first.event.as_deref(), first.id.as_deref()),
        (Some("run"), Some("1"))
    );
    assert_eq!(first.json()["id"], "run-live-1");
    assert_eq!(first.json()["status"], "pending");
    run.apply(engine::run::Event::Start, 11).unwrap();
    let v2 = store.put_run(&run, v1).await.unwrap();
    let second = r.next_event().await.unwrap();
    assert_eq!(second.id, Some(v2.to_string()));
    assert_eq!(second.json()["status"], "running");
    run.status = engine::Status::Cancelled;
    run.reason = Some("stopped by a test".into());
    let v3 = store.put_run(&run, v2).await.unwrap();
    let end = r.next_event().await.unwrap();
    assert_eq!(
        (end.event.as_deref(), end.id.clone()),
        (Some("end"), Some(v3.to_string()))
    );
    assert_eq!(end.json()["status"], "cancelled");
    assert_eq!(end.json()["reason"], "stopped by a test");
    r.assert_closed().await;
    let missing = Request::get("/api/v1/runs/nope/stream")
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        app.clone().oneshot(missing).await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
}
