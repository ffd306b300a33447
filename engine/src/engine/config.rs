//! How the engine is tuned ([`EngineConfig`]) and how a run starts ([`RunOptions`]).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::lease;
use crate::run::Cause;

/// Tuning of the driver.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How long a stopped container gets between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// How often every waiting job is checked against the runner and the verdict lookup
    /// (a safety net: verdicts normally arrive as notices).
    pub reconcile_every: Duration,
    /// Budgets of pre and post scripts.
    pub scripts: crate::script::Limits,
    /// This engine's replica id, the owner it writes into the runs it drives
    /// ([`lease::replica_id`] by default: unique per process).
    pub replica: String,
    /// How long another engine's heartbeat may stand still before its runs are taken over.
    /// Heartbeats and takeover checks happen every fifth of it.
    pub lease_ttl: Duration,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            stop_grace: Duration::from_secs(10),
            reconcile_every: Duration::from_secs(15),
            scripts: crate::script::Limits::default(),
            replica: lease::replica_id(),
            lease_ttl: Duration::from_secs(15),
        }
    }
}

/// How a run starts, besides its flow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// Replaces CO_DATA for every job.
    pub co_data: Option<String>,
    /// Environment values every job gets, above the flow's and the job's own.
    pub env: BTreeMap<String, String>,
    /// What started it.
    pub cause: Cause,
    /// The run's id (a trigger derives it from its event, so an event starts one run
    /// across replicas); random when `None`. A run with this id that exists already is a
    /// [`crate::error::ErrorKind::Conflict`].
    pub id: Option<String>,
}
