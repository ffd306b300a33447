//! Webhook subscriptions and the delivery outbox: what is stored, and the rules and SQL both
//! backends share.
//!
//! A delivery is written by [`crate::Storage::apply`] in the same transaction that records
//! the job's transition, one row per matching enabled subscription, with a snapshot of the
//! job as committed. A crash after the commit cannot lose it: a dispatcher (in logarithmd)
//! claims due deliveries with a lease, sends them, and records every attempt. Storage knows
//! nothing of HTTP: it stores, matches, claims and records.
//!
//! Claiming is a compare-and-set on `(status, attempts, lease_until)`: of two processes that
//! try to claim the same attempt of the same delivery, exactly one `UPDATE` matches, so an
//! attempt number is handed out once.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{Error, ErrorKind, Result};
use crate::model::{Job, TransitionKind};
use crate::shared::{clamp_chars, Param};

/// A subscription's id: random (API) or derived from its name or URL and events (config).
pub type SubscriptionId = i64;
/// A delivery's id: random, the same for every attempt of the delivery.
pub type DeliveryId = i64;

/// Longest subscription URL.
pub const URL_MAX: usize = 2048;
/// Longest secret.
pub const SECRET_MAX: usize = 1024;
/// Longest subscription name.
pub const SUBSCRIPTION_NAME_MAX: usize = 255;
/// Longest owner id (a dispatcher's name for itself).
pub const OWNER_MAX: usize = 64;
/// Error texts are cut to this many characters.
pub const ERROR_MAX: usize = 1024;
/// A job snapshot larger than this is stored without its outputs, so one job with huge
/// outputs cannot make a batch unstorable (TiDB refuses entries over 6 MiB).
pub const SNAPSHOT_MAX_BYTES: usize = 1 << 20;

/// What happened, as subscribers name it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum EventKind {
    /// A job (container) started, or started again after a restart.
    #[serde(rename = "job.started")]
    JobStarted,
    /// A job reached its verdict.
    #[serde(rename = "job.finished")]
    JobFinished,
    /// A flow run finished (announced through [`crate::Storage::enqueue_event`]).
    #[serde(rename = "flow.finished")]
    FlowFinished,
}

impl EventKind {
    pub const ALL: [EventKind; 3] = [
        EventKind::JobStarted,
        EventKind::JobFinished,
        EventKind::FlowFinished,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::JobStarted => "job.started",
            EventKind::JobFinished => "job.finished",
            EventKind::FlowFinished => "flow.finished",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<TransitionKind> for EventKind {
    fn from(k: TransitionKind) -> EventKind {
        match k {
            TransitionKind::Started => EventKind::JobStarted,
            TransitionKind::Finished => EventKind::JobFinished,
        }
    }
}

/// An event of a committed write, with the job as that write left it (for `job.started`,
/// as it was when it started; outputs only on `job.finished`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEvent {
    pub kind: EventKind,
    pub job: Job,
    /// Commit time, ns since the Unix epoch.
    pub at: i64,
}

/// Where a subscription was defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SubscriptionSource {
    /// The configuration file (upserted at start).
    Config,
    /// `POST /api/v1/webhooks`.
    Api,
}

impl SubscriptionSource {
    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionSource::Config => "config",
            SubscriptionSource::Api => "api",
        }
    }

    pub fn parse(s: &str) -> Option<SubscriptionSource> {
        match s {
            "config" => Some(SubscriptionSource::Config),
            "api" => Some(SubscriptionSource::Api),
            _ => None,
        }
    }
}

/// What a subscription asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionSpec {
    pub id: SubscriptionId,
    pub name: Option<String>,
    pub source: SubscriptionSource,
    /// Where to POST (http or https; checked by logarithmd).
    pub url: String,
    /// The HMAC key deliveries are signed with. Never returned by the API.
    pub secret: String,
    pub events: BTreeSet<EventKind>,
    /// Label equality filters, all of which must hold for a job to match.
    pub filters: BTreeMap<String, String>,
}

impl SubscriptionSpec {
    /// Whether an event of `kind` for a job with `labels` goes to this subscription.
    pub fn matches(&self, kind: EventKind, labels: &BTreeMap<String, String>) -> bool {
        self.events.contains(&kind)
            && self
                .filters
                .iter()
                .all(|(k, v)| labels.get(k).is_some_and(|l| l == v))
    }
}

/// A stored subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub spec: SubscriptionSpec,
    /// Disabled subscriptions get no deliveries (a receiver answered 410 Gone).
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A delivery's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Waiting for its next attempt (or being attempted, while leased).
    Pending,
    /// A receiver answered 2xx.
    Delivered,
    /// Given up: retries exhausted, or the receiver answered 410 Gone.
    Failed,
    /// Its subscription was disabled or deleted before it was delivered.
    Cancelled,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryStatus> {
        match s {
            "pending" => Some(DeliveryStatus::Pending),
            "delivered" => Some(DeliveryStatus::Delivered),
            "failed" => Some(DeliveryStatus::Failed),
            "cancelled" => Some(DeliveryStatus::Cancelled),
            _ => None,
        }
    }
}

/// A stored delivery: one event for one subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: DeliveryId,
    pub subscription_id: SubscriptionId,
    pub event: EventKind,
    /// The job as committed with the event (`job.*` events).
    pub job: Option<Job>,
    /// The data of an event that is not about one job (`flow.finished`), as its announcer
    /// gave it (see [`crate::EventWrite`]).
    pub data: Option<serde_json::Value>,
    pub status: DeliveryStatus,
    /// Attempts claimed so far (the number of the latest attempt).
    pub attempts: u32,
    /// When the event was committed, ns since the Unix epoch.
    pub created_at: i64,
    /// Start of the current retry window (creation, or the last redelivery).
    pub window_start: i64,
    pub next_attempt_at: i64,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub completed_at: Option<i64>,
}

/// Asks for due deliveries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRequest {
    /// Unique per dispatcher process.
    pub owner: String,
    /// The claimer's clock, ns since the Unix epoch.
    pub now: i64,
    /// How long the claim holds; after it, another dispatcher may take the delivery. Must be
    /// longer than a send can take.
    pub lease_ns: i64,
    pub limit: u32,
}

/// A delivery claimed for one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedDelivery {
    pub delivery: Delivery,
    pub url: String,
    pub secret: String,
    /// This attempt's number (1 for the first).
    pub attempt: u32,
    pub lease_until: i64,
}

/// What an attempt concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// 2xx: done.
    Delivered,
    /// Failed; try again at this time.
    Retry { next_attempt_at: i64 },
    /// Failed, and no more retries (the retry window is over).
    Failed,
    /// 410 Gone: the delivery fails and its subscription is disabled (its other pending
    /// deliveries are cancelled).
    Gone,
}

/// One attempt to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    pub delivery_id: DeliveryId,
    pub subscription_id: SubscriptionId,
    pub attempt: u32,
    pub owner: String,
    pub started_at: i64,
    pub latency_ms: u64,
    /// The receiver's status code, if it answered.
    pub status_code: Option<u16>,
    /// Why it failed (timeout, connection refused, status), if it did.
    pub error: Option<String>,
    pub outcome: AttemptOutcome,
}

/// A recorded attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub attempt: u32,
    pub owner: String,
    pub started_at: i64,
    pub latency_ms: u64,
    pub status_code: Option<u16>,
    pub error: Option<String>,
}

/// A delivery with its attempts, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryHistory {
    pub delivery: Delivery,
    pub attempts: Vec<Attempt>,
}

// ---------------------------------------------------------------------------------------
// Rules and SQL shared by both backends.

fn invalid(message: String) -> Error {
    Error::new(ErrorKind::Invalid, message)
}

fn corrupt(message: String) -> Error {
    Error::new(ErrorKind::Corrupt, message)
}

/// A random positive non-zero 64-bit id (random, so TiDB spreads keys that lead with it).
pub(crate) fn random_id() -> i64 {
    loop {
        let id = rand::random::<i64>() & i64::MAX;
        if id != 0 {
            return id;
        }
    }
}

/// Rejects what no backend can store.
pub(crate) fn validate_spec(spec: &SubscriptionSpec) -> Result<()> {
    if spec.id <= 0 {
        return Err(invalid(format!(
            "subscription id {} must be positive",
            spec.id
        )));
    }
    if spec.url.is_empty() || spec.url.chars().count() > URL_MAX {
        return Err(invalid(format!("url must be 1 to {URL_MAX} characters")));
    }
    if spec.secret.is_empty() || spec.secret.chars().count() > SECRET_MAX {
        return Err(invalid(format!(
            "secret must be 1 to {SECRET_MAX} characters"
        )));
    }
    if spec
        .name
        .as_ref()
        .is_some_and(|n| n.chars().count() > SUBSCRIPTION_NAME_MAX)
    {
        return Err(invalid(format!(
            "name must be at most {SUBSCRIPTION_NAME_MAX} characters"
        )));
    }
    if spec.events.is_empty() {
        return Err(invalid("a subscription needs at least one event".into()));
    }
    Ok(())
}

pub(crate) fn validate_claim(req: &ClaimRequest) -> Result<()> {
    if req.owner.is_empty() || req.owner.chars().count() > OWNER_MAX {
        return Err(invalid(format!(
            "owner must be 1 to {OWNER_MAX} characters"
        )));
    }
    if req.lease_ns <= 0 {
        return Err(invalid("lease must be positive".into()));
    }
    Ok(())
}

/// Columns of `webhook_subscriptions` in the order [`RawSubscription`] is read.
pub(crate) const SUB_COLUMNS: &str = "id, name, source, url, secret, events, filters_json, \
     enabled, disabled_reason, created_at, updated_at";

pub(crate) const SUB_INSERT: &str = "INSERT INTO webhook_subscriptions (id, name, source, url, \
     secret, events, filters_json, enabled, disabled_reason, created_at, updated_at) VALUES \
     (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

pub(crate) const SUB_UPDATE: &str = "UPDATE webhook_subscriptions SET name = ?, source = ?, \
     url = ?, secret = ?, events = ?, filters_json = ?, enabled = ?, disabled_reason = ?, \
     updated_at = ? WHERE id = ?";

/// Columns of `webhook_deliveries` (aliased `d`) in the order [`RawDelivery`] is read.
pub(crate) const DELIVERY_COLUMNS: &str = "d.id, d.subscription_id, d.event, d.job_json, \
     d.status, d.attempts, d.created_at, d.window_start, d.next_attempt_at, \
     d.last_status_code, d.last_error, d.completed_at";

pub(crate) const DELIVERY_INSERT: &str = "INSERT INTO webhook_deliveries (id, subscription_id, \
     event, job_id, job_json, status, attempts, created_at, window_start, next_attempt_at, \
     lease_owner, lease_until, last_status_code, last_error, completed_at) VALUES \
     (?, ?, ?, ?, ?, 'pending', 0, ?, ?, ?, NULL, 0, NULL, NULL, NULL)";

/// Due deliveries of enabled subscriptions, oldest due first; parameters: now, now, limit.
pub(crate) const CLAIM_CANDIDATES: &str = "SELECT d.id, d.subscription_id, d.event, \
     d.job_json, d.status, d.attempts, d.created_at, d.window_start, d.next_attempt_at, \
     d.last_status_code, d.last_error, d.completed_at, s.url, s.secret \
     FROM webhook_deliveries d JOIN webhook_subscriptions s ON s.id = d.subscription_id \
     WHERE d.status = 'pending' AND d.next_attempt_at <= ? AND d.lease_until <= ? \
     AND s.enabled = 1 ORDER BY d.next_attempt_at LIMIT ?";

/// The compare-and-set that claims one attempt; parameters from [`claim_params`]. It
/// matches only if nobody claimed or completed an attempt since the candidate was read.
pub(crate) const CLAIM_UPDATE: &str = "UPDATE webhook_deliveries SET lease_owner = ?, \
     lease_until = ?, attempts = attempts + 1 WHERE id = ? AND status = 'pending' \
     AND attempts = ? AND lease_until <= ? AND next_attempt_at <= ?";

pub(crate) fn claim_params(req: &ClaimRequest, id: DeliveryId, attempts: u32) -> Vec<Param> {
    vec![
        req.owner.as_str().into(),
        req.now.saturating_add(req.lease_ns).into(),
        id.into(),
        i64::from(attempts).into(),
        req.now.into(),
        req.now.into(),
    ]
}

/// Records an attempt, only if its delivery still exists (it may have been deleted with its
/// subscription meanwhile); parameters from [`attempt_insert_params`].
pub(crate) const ATTEMPT_INSERT: &str = "INSERT INTO webhook_attempts (delivery_id, attempt, \
     subscription_id, owner, started_at, latency_ms, status_code, error) \
     SELECT ?, ?, ?, ?, ?, ?, ?, ? FROM webhook_deliveries WHERE id = ?";

pub(crate) fn attempt_insert_params(rec: &AttemptRecord) -> Vec<Param> {
    vec![
        rec.delivery_id.into(),
        i64::from(rec.attempt).into(),
        rec.subscription_id.into(),
        clamp_chars(&rec.owner, OWNER_MAX).into(),
        rec.started_at.into(),
        i64::try_from(rec.latency_ms).unwrap_or(i64::MAX).into(),
        rec.status_code.map(i64::from).into(),
        rec.error
            .as_deref()
            .map(|e| clamp_chars(e, ERROR_MAX))
            .into(),
        rec.delivery_id.into(),
    ]
}

/// Ends an attempt, if the caller still holds it; parameters from [`complete_params`].
pub(crate) const DELIVERY_COMPLETE: &str = "UPDATE webhook_deliveries SET status = ?, \
     next_attempt_at = ?, lease_owner = NULL, lease_until = 0, last_status_code = ?, \
     last_error = ?, completed_at = ? WHERE id = ? AND lease_owner = ? AND attempts = ?";

pub(crate) fn complete_params(rec: &AttemptRecord, now: i64) -> Vec<Param> {
    let (status, next, completed) = match rec.outcome {
        AttemptOutcome::Delivered => (DeliveryStatus::Delivered, now, Some(now)),
        AttemptOutcome::Retry { next_attempt_at } => {
            (DeliveryStatus::Pending, next_attempt_at, None)
        }
        AttemptOutcome::Failed | AttemptOutcome::Gone => (DeliveryStatus::Failed, now, Some(now)),
    };
    vec![
        status.as_str().into(),
        next.into(),
        rec.status_code.map(i64::from).into(),
        rec.error
            .as_deref()
            .map(|e| clamp_chars(e, ERROR_MAX))
            .into(),
        completed.into(),
        rec.delivery_id.into(),
        rec.owner.as_str().into(),
        i64::from(rec.attempt).into(),
    ]
}

/// Why a subscription was disabled by a 410.
pub(crate) fn gone_reason(rec: &AttemptRecord) -> String {
    format!(
        "the receiver answered 410 Gone to delivery {} (attempt {})",
        rec.delivery_id, rec.attempt
    )
}

/// Disables a subscription; parameters: reason, now, id.
pub(crate) const SUB_DISABLE: &str = "UPDATE webhook_subscriptions SET enabled = 0, \
     disabled_reason = ?, updated_at = ? WHERE id = ?";

/// Cancels a subscription's pending deliveries; parameters: now, reason, subscription id.
pub(crate) const DELIVERIES_CANCEL: &str = "UPDATE webhook_deliveries SET status = 'cancelled', \
     lease_owner = NULL, lease_until = 0, completed_at = ?, last_error = ? \
     WHERE subscription_id = ? AND status = 'pending'";

/// Makes a delivery due again; parameters: now, now, delivery id, subscription id.
/// The pending backlog; served by the `(status, next_attempt_at)` index.
pub(crate) const DELIVERY_COUNT_PENDING: &str =
    "SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'pending'";

pub(crate) const DELIVERY_REDELIVER: &str = "UPDATE webhook_deliveries SET status = 'pending', \
     next_attempt_at = ?, window_start = ?, completed_at = NULL \
     WHERE id = ? AND subscription_id = ?";

/// Columns of `webhook_attempts` in the order [`raw_attempt`] reads them (after the
/// delivery id).
pub(crate) const ATTEMPT_COLUMNS: &str =
    "delivery_id, attempt, owner, started_at, latency_ms, status_code, error";

/// `SELECT` of a subscription's deliveries, newest first; parameters: id, limit.
pub(crate) fn list_deliveries_sql() -> String {
    format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d WHERE d.subscription_id = ? \
         ORDER BY d.created_at DESC, d.id DESC LIMIT ?"
    )
}

/// `SELECT` of the attempts of `n` deliveries.
pub(crate) fn list_attempts_sql(n: usize) -> String {
    format!(
        "SELECT {ATTEMPT_COLUMNS} FROM webhook_attempts WHERE delivery_id IN ({}) \
         ORDER BY delivery_id, attempt",
        vec!["?"; n].join(", ")
    )
}

/// A subscriptions row as read, before its values are checked.
#[derive(Debug)]
pub(crate) struct RawSubscription {
    pub id: i64,
    pub name: Option<String>,
    pub source: String,
    pub url: String,
    pub secret: String,
    pub events: String,
    pub filters_json: String,
    pub enabled: i64,
    pub disabled_reason: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl TryFrom<RawSubscription> for Subscription {
    type Error = Error;

    fn try_from(r: RawSubscription) -> Result<Subscription> {
        let id = r.id;
        let mut events = BTreeSet::new();
        for e in r.events.split(',').filter(|e| !e.is_empty()) {
            events.insert(
                EventKind::parse(e)
                    .ok_or_else(|| corrupt(format!("subscription {id}: unknown event {e:?}")))?,
            );
        }
        let filters = serde_json::from_str(&r.filters_json).map_err(|e| {
            corrupt(format!(
                "subscription {id}: filters_json is not a JSON object: {e}"
            ))
        })?;
        Ok(Subscription {
            spec: SubscriptionSpec {
                id,
                name: r.name,
                source: SubscriptionSource::parse(&r.source)
                    .ok_or_else(|| corrupt(format!("subscription {id}: source {:?}", r.source)))?,
                url: r.url,
                secret: r.secret,
                events,
                filters,
            },
            enabled: r.enabled != 0,
            disabled_reason: r.disabled_reason,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

fn events_column(events: &BTreeSet<EventKind>) -> String {
    events
        .iter()
        .map(|e| e.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

fn filters_column(filters: &BTreeMap<String, String>) -> String {
    // A map of strings always serialises; the fallback is unreachable in practice.
    serde_json::to_string(filters).unwrap_or_else(|_| "{}".to_owned())
}

/// What an upsert writes: the row, and whether it is new, changed or as it was.
pub(crate) enum Upsert {
    Insert(Subscription),
    Update(Subscription),
    Unchanged(Subscription),
}

/// Upsert rule: a new subscription is enabled; an existing one whose definition changed is
/// rewritten and enabled again (a fixed URL deserves another chance); one that did not
/// change keeps its state, so a subscription disabled by 410 stays disabled across
/// restarts that upsert the same configuration.
pub(crate) fn upsert_rule(
    existing: Option<Subscription>,
    spec: &SubscriptionSpec,
    now: i64,
) -> Upsert {
    match existing {
        None => Upsert::Insert(Subscription {
            spec: spec.clone(),
            enabled: true,
            disabled_reason: None,
            created_at: now,
            updated_at: now,
        }),
        Some(old) if old.spec == *spec => Upsert::Unchanged(old),
        Some(old) => Upsert::Update(Subscription {
            spec: spec.clone(),
            enabled: true,
            disabled_reason: None,
            created_at: old.created_at,
            updated_at: now,
        }),
    }
}

pub(crate) fn sub_insert_params(s: &Subscription) -> Vec<Param> {
    vec![
        s.spec.id.into(),
        s.spec.name.clone().into(),
        s.spec.source.as_str().into(),
        s.spec.url.as_str().into(),
        s.spec.secret.as_str().into(),
        events_column(&s.spec.events).into(),
        filters_column(&s.spec.filters).into(),
        i64::from(s.enabled).into(),
        s.disabled_reason.clone().into(),
        s.created_at.into(),
        s.updated_at.into(),
    ]
}

pub(crate) fn sub_update_params(s: &Subscription) -> Vec<Param> {
    vec![
        s.spec.name.clone().into(),
        s.spec.source.as_str().into(),
        s.spec.url.as_str().into(),
        s.spec.secret.as_str().into(),
        events_column(&s.spec.events).into(),
        filters_column(&s.spec.filters).into(),
        i64::from(s.enabled).into(),
        s.disabled_reason.clone().into(),
        s.updated_at.into(),
        s.spec.id.into(),
    ]
}

/// A deliveries row as read, before its values are checked.
#[derive(Debug)]
pub(crate) struct RawDelivery {
    pub id: i64,
    pub subscription_id: i64,
    pub event: String,
    pub job_json: String,
    pub status: String,
    pub attempts: i64,
    pub created_at: i64,
    pub window_start: i64,
    pub next_attempt_at: i64,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    pub completed_at: Option<i64>,
}

impl TryFrom<RawDelivery> for Delivery {
    type Error = Error;

    fn try_from(r: RawDelivery) -> Result<Delivery> {
        let id = r.id;
        let bad =
            |what: &str, v: &dyn std::fmt::Debug| corrupt(format!("delivery {id}: {what} {v:?}"));
        let event = EventKind::parse(&r.event).ok_or_else(|| bad("event", &r.event))?;
        Ok(Delivery {
            id,
            subscription_id: r.subscription_id,
            event,
            job: match event {
                EventKind::JobStarted | EventKind::JobFinished => Some(
                    serde_json::from_str(&r.job_json)
                        .map_err(|e| corrupt(format!("delivery {id}: job_json: {e}")))?,
                ),
                EventKind::FlowFinished => None,
            },
            data: match event {
                EventKind::JobStarted | EventKind::JobFinished => None,
                EventKind::FlowFinished => Some(
                    serde_json::from_str(&r.job_json)
                        .map_err(|e| corrupt(format!("delivery {id}: data: {e}")))?,
                ),
            },
            status: DeliveryStatus::parse(&r.status).ok_or_else(|| bad("status", &r.status))?,
            attempts: u32::try_from(r.attempts).map_err(|_| bad("attempts", &r.attempts))?,
            created_at: r.created_at,
            window_start: r.window_start,
            next_attempt_at: r.next_attempt_at,
            last_status_code: r
                .last_status_code
                .map(|c| u16::try_from(c).map_err(|_| bad("last_status_code", &c)))
                .transpose()?,
            last_error: r.last_error,
            completed_at: r.completed_at,
        })
    }
}

/// An attempts row as read.
#[derive(Debug)]
pub(crate) struct RawAttempt {
    pub delivery_id: i64,
    pub attempt: i64,
    pub owner: String,
    pub started_at: i64,
    pub latency_ms: i64,
    pub status_code: Option<i64>,
    pub error: Option<String>,
}

impl TryFrom<RawAttempt> for Attempt {
    type Error = Error;

    fn try_from(r: RawAttempt) -> Result<Attempt> {
        let id = r.delivery_id;
        let bad = |what: &str, v: i64| corrupt(format!("delivery {id}: attempt {what} {v}"));
        Ok(Attempt {
            attempt: u32::try_from(r.attempt).map_err(|_| bad("number", r.attempt))?,
            owner: r.owner,
            started_at: r.started_at,
            latency_ms: u64::try_from(r.latency_ms).map_err(|_| bad("latency", r.latency_ms))?,
            status_code: r
                .status_code
                .map(|c| u16::try_from(c).map_err(|_| bad("status", c)))
                .transpose()?,
            error: r.error,
        })
    }
}

/// Groups attempts (ordered by delivery, attempt) under their deliveries.
pub(crate) fn histories(
    deliveries: Vec<Delivery>,
    attempts: Vec<RawAttempt>,
) -> Result<Vec<DeliveryHistory>> {
    let mut by_delivery: BTreeMap<DeliveryId, Vec<Attempt>> = BTreeMap::new();
    for a in attempts {
        let id = a.delivery_id;
        by_delivery
            .entry(id)
            .or_default()
            .push(Attempt::try_from(a)?);
    }
    Ok(deliveries
        .into_iter()
        .map(|d| DeliveryHistory {
            attempts: by_delivery.remove(&d.id).unwrap_or_default(),
            delivery: d,
        })
        .collect())
}

/// The job snapshot stored with a delivery: JSON, without outputs if it would be too large.
pub(crate) fn snapshot_json(job: &Job) -> String {
    let json = serde_json::to_string(job).unwrap_or_else(|_| "{}".to_owned());
    if json.len() <= SNAPSHOT_MAX_BYTES {
        return json;
    }
    tracing::warn!(
        job_id = job.id,
        bytes = json.len(),
        "job snapshot too large for a webhook delivery: outputs left out"
    );
    let mut small = job.clone();
    small.outputs.clear();
    serde_json::to_string(&small).unwrap_or_else(|_| "{}".to_owned())
}

/// The delivery rows for `events`: one per event and matching enabled subscription.
/// Each is `(params of DELIVERY_INSERT)`.
pub(crate) fn deliveries_for(
    events: &[JobEvent],
    subscriptions: &[Subscription],
) -> Vec<Vec<Param>> {
    let mut rows = Vec::new();
    for ev in events {
        let mut json: Option<String> = None;
        for sub in subscriptions
            .iter()
            .filter(|s| s.enabled && s.spec.matches(ev.kind, &ev.job.labels))
        {
            let job_json = json.get_or_insert_with(|| snapshot_json(&ev.job)).clone();
            rows.push(vec![
                random_id().into(),
                sub.spec.id.into(),
                ev.kind.as_str().into(),
                ev.job.id.into(),
                job_json.into(),
                ev.at.into(),
                ev.at.into(),
                ev.at.into(),
            ]);
        }
    }
    rows
}

/// The events of one job write, from the row images captured at each transition.
pub(crate) fn job_events(
    snapshots: Vec<(TransitionKind, Job)>,
    at: i64,
) -> impl Iterator<Item = JobEvent> {
    snapshots.into_iter().map(move |(kind, job)| JobEvent {
        kind: kind.into(),
        job,
        at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(events: &[EventKind], filters: &[(&str, &str)]) -> SubscriptionSpec {
        SubscriptionSpec {
            id: 1,
            name: None,
            source: SubscriptionSource::Api,
            url: "http://x".into(),
            secret: "s".into(),
            events: events.iter().copied().collect(),
            filters: filters
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn matching_needs_the_event_and_every_filter() {
        let labels: BTreeMap<String, String> = [("flow", "release"), ("team", "a")]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let s = spec(&[EventKind::JobFinished], &[("flow", "release")]);
        assert!(s.matches(EventKind::JobFinished, &labels));
        assert!(!s.matches(EventKind::JobStarted, &labels));
        let s = spec(
            &[EventKind::JobFinished],
            &[("flow", "release"), ("team", "b")],
        );
        assert!(!s.matches(EventKind::JobFinished, &labels));
        let s = spec(&[EventKind::JobFinished], &[("missing", "x")]);
        assert!(!s.matches(EventKind::JobFinished, &labels));
        let s = spec(&[EventKind::JobStarted, EventKind::JobFinished], &[]);
        assert!(s.matches(EventKind::JobStarted, &BTreeMap::new()));
    }

    #[test]
    fn event_names_round_trip() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
            assert_eq!(
                serde_json::to_string(&k).unwrap(),
                format!("\"{}\"", k.as_str())
            );
        }
        assert_eq!(EventKind::parse("job.exploded"), None);
    }

    #[test]
    fn upsert_keeps_state_unless_the_definition_changes() {
        let s = spec(&[EventKind::JobFinished], &[]);
        let Upsert::Insert(mut stored) = upsert_rule(None, &s, 5) else {
            panic!("expected insert")
        };
        assert!(stored.enabled);
        stored.enabled = false;
        stored.disabled_reason = Some("410".into());
        match upsert_rule(Some(stored.clone()), &s, 6) {
            Upsert::Unchanged(u) => assert!(!u.enabled),
            _ => panic!("expected unchanged"),
        }
        let mut changed = s.clone();
        changed.url = "http://y".into();
        match upsert_rule(Some(stored), &changed, 7) {
            Upsert::Update(u) => {
                assert!(u.enabled);
                assert_eq!((u.created_at, u.updated_at), (5, 7));
            }
            _ => panic!("expected update"),
        }
    }
}
