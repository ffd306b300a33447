//! logarithmd's configuration: a TOML file (every field optional, unknown fields refused),
//! overridden by command-line flags and `LOGARITHMD_*` environment variables in `main`.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

/// Everything logarithmd can be told. See docs/configuration.md.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP API (ingest, query, health) listens on.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Storage URL: `sqlite://path/to/file.db` (embedded default) or
    /// `mysql://user:pass@host:port/db` (TiDB, MariaDB, MySQL).
    #[serde(default = "default_storage_url")]
    pub storage_url: String,
    /// Maximum open storage connections.
    #[serde(default = "default_storage_connections")]
    pub storage_connections: usize,
    /// Tokens agents present as `Authorization: Bearer <token>`. Empty means ingest is open
    /// to anyone who can reach the port (a warning is logged at start).
    #[serde(default)]
    pub ingest_tokens: Vec<String>,
    /// Largest ingest request body accepted, as sent (compressed).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Largest ingest body accepted after decompression.
    #[serde(default = "default_max_decompressed_bytes")]
    pub max_decompressed_bytes: usize,
    /// Batches written to storage at once.
    #[serde(default = "default_ingest_concurrency")]
    pub ingest_concurrency: usize,
    /// Batches allowed to wait for a writer; beyond that ingest answers 503.
    #[serde(default = "default_ingest_queue")]
    pub ingest_queue: usize,
    /// How long a batch may wait for a writer before ingest answers 503.
    #[serde(default = "default_ingest_queue_timeout", with = "humantime_serde")]
    pub ingest_queue_timeout: Duration,
    /// Deadline for committing one batch; past it ingest answers 503 and the agent resends
    /// (a hung database then costs a writer slot for this long, not for ever). Keep it below
    /// the agents' request timeout.
    #[serde(default = "default_storage_write_timeout", with = "humantime_serde")]
    pub storage_write_timeout: Duration,
    /// Deadline for one HTTP request (reading the body and answering).
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How long shutdown waits for in-flight requests to finish.
    #[serde(default = "default_shutdown_timeout", with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Lines a log query scans at most to find matches for `contains`/`regex` in one call.
    #[serde(default = "default_max_scan_lines")]
    pub max_scan_lines: usize,
    /// Bearer token for managing webhooks (`/api/v1/webhooks`). Without it those routes
    /// answer 401.
    #[serde(default)]
    pub admin_token: Option<String>,
    /// logarithmd's externally visible base URL (for links in webhook payloads, such as a
    /// job's `logs_url`). Default: `http://<listen>`.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Webhook subscriptions and delivery settings.
    #[serde(default)]
    pub webhooks: crate::webhooks::WebhooksConfig,
    /// The flow engine (`[engine]`).
    #[serde(default)]
    pub engine: crate::flows::EngineSettings,
    /// Live follow: SSE streams and `follow=true` (`[live]`).
    #[serde(default)]
    pub live: crate::live::LiveSettings,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: default_listen(),
            storage_url: default_storage_url(),
            storage_connections: default_storage_connections(),
            ingest_tokens: Vec::new(),
            max_body_bytes: default_max_body_bytes(),
            max_decompressed_bytes: default_max_decompressed_bytes(),
            ingest_concurrency: default_ingest_concurrency(),
            ingest_queue: default_ingest_queue(),
            ingest_queue_timeout: default_ingest_queue_timeout(),
            storage_write_timeout: default_storage_write_timeout(),
            request_timeout: default_request_timeout(),
            shutdown_timeout: default_shutdown_timeout(),
            max_scan_lines: default_max_scan_lines(),
            admin_token: None,
            public_url: None,
            webhooks: crate::webhooks::WebhooksConfig::default(),
            engine: crate::flows::EngineSettings::default(),
            live: crate::live::LiveSettings::default(),
        }
    }
}

impl Config {
    /// Checks values that serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.ingest_concurrency == 0 {
            return Err("ingest_concurrency must be at least 1".into());
        }
        if self.max_body_bytes == 0 || self.max_decompressed_bytes < self.max_body_bytes {
            return Err(
                "max_body_bytes must be positive and at most max_decompressed_bytes".into(),
            );
        }
        if self.ingest_tokens.iter().any(|t| t.is_empty()) {
            return Err("ingest_tokens must not contain an empty token".into());
        }
        if self.admin_token.as_deref().is_some_and(str::is_empty) {
            return Err("admin_token must not be empty".into());
        }
        if let Some(u) = &self.public_url {
            match reqwest::Url::parse(u) {
                Ok(p) if matches!(p.scheme(), "http" | "https") => {}
                _ => return Err(format!("public_url {u:?} must be an http or https URL")),
            }
        }
        self.webhooks.validate()?;
        self.engine.validate()?;
        self.live.validate()?;
        Ok(())
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7300))
}
fn default_storage_url() -> String {
    "sqlite://data/logarithm.db".into()
}
fn default_storage_connections() -> usize {
    8
}
fn default_max_body_bytes() -> usize {
    16 << 20
}
fn default_max_decompressed_bytes() -> usize {
    64 << 20
}
fn default_ingest_concurrency() -> usize {
    4
}
fn default_ingest_queue() -> usize {
    64
}
fn default_storage_write_timeout() -> Duration {
    Duration::from_secs(20)
}
fn default_ingest_queue_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_scan_lines() -> usize {
    200_000
}
