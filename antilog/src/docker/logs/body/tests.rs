use std::path::Path;

use bollard::ClientVersion;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixListener;

use super::*;
use crate::docker::logs::LogClient;

fn frame(stream: u8, msg: &[u8]) -> Vec<u8> {
    let mut f = vec![stream, 0, 0, 0];
    f.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    f.extend_from_slice(msg);
    f
}

fn tag(out: LogOutput) -> (u8, Bytes) {
    match out {
        LogOutput::StdOut { message } => (1, message),
        LogOutput::StdErr { message } => (2, message),
        LogOutput::Console { message } => (3, message),
        LogOutput::StdIn { message } => (0, message),
    }
}

fn sample() -> (Vec<u8>, Vec<(u8, Bytes)>) {
    let msgs: [(u8, &'static [u8]); 4] = [
        (1, b"out line\n"),
        (2, b"err"),
        (1, b""),
        (3, b"Error grabbing logs: x\n"),
    ];
    let wire = msgs.iter().flat_map(|(s, m)| frame(*s, m)).collect();
    let want = msgs
        .iter()
        .map(|(s, m)| (*s, Bytes::from_static(m)))
        .collect();
    (wire, want)
}

#[test]
fn frames_are_split_across_chunks() {
    let (wire, want) = sample();
    // Any chunking gives the frames whole and in order: a byte, 3 bytes, 11 bytes (frames
    // and headers straddling chunks, several frames in one chunk), all at once.
    for size in [1, 3, 11, wire.len()] {
        let mut pending = BytesMut::new();
        let mut out = Vec::new();
        for chunk in wire.chunks(size) {
            take_frames(&mut pending, Bytes::copy_from_slice(chunk), &mut out).unwrap();
        }
        assert!(pending.is_empty(), "chunks of {size}");
        assert_eq!(out.into_iter().map(tag).collect::<Vec<_>>(), want);
    }
    let mut pending = BytesMut::new();
    let bad = Bytes::from_static(&[1u8, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
    assert!(take_frames(&mut pending, bad, &mut Vec::new()).is_err());
}

#[test]
fn whole_frames_are_not_copied() {
    let wire = Bytes::from([frame(1, b"a\n"), frame(2, b"bc\n")].concat());
    let mut pending = BytesMut::new();
    let mut out = Vec::new();
    take_frames(&mut pending, wire.clone(), &mut out).unwrap();
    let (_, first) = tag(out.remove(0));
    // The frame is a view of the chunk's own memory.
    assert_eq!(first.as_ptr(), wire[8..].as_ptr());
    assert!(pending.is_empty());
}

/// A Docker-like server on a Unix socket: answers one request with `head`, then writes
/// `parts` one by one (flushed apart), then closes.
async fn serve(socket: &Path, head: &'static str, parts: Vec<Vec<u8>>) {
    let listener = UnixListener::bind(socket).unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut req = Vec::new();
        let mut b = [0u8; 1024];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tokio::io::AsyncReadExt::read(&mut s, &mut b).await.unwrap();
            assert!(n > 0);
            req.extend_from_slice(&b[..n]);
        }
        let req = String::from_utf8(req).unwrap();
        assert!(req.starts_with("GET /v1.41/containers/abc/logs?"), "{req}");
        s.write_all(head.as_bytes()).await.unwrap();
        for p in parts {
            s.write_all(&p).await.unwrap();
            s.flush().await.unwrap();
            tokio::task::yield_now().await;
        }
    });
}

const CHUNKED: &str = "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.multiplexed-stream\r\nTransfer-Encoding: chunked\r\n\r\n";

fn chunk(data: &[u8]) -> Vec<u8> {
    let mut c = format!("{:x}\r\n", data.len()).into_bytes();
    c.extend_from_slice(data);
    c.extend_from_slice(b"\r\n");
    c
}

fn client(socket: &Path) -> LogClient {
    let v = ClientVersion {
        major_version: 1,
        minor_version: 41,
    };
    LogClient::new(Some(&format!("unix://{}", socket.display())), &v).unwrap()
}

async fn read_all(body: &mut LogBody) -> (Vec<(u8, Bytes)>, Option<Failure>) {
    let mut got = Vec::new();
    let mut out = Vec::new();
    loop {
        match body.next_batch(&mut out).await {
            None => return (got, None),
            Some(Ok(())) => {
                assert!(!out.is_empty());
                got.extend(out.drain(..).map(tag));
            }
            Some(Err(f)) => return (got, Some(f)),
        }
    }
}

/// A log served as `parts` after a chunked 200 head, read to its end over hyper: what came,
/// and the failure that ended it.
async fn read_served(parts: Vec<Vec<u8>>, tty: bool) -> (Vec<(u8, Bytes)>, Option<Failure>) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("d.sock");
    serve(&socket, CHUNKED, parts).await;
    let mut body = client(&socket)
        .logs("abc", "0", true, false, tty)
        .await
        .unwrap();
    read_all(&mut body).await
}

#[tokio::test]
async fn a_chunk_per_frame_is_read_in_batches_over_hyper() {
    // 3,000 frames, each its own chunk as Docker sends them; written in parts that cut
    // chunks and frames anywhere.
    let msgs: Vec<Vec<u8>> = (0..3000)
        .map(|i| format!("2024-01-01T00:00:00.000000000Z line {i}\n").into_bytes())
        .collect();
    let wire: Vec<u8> = msgs
        .iter()
        .enumerate()
        .flat_map(|(i, m)| chunk(&frame(1 + (i % 2) as u8, m)))
        .chain(b"0\r\n\r\n".iter().copied())
        .collect();
    let parts = wire.chunks(777).map(<[u8]>::to_vec).collect();
    let (got, failure) = read_served(parts, false).await;
    assert!(failure.is_none(), "{failure:?}");
    let want: Vec<(u8, Bytes)> = msgs
        .into_iter()
        .enumerate()
        .map(|(i, m)| (1 + (i % 2) as u8, Bytes::from(m)))
        .collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn a_log_cut_inside_a_frame_fails_after_its_whole_frames() {
    let whole = frame(1, b"2024-01-01T00:00:00Z a\n");
    let cut = &frame(1, b"2024-01-01T00:00:00Z b\n")[..10];
    let parts = vec![chunk(&whole), chunk(cut), b"0\r\n\r\n".to_vec()];
    let (got, failure) = read_served(parts, false).await;
    assert_eq!(
        got,
        vec![(1, Bytes::from_static(b"2024-01-01T00:00:00Z a\n"))]
    );
    assert!(
        matches!(&failure, Some(Failure::Transient(m)) if m.contains("inside a frame")),
        "{failure:?}"
    );
}

#[tokio::test]
async fn a_connection_closed_mid_body_fails_after_what_came() {
    // No terminating chunk: the server just closes.
    let parts = vec![chunk(&frame(2, b"2024-01-01T00:00:00Z e\n"))];
    let (got, failure) = read_served(parts, false).await;
    assert_eq!(
        got,
        vec![(2, Bytes::from_static(b"2024-01-01T00:00:00Z e\n"))]
    );
    assert!(
        matches!(&failure, Some(Failure::Transient(_))),
        "{failure:?}"
    );
}

#[tokio::test]
async fn a_tty_log_comes_as_its_chunks() {
    let parts = vec![
        chunk(b"2024-01-01T00:00:00Z a"),
        chunk(b"b\r\n"),
        b"0\r\n\r\n".to_vec(),
    ];
    let (got, failure) = read_served(parts, true).await;
    assert!(failure.is_none(), "{failure:?}");
    let bytes: Vec<u8> = got
        .iter()
        .flat_map(|(s, b)| {
            assert_eq!(*s, 3);
            b.to_vec()
        })
        .collect();
    assert_eq!(bytes, b"2024-01-01T00:00:00Z ab\r\n");
}

#[tokio::test]
async fn error_answers_keep_their_kind_and_message() {
    for (head, want) in [
        (
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: 36\r\n\r\n{\"message\":\"No such container: abc\"}",
            None,
        ),
        (
            "HTTP/1.1 501 Not Implemented\r\nContent-Length: 27\r\n\r\n{\"message\":\"not supported\"}",
            Some((true, "HTTP 501: not supported")),
        ),
        (
            "HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"mes\r\n13\r\nsage\":\"restarting\"}\r\n0\r\n\r\n",
            Some((false, "HTTP 500: restarting")),
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("d.sock");
        serve(&socket, head, Vec::new()).await;
        let got = client(&socket).logs("abc", "0", false, false, false).await.unwrap_err();
        match (want, got) {
            (None, Failure::NotFound) => {}
            (Some((true, m)), Failure::Permanent(got)) => assert_eq!(got, m),
            (Some((false, m)), Failure::Transient(got)) => assert_eq!(got, m),
            (want, got) => panic!("{want:?}: {got:?}"),
        }
    }
}
