//! [`SpoolReader`]'s methods (reading frames in order, acknowledging, deleting delivered
//! segments) and the shipper's async handle [`Reader`].

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tracing::{error, warn};

use super::segment::{self, Cursor, Damage, Frame, ReadOutcome, HEADER_LEN};
use super::{io_err, lock, Next, Reader, Shared, SpoolReader, RETRY_INITIAL, RETRY_MAX};
use crate::checkpoint::Effect;
use crate::error::{Error, ErrorKind};
use crate::retry::Retry;

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
