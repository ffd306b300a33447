//! Unit tests of the spool: real files in a temporary directory.

use std::io::Write as _;

use protocol::{Agent, Batch, ContainerSegment, Record, Stream};

use super::segment::{self, FrameMeta, ReadOutcome};
use super::*;
use crate::checkpoint::{CheckpointStore, Effect, Position};
use crate::pipeline::shipper::acknowledged;

/// Captures log output (tracing) of the current thread.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&lock(&self.0)).into_owned()
    }
}

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        lock(&self.0).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
    let logs = Logs::default();
    let sub = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    (logs.clone(), tracing::subscriber::set_default(sub))
}

const BIG: Limits = Limits {
    max_bytes: 1 << 30,
    segment_bytes: 32 << 20,
};

fn open_in(dir: &Path, limits: Limits) -> (SpoolWriter, SpoolReader) {
    open(dir, limits, Arc::new(Metrics::new())).unwrap()
}

fn frame(n: u32, body_len: usize) -> Vec<u8> {
    frame_with(n, body_len, &[])
}

fn frame_with(n: u32, body_len: usize, effects: &[(Arc<str>, Effect)]) -> Vec<u8> {
    let mut body = format!("frame {n} ").into_bytes();
    body.resize(body_len.max(body.len()), b'.');
    segment::encode_frame(
        &FrameMeta {
            compression: Compression::None,
            records: n,
            newest_ts: i64::from(n),
        },
        effects,
        &[],
        &body,
    )
    .unwrap()
}

fn cut(seq: u64) -> Effect {
    Effect::Cut(Position {
        seq,
        ts: seq as i64,
        at_ts: 1,
        file: None,
    })
}

/// The numbers (`records`) of the frames the reader hands out, acknowledging each.
fn drain(r: &mut SpoolReader) -> Vec<u32> {
    let mut out = Vec::new();
    while let Next::Frame(f) = r.try_next().unwrap() {
        out.push(f.meta.records);
        r.ack();
    }
    out
}

fn segment_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".seg"))
        .collect();
    v.sort();
    v
}

#[test]
fn append_read_ack_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, mut r) = open_in(dir.path(), BIG);
    for n in 1..=3 {
        w.append(&frame(n, 10)).unwrap();
    }
    // Not durable yet: invisible to the reader.
    assert!(matches!(r.try_next().unwrap(), Next::Empty));
    w.sync().unwrap();
    let Next::Frame(f) = r.try_next().unwrap() else {
        panic!("frame 1")
    };
    assert_eq!(f.meta.records, 1);
    assert_eq!(&f.body[..8], b"frame 1 ");
    r.ack();
    // Frame 2 is handed out but never acknowledged (the agent dies while sending it).
    let Next::Frame(f) = r.try_next().unwrap() else {
        panic!("frame 2")
    };
    assert_eq!(f.meta.records, 2);
    drop((w, r));

    let (w, mut r) = open_in(dir.path(), BIG);
    assert_eq!(drain(&mut r), vec![2, 3]);
    assert!(matches!(r.try_next().unwrap(), Next::Empty));
    drop(w);
    assert!(matches!(r.try_next().unwrap(), Next::Closed));
    drop(r);

    // Everything acknowledged: a third start delivers nothing again.
    let (_w, mut r) = open_in(dir.path(), BIG);
    assert_eq!(drain(&mut r), Vec::<u32>::new());
    // Delivered segments are gone; only this session's (empty) one is left.
    assert_eq!(segment_files(dir.path()).len(), 1);
}

#[test]
fn frames_in_flight_are_acknowledged_in_order_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_bytes: 1 << 20,
        segment_bytes: 4096,
    };
    let (mut w, mut r) = open_in(dir.path(), limits);
    for n in 1..=10 {
        w.append(&frame(n, 1000)).unwrap();
    }
    w.sync().unwrap();
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 3, "4 frames a segment: {files:?}");
    // Six frames handed out before any acknowledgement, in order.
    let mut out = Vec::new();
    for _ in 0..6 {
        let Next::Frame(f) = r.try_next().unwrap() else {
            panic!("frame")
        };
        out.push(f.meta.records);
    }
    assert_eq!(out, vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(r.in_flight(), 6);
    // Acknowledging the first four (the whole first segment) deletes it.
    for _ in 0..4 {
        r.ack();
    }
    assert_eq!(r.in_flight(), 2);
    assert_eq!(segment_files(dir.path()), files[1..].to_vec());
    // The agent dies with frames 5 and 6 in flight: they are delivered again.
    drop((w, r));
    let (_w, mut r) = open_in(dir.path(), limits);
    assert_eq!(drain(&mut r), vec![5, 6, 7, 8, 9, 10]);
}

#[test]
fn segments_rotate_and_are_deleted_once_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_bytes: 1 << 20,
        segment_bytes: 4096,
    };
    let (mut w, mut r) = open_in(dir.path(), limits);
    // Keep one frame unacknowledged so the spool is never drained (no early rotation).
    for n in 1..=20 {
        w.append(&frame(n, 1000)).unwrap();
    }
    w.sync().unwrap();
    let files = segment_files(dir.path());
    assert!(files.len() >= 5, "rotated by size: {files:?}");
    let stats = w.shared().stats();
    assert_eq!(stats.segments, files.len() as u64);
    let on_disk: u64 = files
        .iter()
        .map(|f| std::fs::metadata(dir.path().join(f)).unwrap().len())
        .sum();
    assert_eq!(stats.bytes, on_disk);
    assert_eq!(drain(&mut r), (1..=20).collect::<Vec<_>>());
    // Everything before the writer's segment is deleted.
    assert_eq!(segment_files(dir.path()).len(), 1);
    assert_eq!(w.shared().stats().segments, 1);
}

#[test]
fn the_limit_holds_and_room_comes_back_with_acknowledgements() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_bytes: 16 << 10,
        segment_bytes: 4 << 10,
    };
    let (mut w, mut r) = open_in(dir.path(), limits);
    let f = frame(0, 1000);
    let mut n = 0;
    while w.shared().has_room(f.len() as u64) {
        w.append(&f).unwrap();
        n += 1;
        assert!(n < 100, "the spool never filled");
    }
    w.sync().unwrap();
    let stats = w.shared().stats();
    assert!(stats.bytes <= limits.max_bytes, "{stats:?}");
    assert!(stats.bytes + f.len() as u64 > limits.max_bytes - HEADER_LEN);
    assert!(n >= 12, "{n} frames fit in 16 KiB");
    // Delivering the first segment frees room.
    let mut delivered = 0;
    while !w.shared().has_room(f.len() as u64) {
        let Next::Frame(_) = r.try_next().unwrap() else {
            panic!("ran out of frames while full")
        };
        // Acknowledging the last frame of a segment deletes it.
        r.ack();
        delivered += 1;
    }
    assert!(delivered <= 4, "one segment holds at most 4 frames");
    // A frame larger than the whole spool goes alone into a drained spool.
    let huge = frame(1, 20 << 10);
    assert!(!w.shared().has_room(huge.len() as u64));
    assert_eq!(drain(&mut r).len(), n - delivered);
    assert!(w.shared().has_room(huge.len() as u64));
    w.append(&huge).unwrap();
    w.sync().unwrap();
    assert_eq!(drain(&mut r), vec![1]);
}

#[test]
fn corrupt_frame_is_reported_by_file_name_and_the_rest_of_its_segment_skipped() {
    let (logs, _guard) = capture();
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_bytes: 1 << 20,
        segment_bytes: 2500,
    };
    let (mut w, r) = open_in(dir.path(), limits);
    let id: Arc<str> = "c1".into();
    for n in 1..=9 {
        let effects = [
            (id.clone(), cut(u64::from(n))),
            (id.clone(), Effect::Forget),
        ];
        w.append(&frame_with(n, 1000, &effects)).unwrap();
    }
    w.sync().unwrap();
    drop((w, r));
    let files = segment_files(dir.path());
    // Three frames per segment: [1,2,3] [4,5,6] [7,8,9] [] (and an empty first one).
    let mut layout = Vec::new();
    for name in &files {
        let f = File::open(dir.path().join(name)).unwrap();
        let len = f.metadata().unwrap().len();
        let mut at = HEADER_LEN;
        let mut frames = Vec::new();
        while let ReadOutcome::Frame(fr, next) = segment::read_frame(&f, at, len).unwrap() {
            frames.push((fr.meta.records, at));
            at = next;
        }
        layout.push((name.clone(), frames));
    }
    let (victim, frames) = layout
        .iter()
        .find(|(_, fr)| fr.first().map(|f| f.0) == Some(4))
        .expect("a segment starting with frame 4");
    assert_eq!(
        frames.iter().map(|f| f.0).collect::<Vec<_>>(),
        vec![4, 5, 6]
    );
    // Flip one byte in the body of frame 5.
    let path = dir.path().join(victim);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[frames[1].1 as usize + 40] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();

    let (_w, mut r) = open_in(dir.path(), limits);
    let mut seen = Vec::new();
    while let Next::Frame(f) = r.try_next().unwrap() {
        assert!(f.replayed, "spooled before this start");
        seen.push((f.meta.records, f.effects));
        r.ack();
    }
    assert_eq!(
        seen.iter().map(|s| s.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 7, 8, 9]
    );
    // Before the damage every effect applies; after it only removals do, so the checkpoint
    // stays before the lost lines (read again from Docker at the next start).
    assert_eq!(
        seen[3].1,
        vec![(id.clone(), cut(4)), (id.clone(), Effect::Forget)]
    );
    for (_, effects) in &seen[4..] {
        assert_eq!(effects, &vec![(id.clone(), Effect::Forget)]);
    }
    let text = logs.text();
    assert!(
        text.contains("ERROR")
            && text.contains(&format!("corrupt spool segment {}", path.display())),
        "the error names the file: {text}"
    );
    assert!(text.contains("checksum mismatch"), "{text}");
    assert!(text.contains("checkpoints stay where they are"), "{text}");
}

#[test]
fn segment_without_header_is_set_aside() {
    let (logs, _guard) = capture();
    let dir = tempfile::tempdir().unwrap();
    let (mut w, r) = open_in(dir.path(), BIG);
    w.append(&frame(1, 10)).unwrap();
    w.sync().unwrap();
    drop((w, r));
    let bogus = dir.path().join(segment::segment_name(7));
    std::fs::write(&bogus, b"not a spool segment").unwrap();
    let (w, mut r) = open_in(dir.path(), BIG);
    assert_eq!(drain(&mut r), vec![1]);
    assert!(!bogus.exists());
    assert!(dir
        .path()
        .join(format!("{}.corrupt", segment::segment_name(7)))
        .exists());
    assert!(logs.text().contains(&bogus.display().to_string()));
    // Set aside, it no longer counts; the writer's segment comes after it.
    assert!(segment_files(dir.path())
        .iter()
        .any(|n| n == &segment::segment_name(8)));
    drop(w);
}

#[test]
fn torn_last_frame_is_truncated_at_start() {
    let (logs, _guard) = capture();
    let dir = tempfile::tempdir().unwrap();
    let (mut w, r) = open_in(dir.path(), BIG);
    for n in 1..=3 {
        w.append(&frame(n, 100)).unwrap();
    }
    w.sync().unwrap();
    let id = w.id;
    drop((w, r));
    let path = dir.path().join(segment::segment_name(id));
    let good_len = std::fs::metadata(&path).unwrap().len();
    // A crash in the middle of the fourth frame.
    let torn = frame(4, 100);
    let mut f = File::options().append(true).open(&path).unwrap();
    f.write_all(&torn[..torn.len() / 2]).unwrap();
    drop(f);

    let (_w, mut r) = open_in(dir.path(), BIG);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), good_len);
    assert!(logs.text().contains("torn last frame"), "{}", logs.text());
    assert_eq!(drain(&mut r), vec![1, 2, 3]);
}

#[test]
fn a_lost_ack_file_means_resending_not_losing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, mut r) = open_in(dir.path(), BIG);
    for n in 1..=3 {
        w.append(&frame(n, 10)).unwrap();
    }
    w.sync().unwrap();
    let Next::Frame(_) = r.try_next().unwrap() else {
        panic!("frame 1")
    };
    r.ack();
    drop((w, r));
    std::fs::write(dir.path().join(segment::ACK_FILE), b"garbage").unwrap();
    let (_w, mut r) = open_in(dir.path(), BIG);
    assert_eq!(drain(&mut r), vec![1, 2, 3]);
}

/// A restart resumes reading after what the spool still holds: the effects of every frame
/// not acknowledged, across segments, in order, and none of those acknowledged.
#[test]
fn undelivered_effects_are_those_of_the_frames_after_the_ack() {
    let dir = tempfile::tempdir().unwrap();
    let small = Limits {
        max_bytes: 1 << 30,
        segment_bytes: 200,
    };
    let (mut w, mut r) = open_in(dir.path(), small);
    let id: Arc<str> = Arc::from("c1");
    for n in 1..=4u32 {
        w.append(&frame_with(n, 150, &[(id.clone(), cut(u64::from(n)))]))
            .unwrap();
        w.sync().unwrap();
    }
    let Next::Frame(_) = r.try_next().unwrap() else {
        panic!("frame 1")
    };
    r.ack();
    drop((w, r));
    let (_w, r) = open_in(dir.path(), small);
    let got: Vec<Effect> = r
        .undelivered_effects()
        .unwrap()
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    assert_eq!(got, vec![cut(2), cut(3), cut(4)]);
}

fn agent() -> Agent {
    Agent {
        id: "a".into(),
        node: "n".into(),
    }
}

fn out_batch(id: &Arc<str>, seqs: std::ops::RangeInclusive<u64>, line_len: usize) -> OutBatch {
    let records: Vec<Record> = seqs
        .clone()
        .map(|s| Record::new(s, s as i64, Stream::Stdout, vec![b'x'; line_len], false))
        .collect();
    let last = *seqs.end();
    OutBatch {
        records: records.len(),
        batch: Batch {
            version: protocol::PROTOCOL_VERSION,
            agent: agent(),
            segments: vec![ContainerSegment {
                container_id: id.to_string(),
                meta: None,
                records,
                exit: None,
                logs_unavailable: None,
            }],
        },
        effects: vec![(
            id.clone(),
            Effect::Cut(Position {
                seq: last,
                ts: last as i64,
                at_ts: 1,
                file: None,
            }),
        )],
    }
}

fn decode(f: &Frame) -> Batch {
    serde_json::from_slice(&f.body).unwrap()
}

/// Reads the records (seqs) and effects of every frame in the spool's files, in order.
fn spooled(spool_dir: &Path) -> Vec<(Vec<u64>, segment::Effects)> {
    let mut out = Vec::new();
    for name in segment_files(spool_dir) {
        let f = File::open(spool_dir.join(name)).unwrap();
        let len = f.metadata().unwrap().len();
        let mut at = HEADER_LEN;
        while let ReadOutcome::Frame(fr, next) = segment::read_frame(&f, at, len).unwrap() {
            let json = match fr.meta.compression {
                Compression::Zstd => zstd::decode_all(&fr.body[..]).unwrap(),
                _ => fr.body.to_vec(),
            };
            let b: Batch = serde_json::from_slice(&json).unwrap();
            out.push((
                b.segments[0].records.iter().map(|r| r.seq).collect(),
                fr.effects,
            ));
            at = next;
        }
    }
    out
}

#[tokio::test]
async fn checkpoints_move_only_with_acknowledged_frames_and_a_full_spool_pauses() {
    let (logs, _guard) = capture();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(CheckpointStore::open(dir.path()).unwrap());
    let limits = Limits {
        max_bytes: 24 << 10,
        segment_bytes: 8 << 10,
    };
    let (w, r) = open_in(&dir.path().join("spool"), limits);
    let reader = Reader::new(r);
    let (tx, rx) = mpsc::channel(1);
    let stop = CancellationToken::new();
    let task = tokio::spawn(run_writer(rx, w, Compression::None, stop.clone()));
    let id: Arc<str> = "c1".into();
    // Each batch is ~5 KiB of JSON: the spool holds four or so.
    let feeder = {
        let id = id.clone();
        tokio::spawn(async move {
            for b in 0..10u64 {
                let first = b * 40 + 1;
                tx.send(out_batch(&id, first..=first + 39, 60))
                    .await
                    .unwrap();
            }
        })
    };
    // Nobody delivers: the writer fills the spool and waits.
    let t0 = Instant::now();
    while !reader.shared().stats().full {
        assert!(t0.elapsed() < Duration::from_secs(10), "spool never full");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stats = reader.shared().stats();
    assert!(stats.bytes <= limits.max_bytes, "{stats:?}");
    assert!(!feeder.is_finished(), "the batcher side is blocked");
    let text = logs.text();
    assert!(
        text.contains(&format!(
            "spool full ({} of {} bytes): reading paused until logarithmd catches up",
            stats.bytes, limits.max_bytes
        )),
        "{text}"
    );
    // Spooling moves no checkpoint: nothing is acknowledged yet.
    assert!(store.snapshot().is_empty(), "{:?}", store.snapshot());
    // Every spooled frame carries the cut right after its last record.
    let held = spooled(&dir.path().join("spool"));
    assert!(held.len() >= 3, "{} frames", held.len());
    for (seqs, effects) in &held {
        assert_eq!(effects, &vec![(id.clone(), cut(*seqs.last().unwrap()))]);
    }

    // Deliver everything, checking order and content; the checkpoint follows each
    // acknowledgement and never gets ahead of it.
    let mut next_seq = 1;
    while next_seq <= 400 {
        let f = tokio::time::timeout(Duration::from_secs(10), reader.next())
            .await
            .expect("a frame")
            .expect("not closed");
        let before = store.snapshot().get(&*id).map_or(0, |e| e.pos.seq);
        assert_eq!(
            before,
            next_seq - 1,
            "checkpoint at the last acknowledged line"
        );
        let batch = decode(&f);
        for rec in &batch.segments[0].records {
            assert_eq!(rec.seq, next_seq);
            next_seq += 1;
        }
        assert_eq!(f.meta.records, 40);
        assert_eq!(f.meta.newest_ts, (next_seq - 1) as i64);
        assert!(!f.replayed);
        // What the shipper does on a 2xx answer.
        acknowledged(&store, &f);
        reader.ack().await;
        assert_eq!(store.snapshot()[&*id].pos.seq, next_seq - 1);
    }
    feeder.await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("writer ends with the batcher")
        .unwrap();
    assert!(reader.next().await.is_none(), "closed and delivered");
    assert_eq!(store.snapshot()[&*id].pos.seq, 400);
    assert!(logs
        .text()
        .contains("spool has room again: reading resumed"));
    let stats = reader.shared().stats();
    assert!(!stats.full);
    assert!(stats.segments <= 2, "{stats:?}");
}

#[tokio::test]
async fn stopping_while_full_keeps_every_spooled_batch_with_its_effects() {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_bytes: 12 << 10,
        segment_bytes: 4 << 10,
    };
    let spool_dir = dir.path().join("spool");
    let (w, r) = open_in(&spool_dir, limits);
    let shared = r.shared().clone();
    let (tx, rx) = mpsc::channel(1);
    let stop = CancellationToken::new();
    let task = tokio::spawn(run_writer(rx, w, Compression::Zstd, stop.clone()));
    let id: Arc<str> = "c1".into();
    let feeder = tokio::spawn(async move {
        for b in 0..20u64 {
            let first = b * 40 + 1;
            // Random-ish lines so zstd cannot shrink them to nothing.
            let mut ob = out_batch(&id, first..=first + 39, 0);
            for rec in &mut ob.batch.segments[0].records {
                rec.text =
                    Some(format!("{:x}", rec.seq.wrapping_mul(0x9e37_79b9_7f4a_7c15)).repeat(3));
            }
            if tx.send(ob).await.is_err() {
                return;
            }
        }
    });
    let t0 = Instant::now();
    while !shared.stats().full {
        assert!(t0.elapsed() < Duration::from_secs(10), "spool never full");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("writer stops")
        .unwrap();
    feeder.abort();
    drop(r);
    // After a restart the spool holds whole batches from the first line on, each with its
    // effects; a store fed by their acknowledgements ends at the last spooled line (what
    // was not spooled is read from Docker again, the checkpoint never covered it).
    let store = CheckpointStore::open(dir.path()).unwrap();
    let (_w, mut r) = open_in(&spool_dir, limits);
    let mut seqs = Vec::new();
    while let Next::Frame(f) = r.try_next().unwrap() {
        assert!(f.replayed);
        let json = zstd::decode_all(&f.body[..]).unwrap();
        let b: Batch = serde_json::from_slice(&json).unwrap();
        seqs.extend(b.segments[0].records.iter().map(|r| r.seq));
        assert_eq!(f.effects, vec![("c1".into(), cut(*seqs.last().unwrap()))]);
        acknowledged(&store, &f);
        r.ack();
    }
    let covered = store.snapshot()["c1"].pos.seq;
    assert!(covered > 0 && covered < 800);
    assert_eq!(seqs, (1..=covered).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_batch_of_effects_only_is_spooled_with_an_empty_body() {
    let dir = tempfile::tempdir().unwrap();
    let (w, r) = open_in(dir.path(), BIG);
    let reader = Reader::new(r);
    let (tx, rx) = mpsc::channel(1);
    let task = tokio::spawn(run_writer(
        rx,
        w,
        Compression::Zstd,
        CancellationToken::new(),
    ));
    let id: Arc<str> = "gone".into();
    tx.send(out_batch(&id, 1..=3, 5)).await.unwrap();
    let mut forget = out_batch(&id, 1..=1, 0);
    forget.batch.segments.clear();
    forget.records = 0;
    forget.effects = vec![(id.clone(), Effect::Forget)];
    tx.send(forget).await.unwrap();
    drop(tx);
    task.await.unwrap();
    let store = CheckpointStore::open(&dir.path().join("cp")).unwrap();
    let f = reader.next().await.unwrap();
    assert!(!f.body.is_empty());
    acknowledged(&store, &f);
    reader.ack().await;
    assert_eq!(store.snapshot()["gone"].pos.seq, 3);
    let f = reader.next().await.unwrap();
    assert!(f.body.is_empty(), "nothing to send");
    assert_eq!(f.effects, vec![(id.clone(), Effect::Forget)]);
    acknowledged(&store, &f);
    reader.ack().await;
    assert!(store.snapshot().is_empty());
    assert!(reader.next().await.is_none());
}
