//! Events that are not a job transition (`flow.finished`), announced by an embedder into
//! the same webhook outbox `apply` writes job deliveries to: one delivery per matching
//! enabled subscription, signed, retried and recorded by the same dispatcher.
//!
//! Announcing is idempotent: a delivery's id is derived from the subscription, the event
//! kind and the event's [`EventWrite::key`], so an announcement repeated after a crash
//! (the announcer could not record that it was done) adds nothing.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result};
use crate::shared::Param;
use crate::webhooks::{EventKind, Subscription, SNAPSHOT_MAX_BYTES};

/// One event to announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventWrite {
    /// Not a job event: those are written by `apply` with their commit.
    pub kind: EventKind,
    /// Identifies the event among those of its kind (a run id): the same key is delivered
    /// once per subscription however often it is announced.
    pub key: String,
    /// What subscriptions' label filters are matched against.
    pub labels: BTreeMap<String, String>,
    /// The event's data, JSON; sent as the payload's `data`.
    pub data_json: String,
    /// When it happened, ns since the Unix epoch.
    pub at: i64,
}

/// Rejects what cannot be stored.
pub(crate) fn validate(ev: &EventWrite) -> Result<()> {
    let invalid = |m: String| Error::new(ErrorKind::Invalid, m);
    if matches!(ev.kind, EventKind::JobStarted | EventKind::JobFinished) {
        return Err(invalid(format!(
            "{} deliveries are written by apply, with their commit",
            ev.kind
        )));
    }
    if ev.key.is_empty() {
        return Err(invalid("an event needs a key".into()));
    }
    if ev.data_json.len() > SNAPSHOT_MAX_BYTES {
        return Err(invalid(format!(
            "event data is {} bytes; at most {SNAPSHOT_MAX_BYTES} are stored",
            ev.data_json.len()
        )));
    }
    if serde_json::from_str::<serde_json::Value>(&ev.data_json).is_err() {
        return Err(invalid("event data must be JSON".into()));
    }
    Ok(())
}

/// The delivery id of `key`'s event for a subscription: positive and non-zero.
fn delivery_id(subscription: i64, kind: EventKind, key: &str) -> i64 {
    let mut h = Sha256::new();
    h.update(subscription.to_be_bytes());
    h.update(kind.as_str().as_bytes());
    h.update([0]);
    h.update(key.as_bytes());
    let digest = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest[..8]);
    let id = (u64::from_be_bytes(b) & (i64::MAX as u64)) as i64;
    id.max(1)
}

/// Rows for `DELIVERY_INSERT` (job id 0: no job), one per matching enabled subscription.
pub(crate) fn deliveries_for(ev: &EventWrite, subscriptions: &[Subscription]) -> Vec<Vec<Param>> {
    subscriptions
        .iter()
        .filter(|s| s.enabled && s.spec.matches(ev.kind, &ev.labels))
        .map(|s| {
            vec![
                delivery_id(s.spec.id, ev.kind, &ev.key).into(),
                s.spec.id.into(),
                ev.kind.as_str().into(),
                0i64.into(),
                ev.data_json.as_str().into(),
                ev.at.into(),
                ev.at.into(),
                ev.at.into(),
            ]
        })
        .collect()
}

pub(crate) mod sqlite {
    use rusqlite::{Connection, TransactionBehavior};

    use super::{deliveries_for, EventWrite};
    use crate::error::Result;
    use crate::sqlite::values;
    use crate::sqlite_webhooks;
    use crate::webhooks as wh;

    /// Writes the deliveries of `ev`; returns how many were new.
    pub(crate) fn enqueue(conn: &mut Connection, ev: &EventWrite) -> Result<u64> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let subs = sqlite_webhooks::list_enabled(&tx)?;
        let mut added = 0;
        {
            let sql = format!("{} ON CONFLICT (id) DO NOTHING", wh::DELIVERY_INSERT);
            let mut insert = tx.prepare_cached(&sql)?;
            for row in deliveries_for(ev, &subs) {
                added += insert.execute(values(row))? as u64;
            }
        }
        tx.commit()?;
        Ok(added)
    }
}

pub(crate) mod mysql {
    use mysql_async::prelude::Queryable;
    use mysql_async::{Conn, TxOpts};

    use super::{deliveries_for, EventWrite};
    use crate::error::Result;
    use crate::mysql::positional;
    use crate::mysql_webhooks;
    use crate::webhooks as wh;

    /// Writes the deliveries of `ev` in one transaction; returns how many were new.
    pub(crate) async fn enqueue(conn: &mut Conn, ev: &EventWrite) -> Result<u64> {
        let mut tx = conn.start_transaction(TxOpts::default()).await?;
        let subs = mysql_webhooks::list_subscriptions(&mut tx, None, true).await?;
        let mut added = 0;
        let sql = format!("{} ON DUPLICATE KEY UPDATE id = id", wh::DELIVERY_INSERT);
        for row in deliveries_for(ev, &subs) {
            tx.exec_drop(sql.as_str(), positional(row)).await?;
            added += tx.affected_rows();
        }
        tx.commit().await?;
        Ok(added)
    }
}
