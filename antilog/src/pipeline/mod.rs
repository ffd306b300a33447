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

use crate::checkpoint::{Effect, Position};

/// One thing a follower observed, tagged with its container.
#[derive(Debug, Clone)]
pub struct Item {
    pub container_id: Arc<str>,
    pub kind: ItemKind,
}

#[derive(Debug, Clone)]
pub enum ItemKind {
    Meta(ContainerMeta),
    /// A record; `cut` is the resumable position right after it, when there is one.
    Record {
        record: Record,
        cut: Option<Position>,
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
