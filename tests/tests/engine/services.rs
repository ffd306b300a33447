//! Issue #14 end to end: service jobs (`type: service`) against a real HTTP service (an
//! axum server in the test) and a real logarithmd: answered at once, answered by callback,
//! a callback that never comes (timeout), wrong and reused tokens, an unreachable
//! endpoint (retried, then failed), and a service job with an image refused at
//! registration. No container runs.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use logarithm_tests::webhook_receiver::{header, verify};

use super::*;

/// What the test service received: path, verified signature, body.
#[derive(Debug, Clone)]
struct Call {
    path: String,
    verified: bool,
    attempt: String,
    body: Value,
}

pub(super) struct Service {
    pub(super) addr: SocketAddr,
    calls: Arc<Mutex<Vec<Call>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Service {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `/now` answers at once with a result and outputs; `/later` and `/never` answer 202.
async fn serve_call(
    State(calls): State<Arc<Mutex<Vec<Call>>>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let id = header(&headers, "webhook-id");
    let verified = verify(
        SECRET,
        &id,
        &header(&headers, "webhook-timestamp"),
        &body,
        &header(&headers, "webhook-signature"),
    ) && header(&headers, "logarithm-event") == "service.call";
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let verified = verified && v["job_id"] == id.as_str();
    let path = uri.path().to_owned();
    if let Ok(mut c) = calls.lock() {
        c.push(Call {
            path: path.clone(),
            verified,
            attempt: header(&headers, "logarithm-attempt"),
            body: v.clone(),
        });
    }
    if !verified {
        return (StatusCode::UNAUTHORIZED, String::new());
    }
    match path.as_str() {
        "/now" => {
            let answer = json!({
                "result": true,
                "outputs": {
                    "URL": format!("https://deployed.example/{}", v["run"].as_str().unwrap_or("")),
                    "GREETING": v["environment"]["GREETING"],
                    "REPLICAS": 3,
                },
                "message": "deployed",
            });
            (StatusCode::OK, answer.to_string())
        }
        _ => (StatusCode::ACCEPTED, String::new()),
    }
}

impl Service {
    pub(super) async fn start() -> Result<Service> {
        Service::start_on(0).await
    }

    async fn start_on(port: u16) -> Result<Service> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let calls = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .fallback(axum::routing::post(serve_call))
            .with_state(Arc::clone(&calls));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Service { addr, calls, task })
    }

    fn calls(&self, path: &str) -> Vec<Call> {
        self.calls
            .lock()
            .map(|c| c.iter().filter(|c| c.path == path).cloned().collect())
            .unwrap_or_default()
    }
}

pub(super) fn service_config() -> String {
    format!("service_secrets = {{ default = \"{SECRET}\" }}\n")
}

/// A daemon's configuration for the flows tagged `tag`, with [`service_config`].
fn daemon_with_services_config(tag: &str) -> String {
    format!(
        "{}{}",
        daemon_config(&format!("engine-{tag}")),
        service_config()
    )
}

fn service_flow(tag: &str, base: &str) -> String {
    format!(
        r#"uri: logarithm/e2e/service-{tag}
environments:
  - GREETING: hello
stages:
  - type: start
    name: start
  - type: normal
    name: deploy
    actions:
      - name: now
        jobs:
          - type: service
            name: now
            endpoint: {base}/now
            timeout: 60
            outputs: [URL, GREETING]
  - type: normal
    name: verify
    actions:
      - name: later
        jobs:
          - type: service
            name: later
            endpoint: {base}/later?key=hidden
            timeout: 120
            subscriptions:
              - "deploy.now.now[URL]": DEPLOYED
            pre: |
              env.STAMP = "pre:" .. inputs.DEPLOYED
  - type: end
    name: end
"#
    )
}

/// Posts a callback body to a token's URL (no bearer token: the token is the credential).
async fn callback(d: &Daemon, token: &str, body: &Value) -> Result<(u16, Value)> {
    call(
        d,
        reqwest::Method::POST,
        &format!("/api/v1/callbacks/{token}"),
        Some(Body::Json(body)),
        None,
    )
    .await
}

fn token_of(call: &Call) -> Result<String> {
    let url = call.body["callback_url"].as_str().context("callback_url")?;
    Ok(url
        .rsplit('/')
        .next()
        .context("token in callback_url")?
        .to_owned())
}

/// A service job answered at once, then one answered by callback that receives the first
/// one's output (and an environment value its pre script derives from it); a wrong token is 404 and a reused one 409, and neither changes the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_jobs_answer_at_once_and_by_callback() -> Result<()> {
    // The mask is applied to what services answer, as to what containers print.
    let s = Setup::start_with(&format!(
        "{}[masking]\nliterals = [\"r-42-secret\"]\n",
        service_config()
    ))
    .await?;
    let d = &s.daemon;
    let svc = Service::start().await?;
    let base = format!("http://{}", svc.addr);
    let flow = register(d, &service_flow(&s.tag, &base)).await?;
    let id = start_run(d, &flow, Some(&json!({ "co_data": "input-1" }))).await?;

    // The first job is answered at once; the second waits for its callback.
    let run = wait_run(
        &s,
        &id,
        "the callback job waits",
        Duration::from_secs(60),
        |r| {
            job(r, "verify", "later", "later")["status"] == "running"
                && job(r, "verify", "later", "later")["container_id"].is_string()
        },
    )
    .await?;
    let now = job(&run, "deploy", "now", "now");
    assert_eq!(now["status"], "success", "{now}");
    assert_eq!(now["reason"], "CO_RESULT = true", "{now}");
    let url = format!("https://deployed.example/{id}");
    assert_eq!(now["outputs"]["URL"], url.as_str());
    assert_eq!(now["outputs"]["GREETING"], "hello");
    assert_eq!(now["outputs"]["REPLICAS"], "3");
    assert!(
        now["container_id"]
            .as_str()
            .is_some_and(|c| c.starts_with("svc-")),
        "{now}"
    );
    assert_eq!(
        log_of(d, now).await?,
        strings(&[
            &format!("POST {base}/now"),
            "HTTP 200: answered",
            "service: deployed",
            "[COUT] GREETING = hello",
            "[COUT] REPLICAS = 3",
            &format!("[COUT] URL = {url}"),
            "[COUT] CO_RESULT = true",
        ])
    );

    // The call is a job like a container's, with the engine's and the extra labels.
    let jid = now["job_id"].as_str().context("job_id")?;
    let (st, row) = d.get_json(&format!("/api/v1/jobs/{jid}")).await?;
    assert_eq!(st, 200, "{row}");
    assert_eq!(row["image"], format!("{base}/now"), "{row}");
    assert_eq!(row["labels"]["io.containerops.job"], "now", "{row}");
    assert_eq!(
        row["labels"]["logarithm.test"],
        format!("engine-{}", s.tag),
        "{row}"
    );
    assert_eq!(row["status"], "success", "{row}");

    let first = svc.calls("/now");
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(first[0].verified, "signed with the default service secret");
    assert_eq!(first[0].attempt, "1");
    let b = &first[0].body;
    assert_eq!(b["flow"], flow.as_str());
    assert_eq!(b["run"], id.as_str());
    assert_eq!(
        (b["stage"].as_str(), b["action"].as_str(), b["job"].as_str()),
        (Some("deploy"), Some("now"), Some("now"))
    );
    assert_eq!(b["job_id"], now["container_id"]);
    assert_eq!(b["co_data"], "input-1");
    assert_eq!(b["environment"]["GREETING"], "hello");
    assert_eq!(b["environment"]["CO_DATA"], "input-1");
    assert_eq!(b["subscriptions"], json!({}));
    assert!(b["expires_at"].is_string(), "{b}");

    let later_calls = svc.calls("/later");
    assert_eq!(later_calls.len(), 1, "{later_calls:?}");
    let lb = &later_calls[0].body;
    assert!(later_calls[0].verified);
    assert_eq!(lb["subscriptions"], json!({ "deploy.now.now[URL]": url }));
    assert_eq!(lb["environment"]["DEPLOYED"], url.as_str());
    // The pre script ran before the call, on what it sends.
    assert_eq!(lb["environment"]["STAMP"], format!("pre:{url}"));
    let token = token_of(&later_calls[0])?;
    // The call's id and 256 random bits, in hex.
    assert_eq!(token.len(), 96, "{token}");
    assert!(lb["job_id"]
        .as_str()
        .is_some_and(|id| id == format!("svc-{}", &token[..32])));
    assert!(lb["callback_url"]
        .as_str()
        .is_some_and(|u| u.starts_with(&format!("{}/api/v1/callbacks/", d.base))));

    // Wrong tokens: 404, and the run goes on waiting.
    let result = json!({ "result": true, "outputs": { "RELEASE": "r-42", "KEY": "r-42-secret" } });
    let wrong = format!("{:064x}", rand_u64());
    let (st, v) = callback(d, &wrong, &result).await?;
    assert_eq!(st, 404, "{v}");
    let (st, v) = callback(d, "not-a-token", &result).await?;
    assert_eq!(st, 404, "{v}");
    // A bad body keeps the token usable.
    let (st, v) = callback(d, &token, &json!({ "outputs": {} })).await?;
    assert_eq!(st, 400, "{v}");
    let (_, r) = d.get_json(&format!("/api/v1/runs/{id}")).await?;
    assert_eq!(r["status"], "running", "{r}");
    assert_eq!(job(&r, "verify", "later", "later")["status"], "running");

    // The right token ends the job with the callback's result.
    let (st, v) = callback(d, &token, &result).await?;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["container_id"],
        job(&r, "verify", "later", "later")["container_id"]
    );
    let run = wait_final(&s, &id, "the run ends", Duration::from_secs(60)).await?;
    assert_eq!(run["status"], "success", "{run}");
    let later = job(&run, "verify", "later", "later");
    assert_eq!(later["status"], "success", "{later}");
    assert_eq!(later["outputs"], json!({ "KEY": "***", "RELEASE": "r-42" }));
    let log = log_of(d, later).await?;
    assert_eq!(log.len(), 5, "{log:?}");
    assert_eq!(
        log[0],
        format!("POST {base}/later"),
        "the query stays hidden"
    );
    assert!(
        log[1].starts_with("HTTP 202 Accepted: waiting for the callback until "),
        "{log:?}"
    );
    assert_eq!(
        log[2..],
        strings(&[
            "[COUT] KEY = ***",
            "[COUT] RELEASE = r-42",
            "[COUT] CO_RESULT = true"
        ])
    );

    // Reused: 409, and nothing changes.
    let (st, v) = callback(d, &token, &json!({ "result": false })).await?;
    assert_eq!(st, 409, "{v}");
    let (_, again) = d.get_json(&format!("/api/v1/runs/{id}")).await?;
    assert_eq!(again["status"], "success");
    assert_eq!(
        job(&again, "verify", "later", "later")["outputs"],
        json!({ "KEY": "***", "RELEASE": "r-42" })
    );
    assert_eq!(
        svc.calls("/now").len() + svc.calls("/later").len(),
        2,
        "one request per job"
    );

    // Every attempt and callback is counted by outcome.
    let page = d.metrics_text().await?;
    for (series, n) in [
        ("logarithmd_service_calls_total{outcome=\"answered\"}", 1),
        ("logarithmd_service_calls_total{outcome=\"accepted\"}", 1),
        ("logarithmd_service_calls_total{outcome=\"failed\"}", 0),
        ("logarithmd_service_callbacks_total{outcome=\"unknown\"}", 2),
        ("logarithmd_service_callbacks_total{outcome=\"invalid\"}", 1),
        (
            "logarithmd_service_callbacks_total{outcome=\"recorded\"}",
            1,
        ),
        ("logarithmd_service_callbacks_total{outcome=\"used\"}", 1),
    ] {
        assert!(
            page.lines().any(|l| l == format!("{series} {n}")),
            "{series} {n} not in:\n{}",
            page.lines()
                .filter(|l| l.contains("service_"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    Ok(())
}

fn waiting_flow(tag: &str, base: &str, closed: &str) -> String {
    format!(
        r#"uri: logarithm/e2e/service-wait-{tag}
stages:
  - type: start
    name: start
  - type: normal
    name: call
    sequencing: parallel
    actions:
      - name: silent
        jobs:
          - type: service
            name: never
            endpoint: {base}/never
            timeout: 3s
      - name: unreachable
        jobs:
          - type: service
            name: closed
            endpoint: {closed}/hook
            timeout: 20s
  - type: end
    name: end
"#
    )
}

/// A callback that never comes: the job times out with that reason, and the token is
/// refused afterwards (410); the same after a cancel. An endpoint that refuses connections is retried on the
/// webhook schedule, then fails the job. A service job with an image is a 400 naming its
/// line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_jobs_time_out_and_unreachable_ones_fail() -> Result<()> {
    let s = Setup::start_with(&service_config()).await?;
    let d = &s.daemon;
    let svc = Service::start().await?;
    let base = format!("http://{}", svc.addr);
    // A port nothing listens on.
    let closed = format!("http://127.0.0.1:{}", logarithm_tests::free_port()?);
    let flow = register(d, &waiting_flow(&s.tag, &base, &closed)).await?;
    let id = start_run(d, &flow, None).await?;
    let run = wait_final(&s, &id, "the run ends", Duration::from_secs(90)).await?;
    let never = job(&run, "call", "silent", "never");
    assert_eq!(never["status"], "timeout", "{never}");
    assert_eq!(never["reason"], "job timed out after 3s", "{never}");
    assert_eq!(run["status"], "timeout", "{run}");
    // The parallel job was cancelled by the timeout, or had failed already.
    let closed_job = job(&run, "call", "unreachable", "closed");
    assert!(
        matches!(closed_job["status"].as_str(), Some("failure" | "cancelled")),
        "{closed_job}"
    );
    let calls = svc.calls("/never");
    assert_eq!(calls.len(), 1, "{calls:?}");
    let token = token_of(&calls[0])?;
    // The job's record ends too, with why.
    let log = wait_until(
        Duration::from_secs(30),
        "the timed-out call's log ends",
        || async {
            let log = log_of(d, never).await?;
            Ok((log.len() >= 3).then_some(log))
        },
    )
    .await?;
    assert_eq!(
        log[2], "failed: stopped before the service answered",
        "{log:?}"
    );
    let (st, v) = callback(d, &token, &json!({ "result": true })).await?;
    assert_eq!(st, 410, "{v}");
    let (_, after) = d.get_json(&format!("/api/v1/runs/{id}")).await?;
    assert_eq!(job(&after, "call", "silent", "never")["status"], "timeout");

    // Cancelled while it waits: the call is revoked, its callback refused.
    let waiting = waiting_flow(&s.tag, &base, &closed)
        .replace("service-wait-", "service-cancel-")
        .replace("timeout: 3s", "timeout: 5m");
    let flow = register(d, &waiting).await?;
    let id = start_run(d, &flow, None).await?;
    let calls = wait_until(Duration::from_secs(30), "the second call", || async {
        let c = svc.calls("/never");
        Ok((c.len() == 2).then_some(c))
    })
    .await?;
    let token = token_of(&calls[1])?;
    let (st, v) = post(d, &format!("/api/v1/runs/{id}/cancel"), None).await?;
    assert_eq!(st, 200, "{v}");
    let run = wait_final(&s, &id, "the cancelled run ends", Duration::from_secs(30)).await?;
    assert_eq!(run["status"], "cancelled", "{run}");
    assert_eq!(job(&run, "call", "silent", "never")["status"], "cancelled");
    let (st, v) = callback(d, &token, &json!({ "result": true })).await?;
    assert_eq!(st, 410, "{v}");

    // Unreachable alone: retried, then failed within its timeout.
    let alone = waiting_flow(&s.tag, &base, &closed)
        .replace("service-wait-", "service-closed-")
        .replace(
            &format!(
                "      - name: silent\n        jobs:\n          - type: service\n            \
                 name: never\n            endpoint: {base}/never\n            timeout: 3s\n"
            ),
            "",
        );
    let flow = register(d, &alone).await?;
    let id = start_run(d, &flow, None).await?;
    let run = wait_final(&s, &id, "the unreachable run ends", Duration::from_secs(90)).await?;
    let closed_job = job(&run, "call", "unreachable", "closed");
    assert_eq!(closed_job["status"], "failure", "{closed_job}");
    let reason = closed_job["reason"].as_str().context("reason")?;
    assert!(
        reason.starts_with("gave up after ") && reason.contains("attempts: connection failed"),
        "{reason}"
    );
    let attempts: u32 = reason["gave up after ".len()..]
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .context("attempt count")?;
    assert!(attempts >= 3, "retried on the webhook schedule: {reason}");

    // A service job with an image instead of a URL.
    let bad = service_flow(&format!("bad-{}", s.tag), &base).replace(
        &format!("endpoint: {base}/now"),
        &format!("endpoint: {IMAGE}"),
    );
    let msg = refused(d, &bad).await?;
    assert!(
        msg.starts_with(&format!(
            "invalid flow: line 14: stages[1].actions[0].jobs[0].endpoint: a service job calls an http(s) URL, but its endpoint \"{IMAGE}\" is an image"
        )),
        "{msg}"
    );
    Ok(())
}

/// Two logarithmd replicas on one database: the run is driven by the one that started it,
/// the callback goes to the other; the token and the result go through storage, and the
/// driving replica advances the run. The used token is refused by both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_to_another_replica_advances_the_run() -> Result<()> {
    let db = Db::mysql().await?;
    let tag = rand_tag();
    let config = daemon_with_services_config(&tag);
    let a = Daemon::start_with(db.url(), &config).await?;
    let b = Daemon::start_with(db.url(), &config).await?;
    let svc = Service::start().await?;
    let base = format!("http://{}", svc.addr);
    let flow = register(&a, &service_flow(&tag, &base)).await?;
    let id = start_run(&a, &flow, None).await?;
    let logs = || {
        format!(
            "a:\n{}\nb:\n{}",
            tail(&a.proc.log(), 40),
            tail(&b.proc.log(), 40)
        )
    };
    let call = wait_until(
        Duration::from_secs(60),
        "the callback job is called",
        || async { Ok(svc.calls("/later").into_iter().next()) },
    )
    .await
    .with_context(logs)?;
    let token = token_of(&call)?;
    let result =
        json!({ "result": false, "outputs": { "RELEASE": "r-7" }, "message": "smoke test failed" });
    let (st, v) = callback(&b, &token, &result).await?;
    assert_eq!(st, 200, "{v}");
    let run = wait_until(
        Duration::from_secs(60),
        "the run ends on replica a",
        || async {
            let (st, v) = a.get_json(&format!("/api/v1/runs/{id}")).await?;
            Ok((st == 200 && is_final(&v)).then_some(v))
        },
    )
    .await
    .with_context(logs)?;
    assert_eq!(run["status"], "failure", "{run}");
    let later = job(&run, "verify", "later", "later");
    assert_eq!(later["status"], "failure", "{later}");
    assert_eq!(later["reason"], "CO_RESULT = false", "{later}");
    assert_eq!(later["outputs"], json!({ "RELEASE": "r-7" }));
    for d in [&a, &b] {
        let (st, v) = callback(d, &token, &result).await?;
        assert_eq!(st, 409, "{v}");
    }
    Ok(())
}

/// A call whose request is being retried when logarithmd is killed is made again after it
/// restarts (with a new token), and its answer ends the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_cut_short_by_a_restart_is_made_again() -> Result<()> {
    let db = Db::mysql().await?;
    let tag = rand_tag();
    let config = daemon_with_services_config(&tag);
    let mut d = Daemon::start_with(db.url(), &config).await?;
    // Nothing listens there yet: the request is retried.
    let port = logarithm_tests::free_port()?;
    let flow = register(
        &d,
        &service_flow(&tag, &format!("http://127.0.0.1:{port}"))
            .replace("timeout: 60", "timeout: 5m"),
    )
    .await?;
    let id = start_run(&d, &flow, None).await?;
    wait_until(Duration::from_secs(30), "the call is retried", || async {
        Ok(d.proc
            .log()
            .contains("service call failed; will retry")
            .then_some(()))
    })
    .await?;
    d.proc.kill();
    let svc = Service::start_on(port).await?;
    d.start_again().await?;
    let run = wait_until(
        Duration::from_secs(60),
        "the call is answered after the restart",
        || async {
            let (st, v) = d.get_json(&format!("/api/v1/runs/{id}")).await?;
            Ok((st == 200 && job(&v, "deploy", "now", "now")["status"] != "running").then_some(v))
        },
    )
    .await
    .with_context(|| tail(&d.proc.log(), 40))?;
    let now = job(&run, "deploy", "now", "now");
    assert_eq!(now["status"], "success", "{now}");
    assert_eq!(
        now["outputs"]["URL"],
        format!("https://deployed.example/{id}")
    );
    let calls = svc.calls("/now");
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(calls[0].verified);
    assert_eq!(
        calls[0].body["job_id"], now["container_id"],
        "the same call, made again"
    );
    assert!(d.proc.log().contains("making a service call again"));
    Ok(())
}
