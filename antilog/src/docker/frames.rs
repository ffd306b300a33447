//! Turning Docker's log stream into lines: pure code, no I/O.
//!
//! With `timestamps=true` every Docker log *message* starts with an RFC3339Nano timestamp
//! and one space. A message is a whole line ending in `\n`, or a *partial*: Docker's copier
//! cuts lines longer than its 16 KiB buffer into 16384-byte messages without `\n` (and the
//! last output of a run may end without `\n`).
//!
//! - [`parse_timestamp`], [`split_timestamp`]: the timestamp parser, in
//!   [`super::timestamp`] (no allocation, checked arithmetic).
//! - [`MuxAssembler`]: non-TTY containers; bollard hands us one message per frame, per
//!   stream, so a full-size frame without `\n` is a partial to join with the next frame of
//!   its stream (the `local` driver ends a split line with a short frame without `\n`).
//! - [`TtyAssembler`]: TTY containers; the stream is raw bytes in arbitrary chunks, so
//!   message boundaries are found by scanning: a message ends at `\n` or after
//!   [`DOCKER_PARTIAL_SIZE`] content bytes.
//! - Both feed a per-stream line buffer that emits [`Piece`]s: whole lines, or for lines
//!   longer than `max_line_bytes` consecutive pieces of exactly `max_line_bytes` bytes
//!   (all but the last marked as continued), so memory stays bounded for endless lines.
//!
//! Files: the types and the line buffer here; [`MuxAssembler`]'s methods in `mux`,
//! [`TtyAssembler`]'s in `tty`.

mod mux;
mod tty;

use protocol::Stream;

pub use super::timestamp::{parse_timestamp, split_timestamp, MAX_TIMESTAMP_LEN};

/// Content bytes of a partial message cut by Docker's log copier (its buffer size).
pub const DOCKER_PARTIAL_SIZE: usize = 16 * 1024;

/// A piece of a line, ready to become a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub stream: Stream,
    /// Timestamp of the line (its first message), ns since the epoch.
    pub ts: i64,
    pub bytes: Vec<u8>,
    /// First piece of its line (the place to decide whether a re-read line is skipped).
    pub first: bool,
    /// Last piece of its line (`cont: false` on the wire).
    pub last: bool,
    /// After this piece nothing is pending in the assembler: a position to resume from.
    pub cut: bool,
}

/// Marks the last piece as a cut, if it ends a line (else nothing ended here).
fn mark_cut(out: &mut [Piece]) {
    if let Some(p) = out.last_mut().filter(|p| p.last) {
        p.cut = true;
    }
}

/// Accumulates one stream's messages into lines.
#[derive(Debug)]
struct LineBuf {
    stream: Stream,
    max_line_bytes: usize,
    strip_cr: bool,
    /// Timestamp of the pending line's first message; `Some` while a line is pending.
    ts: Option<i64>,
    buf: Vec<u8>,
    /// Whether a piece of the pending line was already emitted.
    emitted: bool,
    /// Arrival order of the pending line's first message (to flush in Docker's order).
    order: u64,
}

impl LineBuf {
    fn new(stream: Stream, max_line_bytes: usize, strip_cr: bool) -> LineBuf {
        LineBuf {
            stream,
            max_line_bytes: max_line_bytes.max(1),
            strip_cr,
            ts: None,
            buf: Vec::new(),
            emitted: false,
            order: 0,
        }
    }

    /// Appends message content (without its `\n`); `terminated` ends the line.
    fn push(
        &mut self,
        ts: i64,
        order: u64,
        content: &[u8],
        terminated: bool,
        out: &mut Vec<Piece>,
    ) {
        let ts = *self.ts.get_or_insert_with(|| {
            self.order = order;
            ts
        });
        self.buf.extend_from_slice(content);
        // Strictly greater: the last byte always stays pending, so a line of exactly
        // k * max bytes ends with a full piece (not an empty one) and a trailing '\r' is
        // still at hand when the line ends. Splitting stays deterministic on a re-read.
        while self.buf.len() > self.max_line_bytes {
            let rest = self.buf.split_off(self.max_line_bytes);
            let bytes = std::mem::replace(&mut self.buf, rest);
            out.push(Piece {
                stream: self.stream,
                ts,
                bytes,
                first: !self.emitted,
                last: false,
                cut: false,
            });
            self.emitted = true;
        }
        if terminated {
            self.finish(true, out);
        }
    }

    /// Ends the pending line; `terminated` if Docker's message ended with `\n` (only then
    /// is a trailing '\r' the pty's, rather than the program's own).
    fn finish(&mut self, terminated: bool, out: &mut Vec<Piece>) {
        let Some(ts) = self.ts.take() else { return };
        if terminated && self.strip_cr && self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        out.push(Piece {
            stream: self.stream,
            ts,
            bytes: std::mem::take(&mut self.buf),
            first: !self.emitted,
            last: true,
            cut: false,
        });
        self.emitted = false;
    }

    fn clear(&mut self) {
        self.ts = None;
        self.buf = Vec::new();
        self.emitted = false;
    }

    fn pending(&self) -> bool {
        self.ts.is_some()
    }
}

/// Joins the frames of a multiplexed (non-TTY) log stream into lines, per stream.
///
/// Lines come out when they complete. The pieces of a line longer than `max_line_bytes`
/// are kept contiguous (readers join a continued record with the *next* record): while
/// one stream's line is half emitted, the other stream's pieces wait, up to a bound after
/// which the long line is cut short (its rest becomes a new line) rather than memory grow.
#[derive(Debug)]
pub struct MuxAssembler {
    stdout: LineBuf,
    stderr: LineBuf,
    partial_size: usize,
    order: u64,
    last_ts: i64,
    /// The stream whose line is half emitted (its last piece out was a continued one).
    owner: Option<Stream>,
    /// Pieces of the other stream, waiting for the owner's line to end.
    held: Vec<Piece>,
    held_bytes: usize,
    max_held_bytes: usize,
    scratch: Vec<Piece>,
    /// Frames that did not start with a timestamp (kept whole, stamped with the previous
    /// timestamp).
    pub malformed: u64,
    /// Long lines cut short because the other stream had too much waiting.
    pub forced_breaks: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TtyState {
    /// Reading the timestamp that starts a message.
    Timestamp,
    /// Inside a message's content; `len` content bytes seen so far.
    Content { ts: i64, len: usize },
}

/// Splits a TTY container's raw log byte stream (arbitrary chunks) into lines.
///
/// One trailing `\r` per line is removed: the pty turns `\n` into `\r\n`, so a TTY line
/// as the program wrote it never ends in the `\r` Docker stored.
#[derive(Debug)]
pub struct TtyAssembler {
    line: LineBuf,
    state: TtyState,
    ts_buf: Vec<u8>,
    partial_size: usize,
    last_ts: i64,
    order: u64,
    /// Messages without a parsable timestamp (their bytes are kept as content).
    pub malformed: u64,
}

/// Either assembler, chosen by the container's TTY flag.
#[derive(Debug)]
pub enum Assembler {
    Mux(MuxAssembler),
    Tty(TtyAssembler),
}

impl Assembler {
    pub fn new(tty: bool, max_line_bytes: usize) -> Assembler {
        if tty {
            Assembler::Tty(TtyAssembler::new(max_line_bytes))
        } else {
            Assembler::Mux(MuxAssembler::new(max_line_bytes))
        }
    }

    pub fn flush(&mut self, out: &mut Vec<Piece>) {
        match self {
            Assembler::Mux(a) => a.flush(out),
            Assembler::Tty(a) => a.flush(out),
        }
    }

    /// One message already split from its timestamp (see the assemblers' `push_message`).
    pub fn push_message(&mut self, stream: Stream, ts: i64, content: &[u8], out: &mut Vec<Piece>) {
        match self {
            Assembler::Mux(a) => a.push_message(stream, ts, content, out),
            Assembler::Tty(a) => a.push_message(ts, content, out),
        }
    }

    pub fn clear(&mut self) {
        match self {
            Assembler::Mux(a) => a.clear(),
            Assembler::Tty(a) => a.clear(),
        }
    }

    pub fn malformed(&self) -> u64 {
        match self {
            Assembler::Mux(a) => a.malformed,
            Assembler::Tty(a) => a.malformed,
        }
    }

    /// A line is begun and not complete.
    pub fn pending(&self) -> bool {
        match self {
            Assembler::Mux(a) => a.pending(),
            Assembler::Tty(a) => a.pending(),
        }
    }
}

#[cfg(test)]
mod tests;
