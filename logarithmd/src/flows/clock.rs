//! The time the cron scheduler reads: the system clock, or (for tests that must move time,
//! `[engine] clock_file`) the content of a file: Unix seconds or an RFC 3339 time. An
//! unreadable file reads as the system time, logged once per change.

use std::path::PathBuf;
use std::sync::Mutex;

use engine::cron::{Clock, SystemClock};
use engine::run::Nanos;

pub struct FileClock {
    path: PathBuf,
    warned: Mutex<bool>,
}

impl FileClock {
    pub fn new(path: PathBuf) -> FileClock {
        FileClock {
            path,
            warned: Mutex::new(false),
        }
    }

    fn read(&self) -> Option<Nanos> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        let text = text.trim();
        if let Ok(secs) = text.parse::<i64>() {
            return secs.checked_mul(1_000_000_000);
        }
        crate::timefmt::parse_rfc3339(text)
    }
}

impl Clock for FileClock {
    fn now(&self) -> Nanos {
        let read = self.read();
        if let Ok(mut warned) = self.warned.lock() {
            if read.is_none() && !*warned {
                tracing::warn!(path = %self.path.display(), "engine.clock_file is unreadable; using the system clock");
            }
            *warned = read.is_none();
        }
        read.unwrap_or_else(|| SystemClock.now())
    }
}
