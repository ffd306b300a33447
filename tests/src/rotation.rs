//! What the rotation tests of both Docker sources share (`tests/tests/files.rs` for
//! `docker-files`, `tests/tests/api_source.rs` for `docker-api`): numbered writers under
//! json-file `max-size` / `max-file`, the checks of what was stored against what the
//! container printed and what Docker still keeps, and the `--rm` containers scenario.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::Value;

use crate::docker::{self, Spec};
use crate::{rand_u64, tail, wait_until, Agents, Daemon, Db};

/// `n` lines `line <i> payload` from `from`, with a pause of `pause` s every 1,000 lines.
pub fn numbered(from: u64, to: u64, pause: &str) -> String {
    format!(
        "seq {from} {to} | awk '{{print \"line \" $1 \" payload\"; \
         if ($1 % 1000 == 0) {{ fflush(); system(\"sleep {pause}\") }}}}'"
    )
}

/// The number in a stored `line <i> payload`.
pub fn number(line: &Value) -> Result<u64> {
    let t = line["text"].as_str().context("text")?;
    t.strip_prefix("line ")
        .and_then(|r| r.strip_suffix(" payload"))
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("unexpected line {t:?}"))
}

/// Checks the stored lines: seqs 1..=N (or, where lines were lost, strictly increasing:
/// numbering jumps past a loss), numbers strictly increasing (in order, no duplicate),
/// timestamps never decreasing; returns the numbers.
pub fn numbers_in_order(stored: &[Value], contiguous: bool) -> Result<Vec<u64>> {
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
pub async fn docker_kept(docker: &bollard::Docker, id: &str) -> Result<Vec<u64>> {
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

/// A container running `script` with a json-file log rotated at 1 MB, `max_file` kept.
pub fn rotating(label: &str, script: String, max_file: u32) -> Spec {
    let mut spec = Spec::new(label, &script);
    spec.log_driver = Some("json-file".into());
    spec.log_opts = vec![
        ("max-size".into(), "1m".into()),
        ("max-file".into(), max_file.to_string()),
    ];
    spec
}

/// How many rotated files (`<id>-json.log.<n>`) Docker holds for container `id`.
pub fn rotations(id: &str) -> Result<usize> {
    Ok(
        std::fs::read_dir(format!("/var/lib/docker/containers/{id}"))?
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().contains("-json.log."))
            })
            .count(),
    )
}

/// Lines the SIGKILL scenario writes.
pub const KILLED_LINES: u64 = 200_000;

/// What [`sigkills_during_rotation`] measured.
#[derive(Debug)]
pub struct Killed {
    pub stored: usize,
    pub rotations: usize,
    /// Lines stored when each kill landed.
    pub at_kill: Vec<u64>,
    pub seconds: f64,
}

/// 200,000 lines rotating about 18 times under `max-size=1m` with room for every file
/// (`max-file=40`), printed in bursts of 1,000 with `pause` seconds between them, antilog
/// on `source` SIGKILLed 5 times meanwhile: checks that every line is stored exactly once
/// (seqs 1..=200,000, in order), the job succeeds and nothing is reported lost, and that
/// Docker rotated at least 10 times.
pub async fn sigkills_during_rotation(source: &str, pause: &str) -> Result<Killed> {
    let started = Instant::now();
    let docker = docker::connect().await?;
    let db = Db::sqlite()?;
    let daemon = Daemon::start(db.url()).await?;
    let label = format!("kill-{source}-{:x}", rand_u64());
    let mut agents = Agents::start_with(&daemon.base, &label, &source_toml(source))?;
    let id = docker::run(
        &docker,
        &rotating(&label, numbered(1, KILLED_LINES, pause), 40),
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
        let got = numbers_in_order(&stored, true).with_context(|| {
            let all: Vec<u64> = stored.iter().filter_map(|l| number(l).ok()).collect();
            let distinct: std::collections::BTreeSet<u64> = all.iter().copied().collect();
            format!(
                "{} lines stored, {} distinct, {} of 1..={KILLED_LINES} missing",
                all.len(),
                distinct.len(),
                (1..=KILLED_LINES).filter(|n| !distinct.contains(n)).count()
            )
        })?;
        ensure!(
            got == (1..=KILLED_LINES).collect::<Vec<_>>(),
            "{} lines stored of {KILLED_LINES}",
            got.len()
        );
        let rotations = rotations(&id)?;
        ensure!(rotations >= 10, "only {rotations} rotations");
        Ok(Killed {
            stored: got.len(),
            rotations,
            at_kill,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
    .await;
    docker::remove(&docker, &id).await;
    result.with_context(|| {
        // The whole agent log is kept: a rare failure is read from it afterwards.
        let kept = std::env::temp_dir().join(format!("{label}-antilog.log"));
        let saved = std::fs::write(&kept, agents.logs());
        format!(
            "agent log (whole in {}: {saved:?}; tail):\n{}",
            kept.display(),
            tail(&agents.logs(), 30)
        )
    })
}

/// What [`rotated_away_while_down`] measured.
#[derive(Debug)]
pub struct Lost {
    pub stored: usize,
    pub kept: usize,
    pub missing: usize,
    /// The seqs on either side of the gap.
    pub seq_at_gap: (u64, u64),
    pub reason: String,
}

/// Tight retention (`max-size=1m,max-file=2`) while antilog on `source` is down: the
/// files rotated away meanwhile are gone. Checks that every line read before the kill and
/// every line Docker still keeps is stored once, in order; that the job says lines were
/// lost; and that the lines read after the gap are numbered past every seq that can have
/// been handed out before it (a line never takes another's seq, which logarithmd would
/// drop as a duplicate).
pub async fn rotated_away_while_down(source: &str) -> Result<Lost> {
    let docker = docker::connect().await?;
    let db = Db::sqlite()?;
    let daemon = Daemon::start(db.url()).await?;
    let label = format!("lost-{source}-{:x}", rand_u64());
    let mut agents = Agents::start_with(&daemon.base, &label, &source_toml(source))?;
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
        let seq = |i: usize| stored[i]["seq"].as_u64().context("seq");
        let seq_at_gap = (seq(gap)?, seq(gap + 1)?);
        ensure!(
            seq_at_gap.1 > seq_at_gap.0 + (1 << 32),
            "seqs {seq_at_gap:?} at the gap"
        );
        Ok(Lost {
            stored: got.len(),
            kept: kept.len(),
            missing,
            seq_at_gap,
            reason: reason.to_owned(),
        })
    }
    .await;
    docker::remove(&docker, &id).await;
    result.with_context(|| format!("agent log (tail):\n{}", tail(&agents.logs(), 30)))
}

/// The configuration line choosing `source`.
pub fn source_toml(source: &str) -> String {
    format!("source = \"{source}\"\n")
}

/// `--rm` containers that print 3 lines and exit at once.
pub const RM_SMALL: usize = 50;
/// `--rm` containers that print 20,000 lines.
pub const RM_BIG: usize = 5;

/// Expected lines of the `i`th `--rm` container.
fn rm_lines(i: usize) -> Vec<String> {
    let n = if i < RM_BIG { 20_000 } else { 3 };
    (1..=n).map(|k| format!("c{i} line {k}")).collect()
}

/// What became of one `--rm` container's log.
#[derive(Debug)]
pub struct RmJob {
    /// Lines stored (printed ones, in order, none twice: checked).
    pub stored: usize,
    pub printed: usize,
    /// The job's `logs_unavailable` report (`None` also when it has no job).
    pub reported: Option<String>,
    /// The container got a job at all.
    pub has_job: bool,
}

impl RmJob {
    pub fn complete(&self) -> bool {
        self.stored == self.printed
    }
}

/// Starts 50 `--rm` containers that print 3 lines and exit at once, and 5 that print
/// 20,000, with an agent on `source`; checks that each job stored only lines it printed,
/// in order, none twice, and that a complete job has exit code 0.
pub async fn rm_containers(source: &str) -> Result<Vec<RmJob>> {
    let docker = docker::connect().await?;
    let db = Db::sqlite()?;
    let daemon = Daemon::start(db.url()).await?;
    let label = format!("rm-{source}-{:x}", rand_u64());
    let agents = Agents::start_with(&daemon.base, &label, &source_toml(source))?;
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
                    reported: None,
                    has_job: false,
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
            tail(&agents.logs(), 20)
        );
        ensure!(
            stored.len() < want.len() || job["exit_code"] == 0,
            "container {i}: exit code {job}"
        );
        out.push(RmJob {
            stored: stored.len(),
            printed: want.len(),
            reported: job["logs_unavailable"].as_str().map(str::to_owned),
            has_job: true,
        });
    }
    Ok(out)
}
