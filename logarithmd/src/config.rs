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
    /// Maximum open storage connections for writes (ingest, flows, webhooks).
    #[serde(default = "default_storage_connections")]
    pub storage_connections: usize,
    /// Maximum open storage connections for reads (jobs, logs, runs), a pool of their own
    /// so readers never hold a connection ingest needs (SQLite: at most 4 readers).
    #[serde(default = "default_storage_read_connections")]
    pub storage_read_connections: usize,
    /// Reads of each kind (download pages; others) that run at once while ingest writes
    /// (reads yield to ingest); the whole read pool when no batch is being applied.
    #[serde(default = "default_storage_busy_read_connections")]
    pub storage_busy_read_connections: usize,
    /// Share of the time (percent, 1–100) the pages of raw downloads may take while ingest
    /// writes: they are paced so the database serves batches the rest of the time (other
    /// reads, bounded by their own budgets, are not).
    #[serde(default = "default_storage_busy_read_percent")]
    pub storage_busy_read_percent: u32,
    /// API tokens (`[[tokens]]`): a name, the SHA-256 of the secret (`logarithmd
    /// hash-token` prints an entry), scopes (`ingest`, `read`, `admin`) and, for read
    /// tokens, optionally the flows they may read. See docs/security.md.
    #[serde(default)]
    pub tokens: Vec<crate::auth::TokenConfig>,
    /// Lets callers without a token read jobs, logs, flows and runs (never environment
    /// values or `co_data`). Off unless set; `scripts/run-local.sh` turns it on.
    #[serde(default)]
    pub anonymous_read: bool,
    /// Plaintext ingest secrets from `--ingest-token` / `LOGARITHMD_INGEST_TOKENS` only
    /// (never read from the file, which holds hashes); hashed at start.
    #[serde(skip)]
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
    /// Ordered ingest: how long a batch waits for the batches it names
    /// (`logarithm-batch-after`) before it is answered 503 `out_of_order`.
    #[serde(default = "default_ingest_order_wait", with = "humantime_serde")]
    pub ingest_order_wait: Duration,
    /// Ordered ingest: decoded bytes of the batches waiting for the batches they name, all
    /// together; a batch that would go beyond is answered 503 with `Retry-After` (the agent
    /// resends it). 0: no batch waits.
    #[serde(default = "default_ingest_order_waiting_bytes")]
    pub ingest_order_waiting_bytes: usize,
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
    /// Line bytes one JSON page of `GET /api/v1/jobs/{id}/logs` carries at most (the line
    /// that crosses it ends the page, with `more: true`).
    #[serde(default = "default_max_page_bytes")]
    pub max_page_bytes: usize,
    /// Lines one raw download, `follow=true` download or SSE job stream reads at most
    /// (filtered-out lines count); at the budget it ends as docs/api.md says ("Read
    /// limits"), telling the client where to continue.
    #[serde(default = "default_max_download_lines")]
    pub max_download_lines: usize,
    /// How long one raw download, follow, SSE stream or Loki tail may stay open; at the
    /// limit it ends the same way.
    #[serde(default = "default_max_stream_duration", with = "humantime_serde")]
    pub max_stream_duration: Duration,
    /// Live follows (`follow=true`, SSE streams) one token may have open at once; beyond,
    /// 429 with `Retry-After`. Callers without a token share one count.
    #[serde(default = "default_max_follows_per_token")]
    pub max_follows_per_token: usize,
    /// Longest time range a Loki query (`/loki/api/v1/…`) may cover when it names no flow,
    /// run, job or job_id with `=`; broader queries are answered 400.
    #[serde(default = "default_loki_max_range", with = "humantime_serde")]
    pub loki_max_range: Duration,
    /// Jobs a Loki query may examine (those its selector's flow/run/stage/action/job/status
    /// equality matchers leave); past it the query is answered 400, never in part.
    #[serde(default = "default_loki_max_jobs")]
    pub loki_max_jobs: usize,
    /// A plaintext admin secret from `--admin-token` / `LOGARITHMD_ADMIN_TOKEN` only (never
    /// read from the file); hashed at start into a token named `admin` with scope `admin`.
    #[serde(skip)]
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
    /// Secret masks applied to every job's lines before storage (`[masking]`).
    #[serde(default)]
    pub masking: crate::masking::MaskingConfig,
    /// Retention (`[retention]`): maximum ages (per flow too), total caps, the sweeper's
    /// interval and batch size. Default: keep everything.
    #[serde(default)]
    pub retention: crate::retention::RetentionConfig,
    /// HTTPS (`[tls]`: `cert`, `key`, optional `client_ca` for mutual TLS). Absent: HTTP.
    #[serde(default)]
    pub tls: Option<crate::tls::TlsConfig>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: default_listen(),
            storage_url: default_storage_url(),
            storage_connections: default_storage_connections(),
            storage_read_connections: default_storage_read_connections(),
            storage_busy_read_connections: default_storage_busy_read_connections(),
            storage_busy_read_percent: default_storage_busy_read_percent(),
            tokens: Vec::new(),
            anonymous_read: false,
            ingest_tokens: Vec::new(),
            max_body_bytes: default_max_body_bytes(),
            max_decompressed_bytes: default_max_decompressed_bytes(),
            ingest_concurrency: default_ingest_concurrency(),
            ingest_queue: default_ingest_queue(),
            ingest_queue_timeout: default_ingest_queue_timeout(),
            ingest_order_wait: default_ingest_order_wait(),
            ingest_order_waiting_bytes: default_ingest_order_waiting_bytes(),
            storage_write_timeout: default_storage_write_timeout(),
            request_timeout: default_request_timeout(),
            shutdown_timeout: default_shutdown_timeout(),
            max_scan_lines: default_max_scan_lines(),
            max_page_bytes: default_max_page_bytes(),
            max_download_lines: default_max_download_lines(),
            max_stream_duration: default_max_stream_duration(),
            max_follows_per_token: default_max_follows_per_token(),
            loki_max_range: default_loki_max_range(),
            loki_max_jobs: default_loki_max_jobs(),
            admin_token: None,
            public_url: None,
            webhooks: crate::webhooks::WebhooksConfig::default(),
            engine: crate::flows::EngineSettings::default(),
            live: crate::live::LiveSettings::default(),
            tls: None,
            masking: crate::masking::MaskingConfig::default(),
            retention: crate::retention::RetentionConfig::default(),
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
        if self.storage_connections == 0
            || self.storage_read_connections == 0
            || self.storage_busy_read_connections == 0
        {
            return Err("storage_connections, storage_read_connections and \
                 storage_busy_read_connections must be positive"
                .into());
        }
        if !(1..=100).contains(&self.storage_busy_read_percent) {
            return Err("storage_busy_read_percent must be 1 to 100".into());
        }
        if self.max_download_lines == 0 || self.max_stream_duration < Duration::from_secs(1) {
            return Err(
                "max_download_lines must be positive and max_stream_duration at least 1s".into(),
            );
        }
        if self.loki_max_jobs == 0 || self.loki_max_range.is_zero() {
            return Err("loki_max_jobs and loki_max_range must be positive".into());
        }
        if self.admin_token.as_deref().is_some_and(str::is_empty) {
            return Err("admin_token must not be empty".into());
        }
        self.authenticator()?;
        crate::masking::Masker::from_config(&self.masking)?;
        if let Some(u) = &self.public_url {
            match reqwest::Url::parse(u) {
                Ok(p) if matches!(p.scheme(), "http" | "https") => {}
                _ => return Err(format!("public_url {u:?} must be an http or https URL")),
            }
        }
        self.webhooks.validate()?;
        self.engine.validate()?;
        self.live.validate()?;
        self.retention.validate()?;
        Ok(())
    }
}

impl Config {
    /// Every token: the configured ones and those given in plaintext by flag or
    /// environment (hashed here, named `ingest-N` and `admin`).
    pub fn all_tokens(&self) -> Vec<crate::auth::TokenConfig> {
        use crate::auth::{Scope, TokenConfig};
        let mut all = self.tokens.clone();
        for (i, t) in self.ingest_tokens.iter().enumerate() {
            all.push(TokenConfig::from_secret(
                &format!("ingest-{}", i + 1),
                t,
                &[Scope::Ingest],
            ));
        }
        if let Some(t) = &self.admin_token {
            all.push(TokenConfig::from_secret("admin", t, &[Scope::Admin]));
        }
        all
    }

    /// The authenticator for these tokens, or why they are invalid.
    pub fn authenticator(&self) -> Result<crate::auth::Authenticator, String> {
        let all = self.all_tokens();
        let mut names = std::collections::BTreeSet::new();
        for t in &all {
            if !names.insert(t.name.as_str()) {
                return Err(format!("two tokens are named {:?}", t.name));
            }
        }
        crate::auth::Authenticator::new(&all, self.anonymous_read)
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
fn default_storage_read_connections() -> usize {
    4
}
fn default_storage_busy_read_connections() -> usize {
    1
}
fn default_storage_busy_read_percent() -> u32 {
    15
}
fn default_max_download_lines() -> usize {
    1_000_000
}
fn default_max_stream_duration() -> Duration {
    Duration::from_secs(3600)
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
fn default_ingest_order_wait() -> Duration {
    Duration::from_secs(2)
}
fn default_ingest_order_waiting_bytes() -> usize {
    256 << 20
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
fn default_max_follows_per_token() -> usize {
    256
}
fn default_max_page_bytes() -> usize {
    4 << 20
}
fn default_max_scan_lines() -> usize {
    200_000
}
fn default_loki_max_range() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_loki_max_jobs() -> usize {
    1000
}
