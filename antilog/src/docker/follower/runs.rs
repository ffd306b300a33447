//! [`Follower`]'s run boundaries: entering a run (its meta), closing one (its exit), and
//! waiting briefly for a run's `die` event.

use protocol::ContainerExit;
use tracing::{debug, info};

use super::{Die, Follower, Run, DIE_EVENT_WAIT};
use crate::docker::inspect::Inspected;
use crate::pipeline::ItemKind;

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
    pub(super) async fn close_run(&mut self, now: Option<&Inspected>) -> bool {
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
}
