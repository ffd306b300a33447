//! Conformance suite: every case runs against both backends, each time on a fresh
//! database, and asserts on content (exact bytes, counts, order, statuses, reasons).
//!
//! SQLite uses a file in a temp dir. MySQL needs a server: `LOGARITHM_TEST_MYSQL_URL`
//! (`mysql://root@127.0.0.1:PORT`, no database part); each case creates its own database
//! `lg_<random>` on it and drops it afterwards. Without the variable the suite runs SQLite
//! only, unless `CI` or `LOGARITHM_TEST_REQUIRE_MYSQL` (which scripts/test.sh sets) is
//! set, in which case it fails: every run of the suite proper tests both.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use protocol::Stream;
use storage::{
    job_id_for_container, open, ApplyOutcome, CoResultWrite, ErrorKind, ExitWrite, Job, JobCursor,
    JobId, JobMeta, JobQuery, JobStatus, JobWrite, LineQuery, NewLine, OutputWrite, Storage,
    StorageConfig, StoredLine, Transition, TransitionKind, WriteBatch, EXIT_UNKNOWN,
};

// ---------------------------------------------------------------------------------------
// Targets: one fresh database per backend per case.

enum Raw {
    Sqlite(std::path::PathBuf),
    Mysql { server: String, db: String },
}

struct Target {
    name: &'static str,
    config: StorageConfig,
    raw: Raw,
    _dir: Option<tempfile::TempDir>,
}

fn mysql_server_url() -> Option<String> {
    match std::env::var("LOGARITHM_TEST_MYSQL_URL") {
        Ok(url) if !url.trim().is_empty() => Some(url.trim().trim_end_matches('/').to_owned()),
        _ => {
            // scripts/test.sh sets LOGARITHM_TEST_REQUIRE_MYSQL: a run of the suite that
            // skipped MariaDB would pass on SQLite alone and claim both backends conform.
            if std::env::var_os("CI").is_some()
                || std::env::var_os("LOGARITHM_TEST_REQUIRE_MYSQL").is_some()
            {
                panic!("LOGARITHM_TEST_MYSQL_URL is not set: run scripts/test.sh");
            }
            eprintln!(
                "note: LOGARITHM_TEST_MYSQL_URL is not set, testing SQLite only \
                 (scripts/test.sh runs MySQL too)"
            );
            None
        }
    }
}

async fn sqlite_target() -> Target {
    let dir = tempfile::tempdir().expect("temp dir");
    // A nested path checks that open creates missing parent directories.
    let path = dir.path().join("nested").join("logarithm.db");
    Target {
        name: "sqlite",
        config: StorageConfig::new(format!("sqlite://{}", path.display())),
        raw: Raw::Sqlite(path),
        _dir: Some(dir),
    }
}

async fn mysql_target(server: &str) -> Target {
    let db = format!("lg_{:016x}", rand::random::<u64>());
    let mut conn = mysql_async::Conn::from_url(server)
        .await
        .expect("connect to LOGARITHM_TEST_MYSQL_URL");
    conn.query_drop(format!("CREATE DATABASE {db}"))
        .await
        .expect("create test database");
    conn.disconnect().await.expect("disconnect");
    Target {
        name: "mysql",
        config: StorageConfig::new(format!("{server}/{db}")),
        raw: Raw::Mysql {
            server: server.to_owned(),
            db,
        },
        _dir: None,
    }
}

async fn targets() -> Vec<Target> {
    let mut targets = vec![sqlite_target().await];
    if let Some(server) = mysql_server_url() {
        targets.push(mysql_target(&server).await);
    }
    targets
}

impl Target {
    async fn open(&self) -> Arc<dyn Storage> {
        let storage = open(&self.config)
            .await
            .unwrap_or_else(|e| panic!("[{}] open: {e}", self.name));
        assert_eq!(storage.backend(), self.name);
        storage
    }

    /// Runs a statement outside the storage API (to tamper with the schema).
    async fn raw_exec(&self, sql: &str) {
        match &self.raw {
            Raw::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).expect("raw sqlite open");
                conn.execute_batch(sql).expect("raw sqlite exec");
            }
            Raw::Mysql { server, db } => {
                let mut conn = mysql_async::Conn::from_url(format!("{server}/{db}"))
                    .await
                    .expect("raw mysql connect");
                conn.query_drop(sql).await.expect("raw mysql exec");
                conn.disconnect().await.expect("disconnect");
            }
        }
    }

    async fn raw_count(&self, sql: &str) -> i64 {
        match &self.raw {
            Raw::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).expect("raw sqlite open");
                conn.query_row(sql, [], |r| r.get(0))
                    .expect("raw sqlite query")
            }
            Raw::Mysql { server, db } => {
                let mut conn = mysql_async::Conn::from_url(format!("{server}/{db}"))
                    .await
                    .expect("raw mysql connect");
                let n: Option<i64> = conn.query_first(sql).await.expect("raw mysql query");
                conn.disconnect().await.expect("disconnect");
                n.expect("one row")
            }
        }
    }

    /// The query plan of `sql`, one line per plan row (SQLite: `EXPLAIN QUERY PLAN`'s
    /// details; MySQL: `EXPLAIN`'s `table type key rows Extra`).
    async fn raw_plan(&self, sql: &str) -> String {
        match &self.raw {
            Raw::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).expect("raw sqlite open");
                let mut stmt = conn
                    .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                    .expect("explain");
                let rows = stmt
                    .query_map([], |r| r.get::<_, String>(3))
                    .expect("explain rows");
                rows.map(|r| r.expect("explain row"))
                    .collect::<Vec<_>>()
                    .join("\n")
            }
            Raw::Mysql { server, db } => {
                let mut conn = mysql_async::Conn::from_url(format!("{server}/{db}"))
                    .await
                    .expect("raw mysql connect");
                let rows: Vec<mysql_async::Row> =
                    conn.query(format!("EXPLAIN {sql}")).await.expect("explain");
                conn.disconnect().await.expect("disconnect");
                let col = |r: &mysql_async::Row, name: &str| -> String {
                    r.get_opt::<Option<String>, &str>(name)
                        .and_then(|v| v.ok())
                        .flatten()
                        .unwrap_or_default()
                };
                rows.iter()
                    .map(|r| {
                        ["table", "type", "key", "rows", "Extra"]
                            .map(|c| col(r, c))
                            .join(" ")
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            }
        }
    }

    async fn cleanup(self) {
        if let Raw::Mysql { server, db } = &self.raw {
            if let Ok(mut conn) = mysql_async::Conn::from_url(server.as_str()).await {
                let _ = conn
                    .query_drop(format!("DROP DATABASE IF EXISTS {db}"))
                    .await;
                let _ = conn.disconnect().await;
            }
        }
    }
}

/// One `#[tokio::test]` per case, running it on every target in turn.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            for target in targets().await {
                eprintln!("=== {} on {}", stringify!($case), target.name);
                cases::$case(&target).await;
                target.cleanup().await;
            }
        }
    )*};
}

conformance!(
    lines_round_trip_and_paging,
    replayed_batches_are_stored_once,
    large_batches_are_chunked,
    verdicts_through_exit,
    co_result_last_by_seq_wins,
    outputs_last_by_seq_wins,
    transitions_and_restarts,
    one_batch_spanning_a_restart,
    placeholder_then_meta,
    finished_placeholder_keeps_its_verdict,
    unknown_exit_code_fails_and_says_so,
    metadata_and_logs_unavailable,
    list_jobs_filters_and_cursor,
    concurrent_open_and_reopen,
    newer_schema_is_refused,
    failed_batch_writes_nothing,
    invalid_input_is_rejected_before_writing,
    webhook_deliveries_commit_with_transitions,
    webhook_claims_leases_and_attempts,
    webhook_gone_disables_and_upsert_reenables,
    webhook_concurrent_claimers_never_share_an_attempt,
    documents_compare_and_set_and_list,
    documents_concurrent_writers_never_both_win,
    non_job_events_are_delivered_once_per_subscription,
    concurrent_first_writes_of_new_jobs_all_commit,
    raw_text_pages_join_continuations,
    retention_age_expires_finished_jobs_and_all_they_own,
    retention_per_flow_rules,
    retention_caps_delete_oldest_finished_first,
    retention_bounded_transactions_and_interrupted_sweep,
    retention_run_documents_go_with_the_last_job,
    retention_migration_upgrades_an_existing_database,
    retention_million_lines_over_simulated_days,
    retention_concurrent_sweeps_delete_each_row_once,
    stream_reads_go_through_the_block_index,
    stream_reads_across_rounds_replays_and_text,
    stream_blocks_migrate_an_existing_database,
    annotations_round_trip_and_migrate,
);

#[path = "conformance_cases/annotations.rs"]
mod annotation_cases;
#[path = "conformance_cases/retention.rs"]
mod retention_cases;
#[path = "conformance_cases/retention_days.rs"]
mod retention_days;
#[path = "conformance_cases/stream_blocks.rs"]
mod stream_block_cases;
#[path = "conformance_cases/text.rs"]
mod text_cases;

// ---------------------------------------------------------------------------------------
// Builders and readers.

const NODE: &str = "node-1";

fn cid(tag: &str) -> String {
    format!("{tag:0>64}")
}

fn meta(name: &str, labels: &[(&str, &str)], restart_count: u32) -> JobMeta {
    JobMeta {
        name: name.to_owned(),
        image: "alpine:3.20".to_owned(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        annotations: BTreeMap::new(),
        created_at: 1_700_000_000_000_000_000,
        started_at: 1_700_000_001_000_000_000 + i64::from(restart_count),
        restart_count,
        tty: false,
        log_driver: "json-file".to_owned(),
    }
}

fn line(seq: u64, stream: Stream, bytes: &[u8]) -> NewLine {
    NewLine {
        seq,
        ts: 1_700_000_002_000_000_000 + seq as i64,
        stream,
        cont: false,
        line: bytes.to_vec(),
    }
}

fn text_lines(seqs: std::ops::RangeInclusive<u64>) -> Vec<NewLine> {
    seqs.map(|s| line(s, Stream::Stdout, format!("line {s}").as_bytes()))
        .collect()
}

fn exit(code: i64, restart_count: u32) -> ExitWrite {
    ExitWrite {
        exit_code: Some(code),
        finished_at: 1_700_000_009_000_000_000 + i64::from(restart_count),
        last_seq: 0,
        restart_count,
        failure: None,
    }
}

fn write(container: &str) -> JobWrite {
    JobWrite::new(container, NODE)
}

fn batch(jobs: Vec<JobWrite>) -> WriteBatch {
    WriteBatch { jobs }
}

async fn apply(s: &dyn Storage, b: &WriteBatch) -> ApplyOutcome {
    s.apply(b).await.expect("apply")
}

async fn job(s: &dyn Storage, id: JobId) -> Job {
    s.get_job(id).await.expect("get_job").expect("job exists")
}

async fn lines(
    s: &dyn Storage,
    id: JobId,
    after: u64,
    limit: u32,
    stream: Option<Stream>,
) -> Vec<StoredLine> {
    s.read_lines(&LineQuery {
        job_id: id,
        after_seq: after,
        limit,
        stream,
    })
    .await
    .expect("read_lines")
}

fn seqs(lines: &[StoredLine]) -> Vec<u64> {
    lines.iter().map(|l| l.seq).collect()
}

fn started(id: JobId) -> Transition {
    Transition {
        job_id: id,
        kind: TransitionKind::Started,
    }
}

fn finished(id: JobId) -> Transition {
    Transition {
        job_id: id,
        kind: TransitionKind::Finished,
    }
}

fn stored(l: &NewLine) -> StoredLine {
    StoredLine {
        seq: l.seq,
        ts: l.ts,
        stream: l.stream,
        cont: l.cont,
        line: l.line.clone(),
    }
}

// ---------------------------------------------------------------------------------------

mod cases {
    pub use super::annotation_cases::annotations_round_trip_and_migrate;
    pub use super::document_cases::{
        documents_compare_and_set_and_list, documents_concurrent_writers_never_both_win,
        non_job_events_are_delivered_once_per_subscription,
    };
    pub use super::retention_cases::{
        retention_age_expires_finished_jobs_and_all_they_own,
        retention_bounded_transactions_and_interrupted_sweep,
        retention_caps_delete_oldest_finished_first,
        retention_concurrent_sweeps_delete_each_row_once,
        retention_migration_upgrades_an_existing_database, retention_per_flow_rules,
        retention_run_documents_go_with_the_last_job,
    };
    pub use super::retention_days::retention_million_lines_over_simulated_days;
    pub use super::stream_block_cases::{
        stream_blocks_migrate_an_existing_database, stream_reads_across_rounds_replays_and_text,
        stream_reads_go_through_the_block_index,
    };
    pub use super::text_cases::raw_text_pages_join_continuations;
    pub use super::webhook_cases::{
        webhook_claims_leases_and_attempts, webhook_concurrent_claimers_never_share_an_attempt,
        webhook_deliveries_commit_with_transitions, webhook_gone_disables_and_upsert_reenables,
    };
    use super::*;

    /// Many writers creating new jobs at once (what several agents or ingest workers do):
    /// InnoDB may deadlock them on gap locks; every batch must still commit, once.
    pub async fn concurrent_first_writes_of_new_jobs_all_commit(t: &Target) {
        let s = t.open().await;
        let mut tasks = Vec::new();
        for w in 0..8 {
            let store = Arc::clone(&s);
            tasks.push(tokio::spawn(async move {
                for j in 0..5 {
                    let mut jw = write(&cid(&format!("new{w}x{j}")));
                    jw.meta = Some(meta(&format!("n{w}x{j}"), &[], 0));
                    jw.lines = text_lines(1..=50);
                    let out = store.apply(&batch(vec![jw])).await.expect("apply");
                    assert_eq!((out.stored, out.duplicates), (50, 0));
                }
            }));
        }
        for t in tasks {
            t.await.expect("writer task");
        }
        let jobs = s
            .list_jobs(&JobQuery {
                limit: 100,
                ..JobQuery::default()
            })
            .await
            .expect("list");
        assert_eq!(jobs.len(), 40);
        assert!(jobs.iter().all(|j| j.line_count == 50));
    }

    pub async fn lines_round_trip_and_paging(t: &Target) {
        let s = &*t.open().await;
        let c = cid("a1");
        let id = job_id_for_container(&c);
        let big: Vec<u8> = (0..100 * 1024).map(|i| (i % 251) as u8).collect();
        let mut cont = line(5, Stream::Stdout, b"first half ");
        cont.cont = true;
        let written = vec![
            line(1, Stream::Stdout, b"hello world"),
            line(2, Stream::Stderr, &[0xff, 0xfe, 0x00, b'x', 0xc3]),
            line(3, Stream::Stdout, b""),
            line(4, Stream::Stderr, &big),
            cont,
            line(6, Stream::Stdout, "second half \u{1F600}".as_bytes()),
        ];
        let mut w = write(&c);
        w.meta = Some(meta("web", &[], 0));
        w.lines = written.clone();
        let out = apply(s, &batch(vec![w])).await;
        assert_eq!(out.stored, 6);
        assert_eq!(out.duplicates, 0);
        assert_eq!(out.transitions, vec![started(id)]);

        let all = lines(s, id, 0, 100, None).await;
        let expected: Vec<StoredLine> = written.iter().map(stored).collect();
        assert_eq!(all, expected);
        assert_eq!(all[3].line.len(), 100 * 1024);

        // Paging.
        assert_eq!(seqs(&lines(s, id, 0, 2, None).await), vec![1, 2]);
        assert_eq!(seqs(&lines(s, id, 2, 2, None).await), vec![3, 4]);
        assert_eq!(seqs(&lines(s, id, 4, 10, None).await), vec![5, 6]);
        assert!(lines(s, id, 6, 10, None).await.is_empty());
        assert!(lines(s, id, u64::MAX, 10, None).await.is_empty());
        assert!(lines(s, id, 0, 0, None).await.is_empty());
        // Stream filter.
        assert_eq!(
            seqs(&lines(s, id, 0, 100, Some(Stream::Stderr)).await),
            vec![2, 4]
        );
        assert_eq!(
            seqs(&lines(s, id, 1, 2, Some(Stream::Stdout)).await),
            vec![3, 5]
        );
        // Another job's lines are not mixed in; an unknown job has none.
        assert!(lines(s, job_id_for_container("nope"), 0, 100, None)
            .await
            .is_empty());

        // Lines arriving out of order are read back in seq order.
        let mut w = write(&c);
        w.lines = vec![
            line(9, Stream::Stdout, b"nine"),
            line(7, Stream::Stdout, b"seven"),
        ];
        let out = apply(s, &batch(vec![w])).await;
        assert_eq!((out.stored, out.duplicates), (2, 0));
        assert!(out.transitions.is_empty());
        assert_eq!(seqs(&lines(s, id, 5, 100, None).await), vec![6, 7, 9]);

        let j = job(s, id).await;
        assert_eq!(j.line_count, 8);
        assert_eq!(j.last_seq, 9);
        s.ping().await.expect("ping");
    }

    pub async fn replayed_batches_are_stored_once(t: &Target) {
        let s = &*t.open().await;
        let c = cid("b1");
        let id = job_id_for_container(&c);
        let mut w = write(&c);
        w.meta = Some(meta("job", &[], 0));
        w.lines = text_lines(1..=50);
        w.outputs = vec![OutputWrite {
            name: "K".into(),
            value: "v".into(),
            seq: 10,
        }];
        w.exit = Some(exit(0, 0));
        let b = batch(vec![w]);

        let first = apply(s, &b).await;
        assert_eq!(first.stored, 50);
        assert_eq!(first.duplicates, 0);
        assert_eq!(first.transitions, vec![started(id), finished(id)]);
        for _ in 0..2 {
            let again = apply(s, &b).await;
            assert_eq!(again.stored, 0);
            assert_eq!(again.duplicates, 50);
            assert!(again.transitions.is_empty(), "{:?}", again.transitions);
        }
        let j = job(s, id).await;
        assert_eq!(j.line_count, 50);
        assert_eq!(j.last_seq, 50);
        assert_eq!(j.status, JobStatus::Success);
        assert_eq!(
            j.outputs,
            BTreeMap::from([("K".to_owned(), "v".to_owned())])
        );

        // Overlapping resend: 40..=60 has 11 stored and 10 new lines.
        let mut w = write(&c);
        w.lines = text_lines(40..=60);
        let out = apply(s, &batch(vec![w])).await;
        assert_eq!((out.stored, out.duplicates), (10, 11));
        // A stored line is left as it was, even if the resent bytes differ.
        let mut w = write(&c);
        w.lines = vec![line(1, Stream::Stderr, b"changed")];
        let out = apply(s, &batch(vec![w])).await;
        assert_eq!((out.stored, out.duplicates), (0, 1));

        let all = lines(s, id, 0, 1000, None).await;
        let expected: Vec<StoredLine> = text_lines(1..=60).iter().map(stored).collect();
        assert_eq!(all, expected);
        let j = job(s, id).await;
        assert_eq!(j.line_count, 60);
        assert_eq!(j.last_seq, 60);
    }

    pub async fn large_batches_are_chunked(t: &Target) {
        let s = &*t.open().await;
        let c = cid("big");
        let id = job_id_for_container(&c);
        // More rows than one INSERT takes, then more bytes than one INSERT takes.
        let mut w = write(&c);
        w.meta = Some(meta("big", &[], 0));
        w.lines = (1..=2500)
            .map(|s| line(s, Stream::Stdout, format!("{s:0>100}").as_bytes()))
            .collect();
        let started_at = Instant::now();
        let out = apply(s, &batch(vec![w.clone()])).await;
        assert_eq!((out.stored, out.duplicates), (2500, 0));
        eprintln!("2500 lines applied in {:?}", started_at.elapsed());
        let again = apply(s, &batch(vec![w])).await;
        assert_eq!((again.stored, again.duplicates), (0, 2500));

        let mut w = write(&c);
        w.lines = (2501..=2505)
            .map(|s| line(s, Stream::Stderr, &vec![b'a' + (s % 26) as u8; 3 << 20]))
            .collect();
        let out = apply(s, &batch(vec![w])).await;
        assert_eq!((out.stored, out.duplicates), (5, 0));

        let all = lines(s, id, 0, 10_000, None).await;
        assert_eq!(all.len(), 2505);
        assert_eq!(all[0].line, format!("{:0>100}", 1).into_bytes());
        assert_eq!(all[2499].line, format!("{:0>100}", 2500).into_bytes());
        for l in &all[2500..] {
            assert_eq!(l.line.len(), 3 << 20);
            assert!(l.line.iter().all(|b| *b == b'a' + (l.seq % 26) as u8));
            assert_eq!(l.stream, Stream::Stderr);
        }
        let j = job(s, id).await;
        assert_eq!((j.line_count, j.last_seq), (2505, 2505));
    }

    pub async fn verdicts_through_exit(t: &Target) {
        let s = &*t.open().await;
        let cases: &[(&str, Option<&str>, i64, JobStatus, &str)] = &[
            (
                "v1",
                Some("true"),
                0,
                JobStatus::Success,
                "CO_RESULT = true",
            ),
            (
                "v2",
                Some("false"),
                0,
                JobStatus::Failure,
                "CO_RESULT = false",
            ),
            ("v3", None, 3, JobStatus::Failure, "exit code 3"),
            (
                "v4",
                Some("true"),
                1,
                JobStatus::Failure,
                "exit code 1 despite CO_RESULT = true",
            ),
            (
                "v5",
                Some("maybe"),
                0,
                JobStatus::Failure,
                "invalid CO_RESULT",
            ),
            ("v6", None, 0, JobStatus::Success, "exit code 0"),
            (
                "v7",
                Some("FALSE"),
                2,
                JobStatus::Failure,
                "CO_RESULT = false, exit code 2",
            ),
        ];
        for (tag, co, code, status, reason) in cases {
            let c = cid(tag);
            let id = job_id_for_container(&c);
            let mut w = write(&c);
            w.meta = Some(meta(tag, &[], 0));
            w.lines = text_lines(1..=3);
            w.co_result = co.map(|v| CoResultWrite {
                value: v.to_owned(),
                seq: 2,
            });
            apply(s, &batch(vec![w])).await;
            let running = job(s, id).await;
            assert_eq!(running.status, JobStatus::Running);
            assert_eq!(running.co_result.as_deref(), *co);

            // The exit comes in a later batch: the verdict uses the stored CO_RESULT.
            let mut w = write(&c);
            w.exit = Some(exit(*code, 0));
            let out = apply(s, &batch(vec![w])).await;
            assert_eq!(out.transitions, vec![finished(id)], "{tag}");
            let j = job(s, id).await;
            assert_eq!(j.status, *status, "{tag}");
            assert_eq!(j.reason.as_deref(), Some(*reason), "{tag}");
            assert_eq!(j.exit_code, Some(*code), "{tag}");
            assert_eq!(j.finished_at, Some(1_700_000_009_000_000_000), "{tag}");
        }
    }

    pub async fn co_result_last_by_seq_wins(t: &Target) {
        let s = &*t.open().await;
        let c = cid("co");
        let id = job_id_for_container(&c);
        let co = |value: &str, seq| CoResultWrite {
            value: value.to_owned(),
            seq,
        };
        let mut w = write(&c);
        w.meta = Some(meta("co", &[], 0));
        w.co_result = Some(co("false", 5));
        apply(s, &batch(vec![w])).await;
        // An older CO_RESULT applied later does not win.
        let mut w = write(&c);
        w.co_result = Some(co("true", 3));
        apply(s, &batch(vec![w])).await;
        assert_eq!(job(s, id).await.co_result.as_deref(), Some("false"));
        let mut w = write(&c);
        w.co_result = Some(co("true", 8));
        w.exit = Some(exit(0, 0));
        apply(s, &batch(vec![w])).await;
        let j = job(s, id).await;
        assert_eq!(j.co_result.as_deref(), Some("true"));
        assert_eq!(j.status, JobStatus::Success);
        assert_eq!(j.reason.as_deref(), Some("CO_RESULT = true"));
    }

    pub async fn outputs_last_by_seq_wins(t: &Target) {
        let s = &*t.open().await;
        let c = cid("out");
        let id = job_id_for_container(&c);
        let o = |name: &str, value: &str, seq| OutputWrite {
            name: name.to_owned(),
            value: value.to_owned(),
            seq,
        };
        let mut w = write(&c);
        w.meta = Some(meta("out", &[], 0));
        w.outputs = vec![o("A", "1", 2), o("B", "x", 3), o("E", "new", 50)];
        apply(s, &batch(vec![w])).await;

        let mut w = write(&c);
        w.outputs = vec![o("A", "2", 10)];
        apply(s, &batch(vec![w])).await;
        // Older writes replayed after newer ones lose.
        let mut w = write(&c);
        w.outputs = vec![o("A", "1", 2), o("A", "stale", 5), o("E", "old", 40)];
        apply(s, &batch(vec![w])).await;
        // Within one write, the highest seq wins whatever the order.
        let mut w = write(&c);
        w.outputs = vec![
            o("C", "first", 20),
            o("C", "second", 21),
            o("D", "newer", 31),
            o("D", "older", 30),
        ];
        apply(s, &batch(vec![w])).await;
        // Same seq again (a replay) changes nothing.
        let mut w = write(&c);
        w.outputs = vec![o("B", "replayed", 3)];
        apply(s, &batch(vec![w])).await;

        let expected: BTreeMap<String, String> = [
            ("A", "2"),
            ("B", "x"),
            ("C", "second"),
            ("D", "newer"),
            ("E", "new"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        assert_eq!(job(s, id).await.outputs, expected);
    }

    pub async fn transitions_and_restarts(t: &Target) {
        let s = &*t.open().await;
        let c = cid("tr");
        let id = job_id_for_container(&c);
        let with_meta = |rc| {
            let mut w = write(&c);
            w.meta = Some(meta("tr", &[], rc));
            w
        };

        assert_eq!(
            apply(s, &batch(vec![with_meta(0)])).await.transitions,
            vec![started(id)]
        );
        // Metadata sent again (agent restart) is not a new start.
        assert!(apply(s, &batch(vec![with_meta(0)]))
            .await
            .transitions
            .is_empty());

        let mut w = write(&c);
        w.co_result = Some(CoResultWrite {
            value: "false".into(),
            seq: 5,
        });
        w.exit = Some(exit(0, 0));
        let b = batch(vec![w]);
        assert_eq!(apply(s, &b).await.transitions, vec![finished(id)]);
        // The same exit again: no second Finished, nothing changes.
        let before = job(s, id).await;
        assert!(apply(s, &b).await.transitions.is_empty());
        let mut w = write(&c);
        w.exit = Some(exit(7, 0));
        assert!(apply(s, &batch(vec![w])).await.transitions.is_empty());
        assert_eq!(job(s, id).await, before);
        assert_eq!(before.status, JobStatus::Failure);
        assert_eq!(before.reason.as_deref(), Some("CO_RESULT = false"));
        // Metadata of the same run after it finished keeps the final status.
        assert!(apply(s, &batch(vec![with_meta(0)]))
            .await
            .transitions
            .is_empty());
        assert_eq!(job(s, id).await.status, JobStatus::Failure);

        // Restart: Started again, running, the previous run's verdict cleared.
        assert_eq!(
            apply(s, &batch(vec![with_meta(1)])).await.transitions,
            vec![started(id)]
        );
        let j = job(s, id).await;
        assert_eq!(j.status, JobStatus::Running);
        assert_eq!(j.restart_count, 1);
        assert_eq!(j.started_at, 1_700_000_001_000_000_001);
        assert_eq!(
            (j.reason, j.exit_code, j.finished_at, j.co_result),
            (None, None, None, None)
        );

        // The previous run's CO_RESULT replayed does not come back.
        let mut w = write(&c);
        w.co_result = Some(CoResultWrite {
            value: "false".into(),
            seq: 5,
        });
        apply(s, &batch(vec![w])).await;
        assert_eq!(job(s, id).await.co_result, None);
        // A stale exit of run 0 does not finish run 1; neither does stale metadata restart it.
        let mut w = write(&c);
        w.exit = Some(exit(0, 0));
        assert!(apply(s, &batch(vec![w])).await.transitions.is_empty());
        assert!(apply(s, &batch(vec![with_meta(0)]))
            .await
            .transitions
            .is_empty());
        let j = job(s, id).await;
        assert_eq!((j.status, j.restart_count), (JobStatus::Running, 1));

        let mut w = write(&c);
        w.exit = Some(exit(0, 1));
        assert_eq!(
            apply(s, &batch(vec![w])).await.transitions,
            vec![finished(id)]
        );
        let j = job(s, id).await;
        assert_eq!(j.status, JobStatus::Success);
        assert_eq!(j.reason.as_deref(), Some("exit code 0"));
        assert_eq!(j.finished_at, Some(1_700_000_009_000_000_001));
    }

    pub async fn one_batch_spanning_a_restart(t: &Target) {
        let s = &*t.open().await;
        let c = cid("span");
        let id = job_id_for_container(&c);
        let other = cid("other");
        let other_id = job_id_for_container(&other);
        let mut run0 = write(&c);
        run0.meta = Some(meta("span", &[], 0));
        run0.lines = text_lines(1..=3);
        run0.exit = Some(exit(1, 0));
        let mut o = write(&other);
        o.meta = Some(meta("other", &[], 0));
        let mut run1 = write(&c);
        run1.meta = Some(meta("span", &[], 1));
        run1.lines = text_lines(4..=5);
        let out = apply(s, &batch(vec![run0, o, run1])).await;
        assert_eq!(
            out.transitions,
            vec![started(id), finished(id), started(other_id), started(id)]
        );
        assert_eq!((out.stored, out.duplicates), (5, 0));
        let j = job(s, id).await;
        assert_eq!(
            (j.status, j.restart_count, j.line_count),
            (JobStatus::Running, 1, 5)
        );
        assert_eq!(j.exit_code, None);
    }

    pub async fn placeholder_then_meta(t: &Target) {
        let s = &*t.open().await;
        let c = cid("ph");
        let id = job_id_for_container(&c);
        let mut w = write(&c);
        w.lines = text_lines(1..=4);
        w.co_result = Some(CoResultWrite {
            value: "true".into(),
            seq: 3,
        });
        let out = apply(s, &batch(vec![w])).await;
        assert_eq!((out.stored, out.duplicates), (4, 0));
        assert!(out.transitions.is_empty());
        let j = job(s, id).await;
        assert_eq!(j.name, c[..12]);
        assert_eq!(j.image, "");
        assert_eq!(j.node, NODE);
        assert_eq!(j.status, JobStatus::Running);
        assert!(j.labels.is_empty());
        assert_eq!(j.line_count, 4);

        let mut w = write(&c);
        w.meta = Some(meta("late-meta", &[("io.containerops.flow", "f")], 0));
        w.lines = text_lines(5..=5);
        let out = apply(s, &batch(vec![w])).await;
        assert_eq!(out.transitions, vec![started(id)]);
        let j = job(s, id).await;
        assert_eq!(j.name, "late-meta");
        assert_eq!(j.image, "alpine:3.20");
        assert_eq!(j.flow.as_deref(), Some("f"));
        assert_eq!(j.status, JobStatus::Running);
        assert_eq!(j.created_at, 1_700_000_000_000_000_000);
        assert_eq!(j.started_at, 1_700_000_001_000_000_000);
        assert_eq!((j.line_count, j.last_seq), (5, 5));
        // The CO_RESULT seen before the metadata belongs to this run and still counts.
        assert_eq!(j.co_result.as_deref(), Some("true"));
        // The label filter works once metadata arrived.
        let found = s
            .list_jobs(&JobQuery {
                flow: Some("f".into()),
                limit: 10,
                ..JobQuery::default()
            })
            .await
            .expect("list");
        assert_eq!(found.iter().map(|j| j.id).collect::<Vec<_>>(), vec![id]);

        let mut w = write(&c);
        w.exit = Some(exit(0, 0));
        assert_eq!(
            apply(s, &batch(vec![w])).await.transitions,
            vec![finished(id)]
        );
        let j = job(s, id).await;
        assert_eq!(j.status, JobStatus::Success);
        assert_eq!(j.reason.as_deref(), Some("CO_RESULT = true"));
    }

    pub async fn finished_placeholder_keeps_its_verdict(t: &Target) {
        let s = &*t.open().await;
        let c = cid("phx");
        let id = job_id_for_container(&c);
        let mut w = write(&c);
        w.lines = text_lines(1..=2);
        w.exit = Some(exit(4, 0));
        assert_eq!(
            apply(s, &batch(vec![w])).await.transitions,
            vec![finished(id)]
        );
        // Metadata of that same run arriving late fills the job in but does not reopen it.
        let mut w = write(&c);
        w.meta = Some(meta("late", &[], 0));
        assert!(apply(s, &batch(vec![w])).await.transitions.is_empty());
        let j = job(s, id).await;
        assert_eq!(j.name, "late");
        assert_eq!(j.status, JobStatus::Failure);
        assert_eq!(j.reason.as_deref(), Some("exit code 4"));
        assert_eq!(j.exit_code, Some(4));
    }

    /// An exit whose code the runtime never reported: the job fails, even with
    /// `CO_RESULT = true`, its exit code stays NULL and its reason says why.
    pub async fn unknown_exit_code_fails_and_says_so(t: &Target) {
        let s = &*t.open().await;
        let c = cid("unk");
        let id = job_id_for_container(&c);
        let mut w = write(&c);
        w.meta = Some(meta("unknown", &[], 0));
        w.lines = vec![line(1, Stream::Stdout, b"[COUT] CO_RESULT = true")];
        w.co_result = Some(CoResultWrite {
            value: "true".into(),
            seq: 1,
        });
        w.exit = Some(ExitWrite {
            exit_code: None,
            ..exit(0, 0)
        });
        assert_eq!(
            apply(s, &batch(vec![w])).await.transitions,
            vec![started(id), finished(id)]
        );
        let j = job(s, id).await;
        assert_eq!(j.status, JobStatus::Failure);
        assert_eq!(j.exit_code, None);
        assert_eq!(j.reason.as_deref(), Some(EXIT_UNKNOWN));
    }

    pub async fn metadata_and_logs_unavailable(t: &Target) {
        let s = &*t.open().await;
        let c = cid("md");
        let id = job_id_for_container(&c);
        let labels = [
            ("io.containerops.flow", "build"),
            ("io.containerops.run", "42"),
            ("io.containerops.stage", "test"),
            ("io.containerops.action", "unit"),
            ("io.containerops.job", "cargo"),
            ("team", "storage \u{e9}t\u{e9}"),
        ];
        let mut m = meta("md", &labels, 0);
        m.tty = true;
        m.log_driver = "none".into();
        let mut w = JobWrite::new(&c, "node-7");
        w.meta = Some(m.clone());
        w.logs_unavailable =
            Some("Docker answered 501: configured logging driver does not support reading".into());
        apply(s, &batch(vec![w])).await;
        let j = job(s, id).await;
        let expected = Job {
            id,
            container_id: c.clone(),
            name: "md".into(),
            image: "alpine:3.20".into(),
            node: "node-7".into(),
            labels: m.labels.clone(),
            annotations: BTreeMap::new(),
            flow: Some("build".into()),
            run: Some("42".into()),
            stage: Some("test".into()),
            action: Some("unit".into()),
            job: Some("cargo".into()),
            status: JobStatus::Running,
            reason: None,
            exit_code: None,
            co_result: None,
            created_at: m.created_at,
            started_at: m.started_at,
            finished_at: None,
            restart_count: 0,
            tty: true,
            log_driver: "none".into(),
            logs_unavailable: Some(
                "Docker answered 501: configured logging driver does not support reading".into(),
            ),
            last_seq: 0,
            line_count: 0,
            outputs: BTreeMap::new(),
        };
        assert_eq!(j, expected);
        assert!(s
            .get_job(job_id_for_container("missing"))
            .await
            .expect("get")
            .is_none());

        // Metadata with changed labels replaces the indexed labels.
        let mut w = JobWrite::new(&c, "node-8");
        w.meta = Some(meta("md", &[("team", "other")], 0));
        apply(s, &batch(vec![w])).await;
        let q = |k: &str, v: &str| JobQuery {
            labels: vec![(k.to_owned(), v.to_owned())],
            limit: 10,
            ..JobQuery::default()
        };
        assert!(s
            .list_jobs(&q("team", "storage \u{e9}t\u{e9}"))
            .await
            .expect("list")
            .is_empty());
        let found = s.list_jobs(&q("team", "other")).await.expect("list");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].node, "node-8");
        assert_eq!(found[0].flow, None);
        // Label values compare exactly (binary collation).
        assert!(s
            .list_jobs(&q("team", "OTHER"))
            .await
            .expect("list")
            .is_empty());
    }

    pub async fn list_jobs_filters_and_cursor(t: &Target) {
        let s = &*t.open().await;
        let long_value = "x".repeat(600);
        let mut writes = Vec::new();
        for i in 0..25u32 {
            let c = cid(&format!("lj{i}"));
            let flow = if i % 2 == 0 { "f1" } else { "f2" };
            let run = format!("r{}", i % 3);
            let mut labels = vec![
                ("io.containerops.flow", flow),
                ("io.containerops.run", run.as_str()),
            ];
            if i % 5 == 0 {
                labels.push(("team", "a"));
            }
            if i == 7 {
                labels.push(("long", long_value.as_str()));
            }
            let mut m = meta(&format!("job{i}"), &labels, 0);
            // Pairs share created_at, so the id must break ties.
            m.created_at = 1_000 + i64::from(i / 2);
            let mut w = write(&c);
            w.meta = Some(m);
            match i % 4 {
                0 => w.exit = Some(exit(0, 0)),
                1 => w.exit = Some(exit(1, 0)),
                _ => {}
            }
            writes.push(w);
        }
        let out = apply(s, &batch(writes)).await;
        assert_eq!(out.transitions.len(), 25 + 13);

        // Expected order from the jobs themselves: newest first, then id descending.
        let mut all = Vec::new();
        for i in 0..25u32 {
            all.push(job(s, job_id_for_container(&cid(&format!("lj{i}")))).await);
        }
        all.sort_by_key(|j| std::cmp::Reverse((j.created_at, j.id)));
        let ids = |jobs: &[Job]| jobs.iter().map(|j| j.id).collect::<Vec<_>>();

        let list = |q: JobQuery| async move { s.list_jobs(&q).await.expect("list_jobs") };
        let q = |limit| JobQuery {
            limit,
            ..JobQuery::default()
        };
        let everything = list(q(100)).await;
        assert_eq!(ids(&everything), ids(&all));
        assert!(everything.iter().all(|j| j.outputs.is_empty()));
        let j7 = everything.iter().find(|j| j.name == "job7").expect("job7");
        assert_eq!(j7.labels.get("long"), Some(&long_value));

        // Cursor pagination: 10, 10, 5, then nothing; together exactly the full list.
        let mut paged = Vec::new();
        let mut after = None;
        let mut sizes = Vec::new();
        loop {
            let page = list(JobQuery {
                limit: 10,
                after,
                ..JobQuery::default()
            })
            .await;
            sizes.push(page.len());
            let Some(last) = page.last() else { break };
            after = Some(JobCursor {
                created_at: last.created_at,
                id: last.id,
            });
            paged.extend(page);
        }
        assert_eq!(sizes, vec![10, 10, 5, 0]);
        assert_eq!(ids(&paged), ids(&all));

        let expect = |pred: &dyn Fn(&Job) -> bool| {
            all.iter()
                .filter(|j| pred(j))
                .map(|j| j.id)
                .collect::<Vec<_>>()
        };
        let f1 = list(JobQuery {
            flow: Some("f1".into()),
            limit: 100,
            ..JobQuery::default()
        })
        .await;
        assert_eq!(ids(&f1), expect(&|j| j.flow.as_deref() == Some("f1")));
        assert_eq!(f1.len(), 13);
        let f1r0 = list(JobQuery {
            flow: Some("f1".into()),
            run: Some("r0".into()),
            limit: 100,
            ..JobQuery::default()
        })
        .await;
        assert_eq!(
            ids(&f1r0),
            expect(&|j| j.flow.as_deref() == Some("f1") && j.run.as_deref() == Some("r0"))
        );
        assert_eq!(f1r0.len(), 5);
        for (status, n) in [
            (JobStatus::Success, 7),
            (JobStatus::Failure, 6),
            (JobStatus::Running, 12),
        ] {
            let got = list(JobQuery {
                status: Some(status),
                limit: 100,
                ..JobQuery::default()
            })
            .await;
            assert_eq!(ids(&got), expect(&|j| j.status == status), "{status:?}");
            assert_eq!(got.len(), n, "{status:?}");
        }
        let team = list(JobQuery {
            labels: vec![("team".into(), "a".into())],
            limit: 100,
            ..JobQuery::default()
        })
        .await;
        assert_eq!(
            ids(&team),
            expect(&|j| j.labels.get("team").map(String::as_str) == Some("a"))
        );
        assert_eq!(team.len(), 5);
        let team_f2_failed = list(JobQuery {
            flow: Some("f2".into()),
            status: Some(JobStatus::Failure),
            labels: vec![
                ("team".into(), "a".into()),
                ("io.containerops.run".into(), "r2".into()),
            ],
            limit: 100,
            ..JobQuery::default()
        })
        .await;
        // i = 5 is the one odd multiple of 5 with i % 3 == 2 and i % 4 == 1.
        assert_eq!(
            ids(&team_f2_failed),
            vec![job_id_for_container(&cid("lj5"))]
        );
        assert!(list(JobQuery {
            labels: vec![("team".into(), "b".into())],
            limit: 100,
            ..JobQuery::default()
        })
        .await
        .is_empty());
        // A label too long to index is kept, but cannot be filtered on.
        assert!(list(JobQuery {
            labels: vec![("long".into(), long_value.clone())],
            limit: 100,
            ..JobQuery::default()
        })
        .await
        .is_empty());
        // Filters combine with the cursor.
        let first = list(JobQuery {
            flow: Some("f1".into()),
            limit: 4,
            ..JobQuery::default()
        })
        .await;
        let last = first.last().expect("a page");
        let rest = list(JobQuery {
            flow: Some("f1".into()),
            limit: 100,
            after: Some(JobCursor {
                created_at: last.created_at,
                id: last.id,
            }),
            ..JobQuery::default()
        })
        .await;
        let mut joined = ids(&first);
        joined.extend(ids(&rest));
        assert_eq!(joined, ids(&f1));
    }

    pub async fn concurrent_open_and_reopen(t: &Target) {
        let (a, b) = tokio::join!(open(&t.config), open(&t.config));
        let a = a.unwrap_or_else(|e| panic!("first concurrent open: {e}"));
        let b = b.unwrap_or_else(|e| panic!("second concurrent open: {e}"));
        // Version 1 (jobs, lines), 2 (webhooks), 3 (documents), 4 (retention), 5 (lines
        // by stream), 6 (stream blocks) and 7 (annotations), each applied once.
        assert_eq!(
            t.raw_count("SELECT COUNT(*) FROM schema_migrations").await,
            7
        );

        let c = cid("mig");
        let id = job_id_for_container(&c);
        let mut w = write(&c);
        w.meta = Some(meta("mig", &[], 0));
        w.lines = text_lines(1..=3);
        apply(&*a, &batch(vec![w])).await;
        // Both handles see the same database.
        assert_eq!(job(&*b, id).await.line_count, 3);
        drop((a, b));

        let again = t.open().await;
        assert_eq!(
            t.raw_count("SELECT COUNT(*) FROM schema_migrations").await,
            7
        );
        assert_eq!(job(&*again, id).await.line_count, 3);
        assert_eq!(seqs(&lines(&*again, id, 0, 10, None).await), vec![1, 2, 3]);
    }

    pub async fn newer_schema_is_refused(t: &Target) {
        drop(t.open().await);
        t.raw_exec(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (9999, 'from the future', 0)",
        )
        .await;
        match open(&t.config).await {
            Ok(_) => panic!("opened a database with schema version 9999"),
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
                assert!(e.to_string().contains("9999"), "{e}");
            }
        }
    }

    pub async fn failed_batch_writes_nothing(t: &Target) {
        let s = &*t.open().await;
        // A valid job, then one the database rejects (container id longer than its column).
        let ok = cid("atom");
        let ok_id = job_id_for_container(&ok);
        let mut good = write(&ok);
        good.meta = Some(meta("atom", &[("team", "a")], 0));
        good.lines = text_lines(1..=10);
        good.outputs = vec![OutputWrite {
            name: "K".into(),
            value: "v".into(),
            seq: 2,
        }];
        good.exit = Some(exit(0, 0));
        let mut bad = write(&"z".repeat(200));
        bad.meta = Some(meta("bad", &[], 0));
        bad.lines = text_lines(1..=2);
        let err = s
            .apply(&batch(vec![good.clone(), bad]))
            .await
            .expect_err("a 200-character container id must be rejected");
        assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
        assert!(!err.is_transient());
        assert!(s.get_job(ok_id).await.expect("get").is_none());
        assert!(lines(s, ok_id, 0, 100, None).await.is_empty());
        let q = JobQuery {
            limit: 100,
            ..JobQuery::default()
        };
        assert!(s.list_jobs(&q).await.expect("list").is_empty());
        for table in ["jobs", "log_lines", "job_outputs", "job_labels"] {
            let n = t.raw_count(&format!("SELECT COUNT(*) FROM {table}")).await;
            assert_eq!(n, 0, "{table}");
        }

        // Failing after writes to an existing job: a second job id claiming the same
        // container violates the unique container id; the earlier lines roll back too.
        let out = apply(s, &batch(vec![good])).await;
        assert_eq!(out.stored, 10);
        let mut more = write(&ok);
        more.lines = text_lines(11..=20);
        more.exit = Some(exit(1, 1));
        let mut clash = write(&ok);
        clash.job_id = 12345;
        clash.lines = text_lines(1..=1);
        let err = s
            .apply(&batch(vec![more, clash]))
            .await
            .expect_err("a second job for one container must be rejected");
        assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
        let j = job(s, ok_id).await;
        assert_eq!((j.line_count, j.last_seq, j.restart_count), (10, 10, 0));
        assert_eq!(j.status, JobStatus::Success);
        assert_eq!(
            seqs(&lines(s, ok_id, 0, 100, None).await),
            (1..=10).collect::<Vec<_>>()
        );
        assert!(s.get_job(12345).await.expect("get").is_none());
    }

    pub async fn invalid_input_is_rejected_before_writing(t: &Target) {
        let s = &*t.open().await;
        let c = cid("inv");
        let id = job_id_for_container(&c);
        let mut good = write(&c);
        good.meta = Some(meta("inv", &[], 0));
        good.lines = text_lines(1..=3);
        let mut zero = write(&cid("zero"));
        zero.lines = vec![line(0, Stream::Stdout, b"seq 0")];
        let err = s
            .apply(&batch(vec![good.clone(), zero]))
            .await
            .expect_err("seq 0 must be rejected");
        assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
        let mut huge = write(&cid("huge"));
        huge.lines = vec![line(u64::MAX, Stream::Stdout, b"too far")];
        let err = s
            .apply(&batch(vec![good.clone(), huge]))
            .await
            .expect_err("seq beyond BIGINT must be rejected");
        assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
        assert!(s.get_job(id).await.expect("get").is_none());
        // An empty batch is a no-op.
        assert_eq!(
            apply(s, &WriteBatch::default()).await,
            ApplyOutcome::default()
        );
        // Over-long container-provided text is cut to the column, not rejected.
        let mut long = write(&c);
        let mut m = meta(&"n".repeat(300), &[], 0);
        m.image = "i".repeat(300);
        long.meta = Some(m);
        long.outputs = vec![OutputWrite {
            name: "BIG".into(),
            value: "\u{e9}".repeat(40_000),
            seq: 1,
        }];
        long.co_result = Some(CoResultWrite {
            value: "c".repeat(2000),
            seq: 1,
        });
        long.logs_unavailable = Some("u".repeat(2000));
        apply(s, &batch(vec![long])).await;
        let j = job(s, id).await;
        assert_eq!(j.name.chars().count(), 255);
        assert_eq!(j.image.chars().count(), 255);
        assert_eq!(j.co_result.as_deref().map(str::len), Some(1024));
        assert_eq!(j.logs_unavailable.as_deref().map(str::len), Some(1024));
        let big = &j.outputs["BIG"];
        assert!(big.len() <= 65_535 && big.len() >= 65_534, "{}", big.len());
        assert!(big.chars().all(|c| c == '\u{e9}'));
    }
}

// ---------------------------------------------------------------------------------------
// Webhooks: subscriptions, the outbox written by apply, claims with leases, attempts.

mod webhook_cases {
    use super::*;
    use std::collections::BTreeSet;
    use storage::{
        AttemptOutcome, AttemptRecord, ClaimRequest, ClaimedDelivery, DeliveryStatus, EventKind,
        SubscriptionSource, SubscriptionSpec,
    };

    const SEC: i64 = 1_000_000_000;

    pub fn spec(id: i64, events: &[EventKind], filters: &[(&str, &str)]) -> SubscriptionSpec {
        SubscriptionSpec {
            id,
            name: None,
            source: SubscriptionSource::Api,
            url: format!("http://127.0.0.1:9/hook/{id}"),
            secret: format!("secret-{id}"),
            events: events.iter().copied().collect::<BTreeSet<_>>(),
            filters: filters
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos() as i64
    }

    /// A job that starts and finishes in one write, with an output and labels.
    pub fn finishing_job(tag: &str, labels: &[(&str, &str)]) -> JobWrite {
        let mut w = write(&cid(tag));
        w.meta = Some(meta(tag, labels, 0));
        w.lines = text_lines(1..=2);
        w.outputs = vec![OutputWrite {
            name: "URL".into(),
            value: format!("http://x/{tag}"),
            seq: 1,
        }];
        w.co_result = Some(CoResultWrite {
            value: "true".into(),
            seq: 2,
        });
        w.exit = Some(exit(0, 0));
        w
    }

    fn claim_req(owner: &str, now: i64, limit: u32) -> ClaimRequest {
        ClaimRequest {
            owner: owner.into(),
            now,
            lease_ns: 30 * SEC,
            limit,
        }
    }

    fn record(
        c: &ClaimedDelivery,
        owner: &str,
        code: Option<u16>,
        outcome: AttemptOutcome,
    ) -> AttemptRecord {
        AttemptRecord {
            delivery_id: c.delivery.id,
            subscription_id: c.delivery.subscription_id,
            attempt: c.attempt,
            owner: owner.into(),
            started_at: now(),
            latency_ms: 12,
            status_code: code,
            error: code.filter(|c| *c >= 300).map(|c| format!("HTTP {c}")),
            outcome,
        }
    }

    pub async fn webhook_deliveries_commit_with_transitions(t: &Target) {
        let s = &*t.open().await;
        let release = s
            .upsert_subscription(&spec(
                11,
                &[EventKind::JobFinished],
                &[("io.containerops.flow", "release")],
            ))
            .await
            .expect("upsert");
        assert!(release.enabled);
        s.upsert_subscription(&spec(
            12,
            &[EventKind::JobStarted, EventKind::JobFinished],
            &[],
        ))
        .await
        .expect("upsert");
        s.upsert_subscription(&spec(13, &[EventKind::FlowFinished], &[]))
            .await
            .expect("upsert");
        let subs = s.list_subscriptions().await.expect("list");
        assert_eq!(
            subs.iter().map(|s| s.spec.id).collect::<Vec<_>>(),
            vec![11, 12, 13]
        );
        assert_eq!(subs[0].spec.secret, "secret-11");
        assert_eq!(
            s.get_subscription(12)
                .await
                .expect("get")
                .map(|s| s.spec.url),
            Some("http://127.0.0.1:9/hook/12".to_owned())
        );
        assert!(s.get_subscription(99).await.expect("get").is_none());

        let a = finishing_job("wa", &[("io.containerops.flow", "release")]);
        let b = finishing_job("wb", &[("io.containerops.flow", "nightly")]);
        let (ida, idb) = (a.job_id, b.job_id);
        let out = apply(s, &batch(vec![a.clone(), b])).await;
        let kinds: Vec<(EventKind, JobId)> =
            out.events.iter().map(|e| (e.kind, e.job.id)).collect();
        assert_eq!(
            kinds,
            vec![
                (EventKind::JobStarted, ida),
                (EventKind::JobFinished, ida),
                (EventKind::JobStarted, idb),
                (EventKind::JobFinished, idb)
            ]
        );
        // The started snapshot is the job as it started; the finished one has the verdict.
        assert_eq!(out.events[0].job.status, JobStatus::Running);
        assert!(out.events[0].job.outputs.is_empty());
        let fin = &out.events[1].job;
        assert_eq!(fin.status, JobStatus::Success);
        assert_eq!(fin.reason.as_deref(), Some("CO_RESULT = true"));
        assert_eq!(
            fin.outputs.get("URL").map(String::as_str),
            Some("http://x/wa")
        );
        assert_eq!(fin.flow.as_deref(), Some("release"));

        // Filtered: only the release job's finish. Unfiltered: both jobs, both events.
        let d11 = s.list_deliveries(11, 100).await.expect("deliveries");
        assert_eq!(d11.len(), 1);
        let d = &d11[0].delivery;
        assert_eq!(
            (d.event, d.job.as_ref().map(|j| j.id), d.status, d.attempts),
            (
                EventKind::JobFinished,
                Some(ida),
                DeliveryStatus::Pending,
                0
            )
        );
        assert_eq!(d.job.as_ref(), Some(fin));
        assert!(d11[0].attempts.is_empty());
        let d12 = s.list_deliveries(12, 100).await.expect("deliveries");
        assert_eq!(d12.len(), 4);
        assert!(s
            .list_deliveries(13, 100)
            .await
            .expect("deliveries")
            .is_empty());
        assert_eq!(s.list_deliveries(12, 2).await.expect("deliveries").len(), 2);
        assert_eq!(
            t.raw_count("SELECT COUNT(*) FROM webhook_deliveries").await,
            5
        );

        // A replay has no transitions, so no deliveries.
        let again = apply(s, &batch(vec![a])).await;
        assert!(again.events.is_empty());
        assert_eq!(
            t.raw_count("SELECT COUNT(*) FROM webhook_deliveries").await,
            5
        );

        // A batch that fails writes no deliveries either.
        let c = finishing_job("wc", &[]);
        let bad = write(&"x".repeat(200));
        s.apply(&batch(vec![c, bad]))
            .await
            .expect_err("too long container id");
        assert_eq!(
            t.raw_count("SELECT COUNT(*) FROM webhook_deliveries").await,
            5
        );

        // Deleting a subscription deletes its deliveries.
        assert!(s.delete_subscription(12).await.expect("delete"));
        assert!(!s.delete_subscription(12).await.expect("delete again"));
        assert_eq!(
            t.raw_count("SELECT COUNT(*) FROM webhook_deliveries").await,
            1
        );
        assert!(s
            .list_deliveries(12, 100)
            .await
            .expect("deliveries")
            .is_empty());
    }

    pub async fn webhook_claims_leases_and_attempts(t: &Target) {
        let s = &*t.open().await;
        s.upsert_subscription(&spec(21, &[EventKind::JobFinished], &[]))
            .await
            .expect("upsert");
        assert_eq!(s.count_pending_deliveries().await.expect("count"), 0);
        apply(s, &batch(vec![finishing_job("ca", &[])])).await;
        assert_eq!(s.count_pending_deliveries().await.expect("count"), 1);
        let t0 = now() + SEC;

        let first = s
            .claim_deliveries(&claim_req("A", t0, 10))
            .await
            .expect("claim");
        assert_eq!(first.len(), 1);
        let c1 = &first[0];
        assert_eq!(c1.attempt, 1);
        assert_eq!(c1.url, "http://127.0.0.1:9/hook/21");
        assert_eq!(c1.secret, "secret-21");
        assert_eq!(c1.delivery.event, EventKind::JobFinished);
        // Leased: nobody else gets it, not even the same owner.
        assert!(s
            .claim_deliveries(&claim_req("B", t0, 10))
            .await
            .expect("claim")
            .is_empty());
        assert!(s
            .claim_deliveries(&claim_req("A", t0 + SEC, 10))
            .await
            .expect("claim")
            .is_empty());

        // Attempt 1 failed: retry in 5 s.
        let held = s
            .complete_attempt(&record(
                c1,
                "A",
                Some(500),
                AttemptOutcome::Retry {
                    next_attempt_at: t0 + 5 * SEC,
                },
            ))
            .await
            .expect("complete");
        assert!(held);
        assert!(s
            .claim_deliveries(&claim_req("B", t0 + 4 * SEC, 10))
            .await
            .expect("claim")
            .is_empty());
        let second = s
            .claim_deliveries(&claim_req("B", t0 + 5 * SEC, 10))
            .await
            .expect("claim");
        assert_eq!(second.len(), 1);
        let c2 = second[0].clone();
        assert_eq!((c2.delivery.id, c2.attempt), (c1.delivery.id, 2));

        // B stalls past its lease: C takes attempt 3; B's late completion is recorded but
        // does not change the delivery.
        let third = s
            .claim_deliveries(&claim_req("C", t0 + 36 * SEC, 10))
            .await
            .expect("claim");
        assert_eq!(third.len(), 1);
        assert_eq!(third[0].attempt, 3);
        let late = s
            .complete_attempt(&record(
                &c2,
                "B",
                None,
                AttemptOutcome::Retry {
                    next_attempt_at: t0,
                },
            ))
            .await
            .expect("complete");
        assert!(!late);
        assert!(s
            .claim_deliveries(&claim_req("D", t0 + 37 * SEC, 10))
            .await
            .expect("claim")
            .is_empty());
        assert!(s
            .complete_attempt(&record(
                &third[0],
                "C",
                Some(204),
                AttemptOutcome::Delivered
            ))
            .await
            .expect("complete"));
        assert!(s
            .claim_deliveries(&claim_req("D", t0 + 100 * SEC, 10))
            .await
            .expect("claim")
            .is_empty());

        assert_eq!(s.count_pending_deliveries().await.expect("count"), 0);
        let h = s.list_deliveries(21, 10).await.expect("deliveries");
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].delivery.status, DeliveryStatus::Delivered);
        assert_eq!(h[0].delivery.attempts, 3);
        assert_eq!(h[0].delivery.last_status_code, Some(204));
        assert!(h[0].delivery.completed_at.is_some());
        // (attempt, owner, status code, error, latency)
        type Row<'a> = (u32, &'a str, Option<u16>, Option<&'a str>, u64);
        let got: Vec<Row<'_>> = h[0]
            .attempts
            .iter()
            .map(|a| {
                (
                    a.attempt,
                    a.owner.as_str(),
                    a.status_code,
                    a.error.as_deref(),
                    a.latency_ms,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (1, "A", Some(500), Some("HTTP 500"), 12),
                (2, "B", None, None, 12),
                (3, "C", Some(204), None, 12)
            ]
        );

        // Redelivery: same id, due now, attempts go on from 3.
        let id = h[0].delivery.id;
        assert!(s.redeliver(22, id, t0).await.expect("redeliver").is_none());
        assert!(s
            .redeliver(21, 12345, t0)
            .await
            .expect("redeliver")
            .is_none());
        let r = s
            .redeliver(21, id, t0 + 200 * SEC)
            .await
            .expect("redeliver")
            .expect("found");
        assert_eq!(
            (r.status, r.window_start),
            (DeliveryStatus::Pending, t0 + 200 * SEC)
        );
        let again = s
            .claim_deliveries(&claim_req("E", t0 + 200 * SEC, 10))
            .await
            .expect("claim");
        assert_eq!(again.len(), 1);
        assert_eq!((again[0].delivery.id, again[0].attempt), (id, 4));
        assert!(s
            .complete_attempt(&record(
                &again[0],
                "E",
                Some(200),
                AttemptOutcome::Delivered
            ))
            .await
            .expect("complete"));
        // Exhausted retries end as failed.
        apply(s, &batch(vec![finishing_job("cb", &[])])).await;
        let c = s
            .claim_deliveries(&claim_req("F", t0 + 300 * SEC, 10))
            .await
            .expect("claim");
        assert_eq!(c.len(), 1);
        assert!(s
            .complete_attempt(&record(&c[0], "F", Some(503), AttemptOutcome::Failed))
            .await
            .expect("complete"));
        let h = s.list_deliveries(21, 10).await.expect("deliveries");
        let failed = h
            .iter()
            .find(|d| d.delivery.id == c[0].delivery.id)
            .expect("listed");
        assert_eq!(failed.delivery.status, DeliveryStatus::Failed);
        assert!(s
            .claim_deliveries(&claim_req("F", t0 + 900 * SEC, 10))
            .await
            .expect("claim")
            .is_empty());
    }

    pub async fn webhook_gone_disables_and_upsert_reenables(t: &Target) {
        let s = &*t.open().await;
        let sp = spec(31, &[EventKind::JobStarted, EventKind::JobFinished], &[]);
        s.upsert_subscription(&sp).await.expect("upsert");
        apply(s, &batch(vec![finishing_job("ga", &[])])).await;
        let t0 = now() + SEC;
        let c = s
            .claim_deliveries(&claim_req("A", t0, 1))
            .await
            .expect("claim");
        assert_eq!(c.len(), 1);
        assert!(s
            .complete_attempt(&record(&c[0], "A", Some(410), AttemptOutcome::Gone))
            .await
            .expect("complete"));
        let sub = s.get_subscription(31).await.expect("get").expect("exists");
        assert!(!sub.enabled);
        assert!(
            sub.disabled_reason
                .as_deref()
                .is_some_and(|r| r.contains("410")),
            "{:?}",
            sub.disabled_reason
        );
        // The other pending delivery is cancelled; nothing is claimable; new jobs add none.
        let h = s.list_deliveries(31, 10).await.expect("deliveries");
        let mut statuses: Vec<DeliveryStatus> = h.iter().map(|d| d.delivery.status).collect();
        statuses.sort_by_key(|s| s.as_str());
        assert_eq!(
            statuses,
            vec![DeliveryStatus::Cancelled, DeliveryStatus::Failed]
        );
        assert!(s
            .claim_deliveries(&claim_req("A", t0 + 100 * SEC, 10))
            .await
            .expect("claim")
            .is_empty());
        apply(s, &batch(vec![finishing_job("gb", &[])])).await;
        assert_eq!(
            s.list_deliveries(31, 10).await.expect("deliveries").len(),
            2
        );

        // The same definition again keeps it disabled; a changed one enables it.
        assert!(!s.upsert_subscription(&sp).await.expect("upsert").enabled);
        let mut fixed = sp.clone();
        fixed.url = "http://127.0.0.1:9/fixed".into();
        let up = s.upsert_subscription(&fixed).await.expect("upsert");
        assert!(up.enabled && up.disabled_reason.is_none());
        assert_eq!(up.created_at, sub.created_at);
        apply(s, &batch(vec![finishing_job("gc", &[])])).await;
        assert_eq!(
            s.list_deliveries(31, 10).await.expect("deliveries").len(),
            4
        );

        // Invalid specs are refused.
        let mut bad = sp.clone();
        bad.secret.clear();
        assert_eq!(
            s.upsert_subscription(&bad)
                .await
                .expect_err("empty secret")
                .kind(),
            ErrorKind::Invalid
        );
        let mut bad = sp.clone();
        bad.events.clear();
        assert_eq!(
            s.upsert_subscription(&bad)
                .await
                .expect_err("no events")
                .kind(),
            ErrorKind::Invalid
        );
    }

    pub async fn webhook_concurrent_claimers_never_share_an_attempt(t: &Target) {
        let s = t.open().await;
        s.upsert_subscription(&spec(41, &[EventKind::JobFinished], &[]))
            .await
            .expect("upsert");
        let jobs: Vec<JobWrite> = (0..60)
            .map(|i| finishing_job(&format!("cc{i}"), &[]))
            .collect();
        for chunk in jobs.chunks(20) {
            apply(&*s, &batch(chunk.to_vec())).await;
        }
        // Four claimers on two separately opened handles (two pools, as two processes
        // would have), racing; each fails every other attempt so retries race too.
        let other = t.open().await;
        let mut tasks = Vec::new();
        for i in 0..4 {
            let store = if i % 2 == 0 {
                Arc::clone(&s)
            } else {
                Arc::clone(&other)
            };
            tasks.push(tokio::spawn(async move {
                let owner = format!("claimer-{i}");
                let mut got: Vec<(i64, u32)> = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut idle = 0;
                while idle < 20 && Instant::now() < deadline {
                    let claims = store
                        .claim_deliveries(&claim_req(&owner, now(), 7))
                        .await
                        .expect("claim");
                    if claims.is_empty() {
                        idle += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                    idle = 0;
                    for c in claims {
                        got.push((c.delivery.id, c.attempt));
                        let outcome = if c.attempt == 1 {
                            AttemptOutcome::Retry {
                                next_attempt_at: now(),
                            }
                        } else {
                            AttemptOutcome::Delivered
                        };
                        assert!(store
                            .complete_attempt(&record(&c, &owner, Some(200), outcome))
                            .await
                            .expect("complete"));
                    }
                }
                got
            }));
        }
        let mut all: Vec<(i64, u32)> = Vec::new();
        for task in tasks {
            all.extend(task.await.expect("claimer"));
        }
        let unique: BTreeSet<(i64, u32)> = all.iter().copied().collect();
        assert_eq!(unique.len(), all.len(), "an attempt was claimed twice");
        assert_eq!(
            all.len(),
            120,
            "every delivery gets exactly attempts 1 and 2"
        );
        let h = s.list_deliveries(41, 1000).await.expect("deliveries");
        assert_eq!(h.len(), 60);
        assert!(h
            .iter()
            .all(|d| d.delivery.status == DeliveryStatus::Delivered && d.attempts.len() == 2));
    }
}

// ---------------------------------------------------------------------------------------
// Backend-specific behaviour that does not need a fresh database per backend.

#[tokio::test]
async fn sqlite_memory_database_works() {
    let s = open(&StorageConfig::new("sqlite::memory:"))
        .await
        .expect("open memory");
    assert_eq!(s.backend(), "sqlite");
    let c = cid("mem");
    let mut w = write(&c);
    w.meta = Some(meta("mem", &[], 0));
    w.lines = text_lines(1..=3);
    let out = apply(&*s, &batch(vec![w])).await;
    assert_eq!((out.stored, out.duplicates), (3, 0));
    let read = lines(&*s, job_id_for_container(&c), 0, 10, None).await;
    assert_eq!(
        read,
        text_lines(1..=3).iter().map(stored).collect::<Vec<_>>()
    );
    s.ping().await.expect("ping");
}

#[tokio::test]
async fn unsupported_url_is_invalid() {
    for url in [
        "postgres://localhost/x",
        "sqlite://",
        "mysql://root@127.0.0.1:3306",
    ] {
        match open(&StorageConfig::new(url)).await {
            Ok(_) => panic!("{url} opened"),
            Err(e) => assert_eq!(e.kind(), ErrorKind::Invalid, "{url}: {e}"),
        }
    }
}

#[tokio::test]
async fn unreachable_mysql_is_unavailable_quickly() {
    // Port 1 on localhost refuses connections.
    let started = Instant::now();
    match open(&StorageConfig::new("mysql://root@127.0.0.1:1/logarithm")).await {
        Ok(_) => panic!("opened a server that is not there"),
        Err(e) => {
            assert!(e.is_transient(), "{e}");
            assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

mod document_cases {
    use super::webhook_cases::spec;
    use super::*;
    use storage::{
        AttemptOutcome, AttemptRecord, ClaimRequest, DeliveryStatus, DocumentPut, DocumentQuery,
        EventKind, EventWrite, Expected,
    };

    fn put(ns: &str, id: &str, active: bool, body: &str, expected: Expected) -> DocumentPut {
        DocumentPut {
            namespace: ns.into(),
            id: id.into(),
            active,
            body: body.into(),
            expected,
        }
    }

    fn query(ns: &str, active_only: bool, limit: u32) -> DocumentQuery {
        DocumentQuery {
            namespace: ns.into(),
            active_only,
            limit,
        }
    }

    fn ids(docs: &[storage::Document]) -> Vec<&str> {
        docs.iter().map(|d| d.id.as_str()).collect()
    }

    pub async fn documents_compare_and_set_and_list(t: &Target) {
        let s = &*t.open().await;
        assert_eq!(s.get_document("runs", "a").await.expect("get"), None);

        // Create (must be absent), then a second create of the same id is a conflict.
        let v = s
            .put_document(&put("runs", "a", true, r#"{"n":1}"#, Expected::Absent))
            .await
            .expect("put");
        assert_eq!(v, Some(1));
        let again = s
            .put_document(&put("runs", "a", true, r#"{"n":9}"#, Expected::Absent))
            .await
            .expect("put");
        assert_eq!(again, None);

        // Compare-and-set: the version read wins once; a stale version changes nothing.
        let v2 = s
            .put_document(&put("runs", "a", true, r#"{"n":2}"#, Expected::Version(1)))
            .await
            .expect("put");
        assert_eq!(v2, Some(2));
        let stale = s
            .put_document(&put("runs", "a", false, r#"{"n":3}"#, Expected::Version(1)))
            .await
            .expect("put");
        assert_eq!(stale, None);
        let missing = s
            .put_document(&put("runs", "zz", true, "{}", Expected::Version(4)))
            .await
            .expect("put");
        assert_eq!(missing, None);
        let doc = s
            .get_document("runs", "a")
            .await
            .expect("get")
            .expect("doc");
        assert_eq!(
            (doc.version, doc.active, doc.body.as_str()),
            (2, true, r#"{"n":2}"#)
        );
        assert!(doc.updated_at >= doc.created_at && doc.created_at > 0);

        // Any: creates, then replaces whatever is there.
        assert_eq!(
            s.put_document(&put("flows", "f", false, "\"one\"", Expected::Any))
                .await
                .expect("put"),
            Some(1)
        );
        assert_eq!(
            s.put_document(&put("flows", "f", false, "\"two\"", Expected::Any))
                .await
                .expect("put"),
            Some(2)
        );
        let f = s
            .get_document("flows", "f")
            .await
            .expect("get")
            .expect("doc");
        assert_eq!((f.version, f.body.as_str()), (2, "\"two\""));
        // Namespaces are separate.
        assert_eq!(s.get_document("runs", "f").await.expect("get"), None);

        // Lists: newest first, active only, limited. Bodies with multi-byte text survive.
        for (id, active) in [("b", false), ("c", true), ("d", true)] {
            tokio::time::sleep(Duration::from_millis(2)).await;
            s.put_document(&put(
                "runs",
                id,
                active,
                r#"{"name":"é ✓"}"#,
                Expected::Absent,
            ))
            .await
            .expect("put");
        }
        let all = s
            .list_documents(&query("runs", false, 0))
            .await
            .expect("list");
        assert_eq!(ids(&all), vec!["d", "c", "b", "a"]);
        assert_eq!(all[0].body, r#"{"name":"é ✓"}"#);
        let active = s
            .list_documents(&query("runs", true, 0))
            .await
            .expect("list");
        assert_eq!(ids(&active), vec!["d", "c", "a"]);
        let limited = s
            .list_documents(&query("runs", true, 2))
            .await
            .expect("list");
        assert_eq!(ids(&limited), vec!["d", "c"]);
        // Finishing a document takes it out of the active list.
        let v = s
            .put_document(&put("runs", "a", false, r#"{"n":4}"#, Expected::Version(2)))
            .await
            .expect("put");
        assert_eq!(v, Some(3));
        let active = s
            .list_documents(&query("runs", true, 0))
            .await
            .expect("list");
        assert_eq!(ids(&active), vec!["d", "c"]);
        assert!(s
            .list_documents(&query("nothing", false, 0))
            .await
            .expect("list")
            .is_empty());

        // Invalid input is refused before writing.
        for bad in [
            put("", "a", true, "{}", Expected::Any),
            put("runs", "", true, "{}", Expected::Any),
            put(&"n".repeat(65), "a", true, "{}", Expected::Any),
            put("runs", &"i".repeat(256), true, "{}", Expected::Any),
            put("runs", "a", true, "{}", Expected::Version(0)),
            put(
                "runs",
                "big",
                true,
                &"x".repeat((4 << 20) + 1),
                Expected::Any,
            ),
        ] {
            let e = s.put_document(&bad).await.expect_err("invalid put");
            assert_eq!(e.kind(), ErrorKind::Invalid, "{e}");
        }
        assert_eq!(t.raw_count("SELECT COUNT(*) FROM documents").await, 5);
    }

    pub async fn documents_concurrent_writers_never_both_win(t: &Target) {
        let a = t.open().await;
        let b = t.open().await;
        a.put_document(&put("runs", "r", true, "0", Expected::Absent))
            .await
            .expect("put");
        // Two handles (two pools, as two processes) race compare-and-sets from version 1.
        let mut wins = 0;
        let mut version = 1;
        for round in 0..10 {
            let pa = put(
                "runs",
                "r",
                true,
                &format!("\"a{round}\""),
                Expected::Version(version),
            );
            let pb = put(
                "runs",
                "r",
                true,
                &format!("\"b{round}\""),
                Expected::Version(version),
            );
            let (ra, rb) = tokio::join!(a.put_document(&pa), b.put_document(&pb));
            let (ra, rb) = (ra.expect("put a"), rb.expect("put b"));
            assert!(ra.is_none() || rb.is_none(), "round {round}: both won");
            let won = ra.or(rb).expect("one of the two wins");
            assert_eq!(won, version + 1);
            version = won;
            wins += 1;
        }
        assert_eq!(wins, 10);
        let doc = a
            .get_document("runs", "r")
            .await
            .expect("get")
            .expect("doc");
        assert_eq!(doc.version, 11);
        // Racing creates: exactly one wins.
        let pa = put("runs", "new", true, "1", Expected::Absent);
        let pb = put("runs", "new", true, "2", Expected::Absent);
        let (ra, rb) = tokio::join!(a.put_document(&pa), b.put_document(&pb));
        let results = [ra.expect("put a"), rb.expect("put b")];
        assert_eq!(results.iter().filter(|r| **r == Some(1)).count(), 1);
        assert_eq!(results.iter().filter(|r| r.is_none()).count(), 1);
    }

    pub async fn non_job_events_are_delivered_once_per_subscription(t: &Target) {
        let s = &*t.open().await;
        s.upsert_subscription(&spec(51, &[EventKind::FlowFinished], &[]))
            .await
            .expect("upsert");
        s.upsert_subscription(&spec(
            52,
            &[EventKind::FlowFinished],
            &[("io.containerops.flow", "release")],
        ))
        .await
        .expect("upsert");
        s.upsert_subscription(&spec(
            53,
            &[EventKind::FlowFinished],
            &[("io.containerops.flow", "other")],
        ))
        .await
        .expect("upsert");
        s.upsert_subscription(&spec(54, &[EventKind::JobFinished], &[]))
            .await
            .expect("upsert");
        let at = 1_700_000_000_000_000_000;
        let ev = EventWrite {
            kind: EventKind::FlowFinished,
            key: "run-1".into(),
            labels: [("io.containerops.flow".to_owned(), "release".to_owned())].into(),
            data_json: r#"{"run":"run-1","status":"failure","jobs":[{"job":"a"}]}"#.into(),
            at,
        };
        assert_eq!(s.enqueue_event(&ev).await.expect("enqueue"), 2);
        // Announced again (after a crash): nothing new.
        assert_eq!(s.enqueue_event(&ev).await.expect("enqueue"), 0);
        assert_eq!(
            t.raw_count("SELECT COUNT(*) FROM webhook_deliveries").await,
            2
        );
        for sub in [51, 52] {
            let d = s.list_deliveries(sub, 10).await.expect("deliveries");
            assert_eq!(d.len(), 1, "subscription {sub}");
            let d = &d[0].delivery;
            assert_eq!(d.event, EventKind::FlowFinished);
            assert_eq!(d.job, None);
            let data = d.data.as_ref().expect("data");
            assert_eq!(data["run"], "run-1");
            assert_eq!(data["jobs"][0]["job"], "a");
            assert_eq!((d.status, d.created_at), (DeliveryStatus::Pending, at));
        }
        for sub in [53, 54] {
            assert!(s.list_deliveries(sub, 10).await.expect("d").is_empty());
        }
        // Claimed and completed like any delivery.
        let claimed = s
            .claim_deliveries(&ClaimRequest {
                owner: "A".into(),
                now: at + 1,
                lease_ns: 30_000_000_000,
                limit: 10,
            })
            .await
            .expect("claim");
        assert_eq!(claimed.len(), 2);
        for c in &claimed {
            assert_eq!(c.delivery.data.as_ref().expect("data")["status"], "failure");
            let held = s
                .complete_attempt(&AttemptRecord {
                    delivery_id: c.delivery.id,
                    subscription_id: c.delivery.subscription_id,
                    attempt: c.attempt,
                    owner: "A".into(),
                    started_at: at + 2,
                    latency_ms: 3,
                    status_code: Some(204),
                    error: None,
                    outcome: AttemptOutcome::Delivered,
                })
                .await
                .expect("complete");
            assert!(held);
        }
        // A delivered event announced again is still not sent again.
        assert_eq!(s.enqueue_event(&ev).await.expect("enqueue"), 0);
        let d = s.list_deliveries(51, 10).await.expect("deliveries");
        assert_eq!(d[0].delivery.status, DeliveryStatus::Delivered);

        // Job events and bad data are refused.
        let mut bad = ev.clone();
        bad.kind = EventKind::JobFinished;
        assert_eq!(
            s.enqueue_event(&bad).await.expect_err("job event").kind(),
            ErrorKind::Invalid
        );
        let mut bad = ev.clone();
        bad.data_json = "not json".into();
        assert_eq!(
            s.enqueue_event(&bad).await.expect_err("bad data").kind(),
            ErrorKind::Invalid
        );
    }
}
