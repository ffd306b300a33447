//! `/api/v1/flows` and `/api/v1/runs`: register flows, start and steer runs, read them.
//! Reads need scope `read` (a token limited to flows sees only those; a flow's source and
//! a run's `co_data` only with `admin`); changes (registering, starting, approving,
//! rejecting, cancelling) need scope `admin`, since a flow runs containers.
//! While the flow engine is not running every route answers 503.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use engine::{Engine, ErrorKind, RunQuery, Status};
use serde::Deserialize;

use crate::api::error::{ApiError, ApiResult};
use crate::api::AppState;
use crate::auth::{Admin, Authorized, Read};
use crate::flows::view::{FlowView, RunView};

const DEFAULT_RUN_PAGE: u32 = 50;
const MAX_RUN_PAGE: u32 = 500;

/// The routes, to merge into the API router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/flows", post(register_flow).get(list_flows))
        .route("/api/v1/flows/{name}", get(get_flow))
        .route("/api/v1/flows/{name}/runs", post(start_run))
        .route(
            "/api/v1/flows/{name}/trigger",
            post(crate::api::trigger::trigger),
        )
        .route("/api/v1/runs", get(list_runs))
        .route("/api/v1/runs/{id}", get(get_run))
        .route("/api/v1/runs/{id}/approve", post(approve))
        .route("/api/v1/runs/{id}/reject", post(reject))
        .route("/api/v1/runs/{id}/cancel", post(cancel))
}

pub(crate) fn engine_of(state: &AppState) -> ApiResult<&Engine> {
    state.flows.get().ok_or_else(|| {
        ApiError::overloaded(
            "the flow engine is not running (disabled, Docker unreachable, or starting)",
            5,
        )
    })
}

/// Maps an engine failure: the kind decides the status.
pub(crate) fn engine_error(context: &str, e: &engine::Error) -> ApiError {
    match e.kind() {
        ErrorKind::Invalid => ApiError::bad_request("invalid", e.message()),
        ErrorKind::NotFound => ApiError::not_found(e.message()),
        ErrorKind::Conflict => ApiError::new(StatusCode::CONFLICT, "conflict", e.message()),
        ErrorKind::Unavailable | ErrorKind::Timeout | ErrorKind::Stopped => {
            tracing::warn!(error = %e, "{context}");
            ApiError::overloaded("the flow engine cannot do this now; retry later", 2)
        }
        ErrorKind::Internal => ApiError::internal(context, e),
    }
}

/// `POST /api/v1/flows` with `Content-Type: application/json`: the flow file and the files
/// its scripts name (`pre: {file: …}`), by path relative to the flow file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterFlow {
    flow: String,
    #[serde(default)]
    files: std::collections::BTreeMap<String, String>,
}

/// `POST /api/v1/flows`: the body is the flow file (YAML), or JSON `{"flow", "files"}`. 201 when new, 200 when it
/// replaced a flow of the same name; 400 naming every problem (line and field), and then
/// nothing is registered.
async fn register_flow(
    State(state): State<AppState>,
    _admin: Authorized<Admin>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let engine = engine_of(&state)?;
    let json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let req = if json {
        serde_json::from_slice::<RegisterFlow>(&body)
            .map_err(|e| ApiError::bad_request("invalid", format!("invalid JSON body: {e}")))?
    } else {
        let source = std::str::from_utf8(&body)
            .map_err(|_| ApiError::bad_request("invalid", "the flow file must be UTF-8 text"))?;
        RegisterFlow {
            flow: source.to_owned(),
            files: Default::default(),
        }
    };
    let flow = engine
        .register_flow_with_files(&req.flow, &req.files)
        .await
        .map_err(|e| engine_error("cannot register a flow", &e))?;
    let status = if flow.created_at == flow.updated_at {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    tracing::info!(flow = %flow.name, "flow registered");
    Ok((status, Json(FlowView::new(&flow, false))))
}

async fn list_flows(
    State(state): State<AppState>,
    auth: Authorized<Read>,
) -> ApiResult<impl IntoResponse> {
    let engine = engine_of(&state)?;
    let flows = engine
        .list_flows()
        .await
        .map_err(|e| engine_error("cannot list flows", &e))?;
    let flows: Vec<FlowView> = flows
        .iter()
        .filter(|f| auth.caller.may_read_flow(Some(&f.name)))
        .map(|f| FlowView::new(f, false))
        .collect();
    Ok(Json(serde_json::json!({ "flows": flows })))
}

/// The flow; its source (which holds environment values) only for admins.
async fn get_flow(
    State(state): State<AppState>,
    auth: Authorized<Read>,
    Path(name): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let engine = engine_of(&state)?;
    let flow = engine
        .get_flow(&name)
        .await
        .map_err(|e| engine_error("cannot read a flow", &e))?
        .filter(|f| auth.caller.may_read_flow(Some(&f.name)))
        .ok_or_else(|| ApiError::not_found(format!("no flow {name}")))?;
    Ok(Json(FlowView::new(&flow, auth.caller.is_admin())))
}

/// What `POST /api/v1/flows/{name}/runs` may take (the body is optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StartRun {
    /// Replaces `CO_DATA` for every job of the run.
    #[serde(default)]
    co_data: Option<String>,
}

fn optional_json<T: Default + serde::de::DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid", format!("invalid JSON body: {e}")))
}

async fn start_run(
    State(state): State<AppState>,
    _admin: Authorized<Admin>,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let engine = engine_of(&state)?;
    let req: StartRun = optional_json(&body)?;
    let run = engine
        .start_run(&name, req.co_data)
        .await
        .map_err(|e| engine_error("cannot start a run", &e))?;
    Ok((StatusCode::CREATED, Json(RunView::new(&run))))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunsParams {
    #[serde(default)]
    flow: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
}

async fn list_runs(
    State(state): State<AppState>,
    auth: Authorized<Read>,
    Query(p): Query<RunsParams>,
) -> ApiResult<impl IntoResponse> {
    let flow = auth.caller.flow_filter(p.flow)?;
    let engine = engine_of(&state)?;
    let status = match p.status.as_deref() {
        None => None,
        Some(s) => Some(Status::parse(s).ok_or_else(|| {
            ApiError::bad_request(
                "invalid",
                format!("unknown status {s:?}: pending, running, success, failure, timeout or cancelled"),
            )
        })?),
    };
    let limit = p.limit.unwrap_or(DEFAULT_RUN_PAGE);
    if limit == 0 || limit > MAX_RUN_PAGE {
        return Err(ApiError::bad_request(
            "invalid",
            format!("limit must be 1 to {MAX_RUN_PAGE}"),
        ));
    }
    let runs = engine
        .list_runs(&RunQuery {
            flow,
            status,
            limit,
        })
        .await
        .map_err(|e| engine_error("cannot list runs", &e))?;
    let runs: Vec<RunView> = runs
        .iter()
        .map(|r| RunView::shown_to(r, &auth.caller))
        .collect();
    Ok(Json(serde_json::json!({ "runs": runs })))
}

async fn get_run(
    State(state): State<AppState>,
    auth: Authorized<Read>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let engine = engine_of(&state)?;
    let run = engine
        .get_run(&id)
        .await
        .map_err(|e| engine_error("cannot read a run", &e))?
        .filter(|r| auth.caller.may_read_flow(Some(&r.flow_name)))
        .ok_or_else(|| ApiError::not_found(format!("no run {id}")))?;
    Ok(Json(RunView::shown_to(&run, &auth.caller)))
}

/// The optional body of approve (`by`), reject and cancel (`reason`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Decision {
    #[serde(default)]
    by: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

/// What an operator asks of a run.
#[derive(Clone, Copy)]
enum Steer {
    Approve,
    Reject,
    Cancel,
}

/// The three steering routes differ only in the engine call.
async fn steer(
    state: &AppState,
    id: &str,
    body: &Bytes,
    action: Steer,
) -> ApiResult<Json<RunView>> {
    let engine = engine_of(state)?;
    let d: Decision = optional_json(body)?;
    let run = match action {
        Steer::Approve => engine.approve(id, d.by).await,
        Steer::Reject => engine.reject(id, d.reason).await,
        Steer::Cancel => engine.cancel(id, d.reason).await,
    }
    .map_err(|e| {
        let context = match action {
            Steer::Approve => "cannot approve a run",
            Steer::Reject => "cannot reject a run",
            Steer::Cancel => "cannot cancel a run",
        };
        engine_error(context, &e)
    })?;
    Ok(Json(RunView::new(&run)))
}

async fn approve(
    State(state): State<AppState>,
    _admin: Authorized<Admin>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<RunView>> {
    steer(&state, &id, &body, Steer::Approve).await
}

async fn reject(
    State(state): State<AppState>,
    _admin: Authorized<Admin>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<RunView>> {
    steer(&state, &id, &body, Steer::Reject).await
}

async fn cancel(
    State(state): State<AppState>,
    _admin: Authorized<Admin>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<RunView>> {
    steer(&state, &id, &body, Steer::Cancel).await
}
