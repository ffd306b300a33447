//! The `cri-catchup` agent path: a Pod's 1,000,000-line CRI log at rest, read by antilog on
//! `source = "cri"` into SQLite.
//!
//! The node is `logarithm_tests::cri::Setup`: the pod log root written as the kubelet and
//! containerd write it (`<root>/ci_<pod>_<uid>/job/0.log`, one `F` record a line), and the
//! **mock** Kubernetes API server (no API server can run here) serving the Pod already
//! terminated with exit code 0, so the job becomes final once its last line is stored.
//! No dockerd takes part: its CPU is reported as not applicable.

use std::time::Duration;

use anyhow::{Context, Result};
use logarithm_tests::cri::{named_pod, Setup, T0};
use logarithm_tests::ingest_client::line;
use logarithm_tests::Agent;

use super::{all_stored, cat, AgentRun, Meter};
use crate::LINES;

/// The Pod (not a flow run's job: its job is `ci_<pod>_job`).
const POD: (&str, &str, bool) = ("bench", "0e1c2a4e-1b2c-4d5e-8f90-0123456789ab", false);

/// Writes the log and the Pod's end, then measures from antilog's start to the job final
/// with every line stored.
pub async fn bench_cri() -> Result<AgentRun> {
    let setup = Setup::start().await?;
    // One record every 1,000,003 ns, the last at the Pod's start time (times are only
    // stored, nothing checks them here).
    let mut log = setup.job_log_from(POD, T0 - 1_000_003 * LINES as i64 - 1)?;
    log.at_rest((1..=LINES).map(line))?;
    setup
        .api
        .set(named_pod(POD, &setup.label, 0, Some(0), None)?);
    let data = tempfile::tempdir()?;
    let agent = Agent::start_with(
        &setup.daemon.base,
        &setup.label,
        tempfile::tempdir()?,
        data.path().join("data"),
        &setup.agent_toml(),
    )?;
    let pid = agent.proc.pid().context("agent pid")?;
    let meter = Meter::start(pid, None)?;
    let container_id = format!("ci_{}_job", POD.0);
    let job = setup
        .daemon
        .wait_finished(&container_id, Duration::from_secs(900))
        .await
        .with_context(|| agent.proc.log())?;
    let mut run = meter.stop("Pod log at rest → antilog (cri) → SQLite".into())?;
    run.cat_secs = Some(cat(&setup.pod_dir(POD).join("job").join("0.log"))?);
    all_stored(&job)?;
    Ok(run)
}
