//! The query API: jobs (filtered, paginated), one job, and a job's log lines (JSON pages,
//! or the raw log as `text/plain` for download).

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use protocol::Stream;
use regex::bytes::{Regex, RegexBuilder};
use serde::Serialize;
use storage::{Job, JobCursor, JobId, JobQuery, JobStatus, Storage};

use super::download::{raw_download, DownloadRequest};
use super::error::{ApiError, ApiResult};
use super::line_reader::LineReader;
use super::read_limits::ReadBudget;
use super::AppState;
use crate::auth::{Authorized, Caller, Read};
pub use crate::job_view::JobView;

const DEFAULT_JOB_PAGE: u32 = 50;
const MAX_JOB_PAGE: u32 = 500;
const DEFAULT_LINE_PAGE: usize = 1000;
const MAX_LINE_PAGE: usize = 10_000;
/// Most `label=` filters one job listing may combine (each is a join in storage).
const MAX_LABEL_FILTERS: usize = 8;
#[derive(Debug, Serialize)]
pub struct JobPage {
    pub jobs: Vec<JobView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// `GET /api/v1/jobs?flow=&run=&stage=&action=&job=&status=&label=k=v&limit=&cursor=`
pub async fn list_jobs(
    State(state): State<AppState>,
    auth: Authorized<Read>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<JobPage>> {
    let params: Vec<(String, String)> = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::bad_request("invalid_query", e.to_string()))?;
    let mut q = JobQuery {
        limit: DEFAULT_JOB_PAGE,
        ..JobQuery::default()
    };
    for (k, v) in params {
        match k.as_str() {
            "flow" => q.flow = Some(v),
            "run" => q.run = Some(v),
            "stage" => q.stage = Some(v),
            "action" => q.action = Some(v),
            "job" => q.job = Some(v),
            "status" => {
                q.status = Some(JobStatus::parse(&v).ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_query",
                        format!("status {v:?} is not one of running, success, failure"),
                    )
                })?)
            }
            "label" => {
                let (lk, lv) = v.split_once('=').ok_or_else(|| {
                    ApiError::bad_request("invalid_query", "label must be key=value")
                })?;
                if q.labels.len() == MAX_LABEL_FILTERS {
                    return Err(ApiError::bad_request(
                        "invalid_query",
                        format!("at most {MAX_LABEL_FILTERS} label filters"),
                    ));
                }
                q.labels.push((lk.to_owned(), lv.to_owned()));
            }
            "limit" => {
                q.limit = v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=MAX_JOB_PAGE).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(
                            "invalid_query",
                            format!("limit must be 1 to {MAX_JOB_PAGE}"),
                        )
                    })?
            }
            "cursor" => q.after = Some(parse_cursor(&v)?),
            other => {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    format!("unknown parameter {other:?}"),
                ))
            }
        }
    }
    q.flow = auth.caller.flow_filter(q.flow.take())?;
    let jobs = state
        .storage
        .list_jobs(&q)
        .await
        .map_err(|e| ApiError::storage("listing jobs failed", &e))?;
    let next_cursor = if jobs.len() == q.limit as usize {
        jobs.last().map(|j| format!("{}.{}", j.created_at, j.id))
    } else {
        None
    };
    Ok(Json(JobPage {
        jobs: jobs.into_iter().map(JobView::from_job).collect(),
        next_cursor,
    }))
}

fn parse_cursor(v: &str) -> ApiResult<JobCursor> {
    let bad = || ApiError::bad_request("invalid_query", "cursor is not one this API gave out");
    let (a, b) = v.split_once('.').ok_or_else(bad)?;
    Ok(JobCursor {
        created_at: a.parse().map_err(|_| bad())?,
        id: b.parse().map_err(|_| bad())?,
    })
}

pub(super) fn parse_job_id(id: &str) -> ApiResult<JobId> {
    id.parse::<JobId>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| ApiError::not_found(format!("no job {id:?}")))
}

/// The job, if `caller` may read it (a job of a flow the token may not read is "not
/// found", so its existence is not revealed).
pub async fn load_job(storage: &dyn Storage, caller: &Caller, id: &str) -> ApiResult<Job> {
    let job_id = parse_job_id(id)?;
    storage
        .get_job(job_id)
        .await
        .map_err(|e| ApiError::storage("reading a job failed", &e))?
        .filter(|j| caller.may_read_flow(j.flow.as_deref()))
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))
}

/// `GET /api/v1/jobs/{id}`
pub async fn get_job(
    State(state): State<AppState>,
    auth: Authorized<Read>,
    Path(id): Path<String>,
) -> ApiResult<Json<JobView>> {
    let job = load_job(state.storage.as_ref(), &auth.caller, &id).await?;
    Ok(Json(JobView::from_job(job)))
}

/// One log line as the API shows it: continuation records already joined.
#[derive(Debug, Serialize)]
pub struct LineView {
    pub seq: u64,
    /// Docker's timestamp, ns since the epoch.
    pub ts: i64,
    pub stream: Stream,
    /// The line when it is UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The line as base64 when it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b64: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct LinePage {
    pub job_id: String,
    pub lines: Vec<LineView>,
    /// Pass as `after` to continue; the seq of the last record read.
    pub next_after: u64,
    /// Whether reading stopped before the end of what is stored now.
    pub more: bool,
}

/// Query parameters of the logs endpoint.
struct LogParams {
    after: u64,
    limit: Option<usize>,
    stream: Option<Stream>,
    filter: Option<Regex>,
    /// Live tail: keep the download open and send new lines until the job finishes.
    follow: bool,
    /// `format=text`: the raw log, as with `Accept: text/plain` (for plain links).
    text: bool,
}

fn parse_log_params(raw: Option<&str>) -> ApiResult<LogParams> {
    let params: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|e| ApiError::bad_request("invalid_query", e.to_string()))?;
    let mut p = LogParams {
        after: 0,
        limit: None,
        stream: None,
        filter: None,
        follow: false,
        text: false,
    };
    let build = |pattern: &str| {
        RegexBuilder::new(pattern)
            .size_limit(1 << 20)
            .build()
            .map_err(|e| ApiError::bad_request("invalid_query", format!("regex: {e}")))
    };
    for (k, v) in params {
        match k.as_str() {
            "after" => {
                p.after = v.parse().map_err(|_| {
                    ApiError::bad_request("invalid_query", "after must be a seq number")
                })?
            }
            "limit" => {
                p.limit = Some(
                    v.parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_LINE_PAGE).contains(n))
                        .ok_or_else(|| {
                            ApiError::bad_request(
                                "invalid_query",
                                format!("limit must be 1 to {MAX_LINE_PAGE}"),
                            )
                        })?,
                )
            }
            "stream" => {
                p.stream = Some(
                    v.parse()
                        .map_err(|e: String| ApiError::bad_request("invalid_query", e))?,
                )
            }
            "follow" => {
                p.follow = match v.as_str() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => {
                        return Err(ApiError::bad_request(
                            "invalid_query",
                            "follow must be true or false",
                        ))
                    }
                }
            }
            "format" => {
                p.text = match v.as_str() {
                    "text" => true,
                    "json" => false,
                    _ => {
                        return Err(ApiError::bad_request(
                            "invalid_query",
                            "format must be text or json",
                        ))
                    }
                }
            }
            "contains" if p.filter.is_none() => p.filter = Some(build(&regex::escape(&v))?),
            "regex" if p.filter.is_none() => p.filter = Some(build(&v)?),
            "contains" | "regex" => {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    "give at most one of contains and regex",
                ))
            }
            other => {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    format!("unknown parameter {other:?}"),
                ))
            }
        }
    }
    Ok(p)
}

/// `GET /api/v1/jobs/{id}/logs?after=&limit=&stream=&contains=&regex=`: JSON pages, or
/// with `Accept: text/plain` the raw log (every matching line, `\n`-terminated).
pub async fn job_logs(
    State(state): State<AppState>,
    auth: Authorized<Read>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let params = parse_log_params(raw.as_deref())?;
    let job = load_job(state.storage.as_ref(), &auth.caller, &id).await?;
    let wants_text = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/plain"))
        || params.text;
    let budget = ReadBudget::new(&state.config);
    if wants_text && params.follow {
        let slot = state.follows.acquire(&auth.caller)?;
        let follower = state
            .live
            .follow_job(job.id, params.after, params.stream)
            .await
            .map_err(super::stream::follow_error)?
            .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
        return Ok(crate::auth::follows::hold(
            super::stream::follow_text(follower, params.filter, params.limit, budget, params.after),
            slot,
        ));
    }
    if wants_text {
        let req = DownloadRequest {
            job_id: job.id,
            after: params.after,
            stream: params.stream,
            filter: params.filter,
            limit: params.limit,
            budget,
            last_seq: job.last_seq,
        };
        return Ok(raw_download(state.storage.clone(), req));
    }
    if params.follow {
        return Err(ApiError::bad_request(
            "invalid_query",
            "follow streams the raw log: ask with Accept: text/plain",
        ));
    }
    let limit = params.limit.unwrap_or(DEFAULT_LINE_PAGE);
    let reader = LineReader::new(state.storage.clone(), job.id, params.after, params.stream);
    let page = read_page(
        reader,
        &params,
        limit,
        state.config.max_scan_lines,
        state.config.max_page_bytes,
    )
    .await
    .map_err(|e| ApiError::storage("reading log lines failed", &e))?;
    Ok(Json(LinePage {
        job_id: job.id.to_string(),
        ..page
    })
    .into_response())
}

/// Reads one JSON page: at most `limit` lines, `max_scan` lines scanned, and about
/// `max_bytes` of line content (the line that crosses it is the page's last; a page always
/// has at least one line when one matches).
async fn read_page(
    mut reader: LineReader,
    params: &LogParams,
    limit: usize,
    max_scan: usize,
    max_bytes: usize,
) -> storage::Result<LinePage> {
    let mut lines = Vec::new();
    let mut next_after = params.after;
    let mut scanned = 0usize;
    let mut bytes = 0usize;
    let mut more = true;
    while lines.len() < limit && scanned < max_scan && bytes < max_bytes {
        let Some(l) = reader.next_line().await? else {
            more = false;
            break;
        };
        scanned += 1;
        next_after = l.last_seq;
        if params
            .filter
            .as_ref()
            .is_some_and(|re| !re.is_match(&l.line))
        {
            continue;
        }
        bytes += l.line.len();
        let r = protocol::Record::new(l.seq, l.ts, l.stream, l.line, false);
        lines.push(LineView {
            seq: l.seq,
            ts: l.ts,
            stream: l.stream,
            text: r.text,
            b64: r.b64,
        });
    }
    Ok(LinePage {
        job_id: String::new(),
        lines,
        next_after,
        more,
    })
}
