//! The SQLite side of webhooks: schema version 2 and the subscription, outbox, claim and
//! attempt operations, on the connections `sqlite.rs` hands out (blocking code, run in
//! `spawn_blocking` there).

use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use crate::error::Result;
use crate::shared::Param;
use crate::sqlite::values;
use crate::webhooks::{
    self as wh, AttemptOutcome, AttemptRecord, ClaimRequest, ClaimedDelivery, Delivery,
    DeliveryHistory, DeliveryId, JobEvent, RawAttempt, RawDelivery, RawSubscription, Subscription,
    SubscriptionId, SubscriptionSpec, Upsert,
};

/// Schema version 2: subscriptions, the delivery outbox and its attempts (see
/// `docs/storage.md`). Same limits as the MySQL schema, checked by CHECK constraints.
pub(crate) const MIGRATION_2: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS webhook_subscriptions (
        id INTEGER NOT NULL PRIMARY KEY,
        name TEXT NULL CHECK (length(name) <= 255),
        source TEXT NOT NULL CHECK (length(source) <= 16),
        url TEXT NOT NULL CHECK (length(url) <= 2048),
        secret TEXT NOT NULL CHECK (length(secret) <= 1024),
        events TEXT NOT NULL CHECK (length(events) <= 255),
        filters_json TEXT NOT NULL,
        enabled INTEGER NOT NULL,
        disabled_reason TEXT NULL CHECK (length(disabled_reason) <= 1024),
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    ) STRICT",
    "CREATE TABLE IF NOT EXISTS webhook_deliveries (
        id INTEGER NOT NULL PRIMARY KEY,
        subscription_id INTEGER NOT NULL,
        event TEXT NOT NULL CHECK (length(event) <= 32),
        job_id INTEGER NOT NULL,
        job_json TEXT NOT NULL,
        status TEXT NOT NULL CHECK (length(status) <= 16),
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        window_start INTEGER NOT NULL,
        next_attempt_at INTEGER NOT NULL,
        lease_owner TEXT NULL CHECK (length(lease_owner) <= 64),
        lease_until INTEGER NOT NULL DEFAULT 0,
        last_status_code INTEGER NULL,
        last_error TEXT NULL CHECK (length(last_error) <= 1024),
        completed_at INTEGER NULL
    ) STRICT",
    "CREATE INDEX IF NOT EXISTS idx_webhook_deliveries_due
        ON webhook_deliveries (status, next_attempt_at)",
    "CREATE INDEX IF NOT EXISTS idx_webhook_deliveries_subscription
        ON webhook_deliveries (subscription_id, created_at)",
    "CREATE TABLE IF NOT EXISTS webhook_attempts (
        delivery_id INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        subscription_id INTEGER NOT NULL,
        owner TEXT NOT NULL CHECK (length(owner) <= 64),
        started_at INTEGER NOT NULL,
        latency_ms INTEGER NOT NULL,
        status_code INTEGER NULL,
        error TEXT NULL CHECK (length(error) <= 1024),
        PRIMARY KEY (delivery_id, attempt)
    ) STRICT, WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS idx_webhook_attempts_subscription
        ON webhook_attempts (subscription_id)",
];

fn raw_subscription(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawSubscription> {
    Ok(RawSubscription {
        id: r.get(0)?,
        name: r.get(1)?,
        source: r.get(2)?,
        url: r.get(3)?,
        secret: r.get(4)?,
        events: r.get(5)?,
        filters_json: r.get(6)?,
        enabled: r.get(7)?,
        disabled_reason: r.get(8)?,
        created_at: r.get(9)?,
        updated_at: r.get(10)?,
    })
}

fn raw_delivery(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawDelivery> {
    Ok(RawDelivery {
        id: r.get(0)?,
        subscription_id: r.get(1)?,
        event: r.get(2)?,
        job_json: r.get(3)?,
        status: r.get(4)?,
        attempts: r.get(5)?,
        created_at: r.get(6)?,
        window_start: r.get(7)?,
        next_attempt_at: r.get(8)?,
        last_status_code: r.get(9)?,
        last_error: r.get(10)?,
        completed_at: r.get(11)?,
    })
}

fn raw_attempt(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawAttempt> {
    Ok(RawAttempt {
        delivery_id: r.get(0)?,
        attempt: r.get(1)?,
        owner: r.get(2)?,
        started_at: r.get(3)?,
        latency_ms: r.get(4)?,
        status_code: r.get(5)?,
        error: r.get(6)?,
    })
}

/// Inside `apply`'s transaction: one delivery per event and matching enabled subscription.
pub(crate) fn insert_deliveries(tx: &Transaction<'_>, events: &[JobEvent]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let subs = list_enabled(tx)?;
    if subs.is_empty() {
        return Ok(());
    }
    let mut insert = tx.prepare_cached(wh::DELIVERY_INSERT)?;
    for row in wh::deliveries_for(events, &subs) {
        insert.execute(values(row))?;
    }
    Ok(())
}

pub(crate) fn list_enabled(conn: &Connection) -> Result<Vec<Subscription>> {
    let sql = format!(
        "SELECT {} FROM webhook_subscriptions WHERE enabled = 1",
        wh::SUB_COLUMNS
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([], raw_subscription)?;
    let mut subs = Vec::new();
    for raw in rows {
        subs.push(Subscription::try_from(raw?)?);
    }
    Ok(subs)
}

/// All subscriptions (oldest first), or the one with `id`.
pub(crate) fn list_subscriptions(
    conn: &Connection,
    id: Option<SubscriptionId>,
) -> Result<Vec<Subscription>> {
    let (cond, params): (&str, Vec<Param>) = match id {
        Some(id) => (" WHERE id = ?", vec![id.into()]),
        None => ("", Vec::new()),
    };
    let sql = format!(
        "SELECT {} FROM webhook_subscriptions{cond} ORDER BY created_at, id",
        wh::SUB_COLUMNS
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(values(params), raw_subscription)?;
    let mut subs = Vec::new();
    for raw in rows {
        subs.push(Subscription::try_from(raw?)?);
    }
    Ok(subs)
}

pub(crate) fn upsert_subscription(
    conn: &mut Connection,
    spec: &SubscriptionSpec,
    now: i64,
) -> Result<Subscription> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let existing = list_subscriptions(&tx, Some(spec.id))?.pop();
    let sub = match wh::upsert_rule(existing, spec, now) {
        Upsert::Insert(s) => {
            tx.prepare_cached(wh::SUB_INSERT)?
                .execute(values(wh::sub_insert_params(&s)))?;
            s
        }
        Upsert::Update(s) => {
            tx.prepare_cached(wh::SUB_UPDATE)?
                .execute(values(wh::sub_update_params(&s)))?;
            s
        }
        Upsert::Unchanged(s) => s,
    };
    tx.commit()?;
    Ok(sub)
}

pub(crate) fn delete_subscription(conn: &mut Connection, id: SubscriptionId) -> Result<bool> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        "DELETE FROM webhook_attempts WHERE subscription_id = ?",
        [id],
    )?;
    tx.execute(
        "DELETE FROM webhook_deliveries WHERE subscription_id = ?",
        [id],
    )?;
    let n = tx.execute("DELETE FROM webhook_subscriptions WHERE id = ?", [id])?;
    tx.commit()?;
    Ok(n > 0)
}

/// A candidate: the delivery as read, with its subscription's URL and secret.
pub(crate) type Candidate = (Delivery, String, String);

pub(crate) fn claim_candidates(conn: &Connection, req: &ClaimRequest) -> Result<Vec<Candidate>> {
    let mut stmt = conn.prepare_cached(wh::CLAIM_CANDIDATES)?;
    let rows = stmt.query_map(params![req.now, req.now, i64::from(req.limit)], |r| {
        Ok((
            raw_delivery(r)?,
            r.get::<_, String>(12)?,
            r.get::<_, String>(13)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (raw, url, secret) = row?;
        out.push((Delivery::try_from(raw)?, url, secret));
    }
    Ok(out)
}

/// Claims each candidate with the compare-and-set; those another claimer got first are
/// skipped.
pub(crate) fn claim(
    conn: &mut Connection,
    req: &ClaimRequest,
    candidates: Vec<Candidate>,
) -> Result<Vec<ClaimedDelivery>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut claimed = Vec::new();
    {
        let mut update = tx.prepare_cached(wh::CLAIM_UPDATE)?;
        for (mut delivery, url, secret) in candidates {
            let n = update.execute(values(wh::claim_params(
                req,
                delivery.id,
                delivery.attempts,
            )))?;
            if n == 1 {
                delivery.attempts += 1;
                claimed.push(ClaimedDelivery {
                    attempt: delivery.attempts,
                    lease_until: req.now.saturating_add(req.lease_ns),
                    delivery,
                    url,
                    secret,
                });
            }
        }
    }
    tx.commit()?;
    Ok(claimed)
}

pub(crate) fn complete_attempt(
    conn: &mut Connection,
    rec: &AttemptRecord,
    now: i64,
) -> Result<bool> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.prepare_cached(wh::ATTEMPT_INSERT)?
        .execute(values(wh::attempt_insert_params(rec)))?;
    let held = tx
        .prepare_cached(wh::DELIVERY_COMPLETE)?
        .execute(values(wh::complete_params(rec, now)))?
        == 1;
    if rec.outcome == AttemptOutcome::Gone {
        let reason = wh::gone_reason(rec);
        tx.prepare_cached(wh::SUB_DISABLE)?
            .execute(params![reason, now, rec.subscription_id])?;
        tx.prepare_cached(wh::DELIVERIES_CANCEL)?.execute(params![
            now,
            reason,
            rec.subscription_id
        ])?;
    }
    tx.commit()?;
    Ok(held)
}

pub(crate) fn list_deliveries(
    conn: &Connection,
    subscription: SubscriptionId,
    limit: u32,
) -> Result<Vec<DeliveryHistory>> {
    let deliveries = {
        let mut stmt = conn.prepare_cached(&wh::list_deliveries_sql())?;
        let rows = stmt.query_map(params![subscription, i64::from(limit)], raw_delivery)?;
        let mut out = Vec::new();
        for raw in rows {
            out.push(Delivery::try_from(raw?)?);
        }
        out
    };
    if deliveries.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Param> = deliveries.iter().map(|d| d.id.into()).collect();
    let mut stmt = conn.prepare(&wh::list_attempts_sql(ids.len()))?;
    let rows = stmt.query_map(values(ids), raw_attempt)?;
    let mut attempts = Vec::new();
    for raw in rows {
        attempts.push(raw?);
    }
    wh::histories(deliveries, attempts)
}

pub(crate) fn redeliver(
    conn: &mut Connection,
    subscription: SubscriptionId,
    delivery: DeliveryId,
    now: i64,
) -> Result<Option<Delivery>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let n = tx.prepare_cached(wh::DELIVERY_REDELIVER)?.execute(params![
        now,
        now,
        delivery,
        subscription
    ])?;
    if n == 0 {
        return Ok(None);
    }
    let sql = format!(
        "SELECT {} FROM webhook_deliveries d WHERE d.id = ?",
        wh::DELIVERY_COLUMNS
    );
    let raw = tx
        .prepare_cached(&sql)?
        .query_row([delivery], raw_delivery)
        .optional()?;
    let d = raw.map(Delivery::try_from).transpose()?;
    tx.commit()?;
    Ok(d)
}
