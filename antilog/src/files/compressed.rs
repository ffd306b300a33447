//! Reading a gzip-compressed rotated log file (the kubelet compresses older rotations):
//! the decompressed content is addressed by offset like a plain file's, so positions and
//! checkpoints work the same; the decoder only moves forward (a rotated file never
//! changes).

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;

use flate2::read::MultiGzDecoder;

/// Reads a file through `pread` from its own offset, so a duplicate descriptor shares
/// nothing with the original.
#[derive(Debug)]
struct At {
    file: File,
    pos: u64,
}

impl Read for At {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

fn decoder(file: &File) -> io::Result<MultiGzDecoder<io::BufReader<At>>> {
    let at = At {
        file: file.try_clone()?,
        pos: 0,
    };
    Ok(MultiGzDecoder::new(io::BufReader::with_capacity(
        64 * 1024,
        at,
    )))
}

/// The decompressed content of a `.gz` file, read forward.
#[derive(Debug)]
pub struct GzReader {
    dec: MultiGzDecoder<io::BufReader<At>>,
    /// Decompressed bytes consumed so far.
    at: u64,
}

impl GzReader {
    pub fn new(file: &File) -> io::Result<GzReader> {
        Ok(GzReader {
            dec: decoder(file)?,
            at: 0,
        })
    }

    /// Reads decompressed bytes at `offset`, which must not lie behind what was read
    /// (bytes up to it are decompressed and skipped). 0 at the end of the content.
    pub fn read_at(&mut self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if offset < self.at {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a compressed log is read forward only",
            ));
        }
        while self.at < offset {
            let want = (offset - self.at).min(buf.len() as u64) as usize;
            let n = self.dec.read(&mut buf[..want])?;
            if n == 0 {
                return Ok(0);
            }
            self.at += n as u64;
        }
        let n = self.dec.read(buf)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// The first `len` decompressed bytes (fewer if the content is shorter).
pub fn head(file: &File, len: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(len);
    decoder(file)?.take(len as u64).read_to_end(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reads_decompressed_bytes_by_offset_forward() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log.20261127-111025.gz");
        let content: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let mut enc = flate2::write::GzEncoder::new(
            File::create(&path).unwrap(),
            flate2::Compression::default(),
        );
        enc.write_all(&content).unwrap();
        enc.finish().unwrap();
        let f = File::open(&path).unwrap();
        assert_eq!(head(&f, 256).unwrap(), &content[..256]);
        let mut r = GzReader::new(&f).unwrap();
        let mut buf = vec![0u8; 4096];
        // Skips to an offset, then reads on from there to the end.
        let mut got = Vec::new();
        let mut at = 100_000u64;
        loop {
            let n = r.read_at(&mut buf, at).unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            at += n as u64;
        }
        assert!(got == content[100_000..], "decompressed content differs");
        assert_eq!(
            r.read_at(&mut buf, 5).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }
}
