//! [`Follower`]'s run boundaries: entering a run (its meta), closing one (its exit and,
//! when its end was never read, the report), the reads after a run's end, and waiting
//! briefly for a run's `die` event.

use protocol::ContainerExit;
use tracing::{debug, info, warn};

use super::{Die, Follower, Run, StreamEnd, DIE_EVENT_WAIT, REMOVED_BEFORE_END};
use crate::docker::inspect::Inspected;
use crate::pipeline::ItemKind;

impl Run {
    pub(super) fn new(info: &Inspected, restart_count: u32) -> Run {
        Run {
            key: info.run_key.clone(),
            started_at: info.meta.started_at,
            restart_count,
            logs_done: false,
            exit_sent: false,
            stream_ended: false,
            final_reads: 0,
            tail_read: false,
            tail_error: None,
            seen_exit: None,
        }
    }
}

impl Follower {
    /// Makes `info`'s run the current one: closes a previous run that ended unobserved and
    /// sends the new run's meta (unless the checkpoint says it was fully delivered).
    pub(super) async fn enter_run(&mut self, info: &Inspected) -> bool {
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
                    logs_done: true,
                    exit_sent: true,
                    ..Run::new(info, mark.restart_count)
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
        self.run = Some(Run::new(info, info.meta.restart_count));
        self.send(ItemKind::Meta(info.meta.clone())).await
    }

    /// Ends the current run when Docker no longer shows it (removed: `now` is `None`; or
    /// restarted between two looks): flushes what was read and sends an exit built from
    /// the `die` event, else from the last inspection that saw the run ended; when neither
    /// saw it, the exit code is unknown (`None`), never invented.
    ///
    /// A run removed before its log was read after its end may lack its last lines: the
    /// job says so (`logs_unavailable`). A restarted one does not: its next run's reads
    /// start from the same position.
    pub(super) async fn close_run(&mut self, now: Option<&Inspected>) -> bool {
        let Some(mut run) = self.run.take() else {
            return true;
        };
        if !run.logs_done {
            if !self.flush().await {
                return false;
            }
            if now.is_none() && !run.tail_read {
                let reason = match run.tail_error.take() {
                    Some(e) if e != REMOVED_BEFORE_END => {
                        format!("{}: {e}", REMOVED_BEFORE_END)
                    }
                    _ => REMOVED_BEFORE_END.to_string(),
                };
                warn!(%reason, "run closed without its log read to the end");
                if !self.send(ItemKind::Unavailable(reason)).await {
                    return false;
                }
            }
        }
        if run.exit_sent {
            return true;
        }
        let die = self.die_after(run.started_at).await;
        let (exit_code, finished_at) = match (die, run.seen_exit) {
            (Some(d), seen) => (d.exit_code.or(seen.and_then(|s| s.0)), d.time_ns),
            (None, Some(seen)) => seen,
            // A restarted container still shows the previous run's FinishedAt.
            (None, None) => (None, now.map_or(0, |i| i.finished_at)),
        };
        let exit = ContainerExit {
            exit_code,
            finished_at,
            last_seq: self.next_seq - 1,
            restart_count: run.restart_count,
            reason: None,
        };
        if exit_code.is_none() {
            warn!("the run's end was never reported: its exit code is unknown");
        }
        info!(
            exit_code = ?exit.exit_code,
            last_seq = exit.last_seq,
            "run ended (seen afterwards)"
        );
        self.send(ItemKind::Exit(exit)).await
    }

    /// The `die` event of the run started at `started_at`, waiting briefly for it.
    pub(super) async fn die_after(&mut self, started_at: i64) -> Option<Die> {
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

    /// Takes the end of a read done after the run's end (non-following): `Some(true)` when
    /// it read the log to its end, `Some(false)` when it failed (the reason is kept for
    /// the job), `None` when shutting down.
    pub(super) fn tail_read(&mut self, end: StreamEnd) -> Option<bool> {
        let reason = match end {
            StreamEnd::Cancelled => return None,
            StreamEnd::Ended { .. } => {
                if let Some(run) = self.run.as_mut() {
                    run.tail_read = true;
                }
                return Some(true);
            }
            StreamEnd::Unavailable(reason) | StreamEnd::Broken(reason) => reason,
        };
        warn!(%reason, "reading the log after the run's end failed");
        if let Some(run) = self.run.as_mut() {
            run.tail_error = Some(reason);
        }
        Some(false)
    }
}

/// See [`run_limit`].
const RESTART_BOUNDARY_NS: i64 = 50_000_000;

/// Where the log of `info`'s run ends, when the next run may already be in the log.
///
/// While a restart is pending, the next run may have started by the time we read (Docker
/// stops following a container that is not running, but returns what is there). Docker
/// stamps a last unterminated output a few ms after FinishedAt, and the restart policy
/// waits at least 100 ms before the next run, so the boundary lies in between.
pub(super) fn run_limit(info: &Inspected) -> Option<i64> {
    (!info.running && info.restarting && info.finished_at > 0)
        .then(|| info.finished_at.saturating_add(RESTART_BOUNDARY_NS))
}
