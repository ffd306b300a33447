//! [`SpoolWriter`]'s methods: appending frames, syncing, rotating segments.

use std::os::unix::fs::FileExt;
use std::sync::Arc;

use super::segment::{self, HEADER_LEN};
use super::{create_segment, io_err, Seg, Shared, SpoolWriter, ROTATE_WHEN_DRAINED};
use crate::error::Error;

impl SpoolWriter {
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Appends one frame (not yet durable: see [`SpoolWriter::sync`]). Does not check the
    /// limit; callers wait for [`Shared::has_room`] first.
    pub fn append(&mut self, frame: &[u8]) -> Result<(), Error> {
        let rotate_at = {
            let acc = self.shared.lock();
            if acc.drained() {
                ROTATE_WHEN_DRAINED.min(self.shared.limits.segment_bytes)
            } else {
                self.shared.limits.segment_bytes
            }
        };
        if self.len > HEADER_LEN && self.len >= rotate_at {
            self.rotate()?;
        }
        let path = || self.shared.dir.join(segment::segment_name(self.id));
        if self.dirty_tail {
            self.file
                .set_len(self.len)
                .map_err(|e| io_err(format!("cannot truncate {}", path().display()), e))?;
            self.dirty_tail = false;
        }
        if let Err(e) = self.file.write_all_at(frame, self.len) {
            self.dirty_tail = true;
            return Err(io_err(format!("cannot write {}", path().display()), e));
        }
        self.len += frame.len() as u64;
        let mut acc = self.shared.lock();
        if let Some(s) = acc.segments.get_mut(&self.id) {
            s.written = self.len;
        }
        acc.bytes += frame.len() as u64;
        self.shared.publish(&acc);
        Ok(())
    }

    /// Bytes appended since the last sync.
    pub fn unsynced(&self) -> u64 {
        self.len - self.synced
    }

    /// Makes everything appended durable and visible to the reader.
    pub fn sync(&mut self) -> Result<(), Error> {
        if self.synced == self.len {
            return Ok(());
        }
        self.file.sync_data().map_err(|e| {
            io_err(
                format!(
                    "cannot fsync {}",
                    self.shared
                        .dir
                        .join(segment::segment_name(self.id))
                        .display()
                ),
                e,
            )
        })?;
        self.synced = self.len;
        if let Some(s) = self.shared.lock().segments.get_mut(&self.id) {
            s.durable = self.len;
        }
        self.shared.data.notify_one();
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), Error> {
        self.sync()?;
        let id = self.id + 1;
        let file = create_segment(&self.shared.dir, id)?;
        self.file = file;
        self.id = id;
        self.len = HEADER_LEN;
        self.synced = HEADER_LEN;
        let mut acc = self.shared.lock();
        acc.segments.insert(
            id,
            Seg {
                written: HEADER_LEN,
                durable: HEADER_LEN,
            },
        );
        acc.bytes += HEADER_LEN;
        self.shared.publish(&acc);
        drop(acc);
        // The previous segment is complete: the reader can finish (and delete) it.
        self.shared.data.notify_one();
        Ok(())
    }
}

impl Drop for SpoolWriter {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.data.notify_one();
    }
}
