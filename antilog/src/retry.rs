//! The agent's one retry policy: exponential backoff with jitter, built on the `backon`
//! crate (as the daemon's retries are). Every retry loop (Docker reconnects, the event
//! stream, spool I/O, delivery) keeps its own schedule; delivery's comes from the
//! configuration (`ship_retry_initial`, `ship_retry_max`).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// A schedule: the first delay, doubling up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub initial: Duration,
    pub max: Duration,
}

/// The delays of one retry loop.
#[derive(Debug)]
pub struct Retry {
    schedule: Schedule,
    delays: ExponentialBackoff,
}

fn build(s: Schedule) -> ExponentialBackoff {
    // backon's jitter adds up to the current delay again: the max is halved so no delay
    // exceeds `max`, and the initial one so the first retry comes after about `initial`.
    ExponentialBuilder::new()
        .with_min_delay(s.initial / 2)
        .with_max_delay(s.max / 2)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

impl Retry {
    pub fn new(initial: Duration, max: Duration) -> Retry {
        let schedule = Schedule {
            initial,
            max: max.max(initial),
        };
        Retry {
            schedule,
            delays: build(schedule),
        }
    }

    /// The next delay: between half and all of the current step (so many agents retrying
    /// at once spread out, but never retry at once); the step doubles up to the max.
    pub fn next_delay(&mut self) -> Duration {
        self.delays
            .next()
            .unwrap_or(self.schedule.max)
            .min(self.schedule.max)
    }

    /// The longest delay, for failures that retrying soon will not fix.
    pub fn max(&self) -> Duration {
        self.schedule.max
    }

    /// Starts the schedule over (after a success).
    pub fn reset(&mut self) {
        self.delays = build(self.schedule);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_max_with_bounded_jitter() {
        let mut b = Retry::new(Duration::from_millis(100), Duration::from_secs(1));
        let bounds = [100, 200, 400, 800, 1000, 1000, 1000];
        for hi in bounds {
            let d = b.next_delay();
            assert!(
                d >= Duration::from_millis(hi / 2) && d <= Duration::from_millis(hi),
                "{d:?} not within [{}, {hi}] ms",
                hi / 2
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
        assert_eq!(b.max(), Duration::from_secs(1));
    }
}
