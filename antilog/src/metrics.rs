//! antilog's Prometheus metrics: one [`Metrics`] per agent, registered once in its own
//! [`Registry`], served as text on `GET /metrics` at `metrics_listen` ([`serve`]).
//!
//! Names follow Prometheus conventions (base units, `_total` counters). Labels take bounded
//! values only (stream, reason, kind), never a container id. Label values dashboards and
//! alerts select are created at zero on start. Gauges that mirror live state (checkpoint
//! lag, reading paused) are computed when scraped.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::{
    exponential_buckets, Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use protocol::{now_ns, Stream};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::docker::Failure;
use crate::error::{Error, ErrorKind};

const NS: &str = "antilog";

/// Why a delivery attempt failed, as a bounded label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShipFailure {
    /// No connection, or the connection broke.
    Connect,
    /// No answer within `request_timeout` (or 408).
    Timeout,
    /// 429 or 503: logarithmd is overloaded or its storage is unavailable.
    Overloaded,
    /// Another 5xx.
    ServerError,
    /// A 4xx other than 408/429: logarithmd refuses the batch (token, size, format).
    Rejected,
}

impl ShipFailure {
    pub const ALL: [ShipFailure; 5] = [
        ShipFailure::Connect,
        ShipFailure::Timeout,
        ShipFailure::Overloaded,
        ShipFailure::ServerError,
        ShipFailure::Rejected,
    ];

    /// The reason for a non-2xx answer.
    pub fn of_status(status: u16) -> ShipFailure {
        match status {
            408 => ShipFailure::Timeout,
            429 | 503 => ShipFailure::Overloaded,
            500..=599 => ShipFailure::ServerError,
            _ => ShipFailure::Rejected,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ShipFailure::Connect => "connect",
            ShipFailure::Timeout => "timeout",
            ShipFailure::Overloaded => "overloaded",
            ShipFailure::ServerError => "server_error",
            ShipFailure::Rejected => "rejected",
        }
    }
}

/// The `event` label values of `antilog_api_events_total`.
pub const API_EVENTS: [&str; 7] = [
    "duplicate",
    "catch_up_read",
    "follow_started",
    "follow_dropped",
    "follow_gap",
    "first_follow",
    "first_follow_capped",
];

/// The `event` label values of `antilog_file_events_total`.
pub const FILE_EVENTS: [&str; 5] = [
    "malformed",
    "truncated",
    "lost",
    "cri_bad_tag",
    "cri_unparseable",
];

/// Every metric antilog exports.
pub struct Metrics {
    registry: Registry,
    pub build_info: IntGaugeVec,
    pub lines_read: IntCounterVec,
    pub bytes_read: IntCounterVec,
    /// `lines_read` and `bytes_read` for stdout and stderr, looked up once (counted per
    /// line: a label lookup each time would cost a hash and a lock).
    read_by_stream: [(IntCounter, IntCounter); 2],
    pub containers_followed: IntGauge,
    pub batches_shipped: IntCounter,
    pub records_shipped: IntCounter,
    pub batches_failed: IntCounterVec,
    pub ship_duration: Histogram,
    pub spool_bytes: IntGauge,
    pub spool_segments: IntGauge,
    pub spool_limit_bytes: IntGauge,
    pub reading_paused: IntGauge,
    pub checkpoint_lag: Gauge,
    pub docker_errors: IntCounterVec,
    pub dead_letter_entries: IntCounter,
    pub dead_letter_records: IntCounter,
    pub batches_in_flight: IntGauge,
    pub log_gaps: IntCounter,
    pub file_events: IntCounterVec,
    pub api_events: IntCounterVec,
    /// Followers waiting for room in the pipeline now.
    waiting_senders: AtomicUsize,
    /// Newest timestamp (ns) of a record read / of an acknowledged record; the first
    /// record's timestamp read since start.
    newest_read_ts: AtomicI64,
    newest_acked_ts: AtomicI64,
    first_read_ts: AtomicI64,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace(NS)
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        match Metrics::try_new() {
            Ok(m) => m,
            // The definitions are static; the unit tests below register them.
            Err(e) => panic!("invalid metric definitions: {e}"),
        }
    }

    fn try_new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        fn reg<C: prometheus::core::Collector + Clone + 'static>(
            r: &Registry,
            c: C,
        ) -> Result<C, prometheus::Error> {
            r.register(Box::new(c.clone()))?;
            Ok(c)
        }
        let r = &registry;
        let build_info = reg(
            r,
            IntGaugeVec::new(
                opts(
                    "build_info",
                    "Always 1; the label carries the running version.",
                ),
                &["version"],
            )?,
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let lines_read = reg(
            r,
            IntCounterVec::new(
                opts(
                    "lines_read_total",
                    "Log records read from Docker and handed to the pipeline, by stream (a \
                     line longer than max_line_bytes is several records).",
                ),
                &["stream"],
            )?,
        )?;
        let bytes_read = reg(
            r,
            IntCounterVec::new(
                opts(
                    "bytes_read_total",
                    "Bytes of log lines read from Docker and handed to the pipeline, by \
                     stream (without timestamps and newlines).",
                ),
                &["stream"],
            )?,
        )?;
        for s in ["stdout", "stderr"] {
            lines_read.with_label_values(&[s]);
            bytes_read.with_label_values(&[s]);
        }
        let containers_followed = reg(
            r,
            IntGauge::with_opts(opts(
                "containers_followed",
                "Containers whose logs this agent follows now.",
            ))?,
        )?;
        let batches_shipped = reg(
            r,
            IntCounter::with_opts(opts(
                "batches_shipped_total",
                "Batches acknowledged by logarithmd.",
            ))?,
        )?;
        let records_shipped = reg(
            r,
            IntCounter::with_opts(opts(
                "records_shipped_total",
                "Log records in batches acknowledged by logarithmd.",
            ))?,
        )?;
        let batches_failed = reg(
            r,
            IntCounterVec::new(
                opts(
                    "batches_failed_total",
                    "Failed batch delivery attempts, by reason (connect, timeout, \
                     overloaded, server_error, rejected); every failed batch is retried.",
                ),
                &["reason"],
            )?,
        )?;
        for f in ShipFailure::ALL {
            batches_failed.with_label_values(&[f.as_str()]);
        }
        let ship_duration = reg(
            r,
            Histogram::with_opts(
                HistogramOpts::new(
                    "ship_duration_seconds",
                    "Time from a batch being handed to the shipper to its acknowledgement, \
                     retries included.",
                )
                .namespace(NS)
                .buckets(exponential_buckets(0.001, 2.0, 18)?),
            )?,
        )?;
        let spool_bytes = reg(
            r,
            IntGauge::with_opts(opts(
                "spool_bytes",
                "Bytes of the on-disk spool's segment files: batches waiting for delivery \
                 (delivered ones are freed a segment at a time). Reading pauses when this \
                 reaches antilog_spool_limit_bytes.",
            ))?,
        )?;
        let spool_segments = reg(
            r,
            IntGauge::with_opts(opts(
                "spool_segments",
                "Segment files in the on-disk spool.",
            ))?,
        )?;
        let spool_limit_bytes = reg(
            r,
            IntGauge::with_opts(opts(
                "spool_limit_bytes",
                "Most bytes the on-disk spool may hold (0: no spool).",
            ))?,
        )?;
        let reading_paused = reg(
            r,
            IntGauge::with_opts(opts(
                "reading_paused",
                "1 while followers wait for room in the pipeline because delivery is behind \
                 (backpressure: Docker is not being read), else 0.",
            ))?,
        )?;
        let checkpoint_lag = reg(
            r,
            Gauge::with_opts(opts(
                "checkpoint_lag_seconds",
                "While lines read are waiting for acknowledgement: now minus the timestamp \
                 of the newest acknowledged line (or of the first line read since start, \
                 before any acknowledgement). 0 when everything read is acknowledged.",
            ))?,
        )?;
        let docker_errors = reg(
            r,
            IntCounterVec::new(
                opts(
                    "docker_errors_total",
                    "Failed Docker API calls, by kind (not_found: the container is gone; \
                     transient: retried; permanent: e.g. a log driver that cannot be read).",
                ),
                &["kind"],
            )?,
        )?;
        for k in ["not_found", "transient", "permanent"] {
            docker_errors.with_label_values(&[k]);
        }
        let dead_letter_entries = reg(
            r,
            IntCounter::with_opts(opts(
                "dead_letter_entries_total",
                "Parts of batches logarithmd refused for good (400, 413, or its non-transient \
                 500), isolated by splitting the batch and written to the dead-letter file \
                 (one log record, or one container's meta or exit, each). Everything else \
                 was delivered.",
            ))?,
        )?;
        let dead_letter_records = reg(
            r,
            IntCounter::with_opts(opts(
                "dead_letter_records_total",
                "Log records logarithmd refused for good and the agent wrote to the \
                 dead-letter file instead of storing them.",
            ))?,
        )?;
        let batches_in_flight = reg(
            r,
            IntGauge::with_opts(opts(
                "batches_in_flight",
                "Batches sent to logarithmd and not yet acknowledged (at most \
                 max_in_flight_batches).",
            ))?,
        )?;
        let log_gaps = reg(
            r,
            IntCounter::with_opts(opts(
                "log_gaps_total",
                "Resumes where Docker no longer held the last delivered line: the lines \
                 between it and the first line still there were rotated away unread (each \
                 reported on its job in logs_unavailable, with the time range).",
            ))?,
        )?;
        let file_events = reg(
            r,
            IntCounterVec::new(
                opts(
                    "file_events_total",
                    "Irregularities met reading log files, by event (malformed: a line that \
                     is not a record of the format, kept nowhere; truncated: a file shrank \
                     and was read again from its start; lost: files rotated away before \
                     they were read, so lines may be missing - also recorded on the job; \
                     cri_bad_tag: a CRI record whose tag is neither P nor F, kept as a whole \
                     line; cri_unparseable: a line of a CRI log that is not a record, kept as \
                     a whole stdout line).",
                ),
                &["event"],
            )?,
        )?;
        for k in FILE_EVENTS {
            file_events.with_label_values(&[k]);
        }
        let api_events = reg(
            r,
            IntCounterVec::new(
                opts(
                    "api_events_total",
                    "What the Docker API source (docker-api) did about Docker's follow stream \
                     on rotating logs, by event (duplicate: a line Docker sent twice in a \
                     row, dropped; catch_up_read: a read without follow of a rotating log; \
                     follow_started: a follow stream brought its first line, read again \
                     without follow; follow_dropped: a follow stream left because it fell \
                     too far behind; follow_gap: one left because it skipped lines at its \
                     start; first_follow: a follow from the start of a log nothing was read of; \
                     first_follow_capped: such a stream left after a quarter of max-size).",
                ),
                &["event"],
            )?,
        )?;
        for k in API_EVENTS {
            api_events.with_label_values(&[k]);
        }
        Ok(Metrics {
            registry,
            build_info,
            read_by_stream: [
                (
                    lines_read.with_label_values(&["stdout"]),
                    bytes_read.with_label_values(&["stdout"]),
                ),
                (
                    lines_read.with_label_values(&["stderr"]),
                    bytes_read.with_label_values(&["stderr"]),
                ),
            ],
            lines_read,
            bytes_read,
            containers_followed,
            batches_shipped,
            records_shipped,
            batches_failed,
            ship_duration,
            spool_bytes,
            spool_segments,
            spool_limit_bytes,
            reading_paused,
            checkpoint_lag,
            docker_errors,
            dead_letter_entries,
            dead_letter_records,
            batches_in_flight,
            log_gaps,
            file_events,
            api_events,
            waiting_senders: AtomicUsize::new(0),
            newest_read_ts: AtomicI64::new(0),
            newest_acked_ts: AtomicI64::new(0),
            first_read_ts: AtomicI64::new(0),
        })
    }

    /// Every metric in the Prometheus text format, live gauges updated first.
    pub fn render(&self) -> String {
        self.update_live(now_ns());
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }

    fn update_live(&self, now: i64) {
        self.reading_paused
            .set(i64::from(self.waiting_senders.load(Ordering::Acquire) > 0));
        self.checkpoint_lag.set(self.lag_seconds(now));
    }

    fn lag_seconds(&self, now: i64) -> f64 {
        let read = self.newest_read_ts.load(Ordering::Acquire);
        let acked = self.newest_acked_ts.load(Ordering::Acquire);
        if read == 0 || read <= acked {
            return 0.0;
        }
        let base = if acked > 0 {
            acked
        } else {
            self.first_read_ts.load(Ordering::Acquire)
        };
        (now.saturating_sub(base).max(0)) as f64 / 1e9
    }

    /// A record was read from Docker and handed to the pipeline.
    pub fn record_read(&self, stream: Stream, bytes: usize, ts: i64) {
        let (lines, bytes_total) = &self.read_by_stream[usize::from(stream == Stream::Stderr)];
        lines.inc();
        bytes_total.inc_by(bytes as u64);
        self.newest_read_ts.fetch_max(ts, Ordering::AcqRel);
        let _ = self
            .first_read_ts
            .compare_exchange(0, ts, Ordering::AcqRel, Ordering::Acquire);
    }

    /// A batch of `records` records, the newest at `newest_ts` (0 if none), was
    /// acknowledged `elapsed` after it was handed to the shipper.
    pub fn batch_shipped(&self, records: usize, newest_ts: i64, elapsed: Duration) {
        self.batches_shipped.inc();
        self.records_shipped.inc_by(records as u64);
        self.ship_duration.observe(elapsed.as_secs_f64());
        self.newest_acked_ts.fetch_max(newest_ts, Ordering::AcqRel);
    }

    /// A delivery attempt failed.
    pub fn ship_failed(&self, reason: ShipFailure) {
        self.batches_failed
            .with_label_values(&[reason.as_str()])
            .inc();
    }

    /// A Docker API call failed.
    pub fn docker_error(&self, f: &Failure) {
        let kind = match f {
            Failure::NotFound => "not_found",
            Failure::Transient(_) => "transient",
            Failure::Permanent(_) => "permanent",
        };
        self.docker_errors.with_label_values(&[kind]).inc();
    }

    /// One of [`API_EVENTS`].
    pub fn api_event(&self, event: &str) {
        self.api_events.with_label_values(&[event]).inc();
    }

    /// `n` file irregularities of one of [`FILE_EVENTS`].
    pub fn file_event(&self, event: &str, n: u64) {
        if n > 0 {
            self.file_events.with_label_values(&[event]).inc_by(n);
        }
    }

    /// Marks a follower as waiting for room in the pipeline until the guard drops.
    pub fn waiting_for_room(self: &Arc<Self>) -> WaitGuard {
        self.waiting_senders.fetch_add(1, Ordering::AcqRel);
        WaitGuard(self.clone())
    }

    /// Counts a followed container until the guard drops.
    pub fn following(&self) -> FollowGuard {
        self.containers_followed.inc();
        FollowGuard(self.containers_followed.clone())
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

/// See [`Metrics::waiting_for_room`].
pub struct WaitGuard(Arc<Metrics>);

impl Drop for WaitGuard {
    fn drop(&mut self) {
        self.0.waiting_senders.fetch_sub(1, Ordering::AcqRel);
    }
}

/// See [`Metrics::following`].
pub struct FollowGuard(IntGauge);

impl Drop for FollowGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Binds `addr` (failing start-up if it cannot) and serves `GET /metrics` until `stop` is
/// cancelled.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> Result<tokio::task::JoinHandle<()>, Error> {
    use axum::http::header;
    use axum::routing::get;
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        Error::with_source(
            ErrorKind::Config,
            format!("cannot listen on metrics_listen {addr}"),
            e,
        )
    })?;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let m = metrics.clone();
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    m.render(),
                )
            }
        }),
    );
    tracing::info!(%addr, "serving metrics");
    Ok(tokio::spawn(async move {
        let server = axum::serve(listener, app).with_graceful_shutdown(async move {
            stop.cancelled().await;
        });
        if let Err(e) = server.await {
            tracing::warn!(error = %e, "metrics server failed");
        }
    }))
}

#[cfg(test)]
mod tests;
