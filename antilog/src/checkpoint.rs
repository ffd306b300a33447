//! Progress per container, persisted so a restarted agent resumes where logarithmd's
//! acknowledgements left off.
//!
//! The state only ever moves once logarithmd has acknowledged (committed) a batch: each
//! spooled frame carries its batch's effects (see [`crate::spool`]) and the shipper applies
//! them, in spool order, right after the frame's 2xx answer. So the checkpoint never covers
//! lines that are not acknowledged; a restart reads again from Docker whatever came after
//! (and the spool resends what it holds), which logarithmd deduplicates by
//! `(container_id, seq)`. It lives in memory and is written to `{data_dir}/checkpoints.json`
//! at most every [`WRITE_INTERVAL`] and at shutdown, atomically: temp file, fsync, rename,
//! fsync of the directory. Losing the last interval only means reading and sending again
//! lines the server deduplicates.

use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, ErrorKind};

pub const FILE_NAME: &str = "checkpoints.json";
pub const WRITE_INTERVAL: Duration = Duration::from_millis(200);
const FORMAT_VERSION: u32 = 1;

/// A position in a container's log at a line boundary where nothing was half-read: every
/// line up to `seq` is complete, `ts` is the largest line timestamp so far and `at_ts` how
/// many of those lines carry exactly `ts`. Resuming = asking Docker for lines `since`
/// `floor(ts)` seconds and skipping lines older than `ts` and the first `at_ts` at `ts`.
/// A file source also records where in which file the position lies (`file`), and resumes
/// there exactly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Last `seq` of the last complete line (0: nothing yet).
    pub seq: u64,
    /// Largest line timestamp (ns since the epoch).
    pub ts: i64,
    /// Lines seen with exactly `ts` (0: no line yet).
    pub at_ts: u32,
    /// The file and byte offset right after that line, when read from a log file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FilePos>,
}

/// A byte offset in one log file, the file known by identity rather than by name (see
/// [`crate::files::identity`]): rotation renames files, and an inode number can be reused
/// by a new file, which the fingerprint of its first bytes tells apart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePos {
    pub dev: u64,
    pub ino: u64,
    /// CRC-32 of the first `fp_len` bytes of the file.
    pub fp: u32,
    pub fp_len: u32,
    /// Bytes of the file consumed (a line boundary).
    pub offset: u64,
}

impl Position {
    /// Accounts for a complete line whose last record has `seq`.
    pub fn line_done(&mut self, seq: u64, ts: i64) {
        self.seq = seq;
        if self.at_ts == 0 || ts > self.ts {
            self.ts = ts;
            self.at_ts = 1;
        } else if ts == self.ts {
            self.at_ts = self.at_ts.saturating_add(1);
        }
    }

    /// The `since` (whole seconds) to ask Docker for when resuming here.
    pub fn since_secs(&self) -> i64 {
        if self.at_ts == 0 {
            0
        } else {
            self.ts.div_euclid(1_000_000_000)
        }
    }
}

/// The acknowledged end of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitMark {
    pub restart_count: u32,
    pub finished_at: i64,
}

/// What is acknowledged for one container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    #[serde(flatten)]
    pub pos: Position,
    /// Set when the exit of the latest run was acknowledged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitMark>,
    /// Restart count of the latest run whose metadata was acknowledged: what an exit needs
    /// when the container is found gone after a restart of antilog
    /// ([`crate::gone`]). 0 in files written before it was kept.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub restart_count: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What an acknowledged item does to the checkpoint (stored in spool frames as JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Lines up to this position are delivered.
    Cut(Position),
    /// A (new) run began: its exit is not delivered yet. Written by versions before
    /// [`Effect::Run`] (still read from their spool frames): the restart count is unknown,
    /// the entry's is kept.
    Meta,
    /// Run `restart_count` began: its exit is not delivered yet.
    Run(u32),
    /// The run's exit is delivered.
    Exit(ExitMark),
    /// The container is gone: drop its entry.
    Forget,
}

#[derive(Debug, Serialize, Deserialize)]
struct FileFormat {
    version: u32,
    containers: BTreeMap<String, Entry>,
}

#[derive(Debug, Default)]
struct State {
    entries: BTreeMap<String, Entry>,
    dirty: bool,
    /// Changed since the last write of either kind (see [`CheckpointStore::write_before_ack`]).
    unwritten: bool,
    /// The containers that existed at start (see [`CheckpointStore::retain_existing`]).
    existing_at_start: Option<HashSet<String>>,
}

#[derive(Debug)]
pub struct CheckpointStore {
    dir: PathBuf,
    state: Mutex<State>,
    /// Held while the file is written: one write at a time, in the order of their
    /// snapshots.
    io: Mutex<()>,
}

impl CheckpointStore {
    /// Creates `dir` if needed and loads the checkpoint file if there is one.
    pub fn open(dir: &Path) -> Result<CheckpointStore, Error> {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::with_source(
                ErrorKind::Checkpoint,
                format!("cannot create data_dir {}", dir.display()),
                e,
            )
        })?;
        let path = dir.join(FILE_NAME);
        let entries = match std::fs::read(&path) {
            Ok(bytes) => {
                let f: FileFormat = serde_json::from_slice(&bytes).map_err(|e| {
                    Error::with_source(
                        ErrorKind::Checkpoint,
                        format!("{} is corrupt (delete it to start over)", path.display()),
                        e,
                    )
                })?;
                if f.version != FORMAT_VERSION {
                    return Err(Error::new(
                        ErrorKind::Checkpoint,
                        format!("{} has unknown version {}", path.display(), f.version),
                    ));
                }
                f.containers
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                return Err(Error::with_source(
                    ErrorKind::Checkpoint,
                    format!("cannot read {}", path.display()),
                    e,
                ))
            }
        };
        Ok(CheckpointStore {
            dir: dir.to_path_buf(),
            io: Mutex::new(()),
            state: Mutex::new(State {
                entries,
                dirty: false,
                unwritten: false,
                existing_at_start: None,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the map half-updated in a way that
        // matters (each update is one insert/remove), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn snapshot(&self) -> BTreeMap<String, Entry> {
        self.lock().entries.clone()
    }

    /// Applies the effects of a batch logarithmd acknowledged, in order.
    pub fn apply<'a>(&self, effects: impl IntoIterator<Item = (&'a str, &'a Effect)>) {
        self.apply_inner(effects, false);
    }

    /// Like [`CheckpointStore::apply`], for a batch spooled before this start: effects on
    /// containers that were already gone at start (see
    /// [`CheckpointStore::retain_existing`]) are ignored, so their entries do not come back.
    pub fn apply_replayed<'a>(&self, effects: impl IntoIterator<Item = (&'a str, &'a Effect)>) {
        self.apply_inner(effects, true);
    }

    fn apply_inner<'a>(
        &self,
        effects: impl IntoIterator<Item = (&'a str, &'a Effect)>,
        replayed: bool,
    ) {
        let mut st = self.lock();
        for (id, effect) in effects {
            if replayed
                && st
                    .existing_at_start
                    .as_ref()
                    .is_some_and(|ids| !ids.contains(id))
            {
                continue;
            }
            apply_effect(&mut st.entries, id, effect);
            st.dirty = true;
            st.unwritten = true;
        }
    }

    /// The entries as they will be once `spooled` (the effects of frames the spool still
    /// holds, in order) are acknowledged: where a restart resumes reading.
    pub fn resume_snapshot<'a>(
        &self,
        spooled: impl IntoIterator<Item = (&'a str, &'a Effect)>,
    ) -> BTreeMap<String, Entry> {
        let mut entries = self.snapshot();
        for (id, effect) in spooled {
            apply_effect(&mut entries, id, effect);
        }
        entries
    }

    /// Keeps only the entries of `existing` (the containers listed at start, and those
    /// gone whose jobs are being closed, see [`crate::gone`]: their entries go with the
    /// acknowledgement of the closing), and from now on ignores effects on other containers
    /// in batches spooled before this start (their containers are gone; Docker never
    /// reuses an id).
    pub fn retain_existing(&self, existing: &HashSet<String>) {
        let mut st = self.lock();
        let before = st.entries.len();
        st.entries.retain(|id, _| existing.contains(id));
        if st.entries.len() != before {
            st.dirty = true;
            st.unwritten = true;
        }
        st.existing_at_start = Some(existing.clone());
    }

    /// Writes the file, with fsyncs, if anything changed since the last such write.
    pub fn persist_if_dirty(&self) -> Result<(), Error> {
        let _io = self.io.lock().unwrap_or_else(|p| p.into_inner());
        let Some(bytes) = self.serialize(|st| std::mem::take(&mut st.dirty))? else {
            return Ok(());
        };
        let res = write_atomically(&self.dir, FILE_NAME, &bytes, true);
        if res.is_err() {
            self.lock().dirty = true; // try again next time
        }
        res
    }

    /// Writes the file, without fsyncs, if anything changed since the last write: called
    /// right before the spool records frames as delivered (its ack file is not fsynced
    /// either), so an agent killed in between never finds the spool past frames whose
    /// effects the checkpoint lacks. The periodic [`run_writer`] makes it durable.
    pub fn write_before_ack(&self) -> Result<(), Error> {
        let _io = self.io.lock().unwrap_or_else(|p| p.into_inner());
        let Some(bytes) = self.serialize(|st| std::mem::take(&mut st.unwritten))? else {
            return Ok(());
        };
        let res = write_atomically(&self.dir, FILE_NAME, &bytes, false);
        if res.is_err() {
            self.lock().unwritten = true;
        }
        res
    }

    /// The file's bytes, if `take` says a write is due (and clears its flag).
    fn serialize(&self, take: impl FnOnce(&mut State) -> bool) -> Result<Option<Vec<u8>>, Error> {
        let mut st = self.lock();
        if !take(&mut st) {
            return Ok(None);
        }
        st.unwritten = false;
        let f = FileFormat {
            version: FORMAT_VERSION,
            containers: st.entries.clone(),
        };
        drop(st);
        serde_json::to_vec(&f).map(Some).map_err(|e| {
            Error::with_source(ErrorKind::Checkpoint, "cannot serialize checkpoints", e)
        })
    }
}

fn apply_effect(entries: &mut BTreeMap<String, Entry>, id: &str, effect: &Effect) {
    match effect {
        Effect::Forget => {
            entries.remove(id);
        }
        Effect::Cut(pos) => {
            let e = entries.entry(id.to_string()).or_default();
            // Never move backwards (a resend of older data after a reconnect).
            if pos.seq >= e.pos.seq {
                e.pos = *pos;
            }
        }
        Effect::Meta => {
            entries.entry(id.to_string()).or_default().exit = None;
        }
        Effect::Run(restart_count) => {
            let e = entries.entry(id.to_string()).or_default();
            e.exit = None;
            e.restart_count = *restart_count;
        }
        Effect::Exit(mark) => {
            let e = entries.entry(id.to_string()).or_default();
            e.exit = Some(*mark);
            e.restart_count = mark.restart_count;
        }
    }
}

fn write_atomically(dir: &Path, name: &str, bytes: &[u8], sync: bool) -> Result<(), Error> {
    let err = |what: &str, e: std::io::Error| {
        Error::with_source(
            ErrorKind::Checkpoint,
            format!("cannot {what} in {}", dir.display()),
            e,
        )
    };
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(|e| err("create temp file", e))?;
    f.write_all(bytes).map_err(|e| err("write temp file", e))?;
    if sync {
        f.sync_all().map_err(|e| err("fsync temp file", e))?;
    }
    drop(f);
    std::fs::rename(&tmp, dir.join(name)).map_err(|e| err("rename temp file", e))?;
    if !sync {
        return Ok(());
    }
    // The rename is durable only once the directory entry is.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| err("fsync directory", e))
}

/// Persists every [`WRITE_INTERVAL`] while something changed, until `stop`.
pub async fn run_writer(store: Arc<CheckpointStore>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(WRITE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let s = store.clone();
        match tokio::task::spawn_blocking(move || s.persist_if_dirty()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "checkpoint write failed; will retry"),
            Err(e) => tracing::warn!(error = %e, "checkpoint writer task failed"),
        }
    }
}

#[cfg(test)]
mod tests;
