//! Test containers on the real Docker engine, and Docker's own view of their logs (the
//! reference the pipeline's output is checked against).

use std::collections::HashMap;

use anyhow::{Context, Result};
use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig};
use bollard::query_parameters::{
    CreateContainerOptions, LogsOptions, RemoveContainerOptions, StartContainerOptions,
    WaitContainerOptions,
};
use bollard::Docker;
use futures::StreamExt;
use protocol::Stream;

/// Connects to the local engine; fails with a clear message when it is unreachable.
pub async fn connect() -> Result<Docker> {
    let d = Docker::connect_with_local_defaults()
        .context("the Docker engine is unreachable (is dockerd running?)")?;
    let d = d
        .negotiate_version()
        .await
        .context("the Docker engine is unreachable (is dockerd running?)")?;
    d.ping()
        .await
        .context("the Docker engine does not answer ping")?;
    Ok(d)
}

/// How to run one test container.
#[derive(Debug, Clone)]
pub struct Spec {
    pub script: String,
    pub test_label: String,
    pub extra_labels: Vec<(String, String)>,
    pub log_driver: Option<String>,
    /// Log driver options (`--log-opt`), e.g. a larger `max-size`.
    pub log_opts: Vec<(String, String)>,
    pub tty: bool,
    /// `docker run --rm`: Docker removes the container as soon as it exits.
    pub auto_remove: bool,
    /// Bind mounts (`-v host:container[:ro]`).
    pub binds: Vec<String>,
}

impl Spec {
    pub fn new(test_label: &str, script: &str) -> Spec {
        Spec {
            script: script.to_owned(),
            test_label: test_label.to_owned(),
            extra_labels: Vec::new(),
            log_driver: None,
            log_opts: Vec::new(),
            tty: false,
            auto_remove: false,
            binds: Vec::new(),
        }
    }
}

/// Creates and starts a container running `sh -c script`; returns its id.
pub async fn run(docker: &Docker, spec: &Spec) -> Result<String> {
    let mut labels: HashMap<String, String> = spec.extra_labels.iter().cloned().collect();
    labels.insert("logarithm.test".into(), spec.test_label.clone());
    let host_config = HostConfig {
        log_config: (spec.log_driver.is_some() || !spec.log_opts.is_empty()).then(|| {
            HostConfigLogConfig {
                typ: spec.log_driver.clone(),
                config: (!spec.log_opts.is_empty())
                    .then(|| spec.log_opts.iter().cloned().collect()),
            }
        }),
        auto_remove: spec.auto_remove.then_some(true),
        binds: (!spec.binds.is_empty()).then(|| spec.binds.clone()),
        ..Default::default()
    };
    let name = format!("lgtest-{}", crate::rand_tag());
    let created = docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(name),
                ..Default::default()
            }),
            ContainerCreateBody {
                image: Some(crate::TEST_IMAGE.to_owned()),
                cmd: Some(vec!["sh".into(), "-c".into(), spec.script.clone()]),
                labels: Some(labels),
                tty: Some(spec.tty),
                host_config: Some(host_config),
                ..Default::default()
            },
        )
        .await
        .with_context(|| {
            format!(
                "creating a container from {} (run scripts/test-image.sh)",
                crate::TEST_IMAGE
            )
        })?;
    docker
        .start_container(&created.id, None::<StartContainerOptions>)
        .await?;
    Ok(created.id)
}

/// Waits for the container to stop and returns its exit code.
pub async fn wait_exit(docker: &Docker, id: &str) -> Result<i64> {
    let mut s = docker.wait_container(id, None::<WaitContainerOptions>);
    match s.next().await {
        Some(Ok(w)) => return Ok(w.status_code),
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => {
            return Ok(code)
        }
        Some(Err(e)) => return Err(e.into()),
        None => {}
    }
    let info = docker
        .inspect_container(
            id,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await?;
    Ok(info.state.and_then(|s| s.exit_code).unwrap_or(-1))
}

pub async fn remove(docker: &Docker, id: &str) {
    let _ = docker
        .remove_container(
            id,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await;
}

/// Size of every piece but the last of a line Docker split.
const DOCKER_PARTIAL_BYTES: usize = 16 * 1024;

/// One line as Docker hands it out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerLine {
    pub stream: Stream,
    pub ts: i64,
    pub line: Vec<u8>,
}

/// Docker's own log of a (non-TTY) container, read through the API with timestamps: each
/// frame is `<RFC3339Nano> <message>`; Docker splits lines over 16 KiB into pieces, which
/// are joined with the next ones of their stream.
pub async fn docker_lines(docker: &Docker, id: &str) -> Result<Vec<DockerLine>> {
    let mut s = docker.logs(
        id,
        Some(LogsOptions {
            stdout: true,
            stderr: true,
            timestamps: true,
            follow: false,
            ..Default::default()
        }),
    );
    let mut out = Vec::new();
    let mut partial: HashMap<Stream, DockerLine> = HashMap::new();
    while let Some(frame) = s.next().await {
        let (stream, msg) = match frame? {
            LogOutput::StdOut { message } => (Stream::Stdout, message),
            LogOutput::StdErr { message } => (Stream::Stderr, message),
            other => anyhow::bail!("unexpected frame {other:?}"),
        };
        let space = msg
            .iter()
            .position(|&b| b == b' ')
            .context("frame without timestamp")?;
        let ts = parse_ts(std::str::from_utf8(&msg[..space])?)?;
        let body = &msg[space + 1..];
        // Docker's log copier cuts lines at exactly 16 KiB; every piece but the last is that
        // long. The last one ends in a newline with json-file, but not with the local
        // driver, so a shorter piece without one also ends the line.
        let (body, complete) = match body.strip_suffix(b"\n") {
            Some(b) => (b, true),
            None => (body, body.len() < DOCKER_PARTIAL_BYTES),
        };
        let entry = partial.entry(stream).or_insert_with(|| DockerLine {
            stream,
            ts,
            line: Vec::new(),
        });
        entry.line.extend_from_slice(body);
        if complete {
            if let Some(l) = partial.remove(&stream) {
                out.push(l);
            }
        }
    }
    out.extend(partial.into_values());
    Ok(out)
}

/// RFC 3339 with up to nanoseconds, to ns since the epoch.
pub fn parse_ts(s: &str) -> Result<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("bad timestamp {s:?}"))?;
    i64::try_from(t.unix_timestamp_nanos()).context("timestamp out of range")
}
