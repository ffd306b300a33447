//! The engine error: a kind callers branch on (the API maps kinds to status codes), a
//! message, and the underlying cause.

use std::fmt;

/// What kind of failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is wrong (an invalid flow file, a CO_DATA that is not text); do not retry.
    Invalid,
    /// No such flow or run.
    NotFound,
    /// The request does not fit the current state (approving a run that is not paused,
    /// a stored document changed under us).
    Conflict,
    /// The container runtime or the run store cannot be reached; retry later.
    Unavailable,
    /// An operation did not finish in time; retry later.
    Timeout,
    /// The engine is shutting down.
    Stopped,
    /// Anything else (a bug, an unexpected answer from the runtime).
    Internal,
}

impl ErrorKind {
    /// Whether retrying the same operation later may succeed.
    pub fn is_transient(self) -> bool {
        matches!(self, ErrorKind::Unavailable | ErrorKind::Timeout)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Invalid => "invalid",
            ErrorKind::NotFound => "not found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Stopped => "stopped",
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
    /// An engine failure.
    ""
);

impl Error {
    pub fn invalid(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Invalid, message)
    }

    pub fn not_found(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::NotFound, message)
    }

    pub fn conflict(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Conflict, message)
    }

    pub fn is_transient(&self) -> bool {
        self.kind.is_transient()
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
