//! The read limits of long reads (docs/api.md, "Read limits"), through `router().oneshot(..)`
//! on a real SQLite storage: a raw download, a `follow=true` download and an SSE job
//! stream stop at `max_download_lines` or `max_stream_duration` the documented way (the
//! truncation line naming where to continue; a `reconnect` event whose id resumes), and
//! continuing from there gives the rest with no gap and no duplicate.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use logarithmd::api::{router, AppState};
use logarithmd::Config;
use tower::ServiceExt;

mod sse;
use sse::{batch, ingest, job_id, lines, Reader, WAIT};

async fn app(config: Config) -> axum::Router {
    let store = storage::open(&storage::StorageConfig::new("sqlite::memory:"))
        .await
        .unwrap();
    let config = Config {
        anonymous_read: true,
        ..config
    };
    router(AppState::new(store, config))
}

/// A budget of 5 lines.
fn five_lines() -> Config {
    Config {
        max_download_lines: 5,
        ..Config::default()
    }
}

/// The body of a `text/plain` answer, read until it ends (within the wait).
async fn text(app: &axum::Router, uri: &str) -> String {
    let req = Request::get(uri).body(Body::empty()).unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = tokio::time::timeout(WAIT, resp.into_body().collect())
        .await
        .expect("the download ends")
        .unwrap()
        .to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

fn log(range: std::ops::RangeInclusive<u64>) -> String {
    range.map(|i| format!("line {i}\n")).collect()
}

#[tokio::test]
async fn a_raw_download_stops_at_the_line_budget_and_says_where_to_continue() {
    let app = app(five_lines()).await;
    ingest(&app, batch(lines(1..=12), Some(12))).await;
    let uri = format!("/api/v1/jobs/{}/logs?format=text", job_id());
    let first = text(&app, &uri).await;
    let trailer = "[logarithm] truncated: max_download_lines (5) reached; continue with ?after=5\n";
    assert_eq!(first, format!("{}{trailer}", log(1..=5)));
    let second = text(&app, &format!("{uri}&after=5")).await;
    assert!(second.starts_with(&log(6..=10)), "{second}");
    assert!(second.ends_with("continue with ?after=10\n"), "{second}");
    // The rest fits the budget: no truncation line.
    assert_eq!(text(&app, &format!("{uri}&after=10")).await, log(11..=12));
    // Exactly the budget to the end: complete, no truncation line either.
    assert_eq!(text(&app, &format!("{uri}&after=7")).await, log(8..=12));
}

#[tokio::test]
async fn a_follow_download_stops_at_the_line_budget_and_says_how_to_follow_on() {
    let app = app(five_lines()).await;
    ingest(&app, batch(lines(1..=7), None)).await;
    let uri = format!("/api/v1/jobs/{}/logs?format=text&follow=true", job_id());
    let first = text(&app, &uri).await;
    assert_eq!(
        first,
        format!(
            "{}[logarithm] truncated: max_download_lines (5) reached; continue with ?after=5&follow=true\n",
            log(1..=5)
        )
    );
    ingest(&app, batch(lines(8..=9), Some(9))).await;
    assert_eq!(text(&app, &format!("{uri}&after=5")).await, log(6..=9));
}

#[tokio::test]
async fn an_sse_stream_ends_with_reconnect_at_the_line_budget_and_resumes_from_its_id() {
    let app = app(five_lines()).await;
    ingest(&app, batch(lines(1..=12), Some(12))).await;
    let uri = format!("/api/v1/jobs/{}/logs/stream", job_id());
    let mut last = None;
    let mut seen = Vec::new();
    for round in 0..3 {
        let mut r = Reader::open(&app, &uri, last.as_deref()).await;
        loop {
            let e = r.next_event().await.expect("an event before the close");
            match e.event.as_deref() {
                Some("line") => seen.push(e.json()["seq"].as_u64().unwrap()),
                Some("reconnect") => {
                    assert!(round < 2, "a reconnect in round {round}");
                    let data = e.json();
                    assert_eq!(data["reason"], "max_download_lines");
                    assert_eq!(data["after"].as_u64(), seen.last().copied());
                    assert_eq!(e.id.as_deref(), Some(seen.len().to_string().as_str()));
                    last = e.id.clone();
                    r.assert_closed().await;
                    break;
                }
                Some("end") => {
                    assert_eq!(round, 2);
                    r.assert_closed().await;
                    break;
                }
                other => panic!("unexpected event {other:?}: {e:?}"),
            }
        }
    }
    assert_eq!(seen, (1..=12).collect::<Vec<u64>>());
}

#[tokio::test]
async fn follows_end_at_max_stream_duration() {
    let app = app(Config {
        max_stream_duration: Duration::from_secs(1),
        ..Config::default()
    })
    .await;
    // A running job that prints nothing more: only the time limit ends its follows.
    ingest(&app, batch(lines(1..=2), None)).await;
    let uri = format!("/api/v1/jobs/{}/logs/stream", job_id());
    let mut r = Reader::open(&app, &uri, None).await;
    assert_eq!(r.lines(2).await.len(), 2);
    let e = r.next_event().await.expect("the reconnect event");
    assert_eq!(e.event.as_deref(), Some("reconnect"), "{e:?}");
    assert_eq!(e.id.as_deref(), Some("2"));
    assert_eq!(e.json()["reason"], "max_stream_duration");
    r.assert_closed().await;

    let follow = format!("/api/v1/jobs/{}/logs?format=text&follow=true", job_id());
    assert_eq!(
        text(&app, &follow).await,
        format!(
            "{}[logarithm] truncated: max_stream_duration (1s) reached; continue with ?after=2&follow=true\n",
            log(1..=2)
        )
    );
}
