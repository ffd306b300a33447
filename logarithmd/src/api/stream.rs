//! Live follow over Server-Sent Events, on the live hub ([`crate::live`]):
//!
//! - `GET /api/v1/jobs/{id}/logs/stream?after=&stream=`: one `line` event per log line
//!   (`id` = the seq of the line's last record, so `Last-Event-ID` resumes right after it),
//!   then one `end` event with the job (verdict, reason, exit code), then the stream closes.
//! - `GET /api/v1/runs/{id}/stream`: one `run` event per save of the run (`id` = its
//!   version; the first is the run as it is now), then `end` with its final state.
//!
//! Idle streams carry a heartbeat comment every `live.heartbeat`. When logarithmd shuts
//! down, streams close without `end`: the client reconnects with `Last-Event-ID`. A stream
//! open `max_stream_duration`, or a job stream that sent `max_download_lines` lines, ends
//! with a `reconnect` event instead (see [`super::read_limits`]).
//!
//! The `follow=true` raw download of `GET /api/v1/jobs/{id}/logs` runs on the same
//! follower ([`follow_text`]).

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures::stream::{self, StreamExt};
use protocol::Stream;
use regex::bytes::Regex;
use serde::Serialize;
use tokio::time::timeout_at;

use super::error::{ApiError, ApiResult};
use super::query::{load_job, JobView};
use super::read_limits::{Limit, ReadBudget};
use super::AppState;
use crate::auth::{Authorized, Read};
use crate::flows::view::RunView;
use crate::live::{FollowError, FollowEvent, JobFollower, LogicalLine, RunEvent};

/// How long an `EventSource` waits before reconnecting after the stream drops.
const RECONNECT: Duration = Duration::from_secs(1);

/// The routes, to merge into the API router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/jobs/{id}/logs/stream", get(job_stream))
        .route("/api/v1/runs/{id}/stream", get(run_stream))
}

/// One log line as an SSE `line` event carries it.
#[derive(Debug, Serialize)]
pub struct LineEvent {
    pub seq: u64,
    /// Seq of the line's last record (differs from `seq` for a line joined from
    /// continuation records); the event id.
    pub last_seq: u64,
    pub ts: i64,
    pub stream: Stream,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b64: Option<String>,
}

impl LineEvent {
    pub fn new(l: LogicalLine) -> LineEvent {
        let r = protocol::Record::new(l.seq, l.ts, l.stream, l.line, false);
        LineEvent {
            seq: l.seq,
            last_seq: l.last_seq,
            ts: l.ts,
            stream: l.stream,
            text: r.text,
            b64: r.b64,
        }
    }
}

pub(super) fn follow_error(e: FollowError) -> ApiError {
    match e {
        FollowError::Full(full) => ApiError::overloaded(full.to_string(), 5),
        FollowError::Storage(e) => ApiError::storage("starting a live follow failed", &e),
        FollowError::Engine(e) => ApiError::internal("starting a live follow failed", &e),
    }
}

/// Where a job stream starts: `Last-Event-ID` (a reconnect) wins over `after`.
fn start_after(headers: &HeaderMap, after: Option<u64>) -> ApiResult<u64> {
    match headers.get("last-event-id") {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                ApiError::bad_request("invalid_header", "Last-Event-ID must be a seq number")
            }),
        None => Ok(after.unwrap_or(0)),
    }
}

fn parse_stream_params(raw: Option<&str>) -> ApiResult<(Option<u64>, Option<Stream>)> {
    let params: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|e| ApiError::bad_request("invalid_query", e.to_string()))?;
    let (mut after, mut stream) = (None, None);
    for (k, v) in params {
        match k.as_str() {
            "after" => {
                after = Some(v.parse().map_err(|_| {
                    ApiError::bad_request("invalid_query", "after must be a seq number")
                })?)
            }
            "stream" => {
                stream = Some(
                    v.parse()
                        .map_err(|e: String| ApiError::bad_request("invalid_query", e))?,
                )
            }
            other => {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    format!("unknown parameter {other:?}"),
                ))
            }
        }
    }
    Ok((after, stream))
}

fn json_event(kind: &'static str, id: u64, data: &impl Serialize) -> Event {
    match Event::default()
        .event(kind)
        .id(id.to_string())
        .json_data(data)
    {
        Ok(e) => e,
        // Our views always serialize; say so on the stream rather than panic.
        Err(e) => Event::default()
            .event("error")
            .data(format!("cannot encode an event: {e}")),
    }
}

/// The last event of a stream stopped by a read limit: its id is where the stream stood,
/// so an `EventSource` (which reconnects on its own, sending `Last-Event-ID`) resumes
/// right after it.
fn reconnect_event(limit: Limit, id: u64) -> Event {
    let data = serde_json::json!({
        "reason": limit.name(),
        "message": format!("{} reached; reconnect to continue", limit.describe()),
        "after": id,
    });
    json_event("reconnect", id, &data)
}

fn error_event(message: &str) -> Event {
    json_event("error", 0, &serde_json::json!({ "message": message }))
}

fn sse(state: &AppState, events: impl futures::Stream<Item = Event> + Send + 'static) -> Response {
    let first = Event::default().retry(RECONNECT).comment("live");
    let events = stream::once(async move { first })
        .chain(events)
        .map(Ok::<_, Infallible>);
    let mut resp = Sse::new(events)
        .keep_alive(
            KeepAlive::new()
                .interval(state.live.settings.heartbeat)
                .text("heartbeat"),
        )
        .into_response();
    // Tells nginx-style proxies not to buffer the stream.
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

/// `GET /api/v1/jobs/{id}/logs/stream`
async fn job_stream(
    State(state): State<AppState>,
    auth: Authorized<Read>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (after, stream_filter) = parse_stream_params(raw.as_deref())?;
    let after = start_after(&headers, after)?;
    // Answers 404 for a job the token may not read.
    let job_id = load_job(state.storage.as_ref(), &auth.caller, &id)
        .await?
        .id;
    let slot = state.follows.acquire(&auth.caller)?;
    let follower = state
        .live
        .follow_job(job_id, after, stream_filter)
        .await
        .map_err(follow_error)?
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
    let budget = ReadBudget::new(&state.config);
    let events = stream::unfold(Some((follower, budget, after)), |st| async move {
        let (mut f, mut budget, last) = st?;
        let next = match budget.reached() {
            Some(limit) => Err(limit),
            None => timeout_at(budget.deadline(), f.next())
                .await
                .map_err(|_| budget.time_limit()),
        };
        let next = match next {
            Ok(next) => next,
            Err(limit) => return Some((reconnect_event(limit, last), None)),
        };
        match next {
            Ok(Some(FollowEvent::Line(l))) => {
                budget.count();
                let id = l.last_seq;
                let ev = json_event("line", id, &LineEvent::new(l));
                Some((ev, Some((f, budget, id))))
            }
            Ok(Some(FollowEvent::End(job))) => {
                let id = job.last_seq;
                Some((json_event("end", id, &JobView::from_job(*job)), None))
            }
            Ok(None) => None,
            Err(e) => {
                tracing::error!(job_id = f.job_id(), error = %e, "a live job stream failed");
                Some((
                    error_event("reading the log failed; reconnect to resume"),
                    None,
                ))
            }
        }
    });
    Ok(crate::auth::follows::hold(sse(&state, events), slot))
}

/// `GET /api/v1/runs/{id}/stream`
async fn run_stream(
    State(state): State<AppState>,
    auth: Authorized<Read>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let follower = state
        .live
        .runs
        .follow(&id)
        .await
        .map_err(follow_error)?
        .filter(|f| auth.caller.may_read_flow(f.flow()))
        .ok_or_else(|| ApiError::not_found(format!("no run {id}")))?;
    let slot = state.follows.acquire(&auth.caller)?;
    let caller = auth.caller;
    let budget = ReadBudget::new(&state.config);
    let events = stream::unfold(Some((follower, caller, 0, budget)), |st| async move {
        let (mut f, caller, version, budget) = st?;
        let Ok(next) = timeout_at(budget.deadline(), f.next()).await else {
            return Some((reconnect_event(budget.time_limit(), version), None));
        };
        match next {
            Ok(Some(RunEvent::Saved(s))) => Some((
                json_event("run", s.version, &RunView::shown_to(&s.run, &caller)),
                Some((f, caller, s.version, budget)),
            )),
            Ok(Some(RunEvent::End(s))) => Some((
                json_event("end", s.version, &RunView::shown_to(&s.run, &caller)),
                None,
            )),
            Ok(None) => None,
            Err(e) => {
                tracing::error!(error = %e, "a live run stream failed");
                Some((error_event("reading the run failed; reconnect"), None))
            }
        }
    });
    Ok(crate::auth::follows::hold(sse(&state, events), slot))
}

/// Where a `follow=true` download stands.
struct TextFollow {
    follower: JobFollower,
    filter: Option<Regex>,
    limit: Option<usize>,
    budget: ReadBudget,
    /// The last record read (sent or filtered out): where a continuation starts.
    last_seq: u64,
    sent: usize,
    done: bool,
}

/// The raw log as `text/plain`, then new lines as they are committed, until the job
/// finishes (`follow=true`). Lines are flushed whenever the follower has to wait. At
/// `max_download_lines` lines or `max_stream_duration`, it ends with a
/// [`Limit::trailer`] line (`…?after=SEQ&follow=true`).
pub fn follow_text(
    follower: JobFollower,
    filter: Option<Regex>,
    limit: Option<usize>,
    budget: ReadBudget,
    after: u64,
) -> Response {
    const CHUNK: usize = 64 << 10;
    let st = TextFollow {
        follower,
        filter,
        limit,
        budget,
        last_seq: after,
        sent: 0,
        done: false,
    };
    let body = stream::unfold(st, |mut st| async move {
        if st.done {
            return None;
        }
        let mut chunk = Vec::with_capacity(CHUNK);
        loop {
            if st.limit.is_some_and(|l| st.sent >= l) {
                st.done = true;
                return Some((Ok(chunk), st));
            }
            if !chunk.is_empty() && (chunk.len() >= CHUNK || st.follower.is_idle()) {
                return Some((Ok(chunk), st));
            }
            let next = match st.budget.reached() {
                Some(limit) => Err(limit),
                None => timeout_at(st.budget.deadline(), st.follower.next())
                    .await
                    .map_err(|_| st.budget.time_limit()),
            };
            let next = match next {
                Ok(next) => next,
                Err(limit) => {
                    st.done = true;
                    chunk.extend_from_slice(&limit.trailer(st.last_seq, true));
                    return Some((Ok(chunk), st));
                }
            };
            match next {
                Ok(Some(FollowEvent::Line(l))) => {
                    st.budget.count();
                    st.last_seq = l.last_seq;
                    if st.filter.as_ref().is_some_and(|re| !re.is_match(&l.line)) {
                        continue;
                    }
                    st.sent += 1;
                    chunk.extend_from_slice(&l.line);
                    chunk.push(b'\n');
                }
                Ok(Some(FollowEvent::End(_))) | Ok(None) => {
                    st.done = true;
                    return Some((Ok(chunk), st));
                }
                Err(e) => {
                    tracing::error!(error = %e, "following a log failed");
                    st.done = true;
                    return Some((Err(std::io::Error::other(e)), st));
                }
            }
        }
    });
    let mut resp = Response::new(Body::from_stream(body.filter(|c| {
        // Empty chunks would read as the end to some clients.
        futures::future::ready(c.as_ref().map_or(true, |c: &Vec<u8>| !c.is_empty()))
    })));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}
