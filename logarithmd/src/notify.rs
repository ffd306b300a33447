//! In-process notification of job events: the job events webhooks announce (`job.started`,
//! `job.finished`), delivered to components inside logarithmd (the
//! flow engine) without HTTP.
//!
//! - [`JobEvents`] is the hub. `AppState::notify` publishes to it only after `apply`
//!   committed, so a subscriber never sees an event storage could still roll back. Each
//!   event carries the job as that commit left it ([`JobEvent`], the same snapshot webhook
//!   deliveries carry).
//! - [`JobEvents::subscribe`] gives a [`JobEventStream`]; `recv` yields events in commit
//!   order (of this process). Subscribing sees events published after it, not before.
//! - It is bounded: a subscriber more than `capacity` events behind gets
//!   [`RecvError::Lagged`] with the number it missed, then continues with the oldest it
//!   still has. It must then reconcile from storage (`list_jobs`). Events committed by
//!   other logarithmd replicas are not seen here: durable, cross-replica delivery is the
//!   webhook outbox's job; this is the fast path.
//!
//! ```
//! # async fn demo() {
//! use logarithmd::notify::{JobEvents, RecvError};
//! let events = JobEvents::new(1024);
//! let mut stream = events.subscribe();
//! tokio::spawn(async move {
//!     loop {
//!         match stream.recv().await {
//!             Ok(ev) => println!("{} {}", ev.kind, ev.job.id),
//!             Err(RecvError::Lagged(n)) => println!("missed {n}: reconcile from storage"),
//!             Err(RecvError::Closed) => break,
//!         }
//!     }
//! });
//! # }
//! ```

use std::sync::Arc;

use tokio::sync::broadcast;

pub use storage::{EventKind, JobEvent};

/// Events a subscriber can fall behind by before it misses some.
pub const DEFAULT_CAPACITY: usize = 4096;

/// The hub: cheap to clone, every clone publishes to the same subscribers.
#[derive(Clone)]
pub struct JobEvents {
    tx: broadcast::Sender<Arc<JobEvent>>,
}

impl std::fmt::Debug for JobEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobEvents")
            .field("subscribers", &self.tx.receiver_count())
            .finish()
    }
}

impl Default for JobEvents {
    fn default() -> JobEvents {
        JobEvents::new(DEFAULT_CAPACITY)
    }
}

/// Why [`JobEventStream::recv`] returned no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// The subscriber fell behind and this many events were dropped for it.
    #[error("fell behind: {0} job events were dropped")]
    Lagged(u64),
    /// The hub is gone (logarithmd is shutting down).
    #[error("job events closed")]
    Closed,
}

/// One subscriber's view of the events.
pub struct JobEventStream {
    rx: broadcast::Receiver<Arc<JobEvent>>,
}

impl JobEventStream {
    /// The next event, waiting for it.
    pub async fn recv(&mut self) -> Result<Arc<JobEvent>, RecvError> {
        self.rx.recv().await.map_err(|e| match e {
            broadcast::error::RecvError::Lagged(n) => RecvError::Lagged(n),
            broadcast::error::RecvError::Closed => RecvError::Closed,
        })
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<Result<Arc<JobEvent>, RecvError>> {
        match self.rx.try_recv() {
            Ok(ev) => Some(Ok(ev)),
            Err(broadcast::error::TryRecvError::Empty) => None,
            Err(broadcast::error::TryRecvError::Lagged(n)) => Some(Err(RecvError::Lagged(n))),
            Err(broadcast::error::TryRecvError::Closed) => Some(Err(RecvError::Closed)),
        }
    }
}

impl JobEvents {
    /// A hub whose subscribers may fall `capacity` events behind.
    pub fn new(capacity: usize) -> JobEvents {
        let (tx, _) = broadcast::channel(capacity.max(1));
        JobEvents { tx }
    }

    pub fn subscribe(&self) -> JobEventStream {
        JobEventStream {
            rx: self.tx.subscribe(),
        }
    }

    /// Subscribers now.
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// Publishes committed events, in order. Call only after their commit.
    pub fn publish(&self, events: &[JobEvent]) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        for ev in events {
            // An error only means nobody is subscribed any more.
            let _ = self.tx.send(Arc::new(ev.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use storage::{Job, JobStatus};

    fn event(kind: EventKind, id: i64) -> JobEvent {
        JobEvent {
            kind,
            at: 7,
            job: Job {
                id,
                container_id: format!("c{id}"),
                name: "n".into(),
                image: "i".into(),
                node: "node".into(),
                labels: BTreeMap::new(),
                annotations: BTreeMap::new(),
                flow: None,
                run: None,
                stage: None,
                action: None,
                job: None,
                status: JobStatus::Running,
                reason: None,
                exit_code: None,
                co_result: None,
                created_at: 1,
                started_at: 1,
                finished_at: None,
                restart_count: 0,
                tty: false,
                log_driver: String::new(),
                logs_unavailable: None,
                last_seq: 0,
                line_count: 0,
                outputs: BTreeMap::new(),
            },
        }
    }

    #[tokio::test]
    async fn subscribers_get_events_in_order() {
        let hub = JobEvents::new(16);
        let mut a = hub.subscribe();
        let mut b = hub.clone().subscribe();
        assert_eq!(hub.subscribers(), 2);
        hub.publish(&[
            event(EventKind::JobStarted, 1),
            event(EventKind::JobFinished, 1),
        ]);
        for s in [&mut a, &mut b] {
            let first = s.recv().await.unwrap();
            assert_eq!((first.kind, first.job.id), (EventKind::JobStarted, 1));
            let second = s.recv().await.unwrap();
            assert_eq!((second.kind, second.job.id), (EventKind::JobFinished, 1));
            assert!(s.try_recv().is_none());
        }
        // A late subscriber sees only what comes after it.
        let mut late = hub.subscribe();
        assert!(late.try_recv().is_none());
        hub.publish(&[event(EventKind::JobStarted, 2)]);
        assert_eq!(late.recv().await.unwrap().job.id, 2);
    }

    #[tokio::test]
    async fn a_slow_subscriber_is_told_how_many_it_missed() {
        let hub = JobEvents::new(2);
        let mut s = hub.subscribe();
        let evs: Vec<JobEvent> = (1..=5).map(|i| event(EventKind::JobFinished, i)).collect();
        hub.publish(&evs);
        assert_eq!(s.recv().await.unwrap_err(), RecvError::Lagged(3));
        assert_eq!(s.recv().await.unwrap().job.id, 4);
        assert_eq!(s.recv().await.unwrap().job.id, 5);
        drop(hub);
        assert_eq!(s.recv().await.unwrap_err(), RecvError::Closed);
    }
}
