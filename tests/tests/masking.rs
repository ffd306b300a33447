//! Secret masking end to end (issue 11, item 3): the real `logarithmd` (with its flow
//! engine), the real `antilog`, real Docker containers, SQLite and a real MariaDB.
//!
//! A flow job gets a secret (`secrets:` naming `[engine.secrets]`, whose value comes from
//! logarithmd's environment, marked `base64`) and prints it: on stdout, on stderr, inside
//! a longer word, base64-encoded, as a `[COUT]` output, and at the 16 KiB cut of two long
//! lines (Docker splits them at 16 KiB; the agent's `max_line_bytes` keeps that cut and its
//! one-record batches put the two pieces in different batches). Then the database (the
//! SQLite files with their WAL, or every row of every MariaDB table), every API answer and
//! every webhook payload received (and the Loki API's answer) are searched for the value, its base64 forms and its two
//! pieces: none is found, and the lines show `***`. One run of one job per backend, about
//! 10 s each.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use base64::Engine as _;
use logarithm_tests::webhook_receiver::{Receiver, Script};
use logarithm_tests::{rand_tag, rand_u64, tail, wait_until, Agent, Daemon, Db};
use serde_json::{json, Value};
use sha2::Digest;

const ADMIN: &str = "masking-admin-token";
const IMAGE: &str = logarithm_tests::TEST_IMAGE;
/// The length of the filler before the secret on the long lines: the 16 KiB cut falls
/// 10 bytes into the value.
const FILLER: usize = 16_384 - 10;

/// What must never be stored or shown: the value, its base64 forms, and the pieces of it
/// on each side of the 16 KiB cut.
fn forbidden(secret: &str) -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
    let url = base64::engine::general_purpose::URL_SAFE.encode(secret);
    vec![
        secret.to_owned(),
        b64.trim_end_matches('=').to_owned(),
        url.trim_end_matches('=').to_owned(),
        secret[..10].to_owned(),
        secret[10..].to_owned(),
        b64[..10].to_owned(),
        b64[10..].trim_end_matches('=').to_owned(),
    ]
}

/// The forbidden strings found in `haystack`.
fn hits(haystack: &[u8], secret: &str) -> Vec<String> {
    forbidden(secret)
        .into_iter()
        .filter(|f| haystack.windows(f.len()).any(|w| w == f.as_bytes()))
        .collect()
}

fn flow(tag: &str) -> String {
    format!(
        r#"uri: logarithm/e2e/masking-{tag}
stages:
  - type: start
    name: start
  - type: normal
    name: build
    actions:
      - name: deploy
        jobs:
          - type: component
            name: push
            endpoint: {IMAGE}
            timeout: 120
            secrets:
              - {{env: TOKEN, from_secret: deploy, base64: true}}
            outputs: [LEAK]
            command:
              - sh
              - -c
              - |
                echo "stdout: $TOKEN"
                echo "stderr: $TOKEN" >&2
                echo "word: pre${{TOKEN}}post"
                printf %s "$TOKEN" | base64
                printf %s "$TOKEN" | sha256sum
                echo "[COUT] LEAK = $TOKEN"
                head -c {FILLER} /dev/zero | tr '\0' a; echo "${{TOKEN}}-tail"
                head -c {FILLER} /dev/zero | tr '\0' b; printf %s "$TOKEN" | base64 | tr -d '\n'; echo "-tail"
                echo "[COUT] CO_RESULT = true"
  - type: end
    name: end
"#
    )
}

/// GET with the admin token (admin sees flow environments too); the body as bytes.
async fn get(d: &Daemon, path: &str, accept: &str) -> Result<Vec<u8>> {
    let r = d
        .http
        .get(format!("{}{path}", d.base))
        .bearer_auth(ADMIN)
        .header("accept", accept)
        .send()
        .await?;
    let status = r.status();
    let body = r.bytes().await?.to_vec();
    ensure!(
        status.is_success(),
        "GET {path} answered {status}: {}",
        String::from_utf8_lossy(&body)
    );
    Ok(body)
}

async fn post(d: &Daemon, path: &str, body: reqwest::RequestBuilder) -> Result<Value> {
    let r = body.bearer_auth(ADMIN).send().await?;
    let status = r.status();
    let v: Value = r.json().await.unwrap_or(Value::Null);
    ensure!(status.is_success(), "POST {path} answered {status}: {v}");
    let _ = d;
    Ok(v)
}

/// Every byte of every row of every table of the database.
async fn database_bytes(db: &Db) -> Result<Vec<u8>> {
    match db {
        Db::Sqlite { url, .. } => {
            // The database file, its WAL and shared memory: what is on disk now.
            let file = std::path::PathBuf::from(url.trim_start_matches("sqlite://"));
            let dir = file.parent().context("database directory")?;
            let mut out = Vec::new();
            for e in std::fs::read_dir(dir)? {
                let path = e?.path();
                out.extend(std::fs::read(&path).with_context(|| path.display().to_string())?);
            }
            ensure!(!out.is_empty(), "no database files in {}", dir.display());
            Ok(out)
        }
        Db::Mysql { url, name, .. } => {
            use mysql_async::prelude::Queryable;
            let pool = mysql_async::Pool::new(url.as_str());
            let mut conn = pool.get_conn().await?;
            let tables: Vec<String> = conn
                .exec(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = ?",
                    (name.as_str(),),
                )
                .await?;
            ensure!(!tables.is_empty(), "no tables in {name}");
            let mut out = Vec::new();
            for t in tables {
                let rows: Vec<mysql_async::Row> =
                    conn.query(format!("SELECT * FROM `{t}`")).await?;
                for row in rows {
                    for v in row.unwrap() {
                        if let mysql_async::Value::Bytes(b) = v {
                            out.extend(b);
                            out.push(b'\n');
                        }
                    }
                }
            }
            drop(conn);
            pool.disconnect().await?;
            Ok(out)
        }
    }
}

async fn a_flow_secret_is_never_stored_or_shown(db: Db) -> Result<()> {
    let tag = rand_tag();
    // Long enough that its pieces at the cut are unique; random so no other test has it.
    let secret = format!("Tk-{tag}-{:08x}z", rand_u64() as u32);
    let label = format!("masking-{tag}");
    let config = format!(
        "{}[webhooks]\npoll_interval = \"100ms\"\nrequest_timeout = \"2s\"\n\
         retry_initial = \"200ms\"\nretry_max_delay = \"800ms\"\n\
         [engine]\nstop_grace = \"1s\"\nreconcile_every = \"1s\"\n\
         extra_labels = {{ \"logarithm.test\" = \"{label}\" }}\n\
         [engine.secrets]\ndeploy = {{ env = \"MASKING_TEST_SECRET\" }}\n",
        logarithm_tests::token_toml("admin", ADMIN, &["admin"])
    );
    let d = Daemon::start_with_env(db.url(), &config, &[("MASKING_TEST_SECRET", &secret)]).await?;
    // One record per batch, and records cut where Docker cuts (16 KiB): the two pieces of
    // each long line travel in different batches.
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("data");
    let agent = Agent::start_with(
        &d.base,
        &label,
        dir,
        data_dir,
        "batch_max_records = 1\nmax_line_bytes = 16384\n",
    )?;
    let rx = Receiver::start("masking-receiver-secret", Script::AcceptAll).await?;

    let yaml = flow(&tag);
    let v = post(
        &d,
        "/api/v1/flows",
        d.http
            .post(format!("{}/api/v1/flows", d.base))
            .header("content-type", "application/yaml")
            .body(yaml.clone()),
    )
    .await?;
    let flow_name = v["name"].as_str().context("flow name")?.to_owned();
    let sub = post(
        &d,
        "/api/v1/webhooks",
        d.http
            .post(format!("{}/api/v1/webhooks", d.base))
            .json(&json!({
                "url": format!("http://{}/hook", rx.addr),
                "secret": "masking-receiver-secret",
                "events": ["job.started", "job.finished", "flow.finished"],
                "filters": {"io.containerops.flow": flow_name},
            })),
    )
    .await?;
    let sub_id = sub["id"].as_str().context("subscription id")?.to_owned();
    let v = post(
        &d,
        "runs",
        d.http
            .post(format!("{}/api/v1/flows/{flow_name}/runs", d.base))
            .json(&json!({})),
    )
    .await?;
    let run_id = v["id"].as_str().context("run id")?.to_owned();

    let logs = || {
        format!(
            "logarithmd (tail):\n{}\nantilog (tail):\n{}",
            tail(&d.proc.log(), 40),
            tail(&agent.proc.log(), 20)
        )
    };
    let run = wait_until(Duration::from_secs(120), "the run to finish", || async {
        let (s, v) = d.get_json(&format!("/api/v1/runs/{run_id}")).await?;
        Ok((s == 200 && !matches!(v["status"].as_str(), Some("pending" | "running"))).then_some(v))
    })
    .await
    .with_context(logs)?;
    ensure!(run["status"] == "success", "{run}\n{}", logs());
    let job = &run["stages"][1]["actions"][0]["jobs"][0];
    let job_id = job["job_id"].as_str().context("job_id")?.to_owned();
    // The output holds the mask; both webhooks of the job and the run's arrived.
    ensure!(job["outputs"]["LEAK"] == "***", "{job}");
    wait_until(Duration::from_secs(30), "the webhooks", || async {
        let bodies = rx.bodies();
        let has = |event: &str| {
            bodies
                .iter()
                .any(|b| String::from_utf8_lossy(b).contains(event))
        };
        Ok((has("job.finished") && has("flow.finished")).then_some(()))
    })
    .await
    .with_context(logs)?;

    // The lines: each print shows the mask where the value was.
    let mut lines: Vec<String> = d
        .all_lines(&job_id)
        .await?
        .iter()
        .map(|l| l["text"].as_str().unwrap_or("<binary>").to_owned())
        .collect();
    // Docker copies stdout and stderr to the log file in two goroutines, so the one stderr
    // line can land after later stdout lines (seen once: after the long line). Each
    // stream keeps its order; the stderr line is checked where the script printed it.
    if let Some(i) = lines.iter().position(|l| l.starts_with("stderr: ")) {
        let line = lines.remove(i);
        lines.insert(1.min(lines.len()), line);
    }
    let hash = hex::encode(sha2::Sha256::digest(secret.as_bytes()));
    let mut expected_start = vec![
        "stdout: ***".to_owned(),
        "stderr: ***".to_owned(),
        "word: pre***post".to_owned(),
        "***".to_owned(),
        format!("{hash}  -"),
        "[COUT] LEAK = ***".to_owned(),
    ];
    // Lines of stdout and stderr may come in either order.
    let mut start: Vec<String> = lines.iter().take(6).cloned().collect();
    start.sort();
    expected_start.sort();
    let short: Vec<&str> = lines.iter().map(|l| &l[..l.len().min(80)]).collect();
    let problem = if lines.len() != 9 || start != expected_start {
        Some(format!("lines: {short:?}"))
    } else {
        None
    };
    // The value reached the container (its hash is right), and the long lines keep their
    // text with a mask on each side of the cut.
    let mut found: Vec<String> = problem.into_iter().collect();
    for (line, fill) in lines.iter().skip(6).take(2).zip(['a', 'b']) {
        let filler = fill.to_string().repeat(FILLER);
        if !(line.starts_with(&filler) && line[FILLER..] == *"******-tail") {
            found.push(format!(
                "the long line ends with {:?}",
                &line[FILLER.min(line.len())..]
            ));
        }
    }

    // Every API answer, and every webhook payload.
    let mut answers: Vec<(String, Vec<u8>)> = Vec::new();
    for (path, accept) in [
        ("/api/v1/jobs?limit=500".to_owned(), "application/json"),
        (format!("/api/v1/jobs/{job_id}"), "application/json"),
        (
            format!("/api/v1/jobs/{job_id}/logs?limit=10000"),
            "application/json",
        ),
        (format!("/api/v1/jobs/{job_id}/logs"), "text/plain"),
        (format!("/api/v1/jobs/{job_id}/logs?format=text"), "*/*"),
        (format!("/api/v1/runs/{run_id}"), "application/json"),
        (format!("/api/v1/runs?flow={flow_name}"), "application/json"),
        ("/api/v1/flows".to_owned(), "application/json"),
        (format!("/api/v1/flows/{flow_name}"), "application/json"),
        (
            format!("/api/v1/webhooks/{sub_id}/deliveries?limit=500"),
            "application/json",
        ),
    ] {
        answers.push((path.clone(), get(&d, &path, accept).await?));
    }
    // The Loki API, by the run's label (`{run="…"}`), over the last hour.
    let loki = format!("/loki/api/v1/query_range?limit=1000&query=%7Brun%3D%22{run_id}%22%7D");
    let body = get(&d, &loki, "application/json").await?;
    ensure!(
        String::from_utf8_lossy(&body).contains("word: pre***post"),
        "the Loki query found no line: {}",
        String::from_utf8_lossy(&body)
    );
    answers.push((loki, body));
    for (i, b) in rx.bodies().into_iter().enumerate() {
        answers.push((format!("webhook payload {i}"), b));
    }
    for (what, body) in &answers {
        let h = hits(body, &secret);
        if !h.is_empty() {
            found.push(format!("the secret was found in {what}: {h:?}"));
        }
    }
    let stored = database_bytes(&db).await?;
    let h = hits(&stored, &secret);
    if !h.is_empty() {
        found.push(format!("the secret was found in the database: {h:?}"));
    }
    if !found.is_empty() {
        bail!("{}", found.join("\n"));
    }
    // The masks were stored (what was searched is what logarithmd wrote).
    ensure!(
        stored.windows(16).any(|w| w == b"word: pre***post"),
        "the masked line is not in the database"
    );
    Ok(())
}

logarithm_tests::on_both_backends!(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] a_flow_secret_is_never_stored_or_shown_sqlite, a_flow_secret_is_never_stored_or_shown_mariadb => a_flow_secret_is_never_stored_or_shown);
