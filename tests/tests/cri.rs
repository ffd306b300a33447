//! Issue 9, the `cri` source end to end: the real antilog binary (`source = "cri"`) reads a
//! Kubernetes node's pod log root and ships to the real logarithmd (SQLite).
//!
//! **The Kubernetes API server is a mock** (`logarithm_tests::cri::api`): no API server can
//! run here (no cluster, no kind, no envtest), so an in-process axum server serves the two
//! endpoints antilog's Pod watcher calls (list, and watch with events), with k8s-openapi
//! `Pod` objects, so `kube` parses what a real API server would send. antilog reaches it
//! through a kubeconfig, as it would a real one. The node (mock, pod log root, kubeconfig,
//! logarithmd) is `logarithm_tests::cri::Setup`, shared with the bench's `cri-catchup`.
//!
//! The log files are written by the test exactly as the kubelet and containerd write them:
//! CRI records (`<RFC 3339 nano> <stream> <P|F> <bytes>`), long lines cut into 16 KiB `P`
//! records (one cut inside a UTF-8 character), rotation by renaming `0.log` to
//! `0.log.<time>` and gzip-compressing the older rotation (`.gz`, the plain file deleted),
//! and a container restart writing `1.log`.
//!
//! What it shows: every stored line equals what was written, in order, with its time and
//! stream; the job's container id is the Pod's name (as the engine's Kubernetes runner
//! reports it) and it carries the Pod's `io.containerops.*` labels; the verdict comes from
//! `state.terminated.exitCode` plus the `[COUT] CO_RESULT` line; antilog SIGKILLed while
//! reading and started again loses and doubles nothing; a Pod whose directory goes while
//! antilog is down gets its job closed (exit code unknown) and its checkpoint entry
//! forgotten, as a Docker container removed meanwhile does (`removed.rs`). About 4 s.
//!
//! The kill lands inside the first file (measured: resumed at seq 820 to 1,301 of 2,000),
//! which is then rotated, gzipped and deleted as plain file while antilog is down: the
//! restart resumes inside the `.gz` by its content's fingerprint.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use k8s_openapi::api::core::v1::Pod;
use logarithm_tests::cri::kubelet::{Line, PodLog, PARTIAL};
use logarithm_tests::cri::{annotations, named_pod, PodId, Setup, T0};
use logarithm_tests::{checkpoint_of, wait_until, Agents, Daemon};
use serde_json::Value;

const POD: &str = "build-42-job";
const UID: &str = "6f1c2a4e-1b2c-4d5e-8f90-0123456789ab";

/// The job Pod, as the API server shows it: run `restart` running, or terminated with
/// `exit`; the previous run's end in `lastState`.
fn pod(label: &str, restart: i32, exit: Option<i32>, last_exit: Option<i32>) -> Result<Pod> {
    named_pod((POD, UID, true), label, restart, exit, last_exit)
}

/// The stored lines as [`Line`]s, checking seqs are 1..=N.
fn stored_lines(stored: &[Value]) -> Result<Vec<Line>> {
    let mut out = Vec::with_capacity(stored.len());
    for (i, l) in stored.iter().enumerate() {
        ensure!(
            l["seq"].as_u64() == Some(i as u64 + 1),
            "seq {} at index {i}: {l}",
            l["seq"]
        );
        out.push(Line {
            text: l["text"].as_str().context("text")?.to_owned(),
            stream: match l["stream"].as_str() {
                Some("stderr") => "stderr",
                _ => "stdout",
            },
            ts: l["ts"].as_i64().context("ts")?,
        });
    }
    Ok(out)
}

/// The job of `container_id` once it is no longer running; checks that its stored lines
/// are `written`.
async fn finished(
    daemon: &Daemon,
    agents: &Agents,
    container_id: &str,
    written: &[Line],
) -> Result<Value> {
    let job = wait_until(Duration::from_secs(30), "the job to finish", || async {
        Ok(daemon
            .job_of(container_id)
            .await?
            .filter(|j| j["status"] != "running"))
    })
    .await
    .with_context(|| agents.logs())?;
    let id = job["id"].as_str().context("job id")?;
    let stored = stored_lines(&daemon.all_lines(id).await?)?;
    ensure!(
        stored == written,
        "{} stored, {} written, or they differ",
        stored.len(),
        written.len()
    );
    Ok(job)
}

/// The job of `container_id` once final after run `restart`, with exactly `written` stored.
async fn final_run(
    daemon: &Daemon,
    agents: &Agents,
    container_id: &str,
    restart: u32,
    written: &[Line],
) -> Result<Value> {
    let job = wait_until(
        Duration::from_secs(30),
        "the job's final verdict",
        || async {
            Ok(daemon.job_of(container_id).await?.filter(|j| {
                j["status"] != "running"
                    && j["restart_count"] == restart
                    && j["line_count"].as_u64() == Some(written.len() as u64)
            }))
        },
    )
    .await
    .with_context(|| agents.logs())?;
    let id = job["id"].as_str().context("job id")?;
    let stored = stored_lines(&daemon.all_lines(id).await?)?;
    ensure!(
        stored.len() == written.len(),
        "{} stored, {} written",
        stored.len(),
        written.len()
    );
    for (i, (s, w)) in stored.iter().zip(written).enumerate() {
        ensure!(s == w, "line {i} differs:\nstored  {s:?}\nwritten {w:?}");
    }
    Ok(job)
}

async fn line_count(d: &Daemon) -> Result<u64> {
    line_count_of(d, POD).await
}

async fn line_count_of(d: &Daemon, container_id: &str) -> Result<u64> {
    Ok(d.job_of(container_id)
        .await?
        .and_then(|j| j["line_count"].as_u64())
        .unwrap_or(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_source_ships_exact_lines_across_rotation_restart_and_sigkill() -> Result<()> {
    let setup = Setup::start().await?;
    let (daemon, api, label) = (&setup.daemon, &setup.api, &setup.label);
    let dir = setup.pod_dir((POD, UID, true)).join("job");
    api.set(pod(label, 0, None, None)?);

    // Run 0 has printed before antilog starts.
    let mut log = PodLog::open(&dir, 0, T0, Vec::new())?;
    log.lines(0, 200)?;
    let mut agents = setup.agents()?;
    wait_until(Duration::from_secs(20), "the first lines", || async {
        Ok((line_count(daemon).await? >= 200).then_some(()))
    })
    .await
    .with_context(|| agents.logs())?;

    // While antilog reads: a writer goes on (with short pauses, so antilog keeps up and is
    // killed mid-file), a rotation in the middle; SIGKILL as soon as the reading has gone
    // on. Wherever it lands, nothing may be lost or doubled.
    let writer = std::thread::spawn(move || -> Result<PodLog> {
        for from in (200..2000).step_by(20) {
            if from == 1500 {
                log.rotate("20261201-100001", None)?;
            }
            log.lines(from, from + 20)?;
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(log)
    });
    wait_until(Duration::from_secs(20), "the reading to go on", || async {
        Ok((line_count(daemon).await? >= 600).then_some(()))
    })
    .await
    .with_context(|| agents.logs())?;
    agents.kill();
    let mut log = writer
        .join()
        .map_err(|_| anyhow::anyhow!("the writer panicked"))??;

    // While antilog is down: the next rotation compresses the older file (and deletes the
    // plain one); then run 0 fails and the kubelet restarts the container (`1.log`).
    log.lines(2000, 2100)?;
    log.rotate("20261201-100002", Some("20261201-100001"))?;
    log.lines(2100, 2200)?;
    api.set(pod(label, 1, None, Some(1))?);
    let mut log1 = PodLog::open(&dir, 1, log.ts, std::mem::take(&mut log.written))?;
    log1.lines(0, 120)?;
    log1.line("[COUT] CO_RESULT = true".into(), "stdout")?;
    agents.restart()?;
    log1.lines(120, 180)?;
    api.set(pod(label, 1, Some(0), Some(1))?);
    let written = log1.written.clone();

    let job = final_run(daemon, &agents, POD, 1, &written).await?;
    let id = job["id"].as_str().context("job id")?;
    let (_, job) = daemon.get_json(&format!("/api/v1/jobs/{id}")).await?;
    assert_eq!(job["container_id"], POD, "{job}");
    assert_eq!(job["status"], "success", "{job}");
    assert_eq!(job["exit_code"], 0, "{job}");
    assert_eq!(job["co_result"], "true", "{job}");
    assert_eq!(job["image"], "registry.local/builder:1", "{job}");
    assert_eq!(job["log_driver"], "cri", "{job}");
    for (field, value) in [
        ("flow", "build"),
        ("run", "run-42"),
        ("stage", "compile"),
        ("action", "make"),
        ("job", "job"),
    ] {
        assert_eq!(job[field], value, "{field}: {job}");
    }
    assert_eq!(job["labels"]["io.kubernetes.pod.namespace"], "ci", "{job}");
    // The Pod's annotations, exactly, and nothing else.
    assert_eq!(
        job["annotations"],
        serde_json::json!(annotations(POD)),
        "{job}"
    );
    assert!(job["logs_unavailable"].is_null(), "{job}");
    // The watcher asked for this node's Pods only.
    assert!(
        api.queries()
            .iter()
            .any(|q| q.get("fieldSelector").map(String::as_str) == Some("spec.nodeName=test-node")),
        "{:?}",
        api.queries()
    );
    println!(
        "cri: {} lines ({} long), 2 rotations (1 gzipped while antilog was down), 1 restart, 1 SIGKILL",
        written.len(),
        written.iter().filter(|l| l.text.len() > PARTIAL).count()
    );
    Ok(())
}

/// A job Pod that ends and is deleted at once (the kubelet removes its log directory) is
/// read to its end through the files antilog holds open, with the exit code of its last
/// state; a Pod of no flow run is the job `<namespace>_<pod>_<container>`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_deleted_right_after_its_end_is_read_to_its_end() -> Result<()> {
    let setup = Setup::start().await?;
    let (daemon, api, label) = (&setup.daemon, &setup.api, &setup.label);
    let short = ("short-job", "0a1c2a4e-1b2c-4d5e-8f90-0123456789ab", true);
    let web = ("web-1", "0b1c2a4e-1b2c-4d5e-8f90-0123456789ab", false);
    api.set(named_pod(short, label, 0, None, None)?);
    api.set(named_pod(web, label, 0, None, None)?);
    let mut short_log = setup.job_log(short)?;
    short_log.lines(0, 1)?;
    let mut web_log = setup.job_log(web)?;
    web_log.lines(0, 3)?;
    let agents = setup.agents()?;
    wait_until(
        Duration::from_secs(20),
        "both jobs' first lines",
        || async {
            let short_seen = line_count_of(daemon, short.0).await? >= 1;
            Ok((short_seen && line_count_of(daemon, "ci_web-1_job").await? >= 3).then_some(()))
        },
    )
    .await
    .with_context(|| agents.logs())?;

    // The rest of the job, its end, the Pod deleted and its directory removed at once.
    short_log.lines(1, 300)?;
    api.set(named_pod(short, label, 0, Some(3), None)?);
    api.delete(short.0);
    std::fs::remove_dir_all(setup.pod_dir(short))?;
    let job = finished(daemon, &agents, short.0, &short_log.written).await?;
    assert_eq!(job["status"], "failure", "{job}");
    assert_eq!(job["exit_code"], 3, "{job}");
    let web_job = daemon
        .job_of("ci_web-1_job")
        .await?
        .context("the web job")?;
    assert!(web_job["flow"].is_null(), "{web_job}");
    assert_eq!(
        web_job["labels"]["io.kubernetes.pod.name"], "web-1",
        "{web_job}"
    );
    assert_eq!(
        web_job["annotations"]["kubernetes.io/change-cause"], "deploy web-1",
        "{web_job}"
    );
    Ok(())
}

/// Whether process `pid` holds `path` open (its `/proc/<pid>/fd` links).
fn holds_open(pid: u32, path: &Path) -> Result<bool> {
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        if std::fs::read_link(fd?.path()).is_ok_and(|target| target == path) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A Pod whose directory appears and is removed between two scans of the pod log root,
/// and which the API lists only once it is gone: antilog sees the directory through
/// inotify, opens its log at once (before the Pod is known), and reads it to its end
/// through the open file when the Pod's last state arrives. The positive marker that the
/// file was seen: antilog holds it open (`/proc/<pid>/fd`) before the directory is
/// removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_directory_removed_between_two_scans_is_read_to_its_end() -> Result<()> {
    let setup = Setup::start().await?;
    let (daemon, api, label) = (&setup.daemon, &setup.api, &setup.label);
    let marker = ("marker", "0c1c2a4e-1b2c-4d5e-8f90-0123456789ab", false);
    let brief = ("brief-job", "0d1c2a4e-1b2c-4d5e-8f90-0123456789ab", true);
    // antilog is up and following (its watches are set before its first scan).
    api.set(named_pod(marker, label, 0, None, None)?);
    setup.job_log(marker)?.lines(0, 2)?;
    let agents = setup.agents()?;
    let pid = agents.pid().context("antilog's pid")?;
    wait_until(Duration::from_secs(20), "the marker's lines", || async {
        Ok((line_count_of(daemon, "ci_marker_job").await? >= 2).then_some(()))
    })
    .await
    .with_context(|| agents.logs())?;

    // The Pod's directory and log appear; the API does not list it yet.
    let mut log = setup.job_log(brief)?;
    log.lines(0, 50)?;
    let file = setup.pod_dir(brief).join("job").join("0.log");
    wait_until(
        Duration::from_secs(20),
        "antilog to open the log",
        || async { Ok(holds_open(pid, &file)?.then_some(())) },
    )
    .await
    .with_context(|| agents.logs())?;
    // The rest, the end, the directory removed; only then the API tells of the Pod (its
    // end, then its deletion).
    log.lines(50, 400)?;
    std::fs::remove_dir_all(setup.pod_dir(brief))?;
    api.set(named_pod(brief, label, 0, Some(0), None)?);
    api.delete(brief.0);
    let job = finished(daemon, &agents, brief.0, &log.written).await?;
    assert_eq!(job["status"], "success", "{job}");
    assert_eq!(job["exit_code"], 0, "{job}");
    assert_eq!(job["flow"], "build", "{job}");
    assert!(job["logs_unavailable"].is_null(), "{job}");
    Ok(())
}

/// Run 0 of Pod `p` prints 100 lines, read by a new antilog that is SIGKILLed once its
/// checkpoint holds them all.
async fn read_100_then_kill(setup: &Setup, p: PodId<'_>) -> Result<(PodLog, Agents)> {
    setup.api.set(named_pod(p, &setup.label, 0, None, None)?);
    let mut log = setup.job_log(p)?;
    log.lines(0, 100)?;
    let mut agents = setup.agents()?;
    wait_until(
        Duration::from_secs(20),
        "the checkpoint at the 100th line",
        || async {
            Ok((checkpoint_of(&agents.data_dir(), p.0)? == Some((100, false))).then_some(()))
        },
    )
    .await
    .with_context(|| agents.logs())?;
    agents.kill();
    Ok((log, agents))
}

/// A Pod deleted with its log directory while antilog is down (as `removed.rs` shows for
/// Docker containers): antilog reads part of the Pod's log and is SIGKILLed once its
/// checkpoint holds what it read; meanwhile the Pod prints more, ends, is deleted from the
/// API and its directory removed. Started again, antilog closes the job: failure, exit
/// code unknown, a reason and `logs_unavailable` saying the directory went while it was
/// down; the lines read before the kill stored once each, in order; the Pod's checkpoint
/// entry forgotten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_directory_removed_while_antilog_is_down_closes_its_job() -> Result<()> {
    let setup = Setup::start().await?;
    let (daemon, api, label) = (&setup.daemon, &setup.api, &setup.label);
    let gone = ("gone-job", "0f1c2a4e-1b2c-4d5e-8f90-0123456789ab", true);
    let (mut log, mut agents) = read_100_then_kill(&setup, gone).await?;
    let read = log.written.clone();

    // While antilog is down: 50 more lines, the end, the Pod deleted with its directory.
    log.lines(100, 150)?;
    api.set(named_pod(gone, label, 0, Some(0), None)?);
    api.delete(gone.0);
    std::fs::remove_dir_all(setup.pod_dir(gone))?;
    agents.restart()?;

    let job = finished(daemon, &agents, gone.0, &read).await?;
    assert_eq!(job["status"], "failure", "{job}");
    assert!(job["exit_code"].is_null(), "{job}");
    assert_eq!(
        job["reason"],
        "exit code unknown: the container's log directory was removed while antilog was down",
        "{job}"
    );
    let unavailable = job["logs_unavailable"].as_str().unwrap_or_default();
    assert!(
        unavailable.contains("removed while antilog was down") && unavailable.contains("(seq 100)"),
        "{job}"
    );
    wait_until(
        Duration::from_secs(20),
        "the checkpoint to forget the Pod",
        || async {
            Ok(checkpoint_of(&agents.data_dir(), gone.0)?
                .is_none()
                .then_some(()))
        },
    )
    .await
    .with_context(|| agents.logs())?;
    println!(
        "cri removed while down: stored={} lost=50 logs_unavailable={:?}",
        read.len(),
        job["logs_unavailable"]
    );
    Ok(())
}

/// A run whose log the kubelet created and deleted while antilog was down (it keeps only
/// the last dead container's log): run 0 is read in part and antilog SIGKILLed; meanwhile
/// run 0 ends, run 1 prints, ends and its `1.log` is deleted, run 2 prints and ends. Started
/// again, antilog reads the rest of run 0 and all of run 2, and reports run 1's lines lost
/// on the job (`logs_unavailable`) instead of skipping it silently; the job ends with run
/// 2's exit code and restart count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_log_was_deleted_unread_is_reported_lost() -> Result<()> {
    let setup = Setup::start().await?;
    let (daemon, api, label) = (&setup.daemon, &setup.api, &setup.label);
    let p = ("lost-run", "0e1c2a4e-1b2c-4d5e-8f90-0123456789ab", true);
    let dir = setup.pod_dir(p).join("job");
    let (mut log0, mut agents) = read_100_then_kill(&setup, p).await?;

    // While antilog is down: run 0 ends, run 1 comes and goes, run 2 ends.
    log0.lines(100, 150)?;
    let mut log1 = PodLog::open(&dir, 1, log0.ts, Vec::new())?;
    log1.lines(0, 30)?;
    std::fs::remove_file(dir.join("1.log"))?;
    let mut log2 = PodLog::open(&dir, 2, log1.ts, std::mem::take(&mut log0.written))?;
    log2.lines(0, 40)?;
    log2.line("[COUT] CO_RESULT = true".into(), "stdout")?;
    api.set(named_pod(p, label, 2, Some(0), Some(1))?);
    let written = log2.written.clone();
    agents.restart()?;

    let job = final_run(daemon, &agents, p.0, 2, &written).await?;
    let stored = written.len();
    assert_eq!(job["exit_code"], 0, "{job}");
    let unavailable = job["logs_unavailable"].as_str().unwrap_or_default();
    assert!(
        unavailable.contains("run 1 were deleted before antilog could open them"),
        "{job}"
    );
    println!(
        "cri run deleted unread: stored={stored} lost run 1 (30 lines) reported: {unavailable:?}"
    );
    Ok(())
}
