//! Everything that talks to the Docker engine.
//!
//! - [`connect`]: client setup (API version negotiated down to the engine's).
//! - [`discovery`]: lists containers, follows the event stream, runs one follower each.
//! - [`follower`]: reads one container's log, run after run, into pipeline items.
//! - [`frames`]: pure parsing of Docker's log stream into lines (partials, TTY).
//! - [`inspect`]: container inspection into [`protocol::ContainerMeta`] and run state.
//! - [`logs`]: the log reader (hyper; nanosecond `since`, raw TTY bytes, multiplexed
//!   frames).
//! - [`timestamp`]: Docker's RFC3339Nano timestamps.

pub mod discovery;
pub mod follower;
pub mod frames;
pub mod inspect;
pub mod logs;
pub mod timestamp;

use bollard::errors::Error as DockerError;
use bollard::{Docker, API_DEFAULT_VERSION};

use crate::error::{Error, ErrorKind};

/// Timeout (s) for Docker requests until their response starts; streams are not bound by it.
const DOCKER_TIMEOUT_SECS: u64 = 120;

/// Connects to `host` (or the local default) and negotiates the API version: bollard
/// defaults to a newer API than older engines accept.
pub async fn connect(host: Option<&str>) -> Result<Docker, Error> {
    let docker = match host {
        None => Docker::connect_with_local_defaults(),
        Some(h) if h.starts_with("unix://") || h.starts_with('/') => {
            Docker::connect_with_unix(h, DOCKER_TIMEOUT_SECS, API_DEFAULT_VERSION)
        }
        Some(h) if h.starts_with("tcp://") || h.starts_with("http://") => {
            Docker::connect_with_http(h, DOCKER_TIMEOUT_SECS, API_DEFAULT_VERSION)
        }
        Some(h) => {
            return Err(Error::new(
                ErrorKind::Config,
                format!("docker_host {h:?}: expected unix://, tcp:// or http://"),
            ))
        }
    }
    .map_err(|e| Error::with_source(ErrorKind::Docker, "cannot set up the Docker client", e))?;
    docker.negotiate_version().await.map_err(|e| {
        Error::with_source(
            ErrorKind::Docker,
            "the Docker engine is unreachable (version negotiation failed)",
            e,
        )
    })
}

/// How a Docker call failed, decided where it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The container does not exist (any more).
    NotFound,
    /// Retrying later may work (connection trouble, daemon restarting, 5xx).
    Transient(String),
    /// Retrying will not help (501 "logging driver does not support reading", 4xx).
    Permanent(String),
}

pub fn classify(e: &DockerError) -> Failure {
    match e {
        DockerError::DockerResponseServerError {
            status_code,
            message,
        } => match status_code {
            404 => Failure::NotFound,
            408 | 429 => Failure::Transient(format!("HTTP {status_code}: {message}")),
            500..=599 if *status_code != 501 => {
                Failure::Transient(format!("HTTP {status_code}: {message}"))
            }
            _ => Failure::Permanent(format!("HTTP {status_code}: {message}")),
        },
        DockerError::RequestTimeoutError
        | DockerError::HyperResponseError { .. }
        | DockerError::IOError { .. }
        | DockerError::DockerStreamError { .. }
        | DockerError::JsonDataError { .. }
        | DockerError::JsonSerdeError { .. }
        | DockerError::HyperLegacyError { .. } => Failure::Transient(e.to_string()),
        other => Failure::Permanent(other.to_string()),
    }
}

/// First 12 characters of an id, as `docker ps` shows it.
pub fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}
