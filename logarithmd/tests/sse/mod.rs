//! What the SSE tests (`stream.rs`, `read_limits.rs`) share: ingesting one container's
//! lines through the router, and reading Server-Sent Events from its answers.

#![allow(dead_code)]

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

/// The container the tests ingest.
pub const CID: &str = "5eed0123456789abcdef0123456789abcdef0123456789abcdef0123456789ab";

/// How long a test waits for the next frame.
pub const WAIT: Duration = Duration::from_secs(10);

/// One parsed SSE event (a comment-only block has `comment` set and no `event`).
#[derive(Debug, Default, Clone)]
pub struct Sse {
    pub event: Option<String>,
    pub id: Option<String>,
    pub data: String,
    pub comment: Option<String>,
}

impl Sse {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap()
    }
}

/// Reads SSE events from a response body.
pub struct Reader {
    body: Body,
    buf: String,
}

impl Reader {
    pub async fn open(app: &axum::Router, uri: &str, last_event_id: Option<&str>) -> Reader {
        let mut req = Request::get(uri).header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let resp = app
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        Reader {
            body: resp.into_body(),
            buf: String::new(),
        }
    }

    /// The next block, or `None` when the stream ended.
    pub async fn next_block(&mut self) -> Option<Sse> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut ev = Sse::default();
                for line in block.lines() {
                    if let Some(c) = line.strip_prefix(':') {
                        ev.comment = Some(c.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("event:") {
                        ev.event = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("id:") {
                        ev.id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        ev.data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                return Some(ev);
            }
            let frame = tokio::time::timeout(WAIT, self.body.frame())
                .await
                .expect("an SSE frame within the wait")?;
            if let Ok(data) = frame.unwrap().into_data() {
                self.buf.push_str(std::str::from_utf8(&data).unwrap());
            }
        }
    }

    /// The next event that is not a comment.
    pub async fn next_event(&mut self) -> Option<Sse> {
        loop {
            let b = self.next_block().await?;
            if b.event.is_some() {
                return Some(b);
            }
        }
    }

    /// `n` line events: their (id, text).
    pub async fn lines(&mut self, n: usize) -> Vec<(String, String)> {
        let mut out = Vec::new();
        while out.len() < n {
            let e = self.next_event().await.expect("a line event");
            assert_eq!(e.event.as_deref(), Some("line"), "{e:?}");
            out.push((
                e.id.clone().unwrap(),
                e.json()["text"].as_str().unwrap().to_owned(),
            ));
        }
        out
    }

    pub async fn assert_closed(&mut self) {
        assert!(self.next_event().await.is_none(), "the stream closes");
    }
}

pub fn record(seq: u64, stream: &str, text: &str) -> Value {
    json!({"seq": seq, "ts": 1000 + seq as i64, "stream": stream, "text": text})
}

pub fn batch(records: Vec<Value>, exit_last_seq: Option<u64>) -> Value {
    let mut seg = json!({
        "container_id": CID,
        "meta": {"name": "live", "image": "i", "labels": {}, "created_at": 1, "started_at": 2},
        "records": records,
    });
    if let Some(last) = exit_last_seq {
        seg["exit"] = json!({"exit_code": 0, "finished_at": 9000, "last_seq": last});
    }
    json!({"version": 1, "agent": {"id": "a", "node": "n"}, "segments": [seg]})
}

pub fn lines(range: std::ops::RangeInclusive<u64>) -> Vec<Value> {
    range
        .map(|i| record(i, "stdout", &format!("line {i}")))
        .collect()
}

pub async fn ingest(app: &axum::Router, b: Value) {
    let req = Request::post("/api/v1/ingest")
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&b).unwrap()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

pub fn job_id() -> String {
    storage::job_id_for_container(CID).to_string()
}
