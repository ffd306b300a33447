//! SQLite: jobs, lines and outputs ([`JobStore`]). `apply` runs one IMMEDIATE transaction
//! on the writer connection: per job, load the row, run the rule steps of
//! [`crate::job_row`] with the I/O between them, write the row back, then the outbox rows.

use std::collections::BTreeMap;

use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, Transaction, TransactionBehavior};

use super::{query_all, query_opt, values, SqliteRow, SqliteStorage};
use crate::error::Result;
use crate::job_row::{self, JobRow};
use crate::log_text::{TextAssembler, TextPage, TextQuery};
use crate::model::{
    ApplyOutcome, Job, JobId, JobQuery, JobWrite, LineQuery, StoredLine, TransitionKind, WriteBatch,
};
use crate::read_gate::ReadClass;
use crate::sql::jobs::{
    has_rows, list_jobs_sql, outputs_by_name, outputs_map, read_job, read_line, read_lines_sql,
    read_output, read_text_signed_sql, seq_from_db, seq_to_db, signed_seq_from_db, text_bytes,
    JOB_INSERT, JOB_SELECT_COLUMNS, JOB_UPDATE, LINE_COLUMNS, OUTPUTS_SELECT, TEXT_COLUMNS,
};
use crate::sql::outbox::job_events;
use crate::sql::stream_blocks::{blocks_of, range_lines_sql, StreamRead, SQLITE_BLOCK_UPSERT};
use crate::sql::{placeholders, RowAccess};
use crate::JobStore;

/// Rows per multi-row line INSERT: one cached statement of this size takes the bulk of a
/// batch, a cached one-row statement the remainder (6 × 64 parameters is far below
/// SQLite's 32,766-variable limit).
const MULTI_ROWS: usize = 64;

fn load_job(conn: &Connection, id: JobId) -> Result<Option<JobRow>> {
    let sql = format!("SELECT {JOB_SELECT_COLUMNS} FROM jobs WHERE id = ?");
    query_opt(conn, &sql, vec![id.into()], |r| read_job(r))
}

fn load_outputs(conn: &Connection, id: JobId) -> Result<BTreeMap<String, String>> {
    let rows = query_all(conn, OUTPUTS_SELECT, vec![id.into()], |r| read_output(r))?;
    Ok(outputs_map(rows))
}

fn apply_batch(conn: &mut Connection, batch: &WriteBatch) -> Result<ApplyOutcome> {
    // IMMEDIATE: take the write lock now, not at the first write, so a concurrent writer
    // in another process makes us wait (busy timeout) instead of failing mid-way.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut outcome = ApplyOutcome::default();
    let now = protocol::now_ns();
    for jw in &batch.jobs {
        apply_job(&tx, jw, now, &mut outcome)?;
    }
    // The outbox: deliveries commit with the transitions they announce.
    super::webhooks::insert_deliveries(&tx, &outcome.events)?;
    tx.commit()?;
    Ok(outcome)
}

fn apply_job(tx: &Transaction<'_>, jw: &JobWrite, now: i64, out: &mut ApplyOutcome) -> Result<()> {
    let job_id = jw.job_id;
    // The job as it was at each transition, for notifications and webhook deliveries.
    let mut snapshots: Vec<(TransitionKind, Job)> = Vec::new();
    let (mut row, created) = match load_job(tx, job_id)? {
        Some(row) => (row, false),
        None => {
            let row = match &jw.meta {
                Some(meta) => JobRow::from_meta(jw, meta, now),
                None => JobRow::placeholder(jw, now),
            };
            tx.prepare_cached(JOB_INSERT)?
                .execute(values(row.insert_params()))?;
            (row, true)
        }
    };
    let before = row.clone();

    // 1. metadata
    if job_row::apply_meta_step(&mut row, &before, jw, created, out, &mut snapshots) {
        tx.prepare_cached("DELETE FROM job_labels WHERE job_id = ?")?
            .execute([job_id])?;
        let mut insert =
            tx.prepare_cached("INSERT INTO job_labels (job_id, name, value) VALUES (?, ?, ?)")?;
        for (name, value) in row.indexed_labels() {
            insert.execute(params![job_id, name, value])?;
        }
    }

    // 2. lines
    if !jw.lines.is_empty() {
        let stored = insert_lines(tx, job_id, jw)?;
        let mut upsert = tx.prepare_cached(SQLITE_BLOCK_UPSERT)?;
        for (stream, block, bits) in blocks_of(&jw.lines)? {
            upsert.execute(params![job_id, stream, block, bits])?;
        }
        job_row::count_lines(&mut row, jw, stored, out);
    }

    // 3. outputs and CO_RESULT
    if !jw.outputs.is_empty() {
        let mut upsert = tx.prepare_cached(
            "INSERT INTO job_outputs (job_id, name, value, seq) VALUES (?, ?, ?, ?) \
             ON CONFLICT (job_id, name) DO UPDATE SET value = excluded.value, seq = excluded.seq \
             WHERE excluded.seq > job_outputs.seq",
        )?;
        for (name, value, seq) in outputs_by_name(jw) {
            upsert.execute(params![job_id, name, value, seq])?;
        }
    }
    // 4. exit, 5. logs unavailable
    let finished = job_row::apply_result_steps(&mut row, jw, out);

    if row != before {
        row.updated_at = now;
        tx.prepare_cached(JOB_UPDATE)?
            .execute(values(row.update_params()))?;
    }
    if finished {
        let job = row.clone().into_job(load_outputs(tx, job_id)?);
        snapshots.push((TransitionKind::Finished, job));
    }
    out.events.extend(job_events(snapshots, now));
    Ok(())
}

/// Inserts lines, leaving stored ones untouched; returns how many were new.
fn insert_lines(tx: &Transaction<'_>, job_id: JobId, jw: &JobWrite) -> Result<u64> {
    const COLUMNS: &str = "INSERT INTO log_lines (job_id, seq, stream, ts, cont, line) VALUES ";
    let mut stored = 0usize;
    let mut chunks = jw.lines.chunks_exact(MULTI_ROWS);
    {
        let sql = format!(
            "{COLUMNS}{} ON CONFLICT DO NOTHING",
            placeholders(MULTI_ROWS, 6)
        );
        let mut stmt = tx.prepare_cached(&sql)?;
        for chunk in &mut chunks {
            let mut i = 1;
            for line in chunk {
                stmt.raw_bind_parameter(i, job_id)?;
                stmt.raw_bind_parameter(i + 1, seq_to_db(line.seq)?)?;
                stmt.raw_bind_parameter(i + 2, line.stream.as_u8())?;
                stmt.raw_bind_parameter(i + 3, line.ts)?;
                stmt.raw_bind_parameter(i + 4, line.cont)?;
                stmt.raw_bind_parameter(i + 5, line.line.as_slice())?;
                i += 6;
            }
            stored += stmt.raw_execute()?;
        }
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let sql = format!("{COLUMNS}(?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING");
        let mut stmt = tx.prepare_cached(&sql)?;
        for line in rest {
            stored += stmt.execute(params![
                job_id,
                seq_to_db(line.seq)?,
                line.stream.as_u8(),
                line.ts,
                line.cont,
                line.line.as_slice(),
            ])?;
        }
    }
    Ok(stored as u64)
}

#[async_trait::async_trait]
impl JobStore for SqliteStorage {
    async fn apply(&self, batch: &WriteBatch) -> Result<ApplyOutcome> {
        if !has_rows(batch)? {
            return Ok(ApplyOutcome::default());
        }
        // The blocking task needs an owned batch; copying it is cheap next to the I/O.
        let batch = batch.clone();
        let _writing = self.writing();
        self.with_writer(move |conn| apply_batch(conn, &batch))
            .await
    }

    async fn get_job(&self, id: JobId) -> Result<Option<Job>> {
        self.with_reader(move |conn| {
            // One read transaction, so the job and its outputs are from the same commit.
            let tx = conn.unchecked_transaction()?;
            let Some(row) = load_job(&tx, id)? else {
                return Ok(None);
            };
            let outputs = load_outputs(&tx, id)?;
            tx.finish()?;
            Ok(Some(row.into_job(outputs)))
        })
        .await
    }

    async fn list_jobs(&self, query: &JobQuery) -> Result<Vec<Job>> {
        let (sql, params) = list_jobs_sql(query);
        self.with_reader(move |conn| {
            query_all(conn, &sql, params, |r| {
                Ok(read_job(r)?.into_job(BTreeMap::new()))
            })
        })
        .await
    }

    async fn read_lines(&self, query: &LineQuery) -> Result<Vec<StoredLine>> {
        let job_id = query.job_id;
        if let Some(stream) = query.stream {
            let mut read = StreamRead::new(query, stream, None);
            return self
                .with_reader(move |conn| {
                    let mut lines = Vec::new();
                    read_stream(conn, &mut read, LINE_COLUMNS, |r| {
                        lines.push(read_line(job_id, &mut SqliteRow(r))?);
                        Ok(false)
                    })?;
                    Ok(lines)
                })
                .await;
        }
        let (sql, params) = read_lines_sql(query);
        self.with_reader(move |conn| query_all(conn, &sql, params, |r| read_line(job_id, r)))
            .await
    }

    async fn read_text(&self, query: &TextQuery) -> Result<TextPage> {
        let query = *query;
        self.with_reader_of(ReadClass::Bulk, move |conn| {
            let mut text = TextAssembler::new(&query);
            let job_id = query.lines.job_id;
            let mut push = |seq: u64, cont: bool, line: ValueRef<'_>| -> Result<bool> {
                let line = match line {
                    ValueRef::Blob(b) | ValueRef::Text(b) => Some(b),
                    _ => None,
                };
                text.push(seq, cont, text_bytes(job_id, seq, line)?);
                Ok(text.is_full())
            };
            if let Some(stream) = query.lines.stream {
                let mut read = StreamRead::new(&query.lines, stream, query.until_seq);
                read_stream(conn, &mut read, TEXT_COLUMNS, |row| {
                    let seq = seq_from_db(job_id, row.get(0)?)?;
                    push(seq, row.get::<_, i64>(1)? != 0, row.get_ref(2)?)
                })?;
            } else {
                // Two columns a row, no end of range in the query (see `read_text_signed_sql`).
                let (sql, params) = read_text_signed_sql(&query);
                let mut stmt = conn.prepare_cached(&sql)?;
                let mut rows = stmt.query(values(params))?;
                while let Some(row) = rows.next()? {
                    let (seq, cont) = signed_seq_from_db(job_id, row.get(0)?)?;
                    if query.until_seq.is_some_and(|until| seq > until) {
                        break;
                    }
                    if push(seq, cont, row.get_ref(1)?)? {
                        break;
                    }
                }
            }
            Ok(text.finish())
        })
        .await
    }
}

/// Reads one stream's lines in rounds (see [`crate::sql::stream_blocks`]), handing each row
/// of `columns` to `row`, which says whether to stop. Each range is its own statement:
/// SQLite would scan the whole job for an `OR` of ranges.
fn read_stream(
    conn: &Connection,
    read: &mut StreamRead,
    columns: &str,
    mut row: impl FnMut(&rusqlite::Row<'_>) -> Result<bool>,
) -> Result<()> {
    let lines_sql = range_lines_sql(columns, 1);
    while let Some((sql, params)) = read.blocks_query() {
        let blocks = query_all(conn, sql, params, |r| Ok((r.column(0)?, r.column(1)?)))?;
        let ranges = read.ranges(&blocks)?;
        let mut stmt = conn.prepare_cached(&lines_sql)?;
        let (mut lines, mut stopped) = (0u32, false);
        'ranges: for (first, last) in ranges {
            let left = read.remaining().saturating_sub(lines);
            if left == 0 {
                break;
            }
            let mut params = read.lines_params().to_vec();
            params.extend([first.into(), last.into(), i64::from(left).into()]);
            let mut rows = stmt.query(values(params))?;
            while let Some(r) = rows.next()? {
                lines += 1;
                if row(r)? {
                    stopped = true;
                    break 'ranges;
                }
            }
        }
        read.read(lines, stopped);
    }
    Ok(())
}
