//! Carrying out the commands the state machine returns: each runner call (start with its
//! pre script, stop, remove) and each end-of-run announcement runs in a spawned task that
//! reports back to the driver through [`Internal`].

use super::{hooks, Driver, Internal};
use crate::run::{Command, Event};

impl Driver {
    pub(super) fn execute(&mut self, id: &str, cmds: Vec<Command>) {
        for cmd in cmds {
            match cmd {
                Command::StartJob { job, mut spec } => {
                    if !self.starting.insert((id.to_owned(), job)) {
                        continue;
                    }
                    let pre = self
                        .runs
                        .get(id)
                        .and_then(|slot| hooks::pre_task(&slot.run, job, self.config.scripts));
                    let runner = self.runner.clone();
                    let tx = self.internal_tx.clone();
                    let run = id.to_owned();
                    tokio::spawn(async move {
                        if let Some(pre) = pre {
                            match pre.run(spec.env.clone()).await {
                                Ok(env) => spec.env = env,
                                Err(reason) => {
                                    tracing::info!(run = %run, job = %spec.name, reason = %reason, "pre script failed the job");
                                    let event = Event::Refused { job, reason };
                                    let _ = tx.send(Internal::Event { run, event }).await;
                                    return;
                                }
                            }
                        }
                        let event = match runner.start(&spec).await {
                            Ok(container_id) => {
                                tracing::info!(run = %run, job = %spec.name, container_id = %container_id, "job started");
                                Event::Launched { job, container_id }
                            }
                            Err(e) => {
                                tracing::warn!(run = %run, job = %spec.name, error = %e, "job could not start");
                                Event::LaunchFailed {
                                    job,
                                    error: e.to_string(),
                                }
                            }
                        };
                        let _ = tx.send(Internal::Event { run, event }).await;
                    });
                }
                Command::Stop { container_id, .. } => {
                    if !self.stopping.insert(container_id.clone()) {
                        continue;
                    }
                    let runner = self.runner.clone();
                    let grace = self.config.stop_grace;
                    let tx = self.internal_tx.clone();
                    tokio::spawn(async move {
                        if let Err(e) = runner.stop(&container_id, grace).await {
                            tracing::warn!(container_id = %container_id, error = %e, "cannot stop job container; will retry");
                        }
                        let _ = tx.send(Internal::StopDone { container_id }).await;
                    });
                }
                Command::Remove { job, container_id } => {
                    if !self.removing.insert((id.to_owned(), job)) {
                        continue;
                    }
                    let runner = self.runner.clone();
                    let tx = self.internal_tx.clone();
                    let run = id.to_owned();
                    tokio::spawn(async move {
                        match runner.remove(&container_id).await {
                            Ok(()) => {
                                let _ = tx
                                    .send(Internal::Event {
                                        run,
                                        event: Event::Removed { job },
                                    })
                                    .await;
                            }
                            Err(e) => {
                                tracing::warn!(container_id = %container_id, error = %e, "cannot remove job container; will retry");
                                let _ = tx
                                    .send(Internal::Event {
                                        run,
                                        event: Event::Tick,
                                    })
                                    .await;
                            }
                        }
                    });
                }
                Command::Finished => self.announce(id),
            }
        }
    }

    pub(super) fn announce(&mut self, id: &str) {
        let Some(slot) = self.runs.get(id) else {
            return;
        };
        if !self.announcing.insert(id.to_owned()) {
            return;
        }
        let summary = slot.run.summary();
        let events = self.events.clone();
        let tx = self.internal_tx.clone();
        let run = id.to_owned();
        tokio::spawn(async move {
            match events.run_finished(&summary).await {
                Ok(()) => {
                    let _ = tx.send(Internal::Announced { run }).await;
                }
                Err(e) => {
                    tracing::warn!(run = %run, error = %e, "cannot announce the end of the run; will retry");
                    let _ = tx.send(Internal::AnnounceFailed { run }).await;
                }
            }
        });
    }
}
