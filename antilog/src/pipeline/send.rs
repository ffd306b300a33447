//! How a follower (Docker or CRI) hands an item to the pipeline: at once when there is
//! room, else waiting (backpressure, counted in the metrics), unless shutting down.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Item, ItemKind};
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

/// Sleeps `d`; false when shutdown came first.
pub async fn sleep(shutdown: &CancellationToken, d: std::time::Duration) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}
