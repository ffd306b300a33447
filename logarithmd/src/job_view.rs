//! A job as the API, its streams and webhook payloads show it.

use std::collections::BTreeMap;

use serde::Serialize;
use storage::{Job, JobStatus};

use crate::timefmt::rfc3339;

/// A job as the API shows it.
#[derive(Debug, Serialize)]
pub struct JobView {
    /// Decimal string: the id is a 64-bit number that JavaScript cannot hold exactly.
    pub id: String,
    pub container_id: String,
    pub name: String,
    pub image: String,
    pub node: String,
    pub labels: BTreeMap<String, String>,
    /// The Pod's annotations (Kubernetes); empty for Docker containers.
    pub annotations: BTreeMap<String, String>,
    pub flow: Option<String>,
    pub run: Option<String>,
    pub stage: Option<String>,
    pub action: Option<String>,
    pub job: Option<String>,
    pub status: JobStatus,
    /// The verdict the job printed (`CO_RESULT`), when it printed a valid one.
    pub result: Option<bool>,
    /// The raw `CO_RESULT` value, if any.
    pub co_result: Option<String>,
    pub reason: Option<String>,
    pub exit_code: Option<i64>,
    pub outputs: BTreeMap<String, String>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub restart_count: u32,
    pub tty: bool,
    pub log_driver: String,
    pub logs_unavailable: Option<String>,
    pub line_count: u64,
    pub last_seq: u64,
    /// Where to read its logs.
    pub logs_url: String,
}

impl JobView {
    pub fn from_job(j: Job) -> JobView {
        let result = j.co_result.as_deref().and_then(|v| {
            if v.eq_ignore_ascii_case("true") {
                Some(true)
            } else if v.eq_ignore_ascii_case("false") {
                Some(false)
            } else {
                None
            }
        });
        JobView {
            id: j.id.to_string(),
            logs_url: format!("/api/v1/jobs/{}/logs", j.id),
            container_id: j.container_id,
            name: j.name,
            image: j.image,
            node: j.node,
            labels: j.labels,
            annotations: j.annotations,
            flow: j.flow,
            run: j.run,
            stage: j.stage,
            action: j.action,
            job: j.job,
            status: j.status,
            result,
            co_result: j.co_result,
            reason: j.reason,
            exit_code: j.exit_code,
            outputs: j.outputs,
            created_at: rfc3339(j.created_at),
            started_at: (j.started_at > 0).then(|| rfc3339(j.started_at)),
            finished_at: j.finished_at.map(rfc3339),
            restart_count: j.restart_count,
            tty: j.tty,
            log_driver: j.log_driver,
            logs_unavailable: j.logs_unavailable,
            line_count: j.line_count,
            last_seq: j.last_seq,
        }
    }
}
