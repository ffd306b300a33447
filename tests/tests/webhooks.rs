//! End-to-end webhooks: the real `logarithmd` binary, real SQLite and MariaDB, and a real
//! HTTP receiver on 127.0.0.1 that verifies every signature with its own implementation of
//! the Standard Webhooks scheme (not logarithmd's code). Jobs are produced by POSTing
//! ingest batches directly (meta, records with COUT, exit): fast and deterministic.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use logarithm_tests::webhook_receiver::{verify, Received, Receiver, Script};
use logarithm_tests::{free_port, tail, wait_until, Daemon, Db, TOKEN};
use serde_json::{json, Value};

const ADMIN: &str = "admin-token-42";
const SECRET: &str = "receiver-shared-secret";

// ---------------------------------------------------------------------------------------
// Driving logarithmd.

/// Test config: the admin token and retry delays short enough for tests.
fn config(extra: &str) -> String {
    format!(
        "public_url = \"http://logs.example:7300/\"\n{}\
         [webhooks]\npoll_interval = \"100ms\"\nrequest_timeout = \"2s\"\nlease = \"4s\"\n\
         retry_initial = \"200ms\"\nretry_max_delay = \"800ms\"\nretry_jitter = 0.1\n{extra}",
        logarithm_tests::token_toml("admin", ADMIN, &["admin"])
    )
}

/// A container id from a tag.
fn cid(tag: &str) -> String {
    format!("{tag:0>64}")
}

/// One segment of a job that starts, prints an output and CO_RESULT, and exits.
fn finishing_segment(container: &str, flow: &str) -> Value {
    json!({
        "container_id": container,
        "meta": {
            "name": format!("job-{}", &container[56..]),
            "image": "registry.example/build:1.2",
            "labels": {
                "io.containerops.flow": flow, "io.containerops.run": "7",
                "io.containerops.stage": "build", "io.containerops.action": "compile",
                "io.containerops.job": "make"
            },
            "created_at": 1_700_000_000_000_000_000i64,
            "started_at": 1_700_000_001_000_000_000i64
        },
        "records": [
            {"seq": 1, "ts": 1_700_000_002_000_000_000i64, "stream": "stdout", "text": "building"},
            {"seq": 2, "ts": 1_700_000_003_000_000_000i64, "stream": "stdout", "text": "[COUT] ARTIFACT = app-1.2.tar"},
            {"seq": 3, "ts": 1_700_000_004_000_000_000i64, "stream": "stdout", "text": "[COUT] CO_RESULT = true"}
        ],
        "exit": {"exit_code": 0, "finished_at": 1_700_000_005_000_000_000i64, "last_seq": 3}
    })
}

async fn ingest(daemon: &Daemon, segments: Vec<Value>) -> Result<()> {
    let body = json!({"version": 1, "agent": {"id": "t", "node": "node-a"}, "segments": segments});
    let r = daemon
        .http
        .post(format!("{}/api/v1/ingest", daemon.base))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await?;
    let status = r.status();
    let text = r.text().await?;
    ensure!(status == 200, "ingest answered {status}: {text}");
    Ok(())
}

async fn admin(
    daemon: &Daemon,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
    token: Option<&str>,
) -> Result<(u16, String)> {
    let mut req = daemon
        .http
        .request(method, format!("{}{path}", daemon.base));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let r = req.send().await?;
    Ok((r.status().as_u16(), r.text().await?))
}

async fn admin_json(
    daemon: &Daemon,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, Value)> {
    let (s, text) = admin(daemon, method, path, body, Some(ADMIN)).await?;
    Ok((
        s,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

async fn subscribe(daemon: &Daemon, url: &str, secret: &str, events: &[&str]) -> Result<String> {
    let (s, b) = admin_json(
        daemon,
        reqwest::Method::POST,
        "/api/v1/webhooks",
        Some(&json!({"url": url, "secret": secret, "events": events})),
    )
    .await?;
    ensure!(s == 201, "creating a subscription answered {s}: {b}");
    Ok(b["id"].as_str().context("subscription id")?.to_owned())
}

async fn deliveries(daemon: &Daemon, sub: &str) -> Result<Vec<Value>> {
    let (s, b) = admin_json(
        daemon,
        reqwest::Method::GET,
        &format!("/api/v1/webhooks/{sub}/deliveries?limit=500"),
        None,
    )
    .await?;
    ensure!(s == 200, "deliveries answered {s}: {b}");
    Ok(b["deliveries"].as_array().context("deliveries")?.clone())
}

/// `POST …/deliveries/{delivery}/redeliver` with the admin token: status and answer.
async fn redeliver(daemon: &Daemon, sub: &str, delivery: &str) -> Result<(u16, Value)> {
    admin_json(
        daemon,
        reqwest::Method::POST,
        &format!("/api/v1/webhooks/{sub}/deliveries/{delivery}/redeliver"),
        None,
    )
    .await
}

fn codes(delivery: &Value) -> Vec<Option<u64>> {
    delivery["attempts"]
        .as_array()
        .map(|a| a.iter().map(|x| x["status_code"].as_u64()).collect())
        .unwrap_or_default()
}

fn with_log<T>(daemon: &Daemon, r: Result<T>) -> Result<T> {
    r.map_err(|e| {
        anyhow::anyhow!(
            "{e:#}\nlogarithmd log (tail):\n{}",
            tail(&daemon.proc.log(), 40)
        )
    })
}

// ---------------------------------------------------------------------------------------
// Tests.

/// A receiver that fails the first 3 attempts with 500, then answers 200: delivered once
/// successfully, 4 attempts recorded with their codes, the same signed body every time.
/// The subscription comes from the config file, with a label filter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_until_2xx_and_records_every_attempt() -> Result<()> {
    let rx = Receiver::start(SECRET, Script::FailFirst(3)).await?;
    let db = Db::sqlite()?;
    let cfg = config(&format!(
        "[[webhooks.subscriptions]]\nname = \"release-bot\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\n\
         events = [\"job.finished\"]\nfilters = {{ \"io.containerops.flow\" = \"release\" }}\n",
        rx.url()
    ));
    let daemon = Daemon::start_with(db.url(), &cfg).await?;
    let release = cid("re1");
    ingest(
        &daemon,
        vec![
            finishing_segment(&release, "release"),
            finishing_segment(&cid("ni1"), "nightly"),
        ],
    )
    .await?;

    let delivered = wait_until(
        Duration::from_secs(30),
        "a 200 from the receiver",
        || async { Ok(rx.log().iter().any(|r| r.answered == 200).then_some(())) },
    )
    .await;
    with_log(&daemon, delivered)?;
    // Nothing more arrives: it was delivered, and the nightly job does not match. A later
    // release job is the marker: once its delivery succeeded, the dispatcher has passed
    // whatever the first batch queued.
    let marker = cid("re2");
    ingest(&daemon, vec![finishing_segment(&marker, "release")]).await?;
    let is_marker = |r: &Received| String::from_utf8_lossy(&r.body).contains(&marker);
    let all = rx
        .wait_log(&daemon, "the later job's delivery", |log| {
            log.iter().any(|r| is_marker(r) && r.answered == 200)
        })
        .await?;
    let log: Vec<Received> = all.into_iter().filter(|r| !is_marker(r)).collect();
    ensure!(
        log.iter().all(|r| r.verified),
        "a request failed verification: {log:?}"
    );
    let ids: BTreeSet<&str> = log.iter().map(|r| r.delivery_id.as_str()).collect();
    ensure!(ids.len() == 1, "expected one delivery id, got {ids:?}");
    let got: Vec<(u32, u16)> = log.iter().map(|r| (r.attempt, r.answered)).collect();
    ensure!(
        got == vec![(1, 500), (2, 500), (3, 500), (4, 200)],
        "{got:?}"
    );
    ensure!(
        log.iter().all(|r| r.body == log[0].body),
        "the body changed between attempts"
    );
    ensure!(log.iter().all(|r| r.event == "job.finished"));
    let timestamps: BTreeSet<&str> = log.iter().map(|r| r.timestamp.as_str()).collect();
    ensure!(!timestamps.is_empty() && log.iter().all(|r| r.signature.starts_with("v1,")));

    // The payload.
    let p: Value = serde_json::from_slice(&log[3].body)?;
    let job = &p["data"]["job"];
    let job_id = job["id"].as_str().context("job id")?;
    ensure!(
        p["type"] == "job.finished" && p["delivery_id"] == log[0].delivery_id.as_str(),
        "{p}"
    );
    ensure!(
        p["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{p}"
    );
    ensure!(
        job["container_id"] == release.as_str() && job["name"] == "job-00000re1",
        "{job}"
    );
    ensure!(
        job["image"] == "registry.example/build:1.2" && job["node"] == "node-a",
        "{job}"
    );
    ensure!(
        job["flow"] == "release"
            && job["run"] == "7"
            && job["stage"] == "build"
            && job["action"] == "compile"
            && job["job"] == "make",
        "{job}"
    );
    ensure!(
        job["status"] == "success" && job["result"] == true && job["reason"] == "CO_RESULT = true",
        "{job}"
    );
    ensure!(
        job["exit_code"] == 0 && job["outputs"] == json!({"ARTIFACT": "app-1.2.tar"}),
        "{job}"
    );
    ensure!(
        job["started_at"]
            .as_str()
            .is_some_and(|t| t.starts_with("2023-11-14T22:13:21"))
            && job["finished_at"]
                .as_str()
                .is_some_and(|t| t.starts_with("2023-11-14T22:13:25")),
        "{job}"
    );
    ensure!(
        job["logs_url"] == format!("http://logs.example:7300/api/v1/jobs/{job_id}/logs").as_str(),
        "{job}"
    );

    // The API: the config subscription, without its secret, and the history.
    let (s, text) = admin(
        &daemon,
        reqwest::Method::GET,
        "/api/v1/webhooks",
        None,
        Some(ADMIN),
    )
    .await?;
    ensure!(
        s == 200 && !text.contains(SECRET) && !text.contains("secret"),
        "{s} {text}"
    );
    let list: Value = serde_json::from_str(&text)?;
    let subs = list["webhooks"].as_array().context("webhooks")?;
    ensure!(
        subs.len() == 1 && subs[0]["name"] == "release-bot" && subs[0]["source"] == "config",
        "{list}"
    );
    ensure!(
        subs[0]["enabled"] == true && subs[0]["events"] == json!(["job.finished"]),
        "{list}"
    );
    let sub = subs[0]["id"].as_str().context("id")?;
    let ds = deliveries(&daemon, sub).await?;
    // The first job's delivery, beside the marker's.
    ensure!(ds.len() == 2, "{ds:?}");
    let d = ds
        .iter()
        .find(|d| d["id"] == log[0].delivery_id.as_str())
        .context("the first job's delivery")?;
    ensure!(
        d["id"] == log[0].delivery_id.as_str()
            && d["status"] == "delivered"
            && d["attempt_count"] == 4,
        "{d}"
    );
    ensure!(d["job_id"] == job_id && d["event"] == "job.finished", "{d}");
    ensure!(
        codes(d) == vec![Some(500), Some(500), Some(500), Some(200)],
        "{d}"
    );
    let attempts = d["attempts"].as_array().context("attempts")?;
    ensure!(
        attempts.iter().take(3).all(|a| a["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("HTTP 500"))),
        "{d}"
    );
    ensure!(
        attempts[3]["error"].is_null() && attempts.iter().all(|a| a["latency_ms"].is_u64()),
        "{d}"
    );
    ensure!(
        attempts
            .iter()
            .map(|a| a["attempt"].as_u64())
            .collect::<Vec<_>>()
            == vec![Some(1), Some(2), Some(3), Some(4)],
        "{d}"
    );

    // Without the admin token: 401.
    let (s, _) = admin(
        &daemon,
        reqwest::Method::GET,
        "/api/v1/webhooks",
        None,
        None,
    )
    .await?;
    ensure!(s == 401, "{s}");
    let (s, _) = admin(
        &daemon,
        reqwest::Method::GET,
        &format!("/api/v1/webhooks/{sub}/deliveries"),
        None,
        Some("nope"),
    )
    .await?;
    ensure!(s == 401, "{s}");

    // Redelivery sends the same delivery id again, as attempt 5.
    let (s, b) = redeliver(&daemon, sub, &log[0].delivery_id).await?;
    ensure!(s == 202 && b["status"] == "pending", "{s} {b}");
    let again = wait_until(Duration::from_secs(10), "the redelivery", || async {
        Ok(rx.log().into_iter().find(|r| r.attempt == 5))
    })
    .await?;
    ensure!(
        again.delivery_id == log[0].delivery_id
            && again.attempt == 5
            && again.answered == 200
            && again.verified
    );
    ensure!(
        again.body == log[0].body,
        "a redelivery sends the same body"
    );
    Ok(())
}

/// The receiver is down; logarithmd is killed with SIGKILL between attempts and started
/// again: the delivery still arrives, with the same delivery id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_survives_sigkill_between_attempts() -> Result<()> {
    let db = Db::mysql().await?;
    // A port with nobody listening: the receiver is down.
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let url = format!("http://{addr}/hook");
    let cfg = config("");
    let mut first = Daemon::start_with(db.url(), &cfg).await?;
    let sub = subscribe(&first, &url, SECRET, &["job.finished"]).await?;
    let container = cid("kill1");
    ingest(&first, vec![finishing_segment(&container, "release")]).await?;

    let pending = wait_until(Duration::from_secs(30), "two failed attempts", || async {
        let ds = deliveries(&first, &sub).await?;
        Ok(ds
            .first()
            .filter(|d| d["attempts"].as_array().is_some_and(|a| a.len() >= 2))
            .cloned())
    })
    .await;
    let pending = with_log(&first, pending)?;
    ensure!(pending["status"] == "pending", "{pending}");
    let attempts = pending["attempts"].as_array().context("attempts")?;
    ensure!(
        attempts.iter().all(|a| a["status_code"].is_null()
            && a["error"]
                .as_str()
                .is_some_and(|e| e.contains("connection failed"))),
        "{pending}"
    );
    let delivery_id = pending["id"].as_str().context("delivery id")?.to_owned();
    first.proc.kill();

    // The receiver comes up; a new process takes over from the outbox.
    let rx = Receiver::start_on(addr, SECRET, Script::Ok, Duration::ZERO).await?;
    let second = Daemon::start_with(db.url(), &cfg).await?;
    let got = wait_until(
        Duration::from_secs(30),
        "the delivery after the restart",
        || async { Ok(rx.log().first().cloned()) },
    )
    .await;
    let got = with_log(&second, got)?;
    ensure!(got.verified && got.answered == 200, "{got:?}");
    ensure!(
        got.delivery_id == delivery_id,
        "delivery id changed: {} vs {delivery_id}",
        got.delivery_id
    );
    let body: Value = serde_json::from_slice(&got.body)?;
    ensure!(
        body["data"]["job"]["container_id"] == container.as_str(),
        "{body}"
    );
    ensure!(
        got.attempt as usize > attempts.len(),
        "attempt numbers go on: {}",
        got.attempt
    );

    let done = wait_until(
        Duration::from_secs(10),
        "the delivery recorded as delivered",
        || async {
            let ds = deliveries(&second, &sub).await?;
            Ok(ds.first().filter(|d| d["status"] == "delivered").cloned())
        },
    )
    .await?;
    let c = codes(&done);
    ensure!(
        c.last() == Some(&Some(200)) && c[..c.len() - 1].iter().all(Option::is_none),
        "{done}"
    );
    // A later job's delivery is the marker: once it has arrived, the first one was not
    // sent again.
    ingest(&second, vec![finishing_segment(&cid("kill2"), "release")]).await?;
    let log = rx
        .wait_log(&second, "a later job's delivery", |log| {
            log.iter().any(|r| r.delivery_id != delivery_id)
        })
        .await?;
    ensure!(
        log.iter().filter(|r| r.delivery_id == delivery_id).count() == 1,
        "delivered more than once: {log:?}"
    );
    Ok(())
}

/// 410 Gone disables the subscription: no further attempts, no new deliveries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_disables_the_subscription() -> Result<()> {
    let rx = Receiver::start(SECRET, Script::Gone).await?;
    let db = Db::sqlite()?;
    let daemon = Daemon::start_with(db.url(), &config("")).await?;
    let sub = subscribe(&daemon, &rx.url(), SECRET, &["job.started", "job.finished"]).await?;
    // Only the start first, so exactly one delivery exists when the 410 comes.
    let container = cid("gone1");
    let mut seg = finishing_segment(&container, "release");
    let exit = seg["exit"].take();
    seg.as_object_mut().context("segment")?.remove("exit");
    ingest(&daemon, vec![seg]).await?;

    let disabled = wait_until(
        Duration::from_secs(20),
        "the subscription to be disabled",
        || async {
            let (_, b) = admin_json(
                &daemon,
                reqwest::Method::GET,
                &format!("/api/v1/webhooks/{sub}"),
                None,
            )
            .await?;
            Ok((b["enabled"] == false).then_some(b))
        },
    )
    .await;
    let disabled = with_log(&daemon, disabled)?;
    ensure!(
        disabled["disabled_reason"]
            .as_str()
            .is_some_and(|r| r.contains("410")),
        "{disabled}"
    );

    // The job finishes and another job runs: nothing more is sent or even queued. A
    // second subscription is the marker: once it has both jobs' finishes, the dispatcher
    // has passed the deliveries committed with them.
    let witness = Receiver::start(SECRET, Script::Ok).await?;
    subscribe(&daemon, &witness.url(), SECRET, &["job.finished"]).await?;
    ingest(
        &daemon,
        vec![json!({"container_id": container, "exit": exit})],
    )
    .await?;
    ingest(&daemon, vec![finishing_segment(&cid("gone2"), "release")]).await?;
    witness
        .wait_log(&daemon, "both finishes at the second subscription", |log| {
            log.iter().filter(|r| r.answered == 200).count() >= 2
        })
        .await?;
    let log = rx.log();
    ensure!(
        log.len() == 1
            && log[0].verified
            && log[0].answered == 410
            && log[0].event == "job.started",
        "{log:?}"
    );
    let ds = deliveries(&daemon, &sub).await?;
    ensure!(
        ds.len() == 1 && ds[0]["status"] == "failed" && codes(&ds[0]) == vec![Some(410)],
        "{ds:?}"
    );
    let (s, b) = redeliver(&daemon, &sub, &log[0].delivery_id).await?;
    ensure!(
        s == 409 && b["error"]["code"] == "subscription_disabled",
        "{s} {b}"
    );
    Ok(())
}

/// Two logarithmd processes on one MariaDB, 200 jobs finishing (ingested through both):
/// every delivery id arrives, no attempt is sent twice, and both processes sent some. The
/// receiver answers after 30 ms, so one process (8 requests at once) needs about 0.75 s
/// for all 200: the other, woken by its own commits, claims its share meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_share_the_outbox_without_sending_an_attempt_twice() -> Result<()> {
    let rx = Receiver::start_on(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        SECRET,
        Script::Ok,
        Duration::from_millis(30),
    )
    .await?;
    let db = Db::mysql().await?;
    let cfg = config("concurrency = 8\n");
    let a = Daemon::start_with(db.url(), &cfg).await?;
    let b = Daemon::start_with(db.url(), &cfg).await?;
    let sub = subscribe(&a, &rx.url(), SECRET, &["job.finished"]).await?;
    for batch in 0..20 {
        let segments = (0..10)
            .map(|i| finishing_segment(&cid(&format!("two{batch}x{i}")), "release"))
            .collect();
        ingest(if batch % 2 == 0 { &a } else { &b }, segments).await?;
    }
    let all = wait_until(Duration::from_secs(90), "200 delivery ids", || async {
        let log = rx.log();
        let ids: BTreeSet<String> = log.iter().map(|r| r.delivery_id.clone()).collect();
        Ok((ids.len() >= 200).then_some(log))
    })
    .await;
    let _ = with_log(&b, with_log(&a, all))?;
    // Let anything still in flight land before counting.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let log = rx.log();
    ensure!(
        log.iter().all(|r| r.verified && r.answered == 200),
        "a request failed verification"
    );
    let mut seen: BTreeMap<(String, u32), usize> = BTreeMap::new();
    for r in &log {
        *seen.entry((r.delivery_id.clone(), r.attempt)).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    ensure!(twice.is_empty(), "attempts sent twice: {twice:?}");
    let ids: BTreeSet<&str> = log.iter().map(|r| r.delivery_id.as_str()).collect();
    ensure!(ids.len() == 200, "{} distinct delivery ids", ids.len());
    // Every job's finish, each once: distinct jobs in the payloads.
    let jobs: BTreeSet<String> = log
        .iter()
        .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
        .filter_map(|v| v["data"]["job"]["container_id"].as_str().map(str::to_owned))
        .collect();
    ensure!(jobs.len() == 200, "{} distinct jobs", jobs.len());
    // Storage agrees: 200 deliveries, each delivered, one attempt recorded per request.
    let ds = deliveries(&b, &sub).await?;
    ensure!(
        ds.len() == 200 && ds.iter().all(|d| d["status"] == "delivered"),
        "{} deliveries",
        ds.len()
    );
    ensure!(db.count("webhook_attempts").await? == log.len() as u64);
    let owners: BTreeSet<&str> = ds
        .iter()
        .flat_map(|d| d["attempts"].as_array().into_iter().flatten())
        .filter_map(|a| a["owner"].as_str())
        .collect();
    let per_owner = |o: &str| {
        ds.iter()
            .flat_map(|d| d["attempts"].as_array().into_iter().flatten())
            .filter(|a| a["owner"].as_str() == Some(o))
            .count()
    };
    let shares: Vec<usize> = owners.iter().map(|o| per_owner(o)).collect();
    eprintln!(
        "{} requests for 200 deliveries, sent by {} processes: {shares:?}",
        log.len(),
        owners.len()
    );
    ensure!(
        owners.len() == 2,
        "the work was not shared: attempts by {owners:?}"
    );
    Ok(())
}

/// Bad subscription input gets 400 naming the field and creates nothing; management needs
/// the admin token; no answer contains a secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_subscription_input_is_refused() -> Result<()> {
    let db = Db::sqlite()?;
    let daemon = Daemon::start_with(db.url(), &config("")).await?;
    let good = json!({"url": "https://hooks.example/x", "secret": "s3cret-value", "events": ["job.finished"]});
    let post = reqwest::Method::POST;

    for token in [None, Some("wrong")] {
        let (s, _) = admin(
            &daemon,
            post.clone(),
            "/api/v1/webhooks",
            Some(&good),
            token,
        )
        .await?;
        ensure!(s == 401, "{token:?}: {s}");
    }
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"url": "ftp://hooks.example/x", "secret": "s", "events": ["job.finished"]}),
            "url",
        ),
        (
            json!({"url": "not a url", "secret": "s", "events": ["job.finished"]}),
            "url",
        ),
        (
            json!({"url": "https://hooks.example/x", "secret": "", "events": ["job.finished"]}),
            "secret",
        ),
        (
            json!({"url": "https://hooks.example/x", "events": ["job.finished"]}),
            "secret",
        ),
        (
            json!({"url": "https://hooks.example/x", "secret": "s", "events": []}),
            "events",
        ),
        (
            json!({"url": "https://hooks.example/x", "secret": "s", "events": ["job.exploded"]}),
            "events",
        ),
        (
            json!({"url": "https://hooks.example/x", "secret": "s", "events": ["job.finished"], "colour": 1}),
            "colour",
        ),
        (json!("just a string"), "invalid subscription"),
    ];
    for (body, field) in &cases {
        let (s, b) = admin_json(&daemon, post.clone(), "/api/v1/webhooks", Some(body)).await?;
        ensure!(
            s == 400 && b["error"]["code"] == "invalid_subscription",
            "{body}: {s} {b}"
        );
        ensure!(
            b["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(field)),
            "{body}: message does not name {field}: {b}"
        );
    }
    let r = daemon
        .http
        .post(format!("{}/api/v1/webhooks", daemon.base))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await?;
    ensure!(r.status() == 400, "{}", r.status());
    let (s, b) = admin_json(&daemon, reqwest::Method::GET, "/api/v1/webhooks", None).await?;
    ensure!(s == 200 && b["webhooks"] == json!([]), "{b}");
    ensure!(
        db.count("webhook_subscriptions").await? == 0,
        "a refused subscription was stored"
    );

    // A good one: 201, and neither the answer nor any GET shows the secret.
    let (s, text) = admin(
        &daemon,
        post.clone(),
        "/api/v1/webhooks",
        Some(&good),
        Some(ADMIN),
    )
    .await?;
    ensure!(
        s == 201 && !text.contains("s3cret-value") && !text.contains("secret"),
        "{s} {text}"
    );
    let created: Value = serde_json::from_str(&text)?;
    let id = created["id"].as_str().context("id")?;
    ensure!(
        created["source"] == "api"
            && created["enabled"] == true
            && created["url"] == "https://hooks.example/x",
        "{created}"
    );
    for path in [
        "/api/v1/webhooks".to_owned(),
        format!("/api/v1/webhooks/{id}"),
    ] {
        let (s, text) = admin(&daemon, reqwest::Method::GET, &path, None, Some(ADMIN)).await?;
        ensure!(
            s == 200 && !text.contains("s3cret-value") && !text.contains("secret"),
            "{path}: {s} {text}"
        );
    }
    ensure!(db.count("webhook_subscriptions").await? == 1);
    // Deleted once; a second delete, and the deliveries of no subscription, are 404.
    let one = format!("/api/v1/webhooks/{id}");
    for (method, path, want) in [
        (reqwest::Method::DELETE, one.as_str(), 204),
        (reqwest::Method::DELETE, one.as_str(), 404),
        (reqwest::Method::GET, "/api/v1/webhooks/12/deliveries", 404),
    ] {
        let (s, _) = admin(&daemon, method.clone(), path, None, Some(ADMIN)).await?;
        ensure!(s == want, "{method} {path}: {s}");
    }

    // Without an admin token configured, management is closed.
    let closed = Daemon::start(db.url()).await?;
    let (s, b) = admin(&closed, post, "/api/v1/webhooks", Some(&good), Some(ADMIN)).await?;
    ensure!(s == 401 && b.contains("scope `admin`"), "{s} {b}");
    Ok(())
}

/// A receiver holding the wrong secret cannot verify the signatures (they are real), while
/// the right secret verifies the very same requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_fails_verification() -> Result<()> {
    let rx = Receiver::start("not-the-subscription-secret", Script::Ok).await?;
    let db = Db::sqlite()?;
    let daemon = Daemon::start_with(db.url(), &config("")).await?;
    let sub = subscribe(&daemon, &rx.url(), SECRET, &["job.finished"]).await?;
    ingest(&daemon, vec![finishing_segment(&cid("wrong1"), "release")]).await?;
    let log = wait_until(Duration::from_secs(20), "two attempts", || async {
        let log = rx.log();
        Ok((log.len() >= 2).then_some(log))
    })
    .await;
    let log = with_log(&daemon, log)?;
    for r in &log {
        ensure!(!r.verified && r.answered == 401, "{r:?}");
        ensure!(
            verify(SECRET, &r.delivery_id, &r.timestamp, &r.body, &r.signature),
            "the right secret must verify the same request"
        );
        let mut tampered = r.body.to_vec();
        tampered[0] = b' ';
        ensure!(
            !verify(
                SECRET,
                &r.delivery_id,
                &r.timestamp,
                &tampered,
                &r.signature
            ),
            "a changed body must not verify"
        );
    }
    ensure!(
        log.iter().all(|r| r.delivery_id == log[0].delivery_id),
        "retries keep the delivery id"
    );
    let ds = deliveries(&daemon, &sub).await?;
    ensure!(ds.len() == 1 && ds[0]["status"] == "pending", "{ds:?}");
    ensure!(codes(&ds[0]).iter().all(|c| *c == Some(401)), "{ds:?}");
    if ds[0]["attempts"].as_array().map_or(0, Vec::len) < 2 {
        bail!("expected at least two recorded attempts: {ds:?}");
    }
    Ok(())
}
