use super::*;

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn registers_and_preinitialises() {
    let m = Metrics::new();
    let t = m.render();
    assert_eq!(
        value(&t, "antilog_lines_read_total{stream=\"stderr\"}"),
        Some(0.0)
    );
    assert_eq!(
        value(&t, "antilog_batches_failed_total{reason=\"overloaded\"}"),
        Some(0.0)
    );
    assert_eq!(
        value(&t, "antilog_docker_errors_total{kind=\"permanent\"}"),
        Some(0.0)
    );
    assert_eq!(value(&t, "antilog_spool_bytes"), Some(0.0));
    assert_eq!(value(&t, "antilog_checkpoint_lag_seconds"), Some(0.0));
    assert_eq!(value(&t, "antilog_reading_paused"), Some(0.0));
    for l in t.lines().filter(|l| l.starts_with("# HELP")) {
        assert!(l.split_whitespace().count() > 4, "no help: {l}");
    }
}

#[test]
fn lag_follows_reads_and_acks() {
    let m = Metrics::new();
    let s = 1_000_000_000i64;
    assert_eq!(m.lag_seconds(100 * s), 0.0);
    m.record_read(Stream::Stdout, 5, 10 * s);
    m.record_read(Stream::Stderr, 5, 20 * s);
    // Nothing acknowledged yet: measured from the first line read.
    assert_eq!(m.lag_seconds(100 * s), 90.0);
    m.batch_shipped(1, 10 * s, Duration::from_millis(3));
    assert_eq!(m.lag_seconds(100 * s), 90.0);
    m.batch_shipped(1, 20 * s, Duration::from_millis(3));
    // Caught up.
    assert_eq!(m.lag_seconds(100 * s), 0.0);
    let t = m.render();
    assert_eq!(
        value(&t, "antilog_lines_read_total{stream=\"stdout\"}"),
        Some(1.0)
    );
    assert_eq!(value(&t, "antilog_records_shipped_total"), Some(2.0));
    assert_eq!(value(&t, "antilog_ship_duration_seconds_count"), Some(2.0));
}

#[test]
fn guards_move_gauges() {
    let m = Arc::new(Metrics::new());
    let f = m.following();
    let w = m.waiting_for_room();
    let t = m.render();
    assert_eq!(value(&t, "antilog_containers_followed"), Some(1.0));
    assert_eq!(value(&t, "antilog_reading_paused"), Some(1.0));
    drop((f, w));
    let t = m.render();
    assert_eq!(value(&t, "antilog_containers_followed"), Some(0.0));
    assert_eq!(value(&t, "antilog_reading_paused"), Some(0.0));
}
