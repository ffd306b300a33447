//! Section 6 (issue 12, P3): live follow over SSE.
//!
//! - Latency: a container prints about 10,000 lines/s for 30 s; antilog (default source)
//!   ships them, logarithmd stores them and pushes them to one SSE client
//!   (`GET /api/v1/jobs/{id}/logs/stream`). A line's latency is the client's clock when its
//!   `line` event arrives minus the line's timestamp (Docker's, taken when the container
//!   wrote it); same machine, same clock. Lines of the first second after the client
//!   connects are left out (they may come from the catch-up read, not the push).
//! - Idle followers: logarithmd's CPU over 10 s with a running, silent job, first with no
//!   follower, then with 200 SSE followers of it.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use logarithm_tests::docker::{self, Spec};
use logarithm_tests::{wait_until, Agent, Daemon, Db};

use protocol::now_ns;

use crate::procfs::cpu_seconds;

/// Lines printed per pause, and the pause (µs): about 10,000 lines/s with the pause's own
/// fork and exec.
const PACED: &str = "awk 'BEGIN { for (i = 1; i <= 300000; i++) { \
     printf \"%010d live line xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\\n\", i; \
     if (i % 100 == 0) { fflush(); system(\"usleep 8000\") } } }'";
/// Idle SSE followers.
const FOLLOWERS: usize = 200;
const IDLE_WINDOW: Duration = Duration::from_secs(10);

pub struct LiveRun {
    lines: usize,
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    idle_cpu_none: f64,
    idle_cpu_followers: f64,
}

impl LiveRun {
    pub fn print(&self) {
        println!(
            "\nlive follow (SSE): {} lines measured at {:.0} lines/s: latency p50 {:.1} ms, \
             p99 {:.1} ms, max {:.1} ms",
            self.lines, self.rate, self.p50_ms, self.p99_ms, self.max_ms
        );
        println!(
            "logarithmd CPU over {} s beside a silent running job: {:.3} CPU-s with no \
             follower, {:.3} CPU-s with {FOLLOWERS} SSE followers",
            IDLE_WINDOW.as_secs(),
            self.idle_cpu_none,
            self.idle_cpu_followers
        );
    }
}

pub async fn bench_live() -> Result<LiveRun> {
    let db = Db::sqlite()?;
    let daemon = Daemon::start(db.url()).await?;
    let label = format!("bench-live-{:x}", logarithm_tests::rand_u64());
    let docker = docker::connect().await?;
    let _agent = Agent::start(&daemon.base, &label)?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let id = docker::run(&docker, &Spec::new(&label, PACED)).await?;
    let latency = follow_latency(&daemon, &id).await;
    docker::remove(&docker, &id).await;
    let (latencies, rate) = latency?;

    let idle = docker::run(&docker, &Spec::new(&label, "echo ready; sleep 60")).await?;
    let idle_cost = idle_cost(&daemon, &idle).await;
    docker::remove(&docker, &idle).await;
    let (idle_cpu_none, idle_cpu_followers) = idle_cost?;

    let pick = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize] as f64 / 1e6;
    Ok(LiveRun {
        lines: latencies.len(),
        rate,
        p50_ms: pick(0.5),
        p99_ms: pick(0.99),
        max_ms: pick(1.0),
        idle_cpu_none,
        idle_cpu_followers,
    })
}

async fn job_id(daemon: &Daemon, container: &str) -> Result<String> {
    let job = wait_until(Duration::from_secs(30), "the job", || async {
        daemon.job_of(container).await
    })
    .await?;
    Ok(job["id"].as_str().context("job id")?.to_owned())
}

async fn open_stream(daemon: &Daemon, job: &str) -> Result<reqwest::Response> {
    let resp = daemon
        .http
        .get(format!("{}/api/v1/jobs/{job}/logs/stream", daemon.base))
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("the stream answered {}", resp.status());
    }
    Ok(resp)
}

/// Follows the job of `container` to its `end` event; returns the sorted latencies (ns)
/// of the lines pushed after the first second, and the rate they were written at.
async fn follow_latency(daemon: &Daemon, container: &str) -> Result<(Vec<i64>, f64)> {
    let job = job_id(daemon, container).await?;
    let mut resp = open_stream(daemon, &job).await?;
    let from = now_ns() + 1_000_000_000;
    let mut buf: Vec<u8> = Vec::new();
    let mut latencies = Vec::new();
    let (mut first_ts, mut last_ts, mut lines) = (i64::MAX, 0i64, 0u64);
    let deadline = Instant::now() + Duration::from_secs(300);
    'read: while let Some(chunk) = tokio::time::timeout_at(deadline.into(), resp.chunk())
        .await
        .context("the stream did not end in time")??
    {
        let arrived = now_ns();
        buf.extend_from_slice(&chunk);
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = buf.drain(..end + 2).collect();
            let text = String::from_utf8_lossy(&event);
            let kind = text.lines().find_map(|l| l.strip_prefix("event:"));
            match kind.map(str::trim) {
                Some("end") => break 'read,
                Some("line") => {
                    let data = text
                        .lines()
                        .find_map(|l| l.strip_prefix("data:"))
                        .context("line event without data")?;
                    let v: serde_json::Value = serde_json::from_str(data.trim())?;
                    let ts = v["ts"].as_i64().context("ts")?;
                    lines += 1;
                    first_ts = first_ts.min(ts);
                    last_ts = last_ts.max(ts);
                    if ts >= from {
                        latencies.push(arrived - ts);
                    }
                }
                _ => {}
            }
        }
    }
    if latencies.is_empty() {
        bail!("no line arrived live");
    }
    latencies.sort_unstable();
    // The rate the container wrote at: the lines it printed over the span of their stamps.
    let rate = lines as f64 / ((last_ts - first_ts) as f64 / 1e9);
    Ok((latencies, rate))
}

/// logarithmd's CPU seconds over [`IDLE_WINDOW`] without, then with [`FOLLOWERS`]
/// followers of the silent job of `container`.
async fn idle_cost(daemon: &Daemon, container: &str) -> Result<(f64, f64)> {
    let job = job_id(daemon, container).await?;
    let pid = daemon.proc.pid().context("logarithmd pid")?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let c0 = cpu_seconds(pid)?;
    tokio::time::sleep(IDLE_WINDOW).await;
    let none = cpu_seconds(pid)? - c0;
    let mut streams = Vec::with_capacity(FOLLOWERS);
    for _ in 0..FOLLOWERS {
        streams.push(open_stream(daemon, &job).await?);
    }
    // Each reads what there is (the one line), then idles.
    let readers: Vec<_> = streams
        .into_iter()
        .map(|mut s| tokio::spawn(async move { while let Ok(Some(_)) = s.chunk().await {} }))
        .collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let c1 = cpu_seconds(pid)?;
    tokio::time::sleep(IDLE_WINDOW).await;
    let with = cpu_seconds(pid)? - c1;
    for r in readers {
        r.abort();
    }
    Ok((none, with))
}
