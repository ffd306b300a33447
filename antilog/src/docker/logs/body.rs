//! A log body read in the follower's own task: the body and its hyper connection polled
//! together ([`Driven`]), every chunk that is ready taken at once and split into frames
//! without copying, and a short pause after a small take while the log flows, so that the
//! next wake-up finds many lines ([`LogBody::next_batch`]).
//!
//! Docker writes every log message as its own HTTP chunk. Read one chunk per wake-up, a
//! finished container's log costs a socket read, a task wake-up and a hand-off per line;
//! read in batches, one wake-up takes as many lines as Docker wrote meanwhile.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bollard::container::LogOutput;
use bytes::{Buf, Bytes, BytesMut};
use hyper::body::{Body, Incoming};
use tokio::time::Instant;

use super::{chain, Conn};
use crate::docker::Failure;

/// Largest multiplexed frame accepted (Docker's are one log message: at most 16 KiB of
/// line plus its timestamp, or a journald entry); a larger length is a broken stream.
const MAX_FRAME: usize = 16 << 20;
/// The stream byte of Docker's error messages in a multiplexed log (`stdcopy.Systemerr`).
const SYSTEM_ERR: u8 = 3;
/// A batch stops taking chunks past this many bytes (the rest waits for the next call).
const MAX_BATCH_BYTES: usize = 256 << 10;
/// While the log flows, a batch smaller than this makes the next call wait [`PACE`] first,
/// so Docker fills the socket meanwhile and one wake-up takes many lines.
const PACE_BELOW: usize = 32 << 10;
/// See [`PACE_BELOW`]: bounded, so a job's end is late by at most this much.
const PACE: Duration = Duration::from_millis(2);
/// Batches closer together than this are a flowing log (a quiet container is never paced).
const FLOWING_GAP: Duration = Duration::from_millis(10);

/// A response body and the connection it comes over, polled by whoever reads the body.
pub(crate) struct Driven {
    body: Incoming,
    /// `None` once the connection has closed.
    conn: Option<Conn>,
    /// Why the connection closed, if it failed.
    conn_error: Option<String>,
}

impl Driven {
    pub(super) fn new(body: Incoming, conn: Option<Conn>) -> Driven {
        Driven {
            body,
            conn,
            conn_error: None,
        }
    }

    /// The body's next data, driving the connection while the body has none.
    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Failure>>> {
        if let Poll::Ready(r) = self.poll_body(cx) {
            return Poll::Ready(r);
        }
        if let Some(conn) = self.conn.as_mut() {
            // Reads the socket and hands the body its next chunk, if there is one.
            if let Poll::Ready(r) = conn.as_mut().poll(cx) {
                self.conn = None;
                self.conn_error = r.err().map(|e| chain(&e));
            }
        }
        match self.poll_body(cx) {
            Poll::Pending if self.conn.is_none() => {
                Poll::Ready(Some(Err(Failure::Transient(format!(
                    "the connection to Docker closed: {}",
                    self.conn_error
                        .as_deref()
                        .unwrap_or("before the end of the log")
                )))))
            }
            r => r,
        }
    }

    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, Failure>>> {
        loop {
            return match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Failure::Transient(format!(
                    "reading the log failed: {}",
                    chain(&e)
                ))))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => Poll::Ready(Some(Ok(data))),
                    // Trailers: nothing of the log.
                    Err(_) => continue,
                },
            };
        }
    }

    /// The body's next data; `None` at its end.
    pub(super) async fn data(&mut self) -> Option<Result<Bytes, Failure>> {
        poll_fn(|cx| self.poll_data(cx)).await
    }
}

/// A log body being read.
pub struct LogBody {
    driven: Driven,
    /// Multiplexed (non-TTY) or raw (TTY) stream.
    mux: bool,
    /// The start of a frame whose end has not come yet.
    buf: BytesMut,
    done: bool,
    /// A failure met after the outputs of a batch, returned by the next call.
    failed: Option<Failure>,
    /// Whether the next call waits [`PACE`] first.
    pace: bool,
    last_batch: Option<Instant>,
}

impl std::fmt::Debug for LogBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogBody")
            .field("mux", &self.mux)
            .finish_non_exhaustive()
    }
}

impl LogBody {
    pub(super) fn new(driven: Driven, mux: bool) -> LogBody {
        LogBody {
            driven,
            mux,
            buf: BytesMut::new(),
            done: false,
            failed: None,
            pace: false,
            last_batch: None,
        }
    }

    /// The next pieces of the log (frames of one stream, or chunks of a TTY log), appended
    /// to `out`: waits for the first, then takes all that are ready without waiting (about
    /// [`MAX_BATCH_BYTES`] at most). `Some(Ok(()))` when at least one was appended, `None` at
    /// the log's end.
    pub async fn next_batch(&mut self, out: &mut Vec<LogOutput>) -> Option<Result<(), Failure>> {
        if let Some(f) = self.failed.take() {
            return Some(Err(f));
        }
        if self.done {
            return None;
        }
        if std::mem::take(&mut self.pace) {
            tokio::time::sleep(PACE).await;
        }
        let start = out.len();
        let mut bytes = 0;
        let r = poll_fn(|cx| self.poll_batch(cx, out, start, &mut bytes)).await;
        let now = Instant::now();
        let flowing = self
            .last_batch
            .is_some_and(|t| now.duration_since(t) < FLOWING_GAP);
        self.pace = flowing && bytes < PACE_BELOW;
        self.last_batch = Some(now);
        let mut failure = r.err();
        if failure.is_none() && self.done && !self.buf.is_empty() {
            self.buf.clear();
            failure = Some(Failure::Transient(
                "the log stream ended inside a frame".to_string(),
            ));
        }
        match failure {
            Some(f) => {
                self.done = true;
                if out.len() > start {
                    self.failed = Some(f);
                    Some(Ok(()))
                } else {
                    Some(Err(f))
                }
            }
            None if out.len() > start => Some(Ok(())),
            None => None,
        }
    }

    /// Takes chunks while they are ready; pending only while nothing was appended (and the
    /// log has not ended).
    fn poll_batch(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Vec<LogOutput>,
        start: usize,
        bytes: &mut usize,
    ) -> Poll<Result<(), Failure>> {
        while *bytes < MAX_BATCH_BYTES || out.len() == start {
            match self.driven.poll_data(cx) {
                Poll::Pending if out.len() == start => return Poll::Pending,
                Poll::Pending => break,
                Poll::Ready(None) => {
                    self.done = true;
                    break;
                }
                Poll::Ready(Some(Err(f))) => return Poll::Ready(Err(f)),
                Poll::Ready(Some(Ok(data))) => {
                    *bytes += data.len();
                    if !self.mux {
                        out.push(LogOutput::Console { message: data });
                    } else if let Err(f) = take_frames(&mut self.buf, data, out) {
                        return Poll::Ready(Err(f));
                    }
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// Appends the whole frames of `data` to `out`, after the frame begun in `pending`; what
/// is left of a frame not whole yet stays in `pending`. A chunk holding whole frames (as
/// Docker sends them: a chunk per message) is split without copying.
fn take_frames(
    pending: &mut BytesMut,
    mut data: Bytes,
    out: &mut Vec<LogOutput>,
) -> Result<(), Failure> {
    if pending.is_empty() {
        while let Some((stream, size)) = frame_header(&data)? {
            if data.len() < 8 + size {
                break;
            }
            data.advance(8);
            out.push(output(stream, data.split_to(size)));
        }
        pending.extend_from_slice(&data);
        return Ok(());
    }
    pending.extend_from_slice(&data);
    while let Some(o) = next_frame(pending)? {
        out.push(o);
    }
    Ok(())
}

/// Takes one whole multiplexed frame from the front of `buf`.
fn next_frame(buf: &mut BytesMut) -> Result<Option<LogOutput>, Failure> {
    let Some((stream, size)) = frame_header(buf)? else {
        return Ok(None);
    };
    if buf.len() < 8 + size {
        return Ok(None);
    }
    buf.advance(8);
    Ok(Some(output(stream, buf.split_to(size).freeze())))
}

/// The stream byte and content length of the frame at the front of `buf`, once its
/// 8-byte header is there.
fn frame_header(buf: &[u8]) -> Result<Option<(u8, usize)>, Failure> {
    let Some(h) = buf.get(..8) else {
        return Ok(None);
    };
    let size = u32::from_be_bytes([h[4], h[5], h[6], h[7]]) as usize;
    if size > MAX_FRAME {
        return Err(Failure::Transient(format!(
            "log frame of {size} bytes: not a Docker log stream"
        )));
    }
    Ok(Some((h[0], size)))
}

fn output(stream: u8, message: Bytes) -> LogOutput {
    match stream {
        0 => LogOutput::StdIn { message },
        2 => LogOutput::StdErr { message },
        // Stream 3 (`Systemerr`): Docker's own error, written into the log stream when its
        // reader failed (`Error grabbing logs: ...`), never the container's output. It
        // comes out as `Console`, which a multiplexed stream has no other use for.
        SYSTEM_ERR => LogOutput::Console { message },
        _ => LogOutput::StdOut { message },
    }
}

#[cfg(test)]
mod tests;
