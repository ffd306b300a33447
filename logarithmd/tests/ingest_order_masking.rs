//! Ordered ingest with masking, through the router on a real SQLite database: a container's
//! second batch that arrives before its first is committed (it names the first in
//! `logarithm-batch-after`) is masked exactly as if the two had been sent one after
//! another.
//!
//! Masking a batch's first record depends on the record before it, in the batch it
//! follows: a line continued across the two batches loses, at the cut, whatever could be
//! a piece of a value (`aaaa ***` / `*** bbbb`); a line that begins the second batch is
//! masked only where it holds a whole value. A batch masked before the one it follows is
//! seen cannot tell the two apart and fails closed (`*** bbbb` for both), which is what
//! happened while masking ran before the wait.

mod ordered;

use std::time::Duration;

use axum::http::StatusCode;
use logarithmd::masking::MaskingConfig;
use logarithmd::Config;
use ordered::{batch, metric_reaches, post, record, stored};
use serde_json::Value;

const SECRET: &str = "hunter2-secret-Zq8X";
/// Where the value is cut between the two batches.
const CUT: usize = 7;

async fn app() -> axum::Router {
    ordered::app(Config {
        masking: MaskingConfig {
            literals: vec![SECRET.into()],
            ..MaskingConfig::default()
        },
        // Long, so no second batch gives up while the test sends the first.
        ingest_order_wait: Duration::from_secs(120),
        ..Config::default()
    })
    .await
}

/// A container's two batches. `continued`: the last line of the first goes on in the
/// second, and the value is cut between them; otherwise that line ends, and the second
/// begins with text that looks like the end of the value.
fn batches(cid: &str, continued: bool) -> (Value, Value) {
    let (head, tail) = SECRET.split_at(CUT);
    let first = batch(
        cid,
        vec![
            record(1, &format!("plain {SECRET} end"), false),
            if continued {
                record(2, &format!("aaaa {head}"), true)
            } else {
                record(2, "a line that ends", false)
            },
        ],
        true,
    );
    let second = batch(
        cid,
        vec![
            record(3, &format!("{tail} bbbb"), false),
            record(4, "last", false),
        ],
        false,
    );
    (first, second)
}

fn cid(n: usize) -> String {
    format!("{n:0>64}")
}

/// The containers: the value cut between the batches, then a line that only looks like
/// its end; each twice (the second arrives first; the two are sent at once).
const CASES: [bool; 4] = [true, false, true, false];

#[tokio::test]
async fn a_value_cut_between_overlapping_batches_is_masked_as_if_sent_one_after_another() {
    // One after another.
    let sequential = app().await;
    for (n, continued) in CASES.into_iter().enumerate() {
        let (first, second) = batches(&cid(n), continued);
        for b in [first, second] {
            assert_eq!(
                post(&sequential, &b, None, None).await.status,
                StatusCode::OK
            );
        }
    }

    let overlapped = app().await;
    // The second batches of the first two arrive first and wait for the first batches.
    let mut waiting = Vec::new();
    for (n, continued) in CASES.into_iter().enumerate().take(2) {
        let (_, second) = batches(&cid(n), continued);
        let app = overlapped.clone();
        waiting.push(tokio::spawn(async move {
            let (id, after) = (format!("b{n}-2"), format!("b{n}-1"));
            post(&app, &second, Some(&id), Some(&after)).await
        }));
    }
    metric_reaches(&overlapped, "logarithmd_ingest_order_waiting", 2.0).await;
    for (n, continued) in CASES.into_iter().enumerate().take(2) {
        let (first, _) = batches(&cid(n), continued);
        let a = post(&overlapped, &first, Some(&format!("b{n}-1")), None).await;
        assert_eq!(a.status, StatusCode::OK, "{a:?}");
    }
    for w in waiting {
        let a = w.await.unwrap();
        assert_eq!(a.status, StatusCode::OK, "{a:?}");
    }
    // The others' two batches are sent at once, the second naming the first.
    for (n, continued) in CASES.into_iter().enumerate().skip(2) {
        let (first, second) = batches(&cid(n), continued);
        let (id1, id2) = (format!("b{n}-1"), format!("b{n}-2"));
        let (a, b) = tokio::join!(
            post(&overlapped, &first, Some(&id1), None),
            post(&overlapped, &second, Some(&id2), Some(&id1)),
        );
        assert_eq!(a.status, StatusCode::OK, "{a:?}");
        assert_eq!(b.status, StatusCode::OK, "{b:?}");
    }

    let (head, tail) = SECRET.split_at(CUT);
    let looks_like_the_end = format!("{tail} bbbb");
    for (n, continued) in CASES.into_iter().enumerate() {
        let lines = stored(&overlapped, &cid(n)).await;
        assert_eq!(lines, stored(&sequential, &cid(n)).await, "container {n}");
        let want = if continued {
            // Each side of the cut masked (the API joins the records of a line).
            vec!["plain *** end", "aaaa ****** bbbb", "last"]
        } else {
            // Not a piece of a value: it begins a line.
            vec![
                "plain *** end",
                "a line that ends",
                &looks_like_the_end,
                "last",
            ]
        };
        let texts: Vec<&str> = lines.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(texts, want, "container {n}");
        assert!(lines.iter().all(|(_, t)| !t.contains(head)), "{lines:?}");
    }
}
