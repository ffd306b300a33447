//! A flow job's own secrets at ingest, through the router (no socket) on a real SQLite
//! file: the run's job gets its secret masked in batches with and without metadata, in a
//! batch that overtakes the one carrying the metadata, after a restart (empty caches), and
//! on both sides of a cut between two batches; a container of no run keeps the text (the
//! secret is that run's, not a global mask). The database files never hold the value.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use common::call;
use engine::RunStore;
use logarithmd::api::{router, AppState};
use logarithmd::flows::secrets::SecretSource;
use logarithmd::flows::store::DocumentRunStore;
use logarithmd::Config;
use serde_json::{json, Value};

const SECRET: &str = "run-scoped-Pq7vX2-value";
const RUN: &str = "0123456789abcdef";
const JOB_CID: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const EARLY_CID: &str = "2222222222222222222222222222222222222222222222222222222222222222";
const OTHER_CID: &str = "3333333333333333333333333333333333333333333333333333333333333333";

const FLOW: &str = "\
uri: t/run-masks
stages:
  - {type: start, name: start}
  - type: normal
    name: build
    actions:
      - name: deploy
        jobs:
          - type: component
            name: push
            endpoint: img
            secrets:
              - {env: TOKEN, from_secret: deploy, base64: true}
          - type: component
            name: early
            endpoint: img
            secrets: [deploy]
  - {type: end, name: end}
";

fn app(store: &Arc<dyn storage::Storage>) -> axum::Router {
    let mut config = Config {
        anonymous_read: true,
        ..Config::default()
    };
    config.engine.secrets = BTreeMap::from([(
        "deploy".to_owned(),
        SecretSource {
            value: Some(SECRET.into()),
            ..SecretSource::default()
        },
    )]);
    config.validate().unwrap();
    router(AppState::new(store.clone(), config))
}

/// One segment: `meta` with these labels (or none), records `(seq, cont, text)`.
async fn ingest(
    app: &axum::Router,
    cid: &str,
    labels: Option<Value>,
    records: &[(u64, bool, String)],
) {
    let records: Vec<Value> = records
        .iter()
        .map(|(seq, cont, text)| json!({"seq": seq, "ts": seq, "stream": "stdout", "text": text, "cont": cont}))
        .collect();
    let mut segment = json!({"container_id": cid, "records": records});
    if let Some(labels) = labels {
        segment["meta"] = json!({"name": cid, "image": "img", "labels": labels, "created_at": 1, "started_at": 2});
    }
    let batch = json!({"version": 1, "agent": {"id": "a", "node": "n"}, "segments": [segment]});
    common::ingest(app, &batch).await;
}

fn labels(job: &str) -> Value {
    json!({
        "io.containerops.flow": "t.run-masks",
        "io.containerops.run": RUN,
        "io.containerops.stage": "build",
        "io.containerops.action": "deploy",
        "io.containerops.job": job,
    })
}

/// The job's log as raw text.
async fn raw(app: &axum::Router, cid: &str) -> String {
    let id = storage::job_id_for_container(cid);
    let (s, b) = call(
        app,
        Request::get(format!("/api/v1/jobs/{id}/logs"))
            .header("accept", "text/plain")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    b
}

fn t(seq: u64, cont: bool, text: &str) -> (u64, bool, String) {
    (seq, cont, text.to_owned())
}

#[tokio::test]
async fn a_run_secret_is_masked_in_that_run_s_jobs_before_storage() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::open_sqlite_file(dir.path(), "run-masks.db").await;
    let flow = engine::Flow::from_yaml(FLOW).unwrap();
    let run = engine::Run::new(RUN.into(), flow, None, 1);
    DocumentRunStore::new(store.clone())
        .put_run(&run, 0)
        .await
        .unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(SECRET);
    let (cut_a, cut_b) = SECRET.split_at(9);

    let first = app(&store);
    // The job's first batch, with its metadata, then one without; the value cut at the
    // end of the second goes on in the next batch.
    ingest(
        &first,
        JOB_CID,
        Some(labels("push")),
        &[t(1, false, &format!("stdout {SECRET}"))],
    )
    .await;
    ingest(
        &first,
        JOB_CID,
        None,
        &[
            t(2, false, &format!("b64 {b64}")),
            t(3, true, &format!("aaaa {cut_a}")),
        ],
    )
    .await;
    // A batch overtaking the one with its container's metadata. (Its first record counts
    // as continuing a line, since the one before it is not stored: a beginning that could
    // be the end of the value would be masked; `[` cannot.)
    ingest(
        &first,
        EARLY_CID,
        None,
        &[t(5, false, &format!("[early] {SECRET}"))],
    )
    .await;
    ingest(
        &first,
        EARLY_CID,
        Some(labels("early")),
        &[t(1, false, &format!("then {SECRET}"))],
    )
    .await;
    // A container of no run prints the same text: the secret is not one of its masks.
    ingest(
        &first,
        OTHER_CID,
        Some(json!({})),
        &[t(1, false, "unrelated run-scoped-Pq7vX2-value")],
    )
    .await;
    drop(first);

    // logarithmd restarted: empty caches. The rest of the cut line, without metadata.
    let second = app(&store);
    ingest(
        &second,
        JOB_CID,
        None,
        &[
            t(4, false, &format!("{cut_b} bbbb")),
            t(5, false, &format!("word{SECRET}word")),
        ],
    )
    .await;

    assert_eq!(
        raw(&second, JOB_CID).await,
        "stdout ***\nb64 ***\naaaa ****** bbbb\nword***word\n"
    );
    assert_eq!(raw(&second, EARLY_CID).await, "then ***\n[early] ***\n");
    assert_eq!(
        raw(&second, OTHER_CID).await,
        "unrelated run-scoped-Pq7vX2-value\n"
    );

    // The database files hold none of the flow jobs' lines as printed (the container of
    // no run, which printed the value too, is not searched for).
    drop(second);
    drop(store);
    let printed = [
        format!("stdout {SECRET}"),
        format!("b64 {b64}"),
        format!("aaaa {cut_a}"),
        format!("{cut_b} bbbb"),
        format!("word{SECRET}"),
        format!("[early] {SECRET}"),
        format!("then {SECRET}"),
    ];
    common::assert_no_file_holds(dir.path(), &printed);
}
