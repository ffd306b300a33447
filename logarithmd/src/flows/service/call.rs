//! The request a service job makes: the job's inputs POSTed as JSON, signed like a webhook
//! delivery (Standard Webhooks headers, [`crate::webhooks::signing`]), retried on
//! connection errors, timeouts, 429 and 502–504 on the webhook schedule
//! ([`crate::webhooks::dispatcher::after_failure`]) while the job's timeout allows.
//!
//! The service answers `202 Accepted` (it calls back later on `callback_url`), or any
//! other 2xx with the result ([`super::answer`]). Any other status fails the job with it.

use std::collections::BTreeMap;
use std::time::Duration;

use engine::JobSpec;
use serde::Serialize;

use super::answer::{Answer, BODY_MAX};
use super::ledger::{Ending, Ledger};
use crate::timefmt::rfc3339;
use crate::webhooks::config::WebhooksConfig;
use crate::webhooks::dispatcher::{after_failure, source_chain};
use crate::webhooks::signing;
use protocol::now_ns;
use storage::AttemptOutcome;

/// The `logarithm-event` of a service call.
pub const EVENT: &str = "service.call";
/// Most of an error answer quoted in the job's log.
const ERROR_SNIPPET: usize = 512;
/// A retry is made only if it starts at least this long before the job's deadline: an
/// attempt due right at the deadline raced the job's timeout, and the job ended as timed
/// out instead of failed with the reason (seen once in CI). Without time to run and be
/// recorded, the call gives up now, with its reason.
const RETRY_MARGIN_NS: i64 = 2_000_000_000;

/// The JSON body of the request.
#[derive(Debug, Serialize)]
pub struct Request<'a> {
    pub flow: &'a str,
    pub run: &'a str,
    pub stage: &'a str,
    pub action: &'a str,
    pub job: &'a str,
    /// The call's id (also the `webhook-id` header and the job's container id).
    pub job_id: &'a str,
    pub co_data: Option<&'a str>,
    /// The job's environment: flow, job and run values, subscriptions, CO_DATA.
    pub environment: &'a BTreeMap<String, String>,
    /// Subscribed outputs by their source, `stage.action.job[KEY]`.
    pub subscriptions: &'a BTreeMap<String, String>,
    /// Where to POST the result after answering 202.
    pub callback_url: String,
    /// RFC 3339: when the job times out and the callback is refused; absent without a
    /// job timeout.
    pub expires_at: Option<String>,
}

/// One call to make.
pub struct Call {
    pub spec: JobSpec,
    pub id: String,
    pub token: String,
    pub secret: String,
    pub callback_base: String,
    /// ns since the Unix epoch; no attempt starts after it.
    pub deadline: Option<i64>,
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
}

/// What one attempt came to.
enum Attempt {
    Accepted,
    Answered(u16, Answer),
    /// Permanent: the job fails with this.
    Refused(String),
    /// Worth another attempt.
    Transient(String),
}

impl Call {
    fn body(&self) -> Vec<u8> {
        let s = &self.spec;
        let req = Request {
            flow: &s.flow,
            run: &s.run,
            stage: &s.stage,
            action: &s.action,
            job: &s.job,
            job_id: &self.id,
            co_data: s.env.get(engine::run::CO_DATA).map(String::as_str),
            environment: &s.env,
            subscriptions: &s.subscribed,
            callback_url: format!("{}/api/v1/callbacks/{}", self.callback_base, self.token),
            expires_at: self.deadline.map(rfc3339),
        };
        // Plain maps of strings: encoding cannot fail.
        serde_json::to_vec(&req).unwrap_or_default()
    }

    /// Makes the call until it is answered, refused, or out of time, and records the end
    /// (or, after 202, that the job waits for its callback).
    pub async fn run(self, client: reqwest::Client, config: WebhooksConfig, ledger: Ledger) {
        let body = self.body();
        let started = now_ns();
        let mut attempt = 1u32;
        let ending = loop {
            let result = self.attempt(&client, &body, attempt).await;
            let outcome = match &result {
                Attempt::Accepted => "accepted",
                Attempt::Answered(..) => "answered",
                Attempt::Refused(_) => "failed",
                Attempt::Transient(_) => "retrying",
            };
            self.metrics.services.call(outcome);
            match result {
                Attempt::Accepted => {
                    let until = self
                        .deadline
                        .map(rfc3339)
                        .map(|t| format!(" until {t}"))
                        .unwrap_or_default();
                    let text = format!("HTTP 202 Accepted: waiting for the callback{until}");
                    if let Err(e) = ledger.accepted(&self.id, text).await {
                        tracing::warn!(call = %self.id, error = %e, "cannot log a service's 202");
                    }
                    tracing::info!(call = %self.id, job = %self.spec.name, "service job accepted; waiting for its callback");
                    return;
                }
                Attempt::Answered(code, a) => {
                    break (Ending::Answered(a), Some(format!("HTTP {code}: answered")));
                }
                Attempt::Refused(why) => break (Ending::Failed(why), None),
                Attempt::Transient(why) => {
                    let now = now_ns();
                    let outcome = after_failure(&config, attempt, started, now, &mut rand::rng());
                    let next = match outcome {
                        AttemptOutcome::Retry { next_attempt_at } => Some(next_attempt_at),
                        _ => None,
                    };
                    match next.filter(|n| {
                        self.deadline
                            .is_none_or(|d| n.saturating_add(RETRY_MARGIN_NS) < d)
                    }) {
                        Some(n) => {
                            tracing::info!(call = %self.id, attempt, error = %why, "service call failed; will retry");
                            let wait = u64::try_from(n.saturating_sub(now)).unwrap_or(0);
                            tokio::time::sleep(Duration::from_nanos(wait)).await;
                            attempt += 1;
                        }
                        None => {
                            let n = attempt;
                            let s = if n == 1 { "" } else { "s" };
                            break (
                                Ending::Failed(format!("gave up after {n} attempt{s}: {why}")),
                                None,
                            );
                        }
                    }
                }
            }
        };
        let (ending, first) = ending;
        if let Ending::Failed(why) = &ending {
            tracing::warn!(call = %self.id, job = %self.spec.name, reason = %why, "service job failed");
        }
        match ledger.end(&self.id, ending, first).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(call = %self.id, "service call ended before its answer arrived (stopped or called back)")
            }
            Err(e) => {
                tracing::warn!(call = %self.id, error = %e, "cannot record a service's answer; the job times out")
            }
        }
    }

    async fn attempt(&self, client: &reqwest::Client, body: &[u8], n: u32) -> Attempt {
        let timestamp = now_ns() / 1_000_000_000;
        let signature = signing::sign(&self.secret, &self.id, timestamp, body);
        let request = client
            .post(&self.spec.image)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(signing::HEADER_ID, &self.id)
            .header(signing::HEADER_TIMESTAMP, timestamp.to_string())
            .header(signing::HEADER_SIGNATURE, signature)
            .header(signing::HEADER_EVENT, EVENT)
            .header(signing::HEADER_ATTEMPT, n.to_string())
            .body(body.to_vec());
        let mut resp = match request.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Attempt::Transient("no answer in time".into()),
            Err(e) if e.is_connect() => {
                return Attempt::Transient(format!("connection failed: {}", source_chain(&e)))
            }
            Err(e) => return Attempt::Transient(format!("request failed: {}", source_chain(&e))),
        };
        let code = resp.status().as_u16();
        if code == 202 {
            return Attempt::Accepted;
        }
        let mut read = Vec::new();
        let limit = if resp.status().is_success() {
            BODY_MAX + 1
        } else {
            ERROR_SNIPPET
        };
        while read.len() < limit {
            match resp.chunk().await {
                Ok(Some(c)) => read.extend_from_slice(&c),
                Ok(None) => break,
                Err(e) if resp.status().is_success() => {
                    return Attempt::Transient(format!(
                        "reading the answer failed: {}",
                        source_chain(&e)
                    ))
                }
                Err(_) => break,
            }
        }
        if resp.status().is_success() {
            return match Answer::parse(&read) {
                Ok(a) => Attempt::Answered(code, a),
                Err(m) => Attempt::Refused(format!("the service answered HTTP {code}: {m}")),
            };
        }
        read.truncate(ERROR_SNIPPET);
        let text = String::from_utf8_lossy(&read);
        let text = text.trim();
        let why = if text.is_empty() {
            format!("HTTP {code}")
        } else {
            format!("HTTP {code}: {text}")
        };
        if matches!(code, 429 | 502..=504) {
            Attempt::Transient(why)
        } else {
            Attempt::Refused(format!("the service refused the call: {why}"))
        }
    }
}
