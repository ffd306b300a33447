//! Properties of the ingest body parser (`parse_batch`, `to_write_batch`), issue #3:
//! - arbitrary bytes never panic, and what is not a batch is a 400;
//! - a strict prefix of a valid body, or a body with a broken seq order, is a 400;
//! - any valid batch round-trips into the same lines, seqs, streams, timestamps and
//!   lifecycle events;
//! - `[COUT]` lines become outputs and `CO_RESULT` the verdict exactly as the contract says
//!   (whole stdout lines only), checked against a model written independently of the parser.

use std::collections::BTreeMap;

use logarithmd::api::ingest::{parse_batch, to_write_batch};
use proptest::prelude::*;
use protocol::{Agent, Batch, ContainerExit, ContainerMeta, ContainerSegment, Record, Stream};
use storage::{CoResultWrite, OutputWrite, WriteBatch};

/// How a generated line was made, and so what the parser must make of it.
#[derive(Debug, Clone)]
enum Line {
    /// Any bytes (not necessarily UTF-8) that do not start with `[COUT]`.
    Plain(Vec<u8>),
    /// `[COUT]<sp0>KEY<sp1>=<sp2>VALUE`.
    Output {
        key: String,
        value: String,
        spaces: [String; 3],
    },
    /// `[COUT] CO_RESULT = VALUE`.
    Verdict(String),
    /// Looks like COUT, is not.
    NearMiss(&'static str),
}

impl Line {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Line::Plain(b) => b.clone(),
            Line::Output { key, value, spaces } => {
                format!("[COUT]{}{key}{}={}{value}", spaces[0], spaces[1], spaces[2]).into_bytes()
            }
            Line::Verdict(v) => format!("[COUT] CO_RESULT = {v}").into_bytes(),
            Line::NearMiss(s) => s.as_bytes().to_vec(),
        }
    }

    /// (key, value) the contract makes of this line on stdout.
    fn output(&self) -> Option<(String, String)> {
        match self {
            Line::Output { key, value, .. } => Some((key.clone(), value.trim().to_owned())),
            Line::Verdict(v) => Some(("CO_RESULT".to_owned(), v.trim().to_owned())),
            Line::Plain(_) | Line::NearMiss(_) => None,
        }
    }
}

fn line() -> impl Strategy<Value = Line> {
    let plain = prop::collection::vec(any::<u8>(), 0..60)
        .prop_filter("not a COUT line", |b| !b.starts_with(b"[COUT]"))
        .prop_map(Line::Plain);
    let sp = || "[ \t]{0,2}";
    let output = (
        "[A-Za-z_][A-Za-z0-9_.-]{0,20}",
        "[ -~]{0,40}",
        sp(),
        sp(),
        sp(),
    )
        .prop_map(|(key, value, a, b, c)| Line::Output {
            key,
            value,
            spaces: [a, b, c],
        });
    let verdict = prop_oneof![
        Just("true"),
        Just("false"),
        Just("TRUE"),
        Just(" maybe "),
        Just("")
    ]
    .prop_map(|v| Line::Verdict(v.to_owned()));
    let near_miss = prop_oneof![
        Just("[COUT] no equals sign"),
        Just("[COUT] 1KEY = x"),
        Just("[COUT] = x"),
        Just("[COUT] KEY x = y"),
        Just(" [COUT] KEY = x"),
        Just("[cout] KEY = x"),
        Just("[COUT"),
    ]
    .prop_map(Line::NearMiss);
    prop_oneof![4 => plain, 3 => output, 1 => verdict, 1 => near_miss]
}

/// One generated record: gap to the previous seq, ts, stream, continuation flag, line.
type GenRecord = (u64, i64, bool, bool, Line);

fn gen_record() -> impl Strategy<Value = GenRecord> {
    (
        1u64..=3,
        any::<i64>(),
        any::<bool>(),
        prop::bool::weighted(0.15),
        line(),
    )
}

fn meta() -> impl Strategy<Value = Option<ContainerMeta>> {
    prop::option::of(
        (
            "[a-z0-9/_.-]{1,30}",
            "[a-z0-9/:._-]{1,40}",
            prop::collection::btree_map("[a-z.]{1,10}", "[ -~]{0,10}", 0..4),
            any::<i64>(),
            any::<i64>(),
            any::<u32>(),
            any::<bool>(),
            prop_oneof![Just("json-file"), Just("local"), Just("")],
        )
            .prop_map(
                |(name, image, labels, created_at, started_at, restart_count, tty, driver)| {
                    ContainerMeta {
                        name,
                        image,
                        labels,
                        annotations: BTreeMap::new(),
                        created_at,
                        started_at,
                        restart_count,
                        tty,
                        log_driver: driver.to_owned(),
                    }
                },
            ),
    )
}

/// A segment and the lines it was built from (for the COUT model).
#[derive(Debug, Clone)]
struct GenSegment {
    segment: ContainerSegment,
    lines: Vec<Line>,
}

fn segment() -> impl Strategy<Value = GenSegment> {
    (
        "[A-Za-z0-9_.:-]{1,128}",
        meta(),
        0u64..1_000_000,
        prop::collection::vec(gen_record(), 0..40),
        prop::option::of((any::<i64>(), any::<i64>(), any::<u32>())),
    )
        .prop_map(|(container_id, meta, start, gen, exit)| {
            let mut seq = start;
            let mut records = Vec::with_capacity(gen.len());
            let mut lines = Vec::with_capacity(gen.len());
            for (gap, ts, stderr, cont, line) in gen {
                seq += gap;
                let stream = if stderr {
                    Stream::Stderr
                } else {
                    Stream::Stdout
                };
                records.push(Record::new(seq, ts, stream, line.bytes(), cont));
                lines.push(line);
            }
            let exit = exit.map(|(exit_code, finished_at, restart_count)| ContainerExit {
                reason: None,
                exit_code: Some(exit_code),
                finished_at,
                last_seq: seq,
                restart_count,
            });
            GenSegment {
                segment: ContainerSegment {
                    container_id,
                    meta,
                    records,
                    exit,
                    logs_unavailable: None,
                },
                lines,
            }
        })
}

fn batch() -> impl Strategy<Value = (Batch, Vec<Vec<Line>>)> {
    (
        "[a-z0-9-]{1,20}",
        "[a-z0-9.-]{1,40}",
        prop::collection::vec(segment(), 0..4),
    )
        .prop_map(|(id, node, segs)| {
            let lines = segs.iter().map(|s| s.lines.clone()).collect();
            let batch = Batch {
                version: 1,
                agent: Agent { id, node },
                segments: segs.into_iter().map(|s| s.segment).collect(),
            };
            (batch, lines)
        })
}

/// The contract, independently of `cout::parse`: outputs and verdict of one segment.
fn expected_outputs(
    seg: &ContainerSegment,
    lines: &[Line],
) -> (Vec<OutputWrite>, Option<CoResultWrite>) {
    let mut outputs = Vec::new();
    let mut verdict = None;
    let mut prev_cont = false;
    for (r, l) in seg.records.iter().zip(lines) {
        if r.stream == Stream::Stdout && !r.cont && !prev_cont {
            if let Some((key, value)) = l.output() {
                if key == "CO_RESULT" {
                    verdict = Some(CoResultWrite { value, seq: r.seq });
                } else {
                    outputs.push(OutputWrite {
                        name: key,
                        value,
                        seq: r.seq,
                    });
                }
            }
        }
        prev_cont = r.cont;
    }
    (outputs, verdict)
}

fn check_round_trip(batch: &Batch, lines: &[Vec<Line>], write: &WriteBatch) {
    assert_eq!(write.jobs.len(), batch.segments.len());
    for ((seg, lines), job) in batch.segments.iter().zip(lines).zip(&write.jobs) {
        assert_eq!(job.container_id, seg.container_id);
        assert_eq!(job.node, batch.agent.node);
        assert_eq!(job.lines.len(), seg.records.len());
        for ((r, l), stored) in seg.records.iter().zip(lines).zip(&job.lines) {
            assert_eq!(stored.seq, r.seq);
            assert_eq!(stored.ts, r.ts);
            assert_eq!(stored.stream, r.stream);
            assert_eq!(stored.cont, r.cont);
            assert_eq!(stored.line, l.bytes());
        }
        let (outputs, verdict) = expected_outputs(seg, lines);
        assert_eq!(job.outputs, outputs);
        assert_eq!(job.co_result, verdict);
        match (&seg.meta, &job.meta) {
            (None, None) => {}
            (Some(m), Some(j)) => {
                assert_eq!(
                    (&j.name, &j.image, &j.labels, j.created_at, j.started_at),
                    (&m.name, &m.image, &m.labels, m.created_at, m.started_at)
                );
                assert_eq!(
                    (j.restart_count, j.tty, &j.log_driver),
                    (m.restart_count, m.tty, &m.log_driver)
                );
            }
            other => panic!("meta differs: {other:?}"),
        }
        match (&seg.exit, &job.exit) {
            (None, None) => {}
            (Some(e), Some(j)) => assert_eq!(
                (j.exit_code, j.finished_at, j.last_seq, j.restart_count),
                (e.exit_code, e.finished_at, e.last_seq, e.restart_count)
            ),
            other => panic!("exit differs: {other:?}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Arbitrary bytes: never a panic; anything that is not a valid batch is a 400.
    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
        match parse_batch(&body) {
            Err(e) => prop_assert_eq!(e.status().as_u16(), 400),
            // Only if the bytes happen to be a batch: then it must be one.
            Ok(b) => {
                prop_assert_eq!(serde_json::from_slice::<Batch>(&body).ok(), Some(b.clone()));
                let _ = to_write_batch(b);
            }
        }
    }

    /// JSON-ish noise (the parser's real attack surface): never a panic, errors are 4xx.
    #[test]
    fn json_noise_never_panics(body in r#"[{}\[\]":,0-9a-z \\-]{0,200}"#) {
        let with_version = format!(r#"{{"version":1,{}"#, &body);
        for b in [body.as_bytes(), with_version.as_bytes()] {
            match parse_batch(b) {
                Err(e) => prop_assert_eq!(e.status().as_u16(), 400),
                Ok(batch) => {
                    if let Err(e) = to_write_batch(batch) {
                        prop_assert!(e.status().is_client_error());
                    }
                }
            }
        }
    }

    /// A valid batch survives serialization and validation unchanged: same lines (bytes),
    /// seqs, streams, timestamps, continuation flags, metadata, exits; COUT as the contract.
    #[test]
    fn valid_batches_round_trip((batch, lines) in batch()) {
        let body = serde_json::to_vec(&batch).unwrap();
        let parsed = parse_batch(&body).unwrap();
        prop_assert_eq!(&parsed, &batch);
        let write = to_write_batch(parsed).unwrap();
        check_round_trip(&batch, &lines, &write);
    }

    /// Every strict prefix of a valid body is refused with 400, never half-accepted.
    #[test]
    fn truncated_bodies_are_refused((batch, _) in batch(), cut in any::<prop::sample::Index>()) {
        let body = serde_json::to_vec(&batch).unwrap();
        let at = cut.index(body.len());
        let e = parse_batch(&body[..at]).unwrap_err();
        prop_assert_eq!(e.status().as_u16(), 400);
    }

    /// One byte of a valid body changed: never a panic; refused with a 4xx or still valid.
    #[test]
    fn corrupted_bodies_never_panic(
        (batch, _) in batch(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let mut body = serde_json::to_vec(&batch).unwrap();
        let i = at.index(body.len());
        body[i] = byte;
        match parse_batch(&body) {
            Err(e) => prop_assert_eq!(e.status().as_u16(), 400),
            Ok(b) => {
                if let Err(e) = to_write_batch(b) {
                    prop_assert!(e.status().is_client_error());
                }
            }
        }
    }

    /// A record whose seq does not increase rejects the whole batch.
    #[test]
    fn non_increasing_seqs_are_refused(
        (mut batch, _) in batch(),
        pick in any::<prop::sample::Index>(),
        back in 0u64..3,
    ) {
        let with_two: Vec<usize> = batch
            .segments
            .iter()
            .enumerate()
            .filter(|(_, s)| s.records.len() >= 2)
            .map(|(i, _)| i)
            .collect();
        prop_assume!(!with_two.is_empty());
        let seg = &mut batch.segments[with_two[pick.index(with_two.len())]];
        let j = 1 + pick.index(seg.records.len() - 1);
        seg.records[j].seq = seg.records[j - 1].seq.saturating_sub(back);
        let body = serde_json::to_vec(&batch).unwrap();
        let e = to_write_batch(parse_batch(&body).unwrap()).unwrap_err();
        prop_assert_eq!(e.status().as_u16(), 400);
    }
}

/// The COUT model itself, on the contract's examples, so a wrong model cannot make the
/// properties above vacuous.
#[test]
fn model_matches_contract_examples() {
    let out = |k: &str, v: &str, sp: [&str; 3]| Line::Output {
        key: k.into(),
        value: v.into(),
        spaces: sp.map(str::to_owned),
    };
    type Case = (Line, &'static [u8], Option<(&'static str, &'static str)>);
    let cases: Vec<Case> = vec![
        (
            out("CO_URL", "http://x/?a=b", [" ", " ", " "]),
            b"[COUT] CO_URL = http://x/?a=b",
            Some(("CO_URL", "http://x/?a=b")),
        ),
        (
            out("K", " x = y  ", ["", "\t", ""]),
            b"[COUT]K\t= x = y  ",
            Some(("K", "x = y")),
        ),
        (
            Line::Verdict(" maybe ".into()),
            b"[COUT] CO_RESULT =  maybe ",
            Some(("CO_RESULT", "maybe")),
        ),
        (Line::NearMiss("[COUT] 1KEY = x"), b"[COUT] 1KEY = x", None),
    ];
    for (line, bytes, want) in cases {
        assert_eq!(line.bytes(), bytes);
        assert_eq!(
            line.output(),
            want.map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        let parsed = logarithmd::cout::parse(bytes).map(|o| (o.key, o.value));
        assert_eq!(parsed, line.output());
    }
    // And end to end through a batch: stderr and continued lines are never outputs.
    let mk = |seq, stream, cont, line: &[u8]| Record::new(seq, 1, stream, line.to_vec(), cont);
    let batch = Batch {
        version: 1,
        agent: Agent {
            id: "a".into(),
            node: "n".into(),
        },
        segments: vec![ContainerSegment {
            container_id: "c".into(),
            meta: None,
            records: vec![
                mk(1, Stream::Stdout, false, b"[COUT] A = 1"),
                mk(2, Stream::Stderr, false, b"[COUT] B = 2"),
                mk(3, Stream::Stdout, true, b"[COUT] C = 3"),
                mk(4, Stream::Stdout, false, b"[COUT] D = 4"),
                mk(5, Stream::Stdout, false, b"[COUT] CO_RESULT = true"),
            ],
            exit: None,
            logs_unavailable: None,
        }],
    };
    let write = to_write_batch(batch).unwrap();
    let names: BTreeMap<_, _> = write.jobs[0]
        .outputs
        .iter()
        .map(|o| (o.name.as_str(), o.seq))
        .collect();
    assert_eq!(names, BTreeMap::from([("A", 1)]));
    assert_eq!(
        write.jobs[0].co_result,
        Some(CoResultWrite {
            value: "true".into(),
            seq: 5
        })
    );
}

/// Annotations reach the write up to [`protocol::MAX_ANNOTATIONS_BYTES`]; one byte more
/// refuses the batch with 400. An exit's reason is the failure when the code is unknown.
#[test]
fn annotations_are_bounded_and_exit_reasons_kept() {
    let with = |annotations: BTreeMap<String, String>, exit_code: Option<i64>| Batch {
        version: 1,
        agent: Agent {
            id: "a".into(),
            node: "n".into(),
        },
        segments: vec![ContainerSegment {
            container_id: "c".into(),
            meta: Some(ContainerMeta {
                name: "pod".into(),
                image: "img".into(),
                labels: BTreeMap::new(),
                annotations,
                created_at: 1,
                started_at: 2,
                restart_count: 0,
                tty: false,
                log_driver: "cri".into(),
            }),
            records: vec![],
            exit: Some(ContainerExit {
                exit_code,
                finished_at: 3,
                last_seq: 0,
                restart_count: 0,
                reason: Some("the container was removed while antilog was down".into()),
            }),
            logs_unavailable: None,
        }],
    };
    let max = protocol::MAX_ANNOTATIONS_BYTES;
    let full = BTreeMap::from([
        ("a".to_string(), "x".repeat(max - 2)),
        ("b".to_string(), String::new()),
    ]);
    let write = to_write_batch(with(full.clone(), None)).unwrap();
    let job = &write.jobs[0];
    assert_eq!(job.meta.as_ref().unwrap().annotations, full);
    let exit = job.exit.as_ref().unwrap();
    assert_eq!(
        exit.failure.as_deref(),
        Some("the container was removed while antilog was down")
    );
    // A known exit code decides the verdict itself.
    let write = to_write_batch(with(BTreeMap::new(), Some(0))).unwrap();
    assert_eq!(write.jobs[0].exit.as_ref().unwrap().failure, None);
    let over = BTreeMap::from([("a".to_string(), "x".repeat(max))]);
    let e = to_write_batch(with(over, None)).unwrap_err();
    assert_eq!(e.status().as_u16(), 400);
}
