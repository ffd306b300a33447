//! The `[engine]` section of logarithmd's configuration.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// Where flow jobs run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunnerKind {
    /// A container per job on the local Docker engine.
    #[default]
    Docker,
    /// A Pod per job through the Kubernetes API server (`[engine.kubernetes]`).
    Kubernetes,
}

/// The Kubernetes runner (`runner = "kubernetes"`). The API server and credentials come
/// from the in-cluster service account, or `KUBECONFIG` / `~/.kube/config` outside a
/// cluster. The service account logarithmd runs as needs pods create, delete, get, list
/// and watch in `namespace` (deploy/kubernetes/base/rbac.yaml).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesSettings {
    /// Namespace the job Pods go to. Default: the configuration's (in a cluster, the one
    /// logarithmd runs in).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Service account of the job Pods. Default: the namespace's `default`, with no API
    /// token mounted.
    #[serde(default)]
    pub service_account: Option<String>,
    /// Secrets (in the job namespace) the kubelet pulls job images with.
    #[serde(default)]
    pub image_pull_secrets: Vec<String>,
    /// Node labels a job Pod's node must have.
    #[serde(default)]
    pub node_selector: BTreeMap<String, String>,
}

impl KubernetesSettings {
    #[cfg(feature = "kubernetes")]
    pub fn pod_options(&self) -> engine::runner::kubernetes::PodOptions {
        engine::runner::kubernetes::PodOptions {
            service_account: self.service_account.clone(),
            image_pull_secrets: self.image_pull_secrets.clone(),
            node_selector: self.node_selector.clone(),
        }
    }

    fn validate(&self) -> Result<(), String> {
        let dns_label = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !s.starts_with('-')
                && !s.ends_with('-')
        };
        if let Some(ns) = &self.namespace {
            if !dns_label(ns) {
                return Err(format!(
                    "engine.kubernetes.namespace: {ns:?} is not a namespace name"
                ));
            }
        }
        for s in self.service_account.iter().chain(&self.image_pull_secrets) {
            if s.is_empty() || s.len() > 253 {
                return Err(format!(
                    "engine.kubernetes: {s:?} is not a service account or secret name"
                ));
            }
        }
        Ok(())
    }
}

/// Why `runner = "kubernetes"` is refused by a build without the `kubernetes` feature.
pub const KUBERNETES_NOT_BUILT: &str = "engine.runner = \"kubernetes\": this logarithmd was built \
without the Kubernetes runner (cargo feature `kubernetes`, on by default; a Docker-only build \
leaves it out). Use a build with default features, or set engine.runner = \"docker\"";

/// The flow engine. See docs/configuration.md.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSettings {
    /// Run flows. Needs the Docker engine (`DOCKER_HOST` or the default socket); when it
    /// cannot be reached at start, a warning is logged and the flow routes answer 503.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// Where jobs run: `docker` (the default) or `kubernetes`.
    #[serde(default)]
    pub runner: RunnerKind,
    /// The Kubernetes runner's settings.
    #[serde(default)]
    pub kubernetes: KubernetesSettings,
    /// Labels every job container (or Pod) gets besides its `io.containerops.*` ones (for
    /// example so an agent's `include_labels` selects them).
    #[serde(default)]
    pub extra_labels: BTreeMap<String, String>,
    /// How long a stopped job container (timeout, cancel) gets between SIGTERM and SIGKILL.
    #[serde(default = "default_stop_grace", with = "humantime_serde")]
    pub stop_grace: Duration,
    /// How often every waiting job is checked against Docker and storage (a safety net:
    /// verdicts normally arrive at once, in-process).
    #[serde(default = "default_reconcile_every", with = "humantime_serde")]
    pub reconcile_every: Duration,
    /// Lua VM instructions one pre or post script may run; past that the job fails.
    #[serde(default = "default_script_instructions")]
    pub script_instructions: u64,
    /// Wall-clock time one pre or post script may take; past that the job fails.
    #[serde(default = "default_script_time", with = "humantime_serde")]
    pub script_time: Duration,
    /// Memory one pre or post script may allocate (`32Mi`); past that the job fails.
    #[serde(default = "default_script_memory")]
    pub script_memory: String,
    /// Lines of the job's log a post script gets (the last ones).
    #[serde(default = "default_script_log_lines")]
    pub script_log_lines: usize,
    /// How often the cron scheduler looks for due `cron` triggers.
    #[serde(default = "default_cron_poll", with = "humantime_serde")]
    pub cron_poll: Duration,
    /// Secrets of webhook triggers, by the name a flow's trigger gives (`secret: github`).
    #[serde(default)]
    pub trigger_secrets: BTreeMap<String, String>,
    /// Secrets that sign the requests of service jobs, by the name a job gives
    /// (`secret: deployer`); a job without `secret:` uses the one named `default`.
    #[serde(default)]
    pub service_secrets: BTreeMap<String, String>,
    /// The values flows' `secrets:` name (`from_secret`), by name: `{ env = "VAR" }`,
    /// `{ file = "/path" }` or `{ value = "..." }`. They go into job containers and are
    /// masked in their logs; flows hold only the names.
    #[serde(default)]
    pub secrets: BTreeMap<String, super::secrets::SecretSource>,
    /// For tests: the cron scheduler reads the time from this file (Unix seconds or RFC
    /// 3339) instead of the system clock.
    #[serde(default)]
    pub clock_file: Option<std::path::PathBuf>,
    /// This replica's id, written as the owner of the runs it drives. Empty (the default):
    /// the host name (the Pod's name on Kubernetes) and a random suffix, new at every start.
    /// Replicas on one database must never share one.
    #[serde(default)]
    pub replica_id: String,
    /// How long a replica's heartbeat may stand still before the other replicas take over
    /// its flow runs (after a SIGKILL or a lost node; a replica that shuts down hands its
    /// runs over at once). Heartbeats and takeover checks run every fifth of it.
    #[serde(default = "default_lease_ttl", with = "humantime_serde")]
    pub lease_ttl: Duration,
}

impl Default for EngineSettings {
    fn default() -> EngineSettings {
        EngineSettings {
            enabled: default_enabled(),
            runner: RunnerKind::default(),
            kubernetes: KubernetesSettings::default(),
            extra_labels: BTreeMap::new(),
            stop_grace: default_stop_grace(),
            reconcile_every: default_reconcile_every(),
            script_instructions: default_script_instructions(),
            script_time: default_script_time(),
            script_memory: default_script_memory(),
            script_log_lines: default_script_log_lines(),
            cron_poll: default_cron_poll(),
            clock_file: None,
            trigger_secrets: BTreeMap::new(),
            service_secrets: BTreeMap::new(),
            secrets: BTreeMap::new(),
            replica_id: String::new(),
            lease_ttl: default_lease_ttl(),
        }
    }
}

impl EngineSettings {
    /// Checks values that serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.runner == RunnerKind::Kubernetes && !cfg!(feature = "kubernetes") {
            return Err(KUBERNETES_NOT_BUILT.into());
        }
        self.kubernetes.validate()?;
        super::secrets::FlowSecrets::read(&self.secrets)?;
        for (k, v) in &self.extra_labels {
            if k.is_empty() || k.starts_with("io.containerops.") {
                return Err(format!(
                    "engine.extra_labels: {k:?} is not allowed (empty, or an io.containerops.* label the engine sets)"
                ));
            }
            if v.len() > 512 {
                return Err(format!(
                    "engine.extra_labels: the value of {k:?} is too long"
                ));
            }
        }
        if self.replica_id.len() > 200 {
            return Err("engine.replica_id is longer than 200 bytes".into());
        }
        if self.lease_ttl < Duration::from_millis(500) {
            return Err("engine.lease_ttl must be at least 500ms".into());
        }
        if self.reconcile_every < Duration::from_millis(100) {
            return Err("engine.reconcile_every must be at least 100ms".into());
        }
        match engine::flow::parse_memory(&self.script_memory) {
            Some(m) if m >= 1 << 20 => {}
            _ => {
                return Err(format!(
                    "engine.script_memory: {:?} is not a size of at least 1Mi",
                    self.script_memory
                ))
            }
        }
        if self.script_instructions < 10_000 || self.script_time.is_zero() {
            return Err(
                "engine.script_instructions must be at least 10000 and engine.script_time positive"
                    .into(),
            );
        }
        if self.cron_poll < Duration::from_millis(100) {
            return Err("engine.cron_poll must be at least 100ms".into());
        }
        if self.script_log_lines > 10_000 {
            return Err("engine.script_log_lines must be at most 10000".into());
        }
        Ok(())
    }

    pub fn engine_config(&self) -> engine::EngineConfig {
        let mut c = engine::EngineConfig {
            stop_grace: self.stop_grace,
            reconcile_every: self.reconcile_every,
            scripts: engine::script::Limits {
                instructions: self.script_instructions,
                time: self.script_time,
                memory: engine::flow::parse_memory(&self.script_memory)
                    .and_then(|m| usize::try_from(m).ok())
                    .unwrap_or(32 << 20),
                log_lines: self.script_log_lines,
            },
            lease_ttl: self.lease_ttl,
            ..engine::EngineConfig::default()
        };
        if !self.replica_id.is_empty() {
            c.replica = self.replica_id.clone();
        }
        c
    }
}

fn default_enabled() -> bool {
    true
}
fn default_cron_poll() -> Duration {
    Duration::from_secs(1)
}
fn default_script_instructions() -> u64 {
    engine::script::Limits::default().instructions
}
fn default_script_time() -> Duration {
    engine::script::Limits::default().time
}
fn default_script_memory() -> String {
    "32Mi".into()
}
fn default_script_log_lines() -> usize {
    engine::script::Limits::default().log_lines
}
fn default_stop_grace() -> Duration {
    Duration::from_secs(10)
}
fn default_reconcile_every() -> Duration {
    Duration::from_secs(15)
}
fn default_lease_ttl() -> Duration {
    Duration::from_secs(15)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cargo test -p logarithmd` checks the default build; `--no-default-features` the
    /// Docker-only one.
    #[test]
    fn the_kubernetes_runner_is_refused_only_by_a_build_without_it() {
        let settings: EngineSettings = match toml::from_str("runner = \"kubernetes\"") {
            Ok(s) => s,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(settings.runner, RunnerKind::Kubernetes);
        let checked = settings.validate();
        if cfg!(feature = "kubernetes") {
            assert_eq!(checked, Ok(()));
        } else {
            assert_eq!(checked, Err(KUBERNETES_NOT_BUILT.to_owned()));
        }
        let docker = EngineSettings::default();
        assert_eq!(
            (docker.runner, docker.validate()),
            (RunnerKind::Docker, Ok(()))
        );
    }
}
