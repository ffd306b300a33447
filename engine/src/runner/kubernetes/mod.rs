//! Jobs as Kubernetes Pods, through the API server (`kube`).
//!
//! - [`pod`]: the translation of a [`JobSpec`] into its Pod (one Pod per job, the same
//!   `io.containerops.*` labels, env and resources as on Docker, `restartPolicy: Never`).
//! - [`KubernetesRunner`]: the [`JobRunner`] that creates, deletes, reads and lists those
//!   Pods in one namespace. The container id the engine keeps is the Pod's name.
//!
//! A Pod cannot be stopped and kept the way a Docker container can: `stop` deletes it with
//! the grace period (the kubelet sends SIGTERM, then SIGKILL), and `remove` deletes what is
//! left. Both treat a Pod that is already gone as done.

pub mod pod;

pub use pod::{pod_for, pod_name, PodOptions};

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::{Client, Config};

use super::{ContainerState, Found, JobRunner, JobSpec};
use crate::error::{Error, ErrorKind, Result};

/// Every Kubernetes API call the runner makes, as RBAC names it: `(resource, verb)` on the
/// core API group, in the runner's namespace. deploy/kubernetes/base/rbac.yaml grants
/// these (and `watch`) to logarithmd; engine/tests/kubernetes_runner.rs checks that the
/// runner sends nothing else and that the Role covers every one.
pub const API_CALLS: &[(&str, &str)] = &[
    ("pods", "create"),
    ("pods", "get"),
    ("pods", "list"),
    ("pods", "delete"),
];

/// The Kubernetes runner: Pods in one namespace.
#[derive(Clone)]
pub struct KubernetesRunner {
    pods: Api<Pod>,
    namespace: String,
    options: PodOptions,
}

impl std::fmt::Debug for KubernetesRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesRunner")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

fn status_of(e: &kube::Error) -> Option<u16> {
    match e {
        kube::Error::Api(r) => Some(r.code),
        _ => None,
    }
}

/// Whether a timeout is somewhere in the error's chain (the client's connect or read
/// timeout surfaces as an `io::Error` of kind `TimedOut`).
fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Maps a `kube` failure to a kind. The API server's answer decides: a request it rejects
/// (400, 422) is `Invalid`, a name taken (409) is `Conflict`, an overloaded or failing
/// server (429, 500, 502, 503) is `Unavailable` and a timeout (408, 504) is `Timeout`, both
/// retried; refused credentials or RBAC (401, 403) stay `Internal`: retrying will not help
/// until someone fixes the configuration. No answer at all (connection refused, reset,
/// timed out) is transient.
fn kube_error(what: impl Into<String>, e: kube::Error) -> Error {
    let kind = match (&e, status_of(&e)) {
        (_, Some(404)) => ErrorKind::NotFound,
        (_, Some(409)) => ErrorKind::Conflict,
        (_, Some(400 | 422)) => ErrorKind::Invalid,
        (_, Some(408 | 504)) => ErrorKind::Timeout,
        (_, Some(429 | 500 | 502 | 503)) => ErrorKind::Unavailable,
        (_, Some(_)) => ErrorKind::Internal,
        (kube::Error::HyperError(_) | kube::Error::Service(_), None) => {
            if timed_out(&e) {
                ErrorKind::Timeout
            } else {
                ErrorKind::Unavailable
            }
        }
        (_, None) => ErrorKind::Internal,
    };
    Error::with_source(kind, what, e)
}

/// What the engine needs to know of a Pod: whether its job container may still run.
///
/// `Succeeded` and `Failed` are final (with `restartPolicy: Never` the container ran once);
/// a terminated job container counts as exited even before the phase catches up. `Pending`
/// (scheduling, pulling the image), `Running` and `Unknown` (the node stopped reporting; the
/// container may well still run) count as running: the engine's timeouts end a job that never
/// gets further.
pub fn pod_state(pod: &Pod) -> ContainerState {
    let Some(status) = &pod.status else {
        return ContainerState::Running;
    };
    let terminated = status
        .container_statuses
        .iter()
        .flatten()
        .any(|c| c.state.as_ref().is_some_and(|s| s.terminated.is_some()));
    match status.phase.as_deref() {
        Some("Succeeded" | "Failed") => ContainerState::Exited,
        _ if terminated => ContainerState::Exited,
        _ => ContainerState::Running,
    }
}

/// The client's configuration without kube's own retries (up to 15, of 429/503/504, for
/// up to 1000 s each): a failed call is reported at once, and the engine's start retries
/// (`[engine]` configuration) decide what happens next, on their own schedule.
pub fn without_client_retries(mut config: Config) -> Config {
    config.default_retry = false;
    config
}

impl KubernetesRunner {
    /// Uses the given client; Pods go to `namespace`.
    pub fn new(client: Client, namespace: impl Into<String>) -> KubernetesRunner {
        let namespace = namespace.into();
        KubernetesRunner {
            pods: Api::namespaced(client, &namespace),
            namespace,
            options: PodOptions::default(),
        }
    }

    /// Every job Pod gets these options.
    pub fn with_options(mut self, options: PodOptions) -> KubernetesRunner {
        self.options = options;
        self
    }

    /// Connects as `kubectl` would (`KUBECONFIG` or `~/.kube/config`, else the in-cluster
    /// service account). Pods go to `namespace`, or to the configuration's default one.
    pub async fn infer(namespace: Option<&str>) -> Result<KubernetesRunner> {
        let config = Config::infer().await.map_err(|e| {
            Error::with_source(
                ErrorKind::Unavailable,
                "no Kubernetes configuration (kubeconfig or in-cluster)",
                e,
            )
        })?;
        let namespace = namespace
            .map(str::to_owned)
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(without_client_retries(config))
            .map_err(|e| kube_error("cannot build the Kubernetes client", e))?;
        Ok(KubernetesRunner::new(client, namespace))
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn pods(&self) -> &Api<Pod> {
        &self.pods
    }

    /// The existing Pod with this job's name, if it is this job's (same labels): a start
    /// repeated after a restart.
    async fn existing(&self, spec: &JobSpec, name: &str) -> Result<Option<String>> {
        let pod = match self.pods.get(name).await {
            Ok(p) => p,
            Err(e) if status_of(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(kube_error(format!("cannot read pod {name}"), e)),
        };
        let labels = pod.metadata.labels.unwrap_or_default();
        let ours = spec.is_same_job(|k| labels.get(k).map(String::as_str));
        if !ours {
            return Err(Error::conflict(format!(
                "a pod named {name} exists in namespace {} and belongs to another job",
                self.namespace
            )));
        }
        Ok(Some(pod.metadata.name.unwrap_or_else(|| name.to_owned())))
    }

    async fn delete(&self, name: &str, params: &DeleteParams, what: &str) -> Result<()> {
        match self.pods.delete(name, params).await {
            Ok(_) => Ok(()),
            // Already gone.
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(kube_error(format!("cannot {what} pod {name}"), e)),
        }
    }
}

#[async_trait::async_trait]
impl JobRunner for KubernetesRunner {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    #[tracing::instrument(skip(self, spec), fields(pod = %spec.name, image = %spec.image, namespace = %self.namespace))]
    async fn start(&self, spec: &JobSpec) -> Result<String> {
        if spec.kind != crate::flow::JobKind::Component {
            return Err(spec.refuse_service("kubernetes"));
        }
        let mut pod = pod_for(spec, &self.namespace);
        self.options.apply(&mut pod);
        let name = pod_name(spec);
        match self.pods.create(&PostParams::default(), &pod).await {
            Ok(created) => Ok(created.metadata.name.unwrap_or(name)),
            Err(e) if status_of(&e) == Some(409) => match self.existing(spec, &name).await? {
                Some(existing) => {
                    tracing::info!("pod exists: a repeated start");
                    Ok(existing)
                }
                // Deleted between our create and our read: the next start creates it.
                None => Err(kube_error(format!("cannot create pod {name}"), e)),
            },
            Err(e) => Err(kube_error(format!("cannot create pod {name}"), e)),
        }
    }

    async fn stop(&self, container_id: &str, grace: Duration) -> Result<()> {
        // At least 1s: a grace period of 0 makes the API server forget the Pod at once while
        // its container may still run on the node.
        let secs = u32::try_from(grace.as_secs()).unwrap_or(u32::MAX).max(1);
        self.delete(
            container_id,
            &DeleteParams::default().grace_period(secs),
            "stop",
        )
        .await
    }

    async fn remove(&self, container_id: &str) -> Result<()> {
        self.delete(container_id, &DeleteParams::default(), "remove")
            .await
    }

    async fn state(&self, container_id: &str) -> Result<ContainerState> {
        match self.pods.get(container_id).await {
            Ok(pod) => Ok(pod_state(&pod)),
            Err(e) if status_of(&e) == Some(404) => Ok(ContainerState::Gone),
            Err(e) => Err(kube_error(format!("cannot read pod {container_id}"), e)),
        }
    }

    async fn find_run(&self, run: &str) -> Result<Vec<Found>> {
        let selector = format!("{}={run}", protocol::LABEL_RUN);
        let list = self
            .pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| kube_error("cannot list pods", e))?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|pod| {
                let state = pod_state(&pod);
                Some(Found {
                    container_id: pod.metadata.name?,
                    labels: pod.metadata.labels.unwrap_or_default(),
                    state,
                })
            })
            .collect())
    }
}
