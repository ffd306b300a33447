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

protocol::crate_error!(
    /// Why [`crate::run`] failed.
    ""
);

/// An error with its causes ("error sending request: connection refused").
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
