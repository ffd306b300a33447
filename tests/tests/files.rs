//! Issue #9, the file sources: antilog reading Docker's `json-file` logs from their files
//! (`source = "docker-files"`), with real Docker rotating them (`max-size`, `max-file`),
//! the real binaries and SQLite. Every test checks exact lines and order against what the
//! container printed, and that lines rotation deleted before they were read are reported
//! on the job (`logs_unavailable`), never missing silently.
//!
//! Each test prints one `files:` summary line with its figures; run with `--nocapture`.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use logarithm_tests::docker::{self, Spec};
use logarithm_tests::{rand_u64, tail, wait_until, Agent, Agents, Daemon, Db};
use serde_json::Value;

const SOURCE: &str = "source = \"docker-files\"\n";

/// `n` lines `line <i> payload` from `from`, with a pause of `pause` s every 1,000 lines.
fn numbered(from: u64, to: u64, pause: &str) -> String {
    format!(
        "seq {from} {to} | awk '{{print \"line \" $1 \" payload\"; \
         if ($1 % 1000 == 0) {{ fflush(); system(\"sleep {pause}\") }}}}'"
    )
}

/// The number in a stored `line <i> payload`.
fn number(line: &Value) -> Result<u64> {
    let t = line["text"].as_str().context("text")?;
    t.strip_prefix("line ")
        .and_then(|r| r.strip_suffix(" payload"))
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("unexpected line {t:?}"))
}

/// Checks the stored lines: seqs 1..=N (or, where lines were lost, strictly increasing:
/// numbering jumps past a loss), numbers strictly increasing (in order, no duplicate),
/// timestamps never decreasing; returns the numbers.
fn numbers_in_order(stored: &[Value], contiguous: bool) -> Result<Vec<u64>> {
    let mut out = Vec::with_capacity(stored.len());
    let mut last_ts = i64::MIN;
    let mut last_seq = 0;
    for (i, l) in stored.iter().enumerate() {
        let seq = l["seq"].as_u64().context("seq")?;
        if contiguous {
            ensure!(seq == i as u64 + 1, "line {i} has seq {seq}");
        } else {
            ensure!(seq > last_seq, "line {i} has seq {seq} after {last_seq}");
        }
        last_seq = seq;
        let n = number(l)?;
        ensure!(
            out.last().is_none_or(|&p| p < n),
            "seq {seq}: line {n} after {:?} (duplicate or out of order)",
            out.last()
        );
        let ts = l["ts"].as_i64().context("ts")?;
        ensure!(ts >= last_ts, "ts goes back at seq {seq}");
        last_ts = ts;
        out.push(n);
    }
    Ok(out)
}

/// The numbers of the lines Docker still keeps (its rotated files that were not deleted).
async fn docker_kept(docker: &bollard::Docker, id: &str) -> Result<Vec<u64>> {
    docker::docker_lines(docker, id)
        .await?
        .iter()
        .map(|l| {
            let t = std::str::from_utf8(&l.line)?;
            t.strip_prefix("line ")
                .and_then(|r| r.strip_suffix(" payload"))
                .and_then(|n| n.parse().ok())
                .with_context(|| format!("unexpected line {t:?}"))
        })
        .collect()
}

fn rotating(label: &str, script: String, max_file: u32) -> Spec {
    let mut spec = Spec::new(label, &script);
    spec.log_driver = Some("json-file".into());
    spec.log_opts = vec![
        ("max-size".into(), "1m".into()),
        ("max-file".into(), max_file.to_string()),
    ];
    spec
}

const KILLED_LINES: u64 = 200_000;

/// 200,000 lines rotating about 18 times under `max-size=1m` with room for every file
/// (`max-file=40`), antilog SIGKILLed 5 times meanwhile: every line stored exactly once,
/// in order, and nothing reported lost.
#[tokio::test(flavor = "multi_thread")]
async fn sigkills_during_rotation_lose_and_double_nothing() -> Result<()> {
    let started = Instant::now();
    let docker = docker::connect().await?;
    let db = Db::sqlite()?;
    let daemon = Daemon::start(db.url()).await?;
    let label = format!("files-kill-{:x}", rand_u64());
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
        let rotations = std::fs::read_dir(format!("/var/lib/docker/containers/{id}"))?
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().contains("-json.log."))
            })
            .count();
        ensure!(rotations >= 10, "only {rotations} rotations");
        eprintln!(
            "files: docker-files SIGKILLed x5 during {KILLED_LINES} lines, {rotations} rotations: \
             stored={} lost=0 duplicates=0 stored_at_kills={at_kill:?} total={:.1}s",
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
/// away meanwhile are gone, so lines are missing; every line Docker still keeps is stored
/// once, in order, and the job says lines were lost.
#[tokio::test(flavor = "multi_thread")]
async fn lines_rotated_away_while_down_are_reported_on_the_job() -> Result<()> {
    let docker = docker::connect().await?;
    let db = Db::sqlite()?;
    let daemon = Daemon::start(db.url()).await?;
    let label = format!("files-lost-{:x}", rand_u64());
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
        let job_id = job["id"].as_str().context("id")?;
        let got = numbers_in_order(&daemon.all_lines(job_id).await?, false)?;
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
        eprintln!(
            "files: tight retention, agent down 5 s: stored={} docker_kept={} missing={missing} \
             reported={reason:?}",
            got.len(),
            kept.len()
        );
        Ok(())
    }
    .await;
    docker::remove(&docker, &id).await;
    result.with_context(|| format!("agent log (tail):\n{}", tail(&agents.logs(), 30)))
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
        SOURCE,
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
    let mut agents = Agents::start_with(&daemon.base, &label, SOURCE)?;
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

/// Expected lines of the `i`th `--rm` container.
fn rm_lines(i: usize) -> Vec<String> {
    let n = if i < RM_BIG { 20_000 } else { 3 };
    (1..=n).map(|k| format!("c{i} line {k}")).collect()
}

const RM_SMALL: usize = 50;
const RM_BIG: usize = 5;

/// What became of one `--rm` container's log.
#[derive(Debug)]
struct RmJob {
    /// Lines stored (printed ones, in order, none twice: checked).
    stored: usize,
    printed: usize,
}

/// Starts 50 `--rm` containers that print 3 lines and exit at once, and 5 that print
/// 20,000; checks that each job stored only lines it printed, in order, none twice.
async fn rm_containers(source: &str) -> Result<Vec<RmJob>> {
    let docker = docker::connect().await?;
    let db = Db::sqlite()?;
    let daemon = Daemon::start(db.url()).await?;
    let label = format!("files-rm-{:x}", rand_u64());
    let data = tempfile::tempdir()?;
    let agent = Agent::start_with(
        &daemon.base,
        &label,
        tempfile::tempdir()?,
        data.path().join("data"),
        &format!("source = \"{source}\"\n"),
    )?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut ids = Vec::new();
    for i in 0..RM_BIG + RM_SMALL {
        let script = if i < RM_BIG {
            format!("seq 1 20000 | awk '{{print \"c{i} line \" $1}}'")
        } else {
            format!("echo c{i} line 1; echo c{i} line 2; echo c{i} line 3")
        };
        let mut spec = Spec::new(&label, &script);
        spec.auto_remove = true;
        ids.push(docker::run(&docker, &spec).await?);
    }
    let mut out = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        // A container never seen has no job: give the agent time, then count it as such.
        let job = match daemon.wait_finished(id, Duration::from_secs(20)).await {
            Ok(j) => j,
            Err(_) => {
                out.push(RmJob {
                    stored: 0,
                    printed: rm_lines(i).len(),
                });
                continue;
            }
        };
        let job_id = job["id"].as_str().context("id")?;
        let stored: Vec<String> = daemon
            .all_lines(job_id)
            .await?
            .iter()
            .map(|l| l["text"].as_str().unwrap_or_default().to_owned())
            .collect();
        let want = rm_lines(i);
        let mut printed = want.iter();
        ensure!(
            stored.iter().all(|l| printed.any(|p| p == l)),
            "container {i}: stored lines are not printed ones in order: {job}\nagent log:\n{}",
            tail(&agent.proc.log(), 20)
        );
        ensure!(
            stored.len() < want.len() || job["exit_code"] == 0,
            "container {i}: exit code {job}"
        );
        out.push(RmJob {
            stored: stored.len(),
            printed: want.len(),
        });
    }
    Ok(out)
}

/// `--rm` containers on `docker-files`: the log file is opened as soon as the container
/// starts and read to its end after Docker removed it, so every line of every job is
/// stored, with the exit code from the `die` event.
#[tokio::test(flavor = "multi_thread")]
async fn rm_containers_keep_every_line_on_the_file_source() -> Result<()> {
    let r = rm_containers("docker-files").await?;
    let complete = r.iter().filter(|c| c.stored == c.printed).count();
    eprintln!(
        "files: --rm on docker-files: {complete} of {} jobs complete",
        r.len()
    );
    ensure!(complete == r.len(), "{r:?}");
    Ok(())
}
