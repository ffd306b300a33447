//! Events that are not a job transition (`flow.finished`), announced by an embedder into
//! the same webhook outbox `apply` writes job deliveries to: one delivery per matching
//! enabled subscription, signed, retried and recorded by the same dispatcher.
//!
//! Announcing is idempotent: a delivery's id is derived from the subscription, the event
//! kind and the event's [`EventWrite::key`], so an announcement repeated after a crash
//! (the announcer could not record that it was done) adds nothing.

use std::collections::BTreeMap;

use crate::error::{Error, ErrorKind, Result};
use crate::model::EventKind;
use crate::webhooks::SNAPSHOT_MAX_BYTES;

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
