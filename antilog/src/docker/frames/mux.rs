//! [`MuxAssembler`]'s methods: joining a multiplexed (non-TTY) stream's frames into lines.

use protocol::Stream;

use super::{mark_cut, split_timestamp, LineBuf, MuxAssembler, Piece, DOCKER_PARTIAL_SIZE};

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
