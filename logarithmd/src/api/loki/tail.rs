//! `GET /loki/api/v1/tail` over WebSocket: Explore's live tail, on the live hub
//! ([`crate::live`]).
//!
//! On connect it sends the last `limit` lines since `start` (default: an hour ago), oldest
//! first; then it follows every selected job with a [`crate::live::JobFollower`] from the
//! last record the backlog read, so lines are pushed as their batch commits, each once.
//! Jobs that start later join: at once when this process commits their start (the
//! in-process job events), and within [`DISCOVER`] when another replica does. Messages are
//! Loki's tail shape `{"streams": [...], "dropped_entries": []}`, at most
//! [`MAX_LINES_PER_MESSAGE`] lines each. A tail follows at most `loki_max_jobs` jobs; past
//! that, or on a storage error, the socket closes with the reason (1011). A tail counts
//! as a follow of its token (`max_follows_per_token`, 429 beyond) and stays open at most
//! `max_stream_duration`, then closes normally (1000), as Loki's `tail_max_duration` does.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use futures::stream::SplitSink;
use futures::{SinkExt, StreamExt};
use protocol::Stream;
use serde_json::json;
use storage::EventKind;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout_at;

use super::labels;
use super::logql::{self, LogQuery};
use super::params::{Direction, LokiResult, Params, DEFAULT_RANGE_NS};
use super::query::{find_lines, streams_json, Found, StreamValues};
use super::select::{self, Selected};
use crate::api::read_limits::ReadBudget;
use crate::api::AppState;
use crate::auth::{Authorized, Caller, Read};
use crate::live::{FollowEvent, LogicalLine};
use crate::notify::RecvError;
use protocol::now_ns;

/// How often the tail looks in storage for selected jobs another replica started.
pub const DISCOVER: Duration = Duration::from_secs(2);
/// Lines sent per message at most; the rest follow in the next message.
const MAX_LINES_PER_MESSAGE: usize = 1000;
/// Lines the followers may hold for the socket before they wait (backpressure).
const FEED_CAPACITY: usize = 4096;

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
    // A tail is a follow: it counts against the token's max_follows_per_token (429).
    let slot = match state.follows.acquire(&caller) {
        Ok(slot) => slot,
        Err(e) => return Ok(e.into_response()),
    };
    let budget = ReadBudget::new(&state.config);
    Ok(ws.on_upgrade(move |socket| async move {
        run(state, caller, socket, q, start, limit, budget).await;
        drop(slot);
    }))
}

type Sink = SplitSink<WebSocket, Message>;

async fn run(
    state: AppState,
    caller: Caller,
    socket: WebSocket,
    q: LogQuery,
    start: i64,
    limit: usize,
    budget: ReadBudget,
) {
    let (mut tx, mut rx) = socket.split();
    // The client only ever closes (or pings, which axum answers).
    let mut closed = tokio::spawn(async move {
        while let Some(Ok(msg)) = rx.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    });
    let tail = Tail {
        state: &state,
        caller: &caller,
        q: &q,
        start,
        jobs: HashMap::new(),
        followers: JoinSet::new(),
    };
    let followed = timeout_at(budget.deadline(), tail.follow(&mut tx, limit, &mut closed)).await;
    closed.abort();
    let Ok(followed) = followed else {
        // Open max_stream_duration: a normal close, as Loki's own tail_max_duration does.
        let reason = format!("{} reached; reconnect", budget.time_limit().describe());
        let _ = tx
            .send(Message::Close(Some(CloseFrame {
                code: 1000,
                reason: Utf8Bytes::from(reason),
            })))
            .await;
        return;
    };
    if let Some(reason) = followed.err() {
        tracing::warn!(%reason, "Loki tail ended");
        let _ = tx
            .send(Message::Close(Some(CloseFrame {
                code: 1011,
                reason: Utf8Bytes::from(reason),
            })))
            .await;
    }
}

/// What the follower tasks hand the socket.
enum Fed {
    Line(i64, LogicalLine),
    Failed(String),
}

/// One tail's state: the followed jobs' labels and streams, and their follower tasks
/// (aborted when the tail ends).
struct Tail<'a> {
    state: &'a AppState,
    caller: &'a Caller,
    q: &'a LogQuery,
    start: i64,
    jobs: HashMap<i64, (BTreeMap<String, String>, Vec<Stream>)>,
    followers: JoinSet<()>,
}

impl Tail<'_> {
    /// Sends the backlog, then pushed lines, until the client goes away.
    async fn follow(
        mut self,
        tx: &mut Sink,
        limit: usize,
        closed: &mut JoinHandle<()>,
    ) -> Result<(), String> {
        let now = now_ns();
        let (feed_tx, mut feed) = mpsc::channel::<Fed>(FEED_CAPACITY);
        let selected = select::select(self.state, self.caller, &self.q.matchers, self.start, now)
            .await
            .map_err(|e| e.message)?;
        let ids: Vec<(i64, Vec<Stream>)> = selected
            .iter()
            .map(|s| (s.job.id, s.streams.clone()))
            .collect();
        for s in &selected {
            self.jobs
                .insert(s.job.id, (s.labels.clone(), s.streams.clone()));
        }
        let mut backlog = find_lines(
            self.state,
            self.q,
            selected,
            self.start,
            i64::MAX,
            limit,
            Direction::Backward,
        )
        .await
        .map_err(|e| e.message)?;
        let positions: HashMap<i64, u64> = backlog.positions.iter().copied().collect();
        // Found newest first (to keep the last `limit`); a tail sends oldest first.
        for (_, values) in &mut backlog.streams {
            values.reverse();
        }
        send(tx, backlog).await?;
        for (id, streams) in ids {
            let after = positions.get(&id).copied().unwrap_or(0);
            self.spawn_follower(&feed_tx, id, after, &streams);
        }
        let mut events = Some(self.state.events.subscribe());
        let mut discover = tokio::time::interval(DISCOVER);
        discover.tick().await;
        loop {
            tokio::select! {
                _ = &mut *closed => return Ok(()),
                fed = feed.recv() => {
                    let Some(first) = fed else { return Ok(()) };
                    let mut batch = vec![first];
                    while batch.len() < MAX_LINES_PER_MESSAGE {
                        match feed.try_recv() {
                            Ok(f) => batch.push(f),
                            Err(_) => break,
                        }
                    }
                    let found = self.message(batch)?;
                    send(tx, found).await?;
                }
                ev = next_event(&mut events) => match ev {
                    Ok(ev) if ev.kind == EventKind::JobStarted => {
                        self.join(&feed_tx, ev.job.clone(), now)?;
                    }
                    Ok(_) => {}
                    // Missed job starts are found by the next discovery.
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => events = None,
                },
                _ = discover.tick() => {
                    let found = select::select(self.state, self.caller, &self.q.matchers, now, i64::MAX)
                        .await
                        .map_err(|e| e.message)?;
                    for s in found {
                        if !self.jobs.contains_key(&s.job.id) {
                            self.add(&feed_tx, s)?;
                        }
                    }
                }
            }
        }
    }

    /// A job that started while tailing: followed from its first line if selected.
    fn join(
        &mut self,
        feed: &mpsc::Sender<Fed>,
        job: storage::Job,
        since: i64,
    ) -> Result<(), String> {
        if self.jobs.contains_key(&job.id) {
            return Ok(());
        }
        match select::judge(self.q, self.caller, job, since, i64::MAX) {
            Some(s) => self.add(feed, s),
            None => Ok(()),
        }
    }

    fn add(&mut self, feed: &mpsc::Sender<Fed>, s: Selected) -> Result<(), String> {
        let max = self.state.config.loki_max_jobs;
        if self.jobs.len() >= max {
            return Err(format!(
                "the tail would follow more than loki_max_jobs ({max}) jobs: narrow the selector"
            ));
        }
        self.spawn_follower(feed, s.job.id, 0, &s.streams);
        self.jobs.insert(s.job.id, (s.labels, s.streams));
        Ok(())
    }

    /// Follows one job from after `after`, feeding its lines to the socket.
    fn spawn_follower(
        &mut self,
        feed: &mpsc::Sender<Fed>,
        job: i64,
        after: u64,
        streams: &[Stream],
    ) {
        let only = match streams {
            [one] => Some(*one),
            _ => None,
        };
        let live = self.state.live.clone();
        let feed = feed.clone();
        self.followers.spawn(async move {
            let mut f = match live.follow_job(job, after, only).await {
                Ok(Some(f)) => f,
                Ok(None) => return,
                Err(e) => {
                    let _ = feed.send(Fed::Failed(e.to_string())).await;
                    return;
                }
            };
            loop {
                match f.next().await {
                    Ok(Some(FollowEvent::Line(l))) => {
                        if feed.send(Fed::Line(job, l)).await.is_err() {
                            return;
                        }
                    }
                    Ok(Some(FollowEvent::End(_))) | Ok(None) => return,
                    Err(e) => {
                        let _ = feed.send(Fed::Failed(e.to_string())).await;
                        return;
                    }
                }
            }
        });
    }

    /// Pushed lines as one message: filtered, grouped by stream in arrival order.
    fn message(&self, batch: Vec<Fed>) -> Result<Found, String> {
        let mut order: Vec<(i64, Stream)> = Vec::new();
        let mut values: HashMap<(i64, Stream), Vec<(i64, String)>> = HashMap::new();
        let mut returned = 0;
        for fed in batch {
            let (job, l) = match fed {
                Fed::Line(job, l) => (job, l),
                Fed::Failed(e) => return Err(e),
            };
            if l.ts < self.start || !self.q.keeps(&l.line) {
                continue;
            }
            let key = (job, l.stream);
            let v = values.entry(key).or_insert_with(|| {
                order.push(key);
                Vec::new()
            });
            v.push((l.ts, String::from_utf8_lossy(&l.line).into_owned()));
            returned += 1;
        }
        let streams: Vec<StreamValues> = order
            .into_iter()
            .filter_map(|key| {
                let (labels, _) = self.jobs.get(&key.0)?;
                let v = values.remove(&key)?;
                Some((labels::with_stream(labels.clone(), key.1), v))
            })
            .collect();
        Ok(Found {
            streams,
            scanned: 0,
            returned,
            positions: Vec::new(),
        })
    }
}

/// The next job event, or never once the event hub is gone.
async fn next_event(
    events: &mut Option<crate::notify::JobEventStream>,
) -> Result<std::sync::Arc<storage::JobEvent>, RecvError> {
    match events {
        Some(e) => e.recv().await,
        None => std::future::pending().await,
    }
}

async fn send(tx: &mut Sink, found: Found) -> Result<(), String> {
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
