//! The job side of the hub: what ingest publishes after a commit, and the catch-up watcher
//! that finds what other replicas committed.

use std::sync::{Arc, Weak};
use std::time::Duration;

use storage::{Job, JobId, LineQuery, NewLine, Storage, WriteBatch};
use tokio_util::sync::CancellationToken;

use super::channels::{Channel, Channels, Full, Membership};
use crate::notify::{EventKind, JobEvent};

/// What a job's followers are told.
#[derive(Debug)]
pub enum JobNews {
    /// Records just committed, in seq order (one write of one job; may repeat stored ones).
    Lines(Vec<NewLine>),
    /// Storage holds records up to `last_seq` (committed elsewhere): read what you lack.
    Stored { last_seq: u64 },
    /// The job reached a final status, as committed; its lines are all stored.
    Finished(Box<Job>),
}

/// Records the watcher reads per round trip, and round trips per tick at most.
const WATCH_PAGE: u32 = 1000;
const WATCH_PAGES_PER_TICK: usize = 10;

/// Job channels plus what the watchers need.
pub struct JobHub {
    pub(super) channels: Arc<Channels<JobId, JobNews>>,
    storage: Arc<dyn Storage>,
    catch_up: Duration,
    closing: CancellationToken,
}

impl JobHub {
    pub fn new(
        storage: Arc<dyn Storage>,
        capacity: usize,
        max_followers: usize,
        catch_up: Duration,
        closing: CancellationToken,
    ) -> JobHub {
        JobHub {
            channels: Channels::new(capacity, max_followers),
            storage,
            catch_up,
            closing,
        }
    }

    /// Followers of all jobs.
    pub fn followers(&self) -> usize {
        self.channels.followers()
    }

    /// Joins a job's channel; the first follower of a job starts its catch-up watcher.
    pub fn join(&self, job_id: JobId) -> Result<Membership<JobId, JobNews>, Full> {
        let (m, created) = self.channels.join(&job_id)?;
        if let Some(weak) = created {
            tokio::spawn(watch(
                weak,
                job_id,
                self.storage.clone(),
                self.catch_up,
                self.closing.clone(),
            ));
        }
        Ok(m)
    }

    /// Hands a committed write to the followers of its jobs: call right after the commit,
    /// never before. Takes the batch so the lines move instead of being copied.
    pub fn publish(&self, write: WriteBatch, events: &[JobEvent]) {
        if self.channels.is_idle() {
            return;
        }
        for w in write.jobs {
            if w.lines.is_empty() {
                continue;
            }
            if let Some(ch) = self.channels.get(&w.job_id) {
                let last = w.lines.last().map_or(0, |l| l.seq);
                ch.send(Arc::new(JobNews::Lines(w.lines)));
                ch.raise_mark(last);
            }
        }
        for ev in events {
            if ev.kind == EventKind::JobFinished {
                if let Some(ch) = self.channels.get(&ev.job.id) {
                    ch.send(Arc::new(JobNews::Finished(Box::new(ev.job.clone()))));
                }
            }
        }
    }
}

/// While a job has followers, looks every `interval` for what other replicas committed
/// (one primary-key read of the job; lines are read only when its `last_seq` moved past
/// what this process published) and for its end. Stops with the channel.
async fn watch(
    channel: Weak<Channel<JobNews>>,
    job_id: JobId,
    storage: Arc<dyn Storage>,
    interval: Duration,
    closing: CancellationToken,
) {
    // Lines stored before the first look are read by the followers themselves (each reads
    // storage after joining), so the first look only tells them how far storage goes.
    let mut first = true;
    let mut finished = false;
    loop {
        tokio::select! {
            _ = closing.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let Some(ch) = channel.upgrade() else { return };
        let job = match storage.get_job(job_id).await {
            Ok(Some(j)) => j,
            Ok(None) => continue,
            Err(e) => {
                tracing::debug!(job_id, error = %e, "live catch-up: reading the job failed");
                continue;
            }
        };
        let have = ch.mark();
        if first {
            first = false;
            ch.raise_mark(job.last_seq);
            ch.send(Arc::new(JobNews::Stored {
                last_seq: job.last_seq,
            }));
        } else if job.last_seq > have {
            let mut after = have;
            for _ in 0..WATCH_PAGES_PER_TICK {
                let page = match storage
                    .read_lines(&LineQuery {
                        job_id,
                        after_seq: after,
                        limit: WATCH_PAGE,
                        stream: None,
                    })
                    .await
                {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::debug!(job_id, error = %e, "live catch-up: reading lines failed");
                        break;
                    }
                };
                let full = page.len() == WATCH_PAGE as usize;
                let Some(last) = page.last().map(|l| l.seq) else {
                    break;
                };
                after = last;
                ch.send(Arc::new(JobNews::Lines(super::follow::to_new_lines(page))));
                if !full {
                    break;
                }
            }
            ch.raise_mark(after);
            if after < job.last_seq {
                // More than a tick's worth: followers read the rest themselves.
                ch.send(Arc::new(JobNews::Stored {
                    last_seq: job.last_seq,
                }));
                ch.raise_mark(job.last_seq);
            }
        }
        if job.status.is_final() && !finished {
            finished = true;
            ch.send(Arc::new(JobNews::Finished(Box::new(job))));
        } else if !job.status.is_final() {
            // A restarted container runs again; its next end is news again.
            finished = false;
        }
    }
}
