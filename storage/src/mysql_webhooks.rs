//! The MySQL-protocol side of webhooks: schema version 2 and the subscription, outbox,
//! claim and attempt operations. Portable across TiDB 7.5+, MariaDB 10.11 and MySQL 8: no
//! `SKIP LOCKED` (TiDB lacks it); claims are compare-and-set `UPDATE`s, which every one of
//! them evaluates against the latest committed row.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, Transaction, TxOpts};

use crate::error::Result;
use crate::mysql::{positional, take};
use crate::shared::Param;
use crate::webhooks::{
    self as wh, AttemptOutcome, AttemptRecord, ClaimRequest, ClaimedDelivery, Delivery,
    DeliveryHistory, DeliveryId, JobEvent, RawAttempt, RawDelivery, RawSubscription, Subscription,
    SubscriptionId, SubscriptionSpec, Upsert,
};

/// Schema version 2: subscriptions, the delivery outbox and its attempts (see
/// `docs/storage.md`). Keys lead with random 64-bit ids; the due-index
/// `(status, next_attempt_at)` is small (pending rows only matter) and read by polls.
pub(crate) const MIGRATION_2: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS webhook_subscriptions (
        id BIGINT NOT NULL,
        name VARCHAR(255) NULL,
        source VARCHAR(16) NOT NULL,
        url VARCHAR(2048) NOT NULL,
        secret VARCHAR(1024) NOT NULL,
        events VARCHAR(255) NOT NULL,
        filters_json TEXT NOT NULL,
        enabled TINYINT NOT NULL,
        disabled_reason VARCHAR(1024) NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (id) /*T![clustered_index] CLUSTERED */
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    "CREATE TABLE IF NOT EXISTS webhook_deliveries (
        id BIGINT NOT NULL,
        subscription_id BIGINT NOT NULL,
        event VARCHAR(32) NOT NULL,
        job_id BIGINT NOT NULL,
        job_json MEDIUMTEXT NOT NULL,
        status VARCHAR(16) NOT NULL,
        attempts INT NOT NULL DEFAULT 0,
        created_at BIGINT NOT NULL,
        window_start BIGINT NOT NULL,
        next_attempt_at BIGINT NOT NULL,
        lease_owner VARCHAR(64) NULL,
        lease_until BIGINT NOT NULL DEFAULT 0,
        last_status_code INT NULL,
        last_error VARCHAR(1024) NULL,
        completed_at BIGINT NULL,
        PRIMARY KEY (id) /*T![clustered_index] CLUSTERED */,
        KEY idx_webhook_deliveries_due (status, next_attempt_at),
        KEY idx_webhook_deliveries_subscription (subscription_id, created_at)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    "CREATE TABLE IF NOT EXISTS webhook_attempts (
        delivery_id BIGINT NOT NULL,
        attempt INT NOT NULL,
        subscription_id BIGINT NOT NULL,
        owner VARCHAR(64) NOT NULL,
        started_at BIGINT NOT NULL,
        latency_ms BIGINT NOT NULL,
        status_code INT NULL,
        error VARCHAR(1024) NULL,
        PRIMARY KEY (delivery_id, attempt) /*T![clustered_index] CLUSTERED */,
        KEY idx_webhook_attempts_subscription (subscription_id)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
];

fn raw_subscription(mut r: Row) -> Result<Subscription> {
    Subscription::try_from(RawSubscription {
        id: take(&mut r, 0)?,
        name: take(&mut r, 1)?,
        source: take(&mut r, 2)?,
        url: take(&mut r, 3)?,
        secret: take(&mut r, 4)?,
        events: take(&mut r, 5)?,
        filters_json: take(&mut r, 6)?,
        enabled: take(&mut r, 7)?,
        disabled_reason: take(&mut r, 8)?,
        created_at: take(&mut r, 9)?,
        updated_at: take(&mut r, 10)?,
    })
}

fn raw_delivery(r: &mut Row) -> Result<Delivery> {
    Delivery::try_from(RawDelivery {
        id: take(r, 0)?,
        subscription_id: take(r, 1)?,
        event: take(r, 2)?,
        job_json: take(r, 3)?,
        status: take(r, 4)?,
        attempts: take(r, 5)?,
        created_at: take(r, 6)?,
        window_start: take(r, 7)?,
        next_attempt_at: take(r, 8)?,
        last_status_code: take(r, 9)?,
        last_error: take(r, 10)?,
        completed_at: take(r, 11)?,
    })
}

fn raw_attempt(mut r: Row) -> Result<RawAttempt> {
    Ok(RawAttempt {
        delivery_id: take(&mut r, 0)?,
        attempt: take(&mut r, 1)?,
        owner: take(&mut r, 2)?,
        started_at: take(&mut r, 3)?,
        latency_ms: take(&mut r, 4)?,
        status_code: take(&mut r, 5)?,
        error: take(&mut r, 6)?,
    })
}

/// Inside `apply`'s transaction: one delivery per event and matching enabled subscription.
pub(crate) async fn insert_deliveries(tx: &mut Transaction<'_>, events: &[JobEvent]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let subs = list_subscriptions(tx, None, true).await?;
    if subs.is_empty() {
        return Ok(());
    }
    for row in wh::deliveries_for(events, &subs) {
        tx.exec_drop(wh::DELIVERY_INSERT, positional(row)).await?;
    }
    Ok(())
}

/// All subscriptions (oldest first), the one with `id`, or only the enabled ones.
pub(crate) async fn list_subscriptions<Q: Queryable>(
    q: &mut Q,
    id: Option<SubscriptionId>,
    enabled_only: bool,
) -> Result<Vec<Subscription>> {
    let mut conds = Vec::new();
    let mut params: Vec<Param> = Vec::new();
    if let Some(id) = id {
        conds.push("id = ?");
        params.push(id.into());
    }
    if enabled_only {
        conds.push("enabled = 1");
    }
    let mut sql = format!("SELECT {} FROM webhook_subscriptions", wh::SUB_COLUMNS);
    if !conds.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conds.join(" AND "));
    }
    sql.push_str(" ORDER BY created_at, id");
    let rows: Vec<Row> = q.exec(sql, positional(params)).await?;
    rows.into_iter().map(raw_subscription).collect()
}

/// Commits `result`'s transaction, or rolls it back and returns the error.
async fn finish<T>(tx: Transaction<'_>, result: Result<T>) -> Result<T> {
    match result {
        Ok(v) => {
            tx.commit().await?;
            Ok(v)
        }
        Err(e) => {
            // A failed rollback means a broken connection; the server rolls back on close.
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}

pub(crate) async fn upsert_subscription(
    conn: &mut Conn,
    spec: &SubscriptionSpec,
    now: i64,
) -> Result<Subscription> {
    let mut tx = conn.start_transaction(TxOpts::default()).await?;
    let result = upsert_in(&mut tx, spec, now).await;
    finish(tx, result).await
}

async fn upsert_in(
    tx: &mut Transaction<'_>,
    spec: &SubscriptionSpec,
    now: i64,
) -> Result<Subscription> {
    // FOR UPDATE: two replicas upserting the same config subscription at start take turns.
    let sql = format!(
        "SELECT {} FROM webhook_subscriptions WHERE id = ? FOR UPDATE",
        wh::SUB_COLUMNS
    );
    let existing: Option<Row> = tx.exec_first(sql, (spec.id,)).await?;
    let existing = existing.map(raw_subscription).transpose()?;
    match wh::upsert_rule(existing, spec, now) {
        Upsert::Insert(s) => {
            // A concurrent insert of the same id between our SELECT and INSERT leaves the
            // other's row (same definition: it comes from the same configuration).
            let sql = format!("{} ON DUPLICATE KEY UPDATE id = id", wh::SUB_INSERT);
            tx.exec_drop(sql, positional(wh::sub_insert_params(&s)))
                .await?;
            Ok(s)
        }
        Upsert::Update(s) => {
            tx.exec_drop(wh::SUB_UPDATE, positional(wh::sub_update_params(&s)))
                .await?;
            Ok(s)
        }
        Upsert::Unchanged(s) => Ok(s),
    }
}

pub(crate) async fn delete_subscription(conn: &mut Conn, id: SubscriptionId) -> Result<bool> {
    let mut tx = conn.start_transaction(TxOpts::default()).await?;
    let result = async {
        tx.exec_drop(
            "DELETE FROM webhook_attempts WHERE subscription_id = ?",
            (id,),
        )
        .await?;
        tx.exec_drop(
            "DELETE FROM webhook_deliveries WHERE subscription_id = ?",
            (id,),
        )
        .await?;
        tx.exec_drop("DELETE FROM webhook_subscriptions WHERE id = ?", (id,))
            .await?;
        Ok(tx.affected_rows() > 0)
    }
    .await;
    finish(tx, result).await
}

/// Reads due candidates without locking, then claims each with an autocommit
/// compare-and-set; a candidate another process claimed first matches no row.
pub(crate) async fn claim(conn: &mut Conn, req: &ClaimRequest) -> Result<Vec<ClaimedDelivery>> {
    let rows: Vec<Row> = conn
        .exec(
            wh::CLAIM_CANDIDATES,
            (req.now, req.now, i64::from(req.limit)),
        )
        .await?;
    let mut candidates = Vec::with_capacity(rows.len());
    for mut r in rows {
        let d = raw_delivery(&mut r)?;
        let url: String = take(&mut r, 12)?;
        let secret: String = take(&mut r, 13)?;
        candidates.push((d, url, secret));
    }
    let mut claimed = Vec::new();
    for (mut delivery, url, secret) in candidates {
        conn.exec_drop(
            wh::CLAIM_UPDATE,
            positional(wh::claim_params(req, delivery.id, delivery.attempts)),
        )
        .await?;
        if conn.affected_rows() == 1 {
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
    Ok(claimed)
}

pub(crate) async fn complete_attempt(
    conn: &mut Conn,
    rec: &AttemptRecord,
    now: i64,
) -> Result<bool> {
    let mut tx = conn.start_transaction(TxOpts::default()).await?;
    let result = async {
        // The UPDATE first: it takes the row's exclusive lock before INSERT … SELECT reads it.
        tx.exec_drop(
            wh::DELIVERY_COMPLETE,
            positional(wh::complete_params(rec, now)),
        )
        .await?;
        let held = tx.affected_rows() == 1;
        tx.exec_drop(
            wh::ATTEMPT_INSERT,
            positional(wh::attempt_insert_params(rec)),
        )
        .await?;
        if rec.outcome == AttemptOutcome::Gone {
            let reason = wh::gone_reason(rec);
            tx.exec_drop(wh::SUB_DISABLE, (reason.as_str(), now, rec.subscription_id))
                .await?;
            tx.exec_drop(
                wh::DELIVERIES_CANCEL,
                (now, reason.as_str(), rec.subscription_id),
            )
            .await?;
        }
        Ok(held)
    }
    .await;
    finish(tx, result).await
}

pub(crate) async fn list_deliveries(
    conn: &mut Conn,
    subscription: SubscriptionId,
    limit: u32,
) -> Result<Vec<DeliveryHistory>> {
    let rows: Vec<Row> = conn
        .exec(wh::list_deliveries_sql(), (subscription, i64::from(limit)))
        .await?;
    let mut deliveries = Vec::with_capacity(rows.len());
    for mut r in rows {
        deliveries.push(raw_delivery(&mut r)?);
    }
    if deliveries.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Param> = deliveries.iter().map(|d| d.id.into()).collect();
    let rows: Vec<Row> = conn
        .exec(wh::list_attempts_sql(ids.len()), positional(ids))
        .await?;
    let attempts = rows
        .into_iter()
        .map(raw_attempt)
        .collect::<Result<Vec<_>>>()?;
    wh::histories(deliveries, attempts)
}

pub(crate) async fn redeliver(
    conn: &mut Conn,
    subscription: SubscriptionId,
    delivery: DeliveryId,
    now: i64,
) -> Result<Option<Delivery>> {
    conn.exec_drop(wh::DELIVERY_REDELIVER, (now, now, delivery, subscription))
        .await?;
    // affected_rows counts changed rows: a delivery already due now changes nothing, so
    // existence is decided by reading it back.
    let sql = format!(
        "SELECT {} FROM webhook_deliveries d WHERE d.id = ? AND d.subscription_id = ?",
        wh::DELIVERY_COLUMNS
    );
    let row: Option<Row> = conn.exec_first(sql, (delivery, subscription)).await?;
    row.map(|mut r| raw_delivery(&mut r)).transpose()
}
