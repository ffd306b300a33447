//! Opening the spool after a start or a crash: what was delivered is deleted, damaged
//! segments are set aside, a torn last frame is cut off ([`open`]); and what the spool
//! still holds is read once for its checkpoint effects
//! ([`SpoolReader::undelivered_effects`]), because everything in it will be delivered.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tracing::{debug, error, info, warn};

use super::segment::{self, Cursor, Effects, ReadOutcome, HEADER_LEN};
use super::{
    create_segment, gauge, io_err, Accounting, Limits, Seg, Shared, SpoolReader, SpoolWriter,
};
use crate::error::Error;
use crate::metrics::Metrics;

/// Opens (creating it if needed) the spool in `dir`: deletes segments acknowledged before
/// a crash, sets aside segments without a valid header, truncates a torn last frame, and
/// starts a new segment for this session. The reader starts at the saved ack position.
pub fn open(
    dir: &Path,
    limits: Limits,
    metrics: Arc<Metrics>,
) -> Result<(SpoolWriter, SpoolReader), Error> {
    std::fs::create_dir_all(dir)
        .map_err(|e| io_err(format!("cannot create spool_dir {}", dir.display()), e))?;
    let entries = std::fs::read_dir(dir)
        .map_err(|e| io_err(format!("cannot list spool_dir {}", dir.display()), e))?;
    let mut ids = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_err(format!("cannot list {}", dir.display()), e))?;
        if let Some(id) = entry
            .file_name()
            .to_str()
            .and_then(segment::parse_segment_name)
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    let ack = match segment::read_ack(dir) {
        Ok(a) => a,
        Err(why) => {
            warn!(
                file = %dir.join(segment::ACK_FILE).display(),
                %why,
                "spool ack file unreadable: delivering the spool from its oldest segment \
                 (logarithmd drops what it already has)"
            );
            None
        }
    };
    let mut segments = BTreeMap::new();
    let mut damaged = false;
    let newest = ids.last().copied();
    for id in ids {
        let path = dir.join(segment::segment_name(id));
        if ack.is_some_and(|a| id < a.segment) {
            // Delivered; the crash came between writing the ack file and deleting this.
            std::fs::remove_file(&path)
                .map_err(|e| io_err(format!("cannot delete {}", path.display()), e))?;
            debug!(file = %path.display(), "deleted a delivered spool segment");
            continue;
        }
        let file = File::options()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| io_err(format!("cannot open {}", path.display()), e))?;
        let len = file
            .metadata()
            .map_err(|e| io_err(format!("cannot stat {}", path.display()), e))?
            .len();
        if !segment::has_magic(&file, len)
            .map_err(|e| io_err(format!("cannot read {}", path.display()), e))?
        {
            set_aside(&path, "no valid segment header");
            damaged = true;
            continue;
        }
        let mut len = len;
        if Some(id) == newest {
            len = truncate_torn_tail(&path, &file, len)?;
        }
        segments.insert(
            id,
            Seg {
                written: len,
                durable: len,
            },
        );
    }
    // After every id seen, set-aside ones included, so no name is ever reused.
    let new_id = newest.max(ack.map(|a| a.segment)).unwrap_or(0) + 1;
    let start = match ack {
        Some(a) => match segments.get(&a.segment) {
            Some(s) => Cursor {
                segment: a.segment,
                offset: a.offset.clamp(HEADER_LEN, s.written),
            },
            // Its segment is gone: the reader moves on to the next one there is.
            None => Cursor {
                segment: a.segment,
                offset: HEADER_LEN,
            },
        },
        None => Cursor {
            segment: segments.keys().next().copied().unwrap_or(new_id),
            offset: HEADER_LEN,
        },
    };
    let file = create_segment(dir, new_id)?;
    segments.insert(
        new_id,
        Seg {
            written: HEADER_LEN,
            durable: HEADER_LEN,
        },
    );
    let bytes = segments.values().map(|s| s.written).sum();
    let pending = segments.len() - 1;
    let shared = Arc::new(Shared {
        dir: dir.to_path_buf(),
        limits,
        state: Mutex::new(Accounting {
            segments,
            bytes,
            ack: start,
            closed: false,
        }),
        data: Notify::new(),
        room: Notify::new(),
        full: AtomicBool::new(false),
        damaged: AtomicBool::new(false),
        session: new_id,
        metrics,
    });
    if damaged {
        shared.mark_damaged();
    }
    shared
        .metrics
        .spool_limit_bytes
        .set(gauge(limits.max_bytes));
    shared.publish(&shared.lock());
    info!(
        dir = %dir.display(),
        bytes,
        segments_to_deliver = pending,
        max_bytes = limits.max_bytes,
        "spool opened"
    );
    let writer = SpoolWriter {
        shared: shared.clone(),
        file,
        id: new_id,
        len: HEADER_LEN,
        synced: HEADER_LEN,
        dirty_tail: false,
    };
    let reader = SpoolReader {
        shared,
        at: start,
        file: None,
        pending: VecDeque::new(),
        acked: start,
    };
    Ok((writer, reader))
}

/// Renames an unusable segment to `*.corrupt` (kept for inspection, no longer counted).
fn set_aside(path: &Path, why: &str) {
    let mut to = path.as_os_str().to_owned();
    to.push(segment::CORRUPT_SUFFIX);
    match std::fs::rename(path, &to) {
        Ok(()) => error!(
            file = %path.display(),
            %why,
            "corrupt spool segment {}: skipped, kept as {}",
            path.display(),
            PathBuf::from(&to).display()
        ),
        Err(e) => error!(
            file = %path.display(),
            %why,
            error = %e,
            "corrupt spool segment {}: skipped (cannot rename it)",
            path.display()
        ),
    }
}

/// Truncates the newest segment after its last intact frame if its end is a write cut
/// short by a crash; returns its length.
fn truncate_torn_tail(path: &Path, file: &File, len: u64) -> Result<u64, Error> {
    let read_err = |e| io_err(format!("cannot read {}", path.display()), e);
    let scan = segment::scan(file, len).map_err(read_err)?;
    if !segment::is_torn_tail(file, &scan, len).map_err(read_err)? {
        // Damage in the middle is reported when the reader gets there.
        return Ok(len);
    }
    warn!(
        file = %path.display(),
        from = len,
        to = scan.valid_end,
        "torn last frame in spool segment (the agent stopped while writing it): truncated"
    );
    file.set_len(scan.valid_end)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_err(format!("cannot truncate {}", path.display()), e))?;
    Ok(scan.valid_end)
}

impl SpoolReader {
    /// The checkpoint effects of every intact frame from the acknowledged position on, in
    /// spool order: what the checkpoint will say once the spool is delivered. A restart
    /// resumes reading containers from there, not from the (older) acknowledged
    /// checkpoint: lines the spool holds are sent from the spool, and reading them again
    /// from a log whose files rotated meanwhile would number other lines with their seqs.
    /// Reading stops at the first damaged frame (the reader skips from there, and the
    /// checkpoint stays before lost lines).
    pub fn undelivered_effects(&self) -> Result<Effects, Error> {
        if self.shared.damaged.load(Ordering::Acquire) {
            // Set-aside segments: acknowledged frames will not move checkpoints either.
            return Ok(Effects::new());
        }
        let segments: Vec<(u64, Seg)> = {
            let acc = self.shared.lock();
            acc.segments
                .range(self.acked.segment..)
                .map(|(&id, s)| (id, *s))
                .collect()
        };
        let mut out = Effects::new();
        for (id, seg) in segments {
            let path = self.shared.dir.join(segment::segment_name(id));
            let file = File::open(&path)
                .map_err(|e| io_err(format!("cannot open {}", path.display()), e))?;
            let mut at = if id == self.acked.segment {
                self.acked.offset
            } else {
                HEADER_LEN
            };
            loop {
                let read = segment::read_frame(&file, at, seg.durable)
                    .map_err(|e| io_err(format!("cannot read {}", path.display()), e))?;
                match read {
                    ReadOutcome::Frame(frame, next) => {
                        out.extend(frame.effects);
                        at = next;
                    }
                    ReadOutcome::End => break,
                    ReadOutcome::Bad(_) => return Ok(out),
                }
            }
        }
        Ok(out)
    }
}
