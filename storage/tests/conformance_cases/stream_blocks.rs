//! Reads of one stream (`stream=stdout|stderr`) through `log_stream_blocks` (schema version
//! 6), on both backends: their results, their query plans, what ingest writes, and the
//! migration from version 5's index.

use super::*;
use storage::TextQuery;

/// Lines 1 to `n` ("line {seq}"), on stderr where `stderr` says so, else on stdout.
fn lines_split(n: u64, stderr: impl Fn(u64) -> bool) -> Vec<NewLine> {
    (1..=n)
        .map(|seq| {
            let stream = if stderr(seq) {
                Stream::Stderr
            } else {
                Stream::Stdout
            };
            line(seq, stream, format!("line {seq}").as_bytes())
        })
        .collect()
}

/// A job of 4,000 lines, one in 10 on stderr, in one write.
async fn mixed_streams_job(s: &dyn Storage, tag: &str) -> JobId {
    let c = cid(tag);
    let mut w = write(&c);
    w.meta = Some(meta(tag, &[], 0));
    w.lines = lines_split(4000, |seq| seq % 10 == 0);
    apply(s, &batch(vec![w])).await;
    job_id_for_container(&c)
}

/// A job of `n` lines alternating stdout (odd seqs) and stderr (even), in writes of 100.
async fn alternating_job(s: &dyn Storage, tag: &str, n: u64) -> JobId {
    let c = cid(tag);
    let all = lines_split(n, |seq| seq % 2 == 0);
    for chunk in all.chunks(100) {
        let mut w = write(&c);
        w.meta = Some(meta(tag, &[], 0));
        w.lines = chunk.to_vec();
        apply(s, &batch(vec![w])).await;
    }
    job_id_for_container(&c)
}

async fn blocks_of_job(t: &Target, id: JobId) -> i64 {
    t.raw_count(&format!(
        "SELECT COUNT(*) FROM log_stream_blocks WHERE job_id = {id}"
    ))
    .await
}

/// A checksum of a job's blocks (their bits), to compare what ingest and the migration
/// write.
async fn blocks_sum(t: &Target, id: JobId) -> i64 {
    t.raw_count(&format!(
        "SELECT SUM(block * 7 + bits % 1000003) FROM log_stream_blocks WHERE job_id = {id}"
    ))
    .await
}

/// `sql`'s plan is a range of the primary key (on SQLite, of `sqlite_key`), with no sort.
async fn assert_key_ranges(t: &Target, what: &str, sql: &str, sqlite_key: &str) {
    let plan = t.raw_plan(sql).await;
    eprintln!("[{}] {what}: {plan}", t.name);
    let range = if t.name == "mysql" {
        "range PRIMARY".to_owned()
    } else {
        format!("PRIMARY KEY {sqlite_key}")
    };
    assert!(plan.contains(&range), "[{}] {what}: {plan}", t.name);
    assert!(
        !plan.to_lowercase().contains("temp b-tree") && !plan.contains("filesort"),
        "[{}] {what}: {plan}",
        t.name
    );
}

/// `stream=` reads return the stream's lines in seq order from any cursor; ingest writes a
/// block row per 63 seqs and stream (not an index entry per line); and both statements of
/// a stream read are ranges of a primary key, with no sort: never a scan of the job.
pub async fn stream_reads_go_through_the_block_index(t: &Target) {
    let s = &*t.open().await;
    let id = mixed_streams_job(s, "blocks").await;
    // Seqs 1..=4000 fill blocks 0..=63, each with lines of both streams.
    assert_eq!(blocks_of_job(t, id).await, 128, "[{}]", t.name);
    let stderr = lines(s, id, 100, 5, Some(Stream::Stderr)).await;
    assert_eq!(seqs(&stderr), vec![110, 120, 130, 140, 150]);
    assert!(stderr.iter().all(|l| l.stream == Stream::Stderr));
    let stdout = lines(s, id, 8, 3, Some(Stream::Stdout)).await;
    assert_eq!(seqs(&stdout), vec![9, 11, 12]);
    let all_stderr = lines(s, id, 0, 1000, Some(Stream::Stderr)).await;
    assert_eq!(
        seqs(&all_stderr),
        (1..=400).map(|i| i * 10).collect::<Vec<_>>()
    );
    let tail = lines(s, id, 3995, 10, Some(Stream::Stdout)).await;
    assert_eq!(seqs(&tail), vec![3996, 3997, 3998, 3999]);
    assert!(lines(s, id, 4000, 10, Some(Stream::Stderr))
        .await
        .is_empty());

    // A job of 10,000 lines of one stream in writes of 1,000: a row per 63 lines.
    let c = cid("one-stream");
    let one = job_id_for_container(&c);
    for first in (1..=10_000u64).step_by(1000) {
        let mut w = write(&c);
        w.meta = Some(meta("one", &[], 0));
        w.lines = text_lines(first..=first + 999);
        apply(s, &batch(vec![w])).await;
    }
    assert_eq!(blocks_of_job(t, one).await, 159, "[{}]", t.name);
    assert_eq!(
        seqs(&lines(s, one, 9_990, 100, Some(Stream::Stdout)).await),
        (9_991..=10_000).collect::<Vec<_>>()
    );

    if t.name == "mysql" {
        t.raw_exec("ANALYZE TABLE log_lines, log_stream_blocks")
            .await;
    }
    // The statements `storage/src/sql/stream_blocks.rs` builds: the blocks from a cursor...
    let blocks_sql = format!(
        "SELECT block, bits FROM log_stream_blocks WHERE job_id = {id} AND stream = 2 \
         AND block >= 1 ORDER BY block LIMIT 64"
    );
    assert_key_ranges(
        t,
        "blocks",
        &blocks_sql,
        "(job_id=? AND stream=? AND block>?)",
    )
    .await;
    // ... then the lines of their ranges: one range a statement on SQLite, a round's
    // ranges in one statement on MySQL.
    let ranges = if t.name == "mysql" {
        "seq BETWEEN 110 AND 110 OR seq BETWEEN 120 AND 120 OR seq BETWEEN 130 AND 130"
    } else {
        "seq BETWEEN 110 AND 110"
    };
    let lines_sql = format!(
        "SELECT seq, ts, stream, cont, line FROM log_lines WHERE job_id = {id} \
         AND stream = 2 AND ({ranges}) ORDER BY seq LIMIT 5"
    );
    assert_key_ranges(t, "lines", &lines_sql, "(job_id=? AND seq>? AND seq<?)").await;
}

/// A stream read over more blocks than one round reads, with the streams alternating line
/// by line; batches sent again with other boundaries and out of order; and raw text of one
/// stream up to a seq.
pub async fn stream_reads_across_rounds_replays_and_text(t: &Target) {
    let s = &*t.open().await;
    // A full read of 5,000 alternating lines takes two rounds of 64 blocks; the index
    // holds a row per block and stream, not per line.
    let alt = alternating_job(s, "alt", 5000).await;
    assert_eq!(blocks_of_job(t, alt).await, 2 * 80, "[{}]", t.name);
    let evens: Vec<u64> = (1..=2500).map(|i| i * 2).collect();
    assert_eq!(
        seqs(&lines(s, alt, 0, 5000, Some(Stream::Stderr)).await),
        evens
    );
    assert_eq!(
        seqs(&lines(s, alt, 801, 10, Some(Stream::Stderr)).await),
        (401..=410).map(|i| i * 2).collect::<Vec<_>>()
    );
    let odds = seqs(&lines(s, alt, 0, 5000, Some(Stream::Stdout)).await);
    assert_eq!(odds, (0..2500).map(|i| i * 2 + 1).collect::<Vec<_>>());

    // Sent again with other boundaries, and out of order.
    let c = cid("replays");
    let id = job_id_for_container(&c);
    let send = |range: std::ops::RangeInclusive<u64>, stream: Stream| {
        let mut w = write(&c);
        w.meta = Some(meta("replays", &[], 0));
        w.lines = range
            .map(|seq| line(seq, stream, format!("line {seq}").as_bytes()))
            .collect();
        batch(vec![w])
    };
    apply(s, &send(1..=50, Stream::Stdout)).await;
    apply(s, &send(1..=100, Stream::Stdout)).await;
    apply(s, &send(30..=80, Stream::Stdout)).await;
    apply(s, &send(201..=300, Stream::Stderr)).await;
    apply(s, &send(101..=200, Stream::Stdout)).await;
    assert_eq!(job(s, id).await.line_count, 300, "[{}]", t.name);
    assert_eq!(
        seqs(&lines(s, id, 0, 1000, Some(Stream::Stdout)).await),
        (1..=200).collect::<Vec<_>>()
    );
    assert_eq!(
        seqs(&lines(s, id, 40, 20, Some(Stream::Stdout)).await),
        (41..=60).collect::<Vec<_>>()
    );
    assert_eq!(
        seqs(&lines(s, id, 0, 1000, Some(Stream::Stderr)).await),
        (201..=300).collect::<Vec<_>>()
    );

    // Raw text of stderr up to seq 100 (a download's range), in pages of about 60 bytes.
    let query = TextQuery {
        lines: LineQuery {
            job_id: alt,
            after_seq: 0,
            limit: 1000,
            stream: Some(Stream::Stderr),
        },
        max_bytes: 60,
        max_joined: 1 << 20,
        open_len: None,
        until_seq: Some(100),
    };
    let (text, pages) = crate::text_cases::read_all_text_of(s, query).await;
    let expected: String = (1..=50).map(|i| format!("line {}\n", i * 2)).collect();
    assert_eq!(String::from_utf8_lossy(&text), expected, "[{}]", t.name);
    assert!(pages > 5, "[{}] {pages} pages", t.name);
}

/// Version 6 fills `log_stream_blocks` from the lines of a version 5 database (the same
/// rows ingest writes) and drops version 5's index; run again after an interruption (done,
/// not recorded), it adds nothing twice.
pub async fn stream_blocks_migrate_an_existing_database(t: &Target) {
    let (mixed, long) = {
        let s = t.open().await;
        let mixed = mixed_streams_job(&*s, "mig5").await;
        let c = cid("mig5-long");
        let mut w = write(&c);
        w.meta = Some(meta("long", &[], 0));
        w.lines = text_lines(1..=2500);
        apply(&*s, &batch(vec![w])).await;
        (mixed, job_id_for_container(&c))
    };
    let ingested = (blocks_sum(t, mixed).await, blocks_sum(t, long).await);
    // Back to version 5: no blocks, the index.
    t.raw_exec("DELETE FROM log_stream_blocks").await;
    t.raw_exec(if t.name == "mysql" {
        "ALTER TABLE log_lines ADD INDEX idx_log_lines_stream (job_id, stream, seq)"
    } else {
        "CREATE INDEX idx_log_lines_stream ON log_lines (job_id, stream, seq)"
    })
    .await;
    crate::annotation_cases::back_to_version(t, 5).await;
    let index_rows = if t.name == "mysql" {
        "SELECT COUNT(*) FROM information_schema.statistics \
         WHERE table_schema = DATABASE() AND index_name = 'idx_log_lines_stream'"
    } else {
        "SELECT COUNT(*) FROM pragma_index_list('log_lines') \
         WHERE name = 'idx_log_lines_stream'"
    };
    assert!(t.raw_count(index_rows).await >= 1);

    for pass in ["upgrade", "interrupted"] {
        let s = &*t.open().await;
        assert_eq!(
            t.raw_count("SELECT MAX(version) FROM schema_migrations")
                .await,
            7
        );
        assert_eq!(t.raw_count(index_rows).await, 0, "[{}] {pass}", t.name);
        assert_eq!(blocks_of_job(t, mixed).await, 128, "[{}] {pass}", t.name);
        assert_eq!(blocks_of_job(t, long).await, 40, "[{}] {pass}", t.name);
        assert_eq!(
            (blocks_sum(t, mixed).await, blocks_sum(t, long).await),
            ingested,
            "[{}] {pass}",
            t.name
        );
        let stderr = lines(s, mixed, 3990, 10, Some(Stream::Stderr)).await;
        assert_eq!(seqs(&stderr), vec![4000]);
        assert_eq!(
            seqs(&lines(s, long, 990, 20, Some(Stream::Stdout)).await),
            (991..=1010).collect::<Vec<_>>()
        );
        // Interrupted: the work done, the version not recorded.
        crate::annotation_cases::back_to_version(t, 5).await;
    }
}
