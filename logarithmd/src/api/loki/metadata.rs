//! The label browser's routes: `labels`, `label/{name}/values` and `series`, over the jobs
//! alive in `[start, end)` (default: the last 6 hours, as Loki), within the same bounds as
//! queries.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{Path, RawQuery, State};
use axum::Json;
use serde_json::{json, Value};

use super::labels;
use super::logql::{self, Matcher};
use super::params::{LokiError, LokiResult, Params};
use super::select::{self, Selected};
use crate::api::AppState;
use crate::auth::{Authorized, Caller, Read};
use protocol::now_ns;

/// Loki's default range for label queries.
const METADATA_RANGE_NS: i64 = 6 * 3_600_000_000_000;

/// The selected streams' label sets, for the optional `query` parameter.
async fn selected(state: &AppState, caller: &Caller, p: &Params) -> LokiResult<Vec<Selected>> {
    let (start, end) = p.range(now_ns(), METADATA_RANGE_NS)?;
    let matchers: Vec<Matcher> = match p.get("query") {
        Some(q) => logql::parse_log(q)?.matchers,
        None => Vec::new(),
    };
    select::check_bounds(state, &matchers, start, end)?;
    select::select(state, caller, &matchers, start, end).await
}

fn success(data: Value) -> Json<Value> {
    Json(json!({ "status": "success", "data": data }))
}

/// `GET /loki/api/v1/labels?start=&end=&query=`: label names, sorted.
pub async fn labels(
    State(state): State<AppState>,
    auth: Authorized<Read>,
    RawQuery(raw): RawQuery,
) -> LokiResult<Json<Value>> {
    let p = Params::parse(raw.as_deref())?;
    let mut names = BTreeSet::new();
    for s in selected(&state, &auth.caller, &p).await? {
        names.extend(s.labels.into_keys());
        names.insert("stream".to_owned());
    }
    Ok(success(json!(names)))
}

/// `GET /loki/api/v1/label/{name}/values?start=&end=&query=`: the label's values, sorted.
pub async fn label_values(
    State(state): State<AppState>,
    auth: Authorized<Read>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> LokiResult<Json<Value>> {
    let p = Params::parse(raw.as_deref())?;
    let mut values = BTreeSet::new();
    for s in selected(&state, &auth.caller, &p).await? {
        if name == "stream" {
            values.extend(s.streams.iter().map(|st| st.as_str().to_owned()));
        } else if let Some(v) = s.labels.get(&name) {
            values.insert(v.clone());
        }
    }
    Ok(success(json!(values)))
}

/// `GET /loki/api/v1/series?match[]=…&start=&end=`: the label sets of the streams the
/// selectors match (any of them).
pub async fn series(
    State(state): State<AppState>,
    auth: Authorized<Read>,
    RawQuery(raw): RawQuery,
) -> LokiResult<Json<Value>> {
    let p = Params::parse(raw.as_deref())?;
    let (start, end) = p.range(now_ns(), METADATA_RANGE_NS)?;
    let selectors: Vec<&str> = p.all("match[]").chain(p.all("match")).collect();
    if selectors.is_empty() {
        return Err(LokiError::bad_request(
            "series needs at least one match[] stream selector",
        ));
    }
    let mut sets: BTreeSet<BTreeMap<String, String>> = BTreeSet::new();
    for sel in selectors {
        let q = logql::parse_log(sel)?;
        if !q.filters.is_empty() {
            return Err(LokiError::bad_request(
                "series takes stream selectors only, without line filters",
            ));
        }
        select::check_bounds(&state, &q.matchers, start, end)?;
        for s in select::select(&state, &auth.caller, &q.matchers, start, end).await? {
            for st in &s.streams {
                sets.insert(labels::with_stream(s.labels.clone(), *st));
            }
        }
    }
    Ok(success(json!(sets)))
}
