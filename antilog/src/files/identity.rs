//! Which file is which: a log file is known by its device and inode number plus a
//! fingerprint (CRC-32) of its first bytes, never by its name. Rotation renames files, so
//! a name points at different files over time; and a deleted file's inode number can be
//! given to a new file, which the fingerprint tells apart (as Vector's fingerprinter does).
//!
//! A gzip-compressed rotation is a new inode holding the same content: its fingerprint is
//! taken over its decompressed first bytes, so a position in the plain file it was
//! compressed from names it too.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};

use super::compressed;
use crate::checkpoint::FilePos;

/// Bytes of a file's start the fingerprint covers (fewer while the file is shorter).
pub const FINGERPRINT_BYTES: u32 = 256;

/// A file's identity, as stored in a checkpoint ([`FilePos`] without the offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub dev: u64,
    pub ino: u64,
    pub fp: u32,
    pub fp_len: u32,
    /// Gzip-compressed: the fingerprint covers the decompressed content.
    pub gz: bool,
}

impl Identity {
    /// Reads the identity of an open file (its first bytes are read for the fingerprint).
    pub fn of(file: &File) -> io::Result<Identity> {
        let meta = file.metadata()?;
        let want = meta.len().min(u64::from(FINGERPRINT_BYTES)) as u32;
        let (fp, fp_len) = fingerprint(file, want)?;
        Ok(Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            fp,
            fp_len,
            gz: false,
        })
    }

    /// The identity of an open gzip-compressed file.
    pub fn of_gz(file: &File) -> io::Result<Identity> {
        let meta = file.metadata()?;
        let head = compressed::head(file, FINGERPRINT_BYTES as usize)?;
        Ok(Identity {
            dev: meta.dev(),
            ino: meta.ino(),
            fp: crc32fast::hash(&head),
            fp_len: head.len() as u32,
            gz: true,
        })
    }

    /// Whether `head` (a file's first bytes) starts with the bytes this identity's
    /// fingerprint covers. An empty fingerprint says nothing and matches nothing.
    pub fn starts(&self, head: &[u8]) -> bool {
        let len = self.fp_len as usize;
        len > 0 && head.len() >= len && crc32fast::hash(&head[..len]) == self.fp
    }

    /// Whether the fingerprint still covers fewer bytes than it could.
    pub fn short(&self) -> bool {
        self.fp_len < FINGERPRINT_BYTES
    }

    /// The identity's position at `offset`.
    pub fn at(&self, offset: u64) -> FilePos {
        FilePos {
            dev: self.dev,
            ino: self.ino,
            fp: self.fp,
            fp_len: self.fp_len,
            offset,
        }
    }

    /// Whether `pos` names this file: same device and inode, and the same first bytes.
    /// A file whose fingerprint covers fewer bytes is compared on its first `pos.fp_len`.
    /// A compressed file is compared on its content only (its inode is not the plain
    /// file's).
    pub fn is(&self, file: &File, pos: &FilePos) -> io::Result<bool> {
        if self.gz {
            if pos.fp_len == 0 {
                return Ok(false);
            }
            let head = compressed::head(file, pos.fp_len as usize)?;
            return Ok(head.len() == pos.fp_len as usize && crc32fast::hash(&head) == pos.fp);
        }
        if self.dev != pos.dev || self.ino != pos.ino {
            return Ok(false);
        }
        if self.fp_len == pos.fp_len {
            return Ok(self.fp == pos.fp);
        }
        if self.fp_len < pos.fp_len {
            // The file is shorter than the checkpoint's fingerprint: not the same file.
            return Ok(false);
        }
        Ok(fingerprint(file, pos.fp_len)? == (pos.fp, pos.fp_len))
    }
}

/// CRC-32 of the first `len` bytes (fewer if the file is shorter), and how many it covers.
fn fingerprint(file: &File, len: u32) -> io::Result<(u32, u32)> {
    let mut buf = vec![0u8; len as usize];
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((crc32fast::hash(&buf[..got]), got as u32))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn identity_follows_the_file_not_the_name_and_detects_inode_reuse() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.log");
        std::fs::write(&a, b"first line\n").unwrap();
        let f = File::open(&a).unwrap();
        let id = Identity::of(&f).unwrap();
        assert_eq!(id.fp_len, 11);
        assert!(id.short());
        let pos = id.at(11);
        // Renamed and grown: still the same file.
        let b = dir.path().join("a.log.1");
        std::fs::rename(&a, &b).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&b)
            .unwrap()
            .write_all(&[b'x'; 400])
            .unwrap();
        let f2 = File::open(&b).unwrap();
        let id2 = Identity::of(&f2).unwrap();
        assert_eq!(id2.fp_len, FINGERPRINT_BYTES);
        assert!(id2.is(&f2, &pos).unwrap());
        // Same inode, other first bytes (what a reused inode looks like).
        let mut other = pos;
        other.fp ^= 1;
        assert!(!id2.is(&f2, &other).unwrap());
        other = pos;
        other.ino += 1;
        assert!(!id2.is(&f2, &other).unwrap());
        // Rewritten in place from byte 0: the fingerprint no longer matches.
        std::fs::write(&b, b"other line\n").unwrap();
        let f3 = File::open(&b).unwrap();
        let id3 = Identity::of(&f3).unwrap();
        assert!(!id3.is(&f3, &pos).unwrap());
    }
}
