//! Jobs as containers on a Docker engine (API 1.41+, negotiated).
//!
//! The container gets the job's name, environment and `io.containerops.*` labels, and its
//! `resources` as `NanoCpus` and `Memory` limits. It is never started with `--rm`: the
//! engine removes it only once logarithmd has stored its last line. antilog, which follows
//! every container on the node, ships its logs like any other container's.

use std::collections::HashMap;
use std::time::Duration;

use bollard::errors::Error as DockerError;
use bollard::models::ContainerCreateBody;
use bollard::models::{ContainerStateStatusEnum, ContainerSummaryStateEnum, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, InspectContainerOptions, ListContainersOptions,
    RemoveContainerOptions, StartContainerOptions, StopContainerOptions,
};
use bollard::Docker;
use futures::StreamExt;

use super::{ContainerState, Found, JobRunner, JobSpec};
use crate::error::{Error, ErrorKind, Result};

/// The Docker runner.
#[derive(Debug, Clone)]
pub struct DockerRunner {
    docker: Docker,
}

fn status_of(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// Maps a Docker failure to a kind: an answer from the engine about the request is
/// permanent (`Invalid`), anything on the way to it is transient (`Unavailable`).
fn docker_error(what: impl Into<String>, e: DockerError) -> Error {
    let kind = match status_of(&e) {
        Some(404) => ErrorKind::NotFound,
        Some(400 | 409) => ErrorKind::Invalid,
        Some(_) => ErrorKind::Internal,
        None => ErrorKind::Unavailable,
    };
    Error::with_source(kind, what, e)
}

impl DockerRunner {
    /// Connects to the local engine (`DOCKER_HOST` or the default socket) and negotiates the
    /// API version.
    pub async fn connect() -> Result<DockerRunner> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| docker_error("cannot connect to the Docker engine", e))?;
        DockerRunner::with_client(docker).await
    }

    /// Uses the given client, negotiating the API version.
    pub async fn with_client(docker: Docker) -> Result<DockerRunner> {
        let docker = docker.negotiate_version().await.map_err(|e| {
            Error::with_source(
                ErrorKind::Unavailable,
                "the Docker engine is unreachable (version negotiation failed)",
                e,
            )
        })?;
        Ok(DockerRunner { docker })
    }

    pub fn client(&self) -> &Docker {
        &self.docker
    }

    fn config(spec: &JobSpec) -> ContainerCreateBody {
        ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: (!spec.command.is_empty()).then(|| spec.command.clone()),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(spec.labels.clone().into_iter().collect::<HashMap<_, _>>()),
            tty: Some(false),
            attach_stdout: Some(false),
            attach_stderr: Some(false),
            host_config: Some(HostConfig {
                nano_cpus: spec.cpu.map(|c| c.nano_cpus()),
                memory: spec.memory.map(|m| m.bytes()),
                // Swap equal to memory: the limit is the limit.
                memory_swap: spec.memory.map(|m| m.bytes()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    async fn create(&self, spec: &JobSpec) -> Result<String, DockerError> {
        let opts = CreateContainerOptions {
            name: Some(spec.name.clone()),
            ..Default::default()
        };
        self.docker
            .create_container(Some(opts), Self::config(spec))
            .await
            .map(|r| r.id)
    }

    /// Pulls the image (the engine answered that it has no such image).
    async fn pull(&self, image: &str) -> Result<()> {
        let opts = CreateImageOptions {
            from_image: Some(image.to_owned()),
            ..Default::default()
        };
        let mut stream = self.docker.create_image(Some(opts), None, None);
        while let Some(item) = stream.next().await {
            item.map_err(|e| docker_error(format!("cannot pull image {image}"), e))?;
        }
        Ok(())
    }

    /// The existing container with this job's name, if it is this job's (same run and job
    /// labels): a start repeated after a restart or a takeover. With it, whether it was
    /// ever started: one that ran and exited must not be started a second time.
    async fn existing(&self, spec: &JobSpec) -> Result<Option<(String, bool)>> {
        let info = match self
            .docker
            .inspect_container(&spec.name, None::<InspectContainerOptions>)
            .await
        {
            Ok(i) => i,
            Err(e) if status_of(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(docker_error("cannot inspect container", e)),
        };
        let labels = info.config.and_then(|c| c.labels).unwrap_or_default();
        let ours = spec.is_same_job(|k| labels.get(k).map(String::as_str));
        if !ours {
            return Err(Error::conflict(format!(
                "a container named {} exists and belongs to another job",
                spec.name
            )));
        }
        let started = info
            .state
            .and_then(|st| st.status)
            .is_some_and(|st| st != ContainerStateStatusEnum::CREATED);
        Ok(info.id.map(|id| (id, started)))
    }
}

impl DockerRunner {
    /// The name is taken: a repeated start, or another engine (a replica that took the run
    /// over, or the one it was taken from) creating the same job at this moment. Docker
    /// reserves the name before the container can be inspected, so the container is looked
    /// for a few times before the start fails.
    async fn created_elsewhere(
        &self,
        spec: &JobSpec,
        conflict: DockerError,
    ) -> Result<(String, bool)> {
        for attempt in 0..20 {
            if let Some(found) = self.existing(spec).await? {
                return Ok(found);
            }
            if attempt % 5 == 4 {
                // Gone meanwhile (removed): the name may be free again.
                match self.create(spec).await {
                    Ok(id) => return Ok((id, false)),
                    Err(e) if status_of(&e) == Some(409) => {}
                    Err(e) => return Err(docker_error("cannot create container", e)),
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(docker_error("cannot create container", conflict))
    }
}

#[async_trait::async_trait]
impl JobRunner for DockerRunner {
    fn kind(&self) -> &'static str {
        "docker"
    }

    #[tracing::instrument(skip(self, spec), fields(container = %spec.name, image = %spec.image))]
    async fn start(&self, spec: &JobSpec) -> Result<String> {
        if spec.kind != crate::flow::JobKind::Component {
            return Err(spec.refuse_service("docker"));
        }
        let id = match self.create(spec).await {
            Ok(id) => id,
            Err(e) if status_of(&e) == Some(409) => match self.created_elsewhere(spec, e).await? {
                (id, true) => {
                    tracing::info!(container_id = %id, "container exists and was started: a repeated start");
                    return Ok(id);
                }
                (id, false) => id,
            },
            Err(e) if status_of(&e) == Some(404) => {
                tracing::info!("image missing: pulling it");
                self.pull(&spec.image).await?;
                self.create(spec)
                    .await
                    .map_err(|e| docker_error("cannot create container", e))?
            }
            Err(e) => return Err(docker_error("cannot create container", e)),
        };
        match self
            .docker
            .start_container(&id, None::<StartContainerOptions>)
            .await
        {
            // 304: it already runs (a repeated start).
            Ok(()) => {}
            Err(e) if status_of(&e) == Some(304) => {}
            Err(e) => return Err(docker_error(format!("cannot start container {id}"), e)),
        }
        Ok(id)
    }

    async fn stop(&self, container_id: &str, grace: Duration) -> Result<()> {
        let t = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        let opts = StopContainerOptions {
            t: Some(t),
            signal: None,
        };
        match self.docker.stop_container(container_id, Some(opts)).await {
            Ok(()) => Ok(()),
            // Already stopped, or gone.
            Err(e) if matches!(status_of(&e), Some(304 | 404)) => Ok(()),
            Err(e) => Err(docker_error(
                format!("cannot stop container {container_id}"),
                e,
            )),
        }
    }

    async fn remove(&self, container_id: &str) -> Result<()> {
        let opts = RemoveContainerOptions {
            v: true,
            force: true,
            link: false,
        };
        match self.docker.remove_container(container_id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(docker_error(
                format!("cannot remove container {container_id}"),
                e,
            )),
        }
    }

    async fn state(&self, container_id: &str) -> Result<ContainerState> {
        match self
            .docker
            .inspect_container(container_id, None::<InspectContainerOptions>)
            .await
        {
            Ok(info) => {
                let s = info.state.unwrap_or_default();
                let running = s.running.unwrap_or(false)
                    || s.restarting.unwrap_or(false)
                    || s.status == Some(bollard::models::ContainerStateStatusEnum::CREATED);
                Ok(if running {
                    ContainerState::Running
                } else {
                    ContainerState::Exited
                })
            }
            Err(e) if status_of(&e) == Some(404) => Ok(ContainerState::Gone),
            Err(e) => Err(docker_error(
                format!("cannot inspect container {container_id}"),
                e,
            )),
        }
    }

    async fn find_run(&self, run: &str) -> Result<Vec<Found>> {
        let filter = format!("{}={run}", protocol::LABEL_RUN);
        let opts = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".to_owned(), vec![filter])])),
            ..Default::default()
        };
        let list = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| docker_error("cannot list containers", e))?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let running = matches!(
                    c.state,
                    Some(
                        ContainerSummaryStateEnum::RUNNING
                            | ContainerSummaryStateEnum::CREATED
                            | ContainerSummaryStateEnum::RESTARTING
                    )
                );
                Some(Found {
                    container_id: c.id?,
                    labels: c.labels.unwrap_or_default().into_iter().collect(),
                    state: if running {
                        ContainerState::Running
                    } else {
                        ContainerState::Exited
                    },
                })
            })
            .collect())
    }
}
