//! Pod metadata of this node, from the Kubernetes API (`kube`), for the CRI source: the
//! log files say which containers exist ([`crate::files::pod_logs`]); the Pods say what
//! they are (labels, image) and how their runs ended (exit code, finish time).
//!
//! [`watch_pods`] lists the Pods whose `spec.nodeName` is this node, then watches them from
//! the list's `resourceVersion` (with bookmarks, so a reconnect resumes close to now). When
//! the API server answers 410 Gone (the version is too old: its history was compacted) it
//! lists again and replaces the table, as client-go's reflector does. The table holds
//! only what antilog needs, and at most [`MAX_PODS`] Pods.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, WatchEvent, WatchParams};
use kube::Client;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// Most Pods kept (a node runs at most a few hundred).
pub const MAX_PODS: usize = 8_192;
/// Deleted Pods whose last state is kept.
pub const MAX_DELETED: usize = 1_024;
/// Pods per list page.
const PAGE: u32 = 500;
/// How long one watch request lasts before it is renewed (the API server's limit is
/// higher; a shorter one bounds how long a silently dead connection goes unnoticed).
const WATCH_TIMEOUT_S: u32 = 290;
/// Pause before retrying after an error that is not 410 Gone.
const RETRY_PAUSE: Duration = Duration::from_secs(2);

/// How one run of a container ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminated {
    pub exit_code: i32,
    /// ns since the epoch; 0 if the API did not say.
    pub finished_at: i64,
}

/// What antilog keeps of a container of a Pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerMeta {
    pub name: String,
    pub image: String,
    pub restart_count: i32,
    /// Set once the current run ended (`state.terminated`).
    pub terminated: Option<Terminated>,
    /// How the previous run ended (`lastState.terminated`), after a restart.
    pub last_terminated: Option<Terminated>,
    /// When the current run started (ns since the epoch; 0 if the API did not say).
    pub started_at: i64,
}

/// What antilog keeps of a Pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodMeta {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// `metadata.creationTimestamp`, ns since the epoch (0 if absent).
    pub created_at: i64,
    /// The first of `spec.containers` (not an init container).
    pub main_container: Option<String>,
    pub containers: Vec<ContainerMeta>,
}

/// The annotations that fit in [`protocol::MAX_ANNOTATIONS_BYTES`], taken in key order;
/// one too large to fit is left out (logged), not the ones after it.
fn bounded_annotations(all: Option<&BTreeMap<String, String>>) -> BTreeMap<String, String> {
    let mut kept = BTreeMap::new();
    let mut bytes = 0usize;
    for (k, v) in all.into_iter().flatten() {
        let size = k.len() + v.len();
        if bytes + size > protocol::MAX_ANNOTATIONS_BYTES {
            debug!(annotation = %k, bytes = size, "annotation left out: over the size limit");
            continue;
        }
        bytes += size;
        kept.insert(k.clone(), v.clone());
    }
    kept
}

impl PodMeta {
    fn of(pod: &Pod) -> Option<PodMeta> {
        let m = &pod.metadata;
        let mut containers: Vec<ContainerMeta> = pod
            .spec
            .as_ref()
            .map(|s| {
                s.init_containers
                    .iter()
                    .flatten()
                    .chain(s.containers.iter())
                    .map(|c| ContainerMeta {
                        name: c.name.clone(),
                        image: c.image.clone().unwrap_or_default(),
                        restart_count: 0,
                        terminated: None,
                        last_terminated: None,
                        started_at: 0,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let statuses = pod.status.as_ref().into_iter().flat_map(|s| {
            s.init_container_statuses
                .iter()
                .flatten()
                .chain(s.container_statuses.iter().flatten())
        });
        for st in statuses {
            let Some(c) = containers.iter_mut().find(|c| c.name == st.name) else {
                continue;
            };
            c.restart_count = st.restart_count;
            let state = st.state.as_ref();
            c.terminated = state.and_then(|s| s.terminated.as_ref()).map(terminated);
            c.last_terminated = st
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map(terminated);
            c.started_at = state
                .and_then(|s| {
                    s.running
                        .as_ref()
                        .and_then(|r| r.started_at.as_ref())
                        .or(s.terminated.as_ref().and_then(|t| t.started_at.as_ref()))
                })
                .map_or(0, ns_of);
        }
        Some(PodMeta {
            namespace: m.namespace.clone()?,
            name: m.name.clone()?,
            uid: m.uid.clone()?,
            labels: m.labels.clone().unwrap_or_default(),
            annotations: bounded_annotations(m.annotations.as_ref()),
            created_at: m.creation_timestamp.as_ref().map_or(0, ns_of),
            main_container: pod
                .spec
                .as_ref()
                .and_then(|s| s.containers.first())
                .map(|c| c.name.clone()),
            containers,
        })
    }
}

fn ns_of(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> i64 {
    i64::try_from(t.0.as_nanosecond()).unwrap_or(0)
}

fn terminated(t: &k8s_openapi::api::core::v1::ContainerStateTerminated) -> Terminated {
    Terminated {
        exit_code: t.exit_code,
        finished_at: t.finished_at.as_ref().map_or(0, ns_of),
    }
}

/// The Pods of this node by UID, kept current by [`watch_pods`].
#[derive(Debug, Default)]
pub struct Pods {
    by_uid: RwLock<HashMap<String, PodMeta>>,
    /// The last state of Pods deleted lately (the newest last, at most [`MAX_DELETED`]):
    /// a follower that had not looked since the Pod's end still learns its exit codes.
    deleted: std::sync::Mutex<std::collections::VecDeque<PodMeta>>,
    /// Woken at every change.
    pub changed: Notify,
}

impl Pods {
    pub fn get(&self, uid: &str) -> Option<PodMeta> {
        self.read().get(uid).cloned()
    }

    /// The last state of a Pod deleted lately (its `DELETED` event's object).
    pub fn get_deleted(&self, uid: &str) -> Option<PodMeta> {
        let d = self.deleted.lock().unwrap_or_else(|e| e.into_inner());
        d.iter().rev().find(|p| p.uid == uid).cloned()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, PodMeta>> {
        self.by_uid.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, PodMeta>> {
        self.by_uid.write().unwrap_or_else(|e| e.into_inner())
    }

    fn replace(&self, pods: HashMap<String, PodMeta>) {
        *self.write() = pods;
        self.changed.notify_waiters();
    }

    fn upsert(&self, pod: &Pod) {
        let Some(meta) = PodMeta::of(pod) else {
            return;
        };
        {
            let mut t = self.write();
            if t.len() >= MAX_PODS && !t.contains_key(&meta.uid) {
                warn!(
                    "more than {MAX_PODS} pods on this node; {} is not tracked",
                    meta.name
                );
                return;
            }
            t.insert(meta.uid.clone(), meta);
        }
        self.changed.notify_waiters();
    }

    fn remove(&self, pod: &Pod) {
        if let Some(uid) = pod.metadata.uid.as_deref() {
            self.write().remove(uid);
            if let Some(last) = PodMeta::of(pod) {
                let mut d = self.deleted.lock().unwrap_or_else(|e| e.into_inner());
                if d.len() >= MAX_DELETED {
                    d.pop_front();
                }
                d.push_back(last);
            }
            self.changed.notify_waiters();
        }
    }
}

/// Why a watch ended.
enum WatchEnd {
    /// The request timed out or the server closed it: watch again from `version`.
    Renew,
    /// 410 Gone: list again.
    Gone,
}

/// Keeps `pods` current with the Pods of `node` until `shutdown`.
pub async fn watch_pods(
    client: Client,
    node: String,
    pods: Arc<Pods>,
    shutdown: CancellationToken,
) {
    let api: Api<Pod> = Api::all(client);
    let fields = format!("spec.nodeName={node}");
    loop {
        let listed = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = list(&api, &fields) => r,
        };
        let (table, mut version) = match listed {
            Ok(v) => v,
            Err(e) => {
                warn!(error = %e, "cannot list the pods of this node; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(RETRY_PAUSE) => continue,
                }
            }
        };
        info!(pods = table.len(), %version, "listed the pods of this node");
        pods.replace(table);
        loop {
            let ended = tokio::select! {
                _ = shutdown.cancelled() => return,
                r = watch_once(&api, &fields, &mut version, &pods) => r,
            };
            match ended {
                Ok(WatchEnd::Renew) => debug!(%version, "watch renewed"),
                Ok(WatchEnd::Gone) => {
                    info!(%version, "pod watch expired (410 Gone); listing again");
                    break;
                }
                Err(e) => {
                    warn!(error = %e, "pod watch failed; watching again");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(RETRY_PAUSE) => {}
                    }
                }
            }
        }
    }
}

/// Lists every page; returns the table and the list's resourceVersion.
async fn list(api: &Api<Pod>, fields: &str) -> kube::Result<(HashMap<String, PodMeta>, String)> {
    let mut table = HashMap::new();
    let mut params = ListParams::default().fields(fields).limit(PAGE);
    loop {
        let page = api.list(&params).await?;
        for p in &page.items {
            if table.len() >= MAX_PODS {
                break;
            }
            if let Some(m) = PodMeta::of(p) {
                table.insert(m.uid.clone(), m);
            }
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(c) => params = params.continue_token(&c),
            None => return Ok((table, page.metadata.resource_version.unwrap_or_default())),
        }
    }
}

/// One watch request, from `version`, applying its events; moves `version` on.
async fn watch_once(
    api: &Api<Pod>,
    fields: &str,
    version: &mut String,
    pods: &Pods,
) -> kube::Result<WatchEnd> {
    let params = WatchParams::default()
        .fields(fields)
        .timeout(WATCH_TIMEOUT_S);
    let stream = match api.watch(&params, version).await {
        Ok(s) => s,
        Err(kube::Error::Api(e)) if e.code == 410 => return Ok(WatchEnd::Gone),
        Err(e) => return Err(e),
    };
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.try_next().await? {
        match event {
            WatchEvent::Added(p) | WatchEvent::Modified(p) => {
                set_version(version, &p);
                pods.upsert(&p);
            }
            WatchEvent::Deleted(p) => {
                set_version(version, &p);
                pods.remove(&p);
            }
            WatchEvent::Bookmark(b) => *version = b.metadata.resource_version,
            WatchEvent::Error(e) if e.code == 410 => return Ok(WatchEnd::Gone),
            WatchEvent::Error(e) => return Err(kube::Error::Api(e)),
        }
    }
    Ok(WatchEnd::Renew)
}

fn set_version(version: &mut String, pod: &Pod) {
    if let Some(v) = pod.metadata.resource_version.as_ref() {
        v.clone_into(version);
    }
}

#[cfg(test)]
mod tests;
