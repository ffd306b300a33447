//! A batch's JSON, written by hand where it costs: the records. `serde_json` escapes a
//! string a byte at a time through a table, which was a fifth of the agent's CPU on the
//! file sources (docs/performance.md). Here a line is checked eight bytes at a time and
//! copied whole when nothing in it needs escaping, which is nearly always.
//!
//! The output is byte for byte what `serde_json::to_writer` writes for the same
//! [`Batch`] (the tests compare both on arbitrary batches): the same fields, in the same
//! order, left out under the same conditions (`protocol`'s serde attributes), the same
//! escapes. The rare parts (agent, meta, exit, reasons) still go through `serde_json`.

use protocol::{Batch, ContainerSegment, Record};

/// Appends `batch` as JSON to `out`.
pub fn write_batch(batch: &Batch, out: &mut Vec<u8>) -> serde_json::Result<()> {
    out.extend_from_slice(b"{\"version\":");
    out.extend_from_slice(itoa::Buffer::new().format(batch.version).as_bytes());
    out.extend_from_slice(b",\"agent\":");
    serde_json::to_writer(&mut *out, &batch.agent)?;
    out.extend_from_slice(b",\"segments\":[");
    for (i, segment) in batch.segments.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_segment(segment, out)?;
    }
    out.extend_from_slice(b"]}");
    Ok(())
}

fn write_segment(s: &ContainerSegment, out: &mut Vec<u8>) -> serde_json::Result<()> {
    out.extend_from_slice(b"{\"container_id\":");
    write_str(s.container_id.as_bytes(), out);
    if let Some(meta) = &s.meta {
        out.extend_from_slice(b",\"meta\":");
        serde_json::to_writer(&mut *out, meta)?;
    }
    if !s.records.is_empty() {
        out.extend_from_slice(b",\"records\":[");
        for (i, r) in s.records.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_record(r, out);
        }
        out.push(b']');
    }
    if let Some(exit) = &s.exit {
        out.extend_from_slice(b",\"exit\":");
        serde_json::to_writer(&mut *out, exit)?;
    }
    if let Some(reason) = &s.logs_unavailable {
        out.extend_from_slice(b",\"logs_unavailable\":");
        write_str(reason.as_bytes(), out);
    }
    out.push(b'}');
    Ok(())
}

fn write_record(r: &Record, out: &mut Vec<u8>) {
    let mut n = itoa::Buffer::new();
    out.extend_from_slice(b"{\"seq\":");
    out.extend_from_slice(n.format(r.seq).as_bytes());
    out.extend_from_slice(b",\"ts\":");
    out.extend_from_slice(n.format(r.ts).as_bytes());
    out.extend_from_slice(b",\"stream\":\"");
    out.extend_from_slice(r.stream.as_str().as_bytes());
    out.push(b'"');
    if let Some(text) = &r.text {
        out.extend_from_slice(b",\"text\":");
        write_str(text.as_bytes(), out);
    }
    if let Some(b64) = &r.b64 {
        out.extend_from_slice(b",\"b64\":");
        write_str(b64.as_bytes(), out);
    }
    if r.cont {
        out.extend_from_slice(b",\"cont\":true");
    }
    out.push(b'}');
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether any of the 8 bytes of `w` needs escaping in a JSON string: is below 0x20, `"`
/// or `\`. Each `t - k·ONES & !t & HIGHS` is non-zero exactly when a byte of `t` is below
/// `k` (`k` ≤ 128), and a byte of `w` is `"` (`\`) where that byte of `w ^ '"'·ONES` is
/// 0; the xors keep each byte's high bit, so one `!w` serves all three.
fn word_needs_escape(w: u64) -> bool {
    let quote = w ^ (ONES * u64::from(b'"'));
    let backslash = w ^ (ONES * u64::from(b'\\'));
    (w.wrapping_sub(ONES * 0x20) | quote.wrapping_sub(ONES) | backslash.wrapping_sub(ONES))
        & !w
        & HIGHS
        != 0
}

/// `s` (UTF-8) as a JSON string with `serde_json`'s escapes: `\"`, `\\`, the short forms
/// `\b \f \n \r \t`, and `\u00XX` (lower-case hex) for the other control characters.
fn write_str(s: &[u8], out: &mut Vec<u8>) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    let mut clean = 0; // start of the bytes not yet copied
    let mut i = 0;
    while i < s.len() {
        if let Some(word) = s.get(i..i + 8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            if !word_needs_escape(u64::from_le_bytes(w)) {
                i += 8;
                continue;
            }
        }
        let b = s[i];
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            0x0c => b'f',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0x00..=0x1f => b'u',
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&s[clean..i]);
        out.push(b'\\');
        out.push(short);
        if short == b'u' {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        }
        i += 1;
        clean = i;
    }
    out.extend_from_slice(&s[clean..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use protocol::{Agent, ContainerExit, ContainerMeta, Stream};

    fn record() -> impl Strategy<Value = Record> {
        (
            any::<u64>(),
            any::<i64>(),
            any::<bool>(),
            prop_oneof![
                any::<String>().prop_map(|t| (Some(t), None)),
                "[ -~\\x00-\\x1f\"\\\\]{0,40}".prop_map(|t| (Some(t), None)),
                "[A-Za-z0-9+/=]{0,12}".prop_map(|b| (None, Some(b))),
            ],
            any::<bool>(),
        )
            .prop_map(|(seq, ts, err, (text, b64), cont)| Record {
                seq,
                ts,
                stream: if err { Stream::Stderr } else { Stream::Stdout },
                text,
                b64,
                cont,
            })
    }

    fn segment() -> impl Strategy<Value = ContainerSegment> {
        (
            any::<String>(),
            any::<bool>(),
            prop::collection::vec(record(), 0..6),
            proptest::option::of((any::<Option<i64>>(), any::<Option<String>>())),
            proptest::option::of(any::<String>()),
        )
            .prop_map(|(container_id, meta, records, exit, logs_unavailable)| {
                ContainerSegment {
                    meta: meta.then(|| ContainerMeta {
                        name: format!("n{container_id}"),
                        image: "img\n\"x\"".into(),
                        labels: [("io.containerops.flow".to_string(), "f\t1".to_string())].into(),
                        ..crate::pipeline::batcher::tests::meta()
                    }),
                    container_id,
                    records,
                    exit: exit.map(|(exit_code, reason)| ContainerExit {
                        exit_code,
                        finished_at: 7,
                        last_seq: 9,
                        restart_count: 1,
                        reason,
                    }),
                    logs_unavailable,
                }
            })
    }

    proptest! {
        /// The same bytes as serde_json, whatever the batch holds.
        #[test]
        fn writes_what_serde_json_writes(
            segments in prop::collection::vec(segment(), 0..4),
            node in any::<String>(),
        ) {
            let batch = Batch {
                version: 3,
                agent: Agent { id: "a\u{1}".into(), node },
                segments,
            };
            let mut fast = Vec::new();
            write_batch(&batch, &mut fast).unwrap();
            let want = serde_json::to_vec(&batch).unwrap();
            prop_assert_eq!(String::from_utf8_lossy(&fast), String::from_utf8_lossy(&want));
        }
    }

    proptest! {
        /// The word check says yes exactly when a byte needs escaping.
        #[test]
        fn the_word_check_is_exact(w in any::<u64>()) {
            let bytes = w.to_le_bytes();
            let want = bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
            prop_assert_eq!(word_needs_escape(w), want);
        }
    }

    #[test]
    fn escapes_like_serde_json_at_every_offset() {
        // Each special byte at every position of a string longer than a word, so both
        // the word check and the byte loop meet it.
        for special in (0u8..0x20).chain([b'"', b'\\', 0x7f]) {
            for at in 0..20 {
                let mut s = vec![b'a'; 20];
                s[at] = special;
                let s = String::from_utf8(s).unwrap();
                let mut fast = Vec::new();
                write_str(s.as_bytes(), &mut fast);
                assert_eq!(
                    fast,
                    serde_json::to_vec(&s).unwrap(),
                    "{special:#x} at {at}"
                );
            }
        }
    }
}
