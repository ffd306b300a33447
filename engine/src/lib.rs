//! Logarithm's flow engine: runs ContainerOps flows (stages of actions of jobs, each job a
//! container) and advances them by the job verdicts logarithmd decides from the logs it
//! stores (`CO_RESULT`, exit code). It knows no HTTP and no database: logarithmd feeds it
//! verdicts through [`JobResults`], keeps its state behind [`RunStore`], and serves the API.
//!
//! `docs/flows.md` describes flow files and run semantics for users.
//!
//! # Layout
//! - [`flow`]: the flow file (YAML) as serde types, and its checks (errors name the line
//!   and the field; `flow/structure.rs` the structural ones); `flow/labels.rs`,
//!   `flow/script.rs` and `flow/checks.rs` hold the
//!   labels and scripts of jobs, `flow/service.rs` the checks of service jobs,
//!   `flow/secrets.rs` the `secrets:` lists (names only; the embedder has the values).
//! - [`run`]: the pure run state machine: state + event → new state + commands
//!   (`run/transitions.rs`); `run/job_spec.rs` builds a job's container spec.
//! - [`runner`]: [`JobRunner`], with `docker` (bollard) and `kubernetes` (kube, a Pod per
//!   job; only with the `kubernetes` feature, on by default). Service jobs (`type:
//!   service`, an HTTP call) go through the same trait: the embedder's runner makes the
//!   call (logarithmd's `flows::service`), the container runners refuse them.
//! - [`results`]: [`JobResults`], the one interface verdicts arrive through.
//! - [`script`]: the Lua sandbox that runs a job's `pre` and `post` scripts under budgets.
//! - [`store`]: [`RunStore`], persistence of flows and runs, and an in-memory store.
//! - [`engine`]: the async driver: timers, persistence after each transition, resume of
//!   in-flight runs at start; `engine/hooks.rs` runs the scripts around a job,
//!   `engine/commands.rs` carries out the state machine's commands, `engine/reports.rs`
//!   takes their reports and the verdicts, `engine/reconcile.rs` reconciles, `engine/save.rs`
//!   saves a run.
//! - [`cron`]: the scheduler of `cron` triggers (one run per tick across replicas).
//! - [`lease`]: several engines on one store: run owners, heartbeats, takeover of a dead
//!   replica's runs.
//! - [`error`]: [`Error`] with an [`ErrorKind`].

pub mod cron;
pub mod engine;
pub mod error;
pub mod flow;
pub mod lease;
pub mod results;
pub mod run;
pub mod runner;
pub mod script;
pub mod store;

pub use engine::{Engine, EngineConfig, LogRunEvents, RunEvents, RunOptions};
pub use error::{Error, ErrorKind, Result};
pub use flow::Flow;
pub use results::{ChannelResults, JobResult, JobResults, Notice, ResultsFeed};
pub use run::{Run, RunSummary, Status};
pub use runner::{JobRunner, JobSpec};
pub use store::{MemoryRunStore, RunQuery, RunStore, StoredFlow};
