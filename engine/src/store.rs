//! Where the engine keeps flows and runs: one trait, implemented by whoever embeds the
//! engine (logarithmd adapts storage's generic document store to it), and an in-memory
//! implementation for tests and single-process use.
//!
//! Runs are saved with a version for compare-and-set: [`RunStore::put_run`] succeeds only
//! if the stored version is the one the caller read, so two engines can never overwrite
//! each other's transitions silently.
//!
//! The store also keeps the replicas' heartbeats ([`crate::lease`]): an engine that shares
//! the store with others registers, bumps and at last retires its own.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::flow::Flow;
use crate::lease::Heartbeat;
use crate::run::{Nanos, Run, Status};

/// A registered flow: its file as given and the parsed definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredFlow {
    /// [`Flow::name`].
    pub name: String,
    /// The YAML as registered.
    pub source: String,
    pub flow: Flow,
    pub created_at: Nanos,
    pub updated_at: Nanos,
}

/// Which runs to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunQuery {
    pub flow: Option<String>,
    pub status: Option<Status>,
    pub limit: u32,
}

/// Persistence of flows and runs.
#[async_trait::async_trait]
pub trait RunStore: Send + Sync + 'static {
    /// Registers a flow, replacing the one with the same name.
    async fn put_flow(&self, flow: &StoredFlow) -> Result<()>;

    async fn get_flow(&self, name: &str) -> Result<Option<StoredFlow>>;

    /// Every flow, by name.
    async fn list_flows(&self) -> Result<Vec<StoredFlow>>;

    /// Saves a run if its stored version is `version` (0: it must not exist yet), and
    /// returns the new version. Otherwise fails with [`ErrorKind::Conflict`].
    async fn put_run(&self, run: &Run, version: u64) -> Result<u64>;

    /// A run and its version.
    async fn get_run(&self, id: &str) -> Result<Option<(Run, u64)>>;

    /// Runs matching the query, newest first.
    async fn list_runs(&self, query: &RunQuery) -> Result<Vec<Run>>;

    /// Runs the engine still has work for ([`Run::is_active`]), for resuming at start.
    async fn active_runs(&self) -> Result<Vec<(Run, u64)>>;

    /// Bumps `replica`'s heartbeat from `version` (0: registers it, again if it was
    /// retired) and returns the new version. Fails with [`ErrorKind::Conflict`] when it is no longer at `version`
    /// (another replica found it dead and retired it).
    async fn beat(&self, replica: &str, version: u64) -> Result<u64>;

    /// The heartbeats of the replicas not retired.
    async fn heartbeats(&self) -> Result<Vec<Heartbeat>>;

    /// Retires `replica`'s heartbeat if it is still at `version` (it stopped, or stood
    /// still for the lease's ttl); a later beat of it then fails with a conflict.
    async fn retire(&self, replica: &str, version: u64) -> Result<()>;
}

/// Flows and runs in memory (lost with the process).
#[derive(Debug, Default)]
pub struct MemoryRunStore {
    flows: Mutex<HashMap<String, StoredFlow>>,
    runs: Mutex<HashMap<String, (Run, u64)>>,
    /// Replica → (version, retired).
    beats: Mutex<HashMap<String, (u64, bool)>>,
}

impl MemoryRunStore {
    pub fn new() -> MemoryRunStore {
        MemoryRunStore::default()
    }
}

fn poisoned<T>(_: T) -> Error {
    Error::new(ErrorKind::Internal, "in-memory run store lock poisoned")
}

#[async_trait::async_trait]
impl RunStore for MemoryRunStore {
    async fn put_flow(&self, flow: &StoredFlow) -> Result<()> {
        self.flows
            .lock()
            .map_err(poisoned)?
            .insert(flow.name.clone(), flow.clone());
        Ok(())
    }

    async fn get_flow(&self, name: &str) -> Result<Option<StoredFlow>> {
        Ok(self.flows.lock().map_err(poisoned)?.get(name).cloned())
    }

    async fn list_flows(&self) -> Result<Vec<StoredFlow>> {
        let mut v: Vec<StoredFlow> = self
            .flows
            .lock()
            .map_err(poisoned)?
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    async fn put_run(&self, run: &Run, version: u64) -> Result<u64> {
        let mut runs = self.runs.lock().map_err(poisoned)?;
        let current = runs.get(&run.id).map_or(0, |(_, v)| *v);
        if current != version {
            return Err(Error::conflict(format!(
                "run {} is at version {current}, not {version}",
                run.id
            )));
        }
        runs.insert(run.id.clone(), (run.clone(), version + 1));
        Ok(version + 1)
    }

    async fn get_run(&self, id: &str) -> Result<Option<(Run, u64)>> {
        Ok(self.runs.lock().map_err(poisoned)?.get(id).cloned())
    }

    async fn list_runs(&self, query: &RunQuery) -> Result<Vec<Run>> {
        let runs = self.runs.lock().map_err(poisoned)?;
        let mut v: Vec<Run> = runs
            .values()
            .map(|(r, _)| r)
            .filter(|r| query.flow.as_ref().is_none_or(|f| *f == r.flow_name))
            .filter(|r| query.status.is_none_or(|s| s == r.status))
            .cloned()
            .collect();
        v.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.id.cmp(&a.id)));
        if query.limit > 0 {
            v.truncate(query.limit as usize);
        }
        Ok(v)
    }

    async fn active_runs(&self) -> Result<Vec<(Run, u64)>> {
        Ok(self
            .runs
            .lock()
            .map_err(poisoned)?
            .values()
            .filter(|(r, _)| r.is_active())
            .cloned()
            .collect())
    }

    async fn beat(&self, replica: &str, version: u64) -> Result<u64> {
        let mut beats = self.beats.lock().map_err(poisoned)?;
        let current = beats.get(replica).copied();
        let next = match current {
            None if version == 0 => 1,
            Some((v, _)) if version == 0 => v + 1,
            Some((v, false)) if v == version => v + 1,
            _ => {
                return Err(Error::conflict(format!(
                    "heartbeat of {replica} is not at version {version} (retired?)"
                )))
            }
        };
        beats.insert(replica.to_owned(), (next, false));
        Ok(next)
    }

    async fn heartbeats(&self) -> Result<Vec<Heartbeat>> {
        Ok(self
            .beats
            .lock()
            .map_err(poisoned)?
            .iter()
            .filter(|(_, (_, retired))| !retired)
            .map(|(r, (v, _))| Heartbeat {
                replica: r.clone(),
                version: *v,
            })
            .collect())
    }

    async fn retire(&self, replica: &str, version: u64) -> Result<()> {
        let mut beats = self.beats.lock().map_err(poisoned)?;
        if let Some(b) = beats.get_mut(replica) {
            if b.0 == version && !b.1 {
                *b = (version + 1, true);
            }
        }
        Ok(())
    }
}
