//! End-to-end tests of antilog's disk spool: real containers, the real `antilog` and
//! `logarithmd` binaries, SQLite storage. logarithmd is down while containers print; it is
//! started later on the address the agent was configured with.
//!
//! Every test checks the stored log against what the container printed (Docker's own view,
//! and the lines the script is known to print): exact count, seqs exactly 1..=N, every
//! text, timestamps never going back, and a SHA-256 over all lines (JSON pages and the raw
//! download).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use logarithm_tests::docker::{self, Spec};
use logarithm_tests::stored_log::{checksum, verify_log};
use logarithm_tests::{checkpoint_of, free_port, rand_u64, tail, wait_until, Agent, Daemon, Db};

/// `n` numbered lines, `spool line <i, 6 digits> <pad>`, printed as fast as busybox can.
fn script(n: u64, pad: &str) -> String {
    format!("awk 'BEGIN {{ for (i = 1; i <= {n}; i++) printf \"spool line %06d {pad}\\n\", i }}'")
}

fn expected_lines(n: u64, pad: &str) -> Vec<String> {
    (1..=n)
        .map(|i| format!("spool line {i:06} {pad}"))
        .collect()
}

/// Segment files in the spool directory and their total size.
fn spool_files(data_dir: &Path) -> Result<(usize, u64)> {
    let mut n = 0;
    let mut bytes = 0;
    for e in std::fs::read_dir(data_dir.join("spool"))? {
        let e = e?;
        if e.file_name().to_string_lossy().ends_with(".seg") {
            n += 1;
            bytes += e.metadata()?.len();
        }
    }
    Ok((n, bytes))
}

/// The value of a series (`name` or `name{labels}`) in the agent's `/metrics`.
async fn gauge(agent: &Agent, name: &str) -> Result<f64> {
    let addr = agent
        .metrics_addr
        .as_deref()
        .context("agent has no metrics address")?;
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await?
        .text()
        .await?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .with_context(|| format!("{name} not in /metrics"))
}

/// Waits for the job of `container`, then checks its stored log line by line against
/// `expected` ([`verify_log`]); returns the checksum.
async fn verify(daemon: &Daemon, container: &str, expected: &[String]) -> Result<String> {
    let job = daemon
        .wait_finished(container, Duration::from_secs(180))
        .await?;
    ensure!(
        job["status"] == "success" && job["exit_code"] == 0,
        "job did not succeed: {job}"
    );
    ensure!(
        job["line_count"] == expected.len() as u64,
        "line_count {} != {}",
        job["line_count"],
        expected.len()
    );
    let job_id = job["id"].as_str().context("job id")?;
    Ok(verify_log(daemon, job_id, expected).await?.checksum)
}

struct Setup {
    db: Db,
    port: u16,
    server: String,
    label: String,
    /// Outlives the agents, so a restarted agent finds its checkpoint and spool.
    _data: tempfile::TempDir,
    data_dir: PathBuf,
}

fn setup(name: &str) -> Result<Setup> {
    let port = free_port()?;
    let data = tempfile::tempdir()?;
    let data_dir = data.path().join("data");
    Ok(Setup {
        db: Db::sqlite()?,
        port,
        server: format!("http://127.0.0.1:{port}"),
        label: format!("{name}-{:x}", rand_u64()),
        _data: data,
        data_dir,
    })
}

impl Setup {
    fn agent(&self, extra_toml: &str) -> Result<Agent> {
        Agent::start_with(
            &self.server,
            &self.label,
            tempfile::tempdir()?,
            self.data_dir.clone(),
            extra_toml,
        )
    }
}

/// logarithmd is down while a container prints 50,000 lines, exits and is removed; the
/// agent is SIGKILLed and started again; then logarithmd comes up: every line is stored,
/// and it can only have come from the spool (the container is gone). The checkpoint never
/// moves meanwhile: it follows logarithmd's acknowledgements only.
#[tokio::test(flavor = "multi_thread")]
async fn outage_with_removed_container_is_delivered_from_the_spool() -> Result<()> {
    const N: u64 = 50_000;
    const PAD: &str = "abcdefghijklmnopqrstuvwxyz";
    let s = setup("spool-outage")?;
    let docker = docker::connect().await?;
    let mut agent = s.agent("batch_max_age = \"50ms\"\n")?;
    let id = docker::run(&docker, &Spec::new(&s.label, &script(N, PAD))).await?;
    let exit = docker::wait_exit(&docker, &id).await?;
    ensure!(exit == 0, "container exited with {exit}");
    let expected = expected_lines(N, PAD);
    // What the container printed, by Docker's own account.
    let printed = docker::docker_lines(&docker, &id).await?;
    let want = checksum(expected.iter().map(|l| l.as_bytes()));
    ensure!(
        printed.len() == N as usize && checksum(printed.iter().map(|l| &l.line[..])) == want,
        "Docker holds {} lines that differ from the script's",
        printed.len()
    );

    // Every line read (and, a moment later, spooled with the exit).
    let read_stdout = "antilog_lines_read_total{stream=\"stdout\"}";
    let r = wait_until(Duration::from_secs(120), "all lines read", || async {
        Ok((gauge(&agent, read_stdout).await? == N as f64).then_some(()))
    })
    .await;
    if let Err(e) = r {
        anyhow::bail!("{e:#}\nagent log:\n{}", tail(&agent.proc.log(), 40));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The checkpoint moves only with logarithmd's acknowledgements: none yet.
    ensure!(
        checkpoint_of(&s.data_dir, &id)?.is_none(),
        "checkpoint moved while logarithmd is down"
    );
    let (segments, bytes) = spool_files(&s.data_dir)?;
    ensure!(
        bytes > 100_000,
        "spool holds only {bytes} bytes in {segments} files"
    );

    docker::remove(&docker, &id).await;
    ensure!(
        docker.inspect_container(&id, None).await.is_err(),
        "the container still exists"
    );
    // The agent noticed the removal (and spooled it).
    wait_until(Duration::from_secs(60), "follower ended", || async {
        Ok((gauge(&agent, "antilog_containers_followed").await? == 0.0).then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Survives a SIGKILL of the agent.
    agent.proc.kill();
    let agent = s.agent("batch_max_age = \"50ms\"\n")?;
    let daemon = Daemon::start_on(s.db.url(), s.port, "").await?;
    let got = verify(&daemon, &id, &expected).await;
    let log = agent.proc.log();
    let got = got.map_err(|e| anyhow::anyhow!("{e:#}\nagent log:\n{}", tail(&log, 40)))?;
    ensure!(
        log.contains("spool opened") && !log.contains("segments_to_deliver=0"),
        "the restarted agent found nothing to deliver in its spool:\n{}",
        tail(&log, 40)
    );
    // The restarted agent read nothing from Docker and shipped exactly the spooled lines.
    for stream in ["stdout", "stderr"] {
        let read = gauge(
            &agent,
            &format!("antilog_lines_read_total{{stream=\"{stream}\"}}"),
        )
        .await?;
        ensure!(
            read == 0.0,
            "the restarted agent read {read} {stream} lines from Docker"
        );
    }
    let shipped = gauge(&agent, "antilog_records_shipped_total").await?;
    ensure!(
        shipped == N as f64,
        "the restarted agent shipped {shipped} records"
    );
    // Delivered segments are deleted.
    wait_until(Duration::from_secs(30), "spool emptied", || async {
        let (n, bytes) = spool_files(&s.data_dir)?;
        Ok((n <= 2 && bytes < 1 << 20).then_some(()))
    })
    .await?;
    // A second container, followed while logarithmd is up: its entry appears once its
    // lines and exit are acknowledged, and goes once its removal is. Frames are
    // acknowledged in spool order, so that entry is written after every replayed frame of
    // the gone container was: its absence then is checked, not assumed.
    let second = docker::run(&docker, &Spec::new(&s.label, "echo one; echo two")).await?;
    wait_until(
        Duration::from_secs(30),
        "the second container's checkpoint entry",
        || async {
            Ok(checkpoint_of(&s.data_dir, &second)?
                .filter(|&(seq, exit)| seq >= 2 && exit)
                .map(|_| ()))
        },
    )
    .await?;
    ensure!(
        checkpoint_of(&s.data_dir, &id)?.is_none(),
        "the removed container came back into the checkpoint"
    );
    docker::remove(&docker, &second).await;
    wait_until(
        Duration::from_secs(30),
        "the second container's removal acknowledged",
        || async { Ok(checkpoint_of(&s.data_dir, &second)?.is_none().then_some(())) },
    )
    .await?;
    println!(
        "spool outage: lines={N} seqs=1..{N} removed_before_delivery=true agent_sigkilled=true \
         spooled_bytes={bytes} segments={segments} checksum={}",
        &got[..16]
    );
    Ok(())
}

/// A spool far smaller than the backlog: the agent pauses reading and says so, stays
/// within the limit, and once logarithmd is back everything arrives, read from Docker
/// where the agent had stopped.
#[tokio::test(flavor = "multi_thread")]
async fn full_spool_pauses_reading_and_loses_nothing() -> Result<()> {
    const N: u64 = 30_000;
    const MAX: u64 = 1 << 20;
    let pad = "0123456789".repeat(10);
    let s = setup("spool-full")?;
    let docker = docker::connect().await?;
    let agent = s.agent(&format!(
        "spool_max_bytes = {MAX}\nspool_segment_bytes = {}\ncompression = \"none\"\n\
         batch_max_bytes = 65536\nbatch_max_age = \"50ms\"\n",
        MAX / 8
    ))?;
    let id = docker::run(&docker, &Spec::new(&s.label, &script(N, &pad))).await?;
    let expected = expected_lines(N, &pad);

    let paused = wait_until(Duration::from_secs(60), "the pause message", || async {
        Ok(agent
            .proc
            .log()
            .lines()
            .find(|l| {
                l.contains("spool full (")
                    && l.contains(&format!(
                        " of {MAX} bytes): reading paused until logarithmd catches up"
                    ))
            })
            .map(str::to_owned))
    })
    .await;
    let paused = paused.map_err(|e| anyhow::anyhow!("{e:#}\n{}", tail(&agent.proc.log(), 30)))?;
    ensure!(paused.contains("WARN"), "logged at warn: {paused}");
    // The container finishes; Docker keeps what the agent does not read.
    ensure!(docker::wait_exit(&docker, &id).await? == 0);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let read_stdout = "antilog_lines_read_total{stream=\"stdout\"}";
    let seq_paused = gauge(&agent, read_stdout).await? as u64;
    ensure!(
        seq_paused > 0 && seq_paused < N / 2,
        "reading paused early: {seq_paused} of {N} lines read"
    );
    // Nothing is acknowledged while logarithmd is down: the checkpoint has not moved.
    ensure!(
        checkpoint_of(&s.data_dir, &id)?.is_none(),
        "checkpoint moved while logarithmd is down"
    );
    let (_, bytes) = spool_files(&s.data_dir)?;
    ensure!(bytes <= MAX, "spool files hold {bytes} bytes, limit {MAX}");
    ensure!(gauge(&agent, "antilog_reading_paused").await? == 1.0);
    ensure!(gauge(&agent, "antilog_spool_limit_bytes").await? == MAX as f64);
    let gauge_bytes = gauge(&agent, "antilog_spool_bytes").await?;
    ensure!(
        gauge_bytes > (MAX / 2) as f64 && gauge_bytes <= MAX as f64,
        "antilog_spool_bytes {gauge_bytes}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let still = gauge(&agent, read_stdout).await? as u64;
    ensure!(
        still == seq_paused,
        "reading went on while paused: {seq_paused} -> {still}"
    );

    let daemon = Daemon::start_on(s.db.url(), s.port, "").await?;
    let got = verify(&daemon, &id, &expected).await;
    let log = agent.proc.log();
    let got = got.map_err(|e| anyhow::anyhow!("{e:#}\nagent log:\n{}", tail(&log, 40)))?;
    // Docker's own view agrees.
    let printed = docker::docker_lines(&docker, &id).await?;
    ensure!(checksum(printed.iter().map(|l| &l.line[..])) == got);
    ensure!(
        log.contains("spool has room again: reading resumed"),
        "no resume message:\n{}",
        tail(&log, 30)
    );
    let pauses = log
        .matches("reading paused until logarithmd catches up")
        .count();
    ensure!(gauge(&agent, "antilog_reading_paused").await? == 0.0);
    docker::remove(&docker, &id).await;
    println!(
        "spool full: lines={N} seqs=1..{N} limit={MAX} paused_at_seq={seq_paused} \
         spool_bytes_while_paused={bytes} pauses_logged={pauses} checksum={}",
        &got[..16]
    );
    Ok(())
}
