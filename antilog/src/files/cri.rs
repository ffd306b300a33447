//! The CRI log format that the kubelet's container runtime (containerd, CRI-O) writes to
//! `/var/log/pods/<namespace>_<pod>_<uid>/<container>/<restart>.log`: one record per line,
//! `<RFC 3339 nano time> <stdout|stderr> <tags> <content>`.
//!
//! `<tags>` is a `:`-separated list whose first tag is `P` (a partial: the runtime cut a
//! long line into pieces of its buffer size, 16 KiB for containerd) or `F` (the record
//! that ends the line). The pieces are cut at byte boundaries, inside a UTF-8 character
//! too, so they are joined as bytes, never as text.
//!
//! - [`parse`]: one record, without allocation.
//! - [`CriDecoder`]: records into lines: `P` records joined with the `F` that ends them,
//!   per stream, through the same [`MuxAssembler`] as Docker's messages (so long lines are
//!   cut into bounded pieces exactly as on the other sources). Records with an unknown tag
//!   and lines that are not records are kept (never dropped), counted in
//!   `antilog_file_events_total` and logged.

use std::sync::Arc;

use protocol::Stream;
use tracing::warn;

use crate::docker::frames::{split_timestamp, MuxAssembler, Piece};
use crate::metrics::Metrics;

/// How a record relates to the line it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    /// `P`: the line goes on in the stream's next record.
    Partial,
    /// `F`: the record ends its line.
    Full,
    /// Any other first tag: not defined by the CRI; the record is taken as a whole line.
    Unknown,
}

/// One parsed record; `content` borrows from the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The runtime's timestamp, ns since the Unix epoch.
    pub ts: i64,
    pub stream: Stream,
    pub tag: Tag,
    /// The bytes of the record, without the line's `\n`.
    pub content: &'a [u8],
}

/// Parses one line of a CRI log file (without its `\n`); `None` if it is not a record.
pub fn parse(line: &[u8]) -> Option<Record<'_>> {
    let (ts, rest) = split_timestamp(line)?;
    let (stream, rest) = if let Some(r) = rest.strip_prefix(b"stdout ") {
        (Stream::Stdout, r)
    } else if let Some(r) = rest.strip_prefix(b"stderr ") {
        (Stream::Stderr, r)
    } else {
        return None;
    };
    // The tags end at the separating space; a record with empty content may lack it.
    let (tags, content) = match memchr::memchr(b' ', rest) {
        Some(sp) => (&rest[..sp], &rest[sp + 1..]),
        None => (rest, &rest[rest.len()..]),
    };
    let first = tags.split(|&b| b == b':').next().unwrap_or_default();
    let tag = match first {
        b"P" => Tag::Partial,
        b"F" => Tag::Full,
        b"" => return None,
        _ => Tag::Unknown,
    };
    Some(Record {
        ts,
        stream,
        tag,
        content,
    })
}

/// What went wrong with a line, for the metric and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Irregular {
    BadTag,
    Unparseable,
}

impl Irregular {
    /// The `event` label of `antilog_file_events_total`.
    fn event(self) -> &'static str {
        match self {
            Irregular::BadTag => "cri_bad_tag",
            Irregular::Unparseable => "cri_unparseable",
        }
    }
}

/// Turns one log's CRI records into line pieces, across its files (a line may begin in
/// a file and end in the next one after a rotation).
#[derive(Debug)]
pub struct CriDecoder {
    assembler: MuxAssembler,
    metrics: Arc<Metrics>,
    /// Names the log in warnings.
    source: String,
    last_ts: i64,
    /// Records whose first tag was neither `P` nor `F` (kept as whole lines).
    pub bad_tags: u64,
    /// Lines that are not records (kept as whole stdout lines, stamped with the previous
    /// record's time).
    pub unparseable: u64,
}

impl CriDecoder {
    /// `max_line_bytes` bounds a record's piece as on the other sources; `source` names
    /// the log in warnings.
    pub fn new(max_line_bytes: usize, metrics: Arc<Metrics>, source: String) -> CriDecoder {
        CriDecoder {
            assembler: MuxAssembler::new(max_line_bytes),
            metrics,
            source,
            last_ts: 0,
            bad_tags: 0,
            unparseable: 0,
        }
    }

    /// One line of the file (without its `\n`); completed pieces go to `out`.
    pub fn push_line(&mut self, line: &[u8], out: &mut Vec<Piece>) {
        match parse(line) {
            Some(r) => {
                self.last_ts = r.ts;
                if r.tag == Tag::Unknown {
                    self.irregular(Irregular::BadTag, line);
                }
                let terminated = r.tag != Tag::Partial;
                self.assembler
                    .push_record(r.stream, r.ts, r.content, terminated, out);
            }
            None => {
                // Not a record (a torn write, another writer): its bytes are kept, so
                // nothing the file holds is lost.
                self.irregular(Irregular::Unparseable, line);
                self.assembler
                    .push_record(Stream::Stdout, self.last_ts, line, true, out);
            }
        }
    }

    /// End of the log: a line left pending by a last `P` record becomes a line.
    pub fn flush(&mut self, out: &mut Vec<Piece>) {
        self.assembler.flush(out);
    }

    /// Drops pending partials (the log will be read again from a cut).
    pub fn clear(&mut self) {
        self.assembler.clear();
    }

    /// Counts an irregular line and logs it: the first one of each kind, then at every
    /// power of two, so a corrupt file cannot flood the log.
    fn irregular(&mut self, kind: Irregular, line: &[u8]) {
        let n = match kind {
            Irregular::BadTag => &mut self.bad_tags,
            Irregular::Unparseable => &mut self.unparseable,
        };
        *n += 1;
        let count = *n;
        self.metrics.file_event(kind.event(), 1);
        if count.is_power_of_two() {
            let head = String::from_utf8_lossy(&line[..line.len().min(80)]);
            warn!(
                log = %self.source,
                event = kind.event(),
                count,
                line = %head,
                "CRI log line is not a P or F record; kept as a whole line"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TS: i64 = 1_795_777_825_123_456_789;

    fn decoder(max: usize) -> CriDecoder {
        CriDecoder::new(max, Arc::new(Metrics::new()), "test".into())
    }

    /// Feeds lines; returns (stream, ts, bytes, cont) per piece.
    fn decode(d: &mut CriDecoder, lines: &[Vec<u8>]) -> Vec<(Stream, i64, Vec<u8>, bool)> {
        let mut out = Vec::new();
        for l in lines {
            d.push_line(l, &mut out);
        }
        out.into_iter()
            .map(|p| (p.stream, p.ts, p.bytes, !p.last))
            .collect()
    }

    fn rec(time: &str, stream: &str, tag: &str, content: &[u8]) -> Vec<u8> {
        let mut l = format!("{time} {stream} {tag} ").into_bytes();
        l.extend_from_slice(content);
        l
    }

    #[test]
    fn parses_records_as_runtimes_write_them() {
        let r = parse(b"2026-11-27T11:10:25.123456789Z stdout F hello  world ").unwrap();
        assert_eq!(
            r,
            Record {
                ts: TS,
                stream: Stream::Stdout,
                tag: Tag::Full,
                content: b"hello  world "
            }
        );
        // A local offset and trimmed zeros (Go's RFC3339Nano), stderr, a partial.
        let r = parse(b"2026-11-27T12:10:25.12345+01:00 stderr P x").unwrap();
        assert_eq!(
            (r.ts, r.stream, r.tag, r.content),
            (TS - 6789, Stream::Stderr, Tag::Partial, &b"x"[..])
        );
        // Empty content, with and without the separating space; more tags after the first.
        for l in [
            &b"2026-11-27T11:10:25.123456789Z stdout F "[..],
            b"2026-11-27T11:10:25.123456789Z stdout F",
        ] {
            assert_eq!(parse(l).unwrap().content, b"");
        }
        assert_eq!(
            parse(b"2026-11-27T11:10:25Z stdout P:x a").unwrap().tag,
            Tag::Partial
        );
        assert_eq!(
            parse(b"2026-11-27T11:10:25Z stdout X a").unwrap().tag,
            Tag::Unknown
        );
        for bad in [
            &b""[..],
            b"hello",
            b"2026-11-27T11:10:25Z stdin F a",
            b"2026-11-27T11:10:25Z stdout",
            b"2026-11-27T11:10:25Z stdout  a",
            b"yesterday stdout F a",
        ] {
            assert_eq!(parse(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn partials_join_byte_exact_even_inside_a_utf8_character() {
        // 16 KiB pieces as containerd cuts them: the cut falls inside a 2-byte 'é'.
        let line = format!("a{}", "é".repeat(20_000)).into_bytes();
        let t = "2026-11-27T11:10:25.123456789Z";
        let mut lines = Vec::new();
        let chunks: Vec<&[u8]> = line.chunks(16 * 1024).collect();
        assert!(
            std::str::from_utf8(chunks[0]).is_err(),
            "the cut splits a character"
        );
        for (i, c) in chunks.iter().enumerate() {
            let tag = if i + 1 == chunks.len() { "F" } else { "P" };
            lines.push(rec(t, "stdout", tag, c));
        }
        // A stderr line in the middle does not break the stdout line; it completes first.
        lines.insert(1, rec(t, "stderr", "F", b"err"));
        let mut d = decoder(1 << 20);
        let got = decode(&mut d, &lines);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], (Stream::Stderr, TS, b"err".to_vec(), false));
        let (stream, ts, ref bytes, cont) = got[1];
        assert_eq!(
            (stream, ts, bytes.len(), cont),
            (Stream::Stdout, TS, line.len(), false)
        );
        assert!(
            bytes == &line,
            "the joined line differs from the written one"
        );
        assert_eq!((d.bad_tags, d.unparseable), (0, 0));
    }

    #[test]
    fn long_lines_come_out_in_bounded_pieces() {
        let t = "2026-11-27T11:10:25.123456789Z";
        let body: Vec<u8> = (0..50_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let lines: Vec<Vec<u8>> = body
            .chunks(16 * 1024)
            .enumerate()
            .map(|(i, c)| rec(t, "stdout", if i < 3 { "P" } else { "F" }, c))
            .collect();
        let mut d = decoder(20_000);
        let got = decode(&mut d, &lines);
        let sizes: Vec<(usize, bool)> = got.iter().map(|p| (p.2.len(), p.3)).collect();
        assert_eq!(sizes, vec![(20_000, true), (20_000, true), (10_000, false)]);
        let joined: Vec<u8> = got.into_iter().flat_map(|p| p.2).collect();
        assert_eq!(joined, body);
    }

    #[test]
    fn bad_tags_and_unparseable_lines_are_kept_counted_and_reported() {
        let metrics = Arc::new(Metrics::new());
        let mut d = CriDecoder::new(1 << 20, metrics.clone(), "test".into());
        let t = "2026-11-27T11:10:25.123456789Z";
        let lines = vec![
            rec(t, "stdout", "F", b"one"),
            b"torn write".to_vec(),
            rec(t, "stderr", "Z", b"odd tag"),
            rec(t, "stdout", "F", b"two"),
        ];
        let got = decode(&mut d, &lines);
        assert_eq!(
            got,
            vec![
                (Stream::Stdout, TS, b"one".to_vec(), false),
                (Stream::Stdout, TS, b"torn write".to_vec(), false),
                (Stream::Stderr, TS, b"odd tag".to_vec(), false),
                (Stream::Stdout, TS, b"two".to_vec(), false),
            ]
        );
        assert_eq!((d.bad_tags, d.unparseable), (1, 1));
        let text = metrics.render();
        assert!(
            text.contains(r#"antilog_file_events_total{event="cri_bad_tag"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"antilog_file_events_total{event="cri_unparseable"} 1"#));
    }

    #[test]
    fn a_last_partial_is_a_line_at_the_end_of_the_log() {
        let t = "2026-11-27T11:10:25.123456789Z";
        let mut d = decoder(1 << 20);
        let got = decode(&mut d, &[rec(t, "stdout", "P", b"no end")]);
        assert!(got.is_empty());
        let mut out = Vec::new();
        d.flush(&mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].bytes.as_slice(), out[0].last),
            (&b"no end"[..], true)
        );
    }
}
