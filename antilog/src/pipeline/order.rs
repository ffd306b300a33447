//! Ordered ingest: a container's next batch sent before the last is acknowledged.
//!
//! One container's batches are stored in the order they were read (logarithmd numbers a
//! job's lines by `seq`, and live followers read by it). Sending them one after another
//! leaves logarithmd idle between them: it decodes a batch only once the one before is
//! committed. A logarithmd that says so ([`protocol::ORDERED_INGEST_HEADER`]) takes up to
//! [`PER_CONTAINER`] batches of a container at once: each batch carries an id
//! ([`protocol::BATCH_ID_HEADER`]) and names the batches in flight it must follow
//! ([`protocol::BATCH_AFTER_HEADER`]); logarithmd decodes it at once and stores it after
//! them.
//!
//! A batch names only predecessors not yet settled at each attempt, so a resend after an
//! `out_of_order` answer (the predecessor went to another replica, or was split) goes
//! without them once they are acknowledged. Parts of a split batch carry no id of their
//! own; a batch after them waits for the whole to settle.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Most batches of one container in flight at once when the server orders them.
pub const PER_CONTAINER: usize = 2;

/// Hands out batch ids and remembers whether the server orders batches.
#[derive(Debug)]
pub struct Sequencer {
    nonce: u64,
    next: AtomicU64,
    ordered: AtomicBool,
}

impl Default for Sequencer {
    fn default() -> Self {
        Sequencer {
            nonce: rand::random(),
            next: AtomicU64::new(1),
            ordered: AtomicBool::new(false),
        }
    }
}

impl Sequencer {
    /// A new ticket with an id unique to this process.
    pub fn ticket(&self) -> Ticket {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Ticket {
            id: format!("{:016x}-{n:x}", self.nonce).into(),
            settled: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether the server has said it orders batches.
    pub fn ordered(&self) -> bool {
        self.ordered.load(Ordering::Relaxed)
    }

    /// Notes what an answer said about ordering. A server that stops saying it (another
    /// version behind the same address) is no longer sent overlapping batches.
    pub fn answered(&self, ordered: bool) {
        self.ordered.store(ordered, Ordering::Relaxed);
    }
}

/// One batch's place in its containers' order.
#[derive(Debug, Clone)]
pub struct Ticket {
    id: Arc<str>,
    settled: Arc<AtomicBool>,
}

impl Ticket {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The batch is settled: stored, or its refused parts isolated.
    pub fn settle(&self) {
        self.settled.store(true, Ordering::Release);
    }

    fn settled(&self) -> bool {
        self.settled.load(Ordering::Acquire)
    }
}

/// What one delivery says of its order: its own id (none for the parts of a split batch)
/// and the batches it must follow.
#[derive(Debug, Clone, Default)]
pub struct Order {
    pub own: Option<Ticket>,
    pub after: Vec<Ticket>,
}

impl Order {
    /// The same predecessors without an id of its own (a part of a split batch).
    pub fn part(&self) -> Order {
        Order {
            own: None,
            after: self.after.clone(),
        }
    }

    /// The value of [`protocol::BATCH_AFTER_HEADER`]: the predecessors not yet settled.
    pub fn after_header(&self) -> Option<String> {
        let ids: Vec<&str> = self
            .after
            .iter()
            .filter(|t| !t.settled())
            .map(|t| t.id())
            .collect();
        (!ids.is_empty()).then(|| ids.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_fit_the_header_limits() {
        let s = Sequencer::default();
        let a = s.ticket();
        let b = s.ticket();
        assert_ne!(a.id(), b.id());
        for t in [&a, &b] {
            assert!(t.id().len() <= protocol::BATCH_ID_MAX);
            assert!(t
                .id()
                .bytes()
                .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase() || c == b'-'));
        }
        assert_ne!(Sequencer::default().ticket().id(), a.id());
    }

    #[test]
    fn only_unsettled_predecessors_are_named() {
        let s = Sequencer::default();
        let (a, b) = (s.ticket(), s.ticket());
        let order = Order {
            own: Some(s.ticket()),
            after: vec![a.clone(), b.clone()],
        };
        assert_eq!(order.after_header(), Some(format!("{},{}", a.id(), b.id())));
        a.settle();
        assert_eq!(order.part().after_header(), Some(b.id().to_string()));
        assert!(order.part().own.is_none());
        b.settle();
        assert_eq!(order.after_header(), None);
    }
}
