//! Containers removed while antilog is down (issue 9's reliability rules), on both Docker
//! sources, with real Docker, the real binaries and SQLite: antilog follows two
//! containers, is SIGKILLed, and meanwhile one container is removed while it runs
//! (`docker rm -f`) and the other prints two more lines, exits 0 and is removed. Started
//! again, antilog finds them gone from its checkpoint and closes both jobs: failure, exit
//! code unknown (`null`), a reason saying they were removed; every line read before the
//! kill stored once, in order; the lines printed while it was down are lost and the job
//! says so (`logs_unavailable`). Each test prints one `removed:` line with its figures.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use logarithm_tests::docker::{self, Spec};
use logarithm_tests::rotation::source_toml;
use logarithm_tests::{rand_u64, wait_until, Agents, Daemon, Db};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread")]
async fn docker_files_closes_jobs_of_containers_removed_while_down() -> Result<()> {
    removed_while_down("docker-files").await
}

#[tokio::test(flavor = "multi_thread")]
async fn docker_api_closes_jobs_of_containers_removed_while_down() -> Result<()> {
    removed_while_down("docker-api").await
}

/// The stored lines' texts, checking their seqs are 1, 2, … (each line once, in order).
async fn texts(daemon: &Daemon, job: &Value) -> Result<Vec<String>> {
    let id = job["id"].as_str().context("job id")?;
    let lines = daemon.all_lines(id).await?;
    for (i, l) in lines.iter().enumerate() {
        ensure!(
            l["seq"].as_u64() == Some(i as u64 + 1),
            "line {i} has seq {}: {lines:?}",
            l["seq"]
        );
    }
    Ok(lines
        .iter()
        .map(|l| l["text"].as_str().unwrap_or_default().to_owned())
        .collect())
}

async fn line_count(daemon: &Daemon, container: &str) -> Result<u64> {
    Ok(daemon
        .job_of(container)
        .await?
        .and_then(|j| j["line_count"].as_u64())
        .unwrap_or(0))
}

async fn removed_while_down(source: &str) -> Result<()> {
    let docker = docker::connect().await?;
    let db = Db::sqlite()?;
    let daemon = Daemon::start(db.url()).await?;
    let label = format!("removed-{:x}", rand_u64());
    let mut agents = Agents::start_with(&daemon.base, &label, &source_toml(source))?;
    // `running` prints 5 lines and sleeps; `ended` prints 3, waits for the file `go`,
    // prints 2 more and exits 0.
    let sync = tempfile::tempdir()?;
    let running = docker::run(
        &docker,
        &Spec::new(
            &label,
            "for i in 1 2 3 4 5; do echo \"running line $i\"; done; sleep 600",
        ),
    )
    .await?;
    let mut spec = Spec::new(
        &label,
        "for i in 1 2 3; do echo \"ended line $i\"; done; \
         while [ ! -e /sync/go ]; do usleep 50000; done; \
         echo 'ended line 4'; echo 'ended line 5'",
    );
    spec.binds = vec![format!("{}:/sync:ro", sync.path().display())];
    let ended = docker::run(&docker, &spec).await?;
    let result = async {
        wait_until(
            Duration::from_secs(30),
            "both jobs' first lines",
            || async {
                let done = line_count(&daemon, &running).await? == 5
                    && line_count(&daemon, &ended).await? == 3;
                Ok(done.then_some(()))
            },
        )
        .await
        .with_context(|| agents.logs())?;

        agents.kill();
        std::fs::write(sync.path().join("go"), b"")?;
        ensure!(docker::wait_exit(&docker, &ended).await? == 0);
        docker::remove(&docker, &running).await;
        docker::remove(&docker, &ended).await;
        agents.restart()?;

        let mut jobs = Vec::new();
        for (id, what) in [(&running, "running"), (&ended, "ended")] {
            let job = daemon
                .wait_finished(id, Duration::from_secs(30))
                .await
                .with_context(|| agents.logs())?;
            ensure!(job["status"] == "failure", "{what}: {job}");
            ensure!(job["exit_code"].is_null(), "{what}: {job}");
            ensure!(
                job["reason"].as_str()
                    == Some("exit code unknown: the container was removed while antilog was down"),
                "{what}: {job}"
            );
            let unavailable = job["logs_unavailable"].as_str().unwrap_or_default();
            ensure!(
                unavailable.contains("removed while antilog was down")
                    && unavailable.contains(if what == "running" {
                        "(seq 5)"
                    } else {
                        "(seq 3)"
                    }),
                "{what}: {job}"
            );
            jobs.push(job);
        }
        let running_lines = texts(&daemon, &jobs[0]).await?;
        let expected: Vec<String> = (1..=5).map(|i| format!("running line {i}")).collect();
        ensure!(running_lines == expected, "{running_lines:?}");
        // Lines 4 and 5 were printed while antilog was down, and went with the container.
        let ended_lines = texts(&daemon, &jobs[1]).await?;
        let expected: Vec<String> = (1..=3).map(|i| format!("ended line {i}")).collect();
        ensure!(ended_lines == expected, "{ended_lines:?}");
        eprintln!(
            "removed: {source}: removed running: stored={} reason={:?}; \
             ended and removed while down: stored={} lost=2 logs_unavailable={:?}",
            running_lines.len(),
            jobs[0]["reason"],
            ended_lines.len(),
            jobs[1]["logs_unavailable"]
        );
        Ok(())
    }
    .await;
    docker::remove(&docker, &running).await;
    docker::remove(&docker, &ended).await;
    result
}
