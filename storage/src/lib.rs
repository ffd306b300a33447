//! Logarithm's storage: jobs (one per container), their log lines in `seq` order, and their
//! outputs, behind one async trait with two backends.
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
//! - [`error`]: [`Error`] with an [`ErrorKind`] that says whether to retry.
//! - [`model`]: what is written and read, the job id rule and the verdict rule.
//! - `mysql`: the MySQL-protocol backend.
//! - `sqlite`: the SQLite backend.
//! - `shared`: the row rules and SQL both backends use, so they behave the same.
//! - [`webhooks`]: webhook subscriptions and the delivery outbox (written by `apply` in the
//!   same transaction as the transitions they announce), claimed with a lease.
//! - [`documents`]: versioned JSON documents by `(namespace, id)`, written with
//!   compare-and-set (logarithmd keeps the flow engine's state there).
//! - [`webhook_events`]: events that are not job transitions (`flow.finished`), announced
//!   into the same outbox, idempotently.
//! - [`open`]: picks the backend from a URL (`mysql://…` or `sqlite://…`).

pub mod documents;
pub mod error;
pub mod model;
mod mysql;
mod mysql_documents;
mod mysql_webhooks;
mod shared;
mod sqlite;
mod sqlite_documents;
mod sqlite_webhooks;
pub mod webhook_events;
pub mod webhooks;

use std::sync::Arc;

pub use documents::{Document, DocumentPut, DocumentQuery, Expected};
pub use error::{Error, ErrorKind, Result};
pub use model::*;
pub use webhook_events::EventWrite;
pub use webhooks::{
    Attempt, AttemptOutcome, AttemptRecord, ClaimRequest, ClaimedDelivery, Delivery,
    DeliveryHistory, DeliveryId, DeliveryStatus, EventKind, JobEvent, Subscription, SubscriptionId,
    SubscriptionSource, SubscriptionSpec,
};

/// Storage as logarithmd uses it. Every method is one round of work against the database;
/// none of them retries (callers decide, using [`Error::is_transient`]).
#[async_trait::async_trait]
pub trait Storage: Send + Sync + 'static {
    /// Applies a batch in one transaction and reports what it did. Lines already stored
    /// (same job and seq) are left untouched and counted as duplicates, so a batch sent
    /// again is stored once.
    async fn apply(&self, batch: &WriteBatch) -> Result<ApplyOutcome>;

    /// One job with its outputs, or `None`.
    async fn get_job(&self, id: JobId) -> Result<Option<Job>>;

    /// Jobs matching the query, newest first (by `created_at`, then id), `outputs` left empty.
    async fn list_jobs(&self, query: &JobQuery) -> Result<Vec<Job>>;

    /// Lines of a job in `seq` order.
    async fn read_lines(&self, query: &LineQuery) -> Result<Vec<StoredLine>>;

    /// Inserts a subscription, or updates the one with the same id. An update that changes
    /// the definition enables it again; one that changes nothing keeps its state (so a
    /// subscription disabled by 410 stays disabled when the same config is upserted again).
    async fn upsert_subscription(&self, spec: &SubscriptionSpec) -> Result<Subscription>;

    /// Every subscription, oldest first.
    async fn list_subscriptions(&self) -> Result<Vec<Subscription>>;

    async fn get_subscription(&self, id: SubscriptionId) -> Result<Option<Subscription>>;

    /// Deletes a subscription with its deliveries and attempts; `false` if there was none.
    async fn delete_subscription(&self, id: SubscriptionId) -> Result<bool>;

    /// Claims up to `limit` due deliveries of enabled subscriptions for one attempt each,
    /// until `now + lease`. Two claimers never get the same attempt of a delivery.
    async fn claim_deliveries(&self, req: &ClaimRequest) -> Result<Vec<ClaimedDelivery>>;

    /// Records an attempt and ends it as its outcome says (410 also disables the
    /// subscription and cancels its other pending deliveries). Returns `false` if the
    /// caller no longer held the claim (the attempt is recorded, the delivery left alone).
    async fn complete_attempt(&self, rec: &AttemptRecord) -> Result<bool>;

    /// A subscription's deliveries, newest first, each with its attempts.
    async fn list_deliveries(
        &self,
        subscription: SubscriptionId,
        limit: u32,
    ) -> Result<Vec<DeliveryHistory>>;

    /// Makes a delivery of this subscription due now, with a new retry window, keeping its
    /// id and attempt count. `None` if there is no such delivery.
    async fn redeliver(
        &self,
        subscription: SubscriptionId,
        delivery: DeliveryId,
        now: i64,
    ) -> Result<Option<Delivery>>;

    /// Deliveries still to be sent (status pending), across all subscriptions: the
    /// backlog operators watch.
    async fn count_pending_deliveries(&self) -> Result<u64>;

    /// A document, or `None`.
    async fn get_document(&self, namespace: &str, id: &str) -> Result<Option<Document>>;

    /// Writes a document if the stored one is as [`DocumentPut::expected`] says, and
    /// returns its new version; `Ok(None)` if it is not (another writer changed it).
    async fn put_document(&self, put: &DocumentPut) -> Result<Option<u64>>;

    /// Documents of a namespace, newest first (by creation, then id).
    async fn list_documents(&self, query: &DocumentQuery) -> Result<Vec<Document>>;

    /// Writes the webhook deliveries of an event that is not a job transition (one per
    /// matching enabled subscription) and returns how many were new: announcing the same
    /// event (kind and key) again adds none.
    async fn enqueue_event(&self, event: &EventWrite) -> Result<u64>;

    /// Checks that the database answers (for readiness).
    async fn ping(&self) -> Result<()>;

    /// Which backend this is (`mysql` or `sqlite`), for logs and metrics.
    fn backend(&self) -> &'static str;
}

/// How to open storage.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// `sqlite:///abs/path.db`, `sqlite://relative/path.db`, `sqlite::memory:` or
    /// `mysql://user:pass@host:port/db`.
    pub url: String,
    /// Upper bound on open connections (MySQL pool size; SQLite readers).
    pub max_connections: usize,
}

impl StorageConfig {
    pub fn new(url: impl Into<String>) -> StorageConfig {
        StorageConfig {
            url: url.into(),
            max_connections: 8,
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
