//! Loki's request parameters and its error answers.
//!
//! Times are accepted as Loki accepts them: an integer of up to 10 digits is seconds, a
//! longer one nanoseconds, a decimal number is seconds with a fraction, anything else must
//! be RFC 3339.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::logql::ParseError;

/// Default and largest `limit` (Loki's `max_entries_limit_per_query` default).
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 5000;
/// Default range when `start` is not given: one hour before `end`.
pub const DEFAULT_RANGE_NS: i64 = 3_600_000_000_000;

/// An error in Loki's shape: Grafana shows its `message`.
#[derive(Debug)]
pub struct LokiError {
    pub status: StatusCode,
    pub message: String,
}

impl LokiError {
    pub fn bad_request(message: impl Into<String>) -> LokiError {
        LokiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    /// A storage failure: transient ones are 503 (retry), others 500 with the details in
    /// the log only.
    pub fn storage(context: &str, err: &storage::Error) -> LokiError {
        if err.is_transient() {
            tracing::warn!(error = %err, "{context}");
            LokiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: "storage is unavailable; retry later".into(),
            }
        } else {
            tracing::error!(error = %err, "{context}");
            LokiError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message: "internal error; see the server log".into(),
            }
        }
    }
}

impl From<ParseError> for LokiError {
    fn from(e: ParseError) -> LokiError {
        LokiError::bad_request(e.0)
    }
}

impl IntoResponse for LokiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "status": "error",
            "code": self.status.as_u16(),
            "message": self.message,
        });
        (self.status, Json(body)).into_response()
    }
}

pub type LokiResult<T> = Result<T, LokiError>;

/// The decoded query string: every parameter, in order (`match[]` repeats).
pub struct Params(pub Vec<(String, String)>);

impl Params {
    pub fn parse(raw: Option<&str>) -> LokiResult<Params> {
        serde_urlencoded::from_str(raw.unwrap_or(""))
            .map(Params)
            .map_err(|e| LokiError::bad_request(format!("invalid query string: {e}")))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A time parameter, or `default`.
    pub fn time(&self, name: &str, default: i64) -> LokiResult<i64> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => parse_time(v).ok_or_else(|| {
                LokiError::bad_request(format!(
                    "invalid {name} {v:?}: expected nanoseconds, seconds or RFC 3339"
                ))
            }),
        }
    }

    /// `start` and `end` (default: the hour before now), checked.
    pub fn range(&self, now: i64, default_range: i64) -> LokiResult<(i64, i64)> {
        let end = self.time("end", now)?;
        let start = self.time("start", end.saturating_sub(default_range))?;
        if end < start {
            return Err(LokiError::bad_request("end must not be before start"));
        }
        Ok((start, end))
    }

    pub fn limit(&self) -> LokiResult<usize> {
        match self.get("limit") {
            None => Ok(DEFAULT_LIMIT),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| LokiError::bad_request(format!("limit must be 1 to {MAX_LIMIT}"))),
        }
    }

    pub fn direction(&self) -> LokiResult<Direction> {
        match self
            .get("direction")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("backward") => Ok(Direction::Backward),
            Some("forward") => Ok(Direction::Forward),
            Some(other) => Err(LokiError::bad_request(format!(
                "direction {other:?} is not forward or backward"
            ))),
        }
    }

    pub fn query(&self) -> LokiResult<&str> {
        self.get("query")
            .ok_or_else(|| LokiError::bad_request("the query parameter is required"))
    }
}

/// Order of the answer: `forward` oldest first, `backward` newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Backward,
}

/// Parses a time as Loki does (see the module doc), into nanoseconds since the epoch.
pub fn parse_time(v: &str) -> Option<i64> {
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        let n: i64 = v.parse().ok()?;
        return if v.len() <= 10 {
            n.checked_mul(1_000_000_000)
        } else {
            Some(n)
        };
    }
    if let Ok(f) = v.parse::<f64>() {
        if f.is_finite() && f.abs() < 9.2e9 {
            return Some((f * 1e9).round() as i64);
        }
        return None;
    }
    crate::timefmt::parse_rfc3339(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_as_loki_reads_them() {
        assert_eq!(parse_time("1700000000"), Some(1_700_000_000_000_000_000));
        assert_eq!(
            parse_time("1700000000123456789"),
            Some(1_700_000_000_123_456_789)
        );
        assert_eq!(parse_time("1700000000.5"), Some(1_700_000_000_500_000_000));
        assert_eq!(
            parse_time("2023-11-14T22:13:20.000000001Z"),
            Some(1_700_000_000_000_000_001)
        );
        assert_eq!(parse_time("4"), Some(4_000_000_000));
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(parse_time("NaN"), None);
    }
}
