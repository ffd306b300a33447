//! `/api/v1/webhooks`: subscriptions, their delivery history, and redelivery. Every route
//! needs a token with scope `admin` (401 without one, 403 for a token without the scope).
//! No answer ever contains a secret.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use storage::{
    Attempt, Delivery, DeliveryHistory, DeliveryStatus, EventKind, Subscription,
    SubscriptionSource, SubscriptionSpec,
};

use super::error::{ApiError, ApiResult};
use super::AppState;
use crate::auth::{Admin, Authorized};
use crate::timefmt::rfc3339;
use crate::webhooks::SubscriptionConfig;

const DEFAULT_DELIVERY_PAGE: u32 = 50;
const MAX_DELIVERY_PAGE: u32 = 500;

/// The routes, to merge into the API router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/webhooks",
            post(create_subscription).get(list_subscriptions),
        )
        .route(
            "/api/v1/webhooks/{id}",
            get(get_subscription).delete(delete_subscription),
        )
        .route("/api/v1/webhooks/{id}/deliveries", get(list_deliveries))
        .route(
            "/api/v1/webhooks/{id}/deliveries/{delivery}/redeliver",
            post(redeliver),
        )
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_subscription", message)
}

/// A subscription as the API shows it: everything but the secret.
#[derive(Debug, Serialize)]
pub struct SubscriptionView {
    /// Decimal string (a 64-bit number).
    pub id: String,
    pub name: Option<String>,
    pub source: SubscriptionSource,
    pub url: String,
    pub events: Vec<EventKind>,
    pub filters: BTreeMap<String, String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<Subscription> for SubscriptionView {
    fn from(s: Subscription) -> SubscriptionView {
        SubscriptionView {
            id: s.spec.id.to_string(),
            name: s.spec.name,
            source: s.spec.source,
            url: s.spec.url,
            events: s.spec.events.into_iter().collect(),
            filters: s.spec.filters,
            enabled: s.enabled,
            disabled_reason: s.disabled_reason,
            created_at: rfc3339(s.created_at),
            updated_at: rfc3339(s.updated_at),
        }
    }
}

/// One attempt of a delivery.
#[derive(Debug, Serialize)]
pub struct AttemptView {
    pub attempt: u32,
    pub started_at: String,
    /// The receiver's status code; absent when it did not answer.
    pub status_code: Option<u16>,
    pub latency_ms: u64,
    pub error: Option<String>,
    /// Which logarithmd process sent it.
    pub owner: String,
}

impl From<Attempt> for AttemptView {
    fn from(a: Attempt) -> AttemptView {
        AttemptView {
            attempt: a.attempt,
            started_at: rfc3339(a.started_at),
            status_code: a.status_code,
            latency_ms: a.latency_ms,
            error: a.error,
            owner: a.owner,
        }
    }
}

/// A delivery with its attempts.
#[derive(Debug, Serialize)]
pub struct DeliveryView {
    pub id: String,
    pub subscription_id: String,
    pub event: EventKind,
    /// The job of a `job.*` delivery.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    pub status: DeliveryStatus,
    pub attempt_count: u32,
    pub created_at: String,
    /// When the next attempt is due (pending deliveries only).
    pub next_attempt_at: Option<String>,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub completed_at: Option<String>,
    /// Oldest first.
    pub attempts: Vec<AttemptView>,
}

impl DeliveryView {
    fn new(d: Delivery, attempts: Vec<Attempt>) -> DeliveryView {
        DeliveryView {
            id: d.id.to_string(),
            subscription_id: d.subscription_id.to_string(),
            event: d.event,
            job_id: d.job.as_ref().map(|j| j.id.to_string()),
            status: d.status,
            attempt_count: d.attempts,
            created_at: rfc3339(d.created_at),
            next_attempt_at: (d.status == DeliveryStatus::Pending)
                .then(|| rfc3339(d.next_attempt_at)),
            last_status_code: d.last_status_code,
            last_error: d.last_error,
            completed_at: d.completed_at.map(rfc3339),
            attempts: attempts.into_iter().map(AttemptView::from).collect(),
        }
    }
}

impl From<DeliveryHistory> for DeliveryView {
    fn from(h: DeliveryHistory) -> DeliveryView {
        DeliveryView::new(h.delivery, h.attempts)
    }
}

fn parse_id(what: &str, v: &str) -> ApiResult<i64> {
    v.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::not_found(format!("no such {what} {v:?}")))
}

async fn create_subscription(
    State(state): State<AppState>,
    _admin: Authorized<Admin>,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    // Parsed here rather than by the Json extractor, so every bad input is a 400 that
    // names the field (serde names missing and unknown fields).
    // The body has the fields of a subscription in the configuration file.
    let input: SubscriptionConfig =
        serde_json::from_slice(&body).map_err(|e| invalid(format!("invalid subscription: {e}")))?;
    let valid = input
        .validate()
        .map_err(|e| invalid(format!("`{}` {}", e.field, e.message)))?;
    let spec = SubscriptionSpec {
        id: random_id(),
        name: valid.name,
        source: SubscriptionSource::Api,
        url: valid.url,
        secret: valid.secret,
        events: valid.events,
        filters: valid.filters,
    };
    let sub = state
        .storage
        .upsert_subscription(&spec)
        .await
        .map_err(|e| ApiError::storage("creating a webhook subscription failed", &e))?;
    tracing::info!(
        subscription_id = sub.spec.id,
        "webhook subscription created"
    );
    Ok((StatusCode::CREATED, Json(SubscriptionView::from(sub))))
}

fn random_id() -> i64 {
    loop {
        let id = rand::random::<i64>() & i64::MAX;
        if id != 0 {
            return id;
        }
    }
}

#[derive(Debug, Serialize)]
struct SubscriptionList {
    webhooks: Vec<SubscriptionView>,
}

async fn list_subscriptions(
    State(state): State<AppState>,
    _admin: Authorized<Admin>,
) -> ApiResult<impl IntoResponse> {
    let subs = state
        .storage
        .list_subscriptions()
        .await
        .map_err(|e| ApiError::storage("listing webhook subscriptions failed", &e))?;
    Ok(Json(SubscriptionList {
        webhooks: subs.into_iter().map(SubscriptionView::from).collect(),
    }))
}

async fn load(state: &AppState, id: &str) -> ApiResult<Subscription> {
    let id = parse_id("webhook", id)?;
    state
        .storage
        .get_subscription(id)
        .await
        .map_err(|e| ApiError::storage("reading a webhook subscription failed", &e))?
        .ok_or_else(|| ApiError::not_found(format!("no webhook {id}")))
}

async fn get_subscription(
    State(state): State<AppState>,
    _admin: Authorized<Admin>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(SubscriptionView::from(load(&state, &id).await?)))
}

async fn delete_subscription(
    State(state): State<AppState>,
    _admin: Authorized<Admin>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let id = parse_id("webhook", &id)?;
    let deleted = state
        .storage
        .delete_subscription(id)
        .await
        .map_err(|e| ApiError::storage("deleting a webhook subscription failed", &e))?;
    if deleted {
        tracing::info!(subscription_id = id, "webhook subscription deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no webhook {id}")))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliveryParams {
    limit: Option<u32>,
}

#[derive(Debug, Serialize)]
struct DeliveryList {
    deliveries: Vec<DeliveryView>,
}

async fn list_deliveries(
    State(state): State<AppState>,
    _admin: Authorized<Admin>,
    Path(id): Path<String>,
    params: Result<Query<DeliveryParams>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<impl IntoResponse> {
    let Query(params) =
        params.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let limit = params.limit.unwrap_or(DEFAULT_DELIVERY_PAGE);
    if limit == 0 || limit > MAX_DELIVERY_PAGE {
        return Err(ApiError::bad_request(
            "invalid_query",
            format!("limit must be 1 to {MAX_DELIVERY_PAGE}"),
        ));
    }
    let sub = load(&state, &id).await?;
    let history = state
        .storage
        .list_deliveries(sub.spec.id, limit)
        .await
        .map_err(|e| ApiError::storage("listing webhook deliveries failed", &e))?;
    Ok(Json(DeliveryList {
        deliveries: history.into_iter().map(DeliveryView::from).collect(),
    }))
}

async fn redeliver(
    State(state): State<AppState>,
    _admin: Authorized<Admin>,
    Path((id, delivery)): Path<(String, String)>,
) -> ApiResult<impl IntoResponse> {
    let sub = load(&state, &id).await?;
    let delivery_id = parse_id("delivery", &delivery)?;
    if !sub.enabled {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "subscription_disabled",
            format!(
                "webhook {} is disabled ({}); recreate it to deliver again",
                sub.spec.id,
                sub.disabled_reason
                    .as_deref()
                    .unwrap_or("no reason recorded")
            ),
        ));
    }
    let now = protocol::now_ns();
    let d = state
        .storage
        .redeliver(sub.spec.id, delivery_id, now)
        .await
        .map_err(|e| ApiError::storage("scheduling a redelivery failed", &e))?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no delivery {delivery_id} of webhook {}",
                sub.spec.id
            ))
        })?;
    state.wake_dispatcher();
    tracing::info!(
        subscription_id = sub.spec.id,
        delivery_id,
        "webhook redelivery scheduled"
    );
    Ok((StatusCode::ACCEPTED, Json(DeliveryView::new(d, Vec::new()))))
}
