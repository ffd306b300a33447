//! Section 7 (issue 12, P4): a stored 1,000,000-line job read back. The raw download
//! (`GET /api/v1/jobs/{id}/logs?format=text`) beside a plain `SELECT` of the same rows
//! straight from the database, in the same run; and the time to the first JSON page
//! (`?after=0&limit=500`, the viewer's page) and to what the viewer shows first (the job,
//! then that page).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use logarithm_tests::{Daemon, Db};

use crate::LINES;
use logarithm_tests::ingest_client::{bodies, container_id, post_all};

/// Repetitions of the small requests (the median is reported).
const SMALL_RUNS: usize = 9;
/// Repetitions of the whole-job reads (the median is reported).
const BIG_RUNS: usize = 5;

pub struct ReadRun {
    label: &'static str,
    select_secs: f64,
    select_bytes: u64,
    download_secs: f64,
    download_bytes: u64,
    first_page: Duration,
    first_view: Duration,
}

impl ReadRun {
    pub fn header() {
        println!(
            "\n| stored 1M-line job on | SELECT s | SELECT MB/s | raw download s | download MB/s | download / SELECT | first JSON page ms | first view ms |"
        );
        println!("|---|---|---|---|---|---|---|---|");
    }

    pub fn print(&self) {
        let select_mbs = self.select_bytes as f64 / 1e6 / self.select_secs;
        let download_mbs = self.download_bytes as f64 / 1e6 / self.download_secs;
        println!(
            "| {} | {:.2} | {:.1} | {:.2} | {:.1} | {:.0} % | {:.1} | {:.1} |",
            self.label,
            self.select_secs,
            select_mbs,
            self.download_secs,
            download_mbs,
            100.0 * self.select_secs / self.download_secs,
            self.first_page.as_secs_f64() * 1e3,
            self.first_view.as_secs_f64() * 1e3
        );
    }
}

pub async fn bench_read(db: &Db, label: &'static str) -> Result<ReadRun> {
    let daemon = Daemon::start(db.url()).await?;
    let container = container_id();
    post_all(&daemon, vec![bodies(&container, LINES)?]).await?;
    let job = daemon.job_of(&container).await?.context("the job")?;
    let id = job["id"].as_str().context("job id")?.to_owned();
    // Both readers run once to warm the caches, then in turn `BIG_RUNS` times each (so
    // both see the same machine); the medians are reported.
    select_all(db).await?;
    download(&daemon, &id).await?;
    let (mut selects, mut downloads) = (Vec::new(), Vec::new());
    let (mut select_bytes, mut download_bytes) = (0, 0);
    for _ in 0..BIG_RUNS {
        let t = Instant::now();
        select_bytes = select_all(db).await?;
        selects.push(t.elapsed().as_secs_f64());
        let (bytes, secs) = download(&daemon, &id).await?;
        download_bytes = bytes;
        downloads.push(secs);
    }
    let select_secs = median_of(selects);
    let download_secs = median_of(downloads);
    let page = format!("/api/v1/jobs/{id}/logs?after=0&limit=500");
    let first_page = median(SMALL_RUNS, || get(&daemon, &page)).await?;
    let first_view = median(SMALL_RUNS, || async {
        get(&daemon, &format!("/api/v1/jobs/{id}")).await?;
        get(&daemon, &page).await
    })
    .await?;
    Ok(ReadRun {
        label,
        select_secs,
        select_bytes,
        download_secs,
        download_bytes,
        first_page,
        first_view,
    })
}

/// Reads every row of the one job straight from the database, in seq order, with the
/// columns the raw download needs of each (`seq`, `cont` to join continuation records,
/// `line`), each one read; returns the line bytes plus one newline a line (what the raw
/// download carries). Until 2026-12-02 this read `line` alone: the download's reference
/// did less work than the download has to.
async fn select_all(db: &Db) -> Result<u64> {
    const SQL: &str = "SELECT seq, cont, line FROM log_lines \
                       WHERE job_id = (SELECT MIN(job_id) FROM log_lines) ORDER BY seq";
    if db.is_mysql() {
        use mysql_async::prelude::Queryable;
        use mysql_async::Value;
        let pool = mysql_async::Pool::new(db.url());
        let mut conn = pool.get_conn().await?;
        let (mut bytes, mut seqs, mut conts) = (0u64, 0u64, 0u64);
        // The binary protocol, as logarithmd reads (typed values, not text).
        let mut rows = conn.exec_iter(SQL, ()).await?;
        rows.for_each(|row| {
            if let (Some(Value::Int(seq)), Some(Value::Int(cont)), Some(Value::Bytes(b))) =
                (row.as_ref(0), row.as_ref(1), row.as_ref(2))
            {
                seqs = seqs.wrapping_add(*seq as u64);
                conts += u64::from(*cont != 0);
                bytes += b.len() as u64 + 1;
            }
        })
        .await?;
        check_rows(seqs, conts)?;
        drop(rows);
        drop(conn);
        pool.disconnect().await?;
        Ok(bytes)
    } else {
        let path = db.url().trim_start_matches("sqlite://").to_owned();
        tokio::task::spawn_blocking(move || -> Result<u64> {
            let conn = rusqlite::Connection::open(path)?;
            let mut stmt = conn.prepare(SQL)?;
            let mut rows = stmt.query([])?;
            let (mut bytes, mut seqs, mut conts) = (0u64, 0u64, 0u64);
            while let Some(row) = rows.next()? {
                seqs = seqs.wrapping_add(row.get::<_, i64>(0)? as u64);
                conts += u64::from(row.get::<_, i64>(1)? != 0);
                bytes += row.get_ref(2)?.as_bytes()?.len() as u64 + 1;
            }
            check_rows(seqs, conts)?;
            Ok(bytes)
        })
        .await?
    }
}

/// Fails unless the rows read were seqs 1 to `LINES` with no continuation (what the bench
/// stores): the values read are used, so no reader can skip them.
fn check_rows(seqs: u64, conts: u64) -> Result<()> {
    let want = LINES * (LINES + 1) / 2;
    if seqs != want || conts != 0 {
        bail!("the SELECT read seqs summing to {seqs} (want {want}) and {conts} continuations");
    }
    Ok(())
}

/// Downloads the raw log with `curl` (a lean client writing to `/dev/null`, as `curl -o`
/// would save it; on two cores, the client's own CPU weighs on the figure): returns the
/// bytes and curl's own transfer time (from before connecting to the last byte).
async fn download(daemon: &Daemon, id: &str) -> Result<(u64, f64)> {
    let out = tokio::process::Command::new("curl")
        .args([
            "--silent",
            "--show-error",
            "--fail",
            "--output",
            "/dev/null",
        ])
        .args(["--write-out", "%{size_download} %{time_total}"])
        .arg(format!("{}/api/v1/jobs/{id}/logs?format=text", daemon.base))
        .output()
        .await
        .context("running curl (apt-get install curl)")?;
    if !out.status.success() {
        bail!(
            "raw download failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text.split_whitespace();
    let bytes = parts.next().context("curl's size")?.parse()?;
    let secs = parts.next().context("curl's time")?.parse()?;
    Ok((bytes, secs))
}

async fn get(daemon: &Daemon, path: &str) -> Result<()> {
    let resp = daemon
        .http
        .get(format!("{}{path}", daemon.base))
        .send()
        .await?;
    if !resp.status().is_success() {
        bail!("{path} answered {}", resp.status());
    }
    resp.bytes().await?;
    Ok(())
}

/// The median of `values` (not empty).
fn median_of(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The median time of `runs` calls of `f`.
async fn median<F, Fut>(runs: usize, mut f: F) -> Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f().await?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok(times[runs / 2])
}
