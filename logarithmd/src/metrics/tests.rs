use std::time::Duration;

use super::*;

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn definitions_register_and_preinitialise() {
    let m = Metrics::new("sqlite");
    let text = m.render();
    assert_eq!(
        value(
            &text,
            &format!(
                "logarithmd_build_info{{storage_backend=\"sqlite\",version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "logarithmd_ingest_requests_total{status=\"503\"}"),
        Some(0.0)
    );
    assert_eq!(
        value(&text, "logarithmd_jobs_finished_total{result=\"failure\"}"),
        Some(0.0)
    );
    assert_eq!(
        value(
            &text,
            "logarithmd_webhook_deliveries_total{outcome=\"failed\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &text,
            "logarithmd_storage_write_errors_total{kind=\"unavailable\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        value(&text, "logarithmd_webhook_pending_deliveries"),
        Some(0.0)
    );
    // Every family has help text.
    for l in text.lines().filter(|l| l.starts_with("# HELP")) {
        assert!(l.split_whitespace().count() > 4, "no help: {l}");
    }
}

#[test]
fn two_instances_do_not_collide() {
    let a = Metrics::new("sqlite");
    let b = Metrics::new("mysql");
    a.ingest_lines.inc_by(3);
    assert_eq!(
        value(&a.render(), "logarithmd_ingest_lines_total"),
        Some(3.0)
    );
    assert_eq!(
        value(&b.render(), "logarithmd_ingest_lines_total"),
        Some(0.0)
    );
}

#[test]
fn events_move_counters() {
    let m = Metrics::new("sqlite");
    m.ingest_committed(
        &CommittedBatch {
            records: 5,
            stored: 4,
            duplicates: 1,
            line_bytes: 50,
            outputs: 2,
            co_results: 1,
        },
        Duration::from_millis(20),
    );
    m.job_finished("success", Some(Duration::from_secs(2)));
    m.webhook_delivery(WebhookOutcome::Retrying, Duration::from_millis(5));
    m.set_webhook_pending(7);
    m.http_answered("/api/v1/jobs/{id}", "GET", 404, Duration::from_millis(1));
    let t = m.render();
    assert_eq!(value(&t, "logarithmd_ingest_lines_total"), Some(4.0));
    assert_eq!(
        value(&t, "logarithmd_ingest_duplicate_lines_total"),
        Some(1.0)
    );
    assert_eq!(value(&t, "logarithmd_ingest_bytes_total"), Some(50.0));
    assert_eq!(value(&t, "logarithmd_ingest_batch_records_sum"), Some(5.0));
    assert_eq!(
        value(&t, "logarithmd_cout_outputs_total{kind=\"output\"}"),
        Some(2.0)
    );
    assert_eq!(
        value(&t, "logarithmd_jobs_finished_total{result=\"success\"}"),
        Some(1.0)
    );
    assert_eq!(
        value(
            &t,
            "logarithmd_job_duration_seconds_count{result=\"success\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &t,
            "logarithmd_webhook_deliveries_total{outcome=\"retrying\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&t, "logarithmd_webhook_pending_deliveries"),
        Some(7.0)
    );
    assert_eq!(
        value(
            &t,
            "logarithmd_http_requests_total{method=\"GET\",route=\"/api/v1/jobs/{id}\",status=\"404\"}"
        ),
        Some(1.0)
    );
}
