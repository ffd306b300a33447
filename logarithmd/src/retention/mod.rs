//! Retention: a sweeper task that deletes expired jobs with everything they own, every
//! `[retention] interval`, through [`storage::retention::sweep`].
//!
//! - Rules, clock and metrics: [`config`] (`[retention]`), the `now` of an
//!   [`engine::cron::Clock`] (the system clock, or a file for tests), [`metrics`].
//! - One sweep runs at start, then one per interval; each logs one line at info with what
//!   it removed. A failed sweep is logged and counted; the next one finishes its work.
//! - Several replicas may sweep the same database at once: every delete step locks the
//!   job's row and re-checks that it is expired, so the sweeps take turns per job and
//!   delete each row once. There is no leader to elect.
//! - Shutdown cancels a sweep between (or inside) transactions; a transaction cut short
//!   is rolled back, and what remains of a job is deleted by the next sweep.

pub mod config;
pub mod metrics;

use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::cron::Clock;
use storage::{RetentionRules, Storage, SweepReport};
use tokio_util::sync::CancellationToken;

pub use config::RetentionConfig;

/// Runs sweeps until cancelled.
pub struct Sweeper {
    storage: Arc<dyn Storage>,
    rules: RetentionRules,
    interval: Duration,
    clock: Arc<dyn Clock>,
    metrics: metrics::RetentionMetrics,
}

impl Sweeper {
    /// A sweeper with the configured rules and clock (the system clock unless
    /// `clock_file` is set).
    pub fn new(
        storage: Arc<dyn Storage>,
        config: &RetentionConfig,
        metrics: metrics::RetentionMetrics,
    ) -> Sweeper {
        let clock: Arc<dyn Clock> = match &config.clock_file {
            Some(path) => {
                tracing::warn!(path = %path.display(), "retention.clock_file is set: the sweeper's time comes from a file (test only)");
                Arc::new(crate::flows::clock::FileClock::new(path.clone()))
            }
            None => Arc::new(engine::cron::SystemClock),
        };
        Sweeper::with_clock(storage, config.rules(), config.interval, clock, metrics)
    }

    /// A sweeper reading `now` from `clock` (tests simulate days with it).
    pub fn with_clock(
        storage: Arc<dyn Storage>,
        rules: RetentionRules,
        interval: Duration,
        clock: Arc<dyn Clock>,
        metrics: metrics::RetentionMetrics,
    ) -> Sweeper {
        Sweeper {
            storage,
            rules,
            interval,
            clock,
            metrics,
        }
    }

    /// Sweeps now and then every interval, until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.sweep_once() => {}
            }
        }
    }

    /// One sweep: deletes what the rules expire at the clock's `now`, records metrics and
    /// logs what it removed. Returns the report, or the error that stopped it.
    pub async fn sweep_once(&self) -> Result<SweepReport, storage::Error> {
        let started = Instant::now();
        let now = self.clock.now();
        let mut report = SweepReport::default();
        let result = storage::retention::sweep(&*self.storage, &self.rules, now, &mut report).await;
        let elapsed = started.elapsed();
        let d = report.deleted;
        match &result {
            Ok(()) => {
                self.metrics
                    .swept(&d, elapsed, protocol::now_ns() / 1_000_000_000);
                tracing::info!(
                    jobs = d.jobs,
                    lines = d.lines,
                    line_bytes = d.line_bytes,
                    deliveries = d.deliveries,
                    attempts = d.attempts,
                    documents = d.documents,
                    other_rows = d.other,
                    transactions = report.transactions,
                    stored_lines = report.totals.map(|t| t.lines),
                    stored_bytes = report.totals.map(|t| t.bytes),
                    elapsed_ms = elapsed.as_millis() as u64,
                    "retention sweep removed {} jobs and {} lines",
                    d.jobs,
                    d.lines,
                );
            }
            Err(e) => {
                self.metrics.failed(elapsed);
                self.metrics.swept_partially(&d);
                tracing::error!(
                    error = %e,
                    jobs = d.jobs,
                    lines = d.lines,
                    transactions = report.transactions,
                    "retention sweep failed; the next sweep finishes its work"
                );
            }
        }
        result.map(|()| report)
    }
}
