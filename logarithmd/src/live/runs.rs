//! The run side of the hub: every save of a run is pushed to the run's followers, and a
//! watcher finds saves made by other replicas (one document read per tick).

use std::sync::{Arc, Weak};
use std::time::Duration;

use engine::{Run, RunStore};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::channels::{Channel, Channels, Membership};
use super::FollowError;

/// A run as saved: its state and the document version it was saved as.
#[derive(Debug, Clone)]
pub struct RunSaved {
    pub version: u64,
    pub run: Run,
}

/// Run channels plus what the watchers need.
pub struct RunHub {
    channels: Arc<Channels<String, RunSaved>>,
    store: Arc<dyn RunStore>,
    catch_up: Duration,
    closing: CancellationToken,
}

impl RunHub {
    pub fn new(
        store: Arc<dyn RunStore>,
        max_followers: usize,
        catch_up: Duration,
        closing: CancellationToken,
    ) -> RunHub {
        RunHub {
            channels: Channels::new(64, max_followers),
            store,
            catch_up,
            closing,
        }
    }

    /// Hands a saved run to its followers: call right after the save, never before.
    pub fn publish(&self, run: &Run, version: u64) {
        if let Some(ch) = self.channels.get(&run.id) {
            ch.raise_mark(version);
            ch.send(Arc::new(RunSaved {
                version,
                run: run.clone(),
            }));
        }
    }

    /// Follows a run: `Ok(None)` if there is no such run.
    pub async fn follow(&self, id: &str) -> Result<Option<RunFollower>, FollowError> {
        let (membership, created) = self.channels.join(&id.to_owned())?;
        if let Some(weak) = created {
            tokio::spawn(watch(
                weak,
                id.to_owned(),
                self.store.clone(),
                self.catch_up,
                self.closing.clone(),
            ));
        }
        // Read after joining, so no save falls between the read and the first push.
        let Some((run, version)) = self.store.get_run(id).await? else {
            return Ok(None);
        };
        Ok(Some(RunFollower {
            id: id.to_owned(),
            store: self.store.clone(),
            membership,
            closing: self.closing.clone(),
            next: Some(Arc::new(RunSaved { version, run })),
            version: 0,
            done: false,
        }))
    }

    /// Followers of all runs.
    pub fn followers(&self) -> usize {
        self.channels.followers()
    }
}

/// What a run follower yields.
#[derive(Debug, Clone)]
pub enum RunEvent {
    /// The run as saved now (the first is the state when following started).
    Saved(Arc<RunSaved>),
    /// The run reached a final status: its last state.
    End(Arc<RunSaved>),
}

/// Follows one run's saves, each version once and in order (versions a follower fell
/// behind on are skipped: each save is the whole state).
pub struct RunFollower {
    id: String,
    store: Arc<dyn RunStore>,
    membership: Membership<String, RunSaved>,
    closing: CancellationToken,
    next: Option<Arc<RunSaved>>,
    version: u64,
    done: bool,
}

impl RunFollower {
    /// The flow of the run, as first read (for access checks before streaming).
    pub fn flow(&self) -> Option<&str> {
        self.next.as_ref().map(|s| s.run.flow_name.as_str())
    }

    /// The next save or the end; `Ok(None)` after the end or when logarithmd shuts down.
    pub async fn next(&mut self) -> Result<Option<RunEvent>, engine::Error> {
        loop {
            if self.done {
                return Ok(None);
            }
            if let Some(saved) = self.next.take() {
                if saved.version <= self.version {
                    continue;
                }
                self.version = saved.version;
                if saved.run.status.is_final() {
                    self.done = true;
                    return Ok(Some(RunEvent::End(saved)));
                }
                return Ok(Some(RunEvent::Saved(saved)));
            }
            let news = tokio::select! {
                _ = self.closing.cancelled() => {
                    self.done = true;
                    return Ok(None);
                }
                n = self.membership.rx.recv() => n,
            };
            match news {
                Ok(saved) => self.next = Some(saved),
                Err(RecvError::Lagged(_)) => {
                    self.next = self
                        .store
                        .get_run(&self.id)
                        .await?
                        .map(|(run, version)| Arc::new(RunSaved { version, run }));
                }
                Err(RecvError::Closed) => self.done = true,
            }
        }
    }
}

/// While a run has followers, reads it every `interval` and pushes saves this process did
/// not make (another replica's engine, or a save before the follower joined).
async fn watch(
    channel: Weak<Channel<RunSaved>>,
    id: String,
    store: Arc<dyn RunStore>,
    interval: Duration,
    closing: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = closing.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let Some(ch) = channel.upgrade() else { return };
        match store.get_run(&id).await {
            Ok(Some((run, version))) if version > ch.mark() => {
                ch.raise_mark(version);
                ch.send(Arc::new(RunSaved { version, run }));
            }
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(run = %id, error = %e, "live catch-up: reading the run failed")
            }
        }
    }
}
