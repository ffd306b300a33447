//! The tailer on the kubelet's rotation, with files written exactly as containerd and the
//! kubelet write them (`Kubelet` below) while the tailer reads, and every line decoded
//! by the CRI decoder and compared with what was written: content, order, time, stream.

use super::*;
use std::io::Write;
use std::sync::Arc;

use protocol::Stream;

use crate::files::cri::CriDecoder;
use crate::metrics::Metrics;

/// Content bytes of a CRI record before containerd cuts a line (its default
/// `max_container_log_line_size`).
const CUT: usize = 16 * 1024;

/// A written or read line: stream, time, bytes. A gap reads as `(Stdout, -1, "GAP")`.
type Line = (Stream, i64, Vec<u8>);

fn gap() -> Line {
    (Stream::Stdout, -1, b"GAP".to_vec())
}

/// Writes one container's log as containerd and the kubelet do.
///
/// containerd holds the active file open and appends records
/// `<RFC 3339 nano> <stream> <P|F> <content>\n`, a line cut into [`CUT`]-byte `P` records
/// and a last `F`. The kubelet's `rotateLog`: removes `.tmp` leftovers, deletes the oldest
/// rotated files beyond `max_files - 2`, gzips every other rotated file (to `<f>.tmp`,
/// renamed to `<f>.gz`, then `<f>` removed), renames the active file to
/// `<name>.<YYYYMMDD-hhmmss>` and asks the runtime to reopen it; until it does, the runtime
/// still writes to the renamed file.
struct Kubelet {
    dir: PathBuf,
    name: String,
    file: File,
    /// Seconds since the first rotation's stamp.
    stamp: u64,
    max_files: usize,
    /// The next record's time (ns).
    clock: i64,
}

impl Kubelet {
    fn new(dir: &Path, name: &str, max_files: usize) -> Kubelet {
        let path = dir.join(name);
        Kubelet {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            file: append_to(&path),
            stamp: 0,
            max_files,
            clock: 1_795_777_825_000_000_000,
        }
    }

    /// Writes one line; returns it as it must be read.
    fn line(&mut self, stream: Stream, content: &[u8]) -> Line {
        self.clock += 1_001;
        let ts = self.clock;
        let time = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts))
            .unwrap()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        let name = match stream {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        };
        let chunks: Vec<&[u8]> = if content.is_empty() {
            vec![content]
        } else {
            content.chunks(CUT).collect()
        };
        let mut out = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            let tag = if i + 1 == chunks.len() { "F" } else { "P" };
            out.extend_from_slice(format!("{time} {name} {tag} ").as_bytes());
            out.extend_from_slice(c);
            out.push(b'\n');
        }
        self.file.write_all(&out).unwrap();
        (stream, ts, content.to_vec())
    }

    fn rotated_names(&self) -> Vec<String> {
        let prefix = format!("{}.", self.name);
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with(&prefix))
            .collect();
        names.sort();
        names
    }

    /// The kubelet's steps before the rename.
    fn prepare(&mut self) {
        for n in self.rotated_names() {
            if n.ends_with(".tmp") {
                std::fs::remove_file(self.dir.join(n)).unwrap();
            }
        }
        let rotated = self.rotated_names();
        let keep = self.max_files.saturating_sub(2);
        for n in &rotated[..rotated.len().saturating_sub(keep)] {
            std::fs::remove_file(self.dir.join(n)).unwrap();
        }
        for n in self.rotated_names() {
            if !n.ends_with(".gz") {
                self.compress(&n);
            }
        }
    }

    fn compress(&self, n: &str) {
        let plain = self.dir.join(n);
        let tmp = self.dir.join(format!("{n}.tmp"));
        let mut enc = flate2::write::GzEncoder::new(
            File::create(&tmp).unwrap(),
            flate2::Compression::default(),
        );
        enc.write_all(&std::fs::read(&plain).unwrap()).unwrap();
        enc.finish().unwrap();
        std::fs::rename(&tmp, self.dir.join(format!("{n}.gz"))).unwrap();
        std::fs::remove_file(&plain).unwrap();
    }

    /// Renames the active file; the runtime writes on to it until [`Kubelet::reopen`].
    fn rename_active(&mut self) {
        self.prepare();
        self.stamp += 10;
        let (d, s) = (self.stamp / 86_400, self.stamp % 86_400);
        let stamp = format!(
            "202611{:02}-{:02}{:02}{:02}",
            1 + d,
            s / 3600,
            s / 60 % 60,
            s % 60
        );
        std::fs::rename(
            self.dir.join(&self.name),
            self.dir.join(format!("{}.{stamp}", self.name)),
        )
        .unwrap();
    }

    /// The runtime's `ReopenContainerLog`: a new active file.
    fn reopen(&mut self) {
        self.file = append_to(&self.dir.join(&self.name));
    }

    fn rotate(&mut self) {
        self.rename_active();
        self.reopen();
    }
}

fn append_to(path: &Path) -> File {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
}

fn layout(name: &str) -> Layout {
    Layout::Kubelet { name: name.into() }
}

fn decoder() -> CriDecoder {
    CriDecoder::new(1 << 20, Arc::new(Metrics::new()), "test".into())
}

/// Reads to the end of what is written; returns whether anything was read.
fn drain(t: &mut Tailer, d: &mut CriDecoder, out: &mut Vec<Line>) -> bool {
    let mut pieces = Vec::new();
    let mut any = false;
    loop {
        match t.next_event().unwrap() {
            Event::Line { line, .. } => {
                any = true;
                d.push_line(line, &mut pieces);
                for p in pieces.drain(..) {
                    assert!(p.last, "no line is long enough to be cut");
                    out.push((p.stream, p.ts, p.bytes));
                }
            }
            Event::Gap(_) => out.push(gap()),
            Event::Eof => return any,
        }
    }
}

fn read_all(t: &mut Tailer) -> Vec<Line> {
    let mut out = Vec::new();
    drain(t, &mut decoder(), &mut out);
    out
}

/// Compares without printing megabytes on a mismatch.
fn assert_lines(got: &[Line], want: &[Line]) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g == w,
            "line {i}: got {:?} {} {:?}, want {:?} {} {:?}",
            g.0,
            g.1,
            String::from_utf8_lossy(&g.2[..g.2.len().min(40)]),
            w.0,
            w.1,
            String::from_utf8_lossy(&w.2[..w.2.len().min(40)])
        );
    }
    assert_eq!(got.len(), want.len(), "line count");
}

/// Line `i` of a test: short ones, and every 17th longer than three CRI records with
/// multi-byte characters across the 16 KiB cuts; every 5th on stderr.
fn content(i: usize) -> (Stream, Vec<u8>) {
    let stream = if i.is_multiple_of(5) {
        Stream::Stderr
    } else {
        Stream::Stdout
    };
    let body = if i.is_multiple_of(17) {
        format!("{i} {}", "é😀x".repeat(7_000)).into_bytes()
    } else if i.is_multiple_of(23) {
        Vec::new()
    } else {
        format!("line {i} {}", "-".repeat(i % 97)).into_bytes()
    };
    (stream, body)
}

#[test]
fn partials_and_renames_during_a_burst_are_read_exactly_while_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut k = Kubelet::new(dir.path(), "0.log", 1000);
    let (mut t, _) = Tailer::open(dir.path(), layout("0.log"), None).unwrap();
    let writer = std::thread::spawn(move || {
        let mut want = Vec::new();
        for i in 0..3_000 {
            let (s, c) = content(i);
            want.push(k.line(s, &c));
            if i % 150 == 149 {
                // Renamed in the middle of a burst: the runtime writes on to the renamed
                // file, and older rotations are gzipped meanwhile.
                k.rename_active();
                for j in 0..3 {
                    want.push(k.line(Stream::Stdout, format!("late {i}.{j}").as_bytes()));
                }
                k.reopen();
            }
        }
        want
    });
    let mut d = decoder();
    let mut got = Vec::new();
    while !writer.is_finished() {
        if !drain(&mut t, &mut d, &mut got) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let want = writer.join().unwrap();
    drain(&mut t, &mut d, &mut got);
    assert_lines(&got, &want);
    assert!(want.len() > 3_000);
    assert_eq!(
        (t.malformed, t.truncations, d.bad_tags, d.unparseable),
        (0, 0, 0, 0)
    );
    let gz = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "gz")
        })
        .count();
    assert!(gz >= 18, "rotations were compressed: {gz}");
}

#[test]
fn a_file_gzipped_before_it_was_opened_is_read_from_the_gz() {
    let dir = tempfile::tempdir().unwrap();
    let mut k = Kubelet::new(dir.path(), "0.log", 10);
    let mut want = vec![k.line(Stream::Stdout, b"a1")];
    let (mut t, _) = Tailer::open(dir.path(), layout("0.log"), None).unwrap();
    assert_lines(&read_all(&mut t), &want);
    // While the tailer does not look: the file it holds is rotated and gzipped, and so
    // are two files it never saw.
    want.push(k.line(Stream::Stdout, b"a2"));
    k.rotate();
    want.push(k.line(Stream::Stderr, b"b1"));
    k.rotate();
    want.push(k.line(Stream::Stdout, b"c1"));
    k.rotate();
    want.push(k.line(Stream::Stdout, b"d1"));
    k.rotate();
    want.push(k.line(Stream::Stdout, b"e1"));
    let names = k.rotated_names();
    assert_eq!(
        names.iter().filter(|n| n.ends_with(".gz")).count(),
        3,
        "{names:?}"
    );
    let got = read_all(&mut t);
    assert_lines(&got, &want[1..]);
    // A tailer started now reads every file, compressed ones too, oldest first.
    let (mut t, start) = Tailer::open(dir.path(), layout("0.log"), None).unwrap();
    assert_eq!(start, Start::Beginning);
    assert_lines(&read_all(&mut t), &want);
}

#[test]
fn a_file_gzipped_then_deleted_while_unread_is_read_through_its_descriptor() {
    let dir = tempfile::tempdir().unwrap();
    // Two files at most: a rotation deletes every older rotated file.
    let mut k = Kubelet::new(dir.path(), "0.log", 3);
    let mut want = vec![k.line(Stream::Stdout, b"a1")];
    let (mut t, _) = Tailer::open(dir.path(), layout("0.log"), None).unwrap();
    let mut got = read_all(&mut t);
    // The held file: rotated, then gzipped, then the .gz deleted, all unread.
    want.push(k.line(Stream::Stdout, b"a2"));
    k.rotate();
    // Lost: its file is rotated, gzipped and deleted before the tailer looks.
    k.line(Stream::Stdout, b"b1");
    k.rotate();
    assert!(k.rotated_names().iter().any(|n| n.ends_with(".gz")));
    k.rotate();
    k.rotate();
    let names = k.rotated_names();
    assert_eq!(names.len(), 2, "{names:?}");
    // What it held is read to its end, then the rest; b's file was never opened and is
    // gone: a gap.
    want.push(gap());
    want.push(k.line(Stream::Stdout, b"d1"));
    got.extend(read_all(&mut t));
    assert_lines(&got, &want);
}

#[test]
fn resumes_exactly_inside_a_file_that_was_gzipped_since() {
    let dir = tempfile::tempdir().unwrap();
    let mut k = Kubelet::new(dir.path(), "0.log", 10);
    let mut want = Vec::new();
    for i in 0..40 {
        let (s, c) = content(i);
        want.push(k.line(s, &c));
    }
    let (mut t, _) = Tailer::open(dir.path(), layout("0.log"), None).unwrap();
    let mut d = decoder();
    let mut pos = None;
    let mut got = Vec::new();
    let mut pieces = Vec::new();
    // Read 20 lines and keep the position after the 20th.
    while got.len() < 20 {
        if let Event::Line { line, pos: p } = t.next_event().unwrap() {
            d.push_line(line, &mut pieces);
            got.extend(pieces.drain(..).map(|p| (p.stream, p.ts, p.bytes)));
            pos = Some(p);
        }
    }
    drop(t);
    k.rotate();
    want.push(k.line(Stream::Stdout, b"second file"));
    k.rotate();
    want.push(k.line(Stream::Stdout, b"third file"));
    assert!(k.rotated_names()[0].ends_with(".gz"));
    let (mut t, start) = Tailer::open(dir.path(), layout("0.log"), pos).unwrap();
    assert_eq!(start, Start::Exact);
    got.extend(read_all(&mut t));
    assert_lines(&got, &want);
}

#[test]
fn copy_truncate_is_read_again_from_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut k = Kubelet::new(dir.path(), "0.log", 5);
    let mut want = vec![
        k.line(Stream::Stdout, b"one"),
        k.line(Stream::Stdout, b"two"),
    ];
    let (mut t, _) = Tailer::open(dir.path(), layout("0.log"), None).unwrap();
    let mut got = read_all(&mut t);
    k.file.set_len(0).unwrap();
    want.push(k.line(Stream::Stderr, b"three"));
    got.extend(read_all(&mut t));
    assert_lines(&got, &want);
    assert_eq!(t.truncations, 1);
}

#[test]
fn a_reused_inode_is_not_taken_for_the_checkpointed_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut k = Kubelet::new(dir.path(), "0.log", 5);
    k.line(Stream::Stdout, b"old");
    let (mut t, _) = Tailer::open(dir.path(), layout("0.log"), None).unwrap();
    read_all(&mut t);
    let pos = t.position().unwrap();
    drop(t);
    // The file is deleted and a new one gets (as the checkpoint sees it) its inode.
    std::fs::remove_file(dir.path().join("0.log")).unwrap();
    k.reopen();
    let want = vec![k.line(Stream::Stdout, b"new")];
    let meta = std::fs::metadata(dir.path().join("0.log")).unwrap();
    let mut reused = pos;
    (reused.dev, reused.ino) = (meta.dev(), meta.ino());
    let (mut t, start) = Tailer::open(dir.path(), layout("0.log"), Some(reused)).unwrap();
    assert_eq!(start, Start::Lost);
    assert_lines(&read_all(&mut t), &want);
}

#[test]
fn a_container_restart_is_another_chain() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Kubelet::new(dir.path(), "0.log", 5);
    let want0 = vec![first.line(Stream::Stdout, b"run 0")];
    first.rotate();
    let (mut t0, _) = Tailer::open(dir.path(), layout("0.log"), None).unwrap();
    // The restarted container writes 1.log in the same directory.
    let mut second = Kubelet::new(dir.path(), "1.log", 5);
    let want1 = [second.line(Stream::Stderr, b"run 1")];
    second.rotate();
    let more = second.line(Stream::Stdout, b"run 1 again");
    assert_lines(&read_all(&mut t0), &want0);
    let (mut t1, _) = Tailer::open(dir.path(), layout("1.log"), None).unwrap();
    assert_lines(&read_all(&mut t1), &[want1[0].clone(), more]);
}

#[test]
fn a_corrupt_gz_found_at_start_is_a_gap_not_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let mut k = Kubelet::new(dir.path(), "0.log", 10);
    k.line(Stream::Stdout, b"a1");
    k.rotate();
    let b1 = k.line(Stream::Stdout, b"b1");
    k.rotate();
    let c1 = k.line(Stream::Stderr, b"c1");
    let names = k.rotated_names();
    let gz = names.iter().find(|n| n.ends_with(".gz")).expect("a .gz");
    // The gzip header is damaged: the file cannot even be opened as gzip.
    std::fs::write(dir.path().join(gz), b"not gzip at all").unwrap();
    let (mut t, start) = Tailer::open(dir.path(), layout("0.log"), None).unwrap();
    assert_eq!(start, Start::Beginning);
    assert_lines(&read_all(&mut t), &[gap(), b1, c1]);
}
