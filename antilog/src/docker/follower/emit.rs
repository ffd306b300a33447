//! [`Follower`]'s waits (signals, catch-up permits, retry sleeps) and its output: items
//! sent into the pipeline with backpressure, pieces turned into records, gaps reported.

use std::time::Duration;

use protocol::{ContainerExit, Record, Stream};
use tracing::{debug, warn};

use super::files::SEQ_JUMP;
use super::{Follower, REMOVED_UNREAD};
use crate::checkpoint::Position;
use crate::docker::frames::Piece;
use crate::pipeline::{ItemKind, RecordRun};

impl Follower {
    /// Waits for a signal from discovery (or `recheck`); false when shutting down.
    pub(super) async fn wait(&mut self, recheck: Option<Duration>) -> bool {
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
    pub(super) async fn catch_up_permit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        tokio::select! {
            p = self.shared.catch_up.clone().acquire_owned() => p.ok(),
            _ = self.shared.shutdown.cancelled() => None,
        }
    }

    pub(super) async fn sleep(&self, d: Duration) -> bool {
        crate::pipeline::send::sleep(&self.shared.shutdown, d).await
    }

    /// Sends an item, waiting for room (backpressure); false when shutting down.
    pub(super) async fn send(&self, kind: ItemKind) -> bool {
        let s = &self.shared;
        crate::pipeline::send::send(&s.tx, &s.shutdown, &s.metrics, &self.id, kind).await
    }

    /// End of a run's log: pending partial lines are complete lines.
    pub(super) async fn flush(&mut self) -> bool {
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
    pub(super) async fn removed_unread(&mut self, mut meta: protocol::ContainerMeta) -> bool {
        let Some(die) = self.die_after(meta.created_at).await else {
            debug!("removed without having run");
            return true;
        };
        if meta.started_at == 0 {
            meta.started_at = meta.created_at;
        }
        warn!("container removed before its log could be read");
        let exit = ContainerExit {
            exit_code: die.exit_code,
            finished_at: die.time_ns,
            last_seq: self.next_seq - 1,
            restart_count: 0,
            reason: None,
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
    pub(super) async fn report_gap(&mut self, pos: &Position, first_ts: i64) -> bool {
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
        // The lines read from here are not the ones after `pos` that may have been handed
        // out already (in this process, or before a restart: the checkpoint trails the
        // acknowledgements and the spool may resend them). Numbering jumps past all of
        // them, so a line read now never takes the seq (and the deduplication) of another.
        self.next_seq = pos.seq.max(self.sent_seq) + SEQ_JUMP + 1;
        self.send(ItemKind::Unavailable(reason)).await
    }

    /// Docker wrote an error of its own into the log stream (`Error grabbing logs: …`):
    /// its reader failed, so lines may be missing there. Logged and counted each time,
    /// reported on the job once per read (`reported`); never stored as a line.
    pub(super) async fn docker_read_error(&mut self, message: String, reported: &mut bool) -> bool {
        warn!(docker_error = %message, "Docker failed reading the log; lines may be missing");
        self.shared.metrics.log_gaps.inc();
        if std::mem::replace(reported, true) {
            return true;
        }
        let reason = format!("Docker failed reading the log ({message}): lines may be missing");
        self.send(ItemKind::Unavailable(reason)).await
    }

    /// Numbers pieces into records and sends them, many records an item.
    pub(super) async fn emit(&mut self, pieces: &mut Vec<Piece>) -> bool {
        let mut run = RecordRun::default();
        self.emit_into(pieces, &mut run).await && self.send_run(&mut run).await
    }

    /// Numbers pieces into records gathered in `run`, sending it whenever it is full; the
    /// caller sends the rest ([`Follower::send_run`]) before any other item. A file is read
    /// a line at a time, so this lets the lines of one read share a hand-off.
    pub(super) async fn emit_into(&mut self, pieces: &mut Vec<Piece>, run: &mut RecordRun) -> bool {
        for p in pieces.drain(..) {
            let s = usize::from(p.stream == Stream::Stderr);
            if p.first
                && self
                    .repeats
                    .as_mut()
                    .is_some_and(|r| r.is_repeat(s, p.ts, &p.bytes, p.last))
            {
                debug!(
                    ts = p.ts,
                    "Docker sent a line twice in a row; dropping the copy"
                );
                self.shared.metrics.api_event("duplicate");
                self.skipping[s] = true;
                continue;
            }
            if p.first && self.resume_check.is_some_and(|pos| p.ts >= pos.ts) {
                if let Some(pos) = self.resume_check.take() {
                    if p.ts > pos.ts
                        && self.skip.remaining == pos.at_ts
                        && !(self.send_run(run).await && self.report_gap(&pos, p.ts).await)
                    {
                        return false;
                    }
                }
            }
            if p.first {
                let delivered = self.skip.should_skip(p.ts);
                if !self.overlap.line(p.ts, delivered) {
                    // Not sent (nor the rest): the stream is dropped and the log read again
                    // from the cut.
                    return true;
                }
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
                    self.overlap.cut();
                }
            }
            if seq <= self.sent_seq {
                continue; // sent before the stream broke
            }
            self.sent_seq = seq;
            let (stream, ts, len) = (p.stream, p.ts, p.bytes.len());
            if run.is_full_for(len, self.shared.room.max_run()) && !self.send_run(run).await {
                return false;
            }
            run.push(Record::new(seq, p.ts, p.stream, p.bytes, !p.last), cut);
            self.shared.metrics.record_read(stream, len, ts);
        }
        true
    }

    /// Sends the records gathered in `run`, if any, once the pipeline has room for them.
    pub(super) async fn send_run(&self, run: &mut RecordRun) -> bool {
        let s = &self.shared;
        crate::pipeline::send::send_run(&s.tx, &s.room, &s.shutdown, &s.metrics, &self.id, run)
            .await
    }
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
