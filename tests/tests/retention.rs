//! Retention end to end: the real logarithmd with `[retention]` (a maximum age, a shorter
//! one for one flow), its sweeper's clock read from a file (`clock_file`, test only) that
//! the test moves by days. Expired jobs disappear from the API with their lines, running
//! and recent ones stay, and the metrics and the log say what went.
//! On SQLite and on MariaDB (which must be there: `LOGARITHM_TEST_MYSQL_URL`).

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use logarithm_tests::{rand_u64, tail, wait_until, Daemon, Db};
use protocol::now_ns;
use serde_json::{json, Value};

const S: i64 = 1_000_000_000;
const HOUR: i64 = 3600 * S;
const DAY: i64 = 24 * HOUR;

/// Posts one job: `lines` records of `flow`/`run`, finished at `finished_at` if given.
async fn ingest(
    d: &Daemon,
    container: &str,
    flow: &str,
    run: &str,
    lines: u64,
    finished_at: Option<i64>,
) -> Result<()> {
    let t0 = now_ns() - 5 * DAY;
    let records: Vec<Value> = (1..=lines)
        .map(|i| json!({"seq": i, "ts": t0 + i as i64, "stream": "stdout", "text": format!("{container} line {i}")}))
        .collect();
    let labels = json!({"io.containerops.flow": flow, "io.containerops.run": run});
    let mut seg = json!({
        "container_id": container,
        "meta": {"name": container, "image": "i", "labels": labels, "created_at": t0, "started_at": t0},
        "records": records,
    });
    if let Some(at) = finished_at {
        seg["exit"] = json!({"exit_code": 0, "finished_at": at, "last_seq": lines});
    }
    let batch =
        json!({"version": 1, "agent": {"id": "retention", "node": "n1"}, "segments": [seg]});
    d.ingest_json(&batch).await?;
    Ok(())
}

/// The value of `logarithmd_retention_deleted_total{kind}`.
async fn deleted(d: &Daemon, kind: &str) -> Result<u64> {
    let text = d.metrics_text().await?;
    let series = format!("logarithmd_retention_deleted_total{{kind=\"{kind}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("{series} not in /metrics"))
}

/// Waits until retention has deleted `jobs` jobs in all.
async fn wait_deleted(d: &Daemon, jobs: u64) -> Result<()> {
    let r = wait_until(
        Duration::from_secs(60),
        "the sweeper to delete jobs",
        || async { Ok((deleted(d, "jobs").await? >= jobs).then_some(())) },
    )
    .await;
    if let Err(e) = r {
        anyhow::bail!("{e:#}\nlogarithmd log:\n{}", tail(&d.proc.log(), 40));
    }
    Ok(())
}

async fn status(d: &Daemon, path: &str) -> Result<u16> {
    Ok(d.http
        .get(format!("{}{path}", d.base))
        .send()
        .await?
        .status()
        .as_u16())
}

fn set_clock(path: &std::path::Path, ns: i64) -> Result<()> {
    Ok(std::fs::write(path, format!("{}\n", ns / S))?)
}

async fn scenario(db: Db) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let clock = dir.path().join("clock");
    let now = now_ns();
    set_clock(&clock, now)?;
    let config = format!(
        "[retention]\nmax_age = \"2d\"\ninterval = \"1s\"\nbatch_rows = 100\nclock_file = {:?}\n\
         [[retention.flows]]\nflow = \"nightly\"\nmax_age = \"12h\"\n",
        clock.display().to_string()
    );
    let d = Daemon::start_with(db.url(), &config).await?;
    let tag = rand_u64();
    let name = |n: &str| format!("{n}-{tag:016x}");
    // Expired at once: a build job of 3 days ago (over several 100-row transactions), a
    // nightly one of a day ago. Kept: a build job of an hour ago (until the clock moves
    // three days on), and a job still running, however old.
    ingest(
        &d,
        &name("old"),
        "build",
        "run-old",
        250,
        Some(now - 3 * DAY),
    )
    .await?;
    ingest(
        &d,
        &name("nightly"),
        "nightly",
        "run-n",
        10,
        Some(now - DAY),
    )
    .await?;
    ingest(
        &d,
        &name("fresh"),
        "build",
        "run-fresh",
        20,
        Some(now - HOUR),
    )
    .await?;
    ingest(&d, &name("running"), "build", "run-run", 30, None).await?;
    let mut ids = std::collections::BTreeMap::new();
    for n in ["old", "nightly", "fresh", "running"] {
        let job = d.job_of(&name(n)).await?;
        // A fast sweep may have removed an expired job already.
        if let Some(job) = job {
            ids.insert(n, job["id"].as_str().context("id")?.to_owned());
        }
    }

    wait_deleted(&d, 2).await?;
    for n in ["old", "nightly"] {
        ensure!(d.job_of(&name(n)).await?.is_none(), "{n} is still listed");
        if let Some(id) = ids.get(n) {
            ensure!(status(&d, &format!("/api/v1/jobs/{id}")).await? == 404);
            ensure!(status(&d, &format!("/api/v1/jobs/{id}/logs")).await? == 404);
        }
    }
    ensure!(deleted(&d, "lines").await? == 260);
    let fresh = &ids["fresh"];
    ensure!(
        d.all_lines(fresh).await?.len() == 20,
        "fresh job lost lines"
    );

    // Three days on: the fresh job expires too; the running one stays with every line.
    set_clock(&clock, now + 3 * DAY)?;
    wait_deleted(&d, 3).await?;
    ensure!(status(&d, &format!("/api/v1/jobs/{fresh}")).await? == 404);
    let running = &ids["running"];
    ensure!(
        d.all_lines(running).await?.len() == 30,
        "running job lost lines"
    );
    ensure!(
        db.count("log_lines").await? == 30,
        "lines of deleted jobs remain"
    );
    ensure!(db.count("jobs").await? == 1);
    ensure!(deleted(&d, "lines").await? == 280);
    let log = d.proc.log();
    ensure!(
        log.contains("retention sweep removed 1 jobs and 20 lines"),
        "no sweep log line:\n{}",
        tail(&log, 30)
    );
    Ok(())
}

logarithm_tests::on_both_backends!(#[tokio::test] expired_jobs_leave_with_what_they_own_sqlite, expired_jobs_leave_with_what_they_own_mariadb => scenario);
