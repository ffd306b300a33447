//! Retention's metrics, registered with logarithmd's others
//! ([`crate::metrics::Metrics::retention`]): rows deleted by kind, sweeps by result, how
//! long a sweep takes and when one last succeeded.

use std::time::Duration;

use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, IntCounterVec, IntGauge, Registry,
};

use crate::metrics::opts;

/// Kinds of rows counted in `logarithmd_retention_deleted_total`.
pub const KINDS: [&str; 5] = ["jobs", "lines", "deliveries", "attempts", "documents"];
/// Results of a sweep.
pub const RESULTS: [&str; 2] = ["ok", "error"];

#[derive(Clone)]
pub struct RetentionMetrics {
    deleted: IntCounterVec,
    sweeps: IntCounterVec,
    duration: Histogram,
    last_success: IntGauge,
}

impl RetentionMetrics {
    pub fn register(r: &Registry) -> Result<RetentionMetrics, prometheus::Error> {
        let deleted = IntCounterVec::new(
            opts(
                "retention_deleted_total",
                "Rows deleted by retention, by kind (jobs, lines, deliveries, attempts, \
                 documents).",
            ),
            &["kind"],
        )?;
        let sweeps = IntCounterVec::new(
            opts(
                "retention_sweeps_total",
                "Retention sweeps, by result (ok; error: see the log, the next sweep \
                 finishes what it left).",
            ),
            &["result"],
        )?;
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "retention_sweep_duration_seconds",
                "Time one retention sweep took, successful or not.",
            )
            .namespace("logarithmd")
            .buckets(exponential_buckets(0.01, 4.0, 10)?),
        )?;
        let last_success = IntGauge::with_opts(opts(
            "retention_last_success_timestamp_seconds",
            "Unix time the last successful retention sweep ended (0: none yet).",
        ))?;
        r.register(Box::new(deleted.clone()))?;
        r.register(Box::new(sweeps.clone()))?;
        r.register(Box::new(duration.clone()))?;
        r.register(Box::new(last_success.clone()))?;
        for k in KINDS {
            deleted.with_label_values(&[k]);
        }
        for k in RESULTS {
            sweeps.with_label_values(&[k]);
        }
        Ok(RetentionMetrics {
            deleted,
            sweeps,
            duration,
            last_success,
        })
    }

    /// A sweep succeeded, having deleted `d`, ending at Unix time `ended_secs`.
    pub fn swept(&self, d: &storage::Deleted, elapsed: Duration, ended_secs: i64) {
        self.swept_partially(d);
        self.sweeps.with_label_values(&["ok"]).inc();
        self.duration.observe(elapsed.as_secs_f64());
        self.last_success.set(ended_secs);
    }

    /// Rows a sweep deleted (also one that failed later).
    pub fn swept_partially(&self, d: &storage::Deleted) {
        let counts = [d.jobs, d.lines, d.deliveries, d.attempts, d.documents];
        for (kind, n) in KINDS.iter().zip(counts) {
            self.deleted.with_label_values(&[kind]).inc_by(n);
        }
    }

    /// A sweep failed after `elapsed`.
    pub fn failed(&self, elapsed: Duration) {
        self.sweeps.with_label_values(&["error"]).inc();
        self.duration.observe(elapsed.as_secs_f64());
    }
}
