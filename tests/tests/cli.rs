//! The `logarithm` CLI end to end: the real binary against the real logarithmd and antilog,
//! with real containers. `logs -f` of a running job prints every line exactly once and
//! exits 1 when the job fails; `run --follow` of the example flow exits 0; a bad token
//! prints the server's 401 message and exits 2.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use logarithm_tests::docker::{self, Spec};
use logarithm_tests::{bin_path, rand_tag, tail, wait_until, Agent, Daemon, Db};

const ADMIN: &str = "cli-admin-token";

/// Runs the CLI against `d`; returns (exit code, stdout, stderr).
async fn cli(d: &Daemon, token: Option<&str>, args: &[&str]) -> Result<(i32, String, String)> {
    let mut cmd = tokio::process::Command::new(bin_path("logarithm")?);
    cmd.args(args)
        .env("LOGARITHM_URL", &d.base)
        .env_remove("LOGARITHM_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(t) = token {
        cmd.env("LOGARITHM_TOKEN", t);
    }
    let out = tokio::time::timeout(Duration::from_secs(120), cmd.output())
        .await
        .context("the CLI did not finish within 120 s")??;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// `logs -f` starts while the job runs; it prints each of the job's 300 lines (both
/// streams) once, in order, and exits 1 because the job exits 3.
#[tokio::test]
async fn logs_follow_prints_every_line_once_and_exits_1_for_a_failing_job() -> Result<()> {
    let db = Db::sqlite()?;
    let daemon = Daemon::start(db.url()).await?;
    let label = format!("cli-{}", rand_tag());
    let agent = Agent::start(&daemon.base, &label)?;
    let docker = docker::connect().await?;
    let script = "i=1; while [ $i -le 300 ]; do \
                    if [ $((i % 3)) -eq 0 ]; then echo err-$i >&2; else echo line-$i; fi; \
                    if [ $((i % 100)) -eq 0 ]; then sleep 1; fi; i=$((i+1)); done; exit 3";
    let id = docker::run(&docker, &Spec::new(&label, script)).await?;
    let result = async {
        let job = wait_until(Duration::from_secs(30), "the job to be stored", || async {
            daemon.job_of(&id).await
        })
        .await?;
        let job_id = job["id"].as_str().context("id")?.to_owned();
        let (code, stdout, stderr) = cli(&daemon, None, &["logs", "-f", &job_id]).await?;
        // Every line once; each stream in its order (Docker copies stdout and stderr
        // through separate pipes, so how they interleave is Docker's, not the script's).
        let got: Vec<&str> = stdout.lines().collect();
        let want_out: Vec<String> = (1..=300)
            .filter(|i| i % 3 != 0)
            .map(|i| format!("line-{i}"))
            .collect();
        let want_err: Vec<String> = (1..=300)
            .filter(|i| i % 3 == 0)
            .map(|i| format!("err-{i}"))
            .collect();
        let got_out: Vec<&str> = got
            .iter()
            .copied()
            .filter(|l| l.starts_with("line-"))
            .collect();
        let got_err: Vec<&str> = got
            .iter()
            .copied()
            .filter(|l| l.starts_with("err-"))
            .collect();
        ensure!(
            got.len() == 300
                && got_out == want_out
                && got_err == want_err
                && stdout.ends_with('\n'),
            "{} lines; stdout:\n{}\nstderr: {stderr}",
            got.len(),
            tail(&stdout, 20)
        );
        ensure!(code == 1, "exit {code}, stderr: {stderr}");
        // Following a finished job: its lines, filtered here, then its verdict.
        let (code, stdout, _) = cli(
            &daemon,
            None,
            &[
                "logs", "-f", &job_id, "--stream", "stderr", "--grep", "err-29",
            ],
        )
        .await?;
        ensure!(
            code == 1 && stdout == "err-291\nerr-294\nerr-297\n",
            "{code} {stdout}"
        );
        // Filters and timestamps, after the fact.
        let (code, stdout, _) = cli(
            &daemon,
            None,
            &["logs", &job_id, "--stream", "stderr", "--grep", "err-29"],
        )
        .await?;
        ensure!(
            code == 0 && stdout == "err-291\nerr-294\nerr-297\n",
            "{code} {stdout}"
        );
        let (code, stdout, _) = cli(
            &daemon,
            None,
            &["logs", &job_id, "--timestamps", "--regex", "^line-1$"],
        )
        .await?;
        ensure!(code == 0, "{code}");
        let (ts, text) = stdout.trim_end().split_once(' ').context("timestamp")?;
        ensure!(
            text == "line-1" && ts.ends_with('Z') && ts.contains('T'),
            "{stdout}"
        );
        Ok(())
    }
    .await;
    docker::remove(&docker, &id).await;
    result.with_context(|| format!("antilog:\n{}", tail(&agent.proc.log(), 20)))
}

/// Registers the example flow and follows a run of it to success (exit 0); lists jobs and
/// runs as tables and JSON; a bad token gets the server's 401 message and exit 2.
#[tokio::test]
async fn run_follow_of_the_example_flow_exits_0() -> Result<()> {
    let db = Db::sqlite()?;
    let label = format!("cli-{}", rand_tag());
    let config = format!(
        "{}[engine]\nstop_grace = \"1s\"\nreconcile_every = \"1s\"\n\
         extra_labels = {{ \"logarithm.test\" = \"{label}\" }}\n",
        logarithm_tests::token_toml("admin", ADMIN, &["admin"])
    );
    let daemon = Daemon::start_with(db.url(), &config).await?;
    let agent = Agent::start(&daemon.base, &label)?;
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/hello.yaml");

    let (code, out, err) = cli(
        &daemon,
        Some("wrong-token"),
        &["flows", "apply", "-f", example],
    )
    .await?;
    ensure!(code == 2 && out.is_empty(), "{code} {out} {err}");
    ensure!(
        err.trim()
            == "logarithm: the bearer token is not valid; this route needs a token with \
                scope `admin` (HTTP 401 Unauthorized)",
        "{err}"
    );
    let (code, _, err) = cli(&daemon, Some("wrong-token"), &["webhooks", "ls"]).await?;
    ensure!(
        code == 2 && err.contains("the bearer token is not valid"),
        "{code} {err}"
    );

    let (code, out, err) = cli(&daemon, Some(ADMIN), &["flows", "apply", "-f", example]).await?;
    ensure!(
        code == 0 && out == "flow logarithm.examples.hello registered\n",
        "{code} {out} {err}"
    );
    let (code, out, _) = cli(&daemon, None, &["flows", "ls"]).await?;
    ensure!(
        code == 0 && out.starts_with("NAME") && out.contains("logarithm.examples.hello"),
        "{out}"
    );

    let (code, out, err) = cli(
        &daemon,
        Some(ADMIN),
        &["run", "logarithm.examples.hello", "--follow"],
    )
    .await?;
    ensure!(
        code == 0,
        "exit {code}\nstdout:\n{out}\nstderr:\n{err}\nlogarithmd:\n{}\nantilog:\n{}",
        tail(&daemon.proc.log(), 30),
        tail(&agent.proc.log(), 20)
    );
    let lines: Vec<&str> = out.lines().collect();
    let run_id = lines[0]
        .strip_prefix("run ")
        .and_then(|r| r.strip_suffix(" of logarithm.examples.hello started"))
        .context("first line")?;
    ensure!(
        lines
            .last()
            .is_some_and(|l| l.starts_with(&format!("run {run_id} success"))),
        "{out}"
    );
    for want in ["stage build: success", "stage test: success"] {
        ensure!(lines.contains(&want), "{want:?} missing:\n{out}");
    }
    ensure!(
        lines
            .iter()
            .any(|l| l.starts_with("  job test/check/unit [job ")
                && l.ends_with(": success (exit code 0)")),
        "{out}"
    );
    // No colour codes when stdout is not a terminal.
    ensure!(!out.contains('\x1b'), "{out:?}");

    let (code, out, _) = cli(&daemon, None, &["runs"]).await?;
    ensure!(
        code == 0 && out.starts_with("ID") && out.contains(run_id) && out.contains("success"),
        "{out}"
    );
    let (code, out, _) = cli(&daemon, None, &["jobs", "--run", run_id, "--json"]).await?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let jobs = v["jobs"].as_array().context("jobs")?;
    ensure!(code == 0 && jobs.len() == 2, "{out}");
    ensure!(
        jobs.iter()
            .all(|j| j["status"] == "success" && j["run"] == run_id),
        "{out}"
    );
    let (code, out, _) = cli(
        &daemon,
        None,
        &["jobs", "--run", run_id, "--status", "success"],
    )
    .await?;
    ensure!(code == 0 && out.lines().count() == 3, "{out}");
    // An unknown job is the server's 404 message, exit 2.
    let (code, _, err) = cli(&daemon, None, &["logs", "12345"]).await?;
    ensure!(
        code == 2 && err.contains("no job 12345") && err.contains("404"),
        "{code} {err}"
    );
    // Steering a finished run: the server's 409 message, exit 2 (and the run is unchanged).
    for verb in ["approve", "reject", "cancel"] {
        let (code, out, err) =
            cli(&daemon, Some(ADMIN), &[verb, run_id, "--reason", "test"]).await?;
        ensure!(
            code == 2 && out.is_empty() && err.contains("(HTTP 409 Conflict)"),
            "{verb}: {code} {out} {err}"
        );
    }
    let (code, out, _) = cli(&daemon, None, &["runs", "--json"]).await?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    ensure!(code == 0 && v["runs"][0]["status"] == "success", "{out}");
    // Webhooks with the admin token: an empty table, and a 404 for an unknown subscription.
    let (code, out, err) = cli(&daemon, Some(ADMIN), &["webhooks", "ls"]).await?;
    ensure!(
        code == 0 && out.lines().count() == 1 && out.starts_with("ID"),
        "{code} {out} {err}"
    );
    let (code, _, err) = cli(&daemon, Some(ADMIN), &["webhooks", "deliveries", "77"]).await?;
    ensure!(code == 2 && err.contains("404"), "{code} {err}");
    let (code, _, err) = cli(&daemon, Some(ADMIN), &["webhooks", "redeliver", "77", "1"]).await?;
    ensure!(code == 2 && err.contains("404"), "{code} {err}");
    // TLS settings are checked before any request. (No handshake is tested here: this
    // test's logarithmd serves plain HTTP.)
    let (code, _, err) = cli(&daemon, None, &["jobs", "--client-cert", example]).await?;
    ensure!(code == 2 && err.contains("--client-key"), "{code} {err}");
    let (code, _, err) = cli(&daemon, None, &["jobs", "--ca-file", "/nonexistent/ca.pem"]).await?;
    ensure!(
        code == 2 && err.contains("reading /nonexistent/ca.pem"),
        "{code} {err}"
    );
    let (code, _, err) = cli(&daemon, None, &["jobs", "--ca-file", example]).await?;
    ensure!(code == 2 && err.contains("holds no"), "{code} {err}");
    // A usage error is exit 2 too.
    let (code, _, err) = cli(&daemon, None, &["logs"]).await?;
    ensure!(code == 2 && err.contains("Usage"), "{code} {err}");
    Ok(())
}
