//! How far behind Docker's log the API source reads, for logs Docker rotates.
//!
//! Docker 20.10's json-file (and `local`) reader (`daemon/logger/loggerutils`) is complete
//! without `follow`: it opens the current file (up to its size then) and every rotated one
//! at once, and sends what they hold from `since`. With `follow` it sends the same, then
//! goes on in the file it had opened and, at a rotation notice, reopens the log by name.
//! Files are lost, silently, two ways: a reader more than a file behind the writer (the
//! client reads slowly: an agent catching up after a restart, or held back by
//! backpressure) skips the files in between; and a rotation while the first part is sent
//! (it decodes every kept file, which takes a while) is never noticed, so the file after
//! it is skipped. So a rotating log is read this way (`api.rs`):
//!
//! - a follow stream is opened at the log's end (`tail=0`: no first part; it is at the
//!   log's end once Docker answered), and left waiting;
//! - what lies between the last cut and there is read without `follow`. If that read
//!   brought [`Backlog::limit`] bytes (a quarter of `max-size`) or more, the waiting
//!   stream is that far behind: it is dropped, and both steps are repeated;
//! - otherwise, once the stream brought its first data (its reader opens the log after
//!   Docker answered, so it may start after that read ended), the log is read once more
//!   without `follow`, which covers the gap (and is judged the same way);
//! - the stream's reader may also have missed a rotation at its start (20.10's `ReadLogs`
//!   opens the file, then subscribes to rotation notices and watches the file by name): it
//!   then reads the renamed file to its end, waits, and at the next rotation reopens the
//!   log by name, past the file in between. So the stream's lines from its first data (or
//!   the last cut before the second read, if later) up to the second read's last cut are
//!   counted against the second read's ([`super::resume::Overlap`]); fewer, and the
//!   stream is dropped before anything past the cut is sent, and the follower catches up
//!   again;
//! - then the follow stream is read, skipping what the reads brought, as long as the
//!   record just read is less than [`Backlog::limit`] behind the writer. The distance is
//!   estimated from the record's age (now minus its timestamp) times the log's byte rate,
//!   taken from the timestamps of the records of the last [`RATE_WINDOW_NS`]. Past the
//!   limit, the stream is dropped before the record is sent (what was not sent comes
//!   again) and the follower catches up again.
//!
//! Docker's reader is ahead of the records we read (the socket buffers what it sent), so
//! the estimate bounds its lag from above; skipping needs more than a whole file.
//!
//! A log nothing was read of yet (a container's first run, `since` 0) is first read with a
//! single follow from its start, so that a short-lived container (`docker run --rm`) is
//! read in one request rather than removed between two. Docker rotates a file only once it
//! holds `max-size` bytes or more (`checkCapacityAndRotate`), and its follow stream goes on
//! in the file it had opened, from where the first part ended: before the stream can skip
//! a file (either way above) it has sent every byte of the file it opened first, that is
//! `max-size` bytes of json-file or more. So that stream is read until it brought
//! [`Backlog::first_cap`] (a quarter of `max-size`), each message counted at its most
//! (its text as Docker escapes it at worst, plus [`LINE_OVERHEAD`]); the margin leaves
//! room for the `attrs` that the `labels`, `env` and `tag` options add to each line. Then
//! it is dropped before anything of the batch that reached the cap is sent, and the
//! follower goes on as above from the last cut.

use std::collections::VecDeque;

/// Bytes a line takes in Docker's json-file besides its text:
/// `{"log":"","stream":"stdout","time":"2006-01-02T15:04:05.999999999Z"}` and `\n`.
pub(super) const LINE_OVERHEAD: u64 = 70;
/// The span of record timestamps the byte rate is taken over.
pub(super) const RATE_WINDOW_NS: i64 = 1_000_000_000;
/// Records the rate window holds at most (bounded memory at any line rate).
const RATE_WINDOW_RECORDS: usize = 65_536;

/// The byte rate of a log, from the timestamps of its latest records.
#[derive(Debug, Default)]
pub(super) struct Backlog {
    /// (timestamp, bytes) of the records of the last [`RATE_WINDOW_NS`], oldest first.
    window: VecDeque<(i64, u64)>,
    window_bytes: u64,
}

impl Backlog {
    /// How far behind (json-file bytes) a reader of a log rotated at `max_size` may be.
    pub(super) fn limit(max_size: u64) -> u64 {
        (max_size / 4).max(1)
    }

    /// Counts a line of `bytes` bytes of text stamped `ts` (a line already counted, read
    /// again, is not: only timestamps past the newest are).
    pub(super) fn observe(&mut self, ts: i64, bytes: u64) {
        if self.window.back().is_some_and(|&(newest, _)| ts <= newest) {
            return;
        }
        let bytes = bytes + LINE_OVERHEAD;
        self.window.push_back((ts, bytes));
        self.window_bytes += bytes;
        while let Some(&(old, b)) = self.window.front() {
            if old > ts.saturating_sub(RATE_WINDOW_NS) && self.window.len() <= RATE_WINDOW_RECORDS {
                break;
            }
            self.window.pop_front();
            self.window_bytes -= b;
        }
    }

    /// Bytes written per second around the newest record counted.
    pub(super) fn rate(&self) -> f64 {
        self.window_bytes as f64 * 1e9 / RATE_WINDOW_NS as f64
    }

    /// About how many bytes the log holds after a record stamped `ts`, at `now`.
    pub(super) fn lag_bytes(&self, ts: i64, now: i64) -> u64 {
        let age = now.saturating_sub(ts).max(0) as f64 / 1e9;
        (age * self.rate()) as u64
    }

    /// Whether a follow stream reading a record stamped `ts` at `now` is too far behind.
    pub(super) fn behind(&self, ts: i64, now: i64, limit: u64) -> bool {
        self.lag_bytes(ts, now) > limit
    }

    /// How many bytes of json-file, counted at their most, a follow stream from the log's
    /// start may bring before it is dropped: a quarter of `max_size` (the file it opened
    /// first holds `max_size` or more when Docker rotates it).
    pub(super) fn first_cap(max_size: u64) -> u64 {
        (max_size / 4).max(1)
    }

    /// Whether a read without `follow` that brought `read` bytes caught up: the follow
    /// stream opened next starts less than `limit` behind.
    pub(super) fn caught_up(read: u64, limit: u64) -> bool {
        read < limit
    }
}

/// Nanoseconds since the epoch now.
pub(super) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    #[test]
    fn rate_is_taken_over_the_last_second_of_timestamps() {
        let mut b = Backlog::default();
        // 1,000 lines of 30 bytes in each of 3 bursts 0.5 s apart.
        for burst in 0..3 {
            for i in 0..1000 {
                b.observe(burst * S / 2 + i * 1000, 30);
            }
        }
        // The window holds the last two bursts: 2,000 lines of 100 bytes per second.
        assert_eq!(b.rate(), 200_000.0);
        // Lines read again (older or equal timestamps) are not counted twice.
        b.observe(S / 2, 30);
        b.observe(S + 999_000, 30);
        assert_eq!(b.rate(), 200_000.0);
    }

    #[test]
    fn lag_is_age_times_rate() {
        let mut b = Backlog::default();
        for i in 0..100 {
            b.observe(10 * S + i * S / 100, 930); // 100 KB/s
        }
        let newest = 10 * S + 99 * S / 100;
        assert_eq!(b.lag_bytes(newest, newest + S / 2), 50_000);
        assert_eq!(b.lag_bytes(newest, newest - S), 0); // a clock behind: no lag
        let limit = Backlog::limit(1 << 20); // 256 KiB
        assert_eq!(limit, 262_144);
        assert!(!b.behind(newest, newest + 2 * S, limit));
        assert!(b.behind(newest, newest + 3 * S, limit));
        // No rate known yet (nothing read): never behind.
        assert!(!Backlog::default().behind(0, newest, limit));
    }

    #[test]
    fn catching_up_ends_below_a_quarter_of_a_file() {
        let limit = Backlog::limit(1 << 20);
        assert!(!Backlog::caught_up(1 << 20, limit));
        assert!(!Backlog::caught_up(limit, limit));
        assert!(Backlog::caught_up(limit - 1, limit));
        assert!(Backlog::caught_up(0, limit));
        assert_eq!(Backlog::limit(2), 1);
    }

    #[test]
    fn a_first_follow_brings_less_than_the_file_docker_rotates() {
        assert_eq!(Backlog::first_cap(1 << 20), 1 << 18);
        assert_eq!(Backlog::first_cap(10 << 20), 10 << 18);
        assert_eq!(Backlog::first_cap(1), 1);
    }

    #[test]
    fn window_is_bounded() {
        let mut b = Backlog::default();
        for i in 0..(RATE_WINDOW_RECORDS as i64 + 10) {
            b.observe(i, 0);
        }
        assert_eq!(b.window.len(), RATE_WINDOW_RECORDS);
        assert_eq!(b.window_bytes, RATE_WINDOW_RECORDS as u64 * LINE_OVERHEAD);
    }
}
