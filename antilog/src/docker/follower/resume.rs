//! Which records a re-read skips: those delivered before a resume ([`Skip`]), the copies
//! Docker's follow stream sends again around a json-file rotation ([`Replays`]), and a
//! line Docker sends twice in a row ([`Repeats`]); and whether a follow stream skipped
//! lines at its start ([`Overlap`]).

use std::collections::VecDeque;

use bollard::container::LogOutput;
use tracing::{debug, info};

use crate::checkpoint::Position;
use crate::docker::frames::split_timestamp;

/// Timestamps of the latest lines of a stream remembered to recognise a replay ([`Replays`]).
const REPLAY_MEMORY: usize = 4096;

/// Skipping of lines already delivered, when re-reading from a [`Position`].
///
/// A line older than the position is delivered, whenever it comes: Docker filters such
/// lines itself when asked with the nanosecond `since`, except for the copies its follow
/// stream sends around a json-file rotation. So is a line at the position's instant that
/// comes after the stream passed it, or after every delivered line at that instant came
/// and the stream went back before it (only a line of the other stream stamped that very
/// nanosecond would be new). Before this floor, such a copy arriving
/// after the stream had passed the position was taken for a new line: stored twice,
/// under a new `seq` and out of order.
#[derive(Debug, Clone, Copy)]
pub(super) struct Skip {
    pub(super) active: bool,
    /// Lines older than `ts` are skipped for the whole stream.
    pub(super) floor: bool,
    pub(super) ts: i64,
    pub(super) remaining: u32,
    /// Every delivered line at `ts` came, then the stream went back before it: Docker
    /// replays lines around a rotation, and the position's line may come again.
    pub(super) went_back: bool,
}

impl Skip {
    pub(super) fn from(pos: &Position) -> Skip {
        Skip {
            active: pos.at_ts > 0,
            floor: pos.at_ts > 0,
            ts: pos.ts,
            remaining: pos.at_ts,
            went_back: false,
        }
    }

    pub(super) fn should_skip(&mut self, ts: i64) -> bool {
        // Once the stream has passed the position's instant, a line stamped at it again is
        // a copy too: Docker's follow stream replays lines from before a rotation, and
        // such a replay can reach back to the position (the last line a read without
        // `follow` brought just before this stream was read). The position's own line was
        // skipped here, so [`Replays`] never saw it: taken for a new line, it and the
        // replayed lines after it were stored again.
        if self.floor && ts < self.ts {
            self.went_back |= self.active && self.remaining == 0;
            return true;
        }
        // A replay can also come before the stream passed the position: once every
        // delivered line at its instant came and the stream went back before it, a line
        // at the instant is a copy too (seen in the SIGKILL test: the position's line
        // stored twice). Right after them, it is a new line stamped the same nanosecond.
        if self.floor && ts == self.ts && (!self.active || self.went_back) {
            debug!(
                ts,
                "a line at the resume position came again after later ones: a copy"
            );
            return true;
        }
        if !self.active {
            return false;
        }
        if ts == self.ts && self.remaining > 0 {
            self.remaining -= 1;
            return true;
        }
        if ts > self.ts {
            // Past every delivered line: stop looking, so a later line with a slightly
            // older timestamp is not dropped.
            self.active = false;
        }
        false
    }
}

/// Lines Docker sends again within one stream. With json-file and `max-size`, Docker
/// 20.10's follow stream sends the last few hundred lines before a rotation a second time
/// (tests/tests/reliability.rs met it; `docker logs -f` shows it too). A copy keeps its
/// original timestamp, so it is older than the newest line of its stream, which a new line
/// never is (Docker stamps each stream in order). A line older than the newest whose exact
/// timestamp is among the last [`REPLAY_MEMORY`] of its stream starts a replay: it and the
/// lines after it are skipped until the stream passes the newest line, as when resuming
/// ([`Skip`]). An older timestamp never seen (the clock stepped back) is a new line.
#[derive(Debug, Default)]
pub(super) struct Replays {
    recent: VecDeque<i64>,
    newest: i64,
    at_newest: u32,
    skip: Option<Skip>,
}

impl Replays {
    /// Whether the line starting with a piece stamped `ts` is a copy of one already read.
    pub(super) fn is_copy(&mut self, ts: i64) -> bool {
        if let Some(skip) = self.skip.as_mut() {
            if skip.should_skip(ts) {
                return true;
            }
            self.skip = None;
        } else if ts < self.newest && self.recent.contains(&ts) {
            info!(
                copy_ts = ts,
                newest_ts = self.newest,
                "Docker sent lines again; skipping the copies"
            );
            self.skip = Some(Skip {
                active: true,
                floor: true,
                ts: self.newest,
                remaining: self.at_newest,
                went_back: false,
            });
            return true;
        }
        if ts == self.newest && !self.recent.is_empty() {
            self.at_newest = self.at_newest.saturating_add(1);
        } else {
            self.newest = ts;
            self.at_newest = 1;
        }
        if self.recent.len() == REPLAY_MEMORY {
            self.recent.pop_front();
        }
        self.recent.push_back(ts);
        false
    }
}

/// Docker's other copy: a line sent again right after itself, with its own timestamp,
/// stream and bytes (Docker 20.10's json-file reader sometimes does; `docker logs` shows it
/// too). Per stream, the last whole line is kept; a whole line equal to it in all three is
/// that copy. Two lines a program printed the same nanosecond with the same text are taken
/// for one: Docker stamps each line with its own clock reading, so only a clock coarser
/// than the line rate gives two lines the same timestamp. Used on the API source only.
#[derive(Debug, Default)]
pub(super) struct Repeats {
    /// Per stream: the timestamp and bytes of the last whole line, if the last line was
    /// whole.
    last: [Option<(i64, Vec<u8>)>; 2],
}

impl Repeats {
    /// Whether the line starting with a piece on stream `s` stamped `ts` is Docker's copy
    /// of the line before it. `whole`: the piece is the whole line (a longer line is never
    /// taken for a copy).
    pub(super) fn is_repeat(&mut self, s: usize, ts: i64, bytes: &[u8], whole: bool) -> bool {
        let Some(slot) = self.last.get_mut(s) else {
            return false;
        };
        if !whole {
            *slot = None;
            return false;
        }
        if slot
            .as_ref()
            .is_some_and(|(t, b)| *t == ts && b.as_slice() == bytes)
        {
            return true;
        }
        match slot {
            Some((t, b)) => {
                *t = ts;
                b.clear();
                b.extend_from_slice(bytes);
            }
            None => *slot = Some((ts, bytes.to_vec())),
        }
        false
    }
}

/// Whether a follow stream holds every line from its first one. Both sides count the
/// lines stamped `from` or later (the stream's first data, or the last cut if later: the
/// read without `follow` starts there) and at or before the last cut: the read without
/// `follow` made after the stream's first data came (its lines delivered before, and its
/// new lines up to the latest cut it made; a line still open after it is not counted),
/// and the stream, up to its first line past the cut. Fewer on the stream means it
/// skipped lines at its start (Docker 20.10's reader missed a rotation between opening
/// the log and watching it, see [`super::backlog`]): the first line past the cut is then
/// not sent ([`Overlap::Gap`]) and the follower catches up again. More (a copy Docker
/// replays) is no loss. A stderr line stamped a little before a stdout line it follows
/// in the file can make the stream look short: one more catch-up, nothing lost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) enum Overlap {
    #[default]
    Off,
    /// The read without `follow`: lines delivered before (`before`), new lines (`new`)
    /// and new lines up to its latest cut (`cut`).
    Counting {
        from: i64,
        before: u64,
        new: u64,
        cut: u64,
    },
    /// The stream: lines up to the last cut, against the count.
    Checking { from: i64, expected: u64, seen: u64 },
    /// The stream brought a line past the cut after fewer lines than expected.
    Gap,
}

impl Overlap {
    /// Counting from the timestamp of a follow stream's first data (`first`: its first
    /// piece with a timestamp; none: nothing to check), or from `floor` (the last cut's
    /// timestamp, where the read without `follow` starts) if later.
    pub(super) fn counting(first: &[LogOutput], floor: i64) -> Overlap {
        match first.iter().find_map(|o| split_timestamp(o.as_ref())) {
            Some((ts, _)) => Overlap::Counting {
                from: ts.max(floor),
                before: 0,
                new: 0,
                cut: 0,
            },
            None => Overlap::Off,
        }
    }

    /// From counting to checking the stream.
    pub(super) fn check(&mut self) {
        if let Overlap::Counting {
            from, before, cut, ..
        } = *self
        {
            *self = Overlap::Checking {
                from,
                expected: before + cut,
                seen: 0,
            };
        }
    }

    /// A line stamped `ts` starts (not a copy of the one before it); `delivered`: it is
    /// at or before the last cut. False when it is past the cut and the stream skipped
    /// lines before it: it is not to be sent.
    pub(super) fn line(&mut self, ts: i64, delivered: bool) -> bool {
        match self {
            Overlap::Counting { from, before, .. } if delivered && ts >= *from => *before += 1,
            Overlap::Counting { from, new, .. } if ts >= *from => *new += 1,
            Overlap::Checking { from, seen, .. } if delivered && ts >= *from => *seen += 1,
            Overlap::Checking { .. } if delivered => {}
            Overlap::Checking { expected, seen, .. } => {
                let (expected, seen) = (*expected, *seen);
                if seen < expected {
                    info!(
                        expected,
                        seen, "Docker's follow stream skipped lines at its start; catching up"
                    );
                    *self = Overlap::Gap;
                    return false;
                }
                debug!(
                    expected,
                    seen, ts, "the follow stream holds every line from its start"
                );
                *self = Overlap::Off;
            }
            Overlap::Gap => return false,
            _ => {}
        }
        true
    }

    /// The read without `follow` made a cut: its new lines so far are complete.
    pub(super) fn cut(&mut self) {
        if let Overlap::Counting { new, cut, .. } = self {
            *cut = *new;
        }
    }

    /// Whether the stream was found to have skipped lines.
    pub(super) fn gap(&self) -> bool {
        *self == Overlap::Gap
    }
}
