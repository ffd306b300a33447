//! The events [`Metrics`] counts, one method each, and the types they take.

use std::time::Duration;

use prometheus::IntGauge;

use super::Metrics;

/// Outcomes of one webhook delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookOutcome {
    /// The receiver answered 2xx.
    Delivered,
    /// The attempt failed (network error, timeout, non-2xx) and will be retried.
    Retrying,
    /// The attempt failed and no retry is left (or the failure is permanent): the
    /// notification is dropped.
    Failed,
}

impl WebhookOutcome {
    pub const ALL: [WebhookOutcome; 3] = [
        WebhookOutcome::Delivered,
        WebhookOutcome::Retrying,
        WebhookOutcome::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WebhookOutcome::Delivered => "delivered",
            WebhookOutcome::Retrying => "retrying",
            WebhookOutcome::Failed => "failed",
        }
    }
}

impl Metrics {
    /// An ingest request was answered with `status`.
    pub fn ingest_answered(&self, status: u16) {
        self.ingest_requests
            .with_label_values(&[&status.to_string()])
            .inc();
    }

    /// A batch was committed.
    pub fn ingest_committed(&self, c: &CommittedBatch, since_arrival: Duration) {
        self.ingest_lines.inc_by(c.stored);
        self.ingest_duplicate_lines.inc_by(c.duplicates);
        self.ingest_bytes.inc_by(c.line_bytes);
        self.ingest_batch_records.observe(c.records as f64);
        self.ingest_commit_latency
            .observe(since_arrival.as_secs_f64());
        self.cout_outputs
            .with_label_values(&["output"])
            .inc_by(c.outputs);
        self.cout_outputs
            .with_label_values(&["co_result"])
            .inc_by(c.co_results);
    }

    /// A storage write failed.
    pub fn storage_write_failed(&self, err: &storage::Error) {
        self.storage_write_errors
            .with_label_values(&[err.kind().as_str()])
            .inc();
    }

    /// A job reached its final status: `result` is `success`, `failure`, or `unknown` when
    /// it could not be read back. `duration` is its run time, when known.
    pub fn job_finished(&self, result: &str, duration: Option<Duration>) {
        self.jobs_finished.with_label_values(&[result]).inc();
        if let Some(d) = duration {
            self.job_duration
                .with_label_values(&[result])
                .observe(d.as_secs_f64());
        }
    }

    /// One webhook delivery attempt ended with `outcome` after `elapsed`. For the webhook
    /// delivery code: call once per attempt.
    pub fn webhook_delivery(&self, outcome: WebhookOutcome, elapsed: Duration) {
        self.webhook_deliveries
            .with_label_values(&[outcome.as_str()])
            .inc();
        self.webhook_delivery_duration
            .observe(elapsed.as_secs_f64());
    }

    /// The number of webhook notifications waiting to be delivered is now `n`.
    pub fn set_webhook_pending(&self, n: usize) {
        self.webhook_pending
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// An HTTP request on `route` (a matched route pattern or `unmatched`) was answered.
    pub fn http_answered(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        self.http_requests
            .with_label_values(&[route, method, &status.to_string()])
            .inc();
        self.http_request_duration
            .with_label_values(&[route, method])
            .observe(elapsed.as_secs_f64());
    }
}

/// What one committed ingest batch contained, for [`Metrics::ingest_committed`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CommittedBatch {
    pub records: u64,
    pub stored: u64,
    pub duplicates: u64,
    pub line_bytes: u64,
    pub outputs: u64,
    pub co_results: u64,
}

/// Keeps a gauge incremented while alive (in-flight counts).
pub struct GaugeGuard(IntGauge);

impl GaugeGuard {
    pub fn new(g: &IntGauge) -> GaugeGuard {
        g.inc();
        GaugeGuard(g.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
