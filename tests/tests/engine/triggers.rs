//! Issue #14 triggers end to end: a signed GitHub push webhook starts a run with the
//! commit in `CO_DATA` (a bad signature starts nothing), and a cron trigger fires exactly
//! once with two logarithmd on one database, their clock moved through a file
//! (`[engine] clock_file`), and a tick missed while logarithmd was down runs once at start.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::*;

const HOOK_SECRET: &str = "It's a Secret to Everybody";

fn hub_signature(body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(HOOK_SECRET.as_bytes()) else {
        return String::new();
    };
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

async fn deliver(
    d: &Daemon,
    flow: &str,
    delivery: &str,
    body: &Value,
    signature: Option<&str>,
) -> Result<(u16, Value)> {
    let bytes = serde_json::to_vec(body)?;
    let sig = signature.map_or_else(|| hub_signature(&bytes), str::to_owned);
    let r = d
        .http
        .post(format!("{}/api/v1/flows/{flow}/trigger", d.base))
        .header("content-type", "application/json")
        .header("x-github-event", "push")
        .header("x-github-delivery", delivery)
        .header("x-hub-signature-256", sig)
        .body(bytes)
        .send()
        .await?;
    logarithm_tests::status_and_json(r).await
}

async fn runs_of(d: &Daemon, flow: &str) -> Result<Vec<Value>> {
    let (st, v) = d.get_json(&format!("/api/v1/runs?flow={flow}")).await?;
    ensure!(st == 200, "listing runs answered {st}: {v}");
    Ok(v["runs"].as_array().cloned().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_github_push_starts_a_run_and_a_bad_signature_nothing() -> Result<()> {
    let s = Setup::start_with(&format!(
        "trigger_secrets = {{ github = \"{HOOK_SECRET}\" }}\n"
    ))
    .await?;
    let d = &s.daemon;
    let head = format!(
        r#"uri: logarithm/e2e/hook-{tag}
triggers:
  - type: webhook
    secret: github
    events: [push]
    branches: [main]
    mapping:
      CO_DATA: after
      PUSHER: pusher.name"#,
        tag = s.tag
    );
    let script = r#"echo \"commit=$CO_DATA pusher=$PUSHER\""#;
    let yaml = flows::one_job_flow(&head, "", IMAGE, "\n            timeout: 60", script);
    let flow = register(d, &yaml).await?;
    let sha = "6113728f27ae82c7b1a177c8d03f9e96e0adf246";
    // GitHub's `X-GitHub-Delivery` of the push (sent again as is on a redelivery).
    let delivery = "72d3162e-cc78-11e3-81ab-4c9367dc0958";
    let push = json!({
        "ref": "refs/heads/main", "before": "0000000000000000000000000000000000000000",
        "after": sha, "pusher": {"name": "octocat"},
        "repository": {"full_name": "octo/hello"}, "head_commit": {"id": sha}
    });

    // A bad signature: 401, nothing starts.
    let (st, v) = deliver(d, &flow, "bad-1", &push, Some("sha256=00ff")).await?;
    assert_eq!(st, 401, "{v}");
    let (st, v) = deliver(d, &flow, "bad-2", &push, Some("")).await?;
    assert_eq!(st, 401, "{v}");
    // A push to another branch: declined.
    let mut dev = push.clone();
    dev["ref"] = json!("refs/heads/dev");
    let (st, v) = deliver(d, &flow, "dev-1", &dev, None).await?;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["started"], false);
    assert_eq!(
        v["reason"],
        "branch \"dev\" is not one of the trigger's branches"
    );
    assert!(runs_of(d, &flow).await?.is_empty());

    let (st, v) = deliver(d, &flow, delivery, &push, None).await?;
    assert_eq!(st, 201, "{v}");
    let id = v["id"].as_str().context("run id")?.to_owned();
    assert_eq!(
        v["cause"],
        json!({"kind": "webhook", "delivery": delivery, "event": "push"})
    );
    assert_eq!(v["co_data"], sha);
    assert_eq!(v["env"], json!({"PUSHER": "octocat"}));
    let run = wait_final(&s, &id, "webhook run ends", Duration::from_secs(60)).await?;
    assert_eq!(run["status"], "success", "{run}");
    let lines = log_of(d, job(&run, "work", "act", "job")).await?;
    assert_eq!(lines, vec![format!("commit={sha} pusher=octocat")]);

    // GitHub redelivers with the same delivery id: no second run.
    let (st, v) = deliver(d, &flow, delivery, &push, None).await?;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["started"], false);
    assert_eq!(v["run"], id.as_str());
    let runs = runs_of(d, &flow).await?;
    assert_eq!(runs.len(), 1, "{runs:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cron_tick_starts_one_run_across_two_replicas() -> Result<()> {
    let db = Db::mysql().await?;
    let tag = rand_tag();
    let label = format!("engine-{tag}");
    let clock_dir = tempfile::tempdir()?;
    let clock = clock_dir.path().join("now");
    std::fs::write(&clock, "2030-01-15T02:59:58Z")?;
    let config = format!(
        "{}cron_poll = \"200ms\"\nclock_file = \"{}\"\n",
        daemon_config(&label),
        clock.display()
    );
    let a = Daemon::start_with(db.url(), &config).await?;
    let b = Daemon::start_with(db.url(), &config).await?;
    let agent = Agent::start(&a.base, &label)?;
    let head = format!(
        r#"uri: logarithm/e2e/cron-{tag}
triggers:
  - type: cron
    schedule: "0 4 * * *"
    timezone: Europe/Berlin
    co_data: nightly"#
    );
    let script = r#"echo \"cron $CO_DATA\""#;
    let yaml = flows::one_job_flow(&head, "", IMAGE, "\n            timeout: 60", script);
    let flow = register(&a, &yaml).await?;
    // Both replicas poll at least once before the tick.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(runs_of(&a, &flow).await?.is_empty());
    // 04:00 in Berlin (winter) is 03:00 UTC.
    std::fs::write(&clock, "2030-01-15T03:00:02Z")?;
    let first = wait_until(Duration::from_secs(20), "a cron run", || async {
        let runs = runs_of(&a, &flow).await?;
        Ok((!runs.is_empty()).then_some(runs))
    })
    .await?;
    // Several more polls of both replicas: still one run.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let runs = runs_of(&b, &flow).await?;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["id"], first[0]["id"]);
    let tick = parse_ts("2030-01-15T03:00:00Z")?;
    assert_eq!(
        runs[0]["cause"],
        json!({"kind": "cron", "schedule": "0 4 * * *", "tick": tick})
    );
    let s = Setup {
        daemon: a,
        agent,
        _db: db,
        tag,
    };
    let id = runs[0]["id"].as_str().context("run id")?.to_owned();
    let run = wait_final(&s, &id, "cron run ends", Duration::from_secs(60)).await?;
    assert_eq!(
        run["status"],
        "success",
        "{run}\n{}",
        tail(&b.proc.log(), 30)
    );
    assert_eq!(
        log_of(&s.daemon, job(&run, "work", "act", "job")).await?,
        vec!["cron nightly"]
    );
    Ok(())
}

/// `missed: run_once`: ticks missed while logarithmd was down start one run, for the
/// latest of them, when it starts again; a `skip` trigger (the default) starts none. The
/// clock is a file (`[engine] clock_file`); the jobs are service jobs, so no container
/// runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_cron_tick_runs_once_at_start() -> Result<()> {
    use super::services::{service_config, Service};
    let db = Db::mysql().await?;
    let tag = rand_tag();
    let clock_dir = tempfile::tempdir()?;
    let clock = clock_dir.path().join("now");
    std::fs::write(&clock, "2030-01-15T02:00:00Z")?;
    let config = format!(
        "{}cron_poll = \"200ms\"\nclock_file = \"{}\"\n{}",
        daemon_config(&format!("engine-{tag}")),
        clock.display(),
        service_config()
    );
    let mut d = Daemon::start_with(db.url(), &config).await?;
    let svc = Service::start().await?;
    let flow_of = |name: &str, missed: &str| {
        format!(
            r#"uri: logarithm/e2e/{name}-{tag}
triggers:
  - type: cron
    schedule: "0 3 * * *"
    {missed}
stages:
  - type: start
    name: start
  - type: normal
    name: work
    actions:
      - name: act
        jobs:
          - type: service
            name: job
            endpoint: http://{addr}/now
            timeout: 60
            environments:
              - GREETING: cron
  - type: end
    name: end
"#,
            addr = svc.addr
        )
    };
    let once = register(&d, &flow_of("missed-once", "missed: run_once")).await?;
    let skip = register(&d, &flow_of("missed-skip", "missed: skip")).await?;
    // Polls before any tick: nothing starts.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(runs_of(&d, &once).await?.is_empty());

    // Down over three ticks (the 15th, 16th and 17th at 03:00 UTC), then up again.
    d.proc.kill();
    std::fs::write(&clock, "2030-01-17T05:00:00Z")?;
    d.start_again().await?;
    let runs = wait_until(Duration::from_secs(30), "the missed tick's run", || async {
        let runs = runs_of(&d, &once).await?;
        Ok((!runs.is_empty()).then_some(runs))
    })
    .await
    .with_context(|| tail(&d.proc.log(), 40))?;
    let tick = parse_ts("2030-01-17T03:00:00Z")?;
    assert_eq!(
        runs[0]["cause"],
        json!({"kind": "cron", "schedule": "0 3 * * *", "tick": tick})
    );
    // More polls: still one run, and none for the skipping trigger.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let runs = runs_of(&d, &once).await?;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert!(runs_of(&d, &skip).await?.is_empty());
    let id = runs[0]["id"].as_str().context("run id")?.to_owned();
    let run = wait_until(Duration::from_secs(30), "the cron run ends", || async {
        let (st, v) = d.get_json(&format!("/api/v1/runs/{id}")).await?;
        Ok((st == 200 && is_final(&v)).then_some(v))
    })
    .await?;
    assert_eq!(run["status"], "success", "{run}");
    Ok(())
}
