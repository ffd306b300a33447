//! The cron scheduler: starts the runs of the flows' `cron` triggers.
//!
//! Every engine (every logarithmd replica) runs one. A tick's run gets an id derived from
//! the flow, the trigger and the tick ([`run_id`]), and a run is saved with
//! compare-and-set (it must not exist yet), so when several replicas see the same tick
//! only the first one to save the run starts it; the others get a conflict and move on.
//!
//! Each poll looks at the ticks since the previous poll and starts a run for the latest
//! one (ticks that pile up while the process stalled are coalesced into one run). At start
//! there is no previous poll: a trigger with `missed: run_once` starts a run for the
//! latest tick of the last [`LOOKBACK`] after the flow was registered (a no-op if a
//! replica already ran it); with `skip` it waits for the next tick.
//!
//! The time comes from a [`Clock`], so tests can move it.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeZone;
use tokio_util::sync::CancellationToken;

use crate::engine::{Engine, RunOptions};
use crate::error::ErrorKind;
use crate::flow::trigger::{Missed, Trigger, TriggerKind};
use crate::run::{Cause, Nanos};

/// How far back a `missed: run_once` trigger looks at start.
pub const LOOKBACK: Duration = Duration::from_secs(7 * 24 * 3600);
/// Most schedule steps examined per trigger and poll (bounds the work of a schedule that
/// ticks every second over a long window).
const MAX_STEPS: usize = 10_000;

/// Where the scheduler reads the time.
pub trait Clock: Send + Sync + 'static {
    /// Nanoseconds since the Unix epoch.
    fn now(&self) -> Nanos;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Nanos {
        protocol::now_ns()
    }
}

/// A stable 64-bit hash (FNV-1a), so every replica and every version derives the same id.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h ^= 0x1f;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        for b in p.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The run id of a trigger event (a cron tick, a webhook delivery): the same on every
/// replica, so the event starts one run.
pub fn run_id(parts: &[&str]) -> String {
    format!("{:016x}", fnv1a(parts))
}

/// The latest tick of a cron trigger in `(after, until]`, if any.
pub fn latest_tick(trigger: &Trigger, after: Nanos, until: Nanos) -> Option<Nanos> {
    let (cron, tz) = trigger.cron().ok()?;
    let mut at = tz.timestamp_nanos(after);
    let mut latest = None;
    for _ in 0..MAX_STEPS {
        let next = cron.find_next_occurrence(&at, false).ok()?;
        let ns = next.timestamp_nanos_opt()?;
        if ns > until {
            break;
        }
        latest = Some(ns);
        at = next;
    }
    latest
}

/// Starts cron runs until `shutdown`, polling every `poll`.
pub async fn run(
    engine: Engine,
    clock: Arc<dyn Clock>,
    poll: Duration,
    shutdown: CancellationToken,
) {
    let mut previous: Option<Nanos> = None;
    loop {
        let now = clock.now();
        match engine.list_flows().await {
            Ok(flows) => {
                for f in flows {
                    for (i, t) in f.flow.triggers.iter().enumerate() {
                        if t.kind != TriggerKind::Cron {
                            continue;
                        }
                        let after = match previous {
                            Some(p) => p.max(f.updated_at),
                            None if t.missed() == Missed::RunOnce => {
                                let back = i64::try_from(LOOKBACK.as_nanos()).unwrap_or(i64::MAX);
                                f.updated_at.max(now.saturating_sub(back))
                            }
                            None => continue,
                        };
                        if let Some(tick) = latest_tick(t, after, now) {
                            fire(&engine, &f.name, i, t, tick).await;
                        }
                    }
                }
                previous = Some(now);
            }
            Err(e) => tracing::warn!(error = %e, "cron: cannot list flows; will retry"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

async fn fire(engine: &Engine, flow: &str, index: usize, t: &Trigger, tick: Nanos) {
    let schedule = t.schedule.clone().unwrap_or_default();
    let id = run_id(&["cron", flow, &index.to_string(), &tick.to_string()]);
    let opts = RunOptions {
        id: Some(id.clone()),
        co_data: t.co_data.clone(),
        cause: Cause::Cron { schedule, tick },
        ..RunOptions::default()
    };
    match engine.start_run_with(flow, opts).await {
        Ok(_) => tracing::info!(flow, run = %id, tick, "cron trigger started a run"),
        Err(e) if e.kind() == ErrorKind::Conflict => {
            tracing::debug!(flow, run = %id, "cron tick already started elsewhere")
        }
        Err(e) => tracing::warn!(flow, run = %id, error = %e, "cron trigger could not start a run"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cron(schedule: &str, tz: Option<&str>) -> Trigger {
        Trigger {
            kind: TriggerKind::Cron,
            schedule: Some(schedule.into()),
            timezone: tz.map(str::to_owned),
            missed: None,
            co_data: None,
            secret: None,
            events: Vec::new(),
            branches: Vec::new(),
            mapping: Default::default(),
        }
    }

    const S: i64 = 1_000_000_000;

    #[test]
    fn ticks_in_a_time_zone() {
        // 2026-01-15 00:00:00 UTC.
        let day = 1_768_435_200 * S;
        let t = cron("0 3 * * *", Some("Europe/Berlin"));
        // 03:00 in Berlin (winter) is 02:00 UTC.
        assert_eq!(
            latest_tick(&t, day, day + 86_400 * S),
            Some(day + 2 * 3600 * S)
        );
        assert_eq!(
            latest_tick(&t, day + 2 * 3600 * S, day + 3 * 3600 * S),
            None
        );
        let utc = cron("0 3 * * *", None);
        assert_eq!(
            latest_tick(&utc, day, day + 86_400 * S),
            Some(day + 3 * 3600 * S)
        );
        // Several ticks in a window: the latest.
        let every = cron("*/5 * * * *", None);
        assert_eq!(
            latest_tick(&every, day, day + 17 * 60 * S),
            Some(day + 15 * 60 * S)
        );
    }

    #[test]
    fn ids_are_stable() {
        assert_eq!(
            run_id(&["cron", "f", "0", "1"]),
            run_id(&["cron", "f", "0", "1"])
        );
        assert_ne!(
            run_id(&["cron", "f", "0", "1"]),
            run_id(&["cron", "f", "01", ""])
        );
        assert_eq!(run_id(&["a"]).len(), 16);
    }
}
