//! What comes back to the driver: reports of its spawned tasks ([`Internal`]) and
//! logarithmd's verdicts (through a job's post script when it has one).

use super::{hooks, save, Driver, Internal, SaveOutcome};
use crate::results::JobResult;
use crate::run::{Event, Verdict};

impl Driver {
    pub(super) async fn internal(&mut self, msg: Internal) {
        match msg {
            Internal::Event { run, event } => {
                match &event {
                    Event::Launched { job, .. }
                    | Event::LaunchFailed { job, .. }
                    | Event::Refused { job, .. } => {
                        self.starting.remove(&(run.clone(), *job));
                    }
                    Event::Verdict(v) => {
                        self.posting.remove(&(run.clone(), v.job));
                    }
                    Event::Removed { job } => {
                        self.removing.remove(&(run.clone(), *job));
                    }
                    Event::Tick => {
                        // A failed removal: let reconciliation try again.
                        self.removing.retain(|(r, _)| *r != run);
                        return;
                    }
                    _ => {}
                }
                if let Err(e) = self.apply(&run, event).await {
                    tracing::warn!(run = %run, error = %e, "runner report not applied");
                }
            }
            Internal::StopDone { container_id } => {
                self.stopping.remove(&container_id);
            }
            Internal::Announced { run } => {
                self.announcing.remove(&run);
                if let Some(slot) = self.runs.get_mut(&run) {
                    slot.run.announced = true;
                    if save(&*self.store, slot, &self.config.replica).await == SaveOutcome::Lost {
                        self.runs.remove(&run);
                    }
                }
                self.retire(&run);
            }
            Internal::AnnounceFailed { run } => {
                self.announcing.remove(&run);
            }
        }
    }

    pub(super) async fn result(&mut self, r: JobResult) {
        let Some(slot) = self.runs.get(&r.run) else {
            return;
        };
        let Some(job) = slot.run.key_of(&r.stage, &r.action, &r.job) else {
            tracing::warn!(run = %r.run, stage = %r.stage, action = %r.action, job = %r.job, "verdict for a job the run does not have");
            return;
        };
        let run = r.run.clone();
        if let Some(post) = hooks::post_task(&slot.run, job, &r, self.config.scripts) {
            if !self.posting.insert((run.clone(), job)) {
                return;
            }
            let log = match self
                .results
                .log_tail(&r.container_id, post.log_lines())
                .await
            {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(run = %run, container_id = %r.container_id, error = %e, "cannot read the log tail for a post script");
                    Vec::new()
                }
            };
            let tx = self.internal_tx.clone();
            tokio::spawn(async move {
                let event = Event::Verdict(post.run(job, r, log).await);
                let _ = tx.send(Internal::Event { run, event }).await;
            });
            return;
        }
        let event = Event::Verdict(Verdict {
            job,
            container_id: r.container_id,
            success: r.success,
            reason: r.reason,
            exit_code: r.exit_code,
            outputs: r.outputs,
            finished_at: r.finished_at,
            overridden: None,
        });
        if let Err(e) = self.apply(&run, event).await {
            tracing::warn!(run = %run, error = %e, "verdict not applied");
        }
    }
}
