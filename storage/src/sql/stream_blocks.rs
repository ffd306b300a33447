//! Stream blocks: how a read of one stream (`stream=stdout|stderr`) finds its lines without
//! scanning the job's other stream, written once for both backends.
//!
//! `log_stream_blocks` is a bitmap index of each job's lines by stream: per job, stream and
//! block of [`BLOCK_SEQS`] seqs (`block = seq / 63`), `bits` has bit `seq % 63` set for each
//! line of that stream in the block (63 bits, so the value stays a positive `BIGINT`). A
//! write adds the bits of its lines in the same transaction as the lines (an upsert that
//! ORs them in, so a batch sent again changes nothing). The cost is a row per block and
//! stream a write touches, about one per 63 lines even when the streams alternate line by
//! line, where version 5's `(job_id, stream, seq)` index cost an entry per line (it took
//! SQLite's ingest rate to 0.63 of what it was without it).
//!
//! A stream read goes in rounds ([`StreamRead`]): the next blocks of the stream from the
//! cursor (a range of the table's primary key), decoded into the seqs of the stream's lines
//! and those merged into ranges of consecutive seqs, then the lines of those ranges (ranges
//! of `log_lines`' primary key). Its cost is the lines it returns plus a block row per 63
//! seqs of the job at most, never the other stream's lines.

use std::collections::BTreeMap;

use protocol::Stream;

use super::{corrupt, Param};
use crate::error::Result;
use crate::model::{JobId, LineQuery, NewLine};

/// Seqs per block: bits 0 to 62 of a `BIGINT`, never the sign bit.
pub(crate) const BLOCK_SEQS: i64 = 63;

/// Blocks read per round of a stream read (up to 4,032 seqs).
pub(crate) const BLOCKS_PER_ROUND: usize = 64;

/// The blocks of a job's stream from a block on, in order (parameters: job id, stream,
/// first block, limit).
pub(crate) const BLOCKS_SELECT: &str = "SELECT block, bits FROM log_stream_blocks \
     WHERE job_id = ? AND stream = ? AND block >= ? ORDER BY block LIMIT ?";

/// SQLite's upsert of one block's bits: ORed into what is stored.
pub(crate) const SQLITE_BLOCK_UPSERT: &str =
    "INSERT INTO log_stream_blocks (job_id, stream, block, bits) VALUES (?, ?, ?, ?) \
     ON CONFLICT (job_id, stream, block) DO UPDATE SET bits = bits | excluded.bits";

/// MySQL's multi-row upsert of `n` blocks, with the same rule.
pub(crate) fn mysql_blocks_upsert(n: usize) -> String {
    format!(
        "INSERT INTO log_stream_blocks (job_id, stream, block, bits) VALUES {} \
         ON DUPLICATE KEY UPDATE bits = bits | VALUES(bits)",
        super::placeholders(n, 4)
    )
}

/// Deletes a job's blocks up to a block, of every stream, by ranges of the primary key
/// (parameters: job id, block).
pub(crate) const BLOCKS_DELETE_UPTO: &str =
    "DELETE FROM log_stream_blocks WHERE job_id = ? AND stream IN (1, 2) AND block <= ?";

/// The statement of schema version 6 that fills `log_stream_blocks` from the lines already
/// stored, in a backend's words: `$insert` (an insert that skips rows already there:
/// `INSERT OR IGNORE`, `INSERT IGNORE`), `$div` and `$mod` (integer division and remainder).
/// The bits of distinct seqs are distinct powers of two, so their sum is their OR.
macro_rules! blocks_fill_sql {
    ($insert:literal, $div:literal, $mod:literal) => {
        concat!(
            $insert,
            " INTO log_stream_blocks (job_id, stream, block, bits) \
             SELECT job_id, stream, seq ",
            $div,
            " 63, SUM(1 << (seq ",
            $mod,
            " 63)) FROM log_lines GROUP BY job_id, stream, seq ",
            $div,
            " 63"
        )
    };
}
pub(crate) use blocks_fill_sql;

/// One block of a write: `(stream, block, bits)`.
pub(crate) type Block = (u8, i64, i64);

/// The blocks of a write's lines, in `(stream, block)` order.
pub(crate) fn blocks_of(lines: &[NewLine]) -> Result<Vec<Block>> {
    let mut blocks: BTreeMap<(u8, i64), i64> = BTreeMap::new();
    for line in lines {
        let seq = super::jobs::seq_to_db(line.seq)?;
        *blocks
            .entry((line.stream.as_u8(), seq / BLOCK_SEQS))
            .or_insert(0) |= 1 << (seq % BLOCK_SEQS);
    }
    Ok(blocks
        .into_iter()
        .map(|((s, b), bits)| (s, b, bits))
        .collect())
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
/// while [`StreamRead::blocks_query`] gives a query, read those blocks, turn them into
/// ranges with [`StreamRead::ranges`], read up to [`StreamRead::remaining`] lines in them,
/// and report with [`StreamRead::read`].
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
    /// The read of `q` in `stream` up to `until` (inclusive).
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

    /// The next round's blocks query, or `None` when the read is over.
    pub(crate) fn blocks_query(&self) -> Option<(&'static str, Vec<Param>)> {
        if self.done || self.after >= self.until {
            return None;
        }
        let params = vec![
            self.job_id.into(),
            i64::from(self.stream).into(),
            (self.after.saturating_add(1) / BLOCK_SEQS).into(),
            (BLOCKS_PER_ROUND as i64).into(),
        ];
        Some((BLOCKS_SELECT, params))
    }

    /// The blocks a round read (`(block, bits)` in block order) as ranges of consecutive
    /// seqs of the stream after the cursor and up to the read's end, in order, holding at
    /// most [`StreamRead::remaining`] seqs. Fewer blocks than asked for end the read after
    /// this round.
    pub(crate) fn ranges(&mut self, blocks: &[(i64, i64)]) -> Result<Vec<(i64, i64)>> {
        let mut ranges: Vec<(i64, i64)> = Vec::new();
        let mut seqs = 0u32;
        let mut cut = false;
        'blocks: for &(block, bits) in blocks {
            if block < 0 || bits < 0 {
                return Err(corrupt(format!(
                    "job {}: log_stream_blocks holds block {block} bits {bits}",
                    self.job_id
                )));
            }
            for bit in 0..BLOCK_SEQS {
                if bits & (1 << bit) == 0 {
                    continue;
                }
                let seq = block.saturating_mul(BLOCK_SEQS).saturating_add(bit);
                if seq <= self.after {
                    continue;
                }
                if seq > self.until || seqs >= self.remaining {
                    cut = true;
                    break 'blocks;
                }
                seqs += 1;
                match ranges.last_mut() {
                    Some((_, end)) if *end + 1 == seq => *end = seq,
                    _ => ranges.push((seq, seq)),
                }
            }
        }
        if !cut {
            if blocks.len() < BLOCKS_PER_ROUND {
                self.done = true;
            }
            if let Some(&(block, _)) = blocks.last() {
                // Every seq of the blocks read is decided this round.
                let end = block
                    .saturating_mul(BLOCK_SEQS)
                    .saturating_add(BLOCK_SEQS - 1);
                self.after = self.after.max(end.min(self.until));
            }
        } else {
            // Past the read's end, or as many seqs as the read still wants: the last round.
            self.done = true;
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
    fn blocks_hold_each_streams_bits() {
        let lines: Vec<NewLine> = (1..=130)
            .map(|s| {
                let stream = if s % 2 == 0 {
                    Stream::Stderr
                } else {
                    Stream::Stdout
                };
                line(s, stream)
            })
            .collect();
        let blocks = blocks_of(&lines).unwrap();
        // Seqs 1..=62 in block 0, 63..=125 in block 1, 126..=130 in block 2; each stream.
        assert_eq!(blocks.len(), 6);
        let odd_in_0: i64 = (1..63).filter(|s| s % 2 == 1).map(|s| 1i64 << s).sum();
        assert_eq!(blocks[0], (1, 0, odd_in_0));
        assert!(blocks.iter().all(|&(_, _, bits)| bits > 0));
        assert!(blocks_of(&[]).unwrap().is_empty());
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
    fn ranges_follow_the_bits_the_cursor_the_end_and_the_limit() {
        let mut read = StreamRead::new(&query(5, 100), Stream::Stderr, Some(70));
        let (_, params) = read.blocks_query().unwrap();
        assert_eq!(params[2], Param::Int(0));
        // Block 0: seqs 3..=9 and 20; block 1: seqs 63..=65 and 120 (past the end).
        let b0: i64 = (3..=9).map(|s| 1i64 << s).sum::<i64>() + (1 << 20);
        let b1: i64 = (0..=2).map(|b| 1i64 << b).sum::<i64>() + (1 << (120 - 63));
        assert_eq!(
            read.ranges(&[(0, b0), (1, b1)]).unwrap(),
            vec![(6, 9), (20, 20), (63, 65)]
        );
        read.read(8, false);
        assert!(read.blocks_query().is_none());
        assert!(read.ranges(&[(0, -1)]).is_err());

        // The limit cuts a round: the next starts after the last seq handed out.
        let mut read = StreamRead::new(&query(0, 3), Stream::Stderr, None);
        let all: i64 = (1..BLOCK_SEQS).map(|b| 1i64 << b).sum();
        assert_eq!(read.ranges(&[(0, all)]).unwrap(), vec![(1, 3)]);
        read.read(3, false);
        assert!(read.blocks_query().is_none());
    }

    #[test]
    fn a_full_round_moves_the_cursor_past_its_blocks() {
        let mut read = StreamRead::new(&query(0, 10_000), Stream::Stderr, None);
        let blocks: Vec<(i64, i64)> = (0..BLOCKS_PER_ROUND as i64).map(|b| (b, 1 << 1)).collect();
        let ranges = read.ranges(&blocks).unwrap();
        assert_eq!(ranges.len(), BLOCKS_PER_ROUND);
        read.read(BLOCKS_PER_ROUND as u32, false);
        let (_, params) = read.blocks_query().unwrap();
        assert_eq!(params[2], Param::Int(BLOCKS_PER_ROUND as i64));
        assert!(StreamRead::new(&query(0, 0), Stream::Stderr, None)
            .blocks_query()
            .is_none());
    }
}
