//! The library's one error type: a kind (what went wrong, for callers to act on), a message
//! for humans, and the underlying cause.

use std::fmt;

/// What kind of failure stopped the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The configuration is invalid (bad URL, bad regex, zero capacity, ...).
    Config,
    /// The Docker engine cannot be reached or answered something unusable at start.
    Docker,
    /// The Kubernetes API cannot be reached or its configuration read (source `cri`).
    Kubernetes,
    /// The checkpoint directory or file cannot be read or written.
    Checkpoint,
    /// The HTTP client cannot be built.
    Http,
    /// The disk spool (`spool_dir`) cannot be created, read or written.
    Spool,
    /// A task of the agent panicked or ended unexpectedly.
    Internal,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::Config => "configuration error",
            ErrorKind::Docker => "docker error",
            ErrorKind::Kubernetes => "kubernetes error",
            ErrorKind::Checkpoint => "checkpoint error",
            ErrorKind::Http => "http client error",
            ErrorKind::Spool => "spool error",
            ErrorKind::Internal => "internal error",
        })
    }
}

/// Why [`crate::run`] failed.
#[derive(Debug, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    pub fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        Error {
            kind,
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}
