//! `[retention]`: how long finished jobs are kept, per flow, and how much may be stored in
//! all. Validated here; turned into storage's [`storage::RetentionRules`] by
//! [`RetentionConfig::rules`].

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::flows::service::ledger::NAMESPACE as SERVICE_CALLS;
use crate::flows::store::RUNS;

/// `[retention]` in logarithmd's configuration. Nothing is deleted unless a rule is set.
/// `retention = "30d"` is short for `[retention] max_age = "30d"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionConfig {
    /// Finished jobs (with a verdict) whose `finished_at` is older than this are deleted
    /// with everything they own (`"30d"`, `"12h"`). Jobs still running are kept however
    /// old they are. Default: none (keep for ever).
    pub max_age: Option<Duration>,
    /// Per-flow maximum ages (`[[retention.flows]] flow = "nightly" max_age = "7d"`),
    /// replacing `max_age` for that flow's jobs (longer or shorter).
    pub flows: Vec<FlowRetention>,
    /// Lines stored in all, at most: beyond it the oldest finished jobs are deleted first
    /// until the total is under it. Default: none.
    pub max_lines: Option<u64>,
    /// Bytes of log line text stored in all, at most (what the jobs' counters sum; rows
    /// and indexes take more on disk, see docs/operations.md): beyond it the oldest
    /// finished jobs are deleted first. Default: none.
    pub max_bytes: Option<u64>,
    /// How often the sweeper runs (the first sweep runs at start).
    pub interval: Duration,
    /// Rows one delete transaction removes at most, 1 to 10,000.
    pub batch_rows: u32,
    /// TEST ONLY: a file whose content (Unix seconds or an RFC 3339 time) is the
    /// sweeper's "now", like `[engine] clock_file`, so a test can move time by days.
    /// Never set it in production: an unreadable file reads as the system time.
    pub clock_file: Option<PathBuf>,
}

/// The table form, as written (the shorthand is handled by [`RetentionConfig`]'s
/// `Deserialize`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    #[serde(default, with = "humantime_serde")]
    max_age: Option<Duration>,
    #[serde(default)]
    flows: Vec<FlowRetention>,
    #[serde(default)]
    max_lines: Option<u64>,
    #[serde(default)]
    max_bytes: Option<u64>,
    #[serde(default = "default_interval", with = "humantime_serde")]
    interval: Duration,
    #[serde(default = "default_batch_rows")]
    batch_rows: u32,
    #[serde(default)]
    clock_file: Option<PathBuf>,
}

impl<'de> Deserialize<'de> for RetentionConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RetentionConfig, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = RetentionConfig;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a maximum age such as \"30d\", or a [retention] table")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RetentionConfig, E> {
                let age = humantime_serde::re::humantime::parse_duration(v)
                    .map_err(|e| E::custom(format!("retention = {v:?}: {e}")))?;
                Ok(RetentionConfig {
                    max_age: Some(age),
                    ..RetentionConfig::default()
                })
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<RetentionConfig, A::Error> {
                let t = Table::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(RetentionConfig {
                    max_age: t.max_age,
                    flows: t.flows,
                    max_lines: t.max_lines,
                    max_bytes: t.max_bytes,
                    interval: t.interval,
                    batch_rows: t.batch_rows,
                    clock_file: t.clock_file,
                })
            }
        }
        d.deserialize_any(Visitor)
    }
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

    #[derive(Debug, Deserialize)]
    struct Outer {
        retention: RetentionConfig,
    }

    #[test]
    fn a_duration_is_short_for_max_age() {
        let o: Outer = toml::from_str("retention = \"30d\"").expect("parse");
        assert_eq!(o.retention.max_age, Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(o.retention.batch_rows, 5_000);
        let o: Outer = toml::from_str("[retention]\nmax_lines = 5\n").expect("parse");
        assert_eq!(
            (o.retention.max_lines, o.retention.max_age),
            (Some(5), None)
        );
        assert!(toml::from_str::<Outer>("retention = \"soon\"").is_err());
        assert!(toml::from_str::<Outer>("retention = 3").is_err());
    }

    #[test]
    fn refuses_unknown_fields_and_bad_values() {
        let e = toml::from_str::<Outer>("[retention]\nmaxage = \"1d\"\n").expect_err("typo");
        assert!(e.to_string().contains("maxage"), "{e}");
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
