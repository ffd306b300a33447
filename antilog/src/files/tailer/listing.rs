//! Looking at a chain's directory: which files are there, in order of age, each opened
//! as it is listed.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{Layout, Tailer};

/// Most directory reads for one look (see [`Tailer::list`]).
const MAX_LIST_TRIES: usize = 8;

/// A file of the chain, as listed: opened when listed, so its inode cannot be reused
/// for another file while the tailer decides what to do with it.
#[derive(Debug)]
pub(super) struct Listed {
    pub rank: u64,
    pub gz: bool,
    pub path: PathBuf,
    pub key: (u64, u64),
    pub file: File,
}

impl PartialEq for Listed {
    fn eq(&self, other: &Listed) -> bool {
        (self.rank, self.gz, &self.path, self.key) == (other.rank, other.gz, &other.path, other.key)
    }
}

fn list(dir: &Path, layout: &Layout) -> io::Result<Vec<Listed>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(r) = name.to_str().and_then(|n| layout.rank(n)) else {
            continue;
        };
        let path = entry.path();
        // Renamed or deleted since read_dir: the next look finds it. (The name may also
        // hold the file a rotation put there since; see `Tailer::list`.)
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let meta = file.metadata()?;
        if meta.is_file() {
            out.push(Listed {
                rank: r.rank,
                gz: r.gz,
                path,
                key: (meta.dev(), meta.ino()),
                file,
            });
        }
    }
    // Oldest first; a plain file before its compressed copy, which is dropped (the
    // kubelet removes the plain file right after writing the copy).
    out.sort_by_key(|l| (std::cmp::Reverse(l.rank), l.gz));
    out.dedup_by(|later, earlier| later.rank == earlier.rank);
    Ok(out)
}

impl Tailer {
    /// The chain's files now (none while the directory does not exist).
    ///
    /// A directory read racing a rotation can miss a renamed file, or see under a name
    /// the file a rotation put there since, so a file would be skipped: the directory is
    /// read until two reads agree (at most [`MAX_LIST_TRIES`]).
    pub(super) fn list(&self) -> io::Result<Vec<Listed>> {
        let once = || match list(&self.dir, &self.layout) {
            Ok(l) => Ok(l),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        };
        let mut prev = once()?;
        for _ in 1..MAX_LIST_TRIES {
            let next = once()?;
            if next == prev {
                break;
            }
            prev = next;
        }
        Ok(prev)
    }
}
