//! Reads cannot hurt ingest (issue 11): the load scenario of [`logarithm_tests::load`] at a
//! bounded size (100,000 lines a phase, 10 downloads, 40 follows) on a real logarithmd,
//! SQLite and MariaDB. It asserts what is not a timing: the ingesting client gets no 503,
//! every line is stored once, every download ends complete or at `max_download_lines`
//! with the documented last line (docs/api.md, "Read limits"), every follow sees each line
//! of its job once and then `end`, and logarithmd's peak RSS stays below 256 MiB. The
//! rates with and without readers are the benchmark's (`scripts/bench.sh load`).

use anyhow::{ensure, Result};
use logarithm_tests::load::{self, Plan};
use logarithm_tests::{Daemon, Db};
use std::sync::atomic::Ordering::Relaxed;

/// The budget the big stored job's downloads reach (the small job's end first).
const BUDGET: u64 = 10_000;

async fn reads_beside_ingest(db: Db) -> Result<()> {
    let daemon = Daemon::start_with(db.url(), &format!("max_download_lines = {BUDGET}\n")).await?;
    let plan = Plan {
        lines: 100_000,
        senders: 4,
        downloads: 10,
        follows: 40,
        small_lines: 2_000,
        big_lines: 12_000,
        watched: 4,
        max_download_lines: BUDGET,
    };
    let report = load::run(&daemon, &db, &plan).await?;
    eprintln!("{report:?}");
    ensure!(
        report.unavailable == 0,
        "ingest got {} 503s",
        report.unavailable
    );
    let (complete, truncated) = (
        report.downloads.complete.load(Relaxed),
        report.downloads.truncated.load(Relaxed),
    );
    // Each downloader reads both jobs at least once: the small one whole, the big one up
    // to the budget.
    ensure!(
        complete >= plan.downloads as u64 && truncated >= plan.downloads as u64,
        "{complete} complete and {truncated} truncated downloads"
    );
    ensure!(
        report.follows_complete == plan.follows,
        "{} of {} follows complete",
        report.follows_complete,
        plan.follows
    );
    ensure!(
        report.peak_rss_mib < 256.0,
        "logarithmd's peak RSS was {:.0} MiB",
        report.peak_rss_mib
    );
    Ok(())
}

logarithm_tests::on_both_backends!(#[tokio::test(flavor = "multi_thread")] reads_beside_ingest_sqlite, reads_beside_ingest_mariadb => reads_beside_ingest);
