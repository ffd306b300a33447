//! `GET /loki/api/v1/tail` over WebSocket: Explore's live tail.
//!
//! On connect it sends the last `limit` lines since `start` (default: an hour ago), then
//! every [`POLL`] the new lines of the selected jobs (jobs that start later included), each
//! message in Loki's tail shape `{"streams": [...], "dropped_entries": []}`. The selected
//! jobs are listed again on every poll, within `loki_max_jobs`; a storage error or a
//! selector that grows past the bound closes the socket with the reason.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use protocol::Stream;
use serde_json::json;

use super::labels;
use super::logql::{self, LogQuery};
use super::params::{Direction, LokiResult, Params, DEFAULT_RANGE_NS};
use super::query::{find_lines, streams_json, Found, StreamValues};
use super::select;
use crate::api::query::LineReader;
use crate::api::AppState;
use crate::auth::{Authorized, Caller, Read};
use crate::webhooks::dispatcher::now_ns;

/// How often the tail looks for new lines.
pub const POLL: Duration = Duration::from_millis(250);
/// Lines sent per message at most; the rest follow in the next message.
const MAX_LINES_PER_MESSAGE: usize = 1000;

/// Upgrades to a WebSocket after checking the parameters (so a bad query is a plain 400).
pub async fn tail(
    State(state): State<AppState>,
    auth: Authorized<Read>,
    RawQuery(raw): RawQuery,
    ws: WebSocketUpgrade,
) -> LokiResult<Response> {
    let p = Params::parse(raw.as_deref())?;
    let q = logql::parse_log(p.query()?)?;
    let now = now_ns();
    let start = p.time("start", now - DEFAULT_RANGE_NS)?;
    let limit = p.limit()?;
    select::check_bounds(&state, &q.matchers, start, now)?;
    let caller = auth.caller;
    Ok(ws.on_upgrade(move |socket| run(state, caller, socket, q, start, limit)))
}

/// Where the tail stands in one job.
struct Cursor {
    after: u64,
    labels: std::collections::BTreeMap<String, String>,
    streams: Vec<Stream>,
}

async fn run(
    state: AppState,
    caller: Caller,
    socket: WebSocket,
    q: LogQuery,
    start: i64,
    limit: usize,
) {
    let (mut tx, mut rx) = socket.split();
    // The client only ever closes (or pings, which axum answers).
    let closed = tokio::spawn(async move {
        while let Some(Ok(msg)) = rx.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    });
    let reason = follow(&state, &caller, &mut tx, &q, start, limit, &closed)
        .await
        .err();
    closed.abort();
    if let Some(reason) = reason {
        tracing::warn!(%reason, "Loki tail ended");
        let _ = tx
            .send(Message::Close(Some(CloseFrame {
                code: 1011,
                reason: Utf8Bytes::from(reason),
            })))
            .await;
    }
}

/// Sends what is there, then new lines, until the client goes away.
async fn follow(
    state: &AppState,
    caller: &Caller,
    tx: &mut futures::stream::SplitSink<WebSocket, Message>,
    q: &LogQuery,
    start: i64,
    limit: usize,
    closed: &tokio::task::JoinHandle<()>,
) -> Result<(), String> {
    let now = now_ns();
    // The backlog: the last `limit` lines, oldest first.
    let selected = select::select(state, caller, &q.matchers, start, now)
        .await
        .map_err(|e| e.message)?;
    let mut cursors: HashMap<i64, Cursor> = selected
        .iter()
        .map(|s| {
            (
                s.job.id,
                Cursor {
                    after: 0,
                    labels: s.labels.clone(),
                    streams: s.streams.clone(),
                },
            )
        })
        .collect();
    let backlog = find_lines(
        state,
        q,
        selected,
        start,
        i64::MAX,
        limit,
        Direction::Backward,
    )
    .await
    .map_err(|e| e.message)?;
    for (id, after) in &backlog.positions {
        if let Some(c) = cursors.get_mut(id) {
            c.after = *after;
        }
    }
    send(tx, backward_to_forward(backlog)).await?;
    let mut tick = tokio::time::interval(POLL);
    loop {
        tick.tick().await;
        if closed.is_finished() {
            return Ok(());
        }
        // Jobs alive since the tail began, new ones included.
        for s in select::select(state, caller, &q.matchers, now, i64::MAX)
            .await
            .map_err(|e| e.message)?
        {
            cursors.entry(s.job.id).or_insert(Cursor {
                after: 0,
                labels: s.labels,
                streams: s.streams,
            });
        }
        let mut streams: Vec<StreamValues> = Vec::new();
        let mut sent = 0usize;
        for (id, c) in cursors.iter_mut() {
            let only = match c.streams.as_slice() {
                [one] => Some(*one),
                _ => None,
            };
            let mut reader = LineReader::new(state.storage.clone(), *id, c.after, only);
            let mut by_stream: HashMap<Stream, Vec<(i64, String)>> = HashMap::new();
            while sent < MAX_LINES_PER_MESSAGE {
                let Some(l) = reader.next_line().await.map_err(|e| e.to_string())? else {
                    break;
                };
                c.after = l.last_seq;
                if l.ts < start || !q.keeps(&l.line) {
                    continue;
                }
                sent += 1;
                by_stream
                    .entry(l.stream)
                    .or_default()
                    .push((l.ts, String::from_utf8_lossy(&l.line).into_owned()));
            }
            for (st, values) in by_stream {
                streams.push((labels::with_stream(c.labels.clone(), st), values));
            }
        }
        if !streams.is_empty() {
            send(
                tx,
                Found {
                    streams,
                    scanned: 0,
                    returned: sent,
                    positions: Vec::new(),
                },
            )
            .await?;
        }
    }
}

/// The backlog was found newest first (to keep the last `limit`); a tail sends it oldest
/// first.
fn backward_to_forward(mut f: Found) -> Found {
    for (_, values) in &mut f.streams {
        values.reverse();
    }
    f
}

async fn send(
    tx: &mut futures::stream::SplitSink<WebSocket, Message>,
    found: Found,
) -> Result<(), String> {
    if found.streams.is_empty() {
        return Ok(());
    }
    let body = streams_json(found);
    let msg = json!({
        "streams": body["data"]["result"],
        "dropped_entries": [],
    });
    tx.send(Message::Text(Utf8Bytes::from(msg.to_string())))
        .await
        .map_err(|e| format!("sending to the client failed: {e}"))
}
