//! What storage writes and reads: jobs (one per container), their log lines and outputs,
//! and the events a committed write announces ([`JobEvent`]), which the webhook outbox
//! builds on (this module depends on no other module of the crate).
//!
//! The verdict rule ([`decide`]) lives here because storage applies it inside the same
//! transaction that records a container's exit, so a job's result is never half-written.

use std::collections::BTreeMap;

use protocol::Stream;
use sha2::{Digest, Sha256};

/// A job's id: a random-looking positive 64-bit number derived from the container id, so
/// every logarithmd replica computes the same id without a lookup, and TiDB spreads the
/// keys that lead with it across regions.
pub type JobId = i64;

/// The job id of a container: the first 8 bytes of SHA-256(container id), made positive and
/// non-zero.
pub fn job_id_for_container(container_id: &str) -> JobId {
    let digest = Sha256::digest(container_id.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest[..8]);
    let id = (u64::from_be_bytes(b) & (i64::MAX as u64)) as i64;
    if id == 0 {
        1
    } else {
        id
    }
}

/// A job's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Running,
    Success,
    Failure,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Running => "running",
            JobStatus::Success => "success",
            JobStatus::Failure => "failure",
        }
    }

    pub fn parse(s: &str) -> Option<JobStatus> {
        match s {
            "running" => Some(JobStatus::Running),
            "success" => Some(JobStatus::Success),
            "failure" => Some(JobStatus::Failure),
            _ => None,
        }
    }

    pub fn is_final(self) -> bool {
        !matches!(self, JobStatus::Running)
    }
}

/// The reason of a finished job whose exit code the runtime never reported (an exit with
/// `exit_code: None`). Such a job fails whatever its `CO_RESULT`: only exit code 0 can
/// confirm success.
pub const EXIT_UNKNOWN: &str = "exit code unknown: the container runtime never reported how \
     the run ended (the container was removed or restarted before its end was seen)";

/// The verdict of a finished job, from its `CO_RESULT` value (if it printed one) and its
/// exit code: `CO_RESULT` decides, except that a non-zero exit code always means failure;
/// without `CO_RESULT`, exit code 0 is success.
pub fn decide(co_result: Option<&str>, exit_code: i64) -> (JobStatus, String) {
    let co = co_result.map(|v| {
        if v.eq_ignore_ascii_case("true") {
            Some(true)
        } else if v.eq_ignore_ascii_case("false") {
            Some(false)
        } else {
            None
        }
    });
    match (co, exit_code) {
        (None, 0) => (JobStatus::Success, "exit code 0".into()),
        (None, n) => (JobStatus::Failure, format!("exit code {n}")),
        (Some(Some(true)), 0) => (JobStatus::Success, "CO_RESULT = true".into()),
        (Some(Some(true)), n) => (
            JobStatus::Failure,
            format!("exit code {n} despite CO_RESULT = true"),
        ),
        (Some(Some(false)), 0) => (JobStatus::Failure, "CO_RESULT = false".into()),
        (Some(Some(false)), n) => (
            JobStatus::Failure,
            format!("CO_RESULT = false, exit code {n}"),
        ),
        (Some(None), 0) => (JobStatus::Failure, "invalid CO_RESULT".into()),
        (Some(None), n) => (
            JobStatus::Failure,
            format!("invalid CO_RESULT, exit code {n}"),
        ),
    }
}

/// Container metadata to record on a job (from a `meta` event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobMeta {
    pub name: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    /// The Pod's annotations (Kubernetes); empty for Docker containers.
    pub annotations: BTreeMap<String, String>,
    pub created_at: i64,
    pub started_at: i64,
    pub restart_count: u32,
    pub tty: bool,
    pub log_driver: String,
}

/// One log line to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLine {
    pub seq: u64,
    pub ts: i64,
    pub stream: Stream,
    /// The line goes on in the next record.
    pub cont: bool,
    pub line: Vec<u8>,
}

/// A job output (`[COUT] KEY = VALUE`), with the seq of the line it came from so the last
/// value wins even when lines are written out of order or twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputWrite {
    pub name: String,
    pub value: String,
    pub seq: u64,
}

/// The raw `CO_RESULT` value and the seq of its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoResultWrite {
    pub value: String,
    pub seq: u64,
}

/// The container stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitWrite {
    /// `None`: the runtime never reported how the run ended (the job fails, saying so).
    pub exit_code: Option<i64>,
    pub finished_at: i64,
    pub last_seq: u64,
    pub restart_count: u32,
    /// A failure the writer decided, recorded instead of the verdict rule's outcome (a
    /// service job whose endpoint could not be called; a container whose end is unknown,
    /// with the agent's reason, e.g. removed while the agent was down).
    pub failure: Option<String>,
}

/// Everything to write for one job, applied in this order: metadata, lines, outputs and
/// CO_RESULT, exit (which decides the verdict), logs-unavailable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobWrite {
    pub job_id: JobId,
    pub container_id: String,
    /// Node the container runs on.
    pub node: String,
    pub meta: Option<JobMeta>,
    pub lines: Vec<NewLine>,
    pub outputs: Vec<OutputWrite>,
    pub co_result: Option<CoResultWrite>,
    pub exit: Option<ExitWrite>,
    pub logs_unavailable: Option<String>,
}

impl JobWrite {
    pub fn new(container_id: &str, node: &str) -> JobWrite {
        JobWrite {
            job_id: job_id_for_container(container_id),
            container_id: container_id.to_owned(),
            node: node.to_owned(),
            meta: None,
            lines: Vec::new(),
            outputs: Vec::new(),
            co_result: None,
            exit: None,
            logs_unavailable: None,
        }
    }
}

/// One atomic write: all of it is committed, or none of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    /// In timeline order; one job may appear more than once (around a restart).
    pub jobs: Vec<JobWrite>,
}

/// A job changed state in a committed write (the source of notifications).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub job_id: JobId,
    pub kind: TransitionKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransitionKind {
    /// A new job, or a restart of an existing one.
    Started,
    /// The job reached a final status (once per run of the container).
    Finished,
}

/// What happened, as subscribers name it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum EventKind {
    /// A job (container) started, or started again after a restart.
    #[serde(rename = "job.started")]
    JobStarted,
    /// A job reached its verdict.
    #[serde(rename = "job.finished")]
    JobFinished,
    /// A flow run finished (announced through [`crate::WebhookStore::enqueue_event`]).
    #[serde(rename = "flow.finished")]
    FlowFinished,
}

impl EventKind {
    pub const ALL: [EventKind; 3] = [
        EventKind::JobStarted,
        EventKind::JobFinished,
        EventKind::FlowFinished,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::JobStarted => "job.started",
            EventKind::JobFinished => "job.finished",
            EventKind::FlowFinished => "flow.finished",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<TransitionKind> for EventKind {
    fn from(k: TransitionKind) -> EventKind {
        match k {
            TransitionKind::Started => EventKind::JobStarted,
            TransitionKind::Finished => EventKind::JobFinished,
        }
    }
}

/// An event of a committed write, with the job as that write left it (for `job.started`,
/// as it was when it started; outputs only on `job.finished`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEvent {
    pub kind: EventKind,
    pub job: Job,
    /// Commit time, ns since the Unix epoch.
    pub at: i64,
}

/// What a committed write did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyOutcome {
    /// Lines newly stored.
    pub stored: u64,
    /// Lines that were already stored (same job and seq) and were left as they were.
    pub duplicates: u64,
    /// State changes, in order.
    pub transitions: Vec<Transition>,
    /// The same changes with the job as committed, for notifications. Webhook deliveries
    /// for them were written in the same transaction.
    pub events: Vec<JobEvent>,
}

/// A stored job. Deserialize reads back the snapshots webhook deliveries keep.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Job {
    pub id: JobId,
    pub container_id: String,
    pub name: String,
    pub image: String,
    pub node: String,
    pub labels: BTreeMap<String, String>,
    /// The Pod's annotations (Kubernetes); empty for Docker containers. Snapshots written
    /// before they were kept have none.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Values of the `io.containerops.*` labels, when the container is a flow job.
    pub flow: Option<String>,
    pub run: Option<String>,
    pub stage: Option<String>,
    pub action: Option<String>,
    pub job: Option<String>,
    pub status: JobStatus,
    pub reason: Option<String>,
    pub exit_code: Option<i64>,
    /// The raw `CO_RESULT` value the job printed last, if any.
    pub co_result: Option<String>,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub restart_count: u32,
    pub tty: bool,
    pub log_driver: String,
    /// Why the logs cannot be read, when they cannot.
    pub logs_unavailable: Option<String>,
    /// Highest seq stored.
    pub last_seq: u64,
    /// Lines stored.
    pub line_count: u64,
    /// Outputs (`[COUT] KEY = VALUE` other than CO_RESULT); filled by `get_job` only.
    pub outputs: BTreeMap<String, String>,
}

/// A stored log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredLine {
    pub seq: u64,
    pub ts: i64,
    pub stream: Stream,
    pub cont: bool,
    pub line: Vec<u8>,
}

/// Which jobs to list. Every set field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobQuery {
    pub flow: Option<String>,
    pub run: Option<String>,
    pub stage: Option<String>,
    pub action: Option<String>,
    pub job: Option<String>,
    pub status: Option<JobStatus>,
    /// Label equality filters (`key = value`), all of which must hold.
    pub labels: Vec<(String, String)>,
    /// Page size.
    pub limit: u32,
    /// Continue after this job (the last of the previous page).
    pub after: Option<JobCursor>,
}

/// Position in the job listing, which is ordered newest first by `(created_at, id)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobCursor {
    pub created_at: i64,
    pub id: JobId,
}

/// Which lines to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineQuery {
    pub job_id: JobId,
    /// Only lines with a greater seq.
    pub after_seq: u64,
    pub limit: u32,
    pub stream: Option<Stream>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        assert_eq!(decide(Some("true"), 0).0, JobStatus::Success);
        assert_eq!(decide(Some("TRUE"), 0).0, JobStatus::Success);
        assert_eq!(
            decide(Some("false"), 0),
            (JobStatus::Failure, "CO_RESULT = false".into())
        );
        assert_eq!(decide(None, 3), (JobStatus::Failure, "exit code 3".into()));
        assert_eq!(
            decide(Some("true"), 1),
            (
                JobStatus::Failure,
                "exit code 1 despite CO_RESULT = true".into()
            )
        );
        assert_eq!(
            decide(Some("yes"), 0),
            (JobStatus::Failure, "invalid CO_RESULT".into())
        );
        assert_eq!(decide(None, 0).0, JobStatus::Success);
    }

    #[test]
    fn job_ids_are_stable_positive_and_distinct() {
        let a = job_id_for_container("abc");
        assert_eq!(a, job_id_for_container("abc"));
        assert!(a > 0);
        assert_ne!(a, job_id_for_container("abd"));
    }

    #[test]
    fn event_names_round_trip() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.as_str())
            );
        }
        assert_eq!(EventKind::parse("job.exploded"), None);
    }
}
