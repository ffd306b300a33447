use super::*;

fn meta() -> FrameMeta {
    FrameMeta {
        compression: Compression::Zstd,
        records: 7,
        newest_ts: -3,
    }
}

#[test]
fn names_round_trip() {
    assert_eq!(segment_name(42), "00000000000000000042.seg");
    assert_eq!(parse_segment_name(&segment_name(42)), Some(42));
    assert_eq!(parse_segment_name("ack"), None);
    assert_eq!(parse_segment_name(".seg"), None);
    assert_eq!(parse_segment_name("1.seg.corrupt"), None);
    assert_eq!(parse_segment_name("x1.seg"), None);
}

#[test]
fn frames_round_trip_and_damage_is_classified() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let effects: Effects = vec![("c1".into(), Effect::Meta), ("c2".into(), Effect::Forget)];
    let mut bytes = MAGIC.to_vec();
    let keys: Vec<Arc<str>> = vec!["c1".into()];
    bytes.extend(encode_frame(&meta(), &effects, &keys, b"hello").unwrap());
    bytes.extend(encode_frame(&meta(), &[], &[], b"").unwrap());
    std::fs::write(&path, &bytes).unwrap();
    let f = File::open(&path).unwrap();
    let len = bytes.len() as u64;
    let ReadOutcome::Frame(a, next) = read_frame(&f, HEADER_LEN, len).unwrap() else {
        panic!("first frame")
    };
    assert_eq!((a.meta, &a.body[..]), (meta(), &b"hello"[..]));
    assert_eq!(a.effects, effects);
    assert_eq!(a.keys, Some(keys));
    let ReadOutcome::Frame(b, end) = read_frame(&f, next, len).unwrap() else {
        panic!("second frame")
    };
    assert!(b.body.is_empty() && b.effects.is_empty());
    assert_eq!(b.keys, Some(vec![]));
    assert_eq!(end, len);
    assert!(matches!(
        read_frame(&f, end, len).unwrap(),
        ReadOutcome::End
    ));
    assert!(matches!(
        read_frame(&f, next, len - 1).unwrap(),
        ReadOutcome::Bad(Damage::Truncated)
    ));
    // A flipped byte fails the checksum.
    bytes[HEADER_LEN as usize + FRAME_HEADER_LEN as usize + META_LEN] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let f = File::open(&path).unwrap();
    assert!(matches!(
        read_frame(&f, HEADER_LEN, len).unwrap(),
        ReadOutcome::Bad(Damage::Corrupt(_))
    ));
    let s = scan(&f, len).unwrap();
    assert_eq!(s.valid_end, HEADER_LEN);
    assert!(!is_torn_tail(&f, &s, len).unwrap(), "damage mid-file");
}

#[test]
fn version_1_frames_are_read_without_effects() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let mut bytes = MAGIC.to_vec();
    bytes.extend(encode_frame_v1(&meta(), b"old body"));
    std::fs::write(&path, &bytes).unwrap();
    let f = File::open(&path).unwrap();
    let len = bytes.len() as u64;
    let ReadOutcome::Frame(a, end) = read_frame(&f, HEADER_LEN, len).unwrap() else {
        panic!("v1 frame")
    };
    assert_eq!((a.meta, &a.body[..]), (meta(), &b"old body"[..]));
    assert!(a.effects.is_empty());
    assert_eq!(a.keys, None);
    assert_eq!(end, len);
}

#[test]
fn version_2_frames_are_read_without_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let effects: Effects = vec![("c1".into(), Effect::Meta)];
    let mut bytes = MAGIC.to_vec();
    bytes.extend(encode_frame_v2(&meta(), &effects, b"v2 body"));
    std::fs::write(&path, &bytes).unwrap();
    let f = File::open(&path).unwrap();
    let len = bytes.len() as u64;
    let ReadOutcome::Frame(a, end) = read_frame(&f, HEADER_LEN, len).unwrap() else {
        panic!("v2 frame")
    };
    assert_eq!((a.meta, &a.body[..]), (meta(), &b"v2 body"[..]));
    assert_eq!((a.effects, a.keys), (effects, None));
    assert_eq!(end, len);
}

#[test]
fn ack_file_round_trips_and_rejects_garbage() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(read_ack(dir.path()), Ok(None));
    let at = Cursor {
        segment: 9,
        offset: 1234,
    };
    write_ack(dir.path(), at).unwrap();
    assert_eq!(read_ack(dir.path()), Ok(Some(at)));
    std::fs::write(dir.path().join(ACK_FILE), [1u8; ACK_LEN]).unwrap();
    assert!(read_ack(dir.path()).is_err());
}
