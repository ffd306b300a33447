//! How the files of one log's chain are named, and the order of age they give.
//!
//! - Docker `json-file`: `<id>-json.log` is active; rotation renames it to `.1` after
//!   moving `.1` to `.2`, and so on. With `--log-opt compress=true` the rotated files are
//!   `.1.gz`, `.2.gz`, ...: rotation moves `.1.gz` to `.2.gz` and so on, renames the
//!   active file to `.1`, then compresses `.1` into `.1.gz` (written in place) and
//!   deletes `.1` once the copy is complete (`daemon/logger/loggerutils/logfile.go`).
//!   While both exist the plain `.1` is the one read.
//! - The kubelet (CRI): `<restart>.log` is active; rotation renames it to
//!   `<restart>.log.<YYYYMMDD-hhmmss>`, then at the next rotation compresses every rotated
//!   file but the newest to `<name>.gz` (written as `<name>.tmp`, then renamed), and
//!   deletes the oldest beyond `containerLogMaxFiles` (`pkg/kubelet/logs/
//!   container_log_manager.go`).

/// How a chain's files are named.
#[derive(Debug, Clone)]
pub enum Layout {
    /// Docker json-file: `<name>` is active; `<name>.1` the newest rotated, `.2` older...
    /// (`<name>.1.gz`, ... when Docker compresses them).
    Numbered { name: String },
    /// The kubelet's: `<name>` is active (`0.log`), `<name>.<YYYYMMDD-hhmmss>` rotated,
    /// `<name>.<YYYYMMDD-hhmmss>.gz` rotated and compressed.
    Kubelet { name: String },
}

/// A file's place in its chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ranked {
    /// 0 for the active file; higher for older ones.
    pub rank: u64,
    /// Gzip-compressed (its content is read through a decoder).
    pub gz: bool,
}

impl Layout {
    /// Whether the writer may still append to the active file after it was renamed (the
    /// kubelet renames it, then asks the runtime to reopen the log; Docker rotates under
    /// its own lock).
    pub fn written_after_rename(&self) -> bool {
        matches!(self, Layout::Kubelet { .. })
    }

    /// The place of a file name in the chain; `None` for files not of this chain
    /// (another container's, the kubelet's `.tmp` files).
    pub fn rank(&self, file_name: &str) -> Option<Ranked> {
        match self {
            Layout::Numbered { name } => {
                let rest = file_name.strip_prefix(name.as_str())?;
                if rest.is_empty() {
                    return Some(Ranked { rank: 0, gz: false });
                }
                let n = rest.strip_prefix('.')?;
                let (n, gz) = match n.strip_suffix(".gz") {
                    Some(n) => (n, true),
                    None => (n, false),
                };
                if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                Some(Ranked {
                    rank: n.parse().ok()?,
                    gz,
                })
            }
            Layout::Kubelet { name } => {
                let rest = file_name.strip_prefix(name.as_str())?;
                if rest.is_empty() {
                    return Some(Ranked { rank: 0, gz: false });
                }
                let stamp = rest.strip_prefix('.')?;
                let (stamp, gz) = match stamp.strip_suffix(".gz") {
                    Some(s) => (s, true),
                    None => (stamp, false),
                };
                let when = kubelet_stamp(stamp)?;
                // Older stamps rank higher; `when` is at most 14 digits, so never 0.
                Some(Ranked {
                    rank: u64::MAX - when,
                    gz,
                })
            }
        }
    }
}

/// `YYYYMMDD-hhmmss` as the number `YYYYMMDDhhmmss` (ordered as the times are).
fn kubelet_stamp(s: &str) -> Option<u64> {
    let (date, time) = s.split_once('-')?;
    if date.len() != 8 || time.len() != 6 {
        return None;
    }
    if !date.bytes().chain(time.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(date.parse::<u64>().ok()? * 1_000_000 + time.parse::<u64>().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranks(layout: &Layout, names: &[&str]) -> Vec<Option<(u64, bool)>> {
        names
            .iter()
            .map(|n| layout.rank(n).map(|r| (r.rank, r.gz)))
            .collect()
    }

    #[test]
    fn numbered_files_rank_by_their_number_compressed_or_not() {
        let l = Layout::Numbered {
            name: "c-json.log".into(),
        };
        assert_eq!(
            ranks(
                &l,
                &[
                    "c-json.log",
                    "c-json.log.1",
                    "c-json.log.12",
                    "c-json.log.x",
                    "c-json.log.1.gz",
                    "c-json.log.3.gz",
                    "c-json.log.gz",
                    "c-json.log.1.tmp",
                    "d-json.log"
                ]
            ),
            vec![
                Some((0, false)),
                Some((1, false)),
                Some((12, false)),
                None,
                Some((1, true)),
                Some((3, true)),
                None,
                None,
                None
            ]
        );
    }

    #[test]
    fn kubelet_files_rank_by_their_stamp_and_gz_keeps_its_place() {
        let l = Layout::Kubelet {
            name: "0.log".into(),
        };
        let got = ranks(
            &l,
            &[
                "0.log",
                "0.log.20261127-111025",
                "0.log.20261127-111025.gz",
                "0.log.20261127-111035",
                "0.log.20261127-111025.tmp",
                "1.log",
                "10.log",
                "0.log.2026112-111025",
            ],
        );
        let older = u64::MAX - 20_261_127_111_025;
        let newer = u64::MAX - 20_261_127_111_035;
        assert_eq!(
            got,
            vec![
                Some((0, false)),
                Some((older, false)),
                Some((older, true)),
                Some((newer, false)),
                None,
                None,
                None,
                None
            ]
        );
        assert!(older > newer);
    }
}
