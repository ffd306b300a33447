//! Reads yield to ingest: while batches are being applied (or were within the last
//! [`QUIET`]), reads run at most `busy_read_connections` at a time (1 by default) instead of
//! the read pool's full size, so downloads and follows take a bounded share of the
//! database's (and, for SQLite, logarithmd's own) CPU while agents are shipping, and all of
//! it when they are not. Both backends take a [`ReadGate`] permit before a read and hold a
//! [`Writing`] guard for the whole of each `apply`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, ErrorKind, Result};

/// How long after the last write ended reads still count as beside ingest (agents send
/// their next batch right after an acknowledgement).
const QUIET: Duration = Duration::from_millis(250);

/// Counts writes in flight and hands out read permits accordingly.
#[derive(Debug)]
pub(crate) struct ReadGate {
    writes: AtomicUsize,
    /// Milliseconds after `epoch` when the last write ended.
    last_write_ms: AtomicU64,
    epoch: Instant,
    busy: Arc<Semaphore>,
}

/// Held while a batch is applied.
pub(crate) struct Writing<'a>(&'a ReadGate);

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.0
            .last_write_ms
            .store(self.0.now_ms(), Ordering::Relaxed);
        self.0.writes.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ReadGate {
    /// A gate letting `busy_reads` (at least 1) reads run at once beside ingest.
    pub(crate) fn new(busy_reads: usize) -> ReadGate {
        ReadGate {
            writes: AtomicUsize::new(0),
            last_write_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            busy: Arc::new(Semaphore::new(busy_reads.max(1))),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Marks a write in flight until the guard is dropped.
    pub(crate) fn writing(&self) -> Writing<'_> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        Writing(self)
    }

    /// Whether reads are beside ingest now.
    fn busy(&self) -> bool {
        if self.writes.load(Ordering::Relaxed) > 0 {
            return true;
        }
        let last = self.last_write_ms.load(Ordering::Relaxed);
        last != 0 && self.now_ms().saturating_sub(last) < QUIET.as_millis() as u64
    }

    /// A permit to read: `None` (no wait) when no write is near, else one of the
    /// `busy_reads` permits, held for the read.
    pub(crate) async fn read(&self) -> Result<Option<OwnedSemaphorePermit>> {
        if !self.busy() {
            return Ok(None);
        }
        Arc::clone(&self.busy)
            .acquire_owned()
            .await
            .map(Some)
            .map_err(|_| Error::new(ErrorKind::Internal, "the read gate closed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_take_a_permit_only_beside_writes() {
        let gate = ReadGate::new(1);
        assert!(gate.read().await.ok().flatten().is_none());
        let w = gate.writing();
        let first = gate.read().await.ok().flatten();
        assert!(first.is_some());
        // The one busy permit is taken: a second read waits for it.
        let second = tokio::time::timeout(Duration::from_millis(50), gate.read()).await;
        assert!(second.is_err());
        drop(first);
        drop(w);
        // Just after the write: still beside ingest.
        assert!(gate.read().await.ok().flatten().is_some());
    }
}
