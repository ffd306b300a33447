//! Pod log files written exactly as containerd and the kubelet write them: CRI records
//! (`<RFC 3339 nano> <stream> <P|F> <bytes>`), lines cut into 16 KiB `P` records, the
//! kubelet's rotation (rename, gzip of the older rotation), one chain per restart.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Result;
use k8s_openapi::jiff::Timestamp;

/// containerd's partial size.
pub const PARTIAL: usize = 16 * 1024;

/// One line as written: its bytes, stream and time (its first record's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub text: String,
    pub stream: &'static str,
    pub ts: i64,
}

/// The container's log directory, written as the runtime and the kubelet write it.
pub struct PodLog {
    dir: PathBuf,
    file: File,
    restart: u32,
    /// The time of the last record written (ns).
    pub ts: i64,
    /// Every line written so far, in order.
    pub written: Vec<Line>,
}

fn stamp(ns: i64) -> Result<String> {
    let t = Timestamp::from_nanosecond(i128::from(ns))?;
    Ok(format!("{t:.9}"))
}

impl PodLog {
    pub fn open(dir: &Path, restart: u32, ts: i64, written: Vec<Line>) -> Result<PodLog> {
        std::fs::create_dir_all(dir)?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(format!("{restart}.log")))?;
        Ok(PodLog {
            dir: dir.to_path_buf(),
            file,
            restart,
            ts,
            written,
        })
    }

    /// Writes one line, in `P` records of [`PARTIAL`] bytes and a last `F`.
    pub fn line(&mut self, text: String, stream: &'static str) -> Result<()> {
        // Distinct times, never with a trailing zero digit (RFC 3339 nano trims them).
        self.ts += 1_000_003;
        let first_ts = self.ts;
        let bytes = text.as_bytes();
        let mut records = Vec::new();
        let mut chunks = bytes.chunks(PARTIAL).peekable();
        if bytes.is_empty() {
            records.extend_from_slice(format!("{} {stream} F \n", stamp(self.ts)?).as_bytes());
        }
        while let Some(c) = chunks.next() {
            let tag = if chunks.peek().is_some() { "P" } else { "F" };
            records.extend_from_slice(format!("{} {stream} {tag} ", stamp(self.ts)?).as_bytes());
            records.extend_from_slice(c);
            records.push(b'\n');
            self.ts += 1_000_003;
        }
        self.file.write_all(&records)?;
        self.written.push(Line {
            text,
            stream,
            ts: first_ts,
        });
        Ok(())
    }

    /// Writes `texts` on stdout, one `F` record each, through a buffer and without keeping
    /// them in [`PodLog::written`] (the bench's 1,000,000 lines at rest).
    pub fn at_rest(&mut self, texts: impl Iterator<Item = String>) -> Result<()> {
        let mut out = BufWriter::with_capacity(1 << 20, &self.file);
        for text in texts {
            self.ts += 1_000_003;
            writeln!(out, "{} stdout F {text}", stamp(self.ts)?)?;
        }
        out.flush()?;
        Ok(())
    }

    /// Lines `from..to`: every 25th a long one cut inside a two-byte character, every 7th on
    /// stderr.
    pub fn lines(&mut self, from: u32, to: u32) -> Result<()> {
        for i in from..to {
            let stream = if i % 7 == 3 { "stderr" } else { "stdout" };
            let text = if i % 25 == 0 {
                // 'é' is 2 bytes; after the prefix its bytes straddle the 16 KiB cut.
                let prefix = format!("long {i} ");
                let pad = "x".repeat(PARTIAL - 1 - prefix.len());
                format!("{prefix}{pad}é{}", "y".repeat(PARTIAL + 100))
            } else {
                format!("line {i} of run {}: ünïcode ✓", self.restart)
            };
            self.line(text, stream)?;
        }
        self.file.flush()?;
        Ok(())
    }

    /// The kubelet's rotation: `<n>.log` renamed to `<n>.log.<time>`, a new `<n>.log`;
    /// with `compress`, the previous rotation gzipped to `.gz` (plain file deleted).
    pub fn rotate(&mut self, stamp: &str, compress: Option<&str>) -> Result<()> {
        let name = format!("{}.log", self.restart);
        if let Some(old) = compress {
            let plain = self.dir.join(format!("{name}.{old}"));
            let data = std::fs::read(&plain)?;
            let tmp = self.dir.join(format!("{name}.{old}.tmp"));
            let mut gz = flate2::write::GzEncoder::new(File::create(&tmp)?, Default::default());
            gz.write_all(&data)?;
            gz.finish()?.sync_all()?;
            std::fs::rename(&tmp, self.dir.join(format!("{name}.{old}.gz")))?;
            std::fs::remove_file(&plain)?;
        }
        std::fs::rename(
            self.dir.join(&name),
            self.dir.join(format!("{name}.{stamp}")),
        )?;
        self.file = File::create(self.dir.join(&name))?;
        Ok(())
    }
}
