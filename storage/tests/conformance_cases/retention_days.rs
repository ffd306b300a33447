//! The retention scenario of issue 11: 1,000,000 lines over ten simulated days (the sweep
//! takes `now` from the test), swept while ingest and queries run, on each backend.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::retention_cases::retained_job;
use super::*;
use storage::retention::{sweep, FlowRule};
use storage::{RetentionRules, SweepReport};

const SEC: i64 = 1_000_000_000;
const DAY: i64 = 86_400 * SEC;
const DAYS: i64 = 10;
const JOBS_PER_DAY: i64 = 20;
const LINES_PER_JOB: u64 = 5_000;
/// Lines per ingest batch.
const BATCH_LINES: u64 = 1_000;
const MAX_AGE: i64 = 3 * DAY;
/// Every fourth job belongs to `nightly`, kept one day only.
const NIGHTLY_AGE: i64 = DAY;

fn flow_of(j: i64) -> &'static str {
    if j % 4 == 0 {
        "nightly"
    } else {
        "build"
    }
}

fn tag(d: i64, j: i64) -> String {
    format!("d{d:02}j{j:02}")
}

fn finished_at(base: i64, d: i64, j: i64) -> i64 {
    base + d * DAY + j * SEC
}

/// Whether job `j` of day `d` has expired at `now`.
fn expired(base: i64, d: i64, j: i64, now: i64) -> bool {
    let age = if flow_of(j) == "nightly" {
        NIGHTLY_AGE
    } else {
        MAX_AGE
    };
    finished_at(base, d, j) < now - age
}

/// A job's writes: its lines in batches, the first with its metadata, the last with its
/// exit (so it is running until then).
fn job_batches(base: i64, d: i64, j: i64) -> Vec<WriteBatch> {
    let tag = tag(d, j);
    let run = format!("run-{d}");
    let full = retained_job(
        &tag,
        Some(flow_of(j)),
        Some(&run),
        LINES_PER_JOB,
        Some(finished_at(base, d, j)),
    );
    let chunks: Vec<&[NewLine]> = full.lines.chunks(BATCH_LINES as usize).collect();
    let last = chunks.len() - 1;
    chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let mut w = write(&full.container_id);
            w.lines = chunk.to_vec();
            if i == 0 {
                w.meta = full.meta.clone();
                w.outputs = full.outputs.clone();
            }
            if i == last {
                w.exit = full.exit.clone();
            }
            batch(vec![w])
        })
        .collect()
}

fn rules() -> RetentionRules {
    RetentionRules {
        max_age_ns: Some(MAX_AGE),
        flows: vec![FlowRule {
            flow: "nightly".into(),
            max_age_ns: NIGHTLY_AGE,
        }],
        batch_rows: 5_000,
        run_namespace: Some("runs".into()),
        ..RetentionRules::default()
    }
}

/// 1,000,000 lines over ten simulated days: day by day, a writer ingests the day's 20 jobs
/// of 5,000 lines while a sweep runs for the day before ("now" is that day's noon) and a
/// reader lists jobs and pages through their lines. Nothing fails, and after the last
/// sweep exactly the jobs the rules expire are gone, with every row they owned; every
/// other job has all its lines.
pub async fn retention_million_lines_over_simulated_days(t: &Target) {
    let s = t.open().await;
    let base = 1_700_000_000 * SEC;
    let started = Instant::now();
    let (day_done, mut days) = tokio::sync::mpsc::channel::<i64>(DAYS as usize);
    let writing = Arc::new(AtomicBool::new(true));

    let writer = {
        let s = s.clone();
        let writing = writing.clone();
        tokio::spawn(async move {
            for d in 0..DAYS {
                for j in 0..JOBS_PER_DAY {
                    for b in job_batches(base, d, j) {
                        s.apply(&b).await.expect("ingest while retention runs");
                    }
                }
                day_done.send(d).await.expect("sweeper listening");
            }
            writing.store(false, Ordering::SeqCst);
        })
    };
    let sweeper = {
        let s = s.clone();
        tokio::spawn(async move {
            let mut total = SweepReport::default();
            while let Some(d) = days.recv().await {
                let now = base + d * DAY + DAY / 2;
                let mut report = SweepReport::default();
                sweep(&*s, &rules(), now, &mut report)
                    .await
                    .expect("sweep while ingest runs");
                total.deleted.add(&report.deleted);
                total.transactions += report.transactions;
            }
            total
        })
    };
    let reads = Arc::new(AtomicU64::new(0));
    let reader = {
        let s = s.clone();
        let writing = writing.clone();
        let reads = reads.clone();
        tokio::spawn(async move {
            while writing.load(Ordering::SeqCst) {
                let jobs = s
                    .list_jobs(&JobQuery {
                        limit: 50,
                        ..JobQuery::default()
                    })
                    .await
                    .expect("list jobs while retention runs");
                for job in jobs.iter().take(3) {
                    let page = lines(&*s, job.id, 0, 500, None).await;
                    // A job being deleted loses its lines from the first seq on: a read
                    // sees a suffix, in order.
                    assert!(page.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
                    reads.fetch_add(1, Ordering::Relaxed);
                }
                tokio::task::yield_now().await;
            }
        })
    };
    writer.await.expect("writer");
    let mut total = sweeper.await.expect("sweeper");
    reader.await.expect("reader");
    assert!(reads.load(Ordering::Relaxed) > 0, "the reader ran");

    // The last sweep, half a day after the last day's jobs, with nothing else running.
    let now = base + (DAYS - 1) * DAY + DAY / 2;
    let mut report = SweepReport::default();
    sweep(&*s, &rules(), now, &mut report)
        .await
        .expect("final sweep");
    total.deleted.add(&report.deleted);

    let mut kept = 0u64;
    for d in 0..DAYS {
        for j in 0..JOBS_PER_DAY {
            let id = job_id_for_container(&cid(&tag(d, j)));
            let gone = expired(base, d, j, now);
            let stored = s.get_job(id).await.expect("get_job");
            assert_eq!(stored.is_none(), gone, "[{}] day {d} job {j}", t.name);
            let rows = t
                .raw_count(&format!(
                    "SELECT COUNT(*) FROM log_lines WHERE job_id = {id}"
                ))
                .await;
            if gone {
                assert_eq!(rows, 0, "[{}] day {d} job {j}", t.name);
            } else {
                kept += 1;
                assert_eq!(rows as u64, LINES_PER_JOB, "[{}] day {d} job {j}", t.name);
                assert_eq!(stored.map(|j| j.line_count), Some(LINES_PER_JOB));
            }
        }
    }
    let all = (DAYS * JOBS_PER_DAY) as u64;
    assert_eq!(
        t.raw_count("SELECT COUNT(*) FROM log_lines").await as u64,
        kept * LINES_PER_JOB,
        "[{}] no line outlives its job",
        t.name
    );
    for table in ["job_outputs", "job_labels"] {
        let orphans = t
            .raw_count(&format!(
                "SELECT COUNT(*) FROM {table} x WHERE NOT EXISTS \
                 (SELECT 1 FROM jobs j WHERE j.id = x.job_id)"
            ))
            .await;
        assert_eq!(orphans, 0, "[{}] {table}", t.name);
    }
    assert_eq!(total.deleted.jobs, all - kept, "[{}]", t.name);
    assert_eq!(total.deleted.lines, (all - kept) * LINES_PER_JOB);
    eprintln!(
        "[{}] {} lines ingested over {DAYS} simulated days, {} jobs ({} lines) deleted in {} \
         transactions, {kept} jobs kept, in {:?}",
        t.name,
        all * LINES_PER_JOB,
        total.deleted.jobs,
        total.deleted.lines,
        total.transactions,
        started.elapsed()
    );
}
