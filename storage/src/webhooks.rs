//! Webhook subscriptions and the delivery outbox: what is stored and what is accepted (the
//! SQL and the rules both backends share are in `sql/webhooks.rs` and `sql/outbox.rs`).
//!
//! A delivery is written by [`crate::JobStore::apply`] in the same transaction that records
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
use crate::model::Job;
pub use crate::model::{EventKind, JobEvent};

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

fn invalid(message: String) -> Error {
    Error::new(ErrorKind::Invalid, message)
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A subscription spec for unit tests (also used by `sql::webhooks`'s tests).
    pub(crate) fn spec(events: &[EventKind], filters: &[(&str, &str)]) -> SubscriptionSpec {
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
}
