//! End-to-end flows (issue #5): the real `logarithmd` (with its flow engine) and `antilog`
//! binaries, real Docker and a real MariaDB. The engine starts job containers from the
//! offline test image; the agent ships their logs; logarithmd stores them, decides each
//! job's verdict, and the engine advances the run. Every job container also carries the
//! test's `logarithm.test` label (`[engine] extra_labels`), so only this test's agent
//! collects it.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use logarithm_tests::docker::parse_ts;
use logarithm_tests::flows;
use logarithm_tests::webhook_receiver::{Receiver, Script};
use logarithm_tests::{rand_tag, rand_u64, tail, wait_until, Agent, Daemon, Db};
use serde_json::{json, Value};

const ADMIN: &str = "engine-admin-token";
const SECRET: &str = "flow-receiver-secret";
const IMAGE: &str = logarithm_tests::TEST_IMAGE;

// ---------------------------------------------------------------------------------------
// Harness.

/// logarithmd's config for these tests: short engine and webhook timings.
fn daemon_config(label: &str) -> String {
    format!(
        "{}\
         [webhooks]\npoll_interval = \"100ms\"\nrequest_timeout = \"2s\"\nlease = \"4s\"\n\
         retry_initial = \"200ms\"\nretry_max_delay = \"800ms\"\n\
         [engine]\nstop_grace = \"1s\"\nreconcile_every = \"1s\"\nlease_ttl = \"3s\"\n\
         extra_labels = {{ \"logarithm.test\" = \"{label}\" }}\n",
        logarithm_tests::token_toml("admin", ADMIN, &["admin"])
    )
}

/// A daemon on a fresh MariaDB database and an agent for this test's containers.
struct Setup {
    daemon: Daemon,
    agent: Agent,
    _db: Db,
    tag: String,
}

impl Setup {
    async fn start() -> Result<Setup> {
        Setup::start_with("").await
    }

    /// With more `[engine]` settings (`extra` is appended to that section).
    async fn start_with(extra: &str) -> Result<Setup> {
        let db = Db::mysql().await?;
        let tag = rand_tag();
        let label = format!("engine-{tag}");
        let config = format!("{}{extra}", daemon_config(&label));
        let daemon = Daemon::start_with(db.url(), &config).await?;
        let agent = Agent::start(&daemon.base, &label)?;
        Ok(Setup {
            daemon,
            agent,
            _db: db,
            tag,
        })
    }

    /// Both processes' logs, for failure messages.
    fn logs(&self) -> String {
        format!(
            "logarithmd (tail):\n{}\nantilog (tail):\n{}",
            tail(&self.daemon.proc.log(), 60),
            tail(&self.agent.proc.log(), 20)
        )
    }
}

/// A request with the admin token; the body is JSON (a `Value`) or text (a YAML flow).
async fn call(
    d: &Daemon,
    method: reqwest::Method,
    path: &str,
    body: Option<Body<'_>>,
    token: Option<&str>,
) -> Result<(u16, Value)> {
    let mut req = d.http.request(method, format!("{}{path}", d.base));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req = match body {
        Some(Body::Json(v)) => req.json(v),
        Some(Body::Text(t)) => req
            .header("content-type", "application/yaml")
            .body(t.to_owned()),
        None => req,
    };
    let r = req.send().await?;
    logarithm_tests::status_and_json(r).await
}

enum Body<'a> {
    Json(&'a Value),
    Text(&'a str),
}

async fn post(d: &Daemon, path: &str, body: Option<Body<'_>>) -> Result<(u16, Value)> {
    call(d, reqwest::Method::POST, path, body, Some(ADMIN)).await
}

/// Registers a flow; returns its name.
async fn register(d: &Daemon, yaml: &str) -> Result<String> {
    let (s, v) = post(d, "/api/v1/flows", Some(Body::Text(yaml))).await?;
    ensure!(s == 201, "registering answered {s}: {v}");
    Ok(v["name"].as_str().context("flow name")?.to_owned())
}

/// Registers a flow that must be refused: asserts the 400; the error message.
async fn refused(d: &Daemon, yaml: &str) -> Result<String> {
    let (st, v) = post(d, "/api/v1/flows", Some(Body::Text(yaml))).await?;
    assert_eq!(st, 400, "{v}");
    Ok(v["error"]["message"]
        .as_str()
        .context("message")?
        .to_owned())
}

/// Starts a run; returns its id.
async fn start_run(d: &Daemon, flow: &str, body: Option<&Value>) -> Result<String> {
    let (s, v) = post(
        d,
        &format!("/api/v1/flows/{flow}/runs"),
        body.map(Body::Json),
    )
    .await?;
    ensure!(s == 201, "starting a run answered {s}: {v}");
    Ok(v["id"].as_str().context("run id")?.to_owned())
}

/// Polls a run until `pred` holds.
async fn wait_run(
    s: &Setup,
    id: &str,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let d = &s.daemon;
    let r = wait_until(timeout, what, || async {
        let (status, v) = d.get_json(&format!("/api/v1/runs/{id}")).await?;
        Ok((status == 200 && pred(&v)).then_some(v))
    })
    .await;
    match r {
        Ok(v) => Ok(v),
        Err(e) => {
            let last = d.get_json(&format!("/api/v1/runs/{id}")).await.ok();
            bail!("{e:#}\nrun now: {last:?}\n{}", s.logs())
        }
    }
}

/// [`wait_run`] until the run has ended.
async fn wait_final(s: &Setup, id: &str, what: &str, timeout: Duration) -> Result<Value> {
    wait_run(s, id, what, timeout, is_final).await
}

fn is_final(v: &Value) -> bool {
    !matches!(v["status"].as_str(), Some("pending" | "running") | None)
}

fn stage<'a>(run: &'a Value, name: &str) -> &'a Value {
    run["stages"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .unwrap_or(&Value::Null)
}

fn job<'a>(run: &'a Value, st: &str, action: &str, name: &str) -> &'a Value {
    stage(run, st)["actions"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["name"] == action))
        .and_then(|a| a["jobs"].as_array())
        .and_then(|j| j.iter().find(|j| j["name"] == name))
        .unwrap_or(&Value::Null)
}

fn ts(v: &Value, field: &str) -> Result<i64> {
    parse_ts(
        v[field]
            .as_str()
            .with_context(|| format!("{field} missing in {v}"))?,
    )
}

/// Every stored line of a job, as text.
async fn log_of(d: &Daemon, job: &Value) -> Result<Vec<String>> {
    let id = job["job_id"].as_str().context("job_id")?;
    Ok(d.all_lines(id)
        .await?
        .iter()
        .map(|l| l["text"].as_str().unwrap_or("<binary>").to_owned())
        .collect())
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// Whether Docker still runs the container (gone counts as not running).
async fn container_running(docker: &bollard::Docker, id: &str) -> Result<bool> {
    match docker
        .inspect_container(
            id,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
    {
        Ok(i) => Ok(i.state.and_then(|s| s.running).unwrap_or(false)),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

// ---------------------------------------------------------------------------------------
// The webhook receiver (`logarithm_tests::webhook_receiver`), its requests as JSON.

#[derive(Debug, Clone)]
struct Received {
    event: String,
    verified: bool,
    body: Value,
}

/// What `rx` received so far, with the bodies parsed.
fn received(rx: &Receiver) -> Vec<Received> {
    rx.log()
        .into_iter()
        .map(|r| Received {
            event: r.event,
            verified: r.verified,
            body: serde_json::from_slice(&r.body).unwrap_or(Value::Null),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Flows.

fn main_flow(tag: &str) -> String {
    let build_and_package =
        flows::build_and_package(IMAGE, "echo linting; seq 1 500; sleep 1; echo lint ok");
    format!(
        r#"uri: logarithm/e2e/main-{tag}
title: Issue 5
timeout: 5m
environments:
  - CO_DATA: "default input"
stages:
  - type: start
    name: start
{build_and_package}
  - type: pause
    name: approval
    timeout: 5m
  - type: normal
    name: checks
    sequencing: sequence
    actions:
      - name: verify
        jobs:
          - type: component
            name: first
            endpoint: {IMAGE}
            command: ["sh", "-c", "echo first check passes"]
          - type: component
            name: second
            endpoint: {IMAGE}
            command: ["sh", "-c", "echo second check fails; echo '[COUT] CO_RESULT = false'"]
          - type: component
            name: third
            endpoint: {IMAGE}
            command: ["sh", "-c", "echo never printed"]
  - type: end
    name: end
"#
    )
}

/// One normal stage with one job running `script`, optionally with a job timeout, and
/// optionally a pause stage before it.
fn one_job_flow(name: &str, script: &str, timeout: Option<u32>, pause: bool) -> String {
    let pause = if pause {
        "\n  - type: pause\n    name: approval"
    } else {
        ""
    };
    flows::one_job_flow(
        &format!("uri: logarithm/e2e/{name}"),
        pause,
        IMAGE,
        &flows::timeout_key(timeout),
        script,
    )
}

// ---------------------------------------------------------------------------------------
// Tests.

/// Issue #14: scripts, labels, `active`.
#[path = "engine/job_model.rs"]
mod job_model;
/// Issue #14: service jobs and their callbacks.
#[path = "engine/services.rs"]
mod services;
/// Issue #14: webhook and cron triggers.
#[path = "engine/triggers.rs"]
mod triggers;

/// Issue #5: start; a parallel stage whose output a later job receives; a pause approved
/// through the API; a sequence whose second job fails so the third never runs; the run
/// fails; every status, the order in time, every job's full log, and a signed
/// `flow.finished` webhook with one line per job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_5_flow_runs_end_to_end() -> Result<()> {
    let s = Setup::start().await?;
    let d = &s.daemon;
    let rx = Receiver::start(SECRET, Script::Ok).await?;
    let flow_yaml = main_flow(&s.tag);
    let flow = register(d, &flow_yaml).await?;
    assert_eq!(flow, format!("logarithm.e2e.main-{}", s.tag));
    // Registering the same file again updates it (200), keeping one flow.
    let (st, v) = post(d, "/api/v1/flows", Some(Body::Text(&flow_yaml))).await?;
    assert_eq!(st, 200, "{v}");
    let (st, flows) = d.get_json("/api/v1/flows").await?;
    assert_eq!(st, 200);
    let names: Vec<&str> = flows["flows"]
        .as_array()
        .context("flows")?
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert_eq!(names, vec![flow.as_str()]);

    let sub = json!({
        "url": format!("http://{}/hook", rx.addr),
        "secret": SECRET,
        "events": ["flow.finished"],
        "filters": {"io.containerops.flow": flow},
    });
    let (st, v) = post(d, "/api/v1/webhooks", Some(Body::Json(&sub))).await?;
    assert_eq!(st, 201, "{v}");

    let co_data = format!("input-{}", s.tag);
    let id = start_run(d, &flow, Some(&json!({ "co_data": co_data }))).await?;

    // Paused: everything before the pause succeeded, nothing after it started.
    let run = wait_run(&s, &id, "the pause", Duration::from_secs(90), |r| {
        stage(r, "approval")["status"] == "running" || is_final(r)
    })
    .await?;
    assert_eq!(run["status"], "running", "{run}");
    for st in ["start", "build", "package"] {
        assert_eq!(stage(&run, st)["status"], "success", "stage {st}: {run}");
    }
    assert_eq!(stage(&run, "checks")["status"], "pending");
    let version = job(&run, "build", "compile", "version");
    assert_eq!(version["outputs"]["VERSION"], "1.2.3", "{run}");
    let tag_job = job(&run, "package", "image", "tag");
    assert_eq!(tag_job["status"], "success", "{run}");
    // The subscribed output reached the later job, and the run's CO_DATA replaced the
    // flow's: the job printed both, and its stored log says so.
    assert_eq!(
        log_of(d, tag_job).await?,
        vec![format!("tagging 1.2.3 with {co_data}")]
    );
    // Approving a run twice, or one that does not exist, is refused.
    let (st, v) = post(d, "/api/v1/runs/nope/approve", None).await?;
    assert_eq!(st, 404, "{v}");
    let (st, v) = post(
        d,
        &format!("/api/v1/runs/{id}/approve"),
        Some(Body::Json(&json!({"by": "tester"}))),
    )
    .await?;
    assert_eq!(st, 200, "{v}");
    assert_eq!(stage(&v, "approval")["status"], "success");
    assert_eq!(stage(&v, "approval")["reason"], "approved by tester");

    let run = wait_final(&s, &id, "the run to end", Duration::from_secs(90)).await?;
    assert_eq!(run["status"], "failure", "{run}");
    assert_eq!(
        run["reason"],
        "stage checks: action verify: job second: CO_RESULT = false"
    );
    let (st, again) = post(d, &format!("/api/v1/runs/{id}/approve"), None).await?;
    assert_eq!(st, 409, "{again}");
    let expect = [
        ("start", "success"),
        ("build", "success"),
        ("package", "success"),
        ("approval", "success"),
        ("checks", "failure"),
        ("end", "pending"),
    ];
    for (name, status) in expect {
        assert_eq!(stage(&run, name)["status"], status, "stage {name}: {run}");
    }
    let jobs = [
        ("build", "compile", "version", "success"),
        ("build", "lint", "lint", "success"),
        ("package", "image", "tag", "success"),
        ("checks", "verify", "first", "success"),
        ("checks", "verify", "second", "failure"),
        ("checks", "verify", "third", "pending"),
    ];
    for (st, a, j, status) in jobs {
        assert_eq!(job(&run, st, a, j)["status"], status, "job {j}: {run}");
    }
    assert_eq!(
        job(&run, "checks", "verify", "second")["reason"],
        "CO_RESULT = false"
    );
    let third = job(&run, "checks", "verify", "third");
    assert!(third["container_id"].is_null() && third["started_at"].is_null());

    // Order in time.
    let t = |st: &str, f: &str| ts(stage(&run, st), f);
    let tj = |st: &str, a: &str, j: &str, f: &str| ts(job(&run, st, a, j), f);
    ensure!(t("start", "finished_at")? <= t("build", "started_at")?);
    // Parallel: each build job started before the other finished.
    ensure!(
        tj("build", "compile", "version", "started_at")?
            < tj("build", "lint", "lint", "finished_at")?
    );
    ensure!(
        tj("build", "lint", "lint", "started_at")?
            < tj("build", "compile", "version", "finished_at")?
    );
    ensure!(t("build", "finished_at")? <= t("package", "started_at")?);
    ensure!(
        tj("build", "compile", "version", "finished_at")?
            <= tj("package", "image", "tag", "started_at")?
    );
    ensure!(t("package", "finished_at")? <= t("approval", "started_at")?);
    ensure!(t("approval", "started_at")? < t("approval", "finished_at")?);
    ensure!(t("approval", "finished_at")? <= t("checks", "started_at")?);
    ensure!(
        tj("checks", "verify", "first", "finished_at")?
            <= tj("checks", "verify", "second", "started_at")?
    );
    ensure!(t("checks", "finished_at")? <= ts(&run, "finished_at")?);

    // Every job's log, in full.
    let mut lint = strings(&["linting"]);
    lint.extend((1..=500).map(|i| i.to_string()));
    lint.push("lint ok".into());
    let logs = [
        (
            ("build", "compile", "version"),
            strings(&[
                "building",
                "[COUT] VERSION = 1.2.3",
                "[COUT] CO_RESULT = true",
            ]),
        ),
        (("build", "lint", "lint"), lint),
        (
            ("package", "image", "tag"),
            vec![format!("tagging 1.2.3 with {co_data}")],
        ),
        (
            ("checks", "verify", "first"),
            strings(&["first check passes"]),
        ),
        (
            ("checks", "verify", "second"),
            strings(&["second check fails", "[COUT] CO_RESULT = false"]),
        ),
    ];
    for ((st, a, j), want) in logs {
        let got = log_of(d, job(&run, st, a, j)).await?;
        assert_eq!(got, want, "log of {j}");
    }

    // flow.finished, signed, with one line per job.
    let hook = wait_until(Duration::from_secs(30), "flow.finished", || async {
        Ok(received(&rx)
            .into_iter()
            .find(|r| r.event == "flow.finished"))
    })
    .await
    .with_context(|| s.logs())?;
    assert!(hook.verified, "signature: {:?}", hook.body);
    let data = &hook.body["data"]["run"];
    assert_eq!(hook.body["type"], "flow.finished");
    assert_eq!((&data["id"], &data["flow"]), (&json!(id), &json!(flow)));
    assert_eq!(data["status"], "failure");
    let summary: Vec<(String, String)> = data["jobs"]
        .as_array()
        .context("jobs")?
        .iter()
        .map(|j| {
            (
                j["job"].as_str().unwrap_or("").to_owned(),
                j["status"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = jobs
        .iter()
        .map(|(_, _, j, st)| ((*j).to_owned(), (*st).to_owned()))
        .collect();
    assert_eq!(summary, want);
    let second = &data["jobs"][4];
    assert_eq!(second["reason"], "CO_RESULT = false");
    assert_eq!(
        second["logs_url"],
        format!(
            "{}/api/v1/jobs/{}/logs",
            d.base,
            job(&run, "checks", "verify", "second")["job_id"]
                .as_str()
                .context("job id")?
        )
    );
    // Exactly one delivery.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        received(&rx)
            .iter()
            .filter(|r| r.event == "flow.finished")
            .count(),
        1
    );
    let (st, runs) = d.get_json(&format!("/api/v1/runs?flow={flow}")).await?;
    assert_eq!(st, 200);
    assert_eq!(runs["runs"][0]["id"], id.as_str());
    Ok(())
}

/// A job over its timeout is stopped and marked `timeout`; a cancelled run stops its
/// container; a rejected pause fails the run. The three runs go at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_cancel_and_reject() -> Result<()> {
    let s = Setup::start().await?;
    let d = &s.daemon;
    let docker = logarithm_tests::docker::connect().await?;
    let tag = &s.tag;
    let slow = register(
        d,
        &one_job_flow(
            &format!("slow-{tag}"),
            "echo sleeping; sleep 30; echo woke",
            Some(2),
            false,
        ),
    )
    .await?;
    let long = register(
        d,
        &one_job_flow(
            &format!("long-{tag}"),
            "echo started; sleep 30",
            None,
            false,
        ),
    )
    .await?;
    let paused = register(
        d,
        &one_job_flow(&format!("paused-{tag}"), "echo after", None, true),
    )
    .await?;
    let r_timeout = start_run(d, &slow, None).await?;
    let r_cancel = start_run(d, &long, None).await?;
    let r_reject = start_run(d, &paused, None).await?;

    // Reject the pause.
    wait_run(&s, &r_reject, "the pause", Duration::from_secs(30), |r| {
        stage(r, "approval")["status"] == "running"
    })
    .await?;
    let (st, v) = post(
        d,
        &format!("/api/v1/runs/{r_reject}/reject"),
        Some(Body::Json(&json!({"reason": "not today"}))),
    )
    .await?;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["status"], "failure");
    assert_eq!(stage(&v, "approval")["status"], "failure");
    assert_eq!(stage(&v, "approval")["reason"], "rejected: not today");
    assert_eq!(stage(&v, "work")["status"], "pending");
    assert!(job(&v, "work", "act", "job")["container_id"].is_null());

    // Cancel once the job's container runs and its first line is stored.
    let run = wait_run(
        &s,
        &r_cancel,
        "the job to run",
        Duration::from_secs(60),
        |r| job(r, "work", "act", "job")["job_id"].is_string(),
    )
    .await?;
    let j = job(&run, "work", "act", "job").clone();
    let container = j["container_id"].as_str().context("container")?.to_owned();
    wait_until(Duration::from_secs(30), "the first line", || async {
        Ok(log_of(d, &j).await.ok().filter(|l| !l.is_empty()))
    })
    .await
    .with_context(|| s.logs())?;
    assert!(container_running(&docker, &container).await?);
    let (st, v) = post(
        d,
        &format!("/api/v1/runs/{r_cancel}/cancel"),
        Some(Body::Json(&json!({"reason": "enough"}))),
    )
    .await?;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["status"], "cancelled");
    assert_eq!(v["reason"], "cancelled: enough");
    assert_eq!(job(&v, "work", "act", "job")["status"], "cancelled");
    // Stopped (SIGTERM, SIGKILL after the 1 s grace), long before its 30 s sleep ends.
    wait_until(Duration::from_secs(10), "the container to stop", || async {
        Ok((!container_running(&docker, &container).await?).then_some(()))
    })
    .await?;
    let (st, v) = post(d, &format!("/api/v1/runs/{r_cancel}/cancel"), None).await?;
    assert_eq!(st, 409, "{v}");

    // The timed-out job.
    let run = wait_final(&s, &r_timeout, "the timeout", Duration::from_secs(60)).await?;
    assert_eq!(run["status"], "timeout", "{run}");
    let j = job(&run, "work", "act", "job");
    assert_eq!(j["status"], "timeout", "{run}");
    assert_eq!(j["reason"], "job timed out after 2s");
    assert_eq!(stage(&run, "work")["status"], "timeout");
    let took = ts(j, "finished_at")? - ts(j, "started_at")?;
    ensure!(
        (2_000_000_000..10_000_000_000).contains(&took),
        "timed out after {took} ns"
    );
    let tc = j["container_id"].as_str().context("container")?.to_owned();
    wait_until(
        Duration::from_secs(10),
        "the timed-out container to stop",
        || async { Ok((!container_running(&docker, &tc).await?).then_some(())) },
    )
    .await?;

    // Both stopped containers' logs are stored (and then the engine removes them).
    for (rid, want) in [(&r_timeout, "sleeping"), (&r_cancel, "started")] {
        let (_, run) = d.get_json(&format!("/api/v1/runs/{rid}")).await?;
        let j = job(&run, "work", "act", "job");
        assert_eq!(log_of(d, j).await?, strings(&[want]));
        let c = j["container_id"].as_str().context("container")?.to_owned();
        wait_until(Duration::from_secs(30), "removal", || async {
            Ok(
                match docker
                    .inspect_container(
                        &c,
                        None::<bollard::query_parameters::InspectContainerOptions>,
                    )
                    .await
                {
                    Err(bollard::errors::Error::DockerResponseServerError {
                        status_code: 404,
                        ..
                    }) => Some(()),
                    _ => None,
                },
            )
        })
        .await
        .with_context(|| s.logs())?;
    }
    Ok(())
}

/// logarithmd is SIGKILLed while a run's job runs, then started again on the same port
/// and database: the run resumes with the same container and ends with the right result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_survives_sigkill_of_logarithmd() -> Result<()> {
    let mut s = Setup::start().await?;
    let tag = s.tag.clone();
    let yaml = format!(
        r#"uri: logarithm/e2e/restart-{tag}
stages:
  - type: start
    name: start
  - type: normal
    name: work
    actions:
      - name: act
        jobs:
          - type: component
            name: long
            endpoint: {IMAGE}
            timeout: 120
            command: ["sh", "-c", "echo before; sleep 6; echo after; echo '[COUT] CO_RESULT = true'"]
  - type: normal
    name: next
    actions:
      - name: act
        jobs:
          - type: component
            name: short
            endpoint: {IMAGE}
            command: ["sh", "-c", "echo next"]
  - type: end
    name: end
"#
    );
    let flow = register(&s.daemon, &yaml).await?;
    let id = start_run(&s.daemon, &flow, None).await?;
    let run = wait_run(&s, &id, "the job to run", Duration::from_secs(60), |r| {
        job(r, "work", "act", "long")["container_id"].is_string()
    })
    .await?;
    let container = job(&run, "work", "act", "long")["container_id"].clone();

    s.daemon.start_again().await?;

    let run = wait_final(&s, &id, "the run to end", Duration::from_secs(90)).await?;
    assert_eq!(run["status"], "success", "{run}");
    // The restarted engine loaded the run from storage.
    let log = s.daemon.proc.log();
    assert!(
        log.contains("resuming flow run") && log.contains(id.as_str()),
        "{}",
        s.logs()
    );
    let long = job(&run, "work", "act", "long");
    assert_eq!(long["status"], "success");
    // Re-attached, not started again.
    assert_eq!(long["container_id"], container);
    assert_eq!(job(&run, "next", "act", "short")["status"], "success");
    assert_eq!(
        log_of(&s.daemon, long).await?,
        strings(&["before", "after", "[COUT] CO_RESULT = true"])
    );
    assert_eq!(
        log_of(&s.daemon, job(&run, "next", "act", "short")).await?,
        strings(&["next"])
    );
    ensure!(ts(long, "finished_at")? <= ts(stage(&run, "next"), "started_at")?);

    // Again, but the job's container exits while logarithmd is down: its verdict arrives
    // once the agent ships the exit to the restarted daemon.
    let docker = logarithm_tests::docker::connect().await?;
    let id = start_run(&s.daemon, &flow, None).await?;
    let run = wait_run(&s, &id, "the job to run", Duration::from_secs(60), |r| {
        job(r, "work", "act", "long")["container_id"].is_string()
    })
    .await?;
    let container = job(&run, "work", "act", "long")["container_id"]
        .as_str()
        .context("container")?
        .to_owned();
    s.daemon.proc.kill();
    wait_until(Duration::from_secs(30), "the job to exit", || async {
        Ok((!container_running(&docker, &container).await?).then_some(()))
    })
    .await?;
    s.daemon.start_again().await?;
    let run = wait_final(&s, &id, "the run to end", Duration::from_secs(90)).await?;
    assert_eq!(run["status"], "success", "{run}");
    let long = job(&run, "work", "act", "long");
    assert_eq!(long["container_id"], container.as_str());
    assert_eq!(
        log_of(&s.daemon, long).await?,
        strings(&["before", "after", "[COUT] CO_RESULT = true"])
    );
    Ok(())
}

/// An invalid flow file is refused with every problem named by line and field, and
/// nothing is registered; changes need the admin token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_flow_is_refused_and_not_registered() -> Result<()> {
    let s = Setup::start().await?;
    let d = &s.daemon;
    let tag = &s.tag;
    // A misspelt key, on line 12.
    let bad = one_job_flow(&format!("bad-{tag}"), "true", None, false)
        .replace("            endpoint:", "            imagee:");
    let msg = refused(d, &bad).await?;
    assert!(msg.contains("line 12"), "{msg}");
    assert!(msg.contains("imagee"), "{msg}");
    assert!(msg.contains("stages[1].actions[0].jobs[0]"), "{msg}");

    let bad_sub = one_job_flow(&format!("badsub-{tag}"), "true", None, false).replace(
        "            command:",
        "            subscriptions:\n              - \"nope.act.job[OUT]\": X\n            command:",
    );
    let msg = refused(d, &bad_sub).await?;
    assert!(msg.contains("subscriptions[0]"), "{msg}");
    assert!(msg.contains("line "), "{msg}");

    let (st, flows) = d.get_json("/api/v1/flows").await?;
    assert_eq!(st, 200);
    assert_eq!(flows["flows"], json!([]));
    let (st, _) = d
        .get_json(&format!("/api/v1/flows/logarithm.e2e.bad-{tag}"))
        .await?;
    assert_eq!(st, 404);
    let (st, v) = post(
        d,
        &format!("/api/v1/flows/logarithm.e2e.bad-{tag}/runs"),
        None,
    )
    .await?;
    assert_eq!(st, 404, "{v}");

    // Without the admin token nothing changes.
    let good = one_job_flow(&format!("good-{tag}"), "true", None, false);
    let (st, _) = call(
        d,
        reqwest::Method::POST,
        "/api/v1/flows",
        Some(Body::Text(&good)),
        None,
    )
    .await?;
    assert_eq!(st, 401);
    let (st, flows) = d.get_json("/api/v1/flows").await?;
    assert_eq!(st, 200);
    assert_eq!(flows["flows"], json!([]));
    Ok(())
}
