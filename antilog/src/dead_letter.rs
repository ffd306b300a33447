//! The dead-letter file: what logarithmd refused for good (400, 413, its non-transient 500),
//! once the shipper has split the batch down to the refused parts (see
//! [`crate::pipeline::split`]). One JSON object per line, appended and fsynced before the
//! batch counts as settled:
//!
//! ```text
//! {"time":"2026-12-01T15:04:05.123Z","status":413,"reason":"HTTP 413 ...",
//!  "agent":{"id":..,"node":..},"segment":{"container_id":..,"records":[..]}}
//! ```
//!
//! `segment` is the refused part exactly as it was sent (a protocol `ContainerSegment`
//! with one record, or only a meta or an exit), so it can be inspected and replayed by
//! hand. The file is bounded by `dead_letter_max_bytes`: past it, refused parts are only
//! counted and logged. Every part, written or not, counts in
//! `antilog_dead_letter_entries_total` (alert `LogarithmAgentDeadLetters`).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use protocol::{Agent, ContainerSegment};
use serde::Serialize;

use crate::metrics::Metrics;

pub const FILE_NAME: &str = "dead-letter.jsonl";

#[derive(Debug, Serialize)]
struct Entry<'a> {
    time: String,
    status: u16,
    reason: &'a str,
    agent: &'a Agent,
    segment: &'a ContainerSegment,
}

/// Appends refused parts to the dead-letter file.
#[derive(Debug)]
pub struct DeadLetter {
    path: PathBuf,
    max_bytes: u64,
    /// Serialises appends (parts refused by concurrent deliveries).
    lock: Mutex<()>,
    metrics: Arc<Metrics>,
}

impl DeadLetter {
    pub fn new(path: &Path, max_bytes: u64, metrics: Arc<Metrics>) -> DeadLetter {
        DeadLetter {
            path: path.to_path_buf(),
            max_bytes,
            lock: Mutex::new(()),
            metrics,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records the refused `segment` (blocking I/O: call it off the async threads).
    /// Counted whatever happens; written unless the file is full or cannot be written
    /// (both logged at error level).
    pub fn write(&self, agent: &Agent, segment: &ContainerSegment, status: u16, reason: &str) {
        self.metrics.dead_letter_entries.inc();
        self.metrics
            .dead_letter_records
            .inc_by(segment.records.len() as u64);
        let seqs: Vec<u64> = segment.records.iter().map(|r| r.seq).collect();
        let time = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let entry = Entry {
            time,
            status,
            reason,
            agent,
            segment,
        };
        let mut line = match serde_json::to_vec(&entry) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot serialise a dead-letter entry");
                return;
            }
        };
        line.push(b'\n');
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let res = (|| -> std::io::Result<bool> {
            let mut f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            if f.metadata()?.len() + line.len() as u64 > self.max_bytes {
                return Ok(false);
            }
            f.write_all(&line)?;
            f.sync_data()?;
            Ok(true)
        })();
        let file = self.path.display();
        let container_id = crate::docker::short_id(&segment.container_id);
        match res {
            Ok(true) => tracing::error!(
                %container_id, ?seqs, status, %reason, %file,
                "logarithmd refused this part of a batch for good: written to the dead-letter file; \
                 the rest of the batch was delivered"
            ),
            Ok(false) => tracing::error!(
                %container_id, ?seqs, status, %reason, %file,
                "logarithmd refused this part of a batch for good; the dead-letter file is full \
                 (dead_letter_max_bytes), so it is only counted"
            ),
            Err(e) => tracing::error!(
                %container_id, ?seqs, status, %reason, %file, error = %e,
                "logarithmd refused this part of a batch for good; it cannot be written to the \
                 dead-letter file"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{Record, Stream};

    #[test]
    fn entries_are_appended_as_json_lines_up_to_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        let metrics = Arc::new(Metrics::new());
        let agent = Agent {
            id: "a".into(),
            node: "n".into(),
        };
        let seg = ContainerSegment {
            container_id: "c1".into(),
            meta: None,
            records: vec![Record::new(7, 9, Stream::Stdout, b"bad".to_vec(), false)],
            exit: None,
            logs_unavailable: None,
        };
        let dl = DeadLetter::new(&path, 600, metrics.clone());
        dl.write(&agent, &seg, 413, "HTTP 413: too large");
        let text = std::fs::read_to_string(&path).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(v["status"], 413);
        assert_eq!(v["reason"], "HTTP 413: too large");
        assert_eq!(v["segment"]["container_id"], "c1");
        assert_eq!(v["segment"]["records"][0]["seq"], 7);
        assert_eq!(v["segment"]["records"][0]["text"], "bad");
        // The next ones do not fit in 600 bytes: counted, not written.
        for _ in 0..3 {
            dl.write(&agent, &seg, 400, "HTTP 400: bad");
        }
        let after = std::fs::read_to_string(&path).unwrap();
        assert!(after.starts_with(&text));
        assert!(after.len() <= 600, "{} bytes", after.len());
        assert!(
            after.len() + text.len() > 600,
            "room was left: {} bytes",
            after.len()
        );
        assert_eq!(metrics.dead_letter_entries.get(), 4);
        assert_eq!(metrics.dead_letter_records.get(), 4);
    }
}
