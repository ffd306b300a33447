//! Scopes against every route, through the router (no socket) on an in-memory SQLite
//! storage with the flow engine running on a fake job runner: each caller (no token, an
//! unknown token, an `ingest`, a `read`, a flow-limited `read` and an `admin` token)
//! against each route gets exactly the documented status (docs/security.md), and no GET
//! answer holds a flow's environment value or a run's `co_data` unless the caller is admin.

mod support;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use logarithmd::api::{router, AppState};
use logarithmd::auth::{Scope, TokenConfig};
use logarithmd::Config;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

const INGEST: &str = "ingest-secret-0001";
const READ: &str = "read-secret-00002";
const LIMITED: &str = "limited-secret-03";
const ADMIN: &str = "admin-secret-0004";
const ENV_SECRET: &str = "env-value-9f8e7d6c";
const CO_DATA_SECRET: &str = "co-data-5a4b3c2d";

const FLOW: &str = r#"uri: scopes/flow
environments:
  - DEPLOY_KEY: env-value-9f8e7d6c
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
  - type: end
    name: end
"#;

fn tokens() -> Vec<TokenConfig> {
    let mut limited = TokenConfig::from_secret("limited", LIMITED, &[Scope::Read]);
    limited.flows = Some(vec!["some.other.flow".into()]);
    vec![
        TokenConfig::from_secret("agents", INGEST, &[Scope::Ingest]),
        TokenConfig::from_secret("reader", READ, &[Scope::Read]),
        limited,
        TokenConfig::from_secret("ops", ADMIN, &[Scope::Admin]),
    ]
}

async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, String) {
    let mut r = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        r = r.header("authorization", format!("Bearer {t}"));
    }
    let resp = app
        .clone()
        .oneshot(r.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    if status == StatusCode::OK && uri.ends_with("/stream") {
        // A live stream ends with the job or run: its status is the answer.
        return (status, String::new());
    }
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn batch(container: &str, labels: &Value, seq: u64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "version": 1,
        "agent": {"id": "t", "node": "n"},
        "segments": [{
            "container_id": container,
            "meta": {"name": "make", "image": "img:1", "labels": labels,
                     "created_at": 1, "started_at": 2},
            "records": [{"seq": seq, "ts": 10, "stream": "stdout", "text": format!("line {seq}")}]
        }]
    }))
    .unwrap()
}

/// A route to try: method, path, body, the scope it needs, its status on success, and its
/// status for the flow-limited reader.
type Route = (
    &'static str,
    String,
    Vec<u8>,
    Option<Scope>,
    StatusCode,
    StatusCode,
);

/// Who calls.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Who {
    Nobody,
    Unknown,
    Ingest,
    Read,
    Limited,
    Admin,
}

impl Who {
    fn token(self) -> Option<&'static str> {
        match self {
            Who::Nobody => None,
            Who::Unknown => Some("not-a-configured-token"),
            Who::Ingest => Some(INGEST),
            Who::Read => Some(READ),
            Who::Limited => Some(LIMITED),
            Who::Admin => Some(ADMIN),
        }
    }
}

/// The status a caller gets from a route needing `scope` whose success is `ok`; a
/// flow-limited reader gets `limited` (the route's answer for a flow it may not read).
fn expected(who: Who, scope: Option<Scope>, ok: StatusCode, limited: StatusCode) -> StatusCode {
    let Some(scope) = scope else { return ok };
    match (who, scope) {
        (Who::Nobody | Who::Unknown, _) => StatusCode::UNAUTHORIZED,
        (Who::Ingest, Scope::Ingest) => ok,
        (Who::Ingest, _) => StatusCode::FORBIDDEN,
        (Who::Read, Scope::Read) => ok,
        (Who::Limited, Scope::Read) => limited,
        (Who::Read | Who::Limited, _) => StatusCode::FORBIDDEN,
        (Who::Admin, Scope::Ingest) => StatusCode::FORBIDDEN,
        (Who::Admin, _) => ok,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_each_scope_as_documented() {
    let store = storage::open(&storage::StorageConfig::new("sqlite::memory:"))
        .await
        .unwrap();
    let config = Config {
        tokens: tokens(),
        ..Config::default()
    };
    config.validate().unwrap();
    let state = AppState::new(store, config);
    let app = router(state.clone());
    let shutdown = CancellationToken::new();
    let (runner, task) = support::start_engine(&state, shutdown.clone()).await;

    // Seed: a flow with an environment value, a run with co_data, its job's lines, and a
    // webhook subscription.
    let (s, b) = call(&app, "POST", "/api/v1/flows", Some(ADMIN), FLOW.into()).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, run) = call(
        &app,
        "POST",
        "/api/v1/flows/scopes.flow/runs",
        Some(ADMIN),
        serde_json::to_vec(&json!({"co_data": CO_DATA_SECRET})).unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{run}");
    let run: Value = serde_json::from_str(&run).unwrap();
    let run_id = run["id"].as_str().unwrap().to_owned();
    let (container, spec) = support::wait_started(&runner, 1).await;
    assert!(
        spec.env.iter().any(|(_, v)| v == ENV_SECRET),
        "the job gets the value"
    );
    let labels = serde_json::to_value(&spec.labels).unwrap();
    let (s, b) = call(
        &app,
        "POST",
        "/api/v1/ingest",
        Some(INGEST),
        batch(&container, &labels, 1),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let job_id = storage::job_id_for_container(&container).to_string();
    let (s, sub) = call(
        &app,
        "POST",
        "/api/v1/webhooks",
        Some(ADMIN),
        serde_json::to_vec(
            &json!({"url": "http://127.0.0.1:9/h", "secret": "k", "events": ["job.finished"]}),
        )
        .unwrap(),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{sub}");
    let sub: Value = serde_json::from_str(&sub).unwrap();
    let sub_id = sub["id"].as_str().unwrap().to_owned();

    use StatusCode as S;
    let ok = S::OK;
    let nf = S::NOT_FOUND;
    let routes: Vec<Route> = vec![
        ("GET", "/healthz".into(), vec![], None, ok, ok),
        // The web UI's static files: no data, so no scope (the page calls the API).
        ("GET", "/".into(), vec![], None, ok, ok),
        ("GET", "/ui/main.js".into(), vec![], None, ok, ok),
        ("GET", "/readyz".into(), vec![], None, ok, ok),
        ("GET", "/metrics".into(), vec![], None, ok, ok),
        (
            "GET",
            "/api/v1/jobs".into(),
            vec![],
            Some(Scope::Read),
            ok,
            ok,
        ),
        (
            "GET",
            "/api/v1/jobs?flow=scopes.flow".into(),
            vec![],
            Some(Scope::Read),
            ok,
            S::FORBIDDEN,
        ),
        (
            "GET",
            format!("/api/v1/jobs/{job_id}"),
            vec![],
            Some(Scope::Read),
            ok,
            nf,
        ),
        (
            "GET",
            format!("/api/v1/jobs/{job_id}/logs"),
            vec![],
            Some(Scope::Read),
            ok,
            nf,
        ),
        (
            "GET",
            "/api/v1/flows".into(),
            vec![],
            Some(Scope::Read),
            ok,
            ok,
        ),
        (
            "GET",
            "/api/v1/flows/scopes.flow".into(),
            vec![],
            Some(Scope::Read),
            ok,
            nf,
        ),
        (
            "GET",
            "/api/v1/runs".into(),
            vec![],
            Some(Scope::Read),
            ok,
            ok,
        ),
        (
            "GET",
            format!("/api/v1/runs/{run_id}"),
            vec![],
            Some(Scope::Read),
            ok,
            nf,
        ),
        (
            "POST",
            "/api/v1/ingest".into(),
            batch(&container, &labels, 2),
            Some(Scope::Ingest),
            ok,
            ok,
        ),
        (
            "POST",
            "/api/v1/flows".into(),
            FLOW.into(),
            Some(Scope::Admin),
            ok,
            ok,
        ),
        (
            "POST",
            "/api/v1/flows/nope/runs".into(),
            vec![],
            Some(Scope::Admin),
            nf,
            nf,
        ),
        (
            "POST",
            "/api/v1/runs/nope/approve".into(),
            vec![],
            Some(Scope::Admin),
            nf,
            nf,
        ),
        (
            "POST",
            "/api/v1/runs/nope/reject".into(),
            vec![],
            Some(Scope::Admin),
            nf,
            nf,
        ),
        (
            "POST",
            "/api/v1/runs/nope/cancel".into(),
            vec![],
            Some(Scope::Admin),
            nf,
            nf,
        ),
        (
            "GET",
            "/api/v1/webhooks".into(),
            vec![],
            Some(Scope::Admin),
            ok,
            ok,
        ),
        (
            "GET",
            format!("/api/v1/webhooks/{sub_id}"),
            vec![],
            Some(Scope::Admin),
            ok,
            ok,
        ),
        (
            "GET",
            format!("/api/v1/webhooks/{sub_id}/deliveries"),
            vec![],
            Some(Scope::Admin),
            ok,
            ok,
        ),
        (
            "POST",
            format!("/api/v1/webhooks/{sub_id}/deliveries/1/redeliver"),
            vec![],
            Some(Scope::Admin),
            nf,
            nf,
        ),
        (
            "POST",
            "/api/v1/webhooks".into(),
            br#"{"url": "ftp://x", "secret": "k", "events": []}"#.to_vec(),
            Some(Scope::Admin),
            S::BAD_REQUEST,
            S::BAD_REQUEST,
        ),
        (
            "GET",
            "/loki/api/v1/query?query=vector(1)%2Bvector(1)".into(),
            vec![],
            Some(Scope::Read),
            ok,
            ok,
        ),
        (
            "GET",
            "/loki/api/v1/query_range?query=%7Bflow%3D%22scopes.flow%22%7D&start=0".into(),
            vec![],
            Some(Scope::Read),
            ok,
            ok,
        ),
        (
            "GET",
            "/loki/api/v1/labels".into(),
            vec![],
            Some(Scope::Read),
            ok,
            ok,
        ),
        (
            "GET",
            "/loki/api/v1/label/flow/values".into(),
            vec![],
            Some(Scope::Read),
            ok,
            ok,
        ),
        (
            "GET",
            "/loki/api/v1/series?match%5B%5D=%7Bflow%3D%22scopes.flow%22%7D".into(),
            vec![],
            Some(Scope::Read),
            ok,
            ok,
        ),
        (
            "DELETE",
            "/api/v1/webhooks/77".into(),
            vec![],
            Some(Scope::Admin),
            nf,
            nf,
        ),
    ];
    let callers = [
        Who::Nobody,
        Who::Unknown,
        Who::Ingest,
        Who::Read,
        Who::Limited,
        Who::Admin,
    ];
    let mut checked = 0;
    for (method, path, body, scope, ok, limited) in &routes {
        for who in callers {
            let want = expected(who, *scope, *ok, *limited);
            let (got, answer) = call(&app, method, path, who.token(), body.clone()).await;
            assert_eq!(got, want, "{who:?} {method} {path}: {answer}");
            if got == S::UNAUTHORIZED || got == S::FORBIDDEN {
                // The answer names the missing scope and never a token.
                let scope = scope.unwrap();
                if *path != "/api/v1/jobs?flow=scopes.flow" {
                    assert!(
                        answer.contains(&format!("scope `{scope}`")),
                        "{who:?} {path}: {answer}"
                    );
                }
                for t in [
                    INGEST,
                    READ,
                    LIMITED,
                    ADMIN,
                    "not-a-configured-token",
                    "agents",
                    "reader",
                    "ops",
                ] {
                    assert!(!answer.contains(t), "{who:?} {path} names {t}: {answer}");
                }
            }
            if *method == "GET" && who != Who::Admin {
                assert!(!answer.contains(ENV_SECRET), "{who:?} {path}: {answer}");
                assert!(!answer.contains(CO_DATA_SECRET), "{who:?} {path}: {answer}");
            }
            checked += 1;
        }
    }
    assert_eq!(checked, routes.len() * callers.len());

    // Through the Loki API, a flow-limited reader sees no line of a flow it may not read.
    let q =
        "/loki/api/v1/query_range?query=%7Bflow%3D%22scopes.flow%22%7D&start=0&direction=forward";
    let (_, b) = call(&app, "GET", q, Some(READ), vec![]).await;
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["data"]["result"][0]["values"][0][1], "line 1", "{b}");
    let (_, b) = call(&app, "GET", q, Some(LIMITED), vec![]).await;
    let v: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["data"]["result"], json!([]), "{b}");

    // What a reader sees, and what only an admin sees.
    let (_, b) = call(&app, "GET", "/api/v1/jobs", Some(READ), vec![]).await;
    let jobs: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 1, "{b}");
    let (_, b) = call(&app, "GET", "/api/v1/jobs", Some(LIMITED), vec![]).await;
    assert_eq!(
        serde_json::from_str::<Value>(&b).unwrap()["jobs"],
        json!([]),
        "{b}"
    );
    let (_, b) = call(&app, "GET", "/api/v1/flows", Some(LIMITED), vec![]).await;
    assert_eq!(
        serde_json::from_str::<Value>(&b).unwrap()["flows"],
        json!([]),
        "{b}"
    );
    let (_, b) = call(&app, "GET", "/api/v1/flows/scopes.flow", Some(READ), vec![]).await;
    let flow: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(flow["name"], "scopes.flow");
    assert!(flow.get("source").is_none(), "{b}");
    let (_, b) = call(
        &app,
        "GET",
        "/api/v1/flows/scopes.flow",
        Some(ADMIN),
        vec![],
    )
    .await;
    assert!(b.contains(ENV_SECRET), "{b}");
    let (_, b) = call(
        &app,
        "GET",
        &format!("/api/v1/runs/{run_id}"),
        Some(READ),
        vec![],
    )
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(&b).unwrap()["co_data"],
        Value::Null,
        "{b}"
    );
    let (_, b) = call(
        &app,
        "GET",
        &format!("/api/v1/runs/{run_id}"),
        Some(ADMIN),
        vec![],
    )
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(&b).unwrap()["co_data"],
        CO_DATA_SECRET,
        "{b}"
    );
    let (_, b) = call(
        &app,
        "GET",
        &format!("/api/v1/jobs/{job_id}/logs"),
        Some(READ),
        vec![],
    )
    .await;
    let lines: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(lines["lines"][0]["text"], "line 1", "{b}");
    assert_eq!(lines["lines"][1]["text"], "line 2", "{b}");

    shutdown.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn anonymous_read_is_explicit_and_never_admin() {
    for anonymous_read in [false, true] {
        let store = storage::open(&storage::StorageConfig::new("sqlite::memory:"))
            .await
            .unwrap();
        let config = Config {
            tokens: tokens(),
            anonymous_read,
            ..Config::default()
        };
        let app = router(AppState::new(store, config));
        let (s, b) = call(&app, "GET", "/api/v1/jobs", None, vec![]).await;
        let want = if anonymous_read {
            StatusCode::OK
        } else {
            StatusCode::UNAUTHORIZED
        };
        assert_eq!(s, want, "{b}");
        let (s, _) = call(&app, "GET", "/api/v1/webhooks", None, vec![]).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        // Ingest needs its token once one is configured.
        let (s, _) = call(&app, "POST", "/api/v1/ingest", None, vec![]).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        // A wrong token is refused even where reading is open.
        let (s, _) = call(&app, "GET", "/api/v1/jobs", Some("wrong-token"), vec![]).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn follows_are_capped_per_token_with_429() {
    let store = storage::open(&storage::StorageConfig::new("sqlite::memory:"))
        .await
        .unwrap();
    let config = Config {
        tokens: tokens(),
        max_follows_per_token: 1,
        ..Config::default()
    };
    let app = router(AppState::new(store, config));
    let container = "f0110123456789abcdef0123456789abcdef0123456789abcdef0123456789ab";
    let (s, _) = call(
        &app,
        "POST",
        "/api/v1/ingest",
        Some(INGEST),
        batch(container, &json!({}), 1),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let job_id = storage::job_id_for_container(container);
    let open = |token: &'static str| {
        let app = app.clone();
        async move {
            app.oneshot(
                Request::get(format!("/api/v1/jobs/{job_id}/logs/stream"))
                    .header("authorization", format!("Bearer {token}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap()
        }
    };
    // The job runs: the first stream stays open while it is held.
    let first = open(READ).await;
    assert_eq!(first.status(), StatusCode::OK);
    let second = open(READ).await;
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(second.headers()["retry-after"], "5");
    // Another token has its own count; closing the first frees the slot.
    assert_eq!(open(ADMIN).await.status(), StatusCode::OK);
    drop(first);
    assert_eq!(open(READ).await.status(), StatusCode::OK);
}
