//! The storage error: a kind callers branch on, a message, and the underlying cause.

use std::fmt;

/// What kind of failure, so callers can decide between retrying and giving up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The database cannot be reached or refused the connection; retry later.
    Unavailable,
    /// An operation did not finish in time; retry later.
    Timeout,
    /// The request itself is wrong (bad URL, a value the schema cannot hold); do not retry.
    Invalid,
    /// Stored data cannot be read back (corrupt row, unknown schema version).
    Corrupt,
    /// Anything else the database reported (a bug or an unexpected server error).
    Internal,
}

impl ErrorKind {
    /// Whether retrying the same operation later may succeed.
    pub fn is_transient(self) -> bool {
        matches!(self, ErrorKind::Unavailable | ErrorKind::Timeout)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Invalid => "invalid",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

protocol::crate_error!(
    /// A storage failure.
    "storage "
);

impl Error {
    pub fn is_transient(&self) -> bool {
        self.kind.is_transient()
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
