//! Logarithm's storage: jobs (one per container), their log lines in `seq` order, and their
//! outputs, webhook deliveries and documents, behind small async traits (one per concern)
//! with two backends.
//!
//! - The MySQL protocol through `mysql_async`: TiDB in production, MariaDB in tests.
//! - SQLite (one file) through `rusqlite`: the embedded default for one-machine use.
//!
//! Both apply the same versioned migrations at open (safe when two processes open the same
//! database at once), deduplicate lines on `(job_id, seq)`, and apply a [`WriteBatch`] in
//! one transaction. The schema is documented in `docs/storage.md`. This crate knows nothing
//! of HTTP or flows.
//!
//! # Layout
//! - [`store`]: the traits, one per concern ([`JobStore`], [`WebhookStore`],
//!   [`DocumentStore`], [`RetentionStore`]) and [`Storage`], which is all of them.
//! - [`error`]: [`Error`] with an [`ErrorKind`] that says whether to retry.
//! - [`model`]: jobs, lines, outputs and the events a write announces; the job id rule and
//!   the verdict rule. It depends on no other module of the crate.
//! - [`webhooks`]: webhook subscriptions and the delivery outbox (written by `apply` in the
//!   same transaction as the transitions they announce), claimed with a lease.
//! - [`documents`]: versioned JSON documents by `(namespace, id)`, written with
//!   compare-and-set (logarithmd keeps the flow engine's state there).
//! - [`retention`]: the rules, which jobs they expire, and the sweep that deletes each
//!   with what it owns in bounded transactions (through [`RetentionStore`]).
//! - [`webhook_events`]: events that are not job transitions (`flow.finished`), announced
//!   into the same outbox, idempotently.
//! - [`log_text`]: a page of a job's records read straight into raw text (downloads).
//! - `job_row`: the in-memory `jobs` row and the rule steps of a job write.
//! - `sql`: the SQL text, bind values and row decoders both backends share, by concern
//!   (`jobs`, `webhooks`, `outbox`, `documents`, `retention`), the row-access trait each
//!   driver implements, and `exec`, the transaction trait over which multi-statement steps
//!   (`retention_delete`: retention's delete steps) are written once; `stream_blocks`: the
//!   bitmap index of each stream's lines by blocks of 63 seqs (`log_stream_blocks`) that
//!   ingest writes and one-stream reads go through, instead of an index entry per line.
//! - `read_gate`: reads yield to ingest (fewer reads at once while batches are applied),
//!   used by both backends.
//! - `sqlite/` and `mysql/`: the backends, a file per concern (`jobs`, `webhooks`,
//!   `documents`, `retention`), plus `schema` (migrations) and `mod.rs` (connections,
//!   error kinds); MySQL's `conflicts` ends transactions and reruns conflicted ones.
//! - [`open`]: picks the backend from a URL (`mysql://…` or `sqlite://…`).

pub mod documents;
pub mod error;
mod job_row;
pub mod log_text;
pub mod model;
mod mysql;
mod read_gate;
pub mod retention;
mod sql;
mod sqlite;
pub mod store;
pub mod webhook_events;
pub mod webhooks;

use std::sync::Arc;

pub use documents::{Document, DocumentPut, DocumentQuery, Expected};
pub use error::{Error, ErrorKind, Result};
pub use log_text::{TextPage, TextQuery};
pub use model::*;
pub use retention::{Deleted, RetentionRules, SweepReport};
pub use store::{DocumentStore, JobStore, RetentionStore, Storage, WebhookStore};
pub use webhook_events::EventWrite;
pub use webhooks::{
    Attempt, AttemptOutcome, AttemptRecord, ClaimRequest, ClaimedDelivery, Delivery,
    DeliveryHistory, DeliveryId, DeliveryStatus, EventKind, JobEvent, Subscription, SubscriptionId,
    SubscriptionSource, SubscriptionSpec,
};

/// How to open storage.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// `sqlite:///abs/path.db`, `sqlite://relative/path.db`, `sqlite::memory:` or
    /// `mysql://user:pass@host:port/db`.
    pub url: String,
    /// Upper bound on open connections for writes (MySQL write pool; SQLite has one writer).
    pub max_connections: usize,
    /// Upper bound on open connections for reads (log and job queries), a separate pool so
    /// readers never take a writer's connection (MySQL read pool; SQLite readers, at most 4).
    pub max_read_connections: usize,
    /// Reads of each kind (download pages; others) run at most this many at a time while
    /// batches are being applied (reads yield to ingest; the whole read pool when no write
    /// is near). At least 1.
    pub busy_read_connections: usize,
    /// Share of the time (percent, 1–100) bulk reads (the pages of raw downloads) may take
    /// while batches are being applied: after one of `d`, the next waits
    /// `d × (100 − p) / p` (at most 1 s). Other reads are not paced.
    pub busy_read_percent: u32,
}

impl StorageConfig {
    pub fn new(url: impl Into<String>) -> StorageConfig {
        StorageConfig {
            url: url.into(),
            max_connections: 8,
            max_read_connections: 4,
            busy_read_connections: 1,
            busy_read_percent: 15,
        }
    }
}

/// Opens the backend named by the URL's scheme and applies pending migrations.
pub async fn open(config: &StorageConfig) -> Result<Arc<dyn Storage>> {
    let url = config.url.as_str();
    if url.starts_with("mysql://") {
        Ok(Arc::new(mysql::MysqlStorage::open(config).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStorage::open(config).await?))
    } else {
        Err(Error::new(
            ErrorKind::Invalid,
            format!("unsupported storage URL {url:?}: expected mysql://… or sqlite://…"),
        ))
    }
}
