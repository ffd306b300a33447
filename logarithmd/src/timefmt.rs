//! Times as the API, webhooks and run views show them: RFC 3339 with nanoseconds, from and
//! to nanoseconds since the epoch.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Formats ns since the epoch as RFC 3339 with nanoseconds (UTC); a time out of range is
/// written as its number.
pub fn rfc3339(ns: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ns.to_string())
}

/// Parses an RFC 3339 time to ns since the epoch; `None` if it is not one or is out of
/// range.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_nanoseconds() {
        let ns = 1_764_000_000_123_456_789;
        let text = rfc3339(ns);
        assert_eq!(text, "2025-11-24T16:00:00.123456789Z");
        assert_eq!(parse_rfc3339(&text), Some(ns));
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
