//! Reconciliation: bringing every active run in line with the runner and the verdicts
//! committed so far (on start, periodically, and after missed notices).

use super::{now, save, Driver, SaveOutcome};
use crate::run::{Command, Event, Status};
use crate::runner::ContainerState;

impl Driver {
    /// Brings every active run in line with the runner and the verdicts committed so far.
    /// `resume`: the engine just started, so jobs saved as starting are started again.
    pub(super) async fn reconcile(&mut self, resume: bool) {
        let ids: Vec<String> = self.runs.keys().cloned().collect();
        for id in ids {
            self.reconcile_run(&id, resume).await;
        }
    }

    /// [`Driver::reconcile`] for one run.
    pub(super) async fn reconcile_run(&mut self, id: &str, resume: bool) {
        let id = id.to_owned();
        {
            let Some(slot) = self.runs.get_mut(&id) else {
                return;
            };
            if slot.dirty
                && save(&*self.store, slot, &self.config.replica).await == SaveOutcome::Lost
            {
                self.runs.remove(&id);
                return;
            }
            let run = slot.run.clone();
            let mut cmds = Vec::new();
            let mut verdicts = Vec::new();
            let mut orphans = Vec::new();
            for (key, job) in run.jobs() {
                match &job.container_id {
                    // Stopped while starting, and the engine went down before the start
                    // reported back: look for the container by its labels.
                    None if resume
                        && job.status.is_final()
                        && job.started_at.is_some()
                        && !job.removed =>
                    {
                        orphans.push(key);
                    }
                    None if job.status == Status::Running && resume => {
                        if let Ok(spec) = run.job_spec(key) {
                            cmds.push(Command::StartJob {
                                job: key,
                                spec: Box::new(spec),
                            });
                        }
                    }
                    Some(c) if !job.exited => {
                        let state = match self.runner.state(c).await {
                            Ok(s) => s,
                            Err(e) => {
                                tracing::warn!(container_id = %c, error = %e, "cannot check job container");
                                continue;
                            }
                        };
                        if state == ContainerState::Running {
                            if job.status.is_final() {
                                // Stopped by us, but still running: stop again.
                                cmds.push(Command::Stop {
                                    job: key,
                                    container_id: c.clone(),
                                });
                            }
                            continue;
                        }
                        match self.results.lookup(c).await {
                            Ok(Some(r)) => verdicts.push(r),
                            Ok(None) => {
                                tracing::debug!(container_id = %c, "job container exited; waiting for its verdict")
                            }
                            Err(e) => {
                                tracing::warn!(container_id = %c, error = %e, "cannot look up a job verdict")
                            }
                        }
                    }
                    Some(c) if !job.removed => cmds.push(Command::Remove {
                        job: key,
                        container_id: c.clone(),
                    }),
                    _ => {}
                }
            }
            if !orphans.is_empty() {
                self.adopt(&run, orphans).await;
            }
            self.execute(&id, cmds);
            for v in verdicts {
                self.result(v).await;
            }
            // Deadlines that passed while the engine was down.
            if run.next_deadline().is_some_and(|d| d <= now()) {
                let _ = self.apply(&id, Event::Tick).await;
            }
            if let Some(slot) = self.runs.get(&id) {
                if slot.run.status.is_final() && !slot.run.announced {
                    self.announce(&id);
                }
            }
            self.retire(&id);
        }
    }
}
