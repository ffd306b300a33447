//! The Pod watcher through the real `kube` client, against a mock API server.
//!
//! No Kubernetes API server can run here (no cluster, no kind, no envtest), so these
//! tests serve the two endpoints the watcher uses from an in-test axum server on
//! 127.0.0.1:0: `GET /api/v1/pods` (list) and the same with `watch=true` (a stream of
//! newline-separated watch events), with objects built from k8s-openapi's types, so they
//! have the shape a real API server sends. What they prove: the requests the watcher sends
//! (node field selector, resourceVersion, bookmarks) and how it reads list, watch,
//! bookmark and 410 Gone answers. What they cannot prove: a real server's timing.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateTerminated, ContainerStatus, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde_json::{json, Value};

use super::*;

const NODE: &str = "node-1";

fn pod(name: &str, uid: &str, rv: &str, exit: Option<i32>) -> Pod {
    let labels = BTreeMap::from([
        ("io.containerops.flow".to_string(), "build".to_string()),
        ("app".to_string(), name.to_string()),
    ]);
    let terminated = exit.map(|code| ContainerStateTerminated {
        exit_code: code,
        finished_at: Some(Time(
            k8s_openapi::jiff::Timestamp::new(1_795_777_825, 123_456_789).unwrap(),
        )),
        reason: Some("Error".into()),
        ..Default::default()
    });
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ci".into()),
            uid: Some(uid.into()),
            resource_version: Some(rv.into()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([
                (
                    "kubernetes.io/change-cause".to_string(),
                    format!("deploy {name}"),
                ),
                // Tool state over the size limit: left out, the others kept.
                (
                    "kubectl.kubernetes.io/last-applied-configuration".to_string(),
                    "{}".repeat(protocol::MAX_ANNOTATIONS_BYTES / 2),
                ),
                ("team".to_string(), "ci".to_string()),
            ])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(NODE.into()),
            containers: vec![Container {
                name: "main".into(),
                image: Some("busybox:1".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: Some(PodStatus {
            container_statuses: Some(vec![ContainerStatus {
                name: "main".into(),
                image: "busybox:1".into(),
                image_id: String::new(),
                ready: false,
                restart_count: 1,
                state: Some(ContainerState {
                    terminated,
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

fn list_of(items: Vec<Pod>, rv: &str) -> Value {
    json!({
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": rv},
        "items": items,
    })
}

fn event(kind: &str, object: Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap();
    line.push(b'\n');
    Bytes::from(line)
}

#[derive(Default)]
struct Mock {
    /// Query strings of the requests, in order.
    requests: Vec<HashMap<String, String>>,
    lists: usize,
}

#[derive(Default)]
struct Server {
    mock: Mutex<Mock>,
    /// The first watch sends 410 Gone only once the test has seen its events applied.
    release: Notify,
}

type Shared = Arc<Server>;

async fn pods_endpoint(
    State(srv): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let lists = {
        let mut m = srv.mock.lock().unwrap();
        m.requests.push(q.clone());
        if q.get("watch").map(String::as_str) != Some("true") {
            m.lists += 1;
        }
        m.lists
    };
    let body = if q.get("watch").map(String::as_str) != Some("true") {
        // The first list has pod a; the one after 410 Gone has b (a was deleted while the
        // watch was gone, and no event said so).
        let list = if lists == 1 {
            list_of(vec![pod("a", "uid-a", "10", None)], "10")
        } else {
            list_of(vec![pod("b", "uid-b", "20", None)], "20")
        };
        Body::from(serde_json::to_vec(&list).unwrap())
    } else {
        match q.get("resourceVersion").map(String::as_str) {
            // a's run ends, a bookmark, then the history is gone.
            Some("10") => {
                let gone = json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure", "reason": "Expired", "code": 410,
                    "message": "too old resource version: 10 (15)",
                });
                let bookmark = json!({
                    "kind": "Pod", "apiVersion": "v1",
                    "metadata": {"resourceVersion": "12"},
                });
                let events = vec![
                    event("MODIFIED", json!(pod("a", "uid-a", "11", Some(3)))),
                    event("BOOKMARK", bookmark),
                ];
                let gone = futures::stream::once(async move {
                    srv.release.notified().await;
                    event("ERROR", gone)
                });
                Body::from_stream(
                    futures::stream::iter(events)
                        .chain(gone)
                        .map(Ok::<_, std::convert::Infallible>),
                )
            }
            // After the re-list: c is added, and the watch stays open.
            _ => {
                let added = event("ADDED", json!(pod("c", "uid-c", "21", Some(0))));
                Body::from_stream(
                    futures::stream::iter([Ok::<_, std::convert::Infallible>(added)])
                        .chain(futures::stream::pending()),
                )
            }
        }
    };
    Response::builder()
        .header("content-type", "application/json")
        .body(body)
        .unwrap()
}

async fn until(pods: &Pods, what: &str, mut f: impl FnMut(&Pods) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !f(pods) {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn lists_watches_follows_bookmarks_and_lists_again_after_410() {
    let mock = Shared::default();
    let app = Router::new()
        .route("/api/v1/pods", get(pods_endpoint))
        .with_state(mock.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    let client = Client::try_from(config).unwrap();
    let pods = Arc::new(Pods::default());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(watch_pods(
        client,
        NODE.into(),
        pods.clone(),
        shutdown.clone(),
    ));

    // The watch's MODIFIED event: a's run ended with exit code 3.
    until(&pods, "a terminated", |p| {
        p.get("uid-a")
            .is_some_and(|a| a.containers[0].terminated.is_some())
    })
    .await;
    // The API's times have whole seconds (metav1.Time), as a real server sends them.
    let a = pods.get("uid-a").unwrap();
    assert_eq!(
        a.containers[0].terminated,
        Some(Terminated {
            exit_code: 3,
            finished_at: 1_795_777_825_000_000_000
        })
    );
    mock.release.notify_one();
    // 410 Gone: listed again, the table replaced (a is gone), then c added by the watch.
    until(&pods, "b and c after the re-list", |p| {
        p.get("uid-b").is_some() && p.get("uid-c").is_some() && p.get("uid-a").is_none()
    })
    .await;
    let c = pods.get("uid-c").unwrap();
    assert_eq!((c.namespace.as_str(), c.name.as_str()), ("ci", "c"));
    assert_eq!(
        c.labels.get("io.containerops.flow").map(String::as_str),
        Some("build")
    );
    assert_eq!(
        c.annotations,
        BTreeMap::from([
            (
                "kubernetes.io/change-cause".to_string(),
                "deploy c".to_string()
            ),
            ("team".to_string(), "ci".to_string()),
        ])
    );
    assert_eq!(
        c.containers,
        vec![ContainerMeta {
            name: "main".into(),
            image: "busybox:1".into(),
            restart_count: 1,
            terminated: Some(Terminated {
                exit_code: 0,
                finished_at: 1_795_777_825_000_000_000
            }),
            last_terminated: None,
            started_at: 0,
        }]
    );
    assert_eq!(pods.len(), 2);
    shutdown.cancel();
    task.await.unwrap();

    let requests = mock.mock.lock().unwrap().requests.clone();
    let summary: Vec<(Option<&str>, Option<&str>)> = requests
        .iter()
        .map(|q| {
            (
                q.get("watch").map(String::as_str),
                q.get("resourceVersion").map(String::as_str),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (None, None),
            (Some("true"), Some("10")),
            (None, None),
            (Some("true"), Some("20")),
        ]
    );
    for q in &requests {
        assert_eq!(
            q.get("fieldSelector").map(String::as_str),
            Some("spec.nodeName=node-1")
        );
    }
    assert_eq!(
        requests[1].get("allowWatchBookmarks").map(String::as_str),
        Some("true")
    );
    assert_eq!(requests[0].get("limit").map(String::as_str), Some("500"));
}

#[test]
fn a_deleted_pod_keeps_its_last_state_for_a_while() {
    let pods = Pods::default();
    pods.upsert(&pod("a", "uid-a", "1", None));
    pods.remove(&pod("a", "uid-a", "2", Some(3)));
    assert_eq!(pods.get("uid-a"), None);
    let last = pods.get_deleted("uid-a").unwrap();
    assert_eq!(last.containers[0].terminated.as_ref().unwrap().exit_code, 3);
    for i in 0..MAX_DELETED {
        pods.remove(&pod("b", &format!("uid-b{i}"), "3", None));
    }
    assert_eq!(pods.get_deleted("uid-a"), None, "bounded: the oldest goes");
    assert!(pods
        .get_deleted(&format!("uid-b{}", MAX_DELETED - 1))
        .is_some());
}
