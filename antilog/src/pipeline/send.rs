//! How a follower (Docker or CRI) hands an item to the pipeline: at once when there is
//! room, else waiting (backpressure, counted in the metrics), unless shutting down.

use std::sync::Arc;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::{Item, ItemKind, RecordRun};
use crate::metrics::Metrics;

/// Sends `kind` of `container_id`, waiting for room; false when the pipeline is closed or
/// on shutdown.
pub async fn send(
    tx: &mpsc::Sender<Item>,
    shutdown: &CancellationToken,
    metrics: &Arc<Metrics>,
    container_id: &Arc<str>,
    kind: ItemKind,
) -> bool {
    let item = Item {
        container_id: container_id.clone(),
        kind,
    };
    let item = match tx.try_send(item) {
        Ok(()) => return true,
        Err(mpsc::error::TrySendError::Closed(_)) => return false,
        Err(mpsc::error::TrySendError::Full(item)) => item,
    };
    // The pipeline is full: reading stops until delivery catches up.
    let _paused = metrics.waiting_for_room();
    tokio::select! {
        biased;
        r = tx.send(item) => r.is_ok(),
        _ = shutdown.cancelled() => false,
    }
}

/// Sends the records gathered in `run`, if any, as one item once `room` has room for them
/// (backpressure); false when the pipeline is closed or on shutdown.
pub async fn send_run(
    tx: &mpsc::Sender<Item>,
    room: &Room,
    shutdown: &CancellationToken,
    metrics: &Arc<Metrics>,
    container_id: &Arc<str>,
    run: &mut RecordRun,
) -> bool {
    if run.is_empty() {
        return true;
    }
    let Some(permit) = room.take(run.len(), shutdown, metrics).await else {
        return false;
    };
    send(tx, shutdown, metrics, container_id, run.take(Some(permit))).await
}

/// The pipeline's room in records: the item channel holds at most its capacity of items,
/// and this bounds the records in runs ([`super::ItemKind::Records`]) the same way, a
/// permit per record, given back when the batcher takes them. Without it a channel of runs
/// would hold up to [`super::MAX_RUN_RECORDS`] times more lines.
#[derive(Debug, Clone)]
pub struct Room {
    permits: Arc<Semaphore>,
    size: usize,
}

impl Room {
    /// Room for `records` records (the item channel's capacity).
    pub fn new(records: usize) -> Room {
        let size = records.clamp(1, Semaphore::MAX_PERMITS);
        Room {
            permits: Arc::new(Semaphore::new(size)),
            size,
        }
    }

    /// Most records of a run, so that one run never waits for more room than there is.
    pub fn max_run(&self) -> usize {
        self.size
    }

    /// Permits for `records` records (at most [`Room::max_run`]), waiting for them when the
    /// pipeline is full (backpressure); `None` on shutdown.
    pub async fn take(
        &self,
        records: usize,
        shutdown: &CancellationToken,
        metrics: &Arc<Metrics>,
    ) -> Option<OwnedSemaphorePermit> {
        // Within `size`, so it fits in a u32 as the semaphore needs it.
        let n = u32::try_from(records.clamp(1, self.size)).unwrap_or(u32::MAX);
        if let Ok(p) = self.permits.clone().try_acquire_many_owned(n) {
            return Some(p);
        }
        let _paused = metrics.waiting_for_room();
        tokio::select! {
            biased;
            p = self.permits.clone().acquire_many_owned(n) => p.ok(),
            _ = shutdown.cancelled() => None,
        }
    }
}

/// Sleeps `d`; false when shutdown came first.
pub async fn sleep(shutdown: &CancellationToken, d: std::time::Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}
