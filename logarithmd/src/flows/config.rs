//! The `[engine]` section of logarithmd's configuration.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// The flow engine. See docs/configuration.md.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineSettings {
    /// Run flows. Needs the Docker engine (`DOCKER_HOST` or the default socket); when it
    /// cannot be reached at start, a warning is logged and the flow routes answer 503.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// Labels every job container gets besides its `io.containerops.*` ones (for example so
    /// an agent's `include_labels` selects them).
    #[serde(default)]
    pub extra_labels: BTreeMap<String, String>,
    /// How long a stopped job container (timeout, cancel) gets between SIGTERM and SIGKILL.
    #[serde(default = "default_stop_grace", with = "humantime_serde")]
    pub stop_grace: Duration,
    /// How often every waiting job is checked against Docker and storage (a safety net:
    /// verdicts normally arrive at once, in-process).
    #[serde(default = "default_reconcile_every", with = "humantime_serde")]
    pub reconcile_every: Duration,
}

impl Default for EngineSettings {
    fn default() -> EngineSettings {
        EngineSettings {
            enabled: default_enabled(),
            extra_labels: BTreeMap::new(),
            stop_grace: default_stop_grace(),
            reconcile_every: default_reconcile_every(),
        }
    }
}

impl EngineSettings {
    /// Checks values that serde cannot.
    pub fn validate(&self) -> Result<(), String> {
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
        if self.reconcile_every < Duration::from_millis(100) {
            return Err("engine.reconcile_every must be at least 100ms".into());
        }
        Ok(())
    }

    pub fn engine_config(&self) -> engine::EngineConfig {
        engine::EngineConfig {
            stop_grace: self.stop_grace,
            reconcile_every: self.reconcile_every,
        }
    }
}

fn default_enabled() -> bool {
    true
}
fn default_stop_grace() -> Duration {
    Duration::from_secs(10)
}
fn default_reconcile_every() -> Duration {
    Duration::from_secs(15)
}
