//! Watching the pod log root with inotify, so discovery sees a Pod's directory, its
//! container directories and their log files as they are created, not at the next scan:
//! a short-lived Pod's directory can appear and disappear between two scans.
//!
//! The watches ask for creations and renames into a directory only (`IN_CREATE`,
//! `IN_MOVED_TO`), never for writes (the `notify` crate's fixed mask would add an event
//! per log write), on three levels: the root (new Pod directories), each Pod directory
//! (new container directories) and each container directory (new log files: a first
//! run, a restart, a rotation). A watch goes away with its directory (`IN_IGNORED`).
//! At most [`MAX_WATCHES`] are held; past that, or when the kernel's
//! `fs.inotify.max_user_watches` is reached, or its queue overflows, the periodic scan
//! still finds everything (only later).

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use inotify::{EventMask, EventStream, Inotify, WatchMask, Watches};
use tracing::{debug, warn};

/// Most directories watched at once (the root, its Pod directories, their containers').
pub const MAX_WATCHES: usize = 16_384;
/// Bytes of the buffer inotify events are read into.
const EVENT_BUFFER: usize = 16 * 1024;

/// What a watched directory is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Watched {
    Root,
    /// A Pod directory, by its name under the root.
    Pod(OsString),
    /// A container directory (its follower looks at its files).
    Container,
}

/// What changed under the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Something was created in the root or in this Pod directory (by its name): look at
    /// that Pod directory now.
    Pod(OsString),
    /// A file was created in a container directory.
    Files,
    /// Events were lost (the kernel's queue overflowed): scan everything.
    Rescan,
}

/// The inotify watches of one pod log root.
pub struct DirWatch {
    root: PathBuf,
    events: EventStream<Vec<u8>>,
    watches: Watches,
    by_wd: HashMap<i32, Watched>,
    /// Directories watched, by path (so one is not added twice).
    paths: HashMap<PathBuf, i32>,
    warned: bool,
}

impl std::fmt::Debug for DirWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirWatch")
            .field("root", &self.root)
            .field("watched", &self.by_wd.len())
            .finish()
    }
}

const MASK: WatchMask = WatchMask::CREATE
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::ONLYDIR);

impl DirWatch {
    /// Watches `root` (which must exist). Must run inside the tokio runtime.
    pub fn new(root: &Path) -> io::Result<DirWatch> {
        let inotify = Inotify::init()?;
        let events = inotify.into_event_stream(vec![0u8; EVENT_BUFFER])?;
        let watches = events.watches();
        let mut w = DirWatch {
            root: root.to_path_buf(),
            events,
            watches,
            by_wd: HashMap::new(),
            paths: HashMap::new(),
            warned: false,
        };
        w.add(root.to_path_buf(), Watched::Root)?;
        Ok(w)
    }

    /// Watches the Pod directory `name` under the root (once). False if it cannot be
    /// watched (gone, or no watch left).
    pub fn watch_pod(&mut self, name: &std::ffi::OsStr) -> bool {
        let path = self.root.join(name);
        self.try_add(path, Watched::Pod(name.to_os_string()))
    }

    /// Watches a container directory (once).
    pub fn watch_container(&mut self, dir: &Path) -> bool {
        self.try_add(dir.to_path_buf(), Watched::Container)
    }

    fn try_add(&mut self, path: PathBuf, what: Watched) -> bool {
        if self.paths.contains_key(&path) {
            return true;
        }
        match self.add(path, what) {
            Ok(()) => true,
            // Gone, or not a directory: nothing to watch there.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                false
            }
            Err(e) => {
                if !self.warned {
                    self.warned = true;
                    warn!(error = %e, "cannot watch more log directories with inotify; the periodic scan finds the rest");
                }
                false
            }
        }
    }

    fn add(&mut self, path: PathBuf, what: Watched) -> io::Result<()> {
        if self.by_wd.len() >= MAX_WATCHES {
            return Err(io::Error::other(format!(
                "more than {MAX_WATCHES} directories watched"
            )));
        }
        let wd = self.watches.add(&path, MASK)?.get_watch_descriptor_id();
        // A directory removed and created again under the same path gets a new watch.
        if let Some(old) = self.paths.insert(path, wd) {
            self.by_wd.remove(&old);
        }
        self.by_wd.insert(wd, what);
        Ok(())
    }

    /// The next change; `None` if the inotify descriptor failed (then discovery goes on
    /// with its periodic scan only).
    pub async fn next(&mut self) -> Option<Change> {
        loop {
            let event = match self.events.next().await? {
                Ok(e) => e,
                Err(e) => {
                    warn!(error = %e, "reading inotify events failed; scanning only");
                    return None;
                }
            };
            let wd = event.wd.get_watch_descriptor_id();
            if event.mask.contains(EventMask::Q_OVERFLOW) {
                debug!("inotify queue overflowed; scanning the pod log root");
                return Some(Change::Rescan);
            }
            if event.mask.contains(EventMask::IGNORED) {
                // The directory was removed: its watch is gone.
                if self.by_wd.remove(&wd).is_some() {
                    self.paths.retain(|_, w| *w != wd);
                }
                continue;
            }
            match (self.by_wd.get(&wd), event.name) {
                (Some(Watched::Root), Some(name)) => return Some(Change::Pod(name)),
                (Some(Watched::Pod(pod)), _) => return Some(Change::Pod(pod.clone())),
                (Some(Watched::Container), _) => return Some(Change::Files),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tells_pod_container_and_file_creations_and_forgets_removed_directories() {
        let root = tempfile::tempdir().unwrap();
        let mut w = DirWatch::new(root.path()).unwrap();
        let pod = root.path().join("ns_pod_uid");
        std::fs::create_dir(&pod).unwrap();
        assert_eq!(w.next().await, Some(Change::Pod("ns_pod_uid".into())));
        assert!(w.watch_pod("ns_pod_uid".as_ref()));
        let c = pod.join("main");
        std::fs::create_dir(&c).unwrap();
        assert_eq!(w.next().await, Some(Change::Pod("ns_pod_uid".into())));
        assert!(w.watch_container(&c));
        // Writes are not events; a new file is.
        std::fs::write(c.join("0.log"), b"x").unwrap();
        assert_eq!(w.next().await, Some(Change::Files));
        std::fs::remove_dir_all(&pod).unwrap();
        // The removal drops both watches; the next event is the next creation.
        std::fs::create_dir(root.path().join("ns_other_uid")).unwrap();
        assert_eq!(w.next().await, Some(Change::Pod("ns_other_uid".into())));
        assert_eq!(w.by_wd.len(), 1, "{:?}", w.by_wd);
        assert!(!w.watch_pod("ns_gone_uid".as_ref()));
        // A file where a directory was expected is not watched, and not a failure.
        std::fs::write(root.path().join("ns_file_uid"), b"").unwrap();
        assert!(!w.watch_pod("ns_file_uid".as_ref()));
        assert!(!w.warned);
    }
}
