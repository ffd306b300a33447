//! The in-memory image of a `jobs` row and the rules that change it (metadata, restarts,
//! lines, CO_RESULT, exit and the verdict), in the order one job write applies them.
//!
//! Keeping the rules here, as plain functions over a row image, is what makes the two
//! backends agree: each backend only loads the row (locked), runs these steps, does the
//! I/O between them (labels, lines, outputs) and writes the row back once.

use std::collections::BTreeMap;

use protocol::{LABEL_ACTION, LABEL_FLOW, LABEL_JOB, LABEL_RUN, LABEL_STAGE};

use crate::model::{
    decide, ApplyOutcome, CoResultWrite, ExitWrite, Job, JobId, JobMeta, JobStatus, JobWrite,
    Transition, TransitionKind, EXIT_UNKNOWN,
};
use crate::sql::{
    clamp_chars, Param, LABEL_NAME_MAX, LABEL_VALUE_MAX, LOG_DRIVER_MAX, NAME_MAX, TEXT_MAX,
};

/// A `jobs` row in memory: loaded (locked), changed by the rules below, written back once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JobRow {
    pub id: JobId,
    pub container_id: String,
    pub name: String,
    pub image: String,
    pub node: String,
    pub labels: BTreeMap<String, String>,
    /// The Pod's annotations (Kubernetes); empty for Docker containers.
    pub annotations: BTreeMap<String, String>,
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
    /// Bytes of line text stored (what retention's `max_bytes` sums).
    pub line_bytes: u64,
}

/// What applying metadata to an existing row did.
pub(crate) struct MetaEffect {
    /// Name, image, labels… were (re)written.
    pub metadata_written: bool,
    pub transition: Option<TransitionKind>,
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
            annotations: BTreeMap::new(),
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
            line_bytes: 0,
        }
    }

    fn write_metadata(&mut self, meta: &JobMeta, node: &str) {
        self.name = clamp_chars(&meta.name, NAME_MAX);
        self.image = clamp_chars(&meta.image, NAME_MAX);
        self.node = clamp_chars(node, NAME_MAX);
        self.labels = meta.labels.clone();
        self.annotations = meta.annotations.clone();
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
    pub fn add_lines(&mut self, stored: u64, max_seq: u64, bytes: u64) {
        self.line_count += stored;
        self.line_bytes = self.line_bytes.saturating_add(bytes);
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
        let (status, reason) = match (&exit.failure, exit.exit_code) {
            (Some(why), _) => (JobStatus::Failure, why.clone()),
            (None, Some(code)) => decide(self.co_result.as_deref(), code),
            (None, None) => (JobStatus::Failure, EXIT_UNKNOWN.to_owned()),
        };
        self.status = status;
        self.reason = Some(clamp_chars(&reason, TEXT_MAX));
        self.exit_code = exit.exit_code;
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

    /// `annotations_json`: NULL when there are none (as for every job stored before schema
    /// version 7).
    fn annotations_json(&self) -> Param {
        if self.annotations.is_empty() {
            return Param::Null;
        }
        // A map of strings always serialises; the fallback is unreachable in practice.
        Param::Text(serde_json::to_string(&self.annotations).unwrap_or_else(|_| "{}".to_owned()))
    }

    /// A flow column's value: the label, or NULL when absent or longer than the column
    /// (it stays in `labels_json`, it just cannot be filtered on).
    fn label_column(&self, key: &str) -> Param {
        match self.labels.get(key) {
            Some(v) if v.chars().count() <= NAME_MAX => Param::Text(v.clone()),
            _ => Param::Null,
        }
    }

    /// Values of [`JOB_UPDATE`] from `name` to `line_bytes` (without the id).
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
            i64::try_from(self.line_bytes).unwrap_or(i64::MAX).into(),
            self.annotations_json(),
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
            annotations: self.annotations,
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
    // Bytes of the lines newly stored: exact unless the write was partly a resend (some
    // lines stored already), then the new lines' share of the write's bytes.
    let total = jw.lines.len() as u64;
    let bytes: u64 = jw.lines.iter().map(|l| l.line.len() as u64).sum();
    let new_bytes = match total {
        0 => 0,
        t if stored >= t => bytes,
        t => ((u128::from(bytes) * u128::from(stored)) / u128::from(t)) as u64,
    };
    row.add_lines(stored, max_seq, new_bytes);
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
