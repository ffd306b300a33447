use super::*;
use proptest::prelude::*;

fn rfc3339(s: &str) -> i64 {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap();
    i64::try_from(t.unix_timestamp_nanos()).unwrap()
}

#[test]
fn parses_docker_timestamps() {
    assert_eq!(
        parse_timestamp(b"2026-11-27T11:10:25.123456789Z"),
        Some(1_795_777_825_123_456_789)
    );
    assert_eq!(parse_timestamp(b"1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(
        parse_timestamp(b"1970-01-01T00:00:00.5Z"),
        Some(500_000_000)
    );
    assert_eq!(
        parse_timestamp(b"1970-01-01T01:00:00.000000001+01:00"),
        Some(1)
    );
    assert_eq!(parse_timestamp(b"1969-12-31T23:00:00-01:00"), Some(0));
    assert_eq!(
        parse_timestamp(b"1969-12-31T23:59:59.9Z"),
        Some(-100_000_000)
    );
    assert_eq!(
        parse_timestamp(b"2024-02-29T00:00:00Z"),
        Some(rfc3339("2024-02-29T00:00:00Z"))
    );
}

#[test]
fn rejects_malformed_timestamps() {
    for bad in [
        &b""[..],
        b"2026-11-27",
        b"2026-11-27T11:10:25",
        b"2026-11-27T11:10:25.Z",
        b"2026-11-27T11:10:25.1234567890Z",
        b"2026-13-27T11:10:25Z",
        b"2023-02-29T11:10:25Z",
        b"2026-11-27T24:10:25Z",
        b"2026-11-27T11:10:25+0100",
        b"2026-11-27T11:10:25Zx",
        b"2026-11-27 11:10:25Z",
        b"2026-1a-27T11:10:25Z",
        b"0001-01-01T00:00:00Z", // outside the i64 ns range
    ] {
        assert_eq!(
            parse_timestamp(bad),
            None,
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn splits_timestamp_from_message() {
    let (ts, rest) = split_timestamp(b"2026-11-27T11:10:25.000000001Z  hi \n").unwrap();
    assert_eq!(ts, rfc3339("2026-11-27T11:10:25.000000001Z"));
    assert_eq!(rest, b" hi \n");
    assert_eq!(split_timestamp(b"no timestamp here\n"), None);
}

/// Joins pieces back into lines, per stream, checking the piece invariants.
fn join(pieces: &[Piece], max: usize) -> Vec<(Stream, i64, Vec<u8>)> {
    let mut lines = Vec::new();
    let mut open: [Option<(i64, Vec<u8>)>; 2] = [None, None];
    let mut continuing: Option<Stream> = None;
    for p in pieces {
        if let Some(s) = continuing {
            assert_eq!(
                p.stream, s,
                "a continued piece is followed by its own stream"
            );
        }
        continuing = (!p.last).then_some(p.stream);
        let slot = &mut open[usize::from(p.stream.as_u8() - 1)];
        assert_eq!(p.first, slot.is_none(), "first flag of {p:?}");
        assert!(p.bytes.len() <= max);
        if !p.last {
            assert_eq!(p.bytes.len(), max, "continued pieces are full");
        }
        let (ts, buf) = slot.get_or_insert_with(|| (p.ts, Vec::new()));
        assert_eq!(*ts, p.ts);
        buf.extend_from_slice(&p.bytes);
        if p.last {
            let (ts, buf) = slot.take().unwrap();
            lines.push((p.stream, ts, buf));
        }
    }
    assert!(open.iter().all(Option::is_none));
    lines
}

fn ts_text(ts: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts)).unwrap();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond()
    )
}

/// Docker's copier: a line's content cut into `partial`-byte messages, the last one
/// (shorter than `partial`) carrying the '\n'; `terminated: false` is a run's last
/// output without newline. With `local`, the last piece of a split line has no '\n'
/// (what the `local` driver returns).
fn docker_messages(content: &[u8], partial: usize, terminated: bool, local: bool) -> Vec<Vec<u8>> {
    let mut msgs: Vec<Vec<u8>> = content.chunks(partial).map(<[u8]>::to_vec).collect();
    if terminated {
        let split = content.len() >= partial;
        match msgs.last_mut() {
            Some(last) if local && split && last.len() == partial => msgs.push(Vec::new()),
            Some(_) if local && split => {}
            Some(last) if last.len() < partial => last.push(b'\n'),
            _ => msgs.push(b"\n".to_vec()),
        }
    }
    msgs
}

fn line_bytes(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => proptest::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..64),
        1 => (0..max_len, any::<u64>()).prop_map(|(n, mut x)| {
            // Long lines from a cheap PRNG (xorshift), '\n' mapped away.
            (0..n).map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                match x as u8 { b'\n' => b'n', b => b }
            }).collect()
        }),
    ]
}

#[test]
fn mux_joins_partials_and_flushes_at_eof() {
    // Partial size 2 instead of 16384, to keep the example small.
    let mut a = MuxAssembler::with_partial_size(1 << 20, 2);
    let mut out = Vec::new();
    a.push_frame(
        Stream::Stdout,
        b"2026-11-27T11:10:25.000000001Z ab",
        &mut out,
    );
    a.push_frame(
        Stream::Stderr,
        b"2026-11-27T11:10:25.000000002Z err\n",
        &mut out,
    );
    a.push_frame(
        Stream::Stdout,
        b"2026-11-27T11:10:25.000000003Z cd\n",
        &mut out,
    );
    a.push_frame(
        Stream::Stdout,
        b"2026-11-27T11:10:25.000000004Z \n",
        &mut out,
    );
    // `local` driver: the last piece of a split line comes without '\n'.
    a.push_frame(
        Stream::Stdout,
        b"2026-11-27T11:10:25.000000005Z xy",
        &mut out,
    );
    a.push_frame(
        Stream::Stdout,
        b"2026-11-27T11:10:25.000000005Z z",
        &mut out,
    );
    a.push_frame(
        Stream::Stdout,
        b"2026-11-27T11:10:25.000000006Z \r\n",
        &mut out,
    );
    a.push_frame(
        Stream::Stdout,
        b"2026-11-27T11:10:25.000000007Z ta",
        &mut out,
    );
    assert!(a.pending());
    a.flush(&mut out);
    assert!(!a.pending());
    let base = rfc3339("2026-11-27T11:10:25Z");
    assert_eq!(
        join(&out, 1 << 20),
        vec![
            (Stream::Stderr, base + 2, b"err".to_vec()),
            (Stream::Stdout, base + 1, b"abcd".to_vec()),
            (Stream::Stdout, base + 4, b"".to_vec()),
            (Stream::Stdout, base + 5, b"xyz".to_vec()),
            (Stream::Stdout, base + 6, b"\r".to_vec()),
            (Stream::Stdout, base + 7, b"ta".to_vec()),
        ]
    );
    // Cuts: not while stdout's "ab" was pending; after every other line.
    let cuts: Vec<bool> = out.iter().map(|p| p.cut).collect();
    assert_eq!(cuts, vec![false, true, true, true, true, true]);
    assert_eq!(a.malformed, 0);
}

#[test]
fn long_lines_stay_contiguous_and_are_cut_short_when_too_much_waits() {
    let mut a = MuxAssembler::with_partial_size(4, 8);
    let mut out = Vec::new();
    a.push_frame(Stream::Stdout, b"1970-01-01T00:00:01Z 01234567", &mut out);
    a.push_frame(Stream::Stderr, b"1970-01-01T00:00:02Z e\n", &mut out);
    a.push_frame(Stream::Stdout, b"1970-01-01T00:00:03Z 89\n", &mut out);
    let got: Vec<(Stream, &[u8])> = out.iter().map(|p| (p.stream, &p.bytes[..])).collect();
    assert_eq!(
        got,
        vec![
            (Stream::Stdout, &b"0123"[..]),
            (Stream::Stdout, b"4567"),
            (Stream::Stdout, b"89"),
            (Stream::Stderr, b"e"),
        ]
    );
    // A line that never ends while the other stream keeps logging: after 1 MiB waits,
    // the long line is cut so memory stays bounded.
    let mut out = Vec::new();
    a.push_frame(Stream::Stdout, b"1970-01-01T00:00:04Z 01234567", &mut out);
    let line = [b"1970-01-01T00:00:05Z ".as_slice(), &[b'e'; 1000], b"\n"].concat();
    for _ in 0..1100 {
        a.push_frame(Stream::Stderr, &line, &mut out);
    }
    assert_eq!(a.forced_breaks, 1);
    assert!(out.len() > 1000);
    assert!(a.held.is_empty());
    join(&out, 4);
}

#[test]
fn max_line_bytes_splits_into_full_pieces() {
    let mut a = MuxAssembler::new(4);
    let mut out = Vec::new();
    a.push_frame(
        Stream::Stdout,
        b"1970-01-01T00:00:01Z 0123456789\n",
        &mut out,
    );
    a.push_frame(Stream::Stdout, b"1970-01-01T00:00:02Z 01234567\n", &mut out);
    a.push_frame(Stream::Stdout, b"1970-01-01T00:00:03Z \n", &mut out);
    let got: Vec<(&[u8], bool, bool)> = out
        .iter()
        .map(|p| (&p.bytes[..], p.first, p.last))
        .collect();
    assert_eq!(
        got,
        vec![
            (&b"0123"[..], true, false),
            (b"4567", false, false),
            (b"89", false, true),
            (b"0123", true, false),
            (b"4567", false, true),
            (b"", true, true),
        ]
    );
}

#[test]
fn tty_splits_messages_and_strips_one_cr() {
    let mut a = TtyAssembler::with_partial_size(1 << 20, 4);
    let mut out = Vec::new();
    let stream = b"1970-01-01T00:00:01Z a\r\r\n1970-01-01T00:00:02Z abcd1970-01-01T00:00:03Z e\r\n1970-01-01T00:00:04Z xy";
    for b in stream.chunks(3) {
        a.push_chunk(b, &mut out);
    }
    a.flush(&mut out);
    assert_eq!(
        join(&out, 1 << 20),
        vec![
            (Stream::Stdout, 1_000_000_000, b"a\r".to_vec()),
            (Stream::Stdout, 2_000_000_000, b"abcde".to_vec()),
            (Stream::Stdout, 4_000_000_000, b"xy".to_vec()),
        ]
    );
    assert_eq!(a.malformed, 0);
}

#[test]
fn tty_keeps_bytes_of_a_message_without_timestamp() {
    let mut a = TtyAssembler::new(1 << 20);
    let mut out = Vec::new();
    a.push_chunk(
        b"1970-01-01T00:00:01Z a\nnot a timestamp\nhi there\n",
        &mut out,
    );
    a.flush(&mut out);
    let lines: Vec<Vec<u8>> = join(&out, 1 << 20).into_iter().map(|l| l.2).collect();
    assert_eq!(
        lines,
        vec![
            b"a".to_vec(),
            b"not a timestamp".to_vec(),
            b"hi there".to_vec()
        ]
    );
    assert_eq!(a.malformed, 2);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn timestamp_matches_rfc3339_oracle(
        secs in -2_000_000_000i64..8_000_000_000i64,
        nanos in 0u32..1_000_000_000,
        digits in 0usize..=9,
        offset_min in -1439i32..=1439,
    ) {
        let t = time::OffsetDateTime::from_unix_timestamp(secs).unwrap()
            + time::Duration::nanoseconds(i64::from(nanos));
        let off = time::UtcOffset::from_whole_seconds(offset_min * 60).unwrap();
        let t = t.to_offset(off);
        let frac = format!("{:09}", t.nanosecond());
        let frac = if digits == 0 { String::new() } else { format!(".{}", &frac[..digits]) };
        let offs = if offset_min == 0 { "Z".to_string() } else {
            let a = offset_min.abs();
            format!("{}{:02}:{:02}", if offset_min < 0 { '-' } else { '+' }, a / 60, a % 60)
        };
        let s = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{frac}{offs}",
            t.year(), u8::from(t.month()), t.day(), t.hour(), t.minute(), t.second()
        );
        prop_assert_eq!(parse_timestamp(s.as_bytes()), Some(rfc3339(&s)), "{}", s);
    }

    #[test]
    fn mux_merge_is_byte_exact(
        lines in proptest::collection::vec((any::<bool>(), line_bytes(40_000)), 0..12),
        last_unterminated in any::<bool>(),
        max in prop_oneof![Just(1usize << 20), 1usize..50_000],
        pick in proptest::collection::vec(any::<bool>(), 0..200),
        local in any::<bool>(),
    ) {
        // Per-stream message queues, interleaved as two concurrent copiers would.
        let mut queues: [Vec<(i64, Vec<u8>)>; 2] = [Vec::new(), Vec::new()];
        let mut expected: [Vec<(i64, Vec<u8>)>; 2] = [Vec::new(), Vec::new()];
        let mut ts = 1_700_000_000_000_000_000i64;
        let n = lines.len();
        for (i, (err, line)) in lines.into_iter().enumerate() {
            let q = usize::from(err);
            let terminated = !(last_unterminated && i + 1 == n);
            let msgs = docker_messages(&line, DOCKER_PARTIAL_SIZE, terminated, local);
            if msgs.is_empty() { continue; }
            expected[q].push((ts + 1, line));
            for m in msgs { ts += 1; queues[q].push((ts, m)); }
        }
        let mut a = MuxAssembler::new(max);
        let mut out = Vec::new();
        let (mut i, mut p) = ([0usize, 0usize], pick.into_iter());
        while i[0] < queues[0].len() || i[1] < queues[1].len() {
            let q = if i[0] == queues[0].len() { 1 } else if i[1] == queues[1].len() { 0 } else { usize::from(p.next().unwrap_or(false)) };
            let (ts, m) = &queues[q][i[q]];
            i[q] += 1;
            let mut frame = ts_text(*ts).into_bytes();
            frame.push(b' ');
            frame.extend_from_slice(m);
            a.push_frame(if q == 0 { Stream::Stdout } else { Stream::Stderr }, &frame, &mut out);
        }
        a.flush(&mut out);
        let got = join(&out, max);
        for (q, stream) in [(0, Stream::Stdout), (1, Stream::Stderr)] {
            let mine: Vec<(i64, Vec<u8>)> = got.iter().filter(|l| l.0 == stream).map(|l| (l.1, l.2.clone())).collect();
            prop_assert_eq!(&mine, &expected[q]);
        }
        prop_assert_eq!(a.malformed, 0);
    }

    #[test]
    fn tty_split_is_byte_exact(
        lines in proptest::collection::vec(line_bytes(40_000), 0..10),
        last_unterminated in any::<bool>(),
        small_partial in any::<bool>(),
        max in prop_oneof![Just(1usize << 20), 1usize..50_000],
        cuts in proptest::collection::vec(1usize..70_000, 1..40),
    ) {
        let partial = if small_partial { 7 } else { DOCKER_PARTIAL_SIZE };
        let mut raw = Vec::new();
        let mut expected = Vec::new();
        let mut ts = 1_700_000_000_000_000_000i64;
        let n = lines.len();
        for (i, line) in lines.into_iter().enumerate() {
            let terminated = !(last_unterminated && i + 1 == n);
            let mut content = line.clone();
            if terminated { content.push(b'\r'); } // what the pty stored
            let msgs = docker_messages(&content, partial, terminated, false);
            if msgs.is_empty() { continue; }
            expected.push((Stream::Stdout, ts + 1, line));
            for m in msgs {
                ts += 1;
                raw.extend_from_slice(ts_text(ts).as_bytes());
                raw.push(b' ');
                raw.extend_from_slice(&m);
            }
        }
        let mut a = TtyAssembler::with_partial_size(max, partial);
        let mut out = Vec::new();
        let mut rest = &raw[..];
        for c in cuts.iter().cycle() {
            if rest.is_empty() { break; }
            let (head, tail) = rest.split_at((*c).min(rest.len()));
            a.push_chunk(head, &mut out);
            rest = tail;
        }
        a.flush(&mut out);
        prop_assert_eq!(join(&out, max), expected);
        prop_assert_eq!(a.malformed, 0);
    }
}
