//! How the engine hears of job verdicts: the one interface its embedder (logarithmd) feeds.
//!
//! logarithmd decides a job's verdict when it commits the container's exit (after every
//! line before it is stored) and publishes it in-process; its adapter turns each committed
//! `job.finished` of a flow job into a [`JobResult`]. The engine never polls Docker for
//! exits: a container that exited without a verdict has lines still on their way.
//!
//! [`ChannelResults`] is an implementation fed by hand, for tests and embedders without
//! storage.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::error::{Error, ErrorKind, Result};
use crate::run::Nanos;

/// logarithmd's verdict on one flow job, keyed by its container and its
/// `io.containerops.*` labels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobResult {
    pub container_id: String,
    /// `io.containerops.run`.
    pub run: String,
    pub stage: String,
    pub action: String,
    pub job: String,
    pub success: bool,
    /// Why (`CO_RESULT = false`, `exit code 2`).
    pub reason: String,
    pub exit_code: Option<i64>,
    /// `[COUT] KEY = VALUE` outputs other than CO_RESULT.
    pub outputs: BTreeMap<String, String>,
    pub finished_at: Option<Nanos>,
}

/// What [`JobResults::recv`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A verdict was committed.
    Result(Box<JobResult>),
    /// Some verdicts were missed: the engine asks [`JobResults::lookup`] for every job it
    /// waits on.
    Lagged,
    /// No more notices will come (shutdown); the engine falls back to periodic lookups.
    Closed,
}

/// The source of job verdicts.
#[async_trait::async_trait]
pub trait JobResults: Send + 'static {
    /// The next notice, waiting for it. Must be cancel-safe (the engine calls it inside
    /// `select!`): a notice is either returned or kept for the next call.
    async fn recv(&mut self) -> Notice;

    /// The committed verdict of a container, if there is one yet (for resuming after a
    /// restart and after [`Notice::Lagged`]).
    async fn lookup(&self, container_id: &str) -> Result<Option<JobResult>>;

    /// The last `lines` lines of a container's log, oldest first, for its job's post
    /// script. Sources without logs give none.
    async fn log_tail(&self, container_id: &str, lines: usize) -> Result<Vec<String>>;
}

/// Verdicts fed by hand through a [`ResultsFeed`].
pub struct ChannelResults {
    rx: mpsc::Receiver<JobResult>,
    known: Arc<Mutex<HashMap<String, JobResult>>>,
    lagged: Arc<AtomicBool>,
}

/// Notices buffered for the engine; past that the feed reports [`Notice::Lagged`] and the
/// engine looks verdicts up instead, so memory stays bounded without losing any.
const FEED_CAPACITY: usize = 1024;

/// The feeding end of [`ChannelResults`].
#[derive(Clone)]
pub struct ResultsFeed {
    tx: mpsc::Sender<JobResult>,
    known: Arc<Mutex<HashMap<String, JobResult>>>,
    lagged: Arc<AtomicBool>,
}

impl ChannelResults {
    pub fn new() -> (ResultsFeed, ChannelResults) {
        let (tx, rx) = mpsc::channel(FEED_CAPACITY);
        let known = Arc::new(Mutex::new(HashMap::new()));
        let lagged = Arc::new(AtomicBool::new(false));
        (
            ResultsFeed {
                tx,
                known: known.clone(),
                lagged: lagged.clone(),
            },
            ChannelResults { rx, known, lagged },
        )
    }
}

impl ResultsFeed {
    /// Records a verdict (for lookups) and announces it.
    pub fn send(&self, result: JobResult) {
        if let Ok(mut known) = self.known.lock() {
            known.insert(result.container_id.clone(), result.clone());
        }
        match self.tx.try_send(result) {
            Ok(()) => {}
            // The verdict is recorded above; the engine will look it up.
            Err(mpsc::error::TrySendError::Full(_)) => self.lagged.store(true, Ordering::Release),
            // The engine is gone.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    /// Records a verdict without announcing it (as if the notice were missed).
    pub fn record_silently(&self, result: JobResult) {
        if let Ok(mut known) = self.known.lock() {
            known.insert(result.container_id.clone(), result);
        }
    }
}

#[async_trait::async_trait]
impl JobResults for ChannelResults {
    async fn recv(&mut self) -> Notice {
        if self.lagged.swap(false, Ordering::AcqRel) {
            return Notice::Lagged;
        }
        match self.rx.recv().await {
            Some(r) => Notice::Result(Box::new(r)),
            None => Notice::Closed,
        }
    }

    async fn lookup(&self, container_id: &str) -> Result<Option<JobResult>> {
        let known = self
            .known
            .lock()
            .map_err(|_| Error::new(ErrorKind::Internal, "results lock poisoned"))?;
        Ok(known.get(container_id).cloned())
    }

    /// Verdicts fed by hand come without logs.
    async fn log_tail(&self, _container_id: &str, _lines: usize) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
}
