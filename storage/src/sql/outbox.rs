//! The outbox rule: which delivery rows an event gets (one per matching enabled
//! subscription), for job events written by `apply` in their commit and for announced
//! events (`flow.finished`), whose ids are derived from the event so announcing twice adds
//! nothing. Both backends insert these rows with [`super::webhooks::DELIVERY_INSERT`].

use sha2::{Digest, Sha256};

use super::{random_id, Param};
use crate::model::{EventKind, Job, JobEvent, TransitionKind};
use crate::webhook_events::EventWrite;
use crate::webhooks::{Subscription, SNAPSHOT_MAX_BYTES};

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
pub(crate) fn job_deliveries(
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
pub(crate) fn event_deliveries(ev: &EventWrite, subscriptions: &[Subscription]) -> Vec<Vec<Param>> {
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
