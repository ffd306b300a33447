//! The disk spool between the batcher and the shipper: sealed batches are appended to
//! checksummed segment files (format in [`segment`]), the shipper reads them back in order
//! and a segment is deleted once every frame in it is acknowledged by logarithmd.
//!
//! # Guarantees
//! - **Checkpoints cover only acknowledged data.** Each frame carries its batch's checkpoint
//!   effects ([`segment`]); the writer ([`run_writer`]) never applies them: the shipper
//!   does, in frame order, right after logarithmd acknowledges the frame. A restart
//!   therefore resumes each container after what logarithmd acknowledged (lines spooled but
//!   not acknowledged are read from Docker again and sent twice, which logarithmd
//!   deduplicates), and the spool replays what logarithmd has not acknowledged, including
//!   lines of containers removed meanwhile. Frames replayed after a restart apply their
//!   effects when acknowledged too.
//! - **fsync policy.** One fsync per group of batches: the writer appends the batches that
//!   are ready, then syncs when none is waiting, when [`SYNC_MAX_BYTES`] are unsynced, or
//!   [`SYNC_MAX_DELAY`] after the first unsynced append. The shipper reads only synced data.
//! - **Read position.** The position of the next frame to deliver is written to `ack`
//!   (rename, not fsynced) after each acknowledgement: a crash resends at most the frames of
//!   the last moments, which logarithmd deduplicates by `(container_id, seq)`.
//! - **Bounded.** The segment files never exceed `max_bytes` in total (except one frame
//!   larger than the limit, which is accepted alone into an empty spool). When the next
//!   frame does not fit, the writer waits (the batcher, the item channel and the followers
//!   behind it stop: reading pauses) and says so once per pause.
//! - **Damage.** A frame with a bad length or checksum is reported at error level with the
//!   segment's file name and the rest of that segment is skipped; a segment without a valid
//!   header is renamed `*.corrupt`. A torn last frame after a crash is truncated at start.
//!   Once anything was skipped, later frames of this session apply only their `Forget`
//!   effects: the checkpoint stays before the lost lines, which the next start reads again
//!   from Docker for containers that still exist.
//!
//! # Layout
//! - [`segment`]: file names, frame encoding and checks, the ack file (synchronous I/O).
//! - [`open`] (in `recover`): recovers the directory and returns the [`SpoolWriter`] and
//!   [`SpoolReader`] (synchronous, unit-tested); `recover` also reads the effects of what
//!   the spool holds at start.
//! - `writer`: [`SpoolWriter`]'s methods (append, sync, rotate); `reader`:
//!   [`SpoolReader`]'s methods (frames in order, acknowledgements, deleting delivered
//!   segments) and [`Reader`]. The types stay here, beside the accounting they share.
//! - [`run_writer`] (in `write_task`), [`Reader`]: their async sides, used by
//!   [`crate::run`] and the shipper.

mod reader;
mod recover;
pub mod segment;
mod write_task;
mod writer;

pub use recover::open;
pub use write_task::run_writer;

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::Compression;
use crate::error::{Error, ErrorKind};
use crate::metrics::Metrics;
use crate::pipeline::OutBatch;
use crate::retry::Retry;
use segment::{Cursor, Frame, FrameMeta, HEADER_LEN};

/// Unsynced bytes after which the writer syncs even while more batches are waiting.
pub const SYNC_MAX_BYTES: u64 = 8 << 20;
/// Longest time an appended batch waits for its fsync (before the shipper can send it).
pub const SYNC_MAX_DELAY: Duration = Duration::from_millis(100);
/// When everything is delivered, the writer starts a new segment once the current one
/// holds this much (or `segment_bytes`, if smaller), so delivered data is freed soon.
const ROTATE_WHEN_DRAINED: u64 = 1 << 20;
const RETRY_INITIAL: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// Size limits of a spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes of segment files.
    pub max_bytes: u64,
    /// A segment is closed and a new one started once it holds this many bytes.
    pub segment_bytes: u64,
}

/// The spool's state, for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes of segment files.
    pub bytes: u64,
    /// Segment files.
    pub segments: u64,
    pub max_bytes: u64,
    /// The writer waits for room: reading is paused.
    pub full: bool,
}

#[derive(Debug, Clone, Copy)]
struct Seg {
    /// Bytes written (the file's length).
    written: u64,
    /// Bytes known to be on disk; readers stop here.
    durable: u64,
}

#[derive(Debug)]
struct Accounting {
    segments: BTreeMap<u64, Seg>,
    /// Sum of `written`.
    bytes: u64,
    /// Position of the next frame to deliver.
    ack: Cursor,
    /// The writer is gone: nothing more will be appended.
    closed: bool,
}

impl Accounting {
    /// Whether everything written is acknowledged.
    fn drained(&self) -> bool {
        match self.segments.iter().next_back() {
            None => true,
            Some((&id, s)) => self.ack.segment == id && self.ack.offset >= s.written,
        }
    }
}

/// What the writer and the reader share.
#[derive(Debug)]
pub struct Shared {
    dir: PathBuf,
    limits: Limits,
    state: Mutex<Accounting>,
    /// Wakes the reader: new durable data, or the writer closed.
    data: Notify,
    /// Wakes the writer: a segment was deleted.
    room: Notify,
    full: AtomicBool,
    /// Frames were skipped (damage): checkpoints no longer move (see the module docs).
    damaged: AtomicBool,
    /// This session's first segment: frames before it were spooled before this start.
    session: u64,
    metrics: Arc<Metrics>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Accounting> {
        // Every update is a few field assignments: a panic cannot leave them inconsistent
        // in a way that matters more than stopping would.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn stats(&self) -> Stats {
        let acc = self.lock();
        Stats {
            bytes: acc.bytes,
            segments: acc.segments.len() as u64,
            max_bytes: self.limits.max_bytes,
            full: self.full.load(Ordering::Acquire),
        }
    }

    /// Whether a frame of `n` bytes may be appended now.
    pub fn has_room(&self, n: u64) -> bool {
        let acc = self.lock();
        // A rotation may add a segment header too.
        acc.bytes + n + HEADER_LEN <= self.limits.max_bytes || acc.drained()
    }

    /// Spooled frames were lost: from now on, acknowledged frames no longer move
    /// checkpoints past them (only removals still apply).
    fn mark_damaged(&self) {
        if !self.damaged.swap(true, Ordering::AcqRel) {
            warn!(
                "spool frames were lost: checkpoints stay where they are until the next start, \
                 which reads the lost lines again from Docker (for containers that still exist)"
            );
        }
    }

    fn publish(&self, acc: &Accounting) {
        self.metrics.spool_bytes.set(gauge(acc.bytes));
        self.metrics
            .spool_segments
            .set(gauge(acc.segments.len() as u64));
    }
}

fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn io_err(what: impl Into<String>, e: std::io::Error) -> Error {
    Error::with_source(ErrorKind::Spool, what, e)
}

fn create_segment(dir: &Path, id: u64) -> Result<File, Error> {
    let path = dir.join(segment::segment_name(id));
    let err = |e| io_err(format!("cannot create {}", path.display()), e);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(err)?;
    file.write_all(segment::MAGIC).map_err(err)?;
    file.sync_all().map_err(err)?;
    // The new name must survive a power loss before any checkpoint relies on its data.
    segment::sync_dir(dir).map_err(err)?;
    Ok(file)
}

/// Appends frames to the newest segment (synchronous side; see [`run_writer`]).
#[derive(Debug)]
pub struct SpoolWriter {
    shared: Arc<Shared>,
    file: File,
    id: u64,
    len: u64,
    synced: u64,
    /// A failed write may have left bytes past `len`.
    dirty_tail: bool,
}

/// What [`SpoolReader::try_next`] found.
#[derive(Debug)]
pub enum Next {
    Frame(Frame),
    /// Nothing durable to read now.
    Empty,
    /// Nothing to read, and the writer is gone.
    Closed,
}

/// Reads frames in order from the oldest segment (synchronous side; see [`Reader`]).
/// Several frames may be handed out before the first is acknowledged; acknowledgements
/// come in the order the frames were handed out.
#[derive(Debug)]
pub struct SpoolReader {
    shared: Arc<Shared>,
    /// Position of the next frame to hand out.
    at: Cursor,
    /// The open segment `at` is in.
    file: Option<(u64, File)>,
    /// Frames handed out and not yet acknowledged, oldest first: (start, end).
    pending: VecDeque<(Cursor, Cursor)>,
    /// Position of the oldest frame not acknowledged (what the ack file holds).
    acked: Cursor,
}

/// The shipper's handle on the spool.
#[derive(Debug, Clone)]
pub struct Reader {
    inner: Arc<Mutex<SpoolReader>>,
    shared: Arc<Shared>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests;
