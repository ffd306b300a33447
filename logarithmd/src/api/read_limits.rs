//! The per-request budget of long reads (raw downloads, `follow=true`, SSE streams, Loki
//! tails): lines read (`max_download_lines`) and time open (`max_stream_duration`), so one
//! reader cannot hold storage or a follow slot for ever. Reaching either ends the request
//! the way docs/api.md ("Read limits") says: a raw download with a last line naming the
//! limit and where to continue, an SSE stream with a `reconnect` event (its id is where
//! `Last-Event-ID` resumes), a Loki tail with a normal close frame.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::Config;

/// The first text of the last line a raw download ends with when it stops at a limit.
pub const TRUNCATED_MARKER: &str = "[logarithm] truncated:";

/// Which limit stopped a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `max_download_lines` lines were read.
    Lines(usize),
    /// The request was open `max_stream_duration`.
    Duration(Duration),
}

impl Limit {
    /// The configuration field that set it.
    pub fn name(&self) -> &'static str {
        match self {
            Limit::Lines(_) => "max_download_lines",
            Limit::Duration(_) => "max_stream_duration",
        }
    }

    /// The limit as the documents name it: `max_download_lines (1000000)`.
    pub fn describe(&self) -> String {
        match self {
            Limit::Lines(n) => format!("{} ({n})", self.name()),
            Limit::Duration(d) => format!(
                "{} ({})",
                self.name(),
                humantime_serde::re::humantime::format_duration(*d)
            ),
        }
    }

    /// The last line of a raw download stopped here: what stopped it, and the `after` that
    /// continues right after the last line sent (`follow` adds `&follow=true`).
    pub fn trailer(&self, after: u64, follow: bool) -> Vec<u8> {
        let follow = if follow { "&follow=true" } else { "" };
        format!(
            "{TRUNCATED_MARKER} {} reached; continue with ?after={after}{follow}\n",
            self.describe()
        )
        .into_bytes()
    }
}

/// One request's budget, started when the request is.
#[derive(Debug, Clone)]
pub struct ReadBudget {
    max_lines: usize,
    lines: usize,
    max_duration: Duration,
    deadline: Instant,
}

impl ReadBudget {
    pub fn new(config: &Config) -> ReadBudget {
        ReadBudget {
            max_lines: config.max_download_lines,
            lines: 0,
            max_duration: config.max_stream_duration,
            deadline: Instant::now() + config.max_stream_duration,
        }
    }

    /// When the request must end.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Counts one line read.
    pub fn count(&mut self) {
        self.lines += 1;
    }

    /// Counts `n` lines read at once (a page of a download).
    pub fn count_many(&mut self, n: usize) {
        self.lines = self.lines.saturating_add(n);
    }

    /// Lines left before the line limit.
    pub fn lines_left(&self) -> usize {
        self.max_lines.saturating_sub(self.lines)
    }

    /// The limit reached, if any: checked before each line is read.
    pub fn reached(&self) -> Option<Limit> {
        if self.lines >= self.max_lines {
            Some(Limit::Lines(self.max_lines))
        } else if Instant::now() >= self.deadline {
            Some(self.time_limit())
        } else {
            None
        }
    }

    /// The duration limit (for a wait cut short by [`deadline`](Self::deadline)).
    pub fn time_limit(&self) -> Limit {
        Limit::Duration(self.max_duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_and_trailer() {
        let config = Config {
            max_download_lines: 2,
            ..Config::default()
        };
        let mut b = ReadBudget::new(&config);
        assert_eq!(b.reached(), None);
        b.count();
        b.count();
        assert_eq!(b.reached(), Some(Limit::Lines(2)));
        let t = String::from_utf8(Limit::Lines(2).trailer(41, false)).unwrap_or_default();
        assert_eq!(
            t,
            "[logarithm] truncated: max_download_lines (2) reached; continue with ?after=41\n"
        );
        let t = Limit::Duration(Duration::from_secs(3600)).trailer(7, true);
        assert!(
            t.ends_with(b"max_stream_duration (1h) reached; continue with ?after=7&follow=true\n")
        );
    }
}
