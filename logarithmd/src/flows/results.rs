//! [`JobResults`] from logarithmd's committed job events: every `job.finished` of a flow
//! job (one with the `io.containerops.*` labels) becomes a [`JobResult`]; missed events
//! ([`RecvError::Lagged`]) become [`Notice::Lagged`], and lookups read the job from storage.

use std::sync::Arc;

use engine::{JobResult, JobResults, Notice, Result};
use storage::{Job, JobStatus, LineQuery, Storage};

use super::engine_error;
use crate::notify::{EventKind, JobEventStream, RecvError};

pub struct EventResults {
    stream: JobEventStream,
    storage: Arc<dyn Storage>,
}

impl EventResults {
    /// `stream` must be subscribed before the engine starts.
    pub fn new(stream: JobEventStream, storage: Arc<dyn Storage>) -> EventResults {
        EventResults { stream, storage }
    }
}

/// The verdict of a finished flow job; `None` while it runs or when it is no flow job.
pub fn result_of(job: &Job) -> Option<JobResult> {
    if job.status == JobStatus::Running {
        return None;
    }
    Some(JobResult {
        container_id: job.container_id.clone(),
        run: job.run.clone()?,
        stage: job.stage.clone()?,
        action: job.action.clone()?,
        job: job.job.clone()?,
        success: job.status == JobStatus::Success,
        reason: job.reason.clone().unwrap_or_default(),
        exit_code: job.exit_code,
        outputs: job.outputs.clone(),
        finished_at: job.finished_at,
    })
}

#[async_trait::async_trait]
impl JobResults for EventResults {
    async fn recv(&mut self) -> Notice {
        loop {
            // Cancel-safe: the broadcast receiver keeps an event not yet returned, and
            // nothing is awaited between taking one and returning it.
            match self.stream.recv().await {
                Ok(ev) if ev.kind == EventKind::JobFinished => {
                    if let Some(r) = result_of(&ev.job) {
                        return Notice::Result(Box::new(r));
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "flow engine fell behind the job events");
                    return Notice::Lagged;
                }
                Err(RecvError::Closed) => return Notice::Closed,
            }
        }
    }

    async fn lookup(&self, container_id: &str) -> Result<Option<JobResult>> {
        let job = self
            .storage
            .get_job(storage::job_id_for_container(container_id))
            .await
            .map_err(|e| engine_error("cannot look up the job", e))?;
        Ok(job
            .filter(|j| j.container_id == container_id)
            .as_ref()
            .and_then(result_of))
    }

    async fn log_tail(&self, container_id: &str, lines: usize) -> Result<Vec<String>> {
        let id = storage::job_id_for_container(container_id);
        let job = self
            .storage
            .get_job(id)
            .await
            .map_err(|e| engine_error("cannot look up the job", e))?;
        let Some(job) = job.filter(|j| j.container_id == container_id) else {
            return Ok(Vec::new());
        };
        let limit = u32::try_from(lines).unwrap_or(u32::MAX);
        let stored = self
            .storage
            .read_lines(&LineQuery {
                job_id: id,
                after_seq: job.last_seq.saturating_sub(u64::from(limit)),
                limit,
                stream: None,
            })
            .await
            .map_err(|e| engine_error("cannot read the job's log", e))?;
        Ok(stored
            .into_iter()
            .map(|l| String::from_utf8_lossy(&l.line).into_owned())
            .collect())
    }
}
