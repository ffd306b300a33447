//! Global masks at ingest: a secret printed on stdout, on stderr, cut between continuation
//! records (the agent's 16 KiB split), inside a longer word, base64-encoded and as a
//! `[COUT]` output is `***` in every API answer, and the SQLite database files never hold
//! it. Through the router (no socket) on a real SQLite file.

mod common;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine as _;
use common::call;
use logarithmd::api::{router, AppState};
use logarithmd::masking::MaskingConfig;
use logarithmd::Config;
use serde_json::{json, Value};

const SECRET: &str = "s3cr3t-Zq8Xw1-value";
const ENV_SECRET: &str = "env-held-K9p2mQ";
const CID: &str = "3a5c0123456789abcdef0123456789abcdef0123456789abcdef0123456789ab";

fn get(uri: &str, accept: &str) -> Request<Body> {
    Request::get(uri)
        .header("accept", accept)
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn secrets_are_masked_before_storage_and_in_every_answer() {
    // SAFETY of the test: the variable is this test's own and set before anything reads it.
    std::env::set_var("LOGARITHM_TEST_MASKED_VALUE", ENV_SECRET);
    let dir = tempfile::tempdir().unwrap();
    let store = common::open_sqlite_file(dir.path(), "masking.db").await;
    let config = Config {
        anonymous_read: true,
        masking: MaskingConfig {
            literals: vec![SECRET.into()],
            env: vec!["LOGARITHM_TEST_MASKED_VALUE".into()],
            regexes: vec!["tok_[0-9]{6}".into()],
            base64: true,
            ..MaskingConfig::default()
        },
        ..Config::default()
    };
    config.validate().unwrap();
    let app = router(AppState::new(store.clone(), config));

    let b64 = base64::engine::general_purpose::STANDARD.encode(SECRET);
    let (cut_a, cut_b) = SECRET.split_at(7);
    let records = json!([
        {"seq": 1, "ts": 1, "stream": "stdout", "text": format!("plain {SECRET} end")},
        {"seq": 2, "ts": 2, "stream": "stderr", "text": format!("err:{SECRET}")},
        {"seq": 3, "ts": 3, "stream": "stdout", "text": format!("{}{cut_a}", "x".repeat(16 * 1024 - 7)), "cont": true},
        {"seq": 4, "ts": 3, "stream": "stdout", "text": format!("{cut_b} after the cut")},
        {"seq": 5, "ts": 4, "stream": "stdout", "text": format!("word{SECRET}word")},
        {"seq": 6, "ts": 5, "stream": "stdout", "text": format!("b64 {b64}")},
        {"seq": 7, "ts": 6, "stream": "stdout", "text": format!("[COUT] TOKEN = {SECRET}")},
        {"seq": 8, "ts": 7, "stream": "stdout", "text": format!("env {ENV_SECRET} and tok_123456")},
        {"seq": 9, "ts": 8, "stream": "stdout", "text": "[COUT] CO_RESULT = true"}
    ]);
    let batch = json!({
        "version": 1,
        "agent": {"id": "a", "node": "n"},
        "segments": [{
            "container_id": CID,
            "meta": {"name": "masked", "image": "i", "labels": {}, "created_at": 1, "started_at": 2},
            "records": records,
            "exit": {"exit_code": 0, "finished_at": 100, "last_seq": 9}
        }]
    });
    common::ingest(&app, &batch).await;

    let (_, jobs) = call(&app, get("/api/v1/jobs", "application/json")).await;
    let jobs: Value = serde_json::from_str(&jobs).unwrap();
    let id = jobs["jobs"][0]["id"].as_str().unwrap().to_owned();
    let mut answers = vec![jobs.to_string()];
    for (uri, accept) in [
        (format!("/api/v1/jobs/{id}"), "application/json"),
        (format!("/api/v1/jobs/{id}/logs"), "application/json"),
        (format!("/api/v1/jobs/{id}/logs"), "text/plain"),
        (
            format!("/api/v1/jobs/{id}/logs?contains=word"),
            "application/json",
        ),
    ] {
        let (s, b) = call(&app, get(&uri, accept)).await;
        assert_eq!(s, StatusCode::OK, "{uri}: {b}");
        answers.push(b);
    }
    let raw = &answers[3];
    let expected = format!(
        "plain *** end\nerr:***\n{}*** after the cut\nword***word\nb64 ***\n[COUT] TOKEN = ***\nenv *** and ***\n[COUT] CO_RESULT = true\n",
        "x".repeat(16 * 1024 - 7)
    );
    assert_eq!(raw, &expected);
    let job: Value = serde_json::from_str(&answers[1]).unwrap();
    assert_eq!(job["outputs"]["TOKEN"], "***");
    assert_eq!(job["status"], "success");
    for a in &answers {
        for needle in [SECRET, ENV_SECRET, b64.as_str(), "tok_123456", cut_a] {
            assert!(!a.contains(needle), "{needle} in {a}");
        }
    }

    // The database files never held it.
    drop(app);
    drop(store);
    common::assert_no_file_holds(
        dir.path(),
        &[SECRET, ENV_SECRET, b64.as_str(), "tok_123456"],
    );
}
