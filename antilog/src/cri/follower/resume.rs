//! Where a CRI follower starts after a restart of antilog: the run whose chain holds the
//! checkpointed file, opened exactly there (run on the blocking pool by the follower).

use std::path::Path;

use crate::checkpoint::{ExitMark, FilePos};
use crate::files::pod_logs::{restart_of, restarts_in, ContainerLogs};
use crate::files::tailer::{Start, Tailer};

/// The first run to read and, when resuming inside it, its tailer: after an acknowledged
/// exit (`exit`), the next run; else the run holding the checkpoint's `file`.
#[allow(clippy::type_complexity)]
pub(super) fn resume_point(
    dir: &Path,
    exit: Option<ExitMark>,
    file: Option<FilePos>,
) -> std::io::Result<(Option<u32>, Option<(Tailer, Start)>)> {
    let restarts = restarts_in(dir)?;
    if let Some(mark) = exit {
        return Ok((restarts.into_iter().find(|&r| r > mark.restart_count), None));
    }
    let Some(file) = file else {
        return Ok((restarts.first().copied(), None));
    };
    // The run whose chain holds the file (by inode; a `.gz` by content, below).
    let holding = run_holding(dir, &file);
    let order = holding.into_iter().chain(
        restarts
            .iter()
            .rev()
            .copied()
            .filter(|&r| Some(r) != holding),
    );
    for r in order {
        let (t, start) = Tailer::open(dir, ContainerLogs::layout(r), Some(file))?;
        if start == Start::Exact {
            return Ok((Some(r), Some((t, start))));
        }
    }
    // The checkpoint's file is gone from every chain: read the newest run from its
    // start, and say lines may be lost.
    match restarts.last().copied() {
        Some(r) => {
            let (t, _) = Tailer::open(dir, ContainerLogs::layout(r), None)?;
            Ok((Some(r), Some((t, Start::Lost))))
        }
        None => Ok((None, None)),
    }
}

/// The run whose chain has a plain file with `file`'s device and inode.
fn run_holding(dir: &std::path::Path, file: &FilePos) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
        let r = e.file_name().to_str().and_then(restart_of)?;
        let m = e.metadata().ok()?;
        (m.dev() == file.dev && m.ino() == file.ino).then_some(r)
    })
}
