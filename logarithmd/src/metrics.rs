//! logarithmd's Prometheus metrics: one [`Metrics`] per daemon, registered once in its own
//! [`Registry`] (not the process-global one, so several daemons in one test process do not
//! collide) and served as text on `GET /metrics`.
//!
//! Names follow Prometheus conventions: base units (`_seconds`, `_bytes`), `_total` on
//! counters. Labels have bounded values only (status codes, matched routes, error kinds,
//! results), never a container or job id. Label values that dashboards and alerts select
//! are created at zero on start, so their queries return series before the first event.
//!
//! Events are recorded through methods of [`events`] (`ingest_committed`,
//! `storage_write_failed`, `job_finished`, `webhook_delivery`, …) so each event is
//! counted in one place; this file registers the metrics.

use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Prefix of every metric name.
const NS: &str = "logarithmd";

/// HTTP status codes the ingest route answers with (created at zero on start).
pub const INGEST_STATUSES: &[u16] = &[200, 400, 401, 413, 415, 500, 503];

/// Every metric logarithmd exports.
pub struct Metrics {
    registry: Registry,
    /// `logarithmd_build_info{version, storage_backend}` = 1.
    pub build_info: IntGaugeVec,

    // --- ingest ---
    pub ingest_requests: IntCounterVec,
    pub ingest_lines: IntCounter,
    pub ingest_duplicate_lines: IntCounter,
    pub ingest_bytes: IntCounter,
    pub ingest_request_bytes: IntCounter,
    pub ingest_batch_records: Histogram,
    pub ingest_commit_latency: Histogram,
    pub ingest_queue_depth: IntGauge,
    pub ingest_in_flight: IntGauge,
    /// Ordered ingest: batches waiting for the batches they follow, and their decoded bytes
    /// (read at scrape time); those refused for want of room.
    pub ingest_order_waiting: IntGauge,
    pub ingest_order_waiting_bytes: IntGauge,
    pub ingest_order_refused: IntCounter,
    /// Open live follows (SSE streams, `follow=true`, Loki tails) by `kind` (job, run).
    pub live_followers: IntGaugeVec,

    // --- storage ---
    pub storage_write_duration: Histogram,
    pub storage_write_errors: IntCounterVec,

    // --- jobs ---
    pub jobs_started: IntCounter,
    pub jobs_finished: IntCounterVec,
    pub job_duration: HistogramVec,
    pub cout_outputs: IntCounterVec,

    // --- webhooks ---
    pub webhook_deliveries: IntCounterVec,
    pub webhook_delivery_duration: Histogram,
    pub webhook_pending: IntGauge,

    // --- service jobs ---
    pub services: crate::flows::service::metrics::ServiceMetrics,

    // --- retention ---
    pub retention: crate::retention::metrics::RetentionMetrics,

    // --- HTTP ---
    pub http_requests: IntCounterVec,
    pub http_request_duration: HistogramVec,
}

/// Latency buckets from 1 ms to ~65 s.
fn latency_buckets() -> Vec<f64> {
    exponential_buckets(0.001, 2.0, 17).unwrap_or_default()
}

pub(crate) fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace(NS)
}

fn hopts(name: &str, help: &str, buckets: Vec<f64>) -> HistogramOpts {
    HistogramOpts::new(name, help)
        .namespace(NS)
        .buckets(buckets)
}

impl Metrics {
    /// Creates and registers every metric. `storage_backend` (`sqlite`, `mysql`) goes on
    /// the build-info series.
    pub fn new(storage_backend: &str) -> Metrics {
        match Metrics::try_new(storage_backend) {
            Ok(m) => m,
            // The definitions are static; a failure is a programming error caught by the
            // unit tests below.
            Err(e) => panic!("invalid metric definitions: {e}"),
        }
    }

    fn try_new(storage_backend: &str) -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let r = &registry;
        fn reg<C: prometheus::core::Collector + Clone + 'static>(
            r: &Registry,
            c: C,
        ) -> Result<C, prometheus::Error> {
            r.register(Box::new(c.clone()))?;
            Ok(c)
        }

        let build_info = reg(
            r,
            IntGaugeVec::new(
                opts(
                    "build_info",
                    "Always 1; labels carry the running version and the storage backend.",
                ),
                &["version", "storage_backend"],
            )?,
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), storage_backend])
            .set(1);

        let ingest_requests = reg(
            r,
            IntCounterVec::new(
                opts(
                    "ingest_requests_total",
                    "Ingest requests answered, by HTTP status code (200 = batch committed; 503 = \
                     overloaded or storage unavailable, the agent retries).",
                ),
                &["status"],
            )?,
        )?;
        for s in INGEST_STATUSES {
            ingest_requests.with_label_values(&[&s.to_string()]);
        }
        let ingest_lines = reg(
            r,
            IntCounter::with_opts(opts(
                "ingest_lines_total",
                "Log records newly stored by committed ingest batches (records already stored \
                 are counted in logarithmd_ingest_duplicate_lines_total instead).",
            ))?,
        )?;
        let ingest_duplicate_lines = reg(
            r,
            IntCounter::with_opts(opts(
                "ingest_duplicate_lines_total",
                "Log records in committed ingest batches that were already stored (resent \
                 after a lost acknowledgement) and were left as they were.",
            ))?,
        )?;
        let ingest_bytes = reg(
            r,
            IntCounter::with_opts(opts(
                "ingest_bytes_total",
                "Bytes of log line content (decoded, without newlines) in committed ingest \
                 batches, duplicates included.",
            ))?,
        )?;
        let ingest_request_bytes = reg(
            r,
            IntCounter::with_opts(opts(
                "ingest_request_bytes_total",
                "Bytes of ingest request bodies as received (compressed), for every request \
                 whose body was read.",
            ))?,
        )?;
        let ingest_batch_records = reg(
            r,
            Histogram::with_opts(hopts(
                "ingest_batch_records",
                "Records per committed ingest batch.",
                exponential_buckets(1.0, 4.0, 9)?,
            ))?,
        )?;
        let ingest_commit_latency = reg(
            r,
            Histogram::with_opts(hopts(
                "ingest_commit_latency_seconds",
                "Time from an ingest request's arrival to its batch being committed to \
                 storage (waiting for a writer, reading, decoding and writing).",
                latency_buckets(),
            ))?,
        )?;
        let ingest_queue_depth = reg(
            r,
            IntGauge::with_opts(opts(
                "ingest_queue_depth",
                "Ingest batches waiting for a storage writer right now (beyond ingest_queue, \
                 ingest answers 503).",
            ))?,
        )?;
        let ingest_in_flight = reg(
            r,
            IntGauge::with_opts(opts(
                "ingest_in_flight",
                "Ingest batches holding a storage writer right now (at most \
                 ingest_concurrency).",
            ))?,
        )?;
        let ingest_order_waiting = reg(
            r,
            IntGauge::with_opts(opts(
                "ingest_order_waiting",
                "Ordered ingest: batches waiting for the batches they follow (or, once those \
                 are stored, for a writer).",
            ))?,
        )?;
        let ingest_order_waiting_bytes = reg(
            r,
            IntGauge::with_opts(opts(
                "ingest_order_waiting_bytes",
                "Decoded bytes of the batches in logarithmd_ingest_order_waiting (at most \
                 ingest_order_waiting_bytes).",
            ))?,
        )?;
        let ingest_order_refused = reg(
            r,
            IntCounter::with_opts(opts(
                "ingest_order_refused_total",
                "Ordered ingest: batches answered 503 (Retry-After) because the batches \
                 waiting filled ingest_order_waiting_bytes; the agent resends them.",
            ))?,
        )?;

        let live_followers = reg(
            r,
            IntGaugeVec::new(
                opts(
                    "live_followers",
                    "Live follows open right now, by kind: job (log streams, follow=true, \
                     Loki tails) and run (run streams).",
                ),
                &["kind"],
            )?,
        )?;
        for kind in ["job", "run"] {
            live_followers.with_label_values(&[kind]).set(0);
        }

        let storage_write_duration = reg(
            r,
            Histogram::with_opts(hopts(
                "storage_write_duration_seconds",
                "Time one storage write (one ingest batch, one transaction) took, successful \
                 or not.",
                latency_buckets(),
            ))?,
        )?;
        let storage_write_errors = reg(
            r,
            IntCounterVec::new(
                opts(
                    "storage_write_errors_total",
                    "Failed storage writes, by error kind (unavailable and timeout are \
                     transient: the agent retries; invalid, corrupt and internal are not).",
                ),
                &["kind"],
            )?,
        )?;
        for k in [
            storage::ErrorKind::Unavailable,
            storage::ErrorKind::Timeout,
            storage::ErrorKind::Invalid,
            storage::ErrorKind::Corrupt,
            storage::ErrorKind::Internal,
        ] {
            storage_write_errors.with_label_values(&[k.as_str()]);
        }

        let jobs_started = reg(
            r,
            IntCounter::with_opts(opts(
                "jobs_started_total",
                "Jobs (container runs) that started: new containers and restarts.",
            ))?,
        )?;
        let jobs_finished = reg(
            r,
            IntCounterVec::new(
                opts(
                    "jobs_finished_total",
                    "Jobs that reached a final status, by result (success or failure, from \
                     CO_RESULT and the exit code).",
                ),
                &["result"],
            )?,
        )?;
        let job_duration = reg(
            r,
            HistogramVec::new(
                hopts(
                    "job_duration_seconds",
                    "Run time of finished jobs (container start to exit), by result.",
                    exponential_buckets(0.25, 2.0, 16)?,
                ),
                &["result"],
            )?,
        )?;
        for result in ["success", "failure"] {
            jobs_finished.with_label_values(&[result]);
            job_duration.with_label_values(&[result]);
        }
        let cout_outputs = reg(
            r,
            IntCounterVec::new(
                opts(
                    "cout_outputs_total",
                    "`[COUT] KEY = VALUE` lines parsed from committed batches, by kind \
                     (co_result: the verdict line, output: any other key).",
                ),
                &["kind"],
            )?,
        )?;
        for k in ["co_result", "output"] {
            cout_outputs.with_label_values(&[k]);
        }

        let services = crate::flows::service::metrics::ServiceMetrics::register(r)?;
        let retention = crate::retention::metrics::RetentionMetrics::register(r)?;
        let webhook_deliveries = reg(
            r,
            IntCounterVec::new(
                opts(
                    "webhook_deliveries_total",
                    "Webhook delivery attempts, by outcome (delivered: 2xx; retrying: failed, \
                     will be retried; failed: failed with no retry left, dropped).",
                ),
                &["outcome"],
            )?,
        )?;
        for o in WebhookOutcome::ALL {
            webhook_deliveries.with_label_values(&[o.as_str()]);
        }
        let webhook_delivery_duration = reg(
            r,
            Histogram::with_opts(hopts(
                "webhook_delivery_duration_seconds",
                "Time one webhook delivery attempt took, from sending the request to the \
                 receiver's answer or the failure.",
                latency_buckets(),
            ))?,
        )?;
        let webhook_pending = reg(
            r,
            IntGauge::with_opts(opts(
                "webhook_pending_deliveries",
                "Webhook notifications waiting to be delivered (queued or between retries).",
            ))?,
        )?;

        let http_requests = reg(
            r,
            IntCounterVec::new(
                opts(
                    "http_requests_total",
                    "HTTP requests answered, by matched route (`unmatched` for unknown \
                     paths), method and status code.",
                ),
                &["route", "method", "status"],
            )?,
        )?;
        let http_request_duration = reg(
            r,
            HistogramVec::new(
                hopts(
                    "http_request_duration_seconds",
                    "Time from receiving an HTTP request to its response headers, by matched \
                     route and method.",
                    latency_buckets(),
                ),
                &["route", "method"],
            )?,
        )?;

        Ok(Metrics {
            registry,
            build_info,
            ingest_requests,
            ingest_lines,
            ingest_duplicate_lines,
            ingest_bytes,
            ingest_request_bytes,
            ingest_batch_records,
            ingest_commit_latency,
            ingest_queue_depth,
            ingest_in_flight,
            ingest_order_waiting,
            ingest_order_waiting_bytes,
            ingest_order_refused,
            live_followers,
            storage_write_duration,
            storage_write_errors,
            jobs_started,
            jobs_finished,
            job_duration,
            cout_outputs,
            webhook_deliveries,
            webhook_delivery_duration,
            webhook_pending,
            services,
            retention,
            http_requests,
            http_request_duration,
        })
    }

    /// The registry, for exposition.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

mod events;

pub use events::{CommittedBatch, GaugeGuard, WebhookOutcome};

#[cfg(test)]
mod tests;
