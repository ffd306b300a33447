//! Retention: which jobs have expired under the rules, and the sweep that deletes each of
//! them with everything it owns, in bounded transactions.
//!
//! - Only finished jobs (with a verdict) expire. A job still running past its maximum age
//!   is kept, however old: its logs are still being written and read.
//! - A job goes with its lines, outputs, labels, webhook deliveries and their attempts,
//!   the documents keyed by its container id in [`RetentionRules::job_namespaces`], and
//!   the document of its run (in [`RetentionRules::run_namespace`]) once no job of the run
//!   is left and the run is no longer active. Deliveries of announced events (job id 0,
//!   `flow.finished`) and run documents without any job go by the global maximum age.
//! - Each transaction deletes at most [`RetentionRules::batch_rows`] rows, by primary key
//!   range (TiDB-friendly). The job's own row goes last, in the transaction that deletes
//!   its last owned rows: an interrupted deletion leaves an expired job that the next
//!   sweep finds and finishes, never rows that nobody owns.
//! - Every step first locks the job's row and checks it is still expired, so a job that
//!   restarted meanwhile is kept, and sweeps on several replicas at once are safe: a step
//!   finds nothing left to do, or does the same deletes.
//!
//! The sweep takes `now` from its caller, so a test can simulate days.

use crate::error::Result;
use crate::model::JobId;
use crate::Storage;

/// Largest [`RetentionRules::batch_rows`]: rows per transaction (TiDB's advice for
/// deletes; also what keeps one transaction short next to ingest).
pub const BATCH_ROWS_MAX: u32 = 10_000;

/// Jobs read per page while looking for expired ones.
const PAGE: u32 = 500;

/// What to keep. Durations in ns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionRules {
    /// Finished jobs older than this (by `finished_at`) go, unless their flow has a rule
    /// of its own. `None`: no age limit.
    pub max_age_ns: Option<i64>,
    /// Per-flow maximum ages, replacing `max_age_ns` for jobs of that flow.
    pub flows: Vec<FlowRule>,
    /// Lines stored in all, at most: beyond it the oldest finished jobs go first.
    pub max_lines: Option<u64>,
    /// Bytes of line text stored in all, at most: beyond it the oldest finished jobs go.
    pub max_bytes: Option<u64>,
    /// Rows deleted per transaction, 1 to [`BATCH_ROWS_MAX`].
    pub batch_rows: u32,
    /// Namespace of run documents, keyed by the run id jobs carry (`jobs.run`).
    pub run_namespace: Option<String>,
    /// Namespaces of documents keyed by a job's container id, which go with the job.
    pub job_namespaces: Vec<String>,
}

impl Default for RetentionRules {
    fn default() -> RetentionRules {
        RetentionRules {
            max_age_ns: None,
            flows: Vec::new(),
            max_lines: None,
            max_bytes: None,
            batch_rows: 5_000,
            run_namespace: None,
            job_namespaces: Vec::new(),
        }
    }
}

impl RetentionRules {
    /// Whether any rule can delete anything.
    pub fn is_active(&self) -> bool {
        self.max_age_ns.is_some()
            || !self.flows.is_empty()
            || self.max_lines.is_some()
            || self.max_bytes.is_some()
    }

    fn batch_rows(&self) -> u32 {
        self.batch_rows.clamp(1, BATCH_ROWS_MAX)
    }
}

/// A maximum age for one flow's jobs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowRule {
    pub flow: String,
    pub max_age_ns: i64,
}

/// Which flows a listing of finished jobs covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowFilter {
    Any,
    Only(String),
    /// Jobs of no flow, or of a flow not in the list.
    Except(Vec<String>),
}

/// Finished jobs, oldest first by `(finished_at, id)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedQuery {
    /// Only jobs that finished strictly before this (ns).
    pub finished_before: Option<i64>,
    pub flow: FlowFilter,
    /// Continue after this `(finished_at, id)`.
    pub after: Option<(i64, JobId)>,
    pub limit: u32,
}

/// A finished job, as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRef {
    pub id: JobId,
    pub finished_at: i64,
    pub line_count: u64,
    pub line_bytes: u64,
}

/// Lines and bytes stored, over every job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoredTotals {
    pub jobs: u64,
    pub lines: u64,
    pub bytes: u64,
}

/// One transaction of deleting a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteStep {
    pub job: JobId,
    /// The job is deleted only if it finished at or before this (ns); otherwise (it runs
    /// again, or it is gone) the step does nothing.
    pub finished_by: i64,
    /// Rows this transaction deletes at most (the job's row and documents not counted).
    pub max_rows: u32,
    pub run_namespace: Option<String>,
    pub job_namespaces: Vec<String>,
}

/// Rows deleted, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deleted {
    pub jobs: u64,
    pub lines: u64,
    pub deliveries: u64,
    pub attempts: u64,
    pub documents: u64,
    /// Outputs and labels.
    pub other: u64,
    /// Bytes of line text of the jobs deleted (from their counters).
    pub line_bytes: u64,
}

impl Deleted {
    pub fn add(&mut self, o: &Deleted) {
        self.jobs += o.jobs;
        self.lines += o.lines;
        self.deliveries += o.deliveries;
        self.attempts += o.attempts;
        self.documents += o.documents;
        self.other += o.other;
        self.line_bytes += o.line_bytes;
    }

    /// Rows deleted in all.
    pub fn rows(&self) -> u64 {
        self.jobs + self.lines + self.deliveries + self.attempts + self.documents + self.other
    }
}

/// What one [`DeleteStep`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StepOutcome {
    pub deleted: Deleted,
    /// Nothing of the job is left to delete by this job's deletion: its row is gone (now
    /// or before), or it is not expired any more and was kept.
    pub finished: bool,
}

/// What a sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub deleted: Deleted,
    /// Transactions it committed.
    pub transactions: u64,
    /// Totals after the caps were applied (when a cap is set).
    pub totals: Option<StoredTotals>,
}

/// Deletes every job the rules expire at `now` (ns), each with what it owns, then the
/// run documents left without jobs. Safe to run on several replicas at once; stopping it
/// anywhere (an error, a crash, dropping the future) leaves work the next sweep finishes.
/// What it deleted is added to `report` as it goes, so a sweep that fails half-way still
/// reports what it did.
pub async fn sweep(
    store: &dyn Storage,
    rules: &RetentionRules,
    now: i64,
    report: &mut SweepReport,
) -> Result<()> {
    for rule in &rules.flows {
        let cutoff = now.saturating_sub(rule.max_age_ns);
        expire_by_age(
            store,
            rules,
            FlowFilter::Only(rule.flow.clone()),
            cutoff,
            report,
        )
        .await?;
    }
    if let Some(age) = rules.max_age_ns {
        let overridden = rules.flows.iter().map(|r| r.flow.clone()).collect();
        let cutoff = now.saturating_sub(age);
        expire_by_age(store, rules, FlowFilter::Except(overridden), cutoff, report).await?;
    }
    if rules.max_lines.is_some() || rules.max_bytes.is_some() {
        report.totals = Some(enforce_caps(store, rules, report).await?);
    }
    if let Some(age) = rules.max_age_ns {
        // Deliveries of announced events (`flow.finished`) belong to no job: they go by
        // age, as a job would.
        loop {
            let (deliveries, attempts) = store
                .delete_old_event_deliveries(now.saturating_sub(age), rules.batch_rows())
                .await?;
            report.transactions += 1;
            report.deleted.deliveries += deliveries;
            report.deleted.attempts += attempts;
            if deliveries == 0 {
                break;
            }
        }
    }
    if let (Some(ns), Some(age)) = (&rules.run_namespace, rules.max_age_ns) {
        // Runs that never had a job, or whose last job went in a deletion that could not
        // see the run's other jobs go (two replicas at once): kept no longer than a job.
        let created_before = now.saturating_sub(age);
        loop {
            let n = store
                .delete_orphan_documents(ns, created_before, rules.batch_rows())
                .await?;
            report.deleted.documents += n;
            report.transactions += 1;
            if n < u64::from(rules.batch_rows()) {
                break;
            }
        }
    }
    Ok(())
}

async fn expire_by_age(
    store: &dyn Storage,
    rules: &RetentionRules,
    flow: FlowFilter,
    cutoff: i64,
    report: &mut SweepReport,
) -> Result<()> {
    let mut after = None;
    loop {
        let page = store
            .finished_jobs(&FinishedQuery {
                finished_before: Some(cutoff),
                flow: flow.clone(),
                after,
                limit: PAGE,
            })
            .await?;
        for job in &page {
            delete_job(store, rules, job, report).await?;
        }
        match page.last() {
            Some(last) if page.len() == PAGE as usize => after = Some((last.finished_at, last.id)),
            _ => return Ok(()),
        }
    }
}

/// Oldest finished jobs go until both totals are within their caps (or no finished job is
/// left: running jobs are never deleted, so they alone may keep a total above its cap).
async fn enforce_caps(
    store: &dyn Storage,
    rules: &RetentionRules,
    report: &mut SweepReport,
) -> Result<StoredTotals> {
    let mut totals = store.stored_totals().await?;
    let over = |t: &StoredTotals| {
        rules.max_lines.is_some_and(|m| t.lines > m) || rules.max_bytes.is_some_and(|m| t.bytes > m)
    };
    let mut after = None;
    while over(&totals) {
        let page = store
            .finished_jobs(&FinishedQuery {
                finished_before: None,
                flow: FlowFilter::Any,
                after,
                limit: PAGE,
            })
            .await?;
        for job in &page {
            if !over(&totals) {
                break;
            }
            let before = report.deleted.jobs;
            delete_job(store, rules, job, report).await?;
            if report.deleted.jobs > before {
                totals.jobs = totals.jobs.saturating_sub(1);
                totals.lines = totals.lines.saturating_sub(job.line_count);
                totals.bytes = totals.bytes.saturating_sub(job.line_bytes);
            }
        }
        match page.last() {
            Some(last) if page.len() == PAGE as usize => after = Some((last.finished_at, last.id)),
            _ => break,
        }
    }
    Ok(totals)
}

/// Deletes one job, a bounded transaction at a time, until it is gone (or kept).
async fn delete_job(
    store: &dyn Storage,
    rules: &RetentionRules,
    job: &JobRef,
    report: &mut SweepReport,
) -> Result<()> {
    let step = DeleteStep {
        job: job.id,
        finished_by: job.finished_at,
        max_rows: rules.batch_rows(),
        run_namespace: rules.run_namespace.clone(),
        job_namespaces: rules.job_namespaces.clone(),
    };
    loop {
        let outcome = store.delete_job_step(&step).await?;
        report.transactions += 1;
        report.deleted.add(&outcome.deleted);
        if outcome.deleted.jobs > 0 {
            report.deleted.line_bytes += job.line_bytes;
        }
        if outcome.finished {
            return Ok(());
        }
    }
}
