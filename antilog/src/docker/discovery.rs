//! Finds containers and keeps one follower per container.
//!
//! At start (and after the event stream reconnects) all containers are listed, running or
//! not; Docker's events (`create`, `start`, `die`, `destroy`) then announce new containers,
//! runs and removals.
//! The event stream is opened with `since` just before the listing, so nothing started in
//! between is missed, and reopened with backoff from the last event's time if it breaks.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bollard::models::EventMessage;
use bollard::query_parameters::{EventsOptions, ListContainersOptions};
use futures::StreamExt;
use protocol::now_ns;
use tokio::sync::watch;
use tokio::task::{Id, JoinSet};
use tracing::{debug, info, warn};

use super::follower::{self, Die, End, Shared, Signals};
use crate::checkpoint::{CheckpointStore, Entry};
use crate::error::{Error, ErrorKind};
use crate::retry::Retry;

const RECONNECT_INITIAL: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(30);

struct Discovery {
    shared: Arc<Shared>,
    /// Followers by container id.
    followers: HashMap<Arc<str>, watch::Sender<Signals>>,
    tasks: JoinSet<End>,
    task_ids: HashMap<Id, Arc<str>>,
    /// Containers the filter excludes (kept so their events cost nothing).
    ignored: HashSet<String>,
    /// Checkpoint entries not yet handed to a follower.
    checkpoints: BTreeMap<String, Entry>,
}

/// Runs discovery and the followers until `shared.shutdown`, then waits for the followers.
/// Followers of containers in `resume` (the checkpoint with what the spool still holds
/// applied) start there. Fails only if the first listing fails (Docker unreachable at
/// start).
pub async fn run(
    shared: Arc<Shared>,
    store: Arc<CheckpointStore>,
    resume: BTreeMap<String, Entry>,
) -> Result<(), Error> {
    let mut d = Discovery {
        shared: shared.clone(),
        followers: HashMap::new(),
        tasks: JoinSet::new(),
        task_ids: HashMap::new(),
        ignored: HashSet::new(),
        checkpoints: resume,
    };
    // Events from just before the listing on: a container started in between is seen twice
    // (harmless), never zero times.
    let mut since = unix_time_arg(now_ns() - 1_000_000_000);
    let existing = d.sync().await?;
    // Containers removed while antilog was down: their jobs are closed, and their entries
    // kept until that is acknowledged.
    let gone = crate::gone::retain_existing(&store, &d.checkpoints, &existing);
    d.checkpoints.retain(|id, _| existing.contains(id));
    crate::gone::close(
        gone,
        "the container",
        &shared.tx,
        &shared.shutdown,
        &shared.metrics,
    )
    .await;
    let mut backoff = Retry::new(RECONNECT_INITIAL, RECONNECT_MAX);
    'outer: loop {
        let opts = EventsOptions {
            since: Some(since.clone()),
            until: None,
            filters: Some(HashMap::from([
                ("type".to_string(), vec!["container".to_string()]),
                (
                    "event".to_string(),
                    vec![
                        "create".to_string(),
                        "start".to_string(),
                        "die".to_string(),
                        "destroy".to_string(),
                    ],
                ),
            ])),
        };
        let mut events = shared.docker.events(Some(opts));
        loop {
            tokio::select! {
                _ = shared.shutdown.cancelled() => break 'outer,
                Some(res) = d.tasks.join_next_with_id() => d.reap(res),
                ev = events.next() => match ev {
                    Some(Ok(msg)) => {
                        backoff.reset();
                        if let Some(t) = msg.time_nano {
                            since = unix_time_arg(t);
                        }
                        d.on_event(msg);
                    }
                    Some(Err(e)) => {
                        shared.metrics.docker_error(&super::classify(&e));
                        warn!(error = %e, "Docker event stream failed");
                        break;
                    }
                    None => {
                        warn!("Docker event stream ended");
                        break;
                    }
                },
            }
        }
        let delay = backoff.next_delay();
        tokio::select! {
            _ = shared.shutdown.cancelled() => break 'outer,
            _ = tokio::time::sleep(delay) => {}
        }
        // Catch up on anything the replay (bounded by Docker's event buffer) missed.
        if let Err(e) = d.sync().await {
            warn!(error = %e, "cannot list containers");
        }
    }
    // Followers watch the same token; dropping the signal senders also wakes waiters.
    d.followers.clear();
    while let Some(res) = d.tasks.join_next_with_id().await {
        d.reap(res);
    }
    Ok(())
}

impl Discovery {
    /// Lists every container and starts followers for new ones; returns the ids seen.
    async fn sync(&mut self) -> Result<HashSet<String>, Error> {
        let list = self
            .shared
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                ..Default::default()
            }))
            .await
            .map_err(|e| {
                self.shared.metrics.docker_error(&super::classify(&e));
                Error::with_source(ErrorKind::Docker, "cannot list containers", e)
            })?;
        let mut existing = HashSet::with_capacity(list.len());
        for c in list {
            let Some(id) = c.id else { continue };
            existing.insert(id.clone());
            if self.followers.contains_key(id.as_str()) || self.ignored.contains(&id) {
                continue;
            }
            let name = c
                .names
                .as_ref()
                .and_then(|n| n.first())
                .map(|n| n.strip_prefix('/').unwrap_or(n).to_string())
                .unwrap_or_default();
            let labels: BTreeMap<String, String> =
                c.labels.unwrap_or_default().into_iter().collect();
            if self.shared.filter.matches(&name, &labels) {
                self.spawn(id);
            } else {
                self.ignored.insert(id);
            }
        }
        self.ignored.retain(|id| existing.contains(id));
        info!(
            containers = existing.len(),
            followed = self.followers.len(),
            "listed containers"
        );
        Ok(existing)
    }

    fn spawn(&mut self, id: String) {
        let resume = self.checkpoints.remove(&id);
        let id: Arc<str> = id.into();
        let (tx, rx) = watch::channel(Signals::default());
        self.followers.insert(id.clone(), tx);
        let fut = follower::follow(self.shared.clone(), id.clone(), rx, resume);
        let handle = self.tasks.spawn(fut);
        self.task_ids.insert(handle.id(), id);
    }

    fn reap(&mut self, res: Result<(Id, End), tokio::task::JoinError>) {
        let (task, end) = match res {
            Ok((task, end)) => (task, Some(end)),
            Err(e) => {
                warn!(error = %e, "a follower failed");
                (e.id(), None)
            }
        };
        let Some(id) = self.task_ids.remove(&task) else {
            return;
        };
        self.followers.remove(&id);
        match end {
            Some(End::Ignored) => {
                self.ignored.insert(id.to_string());
            }
            Some(End::Failed(reason)) => {
                warn!(container_id = %super::short_id(&id), %reason, "not following container");
            }
            _ => {}
        }
    }

    fn on_event(&mut self, msg: EventMessage) {
        let Some(actor) = msg.actor else { return };
        let Some(id) = actor.id else { return };
        let action = msg.action.unwrap_or_default();
        debug!(container_id = %super::short_id(&id), %action, "docker event");
        match action.as_str() {
            // From `create` on, the follower knows the container (its meta), so a `--rm`
            // container removed before its log could be read still gets a job that says so;
            // on docker-files its log file is opened as soon as it starts and read even
            // after the removal (see `follower::files`).
            "create" | "start" | "die" => {
                if let Some(tx) = self.followers.get(id.as_str()) {
                    if action == "die" {
                        let exit_code = actor
                            .attributes
                            .as_ref()
                            .and_then(|a| a.get("exitCode"))
                            .and_then(|c| c.parse().ok());
                        let time_ns = msg.time_nano.unwrap_or_else(now_ns);
                        tx.send_modify(|s| s.die = Some(Die { exit_code, time_ns }));
                    } else {
                        // Only the wake-up matters: the follower inspects.
                        tx.send_modify(|_| {});
                    }
                } else if !self.ignored.contains(&id) {
                    self.spawn(id);
                }
            }
            "destroy" => {
                if let Some(tx) = self.followers.get(id.as_str()) {
                    // The follower finds out by inspecting (404) and ends.
                    tx.send_modify(|_| {});
                }
                self.ignored.remove(&id);
            }
            _ => {}
        }
    }
}

/// Docker's `since`/`until` form: `seconds.nanoseconds`.
fn unix_time_arg(ns: i64) -> String {
    format!(
        "{}.{:09}",
        ns.div_euclid(1_000_000_000),
        ns.rem_euclid(1_000_000_000)
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn time_arg_format() {
        assert_eq!(
            super::unix_time_arg(1_500_000_000_000_000_001),
            "1500000000.000000001"
        );
    }
}
