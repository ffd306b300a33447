//! **A mock Kubernetes API server**, for the `cri` tests (`tests/tests/cri.rs`) and the
//! bench's `cri-catchup` path: no API server can run here (no cluster, no kind, no envtest),
//! so an in-process axum server serves the two endpoints antilog's Pod watcher calls,
//! `GET /api/v1/pods` (a `PodList`) and the same with `watch=true` (a stream of
//! newline-separated watch events: the current Pods as `MODIFIED`, and the deleted ones as
//! `DELETED`, when the watch starts and after every change the caller makes). Objects are
//! k8s-openapi's `Pod`, so they have the shape a real API server sends and `kube` parses
//! them as it would a real one's. Every query string is recorded.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use tokio::sync::watch;

#[derive(Default)]
struct Inner {
    pods: Vec<Pod>,
    /// Pods deleted, sent as `DELETED` events (again at every change: harmless).
    deleted: Vec<Pod>,
    version: u64,
    queries: Vec<HashMap<String, String>>,
}

/// The mock's state; cheap to clone.
#[derive(Clone)]
pub struct PodApi {
    inner: Arc<Mutex<Inner>>,
    changed: watch::Sender<u64>,
    pub url: String,
}

impl PodApi {
    /// Serves on 127.0.0.1:0 until the test's runtime ends.
    pub async fn start() -> anyhow::Result<PodApi> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (changed, _) = watch::channel(0);
        let api = PodApi {
            inner: Arc::default(),
            changed,
            url,
        };
        let app = Router::new()
            .route("/api/v1/pods", get(pods))
            .with_state(api.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(api)
    }

    /// Replaces the Pod of the same name (or adds it), with a new resourceVersion, and
    /// tells the watches.
    pub fn set(&self, mut pod: Pod) {
        let version = {
            let mut i = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            i.version += 1;
            pod.metadata.resource_version = Some(i.version.to_string());
            let name = pod.metadata.name.clone();
            i.pods.retain(|p| p.metadata.name != name);
            i.pods.push(pod);
            i.version
        };
        self.changed.send_replace(version);
    }

    /// Deletes the Pod named `name` (a `DELETED` event with its last state).
    pub fn delete(&self, name: &str) {
        let version = {
            let mut i = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            i.version += 1;
            let (gone, kept): (Vec<Pod>, Vec<Pod>) = std::mem::take(&mut i.pods)
                .into_iter()
                .partition(|p| p.metadata.name.as_deref() == Some(name));
            i.pods = kept;
            i.deleted.extend(gone);
            i.version
        };
        self.changed.send_replace(version);
    }

    /// The query strings received, in order.
    pub fn queries(&self) -> Vec<HashMap<String, String>> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .queries
            .clone()
    }

    /// Every Pod as one `MODIFIED` event line each, every deleted one as `DELETED`.
    fn events(&self) -> Vec<u8> {
        let i = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        let events = i.pods.iter().map(|p| ("MODIFIED", p));
        for (kind, p) in events.chain(i.deleted.iter().map(|p| ("DELETED", p))) {
            let event = json!({"type": kind, "object": p});
            out.extend(serde_json::to_vec(&event).unwrap_or_default());
            out.push(b'\n');
        }
        out
    }
}

async fn pods(State(api): State<PodApi>, Query(q): Query<HashMap<String, String>>) -> Response {
    let watching = q.get("watch").map(String::as_str) == Some("true");
    api.inner
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .queries
        .push(q);
    if watching {
        let mut rx = api.changed.subscribe();
        rx.mark_changed();
        let stream = futures::stream::unfold((rx, api), |(mut rx, api)| async move {
            rx.changed().await.ok()?;
            let chunk = api.events();
            Some((Ok::<_, Infallible>(chunk), (rx, api)))
        });
        return Response::new(Body::from_stream(stream));
    }
    let i = api.inner.lock().unwrap_or_else(|e| e.into_inner());
    let list = json!({
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": i.version.to_string()},
        "items": i.pods,
    });
    Response::new(Body::from(serde_json::to_vec(&list).unwrap_or_default()))
}
