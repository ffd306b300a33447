//! End-to-end tests against the real Docker engine and a real HTTP receiver.
//!
//! Each test labels its containers with a unique `antilog.test=<id>` label and configures
//! the agent to include only that label, so tests running in parallel do not see each
//! other's containers. Containers are removed when a test ends (also on failure).
//!
//! Needs: a reachable Docker engine and the `logarithm/busybox:test` image
//! (`scripts/test-image.sh`, run automatically if the image is missing).

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use antilog::Config;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bollard::container::LogOutput;
use bollard::models::{
    ContainerCreateBody as ContainerConfig, HostConfig, HostConfigLogConfig, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{CreateContainerOptions, LogsOptions, StartContainerOptions};
use bollard::Docker;
use futures::StreamExt;
use protocol::{
    Batch, ContainerExit, ContainerMeta, ErrorBody, ErrorDetail, IngestAck, Record, Stream,
};
use tokio_util::sync::CancellationToken;

const IMAGE: &str = "logarithm/busybox:test";
const TOKEN: &str = "test-token";
const WAIT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// The receiver: a minimal logarithmd ingest endpoint.

#[derive(Default)]
struct Received {
    /// Accepted batches, in arrival order.
    batches: Vec<Batch>,
    /// Every accepted record by (container, seq), to check resends carry the same content.
    records: HashMap<(String, u64), Record>,
    /// Resends whose content differs from the first copy (must stay empty).
    conflicts: Vec<String>,
}

#[derive(Default)]
struct Receiver {
    received: Mutex<Received>,
    /// Answer this many requests with 503 before accepting.
    fail_next: AtomicU32,
    requests: AtomicU32,
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.to_string(),
            message: message.to_string(),
        },
    };
    (status, Json(body)).into_response()
}

async fn ingest(State(rx): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> Response {
    rx.requests.fetch_add(1, Ordering::SeqCst);
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
    if auth != Some(&format!("Bearer {TOKEN}")) {
        return error(StatusCode::UNAUTHORIZED, "unauthorized", "bad token");
    }
    if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/json") {
        return error(StatusCode::BAD_REQUEST, "invalid_body", "not JSON");
    }
    if rx
        .fail_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        let mut r = error(StatusCode::SERVICE_UNAVAILABLE, "overloaded", "try later");
        r.headers_mut().insert("retry-after", "0".parse().unwrap());
        return r;
    }
    let json = match headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
    {
        Some("zstd") => zstd::decode_all(&body[..]).unwrap(),
        Some("gzip") => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&body[..])
                .read_to_end(&mut out)
                .unwrap();
            out
        }
        None => body.to_vec(),
        Some(other) => return error(StatusCode::BAD_REQUEST, "invalid_body", other),
    };
    let batch: Batch = match serde_json::from_slice(&json) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_body", &e.to_string()),
    };
    let mut ack = IngestAck {
        records: 0,
        stored: 0,
        duplicates: 0,
    };
    let mut st = rx.received.lock().unwrap();
    for seg in &batch.segments {
        for r in &seg.records {
            ack.records += 1;
            match st.records.get(&(seg.container_id.clone(), r.seq)) {
                Some(old) if old != r => {
                    let msg = format!("{} seq {}: {old:?} then {r:?}", seg.container_id, r.seq);
                    st.conflicts.push(msg);
                    ack.duplicates += 1;
                }
                Some(_) => ack.duplicates += 1,
                None => {
                    st.records
                        .insert((seg.container_id.clone(), r.seq), r.clone());
                    ack.stored += 1;
                }
            }
        }
    }
    st.batches.push(batch);
    Json(ack).into_response()
}

impl Receiver {
    async fn start() -> (Arc<Receiver>, SocketAddr) {
        let rx = Arc::new(Receiver::default());
        let app = Router::new()
            .route(protocol::INGEST_PATH, post(ingest))
            .with_state(rx.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (rx, addr)
    }

    /// All distinct records of a container, by seq.
    fn records(&self, id: &str) -> BTreeMap<u64, Record> {
        let st = self.received.lock().unwrap();
        assert!(
            st.conflicts.is_empty(),
            "resends differ: {:?}",
            st.conflicts
        );
        st.records
            .iter()
            .filter(|((c, _), _)| c == id)
            .map(|((_, seq), r)| (*seq, r.clone()))
            .collect()
    }

    /// Every record of a container as received, resends included, in arrival order.
    fn all_records(&self, id: &str) -> Vec<Record> {
        let st = self.received.lock().unwrap();
        st.batches
            .iter()
            .flat_map(|b| &b.segments)
            .filter(|s| s.container_id == id)
            .flat_map(|s| s.records.iter().cloned())
            .collect()
    }

    fn metas(&self, id: &str) -> Vec<ContainerMeta> {
        let st = self.received.lock().unwrap();
        st.batches
            .iter()
            .flat_map(|b| &b.segments)
            .filter(|s| s.container_id == id)
            .filter_map(|s| s.meta.clone())
            .collect()
    }

    fn exits(&self, id: &str) -> Vec<ContainerExit> {
        let st = self.received.lock().unwrap();
        st.batches
            .iter()
            .flat_map(|b| &b.segments)
            .filter(|s| s.container_id == id)
            .filter_map(|s| s.exit.clone())
            .collect()
    }

    fn unavailable(&self, id: &str) -> Vec<String> {
        let st = self.received.lock().unwrap();
        st.batches
            .iter()
            .flat_map(|b| &b.segments)
            .filter(|s| s.container_id == id)
            .filter_map(|s| s.logs_unavailable.clone())
            .collect()
    }

    /// Segments of a container must go meta -> records -> exit, seqs increasing inside.
    fn check_segments(&self, id: &str) {
        let st = self.received.lock().unwrap();
        for s in st.batches.iter().flat_map(|b| &b.segments) {
            if s.container_id != id {
                continue;
            }
            assert!(
                s.meta.is_some()
                    || !s.records.is_empty()
                    || s.exit.is_some()
                    || s.logs_unavailable.is_some(),
                "empty segment"
            );
            for w in s.records.windows(2) {
                assert_eq!(
                    w[1].seq,
                    w[0].seq + 1,
                    "seqs within a segment are consecutive"
                );
            }
        }
    }

    async fn wait_for(&self, what: &str, cond: impl Fn(&Receiver) -> bool) {
        let t0 = Instant::now();
        while !cond(self) {
            assert!(t0.elapsed() < WAIT, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Docker helpers.

async fn docker() -> Docker {
    let docker = Docker::connect_with_local_defaults()
        .expect("cannot set up a Docker client (is DOCKER_HOST valid?)");
    let docker = match docker.negotiate_version().await {
        Ok(d) => d,
        Err(e) => {
            panic!("the Docker engine is unreachable ({e}); these tests need a running dockerd")
        }
    };
    if docker.inspect_image(IMAGE).await.is_err() {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/test-image.sh");
        let status = std::process::Command::new("bash").arg(script).status();
        assert!(
            matches!(status, Ok(s) if s.success()),
            "test image {IMAGE} is missing and scripts/test-image.sh failed"
        );
    }
    docker
}

/// Containers of one test: removed (forcefully) when dropped.
struct Containers {
    label: String,
    ids: Vec<String>,
}

impl Containers {
    fn new(test: &str) -> Containers {
        let nonce: u64 = rand::random();
        Containers {
            label: format!("{test}-{nonce:x}"),
            ids: Vec::new(),
        }
    }

    async fn create(&mut self, docker: &Docker, spec: Spec<'_>) -> String {
        let host_config = HostConfig {
            log_config: (spec.log_driver.is_some() || spec.log_opts.is_some()).then(|| {
                HostConfigLogConfig {
                    typ: spec.log_driver.map(str::to_string),
                    config: spec.log_opts.map(|o| {
                        o.iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect()
                    }),
                }
            }),
            restart_policy: spec.restart_max.map(|n| RestartPolicy {
                name: Some(RestartPolicyNameEnum::ON_FAILURE),
                maximum_retry_count: Some(n),
            }),
            ..Default::default()
        };
        let config = ContainerConfig {
            image: Some(IMAGE.to_string()),
            cmd: Some(vec![
                "sh".to_string(),
                "-c".to_string(),
                spec.script.to_string(),
            ]),
            tty: Some(spec.tty),
            labels: Some(HashMap::from([
                ("antilog.test".to_string(), self.label.clone()),
                ("purpose".to_string(), "antilog-test".to_string()),
            ])),
            host_config: Some(host_config),
            ..Default::default()
        };
        let name = format!("antilog-{}-{}", self.label, self.ids.len());
        let created = docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.clone()),
                    ..Default::default()
                }),
                config,
            )
            .await
            .expect("create container");
        self.ids.push(created.id.clone());
        created.id
    }

    async fn run(&mut self, docker: &Docker, spec: Spec<'_>) -> String {
        let id = self.create(docker, spec).await;
        docker
            .start_container(&id, None::<StartContainerOptions>)
            .await
            .expect("start container");
        id
    }

    fn include_rule(&self) -> String {
        format!("antilog.test={}", self.label)
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        for id in &self.ids {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", id])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

#[derive(Clone, Copy)]
struct Spec<'a> {
    script: &'a str,
    tty: bool,
    log_driver: Option<&'a str>,
    /// `--log-opt`s.
    log_opts: Option<&'a [(&'a str, &'a str)]>,
    restart_max: Option<i64>,
}

fn sh(script: &str) -> Spec<'_> {
    Spec {
        script,
        tty: false,
        log_driver: None,
        log_opts: None,
        restart_max: None,
    }
}

async fn wait_exited(docker: &Docker, id: &str) {
    let t0 = Instant::now();
    loop {
        let i = docker.inspect_container(id, None).await.expect("inspect");
        let st = i.state.unwrap_or_default();
        if st.running == Some(false) && st.restarting != Some(true) {
            return;
        }
        assert!(t0.elapsed() < WAIT, "container {id} did not exit");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Docker's own account of a non-TTY container's log (`follow=false`), as lines, in
/// Docker's order: an independent, straightforward reassembly of timestamped messages.
async fn docker_lines(docker: &Docker, id: &str, max_line: usize) -> Vec<(Stream, Vec<u8>)> {
    let opts = LogsOptions {
        follow: false,
        stdout: true,
        stderr: true,
        timestamps: true,
        tail: "all".to_string(),
        ..Default::default()
    };
    let mut raw: Vec<(Stream, Vec<u8>)> = Vec::new();
    let mut logs = docker.logs(id, Some(opts));
    while let Some(out) = logs.next().await {
        match out {
            Ok(LogOutput::StdOut { message }) => raw.push((Stream::Stdout, message.to_vec())),
            Ok(LogOutput::StdErr { message }) => raw.push((Stream::Stderr, message.to_vec())),
            Ok(other) => panic!("unexpected raw output for a non-TTY container: {other:?}"),
            Err(e) => panic!("docker logs failed: {e}"),
        }
    }
    let mut lines = Vec::new();
    // Per stream, a message without '\n' shorter than 16384 bytes ends the line too
    // (the `local` driver's last piece of a split line). Like the agent, a line longer
    // than `max_line` keeps the other stream's lines waiting until it ends (its records
    // must be contiguous).
    let mut pending: HashMap<Stream, Vec<u8>> = HashMap::new();
    let mut owner: Option<Stream> = None;
    let mut held: Vec<(Stream, Vec<u8>)> = Vec::new();
    let other = |s: Stream| {
        if s == Stream::Stdout {
            Stream::Stderr
        } else {
            Stream::Stdout
        }
    };
    for (stream, msg) in raw {
        let sp = msg.iter().position(|&b| b == b' ').unwrap();
        let content = &msg[sp + 1..];
        let (body, ends) = match content.strip_suffix(b"\n") {
            Some(body) => (body, true),
            None => (content, content.len() < 16384),
        };
        let buf = pending.entry(stream).or_default();
        buf.extend_from_slice(body);
        if owner.is_none() && buf.len() > max_line {
            owner = Some(stream);
        }
        if !ends {
            continue;
        }
        let line = (stream, std::mem::take(buf));
        if owner == Some(other(stream)) {
            held.push(line);
            continue;
        }
        lines.push(line);
        if owner == Some(stream) {
            owner = None;
            lines.append(&mut held);
            let o = other(stream);
            if pending.get(&o).is_some_and(|b| b.len() > max_line) {
                owner = Some(o);
            }
        }
    }
    let mut rest: Vec<Stream> = pending
        .iter()
        .filter(|(_, b)| !b.is_empty())
        .map(|(s, _)| *s)
        .collect();
    rest.sort_by_key(|s| owner != Some(*s));
    for s in rest {
        lines.push((s, pending.remove(&s).unwrap()));
        lines.append(&mut held);
    }
    lines
}

/// What `docker logs -t` prints for a TTY container (the raw stream), split into lines:
/// messages are "<ts> <content>" ending at '\n' or after 16384 content bytes.
fn tty_lines_from_cli(id: &str) -> Vec<(Stream, Vec<u8>)> {
    let out = std::process::Command::new("docker")
        .args(["logs", "-t", id])
        .output()
        .expect("docker CLI");
    assert!(out.status.success(), "docker logs failed");
    split_tty(&out.stdout)
}

fn split_tty(all: &[u8]) -> Vec<(Stream, Vec<u8>)> {
    let mut lines = Vec::new();
    let mut i = 0;
    let mut line = Vec::new();
    while i < all.len() {
        let sp = i + all[i..].iter().position(|&b| b == b' ').unwrap();
        i = sp + 1;
        let end = (i + 16384).min(all.len());
        match all[i..end].iter().position(|&b| b == b'\n') {
            Some(p) => {
                line.extend_from_slice(&all[i..i + p]);
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                lines.push((Stream::Stdout, std::mem::take(&mut line)));
                i += p + 1;
            }
            None => {
                line.extend_from_slice(&all[i..end]);
                i = end;
            }
        }
    }
    if !line.is_empty() {
        lines.push((Stream::Stdout, line));
    }
    lines
}

/// Joins records (seq order, gapless from 1) back into lines: continuation records join
/// the next record of the same stream.
fn join_lines(records: &BTreeMap<u64, Record>) -> Vec<(Stream, Vec<u8>)> {
    let seqs: Vec<u64> = records.keys().copied().collect();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expected, "seqs are gapless from 1");
    let mut lines = Vec::new();
    let mut open: HashMap<Stream, (usize, Vec<u8>)> = HashMap::new();
    for r in records.values() {
        let bytes = r.bytes().unwrap();
        let next = lines.len() + open.len();
        let (_, buf) = open.entry(r.stream).or_insert((next, Vec::new()));
        buf.extend_from_slice(&bytes);
        if !r.cont {
            let (_, buf) = open.remove(&r.stream).unwrap();
            lines.push((r.stream, buf));
        }
    }
    assert!(open.is_empty(), "a continued line never ended");
    lines
}

fn per_stream(lines: &[(Stream, Vec<u8>)], stream: Stream) -> Vec<Vec<u8>> {
    lines
        .iter()
        .filter(|l| l.0 == stream)
        .map(|l| l.1.clone())
        .collect()
}

// ---------------------------------------------------------------------------------------
// The agent.

struct Agent {
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), antilog::Error>>,
}

fn config(addr: SocketAddr, data_dir: &std::path::Path, include: &str) -> Config {
    Config {
        server_url: format!("http://{addr}"),
        token: Some(TOKEN.to_string()),
        node_name: "test-node".to_string(),
        data_dir: data_dir.to_path_buf(),
        include_labels: vec![include.to_string()],
        batch_max_age: Duration::from_millis(50),
        shutdown_timeout: Duration::from_secs(5),
        // A port of its own: agents of concurrent tests share this process's host.
        metrics_listen: "127.0.0.1:0".to_string(),
        ..Config::default()
    }
}

impl Agent {
    fn start(config: Config) -> Agent {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(antilog::run(config, shutdown.clone()));
        Agent { shutdown, task }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let res = tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("agent stops within its shutdown timeout")
            .expect("agent task");
        res.expect("agent run returns Ok");
    }
}

fn text(r: &Record) -> String {
    String::from_utf8_lossy(&r.bytes().unwrap()).into_owned()
}

// ---------------------------------------------------------------------------------------
// Tests.

/// Compares lines, printing a short summary (not megabytes of bytes) on mismatch.
#[track_caller]
fn assert_lines_eq(got: &[(Stream, Vec<u8>)], want: &[(Stream, Vec<u8>)]) {
    if got != want {
        let show = |l: &[(Stream, Vec<u8>)]| -> Vec<String> {
            l.iter()
                .map(|(s, b)| {
                    let head = String::from_utf8_lossy(&b[..b.len().min(40)]).into_owned();
                    format!("{s} {} bytes {head:?}", b.len())
                })
                .collect()
        };
        panic!(
            "lines differ:\n got: {:#?}\nwant: {:#?}",
            show(got),
            show(want)
        );
    }
}

fn lines_of(stream: Stream, lines: Vec<Vec<u8>>) -> Vec<(Stream, Vec<u8>)> {
    lines.into_iter().map(|l| (stream, l)).collect()
}

/// Interleaved stdout/stderr, an invalid UTF-8 byte, an empty line, a 100 KiB line (split
/// by Docker into 16 KiB partials, and by the agent into 30000-byte records), ANSI escapes
/// and '\r', a last line without newline, exit code 3.
async fn mixed_output(driver: &str) {
    let docker = docker().await;
    let (rx, addr) = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cs = Containers::new(&format!("mixed-{driver}"));
    let mut cfg = config(addr, dir.path(), &cs.include_rule());
    cfg.max_line_bytes = 30_000;
    let agent = Agent::start(cfg);
    let script = r#"echo out1; echo err1 >&2; printf 'bad\377byte\n'; echo; echo err2 >&2;
        head -c 102400 /dev/zero | tr '\0' x; echo; printf ' \033[31mred\033[0m\r\n';
        echo err3 >&2; printf 'no newline at end'; exit 3"#;
    let id = cs
        .run(
            &docker,
            Spec {
                log_driver: Some(driver),
                ..sh(script)
            },
        )
        .await;
    rx.wait_for("the exit", |r| !r.exits(&id).is_empty()).await;
    wait_exited(&docker, &id).await;

    let records = rx.records(&id);
    let lines = join_lines(&records);
    // json-file stores lines as JSON strings: Docker itself replaces invalid UTF-8 there.
    let bad: &[u8] = if driver == "json-file" {
        "bad\u{fffd}byte".as_bytes()
    } else {
        b"bad\xffbyte"
    };
    assert_lines_eq(
        &lines_of(Stream::Stdout, per_stream(&lines, Stream::Stdout)),
        &lines_of(
            Stream::Stdout,
            vec![
                b"out1".to_vec(),
                bad.to_vec(),
                b"".to_vec(),
                vec![b'x'; 102_400],
                b" \x1b[31mred\x1b[0m\r".to_vec(),
                b"no newline at end".to_vec(),
            ],
        ),
    );
    assert_eq!(
        per_stream(&lines, Stream::Stderr),
        vec![b"err1".to_vec(), b"err2".to_vec(), b"err3".to_vec()]
    );
    // Exactly Docker's order across both streams.
    assert_lines_eq(&lines, &docker_lines(&docker, &id, 30_000).await);
    // The 100 KiB line travels as 30000+30000+30000+12400 bytes, all but the last continued.
    let long: Vec<(usize, bool)> = records
        .values()
        .filter(|r| r.text.as_deref().is_some_and(|t| t.starts_with('x')))
        .map(|r| (r.payload_len(), r.cont))
        .collect();
    assert_eq!(
        long,
        vec![
            (30_000, true),
            (30_000, true),
            (30_000, true),
            (12_400, false)
        ]
    );
    if driver != "json-file" {
        // Invalid UTF-8 travels as base64.
        assert_eq!(records.values().filter(|r| r.b64.is_some()).count(), 1);
    }
    assert!(records.values().all(|r| r.ts > 1_600_000_000_000_000_000));

    let exits = rx.exits(&id);
    assert_eq!(exits.len(), 1);
    let last_seq = *records.keys().last().unwrap();
    assert_eq!(exits[0].exit_code, Some(3));
    assert_eq!(exits[0].last_seq, last_seq);
    assert_eq!(exits[0].restart_count, 0);
    assert!(exits[0].finished_at > 0);
    let metas = rx.metas(&id);
    assert_eq!(metas.len(), 1);
    let inspect = docker.inspect_container(&id, None).await.unwrap();
    assert_eq!(metas[0].name, inspect.name.unwrap().trim_start_matches('/'));
    assert_eq!(metas[0].image, IMAGE);
    assert_eq!(
        metas[0].labels.get("purpose").map(String::as_str),
        Some("antilog-test")
    );
    assert!(!metas[0].tty);
    assert_eq!(metas[0].log_driver, driver);
    assert!(metas[0].started_at >= metas[0].created_at && metas[0].created_at > 0);
    rx.check_segments(&id);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_output_json_file_driver_matches_docker() {
    mixed_output("json-file").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_output_local_driver_is_byte_exact() {
    mixed_output("local").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tty_container_lines_are_split_from_the_raw_stream() {
    let docker = docker().await;
    let (rx, addr) = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cs = Containers::new("tty");
    let agent = Agent::start(config(addr, dir.path(), &cs.include_rule()));
    // A progress bar redrawn with '\r', lines around Docker's 16 KiB split, and a last
    // output without newline.
    let script = r#"echo hello; printf 'a\tb\r\n'; head -c 40000 /dev/zero | tr '\0' y; echo;
        head -c 16383 /dev/zero | tr '\0' z; echo; echo; printf '10%%\r20%%\r30%%\r'; echo done;
        printf tail"#;
    let id = cs
        .run(
            &docker,
            Spec {
                tty: true,
                ..sh(script)
            },
        )
        .await;
    rx.wait_for("the exit", |r| !r.exits(&id).is_empty()).await;
    let lines = join_lines(&rx.records(&id));
    let expected: Vec<(Stream, Vec<u8>)> = [
        b"hello".to_vec(),
        b"a\tb\r".to_vec(),
        vec![b'y'; 40_000],
        vec![b'z'; 16_383],
        Vec::new(),
        b"10%\r20%\r30%\rdone".to_vec(),
        b"tail".to_vec(),
    ]
    .into_iter()
    .map(|l| (Stream::Stdout, l))
    .collect();
    assert_lines_eq(&lines, &expected);
    assert_lines_eq(&lines, &tty_lines_from_cli(&id));
    assert!(rx.metas(&id)[0].tty);
    assert_eq!(rx.exits(&id)[0].exit_code, Some(0));
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_running_before_and_started_after_are_read_from_their_first_line() {
    let docker = docker().await;
    let (rx, addr) = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cs = Containers::new("before-after");
    let before = cs
        .run(
            &docker,
            sh("i=0; while [ $i -lt 30 ]; do echo a$i; i=$((i+1)); sleep 0.1; done"),
        )
        .await;
    // Let it log a few lines before the agent exists.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let agent = Agent::start(config(addr, dir.path(), &cs.include_rule()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = cs.run(&docker, sh("echo b0; echo b1 >&2; exit 0")).await;
    // Starts and exits within milliseconds: still collected in full.
    let instant = cs.run(&docker, sh("echo quick")).await;
    for id in [&before, &after, &instant] {
        rx.wait_for("the exits", |r| !r.exits(id).is_empty()).await;
    }
    let texts = |id: &str| -> Vec<String> { rx.records(id).values().map(text).collect() };
    let a: Vec<String> = (0..30).map(|i| format!("a{i}")).collect();
    assert_eq!(texts(&before), a);
    // Docker's order across streams is whichever copier wrote first: compare with it.
    let after_lines = join_lines(&rx.records(&after));
    assert_lines_eq(
        &after_lines,
        &docker_lines(&docker, &after, usize::MAX).await,
    );
    assert_eq!(
        per_stream(&after_lines, Stream::Stdout),
        vec![b"b0".to_vec()]
    );
    assert_eq!(
        per_stream(&after_lines, Stream::Stderr),
        vec![b"b1".to_vec()]
    );
    assert_eq!(texts(&instant), vec!["quick"]);
    for id in [&before, &after, &instant] {
        assert_eq!(rx.metas(id).len(), 1);
        assert_eq!(rx.exits(id)[0].last_seq, rx.records(id).len() as u64);
        rx.check_segments(id);
    }
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_503_twice_then_everything_is_delivered_once() {
    let docker = docker().await;
    let (rx, addr) = Receiver::start().await;
    rx.fail_next.store(2, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let mut cs = Containers::new("retry");
    let agent = Agent::start(config(addr, dir.path(), &cs.include_rule()));
    let id = cs.run(&docker, sh("seq 1 200")).await;
    rx.wait_for("the exit", |r| !r.exits(&id).is_empty()).await;
    assert_eq!(rx.fail_next.load(Ordering::SeqCst), 0);
    assert!(rx.requests.load(Ordering::SeqCst) >= 3);
    // Accepted exactly once each: no record arrives twice.
    let all = rx.all_records(&id);
    let seqs: Vec<u64> = all.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=200).collect::<Vec<u64>>());
    let texts: Vec<String> = all.iter().map(text).collect();
    assert_eq!(texts, (1..=200).map(|i| i.to_string()).collect::<Vec<_>>());
    assert_eq!(rx.metas(&id).len(), 1);
    assert_eq!(rx.exits(&id).len(), 1);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_resume_has_no_gaps_and_no_different_duplicates() {
    let docker = docker().await;
    let (rx, addr) = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cs = Containers::new("resume");
    let n = 80;
    let script =
        format!("i=1; while [ $i -le {n} ]; do echo line $i; i=$((i+1)); sleep 0.05; done");
    let id = cs.run(&docker, sh(&script)).await;
    let cfg = config(addr, dir.path(), &cs.include_rule());

    let first = Agent::start(Config {
        agent_id: "first".into(),
        ..cfg.clone()
    });
    rx.wait_for("some lines", |r| r.records(&id).len() >= 15)
        .await;
    first.stop().await;
    let after_first = rx.records(&id).len();
    assert!(
        after_first < n,
        "the first agent stopped midway ({after_first} lines)"
    );
    let saved = std::fs::read_to_string(dir.path().join("checkpoints.json")).unwrap();
    assert!(saved.contains(&id), "checkpoint has the container: {saved}");

    // Lines keep coming while no agent runs.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = Agent::start(Config {
        agent_id: "second".into(),
        ..cfg.clone()
    });
    rx.wait_for("the exit", |r| !r.exits(&id).is_empty()).await;
    second.stop().await;

    let records = rx.records(&id);
    let texts: Vec<String> = records.values().map(text).collect();
    assert_eq!(
        texts,
        (1..=n).map(|i| format!("line {i}")).collect::<Vec<_>>()
    );
    assert_eq!(
        records.keys().copied().collect::<Vec<_>>(),
        (1..=n as u64).collect::<Vec<_>>()
    );
    // Resends (if any) are bounded: the second agent started at its checkpoint.
    let all = rx.all_records(&id).len();
    assert!(all < n + 20, "{all} records received for {n} lines");
    assert_eq!(rx.exits(&id)[0].last_seq, n as u64);

    // A third start after the acknowledged exit sends nothing new for it.
    let before = rx.all_records(&id).len();
    let third = Agent::start(Config {
        agent_id: "third".into(),
        ..cfg
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    third.stop().await;
    assert_eq!(rx.all_records(&id).len(), before);
    assert_eq!(rx.exits(&id).len(), 1);

    // Removing the container drops its checkpoint entry.
    let fourth = Agent::start(Config {
        agent_id: "fourth".into(),
        ..config(addr, dir.path(), &cs.include_rule())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    docker
        .remove_container(
            &id,
            None::<bollard::query_parameters::RemoveContainerOptions>,
        )
        .await
        .unwrap();
    let t0 = Instant::now();
    loop {
        let saved = std::fs::read_to_string(dir.path().join("checkpoints.json")).unwrap();
        if !saved.contains(&id) {
            break;
        }
        assert!(t0.elapsed() < WAIT, "checkpoint entry not dropped: {saved}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    fourth.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_logs_and_restarts_are_reported() {
    let docker = docker().await;
    let (rx, addr) = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cs = Containers::new("lifecycle");
    let agent = Agent::start(config(addr, dir.path(), &cs.include_rule()));
    let none = cs
        .run(
            &docker,
            Spec {
                log_driver: Some("none"),
                ..sh("echo invisible; sleep 0.3; exit 4")
            },
        )
        .await;
    let restarted = cs
        .run(
            &docker,
            Spec {
                restart_max: Some(2),
                ..sh("echo run; exit 1")
            },
        )
        .await;
    rx.wait_for("the exit of the unreadable one", |r| {
        !r.exits(&none).is_empty()
    })
    .await;
    assert_eq!(rx.unavailable(&none).len(), 1);
    assert!(rx.records(&none).is_empty());
    assert_eq!(rx.exits(&none)[0].exit_code, Some(4));
    assert_eq!(rx.metas(&none)[0].log_driver, "none");

    rx.wait_for("three runs", |r| r.exits(&restarted).len() == 3)
        .await;
    let records = rx.records(&restarted);
    assert_eq!(
        records.values().map(text).collect::<Vec<_>>(),
        vec!["run"; 3]
    );
    let metas = rx.metas(&restarted);
    assert_eq!(
        metas.iter().map(|m| m.restart_count).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
    let exits = rx.exits(&restarted);
    assert_eq!(
        exits
            .iter()
            .map(|e| (e.exit_code, e.last_seq, e.restart_count))
            .collect::<Vec<_>>(),
        vec![(Some(1), 1, 0), (Some(1), 2, 1), (Some(1), 3, 2)]
    );
    rx.check_segments(&restarted);
    agent.stop().await;
}

/// Docker deletes rotated json-file logs whether or not anyone read them. Lines rotated
/// away while the agent is down are reported on the job (`logs_unavailable`, with the time
/// range) instead of going missing silently, and every line Docker still holds is
/// delivered once, in order, numbered past every seq handed out before the gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_rotated_away_while_the_agent_is_down_are_reported() {
    let docker = docker().await;
    let (rx, addr) = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cs = Containers::new("rotated");
    // The API source's resume (tests/tests/files.rs covers the file source's).
    let cfg = Config {
        source: antilog::config::Source::DockerApi,
        ..config(addr, dir.path(), &cs.include_rule())
    };
    let first = Agent::start(cfg.clone());
    // 50 lines, a pause (the agent stops), then 3,000 lines of 40 bytes: about 120 KB,
    // while Docker keeps at most 2 files of 10 KB.
    let script = "i=1; while [ $i -le 50 ]; do echo \"line $i\"; i=$((i+1)); done; sleep 5; \
                  i=51; while [ $i -le 3050 ]; do printf 'burst %029d\\n' $i; i=$((i+1)); done";
    let opts: &[(&str, &str)] = &[("max-size", "10k"), ("max-file", "2")];
    let id = cs
        .run(
            &docker,
            Spec {
                log_driver: Some("json-file"),
                log_opts: Some(opts),
                ..sh(script)
            },
        )
        .await;
    rx.wait_for("the first 50 lines", |r| r.records(&id).len() >= 50)
        .await;
    first.stop().await;
    wait_exited(&docker, &id).await;
    let kept = docker_lines(&docker, &id, usize::MAX).await;
    assert!(
        !kept.is_empty() && kept.len() < 3000,
        "Docker kept {} lines",
        kept.len()
    );
    let second = Agent::start(cfg);
    rx.wait_for("the exit", |r| !r.exits(&id).is_empty()).await;
    second.stop().await;
    let records = rx.records(&id);
    let texts: Vec<String> = records.values().map(text).collect();
    let mut expected: Vec<String> = (1..=50).map(|i| format!("line {i}")).collect();
    expected.extend(
        kept.iter()
            .map(|(_, l)| String::from_utf8_lossy(l).into_owned()),
    );
    assert_eq!(texts.len(), expected.len());
    assert_eq!(texts, expected);
    // Numbered past the gap: the lines read after it never take a seq that may have
    // been handed out before (checkpoint + 2^32), then on without a gap.
    let after = expected.len() as u64 - 50;
    let mut seqs: Vec<u64> = (1..=50).collect();
    seqs.extend((1..=after).map(|i| 50 + (1 << 32) + i));
    assert_eq!(records.keys().copied().collect::<Vec<_>>(), seqs);
    let gaps = rx.unavailable(&id);
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert!(
        gaps[0].contains("rotated away before they were read"),
        "{}",
        gaps[0]
    );
    assert_eq!(rx.exits(&id)[0].last_seq, seqs.last().copied().unwrap_or(0));
}
