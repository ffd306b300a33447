//! The tailer on Docker's numbered rotation.

use super::*;
use std::io::Write;

fn layout() -> Layout {
    Layout::Numbered {
        name: "c-json.log".into(),
    }
}

fn append(path: &Path, lines: &[&str]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for l in lines {
        f.write_all(l.as_bytes()).unwrap();
        f.write_all(b"\n").unwrap();
    }
}

/// Reads until end of file; returns the lines and the last position.
fn drain(t: &mut Tailer) -> (Vec<String>, Option<FilePos>) {
    let mut out = Vec::new();
    let mut last = None;
    loop {
        match t.next_event().unwrap() {
            Event::Line { line, pos } => {
                out.push(String::from_utf8(line.to_vec()).unwrap());
                last = Some(pos);
            }
            Event::Gap(g) => out.push(format!("GAP {}", g.contains("rotated away"))),
            Event::Eof => return (out, last),
        }
    }
}

/// Docker's rotation: `.1` -> `.2`, ..., the active file -> `.1`, a new active file.
fn rotate(dir: &Path, keep: usize) {
    rotate_rotated(dir, keep, "");
}

/// Docker's rotation of rotated files named `.<n><suffix>`: the oldest deleted, the
/// others moved one up, the active file renamed to `.1` (no suffix) and created anew.
fn rotate_rotated(dir: &Path, keep: usize, suffix: &str) {
    let base = dir.join("c-json.log");
    let _ = std::fs::remove_file(dir.join(format!("c-json.log.{keep}{suffix}")));
    for i in (1..keep).rev() {
        let from = dir.join(format!("c-json.log.{i}{suffix}"));
        if from.exists() {
            std::fs::rename(&from, dir.join(format!("c-json.log.{}{suffix}", i + 1))).unwrap();
        }
    }
    std::fs::rename(&base, dir.join("c-json.log.1")).unwrap();
    std::fs::File::create(&base).unwrap();
}

#[test]
fn reads_across_renames_and_deleted_files_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("c-json.log");
    append(&base, &["1", "2"]);
    let (mut t, start) = Tailer::open(dir.path(), layout(), None).unwrap();
    assert_eq!(start, Start::Beginning);
    assert_eq!(drain(&mut t).0, vec!["1", "2"]);
    // Written, then rotated before we read: read through the open descriptor.
    append(&base, &["3", "4"]);
    rotate(dir.path(), 2);
    append(&base, &["5"]);
    // A half-written line waits for its end.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&base)
        .unwrap()
        .write_all(b"6-part")
        .unwrap();
    assert_eq!(drain(&mut t).0, vec!["3", "4", "5"]);
    append(&base, &["-end"]);
    // Rotated twice and the older file deleted while it was still unread.
    append(&base, &["7"]);
    rotate(dir.path(), 2);
    append(&base, &["8"]);
    let got = drain(&mut t).0;
    assert_eq!(got, vec!["6-part-end", "7", "8"]);
    // The active file held open is renamed to .1 then deleted before we look.
    rotate(dir.path(), 1);
    append(&base, &["9", "10"]);
    assert_eq!(drain(&mut t).0, vec!["9", "10"]);
    assert_eq!((t.malformed, t.truncations), (0, 0));
}

#[test]
fn resumes_exactly_from_a_position_in_a_renamed_file() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("c-json.log");
    append(&base, &["a", "b"]);
    let (mut t, _) = Tailer::open(dir.path(), layout(), None).unwrap();
    let (_, pos) = drain(&mut t);
    let pos = pos.unwrap();
    assert_eq!(pos.offset, 4);
    drop(t);
    append(&base, &["c"]);
    rotate(dir.path(), 3);
    append(&base, &["d"]);
    let (mut t, start) = Tailer::open(dir.path(), layout(), Some(pos)).unwrap();
    assert_eq!(start, Start::Exact);
    assert_eq!(drain(&mut t).0, vec!["c", "d"]);
    // Its file deleted: read from the oldest file there is, and say so.
    rotate(dir.path(), 1);
    std::fs::remove_file(dir.path().join("c-json.log.1")).unwrap();
    append(&base, &["e"]);
    let (mut t, start) = Tailer::open(dir.path(), layout(), Some(pos)).unwrap();
    assert_eq!(start, Start::Lost);
    assert_eq!(drain(&mut t).0, vec!["e"]);
}

#[test]
fn inode_reuse_is_not_taken_for_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("c-json.log");
    append(&base, &["old line one"]);
    let (mut t, _) = Tailer::open(dir.path(), layout(), None).unwrap();
    let pos = drain(&mut t).1.unwrap();
    drop(t);
    // Same name and (as the checkpoint sees it) same inode, other content.
    std::fs::remove_file(&base).unwrap();
    append(&base, &["new line 1", "new line 2"]);
    let f = File::open(&base).unwrap();
    let mut reused = pos;
    reused.ino = f.metadata().unwrap().ino();
    reused.dev = f.metadata().unwrap().dev();
    let (mut t, start) = Tailer::open(dir.path(), layout(), Some(reused)).unwrap();
    assert_eq!(start, Start::Lost);
    assert_eq!(drain(&mut t).0, vec!["new line 1", "new line 2"]);
}

#[test]
fn copy_truncate_reads_again_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("c-json.log");
    append(&base, &["one", "two", "three"]);
    let (mut t, _) = Tailer::open(dir.path(), layout(), None).unwrap();
    assert_eq!(drain(&mut t).0.len(), 3);
    // copytruncate: the content went elsewhere, the file is emptied and written anew.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&base)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&base, &["four"]);
    assert_eq!(drain(&mut t).0, vec!["four"]);
    assert_eq!(t.truncations, 1);
}

#[test]
fn files_rotated_away_unseen_are_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("c-json.log");
    append(&base, &["1"]);
    let (mut t, _) = Tailer::open(dir.path(), layout(), None).unwrap();
    assert_eq!(drain(&mut t).0, vec!["1"]);
    // Three rotations keeping one rotated file, between two looks: the files of
    // lines 2 and 3 (and the one we held, fully read) are gone.
    for l in ["2", "3", "4"] {
        append(&base, &[l]);
        rotate(dir.path(), 1);
    }
    append(&base, &["5"]);
    let got = drain(&mut t).0;
    assert_eq!(got, vec!["2", "GAP true", "4", "5"]);
    assert_eq!(t.position().unwrap().offset, 2);
}

#[test]
fn over_long_lines_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("c-json.log");
    let long = "x".repeat(MAX_LINE + 10);
    append(&base, &["a", &long, "b"]);
    let (mut t, _) = Tailer::open(dir.path(), layout(), None).unwrap();
    let (lines, pos) = drain(&mut t);
    assert_eq!(lines, vec!["a", "b"]);
    assert_eq!(t.malformed, 1);
    assert_eq!(pos.unwrap().offset, (2 + long.len() + 1 + 2) as u64);
}

/// Docker's rotation with `compress=true`: `.1.gz` -> `.2.gz`, ..., the oldest deleted, the
/// active file -> `.1`, a new active file; then `.1` gzipped into `.1.gz` in place and
/// deleted.
fn rotate_compressed(dir: &Path, keep: usize) {
    rotate_rotated(dir, keep, ".gz");
    let plain = dir.join("c-json.log.1");
    let content = std::fs::read(&plain).unwrap();
    let mut enc = flate2::write::GzEncoder::new(
        File::create(dir.join("c-json.log.1.gz")).unwrap(),
        flate2::Compression::fast(),
    );
    enc.write_all(&content).unwrap();
    enc.finish().unwrap();
    std::fs::remove_file(&plain).unwrap();
}

#[test]
fn compressed_numbered_rotations_are_read_like_plain_ones() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("c-json.log");
    append(&base, &["1", "2"]);
    let (mut t, _) = Tailer::open(dir.path(), layout(), None).unwrap();
    assert_eq!(drain(&mut t).0, vec!["1", "2"]);
    // The held file is rotated and compressed (the plain file deleted) while unread: read
    // on through its descriptor; the .gz is the same content, not read again.
    append(&base, &["3"]);
    rotate_compressed(dir.path(), 4);
    append(&base, &["4"]);
    assert_eq!(drain(&mut t).0, vec!["3", "4"]);
    let pos = t.position().unwrap();
    drop(t);
    // While not reading: two more rotations, both compressed. Resuming from the position
    // in a file now only in `.2.gz` is exact; a tailer from nothing reads every .gz,
    // oldest first.
    append(&base, &["5"]);
    rotate_compressed(dir.path(), 4);
    append(&base, &["6"]);
    rotate_compressed(dir.path(), 4);
    append(&base, &["7"]);
    let (mut t, start) = Tailer::open(dir.path(), layout(), Some(pos)).unwrap();
    assert_eq!(start, Start::Exact);
    assert_eq!(drain(&mut t).0, vec!["5", "6", "7"]);
    let (mut t, start) = Tailer::open(dir.path(), layout(), None).unwrap();
    assert_eq!(start, Start::Beginning);
    assert_eq!(drain(&mut t).0, vec!["1", "2", "3", "4", "5", "6", "7"]);
    // Rotated away (three rotations, three rotated files kept) while not reading: the
    // checkpointed file is gone.
    for l in ["8", "9", "10"] {
        append(&base, &[l]);
        rotate_compressed(dir.path(), 3);
    }
    let (mut t, start) = Tailer::open(dir.path(), layout(), Some(pos)).unwrap();
    assert_eq!(start, Start::Lost);
    assert_eq!(drain(&mut t).0, vec!["7", "8", "9", "10"]);
    assert_eq!((t.malformed, t.truncations), (0, 0));
}
