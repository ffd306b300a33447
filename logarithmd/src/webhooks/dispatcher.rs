//! The dispatcher: a background task that claims due deliveries (with a lease), signs and
//! POSTs them with one shared HTTP client, records every attempt, and schedules retries.
//!
//! - Success is a 2xx answer. Anything else, a connection failure or the request timeout
//!   is a failed attempt, retried after `retry_initial · 2^(n-1)` (capped at
//!   `retry_max_delay`, times a random factor in `[1 - jitter, 1 + jitter]`) until the next
//!   attempt would start more than `retry_max_age` after the event; then it fails.
//! - 410 Gone fails the delivery and disables the subscription (storage cancels its other
//!   pending deliveries).
//! - Redirects are not followed (a signed payload goes only where it was addressed).
//! - Every process has its own owner id; a claim holds for `lease` (longer than the request
//!   timeout). After a crash the lease runs out and any process takes the delivery over,
//!   as a new attempt with the same delivery id.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use protocol::now_ns;

use rand::RngExt;
use storage::{AttemptOutcome, AttemptRecord, ClaimRequest, ClaimedDelivery, Storage};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::config::WebhooksConfig;
use super::{payload, signing};
use crate::metrics::{Metrics, WebhookOutcome};

/// How often the pending-deliveries gauge is refreshed.
const PENDING_GAUGE_EVERY: Duration = Duration::from_secs(2);
/// Bytes of a failed answer's body kept in the attempt's error text.
const ERROR_BODY_BYTES: usize = 256;
/// Storage failures while recording an attempt are retried this often before the attempt
/// is left to its lease (it is then attempted again).
const RECORD_TRIES: usize = 5;

/// Sends webhook deliveries for this process.
pub struct Dispatcher {
    storage: Arc<dyn Storage>,
    client: reqwest::Client,
    config: WebhooksConfig,
    public_url: String,
    owner: String,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
}

/// Longest wait between claims while storage fails.
const CLAIM_RETRY_MAX: Duration = Duration::from_secs(10);

/// The dispatcher could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the webhook HTTP client: {0}")]
pub struct BuildError(#[from] reqwest::Error);

fn duration_ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// A unique name for this process's claims: `<host>-<pid>-<random>`, at most 64 characters.
pub fn owner_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "logarithmd".into());
    let host: String = host.chars().take(32).collect();
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::rng().random::<u32>()
    )
}

/// The delay after failed attempt number `attempt` (1-based), before jitter.
pub fn base_delay(config: &WebhooksConfig, attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(40);
    config
        .retry_initial
        .saturating_mul(1u32 << exp.min(31))
        .min(config.retry_max_delay)
}

/// What to do after failed attempt `attempt` of a delivery whose retry window started at
/// `window_start`, at `now` (ns).
pub fn after_failure(
    config: &WebhooksConfig,
    attempt: u32,
    window_start: i64,
    now: i64,
    rng: &mut impl rand::Rng,
) -> AttemptOutcome {
    let base = base_delay(config, attempt).as_secs_f64();
    let j = config.retry_jitter;
    let factor = if j > 0.0 {
        rng.random_range((1.0 - j)..=(1.0 + j))
    } else {
        1.0
    };
    let delay = Duration::from_secs_f64((base * factor).max(0.0));
    let next = now.saturating_add(duration_ns(delay));
    if next > window_start.saturating_add(duration_ns(config.retry_max_age)) {
        AttemptOutcome::Failed
    } else {
        AttemptOutcome::Retry {
            next_attempt_at: next,
        }
    }
}

impl Dispatcher {
    pub fn new(
        storage: Arc<dyn Storage>,
        config: WebhooksConfig,
        public_url: String,
        wake: Arc<Notify>,
        metrics: Arc<Metrics>,
    ) -> Result<Dispatcher, BuildError> {
        let client = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("logarithmd/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Dispatcher {
            storage,
            client,
            config,
            public_url,
            owner: owner_id(),
            wake,
            metrics,
        })
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Runs until `shutdown`: then stops claiming and waits for attempts in flight (the
    /// caller bounds that with its drain deadline; an abandoned attempt is taken over when
    /// its lease ends).
    pub async fn run(self, shutdown: CancellationToken) {
        let this = Arc::new(self);
        let slots = Arc::new(Semaphore::new(this.config.concurrency));
        let mut inflight: JoinSet<()> = JoinSet::new();
        // After a failed claim: exponential backoff with jitter from the poll interval
        // up to CLAIM_RETRY_MAX, started afresh after each successful claim.
        let claim_retry = || {
            ExponentialBuilder::new()
                .with_min_delay(this.config.poll_interval)
                .with_max_delay(CLAIM_RETRY_MAX)
                .with_jitter()
                .without_max_times()
                .build()
        };
        let mut claim_backoff = claim_retry();
        let mut storage_backoff = this.config.poll_interval;
        tracing::info!(owner = %this.owner, "webhook dispatcher started");
        let mut backlog_counted: Option<Instant> = None;
        loop {
            while inflight.try_join_next().is_some() {}
            // The pending-deliveries gauge is a COUNT over an index: refreshed every few
            // seconds, not on every claim round.
            if backlog_counted.is_none_or(|t| t.elapsed() >= PENDING_GAUGE_EVERY) {
                backlog_counted = Some(Instant::now());
                match this.storage.count_pending_deliveries().await {
                    Ok(n) => this
                        .metrics
                        .set_webhook_pending(usize::try_from(n).unwrap_or(usize::MAX)),
                    Err(e) => tracing::debug!(error = %e, "counting pending deliveries failed"),
                }
            }
            let free = slots.available_permits();
            let mut claimed_all = false;
            if free > 0 {
                let req = ClaimRequest {
                    owner: this.owner.clone(),
                    now: now_ns(),
                    lease_ns: duration_ns(this.config.lease),
                    limit: u32::try_from(free).unwrap_or(u32::MAX),
                };
                match this.storage.claim_deliveries(&req).await {
                    Ok(claims) => {
                        claim_backoff = claim_retry();
                        storage_backoff = this.config.poll_interval;
                        claimed_all = claims.len() == free;
                        for c in claims {
                            let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                                // Unreachable: we claimed at most `free`. The lease ends and
                                // the delivery is attempted again.
                                break;
                            };
                            let this = Arc::clone(&this);
                            inflight.spawn(async move {
                                this.attempt(c).await;
                                drop(permit);
                            });
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "claiming webhook deliveries failed");
                        storage_backoff = claim_backoff.next().unwrap_or(CLAIM_RETRY_MAX);
                    }
                }
            }
            // More may be due right away when every free slot was filled.
            let wait = if claimed_all {
                Duration::ZERO
            } else {
                storage_backoff
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = this.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                Some(_) = inflight.join_next(), if !inflight.is_empty() && free == 0 => {}
            }
        }
        tracing::info!(in_flight = inflight.len(), "webhook dispatcher draining");
        while inflight.join_next().await.is_some() {}
    }

    /// One attempt: send, classify, record.
    #[tracing::instrument(skip_all, fields(delivery_id = c.delivery.id, attempt = c.attempt, subscription_id = c.delivery.subscription_id))]
    async fn attempt(&self, c: ClaimedDelivery) {
        let started_at = now_ns();
        let clock = Instant::now();
        let (status_code, error) = self.send(&c).await;
        let latency_ms = u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);
        let outcome = match status_code {
            Some(code) if (200..300).contains(&code) => AttemptOutcome::Delivered,
            Some(410) => AttemptOutcome::Gone,
            _ => after_failure(
                &self.config,
                c.attempt,
                c.delivery.window_start,
                now_ns(),
                &mut rand::rng(),
            ),
        };
        self.metrics.webhook_delivery(
            match outcome {
                AttemptOutcome::Delivered => WebhookOutcome::Delivered,
                AttemptOutcome::Retry { .. } => WebhookOutcome::Retrying,
                AttemptOutcome::Failed | AttemptOutcome::Gone => WebhookOutcome::Failed,
            },
            clock.elapsed(),
        );
        match outcome {
            AttemptOutcome::Delivered => {
                tracing::info!(status = status_code, latency_ms, "webhook delivered")
            }
            AttemptOutcome::Gone => {
                tracing::warn!("webhook receiver answered 410 Gone: disabling the subscription")
            }
            AttemptOutcome::Retry { next_attempt_at } => tracing::warn!(
                status = status_code,
                error = error.as_deref().unwrap_or(""),
                retry_in_ms = (next_attempt_at - now_ns()) / 1_000_000,
                "webhook attempt failed; will retry"
            ),
            AttemptOutcome::Failed => tracing::error!(
                status = status_code,
                error = error.as_deref().unwrap_or(""),
                "webhook delivery failed: retries exhausted"
            ),
        }
        let rec = AttemptRecord {
            delivery_id: c.delivery.id,
            subscription_id: c.delivery.subscription_id,
            attempt: c.attempt,
            owner: self.owner.clone(),
            started_at,
            latency_ms,
            status_code,
            error,
            outcome,
        };
        let recorded = (|| self.storage.complete_attempt(&rec))
            .retry(
                ExponentialBuilder::new()
                    .with_min_delay(Duration::from_millis(100))
                    .with_max_times(RECORD_TRIES - 1),
            )
            .when(storage::Error::is_transient)
            .notify(
                |e, _| tracing::warn!(error = %e, "recording a webhook attempt failed; retrying"),
            )
            .await;
        match recorded {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!("the lease ran out before the attempt was recorded; another process took the delivery over");
            }
            Err(e) => {
                tracing::error!(error = %e, "recording a webhook attempt failed; it is attempted again when its lease ends");
            }
        }
    }

    /// POSTs the delivery; returns the status code (if the receiver answered) and why the
    /// attempt failed (if it did). Nothing the receiver sends is trusted beyond that.
    async fn send(&self, c: &ClaimedDelivery) -> (Option<u16>, Option<String>) {
        let body = payload::body(&c.delivery, &self.public_url);
        let msg_id = c.delivery.id.to_string();
        let timestamp = now_ns() / 1_000_000_000;
        let signature = signing::sign(&c.secret, &msg_id, timestamp, &body);
        let request = self
            .client
            .post(&c.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(signing::HEADER_ID, msg_id)
            .header(signing::HEADER_TIMESTAMP, timestamp.to_string())
            .header(signing::HEADER_SIGNATURE, signature)
            .header(signing::HEADER_EVENT, c.delivery.event.as_str())
            .header(signing::HEADER_ATTEMPT, c.attempt.to_string())
            .body(body);
        let mut resp = match request.send().await {
            Ok(r) => r,
            Err(e) => return (None, Some(describe(&e, &self.config))),
        };
        let code = resp.status().as_u16();
        if resp.status().is_success() {
            return (Some(code), None);
        }
        // Keep the start of the answer for the history; a body that fails or trickles is
        // cut off by the client's timeout and simply not quoted.
        let mut snippet = Vec::new();
        while snippet.len() < ERROR_BODY_BYTES {
            match resp.chunk().await {
                Ok(Some(chunk)) => snippet.extend_from_slice(&chunk),
                _ => break,
            }
        }
        snippet.truncate(ERROR_BODY_BYTES);
        let text = String::from_utf8_lossy(&snippet);
        let text = text.trim();
        let error = if text.is_empty() {
            format!("HTTP {code}")
        } else {
            format!("HTTP {code}: {text}")
        };
        (Some(code), Some(error))
    }
}

/// An attempt's error text, without the URL (it may carry a token in its query).
fn describe(e: &reqwest::Error, config: &WebhooksConfig) -> String {
    if e.is_timeout() {
        format!("no answer within {:?}", config.request_timeout)
    } else if e.is_connect() {
        format!("connection failed: {}", source_chain(e))
    } else {
        format!("request failed: {}", source_chain(e))
    }
}

pub(crate) fn source_chain(e: &reqwest::Error) -> String {
    let mut text = String::new();
    let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = cur {
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&s.to_string());
        cur = s.source();
    }
    if text.is_empty() {
        "unknown error".into()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn delays_double_up_to_the_cap() {
        let c = WebhooksConfig::default();
        let secs: Vec<u64> = (1..=14).map(|n| base_delay(&c, n).as_secs()).collect();
        assert_eq!(
            secs,
            vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 3600, 3600]
        );
        assert_eq!(base_delay(&c, 1000).as_secs(), 3600);
    }

    #[test]
    fn jitter_stays_in_bounds_and_the_window_ends() {
        let c = WebhooksConfig::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let start = 1_000_000_000_000_000_000i64;
        for _ in 0..200 {
            match after_failure(&c, 3, start, start, &mut rng) {
                AttemptOutcome::Retry { next_attempt_at } => {
                    let d = (next_attempt_at - start) as f64 / 1e9;
                    assert!((3.2..=4.8).contains(&d), "{d}");
                }
                other => panic!("{other:?}"),
            }
        }
        // 23.5 h into the window, an hour's delay ends it.
        let late = start + 23 * 3600 * 1_000_000_000 + 1_800_000_000_000;
        assert_eq!(
            after_failure(&c, 20, start, late, &mut rng),
            AttemptOutcome::Failed
        );
        // The whole default schedule: about 35 attempts in 24 h.
        let mut now = start;
        let mut attempts = 1;
        while let AttemptOutcome::Retry { next_attempt_at } =
            after_failure(&c, attempts, start, now, &mut rng)
        {
            now = next_attempt_at;
            attempts += 1;
        }
        assert!((30..=40).contains(&attempts), "{attempts}");
    }

    #[test]
    fn owner_ids_are_unique_and_short() {
        let a = owner_id();
        assert_ne!(a, owner_id());
        assert!(a.chars().count() <= storage::webhooks::OWNER_MAX);
    }
}
