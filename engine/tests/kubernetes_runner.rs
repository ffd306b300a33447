//! The Kubernetes runner, through the real `kube` client.
//!
//! No Kubernetes API server can exist here (no cluster, no kind, no envtest), so this test
//! runs the runner against a small in-process mock of the API server: an axum server on
//! 127.0.0.1:0 implementing only the endpoints the runner uses (create, read, delete and list
//! Pods in a namespace, with `labelSelector`), answering with Kubernetes' `Status` objects on
//! errors, and recording every request. The client is built from a `Config` pointing at the
//! mock's plain-http URL. What it proves: the HTTP requests the runner sends and how it reads
//! the answers. What it cannot prove: that a real API server, scheduler and kubelet accept
//! and run that Pod.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use engine::runner::kubernetes::{pod_name, without_client_retries, KubernetesRunner};
use engine::runner::{ContainerState, JobRunner, JobSpec};
use engine::ErrorKind;
use serde_json::{json, Value};

const NS: &str = "ci";

/// One request the mock received.
#[derive(Debug, Clone)]
struct Recorded {
    method: Method,
    path: String,
    query: HashMap<String, String>,
    body: Option<Value>,
}

#[derive(Default)]
struct Mock {
    /// Pods by (namespace, name), as JSON.
    pods: BTreeMap<(String, String), Value>,
    requests: Vec<Recorded>,
    /// When set, the next request is answered with this status (a failing API server).
    fail_next: Option<u16>,
}

type Shared = Arc<Mutex<Mock>>;

fn lock(m: &Shared) -> std::sync::MutexGuard<'_, Mock> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A Kubernetes `Status` error, as the API server answers.
fn status(code: u16, reason: &str, message: String) -> Response {
    let body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, Json(body)).into_response()
}

/// Records the request; answers with the injected failure, if any.
fn record(
    m: &Shared,
    method: Method,
    uri: &Uri,
    query: HashMap<String, String>,
    body: Option<Value>,
) -> Option<Response> {
    let mut m = lock(m);
    m.requests.push(Recorded {
        method,
        path: uri.path().to_owned(),
        query,
        body,
    });
    m.fail_next
        .take()
        .map(|code| status(code, "InternalError", "injected failure".to_owned()))
}

async fn create_pod(
    State(m): State<Shared>,
    Path(ns): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    uri: Uri,
    Json(mut pod): Json<Value>,
) -> Response {
    if let Some(r) = record(&m, Method::POST, &uri, q, Some(pod.clone())) {
        return r;
    }
    let name = pod["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut m = lock(&m);
    let key = (ns.clone(), name.clone());
    if m.pods.contains_key(&key) {
        return status(
            409,
            "AlreadyExists",
            format!("pods \"{name}\" already exists"),
        );
    }
    pod["metadata"]["namespace"] = json!(ns);
    pod["metadata"]["uid"] = json!(format!("uid-{name}"));
    pod["status"] = json!({"phase": "Pending"});
    m.pods.insert(key, pod.clone());
    (StatusCode::CREATED, Json(pod)).into_response()
}

async fn get_pod(
    State(m): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    uri: Uri,
) -> Response {
    if let Some(r) = record(&m, Method::GET, &uri, HashMap::new(), None) {
        return r;
    }
    match lock(&m).pods.get(&(ns, name.clone())) {
        Some(p) => Json(p.clone()).into_response(),
        None => status(404, "NotFound", format!("pods \"{name}\" not found")),
    }
}

async fn delete_pod(
    State(m): State<Shared>,
    Path((ns, name)): Path<(String, String)>,
    uri: Uri,
    body: String,
) -> Response {
    let body = serde_json::from_str(&body).ok();
    if let Some(r) = record(&m, Method::DELETE, &uri, HashMap::new(), body) {
        return r;
    }
    match lock(&m).pods.remove(&(ns, name.clone())) {
        Some(p) => Json(p).into_response(),
        None => status(404, "NotFound", format!("pods \"{name}\" not found")),
    }
}

async fn list_pods(
    State(m): State<Shared>,
    Path(ns): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    uri: Uri,
) -> Response {
    let selector: Vec<(String, String)> = q
        .get("labelSelector")
        .map(|s| {
            s.split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect()
        })
        .unwrap_or_default();
    if let Some(r) = record(&m, Method::GET, &uri, q, None) {
        return r;
    }
    let items: Vec<Value> = lock(&m)
        .pods
        .iter()
        .filter(|((pns, _), _)| *pns == ns)
        .filter(|(_, p)| {
            selector
                .iter()
                .all(|(k, v)| p["metadata"]["labels"][k].as_str() == Some(v))
        })
        .map(|(_, p)| p.clone())
        .collect();
    Json(json!({
        "apiVersion": "v1",
        "kind": "PodList",
        "metadata": {"resourceVersion": "1"},
        "items": items,
    }))
    .into_response()
}

/// Serves the mock on 127.0.0.1:0; returns its state and a runner pointed at it.
async fn mock_api() -> (Shared, KubernetesRunner) {
    let m: Shared = Arc::default();
    let app = Router::new()
        .route(
            "/api/v1/namespaces/{ns}/pods",
            get(list_pods).post(create_pod),
        )
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}",
            get(get_pod).delete(delete_pod),
        )
        .with_state(m.clone());
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => panic!("cannot bind: {e}"),
    };
    let addr = listener.local_addr().map_err(|e| e.to_string());
    let Ok(addr) = addr else { panic!("{addr:?}") };
    tokio::spawn(async move { axum::serve(listener, app).await });
    (m, runner_at(&format!("http://{addr}")))
}

fn runner_at(url: &str) -> KubernetesRunner {
    let uri: Result<Uri, _> = url.parse();
    let Ok(uri) = uri else {
        panic!("bad url {url}")
    };
    let config = without_client_retries(kube::Config::new(uri));
    let client = kube::Client::try_from(config);
    let Ok(client) = client else {
        panic!("{:?}", client.err())
    };
    KubernetesRunner::new(client, NS)
}

fn spec(run: &str, job: &str) -> JobSpec {
    common::job_spec(
        "tests.k8s",
        run,
        job,
        "logarithm/busybox:test",
        "echo \"$GREETING\"",
    )
}

fn requests(m: &Shared) -> Vec<Recorded> {
    std::mem::take(&mut lock(m).requests)
}

fn set_status(m: &Shared, name: &str, status: Value) {
    if let Some(p) = lock(m).pods.get_mut(&(NS.to_owned(), name.to_owned())) {
        p["status"] = status;
    }
}

#[tokio::test]
async fn start_posts_the_job_pod_and_a_repeated_start_finds_it() {
    let (m, runner) = mock_api().await;
    let spec = spec("r1", "version");
    assert_eq!(runner.kind(), "kubernetes");

    let id = runner.start(&spec).await.map_err(|e| e.to_string());
    assert_eq!(id.as_deref(), Ok("co-r1-build-compile-version"));

    let reqs = requests(&m);
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].method, Method::POST);
    assert_eq!(reqs[0].path, "/api/v1/namespaces/ci/pods");
    let pod = reqs[0].body.clone().unwrap_or_default();
    assert_eq!(pod["apiVersion"], "v1");
    assert_eq!(pod["kind"], "Pod");
    assert_eq!(pod["metadata"]["name"], "co-r1-build-compile-version");
    assert_eq!(
        pod["metadata"]["labels"],
        json!({
            "io.containerops.flow": "tests.k8s",
            "io.containerops.run": "r1",
            "io.containerops.stage": "build",
            "io.containerops.action": "compile",
            "io.containerops.job": "version",
        })
    );
    assert_eq!(pod["spec"]["restartPolicy"], "Never");
    let containers = pod["spec"]["containers"].as_array().cloned();
    let containers = containers.unwrap_or_default();
    assert_eq!(containers.len(), 1, "{pod}");
    let c = &containers[0];
    assert_eq!(c["image"], "logarithm/busybox:test");
    assert_eq!(c["args"], json!(["sh", "-c", "echo \"$GREETING\""]));
    assert_eq!(
        c["env"],
        json!([
            {"name": "CO_DATA", "value": "some input"},
            {"name": "GREETING", "value": "hello"},
        ])
    );
    assert_eq!(
        c["resources"],
        json!({
            "limits": {"cpu": "500m", "memory": "67108864"},
            "requests": {"cpu": "500m", "memory": "67108864"},
        })
    );

    // Repeated (after a crash): the API server answers 409 AlreadyExists; the runner reads
    // the Pod, sees it is this job's, and returns the same name.
    let again = runner.start(&spec).await.map_err(|e| e.to_string());
    assert_eq!(again.as_deref(), Ok("co-r1-build-compile-version"));
    let reqs = requests(&m);
    let seen: Vec<(Method, &str)> = reqs.iter().map(|r| (r.method.clone(), &*r.path)).collect();
    assert_eq!(
        seen,
        [
            (Method::POST, "/api/v1/namespaces/ci/pods"),
            (
                Method::GET,
                "/api/v1/namespaces/ci/pods/co-r1-build-compile-version"
            ),
        ]
    );
    assert_eq!(lock(&m).pods.len(), 1);

    // A Pod with that name but another job's labels is a conflict, not this job's Pod.
    let mut other = spec.clone();
    other
        .labels
        .insert(protocol::LABEL_RUN.to_owned(), "someone-else".to_owned());
    let err = runner.start(&other).await.err().map(|e| e.kind());
    assert_eq!(err, Some(ErrorKind::Conflict));
}

#[tokio::test]
async fn state_follows_the_pod_phase_and_the_job_container() {
    let (m, runner) = mock_api().await;
    let spec = spec("r2", "test");
    let id = runner.start(&spec).await.map_err(|e| e.to_string());
    let Ok(id) = id else { panic!("{id:?}") };
    assert_eq!(id, pod_name(&spec));

    let cases = [
        (json!({"phase": "Pending"}), ContainerState::Running),
        (json!({"phase": "Running"}), ContainerState::Running),
        (json!({"phase": "Unknown"}), ContainerState::Running),
        (json!({"phase": "Succeeded"}), ContainerState::Exited),
        (json!({"phase": "Failed"}), ContainerState::Exited),
        // The job container ended; the phase has not caught up yet.
        (
            json!({"phase": "Running", "containerStatuses": [{
                "name": "job", "image": "logarithm/busybox:test", "imageID": "",
                "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 3}},
            }]}),
            ContainerState::Exited,
        ),
        (
            json!({"phase": "Pending", "containerStatuses": [{
                "name": "job", "image": "logarithm/busybox:test", "imageID": "",
                "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ContainerCreating"}},
            }]}),
            ContainerState::Running,
        ),
    ];
    for (status, want) in cases {
        set_status(&m, &id, status.clone());
        let got = runner.state(&id).await.map_err(|e| e.to_string());
        assert_eq!(got, Ok(want), "{status}");
    }
    let reqs = requests(&m);
    assert!(
        reqs.iter()
            .skip(1)
            .all(|r| r.method == Method::GET && r.path.ends_with("/pods/co-r2-build-compile-test")),
        "{reqs:?}"
    );

    let gone = runner.state("co-nothing").await.map_err(|e| e.to_string());
    assert_eq!(gone, Ok(ContainerState::Gone));
}

#[tokio::test]
async fn stop_and_remove_delete_the_pod_and_tolerate_a_gone_one() {
    let (m, runner) = mock_api().await;
    let spec = spec("r3", "deploy");
    let id = runner.start(&spec).await.map_err(|e| e.to_string());
    let Ok(id) = id else { panic!("{id:?}") };
    requests(&m);

    let stopped = runner.stop(&id, Duration::from_secs(10)).await;
    assert!(stopped.is_ok(), "{stopped:?}");
    let reqs = requests(&m);
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].method, Method::DELETE);
    assert_eq!(
        reqs[0].path,
        "/api/v1/namespaces/ci/pods/co-r3-build-compile-deploy"
    );
    assert_eq!(reqs[0].body, Some(json!({"gracePeriodSeconds": 10})));
    assert!(lock(&m).pods.is_empty());

    // Gone already: stop and remove still succeed (the mock answered 404 to both).
    let stopped = runner.stop(&id, Duration::ZERO).await;
    assert!(stopped.is_ok(), "{stopped:?}");
    let removed = runner.remove(&id).await;
    assert!(removed.is_ok(), "{removed:?}");
    let reqs = requests(&m);
    let seen: Vec<(Method, Option<Value>)> = reqs
        .iter()
        .map(|r| (r.method.clone(), r.body.clone()))
        .collect();
    assert_eq!(
        seen,
        [
            // A grace of 0 becomes 1: 0 would force the Pod object away at once.
            (Method::DELETE, Some(json!({"gracePeriodSeconds": 1}))),
            (Method::DELETE, Some(json!({}))),
        ]
    );

    // remove of an existing Pod deletes it.
    let id = runner.start(&spec).await.map_err(|e| e.to_string());
    let Ok(id) = id else { panic!("{id:?}") };
    let removed = runner.remove(&id).await;
    assert!(removed.is_ok(), "{removed:?}");
    assert!(lock(&m).pods.is_empty());
}

#[tokio::test]
async fn find_run_lists_the_runs_pods_by_label() {
    let (m, runner) = mock_api().await;
    for s in [spec("r4", "a"), spec("r4", "b"), spec("r5", "a")] {
        let started = runner.start(&s).await;
        assert!(started.is_ok(), "{started:?}");
    }
    set_status(&m, "co-r4-build-compile-b", json!({"phase": "Succeeded"}));
    requests(&m);

    let found = runner.find_run("r4").await.map_err(|e| e.to_string());
    let Ok(mut found) = found else {
        panic!("{found:?}")
    };
    found.sort_by(|a, b| a.container_id.cmp(&b.container_id));
    let summary: Vec<(&str, Option<&str>, ContainerState)> = found
        .iter()
        .map(|f| {
            (
                f.container_id.as_str(),
                f.labels.get(protocol::LABEL_JOB).map(String::as_str),
                f.state,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("co-r4-build-compile-a", Some("a"), ContainerState::Running),
            ("co-r4-build-compile-b", Some("b"), ContainerState::Exited),
        ]
    );
    let reqs = requests(&m);
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!(reqs[0].path, "/api/v1/namespaces/ci/pods");
    assert_eq!(
        reqs[0].query.get("labelSelector").map(String::as_str),
        Some("io.containerops.run=r4")
    );

    let none = runner.find_run("r6").await.map_err(|e| e.to_string());
    assert_eq!(none.map(|f| f.len()), Ok(0));
}

#[tokio::test]
async fn api_failures_map_to_transient_or_permanent_kinds() {
    let (m, runner) = mock_api().await;
    let spec = spec("r7", "a");
    for (code, kind, transient) in [
        (503, ErrorKind::Unavailable, true),
        (500, ErrorKind::Unavailable, true),
        (429, ErrorKind::Unavailable, true),
        (504, ErrorKind::Timeout, true),
        (422, ErrorKind::Invalid, false),
        (403, ErrorKind::Internal, false),
    ] {
        lock(&m).fail_next = Some(code);
        let err = runner.start(&spec).await.err();
        let got = err.as_ref().map(|e| (e.kind(), e.is_transient()));
        assert_eq!(got, Some((kind, transient)), "{code}: {err:?}");
    }
    assert!(lock(&m).pods.is_empty());

    // No API server at all: transient.
    let closed = match std::net::TcpListener::bind("127.0.0.1:0") {
        Ok(l) => l.local_addr().map(|a| a.port()).unwrap_or(1),
        Err(e) => panic!("cannot bind: {e}"),
    };
    let nowhere = runner_at(&format!("http://127.0.0.1:{closed}"));
    let err = nowhere.state("co-x").await.err().map(|e| e.kind());
    assert_eq!(err, Some(ErrorKind::Unavailable));
}

/// RBAC: every request the runner sends in all its operations is one of
/// `kubernetes::API_CALLS`, and the Role deploy/kubernetes/base/rbac.yaml gives
/// logarithmd's service account in the job namespace covers each of them.
#[tokio::test]
async fn rbac_covers_every_api_call_the_runner_makes() {
    use engine::runner::kubernetes::API_CALLS;
    let (m, runner) = mock_api().await;
    let s = spec("00000000000000aa", "rbac");
    let outcome = async {
        let id = runner.start(&s).await?;
        runner.start(&s).await?;
        runner.state(&id).await?;
        runner.find_run(&s.run).await?;
        runner.stop(&id, Duration::from_secs(1)).await?;
        runner.remove(&id).await
    }
    .await;
    assert!(outcome.is_ok(), "{outcome:?}");
    let mut made: Vec<(&str, &str)> = requests(&m)
        .iter()
        .map(|r| {
            let collection = r.path == format!("/api/v1/namespaces/{NS}/pods");
            let verb = match (r.method.as_str(), collection) {
                ("POST", true) => "create",
                ("GET", true) if r.query.get("watch").is_some_and(|w| w == "true") => "watch",
                ("GET", true) => "list",
                ("GET", false) => "get",
                ("DELETE", false) => "delete",
                other => panic!("unexpected request {other:?} {}", r.path),
            };
            ("pods", verb)
        })
        .collect();
    made.sort_unstable();
    made.dedup();
    let mut declared = API_CALLS.to_vec();
    declared.sort_unstable();
    assert_eq!(
        made, declared,
        "API_CALLS must list exactly what the runner sends"
    );

    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/kubernetes/base/rbac.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let docs: Vec<Value> = yaml_serde::Deserializer::from_str(&text)
        .filter_map(|d| serde::Deserialize::deserialize(d).ok())
        .collect();
    let find = |kind: &str, name: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let role = find("Role", "logarithm-engine");
    let binding = find("RoleBinding", "logarithm-engine");
    let job_ns = role["metadata"]["namespace"].clone();
    assert_eq!(job_ns, "logarithm-jobs");
    assert_eq!(binding["metadata"]["namespace"], job_ns);
    assert_eq!(binding["roleRef"]["name"], "logarithm-engine");
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "logarithmd", "namespace": "logarithm"}])
    );
    let has = |v: &Value, s: &str| v.as_array().is_some_and(|a| a.iter().any(|x| x == s));
    for (resource, verb) in API_CALLS {
        let covered = role["rules"].as_array().is_some_and(|rules| {
            rules.iter().any(|r| {
                has(&r["apiGroups"], "") && has(&r["resources"], resource) && has(&r["verbs"], verb)
            })
        });
        assert!(covered, "the Role does not grant {verb} on {resource}");
    }
    // antilog reads Pod metadata on its node: get, list, watch, cluster-wide, nothing more.
    let agent = find("ClusterRole", "logarithm-antilog");
    assert_eq!(
        agent["rules"],
        json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}])
    );
}
