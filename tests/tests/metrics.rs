//! Observability, end to end: a real Prometheus (Debian's package) scrapes the real
//! logarithmd and antilog while real containers run; the counters must agree with what the
//! containers did, every panel query of every dashboard must return series, and the alert
//! rules must load and evaluate. Missing Prometheus binaries fail these tests.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use logarithm_tests::docker::{self, Spec};
use logarithm_tests::prometheus::{self as prom, dashboards, Prometheus, Target};
use logarithm_tests::{tail, Agent, Daemon, Db};

/// Lines container "ok" prints to stdout (besides its two COUT lines) and to stderr.
const OK_STDOUT: u64 = 300;
const OK_STDERR: u64 = 200;

/// The dashboards the issues ask for, by title.
const TITLES: [&str; 5] = [
    "Logarithm overview",
    "Logarithm agents",
    "Logarithm jobs",
    "Logarithm webhooks",
    "Logarithm job logs",
];

#[test]
fn dashboards_are_well_formed() -> Result<()> {
    let all = dashboards::load(&prom::dashboards_dir())?;
    let titles: Vec<&str> = all
        .iter()
        .filter_map(|(_, d)| d["title"].as_str())
        .collect();
    for t in TITLES {
        ensure!(
            titles.contains(&t),
            "no dashboard titled {t:?}; have {titles:?}"
        );
    }
    let mut uids = BTreeMap::new();
    let mut problems = Vec::new();
    for (file, d) in &all {
        problems.extend(
            dashboards::check(d)
                .into_iter()
                .map(|p| format!("{file}: {p}")),
        );
        if let Some(prev) = uids.insert(d["uid"].as_str().unwrap_or("").to_owned(), file) {
            problems.push(format!("{file}: uid {} also used by {prev}", d["uid"]));
        }
    }
    ensure!(
        problems.is_empty(),
        "dashboard problems:\n{}",
        problems.join("\n")
    );
    Ok(())
}

/// The checker itself catches what it is meant to catch.
#[test]
fn dashboard_checker_finds_problems() -> Result<()> {
    let (_, good) = dashboards::load(&prom::dashboards_dir())?
        .into_iter()
        .next()
        .context("no dashboards")?;
    ensure!(dashboards::check(&good).is_empty());
    let mut bad = good.clone();
    let panels = bad["panels"].as_array_mut().context("panels")?;
    let first_id = panels[0]["id"].clone();
    panels[1]["id"] = first_id;
    let p = panels
        .iter_mut()
        .find(|p| p["targets"].is_array())
        .context("a panel with targets")?;
    p["targets"][0]["datasource"] =
        serde_json::json!({"type": "prometheus", "uid": "P1809F7CD0C75ACF3"});
    p["targets"][0]["expr"] = serde_json::json!("rate(x{a=~\"$nope\"}[5m])");
    let problems = dashboards::check(&bad).join("\n");
    ensure!(problems.contains("panel id"), "{problems}");
    ensure!(problems.contains("P1809F7CD0C75ACF3"), "{problems}");
    ensure!(problems.contains("$nope"), "{problems}");
    Ok(())
}

#[test]
fn alert_rules_pass_promtool() -> Result<()> {
    let promtool = prom::tool("promtool")?;
    let rules = prom::dashboards_dir().join("alerts.yml");
    let out = std::process::Command::new(promtool)
        .arg("check")
        .arg("rules")
        .arg(&rules)
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(out.status.success(), "promtool check rules failed:\n{text}");
    ensure!(text.contains("SUCCESS: 11 rules found"), "{text}");
    // The rules' unit tests: each alert fires on its condition, with its labels and text.
    let out = std::process::Command::new(prom::tool("promtool")?)
        .current_dir(prom::dashboards_dir())
        .args(["test", "rules", "alerts_test.yml"])
        .output()?;
    ensure!(
        out.status.success(),
        "promtool test rules failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_sees_the_pipeline() -> Result<()> {
    // Fail early, before starting anything, when the package is missing.
    prom::tool("prometheus")?;
    let docker = docker::connect().await?;
    let db = Db::mysql().await?;
    let daemon = Daemon::start(db.url()).await?;
    let label = format!("metrics-{:x}", logarithm_tests::rand_u64());
    let agent = Agent::start(&daemon.base, &label)?;
    let daemon_addr = daemon.base.trim_start_matches("http://").to_owned();
    let agent_addr = agent
        .metrics_addr
        .clone()
        .context("the agent serves metrics")?;
    let prometheus = Prometheus::start(
        &[
            Target {
                job: "logarithmd".into(),
                addr: daemon_addr.clone(),
                labels: vec![],
            },
            Target {
                job: "antilog".into(),
                addr: agent_addr.clone(),
                labels: vec![("node".into(), "test-node".into())],
            },
        ],
        &[prom::dashboards_dir().join("alerts.yml")],
    )
    .await?;
    let result = observe(
        &prometheus,
        &daemon,
        &agent,
        &docker,
        &label,
        &daemon_addr,
        &agent_addr,
    )
    .await;
    result.with_context(|| {
        format!(
            "logarithmd log:\n{}\nantilog log:\n{}\nprometheus log:\n{}",
            tail(&daemon.proc.log(), 30),
            tail(&agent.proc.log(), 30),
            tail(&prometheus.proc.log(), 20)
        )
    })
}

async fn observe(
    prometheus: &Prometheus,
    daemon: &Daemon,
    _agent: &Agent,
    docker: &bollard::Docker,
    label: &str,
    daemon_addr: &str,
    agent_addr: &str,
) -> Result<()> {
    prometheus.wait_targets_up(2).await?;
    let daemon_url = format!("{}/metrics", daemon.base);
    let agent_url = format!("http://{agent_addr}/metrics");
    let d0 = prom::scrape(&daemon.http, &daemon_url).await?;
    let a0 = prom::scrape(&daemon.http, &agent_url).await?;
    let d = |s: &[prom::Sample], name: &str, labels: &[(&str, &str)]| {
        prom::sample(s, name, labels).with_context(|| format!("no sample {name}{labels:?}"))
    };

    // Three jobs: one success printing many lines, two failures.
    let ok_script = format!(
        "i=1; while [ $i -le {OK_STDOUT} ]; do echo \"out $i\"; i=$((i+1)); done; \
         i=1; while [ $i -le {OK_STDERR} ]; do echo \"err $i\" >&2; i=$((i+1)); done; \
         echo '[COUT] CO_URL = http://x'; echo '[COUT] CO_RESULT = true'"
    );
    let scripts = [
        ok_script.as_str(),
        "echo '[COUT] CO_RESULT = false'",
        "echo oops >&2; exit 3",
    ];
    let stdout_lines = OK_STDOUT + 2 + 1;
    let stderr_lines = OK_STDERR + 1;
    let total_lines = stdout_lines + stderr_lines;
    let mut ids = Vec::new();
    for s in scripts {
        ids.push(docker::run(docker, &Spec::new(label, s)).await?);
    }
    let outcome = async {
        let mut statuses = Vec::new();
        for id in &ids {
            let job = daemon.wait_finished(id, Duration::from_secs(90)).await?;
            statuses.push(job["status"].as_str().unwrap_or("?").to_owned());
        }
        ensure!(
            statuses == ["success", "failure", "failure"],
            "job statuses {statuses:?}"
        );

        // The counters moved by exactly what happened, as the daemons report them...
        let d1 = prom::scrape(&daemon.http, &daemon_url).await?;
        let delta = |name: &str, labels: &[(&str, &str)]| -> Result<f64> {
            Ok(d(&d1, name, labels)? - d(&d0, name, labels)?)
        };
        ensure!(
            delta("logarithmd_ingest_lines_total", &[])? == total_lines as f64,
            "lines ingested moved by {}, containers printed {total_lines}",
            delta("logarithmd_ingest_lines_total", &[])?
        );
        ensure!(delta("logarithmd_jobs_finished_total", &[("result", "success")])? == 1.0);
        ensure!(delta("logarithmd_jobs_finished_total", &[("result", "failure")])? == 2.0);
        ensure!(delta("logarithmd_jobs_started_total", &[])? == 3.0);
        ensure!(
            delta(
                "logarithmd_job_duration_seconds_count",
                &[("result", "failure")]
            )? == 2.0
        );
        ensure!(delta("logarithmd_cout_outputs_total", &[("kind", "co_result")])? == 2.0);
        ensure!(delta("logarithmd_cout_outputs_total", &[("kind", "output")])? == 1.0);
        ensure!(delta("logarithmd_ingest_requests_total", &[("status", "200")])? >= 1.0);
        ensure!(delta("logarithmd_storage_write_errors_total", &[])? == 0.0);

        // The agent's counters are moved when the data is read, which is before the daemon
        // stored it, so they are final by now.
        let a1 = prom::scrape(&daemon.http, &agent_url).await?;
        let adelta = |name: &str, labels: &[(&str, &str)]| -> Result<f64> {
            Ok(d(&a1, name, labels)? - d(&a0, name, labels)?)
        };
        ensure!(
            adelta("antilog_lines_read_total", &[("stream", "stdout")])? == stdout_lines as f64,
            "stdout lines read moved by {}, want {stdout_lines}",
            adelta("antilog_lines_read_total", &[("stream", "stdout")])?
        );
        ensure!(
            adelta("antilog_lines_read_total", &[("stream", "stderr")])? == stderr_lines as f64,
            "stderr lines read moved by {}, want {stderr_lines}",
            adelta("antilog_lines_read_total", &[("stream", "stderr")])?
        );
        ensure!(adelta("antilog_records_shipped_total", &[])? == total_lines as f64);
        ensure!(adelta("antilog_batches_shipped_total", &[])? >= 1.0);
        ensure!(adelta("antilog_bytes_read_total", &[("stream", "stdout")])? > 0.0);

        // ...and as Prometheus scraped them.
        let dsel = format!("job=\"logarithmd\",instance=\"{daemon_addr}\"");
        let asel = "job=\"antilog\",node=\"test-node\"";
        let t = Duration::from_secs(20);
        prometheus
            .wait_value(
                &format!("logarithmd_ingest_lines_total{{{dsel}}}"),
                d(&d1, "logarithmd_ingest_lines_total", &[])?,
                t,
            )
            .await?;
        prometheus
            .wait_value(
                &format!("sum(logarithmd_jobs_finished_total{{{dsel}}})"),
                d(&d1, "logarithmd_jobs_finished_total", &[])?,
                t,
            )
            .await?;
        prometheus
            .wait_value(
                &format!("logarithmd_jobs_finished_total{{{dsel},result=\"failure\"}}"),
                d(
                    &d1,
                    "logarithmd_jobs_finished_total",
                    &[("result", "failure")],
                )?,
                t,
            )
            .await?;
        prometheus
            .wait_value(
                &format!("antilog_lines_read_total{{{asel},stream=\"stdout\"}}"),
                d(&a1, "antilog_lines_read_total", &[("stream", "stdout")])?,
                t,
            )
            .await?;

        // No container id (full or short) is ever a label value.
        for s in d1.iter().chain(a1.iter()) {
            for v in s.labels.values() {
                for id in &ids {
                    ensure!(
                        !v.contains(&id[..12]),
                        "{} has a container id label {v}",
                        s.name
                    );
                }
            }
        }
        Ok(())
    }
    .await;
    for id in &ids {
        docker::remove(docker, id).await;
    }
    outcome?;

    // A few more scrapes after the traffic, so rate() windows hold it.
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Every panel query of every dashboard, with its variables resolved the way Grafana
    // does, returns at least one series.
    let fixed: BTreeMap<String, String> = [
        ("__rate_interval", "1m"),
        ("__interval", "15s"),
        ("__range", "10m"),
        ("DS_PROMETHEUS", "prometheus"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let mut failures = Vec::new();
    let mut evaluated = 0;
    for (file, dash) in dashboards::load(&prom::dashboards_dir())? {
        // The logs dashboard reads logarithmd's Loki API (tests/tests/loki.rs runs it).
        if dashboards::is_loki(&dash) {
            continue;
        }
        let vars = dashboards::resolve_variables(prometheus, &dash, &fixed)
            .await
            .with_context(|| format!("{file}: resolving variables"))?;
        for q in dashboards::queries(&file, &dash) {
            let expr = dashboards::substitute(&q.expr, &vars);
            evaluated += 1;
            if !dashboards::used_variables(&expr).is_empty() {
                failures.push(format!(
                    "{file} / {} / {}: unresolved variable in {expr}",
                    q.panel, q.ref_id
                ));
                continue;
            }
            match prometheus.query(&expr).await {
                Ok(series) if !series.is_empty() => {}
                Ok(_) => failures.push(format!(
                    "{file} / {} / {}: no series: {expr}",
                    q.panel, q.ref_id
                )),
                Err(e) => failures.push(format!("{file} / {} / {}: {e:#}", q.panel, q.ref_id)),
            }
        }
    }
    ensure!(evaluated >= 40, "only {evaluated} panel queries found");
    ensure!(
        failures.is_empty(),
        "{} of {evaluated} panel queries failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // The alert rules loaded into this Prometheus and evaluate without error.
    let r = logarithm_tests::wait_until(
        Duration::from_secs(20),
        "every alert rule evaluated",
        || async {
            let groups = prometheus.rules().await?;
            let rules: Vec<serde_json::Value> = groups
                .iter()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .collect();
            ensure!(rules.len() >= 10, "{} rules loaded", rules.len());
            if let Some(bad) = rules.iter().find(|r| r["health"] == "err") {
                anyhow::bail!("rule {} fails: {}", bad["name"], bad["lastError"]);
            }
            Ok(rules.iter().all(|r| r["health"] == "ok").then_some(()))
        },
    )
    .await;
    r?;
    // Nothing is wrong, so nothing fires.
    let firing = prometheus.query("ALERTS{alertstate=\"firing\"}").await?;
    ensure!(firing.is_empty(), "alerts firing: {firing:?}");
    Ok(())
}
