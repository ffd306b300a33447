//! Where jobs run: one trait, one implementation per container platform.
//!
//! - [`docker`]: containers on the local Docker engine (what this repository tests).
//! - `kubernetes`: a Pod per job through the Kubernetes API server (`kube`); tested
//!   against an in-process mock of the API server, not a real cluster. Only with the
//!   `kubernetes` feature (on by default), so a Docker-only build compiles no `kube`.

pub mod docker;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::flow::{Cpu, JobKind, Memory};

/// Everything a runner needs to start one job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Flow name (`io.containerops.flow`).
    pub flow: String,
    /// Run id (`io.containerops.run`).
    pub run: String,
    pub stage: String,
    pub action: String,
    pub job: String,
    /// Container name, unique per run and job, so a start repeated after a crash finds the
    /// container instead of making a second one.
    pub name: String,
    /// What runs it: a container, or a call of an HTTP service (which the embedder's
    /// runner makes; the container runners refuse it).
    #[serde(default)]
    pub kind: JobKind,
    /// The image (the job's `endpoint`); for a service job, the URL it calls.
    pub image: String,
    /// Replaces the image's `CMD` when not empty.
    #[serde(default)]
    pub command: Vec<String>,
    /// Environment: flow, job, subscriptions and CO_DATA, already merged.
    pub env: BTreeMap<String, String>,
    /// The `io.containerops.*` labels.
    pub labels: BTreeMap<String, String>,
    pub cpu: Option<Cpu>,
    pub memory: Option<Memory>,
    /// The job's own `timeout` (a service job's callback token expires with it).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// The subscribed outputs, by their source (`stage.action.job[KEY]`) (also in `env`
    /// under their variable names; a service job's request lists them apart).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub subscribed: BTreeMap<String, String>,
    /// Service jobs: the name of the secret that signs the request (`default` if unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Variables whose values come from the embedder's secrets (flow and job `secrets:`,
    /// merged). The runners do not read them: the embedder's runner puts the values into
    /// `env` just before the container starts, so they are never in a stored run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<crate::flow::SecretRef>,
}

impl JobSpec {
    /// The error a container runner gives a service job.
    pub fn refuse_service(&self, runner: &str) -> crate::error::Error {
        crate::error::Error::new(
            crate::error::ErrorKind::Invalid,
            format!(
                "job {} is a service job: the {runner} runner runs containers only",
                self.name
            ),
        )
    }

    /// Whether a container (or Pod) with these labels is this job's: the same
    /// `io.containerops.*` labels. Other labels (logarithmd's `extra_labels`) may differ:
    /// the replica that repeats a start after a takeover or a restart may add others.
    pub fn is_same_job<'a>(&self, label: impl Fn(&str) -> Option<&'a str>) -> bool {
        self.labels
            .iter()
            .filter(|(k, _)| k.starts_with("io.containerops."))
            .all(|(k, v)| label(k) == Some(v.as_str()))
    }
}

/// What a runner knows of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    /// Created or running.
    Running,
    /// Stopped (it may still have lines logarithmd has not stored).
    Exited,
    /// No such container.
    Gone,
}

/// A container found by its run label (for re-attaching after a restart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub container_id: String,
    pub labels: BTreeMap<String, String>,
    pub state: ContainerState,
}

/// Starts, stops and removes job containers. Implementations are idempotent where the
/// engine may repeat a call after a restart: `start` of a job whose container exists returns
/// that container; `stop` and `remove` of a container that is gone succeed.
#[async_trait::async_trait]
pub trait JobRunner: Send + Sync + 'static {
    /// Which platform (`docker`, `kubernetes`), for logs.
    fn kind(&self) -> &'static str;

    /// Creates and starts the job's container, returning its id.
    async fn start(&self, spec: &JobSpec) -> Result<String>;

    /// Stops the container: SIGTERM, then SIGKILL after `grace`.
    async fn stop(&self, container_id: &str, grace: Duration) -> Result<()>;

    /// Removes the (stopped) container.
    async fn remove(&self, container_id: &str) -> Result<()>;

    /// Whether the container still runs.
    async fn state(&self, container_id: &str) -> Result<ContainerState>;

    /// Every container of a run, by its `io.containerops.run` label.
    async fn find_run(&self, run: &str) -> Result<Vec<Found>>;
}
