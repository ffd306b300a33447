//! The shipper against a real HTTP server (axum on 127.0.0.1) that behaves like
//! logarithmd's ingest endpoint in the ways under test.

use std::sync::Mutex;

use axum::body::Bytes as Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use protocol::{ContainerSegment, Record, Stream};

use super::*;
use crate::checkpoint::{Effect, Position};
use crate::spool::segment::{self, FrameMeta};

#[derive(Default)]
struct Server {
    /// (container, seq) of every record stored, in arrival order.
    stored: Mutex<Vec<(String, u64)>>,
    /// Requests seen, each as the containers of its batch.
    requests: Mutex<Vec<Vec<String>>>,
    /// A batch of this container is answered only after this long.
    slow: Option<(String, Duration)>,
}

async fn ingest(State(s): State<Arc<Server>>, body: Body) -> Response {
    let json = zstd::decode_all(&body[..]).unwrap();
    let batch: Batch = serde_json::from_slice(&json).unwrap();
    let ids: Vec<String> = batch
        .segments
        .iter()
        .map(|s| s.container_id.clone())
        .collect();
    s.requests.lock().unwrap().push(ids.clone());
    if let Some((slow, d)) = &s.slow {
        if ids.contains(slow) {
            tokio::time::sleep(*d).await;
        }
    }
    if let Some(refused) = refuse_poison(&batch) {
        return refused;
    }
    store_records(&s.stored, &batch);
    axum::Json(serde_json::json!({"records": 1, "stored": 1, "duplicates": 0})).into_response()
}

/// A 400 for a batch holding a record "poison", as logarithmd refuses a bad record.
fn refuse_poison(batch: &Batch) -> Option<Response> {
    let poisoned = batch
        .segments
        .iter()
        .flat_map(|s| &s.records)
        .any(|r| r.text.as_deref() == Some("poison"));
    poisoned.then(|| {
        let body = serde_json::json!({"error": {"code": "invalid_batch", "message": "no poison"}});
        (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
    })
}

fn store_records(stored: &Mutex<Vec<(String, u64)>>, batch: &Batch) {
    let mut stored = stored.lock().unwrap();
    for seg in &batch.segments {
        for r in &seg.records {
            stored.push((seg.container_id.clone(), r.seq));
        }
    }
}

async fn serve(server: Arc<Server>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route(protocol::INGEST_PATH, post(ingest))
        .with_state(server);
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn segment(id: &str, seqs: std::ops::RangeInclusive<u64>, poison: Option<u64>) -> ContainerSegment {
    ContainerSegment {
        container_id: id.into(),
        meta: None,
        records: seqs
            .map(|s| {
                let text = if Some(s) == poison {
                    "poison".to_string()
                } else {
                    format!("line {s}")
                };
                Record::new(s, s as i64, Stream::Stdout, text.into_bytes(), false)
            })
            .collect(),
        exit: None,
        logs_unavailable: None,
    }
}

fn cut(seq: u64) -> Effect {
    Effect::Cut(Position {
        seq,
        ts: seq as i64,
        at_ts: 1,
        file: None,
    })
}

/// Spools one frame per batch (with a cut to its last seq) and closes the writer.
fn spool_frames(dir: &std::path::Path, batches: Vec<Batch>) -> spool::Reader {
    let (mut w, r) = spool::open(
        dir,
        spool::Limits {
            max_bytes: 64 << 20,
            segment_bytes: 8 << 20,
        },
        Arc::new(Metrics::new()),
    )
    .unwrap();
    for b in batches {
        let body = codec::encode(&b, Compression::Zstd).unwrap();
        let effects: Vec<(Arc<str>, Effect)> = b
            .segments
            .iter()
            .map(|s| {
                (
                    Arc::from(s.container_id.as_str()),
                    cut(s.records.last().unwrap().seq),
                )
            })
            .collect();
        let keys: Vec<Arc<str>> = b
            .segments
            .iter()
            .map(|s| Arc::from(s.container_id.as_str()))
            .collect();
        let meta = FrameMeta {
            compression: Compression::Zstd,
            records: b.segments.iter().map(|s| s.records.len() as u32).sum(),
            newest_ts: 0,
        };
        w.append(&segment::encode_frame(&meta, &effects, &keys, &body).unwrap())
            .unwrap();
    }
    w.sync().unwrap();
    drop(w);
    spool::Reader::new(r)
}

fn batch(segments: Vec<ContainerSegment>) -> Batch {
    Batch {
        version: protocol::PROTOCOL_VERSION,
        agent: Agent {
            id: "a".into(),
            node: "n".into(),
        },
        segments,
    }
}

fn shipper(url: &str, data_dir: &std::path::Path, metrics: Arc<Metrics>) -> Shipper {
    let config = Config {
        server_url: url.to_string(),
        data_dir: data_dir.to_path_buf(),
        token: Some("t".into()),
        ship_retry_initial: Duration::from_millis(10),
        ship_retry_max: Duration::from_millis(100),
        ..Config::default()
    };
    Shipper::new(&config, metrics).unwrap()
}

#[tokio::test]
async fn a_refused_record_goes_to_the_dead_letter_file_and_the_rest_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let server = Arc::new(Server::default());
    let url = serve(server.clone()).await;
    // 5,000 records of one container, the 2,500th refused; then another batch after it.
    let reader = spool_frames(
        &dir.path().join("spool"),
        vec![
            batch(vec![segment("c1", 1..=5000, Some(2500))]),
            batch(vec![segment("c1", 5001..=5010, None)]),
        ],
    );
    let store = Arc::new(CheckpointStore::open(dir.path()).unwrap());
    let metrics = Arc::new(Metrics::new());
    shipper(&url, dir.path(), metrics.clone())
        .run(reader, store.clone())
        .await;
    let stored = server.stored.lock().unwrap().clone();
    let expected: Vec<(String, u64)> = (1..=5010)
        .filter(|s| *s != 2500)
        .map(|s| ("c1".to_string(), s))
        .collect();
    let mut sorted = stored.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, expected, "every record but the refused one, once");
    // Stored in order: splitting sends the halves one after the other.
    assert_eq!(stored, expected);
    let dead = std::fs::read_to_string(dir.path().join(crate::dead_letter::FILE_NAME)).unwrap();
    let lines: Vec<serde_json::Value> = dead
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{dead}");
    assert_eq!(lines[0]["status"], 400);
    assert_eq!(lines[0]["segment"]["container_id"], "c1");
    assert_eq!(lines[0]["segment"]["records"][0]["seq"], 2500);
    assert_eq!(lines[0]["segment"]["records"][0]["text"], "poison");
    assert!(
        lines[0]["reason"].as_str().unwrap().contains("no poison"),
        "{}",
        lines[0]
    );
    assert_eq!(metrics.dead_letter_entries.get(), 1);
    assert_eq!(metrics.dead_letter_records.get(), 1);
    // Both frames are settled: the checkpoint is past the last one.
    assert_eq!(store.snapshot()["c1"].pos.seq, 5010);
    // Bisection: about 2·log2(5000) requests, not one per record.
    let requests = server.requests.lock().unwrap().len();
    assert!(requests < 40, "{requests} requests");
}

#[tokio::test]
async fn batches_of_other_containers_pass_a_slow_one_and_checkpoints_move_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = Arc::new(Server {
        slow: Some(("a".to_string(), Duration::from_millis(700))),
        ..Server::default()
    });
    let url = serve(server.clone()).await;
    let reader = spool_frames(
        &dir.path().join("spool"),
        vec![
            batch(vec![segment("a", 1..=3, None)]),
            batch(vec![segment("b", 1..=3, None)]),
            batch(vec![segment("c", 1..=3, None)]),
            batch(vec![segment("a", 4..=6, None)]),
        ],
    );
    let store = Arc::new(CheckpointStore::open(dir.path()).unwrap());
    let metrics = Arc::new(Metrics::new());
    let ship = tokio::spawn(shipper(&url, dir.path(), metrics.clone()).run(reader, store.clone()));
    // b and c are stored while a's first batch is still in flight; a's second batch has
    // not been sent, and no checkpoint moved (a's first batch is not acknowledged yet).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stored = server.stored.lock().unwrap().clone();
        if stored.iter().filter(|(c, _)| c != "a").count() == 6 {
            assert!(stored.iter().all(|(c, _)| c != "a"), "{stored:?}");
            break;
        }
        assert!(Instant::now() < deadline, "b and c not stored: {stored:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut requests = server.requests.lock().unwrap().clone();
    requests.sort();
    assert_eq!(
        requests,
        vec![
            vec!["a".to_string()],
            vec!["b".to_string()],
            vec!["c".to_string()]
        ]
    );
    assert!(store.snapshot().is_empty(), "{:?}", store.snapshot());
    ship.await.unwrap();
    let stored = server.stored.lock().unwrap().clone();
    let a: Vec<u64> = stored
        .iter()
        .filter(|(c, _)| c == "a")
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(a, vec![1, 2, 3, 4, 5, 6]);
    let snap = store.snapshot();
    assert_eq!(
        (snap["a"].pos.seq, snap["b"].pos.seq, snap["c"].pos.seq),
        (6, 3, 3)
    );
}

#[test]
fn answers_are_classified() {
    let c = |s: u16, code: Option<&str>| match classify(
        StatusCode::from_u16(s).unwrap(),
        code,
        "m".into(),
        None,
    ) {
        Failure::Transient { .. } => "transient",
        Failure::Refused { .. } => "refused",
        Failure::Stop(_) => "stop",
    };
    assert_eq!(c(400, Some("invalid_batch")), "refused");
    assert_eq!(c(413, Some("payload_too_large")), "refused");
    assert_eq!(c(500, Some("internal")), "refused");
    assert_eq!(c(500, None), "transient");
    assert_eq!(c(502, None), "transient");
    assert_eq!(c(503, Some("unavailable")), "transient");
    assert_eq!(c(429, None), "transient");
    assert_eq!(c(408, None), "transient");
    assert_eq!(c(401, Some("unauthorized")), "stop");
    assert_eq!(c(403, None), "stop");
    assert_eq!(c(404, None), "stop");
    assert_eq!(c(400, Some("unsupported_version")), "stop");
}

/// A request as the ordering server saw it: its id, its `after` header, and whether it
/// arrived while another batch was being answered.
type Seen = (Option<String>, Option<String>, bool);

/// A server that orders batches as logarithmd does (`logarithm-batch-after`): a batch
/// naming batches not yet stored waits for them, at most `wait`, then is answered 503
/// `out_of_order`. Each answer takes `slow` first, so batches overlap.
#[derive(Default)]
struct Ordered {
    stored: Mutex<Vec<(String, u64)>>,
    committed: Mutex<std::collections::HashSet<String>>,
    changed: tokio::sync::Notify,
    seen: Mutex<Vec<Seen>>,
    busy: std::sync::atomic::AtomicUsize,
    out_of_order: std::sync::atomic::AtomicUsize,
}

async fn ordered_ingest(
    State(s): State<Arc<Ordered>>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Response {
    use std::sync::atomic::Ordering::SeqCst;
    let header = |n: &str| headers.get(n).map(|v| v.to_str().unwrap().to_string());
    let (id, after) = (
        header(protocol::BATCH_ID_HEADER),
        header(protocol::BATCH_AFTER_HEADER),
    );
    let overlapping = s.busy.fetch_add(1, SeqCst) > 0;
    s.seen
        .lock()
        .unwrap()
        .push((id.clone(), after.clone(), overlapping));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let json = zstd::decode_all(&body[..]).unwrap();
    let batch: Batch = serde_json::from_slice(&json).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
    let names: Vec<String> = after
        .iter()
        .flat_map(|a| a.split(',').map(str::to_string))
        .collect();
    loop {
        let changed = s.changed.notified();
        if names
            .iter()
            .all(|n| s.committed.lock().unwrap().contains(n))
        {
            break;
        }
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            s.busy.fetch_sub(1, SeqCst);
            s.out_of_order.fetch_add(1, SeqCst);
            let body = serde_json::json!({"error": {"code": "out_of_order", "message": "late"}});
            return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
        }
    }
    s.busy.fetch_sub(1, SeqCst);
    if let Some(refused) = refuse_poison(&batch) {
        return refused;
    }
    store_records(&s.stored, &batch);
    if let Some(id) = id {
        s.committed.lock().unwrap().insert(id);
    }
    s.changed.notify_waiters();
    (
        [(protocol::ORDERED_INGEST_HEADER, "1")],
        axum::Json(serde_json::json!({"records": 1, "stored": 1, "duplicates": 0})),
    )
        .into_response()
}

async fn serve_ordered(server: Arc<Ordered>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route(protocol::INGEST_PATH, post(ordered_ingest))
        .with_state(server);
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// Against a server that orders batches, a container's batches overlap (two in flight),
/// each naming the one before, and are still stored in order.
#[tokio::test]
async fn a_containers_batches_overlap_when_the_server_orders_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = Arc::new(Ordered::default());
    let url = serve_ordered(server.clone()).await;
    let batches = (0..6u64)
        .map(|i| batch(vec![segment("c1", i * 100 + 1..=i * 100 + 100, None)]))
        .collect();
    let reader = spool_frames(&dir.path().join("spool"), batches);
    let store = Arc::new(CheckpointStore::open(dir.path()).unwrap());
    shipper(&url, dir.path(), Arc::new(Metrics::new()))
        .run(reader, store.clone())
        .await;
    let expected: Vec<(String, u64)> = (1..=600).map(|s| ("c1".to_string(), s)).collect();
    assert_eq!(*server.stored.lock().unwrap(), expected);
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 6, "{seen:?}");
    // The first goes alone: the server has not said yet that it orders batches.
    assert_eq!(seen[0].1, None);
    assert!(
        seen.iter()
            .skip(1)
            .any(|(_, after, overlapping)| *overlapping && after.is_some()),
        "no batch was sent while the one before was in flight: {seen:?}"
    );
    for (_, after, _) in &seen {
        let Some(after) = after else { continue };
        assert!(
            seen.iter()
                .any(|(id, _, _)| id.as_deref() == Some(after.as_str())),
            "{after} names no batch sent: {seen:?}"
        );
    }
    assert_eq!(store.snapshot()["c1"].pos.seq, 600);
}

/// A batch whose predecessor is refused and split (its parts carry no id) is answered
/// `out_of_order`, sent again once the predecessor is settled, and stored after it.
#[tokio::test]
async fn a_batch_after_a_split_one_is_sent_again_once_it_is_settled() {
    let dir = tempfile::tempdir().unwrap();
    let server = Arc::new(Ordered::default());
    let url = serve_ordered(server.clone()).await;
    let reader = spool_frames(
        &dir.path().join("spool"),
        vec![
            batch(vec![segment("c1", 1..=10, None)]),
            batch(vec![segment("c1", 11..=50, Some(30))]),
            batch(vec![segment("c1", 51..=60, None)]),
        ],
    );
    let store = Arc::new(CheckpointStore::open(dir.path()).unwrap());
    shipper(&url, dir.path(), Arc::new(Metrics::new()))
        .run(reader, store.clone())
        .await;
    let expected: Vec<(String, u64)> = (1..=60)
        .filter(|s| *s != 30)
        .map(|s| ("c1".to_string(), s))
        .collect();
    assert_eq!(*server.stored.lock().unwrap(), expected);
    assert!(
        server
            .out_of_order
            .load(std::sync::atomic::Ordering::SeqCst)
            >= 1
    );
    assert_eq!(store.snapshot()["c1"].pos.seq, 60);
}
