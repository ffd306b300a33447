//! [`TtyAssembler`]'s methods: finding Docker's messages in a TTY container's raw bytes.

use protocol::Stream;

use super::{
    mark_cut, parse_timestamp, LineBuf, Piece, TtyAssembler, TtyState, DOCKER_PARTIAL_SIZE,
    MAX_TIMESTAMP_LEN,
};

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
