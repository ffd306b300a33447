//! Exponential backoff with jitter, shared by every retry loop (Docker reconnects, event
//! stream, HTTP delivery).

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            next: initial,
        }
    }

    /// The next delay: the current step with "equal jitter" (between half and all of it, so
    /// many agents retrying at once spread out but never retry immediately), then doubles.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = step / 2;
        half + rand::thread_rng().gen_range(Duration::ZERO..=half)
    }

    /// The longest delay, for failures that retrying soon will not fix.
    pub fn max(&self) -> Duration {
        self.max
    }

    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_max_with_bounded_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let mut steps = Vec::new();
        for _ in 0..6 {
            steps.push(b.next_delay());
        }
        let bounds = [100, 200, 400, 800, 1000, 1000];
        for (d, hi) in steps.iter().zip(bounds) {
            assert!(
                *d >= Duration::from_millis(hi / 2) && *d <= Duration::from_millis(hi),
                "{d:?}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
