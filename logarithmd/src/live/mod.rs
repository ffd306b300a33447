//! The live hub: push-based follow of job logs and runs, without polling the database for
//! what this process commits.
//!
//! # How it works
//! - Each followed job (or run) has one bounded broadcast channel, created by its first
//!   follower and dropped with its last ([`channels`]). Publishing to something nobody
//!   follows costs a map lookup.
//! - Ingest calls [`JobHub::publish`] right after a batch commits: the committed records
//!   move to the job's followers (no copy per follower, no database read). The flow store
//!   calls [`RunHub::publish`] right after saving a run.
//! - Other replicas' commits are found by one catch-up watcher per followed job or run:
//!   every `catch_up_interval` it reads the job row (a primary-key read) or the run
//!   document, and reads lines only when the job's `last_seq` moved past what this process
//!   published. 200 followers of one job cost one such read per tick, not 200.
//! - A follower ([`JobFollower`]) reads storage from its start position, then takes pushed
//!   records. Records are numbered gaplessly per container, so it can prove it misses
//!   nothing: on a gap, a lag (it fell more than `channel_capacity` writes behind) or news
//!   of lines stored elsewhere it reads storage from its last seq, and it drops records at
//!   or below that seq, so nothing is missing and nothing doubled. Its `End` comes after
//!   every line of the job.
//! - On shutdown ([`Live::close`]) followers end without an `End`; clients resume
//!   (SSE `Last-Event-ID`) on another replica or after the restart.
//!
//! # Interface
//! ```text
//! let mut f = state.live.follow_job(job_id, after_seq, None).await?; // None: no such job
//! while let Some(ev) = f.next().await? {
//!     match ev {
//!         FollowEvent::Line(l) => send(l.last_seq, l.stream, &l.line), // resume after last_seq
//!         FollowEvent::End(job) => send_verdict(job),                   // then it returns None
//!     }
//! }
//! let mut r = state.live.runs.follow(run_id).await?;                  // Saved(..)* then End(..)
//! ```
//! Heartbeats are the transport's job (SSE keep-alive comments, WebSocket pings).
//!
//! # Layout
//! - [`channels`]: the keyed, bounded broadcast registry.
//! - [`jobs`]: [`JobHub`]: publish after commit, the job catch-up watcher.
//! - [`follow`]: [`JobFollower`]: storage read, then push, gap-proof.
//! - [`runs`]: [`RunHub`] and [`RunFollower`].

pub mod channels;
pub mod follow;
pub mod jobs;
pub mod runs;

use std::sync::Arc;
use std::time::Duration;

use engine::RunStore;
use protocol::Stream;
use serde::Deserialize;
use storage::{JobId, Storage};
use tokio_util::sync::CancellationToken;

pub use channels::Full;
pub use follow::{FollowEvent, JobFollower, LogicalLine, MAX_JOINED_BYTES};
pub use jobs::{JobHub, JobNews};
pub use runs::{RunEvent, RunFollower, RunHub, RunSaved};

/// `[live]`: live follow (SSE streams, `follow=true`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveSettings {
    /// How often a followed job or run is checked for what other logarithmd replicas
    /// committed (one cheap read per followed job per interval). Lines this replica commits
    /// are pushed at once, whatever this is.
    #[serde(default = "default_catch_up_interval", with = "humantime_serde")]
    pub catch_up_interval: Duration,
    /// Interval of SSE heartbeat comments on an idle stream, so proxies keep it open.
    #[serde(default = "default_heartbeat", with = "humantime_serde")]
    pub heartbeat: Duration,
    /// Followers (SSE streams and `follow=true` downloads together) at most; beyond it a
    /// new follow is answered 503.
    #[serde(default = "default_max_followers")]
    pub max_followers: usize,
    /// Committed writes a follower may fall behind before it reads storage instead.
    #[serde(default = "default_channel_capacity")]
    pub channel_capacity: usize,
}

impl Default for LiveSettings {
    fn default() -> LiveSettings {
        LiveSettings {
            catch_up_interval: default_catch_up_interval(),
            heartbeat: default_heartbeat(),
            max_followers: default_max_followers(),
            channel_capacity: default_channel_capacity(),
        }
    }
}

impl LiveSettings {
    pub fn validate(&self) -> Result<(), String> {
        if self.catch_up_interval < Duration::from_millis(50) {
            return Err("live.catch_up_interval must be at least 50ms".into());
        }
        if self.heartbeat < Duration::from_millis(100) {
            return Err("live.heartbeat must be at least 100ms".into());
        }
        if self.max_followers == 0 || self.channel_capacity == 0 {
            return Err("live.max_followers and live.channel_capacity must be positive".into());
        }
        Ok(())
    }
}

fn default_catch_up_interval() -> Duration {
    Duration::from_secs(1)
}
fn default_heartbeat() -> Duration {
    Duration::from_secs(15)
}
fn default_max_followers() -> usize {
    10_000
}
fn default_channel_capacity() -> usize {
    256
}

/// Why following could not start.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error(transparent)]
    Full(#[from] Full),
    #[error(transparent)]
    Storage(#[from] storage::Error),
    #[error(transparent)]
    Engine(#[from] engine::Error),
}

/// The hub: jobs and runs. Cheap to clone.
#[derive(Clone)]
pub struct Live {
    pub jobs: Arc<JobHub>,
    pub runs: Arc<RunHub>,
    storage: Arc<dyn Storage>,
    closing: CancellationToken,
    pub settings: LiveSettings,
}

impl Live {
    /// `runs` reads runs for run followers (the same store the engine saves through).
    pub fn new(storage: Arc<dyn Storage>, runs: Arc<dyn RunStore>, settings: LiveSettings) -> Live {
        let closing = CancellationToken::new();
        let jobs = JobHub::new(
            storage.clone(),
            settings.channel_capacity,
            settings.max_followers,
            settings.catch_up_interval,
            closing.clone(),
        );
        let runs = RunHub::new(
            runs,
            settings.max_followers,
            settings.catch_up_interval,
            closing.clone(),
        );
        Live {
            jobs: Arc::new(jobs),
            runs: Arc::new(runs),
            storage,
            closing,
            settings,
        }
    }

    /// Follows a job's log from after `after` (a seq; 0 from the start), lines of `stream`
    /// only if given. `Ok(None)` if there is no such job.
    pub async fn follow_job(
        &self,
        job_id: JobId,
        after: u64,
        stream: Option<Stream>,
    ) -> Result<Option<JobFollower>, FollowError> {
        let membership = self.jobs.join(job_id)?;
        // Read after joining: an end committed before this read is seen here, one after
        // it is pushed.
        let Some(job) = self.storage.get_job(job_id).await? else {
            return Ok(None);
        };
        let mut f = JobFollower::new(
            job_id,
            self.storage.clone(),
            membership,
            self.closing.clone(),
            after,
            stream,
        );
        if job.status.is_final() {
            f.finished_already(job);
        }
        Ok(Some(f))
    }

    /// Ends every follow (shutdown): streams close without an end event.
    pub fn close(&self) {
        self.closing.cancel();
    }

    /// Followers of jobs and runs now.
    pub fn followers(&self) -> usize {
        self.jobs.followers() + self.runs.followers()
    }
}
