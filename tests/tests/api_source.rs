//! Issue #9, the Docker API source (`source = "docker-api"`) under the faults the file
//! sources are tested with (tests/tests/files.rs): real Docker rotating json-file logs
//! (`max-size`, `max-file`), antilog SIGKILLed while it reads, tight retention while it is
//! down, and `--rm` containers. The real binaries and SQLite. Every test checks exact lines
//! and order against what the container printed and what Docker still keeps, and that
//! every missing line is reported on its job (`logs_unavailable`), never silently.
//!
//! Each test prints one `api_source:` summary line with its figures; run with
//! `--nocapture`.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use logarithm_tests::docker;
use logarithm_tests::rotation::{
    docker_kept, numbered, numbers_in_order, rm_containers, rotating, rotations,
};
use logarithm_tests::{rand_u64, tail, wait_until, Agents, Daemon, Db};

const SOURCE: &str = "source = \"docker-api\"\n";

const KILLED_LINES: u64 = 200_000;

/// 200,000 lines rotating about 18 times under `max-size=1m` with room for every file
/// (`max-file=40`), antilog SIGKILLed 5 times meanwhile: every line stored exactly once,
/// seqs 1..=200,000 in order, and nothing reported lost.
#[tokio::test(flavor = "multi_thread")]
async fn sigkills_during_rotation_lose_and_double_nothing() -> Result<()> {
    let started = Instant::now();
    let docker = docker::connect().await?;
    let db = Db::sqlite()?;
    let daemon = Daemon::start(db.url()).await?;
    let label = format!("api-kill-{:x}", rand_u64());
    let mut agents = Agents::start_with(&daemon.base, &label, SOURCE)?;
    let id = docker::run(
        &docker,
        &rotating(&label, numbered(1, KILLED_LINES, "0.1"), 40),
    )
    .await?;
    let result = async {
        let mut at_kill = Vec::new();
        for k in 0..5 {
            tokio::time::sleep(Duration::from_millis(2000)).await;
            agents.kill();
            at_kill.push(db.count("log_lines").await?);
            tokio::time::sleep(Duration::from_millis(500 + 200 * k)).await;
            agents.restart()?;
        }
        ensure!(docker::wait_exit(&docker, &id).await? == 0);
        let job = daemon.wait_finished(&id, Duration::from_secs(120)).await?;
        ensure!(job["status"] == "success", "{job}");
        ensure!(job["logs_unavailable"].is_null(), "{job}");
        let job_id = job["id"].as_str().context("id")?;
        let stored = daemon.all_lines(job_id).await?;
        let got = numbers_in_order(&stored, true)?;
        ensure!(
            got == (1..=KILLED_LINES).collect::<Vec<_>>(),
            "{} lines stored of {KILLED_LINES}",
            got.len()
        );
        let rotations = rotations(&id)?;
        ensure!(rotations >= 10, "only {rotations} rotations");
        eprintln!(
            "api_source: docker-api SIGKILLed x5 during {KILLED_LINES} lines, {rotations} \
             rotations: stored={} lost=0 duplicates=0 stored_at_kills={at_kill:?} total={:.1}s",
            got.len(),
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }
    .await;
    docker::remove(&docker, &id).await;
    result.with_context(|| format!("agent log (tail):\n{}", tail(&agents.logs(), 30)))
}

/// Tight retention (`max-size=1m,max-file=2`) while antilog is down: the files rotated
/// away meanwhile are gone. Every line read before the kill and every line Docker still
/// keeps is stored once, in order; the job says lines were lost; and the lines read after
/// the gap are numbered past every seq that can have been handed out before it (a line
/// never takes another's seq, which logarithmd would drop as a duplicate).
#[tokio::test(flavor = "multi_thread")]
async fn lines_rotated_away_while_down_are_reported_on_the_job() -> Result<()> {
    let docker = docker::connect().await?;
    let db = Db::sqlite()?;
    let daemon = Daemon::start(db.url()).await?;
    let label = format!("api-lost-{:x}", rand_u64());
    let mut agents = Agents::start_with(&daemon.base, &label, SOURCE)?;
    // 10,000 lines, a pause to have them read, then 60,000 (about 5 MB of json-file:
    // several rotations with one rotated file kept) while the agent is down.
    let script = format!(
        "{}; sleep 4; {}; sleep 3",
        numbered(1, 10_000, "0"),
        numbered(10_001, 70_000, "0")
    );
    let id = docker::run(&docker, &rotating(&label, script, 2)).await?;
    let result = async {
        wait_until(Duration::from_secs(30), "the first lines", || async {
            Ok((db.count("log_lines").await? >= 10_000).then_some(()))
        })
        .await?;
        agents.kill();
        tokio::time::sleep(Duration::from_secs(5)).await;
        agents.restart()?;
        ensure!(docker::wait_exit(&docker, &id).await? == 0);
        let job = daemon.wait_finished(&id, Duration::from_secs(60)).await?;
        ensure!(job["status"] == "success", "{job}");
        let job_id = job["id"].as_str().context("id")?;
        let stored = daemon.all_lines(job_id).await?;
        let got = numbers_in_order(&stored, false)?;
        let kept = docker_kept(&docker, &id).await?;
        ensure!(
            got[..10_000] == (1..=10_000).collect::<Vec<_>>()[..],
            "the lines read before the kill"
        );
        ensure!(
            got.ends_with(&kept),
            "every line Docker keeps is stored: stored {} ({:?}..{:?}), Docker keeps {} \
             ({:?}..{:?})",
            got.len(),
            got.get(10_000),
            got.last(),
            kept.len(),
            kept.first(),
            kept.last()
        );
        let missing = 70_000 - got.len();
        ensure!(
            missing > 0,
            "nothing was rotated away; the test proves nothing"
        );
        let reason = job["logs_unavailable"].as_str().unwrap_or_default();
        ensure!(reason.contains("rotated away"), "loss not reported: {job}");
        // Where the numbers jump, the seqs jump past anything handed out before.
        let gap = got
            .windows(2)
            .position(|w| w[1] != w[0] + 1)
            .context("no gap in the numbers")?;
        let (before, after) = (
            stored[gap]["seq"].as_u64().context("seq")?,
            stored[gap + 1]["seq"].as_u64().context("seq")?,
        );
        ensure!(
            after > before + (1 << 32),
            "seq {after} after {before} at the gap"
        );
        eprintln!(
            "api_source: tight retention, agent down 5 s: stored={} docker_kept={} \
             missing={missing} seq_at_gap={before}->{after} reported={reason:?}",
            got.len(),
            kept.len()
        );
        Ok(())
    }
    .await;
    docker::remove(&docker, &id).await;
    result.with_context(|| format!("agent log (tail):\n{}", tail(&agents.logs(), 30)))
}

/// `--rm` containers on the API source: Docker removes each as soon as it exits, often
/// before its log could be read after its end (or at all). Whatever survives is stored
/// exactly (only printed lines, in order, none twice: never Docker's own error text), and
/// every job that is short says so in `logs_unavailable`.
#[tokio::test(flavor = "multi_thread")]
async fn rm_containers_are_complete_or_reported() -> Result<()> {
    let r = rm_containers("docker-api").await?;
    let complete = r.iter().filter(|c| c.complete()).count();
    let reported = r
        .iter()
        .filter(|c| !c.complete() && c.reported.is_some())
        .count();
    let no_job = r.iter().filter(|c| !c.has_job).count();
    let complete_reported = r
        .iter()
        .filter(|c| c.complete() && c.reported.is_some())
        .count();
    eprintln!(
        "api_source: --rm on docker-api: {complete} of {} jobs complete \
         ({complete_reported} of them with a precautionary report), {reported} short and \
         reported, {no_job} without a job",
        r.len()
    );
    let silent: Vec<_> = r
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.complete() && c.reported.is_none())
        .collect();
    ensure!(silent.is_empty(), "short without a report: {silent:?}");
    Ok(())
}
