//! Container inspection: the metadata we ship and the run state the follower decides on.

use bollard::models::ContainerInspectResponse;
use bollard::query_parameters::InspectContainerOptions;
use bollard::Docker;
use protocol::ContainerMeta;
use std::collections::HashMap;

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
    /// The size at which Docker rotates the log (`json-file` with `max-size`; `local`,
    /// 20 MiB unless set), `None` when it does not rotate. Docker's follow stream skips
    /// whole files of a rotating log when it lags (see `follower::backlog`).
    pub rotate_bytes: Option<u64>,
}

/// The `local` driver's `max-size` when none is set (Docker's `defaultMaxFileSize`).
const LOCAL_DEFAULT_MAX_SIZE: u64 = 20 << 20;

/// Where the log of a container on `driver` with options `opts` rotates.
fn rotate_bytes(driver: &str, opts: Option<&HashMap<String, String>>) -> Option<u64> {
    let max_size = opts.and_then(|o| o.get("max-size"));
    match driver {
        "json-file" => max_size.and_then(|s| ram_in_bytes(s)),
        "local" => match max_size {
            None => Some(LOCAL_DEFAULT_MAX_SIZE),
            Some(s) => ram_in_bytes(s),
        },
        _ => None,
    }
}

/// Docker's `max-size` (go-units `RAMInBytes`: a number, then optionally `b`, `k`, `m`,
/// `g`, `t` or `p` with an optional `b` or `ib`, case-insensitive, binary multiples);
/// `None` unless a size above 0.
fn ram_in_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(end);
    let num: f64 = num.parse().ok()?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b').filter(|u| !u.is_empty()))
        .unwrap_or(&unit);
    let shift = match unit {
        "" | "b" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return None,
    };
    let bytes = num * (1u64 << shift) as f64;
    (bytes >= 1.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
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
    let log_config = host.log_config.unwrap_or_default();
    let rotate_bytes = rotate_bytes(
        log_config.typ.as_deref().unwrap_or_default(),
        log_config.config.as_ref(),
    );
    let log_driver = log_config.typ.unwrap_or_default();
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
        rotate_bytes,
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
        assert_eq!(i.rotate_bytes, Some(20 << 20)); // `local`'s default
    }

    #[test]
    fn rotation_size() {
        let opts = |v: &str| HashMap::from([("max-size".to_string(), v.to_string())]);
        assert_eq!(rotate_bytes("json-file", Some(&opts("1m"))), Some(1 << 20));
        assert_eq!(
            rotate_bytes("json-file", Some(&opts("10k"))),
            Some(10 << 10)
        );
        assert_eq!(
            rotate_bytes("json-file", Some(&opts("1.5MiB"))),
            Some(3 << 19)
        );
        assert_eq!(rotate_bytes("json-file", Some(&opts("2GB"))), Some(2 << 30));
        assert_eq!(rotate_bytes("json-file", Some(&opts("4096"))), Some(4096));
        assert_eq!(rotate_bytes("json-file", Some(&opts("-1"))), None);
        assert_eq!(rotate_bytes("json-file", None), None);
        assert_eq!(rotate_bytes("local", None), Some(20 << 20));
        assert_eq!(rotate_bytes("local", Some(&opts("5m"))), Some(5 << 20));
        assert_eq!(rotate_bytes("journald", Some(&opts("5m"))), None);
        assert_eq!(ram_in_bytes("1x"), None);
        assert_eq!(ram_in_bytes("m"), None);
    }
}
