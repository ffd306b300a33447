//! Docker's RFC3339Nano log timestamps, parsed without allocation and with checked
//! arithmetic (shared by the API stream, json-file and CRI records, and inspect's times).

/// Longest timestamp (plus slack) we accept before the separating space; anything longer
/// is not a Docker timestamp.
pub const MAX_TIMESTAMP_LEN: usize = 40;

/// Parses an RFC3339 timestamp as Docker writes it (`2026-11-27T11:10:25.123456789Z`):
/// a fraction of 0 to 9 digits, and `Z` or a `+HH:MM`/`-HH:MM` offset. Returns ns since
/// the Unix epoch, or `None` if malformed or outside the `i64` nanosecond range.
pub fn parse_timestamp(s: &[u8]) -> Option<i64> {
    if s.len() < 20 {
        return None;
    }
    let year = digits(&s[0..4])?;
    let month = digits(&s[5..7])?;
    let day = digits(&s[8..10])?;
    let hour = digits(&s[11..13])?;
    let minute = digits(&s[14..16])?;
    let second = digits(&s[17..19])?;
    if s[4] != b'-'
        || s[7] != b'-'
        || !matches!(s[10], b'T' | b't')
        || s[13] != b':'
        || s[16] != b':'
    {
        return None;
    }
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut nanos: i64 = 0;
    if s.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < s.len() && s[i].is_ascii_digit() {
            i += 1;
        }
        let n = i - start;
        if n == 0 || n > 9 {
            return None;
        }
        nanos = digits(&s[start..i])? * 10i64.pow(9 - n as u32);
    }
    let offset_secs = match s.get(i) {
        Some(b'Z' | b'z') => {
            i += 1;
            0
        }
        Some(&sign @ (b'+' | b'-')) => {
            let off = s.get(i + 1..i + 6)?;
            if off[2] != b':' {
                return None;
            }
            let (oh, om) = (digits(&off[0..2])?, digits(&off[3..5])?);
            if oh > 23 || om > 59 {
                return None;
            }
            i += 6;
            let secs = oh * 3600 + om * 60;
            if sign == b'+' {
                secs
            } else {
                -secs
            }
        }
        _ => return None,
    };
    if i != s.len() {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// Parses ASCII digits (at most 18, so no overflow).
fn digits(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() > 18 {
        return None;
    }
    s.iter().try_fold(0i64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + i64::from(b - b'0'))
    })
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Splits `"<timestamp> <rest>"`; `None` if the message does not start with a timestamp.
pub fn split_timestamp(msg: &[u8]) -> Option<(i64, &[u8])> {
    let head = &msg[..msg.len().min(MAX_TIMESTAMP_LEN + 1)];
    let sp = head.iter().position(|&b| b == b' ')?;
    let ts = parse_timestamp(&msg[..sp])?;
    Some((ts, &msg[sp + 1..]))
}
