//! Throughput benchmark (docs/performance.md; run by `scripts/bench.sh`).
//!
//! 1. Ingest: 1,000,000 lines of 100 bytes POSTed to a real logarithmd (zstd batches of
//!    5,000 lines from 4 containers at once) into SQLite and into MariaDB; lines/s and MB/s
//!    from the first request to the last acknowledgement (acknowledged = committed).
//! 2. Raw ceiling, in the same run: the same rows written straight to each database with
//!    multi-row INSERTs (1,000 rows a statement on MariaDB, 100 on SQLite; one transaction
//!    per 5,000 rows; on MariaDB 4 connections at once, like the 4 ingest senders), no
//!    HTTP, no JSON, no dedup bookkeeping.
//! 3. Agent, API source, live: a container prints 1,000,000 lines of 100 bytes at full
//!    speed; antilog follows it through the Docker API and ships to logarithmd (SQLite);
//!    lines/s from container start to the job being final with every line stored, the
//!    agent's and dockerd's CPU seconds (utime + stime from /proc/<pid>/stat), the agent's
//!    peak RSS (VmHWM) and the time from the container's exit to the job being final.
//! 4. Agent, API source, catching up: the same container has finished before the agent
//!    starts; lines/s from the agent's start to the job being final, same CPU and memory
//!    figures.
//! 5. The same two agent paths on the file source (`docker-files`: the json-file log read
//!    from its files), and a Pod's log at rest on the `cri` source (`cri-catchup`: the same
//!    1,000,000 lines as CRI records in `<root>/<ns>_<pod>_<uid>/<container>/0.log`,
//!    the Pod served as terminated with exit 0 by a mock Kubernetes API server; lines/s
//!    from antilog's start to the job being final with every line stored; no dockerd, so
//!    its CPU is "n/a"); and, as ceilings from the same run, the time `cat` takes to read
//!    each log file at rest (page cache warm) and each path's rate as a share of
//!    logarithmd's own SQLite ingest rate (section 1).
//! 6. Live follow over SSE ([`live`]): write-to-client latency at about 10,000 lines/s,
//!    and what 200 idle followers cost logarithmd.
//! 7. Reading a stored 1,000,000-line job ([`read`]) on SQLite and MariaDB: the raw
//!    download beside a plain `SELECT`, the first JSON page and the viewer's first view.
//!
//! 8. Reads beside ingest ([`load`]): 1,000,000 lines ingested alone, then beside 50 raw
//!    downloads and 200 SSE follows, on SQLite and MariaDB: both rates, their ratio, 503s
//!    to ingest, logarithmd's peak RSS.
//!
//! With `LOGARITHM_BENCH_BASELINE=/path/to/logarithmd` (an older build; `scripts/bench.sh`
//! builds one from `LOGARITHM_BENCH_BASELINE_REV`), section 1 then runs that binary and
//! this build's in turn on each database (`LOGARITHM_BENCH_BASELINE_ROUNDS` pairs, 3 by
//! default, alternating which goes first) and prints both medians and the ratio new / old
//! with its spread over the rounds, so a difference can be told from noise.
//!
//! `LOGARITHM_BENCH_AGENT_PATHS` (comma-separated, of `api-live`, `api-catchup`,
//! `files-live`, `files-catchup`, `cri-catchup`) runs only those agent paths of sections
//! 3–5, to compare two builds of antilog on one path.
//!
//! Layout: [`ingest`] (1, 2), [`agent`] (3–5), [`live`] (6), [`read`] (7), [`load`] (8),
//! [`procfs`] (CPU and memory of a process).

mod agent;
mod ingest;
mod live;
mod load;
mod procfs;
mod read;

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use logarithm_tests::Db;

use agent::{bench_agent, bench_cri};
use ingest::{bench_ingest, raw_mysql, raw_sqlite, Versus};

use logarithm_tests::ingest_client::{line, BATCH, LINE_BYTES};

const LINES: u64 = 1_000_000;
const SENDERS: u64 = 4;

pub struct Figure {
    pub what: String,
    pub secs: f64,
    pub lines: u64,
}

impl Figure {
    /// Lines per second.
    pub fn rate(&self) -> f64 {
        self.lines as f64 / self.secs
    }

    pub fn print(&self) {
        let mb = (self.lines as f64 * LINE_BYTES as f64) / 1e6;
        println!(
            "| {:<44} | {:>9.2} | {:>12.0} | {:>8.1} |",
            self.what,
            self.secs,
            self.lines as f64 / self.secs,
            mb / self.secs
        );
    }
}

/// Runs every section, or those named on the command line (`ingest`, `agent`, `live`,
/// `read`, `load`).
#[tokio::main]
async fn main() -> Result<()> {
    let only: Vec<String> = std::env::args().skip(1).collect();
    let wants = |s: &str| only.is_empty() || only.iter().any(|o| o == s);
    println!("{LINES} lines of {LINE_BYTES} bytes each\n");
    println!(
        "| path                                         |   seconds |      lines/s |     MB/s |"
    );
    println!(
        "|----------------------------------------------|-----------|--------------|----------|"
    );
    std::io::stdout().flush()?;
    let mut sqlite_ingest = None;
    let baseline = std::env::var_os("LOGARITHM_BENCH_BASELINE").map(PathBuf::from);
    let mut versus = Vec::new();
    if wants("ingest") {
        raw_sqlite()?.print();
        let ingest = bench_ingest(&Db::sqlite()?, "SQLite", None).await?;
        ingest.print();
        sqlite_ingest = Some(ingest);
        let server = logarithm_tests::mysql_server_url()?;
        raw_mysql(&server).await?.print();
        bench_ingest(&Db::mysql().await?, "MariaDB", None)
            .await?
            .print();
        if let Some(bin) = &baseline {
            let rounds = match std::env::var("LOGARITHM_BENCH_BASELINE_ROUNDS") {
                Ok(v) => v.parse().context("LOGARITHM_BENCH_BASELINE_ROUNDS")?,
                Err(_) => 3,
            };
            for mysql in [false, true] {
                versus.push(Versus::run(mysql, bin, rounds).await?);
            }
        }
    }
    let mut runs = Vec::new();
    if wants("agent") {
        let paths = std::env::var("LOGARITHM_BENCH_AGENT_PATHS").ok();
        let wants_path = |name: &str| {
            paths
                .as_deref()
                .is_none_or(|p| p.split(',').any(|w| w.trim() == name))
        };
        for source in ["docker-api", "docker-files"] {
            for live in [true, false] {
                let name = format!(
                    "{}-{}",
                    source.trim_start_matches("docker-"),
                    if live { "live" } else { "catchup" }
                );
                if !wants_path(&name) {
                    continue;
                }
                let run = bench_agent(live, source).await?;
                run.figure.print();
                runs.push(run);
            }
        }
        if wants_path("cri-catchup") {
            let run = bench_cri().await?;
            run.figure.print();
            runs.push(run);
        }
        print_agent_costs(&runs, sqlite_ingest.as_ref());
    }
    if wants("live") {
        live::bench_live().await?.print();
    }
    if !versus.is_empty() {
        println!();
    }
    for v in &versus {
        v.print();
    }
    if wants("read") {
        read::ReadRun::header();
        read::bench_read(&Db::sqlite()?, "SQLite").await?.print();
        read::bench_read(&Db::mysql().await?, "MariaDB")
            .await?
            .print();
    }
    if wants("load") {
        load::header();
        load::bench_load(&Db::sqlite()?, "SQLite").await?;
        load::bench_load(&Db::mysql().await?, "MariaDB").await?;
    }
    Ok(())
}

fn print_agent_costs(runs: &[agent::AgentRun], sqlite_ingest: Option<&Figure>) {
    println!(
        "\n| agent path                                   | antilog CPU-s/M lines | dockerd CPU-s/M lines | antilog VmHWM MiB | exit → final s |"
    );
    println!(
        "|----------------------------------------------|-----------|-----------|-----------|-----------|"
    );
    for run in runs {
        run.print_costs();
    }
    println!();
    if let Some(ingest) = sqlite_ingest {
        let ingest_rate = ingest.lines as f64 / ingest.secs;
        for run in runs {
            println!(
                "{}: {:.0} % of logarithmd's own SQLite ingest rate",
                run.figure.what,
                100.0 * (run.figure.lines as f64 / run.figure.secs) / ingest_rate
            );
        }
    }
    for run in runs.iter().filter_map(|r| r.cat_secs.map(|c| (r, c))) {
        println!(
            "cat of the log file read by \"{}\": {:.2} s",
            run.0.figure.what, run.1
        );
    }
}
