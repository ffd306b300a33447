//! The Docker runner against the real engine: a job container gets its labels, environment,
//! command and limits; a repeated start finds it; stop and remove are idempotent.
//!
//! Needs the Docker engine and the offline image `logarithm/busybox:test`
//! (`scripts/test-image.sh` builds it).

mod common;

use std::time::Duration;

use bollard::query_parameters::InspectContainerOptions;
use engine::runner::docker::DockerRunner;
use engine::runner::{ContainerState, JobRunner, JobSpec};

const IMAGE: &str = "logarithm/busybox:test";

/// Removes the container even when an assertion fails half-way.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &self.0])
            .output();
    }
}

fn spec(run: &str) -> JobSpec {
    common::job_spec(
        "tests.docker",
        run,
        "version",
        IMAGE,
        "echo \"$GREETING $CO_DATA\"; sleep 300",
    )
}

#[tokio::test]
async fn start_inspect_stop_remove() {
    let runner = match DockerRunner::connect().await {
        Ok(r) => r,
        Err(e) => panic!("this test needs the Docker engine: {e}"),
    };
    let run = format!("t{:015x}", std::process::id() as u64 * 7919 + 17);
    let spec = spec(&run);
    let _cleanup = Cleanup(spec.name.clone());

    let id = match runner.start(&spec).await {
        Ok(id) => id,
        Err(e) => panic!("start failed (is {IMAGE} built? scripts/test-image.sh): {e}"),
    };
    assert_eq!(id.len(), 64, "{id}");

    let info = runner
        .client()
        .inspect_container(&id, None::<InspectContainerOptions>)
        .await
        .map_err(|e| e.to_string());
    let Ok(info) = info else { panic!("{info:?}") };
    assert_eq!(
        info.name.as_deref(),
        Some(format!("/{}", spec.name).as_str())
    );
    let config = info.config.unwrap_or_default();
    assert_eq!(config.image.as_deref(), Some(IMAGE));
    let labels = config.labels.unwrap_or_default();
    for (k, v) in &spec.labels {
        assert_eq!(labels.get(k), Some(v), "label {k}");
    }
    let env = config.env.unwrap_or_default();
    assert!(env.contains(&"GREETING=hello".to_owned()), "{env:?}");
    assert!(env.contains(&"CO_DATA=some input".to_owned()), "{env:?}");
    assert_eq!(config.cmd, Some(spec.command.clone()));
    let host = info.host_config.unwrap_or_default();
    assert_eq!(host.nano_cpus, Some(500_000_000));
    assert_eq!(host.memory, Some(64 << 20));
    assert_eq!(
        info.state.and_then(|s| s.running),
        Some(true),
        "the job runs"
    );

    // A start repeated (after a crash, say) finds the same container.
    let again = runner.start(&spec).await.map_err(|e| e.to_string());
    assert_eq!(again, Ok(id.clone()));

    let found = runner.find_run(&run).await.map_err(|e| e.to_string());
    let Ok(found) = found else {
        panic!("{found:?}")
    };
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].container_id, id);
    assert_eq!(found[0].state, ContainerState::Running);
    assert_eq!(
        found[0].labels.get(protocol::LABEL_JOB).map(String::as_str),
        Some("version")
    );
    assert_eq!(runner.state(&id).await.ok(), Some(ContainerState::Running));

    // sh ignores SIGTERM while it waits for sleep: the grace ends in SIGKILL.
    let stopped = runner.stop(&id, Duration::from_secs(1)).await;
    assert!(stopped.is_ok(), "{stopped:?}");
    assert_eq!(runner.state(&id).await.ok(), Some(ContainerState::Exited));
    let info = runner
        .client()
        .inspect_container(&id, None::<InspectContainerOptions>)
        .await
        .ok();
    let code = info.and_then(|i| i.state).and_then(|s| s.exit_code);
    assert!(matches!(code, Some(137 | 143)), "exit code {code:?}");
    // Stopping a stopped container is fine.
    assert!(runner.stop(&id, Duration::from_secs(1)).await.is_ok());

    assert!(runner.remove(&id).await.is_ok());
    assert_eq!(runner.state(&id).await.ok(), Some(ContainerState::Gone));
    assert!(runner.remove(&id).await.is_ok(), "removing twice is fine");
    assert!(runner.stop(&id, Duration::from_secs(1)).await.is_ok());
    let found = runner.find_run(&run).await.map(|f| f.len());
    assert_eq!(found.ok(), Some(0));
}

#[tokio::test]
async fn a_missing_image_is_a_clear_error() {
    let Ok(runner) = DockerRunner::connect().await else {
        panic!("this test needs the Docker engine")
    };
    let mut spec = spec(&format!("m{:015x}", std::process::id()));
    spec.image = "logarithm/does-not-exist:never".into();
    let _cleanup = Cleanup(spec.name.clone());
    let err = runner.start(&spec).await.err().map(|e| e.to_string());
    let Some(err) = err else {
        panic!("started a missing image")
    };
    assert!(
        err.contains("cannot pull image logarithm/does-not-exist:never"),
        "{err}"
    );
}
