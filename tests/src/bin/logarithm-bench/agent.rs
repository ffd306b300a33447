//! Sections 3–5: the agent paths, a container's log through antilog into SQLite; [`cri`]
//! the `cri-catchup` path (a Pod's log at rest).

mod cri;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use logarithm_tests::docker::{self, Spec};
use logarithm_tests::{Agent, Daemon, Db};

use protocol::now_ns;

use crate::procfs::{cpu_seconds, dockerd_pid, peak_rss_mib};
use crate::{Figure, LINES, LINE_BYTES};

pub use cri::bench_cri;

/// What one agent path cost.
pub struct AgentRun {
    pub figure: Figure,
    agent_cpu: f64,
    /// None where no dockerd takes part (the `cri` source).
    dockerd_cpu: Option<f64>,
    peak_rss_mib: f64,
    /// From the container's exit (Docker's FinishedAt) to the job seen final.
    exit_to_final: Option<f64>,
    /// Catching up: seconds `cat` takes to read the container's log file.
    pub cat_secs: Option<f64>,
}

impl AgentRun {
    pub fn print_costs(&self) {
        let per_m = 1e6 / self.figure.lines as f64;
        println!(
            "| {:<44} | {:>9.2} | {:>9} | {:>9.1} | {:>9} |",
            self.figure.what,
            self.agent_cpu * per_m,
            self.dockerd_cpu
                .map_or("n/a".to_string(), |c| format!("{:.2}", c * per_m)),
            self.peak_rss_mib,
            self.exit_to_final
                .map_or("-".to_string(), |s| format!("{s:.2}"))
        );
    }
}

fn bench_spec(label: &str) -> Spec {
    let payload = "x".repeat(LINE_BYTES);
    let mut spec = Spec::new(label, &format!("yes '{payload}' | head -n {LINES}"));
    // Docker deletes rotated log files whether or not anyone read them (this machine keeps
    // 3 × 10 MB); a container printing 170 MB at full speed would outrun any reader, so
    // the bench container keeps its whole log, as a production job's retention should.
    spec.log_driver = Some("json-file".into());
    spec.log_opts = vec![
        ("max-size".into(), "1g".into()),
        ("max-file".into(), "1".into()),
    ];
    spec
}

/// Docker's FinishedAt of a container, in ns since the epoch.
pub async fn finished_at(docker: &bollard::Docker, id: &str) -> Result<i64> {
    let info = docker.inspect_container(id, None).await?;
    let at = info
        .state
        .and_then(|s| s.finished_at)
        .context("FinishedAt")?;
    docker::parse_ts(&at)
}

/// `live`: the agent follows the container while it prints; else it starts once the
/// container has finished (catching up). `source`: antilog's `source` setting.
pub async fn bench_agent(live: bool, source: &str) -> Result<AgentRun> {
    let db = Db::sqlite()?;
    let daemon = Daemon::start(db.url()).await?;
    let label = format!("bench-{:x}", logarithm_tests::rand_u64());
    let docker = docker::connect().await?;
    let dockerd = dockerd_pid()?;
    let mut id = None;
    if !live {
        let c = docker::run(&docker, &bench_spec(&label)).await?;
        docker::wait_exit(&docker, &c).await?;
        id = Some(c);
    }
    let data = tempfile::tempdir()?;
    let agent = Agent::start_with(
        &daemon.base,
        &label,
        tempfile::tempdir()?,
        data.path().join("data"),
        &format!("source = \"{source}\"\n"),
    )?;
    let pid = agent.proc.pid().context("agent pid")?;
    if live {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let what = if live {
        format!("container → antilog ({source}, live) → SQLite")
    } else {
        format!("finished container → antilog ({source}) → SQLite")
    };
    let meter = Meter::start(pid, Some(dockerd))?;
    let id = match id {
        Some(id) => id,
        None => docker::run(&docker, &bench_spec(&label)).await?,
    };
    let job = daemon.wait_finished(&id, Duration::from_secs(900)).await?;
    let final_seen = now_ns();
    let mut run = meter.stop(what)?;
    if live {
        run.exit_to_final = Some((final_seen - finished_at(&docker, &id).await?) as f64 / 1e9);
    } else {
        let path = docker
            .inspect_container(&id, None)
            .await?
            .log_path
            .context("LogPath")?;
        run.cat_secs = Some(cat(Path::new(&path))?);
    }
    docker::remove(&docker, &id).await;
    all_stored(&job)?;
    Ok(run)
}

/// antilog's CPU and the time (and dockerd's CPU) from [`Meter::start`] on.
struct Meter {
    pid: u32,
    dockerd: Option<u32>,
    cpu0: f64,
    dockerd_cpu0: f64,
    start: Instant,
}

impl Meter {
    /// Starts measuring antilog `pid` and, if any, `dockerd`.
    fn start(pid: u32, dockerd: Option<u32>) -> Result<Meter> {
        Ok(Meter {
            pid,
            dockerd,
            cpu0: cpu_seconds(pid)?,
            dockerd_cpu0: dockerd.map(cpu_seconds).transpose()?.unwrap_or(0.0),
            start: Instant::now(),
        })
    }

    /// Path `what`'s figures for [`LINES`] lines, from the start to now, and antilog's peak
    /// RSS.
    fn stop(&self, what: String) -> Result<AgentRun> {
        let secs = self.start.elapsed().as_secs_f64();
        let dockerd_cpu = match self.dockerd {
            Some(d) => Some(cpu_seconds(d)? - self.dockerd_cpu0),
            None => None,
        };
        Ok(AgentRun {
            figure: Figure {
                what,
                secs,
                lines: LINES,
            },
            agent_cpu: cpu_seconds(self.pid)? - self.cpu0,
            dockerd_cpu,
            peak_rss_mib: peak_rss_mib(self.pid)?,
            exit_to_final: None,
            cat_secs: None,
        })
    }
}

/// Fails unless the final `job` has every one of the [`LINES`] lines.
fn all_stored(job: &serde_json::Value) -> Result<()> {
    if job["line_count"] != LINES {
        bail!("agent bench stored {} lines", job["line_count"]);
    }
    Ok(())
}

/// Seconds `cat` takes to read a log file (page cache warm: just written or read).
fn cat(path: &Path) -> Result<f64> {
    let t = Instant::now();
    let status = std::process::Command::new("cat")
        .arg(path)
        .stdout(std::process::Stdio::null())
        .status()?;
    if !status.success() {
        bail!("cat {} failed", path.display());
    }
    Ok(t.elapsed().as_secs_f64())
}
