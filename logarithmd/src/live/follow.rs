//! [`JobFollower`]: one follower of one job's log. It reads storage from where it starts,
//! then takes what the hub pushes, and falls back to a storage read whenever it cannot prove
//! it has every record (a gap in the seqs, a lag, news of lines stored elsewhere). Records
//! are numbered gaplessly per container (docs/protocol.md), which is what makes a gap
//! visible.

use std::collections::VecDeque;
use std::sync::Arc;

use protocol::Stream;
use storage::{Job, JobId, LineQuery, NewLine, Storage};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::channels::Membership;
use super::jobs::JobNews;

/// Longest line joined from continuation records; past it the rest starts a new line.
pub const MAX_JOINED_BYTES: usize = 16 << 20;
/// Records read per storage round trip.
const READ_PAGE: u32 = 1000;

/// A whole line, possibly joined from continuation records `seq..=last_seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalLine {
    pub seq: u64,
    pub last_seq: u64,
    pub ts: i64,
    pub stream: Stream,
    pub line: Vec<u8>,
}

/// What a follower yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowEvent {
    /// The next line (in seq order, each once).
    Line(LogicalLine),
    /// The job finished, as committed; every line of it was yielded before this.
    End(Box<Job>),
}

/// Follows one job. Dropping it leaves the job's channel.
pub struct JobFollower {
    job_id: JobId,
    storage: Arc<dyn Storage>,
    membership: Membership<JobId, JobNews>,
    closing: CancellationToken,
    /// Only lines of this stream are yielded (all records are still read, in order).
    stream: Option<Stream>,
    /// Seq of the last record taken in (yielded, filtered out, or held in `pending`).
    cursor: u64,
    /// A line whose continuation records are not here yet.
    pending: Option<LogicalLine>,
    ready: VecDeque<FollowEvent>,
    /// Storage may hold records after `cursor` that were not pushed: read them first.
    must_read: bool,
    /// The job's end, once seen; yielded after one last read.
    finished: Option<Box<Job>>,
    done: bool,
}

impl JobFollower {
    pub(super) fn new(
        job_id: JobId,
        storage: Arc<dyn Storage>,
        membership: Membership<JobId, JobNews>,
        closing: CancellationToken,
        after: u64,
        stream: Option<Stream>,
    ) -> JobFollower {
        JobFollower {
            job_id,
            storage,
            membership,
            closing,
            stream,
            cursor: after,
            pending: None,
            ready: VecDeque::new(),
            must_read: true,
            finished: None,
            done: false,
        }
    }

    /// Marks the job as already finished (the caller saw it final after joining).
    pub(super) fn finished_already(&mut self, job: Job) {
        self.finished = Some(Box::new(job));
    }

    /// The job followed.
    pub fn job_id(&self) -> JobId {
        self.job_id
    }

    /// Whether [`next`](Self::next) would have to wait for news (a writer flushes then).
    pub fn is_idle(&self) -> bool {
        self.ready.is_empty() && !self.must_read && self.finished.is_none() && !self.done
    }

    /// The next line or the end. `Ok(None)` once the end was yielded, or when logarithmd
    /// shuts down (then without an end: the client resumes elsewhere or later).
    pub async fn next(&mut self) -> storage::Result<Option<FollowEvent>> {
        loop {
            if let Some(ev) = self.ready.pop_front() {
                return Ok(Some(ev));
            }
            if self.done {
                return Ok(None);
            }
            if self.must_read {
                self.read_page().await?;
                continue;
            }
            if let Some(job) = self.finished.take() {
                // Its lines committed with or before its end: the read above found them.
                if let Some(p) = self.pending.take() {
                    self.emit(p);
                }
                self.ready.push_back(FollowEvent::End(job));
                self.done = true;
                continue;
            }
            let news = tokio::select! {
                _ = self.closing.cancelled() => {
                    self.done = true;
                    return Ok(None);
                }
                n = self.membership.rx.recv() => n,
            };
            match news {
                Ok(news) => self.take(&news),
                Err(RecvError::Lagged(_)) => self.must_read = true,
                Err(RecvError::Closed) => {
                    self.done = true;
                    return Ok(None);
                }
            }
        }
    }

    fn take(&mut self, news: &JobNews) {
        match news {
            JobNews::Lines(lines) => {
                for l in lines {
                    if l.seq <= self.cursor {
                        continue;
                    }
                    if l.seq != self.cursor + 1 {
                        // Records before this one were committed but not pushed here (by
                        // another replica, or before we joined): storage has them, and
                        // this one too, since it was pushed after its commit.
                        self.must_read = true;
                        return;
                    }
                    self.record(l.seq, l.ts, l.stream, l.cont, &l.line);
                }
            }
            JobNews::Stored { last_seq } => {
                if *last_seq > self.cursor {
                    self.must_read = true;
                }
            }
            JobNews::Finished(job) => {
                self.finished = Some(job.clone());
                if job.last_seq > self.cursor {
                    self.must_read = true;
                }
            }
        }
    }

    async fn read_page(&mut self) -> storage::Result<()> {
        let page = self
            .storage
            .read_lines(&LineQuery {
                job_id: self.job_id,
                after_seq: self.cursor,
                limit: READ_PAGE,
                stream: None,
            })
            .await?;
        if page.len() < READ_PAGE as usize {
            self.must_read = false;
        }
        for l in page {
            if l.seq <= self.cursor {
                continue;
            }
            self.record(l.seq, l.ts, l.stream, l.cont, &l.line);
        }
        Ok(())
    }

    fn record(&mut self, seq: u64, ts: i64, stream: Stream, cont: bool, line: &[u8]) {
        self.cursor = seq;
        match self.pending.as_mut() {
            Some(p) => {
                p.line.extend_from_slice(line);
                p.last_seq = seq;
                if !cont || p.line.len() >= MAX_JOINED_BYTES {
                    if let Some(p) = self.pending.take() {
                        self.emit(p);
                    }
                }
            }
            None => {
                let l = LogicalLine {
                    seq,
                    last_seq: seq,
                    ts,
                    stream,
                    line: line.to_vec(),
                };
                if cont && l.line.len() < MAX_JOINED_BYTES {
                    self.pending = Some(l);
                } else {
                    self.emit(l);
                }
            }
        }
    }

    fn emit(&mut self, l: LogicalLine) {
        if self.stream.is_none_or(|s| s == l.stream) {
            self.ready.push_back(FollowEvent::Line(l));
        }
    }
}

/// Converts stored records to what the hub pushes (the watcher's reads).
pub(super) fn to_new_lines(page: Vec<storage::StoredLine>) -> Vec<NewLine> {
    page.into_iter()
        .map(|l| NewLine {
            seq: l.seq,
            ts: l.ts,
            stream: l.stream,
            cont: l.cont,
            line: l.line,
        })
        .collect()
}
