//! What logarithmd's answers mean for a batch: transient, refused for good, or a stop
//! (see the shipper's module docs), and the error text they carry.

use std::time::Duration;

use protocol::ErrorBody;
use reqwest::StatusCode;

/// Error bodies are read up to this size (they are small JSON documents).
pub(super) const ERROR_BODY_MAX: usize = 64 << 10;

/// How one attempt failed.
#[derive(Debug)]
pub(super) enum Failure {
    /// Retry with backoff; at least after `retry_after` if the server said so.
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// logarithmd refuses this batch for good: isolate the refused parts.
    Refused { status: u16, reason: String },
    /// No batch can get through (token, URL, version): retry at the longest interval.
    Stop(String),
}

/// What an error answer means for the batch (see the module docs).
pub(super) fn classify(
    status: StatusCode,
    code: Option<&str>,
    message: String,
    retry_after: Option<Duration>,
) -> Failure {
    let reason = format!("HTTP {status}: {message}");
    match status {
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND => {
            Failure::Stop(reason)
        }
        StatusCode::BAD_REQUEST if code == Some("unsupported_version") => Failure::Stop(reason),
        StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => Failure::Refused {
            status: status.as_u16(),
            reason,
        },
        // logarithmd's own 500 (code `internal`) is an error retrying does not fix; its
        // transient failures are 503. A 500 from anything else (a proxy) may pass.
        StatusCode::INTERNAL_SERVER_ERROR if code == Some("internal") => Failure::Refused {
            status: status.as_u16(),
            reason,
        },
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => Failure::Transient {
            reason,
            retry_after,
        },
        s if s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT => Failure::Transient {
            reason,
            retry_after: None,
        },
        // Other 4xx: nothing in the batch explains them; keep it and retry slowly.
        _ => Failure::Stop(reason),
    }
}

/// The server's error code and message (its JSON `ErrorBody`, else the raw text), bounded.
pub(super) async fn read_error(mut resp: reqwest::Response) -> (Option<String>, String) {
    let mut buf = Vec::new();
    while buf.len() < ERROR_BODY_MAX {
        match resp.chunk().await {
            Ok(Some(c)) => buf.extend_from_slice(&c[..c.len().min(ERROR_BODY_MAX - buf.len())]),
            Ok(None) => break,
            Err(e) => return (None, format!("(error body unreadable: {e})")),
        }
    }
    match serde_json::from_slice::<ErrorBody>(&buf) {
        Ok(b) => (
            Some(b.error.code.clone()),
            format!("{} ({})", b.error.message, b.error.code),
        ),
        Err(_) if buf.is_empty() => (None, "(empty body)".to_string()),
        Err(_) => (None, String::from_utf8_lossy(&buf).into_owned()),
    }
}
