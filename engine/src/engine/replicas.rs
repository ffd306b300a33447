//! The driver's side of replicas ([`crate::lease`]): heartbeats, the takeover of runs a
//! dead replica owned, claiming a run a request names, and adopting the containers of jobs
//! that were being started when their owner stopped.

use super::*;

/// Leases: heartbeats, takeover of dead replicas' runs, claims on request.
impl Driver {
    /// Lists the heartbeats into [`Liveness`].
    pub(super) async fn observe(&mut self) {
        match self.store.heartbeats().await {
            Ok(beats) => self.liveness.observe(&beats, Instant::now()),
            Err(e) => tracing::warn!(error = %e, "cannot read the replicas' heartbeats"),
        }
    }

    /// Beats, retires replicas found dead, and takes over their runs.
    pub(super) async fn lease_tick(&mut self) {
        match self.store.beat(&self.config.replica, self.beat).await {
            Ok(v) => self.beat = v,
            Err(e) if e.kind() == ErrorKind::Conflict => {
                // Found dead by another replica (this one stalled past its lease): its runs
                // may be driven elsewhere already. Start over under a new id.
                let old = std::mem::replace(&mut self.config.replica, lease::replica_id());
                tracing::warn!(replica = %old, new_replica = %self.config.replica, dropped = self.runs.len(), "this replica's lease was retired by another; dropping its runs and registering again");
                self.runs.clear();
                self.starting.clear();
                self.removing.clear();
                self.announcing.clear();
                match self.store.beat(&self.config.replica, 0).await {
                    Ok(v) => self.beat = v,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot register this replica again");
                        self.beat = 0;
                        return;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot renew this replica's heartbeat");
                if self.beat == 0 {
                    return;
                }
            }
        }
        self.observe().await;
        let dead: Vec<(String, u64)> = self
            .liveness
            .dead(Instant::now())
            .into_iter()
            .filter(|(r, _)| *r != self.config.replica)
            .collect();
        for (replica, version) in &dead {
            tracing::warn!(replica = %replica, "replica's heartbeat stood still for the lease ttl: taking over its runs");
            if let Err(e) = self.store.retire(replica, *version).await {
                tracing::warn!(replica = %replica, error = %e, "cannot retire a dead replica's heartbeat");
            }
        }
        if !dead.is_empty() {
            // One that beat at the last moment shows up alive again.
            self.observe().await;
        }
        self.claim_orphans().await;
    }

    /// Claims the stored active runs that no live replica drives.
    pub(super) async fn claim_orphans(&mut self) {
        let active = match self.store.active_runs().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list active runs for takeover");
                return;
            }
        };
        let t = Instant::now();
        for (run, version) in active {
            if self.runs.contains_key(&run.id) {
                continue;
            }
            let orphan = match run.owner.as_deref() {
                None => true,
                Some(o) if o == self.config.replica => true,
                Some(o) => !self.liveness.is_live(o, t),
            };
            if orphan {
                self.claim(run, version).await;
            }
        }
    }

    /// Makes this replica the run's owner (compare-and-set) and reconciles it as after a
    /// restart. `false` when another replica changed the run first.
    pub(super) async fn claim(&mut self, mut run: Run, version: u64) -> bool {
        let from = run.owner.take();
        run.owner = Some(self.config.replica.clone());
        match self.store.put_run(&run, version).await {
            Ok(v) => {
                tracing::info!(run = %run.id, flow = %run.flow_name, status = run.status.as_str(), from = from.as_deref().unwrap_or("-"), "resuming flow run");
                let id = run.id.clone();
                self.runs.insert(id.clone(), Slot::new(run, v));
                self.reconcile_run(&id, true).await;
                true
            }
            Err(e) if e.kind() == ErrorKind::Conflict => {
                tracing::debug!(run = %run.id, "flow run claimed or changed by another replica first");
                false
            }
            Err(e) => {
                tracing::warn!(run = %run.id, error = %e, "cannot claim flow run");
                false
            }
        }
    }

    /// A request for a run this replica does not drive: claim it, then apply.
    pub(super) async fn claim_for_request(&mut self, id: &str, event: Event) -> Result<Run> {
        let (run, version) = self
            .store
            .get_run(id)
            .await?
            .ok_or_else(|| Error::not_found(format!("no run {id}")))?;
        if run.status.is_final() || !run.is_active() {
            return Err(Error::conflict(format!(
                "run {id} is already {}",
                run.status.as_str()
            )));
        }
        if !self.claim(run, version).await {
            return Err(Error::conflict(format!(
                "run {id} changed on another replica meanwhile; try again"
            )));
        }
        // The claim's reconciliation may have ended or retired it.
        if !self.runs.contains_key(id) {
            return Err(Error::conflict(format!("run {id} has ended")));
        }
        self.apply(id, event).await
    }
}

impl Driver {
    /// Jobs of `run` that were being started when the engine stopped, and were ended
    /// meanwhile: attach their containers (which the state machine then stops), or mark
    /// them as having none.
    pub(super) async fn adopt(&mut self, run: &Run, jobs: Vec<JobKey>) {
        let found = match self.runner.find_run(&run.id).await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(run = %run.id, error = %e, "cannot look for the run's containers");
                return;
            }
        };
        for key in jobs {
            let stage = &run.stages[key.stage];
            let action = &stage.actions[key.action];
            let job = &action.jobs[key.job];
            let container = found.iter().find(|f| {
                let l = |k: &str| f.labels.get(k).map(String::as_str);
                l(protocol::LABEL_STAGE) == Some(&stage.name)
                    && l(protocol::LABEL_ACTION) == Some(&action.name)
                    && l(protocol::LABEL_JOB) == Some(&job.name)
            });
            let event = match container {
                Some(f) => Event::Launched {
                    job: key,
                    container_id: f.container_id.clone(),
                },
                None => Event::Removed { job: key },
            };
            if let Err(e) = self.apply(&run.id, event).await {
                tracing::warn!(run = %run.id, error = %e, "cannot adopt a job's container");
            }
        }
    }
}
