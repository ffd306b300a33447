//! Reads one container's log files as one stream of lines, across rotations.
//!
//! A log is a *chain* of files in one directory: the active file and its rotated
//! predecessors (see [`Layout`]). The tailer holds every file of the chain it has not
//! finished open, so a file that is renamed or deleted while unread is still read to its
//! end through its descriptor (Vector's `file_watcher`, Fluent Bit's `in_tail`); it moves
//! to the next file only once the file it reads is no longer the active one and is read
//! to its end. Files are known by [`Identity`], never by name.
//!
//! It looks at the directory at every end of file and, while reading, at least every
//! [`RELIST_INTERVAL`], so files that rotation removes quickly are opened in time. A file
//! that was created and deleted between two looks cannot be read: when the newest file
//! known is gone and files never seen take its place, a [`Event::Gap`] says lines may be
//! missing there. A file that shrinks (copy-truncate) is read again from its start.
//!
//! The kubelet compresses older rotations ([`Layout::Kubelet`]): a `.gz` whose content
//! is a file the tailer holds is that file (read on through its descriptor, and older
//! files are behind it); a `.gz` of a file never opened is read through a decoder, so
//! lines compressed before antilog saw them are still read.
//!
//! I/O is plain blocking `pread` on page-cache data, in reads of at most [`READ_CHUNK`].

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::compressed::{self, GzReader};
use super::identity::{Identity, FINGERPRINT_BYTES};
pub use super::layout::Layout;
use crate::checkpoint::FilePos;
use listing::Listed;

mod listing;

/// Bytes read at once.
pub const READ_CHUNK: usize = 256 * 1024;
/// Longest line kept; longer ones are skipped and counted as malformed (json-file and CRI
/// lines carry at most 16 KiB of content, escaped).
pub const MAX_LINE: usize = 1 << 20;
/// Longest time between two looks at the directory while reading.
pub const RELIST_INTERVAL: Duration = Duration::from_millis(10);
/// Most files of one chain held open.
const MAX_OPEN: usize = 64;

/// Where reading began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// At the requested position, exactly.
    Exact,
    /// From the oldest file: no position was given.
    Beginning,
    /// From the oldest file: the file of the requested position is gone (rotated away
    /// while antilog was not reading), so lines after it may be lost.
    Lost,
}

/// What [`Tailer::next_event`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A complete line (without its `\n`) and the position right after it.
    Line { line: &'a [u8], pos: FilePos },
    /// Nothing more for now.
    Eof,
    /// Files were rotated away before they could be opened: lines may be missing here.
    Gap(String),
}

#[derive(Debug)]
struct Open {
    file: File,
    /// The decoder of a compressed file.
    gz: Option<GzReader>,
    id: Identity,
    path: PathBuf,
    /// Bytes consumed (up to the end of the last line handed out).
    offset: u64,
    /// Bytes read into the buffer.
    read_to: u64,
    /// No longer the active file: once read to its end, move on.
    rotated: bool,
    /// Files between the previous one and this one were rotated away unseen.
    gap_before: Option<String>,
}

#[derive(Debug)]
pub struct Tailer {
    dir: PathBuf,
    layout: Layout,
    /// Front: the file being read; then newer ones, in order.
    files: VecDeque<Open>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Skipping an over-long line up to its `\n`.
    discarding: bool,
    last_list: Instant,
    /// The last look found the newest held file's compressed copy (so no file was lost
    /// after it).
    newest_compressed: bool,
    /// Lines longer than [`MAX_LINE`] (skipped), and bytes left without `\n` at the end of
    /// a rotated file.
    pub malformed: u64,
    /// Files that shrank and were read again from their start.
    pub truncations: u64,
}

/// The gap reported for a compressed file that cannot be opened (logged).
fn unreadable_gz(path: &Path, e: &io::Error) -> String {
    let gap = format!(
        "compressed log file {} cannot be read ({e}); lines may be missing",
        path.display()
    );
    warn!("{gap}");
    gap
}

/// Takes a listed file to read.
fn open_file(l: &Listed) -> io::Result<Open> {
    let file = l.file.try_clone()?;
    let path = &l.path;
    let (id, gz) = if l.gz {
        (Identity::of_gz(&file)?, Some(GzReader::new(&file)?))
    } else {
        (Identity::of(&file)?, None)
    };
    Ok(Open {
        file,
        gz,
        id,
        path: path.to_path_buf(),
        offset: 0,
        read_to: 0,
        rotated: false,
        gap_before: None,
    })
}

impl Open {
    fn key(&self) -> (u64, u64) {
        (self.id.dev, self.id.ino)
    }

    /// Reads (decompressed) content at `offset`.
    fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        match self.gz.as_mut() {
            Some(gz) => gz.read_at(buf, offset),
            None => self.file.read_at(buf, offset),
        }
    }

    fn identity(&self) -> io::Result<Identity> {
        if self.gz.is_some() {
            Identity::of_gz(&self.file)
        } else {
            Identity::of(&self.file)
        }
    }
}

impl Tailer {
    /// Opens the chain in `dir`, to read from `from` (exactly, if its file is still there)
    /// or from the start of the oldest file. A missing directory is an empty chain.
    pub fn open(dir: &Path, layout: Layout, from: Option<FilePos>) -> io::Result<(Tailer, Start)> {
        let mut t = Tailer {
            dir: dir.to_path_buf(),
            layout,
            files: VecDeque::new(),
            buf: vec![0; READ_CHUNK],
            start: 0,
            end: 0,
            discarding: false,
            last_list: Instant::now(),
            newest_compressed: false,
            malformed: 0,
            truncations: 0,
        };
        let listed = t.list()?;
        let last = listed.len().saturating_sub(1);
        // A `.gz` that cannot be opened (corrupt) is a gap before the next file, not a
        // failure: the files after it are still read.
        let mut gap = None;
        for (i, l) in listed.iter().enumerate() {
            let mut f = match open_file(l) {
                Ok(f) => f,
                Err(e) if l.gz => {
                    gap = Some(unreadable_gz(&l.path, &e));
                    continue;
                }
                Err(e) => return Err(e),
            };
            f.rotated = l.rank != 0 || i != last;
            f.gap_before = gap.take();
            t.files.push_back(f);
        }
        let Some(from) = from else {
            return Ok((t, Start::Beginning));
        };
        let mut found = None;
        for (i, f) in t.files.iter().enumerate() {
            if f.id.is(&f.file, &from)? {
                found = Some(i);
                break;
            }
        }
        let Some(i) = found else {
            if t.files.is_empty() {
                // No log at all (the container is being removed): nothing to read.
                return Ok((t, Start::Beginning));
            }
            warn!(dir = %dir.display(), "the checkpointed log file is gone; reading from the oldest file");
            return Ok((t, Start::Lost));
        };
        t.files.drain(..i);
        if let Some(f) = t.files.front_mut() {
            // A compressed file's size says nothing of its content's: it is read up to
            // the offset (and never shrinks).
            let len = match f.gz {
                Some(_) => u64::MAX,
                None => f.file.metadata()?.len(),
            };
            if len < from.offset {
                t.truncations += 1;
                warn!(path = %f.path.display(), "log file shrank below the checkpoint; reading it from its start");
            } else {
                f.offset = from.offset;
                f.read_to = from.offset;
            }
        }
        Ok((t, Start::Exact))
    }

    /// The position of the next line to be read, if a file is open.
    pub fn position(&self) -> Option<FilePos> {
        self.files.front().map(|f| f.id.at(f.offset))
    }

    /// The next complete line, or [`Event::Eof`] when everything written so far is read.
    pub fn next_event(&mut self) -> io::Result<Event<'_>> {
        // Whether a renamed file waiting for the runtime to reopen its log was looked at
        // again in this call.
        let mut waited = false;
        loop {
            let Some(cur) = self.files.front_mut() else {
                self.relist()?;
                if self.files.is_empty() {
                    return Ok(Event::Eof);
                }
                continue;
            };
            if let Some(gap) = cur.gap_before.take() {
                return Ok(Event::Gap(gap));
            }
            let pending = &self.buf[self.start..self.end];
            if let Some(p) = memchr::memchr(b'\n', pending) {
                let line_start = self.start;
                self.start += p + 1;
                cur.offset += p as u64 + 1;
                if self.discarding {
                    self.discarding = false;
                    continue;
                }
                if cur.id.short() && cur.offset > u64::from(cur.id.fp_len) {
                    cur.id = cur.identity()?;
                }
                let pos = cur.id.at(cur.offset);
                return Ok(Event::Line {
                    line: &self.buf[line_start..line_start + p],
                    pos,
                });
            }
            // No complete line buffered: make room and read more.
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                if self.buf.len() < MAX_LINE {
                    self.buf.resize((self.buf.len() * 2).min(MAX_LINE), 0);
                } else {
                    // An endless line: skip it up to its end.
                    self.malformed += 1;
                    self.discarding = true;
                    cur.offset += self.end as u64;
                    self.end = 0;
                }
            }
            if self.last_list.elapsed() >= RELIST_INTERVAL {
                self.relist()?;
                continue;
            }
            let cur = match self.files.front_mut() {
                Some(c) => c,
                None => continue,
            };
            let at = cur.read_to;
            let n = loop {
                match cur.read_at(&mut self.buf[self.end..], at) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if cur.gz.is_some() => {
                        // A corrupt compressed file: what it still holds cannot be read.
                        let gap = format!(
                            "compressed log file {} cannot be read past byte {at} ({e}); lines may be missing",
                            cur.path.display()
                        );
                        warn!("{gap}");
                        self.malformed += u64::from(self.end > self.start);
                        self.start = 0;
                        self.end = 0;
                        self.discarding = false;
                        self.files.pop_front();
                        return Ok(Event::Gap(gap));
                    }
                    Err(e) => return Err(e),
                }
            };
            if n > 0 {
                self.end += n;
                cur.read_to += n as u64;
                continue;
            }
            // End of this file for now.
            if cur.rotated {
                if self.layout.written_after_rename() && !self.runtime_moved_on() {
                    // The runtime writes on to a renamed file until it has reopened the
                    // log: the file is done only once its successor has data.
                    if !waited {
                        waited = true;
                        self.relist()?;
                        continue;
                    }
                    return Ok(Event::Eof);
                }
                if self.end > self.start || self.discarding {
                    // A rotated file never grows again: its unterminated end is not a line.
                    self.malformed += 1;
                }
                self.start = 0;
                self.end = 0;
                self.discarding = false;
                self.files.pop_front();
                if self.files.len() < 2 {
                    self.relist()?;
                }
                continue;
            }
            let len = cur.file.metadata()?.len();
            if len < cur.read_to {
                self.truncations += 1;
                info!(path = %cur.path.display(), "log file was truncated (copy-truncate); reading it again from its start");
                cur.offset = 0;
                cur.read_to = 0;
                cur.id = cur.identity()?;
                self.start = 0;
                self.end = 0;
                self.discarding = false;
                continue;
            }
            let was_rotated = cur.rotated;
            self.relist()?;
            let rotated_now = self.files.front().is_some_and(|f| f.rotated);
            if rotated_now && !was_rotated {
                // Renamed since we last read: read it to its end once more, then move on.
                continue;
            }
            return Ok(Event::Eof);
        }
    }

    /// Whether the runtime writes to a file after the one being read: a later file has
    /// data (or is compressed, so complete), or two have been opened since.
    fn runtime_moved_on(&self) -> bool {
        self.files.len() > 2
            || self
                .files
                .iter()
                .skip(1)
                .any(|f| f.gz.is_some() || f.file.metadata().map_or(true, |m| m.len() > 0))
    }

    /// Looks at the directory: marks files that are no longer active, opens new ones.
    fn relist(&mut self) -> io::Result<()> {
        self.last_list = Instant::now();
        let mut listed = self.list()?;
        if let Some(f) = self.files.back() {
            if !listed.iter().any(|l| l.key == f.key()) && f.file.metadata()?.nlink() > 0 {
                // Still linked somewhere: a rename raced the directory read. Look again
                // rather than take its successors for files after a gap.
                listed = self.list()?;
            }
        }
        let active = listed.last().filter(|l| l.rank == 0).map(|l| l.key);
        for f in self.files.iter_mut() {
            if Some(f.key()) != active {
                f.rotated = true;
            }
        }
        // Files newer than the newest we hold.
        let newest = self.files.back().map(Open::key);
        let newer: Vec<&Listed> = match newest {
            None => listed.iter().collect(),
            Some(k) => match listed.iter().position(|l| l.key == k) {
                Some(i) => listed[i + 1..].iter().collect(),
                None => self.successors(&listed)?,
            },
        };
        let mut new_gap = None;
        if newest.is_some() && !newer.is_empty() && !listed.iter().any(|l| Some(l.key) == newest) {
            let held_found = std::mem::take(&mut self.newest_compressed);
            if !held_found {
                // The newest file we hold was rotated away before we saw what came next.
                let gap = format!(
                    "log files in {} were rotated away faster than antilog looked at them; lines may be missing",
                    self.dir.display()
                );
                warn!("{gap}");
                new_gap = Some(gap);
            }
        }
        for l in newer {
            if self.files.len() >= MAX_OPEN {
                break;
            }
            let mut f = match open_file(l) {
                Ok(f) => f,
                Err(e) if l.gz => {
                    new_gap = Some(unreadable_gz(&l.path, &e));
                    continue;
                }
                Err(e) => return Err(e),
            };
            f.rotated = l.rank != 0;
            f.gap_before = new_gap.take();
            self.files.push_back(f);
        }
        // Only the newest file can be active.
        let n = self.files.len();
        for (i, f) in self.files.iter_mut().enumerate() {
            if i + 1 < n {
                f.rotated = true;
            }
        }
        Ok(())
    }

    /// The listed files that follow the newest one held, which is no longer listed under
    /// its own inode: it was deleted, or compressed into a `.gz`. A `.gz` holding the
    /// content of a held file is that file, already being read; and when it is the newest
    /// held one's, every file from its place back is older (sets `newest_compressed`).
    fn successors<'l>(&mut self, listed: &'l [Listed]) -> io::Result<Vec<&'l Listed>> {
        // Fingerprints of held files, over as many bytes as they have now.
        for f in self.files.iter_mut() {
            if f.id.short() {
                f.id = f.identity()?;
            }
        }
        let newest = self.files.back().map(|f| f.id);
        let mut behind = None;
        let mut copies = Vec::new();
        for (i, l) in listed.iter().enumerate().filter(|(_, l)| l.gz) {
            // A corrupt one is reported when it is read.
            let Ok(head) = compressed::head(&l.file, FINGERPRINT_BYTES as usize) else {
                continue;
            };
            if newest.is_some_and(|id| id.starts(&head)) {
                behind = Some(i);
            }
            if self.files.iter().any(|f| f.id.starts(&head)) {
                copies.push(i);
            }
        }
        self.newest_compressed = behind.is_some();
        let from = behind.map_or(0, |i| i + 1);
        Ok(listed
            .iter()
            .enumerate()
            .skip(from)
            .filter(|(i, l)| !copies.contains(i) && !self.files.iter().any(|f| f.key() == l.key))
            .map(|(_, l)| l)
            .collect())
    }
}

#[cfg(test)]
mod kubelet_tests;
#[cfg(test)]
mod tests;
