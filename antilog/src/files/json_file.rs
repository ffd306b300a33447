//! Docker's `json-file` log format: one JSON object per line,
//! `{"log":"<content>","stream":"stdout|stderr"[,"attrs":{..}],"time":"<RFC 3339 nano>"}`.
//! `log` is one message of Docker's log copier: a whole line ending in `\n`, or a partial
//! (a 16 KiB piece of a longer line, or a run's last output) without it; joining is the
//! assemblers' job ([`crate::docker::frames`]), exactly as for the Docker API's stream.
//!
//! Docker writes the fields in that order, so [`parse`] reads them without building a
//! JSON value (the cost per line matters: see docs/performance.md) and falls back to
//! `serde_json` for anything else.

use std::borrow::Cow;

use protocol::Stream;
use serde::Deserialize;

use crate::docker::frames::parse_timestamp;

/// One json-file record: its stream and timestamp; the content went to the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    pub stream: Stream,
    pub ts: i64,
}

/// Parses one line (without its `\n`); the decoded `log` bytes replace `content`'s.
/// `None` if the line is not a json-file record.
pub fn parse(line: &[u8], content: &mut Vec<u8>) -> Option<Message> {
    content.clear();
    if let Some(m) = parse_fast(line, content) {
        return Some(m);
    }
    content.clear();
    parse_slow(line, content)
}

fn parse_fast(line: &[u8], content: &mut Vec<u8>) -> Option<Message> {
    let rest = line.strip_prefix(br#"{"log":""#)?;
    let used = unescape(rest, content)?;
    let rest = &rest[used..];
    let (stream, rest) = if let Some(r) = rest.strip_prefix(br#","stream":"stdout""#) {
        (Stream::Stdout, r)
    } else if let Some(r) = rest.strip_prefix(br#","stream":"stderr""#) {
        (Stream::Stderr, r)
    } else {
        return None;
    };
    let time = rest.strip_prefix(br#","time":""#)?.strip_suffix(b"\"}")?;
    let ts = parse_timestamp(time)?;
    Some(Message { stream, ts })
}

/// Decodes a JSON string body up to its closing quote into `out`; returns the bytes used
/// (closing quote included).
fn unescape(s: &[u8], out: &mut Vec<u8>) -> Option<usize> {
    let mut i = 0;
    loop {
        let run = memchr::memchr2(b'"', b'\\', &s[i..])?;
        out.extend_from_slice(&s[i..i + run]);
        i += run;
        if s[i] == b'"' {
            return Some(i + 1);
        }
        let esc = *s.get(i + 1)?;
        i += 2;
        match esc {
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'"' => out.push(b'"'),
            b'\\' => out.push(b'\\'),
            b'/' => out.push(b'/'),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'u' => {
                let hi = hex4(s.get(i..i + 4)?)?;
                i += 4;
                let c = if (0xD800..0xDC00).contains(&hi) {
                    // A surrogate pair, or (lone) U+FFFD as Go would decode it: leave
                    // that rare case to serde_json's exact rules.
                    let lo = s.get(i..i + 6)?.strip_prefix(b"\\u").and_then(hex4)?;
                    if !(0xDC00..0xE000).contains(&lo) {
                        return None;
                    }
                    i += 6;
                    char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00))?
                } else {
                    char::from_u32(hi)?
                };
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
            _ => return None,
        }
    }
}

fn hex4(s: &[u8]) -> Option<u32> {
    if s.len() != 4 {
        return None;
    }
    s.iter().try_fold(0u32, |acc, &b| {
        let d = (b as char).to_digit(16)?;
        Some(acc * 16 + d)
    })
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(default, borrow)]
    log: Cow<'a, str>,
    #[serde(default, borrow)]
    stream: Cow<'a, str>,
    #[serde(borrow)]
    time: Cow<'a, str>,
}

fn parse_slow(line: &[u8], content: &mut Vec<u8>) -> Option<Message> {
    let raw: Raw<'_> = serde_json::from_slice(line).ok()?;
    let stream = match &*raw.stream {
        "stdout" => Stream::Stdout,
        "stderr" => Stream::Stderr,
        _ => return None,
    };
    let ts = parse_timestamp(raw.time.as_bytes())?;
    content.extend_from_slice(raw.log.as_bytes());
    Some(Message { stream, ts })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TS: i64 = 1_795_777_825_123_456_789;

    fn parsed(line: &str) -> Option<(Stream, i64, Vec<u8>)> {
        let mut c = b"garbage".to_vec();
        parse(line.as_bytes(), &mut c).map(|m| (m.stream, m.ts, c))
    }

    #[test]
    fn reads_docker_records() {
        assert_eq!(
            parsed(
                r#"{"log":"hello \"x\"\\ \u003c\u00e9\ud83d\ude00\n","stream":"stdout","time":"2026-11-27T11:10:25.123456789Z"}"#
            ),
            Some((
                Stream::Stdout,
                TS,
                "hello \"x\"\\ <é😀\n".as_bytes().to_vec()
            ))
        );
        // A partial (no newline), stderr.
        assert_eq!(
            parsed(r#"{"log":"part","stream":"stderr","time":"2026-11-27T11:10:25.123456789Z"}"#),
            Some((Stream::Stderr, TS, b"part".to_vec()))
        );
        // With attrs (`--log-opt labels=...`), other field order, empty log: serde path.
        assert_eq!(
            parsed(
                r#"{"log":"a\n","stream":"stdout","attrs":{"k":"v"},"time":"2026-11-27T11:10:25.123456789Z"}"#
            ),
            Some((Stream::Stdout, TS, b"a\n".to_vec()))
        );
        assert_eq!(
            parsed(r#"{"stream":"stdout","time":"2026-11-27T11:10:25.123456789Z"}"#),
            Some((Stream::Stdout, TS, b"".to_vec()))
        );
    }

    #[test]
    fn rejects_what_is_not_a_record() {
        for bad in [
            "",
            "{",
            "not json",
            r#"{"log":"a\n","stream":"stdin","time":"2026-11-27T11:10:25Z"}"#,
            r#"{"log":"a\n","stream":"stdout","time":"yesterday"}"#,
            r#"{"log":"a\n","stream":"stdout"}"#,
            r#"{"log":"a\q","stream":"stdout","time":"2026-11-27T11:10:25Z"}"#,
        ] {
            assert_eq!(parsed(bad), None, "{bad}");
        }
    }

    proptest! {
        /// Whatever the content, the fast path decodes what serde_json's encoder wrote.
        #[test]
        fn decodes_what_json_encodes(s in any::<String>(), err in any::<bool>()) {
            let stream = if err { "stderr" } else { "stdout" };
            let line = format!(
                r#"{{"log":{},"stream":"{stream}","time":"2026-11-27T11:10:25.123456789Z"}}"#,
                serde_json::to_string(&s).unwrap()
            );
            let want = if err { Stream::Stderr } else { Stream::Stdout };
            prop_assert_eq!(parsed(&line), Some((want, TS, s.into_bytes())));
        }
    }
}
