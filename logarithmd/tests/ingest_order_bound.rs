//! Ordered ingest's memory bound, through the router on a real SQLite database: batches
//! waiting for the batches they follow hold at most `ingest_order_waiting_bytes` (decoded)
//! together; one that finds no room is answered 503 with `Retry-After` and counted; the
//! batches they wait for still get through (with one writer), and once the refused ones
//! are sent again every line is stored exactly once, in order.

mod ordered;

use std::time::Duration;

use axum::http::StatusCode;
use logarithmd::Config;
use ordered::{batch, metric, metric_reaches, post, record, stored, Answer};
use serde_json::Value;

/// Containers, each with a first batch and a second that follows it.
const CONTAINERS: usize = 12;
/// Records per batch, and the bytes of each record's text.
const RECORDS: u64 = 20;
const LINE: usize = 1000;
/// A second batch decodes to its line bytes (20,000) plus less than 10 % (each record's
/// fixed part, the container id), so five fit and a sixth does not.
const PER_BATCH_MIN: usize = RECORDS as usize * LINE;
const BOUND: usize = 5 * (PER_BATCH_MIN + PER_BATCH_MIN / 10);
const FIT: usize = 5;

fn cid(i: usize) -> String {
    format!("{i:0>64}")
}

fn text(i: usize, seq: u64) -> String {
    let head = format!("container {i} line {seq} ");
    format!("{head}{}", "x".repeat(LINE - head.len()))
}

fn part(i: usize, second: bool) -> Value {
    let first = if second { RECORDS + 1 } else { 1 };
    let records = (first..first + RECORDS)
        .map(|s| record(s, &text(i, s), false))
        .collect();
    batch(&cid(i), records, !second)
}

/// Container `i`'s second batch, naming its first.
async fn send_second(app: &axum::Router, i: usize) -> Answer {
    let (id, after) = (format!("c{i}-2"), format!("c{i}-1"));
    post(app, &part(i, true), Some(&id), Some(&after)).await
}

fn refused_for_room(a: &Answer) -> bool {
    a.status == StatusCode::SERVICE_UNAVAILABLE && a.body["error"]["code"] == "unavailable"
}

#[tokio::test]
async fn waiting_batches_stay_within_the_bound_and_never_hold_up_their_predecessors() {
    let app = ordered::app(Config {
        ingest_order_waiting_bytes: BOUND,
        // Long, so no second batch gives up while the test looks at the ones waiting.
        ingest_order_wait: Duration::from_secs(120),
        // One writer: the waiting batches must not hold it.
        ingest_concurrency: 1,
        ..Config::default()
    })
    .await;

    // Every container's second batch first, all at once, each naming its first.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..CONTAINERS {
        let (app, tx) = (app.clone(), tx.clone());
        tokio::spawn(async move {
            tx.send((i, send_second(&app, i).await)).unwrap();
        });
    }
    // Those beyond the bound are answered at once; the others wait.
    let mut refused = Vec::new();
    for _ in FIT..CONTAINERS {
        let (i, a) = rx.recv().await.unwrap();
        assert!(refused_for_room(&a), "container {i}: {a:?}");
        assert_eq!(a.retry_after.as_deref(), Some("1"), "{a:?}");
        refused.push(i);
    }
    assert_eq!(
        metric(&app, "logarithmd_ingest_order_refused_total").await,
        (CONTAINERS - FIT) as f64
    );
    assert_eq!(
        metric(&app, "logarithmd_ingest_order_waiting").await,
        FIT as f64
    );
    let held = metric(&app, "logarithmd_ingest_order_waiting_bytes").await as usize;
    assert!(
        (FIT * PER_BATCH_MIN..=BOUND).contains(&held),
        "{held} bytes waiting, bound {BOUND}"
    );
    assert!(rx.try_recv().is_err(), "a waiting batch was answered");

    // The first batches go through while the room is full, one writer for all.
    for i in 0..CONTAINERS {
        let a = post(&app, &part(i, false), Some(&format!("c{i}-1")), None).await;
        assert_eq!(a.status, StatusCode::OK, "container {i}: {a:?}");
    }
    // The waiting ones are stored after them.
    for _ in 0..FIT {
        let (i, a) = rx.recv().await.unwrap();
        assert_eq!(a.status, StatusCode::OK, "container {i}: {a:?}");
        assert!(!refused.contains(&i));
    }
    metric_reaches(&app, "logarithmd_ingest_order_waiting", 0.0).await;
    assert_eq!(
        metric(&app, "logarithmd_ingest_order_waiting_bytes").await,
        0.0
    );
    // The agent resends the refused ones (their predecessors are stored: no wait).
    for &i in &refused {
        let a = send_second(&app, i).await;
        assert_eq!(a.status, StatusCode::OK, "container {i}: {a:?}");
        assert_eq!(a.body["stored"], RECORDS, "{a:?}");
    }
    assert_eq!(
        metric(&app, "logarithmd_ingest_order_refused_total").await,
        (CONTAINERS - FIT) as f64
    );
    for i in 0..CONTAINERS {
        let want: Vec<(u64, String)> = (1..=2 * RECORDS).map(|s| (s, text(i, s))).collect();
        assert_eq!(stored(&app, &cid(i)).await, want, "container {i}");
    }
    assert_eq!(
        metric(&app, "logarithmd_ingest_lines_total").await,
        (CONTAINERS as u64 * 2 * RECORDS) as f64
    );
}

#[tokio::test]
async fn with_no_room_no_batch_waits_and_the_resend_is_stored() {
    let app = ordered::app(Config {
        ingest_order_waiting_bytes: 0,
        ..Config::default()
    })
    .await;
    let a = post(&app, &part(0, true), Some("z-2"), Some("z-1")).await;
    assert!(refused_for_room(&a), "{a:?}");
    assert!(a.retry_after.is_some());
    assert_eq!(
        post(&app, &part(0, false), Some("z-1"), None).await.status,
        StatusCode::OK
    );
    // Its predecessor is stored: it needs no room.
    let a = post(&app, &part(0, true), Some("z-2"), Some("z-1")).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    let want: Vec<(u64, String)> = (1..=2 * RECORDS).map(|s| (s, text(0, s))).collect();
    assert_eq!(stored(&app, &cid(0)).await, want);
}
