//! The `[webhooks]` section of logarithmd's configuration: subscriptions defined in the
//! file, and how the dispatcher sends and retries.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// How webhooks are delivered, and subscriptions defined in the configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Subscriptions upserted into storage at start (API-made ones live in storage only).
    #[serde(default)]
    pub subscriptions: Vec<SubscriptionConfig>,
    /// Deadline for one delivery request, connecting and reading the answer included; a
    /// receiver that takes longer counts as a failed attempt.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How long a claimed delivery is reserved for this process. Longer than
    /// `request_timeout`, so a delivery is attempted by one process at a time; after a crash,
    /// another process (or this one restarted) takes it over once the lease ends.
    #[serde(default = "default_lease", with = "humantime_serde")]
    pub lease: Duration,
    /// How often the dispatcher looks for due deliveries (it is also woken after each
    /// commit that wrote some).
    #[serde(default = "default_poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Deliveries sent at the same time by this process.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Delay before the second attempt; each further delay doubles.
    #[serde(default = "default_retry_initial", with = "humantime_serde")]
    pub retry_initial: Duration,
    /// Upper bound of one delay between attempts.
    #[serde(default = "default_retry_max_delay", with = "humantime_serde")]
    pub retry_max_delay: Duration,
    /// Give up when the next attempt would start later than this after the event (or the
    /// last redelivery).
    #[serde(default = "default_retry_max_age", with = "humantime_serde")]
    pub retry_max_age: Duration,
    /// Each delay is multiplied by a random factor in `[1 - jitter, 1 + jitter]`, so
    /// receivers that come back are not hit by every retry at once.
    #[serde(default = "default_retry_jitter")]
    pub retry_jitter: f64,
}

/// One subscription in the configuration file, or the body of `POST /api/v1/webhooks`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionConfig {
    /// Optional name; when given, the subscription's id is derived from it (so its URL can
    /// change), otherwise from the URL and events.
    #[serde(default)]
    pub name: Option<String>,
    /// Where deliveries are POSTed (http or https).
    pub url: String,
    /// Key of the HMAC-SHA256 signature (`whsec_<base64>` is decoded, as Standard Webhooks
    /// libraries do; any other text is used as its UTF-8 bytes).
    pub secret: String,
    /// `job.started`, `job.finished`, `flow.finished`.
    pub events: Vec<String>,
    /// Label equality filters (for example `"io.containerops.flow" = "release"`), all of
    /// which must hold.
    #[serde(default)]
    pub filters: BTreeMap<String, String>,
}

impl Default for WebhooksConfig {
    fn default() -> WebhooksConfig {
        WebhooksConfig {
            subscriptions: Vec::new(),
            request_timeout: default_request_timeout(),
            lease: default_lease(),
            poll_interval: default_poll_interval(),
            concurrency: default_concurrency(),
            retry_initial: default_retry_initial(),
            retry_max_delay: default_retry_max_delay(),
            retry_max_age: default_retry_max_age(),
            retry_jitter: default_retry_jitter(),
        }
    }
}

impl WebhooksConfig {
    /// Checks values serde cannot, naming the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.request_timeout.is_zero() {
            return Err("webhooks.request_timeout must be positive".into());
        }
        if self.lease <= self.request_timeout {
            return Err("webhooks.lease must be longer than webhooks.request_timeout".into());
        }
        if self.poll_interval.is_zero() {
            return Err("webhooks.poll_interval must be positive".into());
        }
        if self.concurrency == 0 || self.concurrency > 1000 {
            return Err("webhooks.concurrency must be 1 to 1000".into());
        }
        if self.retry_initial.is_zero() || self.retry_max_delay < self.retry_initial {
            return Err(
                "webhooks.retry_initial must be positive and at most webhooks.retry_max_delay"
                    .into(),
            );
        }
        if !(0.0..=1.0).contains(&self.retry_jitter) {
            return Err("webhooks.retry_jitter must be between 0 and 1".into());
        }
        for (i, s) in self.subscriptions.iter().enumerate() {
            super::validate_input(s.name.as_deref(), &s.url, &s.secret, &s.events, &s.filters)
                .map_err(|e| format!("webhooks.subscriptions[{i}].{}: {}", e.field, e.message))?;
        }
        Ok(())
    }
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_lease() -> Duration {
    Duration::from_secs(60)
}
fn default_poll_interval() -> Duration {
    Duration::from_millis(250)
}
fn default_concurrency() -> usize {
    16
}
fn default_retry_initial() -> Duration {
    Duration::from_secs(1)
}
fn default_retry_max_delay() -> Duration {
    Duration::from_secs(3600)
}
fn default_retry_max_age() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_retry_jitter() -> f64 {
    0.2
}
