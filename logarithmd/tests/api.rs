//! Router tests without a socket: ingest and query through `router().oneshot(..)` on an
//! in-memory SQLite storage (the real backend, not a mock).

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use logarithmd::api::{router, AppState};
use logarithmd::Config;
use serde_json::{json, Value};
use tower::ServiceExt;

async fn app() -> axum::Router {
    app_with(Config::default().max_page_bytes).await
}

async fn app_with(max_page_bytes: usize) -> axum::Router {
    app_on("sqlite::memory:", max_page_bytes).await
}

async fn app_on(url: &str, max_page_bytes: usize) -> axum::Router {
    let store = storage::open(&storage::StorageConfig::new(url))
        .await
        .unwrap();
    let config = Config {
        ingest_tokens: vec!["t0k".into()],
        anonymous_read: true,
        max_scan_lines: 50,
        max_page_bytes,
        ..Config::default()
    };
    router(AppState::new(store, config))
}

async fn call(app: &axum::Router, req: Request<Body>) -> (StatusCode, Vec<u8>) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    (status, body)
}

async fn get(app: &axum::Router, uri: &str) -> (StatusCode, Value) {
    let (s, b) = call(app, Request::get(uri).body(Body::empty()).unwrap()).await;
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

async fn ingest(app: &axum::Router, batch: Value) -> (StatusCode, Value) {
    let req = Request::post("/api/v1/ingest")
        .header("authorization", "Bearer t0k")
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&batch).unwrap()))
        .unwrap();
    let (s, b) = call(app, req).await;
    (s, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

/// The texts of a page of lines.
fn texts_of(page: &Value) -> Vec<&str> {
    page["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["text"].as_str().unwrap())
        .collect()
}

fn record(seq: u64, stream: &str, text: &str) -> Value {
    json!({"seq": seq, "ts": 1000 + seq as i64, "stream": stream, "text": text})
}

/// GETs `uri` (a raw download): asserts 200, returns the text.
async fn raw_text(app: &axum::Router, uri: &str) -> String {
    let (s, body) = call(app, Request::get(uri).body(Body::empty()).unwrap()).await;
    assert_eq!(s, StatusCode::OK, "{uri}");
    String::from_utf8(body).unwrap()
}

/// Ingests `records` as one job ("big") in batches of 1,000; returns its id.
async fn ingest_job(app: &axum::Router, records: &[Value]) -> String {
    for (n, chunk) in records.chunks(1000).enumerate() {
        let mut seg = json!({"container_id": CID, "records": chunk});
        if n == 0 {
            seg["meta"] = json!({"name": "big", "image": "i", "labels": {}, "created_at": 1, "started_at": 2});
        }
        let batch = json!({"version": 1, "agent": {"id": "a", "node": "n"}, "segments": [seg]});
        assert_eq!(ingest(app, batch).await.0, StatusCode::OK);
    }
    let (_, page) = get(app, "/api/v1/jobs").await;
    page["jobs"][0]["id"].as_str().unwrap().to_owned()
}

const CID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

async fn seeded() -> (axum::Router, String) {
    let app = app().await;
    let mut records: Vec<Value> = (1..=120)
        .map(|i| {
            record(
                i,
                if i % 2 == 0 { "stderr" } else { "stdout" },
                &format!("line {i}"),
            )
        })
        .collect();
    // A line split by the agent into three continuation records.
    records
        .push(json!({"seq": 121, "ts": 2000, "stream": "stdout", "text": "long-", "cont": true}));
    records
        .push(json!({"seq": 122, "ts": 2000, "stream": "stdout", "text": "line-", "cont": true}));
    records.push(json!({"seq": 123, "ts": 2000, "stream": "stdout", "text": "end"}));
    records.push(record(124, "stdout", "[COUT] ARTIFACT = s3://b/k?x=1"));
    records.push(record(125, "stderr", "[COUT] IGNORED = on stderr"));
    records.push(record(126, "stdout", "[COUT] CO_RESULT = true"));
    let batch = json!({
        "version": 1,
        "agent": {"id": "a", "node": "node-1"},
        "segments": [{
            "container_id": CID,
            "meta": {"name": "build", "image": "img:1", "labels": {"io.containerops.flow": "f"},
                     "created_at": 5, "started_at": 6, "log_driver": "json-file"},
            "records": records,
            "exit": {"exit_code": 0, "finished_at": 9000, "last_seq": 126}
        }]
    });
    let (s, ack) = ingest(&app, batch).await;
    assert_eq!(s, StatusCode::OK, "{ack}");
    assert_eq!(ack, json!({"records": 126, "stored": 126, "duplicates": 0}));
    let (_, page) = get(&app, "/api/v1/jobs").await;
    let id = page["jobs"][0]["id"].as_str().unwrap().to_owned();
    (app, id)
}

#[tokio::test]
async fn job_view_has_verdict_outputs_and_labels() {
    let (app, id) = seeded().await;
    let (s, job) = get(&app, &format!("/api/v1/jobs/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(job["status"], "success");
    assert_eq!(job["result"], true);
    assert_eq!(job["reason"], "CO_RESULT = true");
    assert_eq!(job["outputs"], json!({"ARTIFACT": "s3://b/k?x=1"}));
    assert_eq!(job["flow"], "f");
    assert_eq!(job["node"], "node-1");
    assert_eq!(job["line_count"], 126);
    assert_eq!(job["logs_url"], format!("/api/v1/jobs/{id}/logs"));
    let (s, _) = get(&app, "/api/v1/jobs/12345").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, body) = get(&app, "/api/v1/jobs?status=bogus").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(body["error"]["message"].as_str().unwrap().contains("bogus"));
}

#[tokio::test]
async fn logs_page_filter_and_join_continuations() {
    let (app, id) = seeded().await;
    let base = format!("/api/v1/jobs/{id}/logs");

    let (_, p) = get(&app, &format!("{base}?limit=10")).await;
    let seqs: Vec<u64> = p["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
    assert_eq!(p["next_after"], 10);
    assert_eq!(p["more"], true);

    let (_, p) = get(&app, &format!("{base}?after=118&limit=4")).await;
    let lines = p["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[2]["seq"], 121);
    assert_eq!(lines[2]["text"], "long-line-end");
    assert_eq!(lines[3]["seq"], 124);
    assert_eq!(p["next_after"], 124);

    let (_, p) = get(&app, &format!("{base}?stream=stderr&limit=3")).await;
    let texts = texts_of(&p);
    assert_eq!(texts, ["line 2", "line 4", "line 6"]);

    // `contains` scans at most max_scan_lines (50 here) per call, then says where to go on.
    let (_, p) = get(&app, &format!("{base}?contains=line%2011")).await;
    let texts = texts_of(&p);
    assert_eq!(texts, ["line 11"]);
    assert_eq!(p["next_after"], 50);
    assert_eq!(p["more"], true);
    // Following next_after to the end finds every match exactly once.
    let mut found = texts.iter().map(|t| t.to_string()).collect::<Vec<_>>();
    let mut after = 50;
    let mut calls = 1;
    loop {
        let (_, p) = get(&app, &format!("{base}?contains=line%2011&after={after}")).await;
        calls += 1;
        found.extend(
            p["lines"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["text"].as_str().unwrap().to_owned()),
        );
        after = p["next_after"].as_u64().unwrap();
        if p["more"] == false {
            break;
        }
    }
    let mut expected = vec!["line 11".to_owned()];
    expected.extend((110..=119).map(|i| format!("line {i}")));
    assert_eq!(found, expected);
    assert_eq!(calls, 3);
    assert_eq!(after, 126);

    let (_, p) = get(&app, &format!("{base}?regex=%5Eline%20(7%7C77)%24")).await;
    let texts = texts_of(&p);
    assert_eq!(texts, ["line 7"]);

    let (s, body) = get(&app, &format!("{base}?regex=(")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("regex"));
    let (s, _) = get(&app, &format!("{base}?contains=a&regex=b")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn raw_download_is_the_whole_log() {
    let (app, id) = seeded().await;
    let req = Request::get(format!("/api/v1/jobs/{id}/logs?stream=stdout"))
        .header("accept", "text/plain")
        .body(Body::empty())
        .unwrap();
    let (s, body) = call(&app, req).await;
    assert_eq!(s, StatusCode::OK);
    let text = String::from_utf8(body).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 60 + 1 + 2);
    assert_eq!(lines[0], "line 1");
    assert_eq!(lines[60], "long-line-end");
    assert_eq!(lines[62], "[COUT] CO_RESULT = true");
    assert!(text.ends_with('\n'));
}

/// The raw download reads storage a page ahead: a log of several storage pages (1,000
/// records each), with a line continued across a page boundary, comes whole and in order.
#[tokio::test]
async fn raw_download_spans_storage_pages() {
    let app = app().await;
    let mut records: Vec<Value> = (1..=3500)
        .map(|i| record(i, "stdout", &format!("line {i}")))
        .collect();
    // Records 1000 and 1001 are one line: the join crosses the first page boundary.
    records[999]["cont"] = json!(true);
    let id = ingest_job(&app, &records).await;
    let text = raw_text(&app, &format!("/api/v1/jobs/{id}/logs?format=text")).await;
    let mut want: Vec<String> = (1..=3500).map(|i| format!("line {i}")).collect();
    want[999] = "line 1000line 1001".into();
    want.remove(1000);
    assert_eq!(text.lines().collect::<Vec<_>>(), want);
}

/// After its first page, the raw download reads the job as seq ranges, two at once, from a
/// file database's read pool. The log here makes every case of that happen: short first
/// lines (so a range spans 20,000 seqs), then long ones (so each range ends at the page's
/// byte cap and goes on from there), a line continued across a range's first seq (so the
/// range read ahead of it is read again), and a gap in the seqs. The text must be the
/// same as reading the records one after another.
#[tokio::test]
async fn raw_download_reads_ranges_in_parallel() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("logs.db").display());
    let app = app_on(&url, Config::default().max_page_bytes).await;
    let long = "x".repeat(200);
    let last = 45_000u64;
    let mut want: Vec<String> = Vec::new();
    let mut records: Vec<Value> = Vec::new();
    for i in 1..=last {
        if (30_000..30_100).contains(&i) {
            continue; // never stored
        }
        let text = if i <= 1000 {
            format!("s{i}")
        } else {
            format!("{i} {long}")
        };
        let mut r = record(i, "stdout", &text);
        // The first range starts after seq 1,000 and spans 20,000 seqs: the second
        // starts after 21,000, inside this line.
        if i == 21_000 {
            r["cont"] = json!(true);
            want.push(text);
        } else if i == 21_001 {
            let joined = want.pop().unwrap() + &text;
            want.push(joined);
        } else {
            want.push(text);
        }
        records.push(r);
    }
    let id = ingest_job(&app, &records).await;
    for after in [0, 500, 20_999] {
        let text = raw_text(
            &app,
            &format!("/api/v1/jobs/{id}/logs?format=text&after={after}"),
        )
        .await;
        let skip = match after {
            0 => 0,
            500 => 500,
            // After 20,999: from the joined line's first record on.
            _ => 20_999,
        };
        let got: Vec<&str> = text.lines().collect();
        assert_eq!(got.len(), want.len() - skip, "after {after}");
        assert!(got == want[skip..], "after {after}: the text differs");
    }
}

#[tokio::test]
async fn health_and_unknown_routes() {
    let app = app().await;
    let (s, _) = get(&app, "/healthz").await;
    assert_eq!(s, StatusCode::OK);
    let (s, body) = get(&app, "/readyz").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(body["storage"], "sqlite");
    let (s, body) = get(&app, "/nope").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
}

/// Live tail: `follow=true` sends what is stored at once, then new lines as batches are
/// committed, and ends when the job finishes.
#[tokio::test]
async fn follow_streams_new_lines_until_the_job_finishes() {
    let app = app().await;
    let seg = |records: Vec<Value>, exit: bool| {
        let mut s = json!({"container_id": CID, "records": records});
        if exit {
            s["exit"] = json!({"exit_code": 0, "finished_at": 9000, "last_seq": 5});
        }
        json!({"version": 1, "agent": {"id": "a", "node": "n"}, "segments": [s]})
    };
    let mut first = seg(
        (1..=3)
            .map(|i| record(i, "stdout", &format!("l{i}")))
            .collect(),
        false,
    );
    first["segments"][0]["meta"] =
        json!({"name": "tail", "image": "i", "labels": {}, "created_at": 1, "started_at": 2});
    assert_eq!(ingest(&app, first).await.0, StatusCode::OK);
    let (_, page) = get(&app, "/api/v1/jobs").await;
    let id = page["jobs"][0]["id"].as_str().unwrap().to_owned();

    let req = Request::get(format!("/api/v1/jobs/{id}/logs?follow=true"))
        .header("accept", "text/plain")
        .body(Body::empty())
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    // What is stored comes at once, while the job still runs.
    let frame = tokio::time::timeout(std::time::Duration::from_secs(5), body.frame())
        .await
        .expect("first lines within 5 s")
        .unwrap()
        .unwrap();
    assert_eq!(frame.into_data().unwrap(), "l1\nl2\nl3\n");

    let reader = tokio::spawn(async move {
        let mut rest = Vec::new();
        while let Some(f) = body.frame().await {
            if let Ok(data) = f.unwrap().into_data() {
                rest.extend_from_slice(&data);
            }
        }
        rest
    });
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let more = seg(vec![record(4, "stderr", "l4")], false);
    assert_eq!(ingest(&app, more).await.0, StatusCode::OK);
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let last = seg(vec![record(5, "stdout", "l5")], true);
    assert_eq!(ingest(&app, last).await.0, StatusCode::OK);
    let rest = tokio::time::timeout(std::time::Duration::from_secs(5), reader)
        .await
        .expect("the tail ends when the job finishes")
        .unwrap();
    assert_eq!(String::from_utf8(rest).unwrap(), "l4\nl5\n");

    let (s, body) = get(&app, &format!("/api/v1/jobs/{id}/logs?follow=true")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn a_json_page_stops_at_its_byte_budget() {
    let app = app_with(25).await;
    let records: Vec<Value> = (1..=5).map(|i| record(i, "stdout", "0123456789")).collect();
    let batch = json!({
        "version": 1,
        "agent": {"id": "a", "node": "n"},
        "segments": [{"container_id": CID,
                      "meta": {"name": "b", "image": "i", "labels": {}, "created_at": 1, "started_at": 2},
                      "records": records}]
    });
    let (s, _) = ingest(&app, batch).await;
    assert_eq!(s, StatusCode::OK);
    let (_, page) = get(&app, "/api/v1/jobs").await;
    let id = page["jobs"][0]["id"].as_str().unwrap().to_owned();
    // 10 + 10 < 25, the third line crosses the budget and ends the page.
    let (s, page) = get(&app, &format!("/api/v1/jobs/{id}/logs")).await;
    assert_eq!(s, StatusCode::OK);
    let seqs: Vec<u64> = page["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(page["more"], true);
    assert_eq!(page["next_after"], 3);
    let (_, page) = get(&app, &format!("/api/v1/jobs/{id}/logs?after=3")).await;
    assert_eq!(page["lines"].as_array().unwrap().len(), 2);
    assert_eq!(page["more"], false);
}
