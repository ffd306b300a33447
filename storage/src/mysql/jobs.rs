//! MySQL protocol: jobs, lines and outputs ([`JobStore`]). `apply` runs one transaction:
//! per job, load the row `FOR UPDATE`, run the rule steps of [`crate::job_row`] with the
//! I/O between them, write the row back, then the outbox rows; a transaction the server
//! rolled back for a deadlock or write conflict is run again.

use std::collections::BTreeMap;

use backon::Retryable;

use mysql_async::prelude::Queryable;
use mysql_async::{Params, Row, Transaction, TxOpts, Value};

use super::conflicts::{conflict_reruns, finish, is_write_conflict};
use super::{positional, MysqlStorage};
use crate::error::{Error, ErrorKind, Result};
use crate::job_row::{self, JobRow};
use crate::log_text::{TextAssembler, TextPage, TextQuery};
use crate::model::{
    ApplyOutcome, Job, JobId, JobQuery, JobWrite, LineQuery, StoredLine, TransitionKind, WriteBatch,
};
use crate::read_gate::ReadClass;
use crate::sql::jobs::{
    has_rows, line_chunks, list_jobs_sql, outputs_by_name, outputs_map, read_job, read_line,
    read_lines_sql, read_output, read_text_sql, seq_from_db, seq_to_db, text_bytes, JOB_INSERT,
    JOB_SELECT_COLUMNS, JOB_UPDATE, LINE_CHUNK_BYTES, LINE_COLUMNS, OUTPUTS_SELECT, TEXT_COLUMNS,
};
use crate::sql::outbox::job_events;
use crate::sql::stream_blocks::{
    blocks_of, mysql_blocks_upsert, range_lines_sql, Block, StreamRead,
};
use crate::sql::{chunk_by_size, placeholders, Param};
use crate::JobStore;

/// Rows per multi-row INSERT into `job_outputs` / `job_labels`; outputs are also bounded
/// by bytes, as values may be up to 64 KiB each.
const SMALL_CHUNK_ROWS: usize = 500;

async fn load_job(tx: &mut Transaction<'_>, id: JobId) -> Result<Option<JobRow>> {
    // FOR UPDATE: the row stays locked until commit, so two replicas applying writes for
    // the same job serialise instead of overwriting each other's counters.
    let sql = format!("SELECT {JOB_SELECT_COLUMNS} FROM jobs WHERE id = ? FOR UPDATE");
    let row: Option<Row> = tx.exec_first(sql, (id,)).await?;
    row.map(|mut r| read_job(&mut r)).transpose()
}

async fn apply_batch(tx: &mut Transaction<'_>, batch: &WriteBatch) -> Result<ApplyOutcome> {
    let mut outcome = ApplyOutcome::default();
    let now = protocol::now_ns();
    for jw in &batch.jobs {
        apply_job(tx, jw, now, &mut outcome).await?;
    }
    // The outbox: deliveries commit with the transitions they announce.
    super::webhooks::insert_deliveries(tx, &outcome.events).await?;
    Ok(outcome)
}

async fn apply_job(
    tx: &mut Transaction<'_>,
    jw: &JobWrite,
    now: i64,
    out: &mut ApplyOutcome,
) -> Result<()> {
    let job_id = jw.job_id;
    // The job as it was at each transition, for notifications and webhook deliveries.
    let mut snapshots: Vec<(TransitionKind, Job)> = Vec::new();
    let (mut row, created) = match load_job(tx, job_id).await? {
        Some(row) => (row, false),
        None => {
            let row = match &jw.meta {
                Some(meta) => JobRow::from_meta(jw, meta, now),
                None => JobRow::placeholder(jw, now),
            };
            // Another replica may insert the same job between our SELECT and INSERT: the
            // no-op ON DUPLICATE KEY UPDATE turns that race into "row exists" (0 rows
            // affected) instead of an error, and we continue with the stored row.
            let sql = format!("{JOB_INSERT} ON DUPLICATE KEY UPDATE id = id");
            tx.exec_drop(sql, positional(row.insert_params())).await?;
            if tx.affected_rows() == 1 {
                (row, true)
            } else {
                match load_job(tx, job_id).await? {
                    Some(row) => (row, false),
                    None => {
                        return Err(Error::new(
                            ErrorKind::Invalid,
                            format!(
                                "container {} is already stored under another job id than {job_id}",
                                jw.container_id
                            ),
                        ))
                    }
                }
            }
        }
    };
    let before = row.clone();

    // 1. metadata
    if job_row::apply_meta_step(&mut row, &before, jw, created, out, &mut snapshots) {
        replace_labels(tx, &row).await?;
    }

    // 2. lines
    if !jw.lines.is_empty() {
        let stored = insert_lines(tx, jw).await?;
        upsert_blocks(tx, job_id, &blocks_of(&jw.lines)?).await?;
        job_row::count_lines(&mut row, jw, stored, out);
    }

    // 3. outputs and CO_RESULT
    if !jw.outputs.is_empty() {
        upsert_outputs(tx, jw).await?;
    }
    // 4. exit, 5. logs unavailable
    let finished = job_row::apply_result_steps(&mut row, jw, out);

    if row != before {
        row.updated_at = now;
        tx.exec_drop(JOB_UPDATE, positional(row.update_params()))
            .await?;
    }
    if finished {
        let outputs = load_outputs(tx, job_id).await?;
        snapshots.push((TransitionKind::Finished, row.clone().into_job(outputs)));
    }
    out.events.extend(job_events(snapshots, now));
    Ok(())
}

async fn load_outputs<Q: Queryable>(q: &mut Q, id: JobId) -> Result<BTreeMap<String, String>> {
    let rows: Vec<Row> = q.exec(OUTPUTS_SELECT, (id,)).await?;
    let outputs = rows
        .into_iter()
        .map(|mut r| read_output(&mut r))
        .collect::<Result<Vec<_>>>()?;
    Ok(outputs_map(outputs))
}

async fn replace_labels(tx: &mut Transaction<'_>, row: &JobRow) -> Result<()> {
    tx.exec_drop("DELETE FROM job_labels WHERE job_id = ?", (row.id,))
        .await?;
    let labels = row.indexed_labels();
    for chunk in labels.chunks(SMALL_CHUNK_ROWS) {
        let sql = format!(
            "INSERT INTO job_labels (job_id, name, value) VALUES {}",
            placeholders(chunk.len(), 3)
        );
        let mut params = Vec::with_capacity(chunk.len() * 3);
        for (name, value) in chunk {
            params.push(Value::Int(row.id));
            params.push(Value::Bytes(name.as_bytes().to_vec()));
            params.push(Value::Bytes(value.as_bytes().to_vec()));
        }
        tx.exec_drop(sql, Params::Positional(params)).await?;
    }
    Ok(())
}

/// Inserts lines, leaving stored ones untouched; returns how many were new.
async fn insert_lines(tx: &mut Transaction<'_>, jw: &JobWrite) -> Result<u64> {
    let mut stored = 0;
    for chunk in line_chunks(&jw.lines) {
        let sql = format!(
            "INSERT INTO log_lines (job_id, seq, stream, ts, cont, line) VALUES {} \
             ON DUPLICATE KEY UPDATE job_id = job_id",
            placeholders(chunk.len(), 6)
        );
        let mut params = Vec::with_capacity(chunk.len() * 6);
        for line in chunk {
            params.push(Value::Int(jw.job_id));
            params.push(Value::Int(seq_to_db(line.seq)?));
            params.push(Value::Int(i64::from(line.stream.as_u8())));
            params.push(Value::Int(line.ts));
            params.push(Value::Int(i64::from(line.cont)));
            params.push(Value::Bytes(line.line.clone()));
        }
        tx.exec_drop(sql, Params::Positional(params)).await?;
        // 1 per inserted row, 0 per duplicate left as it was.
        stored += tx.affected_rows();
    }
    Ok(stored)
}

/// Upserts the stream index blocks of a write's lines (see [`crate::sql::stream_blocks`]).
async fn upsert_blocks(tx: &mut Transaction<'_>, job_id: JobId, blocks: &[Block]) -> Result<()> {
    for chunk in blocks.chunks(SMALL_CHUNK_ROWS) {
        let mut params = Vec::with_capacity(chunk.len() * 4);
        for &(stream, block, bits) in chunk {
            params.extend([
                Value::Int(job_id),
                Value::Int(i64::from(stream)),
                Value::Int(block),
                Value::Int(bits),
            ]);
        }
        tx.exec_drop(mysql_blocks_upsert(chunk.len()), Params::Positional(params))
            .await?;
    }
    Ok(())
}

/// Upserts outputs; a stored value is replaced only by one with a higher seq. MySQL
/// evaluates assignments left to right, so `value` is decided while `seq` is still the
/// stored one.
async fn upsert_outputs(tx: &mut Transaction<'_>, jw: &JobWrite) -> Result<()> {
    let outputs = outputs_by_name(jw);
    let chunks = chunk_by_size(
        &outputs,
        SMALL_CHUNK_ROWS,
        LINE_CHUNK_BYTES,
        |(name, value, _)| name.len() + value.len() + 32,
    );
    for chunk in chunks {
        let sql = format!(
            "INSERT INTO job_outputs (job_id, name, value, seq) VALUES {} \
             ON DUPLICATE KEY UPDATE value = IF(VALUES(seq) > seq, VALUES(value), value), \
             seq = GREATEST(seq, VALUES(seq))",
            placeholders(chunk.len(), 4)
        );
        let mut params = Vec::with_capacity(chunk.len() * 4);
        for (name, value, seq) in chunk {
            params.push(Value::Int(jw.job_id));
            params.push(Value::Bytes(name.as_bytes().to_vec()));
            params.push(Value::Bytes(value.as_bytes().to_vec()));
            params.push(Value::Int(*seq));
        }
        tx.exec_drop(sql, Params::Positional(params)).await?;
    }
    Ok(())
}

impl MysqlStorage {
    /// One transaction of [`JobStore::apply`].
    async fn apply_once(&self, batch: &WriteBatch) -> Result<ApplyOutcome> {
        let mut conn = self.conn().await?;
        let mut tx = conn.start_transaction(TxOpts::default()).await?;
        let result = apply_batch(&mut tx, batch).await;
        finish(tx, result).await
    }
}

#[async_trait::async_trait]
impl JobStore for MysqlStorage {
    async fn apply(&self, batch: &WriteBatch) -> Result<ApplyOutcome> {
        if !has_rows(batch)? {
            return Ok(ApplyOutcome::default());
        }
        // Concurrent first writes of new jobs can deadlock on InnoDB gap locks (and conflict
        // optimistically on TiDB): the server rolled the whole transaction back, so running
        // it again is safe and usually succeeds.
        let _writing = self.writing();
        self.bounded("apply", async {
            (|| self.apply_once(batch))
                .retry(conflict_reruns())
                .when(is_write_conflict)
                .notify(|e, retry_in| {
                    tracing::debug!(error = %e, ?retry_in, "write conflict; retrying the batch");
                })
                .await
        })
        .await
    }

    async fn get_job(&self, id: JobId) -> Result<Option<Job>> {
        self.bounded("get_job", async {
            let mut conn = self.read_conn().await?;
            let sql = format!("SELECT {JOB_SELECT_COLUMNS} FROM jobs WHERE id = ?");
            let Some(row) = conn.exec_first::<Row, _, _>(sql, (id,)).await? else {
                return Ok(None);
            };
            let mut row = row;
            let row = read_job(&mut row)?;
            let outputs = load_outputs(&mut *conn, id).await?;
            Ok(Some(row.into_job(outputs)))
        })
        .await
    }

    async fn list_jobs(&self, query: &JobQuery) -> Result<Vec<Job>> {
        let (sql, params) = list_jobs_sql(query);
        self.bounded("list_jobs", async {
            let mut conn = self.read_conn().await?;
            let rows: Vec<Row> = conn.exec(sql, positional(params)).await?;
            rows.into_iter()
                .map(|mut r| Ok(read_job(&mut r)?.into_job(BTreeMap::new())))
                .collect()
        })
        .await
    }

    async fn read_lines(&self, query: &LineQuery) -> Result<Vec<StoredLine>> {
        self.bounded("read_lines", async {
            let mut conn = self.read_conn().await?;
            if let Some(stream) = query.stream {
                let mut read = StreamRead::new(query, stream, None);
                let mut lines = Vec::new();
                read_stream(&mut *conn, &mut read, LINE_COLUMNS, |mut row| {
                    lines.push(read_line(query.job_id, &mut row)?);
                    Ok(false)
                })
                .await?;
                return Ok(lines);
            }
            let (sql, params) = read_lines_sql(query);
            let rows: Vec<Row> = conn.exec(sql, positional(params)).await?;
            rows.into_iter()
                .map(|mut r| read_line(query.job_id, &mut r))
                .collect()
        })
        .await
    }

    async fn read_text(&self, query: &TextQuery) -> Result<TextPage> {
        let job_id = query.lines.job_id;
        self.bounded("read_text", async {
            // The read pool, through the read gate as a bulk read (see `crate::read_gate`).
            let mut conn = self.read_conn_of(ReadClass::Bulk).await?;
            let mut text = TextAssembler::new(query);
            let mut push = |row: &Row| -> Result<bool> {
                let int = |idx| match row.as_ref(idx) {
                    Some(Value::Int(v)) => Ok(*v),
                    Some(Value::UInt(v)) => i64::try_from(*v).map_err(|_| corrupt_column(idx)),
                    _ => Err(corrupt_column(idx)),
                };
                let seq = seq_from_db(job_id, int(0)?)?;
                let cont = int(1)? != 0;
                let line = match row.as_ref(2) {
                    Some(Value::Bytes(b)) => Some(b.as_slice()),
                    _ => None,
                };
                text.push(seq, cont, text_bytes(job_id, seq, line)?);
                Ok(text.is_full())
            };
            if let Some(stream) = query.lines.stream {
                let mut read = StreamRead::new(&query.lines, stream, query.until_seq);
                read_stream(&mut *conn, &mut read, TEXT_COLUMNS, |r| push(&r)).await?;
            } else {
                let (sql, params) = read_text_sql(query);
                let mut rows = conn.exec_iter(sql, positional(params)).await?;
                // Rows borrowed as they arrive: no row vector, no record struct.
                while let Some(row) = rows.next().await? {
                    if push(&row)? {
                        break;
                    }
                }
                // The rows past a full page are read again by the next page.
                rows.drop_result().await?;
            }
            Ok(text.finish())
        })
        .await
    }
}

/// Reads one stream's lines in rounds (see [`crate::sql::stream_blocks`]), handing each row
/// of `columns` to `row`, which says whether to stop: a round's ranges are one statement,
/// which the range optimizer reads as ranges of the primary key, in order.
async fn read_stream<Q: Queryable>(
    conn: &mut Q,
    read: &mut StreamRead,
    columns: &str,
    mut row: impl FnMut(Row) -> Result<bool>,
) -> Result<()> {
    while let Some((sql, params)) = read.blocks_query() {
        let blocks: Vec<(i64, i64)> = conn.exec(sql, positional(params)).await?;
        let ranges = read.ranges(&blocks)?;
        if ranges.is_empty() {
            continue;
        }
        let mut params: Vec<Param> = read.lines_params().to_vec();
        for (first, last) in &ranges {
            params.extend([Param::from(*first), Param::from(*last)]);
        }
        params.push(i64::from(read.remaining()).into());
        let mut rows = conn
            .exec_iter(range_lines_sql(columns, ranges.len()), positional(params))
            .await?;
        let (mut lines, mut stopped) = (0u32, false);
        while let Some(r) = rows.next().await? {
            lines += 1;
            if row(r)? {
                stopped = true;
                break;
            }
        }
        rows.drop_result().await?;
        read.read(lines, stopped);
    }
    Ok(())
}

/// The error for a `read_text` column of the wrong type.
fn corrupt_column(idx: usize) -> Error {
    Error::new(
        ErrorKind::Corrupt,
        format!("mysql: log_lines column {idx} has an unexpected type"),
    )
}
