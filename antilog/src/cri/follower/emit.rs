//! [`Follower`]'s output: pieces numbered into records and handed to the pipeline in runs
//! (backpressure), and losses reported on the job.

use protocol::Record;
use tracing::warn;

use super::Follower;
use crate::checkpoint::FilePos;
use crate::docker::frames::Piece;
use crate::pipeline::{ItemKind, RecordRun};

impl Follower {
    /// Numbers pieces into records and sends them; a cut after the file position `at`.
    pub(super) async fn emit(&mut self, pieces: &mut Vec<Piece>, at: Option<FilePos>) -> bool {
        let mut run = RecordRun::default();
        self.emit_into(pieces, at, &mut run).await && self.send_run(&mut run).await
    }

    /// Numbers pieces into records gathered in `run`, sending it whenever it is full; the
    /// caller sends the rest ([`Follower::send_run`]) before any other item, so the lines
    /// of one read share a hand-off.
    pub(super) async fn emit_into(
        &mut self,
        pieces: &mut Vec<Piece>,
        at: Option<FilePos>,
        run: &mut RecordRun,
    ) -> bool {
        for p in pieces.drain(..) {
            let seq = self.next_seq;
            self.next_seq += 1;
            let mut cut = None;
            if p.last {
                self.tentative.line_done(seq, p.ts);
                if p.cut && at.is_some() {
                    self.tentative.file = at;
                    self.pos = self.tentative;
                    cut = Some(self.pos);
                }
            }
            // Counted as read when handed to the pipeline.
            let len = p.bytes.len();
            self.shared.metrics.record_read(p.stream, len, p.ts);
            if run.is_full_for(len, self.shared.room.max_run()) && !self.send_run(run).await {
                return false;
            }
            run.push(Record::new(seq, p.ts, p.stream, p.bytes, !p.last), cut);
        }
        true
    }

    /// Sends the records gathered in `run`, if any, once the pipeline has room for them.
    pub(super) async fn send_run(&self, run: &mut RecordRun) -> bool {
        let s = &self.shared;
        crate::pipeline::send::send_run(&s.tx, &s.room, &s.shutdown, &s.metrics, &self.id, run)
            .await
    }

    /// Records that lines may be missing: on the job, and in the metric.
    pub(super) async fn report_loss(&mut self, reason: String) -> bool {
        warn!(%reason, "log lines lost to rotation");
        self.shared.metrics.file_event("lost", 1);
        self.send(ItemKind::Unavailable(reason)).await
    }

    /// Sends an item, waiting for room (backpressure); false when shutting down.
    pub(super) async fn send(&self, kind: ItemKind) -> bool {
        let s = &self.shared;
        crate::pipeline::send::send(&s.tx, &s.shutdown, &s.metrics, &self.id, kind).await
    }
}
