//! End-to-end ordered ingest under logarithmd's bound on waiting batches: real
//! containers, the real `antilog` and `logarithmd` binaries, SQLite. With a bound no batch
//! fits in, every batch that reaches logarithmd before the one it follows is stored is
//! answered 503 with `Retry-After` at once; antilog sends it again, and every line is
//! stored exactly once, in order.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use logarithm_tests::docker::{self, Spec};
use logarithm_tests::{Agents, Daemon, Db};

/// Containers, and the lines each prints as fast as it can.
const CONTAINERS: usize = 4;
const LINES: usize = 5000;

fn metric(text: &str, series: &str) -> Result<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .with_context(|| format!("no series {series}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn batches_refused_for_want_of_room_are_resent_and_stored_once_in_order() -> Result<()> {
    let docker = docker::connect().await?;
    let db = Db::sqlite()?;
    // One byte: no batch can wait for the one it follows.
    let daemon = Daemon::start_with(db.url(), "ingest_order_waiting_bytes = 1\n").await?;
    let label = format!("order-bound-{:x}", logarithm_tests::rand_u64());
    // Small batches, so each container has several in flight.
    let agents = Agents::start_with(&daemon.base, &label, "batch_max_records = 200\n")?;
    let mut ids = Vec::new();
    for c in 0..CONTAINERS {
        let script =
            format!("i=1; while [ $i -le {LINES} ]; do echo \"c{c} line $i\"; i=$((i+1)); done");
        ids.push(docker::run(&docker, &Spec::new(&label, &script)).await?);
    }
    let result = async {
        for (c, id) in ids.iter().enumerate() {
            let job = daemon.wait_finished(id, Duration::from_secs(180)).await?;
            ensure!(job["status"] == "success", "{job}");
            let lines = daemon.all_lines(job["id"].as_str().context("id")?).await?;
            let texts: Vec<&str> = lines.iter().filter_map(|l| l["text"].as_str()).collect();
            let expected: Vec<String> = (1..=LINES).map(|i| format!("c{c} line {i}")).collect();
            ensure!(
                texts == expected,
                "container {c}: {} lines stored",
                texts.len()
            );
        }
        let text = daemon.metrics_text().await?;
        let refused = metric(&text, "logarithmd_ingest_order_refused_total")?;
        println!("refused for want of room: {refused}");
        ensure!(refused > 0.0, "no batch was refused: none overlapped");
        ensure!(metric(&text, "logarithmd_ingest_order_waiting")? == 0.0);
        ensure!(metric(&text, "logarithmd_ingest_duplicate_lines_total")? == 0.0);
        Ok(())
    }
    .await;
    for id in &ids {
        docker::remove(&docker, id).await;
    }
    if result.is_err() {
        eprintln!("antilog:\n{}", agents.logs());
    }
    result
}
