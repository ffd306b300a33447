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

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::flow::{env_map, Flow, StageKind};
use crate::runner::JobSpec;

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

    /// Applies one event at time `now`; returns what the driver must do. An error means
    /// the event does not fit the run's state (approving a run that is not paused) and
    /// nothing changed.
    pub fn apply(&mut self, event: Event, now: Nanos) -> Result<Vec<Command>> {
        let mut cmds = Vec::new();
        match event {
            Event::Start => {
                if self.status != Status::Pending {
                    return Err(Error::conflict(format!("run {} already started", self.id)));
                }
                self.status = Status::Running;
                self.started_at = Some(now);
                self.deadline = self.flow.timeout.map(|t| after(now, t.0));
            }
            Event::Launched { job, container_id } => {
                let j = self.job_mut(job)?;
                j.container_id = Some(container_id.clone());
                if j.status.is_final() && !j.exited {
                    // Stopped while it was starting.
                    cmds.push(Command::Stop { job, container_id });
                }
            }
            Event::LaunchFailed { job, error } => {
                let j = self.job_mut(job)?;
                // No container: nothing to stop or remove.
                j.removed = true;
                if j.status == Status::Running {
                    j.status = Status::Failure;
                    j.reason = Some(format!("could not start: {error}"));
                    j.finished_at = Some(now);
                }
            }
            Event::Refused { job, reason } => {
                let j = self.job_mut(job)?;
                j.removed = true;
                if j.status == Status::Running {
                    j.status = Status::Failure;
                    j.reason = Some(reason);
                    j.finished_at = Some(now);
                }
            }
            Event::Verdict(v) => self.verdict(v, now, &mut cmds)?,
            Event::Removed { job } => self.job_mut(job)?.removed = true,
            Event::Approve { by } => {
                let si = self.paused_stage()?;
                let s = &mut self.stages[si];
                s.status = Status::Success;
                s.reason = Some(match by {
                    Some(by) => format!("approved by {by}"),
                    None => "approved".into(),
                });
                s.finished_at = Some(now);
            }
            Event::Reject { reason } => {
                let si = self.paused_stage()?;
                let s = &mut self.stages[si];
                s.status = Status::Failure;
                s.reason = Some(match reason {
                    Some(r) => format!("rejected: {r}"),
                    None => "rejected".into(),
                });
                s.finished_at = Some(now);
            }
            Event::Cancel { reason } => {
                if self.status.is_final() {
                    return Err(Error::conflict(format!(
                        "run {} is already {}",
                        self.id,
                        self.status.as_str()
                    )));
                }
                let reason = match reason {
                    Some(r) => format!("cancelled: {r}"),
                    None => "cancelled".into(),
                };
                self.finish(Status::Cancelled, reason, now, &mut cmds);
            }
            Event::Tick => self.tick(now, &mut cmds),
        }
        self.advance(now, &mut cmds);
        Ok(cmds)
    }

    fn paused_stage(&self) -> Result<usize> {
        self.stages
            .iter()
            .position(|s| s.kind == StageKind::Pause && s.status == Status::Running)
            .filter(|_| self.status == Status::Running)
            .ok_or_else(|| Error::conflict(format!("run {} is not paused", self.id)))
    }

    fn verdict(&mut self, v: Verdict, now: Nanos, cmds: &mut Vec<Command>) -> Result<()> {
        let j = self.job_mut(v.job)?;
        match &j.container_id {
            // A verdict on another container of the same job (one started before a
            // crash and replaced) says nothing about this one.
            Some(c) if *c != v.container_id => return Ok(()),
            _ => {}
        }
        if j.exited {
            return Ok(());
        }
        j.container_id = Some(v.container_id.clone());
        j.exited = true;
        j.exit_code = v.exit_code;
        j.outputs.extend(v.outputs);
        j.overridden = v.overridden;
        if j.status == Status::Running {
            j.status = if v.success {
                Status::Success
            } else {
                Status::Failure
            };
            j.reason = Some(v.reason);
            j.finished_at = Some(v.finished_at.unwrap_or(now));
        }
        if !j.removed {
            cmds.push(Command::Remove {
                job: v.job,
                container_id: v.container_id,
            });
        }
        Ok(())
    }

    fn tick(&mut self, now: Nanos, cmds: &mut Vec<Command>) {
        if self.status != Status::Running {
            return;
        }
        if self.deadline.is_some_and(|d| d <= now) {
            let t = self.flow.timeout.map(|t| t.0).unwrap_or_default();
            let reason = format!("flow timed out after {}", fmt_duration(t));
            self.finish(Status::Timeout, reason, now, cmds);
            return;
        }
        for si in 0..self.stages.len() {
            if self.stages[si].status != Status::Running {
                continue;
            }
            if self.stages[si].deadline.is_some_and(|d| d <= now) {
                let t = self.flow.stages[si]
                    .timeout
                    .map(|t| t.0)
                    .unwrap_or_default();
                let reason = format!("stage timed out after {}", fmt_duration(t));
                self.end_stage(si, Status::Timeout, reason, now, cmds);
                continue;
            }
            for ai in 0..self.stages[si].actions.len() {
                for ji in 0..self.stages[si].actions[ai].jobs.len() {
                    let key = JobKey {
                        stage: si,
                        action: ai,
                        job: ji,
                    };
                    let j = &self.stages[si].actions[ai].jobs[ji];
                    if j.status == Status::Running && j.deadline.is_some_and(|d| d <= now) {
                        let t = self
                            .flow
                            .job(si, ai, ji)
                            .and_then(|j| j.timeout)
                            .map(|t| t.0)
                            .unwrap_or_default();
                        let reason = format!("job timed out after {}", fmt_duration(t));
                        self.stop_job(key, Status::Timeout, reason, now, cmds);
                    }
                }
            }
        }
    }

    /// Ends the run: what still runs is stopped and takes the run's status.
    fn finish(&mut self, status: Status, reason: String, now: Nanos, cmds: &mut Vec<Command>) {
        for si in 0..self.stages.len() {
            if self.stages[si].status == Status::Running {
                self.end_stage(si, status, reason.clone(), now, cmds);
            }
        }
        self.status = status;
        self.reason = Some(reason);
        self.finished_at = Some(now);
        cmds.push(Command::Finished);
    }

    /// Ends a running stage with `status`, stopping its running actions.
    fn end_stage(
        &mut self,
        si: usize,
        status: Status,
        reason: String,
        now: Nanos,
        cmds: &mut Vec<Command>,
    ) {
        for ai in 0..self.stages[si].actions.len() {
            if self.stages[si].actions[ai].status == Status::Running {
                self.end_action(si, ai, status, reason.clone(), now, cmds);
            }
        }
        let s = &mut self.stages[si];
        s.status = status;
        s.reason = Some(reason);
        s.finished_at = Some(now);
    }

    fn end_action(
        &mut self,
        si: usize,
        ai: usize,
        status: Status,
        reason: String,
        now: Nanos,
        cmds: &mut Vec<Command>,
    ) {
        for ji in 0..self.stages[si].actions[ai].jobs.len() {
            let key = JobKey {
                stage: si,
                action: ai,
                job: ji,
            };
            if self.stages[si].actions[ai].jobs[ji].status == Status::Running {
                self.stop_job(key, status, reason.clone(), now, cmds);
            }
        }
        let a = &mut self.stages[si].actions[ai];
        a.status = status;
        a.reason = Some(reason);
        a.finished_at = Some(now);
    }

    /// Marks a running job `status` and stops its container (if it has one yet; one that
    /// is still starting is stopped when [`Event::Launched`] arrives).
    fn stop_job(
        &mut self,
        key: JobKey,
        status: Status,
        reason: String,
        now: Nanos,
        cmds: &mut Vec<Command>,
    ) {
        let Ok(j) = self.job_mut(key) else { return };
        j.status = status;
        j.reason = Some(reason);
        j.finished_at = Some(now);
        if let (Some(c), false) = (&j.container_id, j.exited) {
            cmds.push(Command::Stop {
                job: key,
                container_id: c.clone(),
            });
        }
    }

    /// Moves the run forward as far as it can go without waiting.
    fn advance(&mut self, now: Nanos, cmds: &mut Vec<Command>) {
        if self.status != Status::Running {
            return;
        }
        loop {
            // A stage that did not succeed (a rejected pause, a timeout, a failed action)
            // ends the run with its status.
            let ended = self
                .stages
                .iter()
                .find(|s| s.status.is_final() && !s.status.is_ok())
                .map(|s| {
                    let why = s.reason.clone().unwrap_or_default();
                    (s.status, format!("stage {}: {why}", s.name))
                });
            if let Some((status, reason)) = ended {
                self.finish(status, reason, now, cmds);
                return;
            }
            let Some(si) = self.stages.iter().position(|s| !s.status.is_final()) else {
                self.finish(Status::Success, "every stage succeeded".into(), now, cmds);
                return;
            };
            if self.stages[si].status == Status::Pending {
                let timeout = self.flow.stages[si].timeout;
                let s = &mut self.stages[si];
                s.status = Status::Running;
                s.started_at = Some(now);
                s.deadline = timeout.map(|t| after(now, t.0));
                if !self.flow.stages[si].is_active() {
                    s.skip("inactive (active: false)", now);
                    continue;
                }
                if matches!(s.kind, StageKind::Start | StageKind::End) {
                    s.status = Status::Success;
                    s.finished_at = Some(now);
                    continue;
                }
            }
            match self.stages[si].kind {
                StageKind::Start | StageKind::End => continue,
                StageKind::Pause => return,
                StageKind::Normal => {
                    self.advance_stage(si, now, cmds);
                    if self.stages[si].status.is_final() {
                        continue;
                    }
                    return;
                }
            }
        }
    }

    fn advance_stage(&mut self, si: usize, now: Nanos, cmds: &mut Vec<Command>) {
        let parallel = self.flow.stages[si].sequencing() == crate::flow::Sequencing::Parallel;
        for ai in 0..self.stages[si].actions.len() {
            if self.stages[si].actions[ai].status.is_final() {
                if self.stages[si].actions[ai].status.is_ok() {
                    continue;
                }
                break;
            }
            self.advance_action(si, ai, now, cmds);
            if !parallel && !self.stages[si].actions[ai].status.is_ok() {
                break;
            }
        }
        // The first action that did not succeed ends the stage.
        let failed = self.stages[si]
            .actions
            .iter()
            .find(|a| a.status.is_final() && !a.status.is_ok())
            .map(|a| {
                (
                    a.name.clone(),
                    a.status,
                    a.reason.clone().unwrap_or_default(),
                )
            });
        if let Some((name, status, reason)) = failed {
            let stop = format!("stopped: action {name} ended with {}", status.as_str());
            for ai in 0..self.stages[si].actions.len() {
                if self.stages[si].actions[ai].status == Status::Running {
                    self.end_action(si, ai, Status::Cancelled, stop.clone(), now, cmds);
                }
            }
            for a in &mut self.stages[si].actions {
                if a.status == Status::Pending {
                    a.reason = Some(format!("not started: action {name} did not succeed"));
                }
            }
            let s = &mut self.stages[si];
            s.status = status;
            s.reason = Some(format!("action {name}: {reason}"));
            s.finished_at = Some(now);
        } else if self.stages[si].actions.iter().all(|a| a.status.is_ok()) {
            let s = &mut self.stages[si];
            s.status = Status::Success;
            s.finished_at = Some(now);
        }
    }

    fn advance_action(&mut self, si: usize, ai: usize, now: Nanos, cmds: &mut Vec<Command>) {
        {
            let a = &mut self.stages[si].actions[ai];
            if a.status == Status::Pending {
                a.status = Status::Running;
                a.started_at = Some(now);
            }
        }
        loop {
            let a = &self.stages[si].actions[ai];
            let Some(ji) = a.jobs.iter().position(|j| !j.status.is_ok()) else {
                let a = &mut self.stages[si].actions[ai];
                a.status = Status::Success;
                a.finished_at = Some(now);
                return;
            };
            let key = JobKey {
                stage: si,
                action: ai,
                job: ji,
            };
            match a.jobs[ji].status {
                Status::Pending => self.start_job(key, now, cmds),
                Status::Running => return,
                status => {
                    let name = a.jobs[ji].name.clone();
                    let reason = a.jobs[ji].reason.clone().unwrap_or_default();
                    let a = &mut self.stages[si].actions[ai];
                    for j in a.jobs.iter_mut().filter(|j| j.status == Status::Pending) {
                        j.reason = Some(format!("not started: job {name} did not succeed"));
                    }
                    a.status = status;
                    a.reason = Some(format!("job {name}: {reason}"));
                    a.finished_at = Some(now);
                    return;
                }
            }
        }
    }

    fn start_job(&mut self, key: JobKey, now: Nanos, cmds: &mut Vec<Command>) {
        let flow_job = self.flow.job(key.stage, key.action, key.job);
        let timeout = flow_job.and_then(|j| j.timeout);
        if flow_job.is_some_and(|j| !j.is_active()) {
            if let Ok(j) = self.job_mut(key) {
                j.skip("inactive (active: false)", now);
            }
            return;
        }
        let spec = self.job_spec(key);
        let Ok(j) = self.job_mut(key) else { return };
        j.status = Status::Running;
        j.started_at = Some(now);
        match spec {
            Ok(spec) => {
                j.deadline = timeout.map(|t| after(now, t.0));
                cmds.push(Command::StartJob {
                    job: key,
                    spec: Box::new(spec),
                });
            }
            Err(reason) => {
                j.status = Status::Failure;
                j.reason = Some(reason);
                j.finished_at = Some(now);
                j.removed = true;
            }
        }
    }

    /// The job's container: image, labels, limits, and its environment, merged from low
    /// to high precedence: flow `environments`, job `environments`, subscriptions, and the
    /// run's CO_DATA. A subscribed output the upstream job did not print is an error (the
    /// job fails without starting).
    pub fn job_spec(&self, key: JobKey) -> Result<JobSpec, String> {
        let flow_job = self
            .flow
            .job(key.stage, key.action, key.job)
            .ok_or_else(|| format!("no job {key:?} in the flow"))?;
        let stage = &self.stages[key.stage];
        let action = &stage.actions[key.action];
        let mut env = env_map(&self.flow.environments);
        env.extend(env_map(&flow_job.environments));
        env.extend(self.env.clone());
        let mut subscribed = BTreeMap::new();
        for sub in flow_job.parsed_subscriptions() {
            let upstream = self
                .key_of(&sub.stage, &sub.action, &sub.job)
                .and_then(|k| self.job(k));
            match upstream.and_then(|j| j.outputs.get(&sub.key)) {
                Some(v) => {
                    env.insert(sub.env.clone(), v.clone());
                    subscribed.insert(sub.source(), v.clone());
                }
                None if upstream.is_some_and(|j| j.status == Status::Skipped) => {
                    return Err(format!(
                        "subscription {}: the upstream job was skipped",
                        sub.source()
                    ))
                }
                None => {
                    return Err(format!(
                        "subscription {}: the upstream job printed no {}",
                        sub.source(),
                        sub.key
                    ))
                }
            }
        }
        if let Some(d) = &self.co_data {
            env.insert(CO_DATA.to_owned(), d.clone());
        }
        let job = &action.jobs[key.job];
        let flow_stage = &self.flow.stages[key.stage];
        let mut labels =
            crate::flow::labels::merge([&self.flow.labels, &flow_stage.labels, &flow_job.labels]);
        labels.extend([
            (protocol::LABEL_FLOW.to_owned(), self.flow_name.clone()),
            (protocol::LABEL_RUN.to_owned(), self.id.clone()),
            (protocol::LABEL_STAGE.to_owned(), stage.name.clone()),
            (protocol::LABEL_ACTION.to_owned(), action.name.clone()),
            (protocol::LABEL_JOB.to_owned(), job.name.clone()),
        ]);
        Ok(JobSpec {
            flow: self.flow_name.clone(),
            run: self.id.clone(),
            stage: stage.name.clone(),
            action: action.name.clone(),
            job: job.name.clone(),
            name: format!("co-{}-{}-{}-{}", self.id, stage.name, action.name, job.name),
            kind: flow_job.kind,
            image: flow_job.endpoint.clone(),
            command: flow_job.command.clone(),
            env,
            labels,
            cpu: flow_job.resources.and_then(|r| r.cpu),
            memory: flow_job.resources.and_then(|r| r.memory),
            timeout: flow_job.timeout.map(|t| t.0),
            subscribed,
            secret: flow_job.secret.clone(),
        })
    }
}

impl StageRun {
    /// Marks the stage and everything in it `skipped`.
    fn skip(&mut self, reason: &str, now: Nanos) {
        self.status = Status::Skipped;
        self.reason = Some(reason.to_owned());
        self.finished_at = Some(now);
        for a in &mut self.actions {
            a.status = Status::Skipped;
            a.reason = Some(format!("stage {reason}"));
            for j in &mut a.jobs {
                j.skip(&format!("stage {reason}"), now);
            }
        }
    }
}

impl JobRun {
    /// Marks a job that never started `skipped` (it has no container to wait for).
    fn skip(&mut self, reason: &str, now: Nanos) {
        self.status = Status::Skipped;
        self.reason = Some(reason.to_owned());
        self.finished_at = Some(now);
        self.removed = true;
    }
}

fn fmt_duration(d: Duration) -> String {
    humantime_serde::re::humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_job_model;
