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

// Layout: `api` reads a run through Docker's logs endpoint, `files` from its json-file,
// `resume` decides which re-read records are skipped; this file is the run loop (meta,
// records, exit, restarts, removal) and the numbering both paths share.
mod api;
mod files;
mod resume;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptions;
use bollard::Docker;
use futures::stream::BoxStream;
use futures::StreamExt;
use protocol::{ContainerExit, Record, Stream};
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
use resume::{Replays, Skip};

/// How long to wait for the `die` event of a run that ended while we were not looking.
const DIE_EVENT_WAIT: Duration = Duration::from_secs(2);
/// While a running container's log cannot be read, how often to look at it again.
const IDLE_RECHECK: Duration = Duration::from_secs(30);
/// See [`run_limit`].
const RESTART_BOUNDARY_NS: i64 = 50_000_000;
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
    early: Option<(crate::files::tailer::Tailer, crate::files::tailer::Start)>,
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
    let entry = resume.unwrap_or_default();
    let mut f = Follower {
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
        limit_ts: None,
        followed: None,
        seen: None,
        log_file: None,
        file_failed: false,
        file_pos: None,
        early: None,
        created: None,
    };
    let end = f.main().await;
    if end == End::Gone {
        // After everything else of this container, so its checkpoint entry goes last.
        f.send(ItemKind::Forget).await;
    }
    debug!(?end, "follower ended");
    end
}

impl Follower {
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
                self.open_early(&info);
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
            if run.logs_done {
                if !info.running && !run.exit_sent {
                    let exit = ContainerExit {
                        exit_code: info.exit_code,
                        finished_at: info.finished_at,
                        last_seq: self.next_seq - 1,
                        restart_count: run.restart_count,
                    };
                    run.exit_sent = true;
                    info!(
                        exit_code = exit.exit_code,
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
                        match end {
                            StreamEnd::Cancelled => return End::Cancelled,
                            StreamEnd::Ended { .. } => {
                                if let Some(run) = self.run.as_mut() {
                                    run.final_reads = FINAL_READ_ATTEMPTS;
                                }
                            }
                            StreamEnd::Unavailable(reason) | StreamEnd::Broken(reason) => {
                                warn!(%reason, "final log read failed");
                                if !self.sleep(retry.next_delay()).await {
                                    return End::Cancelled;
                                }
                                continue;
                            }
                        }
                    }
                    // What is pending now is all there is.
                    if let Some(run) = self.run.as_mut() {
                        run.logs_done = true;
                    }
                    let flushed = self.flush().await;
                    self.limit_ts = None;
                    if !flushed {
                        return End::Cancelled;
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

    /// Makes `info`'s run the current one: closes a previous run that ended unobserved and
    /// sends the new run's meta (unless the checkpoint says it was fully delivered).
    async fn enter_run(&mut self, info: &Inspected) -> bool {
        if self.run.as_ref().is_some_and(|r| r.key == info.run_key) {
            return true;
        }
        if self.run.is_some() && !self.close_run(Some(info)).await {
            return false;
        }
        if let Some(mark) = self.acked_exit.take() {
            if !info.running && info.finished_at != 0 && info.finished_at == mark.finished_at {
                debug!("exit already delivered before the restart; waiting for a new run");
                self.run = Some(Run {
                    key: info.run_key.clone(),
                    started_at: info.meta.started_at,
                    restart_count: mark.restart_count,
                    logs_done: true,
                    exit_sent: true,
                    stream_ended: false,
                    final_reads: 0,
                });
                return true;
            }
        }
        info!(
            name = %info.meta.name,
            restart_count = info.meta.restart_count,
            tty = info.meta.tty,
            resume_seq = self.pos.seq,
            "new run"
        );
        self.run = Some(Run {
            key: info.run_key.clone(),
            started_at: info.meta.started_at,
            restart_count: info.meta.restart_count,
            logs_done: false,
            exit_sent: false,
            stream_ended: false,
            final_reads: 0,
        });
        self.send(ItemKind::Meta(info.meta.clone())).await
    }

    /// Ends the current run when Docker no longer shows it (removed: `now` is `None`; or
    /// restarted between two looks): flushes what was read and sends an exit built from
    /// the `die` event.
    async fn close_run(&mut self, now: Option<&Inspected>) -> bool {
        let Some(run) = self.run.take() else {
            return true;
        };
        if !run.logs_done && !self.flush().await {
            return false;
        }
        if run.exit_sent {
            return true;
        }
        let die = self.die_after(run.started_at).await;
        // A restarted container still shows the previous run's FinishedAt.
        let finished_at = die
            .map(|d| d.time_ns)
            .or(now.map(|i| i.finished_at))
            .unwrap_or(0);
        let exit = ContainerExit {
            exit_code: die.and_then(|d| d.exit_code).unwrap_or(-1),
            finished_at,
            last_seq: self.next_seq - 1,
            restart_count: run.restart_count,
        };
        info!(
            exit_code = exit.exit_code,
            last_seq = exit.last_seq,
            "run ended (seen afterwards)"
        );
        self.send(ItemKind::Exit(exit)).await
    }

    /// The `die` event of the run started at `started_at`, waiting briefly for it.
    async fn die_after(&mut self, started_at: i64) -> Option<Die> {
        let deadline = tokio::time::Instant::now() + DIE_EVENT_WAIT;
        loop {
            let die = self.signals.borrow_and_update().die;
            if let Some(d) = die.filter(|d| d.time_ns >= started_at) {
                return Some(d);
            }
            if !self.signals_open {
                return None;
            }
            tokio::select! {
                r = self.signals.changed() => if r.is_err() { self.signals_open = false },
                _ = tokio::time::sleep_until(deadline) => return None,
                _ = self.shared.shutdown.cancelled() => return None,
            }
        }
    }

    /// Waits for a signal from discovery (or `recheck`); false when shutting down.
    async fn wait(&mut self, recheck: Option<Duration>) -> bool {
        let tick = async {
            match recheck {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.shared.shutdown.cancelled() => false,
            r = self.signals.changed(), if self.signals_open => {
                if r.is_err() {
                    self.signals_open = false;
                }
                true
            }
            _ = tick => true,
        }
    }

    /// A permit to read a finished run (`None` when shutting down: the read then stops
    /// at once anyway).
    async fn catch_up_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        tokio::select! {
            p = self.shared.catch_up.clone().acquire_owned() => p.ok(),
            _ = self.shared.shutdown.cancelled() => None,
        }
    }

    async fn sleep(&self, d: Duration) -> bool {
        crate::pipeline::send::sleep(&self.shared.shutdown, d).await
    }

    /// Sends an item, waiting for room (backpressure); false when shutting down.
    async fn send(&self, kind: ItemKind) -> bool {
        let s = &self.shared;
        crate::pipeline::send::send(&s.tx, &s.shutdown, &s.metrics, &self.id, kind).await
    }

    /// End of a run's log: pending partial lines are complete lines.
    async fn flush(&mut self) -> bool {
        let mut pieces = Vec::new();
        if let Some(a) = self.assembler.as_mut() {
            a.flush(&mut pieces);
            if a.malformed() > 0 {
                warn!(
                    messages = a.malformed(),
                    "log messages without a Docker timestamp"
                );
            }
        }
        self.emit(&mut pieces).await
    }

    /// The container was seen created, then removed before a run could be read (a
    /// `docker run --rm` that exits at once): if it ran (its `die` event came), its job
    /// gets the meta, the reason and the exit, instead of no job at all.
    async fn removed_unread(&mut self, mut meta: protocol::ContainerMeta) -> bool {
        let Some(die) = self.die_after(meta.created_at).await else {
            debug!("removed without having run");
            return true;
        };
        if meta.started_at == 0 {
            meta.started_at = meta.created_at;
        }
        warn!("container removed before its log could be read");
        let exit = ContainerExit {
            exit_code: die.exit_code.unwrap_or(-1),
            finished_at: die.time_ns,
            last_seq: self.next_seq - 1,
            restart_count: 0,
        };
        self.send(ItemKind::Meta(meta)).await
            && self
                .send(ItemKind::Unavailable(REMOVED_UNREAD.to_string()))
                .await
            && self.send(ItemKind::Exit(exit)).await
    }

    /// Docker's log no longer holds the last delivered line (at `pos`), and the first line
    /// it has is stamped `first_ts`: lines in between were rotated away before they were
    /// read (a json-file log with `max-size` while the agent was down or behind). Docker
    /// does not say how many: the job gets the time range in `logs_unavailable`.
    async fn report_gap(&mut self, pos: &Position, first_ts: i64) -> bool {
        let reason = format!(
            "Docker's log no longer holds lines from {} to {}: rotated away before they were \
             read, so lines in between may be lost",
            rfc3339(pos.ts),
            rfc3339(first_ts)
        );
        warn!(
            last_delivered_seq = pos.seq,
            %reason,
            "lines may be lost to log rotation"
        );
        self.shared.metrics.log_gaps.inc();
        self.send(ItemKind::Unavailable(reason)).await
    }

    /// Numbers pieces into records and sends them.
    async fn emit(&mut self, pieces: &mut Vec<Piece>) -> bool {
        for p in pieces.drain(..) {
            let s = usize::from(p.stream == Stream::Stderr);
            if p.first && self.resume_check.is_some_and(|pos| p.ts >= pos.ts) {
                if let Some(pos) = self.resume_check.take() {
                    if p.ts > pos.ts
                        && self.skip.remaining == pos.at_ts
                        && !self.report_gap(&pos, p.ts).await
                    {
                        return false;
                    }
                }
            }
            if p.first {
                let delivered = self.skip.should_skip(p.ts);
                let later = self.limit_ts.is_some_and(|l| p.ts > l);
                let copy = !delivered && !later && self.replays[s].is_copy(p.ts);
                self.skipping[s] = delivered || later || copy;
            }
            if self.skipping[s] {
                continue;
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            let mut cut = None;
            if p.last {
                self.tentative.line_done(seq, p.ts);
                if p.cut {
                    self.tentative.file = self.file_pos;
                    self.pos = self.tentative;
                    cut = Some(self.pos);
                }
            }
            if seq <= self.sent_seq {
                continue; // sent before the stream broke
            }
            self.sent_seq = seq;
            let (stream, ts, len) = (p.stream, p.ts, p.bytes.len());
            let record = Record::new(seq, p.ts, p.stream, p.bytes, !p.last);
            if !self.send(ItemKind::Record { record, cut }).await {
                return false;
            }
            self.shared.metrics.record_read(stream, len, ts);
        }
        true
    }
}

/// Where the log of `info`'s run ends, when the next run may already be in the log.
///
/// While a restart is pending, the next run may have started by the time we read (Docker
/// stops following a container that is not running, but returns what is there). Docker
/// stamps a last unterminated output a few ms after FinishedAt, and the restart policy
/// waits at least 100 ms before the next run, so the boundary lies in between.
fn run_limit(info: &Inspected) -> Option<i64> {
    (!info.running && info.restarting && info.finished_at > 0)
        .then(|| info.finished_at.saturating_add(RESTART_BOUNDARY_NS))
}

fn rfc3339(ns: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{ns} ns"))
}

#[cfg(test)]
mod tests;
