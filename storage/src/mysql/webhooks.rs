//! MySQL protocol: webhook subscriptions, the delivery outbox, claims, attempts and
//! announced events ([`WebhookStore`]). Portable across TiDB 7.5+, MariaDB 10.11 and
//! MySQL 8: no `SKIP LOCKED` (TiDB lacks it); claims are compare-and-set `UPDATE`s, which
//! every one of them evaluates against the latest committed row.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row, Transaction, TxOpts};
use protocol::now_ns;

use super::conflicts::finish;
use super::{positional, MysqlStorage};
use crate::error::Result;
use crate::model::JobEvent;
use crate::sql::outbox::{event_deliveries, job_deliveries};
use crate::sql::webhooks::{self as wh, read_subscription, Upsert};
use crate::sql::Param;
use crate::webhook_events::{validate as validate_event, EventWrite};
use crate::webhooks::{
    validate_claim, validate_spec, AttemptOutcome, AttemptRecord, ClaimRequest, ClaimedDelivery,
    Delivery, DeliveryHistory, DeliveryId, Subscription, SubscriptionId, SubscriptionSpec,
};
use crate::WebhookStore;

/// Inside `apply`'s transaction: one delivery per event and matching enabled subscription.
pub(super) async fn insert_deliveries(tx: &mut Transaction<'_>, events: &[JobEvent]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let subs = list_subscriptions(tx, None, true).await?;
    if subs.is_empty() {
        return Ok(());
    }
    for row in job_deliveries(events, &subs) {
        tx.exec_drop(wh::DELIVERY_INSERT, positional(row)).await?;
    }
    Ok(())
}

/// All subscriptions (oldest first), the one with `id`, or only the enabled ones.
async fn list_subscriptions<Q: Queryable>(
    q: &mut Q,
    id: Option<SubscriptionId>,
    enabled_only: bool,
) -> Result<Vec<Subscription>> {
    let (sql, params) = wh::list_subscriptions_sql(id, enabled_only);
    let rows: Vec<Row> = q.exec(sql, positional(params)).await?;
    rows.into_iter()
        .map(|mut r| read_subscription(&mut r))
        .collect()
}

async fn upsert_subscription(
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
    let existing = existing
        .map(|mut r| read_subscription(&mut r))
        .transpose()?;
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

async fn delete_subscription(conn: &mut Conn, id: SubscriptionId) -> Result<bool> {
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
async fn claim(conn: &mut Conn, req: &ClaimRequest) -> Result<Vec<ClaimedDelivery>> {
    let rows: Vec<Row> = conn
        .exec(
            wh::CLAIM_CANDIDATES,
            (req.now, req.now, i64::from(req.limit)),
        )
        .await?;
    let candidates = rows
        .into_iter()
        .map(|mut r| wh::read_candidate(&mut r))
        .collect::<Result<Vec<_>>>()?;
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

async fn complete_attempt(conn: &mut Conn, rec: &AttemptRecord, now: i64) -> Result<bool> {
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

async fn list_deliveries(
    conn: &mut Conn,
    subscription: SubscriptionId,
    limit: u32,
) -> Result<Vec<DeliveryHistory>> {
    let rows: Vec<Row> = conn
        .exec(wh::list_deliveries_sql(), (subscription, i64::from(limit)))
        .await?;
    let deliveries = rows
        .into_iter()
        .map(|mut r| wh::read_delivery(&mut r))
        .collect::<Result<Vec<_>>>()?;
    if deliveries.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Param> = deliveries.iter().map(|d| d.id.into()).collect();
    let rows: Vec<Row> = conn
        .exec(wh::list_attempts_sql(ids.len()), positional(ids))
        .await?;
    let attempts = rows
        .into_iter()
        .map(|mut r| wh::read_attempt(&mut r))
        .collect::<Result<Vec<_>>>()?;
    wh::histories(deliveries, attempts)
}

async fn redeliver(
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
    row.map(|mut r| wh::read_delivery(&mut r)).transpose()
}

/// Writes the deliveries of an announced event in one transaction; returns how many were
/// new.
async fn enqueue(conn: &mut Conn, ev: &EventWrite) -> Result<u64> {
    let mut tx = conn.start_transaction(TxOpts::default()).await?;
    let subs = list_subscriptions(&mut tx, None, true).await?;
    let mut added = 0;
    let sql = format!("{} ON DUPLICATE KEY UPDATE id = id", wh::DELIVERY_INSERT);
    for row in event_deliveries(ev, &subs) {
        tx.exec_drop(sql.as_str(), positional(row)).await?;
        added += tx.affected_rows();
    }
    tx.commit().await?;
    Ok(added)
}

#[async_trait::async_trait]
impl WebhookStore for MysqlStorage {
    async fn upsert_subscription(&self, spec: &SubscriptionSpec) -> Result<Subscription> {
        validate_spec(spec)?;
        self.bounded("upsert_subscription", async {
            let mut conn = self.conn().await?;
            upsert_subscription(&mut conn, spec, now_ns()).await
        })
        .await
    }

    async fn list_subscriptions(&self) -> Result<Vec<Subscription>> {
        self.bounded("list_subscriptions", async {
            let mut conn = self.conn().await?;
            list_subscriptions(&mut conn, None, false).await
        })
        .await
    }

    async fn get_subscription(&self, id: SubscriptionId) -> Result<Option<Subscription>> {
        self.bounded("get_subscription", async {
            let mut conn = self.conn().await?;
            Ok(list_subscriptions(&mut conn, Some(id), false).await?.pop())
        })
        .await
    }

    async fn delete_subscription(&self, id: SubscriptionId) -> Result<bool> {
        self.bounded("delete_subscription", async {
            let mut conn = self.conn().await?;
            delete_subscription(&mut conn, id).await
        })
        .await
    }

    async fn claim_deliveries(&self, req: &ClaimRequest) -> Result<Vec<ClaimedDelivery>> {
        validate_claim(req)?;
        self.bounded("claim_deliveries", async {
            let mut conn = self.conn().await?;
            claim(&mut conn, req).await
        })
        .await
    }

    async fn complete_attempt(&self, rec: &AttemptRecord) -> Result<bool> {
        self.bounded("complete_attempt", async {
            let mut conn = self.conn().await?;
            complete_attempt(&mut conn, rec, now_ns()).await
        })
        .await
    }

    async fn list_deliveries(
        &self,
        subscription: SubscriptionId,
        limit: u32,
    ) -> Result<Vec<DeliveryHistory>> {
        self.bounded("list_deliveries", async {
            let mut conn = self.conn().await?;
            list_deliveries(&mut conn, subscription, limit).await
        })
        .await
    }

    async fn redeliver(
        &self,
        subscription: SubscriptionId,
        delivery: DeliveryId,
        now: i64,
    ) -> Result<Option<Delivery>> {
        self.bounded("redeliver", async {
            let mut conn = self.conn().await?;
            redeliver(&mut conn, subscription, delivery, now).await
        })
        .await
    }

    async fn count_pending_deliveries(&self) -> Result<u64> {
        self.bounded("count_pending_deliveries", async {
            let mut conn = self.conn().await?;
            let n: Option<u64> = conn.query_first(wh::DELIVERY_COUNT_PENDING).await?;
            Ok(n.unwrap_or(0))
        })
        .await
    }

    async fn enqueue_event(&self, event: &EventWrite) -> Result<u64> {
        validate_event(event)?;
        self.bounded("enqueue_event", async {
            let mut conn = self.conn().await?;
            enqueue(&mut conn, event).await
        })
        .await
    }
}
