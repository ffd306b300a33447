//! The run state machine: pure, no I/O, no clock. Given a run's state, an [`Event`] and the
//! time, [`Run::apply`] changes the state and returns the [`Command`]s the driver must carry
//! out (start a job, stop or remove a container, announce the end of the run).
//!
//! Rules (docs/flows.md says the same for users):
//! - Stages run in order; `start` and `end` succeed at once, `pause` waits for a decision.
//! - `sequence`: actions one after another, stopping at the first that does not succeed
//!   (the rest stay `pending`). `parallel`: all at once; when one does not succeed, the
//!   others' running jobs are stopped and marked `cancelled`, and the stage takes the
//!   status of the action that ended it.
//! - Jobs of an action run one after another, stopping at the first that does not succeed.
//! - A job's status comes from logarithmd's verdict, except when the engine stopped it
//!   (`timeout`, `cancelled`); its container is removed only once the verdict arrived (so
//!   logarithmd has stored its last line).
//! - A status that is not `success` propagates upwards: job → action → stage → run.
//! - Timeouts: job, stage (pause stages too) and flow; passing one stops what runs under
//!   it and marks it `timeout`.
//!
//! Times are nanoseconds since the Unix epoch, like storage's.
//!
//! Layout: this file holds the run's state (runs, stages, actions, jobs, events,
//! commands, summaries); `transitions` holds how events move it ([`Run::apply`] and the
//! rules above); `job_spec` builds a job's container spec ([`Run::job_spec`]).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::flow::{Flow, StageKind};
use crate::runner::JobSpec;

mod job_spec;
mod transitions;

/// Nanoseconds since the Unix epoch.
pub type Nanos = i64;

/// The environment variable a run's data goes into.
pub const CO_DATA: &str = "CO_DATA";

/// Status of a run, stage, action or job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Running,
    Success,
    Failure,
    Timeout,
    Cancelled,
    /// Not run: `active: false` on it or on its stage.
    Skipped,
}

impl Status {
    pub fn is_final(self) -> bool {
        !matches!(self, Status::Pending | Status::Running)
    }

    /// Ended without failing: what lets the next job, action or stage go on.
    pub fn is_ok(self) -> bool {
        matches!(self, Status::Success | Status::Skipped)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::Success => "success",
            Status::Failure => "failure",
            Status::Timeout => "timeout",
            Status::Cancelled => "cancelled",
            Status::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        [
            Status::Pending,
            Status::Running,
            Status::Success,
            Status::Failure,
            Status::Timeout,
            Status::Cancelled,
            Status::Skipped,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

/// Where a job is in its run: indexes of stage, action and job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JobKey {
    pub stage: usize,
    pub action: usize,
    pub job: usize,
}

/// A flow run, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// Random id (`io.containerops.run`).
    pub id: String,
    /// The flow's name (`io.containerops.flow`).
    pub flow_name: String,
    /// The flow as it was when the run started: later changes to the flow do not affect it.
    pub flow: Flow,
    /// The run's `CO_DATA`, when given at start; it replaces CO_DATA for every job.
    pub co_data: Option<String>,
    /// What started the run.
    #[serde(default)]
    pub cause: Cause,
    /// Environment values every job gets, above the flow's and the job's own (a webhook
    /// trigger's mapping).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    pub status: Status,
    pub reason: Option<String>,
    pub created_at: Nanos,
    pub started_at: Option<Nanos>,
    pub finished_at: Option<Nanos>,
    /// When the flow's timeout passes.
    pub deadline: Option<Nanos>,
    pub stages: Vec<StageRun>,
    /// The end of the run was announced (`flow.finished`); until then a restarted engine
    /// announces it again.
    #[serde(default)]
    pub announced: bool,
    /// The replica (engine) that drives the run; see [`crate::lease`]. `None` in runs
    /// stored before replicas had leases: the first engine to see them claims them.
    #[serde(default)]
    pub owner: Option<String>,
}

/// What started a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Cause {
    /// `POST /api/v1/flows/{name}/runs`.
    #[default]
    Manual,
    /// A `cron` trigger, for its tick at `tick` (nanoseconds).
    Cron { schedule: String, tick: Nanos },
    /// A `webhook` trigger, with the sender's delivery id (`X-GitHub-Delivery`,
    /// `webhook-id`) and event.
    Webhook {
        delivery: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event: Option<String>,
    },
}

impl Cause {
    pub fn kind(&self) -> &'static str {
        match self {
            Cause::Manual => "manual",
            Cause::Cron { .. } => "cron",
            Cause::Webhook { .. } => "webhook",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageRun {
    pub name: String,
    pub kind: StageKind,
    pub status: Status,
    pub reason: Option<String>,
    pub started_at: Option<Nanos>,
    pub finished_at: Option<Nanos>,
    pub deadline: Option<Nanos>,
    pub actions: Vec<ActionRun>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRun {
    pub name: String,
    pub status: Status,
    pub reason: Option<String>,
    pub started_at: Option<Nanos>,
    pub finished_at: Option<Nanos>,
    pub jobs: Vec<JobRun>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRun {
    pub name: String,
    pub status: Status,
    pub reason: Option<String>,
    pub started_at: Option<Nanos>,
    pub finished_at: Option<Nanos>,
    pub deadline: Option<Nanos>,
    /// Set once the runner started the container. A running job without one is starting.
    pub container_id: Option<String>,
    pub exit_code: Option<i64>,
    /// Outputs the job printed (`[COUT] KEY = VALUE`), as logarithmd parsed them.
    pub outputs: BTreeMap<String, String>,
    /// logarithmd's verdict arrived: every line of the container is stored.
    pub exited: bool,
    /// The container was removed.
    pub removed: bool,
    /// The verdict logarithmd decided, when the job's post script overrode it
    /// (`success: exit code 0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overridden: Option<String>,
}

/// Something that happened to a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Begin the run.
    Start,
    /// The runner started a job's container.
    Launched { job: JobKey, container_id: String },
    /// The runner could not start it.
    LaunchFailed { job: JobKey, error: String },
    /// The job's pre script failed it: no container was started.
    Refused { job: JobKey, reason: String },
    /// logarithmd's verdict on a job's container.
    Verdict(Verdict),
    /// The container was removed.
    Removed { job: JobKey },
    /// The paused stage may go on.
    Approve { by: Option<String> },
    /// The paused stage fails, and with it the run.
    Reject { reason: Option<String> },
    /// Stop the run.
    Cancel { reason: Option<String> },
    /// Time passed: check the deadlines.
    Tick,
}

/// logarithmd's verdict on one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub job: JobKey,
    pub container_id: String,
    pub success: bool,
    pub reason: String,
    pub exit_code: Option<i64>,
    pub outputs: BTreeMap<String, String>,
    pub finished_at: Option<Nanos>,
    /// logarithmd's verdict, when the job's post script replaced it.
    pub overridden: Option<String>,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Start the job's container, then report [`Event::Launched`] or [`Event::LaunchFailed`].
    StartJob { job: JobKey, spec: Box<JobSpec> },
    /// Stop the container (its verdict follows through logarithmd as usual).
    Stop { job: JobKey, container_id: String },
    /// Remove the container, then report [`Event::Removed`].
    Remove { job: JobKey, container_id: String },
    /// The run reached its final status: announce it (`flow.finished`).
    Finished,
}

/// One job of a finished run, for `flow.finished`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSummary {
    pub stage: String,
    pub action: String,
    pub job: String,
    pub status: Status,
    pub reason: Option<String>,
    pub exit_code: Option<i64>,
    pub container_id: Option<String>,
    pub started_at: Option<Nanos>,
    pub finished_at: Option<Nanos>,
}

/// A run's outcome with one line per job, for `flow.finished`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSummary {
    pub run: String,
    pub flow: String,
    pub status: Status,
    pub reason: Option<String>,
    pub started_at: Option<Nanos>,
    pub finished_at: Option<Nanos>,
    pub jobs: Vec<JobSummary>,
}

fn after(now: Nanos, d: Duration) -> Nanos {
    now.saturating_add(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

impl Run {
    /// Whether the run's state has the shape of its flow (one state per stage, action and
    /// job, in order). The state machine indexes the flow by those positions, so a run
    /// read back from storage is checked before it is driven.
    pub fn matches_flow(&self) -> bool {
        self.stages.len() == self.flow.stages.len()
            && self.stages.iter().zip(&self.flow.stages).all(|(sr, st)| {
                sr.actions.len() == st.actions.len()
                    && sr
                        .actions
                        .iter()
                        .zip(&st.actions)
                        .all(|(ar, a)| ar.jobs.len() == a.jobs.len())
            })
    }

    /// A pending run of `flow`; [`Event::Start`] begins it.
    pub fn new(id: String, flow: Flow, co_data: Option<String>, now: Nanos) -> Run {
        let stages = flow
            .stages
            .iter()
            .map(|s| StageRun {
                name: s.name.clone(),
                kind: s.kind,
                status: Status::Pending,
                reason: None,
                started_at: None,
                finished_at: None,
                deadline: None,
                actions: s
                    .actions
                    .iter()
                    .map(|a| ActionRun {
                        name: a.name.clone(),
                        status: Status::Pending,
                        reason: None,
                        started_at: None,
                        finished_at: None,
                        jobs: a
                            .jobs
                            .iter()
                            .map(|j| JobRun {
                                name: j.name.clone(),
                                status: Status::Pending,
                                reason: None,
                                started_at: None,
                                finished_at: None,
                                deadline: None,
                                container_id: None,
                                exit_code: None,
                                outputs: BTreeMap::new(),
                                exited: false,
                                removed: false,
                                overridden: None,
                            })
                            .collect(),
                    })
                    .collect(),
            })
            .collect();
        Run {
            id,
            flow_name: flow.name(),
            flow,
            co_data,
            cause: Cause::Manual,
            env: BTreeMap::new(),
            status: Status::Pending,
            reason: None,
            created_at: now,
            started_at: None,
            finished_at: None,
            deadline: None,
            stages,
            announced: false,
            owner: None,
        }
    }

    pub fn job(&self, k: JobKey) -> Option<&JobRun> {
        self.stages
            .get(k.stage)?
            .actions
            .get(k.action)?
            .jobs
            .get(k.job)
    }

    fn job_mut(&mut self, k: JobKey) -> Result<&mut JobRun> {
        self.stages
            .get_mut(k.stage)
            .and_then(|s| s.actions.get_mut(k.action))
            .and_then(|a| a.jobs.get_mut(k.job))
            .ok_or_else(|| Error::not_found(format!("run {} has no job {k:?}", self.id)))
    }

    /// The job with these names.
    pub fn key_of(&self, stage: &str, action: &str, job: &str) -> Option<JobKey> {
        let si = self.stages.iter().position(|s| s.name == stage)?;
        let ai = self.stages[si]
            .actions
            .iter()
            .position(|a| a.name == action)?;
        let ji = self.stages[si].actions[ai]
            .jobs
            .iter()
            .position(|j| j.name == job)?;
        Some(JobKey {
            stage: si,
            action: ai,
            job: ji,
        })
    }

    /// Every job, with its key.
    pub fn jobs(&self) -> impl Iterator<Item = (JobKey, &JobRun)> {
        self.stages.iter().enumerate().flat_map(|(si, s)| {
            s.actions.iter().enumerate().flat_map(move |(ai, a)| {
                a.jobs.iter().enumerate().map(move |(ji, j)| {
                    (
                        JobKey {
                            stage: si,
                            action: ai,
                            job: ji,
                        },
                        j,
                    )
                })
            })
        })
    }

    /// Whether the driver still has work for this run: it is not over, a container of it
    /// is still starting or waits for its verdict or its removal, or its end is not
    /// announced yet.
    pub fn is_active(&self) -> bool {
        !self.status.is_final()
            || self
                .jobs()
                .any(|(_, j)| j.started_at.is_some() && !j.removed)
            || !self.announced
    }

    /// The earliest deadline still ahead of the run, for the driver's timer.
    pub fn next_deadline(&self) -> Option<Nanos> {
        if self.status != Status::Running {
            return None;
        }
        let mut min = self.deadline;
        let mut consider = |d: Option<Nanos>| {
            if let Some(d) = d {
                min = Some(min.map_or(d, |m: Nanos| m.min(d)));
            }
        };
        for s in &self.stages {
            if s.status == Status::Running {
                consider(s.deadline);
                for a in &s.actions {
                    for j in &a.jobs {
                        if j.status == Status::Running {
                            consider(j.deadline);
                        }
                    }
                }
            }
        }
        min
    }

    /// The run's outcome, one line per job.
    pub fn summary(&self) -> RunSummary {
        RunSummary {
            run: self.id.clone(),
            flow: self.flow_name.clone(),
            status: self.status,
            reason: self.reason.clone(),
            started_at: self.started_at,
            finished_at: self.finished_at,
            jobs: self
                .jobs()
                .map(|(k, j)| JobSummary {
                    stage: self.stages[k.stage].name.clone(),
                    action: self.stages[k.stage].actions[k.action].name.clone(),
                    job: j.name.clone(),
                    status: j.status,
                    reason: j.reason.clone(),
                    exit_code: j.exit_code,
                    container_id: j.container_id.clone(),
                    started_at: j.started_at,
                    finished_at: j.finished_at,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_job_model;
