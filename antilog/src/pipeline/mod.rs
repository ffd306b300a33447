//! From followers to logarithmd, in order: followers push [`Item`]s into one bounded
//! channel; the [`batcher`] groups them into [`OutBatch`]es; the spool
//! ([`crate::spool::run_writer`]) makes them durable, checkpoint effects included; the
//! [`shipper`] POSTs the spooled batches (several at once, each container's in order:
//! [`order`]) until they are settled, then applies their checkpoint effects in spool
//! order; [`split`] halves
//! a batch logarithmd refused, to isolate the refused records; [`send`] is how followers
//! hand items in (backpressure).

pub mod batcher;
pub mod order;
pub mod send;
pub mod shipper;
pub mod split;

use std::sync::Arc;

use protocol::{Batch, ContainerExit, ContainerMeta, Record};
use tokio::sync::OwnedSemaphorePermit;

use crate::checkpoint::{Effect, Position};

/// One thing a follower observed, tagged with its container.
#[derive(Debug)]
pub struct Item {
    pub container_id: Arc<str>,
    pub kind: ItemKind,
}

#[derive(Debug)]
pub enum ItemKind {
    Meta(ContainerMeta),
    /// A record; `cut` is the resumable position right after it, when there is one.
    Record {
        record: Record,
        cut: Option<Position>,
    },
    /// Consecutive records of one container handed over at once (a [`RecordRun`]): one
    /// channel send and one wake-up of the batcher for many lines. `room` holds a permit
    /// of the follower's [`send::Room`] per record until the batcher takes them.
    Records {
        records: Vec<(Record, Option<Position>)>,
        room: Option<OwnedSemaphorePermit>,
    },
    Exit(ContainerExit),
    Unavailable(String),
    /// The container is gone; its checkpoint entry can go once what came before is acked.
    Forget,
}

/// A batch ready to spool, with what its acknowledgement by logarithmd does to the
/// checkpoint.
#[derive(Debug)]
pub struct OutBatch {
    pub batch: Batch,
    pub effects: Vec<(Arc<str>, Effect)>,
    pub records: usize,
}

/// Most records in one [`ItemKind::Records`].
pub const MAX_RUN_RECORDS: usize = 256;
/// Most payload bytes in one [`ItemKind::Records`] (a larger record goes alone), so an item
/// in the channel holds no more than a single record of `max_line_bytes` may: the channel's
/// bound on memory stays what it was with a record per item.
pub const MAX_RUN_BYTES: usize = 64 << 10;

/// Records gathered by a follower for one hand-off, within [`MAX_RUN_RECORDS`] and
/// [`MAX_RUN_BYTES`].
#[derive(Debug, Default)]
pub struct RecordRun {
    records: Vec<(Record, Option<Position>)>,
    bytes: usize,
}

impl RecordRun {
    /// Whether a record of `len` payload bytes must wait for the run to be handed over;
    /// `max_records` is at most [`MAX_RUN_RECORDS`] (see [`send::Room::max_run`]).
    pub fn is_full_for(&self, len: usize, max_records: usize) -> bool {
        !self.records.is_empty()
            && (self.records.len() >= max_records.min(MAX_RUN_RECORDS)
                || self.bytes + len > MAX_RUN_BYTES)
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn push(&mut self, record: Record, cut: Option<Position>) {
        self.bytes += record.payload_len();
        self.records.push((record, cut));
    }

    /// The item to send, with the room taken for its records; the run is empty after.
    pub fn take(&mut self, room: Option<OwnedSemaphorePermit>) -> ItemKind {
        self.bytes = 0;
        // The next run is likely as long as this one: sized once, not grown by copies.
        let next = Vec::with_capacity(self.records.len());
        ItemKind::Records {
            records: std::mem::replace(&mut self.records, next),
            room,
        }
    }
}
