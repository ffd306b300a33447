//! The `cri` source: a Kubernetes node's container logs, read from the kubelet's pod log
//! root ([`crate::files::pod_logs`]) with the Pods of this node from the Kubernetes API
//! ([`crate::pods`]) for what the files do not say (labels, image, exit codes).
//!
//! - [`choose`]: which source `source = "auto"` stands for, and the Kubernetes client.
//! - [`run`]: discovery: watches the pod log root with inotify ([`watch`]), so a
//!   container directory is followed as soon as it is created, and scans the root every
//!   [`SCAN_INTERVAL`] (and soon after a Pod of this node changes) for what inotify
//!   cannot tell; one follower per container directory.
//! - [`watch`]: the inotify watches of the root, its Pod and container directories.
//! - [`follower`]: one container, run after run (`<restart>.log`), as pipeline items: the
//!   same meta, records, cuts and exits as the Docker follower sends (`follower/resume.rs`:
//!   where it resumes after a restart of antilog).
//!
//! Job identity: a job Pod of a flow run (one labelled [`protocol::LABEL_RUN`]) is the job
//! of its first container, and its container id is the Pod's name, the id the engine's
//! Kubernetes runner reports. Every other container is `<namespace>_<pod>_<container>`.
//! A container restart (`<n + 1>.log`) is a new run of the same job, as Docker's restart
//! policy is.

pub mod follower;
pub mod watch;

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::Client;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::checkpoint::{CheckpointStore, Entry};
use crate::config::{Config, Source};
use crate::error::{Error, ErrorKind};
use crate::files::pod_logs::{self, ContainerLogs};
use crate::filter::Filter;
use crate::metrics::Metrics;
use crate::pipeline::Item;
use crate::pods::Pods;

/// How often the pod log root is listed for new containers.
pub const SCAN_INTERVAL: Duration = Duration::from_secs(1);
/// Shortest time between two scans prompted by Pod changes.
const RESCAN_MIN: Duration = Duration::from_millis(200);
/// How long `auto` waits for the Kubernetes API to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The source chosen at start.
#[derive(Clone)]
pub enum Chosen {
    /// `cri`, with its Kubernetes client.
    Cri(Client),
    /// One of the Docker sources.
    Docker(Source),
}

impl std::fmt::Debug for Chosen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Chosen::Cri(_) => f.write_str("Cri"),
            Chosen::Docker(s) => write!(f, "{s:?}"),
        }
    }
}

/// The source to run: `cri` as configured (its client must build), or for `auto`, `cri`
/// when `pod_log_root` is a directory and the Kubernetes API lists this node's Pods;
/// otherwise the Docker source [`Config::effective_source`] picks.
pub async fn choose(config: &Config) -> Result<Chosen, Error> {
    match config.source {
        Source::Cri => return Ok(Chosen::Cri(client(config).await?)),
        Source::Auto if config.pod_log_root.is_dir() => {
            match tokio::time::timeout(PROBE_TIMEOUT, probe(config)).await {
                Ok(Ok(c)) => return Ok(Chosen::Cri(c)),
                Ok(Err(e)) => {
                    info!(error = %e, "pod log root found, but the Kubernetes API cannot be reached: not using cri")
                }
                Err(_) => info!(
                    "pod log root found, but the Kubernetes API did not answer: not using cri"
                ),
            }
        }
        _ => {}
    }
    Ok(Chosen::Docker(config.effective_source()))
}

/// A client that lists one Pod of this node.
async fn probe(config: &Config) -> Result<Client, Error> {
    let c = client(config).await?;
    let api: Api<Pod> = Api::all(c.clone());
    let params = ListParams::default()
        .fields(&format!("spec.nodeName={}", config.node_name))
        .limit(1);
    api.list(&params)
        .await
        .map_err(|e| kube_err("cannot list pods", e))?;
    Ok(c)
}

/// The Kubernetes client: `kubeconfig` when set, else as `kubectl` finds it, else the
/// in-cluster service account. kube's own retries are off: the Pod watcher retries on its
/// own schedule.
pub async fn client(config: &Config) -> Result<Client, Error> {
    let mut kc = match &config.kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| kube_err(format!("cannot read {}", path.display()), e))?;
            kube::Config::from_custom_kubeconfig(file, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| kube_err(format!("invalid kubeconfig {}", path.display()), e))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| kube_err("no Kubernetes configuration (kubeconfig or in-cluster)", e))?,
    };
    kc.default_retry = false;
    Client::try_from(kc).map_err(|e| kube_err("cannot build the Kubernetes client", e))
}

fn kube_err(
    message: impl Into<String>,
    e: impl std::error::Error + Send + Sync + 'static,
) -> Error {
    Error::with_source(ErrorKind::Kubernetes, message, e)
}

/// What every CRI follower shares.
#[derive(Debug)]
pub struct Shared {
    pub tx: mpsc::Sender<Item>,
    pub max_line_bytes: usize,
    pub filter: Filter,
    pub shutdown: CancellationToken,
    pub metrics: Arc<Metrics>,
    /// This node's Pods, kept current by [`crate::pods::watch_pods`].
    pub pods: Arc<Pods>,
    /// Checkpoint entries to resume from, taken by the follower of each container id.
    pub resume: Mutex<BTreeMap<String, Entry>>,
    /// Woken when a file is created in a container directory (see [`watch`]).
    pub files_changed: tokio::sync::Notify,
    /// The pipeline's room in records, for the runs of records sent into `tx`.
    pub room: crate::pipeline::send::Room,
}

impl Shared {
    /// The checkpoint entry of `id`, once.
    fn take_resume(&self, id: &str) -> Option<Entry> {
        self.resume
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id)
    }

    /// Whether a checkpoint entry waits under either container id `logs` can have (its
    /// Pod, not known yet, decides which).
    fn has_resume(&self, logs: &ContainerLogs) -> bool {
        let r = self.resume.lock().unwrap_or_else(|e| e.into_inner());
        r.contains_key(&logs.pod)
            || r.contains_key(&path_id(&logs.namespace, &logs.pod, &logs.container))
    }
}

/// What discovery keeps: the containers followed and the inotify watches.
struct Discovery {
    shared: Arc<Shared>,
    root: PathBuf,
    /// (Pod UID, container) of every directory with a follower, or ignored by the filter.
    known: HashSet<(String, String)>,
    watch: Option<watch::DirWatch>,
}

/// The followers' tasks, each ending with its container's key and why it ended.
type Followers = JoinSet<((String, String), follower::End)>;

impl Discovery {
    /// Starts a follower for each container not followed yet (watching its directories
    /// first, so nothing created after the listing goes unseen).
    fn follow_new(&mut self, tasks: &mut Followers, found: Vec<ContainerLogs>) {
        for c in found {
            if let Some(w) = self.watch.as_mut() {
                if let Some(pod_dir) = c.dir.parent().and_then(|d| d.file_name()) {
                    w.watch_pod(pod_dir);
                }
                w.watch_container(&c.dir);
            }
            let key = (c.uid.clone(), c.container.clone());
            if self.known.insert(key.clone()) {
                debug!(dir = %c.dir.display(), "new container log directory");
                let s = self.shared.clone();
                tasks.spawn(async move { (key, follower::follow(s, c).await) });
            }
        }
    }

    /// Looks at one Pod directory now (inotify said something was created in it).
    async fn scan_pod(&mut self, tasks: &mut Followers, name: &OsStr) {
        if name.to_str().and_then(pod_logs::parse_pod_dir).is_none() {
            return;
        }
        if let Some(w) = self.watch.as_mut() {
            // Watched before it is listed: what is created after the listing is an event.
            w.watch_pod(name);
        }
        let (root, owned) = (self.root.clone(), name.to_os_string());
        let scan = tokio::task::spawn_blocking(move || pod_logs::scan_pod(&root, &owned)).await;
        if let Some(w) = self.watch.as_mut() {
            // Container directories listed: watch them before their followers list them.
            for c in scan.iter().flatten().flatten() {
                w.watch_container(&c.dir);
            }
        }
        match scan {
            Ok(Ok(found)) => self.follow_new(tasks, found),
            Ok(Err(e)) => debug!(pod = ?name, error = %e, "cannot list the pod directory"),
            Err(_) => {}
        }
    }

    /// The next inotify change (never, without a watch).
    async fn change(&mut self) -> Option<watch::Change> {
        match self.watch.as_mut() {
            Some(w) => w.next().await,
            None => std::future::pending().await,
        }
    }
}

/// Follows every container under `root` until shutdown; the Pod watcher runs meanwhile.
/// Returns once every follower has stopped.
pub async fn run(
    shared: Arc<Shared>,
    store: Arc<CheckpointStore>,
    root: PathBuf,
    client: Client,
    node: String,
) {
    info!(root = %root.display(), %node, "cri source: following the pod log root");
    let watcher = tokio::spawn(crate::pods::watch_pods(
        client,
        node,
        shared.pods.clone(),
        shared.shutdown.clone(),
    ));
    let mut d = Discovery {
        shared: shared.clone(),
        root: root.clone(),
        known: HashSet::new(),
        watch: None,
    };
    let mut tasks = Followers::new();
    let mut warned = false;
    let mut pruned = false;
    loop {
        if d.watch.is_none() {
            // Before the scan, so what is created after it is an event. (The root may
            // appear later: tried again at every scan.)
            match watch::DirWatch::new(&root) {
                Ok(w) => d.watch = Some(w),
                Err(e) => debug!(error = %e, "cannot watch the pod log root with inotify"),
            }
        }
        let scan = {
            let root = root.clone();
            tokio::task::spawn_blocking(move || pod_logs::scan(&root)).await
        };
        match scan {
            Ok(Ok(found)) => {
                warned = false;
                // Directories gone (Pods deleted) are forgotten, so `known` stays bounded;
                // not after a truncated scan, which does not show every directory.
                let complete = found.len() < pod_logs::MAX_CONTAINERS;
                if complete && !pruned {
                    // Checkpoint entries of containers whose directories went away while
                    // antilog was down are dropped (each directory keeps both ids it can
                    // have, as its Pod is not known yet).
                    pruned = true;
                    let ids: HashSet<String> = found
                        .iter()
                        .flat_map(|c| [c.pod.clone(), path_id(&c.namespace, &c.pod, &c.container)])
                        .collect();
                    // Those whose last run's exit was never delivered get their jobs
                    // closed (exit code unknown); their entries stay until that is acked.
                    let gone = {
                        let resume = shared.resume.lock().unwrap_or_else(|e| e.into_inner());
                        crate::gone::retain_existing(&store, &resume, &ids)
                    };
                    crate::gone::close(
                        gone,
                        "the container's log directory",
                        &shared.tx,
                        &shared.shutdown,
                        &shared.metrics,
                    )
                    .await;
                }
                let present: HashSet<(String, String)> = found
                    .iter()
                    .map(|c| (c.uid.clone(), c.container.clone()))
                    .collect();
                if complete {
                    d.known.retain(|k| present.contains(k));
                }
                d.follow_new(&mut tasks, found);
            }
            Ok(Err(e)) if !warned => {
                warned = true;
                warn!(root = %root.display(), error = %e, "cannot list the pod log root; trying again");
            }
            _ => {}
        }
        let scanned = tokio::time::Instant::now();
        let deadline = tokio::time::sleep(SCAN_INTERVAL);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                // A Pod changed (a new one on this node, a container started): look now,
                // not up to a whole interval later, but at most every [`RESCAN_MIN`].
                _ = shared.pods.changed.notified() => {
                    let at = (scanned + RESCAN_MIN).min(deadline.deadline());
                    deadline.as_mut().reset(at);
                }
                _ = shared.shutdown.cancelled() => {
                    while tasks.join_next().await.is_some() {}
                    let _ = watcher.await;
                    return;
                }
                Some(done) = tasks.join_next() => {
                    if let Ok((key, follower::End::Gone)) = done {
                        d.known.remove(&key);
                    }
                }
                change = d.change() => match change {
                    Some(watch::Change::Pod(name)) => d.scan_pod(&mut tasks, &name).await,
                    Some(watch::Change::Files) => shared.files_changed.notify_waiters(),
                    Some(watch::Change::Rescan) => break,
                    None => {
                        // The descriptor failed: scan only (a new watch at the next scan).
                        d.watch = None;
                    }
                },
                _ = &mut deadline => break,
            }
        }
    }
}

/// The job's container id of `container` in `pod` (see the module's doc).
pub fn container_id(pod: &crate::pods::PodMeta, container: &str) -> String {
    if pod.labels.contains_key(protocol::LABEL_RUN)
        && pod.main_container.as_deref() == Some(container)
    {
        pod.name.clone()
    } else {
        path_id(&pod.namespace, &pod.name, container)
    }
}

/// Longest container id logarithmd accepts.
const MAX_ID: usize = 128;

/// The container id of a container that is not a job Pod's: `<namespace>_<pod>_<container>`
/// (as the kubelet names Pod directories: none of the three holds `_`, and logarithmd
/// accepts `[A-Za-z0-9_.:-]`). Past 128 bytes (Pod names reach 253), it is cut and ends
/// with `.` and an FNV-1a hash of the whole, so it stays unique.
fn path_id(namespace: &str, pod: &str, container: &str) -> String {
    let id = format!("{namespace}_{pod}_{container}");
    if id.len() <= MAX_ID {
        return id;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let suffix = format!(".{h:016x}");
    // Kubernetes names are ASCII: any byte is a char boundary.
    format!("{}{suffix}", &id[..MAX_ID - suffix.len()])
}

/// The metadata shipped for run `restart` of `container`.
pub fn meta_of(
    pod: &crate::pods::PodMeta,
    container: &str,
    id: &str,
    restart: u32,
    first_ts: i64,
) -> protocol::ContainerMeta {
    let c = pod.containers.iter().find(|c| c.name == container);
    // The API knows the start of the current run only.
    let started_at = c
        .filter(|c| u32::try_from(c.restart_count).ok() == Some(restart) && c.started_at > 0)
        .map_or(first_ts, |c| c.started_at);
    // The Pod's labels, and where the container lives under the names the kubelet gives
    // Docker containers (`io.kubernetes.*`), so jobs can be found by Pod.
    let mut labels: BTreeMap<String, String> = pod.labels.clone();
    for (k, v) in [
        ("io.kubernetes.pod.namespace", &pod.namespace),
        ("io.kubernetes.pod.name", &pod.name),
        ("io.kubernetes.pod.uid", &pod.uid),
    ] {
        labels.entry(k.to_string()).or_insert_with(|| v.clone());
    }
    labels
        .entry("io.kubernetes.container.name".to_string())
        .or_insert_with(|| container.to_string());
    protocol::ContainerMeta {
        name: id.to_string(),
        image: c.map(|c| c.image.clone()).unwrap_or_default(),
        labels,
        annotations: pod.annotations.clone(),
        created_at: pod.created_at,
        started_at: if started_at > 0 {
            started_at
        } else {
            pod.created_at
        },
        restart_count: restart,
        tty: false,
        log_driver: "cri".to_string(),
    }
}

#[cfg(test)]
mod tests;
