//! The flow routes and the engine wiring through the router (no socket), on an in-memory
//! SQLite storage, with a fake job runner: verdicts come from ingested batches exactly as
//! agents send them, runs and flows are storage documents, and a finished run leaves a
//! `flow.finished` delivery with one line per job.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use engine::JobSpec;
use http_body_util::BodyExt;
use logarithmd::api::{router, AppState};
use logarithmd::flows::store;
use logarithmd::Config;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

mod support;

const ADMIN: &str = "adm";

async fn call(app: &axum::Router, req: Request<Body>) -> (StatusCode, Value) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn req(method: &str, uri: &str, token: Option<&str>, body: Vec<u8>) -> Request<Body> {
    let mut r = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    r.body(Body::from(body)).unwrap()
}

fn json_body(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

/// The batch an agent sends for a flow job's whole life.
fn job_batch(container: &str, spec: &JobSpec, lines: &[&str], exit: i64) -> Value {
    let records: Vec<Value> = lines
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"seq": i + 1, "ts": 10 + i, "stream": "stdout", "text": t}))
        .collect();
    json!({
        "version": 1,
        "agent": {"id": "t", "node": "n"},
        "segments": [{
            "container_id": container,
            "meta": {"name": spec.name, "image": spec.image, "labels": spec.labels,
                     "created_at": 1, "started_at": 2},
            "records": records,
            "exit": {"exit_code": exit, "finished_at": 100, "last_seq": lines.len()}
        }]
    })
}

const FLOW: &str = r#"uri: test/flows/pair
stages:
  - type: start
    name: start
  - type: normal
    name: build
    actions:
      - name: compile
        jobs:
          - type: component
            name: make
            endpoint: img:1
            outputs: [OUT]
  - type: normal
    name: use
    actions:
      - name: consume
        jobs:
          - type: component
            name: print
            endpoint: img:1
            subscriptions:
              - "build.compile.make[OUT]": GOT
  - type: end
    name: end
"#;

async fn wait_run(app: &axum::Router, id: &str, status: &str) -> Value {
    for _ in 0..200 {
        let (_, v) = call(app, req("GET", &format!("/api/v1/runs/{id}"), None, vec![])).await;
        if v["status"] == status {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("run {id} never reached {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_run_on_committed_verdicts_and_announce_their_end() {
    let storage = storage::open(&storage::StorageConfig::new("sqlite::memory:"))
        .await
        .unwrap();
    let config = Config {
        admin_token: Some(ADMIN.into()),
        anonymous_read: true,
        ..Config::default()
    };
    let state = AppState::new(storage.clone(), config);
    let app = router(state.clone());

    // No engine yet: 503 with Retry-After.
    let resp = app
        .clone()
        .oneshot(req("GET", "/api/v1/flows", None, vec![]))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key("retry-after"));

    let token = CancellationToken::new();
    let (runner, task) = support::start_engine(&state, token.clone()).await;

    let (s, sub) = call(
        &app,
        req(
            "POST",
            "/api/v1/webhooks",
            Some(ADMIN),
            json_body(&json!({"url": "http://127.0.0.1:9/h", "secret": "k",
                              "events": ["flow.finished"],
                              "filters": {"io.containerops.flow": "test.flows.pair"}})),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{sub}");
    let sub_id: i64 = sub["id"].as_str().unwrap().parse().unwrap();

    // Invalid: 400 naming line and field; nothing registered. No token: 401.
    let bad = FLOW.replace(
        "endpoint: img:1\n            outputs",
        "endpointt: img:1\n            outputs",
    );
    let (s, v) = call(
        &app,
        req("POST", "/api/v1/flows", Some(ADMIN), bad.into_bytes()),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("line 12") && msg.contains("endpointt"),
        "{msg}"
    );
    let (s, v) = call(&app, req("POST", "/api/v1/flows", None, FLOW.into())).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    let (_, v) = call(&app, req("GET", "/api/v1/flows", None, vec![])).await;
    assert_eq!(v["flows"], json!([]));

    let (s, v) = call(&app, req("POST", "/api/v1/flows", Some(ADMIN), FLOW.into())).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["name"], "test.flows.pair");
    let (s, v) = call(
        &app,
        req("GET", "/api/v1/flows/test.flows.pair", Some(ADMIN), vec![]),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["source"], FLOW);
    // The flow is a storage document.
    assert!(storage
        .get_document(store::FLOWS, "test.flows.pair")
        .await
        .unwrap()
        .is_some());

    let (s, run) = call(
        &app,
        req(
            "POST",
            "/api/v1/flows/test.flows.pair/runs",
            Some(ADMIN),
            json_body(&json!({"co_data": "data!"})),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{run}");
    assert_eq!(run["status"], "running");
    let id = run["id"].as_str().unwrap().to_owned();
    let (s, _) = call(
        &app,
        req("POST", "/api/v1/flows/nope/runs", Some(ADMIN), vec![]),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // The first job's verdict arrives the way an agent's batch brings it.
    let (c1, spec1) = support::wait_started(&runner, 1).await;
    assert_eq!(spec1.job, "make");
    let (s, ack) = call(
        &app,
        req(
            "POST",
            "/api/v1/ingest",
            None,
            json_body(&job_batch(&c1, &spec1, &["[COUT] OUT = v1"], 0)),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{ack}");

    // The second job got the output and the run's CO_DATA; it fails.
    let (c2, spec2) = support::wait_started(&runner, 2).await;
    assert_eq!(spec2.env.get("GOT").map(String::as_str), Some("v1"));
    assert_eq!(spec2.env.get("CO_DATA").map(String::as_str), Some("data!"));
    let (s, _) = call(
        &app,
        req(
            "POST",
            "/api/v1/ingest",
            None,
            json_body(&job_batch(&c2, &spec2, &["[COUT] CO_RESULT = false"], 0)),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::OK);

    let run = wait_run(&app, &id, "failure").await;
    assert_eq!(
        run["reason"],
        "stage use: action consume: job print: CO_RESULT = false"
    );
    let make = &run["stages"][1]["actions"][0]["jobs"][0];
    assert_eq!(make["status"], "success");
    assert_eq!(make["outputs"]["OUT"], "v1");
    assert_eq!(
        make["job_id"],
        storage::job_id_for_container(&c1).to_string()
    );
    assert_eq!(run["stages"][3]["status"], "pending");

    let (s, v) = call(
        &app,
        req(
            "POST",
            &format!("/api/v1/runs/{id}/approve"),
            Some(ADMIN),
            vec![],
        ),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let (s, _) = call(
        &app,
        req("POST", "/api/v1/runs/none/cancel", Some(ADMIN), vec![]),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = call(&app, req("GET", "/api/v1/runs?status=odd", None, vec![])).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, v) = call(
        &app,
        req(
            "GET",
            "/api/v1/runs?status=failure&flow=test.flows.pair",
            None,
            vec![],
        ),
    )
    .await;
    assert_eq!(v["runs"][0]["id"], id.as_str());

    // flow.finished is in the outbox, once, with one line per job.
    let mut deliveries = Vec::new();
    for _ in 0..200 {
        deliveries = storage.list_deliveries(sub_id, 10).await.unwrap();
        if !deliveries.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(deliveries.len(), 1);
    let d = &deliveries[0].delivery;
    assert_eq!(d.event, storage::EventKind::FlowFinished);
    let body: Value =
        serde_json::from_slice(&logarithmd::webhooks::payload::body(d, "http://ignored")).unwrap();
    assert_eq!(body["type"], "flow.finished");
    let data = &body["data"]["run"];
    assert_eq!(data["id"], id.as_str());
    assert_eq!(data["status"], "failure");
    assert_eq!(data["jobs"].as_array().unwrap().len(), 2);
    assert_eq!(data["jobs"][1]["job"], "print");
    assert_eq!(data["jobs"][1]["reason"], "CO_RESULT = false");
    assert_eq!(
        data["jobs"][1]["logs_url"],
        format!(
            "http://logs.example/api/v1/jobs/{}/logs",
            storage::job_id_for_container(&c2)
        )
    );

    token.cancel();
    task.await.unwrap();
}
