//! `read_text`: a job's records as raw text pages, on both backends.

use super::*;
use storage::{TextPage, TextQuery};

/// Reads the whole job as text, `limit` records or `max_bytes` a page, the way the raw
/// download does (passing the open line on, ending it at the end).
async fn read_all_text(
    s: &dyn Storage,
    id: JobId,
    limit: u32,
    max_bytes: usize,
    max_joined: usize,
    stream: Option<Stream>,
) -> (Vec<u8>, usize) {
    let query = TextQuery {
        lines: LineQuery {
            job_id: id,
            after_seq: 0,
            limit,
            stream,
        },
        max_bytes,
        max_joined,
        open_len: None,
        until_seq: None,
    };
    read_all_text_of(s, query).await
}

/// Reads text pages from `query` on until one is not full; returns the text and how many
/// pages it took.
pub(super) async fn read_all_text_of(s: &dyn Storage, mut query: TextQuery) -> (Vec<u8>, usize) {
    let mut text = Vec::new();
    let mut pages = 0;
    loop {
        let page: TextPage = s.read_text(&query).await.expect("read_text");
        pages += 1;
        text.extend_from_slice(&page.text);
        let full = page.is_full(&query);
        if let Some(last) = page.last_seq {
            query.lines.after_seq = last;
        }
        query.open_len = page.open_len;
        if !full {
            if page.open_len.is_some() {
                text.push(b'\n');
            }
            return (text, pages);
        }
    }
}

pub async fn raw_text_pages_join_continuations(t: &Target) {
    let s = &*t.open().await;
    let c = cid("txt");
    let id = job_id_for_container(&c);
    let mut written = Vec::new();
    let mut expected = Vec::new();
    let mut expected_stderr = Vec::new();
    let mut seq = 0;
    let mut push = |stream: Stream, cont: bool, bytes: &[u8], written: &mut Vec<NewLine>| {
        seq += 1;
        let mut l = line(seq, stream, bytes);
        l.cont = cont;
        written.push(l);
    };
    for i in 0..300u32 {
        let body = format!("line {i} \u{1F600}");
        if i % 7 == 3 {
            // A line split into three records.
            push(Stream::Stdout, true, b"a-", &mut written);
            push(Stream::Stdout, true, body.as_bytes(), &mut written);
            push(Stream::Stdout, false, b"-z", &mut written);
            expected.extend_from_slice(format!("a-{body}-z\n").as_bytes());
        } else if i % 11 == 5 {
            push(Stream::Stderr, false, &[0xff, 0x00, b'e'], &mut written);
            expected.extend_from_slice(&[0xff, 0x00, b'e', b'\n']);
            expected_stderr.extend_from_slice(&[0xff, 0x00, b'e', b'\n']);
        } else {
            push(Stream::Stdout, false, body.as_bytes(), &mut written);
            expected.extend_from_slice(body.as_bytes());
            expected.push(b'\n');
        }
    }
    // A line that never ends: cut at max_joined (40 bytes) into lines of whole records.
    for _ in 0..10 {
        push(Stream::Stdout, true, b"0123456789", &mut written);
    }
    for _ in 0..2 {
        expected.extend_from_slice(&b"0123456789".repeat(4));
        expected.push(b'\n');
    }
    // The open tail at the end of what is stored ends the text.
    expected.extend_from_slice(&b"0123456789".repeat(2));
    expected.push(b'\n');

    let mut w = write(&c);
    w.meta = Some(meta("text", &[], 0));
    w.lines = written;
    apply(s, &batch(vec![w])).await;

    // One page, then small pages that cut lines between their records, then byte-bounded
    // pages: the same text every way.
    let (text, pages) = read_all_text(s, id, 10_000, 1 << 20, 40, None).await;
    assert_eq!(text, expected, "[{}] one page", t.name);
    assert_eq!(pages, 1);
    for limit in [1, 2, 7, 64] {
        let (text, _) = read_all_text(s, id, limit, 1 << 20, 40, None).await;
        assert_eq!(text, expected, "[{}] pages of {limit} records", t.name);
    }
    let (text, pages) = read_all_text(s, id, 10_000, 100, 40, None).await;
    assert_eq!(text, expected, "[{}] pages of about 100 bytes", t.name);
    assert!(pages > 20, "[{}] byte-bounded pages: {pages}", t.name);

    // One stream.
    let (text, _) = read_all_text(s, id, 5, 1 << 20, 40, Some(Stream::Stderr)).await;
    assert_eq!(text, expected_stderr, "[{}] stderr only", t.name);

    // Seq ranges (as a parallel download reads them): each range holds exactly its own
    // records, whatever the record cap, and joined in order they give the same text.
    let last = seq;
    for span in [1u64, 5, 64, 1000] {
        let mut text = Vec::new();
        let mut open_len = None;
        let mut after = 0;
        while after < last {
            let until = (after + span).min(last);
            let query = TextQuery {
                lines: LineQuery {
                    job_id: id,
                    after_seq: after,
                    limit: 10_000,
                    stream: None,
                },
                max_bytes: 1 << 20,
                max_joined: 40,
                open_len,
                until_seq: Some(until),
            };
            let page = s.read_text(&query).await.expect("read_text");
            assert_eq!(
                page.records as u64,
                until - after,
                "[{}] range ({after}, {until}]",
                t.name
            );
            assert_eq!(
                page.last_seq,
                Some(until),
                "[{}] range ends at {until}",
                t.name
            );
            text.extend_from_slice(&page.text);
            open_len = page.open_len;
            after = until;
        }
        if open_len.is_some() {
            text.push(b'\n');
        }
        assert_eq!(text, expected, "[{}] ranges of {span} seqs", t.name);
    }

    // An unknown job reads as nothing.
    let (text, _) = read_all_text(s, job_id_for_container("none"), 100, 1 << 20, 40, None).await;
    assert!(text.is_empty());
}
