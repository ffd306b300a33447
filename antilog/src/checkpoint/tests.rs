use super::*;

#[test]
fn position_tracks_max_ts_and_count() {
    let mut p = Position::default();
    assert_eq!(p.since_secs(), 0);
    p.line_done(1, 5_000_000_001);
    p.line_done(2, 5_000_000_001);
    assert_eq!((p.seq, p.ts, p.at_ts), (2, 5_000_000_001, 2));
    p.line_done(3, 5_000_000_000); // older timestamp: counted nowhere
    assert_eq!((p.seq, p.ts, p.at_ts), (3, 5_000_000_001, 2));
    p.line_done(5, 6_000_000_000);
    assert_eq!((p.seq, p.ts, p.at_ts), (5, 6_000_000_000, 1));
    assert_eq!(p.since_secs(), 6);
}

#[test]
fn resume_snapshot_applies_spooled_effects_without_moving_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path()).unwrap();
    let at = |seq| Position {
        seq,
        ts: seq as i64,
        at_ts: 1,
        file: None,
    };
    store.apply([("a", &Effect::Cut(at(5)))]);
    let spooled = [
        ("a", Effect::Cut(at(9))),
        ("b", Effect::Meta),
        ("b", Effect::Cut(at(3))),
        ("c", Effect::Forget),
    ];
    let resume = store.resume_snapshot(spooled.iter().map(|(id, e)| (*id, e)));
    assert_eq!(resume["a"].pos.seq, 9);
    assert_eq!(resume["b"].pos.seq, 3);
    assert!(!resume.contains_key("c"));
    assert_eq!(store.snapshot()["a"].pos.seq, 5);
    // The write before an acknowledgement leaves the durable write due.
    store.write_before_ack().unwrap();
    assert!(store.lock().dirty);
    let reread = CheckpointStore::open(dir.path()).unwrap();
    assert_eq!(reread.snapshot()["a"].pos.seq, 5);
}

#[test]
fn persists_atomically_and_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path()).unwrap();
    let pos = Position {
        seq: 7,
        ts: 9,
        at_ts: 1,
        file: None,
    };
    let mark = ExitMark {
        restart_count: 0,
        finished_at: 11,
    };
    store.apply([("a", &Effect::Cut(pos)), ("a", &Effect::Exit(mark))]);
    store.apply([("b", &Effect::Cut(pos)), ("b", &Effect::Forget)]);
    // An older position (resend) does not move the checkpoint back.
    store.apply([("a", &Effect::Cut(Position::default()))]);
    store.persist_if_dirty().unwrap();
    let again = CheckpointStore::open(dir.path()).unwrap().snapshot();
    assert_eq!(again.len(), 1);
    assert_eq!(
        again["a"],
        Entry {
            pos,
            exit: Some(mark),
            restart_count: 0,
        }
    );
    assert!(!dir.path().join("checkpoints.json.tmp").exists());
    store.apply([("a", &Effect::Meta)]);
    store.retain_existing(&HashSet::from(["c".to_string()]));
    store.persist_if_dirty().unwrap();
    assert!(CheckpointStore::open(dir.path())
        .unwrap()
        .snapshot()
        .is_empty());
    // Replayed effects on containers gone at start are ignored; others apply.
    store.apply_replayed([("a", &Effect::Cut(pos)), ("c", &Effect::Cut(pos))]);
    assert_eq!(
        store.snapshot().keys().collect::<Vec<_>>(),
        vec![&"c".to_string()]
    );
    // Effects of this session's batches always apply.
    store.apply([("d", &Effect::Cut(pos))]);
    assert!(store.snapshot().contains_key("d"));
}

#[test]
fn effects_round_trip_as_json() {
    let effects = vec![
        Effect::Cut(Position {
            seq: 3,
            ts: -4,
            at_ts: 2,
            file: Some(FilePos {
                dev: 1,
                ino: 2,
                fp: 3,
                fp_len: 4,
                offset: 5,
            }),
        }),
        Effect::Meta,
        Effect::Run(2),
        Effect::Exit(ExitMark {
            restart_count: 1,
            finished_at: 5,
        }),
        Effect::Forget,
    ];
    let json = serde_json::to_string(&effects).unwrap();
    assert_eq!(serde_json::from_str::<Vec<Effect>>(&json).unwrap(), effects);
}

#[test]
fn corrupt_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(FILE_NAME), b"{nope").unwrap();
    let err = CheckpointStore::open(dir.path()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Checkpoint);
}

#[test]
fn runs_keep_their_restart_count() {
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path()).unwrap();
    store.apply([("a", &Effect::Run(2))]);
    assert_eq!(store.snapshot()["a"].restart_count, 2);
    let mark = ExitMark {
        restart_count: 3,
        finished_at: 9,
    };
    store.apply([("a", &Effect::Exit(mark))]);
    assert_eq!(store.snapshot()["a"].restart_count, 3);
    store.apply([("a", &Effect::Run(4))]);
    assert_eq!(
        store.snapshot()["a"],
        Entry {
            pos: Position::default(),
            exit: None,
            restart_count: 4,
        }
    );
    // An older version's spool frame: a new run, its count unknown (the entry's is kept).
    let old: Vec<(String, Effect)> = serde_json::from_str(r#"[["a","meta"]]"#).unwrap();
    store.apply(old.iter().map(|(id, e)| (id.as_str(), e)));
    assert_eq!(store.snapshot()["a"].restart_count, 4);
    assert_eq!(
        serde_json::to_string(&Effect::Run(4)).unwrap(),
        r#"{"run":4}"#
    );
    store.persist_if_dirty().unwrap();
    let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
    assert!(text.contains(r#""restart_count":4"#), "{text}");
    assert_eq!(
        CheckpointStore::open(dir.path()).unwrap().snapshot()["a"].restart_count,
        4
    );
}

#[test]
fn a_file_of_an_older_version_loads() {
    // As written before entries kept the restart count.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(FILE_NAME),
        r#"{"version":1,"containers":{"a":{"seq":7,"ts":9,"at_ts":1},"b":{"seq":2,"ts":3,"at_ts":1,"file":{"dev":1,"ino":2,"fp":3,"fp_len":4,"offset":5},"exit":{"restart_count":0,"finished_at":11}}}}"#,
    )
    .unwrap();
    let entries = CheckpointStore::open(dir.path()).unwrap().snapshot();
    assert_eq!(
        entries["a"],
        Entry {
            pos: Position {
                seq: 7,
                ts: 9,
                at_ts: 1,
                file: None
            },
            exit: None,
            restart_count: 0,
        }
    );
    assert_eq!(entries["b"].pos.file.map(|f| f.offset), Some(5));
    assert_eq!(entries["b"].exit.map(|e| e.finished_at), Some(11));
}
