//! `[retention]`: how long finished jobs are kept, per flow, and how much may be stored in
//! all. Validated here; turned into storage's [`storage::RetentionRules`] by
//! [`RetentionConfig::rules`].

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::flows::service::ledger::NAMESPACE as SERVICE_CALLS;
use crate::flows::store::RUNS;

/// `[retention]` in logarithmd's configuration. Nothing is deleted unless a rule is set.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Finished jobs (with a verdict) whose `finished_at` is older than this are deleted
    /// with everything they own (`"30d"`, `"12h"`). Jobs still running are kept however
    /// old they are. Default: none (keep for ever).
    #[serde(default, with = "humantime_serde")]
    pub max_age: Option<Duration>,
    /// Per-flow maximum ages (`[[retention.flows]] flow = "nightly" max_age = "7d"`),
    /// replacing `max_age` for that flow's jobs (longer or shorter).
    #[serde(default)]
    pub flows: Vec<FlowRetention>,
    /// Lines stored in all, at most: beyond it the oldest finished jobs are deleted first
    /// until the total is under it. Default: none.
    #[serde(default)]
    pub max_lines: Option<u64>,
    /// Bytes of log line text stored in all, at most (what the jobs' counters sum; rows
    /// and indexes take more on disk, see docs/operations.md): beyond it the oldest
    /// finished jobs are deleted first. Default: none.
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// How often the sweeper runs (the first sweep runs at start).
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Rows one delete transaction removes at most, 1 to 10,000.
    #[serde(default = "default_batch_rows")]
    pub batch_rows: u32,
    /// TEST ONLY: a file whose content (Unix seconds or an RFC 3339 time) is the
    /// sweeper's "now", like `[engine] clock_file`, so a test can move time by days.
    /// Never set it in production: an unreadable file reads as the system time.
    #[serde(default)]
    pub clock_file: Option<PathBuf>,
}

/// A maximum age for one flow's jobs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowRetention {
    /// The flow's name (the jobs' `io.containerops.flow` label).
    pub flow: String,
    /// Finished jobs of this flow older than this are deleted.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

impl Default for RetentionConfig {
    fn default() -> RetentionConfig {
        RetentionConfig {
            max_age: None,
            flows: Vec::new(),
            max_lines: None,
            max_bytes: None,
            interval: default_interval(),
            batch_rows: default_batch_rows(),
            clock_file: None,
        }
    }
}

fn default_interval() -> Duration {
    Duration::from_secs(600)
}

fn default_batch_rows() -> u32 {
    5_000
}

fn ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

impl RetentionConfig {
    /// Whether any rule can delete anything (otherwise no sweeper runs).
    pub fn enabled(&self) -> bool {
        self.rules().is_active()
    }

    /// Checks values that serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.batch_rows == 0 || self.batch_rows > storage::retention::BATCH_ROWS_MAX {
            return Err(format!(
                "retention.batch_rows must be 1 to {}",
                storage::retention::BATCH_ROWS_MAX
            ));
        }
        if self.interval.is_zero() {
            return Err("retention.interval must be positive".into());
        }
        if self.max_age.is_some_and(|d| d.is_zero()) {
            return Err("retention.max_age must be positive (leave it out to keep jobs)".into());
        }
        if self.max_lines == Some(0) || self.max_bytes == Some(0) {
            return Err("retention.max_lines and max_bytes must be positive".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for f in &self.flows {
            if f.flow.is_empty() || f.max_age.is_zero() {
                return Err(
                    "retention.flows: each needs a flow name and a positive max_age".into(),
                );
            }
            if !seen.insert(f.flow.as_str()) {
                return Err(format!(
                    "retention.flows: flow {:?} is listed twice",
                    f.flow
                ));
            }
        }
        Ok(())
    }

    /// Storage's rules: run documents in the engine's `runs` namespace, service calls'
    /// documents (keyed by the job's container id) with their jobs.
    pub fn rules(&self) -> storage::RetentionRules {
        storage::RetentionRules {
            max_age_ns: self.max_age.map(ns),
            flows: self
                .flows
                .iter()
                .map(|f| storage::retention::FlowRule {
                    flow: f.flow.clone(),
                    max_age_ns: ns(f.max_age),
                })
                .collect(),
            max_lines: self.max_lines,
            max_bytes: self.max_bytes,
            batch_rows: self.batch_rows,
            run_namespace: Some(RUNS.to_owned()),
            job_namespaces: vec![SERVICE_CALLS.to_owned()],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_human_durations_and_flows() {
        let c: RetentionConfig = toml::from_str(
            "max_age = \"30d\"\nmax_lines = 1000\n[[flows]]\nflow = \"nightly\"\nmax_age = \"7d\"\n",
        )
        .expect("parse");
        assert_eq!(c.max_age, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(c.flows[0].max_age, Duration::from_secs(7 * 86_400));
        c.validate().expect("valid");
        let rules = c.rules();
        assert_eq!(rules.flows[0].max_age_ns, 7 * 86_400 * 1_000_000_000);
        assert!(rules.is_active());
        assert!(!RetentionConfig::default().enabled());
    }

    #[test]
    fn refuses_unknown_fields_and_bad_values() {
        assert!(toml::from_str::<RetentionConfig>("maxage = \"1d\"").is_err());
        let c = RetentionConfig {
            batch_rows: 10_001,
            ..RetentionConfig::default()
        };
        assert!(c.validate().is_err());
        let twice = "[[flows]]\nflow = \"a\"\nmax_age = \"1d\"\n[[flows]]\nflow = \"a\"\nmax_age = \"2d\"\n";
        let c: RetentionConfig = toml::from_str(twice).expect("parse");
        assert!(c.validate().is_err());
    }
}
