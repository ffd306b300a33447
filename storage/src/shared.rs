//! What both backends share: the in-memory image of a `jobs` row and the rules that change
//! it (metadata, restarts, CO_RESULT, exit), batch validation, column limits, and the SQL
//! that is the same in both dialects.
//!
//! Keeping the rules here, as plain functions over a row image, is what makes the two
//! backends agree: each backend only loads the row (locked), runs these rules, and writes
//! the row back once.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use protocol::{Stream, LABEL_ACTION, LABEL_FLOW, LABEL_JOB, LABEL_RUN, LABEL_STAGE};

use crate::error::{Error, ErrorKind, Result};
use crate::model::{
    decide, ApplyOutcome, CoResultWrite, ExitWrite, Job, JobId, JobMeta, JobQuery, JobStatus,
    JobWrite, LineQuery, NewLine, StoredLine, Transition, TransitionKind, WriteBatch,
};

/// Column limits, in characters unless noted (MySQL counts VARCHAR in characters; the SQLite
/// schema checks the same limits so both backends accept the same data).
pub(crate) const NAME_MAX: usize = 255;
pub(crate) const LOG_DRIVER_MAX: usize = 64;
pub(crate) const TEXT_MAX: usize = 1024;
pub(crate) const OUTPUT_NAME_MAX: usize = 255;
/// `TEXT` holds 65,535 bytes.
pub(crate) const OUTPUT_VALUE_MAX_BYTES: usize = 65_535;
pub(crate) const LABEL_NAME_MAX: usize = 128;
pub(crate) const LABEL_VALUE_MAX: usize = 512;

/// Multi-row INSERTs of lines stay under both limits, so a statement is far below MySQL's
/// `max_allowed_packet` (16 MiB by default on MariaDB) and its 65,535 placeholders.
pub(crate) const LINE_CHUNK_ROWS: usize = 1000;
pub(crate) const LINE_CHUNK_BYTES: usize = 4 << 20;

/// Columns of `jobs` in the order [`RawJob`] is read.
pub(crate) const JOB_SELECT_COLUMNS: &str = "id, container_id, name, image, node, labels_json, \
     status, reason, exit_code, co_result, co_result_seq, created_at, started_at, finished_at, \
     updated_at, restart_count, tty, log_driver, logs_unavailable, placeholder, last_seq, line_count";

/// Inserts a whole row; parameters from [`JobRow::insert_params`].
pub(crate) const JOB_INSERT: &str = "INSERT INTO jobs (id, container_id, name, image, node, \
     flow, run, stage, action, job_name, labels_json, status, reason, exit_code, co_result, \
     co_result_seq, created_at, started_at, finished_at, updated_at, restart_count, tty, \
     log_driver, logs_unavailable, placeholder, last_seq, line_count) VALUES \
     (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

/// Rewrites every mutable column; parameters from [`JobRow::update_params`].
pub(crate) const JOB_UPDATE: &str = "UPDATE jobs SET name = ?, image = ?, node = ?, flow = ?, \
     run = ?, stage = ?, action = ?, job_name = ?, labels_json = ?, status = ?, reason = ?, \
     exit_code = ?, co_result = ?, co_result_seq = ?, created_at = ?, started_at = ?, \
     finished_at = ?, updated_at = ?, restart_count = ?, tty = ?, log_driver = ?, \
     logs_unavailable = ?, placeholder = ?, last_seq = ?, line_count = ? WHERE id = ?";

/// One schema migration: applied once, in version order, and recorded in
/// `schema_migrations`. Statements must be idempotent (`IF NOT EXISTS`): MySQL commits each
/// DDL statement on its own, so a migration interrupted half-way is simply run again.
pub(crate) struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub statements: &'static [&'static str],
}

/// The error for a database whose schema is newer than this binary.
pub(crate) fn schema_too_new(found: i64, known: i64) -> Error {
    corrupt(format!(
        "database schema version {found} is newer than this binary knows ({known}): \
         upgrade logarithmd before using this database"
    ))
}

/// A bind value in SQL shared by both backends; each backend converts it to its own type.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Param {
    Null,
    Int(i64),
    Text(String),
}

impl From<i64> for Param {
    fn from(v: i64) -> Param {
        Param::Int(v)
    }
}

impl From<String> for Param {
    fn from(v: String) -> Param {
        Param::Text(v)
    }
}

impl From<&str> for Param {
    fn from(v: &str) -> Param {
        Param::Text(v.to_owned())
    }
}

impl<T: Into<Param>> From<Option<T>> for Param {
    fn from(v: Option<T>) -> Param {
        v.map_or(Param::Null, Into::into)
    }
}

/// Nanoseconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// `s` cut to at most `max` characters. Container-provided text is cut rather than
/// rejected: one over-long image name or output must not make a whole batch unstorable.
pub(crate) fn clamp_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((end, _)) => s[..end].to_owned(),
        None => s.to_owned(),
    }
}

/// `s` cut to at most `max` bytes, on a character boundary.
pub(crate) fn clamp_bytes(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

fn invalid(message: String) -> Error {
    Error::new(ErrorKind::Invalid, message)
}

fn corrupt(message: String) -> Error {
    Error::new(ErrorKind::Corrupt, message)
}

/// A seq as the database stores it (BIGINT).
pub(crate) fn seq_to_db(seq: u64) -> Result<i64> {
    i64::try_from(seq).map_err(|_| invalid(format!("seq {seq} does not fit in a BIGINT")))
}

/// Rejects what no backend can store, before any transaction starts. Limits of columns
/// the database enforces itself (such as the container id's length) are left to it.
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

/// Splits `items` into runs of at most `max_rows` items and (unless one item alone is
/// larger) `max_bytes` bytes as measured by `size`.
pub(crate) fn chunk_by_size<T>(
    items: &[T],
    max_rows: usize,
    max_bytes: usize,
    size: impl Fn(&T) -> usize,
) -> Vec<&[T]> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, item) in items.iter().enumerate() {
        let n = size(item);
        if i > start && (i - start >= max_rows || bytes + n > max_bytes) {
            chunks.push(&items[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += n;
    }
    if start < items.len() {
        chunks.push(&items[start..]);
    }
    chunks
}

/// `(?, ?, …), (?, ?, …)` for `rows` rows of `cols` placeholders.
pub(crate) fn placeholders(rows: usize, cols: usize) -> String {
    let row = format!("({})", vec!["?"; cols].join(", "));
    vec![row.as_str(); rows].join(", ")
}

/// A `jobs` row as read from either backend, before its values are checked.
#[derive(Debug)]
pub(crate) struct RawJob {
    pub id: i64,
    pub container_id: String,
    pub name: String,
    pub image: String,
    pub node: String,
    pub labels_json: String,
    pub status: String,
    pub reason: Option<String>,
    pub exit_code: Option<i64>,
    pub co_result: Option<String>,
    pub co_result_seq: i64,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub updated_at: i64,
    pub restart_count: i64,
    pub tty: i64,
    pub log_driver: String,
    pub logs_unavailable: Option<String>,
    pub placeholder: i64,
    pub last_seq: i64,
    pub line_count: i64,
}

/// A `jobs` row in memory: loaded (locked), changed by the rules below, written back once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JobRow {
    pub id: JobId,
    pub container_id: String,
    pub name: String,
    pub image: String,
    pub node: String,
    pub labels: BTreeMap<String, String>,
    pub status: JobStatus,
    pub reason: Option<String>,
    pub exit_code: Option<i64>,
    pub co_result: Option<String>,
    pub co_result_seq: u64,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub updated_at: i64,
    pub restart_count: u32,
    pub tty: bool,
    pub log_driver: String,
    pub logs_unavailable: Option<String>,
    /// Created from lines (or an exit) before any metadata was seen.
    pub placeholder: bool,
    pub last_seq: u64,
    pub line_count: u64,
}

/// What applying metadata to an existing row did.
pub(crate) struct MetaEffect {
    /// Name, image, labels… were (re)written.
    pub metadata_written: bool,
    pub transition: Option<TransitionKind>,
}

impl TryFrom<RawJob> for JobRow {
    type Error = Error;

    fn try_from(raw: RawJob) -> Result<JobRow> {
        let id = raw.id;
        let bad = |what: &str, v: &dyn std::fmt::Debug| corrupt(format!("job {id}: {what} {v:?}"));
        let labels: BTreeMap<String, String> = serde_json::from_str(&raw.labels_json)
            .map_err(|e| corrupt(format!("job {id}: labels_json is not a JSON object: {e}")))?;
        Ok(JobRow {
            id,
            container_id: raw.container_id,
            name: raw.name,
            image: raw.image,
            node: raw.node,
            labels,
            status: JobStatus::parse(&raw.status).ok_or_else(|| bad("status", &raw.status))?,
            reason: raw.reason,
            exit_code: raw.exit_code,
            co_result: raw.co_result,
            co_result_seq: u64::try_from(raw.co_result_seq)
                .map_err(|_| bad("co_result_seq", &raw.co_result_seq))?,
            created_at: raw.created_at,
            started_at: raw.started_at,
            finished_at: raw.finished_at,
            updated_at: raw.updated_at,
            restart_count: u32::try_from(raw.restart_count)
                .map_err(|_| bad("restart_count", &raw.restart_count))?,
            tty: raw.tty != 0,
            log_driver: raw.log_driver,
            logs_unavailable: raw.logs_unavailable,
            placeholder: raw.placeholder != 0,
            last_seq: u64::try_from(raw.last_seq).map_err(|_| bad("last_seq", &raw.last_seq))?,
            line_count: u64::try_from(raw.line_count)
                .map_err(|_| bad("line_count", &raw.line_count))?,
        })
    }
}

impl JobRow {
    /// A new job whose metadata is known.
    pub fn from_meta(jw: &JobWrite, meta: &JobMeta, now: i64) -> JobRow {
        let mut row = JobRow::placeholder(jw, now);
        row.write_metadata(meta, &jw.node);
        row.started_at = meta.started_at;
        row.restart_count = meta.restart_count;
        row.placeholder = false;
        row
    }

    /// A job seen (lines, exit…) before its metadata: named after the container id until
    /// the metadata arrives.
    pub fn placeholder(jw: &JobWrite, now: i64) -> JobRow {
        JobRow {
            id: jw.job_id,
            container_id: jw.container_id.clone(),
            name: jw.container_id.chars().take(12).collect(),
            image: String::new(),
            node: clamp_chars(&jw.node, NAME_MAX),
            labels: BTreeMap::new(),
            status: JobStatus::Running,
            reason: None,
            exit_code: None,
            co_result: None,
            co_result_seq: 0,
            created_at: now,
            started_at: now,
            finished_at: None,
            updated_at: now,
            restart_count: 0,
            tty: false,
            log_driver: String::new(),
            logs_unavailable: None,
            placeholder: true,
            last_seq: 0,
            line_count: 0,
        }
    }

    fn write_metadata(&mut self, meta: &JobMeta, node: &str) {
        self.name = clamp_chars(&meta.name, NAME_MAX);
        self.image = clamp_chars(&meta.image, NAME_MAX);
        self.node = clamp_chars(node, NAME_MAX);
        self.labels = meta.labels.clone();
        self.created_at = meta.created_at;
        self.tty = meta.tty;
        self.log_driver = clamp_chars(&meta.log_driver, LOG_DRIVER_MAX);
    }

    /// Metadata for an existing row.
    ///
    /// - Older run than stored (a replayed batch): ignored, except that a placeholder takes
    ///   the descriptive fields (they do not change across restarts).
    /// - Newer run: the job runs again; the previous run's verdict and CO_RESULT are
    ///   cleared (`co_result_seq` is kept, so the old run's CO_RESULT line cannot come
    ///   back) and the job is Started again.
    /// - A running placeholder getting its metadata: Started (first sight of the job), but
    ///   nothing of the run is cleared: its lines and CO_RESULT belong to this run.
    /// - Same run otherwise (an agent re-sent metadata, e.g. after its own restart): fields
    ///   refreshed, a final status is kept, no transition.
    pub fn apply_meta(&mut self, meta: &JobMeta, node: &str) -> MetaEffect {
        use std::cmp::Ordering;
        let was_placeholder = self.placeholder;
        let order = meta.restart_count.cmp(&self.restart_count);
        if order == Ordering::Less {
            if was_placeholder {
                self.write_metadata(meta, node);
                self.placeholder = false;
            }
            return MetaEffect {
                metadata_written: was_placeholder,
                transition: None,
            };
        }
        self.write_metadata(meta, node);
        self.placeholder = false;
        self.started_at = meta.started_at;
        let transition = if was_placeholder && self.status == JobStatus::Running {
            self.restart_count = meta.restart_count;
            Some(TransitionKind::Started)
        } else if order == Ordering::Greater {
            self.restart_count = meta.restart_count;
            self.status = JobStatus::Running;
            self.reason = None;
            self.exit_code = None;
            self.finished_at = None;
            self.co_result = None;
            Some(TransitionKind::Started)
        } else {
            None
        };
        MetaEffect {
            metadata_written: true,
            transition,
        }
    }

    /// Counts lines just inserted; `max_seq` is the highest seq of the batch's lines
    /// (stored or duplicate: either way it is stored now).
    pub fn add_lines(&mut self, stored: u64, max_seq: u64) {
        self.line_count += stored;
        self.last_seq = self.last_seq.max(max_seq);
    }

    /// The CO_RESULT with the highest seq wins, whatever order writes arrive in.
    pub fn apply_co_result(&mut self, co: &CoResultWrite) {
        if co.seq > self.co_result_seq {
            self.co_result = Some(clamp_chars(&co.value, TEXT_MAX));
            self.co_result_seq = co.seq;
        }
    }

    /// Records the verdict of a run once. An exit of an older run than stored is stale
    /// (the job has restarted since) and ignored; an exit of the current run finishes it
    /// only while running, so applying it twice gives one Finished.
    pub fn apply_exit(&mut self, exit: &ExitWrite) -> Option<TransitionKind> {
        if exit.restart_count < self.restart_count {
            return None;
        }
        if self.status.is_final() && exit.restart_count == self.restart_count {
            return None;
        }
        let (status, reason) = decide(self.co_result.as_deref(), exit.exit_code);
        self.status = status;
        self.reason = Some(clamp_chars(&reason, TEXT_MAX));
        self.exit_code = Some(exit.exit_code);
        self.finished_at = Some(exit.finished_at);
        self.restart_count = exit.restart_count;
        Some(TransitionKind::Finished)
    }

    pub fn apply_logs_unavailable(&mut self, text: &str) {
        self.logs_unavailable = Some(clamp_chars(text, TEXT_MAX));
    }

    fn labels_json(&self) -> String {
        // A map of strings always serialises; the fallback is unreachable in practice.
        serde_json::to_string(&self.labels).unwrap_or_else(|_| "{}".to_owned())
    }

    /// A flow column's value: the label, or NULL when absent or longer than the column
    /// (it stays in `labels_json`, it just cannot be filtered on).
    fn label_column(&self, key: &str) -> Param {
        match self.labels.get(key) {
            Some(v) if v.chars().count() <= NAME_MAX => Param::Text(v.clone()),
            _ => Param::Null,
        }
    }

    /// Values of [`JOB_UPDATE`] from `name` to `line_count` (without the id).
    fn mutable_params(&self) -> Vec<Param> {
        vec![
            self.name.as_str().into(),
            self.image.as_str().into(),
            self.node.as_str().into(),
            self.label_column(LABEL_FLOW),
            self.label_column(LABEL_RUN),
            self.label_column(LABEL_STAGE),
            self.label_column(LABEL_ACTION),
            self.label_column(LABEL_JOB),
            self.labels_json().into(),
            self.status.as_str().into(),
            self.reason.clone().into(),
            self.exit_code.into(),
            self.co_result.clone().into(),
            (self.co_result_seq as i64).into(),
            self.created_at.into(),
            self.started_at.into(),
            self.finished_at.into(),
            self.updated_at.into(),
            i64::from(self.restart_count).into(),
            i64::from(self.tty).into(),
            self.log_driver.as_str().into(),
            self.logs_unavailable.clone().into(),
            i64::from(self.placeholder).into(),
            (self.last_seq as i64).into(),
            (self.line_count as i64).into(),
        ]
    }

    pub fn insert_params(&self) -> Vec<Param> {
        let mut p = vec![self.id.into(), self.container_id.as_str().into()];
        p.extend(self.mutable_params());
        p
    }

    pub fn update_params(&self) -> Vec<Param> {
        let mut p = self.mutable_params();
        p.push(self.id.into());
        p
    }

    /// Labels small enough for `job_labels`; longer ones are only in `labels_json`.
    pub fn indexed_labels(&self) -> Vec<(&str, &str)> {
        self.labels
            .iter()
            .filter(|(k, v)| {
                k.chars().count() <= LABEL_NAME_MAX && v.chars().count() <= LABEL_VALUE_MAX
            })
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    /// The job as it is now, without outputs (for a `Started` notification).
    pub fn snapshot(&self) -> Job {
        self.clone().into_job(BTreeMap::new())
    }

    pub fn into_job(self, outputs: BTreeMap<String, String>) -> Job {
        let label = |k: &str| self.labels.get(k).cloned();
        Job {
            id: self.id,
            flow: label(LABEL_FLOW),
            run: label(LABEL_RUN),
            stage: label(LABEL_STAGE),
            action: label(LABEL_ACTION),
            job: label(LABEL_JOB),
            container_id: self.container_id,
            name: self.name,
            image: self.image,
            node: self.node,
            labels: self.labels,
            status: self.status,
            reason: self.reason,
            exit_code: self.exit_code,
            co_result: self.co_result,
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            restart_count: self.restart_count,
            tty: self.tty,
            log_driver: self.log_driver,
            logs_unavailable: self.logs_unavailable,
            last_seq: self.last_seq,
            line_count: self.line_count,
            outputs,
        }
    }
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
pub(crate) fn stored_line(
    job_id: JobId,
    seq: i64,
    ts: i64,
    stream: i64,
    cont: i64,
    line: Vec<u8>,
) -> Result<StoredLine> {
    let seq =
        u64::try_from(seq).map_err(|_| corrupt(format!("job {job_id}: line seq {seq} < 0")))?;
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

/// `SELECT` for [`crate::Storage::list_jobs`] with its parameters.
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

/// `SELECT` for [`crate::Storage::read_lines`] with its parameters.
pub(crate) fn read_lines_sql(q: &LineQuery) -> (String, Vec<Param>) {
    let mut sql = String::from(
        "SELECT seq, ts, stream, cont, line FROM log_lines WHERE job_id = ? AND seq > ?",
    );
    let mut params: Vec<Param> = vec![
        q.job_id.into(),
        i64::try_from(q.after_seq).unwrap_or(i64::MAX).into(),
    ];
    if let Some(stream) = q.stream {
        sql.push_str(" AND stream = ?");
        params.push(i64::from(stream.as_u8()).into());
    }
    sql.push_str(" ORDER BY seq LIMIT ?");
    params.push(i64::from(q.limit).into());
    (sql, params)
}

// ---------------------------------------------------------------------------------------
// The rule steps of one job write, shared by both backends' `apply_job` (which only add the
// I/O between them: labels, lines, outputs, the row update).

/// Step 1, metadata: updates the row, records the transition with the job as it then
/// stood. Returns whether the job's indexed labels must be rewritten.
pub(crate) fn apply_meta_step(
    row: &mut JobRow,
    before: &JobRow,
    jw: &JobWrite,
    created: bool,
    out: &mut ApplyOutcome,
    snapshots: &mut Vec<(TransitionKind, Job)>,
) -> bool {
    let Some(meta) = &jw.meta else {
        return false;
    };
    let job_id = row.id;
    if created {
        out.transitions.push(Transition {
            job_id,
            kind: TransitionKind::Started,
        });
        snapshots.push((TransitionKind::Started, row.snapshot()));
        return !row.labels.is_empty();
    }
    let effect = row.apply_meta(meta, &jw.node);
    if let Some(kind) = effect.transition {
        out.transitions.push(Transition { job_id, kind });
        snapshots.push((kind, row.snapshot()));
    }
    effect.metadata_written && row.labels != before.labels
}

/// Step 2's bookkeeping, once the backend inserted the lines: `stored` of them were new.
pub(crate) fn count_lines(row: &mut JobRow, jw: &JobWrite, stored: u64, out: &mut ApplyOutcome) {
    let max_seq = jw.lines.iter().map(|l| l.seq).max().unwrap_or(0);
    out.stored += stored;
    out.duplicates += jw.lines.len() as u64 - stored;
    row.add_lines(stored, max_seq);
}

/// Steps 3 (CO_RESULT), 4 (exit, which decides the verdict) and 5 (logs unavailable) on
/// the row. Returns whether the job finished in this write.
pub(crate) fn apply_result_steps(row: &mut JobRow, jw: &JobWrite, out: &mut ApplyOutcome) -> bool {
    if let Some(co) = &jw.co_result {
        row.apply_co_result(co);
    }
    let mut finished = false;
    if let Some(exit) = &jw.exit {
        if let Some(kind) = row.apply_exit(exit) {
            out.transitions.push(Transition {
                job_id: row.id,
                kind,
            });
            finished = true;
        }
    }
    if let Some(text) = &jw.logs_unavailable {
        row.apply_logs_unavailable(text);
    }
    finished
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

    #[test]
    fn clamps_on_char_boundaries() {
        assert_eq!(clamp_chars("héllo", 2), "hé");
        assert_eq!(clamp_chars("abc", 5), "abc");
        assert_eq!(clamp_bytes("héllo", 2), "h");
        assert_eq!(clamp_bytes("abc", 3), "abc");
    }

    #[test]
    fn placeholders_shape() {
        assert_eq!(placeholders(2, 3), "(?, ?, ?), (?, ?, ?)");
    }
}
