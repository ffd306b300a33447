//! Stream runs: how a read of one stream (`stream=stdout|stderr`) finds its lines without
//! scanning the job's other stream, written once for both backends.
//!
//! `log_runs` holds, per job and stream, runs of lines: `[first_seq, last_seq]` spans of
//! consecutive seqs that all belong to that stream, at most [`RUN_MAX_LINES`] long. A write
//! adds the runs of its lines in the same transaction as the lines (an upsert that keeps
//! the longer run when a batch is sent again), so the cost is a row per run, not per line:
//! one or two per batch for typical output, where an index of `(job_id, stream, seq)` costs
//! an entry per line (schema version 5 had one; it halved SQLite's ingest rate).
//!
//! A stream read goes in rounds ([`StreamRead`]): the next runs of the stream after the
//! cursor (a range of `log_runs`' primary key, bounded below because a run is at most
//! [`RUN_MAX_LINES`] long), merged into disjoint seq ranges, then the lines in those ranges
//! (ranges of `log_lines`' primary key). Runs of a batch sent again with other boundaries
//! may overlap; merging makes the ranges disjoint, so no line is read twice.

use protocol::Stream;

use super::{corrupt, Param};
use crate::error::Result;
use crate::model::{JobId, LineQuery, NewLine};

/// The longest run: a run's `last_seq - first_seq` is below it.
pub(crate) const RUN_MAX_LINES: i64 = 1000;

/// Runs read per round of a stream read (each a range of the lines query that follows).
pub(crate) const RUNS_PER_ROUND: usize = 256;

/// The runs of a job's stream that may hold seqs after a cursor, in seq order
/// (parameters: job id, stream, `after - RUN_MAX_LINES`, `after`, limit).
pub(crate) const RUNS_SELECT: &str = "SELECT first_seq, last_seq FROM log_runs \
     WHERE job_id = ? AND stream = ? AND first_seq > ? AND last_seq > ? \
     ORDER BY first_seq LIMIT ?";

/// SQLite's upsert of one run: a run sent again keeps the longer of the two.
pub(crate) const SQLITE_RUN_UPSERT: &str =
    "INSERT INTO log_runs (job_id, stream, first_seq, last_seq) VALUES (?, ?, ?, ?) \
     ON CONFLICT (job_id, stream, first_seq) DO UPDATE SET \
     last_seq = max(last_seq, excluded.last_seq)";

/// MySQL's multi-row upsert of `n` runs, with the same rule.
pub(crate) fn mysql_runs_upsert(n: usize) -> String {
    format!(
        "INSERT INTO log_runs (job_id, stream, first_seq, last_seq) VALUES {} \
         ON DUPLICATE KEY UPDATE last_seq = GREATEST(last_seq, VALUES(last_seq))",
        super::placeholders(n, 4)
    )
}

/// Deletes a job's runs that start at or before a seq, of every stream, by ranges of the
/// primary key (parameters: job id, seq).
pub(crate) const RUNS_DELETE_UPTO: &str =
    "DELETE FROM log_runs WHERE job_id = ? AND stream IN (1, 2) AND first_seq <= ?";

/// The statement of schema version 6 that fills `log_runs` from the lines already stored,
/// in a backend's words: `$insert` (an insert that skips rows already there: `INSERT OR
/// IGNORE`, `INSERT IGNORE`) and `$div` (integer division: `/`, `DIV`). Along a stream's
/// consecutive seqs `seq - row_number` is constant; each such stretch is split where the
/// row number passes a multiple of 1,000, so no run is [`RUN_MAX_LINES`] long.
macro_rules! runs_fill_sql {
    ($insert:literal, $div:literal) => {
        concat!(
            $insert,
            " INTO log_runs (job_id, stream, first_seq, last_seq) \
             SELECT job_id, stream, MIN(seq), MAX(seq) FROM ( \
                 SELECT job_id, stream, seq, seq - CAST(rn AS SIGNED) AS island, \
                        (rn - 1) ",
            $div,
            " 1000 AS part FROM ( \
                     SELECT job_id, stream, seq, \
                            ROW_NUMBER() OVER (PARTITION BY job_id, stream ORDER BY seq) AS rn \
                     FROM log_lines) numbered) parted \
             GROUP BY job_id, stream, island, part"
        )
    };
}
pub(crate) use runs_fill_sql;

/// One run of a write: `(stream, first_seq, last_seq)`.
pub(crate) type Run = (u8, i64, i64);

/// The runs of a write's lines, in their order: a run ends where the stream changes, the
/// seq does not follow the one before, or it reaches [`RUN_MAX_LINES`].
pub(crate) fn runs_of(lines: &[NewLine]) -> Result<Vec<Run>> {
    let mut runs: Vec<Run> = Vec::new();
    for line in lines {
        let seq = super::jobs::seq_to_db(line.seq)?;
        let stream = line.stream.as_u8();
        match runs.last_mut() {
            Some((s, first, last))
                if *s == stream && seq == *last + 1 && seq - *first < RUN_MAX_LINES =>
            {
                *last = seq;
            }
            _ => runs.push((stream, seq, seq)),
        }
    }
    Ok(runs)
}

/// The SQL of lines in `ranges` seq ranges of one stream, in seq order (parameters: job
/// id, stream, then each range's first and last seq, then the limit). The MySQL backend
/// reads a round's ranges in one statement (its range optimizer scans the primary key's
/// ranges in order); SQLite, whose planner would scan the whole job for an `OR` of ranges,
/// runs the one-range statement once per range.
pub(crate) fn range_lines_sql(columns: &str, ranges: usize) -> String {
    let ors = vec!["seq BETWEEN ? AND ?"; ranges.max(1)].join(" OR ");
    format!(
        "SELECT {columns} FROM log_lines WHERE job_id = ? AND stream = ? AND ({ors}) \
         ORDER BY seq LIMIT ?"
    )
}

/// A read of one stream's lines in rounds (see the module docs). Each backend drives it:
/// while [`StreamRead::runs_query`] gives a query, read those runs, turn them into ranges
/// with [`StreamRead::ranges`], read up to [`StreamRead::remaining`] lines in them, and
/// report with [`StreamRead::read`].
#[derive(Debug, Clone)]
pub(crate) struct StreamRead {
    job_id: JobId,
    stream: u8,
    /// Lines after this seq are still to read.
    after: i64,
    until: i64,
    remaining: u32,
    done: bool,
}

impl StreamRead {
    /// The read of `q` (which must name a stream) up to `until` (inclusive).
    pub(crate) fn new(q: &LineQuery, stream: Stream, until: Option<u64>) -> StreamRead {
        let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        StreamRead {
            job_id: q.job_id,
            stream: stream.as_u8(),
            after: clamp(q.after_seq),
            until: until.map_or(i64::MAX, clamp),
            remaining: q.limit,
            done: q.limit == 0,
        }
    }

    /// The next round's runs query, or `None` when the read is over.
    pub(crate) fn runs_query(&self) -> Option<(&'static str, Vec<Param>)> {
        if self.done || self.after >= self.until {
            return None;
        }
        let params = vec![
            self.job_id.into(),
            i64::from(self.stream).into(),
            self.after.saturating_sub(RUN_MAX_LINES).into(),
            self.after.into(),
            (RUNS_PER_ROUND as i64).into(),
        ];
        Some((RUNS_SELECT, params))
    }

    /// The runs a round read (`(first_seq, last_seq)` in `first_seq` order) as disjoint seq
    /// ranges after the cursor and up to the read's end, in order. Fewer runs than asked
    /// for end the read after this round.
    pub(crate) fn ranges(&mut self, runs: &[(i64, i64)]) -> Result<Vec<(i64, i64)>> {
        if runs.len() < RUNS_PER_ROUND {
            self.done = true;
        }
        let mut ranges: Vec<(i64, i64)> = Vec::with_capacity(runs.len());
        for &(first, last) in runs {
            if last < first {
                return Err(corrupt(format!(
                    "job {}: log_runs holds [{first}, {last}]",
                    self.job_id
                )));
            }
            let start = first.max(self.after.saturating_add(1));
            let end = last.min(self.until);
            if start > end {
                continue;
            }
            match ranges.last_mut() {
                // Overlapping or adjacent: one range (runs come in first_seq order).
                Some((_, prev_end)) if start <= prev_end.saturating_add(1) => {
                    *prev_end = (*prev_end).max(end);
                }
                _ => ranges.push((start, end)),
            }
        }
        if let Some(&(_, end)) = ranges.last() {
            // Every line up to the last range's end is read this round (or the read stops).
            self.after = end;
        } else if let Some(&(_, last)) = runs.last() {
            self.after = self.after.max(last.min(self.until));
        }
        Ok(ranges)
    }

    /// Lines still to read (the limit of a round's lines query).
    pub(crate) fn remaining(&self) -> u32 {
        self.remaining
    }

    /// The job and stream parameters of a lines query ([`range_lines_sql`]).
    pub(crate) fn lines_params(&self) -> [Param; 2] {
        [self.job_id.into(), i64::from(self.stream).into()]
    }

    /// A round read `lines` lines; `stopped` when the caller wants no more (a full page).
    pub(crate) fn read(&mut self, lines: u32, stopped: bool) {
        self.remaining = self.remaining.saturating_sub(lines);
        if stopped || self.remaining == 0 {
            self.done = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64, stream: Stream) -> NewLine {
        NewLine {
            seq,
            ts: 0,
            stream,
            cont: false,
            line: b"x".to_vec(),
        }
    }

    #[test]
    fn runs_split_on_stream_gap_and_length() {
        let mut lines: Vec<NewLine> = (1..=3).map(|s| line(s, Stream::Stdout)).collect();
        lines.push(line(4, Stream::Stderr));
        lines.push(line(5, Stream::Stdout));
        lines.push(line(9, Stream::Stdout));
        lines.extend((10..=2100).map(|s| line(s, Stream::Stdout)));
        let runs = runs_of(&lines).unwrap();
        assert_eq!(
            runs,
            vec![
                (1, 1, 3),
                (2, 4, 4),
                (1, 5, 5),
                (1, 9, 1008),
                (1, 1009, 2008),
                (1, 2009, 2100)
            ]
        );
        assert!(runs.iter().all(|(_, f, l)| l - f < RUN_MAX_LINES));
        assert!(runs_of(&[]).unwrap().is_empty());
    }

    fn query(after: u64, limit: u32) -> LineQuery {
        LineQuery {
            job_id: 7,
            after_seq: after,
            limit,
            stream: Some(Stream::Stderr),
        }
    }

    #[test]
    fn ranges_merge_overlaps_and_clip_to_the_cursor_and_end() {
        let mut read = StreamRead::new(&query(5, 100), Stream::Stderr, Some(60));
        let (_, params) = read.runs_query().unwrap();
        assert_eq!(params[2], Param::Int(5 - RUN_MAX_LINES));
        let runs = [(1, 8), (7, 10), (11, 12), (20, 30), (25, 26), (50, 70)];
        assert_eq!(
            read.ranges(&runs).unwrap(),
            vec![(6, 12), (20, 30), (50, 60)]
        );
        // Fewer runs than a round asks for: this was the last round.
        read.read(20, false);
        assert_eq!(read.remaining(), 80);
        assert!(read.runs_query().is_none());
        assert!(read.ranges(&[(3, 2)]).is_err());
    }

    #[test]
    fn a_full_round_moves_the_cursor_and_the_limit_ends_the_read() {
        let mut read = StreamRead::new(&query(0, 300), Stream::Stderr, None);
        let runs: Vec<(i64, i64)> = (0..RUNS_PER_ROUND as i64)
            .map(|i| (i * 2 + 1, i * 2 + 1))
            .collect();
        let ranges = read.ranges(&runs).unwrap();
        assert_eq!(ranges.len(), RUNS_PER_ROUND);
        read.read(RUNS_PER_ROUND as u32, false);
        let (_, params) = read.runs_query().unwrap();
        assert_eq!(params[3], Param::Int(RUNS_PER_ROUND as i64 * 2 - 1));
        read.read(44, false);
        assert!(read.runs_query().is_none());
        assert!(StreamRead::new(&query(0, 0), Stream::Stderr, None)
            .runs_query()
            .is_none());
    }
}
