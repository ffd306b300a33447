//! Retention cases of the conformance suite: what a sweep deletes (exactly the expired
//! finished jobs and everything they own), per-flow rules, total caps, bounded
//! transactions, run documents, and a deletion cut short then finished by the next sweep.

use super::*;
use storage::retention::{sweep, DeleteStep, FlowRule};
use storage::{
    AttemptOutcome, AttemptRecord, ClaimRequest, DocumentPut, EventKind, EventWrite, Expected,
    RetentionRules, SweepReport,
};

const SEC: i64 = 1_000_000_000;
const HOUR: i64 = 3_600 * SEC;
const DAY: i64 = 24 * HOUR;

fn wall_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as i64
}

/// A job of `flow`/`run` with `n` lines of `line_len` bytes, an output and labels; finished
/// at `finished_at` when given, else still running.
pub fn retained_job(
    tag: &str,
    flow: Option<&str>,
    run: Option<&str>,
    n: u64,
    finished_at: Option<i64>,
) -> JobWrite {
    let mut labels = vec![("team", "ci")];
    if let Some(f) = flow {
        labels.push((protocol::LABEL_FLOW, f));
    }
    if let Some(r) = run {
        labels.push((protocol::LABEL_RUN, r));
    }
    let mut w = write(&cid(tag));
    w.meta = Some(meta(tag, &labels, 0));
    w.lines = (1..=n)
        .map(|s| line(s, Stream::Stdout, format!("{tag} line {s:08}").as_bytes()))
        .collect();
    w.outputs = vec![OutputWrite {
        name: "URL".into(),
        value: format!("http://x/{tag}"),
        seq: 1,
    }];
    w.exit = finished_at.map(|at| ExitWrite {
        exit_code: Some(0),
        finished_at: at,
        last_seq: n,
        restart_count: 0,
        failure: None,
    });
    w
}

fn rules(max_age: Option<i64>) -> RetentionRules {
    RetentionRules {
        max_age_ns: max_age,
        batch_rows: 1_000,
        run_namespace: Some("runs".into()),
        job_namespaces: vec!["service_calls".into()],
        ..RetentionRules::default()
    }
}

async fn run_sweep(s: &dyn Storage, rules: &RetentionRules, now: i64) -> SweepReport {
    let mut report = SweepReport::default();
    sweep(s, rules, now, &mut report).await.expect("sweep");
    report
}

async fn put_doc(s: &dyn Storage, ns: &str, id: &str, active: bool) {
    s.put_document(&DocumentPut {
        namespace: ns.into(),
        id: id.into(),
        active,
        body: "{}".into(),
        expected: Expected::Any,
    })
    .await
    .expect("put document")
    .expect("written");
}

async fn has_doc(s: &dyn Storage, ns: &str, id: &str) -> bool {
    s.get_document(ns, id)
        .await
        .expect("get document")
        .is_some()
}

/// Rows left anywhere that belong to job `id`.
async fn owned_rows(t: &Target, id: JobId) -> i64 {
    let mut n = 0;
    for table in [
        "log_lines",
        "log_stream_blocks",
        "job_outputs",
        "job_labels",
        "webhook_deliveries",
    ] {
        n += t
            .raw_count(&format!("SELECT COUNT(*) FROM {table} WHERE job_id = {id}"))
            .await;
    }
    n + t
        .raw_count(
            "SELECT COUNT(*) FROM webhook_attempts a WHERE NOT EXISTS \
             (SELECT 1 FROM webhook_deliveries d WHERE d.id = a.delivery_id)",
        )
        .await
}

async fn exists(s: &dyn Storage, id: JobId) -> bool {
    s.get_job(id).await.expect("get_job").is_some()
}

/// Finished jobs past the age go with their lines, outputs, labels, deliveries, attempts
/// and documents, and so do deliveries of announced events past the age; a running job
/// past the age, a recent one and their rows stay.
pub async fn retention_age_expires_finished_jobs_and_all_they_own(t: &Target) {
    let s = &*t.open().await;
    s.upsert_subscription(&super::webhook_cases::spec(
        7,
        &[
            EventKind::JobStarted,
            EventKind::JobFinished,
            EventKind::FlowFinished,
        ],
        &[],
    ))
    .await
    .expect("subscribe");
    let now = wall_now();
    // Announced events (no job): one older than the age, one recent.
    for (key, at) in [("run-old", now - 10 * DAY), ("run-new", now - HOUR)] {
        let ev = EventWrite {
            kind: EventKind::FlowFinished,
            key: key.into(),
            labels: Default::default(),
            data_json: "{}".into(),
            at,
        };
        assert_eq!(s.enqueue_event(&ev).await.expect("enqueue"), 1);
    }
    let old = retained_job(
        "old",
        Some("build"),
        Some("r-old"),
        300,
        Some(now - 10 * DAY),
    );
    let running = retained_job("running", Some("build"), Some("r-run"), 20, None);
    let recent = retained_job("recent", Some("build"), Some("r-new"), 30, Some(now - DAY));
    apply(
        s,
        &batch(vec![old.clone(), running.clone(), recent.clone()]),
    )
    .await;
    // An attempt on each of the old job's deliveries (and the others').
    let claimed = s
        .claim_deliveries(&ClaimRequest {
            owner: "A".into(),
            now: wall_now() + SEC,
            lease_ns: 30 * SEC,
            limit: 100,
        })
        .await
        .expect("claim");
    assert_eq!(
        claimed.len(),
        7,
        "[{}] 3 started, 2 finished, 2 events",
        t.name
    );
    for c in &claimed {
        s.complete_attempt(&AttemptRecord {
            delivery_id: c.delivery.id,
            subscription_id: c.delivery.subscription_id,
            attempt: c.attempt,
            owner: "A".into(),
            started_at: wall_now(),
            latency_ms: 3,
            status_code: Some(500),
            error: Some("HTTP 500".into()),
            outcome: AttemptOutcome::Retry {
                next_attempt_at: wall_now() + 60 * SEC,
            },
        })
        .await
        .expect("complete");
    }
    for (ns, id) in [
        ("runs", "r-old"),
        ("runs", "r-run"),
        ("runs", "r-new"),
        ("service_calls", old.container_id.as_str()),
        ("service_calls", recent.container_id.as_str()),
    ] {
        put_doc(s, ns, id, false).await;
    }
    let before_recent = owned_rows(t, recent.job_id).await;

    let report = run_sweep(s, &rules(Some(7 * DAY)), now).await;
    let d = report.deleted;
    assert_eq!(
        (
            d.jobs,
            d.lines,
            d.deliveries,
            d.attempts,
            d.documents,
            d.other
        ),
        (1, 300, 3, 3, 2, 4),
        "[{}] {report:?}",
        t.name
    );
    assert!(!exists(s, old.job_id).await);
    assert_eq!(owned_rows(t, old.job_id).await, 0, "[{}]", t.name);
    assert!(!has_doc(s, "runs", "r-old").await);
    assert!(!has_doc(s, "service_calls", &old.container_id).await);
    // The old event's delivery went with its attempt; the recent one's stays.
    assert_eq!(
        t.raw_count("SELECT COUNT(*) FROM webhook_deliveries WHERE job_id = 0")
            .await,
        1
    );
    // Kept: the running job (however old), the recent one, their documents and rows.
    assert_eq!(job(s, running.job_id).await.line_count, 20);
    assert_eq!(job(s, recent.job_id).await.line_count, 30);
    assert_eq!(owned_rows(t, recent.job_id).await, before_recent);
    assert_eq!(lines(s, recent.job_id, 0, 100, None).await.len(), 30);
    assert!(has_doc(s, "runs", "r-run").await && has_doc(s, "runs", "r-new").await);
    assert!(has_doc(s, "service_calls", &recent.container_id).await);
    // Sweeping again finds nothing.
    let again = run_sweep(s, &rules(Some(7 * DAY)), now).await;
    assert_eq!(again.deleted.rows(), 0, "[{}]", t.name);
}

/// A flow's own maximum age replaces the global one for its jobs, shorter or longer.
pub async fn retention_per_flow_rules(t: &Target) {
    let s = &*t.open().await;
    let now = wall_now();
    let jobs = [
        ("nightly-old", Some("nightly"), 2 * DAY, false),
        ("nightly-new", Some("nightly"), DAY / 2, true),
        ("build-2d", Some("build"), 2 * DAY, true),
        ("noflow-40d", None, 40 * DAY, false),
        ("archive-40d", Some("archive"), 40 * DAY, true),
        ("archive-70d", Some("archive"), 70 * DAY, false),
    ];
    let writes: Vec<JobWrite> = jobs
        .iter()
        .map(|(tag, flow, age, _)| retained_job(tag, *flow, None, 5, Some(now - age)))
        .collect();
    apply(s, &batch(writes.clone())).await;
    let mut r = rules(Some(30 * DAY));
    r.flows = vec![
        FlowRule {
            flow: "nightly".into(),
            max_age_ns: DAY,
        },
        FlowRule {
            flow: "archive".into(),
            max_age_ns: 60 * DAY,
        },
    ];
    let report = run_sweep(s, &r, now).await;
    assert_eq!(report.deleted.jobs, 3, "[{}] {report:?}", t.name);
    for ((tag, _, _, kept), w) in jobs.iter().zip(&writes) {
        assert_eq!(exists(s, w.job_id).await, *kept, "[{}] {tag}", t.name);
    }
}

/// Past a total cap, the oldest finished jobs go first until the total is under it;
/// running jobs count but are never deleted.
pub async fn retention_caps_delete_oldest_finished_first(t: &Target) {
    let s = &*t.open().await;
    let now = wall_now();
    let finished: Vec<JobWrite> = (0..5)
        .map(|i| {
            retained_job(
                &format!("cap{i}"),
                None,
                None,
                100,
                Some(now - (10 - i) * DAY),
            )
        })
        .collect();
    let running = retained_job("cap-running", None, None, 100, None);
    let mut all = finished.clone();
    all.push(running.clone());
    apply(s, &batch(all)).await;
    // 600 lines stored; at most 350: the three oldest finished jobs go (300 left).
    let mut r = rules(None);
    r.max_lines = Some(350);
    let report = run_sweep(s, &r, now).await;
    assert_eq!(report.deleted.jobs, 3, "[{}] {report:?}", t.name);
    assert_eq!(report.totals.map(|t| t.lines), Some(300));
    for (i, w) in finished.iter().enumerate() {
        assert_eq!(exists(s, w.job_id).await, i >= 3, "[{}] cap{i}", t.name);
    }
    // Bytes: each line is "capN line 000000NN" (18 bytes), so a job holds 1,800 bytes
    // (the running job's 2,500); 6,100 stored, at most 4,500: the oldest finished job
    // left goes.
    let line_bytes = finished[3].lines[0].line.len() as u64;
    assert_eq!(line_bytes, 18);
    let mut r = rules(None);
    r.max_bytes = Some(4_500);
    let report = run_sweep(s, &r, now).await;
    assert_eq!(report.deleted.jobs, 1, "[{}] {report:?}", t.name);
    assert_eq!(report.deleted.line_bytes, 100 * line_bytes);
    assert!(!exists(s, finished[3].job_id).await && exists(s, finished[4].job_id).await);
    // Only the running job and one finished are left: a cap below the running job's
    // size deletes the finished one and keeps the running job.
    r.max_bytes = Some(10);
    run_sweep(s, &r, now).await;
    assert!(!exists(s, finished[4].job_id).await);
    assert_eq!(job(s, running.job_id).await.line_count, 100);
}

/// A job with more lines than `batch_rows` goes over several transactions, none over the
/// bound; a deletion cut short leaves the job (expired, fewer lines), which the next sweep
/// finds and finishes.
pub async fn retention_bounded_transactions_and_interrupted_sweep(t: &Target) {
    let s = &*t.open().await;
    let now = wall_now();
    let big = retained_job("big", None, Some("r-big"), 2_500, Some(now - 10 * DAY));
    apply(s, &batch(vec![big.clone()])).await;
    put_doc(s, "runs", "r-big", false).await;
    let step = DeleteStep {
        job: big.job_id,
        finished_by: now - 10 * DAY,
        max_rows: 1_000,
        run_namespace: Some("runs".into()),
        job_namespaces: Vec::new(),
    };
    // One transaction, then the "crash": the job is there with 1,500 lines.
    let first = s.delete_job_step(&step).await.expect("step");
    assert_eq!((first.deleted.lines, first.finished), (1_000, false));
    let left = t
        .raw_count(&format!(
            "SELECT COUNT(*) FROM log_lines WHERE job_id = {}",
            big.job_id
        ))
        .await;
    assert_eq!(left, 1_500, "[{}]", t.name);
    let remaining = lines(s, big.job_id, 0, 10, None).await;
    assert_eq!(remaining[0].seq, 1_001, "lines go in seq order");
    assert!(exists(s, big.job_id).await && has_doc(s, "runs", "r-big").await);
    // A step whose job finished later than it was told is a no-op (it ran again).
    let stale = DeleteStep {
        finished_by: now - 11 * DAY,
        ..step.clone()
    };
    let noop = s.delete_job_step(&stale).await.expect("stale step");
    assert_eq!((noop.deleted.rows(), noop.finished), (0, true));

    let report = run_sweep(s, &rules(Some(7 * DAY)), now).await;
    assert_eq!(report.deleted.lines, 1_500, "[{}] {report:?}", t.name);
    assert_eq!(report.deleted.jobs, 1);
    // 1,000 + 500 lines, output + label, then the row: 3 transactions at least.
    assert!(report.transactions >= 3, "[{}] {report:?}", t.name);
    assert!(!exists(s, big.job_id).await && !has_doc(s, "runs", "r-big").await);
    assert_eq!(owned_rows(t, big.job_id).await, 0);
}

/// A run's document goes with the last of its jobs, not before; an active run's stays;
/// an old finished run with no job at all goes by age.
pub async fn retention_run_documents_go_with_the_last_job(t: &Target) {
    let s = &*t.open().await;
    let now = wall_now();
    let first = retained_job("run-a", Some("f"), Some("r1"), 3, Some(now - 10 * DAY));
    let second = retained_job("run-b", Some("f"), Some("r1"), 3, Some(now - 5 * DAY));
    let active = retained_job("run-c", Some("f"), Some("r2"), 3, Some(now - 10 * DAY));
    apply(
        s,
        &batch(vec![first.clone(), second.clone(), active.clone()]),
    )
    .await;
    put_doc(s, "runs", "r1", false).await;
    put_doc(s, "runs", "r2", true).await;
    put_doc(s, "runs", "never-had-jobs", false).await;

    // Day 0: only the first job of r1 (and r2's) expire; r1 keeps its document.
    let r = rules(Some(7 * DAY));
    run_sweep(s, &r, now).await;
    assert!(!exists(s, first.job_id).await && exists(s, second.job_id).await);
    assert!(
        has_doc(s, "runs", "r1").await,
        "[{}] r1 still has a job",
        t.name
    );
    assert!(!exists(s, active.job_id).await);
    assert!(has_doc(s, "runs", "r2").await, "[{}] r2 is active", t.name);
    assert!(
        has_doc(s, "runs", "never-had-jobs").await,
        "created just now"
    );

    // Three days later the second job expires, and r1's document goes with it. Ten days
    // on, the run that never had a job is older than the age too.
    run_sweep(s, &r, now + 3 * DAY).await;
    assert!(!exists(s, second.job_id).await);
    assert!(!has_doc(s, "runs", "r1").await, "[{}]", t.name);
    run_sweep(s, &r, now + 10 * DAY).await;
    assert!(!has_doc(s, "runs", "never-had-jobs").await, "[{}]", t.name);
    assert!(
        has_doc(s, "runs", "r2").await,
        "[{}] active runs are kept",
        t.name
    );
}

/// Schema version 4 (and 5 after it) on a database of version 3 with data (SQLite: the column and indexes
/// removed; MySQL: a version 4 cut short, one index missing and the rest there): opening
/// applies it, and the stored job is read and expired as any other.
pub async fn retention_migration_upgrades_an_existing_database(t: &Target) {
    let now = wall_now();
    let old = retained_job("pre-v4", None, None, 10, Some(now - 10 * DAY));
    {
        let s = t.open().await;
        apply(&*s, &batch(vec![old.clone()])).await;
    }
    let downgrade: &[&str] = match t.name {
        "sqlite" => &[
            "DROP INDEX idx_jobs_finished",
            "DROP INDEX idx_jobs_flow_finished",
            "DROP INDEX idx_jobs_run",
            "DROP INDEX idx_webhook_deliveries_job",
            "ALTER TABLE jobs DROP COLUMN line_bytes",
            "ALTER TABLE jobs DROP COLUMN annotations_json",
            "DELETE FROM schema_migrations WHERE version >= 4",
        ],
        _ => &[
            "DROP INDEX idx_jobs_run ON jobs",
            "DELETE FROM schema_migrations WHERE version >= 4",
        ],
    };
    for sql in downgrade {
        t.raw_exec(sql).await;
    }
    let s = &*t.open().await;
    assert_eq!(
        t.raw_count("SELECT COUNT(*) FROM schema_migrations WHERE version = 4")
            .await,
        1
    );
    assert_eq!(job(s, old.job_id).await.line_count, 10);
    let report = run_sweep(s, &rules(Some(7 * DAY)), now).await;
    assert_eq!(
        (report.deleted.jobs, report.deleted.lines),
        (1, 10),
        "[{}]",
        t.name
    );
}

/// Two replicas sweeping the same database at once: both succeed, every row is deleted
/// once (the reports add up to exactly what was expired), and every run's document goes
/// with the run's last job whichever sweep deleted it.
pub async fn retention_concurrent_sweeps_delete_each_row_once(t: &Target) {
    let (a, b) = (t.open().await, t.open().await);
    let now = wall_now();
    let jobs: Vec<JobWrite> = (0..24)
        .map(|i| {
            let run = format!("cr{}", i % 4);
            retained_job(
                &format!("conc{i}"),
                Some("f"),
                Some(&run),
                300,
                Some(now - 9 * DAY),
            )
        })
        .collect();
    for chunk in jobs.chunks(6) {
        apply(&*a, &batch(chunk.to_vec())).await;
    }
    for r in 0..4 {
        put_doc(&*a, "runs", &format!("cr{r}"), false).await;
    }
    let mut r = rules(Some(7 * DAY));
    r.batch_rows = 100;
    let (ra, rb) = tokio::join!(run_sweep(&*a, &r, now), run_sweep(&*b, &r, now));
    let (da, db) = (ra.deleted, rb.deleted);
    assert_eq!(da.jobs + db.jobs, 24, "[{}] {da:?} {db:?}", t.name);
    assert_eq!(da.lines + db.lines, 24 * 300, "[{}]", t.name);
    assert_eq!(da.documents + db.documents, 4, "[{}]", t.name);
    assert_eq!(t.raw_count("SELECT COUNT(*) FROM log_lines").await, 0);
    assert_eq!(t.raw_count("SELECT COUNT(*) FROM jobs").await, 0);
    for r in 0..4 {
        assert!(
            !has_doc(&*a, "runs", &format!("cr{r}")).await,
            "[{}] cr{r}",
            t.name
        );
    }
}
