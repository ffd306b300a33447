//! One container's log, run after run, as pipeline items.
//!
//! A follower lives as long as its container. For each run (identified by Docker's
//! `StartedAt`) it sends the meta, then the records, then the exit. Records are numbered by
//! `seq`, gapless from 1 for the container's whole log, so a run started by the restart
//! policy continues the numbering.
//!
//! Resuming (after the stream broke, for the next run, or from a checkpoint) uses the
//! [`Position`] of the last *cut*: a line boundary where no line was half read. Docker is
//! asked for lines `since` the position's exact timestamp (nanoseconds, inclusive; whole
//! seconds through bollard for endpoints [`LogClient`] cannot reach); lines older than it,
//! and the first `at_ts` lines at exactly it, are skipped. So the read after a run's exit
//! fetches only what came after the last cut, whatever the log's size; numbering restarts at
//! `seq + 1` and records already sent (a long line sent in part before the break) are not
//! sent again. This relies on Docker's timestamps not going backwards in its log, which
//! holds except for rare sub-millisecond inversions between stdout and stderr.

// Layout: `api` reads a run through Docker's logs endpoint (`backlog`: when a rotating log
// is followed and when caught up without following), `files` from its json-file,
// `resume` decides which re-read records are skipped, `runs` enters and closes runs (meta,
// exit), `emit` holds the waits and sends items into the pipeline; this file is the run
// loop (restarts, removal, retries) and the state both paths share.
mod api;
mod backlog;
mod emit;
mod files;
mod resume;
mod runs;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptions;
use bollard::Docker;
use futures::stream::BoxStream;
use futures::StreamExt;
use protocol::{ContainerExit, Stream};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, instrument, warn};

use super::frames::{Assembler, Piece};
use super::inspect::{inspect, Inspected};
use super::logs::{since_param, LogBody, LogClient};
use super::{classify, Failure};
use crate::checkpoint::{Entry, ExitMark, FilePos, Position};
use crate::filter::Filter;
use crate::metrics::{FollowGuard, Metrics};
use crate::pipeline::{Item, ItemKind};
use crate::retry::Retry;
use backlog::Backlog;
use resume::{Overlap, Repeats, Replays, Skip};
use runs::run_limit;

/// How long to wait for the `die` event of a run that ended while we were not looking.
const DIE_EVENT_WAIT: Duration = Duration::from_secs(2);
/// While a running container's log cannot be read, how often to look at it again.
const IDLE_RECHECK: Duration = Duration::from_secs(30);
/// Attempts at the catch-up read after a run ended, before flushing what we have.
const FINAL_READ_ATTEMPTS: u32 = 3;
const RETRY_INITIAL: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// What every follower shares.
#[derive(Debug)]
pub struct Shared {
    pub docker: Docker,
    /// The log reader (nanosecond `since`), when the endpoint allows it; else bollard.
    pub logs: Option<LogClient>,
    pub tx: mpsc::Sender<Item>,
    /// The pipeline's room in records, for the runs of records sent into `tx`.
    pub room: crate::pipeline::send::Room,
    pub max_line_bytes: usize,
    pub filter: Filter,
    pub shutdown: CancellationToken,
    /// Bounds concurrent reads of finished runs ([`CATCH_UP_CONCURRENCY`]).
    pub catch_up: Arc<tokio::sync::Semaphore>,
    pub metrics: Arc<Metrics>,
    /// Source `docker-files`: read `json-file` containers from their log files; Docker's
    /// data root (`docker_root`).
    pub files_root: Option<PathBuf>,
}

/// `logs_unavailable` of a container removed before its log could be read.
const REMOVED_UNREAD: &str = "the container was removed before its log could be read \
     (docker run --rm of a container that exited at once)";

/// `logs_unavailable` of a run whose container was removed before its log was read after
/// the run's end: Docker's follow stream can end before the last messages, and only a
/// read after the end tells (see [`Run::tail_read`]).
const REMOVED_BEFORE_END: &str = "the container was removed before its log was read to \
     the end: its last lines may be missing";

/// Finished runs read at the same time.
pub const CATCH_UP_CONCURRENCY: usize = 8;

/// A `die` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Die {
    pub exit_code: Option<i64>,
    pub time_ns: i64,
}

/// What discovery tells a follower; a `watch` so it never blocks discovery nor loses the
/// fact that something happened (every event bumps the version, waking the follower).
#[derive(Debug, Clone, Default)]
pub struct Signals {
    /// The latest `die` event.
    pub die: Option<Die>,
}

/// Why a follower ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The container was removed.
    Gone,
    /// The filter excludes it.
    Ignored,
    Cancelled,
    /// Docker refused to inspect it (permanent error).
    Failed(String),
}

/// The run being followed.
#[derive(Debug)]
struct Run {
    key: String,
    started_at: i64,
    restart_count: u32,
    /// The log of this run is read to its end (or cannot be read).
    logs_done: bool,
    exit_sent: bool,
    /// The last log stream ended; whether it was the run's end is decided by inspecting.
    stream_ended: bool,
    /// Non-following reads done after the run ended.
    final_reads: u32,
    /// The log was read to its end after the run ended (a read after the end that ended
    /// cleanly, or a log file read to its end after the `die`): nothing of the run can be
    /// missing at its end. Reset whenever a follow stream starts.
    tail_read: bool,
    /// Why the last read after the run's end failed (for the job's report).
    tail_error: Option<String>,
    /// The run's end as the last inspection showed it (exit code, finished at), for when
    /// its `die` event is missed.
    seen_exit: Option<(Option<i64>, i64)>,
}

enum StreamEnd {
    Ended { received: bool },
    Broken(String),
    Unavailable(String),
    Cancelled,
}

struct Follower {
    shared: Arc<Shared>,
    id: Arc<str>,
    signals: watch::Receiver<Signals>,
    signals_open: bool,
    /// Last cut (resumable position).
    pos: Position,
    /// Position including lines completed since the last cut.
    tentative: Position,
    next_seq: u64,
    sent_seq: u64,
    run: Option<Run>,
    /// From the checkpoint: this run's exit was already delivered.
    acked_exit: Option<ExitMark>,
    assembler: Option<Assembler>,
    skip: Skip,
    /// Per stream (stdout, stderr): the current line is being skipped.
    skipping: [bool; 2],
    /// The position this stream resumed from, until a line at or after it is read: if
    /// Docker no longer has the line at the position, lines may have been lost.
    resume_check: Option<Position>,
    /// Per stream: lines Docker sends twice.
    replays: [Replays; 2],
    /// Lines Docker sends twice in a row (API reads only).
    repeats: Option<Repeats>,
    /// Whether a follow stream skipped lines at its start (API reads only).
    overlap: Overlap,
    /// The running run's log rotates at this size: follow it only while caught up (see
    /// [`backlog`]).
    rotation: Option<u64>,
    /// The byte rate of the log read.
    backlog: Backlog,
    /// Lines with a later timestamp are not this run's (see [`run_limit`]).
    limit_ts: Option<i64>,
    /// Counts the container as followed once the filter has accepted it.
    followed: Option<FollowGuard>,
    /// The meta of a container seen created and not yet started.
    seen: Option<protocol::ContainerMeta>,
    /// The run's log file, when it is read from the file (`docker-files`).
    log_file: Option<PathBuf>,
    /// Reading the file failed for good (permissions): use the API.
    file_failed: bool,
    /// Where in the log file the message being assembled ends (file reads only).
    file_pos: Option<FilePos>,
    /// The log file opened as soon as the container started, before it was inspected
    /// (see `files::open_early`).
    early: Option<(
        crate::files::reader::FileReader,
        crate::files::tailer::Start,
    )>,
    /// What the container looked like before it first started.
    created: Option<Inspected>,
}

/// Follows container `id` until it is removed or `shared.shutdown` is cancelled.
#[instrument(name = "follower", skip_all, fields(container_id = %super::short_id(&id)))]
pub async fn follow(
    shared: Arc<Shared>,
    id: Arc<str>,
    signals: watch::Receiver<Signals>,
    resume: Option<Entry>,
) -> End {
    let mut f = Follower::new(shared, id, signals, resume.unwrap_or_default());
    let end = f.main().await;
    if end == End::Gone {
        // After everything else of this container, so its checkpoint entry goes last.
        f.send(ItemKind::Forget).await;
    }
    debug!(?end, "follower ended");
    end
}

impl Follower {
    fn new(
        shared: Arc<Shared>,
        id: Arc<str>,
        signals: watch::Receiver<Signals>,
        entry: Entry,
    ) -> Follower {
        Follower {
            shared,
            id,
            signals,
            signals_open: true,
            pos: entry.pos,
            tentative: entry.pos,
            next_seq: entry.pos.seq + 1,
            sent_seq: entry.pos.seq,
            run: None,
            acked_exit: entry.exit,
            assembler: None,
            skip: Skip::from(&entry.pos),
            skipping: [false; 2],
            resume_check: None,
            replays: Default::default(),
            overlap: Overlap::Off,
            repeats: None,
            rotation: None,
            backlog: Backlog::default(),
            limit_ts: None,
            followed: None,
            seen: None,
            log_file: None,
            file_failed: false,
            file_pos: None,
            early: None,
            created: None,
        }
    }

    async fn main(&mut self) -> End {
        let mut filtered = false;
        let mut retry = Retry::new(RETRY_INITIAL, RETRY_MAX);
        loop {
            if self.shared.shutdown.is_cancelled() {
                return End::Cancelled;
            }
            let info = match inspect(&self.shared.docker, &self.id)
                .await
                .inspect_err(|f| self.shared.metrics.docker_error(f))
            {
                Ok(i) => i,
                Err(Failure::NotFound) => {
                    // On docker-files, a log file opened in time is read (the run is then
                    // known); otherwise the job says the log could not be read.
                    if !self.read_removed().await {
                        return End::Cancelled;
                    }
                    if self.run.is_none() {
                        if let Some(meta) = self.seen.take() {
                            if !self.removed_unread(meta).await {
                                return End::Cancelled;
                            }
                        }
                    }
                    return if self.close_run(None).await {
                        End::Gone
                    } else {
                        End::Cancelled
                    };
                }
                Err(Failure::Transient(reason)) => {
                    let d = retry.next_delay();
                    warn!(%reason, retry_in = ?d, "cannot inspect container; retrying");
                    if !self.sleep(d).await {
                        return End::Cancelled;
                    }
                    continue;
                }
                Err(Failure::Permanent(reason)) => {
                    warn!(%reason, "cannot inspect container; giving up on it");
                    return End::Failed(reason);
                }
            };
            if !filtered {
                if !self
                    .shared
                    .filter
                    .matches(&info.meta.name, &info.meta.labels)
                {
                    return End::Ignored;
                }
                filtered = true;
                self.followed = Some(self.shared.metrics.following());
                debug!(name = %info.meta.name, "following");
            }
            if !info.has_run {
                // Created, never started: nothing to read until it starts.
                self.seen = Some(info.meta.clone());
                if !self.wait(None).await {
                    return End::Cancelled;
                }
                // Most likely started: open its log file before anything else, so a `--rm`
                // container that is gone by the time it is inspected is still read.
                self.open_early(&info).await;
                self.created = Some(info);
                continue;
            }
            if !self.enter_run(&info).await {
                return End::Cancelled;
            }
            self.log_file = self.file_of(&info);
            let Some(run) = self.run.as_mut() else {
                continue;
            };
            if !info.running {
                run.seen_exit = Some((info.exit_code, info.finished_at));
            }
            if run.logs_done {
                if !info.running && !run.exit_sent {
                    let exit = ContainerExit {
                        exit_code: info.exit_code,
                        finished_at: info.finished_at,
                        last_seq: self.next_seq - 1,
                        restart_count: run.restart_count,
                        reason: None,
                    };
                    run.exit_sent = true;
                    info!(
                        exit_code = ?exit.exit_code,
                        last_seq = exit.last_seq,
                        "container exited"
                    );
                    if !self.send(ItemKind::Exit(exit)).await {
                        return End::Cancelled;
                    }
                    continue;
                }
                // Done with this run (or its log is unreadable while it runs): wait for the
                // next start, the die of a run we cannot read, or the removal.
                let recheck = info.running.then_some(IDLE_RECHECK);
                if !self.wait(recheck).await {
                    return End::Cancelled;
                }
                continue;
            }
            if run.stream_ended {
                if !info.running {
                    // The run is over. Docker's follow stream can end before it delivered the
                    // last messages (it stops when the container's logger closes), so read
                    // once more without following, from the last cut; what was sent
                    // already is recognised by its seq and not sent again.
                    if run.final_reads < FINAL_READ_ATTEMPTS {
                        run.final_reads += 1;
                        self.limit_ts = run_limit(&info);
                        let permit = self.catch_up_permit().await;
                        let end = self.stream(info.meta.tty, false).await;
                        drop(permit);
                        match self.tail_read(end) {
                            None => return End::Cancelled,
                            Some(true) => {
                                if let Some(run) = self.run.as_mut() {
                                    run.final_reads = FINAL_READ_ATTEMPTS;
                                }
                            }
                            Some(false) => {
                                if !self.sleep(retry.next_delay()).await {
                                    return End::Cancelled;
                                }
                                continue;
                            }
                        }
                    }
                    // What is pending now is all there is.
                    let mut unread = None;
                    if let Some(run) = self.run.as_mut() {
                        run.logs_done = true;
                        if !run.tail_read {
                            unread = Some(run.tail_error.take().unwrap_or_default());
                        }
                    }
                    let flushed = self.flush().await;
                    self.limit_ts = None;
                    if !flushed {
                        return End::Cancelled;
                    }
                    if let Some(reason) = unread {
                        // Every read after the end failed: say so rather than end short.
                        let text = format!(
                            "the end of the log could not be read ({reason}): its last lines \
                             may be missing"
                        );
                        if !self.send(ItemKind::Unavailable(text)).await {
                            return End::Cancelled;
                        }
                    }
                    continue;
                }
                // Same run still going: the stream broke (daemon restart, network). Pending
                // partials are dropped and read again from the last cut.
                run.stream_ended = false;
                debug!("log stream ended while the container runs; reconnecting");
            }
            let tty = info.meta.tty;
            self.limit_ts = run_limit(&info);
            // Reading a finished run is bounded work: do few at once (an agent starting on
            // a host with many exited containers). A running one is followed without limit.
            let permit = if info.running {
                None
            } else {
                self.catch_up_permit().await
            };
            if let Some(run) = self.run.as_mut() {
                run.tail_read = false;
            }
            // Docker's follow stream of a rotating log skips files when it lags: it is
            // followed only while caught up (`backlog`). A finished run's read does not
            // follow anyway.
            self.rotation = info.rotate_bytes.filter(|_| info.running);
            let end = self.stream(tty, true).await;
            drop(permit);
            match end {
                StreamEnd::Cancelled => return End::Cancelled,
                StreamEnd::Unavailable(reason) => {
                    warn!(%reason, "container logs cannot be read");
                    if let Some(run) = self.run.as_mut() {
                        run.logs_done = true;
                    }
                    if !self.send(ItemKind::Unavailable(reason)).await {
                        return End::Cancelled;
                    }
                }
                StreamEnd::Ended { received } => {
                    if let Some(run) = self.run.as_mut() {
                        run.stream_ended = true;
                        // Begun after the run's end, Docker's read does not follow: it
                        // ends cleanly only at the end of the log.
                        run.tail_read |= !info.running;
                    }
                    if info.auto_remove && self.log_file.is_none() {
                        // `--rm`: Docker removes the container right after its end, often
                        // before the inspection below could lead to the read after the
                        // end. Do that read now, while the container is still there.
                        let end = self.stream(tty, false).await;
                        if self.tail_read(end).is_none() {
                            return End::Cancelled;
                        }
                    }
                    if received {
                        retry.reset();
                    } else if info.running {
                        // An empty stream from a running container: do not spin.
                        if !self.sleep(retry.next_delay()).await {
                            return End::Cancelled;
                        }
                    }
                }
                StreamEnd::Broken(reason) => {
                    if let Some(run) = self.run.as_mut() {
                        run.stream_ended = true;
                    }
                    let d = retry.next_delay();
                    warn!(%reason, retry_in = ?d, "log stream failed");
                    if !self.sleep(d).await {
                        return End::Cancelled;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
