//! `GET /loki/api/v1/query_range` (log queries: Loki's `streams` result) and
//! `GET /loki/api/v1/query` (constant vectors only, for Grafana's health check; Loki itself
//! refuses log queries there too).

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BinaryHeap};

use axum::extract::{RawQuery, State};
use axum::Json;
use protocol::Stream;
use serde_json::{json, Value};

use super::labels;
use super::logql::{self, Expr, LogQuery};
use super::params::{Direction, LokiError, LokiResult, Params, DEFAULT_RANGE_NS};
use super::select::{self, Selected};
use crate::api::line_reader::LineReader;
use crate::api::AppState;
use crate::auth::{Authorized, Read};
use protocol::now_ns;

/// One line found, ordered by time, then job, then seq (the order both directions use).
struct Entry {
    ts: i64,
    job: i64,
    seq: u64,
    stream: Stream,
    line: Vec<u8>,
}

impl Entry {
    fn key(&self) -> (i64, i64, u64) {
        (self.ts, self.job, self.seq)
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

/// The `limit` first lines in the direction asked: a bounded heap, so memory stays at
/// `limit` lines however many are scanned.
enum Top {
    /// Oldest first: keep the smallest, evict the largest.
    Forward(BinaryHeap<Entry>),
    /// Newest first: keep the largest, evict the smallest.
    Backward(BinaryHeap<Reverse<Entry>>),
}

impl Top {
    fn new(direction: Direction) -> Top {
        match direction {
            Direction::Forward => Top::Forward(BinaryHeap::new()),
            Direction::Backward => Top::Backward(BinaryHeap::new()),
        }
    }

    fn push(&mut self, e: Entry, limit: usize) {
        match self {
            Top::Forward(h) => {
                h.push(e);
                if h.len() > limit {
                    h.pop();
                }
            }
            Top::Backward(h) => {
                h.push(Reverse(e));
                if h.len() > limit {
                    h.pop();
                }
            }
        }
    }

    /// The kept lines in the answer's order.
    fn into_sorted(self) -> Vec<Entry> {
        match self {
            Top::Forward(h) => h.into_sorted_vec(),
            Top::Backward(h) => h.into_sorted_vec().into_iter().map(|r| r.0).collect(),
        }
    }
}

/// A stream's labels and its `[ts, line]` values in the answer's order.
pub type StreamValues = (BTreeMap<String, String>, Vec<(i64, String)>);

/// What a log query found.
pub struct Found {
    pub streams: Vec<StreamValues>,
    pub scanned: usize,
    pub returned: usize,
    /// Per job read, the seq of the last record read.
    pub positions: Vec<(i64, u64)>,
}

/// Reads the lines of the selected jobs in `[start, end)` that pass the filters, and keeps
/// the `limit` first in `direction`. Answers 400 past `max_scan_lines` lines read.
pub async fn find_lines(
    state: &AppState,
    q: &LogQuery,
    selected: Vec<Selected>,
    start: i64,
    end: i64,
    limit: usize,
    direction: Direction,
) -> LokiResult<Found> {
    let max_scan = state.config.max_scan_lines;
    let mut top = Top::new(direction);
    let mut scanned = 0usize;
    let mut positions = Vec::new();
    let mut stream_labels: BTreeMap<(i64, Stream), BTreeMap<String, String>> = BTreeMap::new();
    for sel in selected {
        let only = match sel.streams.as_slice() {
            [one] => Some(*one),
            _ => None,
        };
        for s in &sel.streams {
            stream_labels.insert(
                (sel.job.id, *s),
                labels::with_stream(sel.labels.clone(), *s),
            );
        }
        let mut reader = LineReader::new(state.storage.clone(), sel.job.id, 0, only);
        let mut position = 0u64;
        while let Some(l) = reader
            .next_line()
            .await
            .map_err(|e| LokiError::storage("reading log lines failed", &e))?
        {
            scanned += 1;
            position = l.last_seq;
            if scanned > max_scan {
                return Err(LokiError::bad_request(format!(
                    "the query reads more than max_scan_lines ({max_scan}) lines: narrow the \
                     selector or the time range"
                )));
            }
            if l.ts < start || l.ts >= end || !q.keeps(&l.line) {
                continue;
            }
            top.push(
                Entry {
                    ts: l.ts,
                    job: sel.job.id,
                    seq: l.seq,
                    stream: l.stream,
                    line: l.line,
                },
                limit,
            );
        }
        positions.push((sel.job.id, position));
    }
    let entries = top.into_sorted();
    let returned = entries.len();
    let mut grouped: BTreeMap<(i64, Stream), Vec<(i64, String)>> = BTreeMap::new();
    for e in entries {
        grouped
            .entry((e.job, e.stream))
            .or_default()
            .push((e.ts, String::from_utf8_lossy(&e.line).into_owned()));
    }
    let streams = grouped
        .into_iter()
        .filter_map(|(k, v)| stream_labels.remove(&k).map(|l| (l, v)))
        .collect();
    Ok(Found {
        streams,
        scanned,
        returned,
        positions,
    })
}

/// Loki's `streams` result.
pub fn streams_json(found: Found) -> Value {
    let result: Vec<Value> = found
        .streams
        .into_iter()
        .map(|(labels, values)| {
            let values: Vec<Value> = values
                .into_iter()
                .map(|(ts, line)| json!([ts.to_string(), line]))
                .collect();
            json!({ "stream": labels, "values": values })
        })
        .collect();
    json!({
        "status": "success",
        "data": {
            "resultType": "streams",
            "result": result,
            "stats": {
                "summary": {
                    "totalLinesProcessed": found.scanned,
                    "totalEntriesReturned": found.returned,
                }
            }
        }
    })
}

/// `GET /loki/api/v1/query_range?query=&start=&end=&limit=&direction=` (`step` and
/// `interval` are accepted and ignored, as Loki ignores them for log queries).
pub async fn query_range(
    State(state): State<AppState>,
    auth: Authorized<Read>,
    RawQuery(raw): RawQuery,
) -> LokiResult<Json<Value>> {
    let p = Params::parse(raw.as_deref())?;
    let expr = logql::parse(p.query()?)?;
    let (start, end) = p.range(now_ns(), DEFAULT_RANGE_NS)?;
    let limit = p.limit()?;
    let direction = p.direction()?;
    let q = match expr {
        Expr::Log(q) => q,
        Expr::Constant(_) => {
            return Err(LokiError::bad_request(format!(
            "constant expressions are answered as instant queries only (/loki/api/v1/query); {}",
            logql::SUPPORTED
        )))
        }
    };
    select::check_bounds(&state, &q.matchers, start, end)?;
    let selected = select::select(&state, &auth.caller, &q.matchers, start, end).await?;
    let found = find_lines(&state, &q, selected, start, end, limit, direction).await?;
    Ok(Json(streams_json(found)))
}

/// `GET /loki/api/v1/query?query=&time=`: constant vectors (`vector(1)+vector(1)`, which
/// Grafana's health check sends). Log queries get 400 pointing at `query_range`.
pub async fn query(
    State(_state): State<AppState>,
    _auth: Authorized<Read>,
    RawQuery(raw): RawQuery,
) -> LokiResult<Json<Value>> {
    let p = Params::parse(raw.as_deref())?;
    let expr = logql::parse(p.query()?)?;
    let at = p.time("time", now_ns())?;
    match expr {
        Expr::Constant(v) => {
            let secs = at as f64 / 1e9;
            Ok(Json(json!({
                "status": "success",
                "data": {
                    "resultType": "vector",
                    "result": [ { "metric": {}, "value": [secs, v.to_string()] } ],
                    "stats": {}
                }
            })))
        }
        Expr::Log(_) => Err(LokiError::bad_request(
            "log queries are not supported as instant queries: use /loki/api/v1/query_range",
        )),
    }
}
