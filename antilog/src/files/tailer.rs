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
//! I/O is plain blocking `pread` on page-cache data, in reads of at most [`READ_CHUNK`].

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::identity::Identity;
use crate::checkpoint::FilePos;

/// Bytes read at once.
pub const READ_CHUNK: usize = 256 * 1024;
/// Longest line kept; longer ones are skipped and counted as malformed (json-file and CRI
/// lines carry at most 16 KiB of content, escaped).
pub const MAX_LINE: usize = 1 << 20;
/// Longest time between two looks at the directory while reading.
pub const RELIST_INTERVAL: Duration = Duration::from_millis(10);
/// Most files of one chain held open.
const MAX_OPEN: usize = 64;

/// How a chain's files are named.
#[derive(Debug, Clone)]
pub enum Layout {
    /// Docker json-file: `<name>` is active; `<name>.1` the newest rotated, `.2` older...
    Numbered { name: String },
}

impl Layout {
    /// The rank of a file name in the chain: 0 for the active file, higher for older ones;
    /// `None` for files not of this chain (compressed rotations are not read).
    fn rank(&self, file_name: &str) -> Option<u64> {
        match self {
            Layout::Numbered { name } => {
                let rest = file_name.strip_prefix(name.as_str())?;
                if rest.is_empty() {
                    return Some(0);
                }
                let n = rest.strip_prefix('.')?;
                if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                n.parse().ok()
            }
        }
    }
}

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
    /// Lines longer than [`MAX_LINE`] (skipped), and bytes left without `\n` at the end of
    /// a rotated file.
    pub malformed: u64,
    /// Files that shrank and were read again from their start.
    pub truncations: u64,
}

fn open_file(path: &Path) -> io::Result<Open> {
    let file = File::open(path)?;
    let id = Identity::of(&file)?;
    Ok(Open {
        file,
        id,
        path: path.to_path_buf(),
        offset: 0,
        read_to: 0,
        rotated: false,
        gap_before: None,
    })
}

/// A listed file: rank, path, (dev, ino).
type Listed = (u64, PathBuf, (u64, u64));

fn list(dir: &Path, layout: &Layout) -> io::Result<Vec<Listed>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(rank) = name.to_str().and_then(|n| layout.rank(n)) else {
            continue;
        };
        let path = entry.path();
        // Renamed or deleted since read_dir: the next look finds it.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_file() {
            out.push((rank, path, (meta.dev(), meta.ino())));
        }
    }
    // Oldest first.
    out.sort_by_key(|l| std::cmp::Reverse(l.0));
    Ok(out)
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
            malformed: 0,
            truncations: 0,
        };
        let listed = match list(dir, &t.layout) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let last = listed.len().saturating_sub(1);
        for (i, (rank, path, _)) in listed.into_iter().enumerate() {
            match open_file(&path) {
                Ok(mut f) => {
                    f.rotated = rank != 0 || i != last;
                    t.files.push_back(f);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
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
            let len = f.file.metadata()?.len();
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
                    cur.id = Identity::of(&cur.file)?;
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
            let n = loop {
                match cur.file.read_at(&mut self.buf[self.end..], cur.read_to) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
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
                cur.id = Identity::of(&cur.file)?;
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

    /// Looks at the directory: marks files that are no longer active, opens new ones.
    fn relist(&mut self) -> io::Result<()> {
        self.last_list = Instant::now();
        let listed = match list(&self.dir, &self.layout) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let key = |f: &Open| (f.id.dev, f.id.ino);
        let active = listed.last().filter(|l| l.0 == 0).map(|l| l.2);
        for f in self.files.iter_mut() {
            if Some(key(f)) != active {
                f.rotated = true;
            }
        }
        // Files newer than the newest we hold.
        let newest = self.files.back().map(key);
        let newer: Vec<&Listed> = match newest {
            None => listed.iter().collect(),
            Some(k) => match listed.iter().position(|l| l.2 == k) {
                Some(i) => listed[i + 1..].iter().collect(),
                None => listed
                    .iter()
                    .filter(|l| !self.files.iter().any(|f| key(f) == l.2))
                    .collect(),
            },
        };
        let mut new_gap = None;
        if newest.is_some() && !newer.is_empty() && !listed.iter().any(|l| Some(l.2) == newest) {
            // The newest file we hold was rotated away before we saw what came next.
            let gap = format!(
                "log files in {} were rotated away faster than antilog looked at them; lines may be missing",
                self.dir.display()
            );
            warn!("{gap}");
            new_gap = Some(gap);
        }
        for (rank, path, _) in newer {
            if self.files.len() >= MAX_OPEN {
                break;
            }
            match open_file(path) {
                Ok(mut f) => {
                    f.rotated = *rank != 0;
                    f.gap_before = new_gap.take();
                    self.files.push_back(f);
                }
                // Rotated away between listing and opening: the next look says what it is.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn layout() -> Layout {
        Layout::Numbered {
            name: "c-json.log".into(),
        }
    }

    fn append(path: &Path, lines: &[&str]) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        for l in lines {
            f.write_all(l.as_bytes()).unwrap();
            f.write_all(b"\n").unwrap();
        }
    }

    /// Reads until end of file; returns the lines and the last position.
    fn drain(t: &mut Tailer) -> (Vec<String>, Option<FilePos>) {
        let mut out = Vec::new();
        let mut last = None;
        loop {
            match t.next_event().unwrap() {
                Event::Line { line, pos } => {
                    out.push(String::from_utf8(line.to_vec()).unwrap());
                    last = Some(pos);
                }
                Event::Gap(g) => out.push(format!("GAP {}", g.contains("rotated away"))),
                Event::Eof => return (out, last),
            }
        }
    }

    /// Docker's rotation: `.1` -> `.2`, ..., the active file -> `.1`, a new active file.
    fn rotate(dir: &Path, keep: usize) {
        let base = dir.join("c-json.log");
        let _ = std::fs::remove_file(dir.join(format!("c-json.log.{keep}")));
        for i in (1..keep).rev() {
            let from = dir.join(format!("c-json.log.{i}"));
            if from.exists() {
                std::fs::rename(&from, dir.join(format!("c-json.log.{}", i + 1))).unwrap();
            }
        }
        std::fs::rename(&base, dir.join("c-json.log.1")).unwrap();
        std::fs::File::create(&base).unwrap();
    }

    #[test]
    fn reads_across_renames_and_deleted_files_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("c-json.log");
        append(&base, &["1", "2"]);
        let (mut t, start) = Tailer::open(dir.path(), layout(), None).unwrap();
        assert_eq!(start, Start::Beginning);
        assert_eq!(drain(&mut t).0, vec!["1", "2"]);
        // Written, then rotated before we read: read through the open descriptor.
        append(&base, &["3", "4"]);
        rotate(dir.path(), 2);
        append(&base, &["5"]);
        // A half-written line waits for its end.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&base)
            .unwrap()
            .write_all(b"6-part")
            .unwrap();
        assert_eq!(drain(&mut t).0, vec!["3", "4", "5"]);
        append(&base, &["-end"]);
        // Rotated twice and the older file deleted while it was still unread.
        append(&base, &["7"]);
        rotate(dir.path(), 2);
        append(&base, &["8"]);
        let got = drain(&mut t).0;
        assert_eq!(got, vec!["6-part-end", "7", "8"]);
        // The active file held open is renamed to .1 then deleted before we look.
        rotate(dir.path(), 1);
        append(&base, &["9", "10"]);
        assert_eq!(drain(&mut t).0, vec!["9", "10"]);
        assert_eq!((t.malformed, t.truncations), (0, 0));
    }

    #[test]
    fn resumes_exactly_from_a_position_in_a_renamed_file() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("c-json.log");
        append(&base, &["a", "b"]);
        let (mut t, _) = Tailer::open(dir.path(), layout(), None).unwrap();
        let (_, pos) = drain(&mut t);
        let pos = pos.unwrap();
        assert_eq!(pos.offset, 4);
        drop(t);
        append(&base, &["c"]);
        rotate(dir.path(), 3);
        append(&base, &["d"]);
        let (mut t, start) = Tailer::open(dir.path(), layout(), Some(pos)).unwrap();
        assert_eq!(start, Start::Exact);
        assert_eq!(drain(&mut t).0, vec!["c", "d"]);
        // Its file deleted: read from the oldest file there is, and say so.
        rotate(dir.path(), 1);
        std::fs::remove_file(dir.path().join("c-json.log.1")).unwrap();
        append(&base, &["e"]);
        let (mut t, start) = Tailer::open(dir.path(), layout(), Some(pos)).unwrap();
        assert_eq!(start, Start::Lost);
        assert_eq!(drain(&mut t).0, vec!["e"]);
    }

    #[test]
    fn inode_reuse_is_not_taken_for_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("c-json.log");
        append(&base, &["old line one"]);
        let (mut t, _) = Tailer::open(dir.path(), layout(), None).unwrap();
        let pos = drain(&mut t).1.unwrap();
        drop(t);
        // Same name and (as the checkpoint sees it) same inode, other content.
        std::fs::remove_file(&base).unwrap();
        append(&base, &["new line 1", "new line 2"]);
        let f = File::open(&base).unwrap();
        let mut reused = pos;
        reused.ino = f.metadata().unwrap().ino();
        reused.dev = f.metadata().unwrap().dev();
        let (mut t, start) = Tailer::open(dir.path(), layout(), Some(reused)).unwrap();
        assert_eq!(start, Start::Lost);
        assert_eq!(drain(&mut t).0, vec!["new line 1", "new line 2"]);
    }

    #[test]
    fn copy_truncate_reads_again_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("c-json.log");
        append(&base, &["one", "two", "three"]);
        let (mut t, _) = Tailer::open(dir.path(), layout(), None).unwrap();
        assert_eq!(drain(&mut t).0.len(), 3);
        // copytruncate: the content went elsewhere, the file is emptied and written anew.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&base)
            .unwrap()
            .set_len(0)
            .unwrap();
        append(&base, &["four"]);
        assert_eq!(drain(&mut t).0, vec!["four"]);
        assert_eq!(t.truncations, 1);
    }

    #[test]
    fn files_rotated_away_unseen_are_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("c-json.log");
        append(&base, &["1"]);
        let (mut t, _) = Tailer::open(dir.path(), layout(), None).unwrap();
        assert_eq!(drain(&mut t).0, vec!["1"]);
        // Three rotations keeping one rotated file, between two looks: the files of
        // lines 2 and 3 (and the one we held, fully read) are gone.
        for l in ["2", "3", "4"] {
            append(&base, &[l]);
            rotate(dir.path(), 1);
        }
        append(&base, &["5"]);
        let got = drain(&mut t).0;
        assert_eq!(got, vec!["2", "GAP true", "4", "5"]);
        assert_eq!(t.position().unwrap().offset, 2);
    }

    #[test]
    fn over_long_lines_are_skipped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("c-json.log");
        let long = "x".repeat(MAX_LINE + 10);
        append(&base, &["a", &long, "b"]);
        let (mut t, _) = Tailer::open(dir.path(), layout(), None).unwrap();
        let (lines, pos) = drain(&mut t);
        assert_eq!(lines, vec!["a", "b"]);
        assert_eq!(t.malformed, 1);
        assert_eq!(pos.unwrap().offset, (2 + long.len() + 1 + 2) as u64);
    }
}
