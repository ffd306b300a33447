//! One container of a Pod, run after run, as pipeline items (source `cri`).
//!
//! Run `n` is the chain `<n>.log` (rotations `.<time>`, `.<time>.gz`) in the container's
//! directory. For each run the follower sends the meta, the records (P/F partials joined
//! by [`CriDecoder`], numbered by `seq` gapless across runs, as on Docker) with a cut after
//! every line that leaves nothing pending, then the exit. Cuts carry the file position, so
//! a restart of antilog resumes exactly there.
//!
//! A run none of whose files antilog saw (created and deleted while it was down or
//! behind: the kubelet keeps only the last dead container's log) is reported on the job,
//! its lines lost ([`Follower::report_missing_runs`]).
//!
//! A run is over when the Pod's status says so (`state.terminated` of run `n`, or a
//! restart count past `n`), when `<n + 1>.log` exists, or when the directory is gone. The
//! runtime closes the log before the kubelet reports the end, so once the end is seen,
//! reading to the end of the file once more reads everything. The exit code and finish
//! time come from `state.terminated` (or `lastState.terminated` for the run before the
//! current one); a run whose end the API never told is closed with exit code -1.
//!
//! A container antilog has no checkpoint of has its first run's log opened as soon as
//! the file exists, before the API lists its Pod: a short-lived Pod whose directory is
//! removed right after its end is still read to its end through the open descriptor.
//! Files are read on tokio's blocking pool ([`FileReader`]), a chunk of lines at a time.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use protocol::ContainerExit;
use tracing::{debug, info, instrument, warn};

use super::{container_id, meta_of, Shared};
use crate::checkpoint::{Entry, Position};
use crate::docker::frames::Piece;
use crate::files::cri::CriDecoder;
use crate::files::pod_logs::{restarts_in, ContainerLogs};
use crate::files::reader::{FileReader, Read};
use crate::files::tailer::{Start, Tailer};
use crate::pipeline::{ItemKind, RecordRun};
use crate::pods::{PodMeta, Terminated};
use resume::resume_point;

mod emit;
mod resume;

/// First wait at the end of a file; doubles while nothing arrives, up to [`POLL_MAX`].
const POLL_MIN: Duration = Duration::from_millis(5);
const POLL_MAX: Duration = Duration::from_millis(250);
/// How often a finished container's directory is looked at for a next run.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// How long a run whose next run has started, or whose Pod or directory is gone, waits for
/// the API to tell its exit code (the watch may lag behind the files).
const STATUS_WAIT: Duration = Duration::from_secs(2);
/// How far numbering jumps after lines were lost at a resume (as on `docker-files`): past
/// any seq the spool and the checkpoint interval can have handed out.
const SEQ_JUMP: u64 = 1 << 32;
/// How long a container whose log is held open, and whose directory is gone, waits for
/// the API to list its Pod before it is shipped under its directory's names only.
const ORPHAN_WAIT: Duration = Duration::from_secs(60);

/// Why a follower ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The container's directory is gone (the Pod was deleted).
    Gone,
    /// The filter excludes it.
    Ignored,
    Cancelled,
}

/// Whether a run is over, as far as the API and the directory tell.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RunState {
    Going,
    /// Over; how it ended, when the API said.
    Over(Option<Terminated>),
}

struct Follower {
    shared: Arc<Shared>,
    logs: ContainerLogs,
    id: Arc<str>,
    /// The Pod as last seen (kept when the Pod leaves the table).
    pod: PodMeta,
    /// Last cut (resumable position).
    pos: Position,
    tentative: Position,
    next_seq: u64,
    /// The newer run was seen started at this instant (see [`STATUS_WAIT`]).
    newer_seen: Option<Instant>,
}

/// Follows the container of `logs` until its directory is gone or shutdown.
#[instrument(name = "cri", skip_all, fields(pod = %logs.pod, container = %logs.container))]
pub async fn follow(shared: Arc<Shared>, logs: ContainerLogs) -> End {
    let Some((pod, early)) = wait_pod(&shared, &logs).await else {
        return if logs.dir.exists() {
            End::Cancelled
        } else {
            End::Gone
        };
    };
    let id: Arc<str> = container_id(&pod, &logs.container).into();
    let name = pod.name.clone();
    if !shared.filter.matches(&name, &pod.labels) {
        debug!("excluded by the filter");
        return End::Ignored;
    }
    let _followed = shared.metrics.following();
    let entry = shared.take_resume(&id).unwrap_or_default();
    let mut f = Follower {
        shared,
        logs,
        id,
        pod,
        pos: entry.pos,
        tentative: entry.pos,
        next_seq: entry.pos.seq + 1,
        newer_seen: None,
    };
    // The early-opened run is read only by a follower starting from nothing.
    let fresh = entry.exit.is_none() && entry.pos.file.is_none() && entry.pos.seq == 0;
    let end = f.main(entry, early.filter(|_| fresh)).await;
    if end == End::Gone {
        // After everything else of this container, so its checkpoint entry goes last.
        f.send(ItemKind::Forget).await;
    }
    debug!(?end, "follower ended");
    end
}

/// The first run of a container's directory, opened, if it has a file yet.
type Early = (u32, FileReader);

/// The Pod of `logs`, waiting for the API to list it. Meanwhile, a container with no
/// checkpoint has its first run's log opened as soon as it exists (see the module's doc).
/// `None` on shutdown, or when the directory goes away with nothing opened.
async fn wait_pod(shared: &Shared, logs: &ContainerLogs) -> Option<(PodMeta, Option<Early>)> {
    let mut warned = Instant::now();
    let fresh = !shared.has_resume(logs);
    let mut early: Option<Early> = None;
    let mut gone_since: Option<Instant> = None;
    loop {
        // Before looking, so a change meanwhile wakes the wait below.
        let changed = shared.pods.changed.notified();
        let files = shared.files_changed.notified();
        // A Pod deleted already (a short job) is still read, with its last state.
        let pods = &shared.pods;
        if let Some(p) = pods.get(&logs.uid).or_else(|| pods.get_deleted(&logs.uid)) {
            return Some((p, early));
        }
        if fresh && early.is_none() {
            early = open_first(&logs.dir).await;
        }
        if !logs.dir.exists() {
            early.as_ref()?;
            // Its log is held open: the API lists the Pod (or its deletion) soon.
            let since = *gone_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= ORPHAN_WAIT {
                warn!(uid = %logs.uid, "the Kubernetes API never listed this Pod; shipping its log under its directory's names");
                return Some((orphan(logs), early));
            }
        }
        if warned.elapsed() > Duration::from_secs(30) {
            warned = Instant::now();
            warn!(uid = %logs.uid, "the Kubernetes API does not list this Pod yet; waiting");
        }
        tokio::select! {
            _ = shared.shutdown.cancelled() => return None,
            _ = changed => {}
            _ = files => {}
            _ = tokio::time::sleep(IDLE_POLL) => {}
        }
    }
}

/// The first run's log in `dir`, opened (on the blocking pool) if it has a file.
async fn open_first(dir: &Path) -> Option<Early> {
    let dir = dir.to_path_buf();
    let opened = tokio::task::spawn_blocking(move || -> std::io::Result<Option<(u32, Tailer)>> {
        let Some(&first) = restarts_in(&dir)?.first() else {
            return Ok(None);
        };
        let (t, _) = Tailer::open(&dir, ContainerLogs::layout(first), None)?;
        Ok(t.position().is_some().then_some((first, t)))
    })
    .await;
    match opened {
        Ok(Ok(Some((n, t)))) => {
            debug!(run = n, "log opened before the Pod is known");
            Some((n, FileReader::new(t)))
        }
        Ok(Ok(None)) => None,
        Ok(Err(e)) => {
            debug!(error = %e, "cannot open the log yet");
            None
        }
        Err(_) => None,
    }
}

/// The restart numbers in a container's directory, and whether it still exists, looked
/// at on the blocking pool.
async fn look(dir: &Path) -> (std::io::Result<Vec<u32>>, bool) {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || (restarts_in(&dir), dir.exists()))
        .await
        .unwrap_or_else(|_| (Err(std::io::Error::other("task failed")), true))
}

/// A Pod the API never told of, as its directory names it (no labels, no exit codes).
fn orphan(logs: &ContainerLogs) -> PodMeta {
    PodMeta {
        namespace: logs.namespace.clone(),
        name: logs.pod.clone(),
        uid: logs.uid.clone(),
        labels: Default::default(),
        annotations: Default::default(),
        created_at: 0,
        main_container: None,
        containers: Vec::new(),
    }
}

impl Follower {
    async fn main(&mut self, entry: Entry, mut early: Option<Early>) -> End {
        // Where to begin: the run opened early, from its start; after an acknowledged
        // exit, the next run; else the run holding the checkpoint's file position,
        // exactly there.
        let (mut run, mut opened) = loop {
            if let Some((n, r)) = early.take() {
                break (Some(n), Some((r, Start::Beginning)));
            }
            let (dir, exit, file) = (self.logs.dir.clone(), entry.exit, self.pos.file);
            let point = tokio::task::spawn_blocking(move || resume_point(&dir, exit, file)).await;
            let point = point.unwrap_or_else(|_| Err(std::io::Error::other("task failed")));
            match point {
                Ok((run, t)) => break (run, t.map(|(t, start)| (FileReader::new(t), start))),
                Err(_) if !self.logs.dir.exists() => return End::Gone,
                Err(e) => {
                    warn!(error = %e, "cannot open the container's logs; trying again");
                    if !crate::pipeline::send::sleep(&self.shared.shutdown, IDLE_POLL).await {
                        return End::Cancelled;
                    }
                }
            }
        };
        loop {
            let Some(n) = run else {
                // Every run so far is delivered: wait for the next, or the removal.
                let last = entry.exit.map(|m| m.restart_count);
                match self.wait_run(last).await {
                    Some(Some(n)) => {
                        if let Some(last) = last {
                            if !self.report_missing_runs(last + 1, n).await {
                                return End::Cancelled;
                            }
                        }
                        run = Some(n);
                        continue;
                    }
                    Some(None) => return End::Gone,
                    None => return End::Cancelled,
                }
            };
            if !self.read_run(n, opened.take()).await {
                return End::Cancelled;
            }
            match self.wait_run(Some(n)).await {
                Some(Some(next)) => {
                    if !self.report_missing_runs(n + 1, next).await {
                        return End::Cancelled;
                    }
                    run = Some(next);
                }
                Some(None) => return End::Gone,
                None => return End::Cancelled,
            }
        }
    }

    /// After run `after` (or before any, `None`): the next run with files, `Some(None)`
    /// when the directory is gone, `None` on shutdown.
    async fn wait_run(&mut self, after: Option<u32>) -> Option<Option<u32>> {
        loop {
            // Before looking, so a file created meanwhile wakes the wait below.
            let files = self.shared.files_changed.notified();
            let (restarts, exists) = look(&self.logs.dir).await;
            match restarts {
                Ok(r) => {
                    if let Some(&n) = r.iter().find(|&&n| after.is_none_or(|a| n > a)) {
                        return Some(Some(n));
                    }
                    if !exists {
                        return Some(None);
                    }
                }
                Err(e) => debug!(error = %e, "cannot list the container's directory"),
            }
            tokio::select! {
                _ = self.shared.shutdown.cancelled() => return None,
                _ = files => {}
                _ = tokio::time::sleep(IDLE_POLL) => {}
            }
        }
    }

    /// Runs `from..to` came and went without antilog seeing a file of theirs (their logs
    /// were created and deleted while it was down or behind: the kubelet keeps only the
    /// last dead container's): their lines are lost. Reported on the job as one run (the
    /// last of them: its meta, the reason, its exit when the API still tells it), so the
    /// job's restart count and result stay right and the loss is never silent. False on
    /// shutdown.
    async fn report_missing_runs(&mut self, from: u32, to: u32) -> bool {
        if from >= to {
            return true;
        }
        let last = to - 1;
        let runs = if from == last {
            format!("run {last}")
        } else {
            format!("runs {from} to {last}")
        };
        if let Some(p) = self.shared.pods.get(&self.logs.uid) {
            self.pod = p;
        }
        let meta = meta_of(&self.pod, &self.logs.container, &self.id, last, self.pos.ts);
        let ended = match self.run_state(last).await {
            RunState::Over(t) => t,
            RunState::Going => None,
        };
        let reason = format!(
            "the log files of {runs} were deleted before antilog could open them: their lines \
             are lost"
        );
        self.send(ItemKind::Meta(meta)).await
            && self.report_loss(reason).await
            && self.close_run(last, &mut Vec::new(), ended).await
    }

    /// Reads run `n` to its end: meta, records, exit. False on shutdown.
    async fn read_run(&mut self, n: u32, opened: Option<(FileReader, Start)>) -> bool {
        let layout = ContainerLogs::layout(n);
        let (mut reader, start) = match opened {
            Some(v) => v,
            None => match FileReader::open(&self.logs.dir, layout, None).await {
                Ok(v) => v,
                Err(e) => {
                    warn!(error = %e, run = n, "cannot open the run's log");
                    return self.report_loss(format!("cannot open {n}.log: {e}")).await
                        && self.close_run(n, &mut Vec::new(), None).await;
                }
            },
        };
        if let Some(p) = self.shared.pods.get(&self.logs.uid) {
            self.pod = p;
        }
        let meta = meta_of(&self.pod, &self.logs.container, &self.id, n, self.pos.ts);
        info!(run = n, resume_seq = self.pos.seq, ?start, "new run");
        if !self.send(ItemKind::Meta(meta)).await {
            return false;
        }
        if start == Start::Lost {
            self.next_seq = self.pos.seq + SEQ_JUMP + 1;
            let reason = format!(
                "log file rotated away before it was read: lines after seq {} may be missing",
                self.pos.seq
            );
            if !self.report_loss(reason).await {
                return false;
            }
        }
        let source = format!("{}/{n}.log", self.logs.dir.display());
        let mut decoder = CriDecoder::new(
            self.shared.max_line_bytes,
            self.shared.metrics.clone(),
            source,
        );
        let mut pieces = Vec::new();
        let mut run = RecordRun::default();
        let mut poll = POLL_MIN;
        // The end of the run was seen before the read now going on.
        let mut ending: Option<RunState> = None;
        let mut reported = (0, 0);
        loop {
            if self.shared.shutdown.is_cancelled() {
                return false;
            }
            let chunk = match reader.read().await {
                Ok(c) => c,
                Err(e) => {
                    warn!(error = %e, run = n, "reading the run's log failed; retrying");
                    if !crate::pipeline::send::sleep(&self.shared.shutdown, POLL_MAX).await {
                        return false;
                    }
                    continue;
                }
            };
            if !chunk.is_empty() {
                poll = POLL_MIN;
            }
            for read in chunk.iter() {
                match read {
                    Read::Line { line, pos } => {
                        decoder.push_line(line, &mut pieces);
                        if !self.emit_into(&mut pieces, Some(pos), &mut run).await {
                            return false;
                        }
                    }
                    Read::Gap(reason) => {
                        if !(self.send_run(&mut run).await
                            && self.report_loss(reason.to_string()).await)
                        {
                            return false;
                        }
                    }
                }
            }
            // The lines of this read go in as few hand-offs as they fit.
            if !self.send_run(&mut run).await {
                return false;
            }
            if !chunk.eof {
                continue;
            }
            let now = (chunk.malformed, chunk.truncations);
            let metrics = &self.shared.metrics;
            metrics.file_event("malformed", now.0 - reported.0);
            metrics.file_event("truncated", now.1 - reported.1);
            reported = now;
            if let Some(RunState::Over(t)) = ending.take() {
                decoder.flush(&mut pieces);
                return self.close_run(n, &mut pieces, t).await;
            }
            let state = self.run_state(n).await;
            if state != RunState::Going {
                // Read to the end once more: everything is written now.
                ending = Some(state);
                continue;
            }
            let changed = self.shared.pods.changed.notified();
            tokio::select! {
                _ = self.shared.shutdown.cancelled() => return false,
                _ = changed => {}
                _ = tokio::time::sleep(poll) => {}
            }
            poll = (poll * 2).min(POLL_MAX);
        }
    }

    /// Whether run `n` is over (see the module's doc).
    async fn run_state(&mut self, n: u32) -> RunState {
        let pods = &self.shared.pods;
        let listed = pods.get(&self.logs.uid);
        let in_table = listed.is_some();
        // A deleted Pod's last state still tells how its runs ended.
        if let Some(p) = listed.or_else(|| pods.get_deleted(&self.logs.uid)) {
            self.pod = p;
        }
        let c = self
            .pod
            .containers
            .iter()
            .find(|c| c.name == self.logs.container);
        let count = c.and_then(|c| u32::try_from(c.restart_count).ok());
        if let Some(c) = c {
            if count == Some(n) && c.terminated.is_some() {
                return RunState::Over(c.terminated.clone());
            }
            if count.is_some_and(|k| k > n) {
                let t = (count == Some(n + 1))
                    .then(|| c.last_terminated.clone())
                    .flatten();
                return RunState::Over(t);
            }
        }
        let (restarts, exists) = look(&self.logs.dir).await;
        let newer = restarts.is_ok_and(|r| r.iter().any(|&k| k > n));
        if newer || !in_table || !exists {
            // The API may tell the exit a moment later: wait for it, briefly.
            let seen = *self.newer_seen.get_or_insert_with(Instant::now);
            if seen.elapsed() >= STATUS_WAIT {
                self.newer_seen = None;
                return RunState::Over(None);
            }
        }
        RunState::Going
    }

    /// Sends what is pending and the exit of run `n`.
    async fn close_run(
        &mut self,
        n: u32,
        pieces: &mut Vec<Piece>,
        ended: Option<Terminated>,
    ) -> bool {
        if !self.emit(pieces, None).await {
            return false;
        }
        self.newer_seen = None;
        let exit = ContainerExit {
            exit_code: ended.as_ref().map(|t| i64::from(t.exit_code)),
            finished_at: ended.as_ref().map_or(0, |t| t.finished_at),
            last_seq: self.next_seq - 1,
            restart_count: n,
            reason: None,
        };
        info!(
            run = n,
            exit_code = ?exit.exit_code,
            last_seq = exit.last_seq,
            "container exited"
        );
        self.send(ItemKind::Exit(exit)).await
    }
}
