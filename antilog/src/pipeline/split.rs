//! Splitting a batch logarithmd refused, to isolate the refused parts (see
//! [`super::shipper`]). Pure functions on [`protocol::Batch`].
//!
//! A batch is a list of *units*, in order: per segment, its meta, each record, then its
//! end (exit and `logs_unavailable` together). [`split`] cuts a batch of two or more units
//! into two halves that keep that order: sending the halves one after the other stores
//! exactly what sending the whole would have. A batch of one unit cannot be split: if
//! logarithmd refuses it, that unit is the refused part.

use protocol::{Batch, ContainerSegment};

fn segment_units(s: &ContainerSegment) -> usize {
    let units = usize::from(s.meta.is_some())
        + s.records.len()
        + usize::from(s.exit.is_some() || s.logs_unavailable.is_some());
    // A segment with nothing in it still travels (and can be refused) as one unit.
    units.max(1)
}

/// The units of a batch.
pub fn units(batch: &Batch) -> usize {
    batch.segments.iter().map(segment_units).sum()
}

/// Splits a batch of two or more units in two halves (by units, in order); `None` for a
/// batch of one unit or none.
pub fn split(batch: Batch) -> Option<(Batch, Batch)> {
    let total = units(&batch);
    if total < 2 {
        return None;
    }
    let mut left_units = total / 2;
    let Batch {
        version,
        agent,
        segments,
    } = batch;
    let mut left = Vec::new();
    let mut right = Vec::new();
    for seg in segments {
        let n = segment_units(&seg);
        if left_units >= n {
            left_units -= n;
            left.push(seg);
        } else if left_units == 0 {
            right.push(seg);
        } else {
            let (a, b) = split_segment(seg, left_units);
            left_units = 0;
            left.push(a);
            right.push(b);
        }
    }
    let half = |segments| Batch {
        version,
        agent: agent.clone(),
        segments,
    };
    Some((half(left), half(right)))
}

/// The first `j` units of a segment (0 < j < its units) and the rest.
fn split_segment(mut seg: ContainerSegment, mut j: usize) -> (ContainerSegment, ContainerSegment) {
    let mut a = ContainerSegment {
        container_id: seg.container_id.clone(),
        meta: None,
        records: Vec::new(),
        exit: None,
        logs_unavailable: None,
    };
    if seg.meta.is_some() {
        a.meta = seg.meta.take();
        j -= 1;
    }
    let r = j.min(seg.records.len());
    a.records = seg.records.drain(..r).collect();
    // The end (exit, logs_unavailable) is the last unit: it always stays in the rest.
    (a, seg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{Agent, ContainerExit, ContainerMeta, Record, Stream};

    fn seg(
        id: &str,
        meta: bool,
        seqs: std::ops::RangeInclusive<u64>,
        exit: bool,
    ) -> ContainerSegment {
        ContainerSegment {
            container_id: id.into(),
            meta: meta.then(|| ContainerMeta {
                name: "n".into(),
                image: "i".into(),
                labels: Default::default(),
                annotations: Default::default(),
                created_at: 1,
                started_at: 2,
                restart_count: 0,
                tty: false,
                log_driver: "json-file".into(),
            }),
            records: seqs
                .map(|s| Record::new(s, s as i64, Stream::Stdout, b"x".to_vec(), false))
                .collect(),
            exit: exit.then_some(ContainerExit {
                exit_code: Some(0),
                finished_at: 9,
                last_seq: 9,
                restart_count: 0,
                reason: None,
            }),
            logs_unavailable: None,
        }
    }

    fn batch(segments: Vec<ContainerSegment>) -> Batch {
        Batch {
            version: 1,
            agent: Agent {
                id: "a".into(),
                node: "n".into(),
            },
            segments,
        }
    }

    /// (container, meta, seqs, exit) of each segment.
    fn shape(b: &Batch) -> Vec<(String, bool, Vec<u64>, bool)> {
        b.segments
            .iter()
            .map(|s| {
                (
                    s.container_id.clone(),
                    s.meta.is_some(),
                    s.records.iter().map(|r| r.seq).collect(),
                    s.exit.is_some(),
                )
            })
            .collect()
    }

    #[test]
    fn halves_keep_every_unit_in_order() {
        // a: meta, 1..=4, exit (6 units); b: 1..=3 (3 units) -> 9 units, 4 | 5.
        let b = batch(vec![
            seg("a", true, 1..=4, true),
            seg("b", false, 1..=3, false),
        ]);
        assert_eq!(units(&b), 9);
        let (l, r) = split(b).unwrap();
        assert_eq!(shape(&l), vec![("a".into(), true, vec![1, 2, 3], false)]);
        assert_eq!(
            shape(&r),
            vec![
                ("a".into(), false, vec![4], true),
                ("b".into(), false, vec![1, 2, 3], false)
            ]
        );
        assert_eq!((units(&l), units(&r)), (4, 5));
    }

    #[test]
    fn repeated_splits_end_in_single_units() {
        let b = batch(vec![seg("a", true, 1..=7, true)]);
        let mut queue = vec![b];
        let mut leaves = Vec::new();
        while let Some(b) = queue.pop() {
            match split(b.clone()) {
                Some((l, r)) => {
                    queue.push(r);
                    queue.push(l);
                }
                None => leaves.push(shape(&b)),
            }
        }
        let mut expected = vec![vec![("a".to_string(), true, vec![], false)]];
        for s in 1..=7 {
            expected.push(vec![("a".to_string(), false, vec![s], false)]);
        }
        expected.push(vec![("a".to_string(), false, vec![], true)]);
        assert_eq!(leaves, expected);
        assert!(split(batch(vec![seg("a", false, 1..=1, false)])).is_none());
        assert!(split(batch(vec![])).is_none());
    }
}
