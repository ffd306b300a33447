//! Finding the jobs (and which of their streams) a stream selector matches in a time range,
//! within the query bounds.
//!
//! The equality matchers on `flow`, `run`, `stage`, `action`, `job` and `status` go to
//! storage as the job listing's filters, `job_id` as a lookup; every other matcher is
//! applied here to each job listed. A job is in the range when it was created before its
//! end and had not finished before its start.

use std::collections::BTreeMap;

use protocol::Stream;
use storage::{Job, JobCursor, JobQuery, JobStatus};

use super::labels;
use super::logql::{LogQuery, Matcher};
use super::params::{LokiError, LokiResult};
use crate::api::AppState;
use crate::auth::Caller;

/// Jobs listed per storage round trip.
const PAGE: u32 = 500;

/// A selected job: its labels (without `stream`) and the streams the selector keeps.
pub struct Selected {
    pub job: Job,
    pub labels: BTreeMap<String, String>,
    pub streams: Vec<Stream>,
}

/// Whether the query names the jobs it reads (a `flow`, `run`, `job` or `job_id`
/// equality matcher), so it may cover any time range.
pub fn is_narrow(matchers: &[Matcher]) -> bool {
    matchers.iter().any(|m| {
        matches!(m.label.as_str(), "flow" | "run" | "job" | "job_id") && m.equality().is_some()
    })
}

/// Refuses a broad query over a range longer than `loki_max_range`.
pub fn check_bounds(
    state: &AppState,
    matchers: &[Matcher],
    start: i64,
    end: i64,
) -> LokiResult<()> {
    let max = i64::try_from(state.config.loki_max_range.as_nanos()).unwrap_or(i64::MAX);
    if !is_narrow(matchers) && end.saturating_sub(start) > max {
        return Err(LokiError::bad_request(format!(
            "the query covers more than loki_max_range ({} s): add a flow, run, job or job_id \
             matcher (such as {{flow=\"name\"}}) or shorten the time range",
            state.config.loki_max_range.as_secs()
        )));
    }
    Ok(())
}

/// The job with the streams of it the selector keeps, if it was alive in `[start, end)`
/// and `caller` may read it.
pub fn judge(q: &LogQuery, caller: &Caller, job: Job, start: i64, end: i64) -> Option<Selected> {
    if job.created_at >= end
        || job.finished_at.is_some_and(|f| f < start)
        || !caller.may_read_flow(job.flow.as_deref())
    {
        return None;
    }
    let labels = labels::job_labels(&job);
    let streams: Vec<Stream> = [Stream::Stdout, Stream::Stderr]
        .into_iter()
        .filter(|s| {
            q.selects(|name| {
                if name == "stream" {
                    Some(s.as_str())
                } else {
                    labels.get(name).map(String::as_str)
                }
            })
        })
        .collect();
    (!streams.is_empty()).then_some(Selected {
        job,
        labels,
        streams,
    })
}

/// The jobs and streams `matchers` select among the jobs alive in `[start, end)` that
/// `caller` may read (a flow-limited read token sees only its flows' jobs).
pub async fn select(
    state: &AppState,
    caller: &Caller,
    matchers: &[Matcher],
    start: i64,
    end: i64,
) -> LokiResult<Vec<Selected>> {
    let q = LogQuery {
        matchers: matchers.to_vec(),
        filters: Vec::new(),
    };
    let mut out = Vec::new();
    let mut keep = |job: Job| out.extend(judge(&q, caller, job, start, end));
    if let Some(id) = q.equality("job_id") {
        if let Some(job) = id.parse::<i64>().ok().filter(|n| *n > 0) {
            let found = state
                .storage
                .get_job(job)
                .await
                .map_err(|e| LokiError::storage("reading a job failed", &e))?;
            if let Some(j) = found {
                keep(j);
            }
        }
        return Ok(out);
    }
    let mut jq = JobQuery {
        flow: q.equality("flow").map(str::to_owned),
        run: q.equality("run").map(str::to_owned),
        stage: q.equality("stage").map(str::to_owned),
        action: q.equality("action").map(str::to_owned),
        job: q.equality("job").map(str::to_owned),
        status: None,
        labels: Vec::new(),
        limit: PAGE,
        after: None,
    };
    if let Some(s) = q.equality("status") {
        match JobStatus::parse(s) {
            Some(s) => jq.status = Some(s),
            None => return Ok(out),
        }
    }
    let max_jobs = state.config.loki_max_jobs;
    let mut scanned = 0usize;
    loop {
        let page = state
            .storage
            .list_jobs(&jq)
            .await
            .map_err(|e| LokiError::storage("listing jobs failed", &e))?;
        let full = page.len() == PAGE as usize;
        jq.after = page.last().map(|j| JobCursor {
            created_at: j.created_at,
            id: j.id,
        });
        scanned += page.len();
        if scanned > max_jobs {
            return Err(LokiError::bad_request(format!(
                "the selector matches more than loki_max_jobs ({max_jobs}) jobs: add a flow, \
                 run or job matcher or shorten the time range"
            )));
        }
        for job in page {
            keep(job);
        }
        if !full {
            return Ok(out);
        }
    }
}
