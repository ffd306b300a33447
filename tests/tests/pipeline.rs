//! End-to-end: real containers on the local Docker engine, the real `antilog` and
//! `logarithmd` binaries, real MariaDB and SQLite. Nothing here is mocked.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use logarithm_tests::docker::{self, DockerLine, Spec};
use logarithm_tests::{small_batch, Agent, Daemon, Db, TOKEN};
use protocol::Stream;
use serde_json::{json, Value};

const PAIRS: usize = 4996;

/// 10,000 lines alternating stdout and stderr, with the awkward ones mixed in.
fn mixed_script() -> String {
    format!(
        r#"i=1
while [ $i -le {PAIRS} ]; do
  echo "line $i to stdout"
  echo "line $i to stderr" >&2
  i=$((i+1))
done
echo
echo >&2
printf 'bad \377\376 bytes\n'
printf '\033[31mred\033[0m plain\n'
head -c 102400 /dev/zero | tr '\0' x; echo
echo '[COUT] CO_URL = http://x/?a=b'
echo '[COUT] CO_RESULT = true'
echo done >&2
"#
    )
}

fn line_bytes(v: &Value) -> Result<Vec<u8>> {
    use base64::Engine as _;
    if let Some(t) = v["text"].as_str() {
        Ok(t.as_bytes().to_vec())
    } else {
        let b = v["b64"].as_str().context("line has neither text nor b64")?;
        Ok(base64::engine::general_purpose::STANDARD.decode(b)?)
    }
}

fn stream_of(v: &Value) -> Result<Stream> {
    v["stream"]
        .as_str()
        .context("stream")?
        .parse()
        .map_err(anyhow::Error::msg)
}

/// Every stored line equals Docker's own log, in order, with stream and timestamp.
async fn check_against_docker(
    daemon: &Daemon,
    docker: &bollard::Docker,
    container: &str,
    job_id: &str,
    driver: &str,
) -> Result<()> {
    let stored = daemon.all_lines(job_id).await?;
    let reference: Vec<DockerLine> = docker::docker_lines(docker, container).await?;
    ensure!(
        stored.len() == 10_000,
        "{driver}: expected 10,000 stored lines, got {}",
        stored.len()
    );
    ensure!(
        reference.len() == 10_000,
        "{driver}: Docker itself returned {} lines",
        reference.len()
    );
    let mut last_ts: BTreeMap<Stream, i64> = BTreeMap::new();
    for (i, (s, d)) in stored.iter().zip(&reference).enumerate() {
        let seq = s["seq"].as_u64().context("seq")?;
        ensure!(seq == i as u64 + 1, "{driver}: line {i} has seq {seq}");
        let bytes = line_bytes(s)?;
        let stream = stream_of(s)?;
        ensure!(
            stream == d.stream && bytes == d.line && s["ts"].as_i64() == Some(d.ts),
            "{driver}: line {i} differs from Docker's: stored {:?} {:?} {} vs docker {:?} {:?} {}",
            stream,
            String::from_utf8_lossy(&bytes[..bytes.len().min(80)]),
            s["ts"],
            d.stream,
            String::from_utf8_lossy(&d.line[..d.line.len().min(80)]),
            d.ts
        );
        let prev = last_ts.entry(stream).or_insert(i64::MIN);
        ensure!(
            d.ts >= *prev,
            "{driver}: timestamps decrease on {stream} at line {i}"
        );
        *prev = d.ts;
    }
    // The awkward lines, byte for byte.
    let find = |pred: &dyn Fn(&[u8]) -> bool| {
        stored
            .iter()
            .filter_map(|s| line_bytes(s).ok().map(|b| (stream_of(s).ok(), b)))
            .filter(|(_, b)| pred(b))
            .count()
    };
    let empty_out = stored
        .iter()
        .filter(|s| s["text"] == "" && s["stream"] == "stdout")
        .count();
    let empty_err = stored
        .iter()
        .filter(|s| s["text"] == "" && s["stream"] == "stderr")
        .count();
    ensure!(
        empty_out == 1 && empty_err == 1,
        "{driver}: empty lines {empty_out}/{empty_err}"
    );
    ensure!(
        find(&|b| b == b"\x1b[31mred\x1b[0m plain") == 1,
        "{driver}: ANSI line missing"
    );
    ensure!(
        find(&|b| b.len() == 102_400 && b.iter().all(|&c| c == b'x')) == 1,
        "{driver}: the 100 KiB line is not intact"
    );
    // json-file stores JSON strings, so Docker itself replaces invalid UTF-8 with U+FFFD;
    // the local driver keeps the program's bytes.
    let expected_bad: Vec<u8> = if driver == "json-file" {
        "bad \u{FFFD}\u{FFFD} bytes".as_bytes().to_vec()
    } else {
        b"bad \xff\xfe bytes".to_vec()
    };
    ensure!(
        find(&|b| b == expected_bad.as_slice()) == 1,
        "{driver}: the invalid UTF-8 line is not as Docker hands it out"
    );
    for i in [1, PAIRS / 2, PAIRS] {
        ensure!(find(&|b| b == format!("line {i} to stdout").as_bytes()) == 1);
        ensure!(find(&|b| b == format!("line {i} to stderr").as_bytes()) == 1);
    }
    // The raw download is the same lines, newline-terminated.
    let raw = daemon.raw_logs(job_id).await?;
    let mut expected_raw = Vec::new();
    for d in &reference {
        expected_raw.extend_from_slice(&d.line);
        expected_raw.push(b'\n');
    }
    ensure!(
        raw.as_ref() == expected_raw.as_slice(),
        "{driver}: raw download differs"
    );
    Ok(())
}

async fn full_pipeline(db: Db) -> Result<()> {
    let docker = docker::connect().await?;
    let daemon = Daemon::start(db.url()).await?;
    let label = format!("pipeline-{:x}", logarithm_tests::rand_u64());
    let agent = Agent::start(&daemon.base, &label)?;
    let mut containers = Vec::new();
    for driver in ["json-file", "local"] {
        let mut spec = Spec::new(&label, &mixed_script());
        spec.log_driver = Some(driver.to_owned());
        containers.push((driver, docker::run(&docker, &spec).await?));
    }
    let result = async {
        for (driver, id) in &containers {
            assert_eq!(docker::wait_exit(&docker, id).await?, 0);
            let job = daemon
                .wait_finished(id, Duration::from_secs(120))
                .await
                .with_context(|| {
                    format!(
                        "agent log:\n{}",
                        logarithm_tests::tail(&agent.proc.log(), 30)
                    )
                })?;
            ensure!(job["status"] == "success", "{driver}: {job}");
            ensure!(job["result"] == true, "{driver}: {job}");
            ensure!(job["exit_code"] == 0, "{driver}: {job}");
            ensure!(job["reason"] == "CO_RESULT = true", "{driver}: {job}");
            ensure!(
                job["outputs"] == json!({"CO_URL": "http://x/?a=b"}),
                "{driver}: outputs {}",
                job["outputs"]
            );
            ensure!(job["log_driver"] == *driver, "{driver}: {job}");
            ensure!(job["node"] == "test-node", "{driver}: {job}");
            ensure!(job["line_count"] == 10_000, "{driver}: {job}");
            let job_id = job["id"].as_str().context("id")?;
            check_against_docker(&daemon, &docker, id, job_id, driver).await?;
        }
        Ok(())
    }
    .await;
    for (_, id) in &containers {
        docker::remove(&docker, id).await;
    }
    result
}

logarithm_tests::on_both_backends!(#[tokio::test(flavor = "multi_thread")] pipeline_sqlite, pipeline_mariadb => full_pipeline);

/// The verdict rules: CO_RESULT decides, a non-zero exit always fails.
async fn verdicts(db: Db) -> Result<()> {
    let docker = docker::connect().await?;
    let daemon = Daemon::start(db.url()).await?;
    let label = format!("verdicts-{:x}", logarithm_tests::rand_u64());
    let _agent = Agent::start(&daemon.base, &label)?;
    let cases = [
        (
            "echo '[COUT] CO_RESULT = false'; exit 0",
            "failure",
            0,
            "CO_RESULT = false",
            json!(false),
        ),
        (
            "echo no verdict; exit 3",
            "failure",
            3,
            "exit code 3",
            Value::Null,
        ),
        (
            "echo '[COUT] CO_RESULT=TRUE'; exit 1",
            "failure",
            1,
            "exit code 1 despite CO_RESULT = true",
            json!(true),
        ),
        (
            "echo '[COUT] CO_RESULT = maybe'",
            "failure",
            0,
            "invalid CO_RESULT",
            Value::Null,
        ),
        ("echo fine", "success", 0, "exit code 0", Value::Null),
    ];
    let mut ids = Vec::new();
    for (script, ..) in &cases {
        ids.push(docker::run(&docker, &Spec::new(&label, script)).await?);
    }
    let result = async {
        for (id, (script, status, code, reason, co)) in ids.iter().zip(&cases) {
            let job = daemon.wait_finished(id, Duration::from_secs(60)).await?;
            ensure!(job["status"] == *status, "{script}: {job}");
            ensure!(job["exit_code"] == *code, "{script}: {job}");
            ensure!(job["reason"] == *reason, "{script}: {job}");
            ensure!(job["result"] == *co, "{script}: {job}");
            ensure!(job["finished_at"].is_string(), "{script}: {job}");
            ensure!(job["line_count"] == 1, "{script}: {job}");
        }
        Ok(())
    }
    .await;
    for id in &ids {
        docker::remove(&docker, id).await;
    }
    result
}

logarithm_tests::on_both_backends!(#[tokio::test(flavor = "multi_thread")] verdicts_sqlite, verdicts_mariadb => verdicts);

/// A container already running when the agent starts, and one started after: both are
/// collected from their first line. Flow labels make them queryable as flow jobs.
#[tokio::test(flavor = "multi_thread")]
async fn containers_before_and_after_agent_start() -> Result<()> {
    let docker = docker::connect().await?;
    let db = Db::mysql().await?;
    let daemon = Daemon::start(db.url()).await?;
    let label = format!("before-after-{:x}", logarithm_tests::rand_u64());
    let script = "echo first; i=1; while [ $i -le 30 ]; do echo tick $i; sleep 0.1; i=$((i+1)); done; echo last";
    let mut before = Spec::new(&label, script);
    before.extra_labels = vec![
        ("io.containerops.flow".into(), "demo".into()),
        ("io.containerops.run".into(), "7".into()),
        ("io.containerops.stage".into(), "build".into()),
        ("io.containerops.action".into(), "compile".into()),
        ("io.containerops.job".into(), "make".into()),
    ];
    let first = docker::run(&docker, &before).await?;
    // Let it print before anything watches it.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let _agent = Agent::start(&daemon.base, &label)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = docker::run(&docker, &Spec::new(&label, script)).await?;
    let result = async {
        for id in [&first, &second] {
            let job = daemon.wait_finished(id, Duration::from_secs(60)).await?;
            ensure!(job["status"] == "success", "{job}");
            let lines = daemon.all_lines(job["id"].as_str().context("id")?).await?;
            let texts: Vec<&str> = lines.iter().filter_map(|l| l["text"].as_str()).collect();
            let mut expected = vec!["first".to_owned()];
            expected.extend((1..=30).map(|i| format!("tick {i}")));
            expected.push("last".into());
            ensure!(texts == expected, "lines of {id}: {texts:?}");
        }
        // Flow labels are queryable.
        let (status, page) = daemon
            .get_json("/api/v1/jobs?flow=demo&run=7&label=io.containerops.job=make")
            .await?;
        ensure!(status == 200, "{page}");
        let jobs = page["jobs"].as_array().context("jobs")?;
        ensure!(
            jobs.len() == 1 && jobs[0]["container_id"] == *first,
            "{page}"
        );
        ensure!(
            jobs[0]["stage"] == "build"
                && jobs[0]["action"] == "compile"
                && jobs[0]["job"] == "make",
            "{page}"
        );
        let (_, page) = daemon.get_json("/api/v1/jobs?flow=other").await?;
        ensure!(page["jobs"].as_array().map(Vec::len) == Some(0), "{page}");
        Ok(())
    }
    .await;
    docker::remove(&docker, &first).await;
    docker::remove(&docker, &second).await;
    result
}

async fn post(
    daemon: &Daemon,
    body: Vec<u8>,
    token: Option<&str>,
    encoding: Option<&str>,
) -> Result<(u16, Value)> {
    let mut req = daemon
        .http
        .post(format!("{}/api/v1/ingest", daemon.base))
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    if let Some(e) = encoding {
        req = req.header("content-encoding", e);
    }
    let r = req.send().await?;
    logarithm_tests::status_and_json(r).await
}

/// Bad ingest bodies get the documented answers and store nothing.
async fn bad_input(db: Db) -> Result<()> {
    let daemon = Daemon::start(db.url()).await?;
    let cid = "a".repeat(64);
    let ok = serde_json::to_vec(&small_batch(&cid))?;

    let (s, b) = post(&daemon, ok.clone(), None, None).await?;
    ensure!(s == 401 && b["error"]["code"] == "unauthorized", "{s} {b}");
    let (s, b) = post(&daemon, ok.clone(), Some("wrong"), None).await?;
    ensure!(s == 401 && b["error"]["code"] == "unauthorized", "{s} {b}");

    let (s, b) = post(&daemon, b"{not json".to_vec(), Some(TOKEN), None).await?;
    ensure!(s == 400 && b["error"]["code"] == "invalid_body", "{s} {b}");

    let mut v = small_batch(&cid);
    v["version"] = json!(99);
    let (s, b) = post(&daemon, serde_json::to_vec(&v)?, Some(TOKEN), None).await?;
    ensure!(
        s == 400 && b["error"]["code"] == "unsupported_version",
        "{s} {b}"
    );
    ensure!(
        b["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("99") && m.contains("supported: 1")),
        "{b}"
    );

    // A valid segment followed by a broken record: the whole batch is refused.
    let mut v = small_batch(&cid);
    v["segments"][0]["records"][1]["seq"] = json!(1);
    let (s, b) = post(&daemon, serde_json::to_vec(&v)?, Some(TOKEN), None).await?;
    ensure!(s == 400 && b["error"]["code"] == "invalid_batch", "{s} {b}");
    ensure!(
        b["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("records[1].seq")),
        "{b}"
    );

    let mut v = small_batch(&cid);
    v["segments"][0]["records"][0]["b64"] = json!("!!");
    v["segments"][0]["records"][0]["text"] = Value::Null;
    let (s, b) = post(&daemon, serde_json::to_vec(&v)?, Some(TOKEN), None).await?;
    ensure!(s == 400, "{s} {b}");

    let mut v = small_batch(&cid);
    v["segments"][0]["surprise"] = json!(1);
    let (s, b) = post(&daemon, serde_json::to_vec(&v)?, Some(TOKEN), None).await?;
    ensure!(
        s == 400
            && b["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("surprise")),
        "{s} {b}"
    );

    // Over the body limit (16 MiB as sent): refused from Content-Length alone, and when
    // streamed without a length, as soon as the limit is passed.
    let (s, b) = raw_post(&daemon, 17 << 20, false).await?;
    ensure!(
        s == 413 && b["error"]["code"] == "payload_too_large",
        "{s} {b}"
    );
    let (s, b) = raw_post(&daemon, 17 << 20, true).await?;
    ensure!(
        s == 413 && b["error"]["code"] == "payload_too_large",
        "{s} {b}"
    );

    // A small zstd body that expands past the decompressed limit (64 MiB).
    let bomb = zstd_compress(&vec![b' '; 70 << 20])?;
    let (s, b) = post(&daemon, bomb, Some(TOKEN), Some("zstd")).await?;
    ensure!(
        s == 413 && b["error"]["code"] == "payload_too_large",
        "{s} {b}"
    );

    ensure!(
        db.count("jobs").await? == 0,
        "a rejected batch created a job"
    );
    ensure!(
        db.count("log_lines").await? == 0,
        "a rejected batch stored lines"
    );

    // The daemon still works, and a good batch (compressed) is stored once even if resent.
    let gz = gzip_compress(&ok)?;
    for _ in 0..3 {
        let (s, b) = post(&daemon, gz.clone(), Some(TOKEN), Some("gzip")).await?;
        ensure!(s == 200, "{s} {b}");
    }
    ensure!(db.count("jobs").await? == 1);
    ensure!(db.count("log_lines").await? == 2);
    Ok(())
}

/// Posts `len` bytes of body over a raw socket, reading the answer while still writing: a
/// server that refuses early closes the connection mid-body, which an ordinary client
/// reports as a broken pipe instead of the answer.
async fn raw_post(daemon: &Daemon, len: usize, chunked: bool) -> Result<(u16, Value)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = daemon.base.trim_start_matches("http://").to_owned();
    let stream = tokio::net::TcpStream::connect(&addr).await?;
    let (mut rd, mut wr) = stream.into_split();
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_owned()
    } else {
        format!("Content-Length: {len}")
    };
    let head = format!(
        "POST /api/v1/ingest HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\n{framing}\r\n\r\n"
    );
    let writer = tokio::spawn(async move {
        wr.write_all(head.as_bytes()).await?;
        let chunk = vec![b' '; 1 << 20];
        let mut sent = 0;
        while sent < len {
            if chunked {
                wr.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                    .await?;
                wr.write_all(&chunk).await?;
                wr.write_all(b"\r\n").await?;
            } else {
                wr.write_all(&chunk).await?;
            }
            sent += chunk.len();
        }
        if chunked {
            wr.write_all(b"0\r\n\r\n").await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let mut buf = Vec::new();
    let mut tmp = [0u8; 8192];
    let answer = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let n = rd.read(&mut tmp).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&tmp[..n]);
            let text = String::from_utf8_lossy(&buf);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().to_owned())
                    })
                    .and_then(|v| v.parse::<usize>().ok());
                if len.is_some_and(|l| body.len() >= l) {
                    break;
                }
            }
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
    writer.abort();
    answer.context("no answer within 30 s")??;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status line in {text:?}"))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    Ok((
        status,
        serde_json::from_str(body).unwrap_or(Value::String(body.to_owned())),
    ))
}

fn zstd_compress(data: &[u8]) -> Result<Vec<u8>> {
    Ok(zstd::encode_all(data, 3)?)
}

fn gzip_compress(data: &[u8]) -> Result<Vec<u8>> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data)?;
    Ok(e.finish()?)
}

logarithm_tests::on_both_backends!(#[tokio::test(flavor = "multi_thread")] bad_input_sqlite, bad_input_mariadb => bad_input);

/// Docker splits a line at 16 KiB even inside a multi-byte UTF-8 character. With the local
/// driver the stored line is exactly the program's bytes; with json-file Docker encodes
/// each piece as a JSON string on its own, so it replaces each half of the character with
/// U+FFFD before anyone can read it: there the stored line equals what Docker hands out.
#[tokio::test(flavor = "multi_thread")]
async fn split_inside_a_multibyte_character_rejoins_exactly() -> Result<()> {
    let docker = docker::connect().await?;
    let db = Db::sqlite()?;
    let daemon = Daemon::start(db.url()).await?;
    let label = format!("utf8-split-{:x}", logarithm_tests::rand_u64());
    let _agent = Agent::start(&daemon.base, &label)?;
    // 16,383 ASCII bytes, then "é" (2 bytes) straddles the cut; the second line puts the
    // cut after the first byte of "€" (3 bytes).
    let script = "head -c 16383 /dev/zero | tr '\\0' a; printf '\\303\\251 tail\\n'; \
                  head -c 16383 /dev/zero | tr '\\0' b; printf '\\342\\202\\254 end\\n'";
    let mut expected_local: Vec<Vec<u8>> = Vec::new();
    let mut l1 = vec![b'a'; 16383];
    l1.extend_from_slice("é tail".as_bytes());
    expected_local.push(l1);
    let mut l2 = vec![b'b'; 16383];
    l2.extend_from_slice("€ end".as_bytes());
    expected_local.push(l2);
    let mut ids = Vec::new();
    for driver in ["local", "json-file"] {
        let mut spec = Spec::new(&label, script);
        spec.log_driver = Some(driver.to_owned());
        ids.push((driver, docker::run(&docker, &spec).await?));
    }
    let result = async {
        for (driver, id) in &ids {
            let job = daemon.wait_finished(id, Duration::from_secs(60)).await?;
            let stored = daemon.all_lines(job["id"].as_str().context("id")?).await?;
            let stored: Vec<Vec<u8>> = stored.iter().map(line_bytes).collect::<Result<_>>()?;
            let reference: Vec<Vec<u8>> = docker::docker_lines(&docker, id)
                .await?
                .into_iter()
                .map(|l| l.line)
                .collect();
            ensure!(
                stored == reference,
                "{driver}: stored lines differ from Docker's"
            );
            if *driver == "local" {
                ensure!(stored == expected_local, "local: not the program's bytes");
            } else {
                ensure!(
                    stored.len() == 2 && stored.iter().all(|l| l.len() > 16383),
                    "json-file: {} lines",
                    stored.len()
                );
            }
        }
        Ok(())
    }
    .await;
    for (_, id) in &ids {
        docker::remove(&docker, id).await;
    }
    result
}

/// issue 11, no poison batches: a record logarithmd refuses for good (a 5 MiB line, over
/// its 4 MiB record limit: 413) sits in the middle of a 5,000-line batch. The agent splits
/// the batch until the record is isolated: the other 4,999 lines are stored, in order, the
/// record is in the dead-letter file with the reason, and lines printed after it keep
/// flowing to a final job.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_record_is_dead_lettered_and_the_rest_flows() -> Result<()> {
    let docker = docker::connect().await?;
    let db = Db::sqlite()?;
    let daemon = Daemon::start(db.url()).await?;
    let label = format!("poison-{:x}", logarithm_tests::rand_u64());
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("data");
    // Lines up to 6 MiB travel as one record, and the 5,000 lines (5 MiB among them) fit
    // in one batch, sent when it holds 5,000 records.
    let agent = Agent::start_with(
        &daemon.base,
        &label,
        dir,
        data_dir.clone(),
        "max_line_bytes = 6291456\nbatch_max_bytes = 33554432\nbatch_max_age = \"5s\"\n",
    )?;
    let script = r#"i=1
while [ $i -le 2500 ]; do echo "line $i"; i=$((i+1)); done
head -c 5242880 /dev/zero | tr '\0' x; echo
i=2502
while [ $i -le 5000 ]; do echo "line $i"; i=$((i+1)); done
sleep 2
i=1
while [ $i -le 100 ]; do echo "after $i"; i=$((i+1)); done
"#;
    let id = docker::run(&docker, &Spec::new(&label, script)).await?;
    let result = async {
        let job = daemon.wait_finished(&id, Duration::from_secs(120)).await?;
        ensure!(
            job["status"] == "success" && job["exit_code"] == 0,
            "job: {job}"
        );
        let stored = daemon
            .all_lines(job["id"].as_str().context("job id")?)
            .await?;
        let got: Vec<(u64, String)> = stored
            .iter()
            .map(|l| {
                Ok((
                    l["seq"].as_u64().context("seq")?,
                    String::from_utf8(line_bytes(l)?)?,
                ))
            })
            .collect::<Result<_>>()?;
        let mut expected: Vec<(u64, String)> = (1..=5000u64)
            .filter(|s| *s != 2501)
            .map(|s| (s, format!("line {s}")))
            .collect();
        expected.extend((1..=100u64).map(|i| (5000 + i, format!("after {i}"))));
        ensure!(
            got.len() == expected.len(),
            "{} lines stored, expected {}",
            got.len(),
            expected.len()
        );
        ensure!(got == expected, "stored lines differ from the program's");
        let dead = std::fs::read_to_string(data_dir.join("dead-letter.jsonl"))
            .context("the dead-letter file")?;
        let entries: Vec<Value> = dead
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?;
        ensure!(entries.len() == 1, "{} dead-letter entries", entries.len());
        let e = &entries[0];
        ensure!(e["status"] == 413, "status: {}", e["status"]);
        ensure!(
            e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("payload_too_large")),
            "reason: {}",
            e["reason"]
        );
        ensure!(e["segment"]["container_id"] == id.as_str());
        let rec = &e["segment"]["records"][0];
        ensure!(rec["seq"] == 2501, "dead-lettered seq {}", rec["seq"]);
        let text = rec["text"].as_str().context("text")?;
        ensure!(
            text.len() == 5 << 20 && text.bytes().all(|b| b == b'x'),
            "dead-lettered text of {} bytes",
            text.len()
        );
        // The refused record was in the middle of one batch of 5,000 records.
        let log = strip_ansi(&agent.proc.log());
        ensure!(
            log.lines()
                .any(|l| l.contains("splitting it to isolate") && l.contains("units=5001")),
            "the agent did not split one 5,000-record batch:\n{}",
            logarithm_tests::tail(&log, 30)
        );
        Ok(())
    }
    .await;
    docker::remove(&docker, &id).await;
    result
}

/// `s` without the terminal colour codes tracing writes.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... m
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// issue 9, `docker run --rm` on the API source: 50 containers print three lines and exit
/// at once, and Docker removes each right away, racing the agent's log read. Every
/// container gets a final job: with its three lines, or with `logs_unavailable` saying
/// why they are missing (never a silent loss, never a missing job). Prints how many
/// survived in full.
#[tokio::test(flavor = "multi_thread")]
async fn rm_containers_are_stored_or_reported_lost_on_the_api_source() -> Result<()> {
    let db = Db::sqlite()?;
    let daemon = Daemon::start(db.url()).await?;
    let label = format!("rm-{:x}", logarithm_tests::rand_u64());
    let agent = Agent::start(&daemon.base, &label)?;
    logarithm_tests::wait_until(Duration::from_secs(60), "the agent's listing", || async {
        Ok(agent.proc.log().contains("listed containers").then_some(()))
    })
    .await?;
    let mut ids = Vec::new();
    for i in 0..50 {
        let out = std::process::Command::new("docker")
            .args(["run", "-d", "--rm", "--label"])
            .arg(format!("logarithm.test={label}"))
            .args([logarithm_tests::TEST_IMAGE, "sh", "-c"])
            .arg(format!("echo one {i}; echo two {i}; echo three {i}"))
            .output()?;
        ensure!(
            out.status.success(),
            "docker run --rm: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        ids.push(String::from_utf8(out.stdout)?.trim().to_owned());
    }
    let (mut full, mut reported) = (0, 0);
    for (i, id) in ids.iter().enumerate() {
        let job = daemon.wait_finished(id, Duration::from_secs(120)).await?;
        ensure!(job["exit_code"] == 0, "container {i}: {job}");
        let lines = daemon
            .all_lines(job["id"].as_str().context("job id")?)
            .await?;
        let texts: Vec<String> = lines
            .iter()
            .map(|l| Ok(String::from_utf8(line_bytes(l)?)?))
            .collect::<Result<_>>()?;
        let want = vec![format!("one {i}"), format!("two {i}"), format!("three {i}")];
        if texts == want {
            full += 1;
        } else {
            ensure!(
                want.starts_with(&texts) && job["logs_unavailable"].is_string(),
                "container {i}: {} of 3 lines stored and no loss reported: {job}",
                texts.len()
            );
            reported += 1;
        }
    }
    ensure!(full + reported == 50);
    println!(
        "--rm on the API source: {full} of 50 containers stored in full, {reported} with \
         their loss reported (logs_unavailable)"
    );
    Ok(())
}
