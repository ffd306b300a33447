//! `POST /api/v1/flows/{name}/trigger`: a flow's `webhook` trigger. No admin token: the
//! request is authenticated by an HMAC of its body with the trigger's secret (named by the
//! trigger, held in `[engine] trigger_secrets`), either GitHub's
//! `X-Hub-Signature-256: sha256=<hex>` or Standard Webhooks' `webhook-id`,
//! `webhook-timestamp`, `webhook-signature` (the scheme logarithmd signs its own webhooks
//! with; `webhooks::signing` checks both).
//!
//! Answers: 201 with the run when one started; 200 with `started: false` and why, when
//! the event or branch filter declined it or the delivery already started a run (a
//! redelivery starts nothing: the run id derives from the delivery id); 401 when no
//! trigger's secret verifies the body, and then nothing starts; 404 when the flow has no
//! webhook trigger.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use engine::cron::run_id;
use engine::flow::{Trigger, TriggerKind};
use engine::run::Cause;
use engine::{ErrorKind, RunOptions};
use serde_json::{json, Value};

use crate::api::error::{ApiError, ApiResult};
use crate::api::AppState;
use crate::flows::view::RunView;
use crate::webhooks::signing;

/// The value at a dotted path (`head_commit.id`, `commits.0.id`) as text: strings as they
/// are, other values as JSON.
fn field(payload: &Value, path: &str) -> Option<String> {
    let mut v = payload;
    for part in path.split('.') {
        v = match v {
            Value::Object(m) => m.get(part)?,
            Value::Array(a) => a.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// Whether one of the trigger's accepted signatures verifies the body.
fn verified(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    if let Some(sig) = header(headers, "x-hub-signature-256") {
        return signing::verify_hub_signature(secret, body, sig);
    }
    let (Some(id), Some(ts), Some(sig)) = (
        header(headers, signing::HEADER_ID),
        header(headers, signing::HEADER_TIMESTAMP).and_then(|t| t.parse::<i64>().ok()),
        header(headers, signing::HEADER_SIGNATURE),
    ) else {
        return false;
    };
    signing::verify(secret, id, ts, body, sig)
}

/// Why the trigger declines this delivery, if it does.
fn declined(t: &Trigger, event: Option<&str>, payload: &Value) -> Option<String> {
    if !t.events.is_empty() {
        match event {
            Some(e) if t.events.iter().any(|x| x == e) => {}
            Some(e) => return Some(format!("event {e:?} is not one of the trigger's events")),
            None => {
                return Some("the delivery names no event and the trigger filters events".into())
            }
        }
    }
    if !t.branches.is_empty() {
        let branch = field(payload, "ref")
            .map(|r| {
                r.strip_prefix("refs/heads/")
                    .map(str::to_owned)
                    .unwrap_or(r)
            })
            .or_else(|| field(payload, "branch"));
        match branch {
            Some(b) if t.branches.contains(&b) => {}
            Some(b) => return Some(format!("branch {b:?} is not one of the trigger's branches")),
            None => {
                return Some("the delivery names no branch and the trigger filters branches".into())
            }
        }
    }
    None
}

pub(crate) async fn trigger(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let engine = crate::api::flows::engine_of(&state)?;
    let flow = engine
        .get_flow(&name)
        .await
        .map_err(|e| crate::api::flows::engine_error("cannot read a flow", &e))?
        .ok_or_else(|| ApiError::not_found(format!("no flow {name}")))?;
    let hooks: Vec<&Trigger> = flow
        .flow
        .triggers
        .iter()
        .filter(|t| t.kind == TriggerKind::Webhook)
        .collect();
    if hooks.is_empty() {
        return Err(ApiError::not_found(format!(
            "flow {name} has no webhook trigger"
        )));
    }
    let secrets = &state.config.engine.trigger_secrets;
    let trigger = hooks.into_iter().find(|t| {
        let secret = t
            .secret
            .as_deref()
            .and_then(|n| secrets.get(n))
            .filter(|s| !s.is_empty());
        match secret {
            Some(secret) => verified(secret, &headers, &body),
            None => {
                tracing::warn!(flow = %name, secret = ?t.secret, "webhook trigger names a secret that [engine] trigger_secrets does not hold");
                false
            }
        }
    });
    let Some(trigger) = trigger else {
        tracing::info!(flow = %name, "webhook trigger refused: bad or missing signature");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the signature does not verify with the trigger's secret",
        ));
    };
    let payload: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid", format!("the body is not JSON: {e}")))?;
    let event = header(&headers, "x-github-event")
        .map(str::to_owned)
        .or_else(|| field(&payload, "event"));
    let delivery = header(&headers, "x-github-delivery")
        .or_else(|| header(&headers, signing::HEADER_ID))
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()));
    if let Some(why) = declined(trigger, event.as_deref(), &payload) {
        return Ok((
            StatusCode::OK,
            Json(json!({"started": false, "reason": why, "delivery": delivery})),
        )
            .into_response());
    }
    let mut co_data = None;
    let mut env = BTreeMap::new();
    for (name, path) in &trigger.mapping {
        if let Some(v) = field(&payload, path) {
            if name == engine::run::CO_DATA {
                co_data = Some(v);
            } else {
                env.insert(name.clone(), v);
            }
        }
    }
    let id = run_id(&["webhook", &flow.name, &delivery]);
    let opts = RunOptions {
        id: Some(id.clone()),
        co_data,
        env,
        cause: Cause::Webhook {
            delivery: delivery.clone(),
            event,
        },
    };
    match engine.start_run_with(&flow.name, opts).await {
        Ok(run) => {
            tracing::info!(flow = %flow.name, run = %run.id, delivery = %delivery, "webhook trigger started a run");
            Ok((StatusCode::CREATED, Json(RunView::new(&run))).into_response())
        }
        Err(e) if e.kind() == ErrorKind::Conflict => Ok((
            StatusCode::OK,
            Json(json!({
                "started": false,
                "reason": "this delivery already started a run",
                "delivery": delivery,
                "run": id,
            })),
        )
            .into_response()),
        Err(e) => Err(crate::api::flows::engine_error("cannot start a run", &e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(events: &[&str], branches: &[&str]) -> Trigger {
        Trigger {
            kind: TriggerKind::Webhook,
            schedule: None,
            timezone: None,
            missed: None,
            co_data: None,
            secret: Some("S".into()),
            events: events.iter().map(|s| (*s).to_owned()).collect(),
            branches: branches.iter().map(|s| (*s).to_owned()).collect(),
            mapping: BTreeMap::new(),
        }
    }

    #[test]
    fn fields_by_dotted_path() {
        let p =
            json!({"after": "abc", "commits": [{"id": "c1"}], "n": 3, "head_commit": {"id": "h"}});
        assert_eq!(field(&p, "after").as_deref(), Some("abc"));
        assert_eq!(field(&p, "commits.0.id").as_deref(), Some("c1"));
        assert_eq!(field(&p, "head_commit.id").as_deref(), Some("h"));
        assert_eq!(field(&p, "n").as_deref(), Some("3"));
        assert_eq!(field(&p, "commits.1.id"), None);
        assert_eq!(field(&p, "after.x"), None);
    }

    #[test]
    fn event_and_branch_filters() {
        let push = json!({"ref": "refs/heads/main"});
        let t = hook(&["push"], &["main"]);
        assert_eq!(declined(&t, Some("push"), &push), None);
        assert_eq!(
            declined(&t, Some("ping"), &push).as_deref(),
            Some("event \"ping\" is not one of the trigger's events")
        );
        assert_eq!(
            declined(&t, Some("push"), &json!({"ref": "refs/heads/dev"})).as_deref(),
            Some("branch \"dev\" is not one of the trigger's branches")
        );
        assert_eq!(
            declined(&hook(&[], &["x"]), None, &json!({"branch": "x"})),
            None
        );
        assert_eq!(declined(&hook(&[], &[]), None, &json!({})), None);
    }
}
