//! SQLite: webhook subscriptions, the delivery outbox, claims, attempts and announced
//! events ([`WebhookStore`]), on the connections `mod.rs` hands out (blocking code, run in
//! `spawn_blocking` there).

use protocol::now_ns;
use rusqlite::{params, Connection, Transaction, TransactionBehavior};

use super::{query_all, query_opt, values, SqliteStorage};
use crate::error::Result;
use crate::model::JobEvent;
use crate::sql::outbox::{event_deliveries, job_deliveries};
use crate::sql::webhooks::{self as wh, read_subscription, Candidate, Upsert};
use crate::sql::Param;
use crate::webhook_events::{validate as validate_event, EventWrite};
use crate::webhooks::{
    validate_claim, validate_spec, AttemptOutcome, AttemptRecord, ClaimRequest, ClaimedDelivery,
    Delivery, DeliveryHistory, DeliveryId, Subscription, SubscriptionId, SubscriptionSpec,
};
use crate::WebhookStore;

/// Inside `apply`'s transaction: one delivery per event and matching enabled subscription.
pub(super) fn insert_deliveries(tx: &Transaction<'_>, events: &[JobEvent]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let subs = list_enabled(tx)?;
    if subs.is_empty() {
        return Ok(());
    }
    let mut insert = tx.prepare_cached(wh::DELIVERY_INSERT)?;
    for row in job_deliveries(events, &subs) {
        insert.execute(values(row))?;
    }
    Ok(())
}

fn list_enabled(conn: &Connection) -> Result<Vec<Subscription>> {
    let (sql, params) = wh::list_subscriptions_sql(None, true);
    query_all(conn, &sql, params, |r| read_subscription(r))
}

/// All subscriptions (oldest first), or the one with `id`.
fn list_subscriptions(conn: &Connection, id: Option<SubscriptionId>) -> Result<Vec<Subscription>> {
    let (sql, params) = wh::list_subscriptions_sql(id, false);
    query_all(conn, &sql, params, |r| read_subscription(r))
}

fn upsert_subscription(
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

fn delete_subscription(conn: &mut Connection, id: SubscriptionId) -> Result<bool> {
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

fn claim_candidates(conn: &Connection, req: &ClaimRequest) -> Result<Vec<Candidate>> {
    let params = vec![req.now.into(), req.now.into(), i64::from(req.limit).into()];
    query_all(conn, wh::CLAIM_CANDIDATES, params, |r| {
        wh::read_candidate(r)
    })
}

/// Claims each candidate with the compare-and-set; those another claimer got first are
/// skipped.
fn claim(
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

fn complete_attempt(conn: &mut Connection, rec: &AttemptRecord, now: i64) -> Result<bool> {
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

fn list_deliveries(
    conn: &Connection,
    subscription: SubscriptionId,
    limit: u32,
) -> Result<Vec<DeliveryHistory>> {
    let params = vec![subscription.into(), i64::from(limit).into()];
    let deliveries = query_all(conn, &wh::list_deliveries_sql(), params, |r| {
        wh::read_delivery(r)
    })?;
    if deliveries.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Param> = deliveries.iter().map(|d| d.id.into()).collect();
    let attempts = query_all(conn, &wh::list_attempts_sql(ids.len()), ids, |r| {
        wh::read_attempt(r)
    })?;
    wh::histories(deliveries, attempts)
}

fn redeliver(
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
    let d = query_opt(&tx, &sql, vec![delivery.into()], |r| wh::read_delivery(r))?;
    tx.commit()?;
    Ok(d)
}

/// Writes the deliveries of an announced event; returns how many were new.
fn enqueue(conn: &mut Connection, ev: &EventWrite) -> Result<u64> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let subs = list_enabled(&tx)?;
    let mut added = 0;
    {
        let sql = format!("{} ON CONFLICT (id) DO NOTHING", wh::DELIVERY_INSERT);
        let mut insert = tx.prepare_cached(&sql)?;
        for row in event_deliveries(ev, &subs) {
            added += insert.execute(values(row))? as u64;
        }
    }
    tx.commit()?;
    Ok(added)
}

#[async_trait::async_trait]
impl WebhookStore for SqliteStorage {
    async fn upsert_subscription(&self, spec: &SubscriptionSpec) -> Result<Subscription> {
        validate_spec(spec)?;
        let spec = spec.clone();
        self.with_writer(move |conn| upsert_subscription(conn, &spec, now_ns()))
            .await
    }

    async fn list_subscriptions(&self) -> Result<Vec<Subscription>> {
        self.with_reader(|conn| list_subscriptions(conn, None))
            .await
    }

    async fn get_subscription(&self, id: SubscriptionId) -> Result<Option<Subscription>> {
        self.with_reader(move |conn| Ok(list_subscriptions(conn, Some(id))?.pop()))
            .await
    }

    async fn delete_subscription(&self, id: SubscriptionId) -> Result<bool> {
        self.with_writer(move |conn| delete_subscription(conn, id))
            .await
    }

    async fn claim_deliveries(&self, req: &ClaimRequest) -> Result<Vec<ClaimedDelivery>> {
        validate_claim(req)?;
        let r = req.clone();
        // Reading candidates does not need the write lock; most polls find none.
        let candidates = self
            .with_reader(move |conn| claim_candidates(conn, &r))
            .await?;
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let r = req.clone();
        self.with_writer(move |conn| claim(conn, &r, candidates))
            .await
    }

    async fn complete_attempt(&self, rec: &AttemptRecord) -> Result<bool> {
        let rec = rec.clone();
        self.with_writer(move |conn| complete_attempt(conn, &rec, now_ns()))
            .await
    }

    async fn list_deliveries(
        &self,
        subscription: SubscriptionId,
        limit: u32,
    ) -> Result<Vec<DeliveryHistory>> {
        self.with_reader(move |conn| list_deliveries(conn, subscription, limit))
            .await
    }

    async fn redeliver(
        &self,
        subscription: SubscriptionId,
        delivery: DeliveryId,
        now: i64,
    ) -> Result<Option<Delivery>> {
        self.with_writer(move |conn| redeliver(conn, subscription, delivery, now))
            .await
    }

    async fn count_pending_deliveries(&self) -> Result<u64> {
        self.with_reader(|conn| {
            let n: i64 = conn.query_row(wh::DELIVERY_COUNT_PENDING, [], |r| r.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    async fn enqueue_event(&self, event: &EventWrite) -> Result<u64> {
        validate_event(event)?;
        let event = event.clone();
        self.with_writer(move |conn| enqueue(conn, &event)).await
    }
}
