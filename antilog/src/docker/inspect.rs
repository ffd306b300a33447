//! Container inspection: the metadata we ship and the run state the follower decides on.

use bollard::models::ContainerInspectResponse;
use bollard::query_parameters::InspectContainerOptions;
use bollard::Docker;
use protocol::ContainerMeta;

use super::frames::parse_timestamp;
use super::{classify, Failure};

/// What the follower needs to know about a container right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    pub meta: ContainerMeta,
    /// Docker's `State.StartedAt` verbatim: identifies the current (or last) run.
    pub run_key: String,
    /// Has been started at least once.
    pub has_run: bool,
    /// The current run is still going (running or paused; not between restarts).
    pub running: bool,
    /// Exit code of the last run that ended (`None` if Docker did not say).
    pub exit_code: Option<i64>,
    /// When the last run ended, ns since the epoch (0 if unknown).
    pub finished_at: i64,
    /// Waiting to be restarted by its restart policy.
    pub restarting: bool,
    /// Where the log driver writes (`json-file`: the file's path on the host), if anywhere.
    pub log_path: String,
    /// Docker removes it as soon as it exits (`docker run --rm`); it never restarts.
    pub auto_remove: bool,
}

/// Docker's zero time (`0001-01-01T00:00:00Z`) and anything unparsable become 0.
fn time_ns(s: Option<&str>) -> i64 {
    s.and_then(|s| parse_timestamp(s.as_bytes()))
        .filter(|ns| *ns > 0)
        .unwrap_or(0)
}

pub fn from_response(r: ContainerInspectResponse) -> Inspected {
    let state = r.state.unwrap_or_default();
    let log_path = r.log_path.unwrap_or_default();
    let config = r.config.unwrap_or_default();
    let host = r.host_config.unwrap_or_default();
    let auto_remove = host.auto_remove.unwrap_or(false);
    let log_driver = host.log_config.and_then(|l| l.typ).unwrap_or_default();
    let started_at = time_ns(state.started_at.as_deref());
    let restarting = state.restarting.unwrap_or(false);
    let meta = ContainerMeta {
        name: r
            .name
            .as_deref()
            .map(|n| n.strip_prefix('/').unwrap_or(n).to_string())
            .unwrap_or_default(),
        image: config.image.unwrap_or_default(),
        labels: config.labels.unwrap_or_default().into_iter().collect(),
        annotations: Default::default(),
        created_at: time_ns(r.created.as_deref()),
        started_at,
        // Docker counts the restart when the run dies, before the delay; until the new run
        // starts, the run StartedAt describes is the previous one.
        restart_count: r
            .restart_count
            .and_then(|c| u32::try_from(c).ok())
            .unwrap_or(0)
            .saturating_sub(u32::from(restarting)),
        tty: config.tty.unwrap_or(false),
        log_driver,
    };
    Inspected {
        meta,
        run_key: state.started_at.unwrap_or_default(),
        has_run: started_at > 0,
        // Between restarts Docker reports Running=true with Restarting=true: the run is over.
        running: state.running.unwrap_or(false) && !restarting,
        exit_code: state.exit_code,
        finished_at: time_ns(state.finished_at.as_deref()),
        restarting,
        log_path,
        auto_remove,
    }
}

pub async fn inspect(docker: &Docker, id: &str) -> Result<Inspected, Failure> {
    docker
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
        .map(from_response)
        .map_err(|e| classify(&e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ContainerConfig, ContainerState, HostConfig, HostConfigLogConfig};
    use std::collections::HashMap;

    #[test]
    fn maps_inspect_fields() {
        let r = ContainerInspectResponse {
            name: Some("/job-1".into()),
            created: Some("1970-01-01T00:00:01Z".into()),
            restart_count: Some(2),
            state: Some(ContainerState {
                running: Some(true),
                restarting: Some(true),
                exit_code: Some(3),
                started_at: Some("1970-01-01T00:00:02.5Z".into()),
                finished_at: Some("0001-01-01T00:00:00Z".into()),
                ..Default::default()
            }),
            config: Some(ContainerConfig {
                image: Some("busybox".into()),
                tty: Some(true),
                labels: Some(HashMap::from([("a".to_string(), "b".to_string())])),
                ..Default::default()
            }),
            host_config: Some(HostConfig {
                log_config: Some(HostConfigLogConfig {
                    typ: Some("local".into()),
                    config: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let i = from_response(r);
        assert_eq!(i.meta.name, "job-1");
        assert_eq!(i.meta.image, "busybox");
        assert_eq!(i.meta.created_at, 1_000_000_000);
        assert_eq!(i.meta.started_at, 2_500_000_000);
        assert_eq!(i.meta.restart_count, 1); // restarting: the run that ended
        assert!(i.meta.tty);
        assert_eq!(i.meta.log_driver, "local");
        assert_eq!(i.meta.labels.get("a").map(String::as_str), Some("b"));
        assert!(i.has_run && !i.running && i.restarting);
        assert_eq!((i.exit_code, i.finished_at), (Some(3), 0));
        assert!(!i.auto_remove);
        assert_eq!(i.run_key, "1970-01-01T00:00:02.5Z");
    }
}
