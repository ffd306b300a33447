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
//! - [`run_writer`] (in `write_task`), [`Reader`]: their async sides, used by
//!   [`crate::run`] and the shipper.

mod recover;
pub mod segment;
mod write_task;

pub use recover::open;
pub use write_task::run_writer;

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::checkpoint::Effect;
use crate::config::Compression;
use crate::error::{Error, ErrorKind};
use crate::metrics::Metrics;
use crate::pipeline::OutBatch;
use crate::retry::Retry;
use segment::{Cursor, Damage, Frame, FrameMeta, ReadOutcome, HEADER_LEN};

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

impl SpoolWriter {
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Appends one frame (not yet durable: see [`SpoolWriter::sync`]). Does not check the
    /// limit; callers wait for [`Shared::has_room`] first.
    pub fn append(&mut self, frame: &[u8]) -> Result<(), Error> {
        let rotate_at = {
            let acc = self.shared.lock();
            if acc.drained() {
                ROTATE_WHEN_DRAINED.min(self.shared.limits.segment_bytes)
            } else {
                self.shared.limits.segment_bytes
            }
        };
        if self.len > HEADER_LEN && self.len >= rotate_at {
            self.rotate()?;
        }
        let path = || self.shared.dir.join(segment::segment_name(self.id));
        if self.dirty_tail {
            self.file
                .set_len(self.len)
                .map_err(|e| io_err(format!("cannot truncate {}", path().display()), e))?;
            self.dirty_tail = false;
        }
        if let Err(e) = self.file.write_all_at(frame, self.len) {
            self.dirty_tail = true;
            return Err(io_err(format!("cannot write {}", path().display()), e));
        }
        self.len += frame.len() as u64;
        let mut acc = self.shared.lock();
        if let Some(s) = acc.segments.get_mut(&self.id) {
            s.written = self.len;
        }
        acc.bytes += frame.len() as u64;
        self.shared.publish(&acc);
        Ok(())
    }

    /// Bytes appended since the last sync.
    pub fn unsynced(&self) -> u64 {
        self.len - self.synced
    }

    /// Makes everything appended durable and visible to the reader.
    pub fn sync(&mut self) -> Result<(), Error> {
        if self.synced == self.len {
            return Ok(());
        }
        self.file.sync_data().map_err(|e| {
            io_err(
                format!(
                    "cannot fsync {}",
                    self.shared
                        .dir
                        .join(segment::segment_name(self.id))
                        .display()
                ),
                e,
            )
        })?;
        self.synced = self.len;
        if let Some(s) = self.shared.lock().segments.get_mut(&self.id) {
            s.durable = self.len;
        }
        self.shared.data.notify_one();
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), Error> {
        self.sync()?;
        let id = self.id + 1;
        let file = create_segment(&self.shared.dir, id)?;
        self.file = file;
        self.id = id;
        self.len = HEADER_LEN;
        self.synced = HEADER_LEN;
        let mut acc = self.shared.lock();
        acc.segments.insert(
            id,
            Seg {
                written: HEADER_LEN,
                durable: HEADER_LEN,
            },
        );
        acc.bytes += HEADER_LEN;
        self.shared.publish(&acc);
        drop(acc);
        // The previous segment is complete: the reader can finish (and delete) it.
        self.shared.data.notify_one();
        Ok(())
    }
}

impl Drop for SpoolWriter {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.data.notify_one();
    }
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

impl SpoolReader {
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Frames handed out and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// The next frame after those already handed out.
    pub fn try_next(&mut self) -> Result<Next, Error> {
        loop {
            let (seg, later, closed) = {
                let acc = self.shared.lock();
                match acc.segments.get(&self.at.segment) {
                    Some(s) => (
                        *s,
                        acc.segments.range(self.at.segment + 1..).next().is_some(),
                        acc.closed,
                    ),
                    None => {
                        // Its segment is gone (set aside, or deleted before a crash).
                        match acc.segments.range(self.at.segment..).next() {
                            Some((&id, _)) => {
                                self.at = Cursor {
                                    segment: id,
                                    offset: HEADER_LEN,
                                };
                                drop(acc);
                                self.settle();
                                continue;
                            }
                            None if acc.closed => return Ok(Next::Closed),
                            None => return Ok(Next::Empty),
                        }
                    }
                }
            };
            if self.at.offset < seg.durable {
                let Cursor {
                    segment: id,
                    offset,
                } = self.at;
                let file = self.open(id)?;
                let read = segment::read_frame(file, offset, seg.durable)
                    .map_err(|e| io_err(format!("cannot read {}", self.path(id).display()), e))?;
                match read {
                    ReadOutcome::Frame(mut frame, next) => {
                        let end = Cursor {
                            segment: id,
                            offset: next,
                        };
                        self.pending.push_back((self.at, end));
                        self.at = end;
                        frame.replayed = id < self.shared.session;
                        if self.shared.damaged.load(Ordering::Acquire) {
                            frame.effects.retain(|(_, e)| *e == Effect::Forget);
                        }
                        return Ok(Next::Frame(frame));
                    }
                    ReadOutcome::End => {}
                    ReadOutcome::Bad(damage) => {
                        self.report(id, &damage, seg.durable);
                        self.shared.mark_damaged();
                        if later {
                            self.next_segment();
                        } else {
                            // The segment being written: skip to where the writer is.
                            self.at.offset = seg.durable;
                            self.settle();
                        }
                        continue;
                    }
                }
            }
            if later && seg.durable == seg.written {
                // Read to its end and the writer has moved on.
                self.next_segment();
                continue;
            }
            return Ok(if closed && !later {
                Next::Closed
            } else {
                Next::Empty
            });
        }
    }

    /// Marks the oldest frame handed out by [`SpoolReader::try_next`] and not yet
    /// acknowledged as delivered.
    pub fn ack(&mut self) {
        if self.pending.pop_front().is_none() {
            return;
        }
        if self.pending.is_empty() && self.at_end_of_finished_segment() {
            // Everything in it is delivered: delete it now, not at the next read.
            self.next_segment();
        } else {
            self.settle();
        }
        // Everything delivered counts as room (see `Shared::has_room`).
        self.shared.room.notify_one();
    }

    fn path(&self, id: u64) -> PathBuf {
        self.shared.dir.join(segment::segment_name(id))
    }

    /// Whether the read position is at the end of a segment the writer has left.
    fn at_end_of_finished_segment(&self) -> bool {
        let acc = self.shared.lock();
        let later = acc.segments.range(self.at.segment + 1..).next().is_some();
        acc.segments
            .get(&self.at.segment)
            .is_some_and(|s| later && s.durable == s.written && self.at.offset >= s.written)
    }

    fn open(&mut self, id: u64) -> Result<&File, Error> {
        if self.file.as_ref().map(|(i, _)| *i) != Some(id) {
            let path = self.path(id);
            let f = File::open(&path)
                .map_err(|e| io_err(format!("cannot open {}", path.display()), e))?;
            self.file = Some((id, f));
        }
        match &self.file {
            Some((_, f)) => Ok(f),
            None => Err(Error::new(ErrorKind::Internal, "spool segment not open")),
        }
    }

    fn report(&self, id: u64, damage: &Damage, end: u64) {
        let path = self.path(id);
        error!(
            file = %path.display(),
            offset = self.at.offset,
            skipped_bytes = end.saturating_sub(self.at.offset),
            %damage,
            "corrupt spool segment {}: {damage} at offset {}; skipping the rest of it",
            path.display(),
            self.at.offset
        );
    }

    /// Moves the read position to the next segment (everything in this one was handed
    /// out or skipped).
    fn next_segment(&mut self) {
        let id = self.at.segment;
        if self.file.as_ref().is_some_and(|(i, _)| *i == id) {
            self.file = None;
        }
        let next = {
            let acc = self.shared.lock();
            acc.segments
                .range(id + 1..)
                .next()
                .map(|(&i, _)| i)
                .unwrap_or(id + 1)
        };
        self.at = Cursor {
            segment: next,
            offset: HEADER_LEN,
        };
        self.settle();
    }

    /// Moves the acknowledged position to the oldest frame not acknowledged (or the read
    /// position) and deletes the segments before it.
    fn settle(&mut self) {
        let acked = self.pending.front().map_or(self.at, |(start, _)| *start);
        if acked == self.acked {
            return;
        }
        self.acked = acked;
        // The ack moves first: a crash in between leaves segments that the next start
        // recognises as delivered.
        self.save_ack();
        let done: Vec<u64> = {
            let acc = self.shared.lock();
            acc.segments
                .range(..acked.segment)
                .map(|(&i, _)| i)
                .collect()
        };
        if done.is_empty() {
            return;
        }
        for id in &done {
            let path = self.path(*id);
            if let Err(e) = std::fs::remove_file(&path) {
                warn!(file = %path.display(), error = %e, "cannot delete a delivered spool segment");
            }
        }
        let mut acc = self.shared.lock();
        for id in done {
            if let Some(s) = acc.segments.remove(&id) {
                acc.bytes -= s.written;
            }
        }
        self.shared.publish(&acc);
        drop(acc);
        self.shared.room.notify_one();
    }

    fn save_ack(&self) {
        self.shared.lock().ack = self.acked;
        if let Err(e) = segment::write_ack(&self.shared.dir, self.acked) {
            // Only costs resending delivered frames after a restart.
            warn!(dir = %self.shared.dir.display(), error = %e, "cannot write the spool ack file");
        }
    }
}

/// The shipper's handle on the spool.
#[derive(Debug, Clone)]
pub struct Reader {
    inner: Arc<Mutex<SpoolReader>>,
    shared: Arc<Shared>,
}

impl Reader {
    pub fn new(reader: SpoolReader) -> Reader {
        let shared = reader.shared.clone();
        Reader {
            inner: Arc::new(Mutex::new(reader)),
            shared,
        }
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The next frame to deliver, waiting for one; `None` once the writer is gone and
    /// everything was read.
    pub async fn next(&self) -> Option<Frame> {
        let mut retry = Retry::new(RETRY_INITIAL, RETRY_MAX);
        loop {
            let inner = self.inner.clone();
            let res = tokio::task::spawn_blocking(move || lock(&inner).try_next()).await;
            match res {
                Ok(Ok(Next::Frame(f))) => return Some(f),
                Ok(Ok(Next::Empty)) => self.shared.data.notified().await,
                Ok(Ok(Next::Closed)) => return None,
                Ok(Err(e)) => {
                    let d = retry.next_delay();
                    error!(error = %e, retry_in = ?d, "cannot read the spool; retrying");
                    tokio::time::sleep(d).await;
                }
                Err(e) => {
                    error!(error = %e, "spool reader task failed");
                    return None;
                }
            }
        }
    }

    /// Marks the frame returned by [`Reader::next`] as delivered (tests; the shipper uses
    /// [`Reader::ack_after`]).
    #[cfg(test)]
    pub async fn ack(&self) {
        self.ack_after(|| {}).await;
    }

    /// Runs `first` (off the async threads), then marks the frame returned by
    /// [`Reader::next`] as delivered: the shipper writes the checkpoint there, so the
    /// spool never records as delivered a frame whose effects are not written.
    pub async fn ack_after(&self, first: impl FnOnce() + Send + 'static) {
        let inner = self.inner.clone();
        let res = tokio::task::spawn_blocking(move || {
            first();
            lock(&inner).ack()
        })
        .await;
        if let Err(e) = res {
            error!(error = %e, "spool ack task failed");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests;
