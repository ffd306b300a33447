//! A [`Tailer`] driven from async code without blocking its workers: opening a chain and
//! every read (`pread`, directory listings, gzip decompression) run on tokio's blocking
//! pool, one task per chunk of lines ([`CHUNK_BYTES`], [`CHUNK_LINES`]), not per line.
//!
//! The tailer and the chunk's buffers move into the blocking task and back, so nothing
//! is allocated per chunk once the buffers have grown, and memory stays bounded: the
//! tailer's own buffer plus one chunk (at most [`CHUNK_BYTES`] and one line of at most
//! [`super::tailer::MAX_LINE`]).

use std::io;
use std::path::{Path, PathBuf};

use super::tailer::{Event, Layout, Start, Tailer};
use crate::checkpoint::FilePos;

/// Bytes of lines one chunk gathers before it is handed back (a line is never split).
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Most lines in one chunk.
pub const CHUNK_LINES: usize = 2048;

/// One event of a chunk.
#[derive(Debug, PartialEq, Eq)]
pub enum Read<'a> {
    /// A complete line (without its `\n`) and the position right after it.
    Line { line: &'a [u8], pos: FilePos },
    /// Lines may be missing here (see [`Event::Gap`]).
    Gap(&'a str),
}

#[derive(Debug)]
enum Item {
    /// A line ending at `end` in the chunk's buffer (it starts where the previous ended).
    Line {
        end: usize,
        pos: FilePos,
    },
    Gap(String),
}

/// The lines read by one blocking task, in order.
#[derive(Debug, Default)]
pub struct Chunk {
    buf: Vec<u8>,
    items: Vec<Item>,
    /// Everything written so far was read (the tailer returned [`Event::Eof`]).
    pub eof: bool,
    /// The tailer's counters after this chunk (see [`Tailer::malformed`]).
    pub malformed: u64,
    pub truncations: u64,
    /// An error met after some lines were gathered, reported by the next read.
    deferred: Option<io::Error>,
}

impl Chunk {
    /// The chunk's events, in order.
    pub fn iter(&self) -> impl Iterator<Item = Read<'_>> {
        let mut start = 0;
        self.items.iter().map(move |item| match item {
            Item::Line { end, pos } => {
                let line = &self.buf[start..*end];
                start = *end;
                Read::Line { line, pos: *pos }
            }
            Item::Gap(g) => Read::Gap(g),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Gathers lines from `t` until the chunk is full, a gap, or the end of what is
    /// written. An error after some lines is kept for the next fill, so no line read is
    /// dropped.
    fn fill(&mut self, t: &mut Tailer) -> io::Result<()> {
        self.buf.clear();
        self.items.clear();
        self.eof = false;
        if self.buf.capacity() > 4 * CHUNK_BYTES {
            // Grown for one very long line: give the memory back.
            self.buf.shrink_to(CHUNK_BYTES);
        }
        if let Some(e) = self.deferred.take() {
            return Err(e);
        }
        let result = loop {
            match t.next_event() {
                Ok(Event::Line { line, pos }) => {
                    self.buf.extend_from_slice(line);
                    self.items.push(Item::Line {
                        end: self.buf.len(),
                        pos,
                    });
                    if self.buf.len() >= CHUNK_BYTES || self.items.len() >= CHUNK_LINES {
                        break Ok(());
                    }
                }
                Ok(Event::Gap(g)) => {
                    self.items.push(Item::Gap(g));
                    break Ok(());
                }
                Ok(Event::Eof) => {
                    self.eof = true;
                    break Ok(());
                }
                Err(e) => break Err(e),
            }
        };
        self.malformed = t.malformed;
        self.truncations = t.truncations;
        match result {
            Err(e) if !self.items.is_empty() => {
                self.deferred = Some(e);
                Ok(())
            }
            r => r,
        }
    }
}

/// A chain of log files read on the blocking pool (see the module's doc).
#[derive(Debug)]
pub struct FileReader {
    /// `None` once a blocking task failed (it panicked, or the runtime is shutting down).
    tailer: Option<Tailer>,
    chunk: Chunk,
}

fn lost() -> io::Error {
    io::Error::other("the log file reader's blocking task failed")
}

impl FileReader {
    /// Opens a chain (see [`Tailer::open`]) on the blocking pool.
    pub async fn open(
        dir: &Path,
        layout: Layout,
        from: Option<FilePos>,
    ) -> io::Result<(FileReader, Start)> {
        let dir: PathBuf = dir.to_path_buf();
        let (t, start) = tokio::task::spawn_blocking(move || Tailer::open(&dir, layout, from))
            .await
            .map_err(|_| lost())??;
        Ok((FileReader::new(t), start))
    }

    /// Reads an already opened tailer from now on.
    pub fn new(tailer: Tailer) -> FileReader {
        FileReader {
            tailer: Some(tailer),
            chunk: Chunk::default(),
        }
    }

    /// The next chunk of lines: empty with `eof` set when nothing new was written.
    pub async fn read(&mut self) -> io::Result<&Chunk> {
        let mut t = self.tailer.take().ok_or_else(lost)?;
        let mut chunk = std::mem::take(&mut self.chunk);
        let (t, chunk, r) = tokio::task::spawn_blocking(move || {
            let r = chunk.fill(&mut t);
            (t, chunk, r)
        })
        .await
        .map_err(|_| lost())?;
        self.tailer = Some(t);
        self.chunk = chunk;
        r.map(|()| &self.chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn owned(chunk: &Chunk) -> Vec<String> {
        chunk
            .iter()
            .map(|r| match r {
                Read::Line { line, pos } => {
                    format!("{}@{}", String::from_utf8_lossy(line), pos.offset)
                }
                Read::Gap(g) => format!("GAP {g}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn reads_chunks_of_lines_off_the_async_workers_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        let mut f = std::fs::File::create(&path).unwrap();
        let layout = || Layout::Numbered {
            name: "c-json.log".into(),
        };
        let (mut r, start) = FileReader::open(dir.path(), layout(), None).await.unwrap();
        assert_eq!(start, Start::Beginning);
        let c = r.read().await.unwrap();
        assert!(c.is_empty() && c.eof);
        // More lines than one chunk holds: several chunks, every line once, in order.
        let n = CHUNK_LINES + 10;
        let mut want = Vec::new();
        let mut offset = 0;
        for i in 0..n {
            let l = format!("line {i}");
            writeln!(f, "{l}").unwrap();
            offset += l.len() + 1;
            want.push(format!("{l}@{offset}"));
        }
        let mut got = Vec::new();
        let mut chunks = 0;
        loop {
            let c = r.read().await.unwrap();
            got.extend(owned(c));
            chunks += 1;
            if c.eof {
                break;
            }
        }
        assert_eq!(got, want);
        assert!(chunks >= 2, "{chunks} chunks");
        // A half-written line waits for its end.
        write!(f, "part").unwrap();
        let c = r.read().await.unwrap();
        assert!(c.is_empty() && c.eof);
        writeln!(f, "-end").unwrap();
        let c = r.read().await.unwrap();
        assert_eq!(owned(c), vec![format!("part-end@{}", offset + 9)]);
        assert_eq!((c.malformed, c.truncations), (0, 0));
    }
}
