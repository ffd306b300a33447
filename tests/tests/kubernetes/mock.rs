//! The mock Kubernetes API server and its kubelet (see the test binary's doc comment for why
//! a mock, and what it can and cannot prove).
//!
//! The API server: the pod endpoints of the core group in one namespace, on 127.0.0.1:0
//! (create, get, list with `labelSelector`, delete with `DeleteOptions`, and the `log`
//! subresource the feeder reads). Objects are k8s-openapi's `Pod`, `PodList` and `Status`,
//! serialized as the API server does; a POST body that is no valid Pod is refused with 400,
//! a taken name with 409 `AlreadyExists`, an unknown one with 404 `NotFound`. Every request is
//! recorded (method, path, query, body), so the test sees each delete and its grace period.
//!
//! The kubelet: each created Pod moves `Pending` (`ContainerCreating`) → `Running` →
//! `Succeeded` or `Failed`, with `containerStatuses[0].state` waiting → running → terminated
//! (`exitCode`, `reason`, `startedAt`, `finishedAt`), like a real node's. Its one container
//! runs as a host process (the Pod's `args` with the Pod's `env`, in a process group of its
//! own; the image is not pulled, there is no registry), so exit codes and output are real.
//! A delete marks the Pod terminating (`deletionTimestamp`), sends SIGTERM to the group,
//! SIGKILL after the grace period, records the signal's exit code (143 or 137) and then
//! removes the Pod, as the kubelet's final delete does.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, Pod, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ListMeta, Status, Time};
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;

/// One request the API server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    /// The query string (`labelSelector=...`, `watch=true`).
    pub query: Option<String>,
    /// The bearer token it came with (who sent it).
    pub token: Option<String>,
    pub body: Option<Value>,
}

/// A Pod with what its node knows: the container's output and how to stop it.
struct Entry {
    pod: Pod,
    /// The container's output lines (stdout and stderr, in order), as the runtime logs them.
    log: Vec<String>,
    /// Set by a delete: the grace period in seconds.
    stop: watch::Sender<Option<u32>>,
}

#[derive(Default)]
struct Inner {
    pods: BTreeMap<String, Entry>,
    requests: Vec<Recorded>,
    /// Every Pod ever created, by name (a Pod removed after a delete stays counted).
    created: Vec<String>,
    next_version: u64,
}

/// The mock API server's state; cheap to clone.
#[derive(Clone)]
pub struct MockApi {
    inner: Arc<Mutex<Inner>>,
    namespace: String,
    pub url: String,
}

fn lock(m: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A `Status` failure, as the API server answers.
fn failure(code: u16, reason: &str, message: String) -> Response {
    let body = Status {
        code: Some(i32::from(code)),
        message: Some(message),
        reason: Some(reason.to_owned()),
        status: Some("Failure".to_owned()),
        metadata: ListMeta::default(),
        details: None,
    };
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, Json(body)).into_response()
}

fn not_found(name: &str) -> Response {
    failure(404, "NotFound", format!("pods \"{name}\" not found"))
}

fn container_status(image: &str, state: ContainerState) -> ContainerStatus {
    ContainerStatus {
        name: "job".to_owned(),
        image: image.to_owned(),
        image_id: String::new(),
        ready: state.running.is_some(),
        restart_count: 0,
        started: Some(state.running.is_some()),
        state: Some(state),
        ..Default::default()
    }
}

impl MockApi {
    /// Serves the API server for `namespace` on 127.0.0.1:0.
    pub async fn start(namespace: &str) -> anyhow::Result<MockApi> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let inner = Arc::new(Mutex::new(Inner::default()));
        let api = MockApi {
            inner,
            namespace: namespace.to_owned(),
            url,
        };
        let app = Router::new()
            .route(
                "/api/v1/namespaces/{ns}/pods",
                get(list_pods).post(create_pod),
            )
            .route(
                "/api/v1/namespaces/{ns}/pods/{name}",
                get(read_pod).delete(delete_pod),
            )
            .route("/api/v1/namespaces/{ns}/pods/{name}/log", get(read_pod))
            .with_state(api.clone());
        // Ends with the test's runtime.
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(api)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.inner).requests.clone()
    }

    /// Names of every Pod ever created, in order.
    pub fn created(&self) -> Vec<String> {
        lock(&self.inner).created.clone()
    }

    /// The Pods that exist now, by name.
    pub fn pod_names(&self) -> Vec<String> {
        lock(&self.inner).pods.keys().cloned().collect()
    }

    fn record(&self, method: Method, uri: &Uri, headers: &HeaderMap, body: Option<Value>) {
        let token = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned);
        lock(&self.inner).requests.push(Recorded {
            method,
            path: uri.path().to_owned(),
            query: uri.query().map(str::to_owned),
            token,
            body,
        });
    }

    fn version(inner: &mut Inner) -> String {
        inner.next_version += 1;
        inner.next_version.to_string()
    }

    /// Changes a Pod's status (a new resourceVersion each time), if it still exists.
    fn update(&self, name: &str, f: impl FnOnce(&mut Pod)) {
        let mut inner = lock(&self.inner);
        let version = Self::version(&mut inner);
        if let Some(e) = inner.pods.get_mut(name) {
            f(&mut e.pod);
            e.pod.metadata.resource_version = Some(version);
        }
    }

    /// The kubelet's work for one Pod: start its container, follow it to its end, stop it
    /// on a delete, then remove the Pod if it was deleted.
    async fn kubelet(self, name: String, mut stop: watch::Receiver<Option<u32>>) {
        // Scheduling and "pulling".
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Some(pod) = lock(&self.inner).pods.get(&name).map(|e| e.pod.clone()) else {
            return;
        };
        let container = pod.spec.and_then(|s| s.containers.into_iter().next());
        let container = container.unwrap_or_default();
        let image = container.image.unwrap_or_default();
        let args = container.args.unwrap_or_default();
        let started = Time(Timestamp::now());
        let mut cmd = tokio::process::Command::new(args.first().map_or("true", String::as_str));
        cmd.args(args.iter().skip(1))
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .envs(
                container
                    .env
                    .unwrap_or_default()
                    .into_iter()
                    .map(|e| (e.name, e.value.unwrap_or_default())),
            )
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let waiting = ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some("RunContainerError".to_owned()),
                        message: Some(e.to_string()),
                    }),
                    ..Default::default()
                };
                self.update(&name, |p| {
                    if let Some(s) = p.status.as_mut() {
                        s.container_statuses = Some(vec![container_status(&image, waiting)]);
                    }
                });
                return;
            }
        };
        let running = ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(started.clone()),
            }),
            ..Default::default()
        };
        self.update(&name, |p| {
            p.status = Some(PodStatus {
                phase: Some("Running".to_owned()),
                start_time: Some(started.clone()),
                container_statuses: Some(vec![container_status(&image, running)]),
                ..Default::default()
            });
        });
        let pgid = child.id();
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(tokio::spawn(
                self.clone().read_log(name.clone(), BufReader::new(out)),
            ));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(tokio::spawn(
                self.clone().read_log(name.clone(), BufReader::new(err)),
            ));
        }
        let mut deleted = false;
        let status = tokio::select! {
            s = child.wait() => s,
            _ = stop.changed() => {
                deleted = true;
                let grace = stop.borrow().unwrap_or(30);
                signal_group(pgid, "-TERM");
                match tokio::time::timeout(Duration::from_secs(grace.into()), child.wait()).await {
                    Ok(s) => s,
                    Err(_) => {
                        signal_group(pgid, "-KILL");
                        child.wait().await
                    }
                }
            }
        };
        for r in readers {
            let _ = r.await;
        }
        let code = match status {
            Ok(s) => {
                use std::os::unix::process::ExitStatusExt;
                s.code()
                    .or_else(|| s.signal().map(|sig| 128 + sig))
                    .unwrap_or(-1)
            }
            Err(_) => -1,
        };
        let terminated = ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: code,
                reason: Some(if code == 0 { "Completed" } else { "Error" }.to_owned()),
                started_at: Some(started),
                finished_at: Some(Time(Timestamp::now())),
                ..Default::default()
            }),
            ..Default::default()
        };
        self.update(&name, |p| {
            if let Some(s) = p.status.as_mut() {
                s.phase = Some(if code == 0 { "Succeeded" } else { "Failed" }.to_owned());
                s.container_statuses = Some(vec![container_status(&image, terminated)]);
            }
        });
        if !deleted && stop.changed().await.is_err() {
            return;
        }
        // Deleted: the kubelet's final delete, a moment after the container stopped (long
        // enough for the node's log collector to see the terminated state).
        tokio::time::sleep(Duration::from_millis(300)).await;
        lock(&self.inner).pods.remove(&name);
    }

    async fn read_log<R: tokio::io::AsyncRead + Unpin>(self, name: String, r: BufReader<R>) {
        let mut lines = r.lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(e) = lock(&self.inner).pods.get_mut(&name) {
                e.log.push(line);
            }
        }
    }
}

/// Signals a process group (the container's processes).
fn signal_group(pgid: Option<u32>, signal: &str) {
    if let Some(pgid) = pgid {
        let _ = std::process::Command::new("kill")
            .args([signal, "--", &format!("-{pgid}")])
            .status();
    }
}

async fn create_pod(
    State(api): State<MockApi>,
    Path(ns): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    let json: Option<Value> = serde_json::from_str(&body).ok();
    api.record(Method::POST, &uri, &headers, json);
    let mut pod: Pod = match serde_json::from_str(&body) {
        Ok(p) => p,
        Err(e) => return failure(400, "BadRequest", format!("the body is no Pod: {e}")),
    };
    let Some(name) = pod.metadata.name.clone() else {
        return failure(422, "Invalid", "metadata.name: Required value".to_owned());
    };
    if ns != api.namespace || pod.metadata.namespace.as_deref().is_some_and(|n| n != ns) {
        return failure(400, "BadRequest", format!("namespace {ns} is not served"));
    }
    let (stop, stopped) = watch::channel(None);
    {
        let mut inner = lock(&api.inner);
        if inner.pods.contains_key(&name) {
            return failure(
                409,
                "AlreadyExists",
                format!("pods \"{name}\" already exists"),
            );
        }
        let version = MockApi::version(&mut inner);
        let m = &mut pod.metadata;
        m.namespace = Some(ns);
        m.uid = Some(format!("uid-{name}"));
        m.resource_version = Some(version);
        m.creation_timestamp = Some(Time(Timestamp::now()));
        let image = pod
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .and_then(|c| c.image.clone())
            .unwrap_or_default();
        let waiting = ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("ContainerCreating".to_owned()),
                message: None,
            }),
            ..Default::default()
        };
        pod.status = Some(PodStatus {
            phase: Some("Pending".to_owned()),
            container_statuses: Some(vec![container_status(&image, waiting)]),
            ..Default::default()
        });
        inner.created.push(name.clone());
        inner.pods.insert(
            name.clone(),
            Entry {
                pod: pod.clone(),
                log: Vec::new(),
                stop,
            },
        );
    }
    tokio::spawn(api.clone().kubelet(name, stopped));
    (StatusCode::CREATED, Json(pod)).into_response()
}

/// `GET .../pods/{name}` and `GET .../pods/{name}/log`: the Pod, or its log as text.
async fn read_pod(
    State(api): State<MockApi>,
    Path((_, name)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    api.record(Method::GET, &uri, &headers, None);
    let inner = lock(&api.inner);
    let Some(e) = inner.pods.get(&name) else {
        return not_found(&name);
    };
    if !uri.path().ends_with("/log") {
        return Json(e.pod.clone()).into_response();
    }
    let mut text = e.log.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    text.into_response()
}

async fn list_pods(
    State(api): State<MockApi>,
    Path(_): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let selector: Vec<(String, Option<String>)> = q
        .get("labelSelector")
        .map(|s| {
            s.split(',')
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                    // `key`: the label exists.
                    None => (kv.to_owned(), None),
                })
                .collect()
        })
        .unwrap_or_default();
    api.record(Method::GET, &uri, &headers, None);
    let mut inner = lock(&api.inner);
    let version = MockApi::version(&mut inner);
    let items: Vec<Pod> = inner
        .pods
        .values()
        .map(|e| e.pod.clone())
        .filter(|p| {
            let labels = p.metadata.labels.clone().unwrap_or_default();
            selector.iter().all(|(k, v)| match v {
                Some(v) => labels.get(k) == Some(v),
                None => labels.contains_key(k),
            })
        })
        .collect();
    Json(k8s_openapi::List {
        items,
        metadata: ListMeta {
            resource_version: Some(version),
            ..Default::default()
        },
    })
    .into_response()
}

async fn delete_pod(
    State(api): State<MockApi>,
    Path((_, name)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    let options: Option<Value> = serde_json::from_str(&body).ok();
    let grace = options
        .as_ref()
        .and_then(|o| o["gracePeriodSeconds"].as_u64())
        .map_or(30, |g| u32::try_from(g).unwrap_or(u32::MAX));
    api.record(Method::DELETE, &uri, &headers, options);
    let mut inner = lock(&api.inner);
    let version = MockApi::version(&mut inner);
    let Some(e) = inner.pods.get_mut(&name) else {
        return not_found(&name);
    };
    if e.pod.metadata.deletion_timestamp.is_none() {
        e.pod.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        e.pod.metadata.deletion_grace_period_seconds = Some(i64::from(grace));
        e.pod.metadata.resource_version = Some(version);
        let _ = e.stop.send(Some(grace));
    }
    Json(e.pod.clone()).into_response()
}
