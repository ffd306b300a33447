//! The agent's configuration: a TOML file (every field optional, unknown fields rejected),
//! overridden by command-line flags in `main.rs`. Durations are humantime strings
//! (`"200ms"`, `"10s"`). Documented for operators in `docs/configuration-antilog.md`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind};

/// Environment variable read for the token when the configuration has none.
pub const TOKEN_ENV: &str = "LOGARITHM_TOKEN";
/// Environment variable naming the node (the downward API's `spec.nodeName`).
pub const NODE_NAME_ENV: &str = "NODE_NAME";
/// Smallest accepted `spool_segment_bytes`.
pub const MIN_SPOOL_SEGMENT_BYTES: u64 = 4096;

/// How request bodies are compressed (`Content-Encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Zstd,
    Gzip,
    None,
}

/// Where container log lines are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// `cri` when `pod_log_root` exists and the Kubernetes API answers, else
    /// `docker-files` when `<docker_root>/containers` is readable, else `docker-api`.
    #[default]
    Auto,
    /// Docker's logs API for every container.
    DockerApi,
    /// The `json-file` log files under `<docker_root>` for containers with that log
    /// driver (the API for discovery, metadata and exits; other drivers stay on the API).
    DockerFiles,
    /// A Kubernetes node: the kubelet's CRI log files under `pod_log_root`, with Pod
    /// metadata, exit codes and labels from the Kubernetes API (see [`crate::cri`]).
    Cri,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where log lines are read from: `auto`, `docker-api`, `docker-files` or `cri`.
    #[serde(default)]
    pub source: Source,
    /// Docker's data root (`docker info` shows it as `Docker Root Dir`); `auto` checks that
    /// `<docker_root>/containers` is readable. The files themselves are read at the path
    /// Docker reports for each container (`LogPath`).
    #[serde(default = "default_docker_root")]
    pub docker_root: PathBuf,
    /// The kubelet's pod log root (`cri`): `<root>/<namespace>_<pod>_<uid>/<container>/
    /// <restart>.log`.
    #[serde(default = "default_pod_log_root")]
    pub pod_log_root: PathBuf,
    /// Kubeconfig file for the Kubernetes API (`cri`); default: as `kubectl` finds it
    /// (`KUBECONFIG`, `~/.kube/config`), else the in-cluster service account.
    #[serde(default)]
    pub kubeconfig: Option<PathBuf>,
    /// Base URL of logarithmd; batches go to `{server_url}/api/v1/ingest`.
    #[serde(default = "default_server_url")]
    pub server_url: String,
    /// Bearer token for logarithmd. When absent, the `LOGARITHM_TOKEN` environment variable
    /// is used; with neither, requests carry no `Authorization` header.
    #[serde(default)]
    pub token: Option<String>,
    /// Name of this node, sent with every batch; on `cri`, the Pods whose `spec.nodeName`
    /// is this are followed (default: the `NODE_NAME` environment variable, set from the
    /// downward API in a DaemonSet, else the kernel's hostname).
    #[serde(default = "default_node_name")]
    pub node_name: String,
    /// Id of this agent instance, for diagnostics (default: random per start).
    #[serde(default = "default_agent_id")]
    pub agent_id: String,
    /// Docker endpoint (`unix:///var/run/docker.sock`, `tcp://host:2375`); default: the
    /// local socket (honouring `DOCKER_HOST`).
    #[serde(default)]
    pub docker_host: Option<String>,
    /// Directory of the checkpoint file (created if missing).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Directory of the disk spool, where batches wait for logarithmd's acknowledgement
    /// (default: `<data_dir>/spool`).
    #[serde(default)]
    pub spool_dir: Option<PathBuf>,
    /// Most bytes the spool's segment files may take; when full, reading pauses until
    /// logarithmd has acknowledged enough (Docker keeps the logs meanwhile).
    #[serde(default = "default_spool_max_bytes")]
    pub spool_max_bytes: u64,
    /// Size at which a spool segment file is closed and the next one started; delivered
    /// data is deleted a whole segment at a time. At most half of `spool_max_bytes`.
    #[serde(default = "default_spool_segment_bytes")]
    pub spool_segment_bytes: u64,
    /// Collect only containers with one of these labels (`key` or `key=value`)...
    #[serde(default)]
    pub include_labels: Vec<String>,
    /// Never collect containers with one of these labels (`key` or `key=value`).
    #[serde(default)]
    pub exclude_labels: Vec<String>,
    /// ...or whose name (without Docker's leading `/`) matches one of these regexes. With no
    /// include rule at all, every container is included.
    #[serde(default)]
    pub include_names: Vec<String>,
    /// Never collect containers whose name matches one of these regexes (exclusion wins).
    #[serde(default)]
    pub exclude_names: Vec<String>,
    /// Most records in one batch.
    #[serde(default = "default_batch_max_records")]
    pub batch_max_records: usize,
    /// Most payload bytes (line bytes as sent, plus a small per-record allowance) in one
    /// batch; a single record larger than this still travels, alone.
    #[serde(default = "default_batch_max_bytes")]
    pub batch_max_bytes: usize,
    /// Longest time the first item of a batch waits before the batch is sent.
    #[serde(default = "default_batch_max_age", with = "humantime_serde")]
    pub batch_max_age: Duration,
    /// Capacity (items) of the channel from the container followers to the batcher; when it
    /// is full, followers stop reading from Docker.
    #[serde(default = "default_channel_capacity")]
    pub channel_capacity: usize,
    /// Longest record payload; longer lines are split into continuation records.
    #[serde(default = "default_max_line_bytes")]
    pub max_line_bytes: usize,
    /// Request body compression: `zstd`, `gzip` or `none`.
    #[serde(default)]
    pub compression: Compression,
    /// Timeout of one ingest request (connect to response).
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Timeout of establishing the TCP (and TLS) connection to logarithmd.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// On shutdown, how long to keep trying to deliver what was already read.
    #[serde(default = "default_shutdown_timeout", with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Most batches sent to logarithmd at once (1 to 64). Batches of one container are
    /// still delivered one after another, and checkpoints move only in spool order.
    #[serde(default = "default_max_in_flight_batches")]
    pub max_in_flight_batches: usize,
    /// First delay before a failed delivery is retried; it doubles (with jitter) up to
    /// `ship_retry_max`.
    #[serde(default = "default_ship_retry_initial", with = "humantime_serde")]
    pub ship_retry_initial: Duration,
    /// Longest delay between delivery attempts; also the interval of retries after an
    /// answer that retrying soon will not fix (401, 403, 404).
    #[serde(default = "default_ship_retry_max", with = "humantime_serde")]
    pub ship_retry_max: Duration,
    /// Most bytes of the dead-letter file (`<data_dir>/dead-letter.jsonl`, records
    /// logarithmd refused for good); past it, refused records are only counted and logged.
    #[serde(default = "default_dead_letter_max_bytes")]
    pub dead_letter_max_bytes: u64,
    /// Address `GET /metrics` (Prometheus text format) is served on, `host:port`; an empty
    /// string disables it.
    #[serde(default = "default_metrics_listen")]
    pub metrics_listen: String,
    /// TLS to logarithmd (`[tls]`: `ca_file` pins the CA, `client_cert` + `client_key`
    /// for mutual TLS); used when `server_url` is `https://`.
    #[serde(default)]
    pub tls: crate::http_client::ClientTls,
}

fn default_server_url() -> String {
    "http://127.0.0.1:7300".to_string()
}
fn default_node_name() -> String {
    if let Some(n) = std::env::var(NODE_NAME_ENV).ok().filter(|n| !n.is_empty()) {
        return n;
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}
fn default_agent_id() -> String {
    format!("antilog-{:016x}", rand::random::<u64>())
}
fn default_docker_root() -> PathBuf {
    PathBuf::from("/var/lib/docker")
}
fn default_pod_log_root() -> PathBuf {
    PathBuf::from(crate::files::pod_logs::DEFAULT_ROOT)
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("./data/antilog")
}
fn default_spool_max_bytes() -> u64 {
    1 << 30
}
fn default_spool_segment_bytes() -> u64 {
    32 << 20
}
fn default_batch_max_records() -> usize {
    5000
}
fn default_batch_max_bytes() -> usize {
    4 << 20
}
fn default_batch_max_age() -> Duration {
    // Bounds what live follow adds to a line's latency (issue 12: p99 ≤ 100 ms from the
    // container's write to an SSE client); busy containers fill batches by count first.
    Duration::from_millis(50)
}
fn default_channel_capacity() -> usize {
    4096
}
fn default_max_line_bytes() -> usize {
    1 << 20
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_in_flight_batches() -> usize {
    4
}
fn default_ship_retry_initial() -> Duration {
    Duration::from_millis(100)
}
fn default_ship_retry_max() -> Duration {
    Duration::from_secs(30)
}
fn default_dead_letter_max_bytes() -> u64 {
    64 << 20
}
fn default_metrics_listen() -> String {
    "127.0.0.1:7301".to_string()
}

impl Default for Config {
    fn default() -> Config {
        Config {
            source: Source::default(),
            docker_root: default_docker_root(),
            pod_log_root: default_pod_log_root(),
            kubeconfig: None,
            server_url: default_server_url(),
            token: None,
            node_name: default_node_name(),
            agent_id: default_agent_id(),
            docker_host: None,
            data_dir: default_data_dir(),
            spool_dir: None,
            spool_max_bytes: default_spool_max_bytes(),
            spool_segment_bytes: default_spool_segment_bytes(),
            include_labels: Vec::new(),
            exclude_labels: Vec::new(),
            include_names: Vec::new(),
            exclude_names: Vec::new(),
            batch_max_records: default_batch_max_records(),
            batch_max_bytes: default_batch_max_bytes(),
            batch_max_age: default_batch_max_age(),
            channel_capacity: default_channel_capacity(),
            max_line_bytes: default_max_line_bytes(),
            compression: Compression::default(),
            request_timeout: default_request_timeout(),
            connect_timeout: default_connect_timeout(),
            shutdown_timeout: default_shutdown_timeout(),
            max_in_flight_batches: default_max_in_flight_batches(),
            ship_retry_initial: default_ship_retry_initial(),
            ship_retry_max: default_ship_retry_max(),
            dead_letter_max_bytes: default_dead_letter_max_bytes(),
            metrics_listen: default_metrics_listen(),
            tls: crate::http_client::ClientTls::default(),
        }
    }
}

impl Config {
    /// Parses a TOML document.
    pub fn from_toml(text: &str) -> Result<Config, Error> {
        toml::from_str(text)
            .map_err(|e| Error::with_source(ErrorKind::Config, "invalid configuration file", e))
    }

    /// Reads and parses a TOML file.
    pub fn load(path: &std::path::Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::with_source(
                ErrorKind::Config,
                format!("cannot read {}", path.display()),
                e,
            )
        })?;
        Config::from_toml(&text)
    }

    /// The token to send: the configured one, else `LOGARITHM_TOKEN`.
    pub fn effective_token(&self) -> Option<String> {
        self.token
            .clone()
            .or_else(|| std::env::var(TOKEN_ENV).ok())
            .filter(|t| !t.is_empty())
    }

    /// Checks values serde cannot (regexes and label rules are checked by the filter).
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |m: String| Err(Error::new(ErrorKind::Config, m));
        if let Err(m) = self.tls.validate() {
            return bad(m);
        }
        let url = self.server_url.trim_end_matches('/');
        if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 8 {
            return bad(format!(
                "server_url must be an http:// or https:// URL, got {:?}",
                self.server_url
            ));
        }
        for (name, v) in [
            ("batch_max_records", self.batch_max_records),
            ("batch_max_bytes", self.batch_max_bytes),
            ("channel_capacity", self.channel_capacity),
            ("max_line_bytes", self.max_line_bytes),
        ] {
            if v == 0 {
                return bad(format!("{name} must be greater than 0"));
            }
        }
        for (name, d) in [
            ("batch_max_age", self.batch_max_age),
            ("request_timeout", self.request_timeout),
            ("connect_timeout", self.connect_timeout),
            ("ship_retry_initial", self.ship_retry_initial),
        ] {
            if d.is_zero() {
                return bad(format!("{name} must be greater than 0"));
            }
        }
        if self.spool_segment_bytes < MIN_SPOOL_SEGMENT_BYTES {
            return bad(format!(
                "spool_segment_bytes must be at least {MIN_SPOOL_SEGMENT_BYTES}, got {}",
                self.spool_segment_bytes
            ));
        }
        if self.spool_max_bytes / 2 < self.spool_segment_bytes {
            return bad(format!(
                "spool_max_bytes ({}) must be at least twice spool_segment_bytes ({})",
                self.spool_max_bytes, self.spool_segment_bytes
            ));
        }
        if !(1..=64).contains(&self.max_in_flight_batches) {
            return bad(format!(
                "max_in_flight_batches must be 1 to 64, got {}",
                self.max_in_flight_batches
            ));
        }
        if self.ship_retry_max < self.ship_retry_initial {
            return bad("ship_retry_max must be at least ship_retry_initial".to_string());
        }
        if self.node_name.is_empty() || self.node_name.len() > 255 {
            return bad("node_name must be 1 to 255 bytes".to_string());
        }
        self.metrics_addr()?;
        Ok(())
    }

    /// Where to serve metrics; `None` when `metrics_listen` is empty.
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, Error> {
        let s = self.metrics_listen.trim();
        if s.is_empty() {
            return Ok(None);
        }
        s.parse().map(Some).map_err(|e| {
            Error::with_source(
                ErrorKind::Config,
                format!("metrics_listen must be host:port (an IP address), got {s:?}"),
                e,
            )
        })
    }

    /// The Docker source `auto` stands for on this machine (other values are returned as
    /// they are); whether `auto` means `cri` is decided first by [`crate::cri::choose`].
    pub fn effective_source(&self) -> Source {
        match self.source {
            Source::Auto if std::fs::read_dir(self.docker_root.join("containers")).is_ok() => {
                Source::DockerFiles
            }
            Source::Auto => Source::DockerApi,
            other => other,
        }
    }

    /// The spool's directory: `spool_dir`, else `<data_dir>/spool`.
    pub fn spool_path(&self) -> PathBuf {
        self.spool_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("spool"))
    }

    /// The dead-letter file: `<data_dir>/dead-letter.jsonl`.
    pub fn dead_letter_path(&self) -> PathBuf {
        self.data_dir.join(crate::dead_letter::FILE_NAME)
    }

    /// The ingest endpoint.
    pub fn ingest_url(&self) -> String {
        format!(
            "{}{}",
            self.server_url.trim_end_matches('/'),
            protocol::INGEST_PATH
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.batch_max_records, 5000);
        assert_eq!(c.batch_max_bytes, 4 << 20);
        assert_eq!(c.batch_max_age, Duration::from_millis(50));
        assert_eq!(c.max_line_bytes, 1 << 20);
        assert_eq!(c.compression, Compression::Zstd);
        assert_eq!(c.source, Source::Auto);
        assert_eq!(c.docker_root, PathBuf::from("/var/lib/docker"));
        assert_eq!(c.shutdown_timeout, Duration::from_secs(10));
        assert_eq!(c.data_dir, PathBuf::from("./data/antilog"));
        assert_eq!(c.spool_path(), PathBuf::from("./data/antilog/spool"));
        assert_eq!(
            (c.spool_max_bytes, c.spool_segment_bytes),
            (1 << 30, 32 << 20)
        );
        assert_eq!(
            c.metrics_addr().unwrap(),
            Some(SocketAddr::from(([127, 0, 0, 1], 7301)))
        );
        c.validate().unwrap();
        let off = Config::from_toml("metrics_listen = \"\"").unwrap();
        assert_eq!(off.metrics_addr().unwrap(), None);
        let bad = Config::from_toml("metrics_listen = \"localhost\"").unwrap();
        assert_eq!(bad.validate().unwrap_err().kind(), ErrorKind::Config);
    }

    #[test]
    fn parses_fields_and_rejects_unknown_ones() {
        let c = Config::from_toml(
            r#"
            server_url = "http://logs:7300/"
            token = "t"
            batch_max_age = "1s"
            compression = "gzip"
            include_labels = ["ci=true"]
            source = "docker-files"
            "#,
        )
        .unwrap();
        assert_eq!(c.ingest_url(), "http://logs:7300/api/v1/ingest");
        assert_eq!(c.batch_max_age, Duration::from_secs(1));
        assert_eq!(c.compression, Compression::Gzip);
        assert_eq!(c.effective_source(), Source::DockerFiles);
        let auto = Config {
            docker_root: PathBuf::from("/nonexistent"),
            ..Config::default()
        };
        assert_eq!(auto.effective_source(), Source::DockerApi);
        assert!(Config::from_toml("source = \"journald\"").is_err());
        assert_eq!(c.effective_token().as_deref(), Some("t"));
        let err = Config::from_toml("servr_url = \"x\"").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        let c = Config {
            server_url: "logs:7300".into(),
            ..Config::default()
        };
        assert!(c.validate().is_err());
        let c = Config::from_toml(
            "spool_dir = \"/var/spool/antilog\"\nspool_max_bytes = 1048576\nspool_segment_bytes = 524288",
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.spool_path(), PathBuf::from("/var/spool/antilog"));
        let c = Config {
            spool_segment_bytes: 600 << 10,
            ..c
        };
        assert_eq!(c.validate().unwrap_err().kind(), ErrorKind::Config);
    }
}
