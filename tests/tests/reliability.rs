//! Issue #3, "Nothing lost, nothing doubled": the pipeline under SIGKILLs of the agent and
//! of the daemon, a MariaDB outage, resent batches, and 100 containers at once. Real Docker,
//! real MariaDB, the real binaries. Every test checks exact counts, seqs 1..N without gaps,
//! the content line by line against what the container printed, and a SHA-256 of the
//! stored log (JSON pages and the raw download) against the expected one.
//!
//! Each test prints one `reliability:` summary line with its figures (docs/reliability.md
//! quotes them); run with `--nocapture` to see them:
//! `cargo test -p logarithm-tests --test reliability -- --test-threads=1 --nocapture`.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use futures::StreamExt;
use logarithm_tests::docker::{self, Spec};
use logarithm_tests::mariadb::MariaDb;
use logarithm_tests::stored_log::verify_log;
use logarithm_tests::{rand_u64, small_batch, tail, wait_until, Agents, Daemon, Db, TOKEN};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------
// Helpers

/// `n` lines `line <i> payload`, with a pause of `pause` seconds every 1,000 lines so the
/// container runs long enough for the faults to land while it prints.
fn numbered_script(n: u64, pause: &str) -> String {
    format!(
        "seq 1 {n} | awk '{{print \"line \" $1 \" payload\"; \
         if ($1 % 1000 == 0) {{ fflush(); system(\"sleep {pause}\") }}}}'"
    )
}

fn numbered_line(i: u64) -> String {
    format!("line {i} payload")
}

/// Rows of `log_lines`, counted in the database; `None` when it does not answer.
async fn stored_lines(url: &str) -> Option<u64> {
    use mysql_async::prelude::Queryable;
    let count = async {
        let mut conn = mysql_async::Conn::from_url(url).await?;
        let n: Option<u64> = conn.query_first("SELECT COUNT(*) FROM log_lines").await?;
        conn.disconnect().await?;
        Ok::<_, mysql_async::Error>(n.unwrap_or(0))
    };
    tokio::time::timeout(Duration::from_secs(5), count)
        .await
        .ok()?
        .ok()
}

/// Rows of `log_lines` whose `(job_id, seq)` occurs more than once (the primary key makes
/// it 0 by construction; counted anyway so the figure is measured, not assumed).
async fn duplicate_rows(url: &str) -> Result<u64> {
    use mysql_async::prelude::Queryable;
    let mut conn = mysql_async::Conn::from_url(url).await?;
    let n: Option<u64> = conn
        .query_first(
            "SELECT COALESCE(SUM(c - 1), 0) FROM \
             (SELECT COUNT(*) AS c FROM log_lines GROUP BY job_id, seq) t",
        )
        .await?;
    conn.disconnect().await?;
    Ok(n.unwrap_or(0))
}

/// Waits until the stored line count exceeds `from`; returns how long that took.
async fn time_to_progress(url: &str, from: u64, timeout: Duration) -> Result<Duration> {
    let t0 = Instant::now();
    loop {
        if stored_lines(url).await.is_some_and(|n| n > from) {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > timeout {
            bail!("no line stored beyond {from} within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn is_running(docker: &bollard::Docker, id: &str) -> Result<bool> {
    let info = docker.inspect_container(id, None).await?;
    Ok(info.state.and_then(|s| s.running).unwrap_or(false))
}

/// Acknowledgements an agent logged (`batch acknowledged`, at debug level).
#[derive(Debug, Default, Clone, Copy)]
struct Acks {
    batches: u64,
    stored: u64,
    duplicates: u64,
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn acks_in(log: &str) -> Acks {
    let field = |line: &str, name: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .map(|v| v.trim_start_matches("Some(").trim_end_matches(')'))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let mut a = Acks::default();
    for line in strip_ansi(log)
        .lines()
        .filter(|l| l.contains("batch acknowledged"))
    {
        a.batches += 1;
        a.stored += field(line, "stored=");
        a.duplicates += field(line, "duplicates=");
    }
    a
}

/// Times the agent met lines Docker sent twice in a follow stream (and skipped them).
fn docker_replays(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("Docker sent lines again"))
        .count()
}

/// Answers the agent logged as retried with HTTP 503.
fn retried_503(log: &str) -> usize {
    strip_ansi(log)
        .lines()
        .filter(|l| l.contains("batch not delivered") && l.contains("503"))
        .count()
}

fn ms(d: &[Duration]) -> Vec<u128> {
    d.iter().map(Duration::as_millis).collect()
}

const KILLS: usize = 5;
const LONG_LINES: u64 = 200_000;
/// ~27 s for 200,000 lines: 200 pauses of 0.12 s plus awk's own time.
const LONG_PAUSE: &str = "0.12";

/// Which process the kills hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Victim {
    Agent,
    Daemon,
}

/// 200,000 numbered lines while the victim is SIGKILLed 5 times (and started again each
/// time, the daemon on the same address): every line stored exactly once, in order.
async fn kills_during_stream(victim: Victim) -> Result<()> {
    let started = Instant::now();
    let docker = docker::connect().await?;
    let db = Db::mysql().await?;
    let mut daemon = Daemon::start(db.url()).await?;
    let label = format!("rel-kill-{victim:?}-{:x}", rand_u64()).to_lowercase();
    let mut agents = Agents::start(&daemon.base, &label)?;
    let id = docker::run(
        &docker,
        &Spec::new(&label, &numbered_script(LONG_LINES, LONG_PAUSE)),
    )
    .await?;
    let result = async {
        wait_until(
            Duration::from_secs(30),
            "the first lines to be stored",
            || {
                let url = db.url().to_owned();
                async move { Ok(stored_lines(&url).await.filter(|n| *n > 0)) }
            },
        )
        .await?;
        let mut at_kill = Vec::new();
        let mut recover = Vec::new();
        for k in 0..KILLS {
            tokio::time::sleep(Duration::from_millis(2500)).await;
            ensure!(
                is_running(&docker, &id).await?,
                "kill {k}: the container already finished"
            );
            match victim {
                Victim::Agent => agents.kill(),
                Victim::Daemon => daemon.proc.kill(),
            }
            let n = stored_lines(db.url()).await.context("count")?;
            ensure!(n < LONG_LINES, "kill {k}: everything was already stored");
            at_kill.push(n);
            // Down for a moment: the container keeps printing into Docker's log, and the
            // agent keeps retrying against a closed port.
            tokio::time::sleep(Duration::from_millis(700)).await;
            match victim {
                Victim::Agent => agents.restart()?,
                Victim::Daemon => daemon.start_again().await?,
            }
            let from = stored_lines(db.url()).await.context("count")?;
            recover.push(time_to_progress(db.url(), from, Duration::from_secs(60)).await?);
        }
        ensure!(
            at_kill.windows(2).all(|w| w[0] < w[1]),
            "no progress between kills: {at_kill:?}"
        );
        ensure!(docker::wait_exit(&docker, &id).await? == 0);
        let job = daemon
            .wait_finished(&id, Duration::from_secs(120))
            .await
            .with_context(|| format!("agent log:\n{}", tail(&agents.logs(), 30)))?;
        ensure!(job["status"] == "success", "{job}");
        let job_id = job["id"].as_str().context("id")?;
        let expected: Vec<String> = (1..=LONG_LINES).map(numbered_line).collect();
        let v = verify_log(&daemon, job_id, &expected).await?;
        ensure!(job["line_count"] == LONG_LINES, "{job}");
        ensure!(db.count("log_lines").await? == LONG_LINES);
        let dup_rows = duplicate_rows(db.url()).await?;
        ensure!(dup_rows == 0);
        let logs = agents.logs();
        let acks = acks_in(&logs);
        eprintln!(
            "reliability: {victim:?} SIGKILLed x{KILLS}: lines={} expected={LONG_LINES} \
             duplicate_rows={dup_rows} seq_gaps=0 stored_at_kills={at_kill:?} \
             acked_batches={} acked_stored={} acked_duplicates={} docker_replays_skipped={} \
             recover_ms={:?} checksum={} total={:.1}s",
            v.lines,
            acks.batches,
            acks.stored,
            acks.duplicates,
            docker_replays(&logs),
            ms(&recover),
            &v.checksum[..16],
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }
    .await;
    docker::remove(&docker, &id).await;
    result.with_context(|| logs_tail(&agents, &daemon, 20))
}

/// The tails of the agents' log and of logarithmd's (its last `daemon_lines`), for the
/// context of a failure.
fn logs_tail(agents: &Agents, daemon: &Daemon, daemon_lines: usize) -> String {
    format!(
        "agent log (tail):\n{}\nlogarithmd log (tail):\n{}",
        tail(&agents.logs(), 20),
        tail(&daemon.proc.log(), daemon_lines)
    )
}

// ---------------------------------------------------------------------------------------
// 1. and 2.: SIGKILLs

#[tokio::test(flavor = "multi_thread")]
async fn agent_sigkilled_five_times() -> Result<()> {
    kills_during_stream(Victim::Agent).await
}

#[tokio::test(flavor = "multi_thread")]
async fn daemon_sigkilled_five_times() -> Result<()> {
    kills_during_stream(Victim::Daemon).await
}

// ---------------------------------------------------------------------------------------
// 3. MariaDB down for 20 s

const OUTAGE_LINES: u64 = 100_000;
const OUTAGE: Duration = Duration::from_secs(20);

/// POSTs a batch; returns the status, the Retry-After header, the body and the time taken.
async fn post_batch(
    daemon: &Daemon,
    batch: &Value,
) -> Result<(u16, Option<String>, Value, Duration)> {
    let t0 = Instant::now();
    let r = daemon
        .http
        .post(format!("{}/api/v1/ingest", daemon.base))
        .header("authorization", format!("Bearer {TOKEN}"))
        .json(batch)
        .timeout(Duration::from_secs(90))
        .send()
        .await?;
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = r.text().await?;
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, retry_after, body, t0.elapsed()))
}

async fn readyz(daemon: &Daemon) -> Result<(u16, Duration)> {
    let t0 = Instant::now();
    let r = daemon
        .http
        .get(format!("{}/readyz", daemon.base))
        .timeout(Duration::from_secs(30))
        .send()
        .await?;
    Ok((r.status().as_u16(), t0.elapsed()))
}

/// MariaDB is killed mid-stream and started again 20 s later on the same datadir and port:
/// meanwhile ingest answers 503 with Retry-After (quickly, not after a hang) and /readyz
/// 503; afterwards the agent's retries get through and every line is stored once.
#[tokio::test(flavor = "multi_thread")]
async fn mariadb_down_for_20_seconds() -> Result<()> {
    let started = Instant::now();
    let docker = docker::connect().await?;
    let mut mariadb = MariaDb::start().await?;
    let url = mariadb.create_database("logarithm").await?;
    let daemon = Daemon::start(&url).await?;
    let label = format!("rel-outage-{:x}", rand_u64());
    let agents = Agents::start(&daemon.base, &label)?;
    // ~25 s: 100 pauses of 0.25 s.
    let id = docker::run(
        &docker,
        &Spec::new(&label, &numbered_script(OUTAGE_LINES, "0.25")),
    )
    .await?;
    let probe_cid = format!("{:016x}", rand_u64()).repeat(4);
    let probe = small_batch(&probe_cid);
    let result = async {
        wait_until(
            Duration::from_secs(30),
            "the first lines to be stored",
            || {
                let url = url.clone();
                async move { Ok(stored_lines(&url).await.filter(|n| *n > 0)) }
            },
        )
        .await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        ensure!(
            is_running(&docker, &id).await?,
            "the container finished too early"
        );
        let before = stored_lines(&url).await.context("count")?;
        mariadb.kill();
        let down_at = Instant::now();

        // While it is down: ingest 503 + Retry-After, /readyz 503, both answered promptly.
        let mut ingest_probes = Vec::new();
        let mut ready_probes = Vec::new();
        let mut next_ingest = Duration::from_secs(1);
        while down_at.elapsed() < OUTAGE {
            let (s, d) = readyz(&daemon).await?;
            ensure!(s == 503, "/readyz answered {s} while MariaDB was down");
            ready_probes.push(d);
            if down_at.elapsed() >= next_ingest {
                let (s, retry_after, body, d) = post_batch(&daemon, &probe).await?;
                ensure!(
                    s == 503 && body["error"]["code"] == "unavailable",
                    "ingest answered {s} {body} while MariaDB was down"
                );
                ensure!(
                    retry_after
                        .as_deref()
                        .is_some_and(|v| v.parse::<u64>().is_ok()),
                    "503 without a numeric Retry-After: {retry_after:?}"
                );
                ingest_probes.push(d);
                next_ingest += Duration::from_secs(6);
            }
            tokio::time::sleep(Duration::from_millis(1000)).await;
        }
        let slowest_ingest = ingest_probes.iter().max().copied().unwrap_or_default();
        let slowest_ready = ready_probes.iter().max().copied().unwrap_or_default();
        // The storage crate gives up on a connection after 10 s; /readyz after 2 s.
        ensure!(
            slowest_ingest < Duration::from_secs(12),
            "ingest took {slowest_ingest:?} to answer 503"
        );
        ensure!(
            slowest_ready < Duration::from_secs(3),
            "/readyz took {slowest_ready:?}"
        );

        mariadb.start_again().await?;
        let up_at = Instant::now();
        let ready_after = wait_until(Duration::from_secs(60), "/readyz to be 200 again", || {
            let daemon = &daemon;
            async move { Ok((readyz(daemon).await?.0 == 200).then(|| up_at.elapsed())) }
        })
        .await?;
        let from = stored_lines(&url).await.context("count")?;
        ensure!(from == before, "lines were stored while MariaDB was down?");
        let progress_after =
            up_at.elapsed() + time_to_progress(&url, from, Duration::from_secs(90)).await?;
        // A new batch is taken at once.
        let (s, _, body, _) = post_batch(&daemon, &probe).await?;
        ensure!(s == 200 && body["stored"] == 2, "{s} {body}");

        ensure!(docker::wait_exit(&docker, &id).await? == 0);
        let job = daemon.wait_finished(&id, Duration::from_secs(120)).await?;
        ensure!(job["status"] == "success", "{job}");
        ensure!(job["line_count"] == OUTAGE_LINES, "{job}");
        let job_id = job["id"].as_str().context("id")?;
        let expected: Vec<String> = (1..=OUTAGE_LINES).map(numbered_line).collect();
        let v = verify_log(&daemon, job_id, &expected).await?;
        let total = stored_lines(&url).await.context("count")?;
        ensure!(total == OUTAGE_LINES + 2, "{total} rows in log_lines");
        let dup_rows = duplicate_rows(&url).await?;
        ensure!(dup_rows == 0);
        let logs = agents.logs();
        let acks = acks_in(&logs);
        let agent_503 = retried_503(&logs);
        ensure!(agent_503 > 0, "the agent never saw a 503");
        eprintln!(
            "reliability: MariaDB killed for {}s: lines={} expected={OUTAGE_LINES} \
             duplicate_rows={dup_rows} seq_gaps=0 stored_before_outage={before} \
             ingest_503_probes={} slowest_ingest_503_ms={} readyz_503_probes={} \
             slowest_readyz_ms={} agent_503_retries={agent_503} acked_duplicates={} \
             readyz_ok_after_restart_ms={} first_line_after_restart_ms={} checksum={} \
             total={:.1}s",
            OUTAGE.as_secs(),
            v.lines,
            ingest_probes.len(),
            slowest_ingest.as_millis(),
            ready_probes.len(),
            slowest_ready.as_millis(),
            acks.duplicates,
            ready_after.as_millis(),
            progress_after.as_millis(),
            &v.checksum[..16],
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }
    .await;
    docker::remove(&docker, &id).await;
    result.with_context(|| {
        format!(
            "{}\nMariaDB log (tail):\n{}",
            logs_tail(&agents, &daemon, 30),
            tail(&mariadb.error_log(), 20)
        )
    })
}

// ---------------------------------------------------------------------------------------
// 4. The same batch three times

fn records(seqs: std::ops::RangeInclusive<u64>, last: u64) -> Vec<Value> {
    seqs.map(|s| {
        let text = if s == last {
            "[COUT] CO_RESULT = true".to_owned()
        } else {
            numbered_line(s)
        };
        json!({"seq": s, "ts": 1_000 + s as i64, "stream": "stdout", "text": text})
    })
    .collect()
}

fn batch_of(container: &str, seqs: std::ops::RangeInclusive<u64>, exit: Option<u64>) -> Value {
    let last = exit.unwrap_or(u64::MAX);
    let mut seg = json!({
        "container_id": container,
        "meta": {"name": "resent", "image": "i", "labels": {}, "created_at": 1, "started_at": 2},
        "records": records(seqs, last),
    });
    if let Some(last_seq) = exit {
        seg["exit"] = json!({"exit_code": 0, "finished_at": 5_000, "last_seq": last_seq});
    }
    json!({"version": 1, "agent": {"id": "t", "node": "n"}, "segments": [seg]})
}

/// A batch sent three times is stored once, and the acknowledgements say so; a batch that
/// overlaps stored lines stores only the new ones.
#[tokio::test(flavor = "multi_thread")]
async fn resent_batches_are_stored_once() -> Result<()> {
    let db = Db::mysql().await?;
    let daemon = Daemon::start(db.url()).await?;
    let cid = format!("{:016x}", rand_u64()).repeat(4);
    let ack = |v: &Value| {
        (
            v["records"].as_u64(),
            v["stored"].as_u64(),
            v["duplicates"].as_u64(),
        )
    };
    // Lines 1..=600, three times.
    let first = batch_of(&cid, 1..=600, None);
    let mut acks = Vec::new();
    for _ in 0..3 {
        let (s, _, body, _) = post_batch(&daemon, &first).await?;
        ensure!(s == 200, "{s} {body}");
        acks.push(ack(&body));
    }
    ensure!(
        acks == [
            (Some(600), Some(600), Some(0)),
            (Some(600), Some(0), Some(600)),
            (Some(600), Some(0), Some(600)),
        ],
        "acks {acks:?}"
    );
    ensure!(db.count("log_lines").await? == 600);
    ensure!(db.count("jobs").await? == 1);
    // Lines 401..=1000 with the verdict and the exit: 400 new, 200 already stored; twice.
    let second = batch_of(&cid, 401..=1000, Some(1000));
    for want in [
        (Some(600), Some(400), Some(200)),
        (Some(600), Some(0), Some(600)),
    ] {
        let (s, _, body, _) = post_batch(&daemon, &second).await?;
        ensure!(
            s == 200 && ack(&body) == want,
            "{s} {body}, wanted {want:?}"
        );
        acks.push(want);
    }
    ensure!(db.count("log_lines").await? == 1000);
    ensure!(db.count("jobs").await? == 1);
    ensure!(duplicate_rows(db.url()).await? == 0);
    let job = daemon.wait_finished(&cid, Duration::from_secs(10)).await?;
    ensure!(
        job["status"] == "success" && job["result"] == true && job["line_count"] == 1000,
        "{job}"
    );
    let expected: Vec<String> = (1..=1000)
        .map(|s| {
            if s == 1000 {
                "[COUT] CO_RESULT = true".to_owned()
            } else {
                numbered_line(s)
            }
        })
        .collect();
    let v = verify_log(&daemon, job["id"].as_str().context("id")?, &expected).await?;
    eprintln!(
        "reliability: resent batches: acks (records, stored, duplicates) = {acks:?}; \
         log_lines={} jobs=1 duplicate_rows=0 checksum={}",
        v.lines,
        &v.checksum[..16]
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// 5. 100 containers at once

const CONTAINERS: usize = 100;
const LINES_EACH: u64 = 1000;

/// Container `i`'s verdict: (last line, exit code, status, reason, result).
fn verdict(i: usize) -> (&'static str, i64, &'static str, &'static str, Value) {
    match i % 5 {
        0 => (
            "[COUT] CO_RESULT = true",
            0,
            "success",
            "CO_RESULT = true",
            json!(true),
        ),
        1 => (
            "[COUT] CO_RESULT = false",
            0,
            "failure",
            "CO_RESULT = false",
            json!(false),
        ),
        2 => ("no verdict", 3, "failure", "exit code 3", Value::Null),
        3 => (
            "[COUT] CO_RESULT = true",
            1,
            "failure",
            "exit code 1 despite CO_RESULT = true",
            json!(true),
        ),
        _ => ("no verdict", 0, "success", "exit code 0", Value::Null),
    }
}

/// Most of `ids` running at the same moment, from Docker's start and finish times.
async fn peak_running(docker: &bollard::Docker, ids: &[String]) -> Result<usize> {
    let mut edges = Vec::new();
    for id in ids {
        let state = docker
            .inspect_container(id, None)
            .await?
            .state
            .context("state")?;
        let at =
            |t: Option<String>| -> Result<i64> { docker::parse_ts(t.as_deref().context("time")?) };
        edges.push((at(state.started_at)?, 1i64));
        edges.push((at(state.finished_at)?, -1));
    }
    // Finishes before starts at the same instant.
    edges.sort();
    let (mut now, mut peak) = (0i64, 0i64);
    for (_, d) in edges {
        now += d;
        peak = peak.max(now);
    }
    Ok(peak as usize)
}

fn container_lines(i: usize) -> Vec<String> {
    let mut v: Vec<String> = (1..LINES_EACH).map(|n| format!("c{i} line {n}")).collect();
    v.push(verdict(i).0.to_owned());
    v
}

/// 100 containers started together, 1,000 lines each (the last one a verdict or not), with
/// a mix of CO_RESULT and exit codes: every line stored once and every verdict right, with
/// all 100 running at the same moment (from Docker's start and finish times).
#[tokio::test(flavor = "multi_thread")]
async fn hundred_containers_at_once() -> Result<()> {
    let started = Instant::now();
    let docker = docker::connect().await?;
    let db = Db::mysql().await?;
    let daemon = Daemon::start(db.url()).await?;
    let label = format!("rel-hundred-{:x}", rand_u64());
    let agents = Agents::start(&daemon.base, &label)?;
    // Every container waits for the file `go` in a shared directory, created once all of
    // them run: they print at the same time however long starting them takes.
    let barrier = tempfile::tempdir()?;
    let specs: Vec<(usize, Spec)> = (0..CONTAINERS)
        .map(|i| {
            let (last, code, ..) = verdict(i);
            // Printed in 10 bursts over ~14 s.
            let script = format!(
                "while [ ! -e /barrier/go ]; do usleep 100000; done; \
                 seq 1 {} | awk '{{print \"c{i} line \" $1; \
                 if ($1 % 100 == 0) {{ fflush(); system(\"sleep 1.5\") }}}}'; \
                 echo '{last}'; exit {code}",
                LINES_EACH - 1
            );
            let mut spec = Spec::new(&label, &script);
            spec.binds = vec![format!("{}:/barrier:ro", barrier.path().display())];
            (i, spec)
        })
        .collect();
    let t_create = Instant::now();
    let runs: Vec<(usize, Result<String>)> = futures::stream::iter(specs.iter())
        .map(|(i, spec)| {
            let docker = &docker;
            async move { (*i, docker::run(docker, spec).await) }
        })
        .buffer_unordered(25)
        .collect()
        .await;
    let start_window = t_create.elapsed();
    std::fs::write(barrier.path().join("go"), b"")?;
    let mut ids = vec![String::new(); CONTAINERS];
    let mut failed = Vec::new();
    for (i, r) in runs {
        match r {
            Ok(id) => ids[i] = id,
            Err(e) => failed.push(format!("container {i}: {e:#}")),
        }
    }
    let result = async {
        ensure!(failed.is_empty(), "starting containers: {failed:?}");
        let jobs = wait_until(Duration::from_secs(180), "100 finished jobs", || async {
            let (s, page) = daemon.get_json("/api/v1/jobs?limit=500").await?;
            ensure!(s == 200, "{page}");
            let jobs = page["jobs"].as_array().context("jobs")?;
            let done = jobs
                .iter()
                .filter(|j| {
                    j["status"] != "running" && ids.iter().any(|id| j["container_id"] == **id)
                })
                .count();
            Ok((done == CONTAINERS).then(|| jobs.clone()))
        })
        .await?;
        let mut total = 0;
        let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
        for (i, id) in ids.iter().enumerate() {
            let (_, code, status, reason, result) = verdict(i);
            let job = jobs
                .iter()
                .find(|j| j["container_id"] == *id)
                .context("job")?;
            let job_id = job["id"].as_str().context("id")?;
            let (_, job) = daemon.get_json(&format!("/api/v1/jobs/{job_id}")).await?;
            ensure!(
                job["status"] == status
                    && job["exit_code"] == code
                    && job["reason"] == reason
                    && job["result"] == result
                    && job["line_count"] == LINES_EACH,
                "container {i}: {job}"
            );
            *outcomes.entry(format!("{status}/{code}")).or_default() += 1;
            total += verify_log(&daemon, job_id, &container_lines(i))
                .await?
                .lines;
        }
        let expected = CONTAINERS as u64 * LINES_EACH;
        ensure!(total == expected, "{total} lines");
        ensure!(db.count("log_lines").await? == expected);
        ensure!(db.count("jobs").await? == CONTAINERS as u64);
        let dup_rows = duplicate_rows(db.url()).await?;
        ensure!(dup_rows == 0);
        let acks = acks_in(&agents.logs());
        let peak = peak_running(&docker, &ids).await?;
        // They all waited for the barrier: all ran at once.
        ensure!(
            peak == CONTAINERS,
            "only {peak} containers ran at once (started within {:.1} s)",
            start_window.as_secs_f64()
        );
        eprintln!(
            "reliability: {CONTAINERS} containers x {LINES_EACH} lines: lines={total} \
             expected={expected} duplicate_rows={dup_rows} seq_gaps=0 \
             jobs_right={CONTAINERS}/{CONTAINERS} outcomes={outcomes:?} \
             acked_batches={} acked_duplicates={} started_within={:.1}s \
             peak_running_at_once={peak} total={:.1}s",
            acks.batches,
            acks.duplicates,
            start_window.as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }
    .await;
    futures::stream::iter(ids.iter().filter(|id| !id.is_empty()))
        .for_each_concurrent(16, |id| docker::remove(&docker, id))
        .await;
    result.with_context(|| format!("agent log (tail):\n{}", tail(&agents.logs(), 30)))
}

/// A database that hangs (SIGSTOP) instead of refusing connections: a batch whose write is
/// stuck is answered 503 with Retry-After at `storage_write_timeout` (2 s here), not held
/// until some larger limit, and the same batch is stored once after the database thaws.
#[tokio::test(flavor = "multi_thread")]
async fn hung_database_answers_503_at_the_write_deadline() -> Result<()> {
    let mariadb = MariaDb::start().await?;
    let url = mariadb.create_database("logarithm").await?;
    let daemon = Daemon::start_with(&url, "storage_write_timeout = \"2s\"\n").await?;
    // A first batch opens pooled connections, which stay open to the frozen server.
    let (s, _, body, _) = post_batch(
        &daemon,
        &small_batch(&format!("{:016x}", rand_u64()).repeat(4)),
    )
    .await?;
    ensure!(s == 200, "{s} {body}");
    let batch = small_batch(&format!("{:016x}", rand_u64()).repeat(4));
    mariadb.freeze()?;
    let answer = post_batch(&daemon, &batch).await;
    mariadb.thaw()?;
    let (s, retry_after, body, took) = answer?;
    eprintln!("reliability: hung database: {s} after {took:?}, Retry-After {retry_after:?}");
    ensure!(s == 503, "{s} {body}");
    ensure!(retry_after.is_some(), "no Retry-After");
    ensure!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(9),
        "answered after {took:?}, expected the 2 s write deadline"
    );
    // After the thaw the resent batch is stored, once.
    let (s, ack) = wait_until(Duration::from_secs(30), "the resend to be accepted", || {
        let (daemon, batch) = (&daemon, &batch);
        async move {
            let (s, _, body, _) = post_batch(daemon, batch).await?;
            Ok((s == 200).then_some((s, body)))
        }
    })
    .await?;
    ensure!(s == 200 && ack["records"] == 2, "{ack}");
    let lines = stored_lines(&url).await.context("count")?;
    ensure!(
        lines == 4,
        "expected the two probe batches' 4 lines, found {lines}"
    );
    Ok(())
}
