//! The follower's API path: a run's log read through Docker's logs endpoint (hyper, or
//! bollard where [`LogClient`] cannot reach), from the last cut. Runs read from their
//! json-file go to [`super::files`] instead.

use super::*;

impl Follower {
    /// Reads the log from the last cut until the stream ends (with `follow`, until the run
    /// ends or the stream breaks; without, until what Docker has now is read).
    pub(super) async fn stream(&mut self, tty: bool, follow: bool) -> StreamEnd {
        if let Some(path) = self.log_file.clone() {
            return self.stream_file(path, tty, follow).await;
        }
        self.file_pos = None;
        // Restart from the last cut: what was read after it is read again.
        self.tentative = self.pos;
        self.next_seq = self.pos.seq + 1;
        self.skip = Skip::from(&self.pos);
        self.resume_check = (self.pos.at_ts > 0).then_some(self.pos);
        self.skipping = [false; 2];
        self.replays = Default::default();
        self.assembler = Some(Assembler::new(tty, self.shared.max_line_bytes));
        let since = since_param(&self.pos);
        debug!(%since, from_seq = self.next_seq, follow, "reading log");
        let mut source = match &self.shared.logs {
            Some(client) => match client
                .logs(&self.id, &since, follow, tty)
                .await
                .inspect_err(|f| self.shared.metrics.docker_error(f))
            {
                Ok(body) => Source::Api(body),
                Err(Failure::Permanent(reason)) => return StreamEnd::Unavailable(reason),
                // Gone between the inspect and the log request (`docker run --rm` of a
                // container that exited at once): whatever it printed cannot be read.
                Err(Failure::NotFound) if follow => {
                    return StreamEnd::Unavailable(REMOVED_UNREAD.to_string())
                }
                // Removed before the read after its end: its last lines may be unread
                // (reported when the run is closed).
                Err(Failure::NotFound) => return StreamEnd::Broken(REMOVED_BEFORE_END.to_string()),
                Err(Failure::Transient(reason)) => return StreamEnd::Broken(reason),
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
                    tail: "all".to_string(),
                };
                Source::Bollard(self.shared.docker.logs(&self.id, Some(opts)).boxed())
            }
        };
        let mut received = false;
        let mut reported = false;
        let mut pieces = Vec::new();
        let mut outs = Vec::new();
        loop {
            let next = tokio::select! {
                biased;
                _ = self.shared.shutdown.cancelled() => return StreamEnd::Cancelled,
                next = source.next(&mut outs) => next,
            };
            match next {
                None => return StreamEnd::Ended { received },
                Some(Ok(())) => {
                    received = true;
                    // Everything that came at once goes out together.
                    for out in outs.drain(..) {
                        if let Some(message) = docker_error(self.assembler.as_ref(), &out) {
                            // In order: the lines before it first.
                            if !self.emit(&mut pieces).await
                                || !self.docker_read_error(message, &mut reported).await
                            {
                                return StreamEnd::Cancelled;
                            }
                            continue;
                        }
                        if let Some(a) = self.assembler.as_mut() {
                            feed(a, out, &mut pieces);
                        }
                    }
                    if !self.emit(&mut pieces).await {
                        return StreamEnd::Cancelled;
                    }
                }
                Some(Err(failure)) => {
                    self.shared.metrics.docker_error(&failure);
                    return match failure {
                        Failure::Permanent(reason) if !received => StreamEnd::Unavailable(reason),
                        Failure::NotFound => StreamEnd::Ended { received },
                        Failure::Permanent(reason) | Failure::Transient(reason) => {
                            StreamEnd::Broken(reason)
                        }
                    };
                }
            }
        }
    }
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
