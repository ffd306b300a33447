//! Issue #9, the file sources: antilog reading Docker's `json-file` logs from their files
//! (`source = "docker-files"`), with real Docker rotating them (`max-size`, `max-file`),
//! the real binaries and SQLite. Every test checks exact lines and order against what the
//! container printed, and that lines rotation deleted before they were read are reported
//! on the job (`logs_unavailable`), never missing silently.
//!
//! Each test prints one `files:` summary line with its figures; run with `--nocapture`.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use logarithm_tests::docker;
use logarithm_tests::rotation::{
    docker_kept, numbered, numbers_in_order, rm_containers, rotated_away_while_down, rotating,
    sigkills_during_rotation, source_toml, KILLED_LINES,
};
use logarithm_tests::{rand_u64, tail, wait_until, Agent, Agents, Daemon, Db};

/// 200,000 lines rotating about 18 times under `max-size=1m` with room for every file
/// (`max-file=40`), antilog SIGKILLed 5 times meanwhile: every line stored exactly once,
/// in order, and nothing reported lost.
#[tokio::test(flavor = "multi_thread")]
async fn sigkills_during_rotation_lose_and_double_nothing() -> Result<()> {
    let k = sigkills_during_rotation("docker-files", "0.1").await?;
    eprintln!(
        "files: docker-files SIGKILLed x5 during {KILLED_LINES} lines, {} rotations: \
         stored={} lost=0 duplicates=0 stored_at_kills={:?} total={:.1}s",
        k.rotations, k.stored, k.at_kill, k.seconds
    );
    Ok(())
}

/// Tight retention (`max-size=1m,max-file=2`) while antilog is down: the files rotated
/// away meanwhile are gone, so lines are missing; every line Docker still keeps is stored
/// once, in order, the job says lines were lost, and numbering jumps past the loss.
#[tokio::test(flavor = "multi_thread")]
async fn lines_rotated_away_while_down_are_reported_on_the_job() -> Result<()> {
    let l = rotated_away_while_down("docker-files").await?;
    eprintln!(
        "files: tight retention, agent down 5 s: stored={} docker_kept={} missing={} \
         seq_at_gap={:?} reported={:?}",
        l.stored, l.kept, l.missing, l.seq_at_gap, l.reason
    );
    Ok(())
}

/// A fast writer under `max-size=1m,max-file=3` with the agent running: the tailer holds
/// rotated files open, so every line is stored once, in order, including every line
/// Docker still keeps; anything missing would have to be reported on the job.
#[tokio::test(flavor = "multi_thread")]
async fn fast_writer_with_rotation_is_stored_exactly_once() -> Result<()> {
    let docker = docker::connect().await?;
    let db = Db::sqlite()?;
    let daemon = Daemon::start(db.url()).await?;
    let label = format!("files-fast-{:x}", rand_u64());
    let data = tempfile::tempdir()?;
    let agent = Agent::start_with(
        &daemon.base,
        &label,
        tempfile::tempdir()?,
        data.path().join("data"),
        &source_toml("docker-files"),
    )?;
    const N: u64 = 100_000;
    let id = docker::run(&docker, &rotating(&label, numbered(1, N, "0"), 3)).await?;
    let result = async {
        ensure!(docker::wait_exit(&docker, &id).await? == 0);
        let job = daemon.wait_finished(&id, Duration::from_secs(60)).await?;
        let job_id = job["id"].as_str().context("id")?;
        let got = numbers_in_order(&daemon.all_lines(job_id).await?, false)?;
        let kept = docker_kept(&docker, &id).await?;
        ensure!(got.ends_with(&kept), "every line Docker keeps is stored");
        if got.len() as u64 != N {
            ensure!(
                job["logs_unavailable"]
                    .as_str()
                    .is_some_and(|r| r.contains("rotated away")),
                "{} of {N} lines and no loss reported: {job}",
                got.len()
            );
        }
        ensure!(job["status"] == "success", "{job}");
        eprintln!(
            "files: fast writer, max-size=1m max-file=3: printed={N} stored={} docker_kept={}",
            got.len(),
            kept.len()
        );
        Ok(())
    }
    .await;
    docker::remove(&docker, &id).await;
    result.with_context(|| format!("agent log (tail):\n{}", tail(&agent.proc.log(), 30)))
}

const GZ_LINES: u64 = 150_000;

/// Docker's `compress=true` (`max-size=1m,max-file=5`): rotated files are gzipped
/// (`-json.log.1.gz`, ...), the plain one deleted once its copy is written. A fast writer
/// (150,000 lines, a 20 ms pause every 1,000), antilog SIGKILLed once after 20,000 lines
/// are stored and started again `down` later. Checks: every line Docker keeps (read back
/// through `docker logs`, which decompresses them) is stored once, in order; if any line
/// is missing, the loss is reported on the job. Returns how many lines were stored.
async fn compressed_rotations(down: Duration) -> Result<usize> {
    let docker = docker::connect().await?;
    let db = Db::sqlite()?;
    let daemon = Daemon::start(db.url()).await?;
    let label = format!("files-gz-{:x}", rand_u64());
    let mut agents = Agents::start_with(&daemon.base, &label, &source_toml("docker-files"))?;
    let mut spec = rotating(&label, numbered(1, GZ_LINES, "0.02"), 5);
    spec.log_opts.push(("compress".into(), "true".into()));
    let id = docker::run(&docker, &spec).await?;
    let result = async {
        wait_until(Duration::from_secs(60), "the first lines", || async {
            Ok((db.count("log_lines").await? >= 20_000).then_some(()))
        })
        .await?;
        agents.kill();
        tokio::time::sleep(down).await;
        agents.restart()?;
        ensure!(docker::wait_exit(&docker, &id).await? == 0);
        let job = daemon.wait_finished(&id, Duration::from_secs(120)).await?;
        ensure!(job["status"] == "success", "{job}");
        let job_id = job["id"].as_str().context("id")?;
        let got = numbers_in_order(&daemon.all_lines(job_id).await?, false)?;
        let kept = docker_kept(&docker, &id).await?;
        let gz_files = std::fs::read_dir(format!("/var/lib/docker/containers/{id}"))?
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".gz"))
            })
            .count();
        ensure!(
            gz_files >= 2,
            "only {gz_files} compressed rotations; the test proves nothing"
        );
        ensure!(
            got.ends_with(&kept),
            "every line Docker keeps is stored: stored {} (..{:?}), Docker keeps {} \
             ({:?}..{:?})",
            got.len(),
            got.last(),
            kept.len(),
            kept.first(),
            kept.last()
        );
        let reason = job["logs_unavailable"].as_str().unwrap_or_default();
        if got.len() as u64 != GZ_LINES {
            ensure!(
                reason.contains("rotated away"),
                "{} of {GZ_LINES} lines stored and no loss reported: {job}",
                got.len()
            );
        }
        eprintln!(
            "files: compress=true max-size=1m max-file=5, down {down:?}: printed={GZ_LINES} \
             stored={} docker_kept={} gz_files={gz_files} lost_reported={reason:?}",
            got.len(),
            kept.len()
        );
        Ok(got.len())
    }
    .await;
    docker::remove(&docker, &id).await;
    result.with_context(|| format!("agent log (tail):\n{}", tail(&agents.logs(), 30)))
}

/// [`compressed_rotations`] with antilog down 0.8 s: the rotated files it held, or that
/// were gzipped before it looked, are read from their descriptors or decoders.
#[tokio::test(flavor = "multi_thread")]
async fn compressed_rotations_are_read_exactly_once_across_a_sigkill() -> Result<()> {
    compressed_rotations(Duration::from_millis(800)).await?;
    Ok(())
}

/// [`compressed_rotations`] with antilog down 4 s, longer than the writer needs to fill
/// Docker's retention: the compressed files holding the checkpoint are deleted unread,
/// so lines are missing, and the job says so.
#[tokio::test(flavor = "multi_thread")]
async fn compressed_rotations_deleted_unread_are_reported_on_the_job() -> Result<()> {
    let stored = compressed_rotations(Duration::from_secs(4)).await?;
    ensure!(
        (stored as u64) < GZ_LINES,
        "nothing was rotated away unread; the test proves nothing"
    );
    Ok(())
}

/// `--rm` containers on `docker-files`: the log file is opened as soon as the container
/// starts and read to its end after Docker removed it, so every line of every job is
/// stored, with the exit code from the `die` event.
#[tokio::test(flavor = "multi_thread")]
async fn rm_containers_keep_every_line_on_the_file_source() -> Result<()> {
    let r = rm_containers("docker-files").await?;
    let complete = r.iter().filter(|c| c.complete()).count();
    eprintln!(
        "files: --rm on docker-files: {complete} of {} jobs complete",
        r.len()
    );
    ensure!(complete == r.len(), "{r:?}");
    Ok(())
}
