//! The follower's API path: a run's log read through Docker's logs endpoint (hyper, or
//! bollard where [`LogClient`] cannot reach), from the last cut. Runs read from their
//! json-file go to [`super::files`] instead. A rotating log is followed only from its end
//! and while caught up ([`super::backlog`]).

use super::backlog::{now_ns, Backlog, LINE_OVERHEAD};
use super::*;
use crate::docker::frames::split_timestamp;

/// Reads without `follow` repeated while a line is half written before following.
const PENDING_TRIES: u32 = 3;
/// How long a new follow stream may bring nothing before the log is read once more
/// without `follow`: lines written before its reader opened the log are not held back
/// until the next write.
const FIRST_DATA_WAIT: Duration = Duration::from_secs(1);

/// How one read through the API ended.
enum Read {
    End(StreamEnd),
    /// The follow stream fell too far behind the log, skipped lines at its start
    /// ([`Overlap`]), or a first follow from the log's start brought as much as it may
    /// ([`Cap::Bytes`]), and it was dropped.
    Behind,
    /// The stream's first pieces ([`Cap::First`]), nothing of them sent.
    First(Vec<LogOutput>),
    /// The stream brought nothing for the time [`Cap::First`] gave it.
    Quiet,
}

/// When a read through the API is dropped before its end (what was not sent comes again).
#[derive(Debug, Clone, Copy)]
enum Cap {
    /// Read to its end.
    None,
    /// Before sending a record more than this many bytes behind the log (a follow stream
    /// started at the log's end).
    Behind(u64),
    /// Before sending anything of the batch with which the stream brought this many bytes
    /// of json-file or more, counted at their most ([`json_file_bytes_at_most`]): a follow
    /// stream from the log's start.
    Bytes(u64),
    /// As soon as the stream brought anything (or, given a time, once it brought nothing
    /// for that long): a follow stream whose reader is not yet known to have opened the
    /// log.
    First(Option<Duration>),
}

impl Follower {
    /// Reads the log from the last cut until the stream ends (with `follow`, until the run
    /// ends or the stream breaks; without, until what Docker has now is read).
    ///
    /// A rotating log ([`Follower::rotation`]) is followed from its end: a follow stream is
    /// opened at the log's end, then what lies between the last cut and there is read
    /// without `follow` while the stream waits. When that read brought [`Backlog::limit`]
    /// bytes or more, the waiting stream is more than that behind: it is dropped and the
    /// two steps repeated. Otherwise, once the stream brought its first data, the log is
    /// read once more without `follow` (the stream may start after the first read ended),
    /// and the stream is read on from the last cut (what the reads brought is skipped,
    /// and counted: [`Overlap`]) while less than that far behind the log; when it falls
    /// further behind it is dropped, and the follower catches up again. A log
    /// nothing was read of yet is first followed from its start in one request, until that
    /// stream brought a quarter of `max-size` ([`Backlog::first_cap`]).
    pub(super) async fn stream(&mut self, tty: bool, follow: bool) -> StreamEnd {
        if let Some(path) = self.log_file.clone() {
            return self.stream_file(path, tty, follow).await;
        }
        let Some(max_size) = self.rotation.filter(|_| follow) else {
            self.restart(tty, true);
            let mut source = match self.open(tty, follow, false).await {
                Ok(s) => s,
                Err(end) => return end,
            };
            return match self.consume(&mut source, Cap::None, Vec::new()).await {
                (Read::End(end), _) => end,
                // Only a watched follow stream falls behind, or is read for its start.
                (Read::Behind | Read::First(_) | Read::Quiet, _) => {
                    StreamEnd::Broken("fell behind".to_string())
                }
            };
        };
        let limit = Backlog::limit(max_size);
        let mut received = false;
        if self.pos.at_ts == 0 && !tty {
            // Nothing of this log read yet: one follow from its start while it brings less
            // than a quarter of a file (see `backlog`). A `docker run --rm` container is often
            // removed before a second request, so its short log is read in one.
            self.restart(tty, true);
            let mut source = match self.open(tty, true, false).await {
                Ok(s) => s,
                Err(end) => return end,
            };
            self.shared.metrics.api_event("first_follow");
            let cap = Cap::Bytes(Backlog::first_cap(max_size));
            match self.consume(&mut source, cap, Vec::new()).await {
                (Read::End(end), _) => return end,
                (Read::Behind | Read::First(_) | Read::Quiet, bytes) => {
                    self.shared.metrics.api_event("first_follow_capped");
                    debug!(
                        bytes,
                        "the first follow stream brought a quarter of a file; catching up"
                    );
                    received = true;
                }
            }
        }
        let mut pending_tries = 0;
        'open: loop {
            // Docker answers a follow request before its reader has opened the log (20.10's
            // `readLogs` runs apart from the answer), so the stream starts where the log
            // ended when that reader opened it: possibly after the first read below ended.
            // Once the stream brought something, its reader was open before that was
            // written, and a second read without `follow` covers the gap.
            let mut following = match self.open(tty, true, true).await {
                Ok(s) => s,
                Err(end) => return end,
            };
            self.overlap = Overlap::Off;
            let mut first = None;
            let mut wait = Some(FIRST_DATA_WAIT);
            let held = loop {
                match self.catch_up(tty, limit, &mut pending_tries).await {
                    Ok((caught_up, r)) => {
                        received |= r;
                        if !caught_up {
                            continue 'open;
                        }
                    }
                    Err(end) => return end,
                }
                if let Some(held) = first.take() {
                    break held;
                }
                match self
                    .consume(&mut following, Cap::First(wait.take()), Vec::new())
                    .await
                {
                    (Read::First(outs), _) => {
                        self.shared.metrics.api_event("follow_started");
                        // The read below starts at the last cut.
                        self.overlap = Overlap::counting(&outs, self.pos.ts);
                        first = Some(outs);
                    }
                    // Read once more without `follow`, then wait for the stream for good.
                    (Read::Quiet, _) => {}
                    (Read::End(StreamEnd::Ended { received: r }), _) => {
                        return StreamEnd::Ended {
                            received: received || r,
                        }
                    }
                    (Read::End(end), _) => return end,
                    (Read::Behind, _) => continue 'open,
                }
            };
            // On from the last cut, what the stream brought first included: the lines the
            // reads above brought are skipped, and counted (see `Overlap`).
            self.restart(tty, false);
            self.overlap.check();
            debug!(overlap = ?self.overlap, cut_seq = self.pos.seq, "following from the last cut");
            let read = self.consume(&mut following, Cap::Behind(limit), held).await;
            self.overlap = Overlap::Off;
            match read {
                (Read::End(StreamEnd::Ended { received: r }), _) => {
                    return StreamEnd::Ended {
                        received: received || r,
                    }
                }
                (Read::End(end), _) => return end,
                // Dropped (counted where it was found behind or short): catching up again.
                (Read::Behind | Read::First(_) | Read::Quiet, _) => {}
            }
        }
    }

    /// Reads the log from the last cut without `follow`; whether that left the follower
    /// caught up, and whether it brought anything. Not caught up: a waiting follow stream
    /// is too far behind (the read brought [`Backlog::limit`] bytes or more) or would start
    /// inside a line (the read ended in a half-written one; [`PENDING_TRIES`] times in a row
    /// at most, then reads go through while that line stays open, as an unterminated last
    /// output does), so it is to be opened again.
    async fn catch_up(
        &mut self,
        tty: bool,
        limit: u64,
        pending_tries: &mut u32,
    ) -> Result<(bool, bool), StreamEnd> {
        self.restart(tty, true);
        let mut source = self.open(tty, false, false).await?;
        self.shared.metrics.api_event("catch_up_read");
        match self.consume(&mut source, Cap::None, Vec::new()).await {
            (Read::End(StreamEnd::Ended { received }), bytes) => {
                // Once the tries are spent, reads go through while that line stays open.
                let open = self.assembler.as_ref().is_some_and(Assembler::pending);
                let pending = open && *pending_tries < PENDING_TRIES;
                *pending_tries = if open {
                    pending_tries.saturating_add(1)
                } else {
                    0
                };
                let caught_up = Backlog::caught_up(bytes, limit) && !pending;
                if !caught_up {
                    debug!(bytes, pending, "catching up without following");
                }
                Ok((caught_up, received))
            }
            (Read::End(end), _) => Err(end),
            (Read::Behind | Read::First(_) | Read::Quiet, _) => Ok((false, false)),
        }
    }

    /// Prepares reading from the last cut: what was read after it is read again.
    /// `check_resume`: the first line read tells whether Docker still holds the last cut's
    /// line (see `emit`).
    fn restart(&mut self, tty: bool, check_resume: bool) {
        self.file_pos = None;
        self.tentative = self.pos;
        self.next_seq = self.pos.seq + 1;
        self.skip = Skip::from(&self.pos);
        self.resume_check = (check_resume && self.pos.at_ts > 0).then_some(self.pos);
        self.skipping = [false; 2];
        self.replays = Default::default();
        self.repeats = Some(Repeats::default());
        self.assembler = Some(Assembler::new(tty, self.shared.max_line_bytes));
    }

    /// Requests the log from the last cut (`from_end`: from the log's end), `follow`ing or
    /// not.
    async fn open(&mut self, tty: bool, follow: bool, from_end: bool) -> Result<Source, StreamEnd> {
        let since = since_param(&self.pos);
        debug!(%since, from_seq = self.pos.seq + 1, follow, from_end, "reading log");
        Ok(match &self.shared.logs {
            Some(client) => match client
                .logs(&self.id, &since, follow, from_end, tty)
                .await
                .inspect_err(|f| self.shared.metrics.docker_error(f))
            {
                Ok(body) => Source::Api(body),
                Err(Failure::Permanent(reason)) => return Err(StreamEnd::Unavailable(reason)),
                // Gone between the inspect and the log request (`docker run --rm` of a
                // container that exited at once): whatever it printed cannot be read.
                Err(Failure::NotFound) if follow => {
                    return Err(StreamEnd::Unavailable(REMOVED_UNREAD.to_string()))
                }
                // Removed before the read after its end: its last lines may be unread
                // (reported when the run is closed).
                Err(Failure::NotFound) => {
                    return Err(StreamEnd::Broken(REMOVED_BEFORE_END.to_string()))
                }
                Err(Failure::Transient(reason)) => return Err(StreamEnd::Broken(reason)),
            },
            None => {
                // bollard takes whole seconds: the skip drops the rest of that second.
                let opts = LogsOptions {
                    follow,
                    stdout: true,
                    stderr: true,
                    // Docker's API takes an i32 here (seconds since the epoch, until 2038).
                    since: i32::try_from(self.pos.since_secs()).unwrap_or(i32::MAX),
                    until: 0,
                    timestamps: true,
                    tail: if from_end { "0" } else { "all" }.to_string(),
                };
                Source::Bollard(self.shared.docker.logs(&self.id, Some(opts)).boxed())
            }
        })
    }

    /// Reads `source` to its end (see [`Follower::restart`] for where numbering starts),
    /// `held` pieces (taken from it before) first, or until `cap` drops it
    /// ([`Read::Behind`]) or stops it ([`Read::First`], [`Read::Quiet`]), or the stream is
    /// found to have skipped lines at its start ([`Overlap`]: [`Read::Behind`]). Also
    /// returns the bytes read (about as many as Docker's json-file holds for them).
    async fn consume(
        &mut self,
        source: &mut Source,
        cap: Cap,
        held: Vec<LogOutput>,
    ) -> (Read, u64) {
        let mut outs = held;
        let mut received = false;
        let mut reported = false;
        let mut pieces = Vec::new();
        let mut bytes = 0;
        let mut most = 0;
        // Reading a log body gives up nothing when dropped between frames: what it took is
        // in `outs` or its own buffer.
        let quiet = async {
            match cap {
                Cap::First(Some(wait)) => tokio::time::sleep(wait).await,
                _ => std::future::pending().await,
            }
        };
        tokio::pin!(quiet);
        loop {
            let next = if outs.is_empty() {
                tokio::select! {
                    biased;
                    _ = self.shared.shutdown.cancelled() => return (Read::End(StreamEnd::Cancelled), bytes),
                    next = source.next(&mut outs) => next,
                    _ = &mut quiet => return (Read::Quiet, bytes),
                }
            } else {
                Some(Ok(()))
            };
            let end = match next {
                None => StreamEnd::Ended { received },
                Some(Ok(())) => {
                    received = true;
                    if let Cap::First(_) = cap {
                        return (Read::First(outs), bytes);
                    }
                    if let Cap::Bytes(limit) = cap {
                        most += outs.iter().map(json_file_bytes_at_most).sum::<u64>();
                        if most >= limit {
                            // None of it sent: read again from the last cut.
                            outs.clear();
                            return (Read::Behind, bytes);
                        }
                    }
                    // Everything that came at once goes out together.
                    for out in outs.drain(..) {
                        if let Some(message) = docker_error(self.assembler.as_ref(), &out) {
                            // In order: the lines before it first.
                            bytes += self.measure(&pieces);
                            if !self.emit(&mut pieces).await
                                || !self.docker_read_error(message, &mut reported).await
                            {
                                return (Read::End(StreamEnd::Cancelled), bytes);
                            }
                            continue;
                        }
                        if let Some(a) = self.assembler.as_mut() {
                            feed(a, out, &mut pieces);
                        }
                    }
                    bytes += self.measure(&pieces);
                    if matches!(cap, Cap::Behind(limit) if self.behind(&pieces, limit)) {
                        // Not sent: read again from the last cut.
                        self.shared.metrics.api_event("follow_dropped");
                        debug!(
                            rate = self.backlog.rate(),
                            "the follow stream fell behind the log; catching up without following"
                        );
                        pieces.clear();
                        return (Read::Behind, bytes);
                    }
                    if !self.emit(&mut pieces).await {
                        return (Read::End(StreamEnd::Cancelled), bytes);
                    }
                    if self.overlap.gap() {
                        // Nothing past the last cut sent: read again from it.
                        self.shared.metrics.api_event("follow_gap");
                        debug!("the follow stream skipped lines at its start; catching up without following");
                        return (Read::Behind, bytes);
                    }
                    continue;
                }
                Some(Err(failure)) => {
                    self.shared.metrics.docker_error(&failure);
                    match failure {
                        Failure::Permanent(reason) if !received => StreamEnd::Unavailable(reason),
                        Failure::NotFound => StreamEnd::Ended { received },
                        Failure::Permanent(reason) | Failure::Transient(reason) => {
                            StreamEnd::Broken(reason)
                        }
                    }
                }
            };
            return (Read::End(end), bytes);
        }
    }

    /// Counts `pieces` into the log's byte rate; their size in Docker's json-file.
    fn measure(&mut self, pieces: &[Piece]) -> u64 {
        let mut bytes = 0;
        for p in pieces {
            let len = p.bytes.len() as u64;
            if p.first {
                self.backlog.observe(p.ts, len);
                bytes += len + LINE_OVERHEAD;
            } else {
                bytes += len;
            }
        }
        bytes
    }

    /// Whether the first of `pieces` (the oldest) is more than `limit` bytes behind the log.
    fn behind(&self, pieces: &[Piece], limit: u64) -> bool {
        pieces
            .first()
            .is_some_and(|p| self.backlog.behind(p.ts, now_ns(), limit))
    }
}

/// The most bytes Docker's json-file can hold for one multiplexed message `out`: its text
/// (after the timestamp the API puts first) as Docker escapes it at most, and
/// [`LINE_OVERHEAD`]. Printable ASCII is 1 byte, `"` and `\` 2; control characters,
/// `<`, `>` and `&` (escaped as `\u00XX`) and every byte above ASCII (`\ufffd` for an
/// invalid one, `\u2028` for a line separator) are counted as 6.
fn json_file_bytes_at_most(out: &LogOutput) -> u64 {
    let message: &[u8] = out.as_ref();
    let text = split_timestamp(message).map_or(message, |(_, text)| text);
    let escaped: u64 = text
        .iter()
        .map(|&b| match b {
            b'"' | b'\\' => 2,
            b'<' | b'>' | b'&' => 6,
            0x20..=0x7e => 1,
            _ => 6,
        })
        .sum();
    escaped + LINE_OVERHEAD
}

/// Where a log is read from: the API through hyper ([`LogClient`]), or bollard for
/// endpoints it cannot reach.
enum Source {
    Bollard(BoxStream<'static, Result<LogOutput, bollard::errors::Error>>),
    Api(LogBody),
}

impl Source {
    /// The next pieces of the log, appended to `out` (all that came at once, through
    /// hyper; one at a time through bollard); `None` at its end.
    async fn next(&mut self, out: &mut Vec<LogOutput>) -> Option<Result<(), Failure>> {
        match self {
            Source::Bollard(s) => Some(match s.next().await? {
                Ok(o) => {
                    out.push(o);
                    Ok(())
                }
                Err(e) => Err(classify(&e)),
            }),
            Source::Api(b) => b.next_batch(out).await,
        }
    }
}

/// Docker's own error message in a multiplexed stream (stream 3, see
/// [`super::super::logs`]; bollard hands anything but stdin, stdout and stderr over as
/// `Console` too): text about the log, never a line of it.
pub(super) fn docker_error(a: Option<&Assembler>, out: &LogOutput) -> Option<String> {
    match (a, out) {
        (Some(Assembler::Mux(_)), LogOutput::Console { message }) => {
            Some(String::from_utf8_lossy(message).trim_end().to_string())
        }
        _ => None,
    }
}

fn feed(a: &mut Assembler, out: LogOutput, pieces: &mut Vec<Piece>) {
    match (a, out) {
        (Assembler::Mux(a), LogOutput::StdOut { message }) => {
            a.push_frame(Stream::Stdout, &message, pieces)
        }
        (Assembler::Mux(a), LogOutput::StdErr { message }) => {
            a.push_frame(Stream::Stderr, &message, pieces)
        }
        // Docker's error messages are taken out before (`docker_error`).
        (Assembler::Mux(_), LogOutput::StdIn { .. } | LogOutput::Console { .. }) => {}
        (
            Assembler::Tty(a),
            LogOutput::Console { message }
            | LogOutput::StdOut { message }
            | LogOutput::StdErr { message }
            | LogOutput::StdIn { message },
        ) => a.push_chunk(&message, pieces),
    }
}
