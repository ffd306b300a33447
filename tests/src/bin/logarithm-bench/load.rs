//! Section 8 (issue 11, "reads cannot hurt ingest"): 1,000,000 lines ingested alone, then
//! 1,000,000 more beside 50 raw downloads (looping over a stored 10,000-line and a
//! 100,000-line job) and 200 SSE follows of 4 running jobs, on SQLite and MariaDB, with
//! logarithmd's default configuration. The scenario is [`logarithm_tests::load`]; this
//! prints its figures: both ingest rates and their ratio, 503 answers to ingest, how the
//! downloads ended, and logarithmd's peak RSS (VmHWM).

use anyhow::Result;
use logarithm_tests::load::{self, Plan, Report};
use logarithm_tests::{Daemon, Db};

use crate::{LINES, SENDERS};

/// The sizes.
fn plan() -> Plan {
    Plan {
        lines: LINES,
        senders: SENDERS,
        downloads: 50,
        follows: 200,
        small_lines: 10_000,
        big_lines: 100_000,
        watched: 4,
        max_download_lines: 1_000_000,
    }
}

pub fn header() {
    println!(
        "\n| 1M lines beside 50 downloads + 200 follows | alone lines/s | with readers lines/s | with / alone | ingest 503s | downloads (complete + truncated) | lines downloaded | follows complete | logarithmd VmHWM MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
}

pub async fn bench_load(db: &Db, label: &str) -> Result<Report> {
    let daemon = Daemon::start(db.url()).await?;
    let report = load::run(&daemon, db, &plan()).await?;
    use std::sync::atomic::Ordering::Relaxed;
    println!(
        "| {label} | {:.0} | {:.0} | {:.0} % | {} | {} + {} | {} | {} | {:.0} |",
        report.rate_alone(),
        report.rate_with_readers(),
        100.0 * report.ratio(),
        report.unavailable,
        report.downloads.complete.load(Relaxed),
        report.downloads.truncated.load(Relaxed),
        report.downloads.lines.load(Relaxed),
        report.follows_complete,
        report.peak_rss_mib
    );
    Ok(report)
}
