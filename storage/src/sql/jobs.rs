//! Jobs, lines and outputs: the SQL both backends run, the batch checks made before any
//! transaction, and the one decoder of a `jobs` row and of a line.

use std::collections::BTreeMap;

use protocol::Stream;

use super::{
    chunk_by_size, clamp_bytes, clamp_chars, corrupt, invalid, Param, RowAccess, OUTPUT_NAME_MAX,
    OUTPUT_VALUE_MAX_BYTES,
};
use crate::error::Result;
use crate::job_row::JobRow;
use crate::log_text::TextQuery;
use crate::model::{
    JobId, JobQuery, JobStatus, JobWrite, LineQuery, NewLine, StoredLine, WriteBatch,
};

/// Multi-row INSERTs of lines stay under both limits, so a statement is far below MySQL's
/// `max_allowed_packet` (16 MiB by default on MariaDB) and its 65,535 placeholders.
pub(crate) const LINE_CHUNK_ROWS: usize = 1000;
pub(crate) const LINE_CHUNK_BYTES: usize = 4 << 20;

/// Columns of `jobs` in the order [`read_job`] reads them.
pub(crate) const JOB_SELECT_COLUMNS: &str = "id, container_id, name, image, node, labels_json, \
     status, reason, exit_code, co_result, co_result_seq, created_at, started_at, finished_at, \
     updated_at, restart_count, tty, log_driver, logs_unavailable, placeholder, last_seq, line_count, \
     line_bytes, annotations_json";

/// Inserts a whole row; parameters from [`JobRow::insert_params`].
pub(crate) const JOB_INSERT: &str = "INSERT INTO jobs (id, container_id, name, image, node, \
     flow, run, stage, action, job_name, labels_json, status, reason, exit_code, co_result, \
     co_result_seq, created_at, started_at, finished_at, updated_at, restart_count, tty, \
     log_driver, logs_unavailable, placeholder, last_seq, line_count, line_bytes, \
     annotations_json) VALUES \
     (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

/// Rewrites every mutable column; parameters from [`JobRow::update_params`].
pub(crate) const JOB_UPDATE: &str = "UPDATE jobs SET name = ?, image = ?, node = ?, flow = ?, \
     run = ?, stage = ?, action = ?, job_name = ?, labels_json = ?, status = ?, reason = ?, \
     exit_code = ?, co_result = ?, co_result_seq = ?, created_at = ?, started_at = ?, \
     finished_at = ?, updated_at = ?, restart_count = ?, tty = ?, log_driver = ?, \
     logs_unavailable = ?, placeholder = ?, last_seq = ?, line_count = ?, line_bytes = ?, \
     annotations_json = ? WHERE id = ?";

/// A seq as the database stores it (BIGINT).
pub(crate) fn seq_to_db(seq: u64) -> Result<i64> {
    i64::try_from(seq).map_err(|_| invalid(format!("seq {seq} does not fit in a BIGINT")))
}

/// Rejects what no backend can store, before any transaction starts. Limits of columns
/// the database enforces itself (such as the container id's length) are left to it.
/// Checks a batch ([`validate`]); `false` when it has no jobs, so nothing to write.
pub(crate) fn has_rows(batch: &WriteBatch) -> Result<bool> {
    validate(batch)?;
    Ok(!batch.jobs.is_empty())
}

pub(crate) fn validate(batch: &WriteBatch) -> Result<()> {
    for jw in &batch.jobs {
        let cid = &jw.container_id;
        if cid.is_empty() {
            return Err(invalid("empty container id".into()));
        }
        let seq_ok = |what: &str, seq: u64| -> Result<()> {
            if seq == 0 || seq > i64::MAX as u64 {
                Err(invalid(format!(
                    "container {cid}: {what} seq {seq} is out of range (1..=2^63-1)"
                )))
            } else {
                Ok(())
            }
        };
        for line in &jw.lines {
            seq_ok("line", line.seq)?;
        }
        for out in &jw.outputs {
            seq_ok("output", out.seq)?;
        }
        if let Some(co) = &jw.co_result {
            seq_ok("CO_RESULT", co.seq)?;
        }
        let rc_ok = |rc: u32| -> Result<()> {
            if i32::try_from(rc).is_err() {
                Err(invalid(format!(
                    "container {cid}: restart count {rc} is out of range"
                )))
            } else {
                Ok(())
            }
        };
        if let Some(meta) = &jw.meta {
            rc_ok(meta.restart_count)?;
        }
        if let Some(exit) = &jw.exit {
            rc_ok(exit.restart_count)?;
        }
    }
    Ok(())
}

/// Splits lines into runs that each fit one INSERT (see [`LINE_CHUNK_ROWS`],
/// [`LINE_CHUNK_BYTES`]); a single line larger than the byte budget gets a run of its own.
pub(crate) fn line_chunks(lines: &[NewLine]) -> Vec<&[NewLine]> {
    // 64 bytes covers the other five values and the row's share of the SQL text.
    chunk_by_size(lines, LINE_CHUNK_ROWS, LINE_CHUNK_BYTES, |l| {
        l.line.len() + 64
    })
}

/// Reads a `jobs` row selected with [`JOB_SELECT_COLUMNS`], checking its values.
pub(crate) fn read_job<R: RowAccess>(r: &mut R) -> Result<JobRow> {
    let id: i64 = r.column(0)?;
    let bad = |what: &str, v: &dyn std::fmt::Debug| corrupt(format!("job {id}: {what} {v:?}"));
    // A counter column: never negative.
    let count = |r: &mut R, idx: usize, what: &str| -> Result<u64> {
        let v: i64 = r.column(idx)?;
        u64::try_from(v).map_err(|_| bad(what, &v))
    };
    let labels_json: String = r.column(5)?;
    let labels: BTreeMap<String, String> = serde_json::from_str(&labels_json)
        .map_err(|e| corrupt(format!("job {id}: labels_json is not a JSON object: {e}")))?;
    // NULL (none, and every job stored before schema version 7) is an empty map.
    let annotations_json: Option<String> = r.column(23)?;
    let annotations: BTreeMap<String, String> = match annotations_json {
        Some(json) => serde_json::from_str(&json).map_err(|e| {
            corrupt(format!(
                "job {id}: annotations_json is not a JSON object: {e}"
            ))
        })?,
        None => BTreeMap::new(),
    };
    let status: String = r.column(6)?;
    let restart_count: i64 = r.column(15)?;
    let tty: i64 = r.column(16)?;
    let placeholder: i64 = r.column(19)?;
    Ok(JobRow {
        id,
        container_id: r.column(1)?,
        name: r.column(2)?,
        image: r.column(3)?,
        node: r.column(4)?,
        labels,
        annotations,
        status: JobStatus::parse(&status).ok_or_else(|| bad("status", &status))?,
        reason: r.column(7)?,
        exit_code: r.column(8)?,
        co_result: r.column(9)?,
        co_result_seq: count(r, 10, "co_result_seq")?,
        created_at: r.column(11)?,
        started_at: r.column(12)?,
        finished_at: r.column(13)?,
        updated_at: r.column(14)?,
        restart_count: u32::try_from(restart_count)
            .map_err(|_| bad("restart_count", &restart_count))?,
        tty: tty != 0,
        log_driver: r.column(17)?,
        logs_unavailable: r.column(18)?,
        placeholder: placeholder != 0,
        last_seq: count(r, 20, "last_seq")?,
        line_count: count(r, 21, "line_count")?,
        line_bytes: count(r, 22, "line_bytes")?,
    })
}

/// Deduplicates outputs of one write by name, keeping the highest seq, and clamps them to
/// the columns (so one multi-row upsert never names the same key twice).
pub(crate) fn outputs_by_name(jw: &JobWrite) -> Vec<(String, String, i64)> {
    let mut by_name: BTreeMap<String, (String, u64)> = BTreeMap::new();
    for o in &jw.outputs {
        let name = clamp_chars(&o.name, OUTPUT_NAME_MAX);
        let value = clamp_bytes(&o.value, OUTPUT_VALUE_MAX_BYTES);
        match by_name.get(&name) {
            Some((_, seq)) if *seq >= o.seq => {}
            _ => {
                by_name.insert(name, (value, o.seq));
            }
        }
    }
    by_name
        .into_iter()
        .map(|(name, (value, seq))| (name, value, seq as i64))
        .collect()
}

/// A stored line from its columns.
/// A line's stored seq as the API's.
pub(crate) fn seq_from_db(job_id: JobId, seq: i64) -> Result<u64> {
    u64::try_from(seq).map_err(|_| corrupt(format!("job {job_id}: line seq {seq} < 0")))
}

/// A page of raw text's record bytes, from a column that should hold them.
pub(crate) fn text_bytes(job_id: JobId, seq: u64, bytes: Option<&[u8]>) -> Result<&[u8]> {
    bytes.ok_or_else(|| corrupt(format!("job {job_id}: line {seq} holds no bytes")))
}

pub(crate) fn stored_line(
    job_id: JobId,
    seq: i64,
    ts: i64,
    stream: i64,
    cont: i64,
    line: Vec<u8>,
) -> Result<StoredLine> {
    let seq = seq_from_db(job_id, seq)?;
    let stream = u8::try_from(stream)
        .ok()
        .and_then(Stream::from_u8)
        .ok_or_else(|| corrupt(format!("job {job_id}: line {seq} has stream {stream}")))?;
    Ok(StoredLine {
        seq,
        ts,
        stream,
        cont: cont != 0,
        line,
    })
}

/// `SELECT` for [`crate::JobStore::list_jobs`] with its parameters.
pub(crate) fn list_jobs_sql(q: &JobQuery) -> (String, Vec<Param>) {
    let mut conds: Vec<&str> = Vec::new();
    let mut params: Vec<Param> = Vec::new();
    let columns = [
        ("flow = ?", &q.flow),
        ("run = ?", &q.run),
        ("stage = ?", &q.stage),
        ("action = ?", &q.action),
        ("job_name = ?", &q.job),
    ];
    for (cond, value) in columns {
        if let Some(v) = value {
            conds.push(cond);
            params.push(v.as_str().into());
        }
    }
    if let Some(status) = q.status {
        conds.push("status = ?");
        params.push(status.as_str().into());
    }
    for (name, value) in &q.labels {
        // Labels too long for job_labels are not there, so filtering on one matches nothing.
        conds.push(
            "EXISTS (SELECT 1 FROM job_labels l WHERE l.job_id = jobs.id AND l.name = ? \
             AND l.value = ?)",
        );
        params.push(name.as_str().into());
        params.push(value.as_str().into());
    }
    if let Some(after) = q.after {
        conds.push("(created_at < ? OR (created_at = ? AND id < ?))");
        params.push(after.created_at.into());
        params.push(after.created_at.into());
        params.push(after.id.into());
    }
    let mut sql = format!("SELECT {JOB_SELECT_COLUMNS} FROM jobs");
    if !conds.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conds.join(" AND "));
    }
    sql.push_str(" ORDER BY created_at DESC, id DESC LIMIT ?");
    params.push(i64::from(q.limit).into());
    (sql, params)
}

/// The columns of a line as [`read_line`] reads them.
pub(crate) const LINE_COLUMNS: &str = "seq, ts, stream, cont, line";
/// The columns of a record of raw text ([`crate::log_text`]): `seq, cont, line`.
pub(crate) const TEXT_COLUMNS: &str = "seq, cont, line";

/// `SELECT` for [`crate::JobStore::read_lines`] of every stream, with its parameters: a
/// range of the primary key. A read of one stream goes through
/// [`super::stream_blocks::StreamRead`] instead.
pub(crate) fn read_lines_sql(q: &LineQuery) -> (String, Vec<Param>) {
    lines_sql(LINE_COLUMNS, q, None)
}

/// The query of a page of raw text of every stream, as [`read_lines_sql`].
pub(crate) fn read_text_sql(q: &TextQuery) -> (String, Vec<Param>) {
    lines_sql(TEXT_COLUMNS, &q.lines, q.until_seq)
}

/// [`read_text_sql`] for SQLite, which costs most beyond its own scan in handing each
/// column over (calls per column and row) and in comparing each row against the end of
/// the range:
/// - `seq` and `cont` come in one column: `-seq` for a continuation record
///   ([`signed_seq_from_db`] splits it). The query reads only seqs above `after_seq`
///   (>= 0), so the value is never 0 and its sign is `cont`;
/// - `until_seq` is not in the query (the scan compares each row with the job's key
///   alone): the caller stops at the first row past it, at most one row further.
pub(crate) fn read_text_signed_sql(q: &TextQuery) -> (String, Vec<Param>) {
    let columns = "CASE WHEN cont <> 0 THEN -seq ELSE seq END, line";
    lines_sql(columns, &q.lines, None)
}

/// A record's seq and `cont` from the first column of [`read_text_signed_sql`].
pub(crate) fn signed_seq_from_db(job_id: JobId, value: i64) -> Result<(u64, bool)> {
    if value == 0 {
        return Err(corrupt(format!("job {job_id}: line seq 0 read as text")));
    }
    Ok((value.unsigned_abs(), value < 0))
}

fn lines_sql(columns: &str, q: &LineQuery, until_seq: Option<u64>) -> (String, Vec<Param>) {
    let mut sql = format!("SELECT {columns} FROM log_lines WHERE job_id = ? AND seq > ?");
    let mut params: Vec<Param> = vec![
        q.job_id.into(),
        i64::try_from(q.after_seq).unwrap_or(i64::MAX).into(),
    ];
    if let Some(until) = until_seq {
        sql.push_str(" AND seq <= ?");
        params.push(i64::try_from(until).unwrap_or(i64::MAX).into());
    }
    sql.push_str(" ORDER BY seq LIMIT ?");
    params.push(i64::from(q.limit).into());
    (sql, params)
}

/// Reads a line selected by [`read_lines_sql`].
pub(crate) fn read_line(job_id: JobId, r: &mut impl RowAccess) -> Result<StoredLine> {
    stored_line(
        job_id,
        r.column(0)?,
        r.column(1)?,
        r.column(2)?,
        r.column(3)?,
        r.column(4)?,
    )
}

/// A job's outputs, read by [`read_output`]; parameter: the job id.
pub(crate) const OUTPUTS_SELECT: &str = "SELECT name, value FROM job_outputs WHERE job_id = ?";

/// Reads a `(name, value)` row of `job_outputs`.
pub(crate) fn read_output(r: &mut impl RowAccess) -> Result<(String, String)> {
    Ok((r.column(0)?, r.column(1)?))
}

/// Outputs of a job as a map, from [`read_output`] rows.
pub(crate) fn outputs_map(rows: Vec<(String, String)>) -> BTreeMap<String, String> {
    rows.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64, len: usize) -> NewLine {
        NewLine {
            seq,
            ts: 0,
            stream: Stream::Stdout,
            cont: false,
            line: vec![b'x'; len],
        }
    }

    #[test]
    fn chunks_respect_rows_and_bytes() {
        let lines: Vec<NewLine> = (1..=2500).map(|s| line(s, 10)).collect();
        let sizes: Vec<usize> = line_chunks(&lines).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![1000, 1000, 500]);

        let big: Vec<NewLine> = (1..=5).map(|s| line(s, 3 << 20)).collect();
        let sizes: Vec<usize> = line_chunks(&big).iter().map(|c| c.len()).collect();
        assert_eq!(sizes, vec![1, 1, 1, 1, 1]);
        assert!(line_chunks(&[]).is_empty());
    }
}
