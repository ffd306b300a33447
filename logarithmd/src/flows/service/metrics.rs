//! Counters of service jobs, registered with logarithmd's other metrics
//! ([`crate::metrics::Metrics::services`]): one count per request attempt and per callback,
//! by outcome, so a service that fails or a flood of bad tokens shows on a dashboard.

use prometheus::{IntCounterVec, Registry};

use crate::metrics::opts;

/// Outcomes of one request attempt.
pub const CALL_OUTCOMES: [&str; 4] = ["answered", "accepted", "retrying", "failed"];
/// Outcomes of one callback.
pub const CALLBACK_OUTCOMES: [&str; 5] = ["recorded", "invalid", "unknown", "used", "expired"];

#[derive(Clone)]
pub struct ServiceMetrics {
    calls: IntCounterVec,
    callbacks: IntCounterVec,
}

impl ServiceMetrics {
    pub fn register(r: &Registry) -> Result<ServiceMetrics, prometheus::Error> {
        let calls = IntCounterVec::new(
            opts(
                "service_calls_total",
                "Service job request attempts, by outcome (answered: 2xx with the result; \
                 accepted: 202, a callback follows; retrying: failed, will be retried; \
                 failed: the job fails).",
            ),
            &["outcome"],
        )?;
        let callbacks = IntCounterVec::new(
            opts(
                "service_callbacks_total",
                "Callbacks of service jobs, by outcome (recorded; invalid: not a result; \
                 unknown: no such token; used: token used already; expired: the job ended).",
            ),
            &["outcome"],
        )?;
        r.register(Box::new(calls.clone()))?;
        r.register(Box::new(callbacks.clone()))?;
        for o in CALL_OUTCOMES {
            calls.with_label_values(&[o]);
        }
        for o in CALLBACK_OUTCOMES {
            callbacks.with_label_values(&[o]);
        }
        Ok(ServiceMetrics { calls, callbacks })
    }

    /// One request attempt ended so (one of [`CALL_OUTCOMES`]).
    pub fn call(&self, outcome: &str) {
        self.calls.with_label_values(&[outcome]).inc();
    }

    /// One callback ended so (one of [`CALLBACK_OUTCOMES`]).
    pub fn callback(&self, outcome: &str) {
        self.callbacks.with_label_values(&[outcome]).inc();
    }
}
