//! `POST /api/v1/callbacks/{token}`: a service job's result, sent by the service after it
//! answered the job's request with 202 Accepted. The token (from the request's
//! `callback_url`) is the only credential: one per call, used once, refused once the job
//! ended (timeout, cancel). Any replica serves it: the token and the result go through
//! storage ([`crate::flows::service::ledger`]).
//!
//! - 200: the result is recorded; the job ends with it.
//! - 400: the body is not a result ([`crate::flows::service::answer`]); the token stays
//!   valid, so the service can send a corrected one.
//! - 404: no call has this token. 409: the token was used already. 410: the job ended
//!   without an answer, or the token expired with the job's timeout.
//!
//! None of these changes anything else of the run.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::flows::engine_error;
use super::AppState;
use crate::flows::service::answer::{Answer, BODY_MAX};
use crate::flows::service::ledger::{Ledger, Refusal};

pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/api/v1/callbacks/{token}",
        post(callback).layer(DefaultBodyLimit::max(BODY_MAX)),
    )
}

async fn callback(
    State(state): State<AppState>,
    Path(token): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let count = |outcome| state.metrics.services.callback(outcome);
    let answer = Answer::parse(&body).map_err(|m| {
        count("invalid");
        ApiError::bad_request("invalid", m)
    })?;
    let ledger = Ledger::new(
        state.storage.clone(),
        state.masker.clone(),
        state.commit_notifier(),
    );
    let redeemed = ledger
        .redeem(&token, answer)
        .await
        .map_err(|e| engine_error("cannot record a service callback", &e))?;
    count(match &redeemed {
        Ok(_) => "recorded",
        Err(Refusal::Unknown) => "unknown",
        Err(Refusal::Used) => "used",
        Err(Refusal::Expired) => "expired",
    });
    match redeemed {
        Ok(id) => Ok(Json(json!({
            "job_id": storage::job_id_for_container(&id).to_string(),
            "container_id": id,
            "status": "recorded",
        }))),
        Err(Refusal::Unknown) => Err(ApiError::not_found("no service call has this token")),
        Err(Refusal::Used) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            "this token was used already: the job has its result",
        )),
        Err(Refusal::Expired) => Err(ApiError::new(
            StatusCode::GONE,
            "gone",
            "the job ended without an answer (timeout or cancel); the token has expired",
        )),
    }
}
