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

impl MuxAssembler {
    pub fn new(max_line_bytes: usize) -> MuxAssembler {
        MuxAssembler::with_partial_size(max_line_bytes, DOCKER_PARTIAL_SIZE)
    }

    pub fn with_partial_size(max_line_bytes: usize, partial_size: usize) -> MuxAssembler {
        MuxAssembler {
            stdout: LineBuf::new(Stream::Stdout, max_line_bytes, false),
            stderr: LineBuf::new(Stream::Stderr, max_line_bytes, false),
            partial_size: partial_size.max(1),
            order: 0,
            last_ts: 0,
            owner: None,
            held: Vec::new(),
            held_bytes: 0,
            max_held_bytes: max_line_bytes.saturating_mul(4).max(1 << 20),
            scratch: Vec::new(),
            malformed: 0,
            forced_breaks: 0,
        }
    }

    fn buf(&mut self, stream: Stream) -> &mut LineBuf {
        match stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        }
    }

    /// One frame = one Docker message: `"<ts> <content>[\n]"`.
    pub fn push_frame(&mut self, stream: Stream, frame: &[u8], out: &mut Vec<Piece>) {
        let (ts, rest) = match split_timestamp(frame) {
            Some(v) => v,
            None => {
                self.malformed += 1;
                (self.last_ts, frame)
            }
        };
        self.push_message(stream, ts, rest, out);
    }

    /// One Docker message already split from its timestamp (a json-file record):
    /// `rest` is its content, with its `\n` if it has one.
    pub fn push_message(&mut self, stream: Stream, ts: i64, rest: &[u8], out: &mut Vec<Piece>) {
        // A message without '\n' is a partial only if Docker's buffer was full: the
        // `local` driver returns the last piece of a split line without '\n' (json-file
        // adds one), and a run's last output without newline is short too.
        let (content, terminated) = match rest.split_last() {
            Some((b'\n', head)) => (head, true),
            _ => (rest, rest.len() < self.partial_size),
        };
        self.push_record(stream, ts, content, terminated, out);
    }

    /// One message whose end is known from its format (a CRI record: `P` or `F`):
    /// `content` is its bytes without any newline, `terminated` ends the line.
    pub fn push_record(
        &mut self,
        stream: Stream,
        ts: i64,
        content: &[u8],
        terminated: bool,
        out: &mut Vec<Piece>,
    ) {
        self.last_ts = ts;
        self.order += 1;
        let order = self.order;
        let mut scratch = std::mem::take(&mut self.scratch);
        self.buf(stream)
            .push(ts, order, content, terminated, &mut scratch);
        self.route(&mut scratch, out);
        self.scratch = scratch;
        if self.held_bytes > self.max_held_bytes {
            if let Some(owner) = self.owner {
                // Bounded memory beats one unbroken line.
                self.forced_breaks += 1;
                let mut scratch = std::mem::take(&mut self.scratch);
                self.buf(owner).finish(false, &mut scratch);
                self.route(&mut scratch, out);
                self.scratch = scratch;
            }
        }
        self.mark_cut_if_idle(out);
    }

    /// Moves pieces to `out`, or to `held` while the other stream owns the output.
    fn route(&mut self, pieces: &mut Vec<Piece>, out: &mut Vec<Piece>) {
        for p in pieces.drain(..) {
            match self.owner {
                Some(o) if o != p.stream => {
                    self.held_bytes += p.bytes.len();
                    self.held.push(p);
                }
                _ => {
                    self.pass(p, out);
                    if self.owner.is_none() && !self.held.is_empty() {
                        // Held pieces are all of one stream: they can all go now.
                        self.held_bytes = 0;
                        let held = std::mem::take(&mut self.held);
                        for h in held {
                            self.pass(h, out);
                        }
                    }
                }
            }
        }
    }

    fn pass(&mut self, p: Piece, out: &mut Vec<Piece>) {
        if !p.last {
            self.owner = Some(p.stream);
        } else if self.owner == Some(p.stream) {
            self.owner = None;
        }
        out.push(p);
    }

    fn mark_cut_if_idle(&self, out: &mut [Piece]) {
        if !self.stdout.pending() && !self.stderr.pending() && self.held.is_empty() {
            mark_cut(out);
        }
    }

    /// End of stream: pending partials become lines, in the order they began.
    pub fn flush(&mut self, out: &mut Vec<Piece>) {
        let before = out.len();
        let mut scratch = std::mem::take(&mut self.scratch);
        let first = if self.stdout.order <= self.stderr.order {
            [Stream::Stdout, Stream::Stderr]
        } else {
            [Stream::Stderr, Stream::Stdout]
        };
        // The owner's line first: it is the one the held pieces wait for.
        let order = match self.owner {
            Some(o) if o != first[0] => [first[1], first[0]],
            _ => first,
        };
        for s in order {
            self.buf(s).finish(false, &mut scratch);
            self.route(&mut scratch, out);
        }
        self.scratch = scratch;
        if out.len() > before {
            self.mark_cut_if_idle(out);
        }
    }

    /// Drops pending partials (the stream broke; they will be read again).
    pub fn clear(&mut self) {
        self.stdout.clear();
        self.stderr.clear();
        self.owner = None;
        self.held.clear();
        self.held_bytes = 0;
    }

    pub fn pending(&self) -> bool {
        self.stdout.pending() || self.stderr.pending() || !self.held.is_empty()
    }
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

impl TtyAssembler {
    pub fn new(max_line_bytes: usize) -> TtyAssembler {
        TtyAssembler::with_partial_size(max_line_bytes, DOCKER_PARTIAL_SIZE)
    }

    pub fn with_partial_size(max_line_bytes: usize, partial_size: usize) -> TtyAssembler {
        TtyAssembler {
            line: LineBuf::new(Stream::Stdout, max_line_bytes, true),
            state: TtyState::Timestamp,
            ts_buf: Vec::with_capacity(MAX_TIMESTAMP_LEN + 1),
            partial_size: partial_size.max(1),
            last_ts: 0,
            order: 0,
            malformed: 0,
        }
    }

    pub fn push_chunk(&mut self, mut chunk: &[u8], out: &mut Vec<Piece>) {
        while !chunk.is_empty() {
            match self.state {
                TtyState::Timestamp => {
                    let room = MAX_TIMESTAMP_LEN + 1 - self.ts_buf.len();
                    let window = &chunk[..chunk.len().min(room)];
                    match window.iter().position(|&b| b == b' ') {
                        Some(p) => {
                            self.ts_buf.extend_from_slice(&window[..p]);
                            chunk = &chunk[p + 1..];
                            match parse_timestamp(&self.ts_buf) {
                                Some(ts) => {
                                    self.last_ts = ts;
                                    self.state = TtyState::Content { ts, len: 0 };
                                    self.ts_buf.clear();
                                }
                                None => self.malformed_prefix(true, out),
                            }
                        }
                        None if window.len() == room => {
                            self.ts_buf.extend_from_slice(window);
                            chunk = &chunk[window.len()..];
                            self.malformed_prefix(false, out);
                        }
                        None => {
                            self.ts_buf.extend_from_slice(window);
                            chunk = &chunk[window.len()..];
                        }
                    }
                }
                TtyState::Content { ts, len } => {
                    let room = self.partial_size - len;
                    let window = &chunk[..chunk.len().min(room)];
                    if let Some(p) = window.iter().position(|&b| b == b'\n') {
                        self.order += 1;
                        self.line.push(ts, self.order, &window[..p], true, out);
                        mark_cut(out);
                        chunk = &chunk[p + 1..];
                        self.state = TtyState::Timestamp;
                    } else {
                        self.order += 1;
                        self.line.push(ts, self.order, window, false, out);
                        chunk = &chunk[window.len()..];
                        let len = len + window.len();
                        self.state = if len >= self.partial_size {
                            TtyState::Timestamp
                        } else {
                            TtyState::Content { ts, len }
                        };
                    }
                }
            }
        }
    }

    /// One message already split from its timestamp (a json-file record of a TTY
    /// container): `content` with its `\n` if it has one. A message without `\n` shorter
    /// than Docker's buffer leaves its line open, as in the raw stream.
    pub fn push_message(&mut self, ts: i64, content: &[u8], out: &mut Vec<Piece>) {
        if !self.ts_buf.is_empty() {
            self.malformed += 1;
            self.ts_buf.clear();
        }
        self.last_ts = ts;
        self.state = TtyState::Content { ts, len: 0 };
        self.push_chunk(content, out);
        if matches!(self.state, TtyState::Content { .. }) && content.last() != Some(&b'\n') {
            // The next message brings its own timestamp.
            self.state = TtyState::Timestamp;
        }
    }

    /// What looked like a timestamp is not one: keep its bytes as content of a message
    /// stamped with the previous timestamp, so no byte is lost.
    fn malformed_prefix(&mut self, with_space: bool, out: &mut Vec<Piece>) {
        self.malformed += 1;
        let mut bytes = std::mem::take(&mut self.ts_buf);
        if with_space {
            bytes.push(b' ');
        }
        self.state = TtyState::Content {
            ts: self.last_ts,
            len: 0,
        };
        // Bounded recursion: `bytes` is at most MAX_TIMESTAMP_LEN + 1 long and every level
        // consumes at least up to one '\n' of it.
        self.push_chunk(&bytes, out);
    }

    /// End of stream: a pending line (a last message without `\n`) becomes a line.
    pub fn flush(&mut self, out: &mut Vec<Piece>) {
        if !self.ts_buf.is_empty() {
            // A message cut inside its timestamp: nothing of its content arrived.
            self.malformed += 1;
            self.ts_buf.clear();
        }
        self.state = TtyState::Timestamp;
        let before = out.len();
        self.line.finish(false, out);
        if out.len() > before {
            mark_cut(out);
        }
    }

    /// Drops the pending line (the stream broke; it will be read again).
    pub fn clear(&mut self) {
        self.state = TtyState::Timestamp;
        self.ts_buf.clear();
        self.line.clear();
    }

    pub fn pending(&self) -> bool {
        self.line.pending()
    }
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
}

#[cfg(test)]
mod tests;
