//! Webhooks: signed, durable, retried notifications of job results.
//!
//! Delivery is an outbox. `storage::Storage::apply` writes one delivery per job event and
//! matching enabled subscription, with a snapshot of the job, in the same transaction that
//! records the event, so a crash between the two cannot lose a notification. The
//! [`dispatcher`] claims due deliveries with a lease (two logarithmd processes on one
//! database never send the same attempt), signs and POSTs them, records every attempt
//! (status code, latency, error), and retries failures on an exponential schedule with
//! jitter until `retry_max_age`. 2xx is success; 410 Gone disables the subscription.
//!
//! # Layout
//! - [`config`]: the `[webhooks]` configuration section.
//! - [`signing`]: Standard Webhooks signatures and header names.
//! - [`payload`]: the JSON body.
//! - [`dispatcher`]: claims, sends, records, schedules retries.
//! - here: subscription input validation (shared by the config file and the API) and the
//!   start-up upsert of configured subscriptions.

pub mod config;
pub mod dispatcher;
pub mod payload;
pub mod signing;

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};
use storage::{EventKind, Storage, SubscriptionSource, SubscriptionSpec};

pub use config::{SubscriptionConfig, WebhooksConfig};

/// Subscription input that names the offending field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

fn field_error(field: &'static str, message: impl Into<String>) -> FieldError {
    FieldError {
        field,
        message: message.into(),
    }
}

/// A checked subscription definition, without its id and source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidInput {
    pub name: Option<String>,
    pub url: String,
    pub secret: String,
    pub events: BTreeSet<EventKind>,
    pub filters: BTreeMap<String, String>,
}

impl SubscriptionConfig {
    /// Checks the subscription (from the config file or the API).
    pub fn validate(&self) -> Result<ValidInput, FieldError> {
        validate_input(
            self.name.as_deref(),
            &self.url,
            &self.secret,
            &self.events,
            &self.filters,
        )
    }
}

/// Checks a subscription as given in the config file or the API.
pub fn validate_input(
    name: Option<&str>,
    url: &str,
    secret: &str,
    events: &[String],
    filters: &BTreeMap<String, String>,
) -> Result<ValidInput, FieldError> {
    if let Some(n) = name {
        if n.is_empty() || n.chars().count() > storage::webhooks::SUBSCRIPTION_NAME_MAX {
            return Err(field_error("name", "must be 1 to 255 characters"));
        }
    }
    if url.chars().count() > storage::webhooks::URL_MAX {
        return Err(field_error("url", "must be at most 2048 characters"));
    }
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| field_error("url", format!("is not a valid URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(field_error(
            "url",
            format!("must be an http or https URL, not {:?}", parsed.scheme()),
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(field_error("url", "must name a host"));
    }
    if secret.is_empty() {
        return Err(field_error("secret", "must not be empty"));
    }
    if secret.chars().count() > storage::webhooks::SECRET_MAX {
        return Err(field_error("secret", "must be at most 1024 characters"));
    }
    if events.is_empty() {
        return Err(field_error("events", "must name at least one event"));
    }
    let mut kinds = BTreeSet::new();
    for e in events {
        let kind = EventKind::parse(e).ok_or_else(|| {
            field_error(
                "events",
                format!(
                    "unknown event {e:?}; known: {}",
                    EventKind::ALL.map(EventKind::as_str).join(", ")
                ),
            )
        })?;
        kinds.insert(kind);
    }
    for (k, v) in filters {
        if k.is_empty() || k.chars().count() > 128 || v.chars().count() > 512 {
            return Err(field_error(
                "filters",
                format!("label {k:?}: names are 1 to 128 characters, values at most 512"),
            ));
        }
    }
    Ok(ValidInput {
        name: name.map(str::to_owned),
        url: url.to_owned(),
        secret: secret.to_owned(),
        events: kinds,
        filters: filters.clone(),
    })
}

/// A positive 64-bit id from a hash, as job ids are made.
fn hashed_id(text: &str) -> i64 {
    let digest = Sha256::digest(text.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest[..8]);
    let id = (u64::from_be_bytes(b) & (i64::MAX as u64)) as i64;
    id.max(1)
}

/// The stable id of a configured subscription: from its name, or from its URL and events,
/// so every replica and every restart upserts the same row.
pub fn config_subscription_id(input: &ValidInput) -> i64 {
    match &input.name {
        Some(name) => hashed_id(&format!("config-name\n{name}")),
        None => {
            let events: Vec<&str> = input.events.iter().map(|e| e.as_str()).collect();
            hashed_id(&format!("config-url\n{}\n{}", input.url, events.join(",")))
        }
    }
}

/// Upserts the configuration file's subscriptions (already validated with the config).
pub async fn sync_config_subscriptions(
    storage: &dyn Storage,
    config: &WebhooksConfig,
) -> Result<(), crate::Error> {
    for (i, s) in config.subscriptions.iter().enumerate() {
        let input = s.validate().map_err(|e| {
            crate::Error::Config(format!(
                "webhooks.subscriptions[{i}].{}: {}",
                e.field, e.message
            ))
        })?;
        let spec = SubscriptionSpec {
            id: config_subscription_id(&input),
            name: input.name,
            source: SubscriptionSource::Config,
            url: input.url,
            secret: input.secret,
            events: input.events,
            filters: input.filters,
        };
        let sub = storage.upsert_subscription(&spec).await?;
        tracing::info!(
            subscription_id = sub.spec.id,
            enabled = sub.enabled,
            "webhook subscription from the configuration"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(e: &[&str]) -> Vec<String> {
        e.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn input_errors_name_the_field() {
        let f = BTreeMap::new();
        let ok = events(&["job.finished"]);
        let field = |r: Result<ValidInput, FieldError>| r.map(|_| ()).unwrap_err().field;
        assert_eq!(
            field(validate_input(None, "ftp://x/y", "s", &ok, &f)),
            "url"
        );
        assert_eq!(
            field(validate_input(None, "not a url", "s", &ok, &f)),
            "url"
        );
        assert_eq!(
            field(validate_input(None, "http://x/", "", &ok, &f)),
            "secret"
        );
        assert_eq!(
            field(validate_input(None, "http://x/", "s", &[], &f)),
            "events"
        );
        assert_eq!(
            field(validate_input(
                None,
                "http://x/",
                "s",
                &events(&["job.exploded"]),
                &f
            )),
            "events"
        );
        assert_eq!(
            field(validate_input(Some(""), "http://x/", "s", &ok, &f)),
            "name"
        );
        let v = validate_input(
            None,
            "https://x/h",
            "s",
            &events(&["job.finished", "job.started"]),
            &f,
        )
        .unwrap();
        assert_eq!(
            v.events,
            [EventKind::JobStarted, EventKind::JobFinished]
                .into_iter()
                .collect()
        );
    }

    #[test]
    fn config_ids_are_stable() {
        let f = BTreeMap::new();
        let a = validate_input(None, "http://x/", "s", &events(&["job.finished"]), &f).unwrap();
        let b = validate_input(None, "http://x/", "other", &events(&["job.finished"]), &f).unwrap();
        let c = validate_input(None, "http://y/", "s", &events(&["job.finished"]), &f).unwrap();
        assert_eq!(config_subscription_id(&a), config_subscription_id(&b));
        assert_ne!(config_subscription_id(&a), config_subscription_id(&c));
        let n1 = validate_input(
            Some("bot"),
            "http://x/",
            "s",
            &events(&["job.finished"]),
            &f,
        )
        .unwrap();
        let n2 =
            validate_input(Some("bot"), "http://z/", "s", &events(&["job.started"]), &f).unwrap();
        assert_eq!(config_subscription_id(&n1), config_subscription_id(&n2));
        assert!(config_subscription_id(&n1) > 0);
    }
}
