//! What storage offers, as small traits by concern, each implemented once per backend (in
//! `sqlite/<concern>.rs` and `mysql/<concern>.rs`):
//!
//! - [`JobStore`]: jobs, their lines and outputs (`apply` and the reads);
//! - [`WebhookStore`]: subscriptions, the delivery outbox, claims and attempts;
//! - [`DocumentStore`]: versioned JSON documents;
//! - [`RetentionStore`]: finding expired jobs and deleting them in bounded transactions;
//! - [`Storage`]: all of them, plus what concerns the database as a whole.
//!
//! A new concern gets its own trait here, a file per
//! backend, and a place in [`Storage`]'s list of supertraits.
//!
//! Every method is one round of work against the database; none of them retries (callers
//! decide, using [`crate::Error::is_transient`]), except `apply` on the MySQL protocol,
//! which runs a transaction the server rolled back for a write conflict again.

use crate::documents::{Document, DocumentPut, DocumentQuery};
use crate::error::Result;
use crate::log_text::{TextPage, TextQuery};
use crate::model::{ApplyOutcome, Job, JobId, JobQuery, LineQuery, StoredLine, WriteBatch};
use crate::retention::{DeleteStep, FinishedQuery, JobRef, StepOutcome, StoredTotals};
use crate::webhook_events::EventWrite;
use crate::webhooks::{
    AttemptRecord, ClaimRequest, ClaimedDelivery, Delivery, DeliveryHistory, DeliveryId,
    Subscription, SubscriptionId, SubscriptionSpec,
};

/// Jobs (one per container), their log lines in `seq` order, and their outputs.
#[async_trait::async_trait]
pub trait JobStore: Send + Sync {
    /// Applies a batch in one transaction and reports what it did. Lines already stored
    /// (same job and seq) are left untouched and counted as duplicates, so a batch sent
    /// again is stored once. Webhook deliveries for the transitions it makes are written
    /// in the same transaction.
    async fn apply(&self, batch: &WriteBatch) -> Result<ApplyOutcome>;

    /// One job with its outputs, or `None`.
    async fn get_job(&self, id: JobId) -> Result<Option<Job>>;

    /// Jobs matching the query, newest first (by `created_at`, then id), `outputs` left empty.
    async fn list_jobs(&self, query: &JobQuery) -> Result<Vec<Job>>;

    /// Lines of a job in `seq` order.
    async fn read_lines(&self, query: &LineQuery) -> Result<Vec<StoredLine>>;

    /// A page of a job's records as raw text, joined into `\n`-terminated lines (see
    /// [`crate::log_text`]), with no per-record allocation: the raw download's read.
    async fn read_text(&self, query: &TextQuery) -> Result<TextPage>;
}

/// Webhook subscriptions and the delivery outbox, claimed with a lease.
#[async_trait::async_trait]
pub trait WebhookStore: Send + Sync {
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

    /// Writes the webhook deliveries of an event that is not a job transition (one per
    /// matching enabled subscription) and returns how many were new: announcing the same
    /// event (kind and key) again adds none.
    async fn enqueue_event(&self, event: &EventWrite) -> Result<u64>;
}

/// Versioned JSON documents by `(namespace, id)`, written with compare-and-set.
#[async_trait::async_trait]
pub trait DocumentStore: Send + Sync {
    /// A document, or `None`.
    async fn get_document(&self, namespace: &str, id: &str) -> Result<Option<Document>>;

    /// Writes a document if the stored one is as [`DocumentPut::expected`] says, and
    /// returns its new version; `Ok(None)` if it is not (another writer changed it).
    async fn put_document(&self, put: &DocumentPut) -> Result<Option<u64>>;

    /// Documents of a namespace, newest first (by creation, then id).
    async fn list_documents(&self, query: &DocumentQuery) -> Result<Vec<Document>>;
}

/// Retention's reads and deletes; [`crate::retention::sweep`] drives them.
#[async_trait::async_trait]
pub trait RetentionStore: Send + Sync {
    /// Finished jobs (with a verdict) matching the query, oldest first by
    /// `(finished_at, id)`.
    async fn finished_jobs(&self, query: &FinishedQuery) -> Result<Vec<JobRef>>;

    /// Jobs, lines and line bytes stored, from the jobs' counters.
    async fn stored_totals(&self) -> Result<StoredTotals>;

    /// One transaction of deleting a job: locks its row, checks that it finished by
    /// [`DeleteStep::finished_by`] (else does nothing and reports `finished`), deletes up
    /// to [`DeleteStep::max_rows`] of its lines, webhook deliveries with their attempts,
    /// outputs and labels, and, once none is left, the job's row with its documents (and
    /// its run's, if no job of the run is left and the run is not active).
    async fn delete_job_step(&self, step: &DeleteStep) -> Result<StepOutcome>;

    /// Deletes webhook deliveries of announced events (job id 0, such as `flow.finished`)
    /// created before `created_before`, with their attempts, at most `limit` rows in one
    /// transaction; returns `(deliveries, attempts)` deleted.
    async fn delete_old_event_deliveries(
        &self,
        created_before: i64,
        limit: u32,
    ) -> Result<(u64, u64)>;

    /// Deletes up to `limit` inactive documents of `namespace` created before
    /// `created_before` whose id is no job's run, in one transaction; returns how many.
    async fn delete_orphan_documents(
        &self,
        namespace: &str,
        created_before: i64,
        limit: u32,
    ) -> Result<u64>;
}

/// Storage as logarithmd uses it: every concern of one database.
#[async_trait::async_trait]
pub trait Storage: JobStore + WebhookStore + DocumentStore + RetentionStore + 'static {
    /// Checks that the database answers (for readiness).
    async fn ping(&self) -> Result<()>;

    /// Which backend this is (`mysql` or `sqlite`), for logs and metrics.
    fn backend(&self) -> &'static str;
}
