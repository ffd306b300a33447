//! Ordered ingest through the router on a real SQLite database: a batch that names its
//! predecessor (`logarithm-batch-after`) is decoded at once and stored after it; one whose
//! predecessor never comes is answered 503 `out_of_order`; every answer says the server
//! orders batches.

mod ordered;

use std::time::Duration;

use axum::http::StatusCode;
use logarithmd::Config;
use ordered::record;
use serde_json::Value;

const CID: &str = "feedfacefeedfacefeedfacefeedfacefeedfacefeedfacefeedfacefeedface";

async fn app() -> axum::Router {
    ordered::app(Config::default()).await
}

fn batch(seqs: std::ops::RangeInclusive<u64>, meta: bool) -> Value {
    let records = seqs
        .map(|s| record(s, &format!("line {s}"), false))
        .collect();
    ordered::batch(CID, records, meta)
}

/// The status, the ordering answer header and the body.
async fn post(
    app: &axum::Router,
    body: &Value,
    id: Option<&str>,
    after: Option<&str>,
) -> (StatusCode, Option<String>, Value) {
    let a = ordered::post(app, body, id, after).await;
    (a.status, a.ordered, a.body)
}

async fn stored_seqs(app: &axum::Router) -> Vec<u64> {
    ordered::stored(app, CID)
        .await
        .into_iter()
        .map(|(seq, _)| seq)
        .collect()
}

#[tokio::test]
async fn a_batch_sent_before_its_predecessor_is_stored_after_it() {
    let app = app().await;
    // The second batch arrives first and names the first.
    let second = {
        let app = app.clone();
        tokio::spawn(async move {
            let r = post(&app, &batch(11..=20, false), Some("ab-2"), Some("ab-1")).await;
            (r, tokio::time::Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!second.is_finished(), "stored before the batch it follows");
    let (status, ordered, ack) = post(&app, &batch(1..=10, true), Some("ab-1"), None).await;
    let first_done = tokio::time::Instant::now();
    assert_eq!(status, StatusCode::OK, "{ack}");
    assert_eq!(ordered.as_deref(), Some("1"));
    let ((status, ordered, ack), second_done) = second.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{ack}");
    assert_eq!(ordered.as_deref(), Some("1"));
    assert_eq!(ack["stored"], 10);
    assert!(second_done >= first_done);
    assert_eq!(stored_seqs(&app).await, (1..=20).collect::<Vec<_>>());
    // A third naming a committed batch goes at once.
    let (status, _, _) = post(&app, &batch(21..=30, false), Some("ab-3"), Some("ab-2")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_batch_whose_predecessor_never_comes_is_answered_out_of_order() {
    let app = app().await;
    let (status, _, _) = post(&app, &batch(1..=10, true), Some("cd-1"), None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, ordered, body) =
        post(&app, &batch(21..=30, false), Some("cd-3"), Some("cd-2")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "out_of_order");
    assert_eq!(ordered, None);
    // Nothing of it was stored; sent again without the header, it is.
    assert_eq!(stored_seqs(&app).await, (1..=10).collect::<Vec<_>>());
    let (status, _, _) = post(&app, &batch(21..=30, false), Some("cd-3"), None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn malformed_ordering_headers_are_refused() {
    let app = app().await;
    for (id, after) in [(Some("a b"), None), (None, Some("x,,y")), (Some(""), None)] {
        let (status, _, body) = post(&app, &batch(1..=1, true), id, after).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{id:?} {after:?}: {body}");
        assert_eq!(body["error"]["code"], "invalid_header");
    }
}
