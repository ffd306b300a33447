//! A value cut in two where a continued line is split between two batches.
//!
//! Within a batch the records of a line are joined and masked whole. A line longer than
//! the agent's `max_line_bytes` can be split across batches, and a value can fall on that
//! cut: `aaaa hunter2-` stored now, `secret bbbb` in the next batch. Neither batch holds
//! the whole value, so neither would match. Joining them later would mean storing the
//! first piece until the second arrives; holding the first piece in memory instead would
//! lose it if logarithmd stopped after acknowledging the batch.
//!
//! So each side of such a cut is masked on its own, failing closed: the end of a line that
//! goes on in a later batch loses its longest suffix that is the beginning of a value
//! (`aaaa ***`), and the beginning of a line that began in an earlier batch loses its
//! longest prefix that is the end of a value (`*** bbbb`). A piece of a value is never
//! stored. The cost: text at such a cut that merely looks like the start (or the end) of a
//! value is masked too (at most the value's length minus one byte, at cuts between
//! batches only); a record that lies wholly inside a value is masked whole. Regexes are
//! not applied across the cut.
//!
//! Whether a batch's first record continues a line is known from the record before it:
//! [`OpenLines`] remembers the last record seen of each container, and storage answers for
//! the containers it has forgotten (after a restart). When neither knows, the record is
//! taken as a continuation (fail closed).

use std::sync::Mutex;

use storage::{JobWrite, LineQuery, Storage};

use super::bounded::Bounded;
use super::MASK;

/// Containers whose last record [`OpenLines`] remembers (per generation).
const OPEN_LINES_MAX: usize = 16_384;

/// Longest `k` (shorter than the value) such that `line` ends with the first `k` bytes of
/// one of `literals`.
fn tail_fragment(literals: &[Vec<u8>], line: &[u8]) -> usize {
    let mut best = 0;
    for a in literals {
        let max = a.len().saturating_sub(1).min(line.len());
        if let Some(k) = (best + 1..=max).rev().find(|&k| line.ends_with(&a[..k])) {
            best = k;
        }
    }
    best
}

/// Longest `k` (shorter than the value) such that `line` begins with the last `k` bytes
/// of one of `literals`.
pub fn head_fragment(literals: &[Vec<u8>], line: &[u8]) -> usize {
    let mut best = 0;
    for a in literals {
        let max = a.len().saturating_sub(1).min(line.len());
        if let Some(k) = (best + 1..=max)
            .rev()
            .find(|&k| line.starts_with(&a[a.len() - k..]))
        {
            best = k;
        }
    }
    best
}

/// `line` (already masked) with its edges masked: `head`, it began in an earlier batch;
/// `tail`, it goes on in a later one. `None` when nothing changes.
pub fn mask_edges(literals: &[Vec<u8>], line: &[u8], head: bool, tail: bool) -> Option<Vec<u8>> {
    // A record open at both ends that lies inside a value (a value longer than a record).
    if head
        && tail
        && literals
            .iter()
            .any(|a| a.len() > line.len() && a.windows(line.len()).any(|w| w == line))
    {
        return Some(MASK.to_vec());
    }
    let j = if head {
        head_fragment(literals, line)
    } else {
        0
    };
    let k = if tail {
        tail_fragment(literals, line)
    } else {
        0
    };
    if j == 0 && k == 0 {
        return None;
    }
    if j + k >= line.len() {
        return Some(MASK.to_vec());
    }
    let mut out = Vec::with_capacity(line.len() + 2 * MASK.len());
    if j > 0 {
        out.extend_from_slice(MASK);
    }
    out.extend_from_slice(&line[j..line.len() - k]);
    if k > 0 {
        out.extend_from_slice(MASK);
    }
    Some(out)
}

/// The last record seen of each container: its seq and whether its line goes on.
#[derive(Debug)]
pub struct OpenLines {
    last: Mutex<Bounded<String, (u64, bool)>>,
}

impl Default for OpenLines {
    fn default() -> OpenLines {
        OpenLines {
            last: Mutex::new(Bounded::new(OPEN_LINES_MAX)),
        }
    }
}

impl OpenLines {
    /// Whether the job's first record continues a line of an earlier batch. `lookup`:
    /// whether to ask storage when memory does not know (otherwise: not a continuation).
    /// Remembers the job's last record either way.
    pub async fn continues(
        &self,
        storage: &dyn Storage,
        job: &JobWrite,
        lookup: bool,
    ) -> storage::Result<bool> {
        let (Some(first), Some(last)) = (job.lines.first(), job.lines.last()) else {
            return Ok(false);
        };
        let known = {
            let mut m = self.last.lock().unwrap_or_else(|p| p.into_inner());
            let known = m
                .get(&job.container_id)
                .filter(|(seq, _)| *seq + 1 == first.seq)
                .map(|(_, cont)| cont);
            m.insert(job.container_id.clone(), (last.seq, last.cont));
            known
        };
        if let Some(cont) = known {
            return Ok(cont);
        }
        if first.seq <= 1 || !lookup {
            return Ok(false);
        }
        let before = storage
            .read_lines(&LineQuery {
                job_id: storage::job_id_for_container(&job.container_id),
                after_seq: first.seq - 2,
                limit: 1,
                stream: None,
            })
            .await?;
        Ok(match before.first() {
            Some(l) if l.seq + 1 == first.seq => l.cont,
            // Not stored (yet: an earlier batch still on its way): fail closed.
            _ => true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lits() -> Vec<Vec<u8>> {
        vec![b"hunter2-secret".to_vec()]
    }

    #[test]
    fn each_side_of_a_cut_value_is_masked() {
        let l = lits();
        assert_eq!(
            mask_edges(&l, b"aaaa hunter2-", false, true).as_deref(),
            Some(b"aaaa ***".as_slice())
        );
        assert_eq!(
            mask_edges(&l, b"secret bbbb", true, false).as_deref(),
            Some(b"*** bbbb".as_slice())
        );
        // A record inside the value, open at both ends.
        assert_eq!(
            mask_edges(&l, b"ter2-", true, true).as_deref(),
            Some(b"***".as_slice())
        );
        // Text that merely looks like a piece of the value at a cut is masked too (the
        // value ends with "t").
        assert_eq!(
            mask_edges(&l, b"text", true, false).as_deref(),
            Some(b"***ext".as_slice())
        );
        assert_eq!(
            mask_edges(&l, b"hunter2", true, true).as_deref(),
            Some(b"***".as_slice())
        );
        // Not at a cut: nothing changes, whatever the text.
        assert_eq!(mask_edges(&l, b"aaaa hunter2-", false, false), None);
        assert_eq!(mask_edges(&l, b"plain text", true, true), None);
    }
}
