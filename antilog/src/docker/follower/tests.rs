use super::files::SEQ_JUMP;
use super::*;

#[test]
fn skip_drops_delivered_lines_only() {
    let pos = Position {
        seq: 9,
        ts: 100,
        at_ts: 2,
        file: None,
    };
    let mut s = Skip::from(&pos);
    // The third line at 100 and 101 are new; a copy of a delivered line (99, or one at
    // the position's instant) that comes later is still skipped.
    let got: Vec<bool> = [99, 100, 100, 100, 101, 99, 100, 102]
        .into_iter()
        .map(|ts| s.should_skip(ts))
        .collect();
    assert_eq!(got, vec![true, true, true, false, false, true, true, false]);
    // Docker replays lines around a rotation before the stream passed the position: the
    // position's line comes again after older ones, a copy; a line after it is new.
    let pos = Position { at_ts: 1, ..pos };
    let mut s = Skip::from(&pos);
    let got: Vec<bool> = [99, 100, 98, 99, 100, 101, 100]
        .into_iter()
        .map(|ts| s.should_skip(ts))
        .collect();
    assert_eq!(got, vec![true, true, true, true, true, false, true]);
    let mut s = Skip::from(&Position::default());
    assert!(!s.should_skip(0));
}

#[test]
fn replays_drop_copies_only() {
    let mut r = Replays::default();
    // 1..=5 read, 5 twice (equal timestamps); then Docker sends 3, 4, 5, 5 again and
    // goes on with 6, 6, 7; then 2 and 1 again.
    let got: Vec<bool> = [1, 2, 3, 4, 5, 5, 3, 4, 5, 5, 6, 6, 7, 2, 1]
        .into_iter()
        .map(|ts| r.is_copy(ts * 10))
        .collect();
    assert_eq!(
        got,
        vec![
            false, false, false, false, false, false, true, true, true, true, false, false, false,
            true, true
        ]
    );
    // The clock stepped back: 15 and 16 were never seen, so they are new lines.
    let mut r = Replays::default();
    let got: Vec<bool> = [10, 20, 15, 16, 20, 25]
        .into_iter()
        .map(|ts| r.is_copy(ts))
        .collect();
    assert_eq!(got, vec![false, false, false, false, false, false]);
}

#[test]
fn overlap_finds_a_stream_that_skipped_lines_at_its_start() {
    let first = LogOutput::StdOut {
        message: "2025-12-02T10:00:00.000000100Z a\n".into(),
    };
    let from = 1_764_669_600_000_000_100;
    let error = LogOutput::Console {
        message: "Error grabbing logs: x".into(),
    };
    // The read without follow from the last cut (at `from - 10`): the cut's line, a line
    // before the stream's first, four new lines from it on (each cut), and a line still
    // open at its end (not counted).
    let read = |o: &mut Overlap| {
        assert!(o.line(from - 10, true));
        for ts in [from - 5, from, from + 10, from + 20, from + 30] {
            assert!(o.line(ts, false));
            o.cut();
        }
        assert!(o.line(from + 35, false));
    };
    // The stream's first data may follow a Docker error frame.
    let mut o = Overlap::counting(&[error.clone(), first.clone()], from - 10);
    read(&mut o);
    o.check();
    assert_eq!(
        o,
        Overlap::Checking {
            from,
            expected: 4,
            seen: 0
        }
    );
    // A whole stream: its four lines up to the cut, then new ones are sent.
    let mut whole = o;
    for ts in [from, from + 10, from + 20, from + 30] {
        assert!(whole.line(ts, true));
    }
    assert!(whole.line(from + 35, false));
    assert!(!whole.gap());
    assert!(whole.line(from + 50, false));
    // A stream that skipped two of them: the first line past the cut is not sent, nor
    // anything after it.
    let mut skipped = o;
    assert!(skipped.line(from, true));
    assert!(skipped.line(from + 30, true));
    assert!(!skipped.line(from + 40, false));
    assert!(skipped.gap());
    assert!(!skipped.line(from + 50, false));
    // Lines before `from` the stream brings (it started before the read's cut) are not
    // counted: they cannot make up for a skip.
    let mut early = o;
    for ts in [from - 30, from - 20, from - 10, from, from + 30] {
        assert!(early.line(ts, true));
    }
    assert!(!early.line(from + 40, false));
    // More than counted (a copy Docker replays): no loss.
    let mut more = o;
    for ts in [from, from + 10, from + 20, from + 10, from + 20, from + 30] {
        assert!(more.line(ts, true));
    }
    assert!(more.line(from + 40, false));
    assert!(!more.gap());
    // The cut later than the stream's first data: counting starts at the cut.
    assert_eq!(
        Overlap::counting(std::slice::from_ref(&first), from + 20),
        Overlap::Counting {
            from: from + 20,
            before: 0,
            new: 0,
            cut: 0
        }
    );
    // No first data with a timestamp: nothing is checked.
    assert_eq!(Overlap::counting(&[], 0), Overlap::Off);
    assert_eq!(Overlap::counting(&[error], 0), Overlap::Off);
}

#[test]
fn repeats_drop_a_line_sent_again_right_after_itself() {
    let mut r = Repeats::default();
    let mut is = |s, ts, b: &str, whole| r.is_repeat(s, ts, b.as_bytes(), whole);
    assert!(!is(0, 10, "a", true));
    assert!(is(0, 10, "a", true)); // the copy
    assert!(is(0, 10, "a", true)); // and another
    assert!(!is(1, 10, "a", true)); // the other stream: its own line
    assert!(!is(0, 10, "b", true)); // other bytes at the same instant
    assert!(!is(0, 11, "b", true)); // same bytes, later: printed again
    assert!(!is(0, 11, "c", false)); // the start of a long line is never a copy
    assert!(!is(0, 11, "c", false));
    assert!(!is(0, 11, "c", true));
    assert!(is(0, 11, "c", true));
}

/// Docker's copy of the line right before it is not sent and takes no seq; the same text
/// at a later instant is a line of its own.
#[tokio::test]
async fn emit_drops_dockers_repeated_line() {
    let (mut f, mut rx) = follower(Position::default());
    f.repeats = Some(Repeats::default());
    let mut pieces = vec![
        piece(100, "x"),
        piece(100, "x"),
        piece(101, "x"),
        piece(102, "y"),
    ];
    assert!(f.emit(&mut pieces).await);
    let records = seqs_and_times(&mut rx);
    assert_eq!(records, vec![(1, 100), (2, 101), (3, 102)]);
    // The file source does not look for them.
    let (mut f, mut rx) = follower(Position::default());
    let mut pieces = vec![piece(100, "x"), piece(100, "x")];
    assert!(f.emit(&mut pieces).await);
    assert_eq!(drain(&mut rx).len(), 2);
}

/// A follow stream read on from the last cut (100, brought by the read without `follow`
/// before it) in which Docker replays lines from before a rotation, reaching back past the
/// cut: nothing is stored twice. The cut's line was skipped in this stream, so only the
/// position tells it is a copy; before, it and every replayed line after it were stored
/// again (the docker-api SIGKILL test's rare duplicates).
#[tokio::test]
async fn a_replay_reaching_back_past_the_last_cut_is_skipped() {
    let pos = cut_at_100();
    let (mut f, mut rx) = follower(pos);
    f.repeats = Some(Repeats::default());
    let mut pieces: Vec<Piece> = [90, 100, 101, 102, 103, 99, 100, 101, 102, 103, 104]
        .into_iter()
        .map(|ts| piece(ts, &format!("line {ts}")))
        .collect();
    assert!(f.emit(&mut pieces).await);
    let records = seqs_and_times(&mut rx);
    assert_eq!(records, vec![(11, 101), (12, 102), (13, 103), (14, 104)]);
}

/// A follower on a Docker endpoint that is never called, whose items land in the returned
/// receiver, and whose signals are closed (so a `die` is never waited for).
fn follower(pos: Position) -> (Follower, mpsc::Receiver<Item>) {
    let (tx, rx) = mpsc::channel(64);
    // A port nothing listens on; the tests below never call Docker.
    let docker = Docker::connect_with_http("http://127.0.0.1:9", 1, bollard::API_DEFAULT_VERSION)
        .expect("a client, not a connection");
    let shared = Arc::new(Shared {
        docker,
        logs: None,
        tx,
        room: crate::pipeline::send::Room::new(100),
        max_line_bytes: 1024,
        filter: Filter::default(),
        shutdown: CancellationToken::new(),
        catch_up: Arc::new(tokio::sync::Semaphore::new(1)),
        metrics: Arc::new(Metrics::new()),
        files_root: None,
    });
    let (_, signals) = watch::channel(Signals::default());
    let mut f = Follower::new(
        shared,
        "c1".into(),
        signals,
        Entry {
            pos,
            exit: None,
            restart_count: 0,
        },
    );
    f.assembler = Some(Assembler::new(false, 1024));
    (f, rx)
}

fn inspected(running: bool, exit_code: Option<i64>, finished_at: i64) -> Inspected {
    Inspected {
        meta: crate::pipeline::batcher::tests::meta(),
        run_key: "run-1".into(),
        has_run: true,
        running,
        exit_code,
        finished_at,
        restarting: false,
        log_path: String::new(),
        auto_remove: true,
        rotate_bytes: None,
    }
}

fn drain(rx: &mut mpsc::Receiver<Item>) -> Vec<ItemKind> {
    let mut out = Vec::new();
    while let Ok(i) = rx.try_recv() {
        match i.kind {
            // A run of records: as the records it holds, in order.
            ItemKind::Records { records, .. } => out.extend(
                records
                    .into_iter()
                    .map(|(record, cut)| ItemKind::Record { record, cut }),
            ),
            kind => out.push(kind),
        }
    }
    out
}

/// A cut after seq 10, the only line delivered at instant 100.
fn cut_at_100() -> Position {
    Position {
        seq: 10,
        ts: 100,
        at_ts: 1,
        file: None,
    }
}

/// The (seq, ts) of the records sent, in order.
fn seqs_and_times(rx: &mut mpsc::Receiver<Item>) -> Vec<(u64, i64)> {
    drain(rx)
        .iter()
        .filter_map(|i| match i {
            ItemKind::Record { record, .. } => Some((record.seq, record.ts)),
            _ => None,
        })
        .collect()
}

fn piece(ts: i64, text: &str) -> Piece {
    Piece {
        stream: Stream::Stdout,
        ts,
        bytes: text.as_bytes().to_vec(),
        first: true,
        last: true,
        cut: true,
    }
}

/// A resume that finds the last delivered line gone reports the gap, and numbers the
/// lines read next past every seq that can have been handed out (in this process or, via
/// the spool, before a restart): a different line never reuses a seq.
#[tokio::test]
async fn a_gap_at_a_resume_numbers_past_every_seq_handed_out() {
    let pos = cut_at_100();
    let (mut f, mut rx) = follower(pos);
    // Seqs 11 and 12 were sent after the cut before the stream broke.
    f.sent_seq = 12;
    f.resume_check = Some(pos);
    let mut pieces = vec![
        piece(200, "first line Docker still has"),
        piece(201, "next"),
    ];
    assert!(f.emit(&mut pieces).await);
    let items = drain(&mut rx);
    assert!(
        matches!(&items[0], ItemKind::Unavailable(r) if r.contains("rotated away")),
        "{items:?}"
    );
    let seqs: Vec<u64> = items
        .iter()
        .filter_map(|i| match i {
            ItemKind::Record { record, .. } => Some(record.seq),
            _ => None,
        })
        .collect();
    assert_eq!(seqs, vec![12 + SEQ_JUMP + 1, 12 + SEQ_JUMP + 2]);
    // Without a gap (the line at the position is read again), numbering goes on.
    let (mut f, mut rx) = follower(pos);
    f.resume_check = Some(pos);
    let mut pieces = vec![piece(100, "delivered"), piece(150, "new")];
    assert!(f.emit(&mut pieces).await);
    let items = drain(&mut rx);
    assert_eq!(items.len(), 1, "{items:?}");
    assert!(matches!(&items[0], ItemKind::Record { record, .. } if record.seq == 11));
}

/// A run closed after its container was removed: without a read after its end the job
/// says its last lines may be missing; the exit comes from the last inspection that saw
/// the run ended when the `die` event was missed, and is unknown (never -1) when nothing
/// saw it.
#[tokio::test]
async fn a_removed_run_reports_an_unread_end_and_never_invents_an_exit_code() {
    // Seen ended by an inspection (exit code 3), removed before the read after its end.
    let (mut f, mut rx) = follower(Position::default());
    let info = inspected(false, Some(3), 55);
    f.run = Some(Run::new(&info, 0));
    if let Some(run) = f.run.as_mut() {
        run.seen_exit = Some((info.exit_code, info.finished_at));
    }
    assert!(f.close_run(None).await);
    let items = drain(&mut rx);
    assert!(
        matches!(&items[0], ItemKind::Unavailable(r) if r == REMOVED_BEFORE_END),
        "{items:?}"
    );
    assert!(
        matches!(&items[1], ItemKind::Exit(e) if e.exit_code == Some(3) && e.finished_at == 55),
        "{items:?}"
    );
    // Read to its end after it ended; never seen ended: no report, exit code unknown.
    let (mut f, mut rx) = follower(Position::default());
    f.run = Some(Run {
        tail_read: true,
        ..Run::new(&inspected(true, None, 0), 0)
    });
    assert!(f.close_run(None).await);
    let items = drain(&mut rx);
    assert_eq!(items.len(), 1, "{items:?}");
    assert!(
        matches!(&items[0], ItemKind::Exit(e) if e.exit_code.is_none()),
        "{items:?}"
    );
    // A read after the end failed: the report carries Docker's reason.
    let (mut f, mut rx) = follower(Position::default());
    f.run = Some(Run {
        tail_error: Some("HTTP 409: marked for removal".into()),
        ..Run::new(&inspected(true, None, 0), 0)
    });
    assert!(f.close_run(None).await);
    let items = drain(&mut rx);
    assert!(
        matches!(&items[0], ItemKind::Unavailable(r) if r.contains("HTTP 409") && r.starts_with(REMOVED_BEFORE_END)),
        "{items:?}"
    );
}

/// Docker's own error message in a multiplexed log (stream 3) is reported on the job,
/// once per read, and never becomes a line.
#[tokio::test]
async fn docker_error_frames_are_reported_not_stored() {
    let (mut f, mut rx) = follower(Position::default());
    let out = bollard::container::LogOutput::Console {
        message: bytes::Bytes::from_static(b"Error grabbing logs: file already closed\n"),
    };
    let message = api::docker_error(f.assembler.as_ref(), &out).expect("an error frame");
    let mut reported = false;
    assert!(f.docker_read_error(message.clone(), &mut reported).await);
    assert!(f.docker_read_error(message, &mut reported).await);
    let items = drain(&mut rx);
    assert_eq!(items.len(), 1, "{items:?}");
    assert!(
        matches!(&items[0], ItemKind::Unavailable(r) if r.contains("Error grabbing logs: file already closed")),
        "{items:?}"
    );
    // A TTY log has no streams: its bytes are the container's.
    let tty = Some(Assembler::new(true, 1024));
    assert!(api::docker_error(tty.as_ref(), &out).is_none());
}
