//! Webhook subscriptions, the delivery outbox and attempts: the SQL both backends run, the
//! checks and rules around it (upsert, claim, completion, which deliveries an event gets),
//! and the one decoder of each table's rows.

use std::collections::{BTreeMap, BTreeSet};

use super::{clamp_chars, corrupt, Param, RowAccess};
use crate::error::Result;
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

/// The attempt's error, cut to its column.
fn attempt_error(rec: &AttemptRecord) -> Param {
    rec.error
        .as_deref()
        .map(|e| clamp_chars(e, ERROR_MAX))
        .into()
}

pub(crate) fn attempt_insert_params(rec: &AttemptRecord) -> Vec<Param> {
    vec![
        rec.delivery_id.into(),
        i64::from(rec.attempt).into(),
        rec.subscription_id.into(),
        clamp_chars(&rec.owner, OWNER_MAX).into(),
        rec.started_at.into(),
        i64::try_from(rec.latency_ms).unwrap_or(i64::MAX).into(),
        rec.status_code.map(i64::from).into(),
        attempt_error(rec),
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
        attempt_error(rec),
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

/// Reads a `webhook_subscriptions` row selected with [`SUB_COLUMNS`].
pub(crate) fn read_subscription(row: &mut impl RowAccess) -> Result<Subscription> {
    let id: i64 = row.column(0)?;
    let bad =
        |what: &str, v: &dyn std::fmt::Debug| corrupt(format!("subscription {id}: {what} {v:?}"));
    let mut events = BTreeSet::new();
    let listed: String = row.column(5)?;
    for e in listed.split(',').filter(|e| !e.is_empty()) {
        events.insert(EventKind::parse(e).ok_or_else(|| bad("unknown event", &e))?);
    }
    let filters_json: String = row.column(6)?;
    let filters = serde_json::from_str(&filters_json).map_err(|e| {
        corrupt(format!(
            "subscription {id}: filters_json is not a JSON object: {e}"
        ))
    })?;
    let source: String = row.column(2)?;
    let enabled: i64 = row.column(7)?;
    Ok(Subscription {
        spec: SubscriptionSpec {
            id,
            name: row.column(1)?,
            source: SubscriptionSource::parse(&source).ok_or_else(|| bad("source", &source))?,
            url: row.column(3)?,
            secret: row.column(4)?,
            events,
            filters,
        },
        enabled: enabled != 0,
        disabled_reason: row.column(8)?,
        created_at: row.column(9)?,
        updated_at: row.column(10)?,
    })
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

/// The columns [`SUB_INSERT`] and [`SUB_UPDATE`] both set, from `name` to `disabled_reason`.
fn sub_value_params(s: &Subscription) -> Vec<Param> {
    vec![
        s.spec.name.clone().into(),
        s.spec.source.as_str().into(),
        s.spec.url.as_str().into(),
        s.spec.secret.as_str().into(),
        events_column(&s.spec.events).into(),
        filters_column(&s.spec.filters).into(),
        i64::from(s.enabled).into(),
        s.disabled_reason.clone().into(),
    ]
}

pub(crate) fn sub_insert_params(s: &Subscription) -> Vec<Param> {
    let mut params = vec![s.spec.id.into()];
    params.extend(sub_value_params(s));
    params.extend([s.created_at.into(), s.updated_at.into()]);
    params
}

pub(crate) fn sub_update_params(s: &Subscription) -> Vec<Param> {
    let mut params = sub_value_params(s);
    params.extend([s.updated_at.into(), s.spec.id.into()]);
    params
}

/// Reads a `webhook_deliveries` row selected with [`DELIVERY_COLUMNS`] (the first 12
/// columns of [`CLAIM_CANDIDATES`] too).
pub(crate) fn read_delivery(row: &mut impl RowAccess) -> Result<Delivery> {
    let id: i64 = row.column(0)?;
    let bad = |what: &str, v: &dyn std::fmt::Debug| corrupt(format!("delivery {id}: {what} {v:?}"));
    let event: String = row.column(2)?;
    let event = EventKind::parse(&event).ok_or_else(|| bad("event", &event))?;
    // `job_json` holds the job of a job event, or the data of an announced event.
    let json: String = row.column(3)?;
    let (job, data) = match event {
        EventKind::JobStarted | EventKind::JobFinished => (
            Some(
                serde_json::from_str(&json)
                    .map_err(|e| corrupt(format!("delivery {id}: job_json: {e}")))?,
            ),
            None,
        ),
        EventKind::FlowFinished => (
            None,
            Some(
                serde_json::from_str(&json)
                    .map_err(|e| corrupt(format!("delivery {id}: data: {e}")))?,
            ),
        ),
    };
    let status: String = row.column(4)?;
    let attempts: i64 = row.column(5)?;
    let last_status_code: Option<i64> = row.column(9)?;
    Ok(Delivery {
        id,
        subscription_id: row.column(1)?,
        event,
        job,
        data,
        status: DeliveryStatus::parse(&status).ok_or_else(|| bad("status", &status))?,
        attempts: u32::try_from(attempts).map_err(|_| bad("attempts", &attempts))?,
        created_at: row.column(6)?,
        window_start: row.column(7)?,
        next_attempt_at: row.column(8)?,
        last_status_code: last_status_code
            .map(|c| u16::try_from(c).map_err(|_| bad("last_status_code", &c)))
            .transpose()?,
        last_error: row.column(10)?,
        completed_at: row.column(11)?,
    })
}

/// A claim candidate: the delivery as read, with its subscription's URL and secret.
pub(crate) type Candidate = (Delivery, String, String);

/// Reads a row of [`CLAIM_CANDIDATES`]: a delivery, then the URL and the secret.
pub(crate) fn read_candidate(row: &mut impl RowAccess) -> Result<Candidate> {
    let delivery = read_delivery(row)?;
    Ok((delivery, row.column(12)?, row.column(13)?))
}

/// Reads a `webhook_attempts` row selected by [`list_attempts_sql`]: the delivery's id and
/// the attempt.
pub(crate) fn read_attempt(row: &mut impl RowAccess) -> Result<(DeliveryId, Attempt)> {
    let id: i64 = row.column(0)?;
    let bad = |what: &str, v: i64| corrupt(format!("delivery {id}: attempt {what} {v}"));
    let attempt: i64 = row.column(1)?;
    let latency_ms: i64 = row.column(4)?;
    let status_code: Option<i64> = row.column(5)?;
    let attempt = Attempt {
        attempt: u32::try_from(attempt).map_err(|_| bad("number", attempt))?,
        owner: row.column(2)?,
        started_at: row.column(3)?,
        latency_ms: u64::try_from(latency_ms).map_err(|_| bad("latency", latency_ms))?,
        status_code: status_code
            .map(|c| u16::try_from(c).map_err(|_| bad("status", c)))
            .transpose()?,
        error: row.column(6)?,
    };
    Ok((id, attempt))
}

/// Groups attempts (ordered by delivery, attempt) under their deliveries.
pub(crate) fn histories(
    deliveries: Vec<Delivery>,
    attempts: Vec<(DeliveryId, Attempt)>,
) -> Result<Vec<DeliveryHistory>> {
    let mut by_delivery: BTreeMap<DeliveryId, Vec<Attempt>> = BTreeMap::new();
    for (id, a) in attempts {
        by_delivery.entry(id).or_default().push(a);
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
