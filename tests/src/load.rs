//! The load scenario of issue 11 ("reads cannot hurt ingest"), shared by the benchmark's
//! `load` section (1,000,000 lines, 50 downloads, 200 follows) and the bounded end-to-end
//! test `tests/tests/reads.rs`.
//!
//! On one logarithmd: two stored jobs for downloads (`small`, read to its end, and `big`,
//! read to its end or to `max_download_lines`), and `watched` running jobs that get a
//! trickle of 10-line batches all along. Then, after one unmeasured phase that warms the
//! database up (a new database's first writes are slower, which would flatter phase 2),
//! two phases, each ingesting `lines` lines into `senders` new containers at once (zstd
//! batches of 5,000, as agents send):
//!
//! 1. alone: no reader;
//! 2. with readers: `downloads` clients download the raw log of `small` and `big` in turn,
//!    again and again, and `follows` SSE clients follow the watched jobs from their first
//!    line, all connected before the clock starts.
//!
//! After phase 2 the watched jobs exit, the downloads stop, and every follower must have
//! seen each of its job's lines once, in order, then `end`. The report has both ingest
//! rates, the 503 answers ingest got, how every download ended, and logarithmd's peak RSS.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::task::JoinSet;

use crate::ingest_client::{batch_body, bodies, container_id, line, post, post_all};
use crate::{wait_until, Daemon, Db};

/// Lines of each trickle batch into a watched job, and the pause between rounds.
const TRICKLE_LINES: u64 = 10;
const TRICKLE_PAUSE: Duration = Duration::from_millis(100);
/// Lines each watched job has before the follows start.
const WATCHED_FIRST: u64 = 100;

/// The scenario's sizes.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Lines ingested in each phase, split over `senders` containers.
    pub lines: u64,
    pub senders: u64,
    /// Concurrent raw downloads in phase 2.
    pub downloads: usize,
    /// Concurrent SSE follows in phase 2.
    pub follows: usize,
    /// Lines of the stored jobs the downloads read.
    pub small_lines: u64,
    pub big_lines: u64,
    /// Running jobs the follows follow.
    pub watched: usize,
    /// The daemon's `max_download_lines`: a download of `big` longer than this ends with
    /// the truncation line.
    pub max_download_lines: u64,
}

/// How the downloads ended.
#[derive(Debug, Default)]
pub struct Downloads {
    pub complete: AtomicU64,
    pub truncated: AtomicU64,
    pub lines: AtomicU64,
}

/// What a run measured.
#[derive(Debug)]
pub struct Report {
    pub lines: u64,
    pub alone_secs: f64,
    pub with_readers_secs: f64,
    /// 503 answers to ingest (each batch was sent again), both phases.
    pub unavailable: u64,
    pub downloads: Downloads,
    /// Follows that saw every line of their job in order, then `end`.
    pub follows_complete: usize,
    /// logarithmd's VmHWM at the end, MiB.
    pub peak_rss_mib: f64,
}

impl Report {
    pub fn rate_alone(&self) -> f64 {
        self.lines as f64 / self.alone_secs
    }

    pub fn rate_with_readers(&self) -> f64 {
        self.lines as f64 / self.with_readers_secs
    }

    /// Ingest rate with readers as a share of the rate alone.
    pub fn ratio(&self) -> f64 {
        self.rate_with_readers() / self.rate_alone()
    }
}

/// Peak resident memory of a process (VmHWM), in MiB.
pub fn peak_rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .context("VmHWM")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kb / 1024.0)
}

/// Runs the scenario on `daemon` (storage `db`, which must be fresh).
pub async fn run(daemon: &Daemon, db: &Db, plan: &Plan) -> Result<Report> {
    let small = stored_job(daemon, plan.small_lines).await?;
    let big = stored_job(daemon, plan.big_lines).await?;
    let watched: Vec<String> = (0..plan.watched).map(|_| container_id()).collect();
    let lists = watched
        .iter()
        .map(|c| Ok(vec![batch_body(c, 1, WATCHED_FIRST, true, false)?]))
        .collect::<Result<Vec<_>>>()?;
    let mut unavailable = post_all(daemon, lists).await?;
    let trickle = Trickle::start(daemon, &watched);
    // Bodies are prepared before the clock starts: this measures logarithmd and storage.
    let (warm_up, alone, beside) = (
        phase_bodies(plan)?,
        phase_bodies(plan)?,
        phase_bodies(plan)?,
    );
    // A first phase, not measured, so the measured ones both run on a warm database (the
    // first writes to a new database are slower, which would flatter the second phase).
    unavailable += post_all(daemon, warm_up).await?;

    let t = Instant::now();
    unavailable += post_all(daemon, alone).await?;
    let alone_secs = t.elapsed().as_secs_f64();

    let stop = Arc::new(AtomicBool::new(false));
    let downloads = Arc::new(Downloads::default());
    let mut readers = JoinSet::new();
    for i in 0..plan.downloads {
        let jobs = if i % 2 == 0 {
            [&small, &big]
        } else {
            [&big, &small]
        };
        let jobs = jobs.map(|j| j.clone());
        let (http, base) = (daemon.http.clone(), daemon.base.clone());
        let (stop, tally, budget) = (stop.clone(), downloads.clone(), plan.max_download_lines);
        readers.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for job in &jobs {
                    download(&http, &base, job, budget, &tally).await?;
                }
            }
            Ok::<_, anyhow::Error>(())
        });
    }
    let connected = Arc::new(AtomicUsize::new(0));
    let mut follows = JoinSet::new();
    for i in 0..plan.follows {
        let job = daemon
            .job_of(&watched[i % watched.len()])
            .await?
            .context("a watched job")?;
        let id = job["id"].as_str().context("job id")?.to_owned();
        let (http, base) = (daemon.http.clone(), daemon.base.clone());
        let connected = connected.clone();
        follows.spawn(async move { follow(&http, &base, &id, &connected).await });
    }
    wait_until(
        Duration::from_secs(60),
        "every follow connected",
        || async { Ok((connected.load(Ordering::Relaxed) >= plan.follows).then_some(())) },
    )
    .await?;

    let t = Instant::now();
    unavailable += post_all(daemon, beside).await?;
    let with_readers_secs = t.elapsed().as_secs_f64();

    stop.store(true, Ordering::Relaxed);
    // Ingest ends first, so the downloads' last rounds are not paced beside it.
    let (refused, watched_lines) = trickle.finish(daemon).await?;
    unavailable += refused;
    while let Some(r) = readers.join_next().await {
        r??;
    }
    let mut follows_complete = 0;
    while let Some(r) = follows.join_next().await {
        r??;
        follows_complete += 1;
    }

    let expected = plan.small_lines + plan.big_lines + 3 * plan.lines + watched_lines;
    let stored = db.count("log_lines").await?;
    if stored != expected {
        bail!("stored {stored} lines, sent {expected} (each once)");
    }
    let pid = daemon.proc.pid().context("logarithmd's pid")?;
    let downloads = Arc::try_unwrap(downloads).unwrap_or_default();
    Ok(Report {
        lines: plan.lines,
        alone_secs,
        with_readers_secs,
        unavailable,
        downloads,
        follows_complete,
        peak_rss_mib: peak_rss_mib(pid)?,
    })
}

/// A stored job of `lines` lines; returns its id and line count.
async fn stored_job(daemon: &Daemon, lines: u64) -> Result<(String, u64)> {
    let container = container_id();
    post_all(daemon, vec![bodies(&container, lines)?]).await?;
    let job = daemon.job_of(&container).await?.context("a stored job")?;
    Ok((job["id"].as_str().context("job id")?.to_owned(), lines))
}

/// One phase's bodies: `plan.lines` lines over `plan.senders` new containers.
fn phase_bodies(plan: &Plan) -> Result<Vec<Vec<Vec<u8>>>> {
    (0..plan.senders)
        .map(|_| bodies(&container_id(), plan.lines / plan.senders))
        .collect()
}

/// Downloads a job's raw log once and checks how it ended: the whole log, or exactly
/// `budget` lines and the truncation line naming where to continue (docs/api.md).
async fn download(
    http: &reqwest::Client,
    base: &str,
    (id, lines): &(String, u64),
    budget: u64,
    tally: &Downloads,
) -> Result<()> {
    let mut resp = http
        .get(format!("{base}/api/v1/jobs/{id}/logs?format=text"))
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("a raw download answered {}", resp.status());
    }
    // Only the newline count and the last two lines are kept.
    let mut newlines = 0u64;
    let mut tail: Vec<u8> = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        newlines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
        tail.extend_from_slice(&chunk);
        if tail.len() > 4096 {
            tail.drain(..tail.len() - 4096);
        }
    }
    let text = String::from_utf8_lossy(&tail);
    let mut last = text.trim_end_matches('\n').rsplit('\n');
    let (end, before) = (last.next().unwrap_or(""), last.next().unwrap_or(""));
    if end.starts_with("[logarithm] truncated:") {
        let want = format!("max_download_lines ({budget}) reached; continue with ?after={budget}");
        if *lines <= budget
            || newlines != budget + 1
            || !end.ends_with(&want)
            || before != line(budget)
        {
            bail!("a download of {lines} lines ended after {newlines} lines with {end:?} after {before:?}");
        }
        tally.truncated.fetch_add(1, Ordering::Relaxed);
        tally.lines.fetch_add(budget, Ordering::Relaxed);
    } else {
        if newlines != *lines || end != line(*lines) {
            bail!("a download of {lines} lines ended after {newlines} lines with {end:?}");
        }
        tally.complete.fetch_add(1, Ordering::Relaxed);
        tally.lines.fetch_add(*lines, Ordering::Relaxed);
    }
    Ok(())
}

/// Follows a job over SSE from its first line to `end`, checking that every seq comes
/// once, in order, and that the last is the job's last; reconnects with `Last-Event-ID`
/// on a `reconnect` event.
async fn follow(
    http: &reqwest::Client,
    base: &str,
    id: &str,
    connected: &AtomicUsize,
) -> Result<()> {
    let mut last = 0u64;
    let mut first = true;
    loop {
        let mut resp = http
            .get(format!("{base}/api/v1/jobs/{id}/logs/stream"))
            .header("last-event-id", last.to_string())
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!("a follow answered {}", resp.status());
        }
        if first {
            connected.fetch_add(1, Ordering::Relaxed);
            first = false;
        }
        let mut buf: Vec<u8> = Vec::new();
        while let Some(chunk) = resp.chunk().await? {
            buf.extend_from_slice(&chunk);
            while let Some(at) = buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = buf.drain(..at + 2).collect();
                let block = String::from_utf8_lossy(&block);
                let field = |name: &str| {
                    block
                        .lines()
                        .find_map(|l| l.strip_prefix(name))
                        .map(str::trim)
                        .unwrap_or("")
                        .to_owned()
                };
                let data = field("data:");
                match field("event:").as_str() {
                    "line" => {
                        let v: serde_json::Value = serde_json::from_str(&data)?;
                        let seq = v["seq"].as_u64().context("seq")?;
                        if seq != last + 1 {
                            bail!("a follow of job {id} got seq {seq} after {last}");
                        }
                        last = seq;
                    }
                    "end" => {
                        let v: serde_json::Value = serde_json::from_str(&data)?;
                        let want = v["last_seq"].as_u64().unwrap_or(last);
                        if want != last {
                            bail!("a follow of job {id} ended at seq {last}, the job at {want}");
                        }
                        return Ok(());
                    }
                    "reconnect" => break,
                    "error" => bail!("a follow of job {id} failed: {data}"),
                    _ => {}
                }
            }
        }
    }
}

/// The watched jobs' trickle: 10-line batches, round after round, until [`Trickle::finish`].
struct Trickle {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Result<Vec<(String, u64)>>>,
    unavailable: Arc<AtomicU64>,
}

impl Trickle {
    fn start(daemon: &Daemon, watched: &[String]) -> Trickle {
        let stop = Arc::new(AtomicBool::new(false));
        let unavailable = Arc::new(AtomicU64::new(0));
        let (http, base) = (daemon.http.clone(), daemon.base.clone());
        let mut jobs: Vec<(String, u64)> =
            watched.iter().map(|c| (c.clone(), WATCHED_FIRST)).collect();
        let (stopped, refused) = (stop.clone(), unavailable.clone());
        let task = tokio::spawn(async move {
            while !stopped.load(Ordering::Relaxed) {
                for (c, seq) in &mut jobs {
                    let body = batch_body(c, *seq + 1, TRICKLE_LINES, false, false)?;
                    post(&http, &base, &body, &refused).await?;
                    *seq += TRICKLE_LINES;
                }
                tokio::time::sleep(TRICKLE_PAUSE).await;
            }
            Ok(jobs)
        });
        Trickle {
            stop,
            task,
            unavailable,
        }
    }

    /// Stops the trickle and ends each watched job with one last line and its exit;
    /// returns the 503 answers the trickle got and the lines the watched jobs have.
    async fn finish(self, daemon: &Daemon) -> Result<(u64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        let jobs = self.task.await??;
        let mut lines = 0;
        for (c, seq) in &jobs {
            let body = batch_body(c, seq + 1, 1, false, true)?;
            post(&daemon.http, &daemon.base, &body, &self.unavailable).await?;
            lines += seq + 1;
        }
        Ok((self.unavailable.load(Ordering::Relaxed), lines))
    }
}
