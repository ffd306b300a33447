//! A Kubernetes node for antilog's `cri` source, as `tests/tests/cri.rs` and the bench's
//! `cri-catchup` path set it up: logarithmd on SQLite, [`api`] (a **mock** Kubernetes API
//! server: none can run here), a pod log root written by [`kubelet`] exactly as the kubelet
//! and containerd write it, and a kubeconfig through which antilog reaches the mock as it
//! would a real API server.
//!
//! - [`Setup`]: all of it, and antilog's configuration for it.
//! - [`named_pod`]: a job Pod as the API server shows it (k8s-openapi types).

pub mod api;
pub mod kubelet;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStatus,
    Pod, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

use crate::{rand_u64, Agents, Daemon, Db};
use kubelet::PodLog;

/// The time of the first record the tests write.
pub const T0: i64 = 1_795_000_000_000_000_001;

/// A Pod as the tests name it: name, UID, and whether it is labelled as a flow run's job.
pub type PodId<'a> = (&'a str, &'a str, bool);

fn time(ns: i64) -> Result<Time> {
    Ok(Time(Timestamp::from_nanosecond(i128::from(ns))?))
}

/// The annotations of Pod `name`, as tools and people set them.
pub fn annotations(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "kubernetes.io/change-cause".to_string(),
            format!("deploy {name}"),
        ),
        (
            "logarithm.test/notes".to_string(),
            "two lines,\nquotes \" and \u{e9}".to_string(),
        ),
    ])
}

/// Pod `name` in namespace `ci` on node `test-node`, its one container `job` in run
/// `restart`: running, or terminated with `exit`; the previous run's end in `lastState`.
/// Labelled `logarithm.test=<label>` (antilog collects only those) and, with `flow`, as a
/// flow run's job.
pub fn named_pod(
    (name, uid, flow): PodId,
    label: &str,
    restart: i32,
    exit: Option<i32>,
    last_exit: Option<i32>,
) -> Result<Pod> {
    let mut labels = BTreeMap::from([
        ("logarithm.test".to_string(), label.to_string()),
        (protocol::LABEL_FLOW.to_string(), "build".to_string()),
        (protocol::LABEL_RUN.to_string(), "run-42".to_string()),
        (protocol::LABEL_STAGE.to_string(), "compile".to_string()),
        (protocol::LABEL_ACTION.to_string(), "make".to_string()),
        (protocol::LABEL_JOB.to_string(), "job".to_string()),
    ]);
    if !flow {
        labels.retain(|k, _| !k.starts_with("io.containerops."));
    }
    let started = time(1_795_000_000_000_000_000 + i64::from(restart))?;
    let terminated = |code: i32| -> Result<ContainerStateTerminated> {
        Ok(ContainerStateTerminated {
            exit_code: code,
            finished_at: Some(time(1_795_000_100_000_000_007)?),
            started_at: Some(started.clone()),
            reason: Some(if code == 0 { "Completed" } else { "Error" }.into()),
            ..Default::default()
        })
    };
    let state = match exit {
        Some(code) => ContainerState {
            terminated: Some(terminated(code)?),
            ..Default::default()
        },
        None => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(started.clone()),
            }),
            ..Default::default()
        },
    };
    let last_state = match last_exit {
        Some(code) => Some(ContainerState {
            terminated: Some(terminated(code)?),
            ..Default::default()
        }),
        None => None,
    };
    Ok(Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ci".into()),
            uid: Some(uid.into()),
            labels: Some(labels),
            annotations: Some(annotations(name)),
            creation_timestamp: Some(time(1_794_999_999_000_000_000)?),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some("test-node".into()),
            containers: vec![Container {
                name: "job".into(),
                image: Some("registry.local/builder:1".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some(
                if exit.is_some() {
                    "Succeeded"
                } else {
                    "Running"
                }
                .into(),
            ),
            container_statuses: Some(vec![ContainerStatus {
                name: "job".into(),
                image: "registry.local/builder:1".into(),
                image_id: String::new(),
                ready: exit.is_none(),
                restart_count: restart,
                state: Some(state),
                last_state,
                ..Default::default()
            }]),
            ..Default::default()
        }),
    })
}

/// A kubeconfig in `dir` for the API server at `server`, with a token.
fn kubeconfig(dir: &Path, server: &str) -> Result<PathBuf> {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: mock\n  cluster:\n    server: {server}\n\
             users:\n- name: antilog\n  user:\n    token: mock-token\ncontexts:\n- name: mock\n  \
             context:\n    cluster: mock\n    user: antilog\ncurrent-context: mock\n"
        ),
    )?;
    Ok(path)
}

/// logarithmd on SQLite, the mock API server, an empty pod log root and a kubeconfig
/// pointing at the mock.
pub struct Setup {
    _db: Db,
    pub daemon: Daemon,
    pub api: api::PodApi,
    /// The `logarithm.test` label of the Pods antilog collects.
    pub label: String,
    pub root: tempfile::TempDir,
    _config_dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
}

impl Setup {
    pub async fn start() -> Result<Setup> {
        let db = Db::sqlite()?;
        let daemon = Daemon::start(db.url()).await?;
        let api = api::PodApi::start().await?;
        let config_dir = tempfile::tempdir()?;
        let kubeconfig = kubeconfig(config_dir.path(), &api.url)?;
        Ok(Setup {
            _db: db,
            daemon,
            api,
            label: format!("cri-{}", rand_u64()),
            root: tempfile::tempdir()?,
            _config_dir: config_dir,
            kubeconfig,
        })
    }

    /// antilog's extra configuration: `source = "cri"`, the pod log root, the kubeconfig.
    pub fn agent_toml(&self) -> String {
        format!(
            "source = \"cri\"\npod_log_root = \"{}\"\nkubeconfig = \"{}\"\n",
            self.root.path().display(),
            self.kubeconfig.display()
        )
    }

    /// antilog on this node (see [`Setup::agent_toml`]), to kill and start again.
    pub fn agents(&self) -> Result<Agents> {
        Agents::start_with(&self.daemon.base, &self.label, &self.agent_toml())
    }

    /// The directory of Pod `pod` in namespace `ci`.
    pub fn pod_dir(&self, (name, uid, _): PodId) -> PathBuf {
        self.root.path().join(format!("ci_{name}_{uid}"))
    }

    /// Run 0 of the Pod's container `job`, its records from `ts`.
    pub fn job_log_from(&self, pod: PodId, ts: i64) -> Result<PodLog> {
        PodLog::open(&self.pod_dir(pod).join("job"), 0, ts, Vec::new())
    }

    /// Run 0 of the Pod's container `job`, from [`T0`].
    pub fn job_log(&self, pod: PodId) -> Result<PodLog> {
        self.job_log_from(pod, T0)
    }
}
