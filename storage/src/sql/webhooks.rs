//! Webhook subscriptions, the delivery outbox and attempts: the SQL both backends run, the
//! checks and rules around it (upsert, claim, completion, which deliveries an event gets),
//! and the one decoder of each table's rows.

use std::collections::{BTreeMap, BTreeSet};

use super::{clamp_chars, corrupt, Param, RowAccess};
use crate::error::{Error, Result};
use crate::model::EventKind;
use crate::webhooks::{
    Attempt, AttemptOutcome, AttemptRecord, ClaimRequest, Delivery, DeliveryHistory, DeliveryId,
    DeliveryStatus, Subscription, SubscriptionId, SubscriptionSource, SubscriptionSpec, ERROR_MAX,
    OWNER_MAX,
};

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

/// `SELECT` of every subscription (oldest first), the one with `id`, or only the enabled
/// ones, with its parameters.
pub(crate) fn list_subscriptions_sql(
    id: Option<SubscriptionId>,
    enabled_only: bool,
) -> (String, Vec<Param>) {
    let mut conds = Vec::new();
    let mut params: Vec<Param> = Vec::new();
    if let Some(id) = id {
        conds.push("id = ?");
        params.push(id.into());
    }
    if enabled_only {
        conds.push("enabled = 1");
    }
    let mut sql = format!("SELECT {} FROM webhook_subscriptions", SUB_COLUMNS);
    if !conds.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conds.join(" AND "));
    }
    sql.push_str(" ORDER BY created_at, id");
    (sql, params)
}

/// A subscriptions row as read, before its values are checked.
#[derive(Debug)]
struct RawSubscription {
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

/// Reads a `webhook_subscriptions` row selected with [`SUB_COLUMNS`].
pub(crate) fn read_subscription(row: &mut impl RowAccess) -> Result<Subscription> {
    let r = RawSubscription {
        id: row.column(0)?,
        name: row.column(1)?,
        source: row.column(2)?,
        url: row.column(3)?,
        secret: row.column(4)?,
        events: row.column(5)?,
        filters_json: row.column(6)?,
        enabled: row.column(7)?,
        disabled_reason: row.column(8)?,
        created_at: row.column(9)?,
        updated_at: row.column(10)?,
    };
    {
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
struct RawDelivery {
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

/// Reads a `webhook_deliveries` row selected with [`DELIVERY_COLUMNS`] (the first 12
/// columns of [`CLAIM_CANDIDATES`] too).
pub(crate) fn read_delivery(row: &mut impl RowAccess) -> Result<Delivery> {
    let r = RawDelivery {
        id: row.column(0)?,
        subscription_id: row.column(1)?,
        event: row.column(2)?,
        job_json: row.column(3)?,
        status: row.column(4)?,
        attempts: row.column(5)?,
        created_at: row.column(6)?,
        window_start: row.column(7)?,
        next_attempt_at: row.column(8)?,
        last_status_code: row.column(9)?,
        last_error: row.column(10)?,
        completed_at: row.column(11)?,
    };
    {
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

/// A claim candidate: the delivery as read, with its subscription's URL and secret.
pub(crate) type Candidate = (Delivery, String, String);

/// Reads a row of [`CLAIM_CANDIDATES`]: a delivery, then the URL and the secret.
pub(crate) fn read_candidate(row: &mut impl RowAccess) -> Result<Candidate> {
    let delivery = read_delivery(row)?;
    Ok((delivery, row.column(12)?, row.column(13)?))
}

/// Reads a `webhook_attempts` row selected by [`list_attempts_sql`].
pub(crate) fn read_attempt(row: &mut impl RowAccess) -> Result<RawAttempt> {
    Ok(RawAttempt {
        delivery_id: row.column(0)?,
        attempt: row.column(1)?,
        owner: row.column(2)?,
        started_at: row.column(3)?,
        latency_ms: row.column(4)?,
        status_code: row.column(5)?,
        error: row.column(6)?,
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhooks::tests::spec;

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
