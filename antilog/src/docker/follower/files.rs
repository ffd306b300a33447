//! The follower's file path (source `docker-files`): a `json-file` container's log is read
//! from its files with a [`crate::files::tailer::Tailer`] instead of Docker's logs stream. Records go through
//! the same assembler, numbering, skipping and cuts as the API's, so what is shipped is
//! the same, byte for byte; cuts also carry the file position, and resuming from one
//! starts exactly there (no timestamp scan). The files are read on tokio's blocking pool,
//! a chunk of lines at a time ([`FileReader`]).
//!
//! Following ends when the run's `die` event was seen before a read that found nothing
//! new: Docker closes the log before it announces `die`, so the file is complete then.
//! Without events (a broken event stream), the container is inspected every
//! [`IDLE_INSPECT`] while its file is idle.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use super::{Follower, Skip, StreamEnd};
use crate::docker::frames::Assembler;
use crate::docker::inspect::{inspect, Inspected};
use crate::files::json_file;
use crate::files::reader::{FileReader, Read};
use crate::files::tailer::{Layout, Start};
use crate::pipeline::{ItemKind, RecordRun};

/// First wait at the end of a file; doubles while nothing arrives, up to [`POLL_MAX`].
const POLL_MIN: Duration = Duration::from_millis(5);
const POLL_MAX: Duration = Duration::from_millis(250);
/// How often an idle running container is inspected, in case its `die` event was missed.
const IDLE_INSPECT: Duration = Duration::from_secs(10);

/// How far numbering jumps after lines were lost at a resume: more records than the spool
/// and a checkpoint interval can hold.
pub const SEQ_JUMP: u64 = 1 << 32;

impl Follower {
    /// The file to read this run's log from, if it is read from a file.
    pub(super) fn file_of(&self, info: &Inspected) -> Option<PathBuf> {
        let root = self.shared.files_root.as_ref()?;
        if self.file_failed || info.meta.log_driver != "json-file" {
            return None;
        }
        Some(if info.log_path.is_empty() {
            // Docker sets LogPath when the container starts; the path is always this.
            root.join("containers")
                .join(&*self.id)
                .join(format!("{}-json.log", self.id))
        } else {
            PathBuf::from(&info.log_path)
        })
    }

    /// Opens the log of a container that was just started (woken from "created"), so its
    /// files are held open even if Docker removes the container (`--rm`) before it is
    /// inspected again.
    pub(super) async fn open_early(&mut self, created: &Inspected) {
        if self.early.is_some() || self.pos.seq != 0 {
            return;
        }
        let Some(path) = self.file_of(created) else {
            return;
        };
        let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str()))
        else {
            return;
        };
        let layout = Layout::Numbered {
            name: name.to_string(),
        };
        match FileReader::open(dir, layout, None).await {
            Ok(t) => self.early = Some(t),
            Err(e) => debug!(error = %e, "cannot open the log file yet"),
        }
    }

    /// The container was removed before it was seen running (`docker run --rm` of a short
    /// job): if its log file was opened in time, read it as the run it was, with the
    /// metadata from before it started; the exit comes from its `die` event. False when
    /// shutting down.
    pub(super) async fn read_removed(&mut self) -> bool {
        if self.run.is_some() || self.early.is_none() {
            return true;
        }
        let Some(mut info) = self.created.take() else {
            return true;
        };
        info.has_run = true;
        info.running = false;
        info.run_key = "removed before inspection".into();
        // Its start time was never seen; the creation stands in (and lets any die event of
        // this container count as the run's end).
        info.meta.started_at = info.meta.created_at;
        debug!("container removed before it was seen running; reading its log file");
        if !self.enter_run(&info).await {
            return false;
        }
        self.log_file = self.file_of(&info);
        !matches!(
            self.stream(info.meta.tty, false).await,
            StreamEnd::Cancelled
        )
    }

    fn mark_tail_read(&mut self) {
        if let Some(run) = self.run.as_mut() {
            run.tail_read = true;
        }
    }

    /// Whether the current run's `die` was announced.
    fn run_died(&self) -> bool {
        let Some(started) = self.run.as_ref().map(|r| r.started_at) else {
            return true;
        };
        self.signals
            .borrow()
            .die
            .is_some_and(|d| d.time_ns >= started)
    }

    /// Like the API's stream: from the last cut, to the end of what is written (`follow`:
    /// until the run ended).
    pub(super) async fn stream_file(
        &mut self,
        path: PathBuf,
        tty: bool,
        follow: bool,
    ) -> StreamEnd {
        self.tentative = self.pos;
        self.next_seq = self.pos.seq + 1;
        self.skipping = [false; 2];
        self.replays = Default::default();
        self.repeats = None;
        self.assembler = Some(Assembler::new(tty, self.shared.max_line_bytes));
        self.file_pos = None;
        let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str()))
        else {
            self.file_failed = true;
            return StreamEnd::Broken(format!("bad log path {}", path.display()));
        };
        let layout = Layout::Numbered {
            name: name.to_string(),
        };
        let opened = match self.early.take() {
            Some(t) => Ok(t),
            None => FileReader::open(dir, layout, self.pos.file).await,
        };
        let (mut reader, start) = match opened {
            Ok(v) => v,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                warn!(path = %path.display(), error = %e, "cannot read the log file; using the Docker API for this container");
                self.file_failed = true;
                self.log_file = None;
                return StreamEnd::Broken(e.to_string());
            }
            Err(e) => return StreamEnd::Broken(format!("opening {}: {e}", path.display())),
        };
        debug!(?start, from_seq = self.next_seq, follow, "reading log file");
        self.skip = match start {
            // Exactly after the last delivered line: nothing to skip.
            Start::Exact => Skip {
                active: false,
                floor: false,
                ts: 0,
                remaining: 0,
                went_back: false,
            },
            Start::Beginning | Start::Lost => Skip::from(&self.pos),
        };
        // A position without a file (written by the API source) is checked by timestamp
        // as the API source does; a lost file is reported below.
        self.resume_check = (start == Start::Beginning && self.pos.at_ts > 0).then_some(self.pos);
        if start == Start::Lost {
            let reason = format!(
                "log file rotated away before it was read: lines after seq {} may be missing",
                self.pos.seq
            );
            // Lines after the checkpoint may have been delivered before the restart (the
            // checkpoint is written a moment after the acknowledgement) and the spool may
            // still resend some; those seqs carry lines that are no longer in the files.
            // Numbering jumps past anything that can have been handed out, so a line read
            // now never takes the seq (and the deduplication) of another.
            self.next_seq = self.pos.seq + SEQ_JUMP + 1;
            if !self.report_loss(reason).await {
                return StreamEnd::Cancelled;
            }
        }
        let mut content = Vec::new();
        let mut pieces = Vec::new();
        let mut run = RecordRun::default();
        let mut received = false;
        let mut poll = POLL_MIN;
        let mut idle_since = Instant::now();
        let mut reported = (0, 0);
        // Lines that are not json-file records.
        let mut unparsed = 0;
        loop {
            if self.shared.shutdown.is_cancelled() {
                return StreamEnd::Cancelled;
            }
            let died = self.run_died();
            let chunk = match reader.read().await {
                Ok(c) => c,
                Err(e) => return StreamEnd::Broken(format!("reading {}: {e}", path.display())),
            };
            for read in chunk.iter() {
                match read {
                    Read::Line { line, pos } => {
                        let Some(m) = json_file::parse(line, &mut content) else {
                            unparsed += 1;
                            continue;
                        };
                        received = true;
                        self.file_pos = Some(pos);
                        if let Some(a) = self.assembler.as_mut() {
                            a.push_message(m.stream, m.ts, &content, &mut pieces);
                        }
                        if !self.emit_into(&mut pieces, &mut run).await {
                            return StreamEnd::Cancelled;
                        }
                    }
                    Read::Gap(reason) => {
                        if !(self.send_run(&mut run).await
                            && self.report_loss(reason.to_string()).await)
                        {
                            return StreamEnd::Cancelled;
                        }
                    }
                }
            }
            // The lines of this read go in as few hand-offs as they fit.
            if !self.send_run(&mut run).await {
                return StreamEnd::Cancelled;
            }
            if !chunk.eof {
                continue;
            }
            let now = (chunk.malformed + unparsed, chunk.truncations);
            self.shared
                .metrics
                .file_event("malformed", now.0 - reported.0);
            self.shared
                .metrics
                .file_event("truncated", now.1 - reported.1);
            reported = now;
            if !follow || died {
                // The file is read to its end after the run ended (a read without
                // follow comes only after the end).
                self.mark_tail_read();
                return StreamEnd::Ended { received };
            }
            if received {
                poll = POLL_MIN;
                idle_since = Instant::now();
                received = false;
            }
            tokio::select! {
                _ = self.shared.shutdown.cancelled() => return StreamEnd::Cancelled,
                r = self.signals.changed(), if self.signals_open => {
                    if r.is_err() {
                        self.signals_open = false;
                    }
                }
                _ = tokio::time::sleep(poll) => {}
            }
            poll = (poll * 2).min(POLL_MAX);
            if idle_since.elapsed() >= IDLE_INSPECT {
                idle_since = Instant::now();
                if let Ok(i) = inspect(&self.shared.docker, &self.id).await {
                    if !i.running {
                        return StreamEnd::Ended { received: true };
                    }
                }
            }
        }
    }

    /// Records that lines may be missing: on the job, and in the metric.
    async fn report_loss(&mut self, reason: String) -> bool {
        warn!(%reason, "log lines lost to rotation");
        self.shared.metrics.file_event("lost", 1);
        self.send(ItemKind::Unavailable(reason)).await
    }
}
