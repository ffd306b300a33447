//! Reads yield to ingest: while batches are being applied (or were within the last
//! [`QUIET`]), reads run at most `busy_read_connections` at a time of each [`ReadClass`]
//! instead of the read pool's full size, and bulk reads (the pages of raw downloads) are
//! paced to take at most `busy_read_percent` of the time (after a read of `d`, the next
//! waits `d × (100 − p) / p`, at most [`MAX_PAUSE`]). So downloads take a bounded share of
//! the database's (and, for SQLite, logarithmd's own) CPU while agents are shipping, and
//! all of it when they are not; the small reads of follows, tails and JSON pages, which are
//! bounded by their own budgets, never queue behind a paced download page. Both backends
//! take a [`ReadGate`] permit before a read and hold a [`Writing`] guard for the whole of
//! each `apply`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, ErrorKind, Result};

/// How long after the last write ended reads still count as beside ingest (agents send
/// their next batch right after an acknowledgement).
const QUIET: Duration = Duration::from_millis(250);
/// The longest pause pacing imposes between two reads.
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// What a read is, for the gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadClass {
    /// A page of a raw download: large, one after another; paced beside ingest.
    Bulk,
    /// Anything else (a job, a JSON page of lines, a follow's catch-up): bounded by its
    /// own budgets; limited in number beside ingest, not paced.
    Small,
}

/// Counts writes in flight and hands out read permits accordingly.
#[derive(Debug)]
pub(crate) struct ReadGate {
    writes: AtomicUsize,
    /// Milliseconds after `epoch` when the last write ended.
    last_write_ms: AtomicU64,
    epoch: Instant,
    busy_bulk: Arc<Semaphore>,
    busy_small: Arc<Semaphore>,
    pacing: Arc<Pacing>,
}

/// When the next read beside ingest may start, and the share of time reads may take.
#[derive(Debug)]
struct Pacing {
    epoch: Instant,
    /// Microseconds after `epoch`.
    not_before_us: AtomicU64,
    percent: u32,
}

impl Pacing {
    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

/// A read running beside ingest; dropping a bulk one paces the next.
#[derive(Debug)]
pub(crate) struct BusyRead {
    _permit: OwnedSemaphorePermit,
    /// Bulk reads only.
    pacing: Option<Arc<Pacing>>,
    started_us: u64,
}

impl Drop for BusyRead {
    fn drop(&mut self) {
        let Some(p) = &self.pacing else {
            return;
        };
        let end = p.now_us();
        let pause = pause_us(end.saturating_sub(self.started_us), p.percent);
        p.not_before_us.fetch_max(end + pause, Ordering::Relaxed);
    }
}

/// The pause after a read of `took_us` so reads take `percent` of the time.
fn pause_us(took_us: u64, percent: u32) -> u64 {
    let percent = u64::from(percent.clamp(1, 100));
    (took_us.saturating_mul(100 - percent) / percent).min(MAX_PAUSE.as_micros() as u64)
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
    /// A gate letting `busy_reads` (at least 1) reads of each class run at once beside
    /// ingest, bulk reads taking at most `percent` (1–100) of the time.
    pub(crate) fn new(busy_reads: usize, percent: u32) -> ReadGate {
        let epoch = Instant::now();
        ReadGate {
            writes: AtomicUsize::new(0),
            last_write_ms: AtomicU64::new(0),
            epoch,
            busy_bulk: Arc::new(Semaphore::new(busy_reads.max(1))),
            busy_small: Arc::new(Semaphore::new(busy_reads.max(1))),
            pacing: Arc::new(Pacing {
                epoch,
                not_before_us: AtomicU64::new(0),
                percent: percent.clamp(1, 100),
            }),
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
    /// `busy_reads` permits of its class (for a bulk read, once pacing allows), held for
    /// the read.
    pub(crate) async fn read(&self, class: ReadClass) -> Result<Option<BusyRead>> {
        if !self.busy() {
            return Ok(None);
        }
        let busy = match class {
            ReadClass::Bulk => &self.busy_bulk,
            ReadClass::Small => &self.busy_small,
        };
        let permit = Arc::clone(busy)
            .acquire_owned()
            .await
            .map_err(|_| Error::new(ErrorKind::Internal, "the read gate closed"))?;
        let p = &self.pacing;
        if class == ReadClass::Small {
            return Ok(Some(BusyRead {
                _permit: permit,
                pacing: None,
                started_us: 0,
            }));
        }
        let wait = p
            .not_before_us
            .load(Ordering::Relaxed)
            .saturating_sub(p.now_us());
        if wait > 0 {
            tokio::time::sleep(Duration::from_micros(wait)).await;
        }
        Ok(Some(BusyRead {
            _permit: permit,
            pacing: Some(Arc::clone(p)),
            started_us: p.now_us(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_take_a_permit_only_beside_writes() {
        let gate = ReadGate::new(1, 100);
        assert!(gate.read(ReadClass::Bulk).await.ok().flatten().is_none());
        let w = gate.writing();
        let first = gate.read(ReadClass::Bulk).await.ok().flatten();
        assert!(first.is_some());
        // The one busy bulk permit is taken: a second bulk read waits for it...
        let second = tokio::time::timeout(Duration::from_millis(50), gate.read(ReadClass::Bulk));
        assert!(second.await.is_err());
        // ... and a small read does not.
        let small = gate.read(ReadClass::Small).await.ok().flatten();
        assert!(small.is_some());
        drop((first, small));
        drop(w);
    }

    #[tokio::test]
    async fn only_bulk_reads_are_paced() {
        let gate = ReadGate::new(1, 1);
        let _w = gate.writing();
        let bulk = gate.read(ReadClass::Bulk).await.ok().flatten();
        tokio::time::sleep(Duration::from_millis(5)).await;
        // A 5 ms bulk read at 1 %: the next bulk read waits about half a second.
        drop(bulk);
        let small = tokio::time::timeout(Duration::from_millis(100), gate.read(ReadClass::Small));
        assert!(small.await.is_ok_and(|r| r.is_ok_and(|p| p.is_some())));
        let next = tokio::time::timeout(Duration::from_millis(100), gate.read(ReadClass::Bulk));
        assert!(next.await.is_err());
    }

    #[test]
    fn reads_beside_ingest_are_paced_to_their_share() {
        // A 20 ms read at 25 %: the next waits 60 ms; at 100 %, not at all; never > 1 s.
        assert_eq!(pause_us(20_000, 25), 60_000);
        assert_eq!(pause_us(20_000, 100), 0);
        assert_eq!(pause_us(2_000_000, 25), 1_000_000);
    }
}
