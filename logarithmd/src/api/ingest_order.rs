//! Ordered ingest: an agent sends a container's next batch before the last is committed,
//! naming the batches it must follow ([`protocol::BATCH_AFTER_HEADER`]). The batch is
//! decoded at once, then waits here until those are stored, so a job's lines are still
//! stored in the order they were read while decoding overlaps the commit before.
//!
//! Only this process's commits count: a predecessor stored by another replica, or before
//! a restart, is not known here, and the batch is answered 503 `out_of_order` after
//! `ingest_order_wait`; the agent sends it again once its predecessors are acknowledged,
//! without the header.
//!
//! Memory is bounded: the ids of the last [`REMEMBERED`] committed batches, and the
//! batches waiting, by their decoded size ([`IngestOrder::hold`], `ingest_order_waiting_bytes`).
//! A batch that finds no room is answered 503 with `Retry-After` at once and never waits
//! for room, so nothing waits on a waiting batch: a predecessor whose own predecessors are
//! stored needs no room, and a waiting batch holds no writer slot (see `ingest`), so the
//! batches it waits for always get through.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use storage::WriteBatch;
use tokio::sync::Notify;

use super::error::{ApiError, ApiResult};

/// Committed batch ids remembered (agents have a few batches in flight each).
const REMEMBERED: usize = 8192;

/// What a request says of its order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BatchOrder {
    /// This batch's id, remembered once it is committed.
    pub id: Option<String>,
    /// Batches to store before this one.
    pub after: Vec<String>,
}

impl BatchOrder {
    /// Reads the two headers; a malformed one refuses the request (400).
    pub fn from_headers(headers: &HeaderMap) -> ApiResult<BatchOrder> {
        let value = |name: &str| -> ApiResult<Option<&str>> {
            headers
                .get(name)
                .map(|v| v.to_str().map_err(|_| bad(format!("{name} must be ASCII"))))
                .transpose()
        };
        let id = value(protocol::BATCH_ID_HEADER)?
            .map(|v| valid_id(protocol::BATCH_ID_HEADER, v.trim()))
            .transpose()?;
        let mut after = Vec::new();
        if let Some(v) = value(protocol::BATCH_AFTER_HEADER)? {
            for part in v.split(',') {
                after.push(valid_id(protocol::BATCH_AFTER_HEADER, part.trim())?);
            }
            if after.len() > protocol::BATCH_AFTER_MAX {
                return Err(bad(format!(
                    "{} names more than {} batches",
                    protocol::BATCH_AFTER_HEADER,
                    protocol::BATCH_AFTER_MAX
                )));
            }
        }
        Ok(BatchOrder { id, after })
    }
}

fn bad(message: String) -> ApiError {
    ApiError::bad_request("invalid_header", message)
}

fn valid_id(header: &str, v: &str) -> ApiResult<String> {
    let ok = !v.is_empty()
        && v.len() <= protocol::BATCH_ID_MAX
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(v.to_string())
    } else {
        Err(bad(format!(
            "{header}: batch ids are 1 to {} characters of [A-Za-z0-9_-]",
            protocol::BATCH_ID_MAX
        )))
    }
}

/// The ids of recently committed batches, and the batches waiting for them.
#[derive(Debug)]
pub struct IngestOrder {
    committed: Mutex<Committed>,
    changed: Notify,
    /// Decoded bytes the waiting batches may hold together.
    max_waiting_bytes: usize,
    waiting: Mutex<Waiting>,
}

/// The batches waiting for their predecessors (or for a writer once those are stored).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Waiting {
    pub batches: usize,
    /// Their decoded size ([`decoded_bytes`]).
    pub bytes: usize,
}

/// A waiting batch's share of the room; given back when dropped.
#[derive(Debug)]
pub struct Room {
    order: Arc<IngestOrder>,
    bytes: usize,
}

impl Drop for Room {
    fn drop(&mut self) {
        let mut w = self.order.waiting.lock().unwrap_or_else(|p| p.into_inner());
        w.batches -= 1;
        w.bytes -= self.bytes;
    }
}

#[derive(Debug, Default)]
struct Committed {
    ids: HashSet<String>,
    oldest_first: VecDeque<String>,
}

impl IngestOrder {
    /// Waiting batches may hold `max_waiting_bytes` (decoded) together.
    pub fn new(max_waiting_bytes: usize) -> IngestOrder {
        IngestOrder {
            committed: Mutex::default(),
            changed: Notify::new(),
            max_waiting_bytes,
            waiting: Mutex::default(),
        }
    }

    /// Room for a batch of `bytes` (decoded) to wait, if the batches waiting leave it.
    /// Never waits: `None` is answered 503 at once.
    pub fn hold(self: &Arc<Self>, bytes: usize) -> Option<Room> {
        let mut w = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        if w.bytes.saturating_add(bytes) > self.max_waiting_bytes {
            return None;
        }
        w.batches += 1;
        w.bytes += bytes;
        Some(Room {
            order: self.clone(),
            bytes,
        })
    }

    /// The batches waiting now.
    pub fn waiting(&self) -> Waiting {
        *self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until every batch in `after` is committed here, at most `wait`. Fails with
    /// 503 `out_of_order` if one is not.
    pub async fn wait_for(&self, after: &[String], wait: Duration) -> ApiResult<()> {
        if after.is_empty() {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before the check, so a commit between the two is not missed.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.all_committed(after) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return if self.all_committed(after) {
                    Ok(())
                } else {
                    Err(ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "out_of_order",
                        format!(
                            "the batches this one follows ({}) were not stored here within {wait:?}; \
                             send it again once they are acknowledged",
                            after.join(",")
                        ),
                    ))
                };
            }
        }
    }

    /// Notes a committed batch and wakes the batches waiting.
    pub fn committed(&self, id: String) {
        {
            let mut c = self.committed.lock().unwrap_or_else(|p| p.into_inner());
            if c.ids.insert(id.clone()) {
                c.oldest_first.push_back(id);
                while c.oldest_first.len() > REMEMBERED {
                    if let Some(old) = c.oldest_first.pop_front() {
                        c.ids.remove(&old);
                    }
                }
            }
        }
        self.changed.notify_waiters();
    }

    /// Whether every batch in `after` is committed here.
    pub fn all_committed(&self, after: &[String]) -> bool {
        let c = self.committed.lock().unwrap_or_else(|p| p.into_inner());
        after.iter().all(|id| c.ids.contains(id))
    }
}

/// What a decoded batch holds in memory, roughly: its lines (bytes and each record's
/// fixed part), outputs and metadata.
pub fn decoded_bytes(write: &WriteBatch) -> usize {
    write
        .jobs
        .iter()
        .map(|j| {
            let lines: usize = j
                .lines
                .iter()
                .map(|l| l.line.len() + std::mem::size_of_val(l))
                .sum();
            let outputs: usize = j
                .outputs
                .iter()
                .map(|o| o.name.len() + o.value.len() + std::mem::size_of_val(o))
                .sum();
            let meta = j.meta.as_ref().map_or(0, |m| {
                m.name.len()
                    + m.image.len()
                    + m.log_driver.len()
                    + m.labels
                        .iter()
                        .chain(&m.annotations)
                        .map(|(k, v)| k.len() + v.len())
                        .sum::<usize>()
            });
            std::mem::size_of_val(j)
                + j.container_id.len()
                + j.node.len()
                + j.logs_unavailable.as_ref().map_or(0, String::len)
                + lines
                + outputs
                + meta
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn headers_are_read_and_checked() {
        assert_eq!(
            BatchOrder::from_headers(&HeaderMap::new()).unwrap(),
            BatchOrder::default()
        );
        let o = BatchOrder::from_headers(&headers(&[
            (protocol::BATCH_ID_HEADER, "ab-3"),
            (protocol::BATCH_AFTER_HEADER, "ab-1, ab-2"),
        ]))
        .unwrap();
        assert_eq!(o.id.as_deref(), Some("ab-3"));
        assert_eq!(o.after, ["ab-1", "ab-2"]);
        for bad in ["", "a b", "x,", &"a".repeat(65)] {
            let e = BatchOrder::from_headers(&headers(&[(protocol::BATCH_AFTER_HEADER, bad)]));
            assert!(e.is_err(), "{bad:?}");
        }
        let many = vec!["a"; protocol::BATCH_AFTER_MAX + 1].join(",");
        assert!(
            BatchOrder::from_headers(&headers(&[(protocol::BATCH_AFTER_HEADER, &many)])).is_err()
        );
    }

    #[tokio::test]
    async fn a_batch_waits_for_the_ones_it_names() {
        let order = Arc::new(IngestOrder::new(0));
        order.wait_for(&[], Duration::ZERO).await.unwrap();
        let waiting = {
            let order = order.clone();
            tokio::spawn(async move {
                order
                    .wait_for(&["a".into(), "b".into()], Duration::from_secs(30))
                    .await
            })
        };
        order.committed("a".into());
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        order.committed("b".into());
        waiting.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_batch_whose_predecessor_never_comes_is_refused_as_out_of_order() {
        let order = IngestOrder::new(0);
        let e = order
            .wait_for(&["gone".into()], Duration::from_millis(20))
            .await
            .unwrap_err();
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn memory_is_bounded() {
        let order = IngestOrder::new(0);
        for i in 0..REMEMBERED + 10 {
            order.committed(format!("id-{i}"));
        }
        let c = order.committed.lock().unwrap();
        assert_eq!(c.ids.len(), REMEMBERED);
        assert!(!c.ids.contains("id-0"));
        assert!(c.ids.contains(&format!("id-{}", REMEMBERED + 9)));
    }

    #[test]
    fn waiting_batches_stay_within_their_room() {
        let order = Arc::new(IngestOrder::new(100));
        let a = order.hold(60).unwrap();
        assert!(order.hold(41).is_none(), "beyond the room");
        let b = order.hold(40).unwrap();
        assert_eq!(
            order.waiting(),
            Waiting {
                batches: 2,
                bytes: 100
            }
        );
        drop(a);
        assert!(order.hold(61).is_none());
        let c = order.hold(60).unwrap();
        drop((b, c));
        assert_eq!(order.waiting(), Waiting::default());
        // No room at all: no batch waits.
        assert!(Arc::new(IngestOrder::new(0)).hold(1).is_none());
    }
}
