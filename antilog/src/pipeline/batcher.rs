//! Groups items into batches. A segment is a run of contiguous items of one container in
//! the order meta -> records -> exit; a new segment starts when the container changes or
//! the current one cannot take the item (a second meta, anything after an exit).
//!
//! A batch is sent when it reaches `max_records`, would exceed `max_bytes`, or its first
//! item is `max_age` old. The channel to the shipper holds one batch, so one can be in
//! flight while the next fills; when both are taken the batcher stops reading items, and
//! the followers stop reading Docker (backpressure).

use std::sync::Arc;
use std::time::Duration;

use protocol::{Agent, Batch, ContainerSegment, PROTOCOL_VERSION};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{Item, ItemKind, OutBatch};
use crate::checkpoint::{Effect, ExitMark};

/// JSON framing per record (`{"seq":..,"ts":..,"stream":"stdout","text":""}`), counted
/// with the payload so batches of tiny lines stay bounded too.
const RECORD_OVERHEAD: usize = 64;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_records: usize,
    pub max_bytes: usize,
    pub max_age: Duration,
}

#[derive(Debug)]
struct Builder {
    agent: Agent,
    segments: Vec<ContainerSegment>,
    effects: Vec<(Arc<str>, Effect)>,
    records: usize,
    bytes: usize,
}

fn item_bytes(kind: &ItemKind) -> usize {
    match kind {
        ItemKind::Record { record, .. } => record.payload_len() + RECORD_OVERHEAD,
        ItemKind::Records { records, .. } => records
            .iter()
            .map(|(r, _)| r.payload_len() + RECORD_OVERHEAD)
            .sum(),
        ItemKind::Meta(m) => {
            256 + m.name.len()
                + m.image.len()
                + m.labels
                    .iter()
                    .chain(&m.annotations)
                    .map(|(k, v)| k.len() + v.len() + 8)
                    .sum::<usize>()
        }
        ItemKind::Exit(_) => 128,
        ItemKind::Unavailable(r) => 64 + r.len(),
        ItemKind::Forget => 0,
    }
}

impl Builder {
    fn new(agent: Agent) -> Builder {
        Builder {
            agent,
            segments: Vec::new(),
            effects: Vec::new(),
            records: 0,
            bytes: 0,
        }
    }

    fn is_empty(&self) -> bool {
        self.segments.is_empty() && self.effects.is_empty()
    }

    fn full(&self, l: &Limits) -> bool {
        self.records >= l.max_records || self.bytes >= l.max_bytes
    }

    /// Whether `item` fits; an empty batch takes anything (an oversized record goes alone).
    fn fits(&self, item: &Item, l: &Limits) -> bool {
        self.segments.is_empty() || self.bytes + item_bytes(&item.kind) <= l.max_bytes
    }

    /// Adds what of `item` fits (see [`Builder::fits`]; of a run of records, as many as
    /// fit by count and bytes) and returns the rest, which opens the next batch. True when
    /// something was added.
    fn offer(&mut self, item: Item, l: &Limits) -> (bool, Option<Item>) {
        let Item {
            container_id,
            kind:
                ItemKind::Records {
                    records: mut run,
                    room,
                },
        } = item
        else {
            if self.fits(&item, l) {
                self.add(item);
                return (true, None);
            }
            return (false, Some(item));
        };
        let free = l.max_records.saturating_sub(self.records);
        let mut bytes = self.bytes;
        let mut n = 0;
        for (r, _) in &run {
            let b = r.payload_len() + RECORD_OVERHEAD;
            // An empty batch takes one record whatever its size.
            let first = n == 0 && self.segments.is_empty();
            if !first && (n >= free || bytes + b > l.max_bytes) {
                break;
            }
            bytes += b;
            n += 1;
        }
        // The room stays taken while some of the run waits.
        let (rest, room) = if n < run.len() {
            let rest = Item {
                container_id: container_id.clone(),
                kind: ItemKind::Records {
                    records: run.split_off(n),
                    room,
                },
            };
            (Some(rest), None)
        } else {
            (None, room)
        };
        if n > 0 {
            // Their size is known from the loop above.
            let added = bytes - self.bytes;
            self.add_sized(
                Item {
                    container_id,
                    kind: ItemKind::Records { records: run, room },
                },
                added,
            );
        }
        (n > 0, rest)
    }

    /// The segment to append to: the last one if it is this container's and `ok` says it
    /// can take the item, else a new one.
    fn segment(
        &mut self,
        id: &Arc<str>,
        ok: impl Fn(&ContainerSegment) -> bool,
    ) -> &mut ContainerSegment {
        let reuse = matches!(self.segments.last(), Some(s) if *s.container_id == **id && ok(s));
        if !reuse {
            self.segments.push(ContainerSegment {
                container_id: id.to_string(),
                meta: None,
                records: Vec::new(),
                exit: None,
                logs_unavailable: None,
            });
        }
        let n = self.segments.len() - 1;
        &mut self.segments[n]
    }

    fn push_effect(&mut self, id: &Arc<str>, effect: Effect) {
        // Consecutive cuts of one container: only the last matters.
        if let (Effect::Cut(_), Some((last_id, last @ Effect::Cut(_)))) =
            (&effect, self.effects.last_mut())
        {
            if last_id == id {
                *last = effect;
                return;
            }
        }
        self.effects.push((id.clone(), effect));
    }

    fn add(&mut self, item: Item) {
        let size = item_bytes(&item.kind);
        self.add_sized(item, size);
    }

    /// [`Builder::add`] of an item whose [`item_bytes`] are `size`.
    fn add_sized(&mut self, item: Item, size: usize) {
        self.bytes += size;
        let id = item.container_id;
        match item.kind {
            ItemKind::Meta(meta) => {
                let seg = self.segment(&id, |s| {
                    s.meta.is_none()
                        && s.records.is_empty()
                        && s.exit.is_none()
                        && s.logs_unavailable.is_none()
                });
                let run = meta.restart_count;
                seg.meta = Some(meta);
                self.push_effect(&id, Effect::Run(run));
            }
            ItemKind::Record { record, cut } => {
                let seg = self.segment(&id, |s| s.exit.is_none() && s.logs_unavailable.is_none());
                seg.records.push(record);
                self.records += 1;
                if let Some(pos) = cut {
                    self.push_effect(&id, Effect::Cut(pos));
                }
            }
            ItemKind::Records { records: run, .. } => {
                self.records += run.len();
                let seg = self.segment(&id, |s| s.exit.is_none() && s.logs_unavailable.is_none());
                let mut last_cut = None;
                seg.records.reserve(run.len());
                for (record, cut) in run {
                    seg.records.push(record);
                    last_cut = cut.or(last_cut);
                }
                // Consecutive cuts: only the last matters (as in `push_effect`).
                if let Some(pos) = last_cut {
                    self.push_effect(&id, Effect::Cut(pos));
                }
            }
            ItemKind::Exit(exit) => {
                let mark = ExitMark {
                    restart_count: exit.restart_count,
                    finished_at: exit.finished_at,
                };
                let seg = self.segment(&id, |s| s.exit.is_none());
                seg.exit = Some(exit);
                self.push_effect(&id, Effect::Exit(mark));
            }
            ItemKind::Unavailable(reason) => {
                let seg = self.segment(&id, |s| s.exit.is_none() && s.logs_unavailable.is_none());
                seg.logs_unavailable = Some(reason);
            }
            ItemKind::Forget => self.push_effect(&id, Effect::Forget),
        }
    }

    fn take(&mut self) -> OutBatch {
        let out = OutBatch {
            batch: Batch {
                version: PROTOCOL_VERSION,
                agent: self.agent.clone(),
                segments: std::mem::take(&mut self.segments),
            },
            effects: std::mem::take(&mut self.effects),
            records: self.records,
        };
        self.records = 0;
        self.bytes = 0;
        out
    }
}

/// Runs until every sender of `rx` is gone, then sends what is left and returns.
pub async fn run(
    mut rx: mpsc::Receiver<Item>,
    tx: mpsc::Sender<OutBatch>,
    agent: Agent,
    limits: Limits,
) {
    let mut cur = Builder::new(agent);
    // An item that did not fit in `cur`: it opens the next batch.
    let mut held: Option<Item> = None;
    let mut deadline: Option<Instant> = None;
    let mut open = true;
    loop {
        if let Some(item) = held.take() {
            let (added, rest) = cur.offer(item, &limits);
            if added {
                deadline.get_or_insert_with(|| Instant::now() + limits.max_age);
            }
            held = rest;
        }
        let full = held.is_some() || cur.full(&limits);
        let aged = deadline.is_some_and(|d| Instant::now() >= d);
        if !cur.is_empty() && (full || aged || !open) {
            if full || !open {
                let Ok(permit) = tx.reserve().await else {
                    tracing::warn!("shipper is gone; dropping the rest of the pipeline");
                    return;
                };
                permit.send(cur.take());
                deadline = None;
                continue;
            }
            // Old enough but not full: send it when the shipper has room, and until then
            // let it grow (better batching while a request is in flight).
            tokio::select! {
                permit = tx.reserve() => {
                    let Ok(permit) = permit else {
                        tracing::warn!("shipper is gone; dropping the rest of the pipeline");
                        return;
                    };
                    permit.send(cur.take());
                    deadline = None;
                }
                item = rx.recv() => match item {
                    Some(item) => held = cur.offer(item, &limits).1,
                    None => open = false,
                },
            }
            continue;
        }
        if !open {
            return;
        }
        tokio::select! {
            item = rx.recv() => match item {
                Some(item) => {
                    let (added, rest) = cur.offer(item, &limits);
                    if added {
                        deadline.get_or_insert_with(|| Instant::now() + limits.max_age);
                    }
                    held = rest;
                }
                None => open = false,
            },
            _ = sleep_until_opt(deadline) => {}
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::checkpoint::Position;
    use protocol::{ContainerExit, ContainerMeta, Record, Stream};

    fn agent() -> Agent {
        Agent {
            id: "a".into(),
            node: "n".into(),
        }
    }

    /// A container's meta for tests.
    pub(crate) fn meta() -> ContainerMeta {
        ContainerMeta {
            name: "c".into(),
            image: "i".into(),
            labels: Default::default(),
            annotations: Default::default(),
            created_at: 1,
            started_at: 2,
            restart_count: 0,
            tty: false,
            log_driver: "json-file".into(),
        }
    }

    fn rec(id: &Arc<str>, seq: u64, len: usize) -> Item {
        Item {
            container_id: id.clone(),
            kind: ItemKind::Record {
                record: Record::new(seq, 1, Stream::Stdout, vec![b'x'; len], false),
                cut: None,
            },
        }
    }

    #[tokio::test]
    async fn segments_follow_container_and_lifecycle_order() {
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let (tx, rx) = mpsc::channel(100);
        let (btx, mut brx) = mpsc::channel(1);
        let limits = Limits {
            max_records: 100,
            max_bytes: 1 << 20,
            max_age: Duration::from_secs(60),
        };
        let task = tokio::spawn(run(rx, btx, agent(), limits));
        let exit = ContainerExit {
            exit_code: Some(3),
            finished_at: 5,
            last_seq: 2,
            restart_count: 0,
            reason: None,
        };
        for item in [
            Item {
                container_id: a.clone(),
                kind: ItemKind::Meta(meta()),
            },
            rec(&a, 1, 1),
            Item {
                container_id: b.clone(),
                kind: ItemKind::Meta(meta()),
            },
            rec(&a, 2, 1),
            Item {
                container_id: a.clone(),
                kind: ItemKind::Exit(exit.clone()),
            },
            Item {
                container_id: a.clone(),
                kind: ItemKind::Meta(meta()),
            },
            rec(&a, 3, 1),
            Item {
                container_id: b.clone(),
                kind: ItemKind::Forget,
            },
        ] {
            tx.send(item).await.unwrap();
        }
        drop(tx);
        let out = brx.recv().await.unwrap();
        task.await.unwrap();
        let segs: Vec<(&str, bool, Vec<u64>, bool)> = out
            .batch
            .segments
            .iter()
            .map(|s| {
                (
                    s.container_id.as_str(),
                    s.meta.is_some(),
                    s.records.iter().map(|r| r.seq).collect(),
                    s.exit.is_some(),
                )
            })
            .collect();
        assert_eq!(
            segs,
            vec![
                ("a", true, vec![1], false),
                ("b", true, vec![], false),
                ("a", false, vec![2], true),
                ("a", true, vec![3], false),
            ]
        );
        assert_eq!(out.records, 3);
        assert_eq!(out.effects.last().unwrap().1, Effect::Forget);
        assert!(brx.recv().await.is_none());
    }

    #[tokio::test]
    async fn batches_are_bounded_by_records_and_bytes() {
        let a: Arc<str> = "a".into();
        let (tx, rx) = mpsc::channel(100);
        let (btx, mut brx) = mpsc::channel(1);
        let limits = Limits {
            max_records: 3,
            max_bytes: 2 * (RECORD_OVERHEAD + 100),
            max_age: Duration::from_secs(60),
        };
        tokio::spawn(run(rx, btx, agent(), limits));
        let feeder = tokio::spawn(async move {
            for seq in 1..=4 {
                tx.send(rec(&a, seq, 10)).await.unwrap();
            }
            for seq in 5..=7 {
                tx.send(rec(&a, seq, 100)).await.unwrap();
            }
            // A record bigger than max_bytes still goes, alone.
            tx.send(rec(&a, 8, 1000)).await.unwrap();
        });
        let mut sizes = Vec::new();
        while let Some(b) = brx.recv().await {
            sizes.push(
                b.batch
                    .segments
                    .iter()
                    .map(|s| s.records.len())
                    .sum::<usize>(),
            );
        }
        feeder.await.unwrap();
        // [1,2,3] full by count; [4,5] as 6 would exceed the bytes; [6,7] full by bytes.
        assert_eq!(sizes, vec![3, 2, 2, 1]);
    }

    #[tokio::test]
    async fn runs_of_records_are_split_at_batch_limits() {
        let a: Arc<str> = "a".into();
        let (tx, rx) = mpsc::channel(100);
        let (btx, mut brx) = mpsc::channel(1);
        let limits = Limits {
            max_records: 3,
            max_bytes: 2 * (RECORD_OVERHEAD + 100),
            max_age: Duration::from_secs(60),
        };
        tokio::spawn(run(rx, btx, agent(), limits));
        let run_of = |seqs: std::ops::RangeInclusive<u64>, len: usize| Item {
            container_id: a.clone(),
            kind: ItemKind::Records {
                records: seqs
                    .map(|seq| {
                        let cut = Position {
                            seq,
                            ..Default::default()
                        };
                        let record = Record::new(seq, 1, Stream::Stdout, vec![b'x'; len], false);
                        (record, Some(cut))
                    })
                    .collect(),
                room: None,
            },
        };
        // [1,2,3] full by count; [4,5] as 6 would exceed the bytes; then 6, 7 and 8 of
        // 214 bytes each alone (two exceed the bytes): a run is split where a batch ends.
        tx.send(run_of(1..=5, 10)).await.unwrap();
        tx.send(run_of(6..=8, 150)).await.unwrap();
        drop(tx);
        let mut got = Vec::new();
        while let Some(b) = brx.recv().await {
            let seqs: Vec<u64> = b
                .batch
                .segments
                .iter()
                .flat_map(|s| s.records.iter().map(|r| r.seq))
                .collect();
            // Each batch's cut is its last record's.
            let cuts: Vec<u64> = b
                .effects
                .iter()
                .map(|(_, e)| match e {
                    Effect::Cut(p) => p.seq,
                    other => panic!("{other:?}"),
                })
                .collect();
            assert_eq!(cuts, vec![*seqs.last().unwrap()]);
            assert_eq!(b.records, seqs.len());
            got.push(seqs);
        }
        assert_eq!(
            got,
            vec![vec![1, 2, 3], vec![4, 5], vec![6], vec![7], vec![8]]
        );
    }

    #[tokio::test]
    async fn a_partial_batch_leaves_after_max_age() {
        let a: Arc<str> = "a".into();
        let (tx, rx) = mpsc::channel(100);
        let (btx, mut brx) = mpsc::channel(1);
        let limits = Limits {
            max_records: 100,
            max_bytes: 1 << 20,
            max_age: Duration::from_millis(200),
        };
        tokio::spawn(run(rx, btx, agent(), limits));
        tx.send(rec(&a, 1, 1)).await.unwrap();
        let t0 = Instant::now();
        let b = brx.recv().await.unwrap();
        assert_eq!(b.records, 1);
        assert!(t0.elapsed() >= Duration::from_millis(200));
        drop(tx);
    }
}
