//! How events move a run: [`Run::apply`] and the stage, action and job transitions it
//! makes (the rules in the parent module's docs).

use super::*;

impl Run {
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
