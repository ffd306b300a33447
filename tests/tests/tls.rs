//! TLS end to end, with certificates the test generates (rcgen): logarithmd serves HTTPS
//! and requires client certificates from one CA (mutual TLS); antilog, pinning that CA and
//! presenting its client certificate, ships a real container's lines. A client with a
//! certificate from another CA or with none is refused and logarithmd logs it; an antilog
//! pinning the wrong CA refuses logarithmd and logs it. A new certificate written over the
//! files takes effect on SIGHUP, without a restart.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use logarithm_tests::docker::{self, Spec};
use logarithm_tests::pki::{self, Ca};
use logarithm_tests::{rand_u64, tail, wait_until, Agent, Daemon, Db};

fn agent_tls(ca: &std::path::Path, client: &pki::Issued) -> String {
    format!(
        "[tls]\nca_file = {:?}\nclient_cert = {:?}\nclient_key = {:?}\n",
        ca, client.cert, client.key
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_refusals_and_sighup_rotation() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let ca = Ca::new(d, "ca")?;
    let server = ca.server(d, "server")?;
    let agent_cert = ca.client(d, "agent")?;
    let other_ca = Ca::new(d, "other-ca")?;
    let rogue = other_ca.client(d, "rogue")?;
    let next_ca = Ca::new(d, "next-ca")?;
    let next_server = next_ca.server(d, "next-server")?;

    let config = format!(
        "[tls]\ncert = {:?}\nkey = {:?}\nclient_ca = {:?}\n",
        server.cert, server.key, ca.pem
    );
    let db = Db::sqlite()?;
    let daemon =
        Daemon::start_https(db.url(), &config, pki::client(&ca.pem, Some(&agent_cert))?).await?;
    ensure!(daemon.base.starts_with("https://"));

    // antilog over mutual TLS: a container's lines arrive.
    let docker = docker::connect().await?;
    let label = format!("tls-{:x}", rand_u64());
    let agent_dir = tempfile::tempdir()?;
    let data = agent_dir.path().join("data");
    let agent = Agent::start_with(
        &daemon.base,
        &label,
        agent_dir,
        data,
        &agent_tls(&ca.pem, &agent_cert),
    )?;
    let id = docker::run(
        &docker,
        &Spec::new(&label, "echo over-tls-1; echo over-tls-2"),
    )
    .await?;
    let job = daemon
        .wait_finished(&id, Duration::from_secs(60))
        .await
        .with_context(|| format!("antilog log:\n{}", tail(&agent.proc.log(), 30)))?;
    let job_id = job["id"].as_str().context("job id")?;
    let lines: Vec<String> = daemon
        .all_lines(job_id)
        .await?
        .iter()
        .map(|l| l["text"].as_str().unwrap_or_default().to_owned())
        .collect();
    ensure!(lines == ["over-tls-1", "over-tls-2"], "{lines:?}");
    docker::remove(&docker, &id).await;

    // Refused: no client certificate, and one from another CA. logarithmd logs both.
    let healthz = format!("{}/healthz", daemon.base);
    for (what, client) in [
        ("no client certificate", pki::client(&ca.pem, None)?),
        (
            "another CA's client certificate",
            pki::client(&ca.pem, Some(&rogue))?,
        ),
    ] {
        let r = client.get(&healthz).send().await;
        ensure!(r.is_err(), "{what}: answered {:?}", r.map(|r| r.status()));
    }
    wait_until(
        Duration::from_secs(10),
        "two refusals in logarithmd's log",
        || async {
            let log = daemon.proc.log();
            Ok((log.matches("TLS handshake refused").count() >= 2).then_some(log))
        },
    )
    .await?;
    let log = daemon.proc.log();
    ensure!(
        log.contains("peer sent no certificates"),
        "{}",
        tail(&log, 20)
    );
    ensure!(log.contains("UnknownIssuer"), "{}", tail(&log, 20));

    // An antilog pinning the wrong CA refuses logarithmd, logs why, and ships nothing.
    let wrong_label = format!("tls-wrong-{:x}", rand_u64());
    let wrong_dir = tempfile::tempdir()?;
    let wrong_data = wrong_dir.path().join("data");
    let wrong = Agent::start_with(
        &daemon.base,
        &wrong_label,
        wrong_dir,
        wrong_data,
        &agent_tls(&other_ca.pem, &agent_cert),
    )?;
    let wrong_id = docker::run(&docker, &Spec::new(&wrong_label, "echo never-shipped")).await?;
    wait_until(
        Duration::from_secs(30),
        "antilog to log the refusal",
        || async {
            let log = wrong.proc.log();
            Ok(
                (log.contains("batch not delivered") && log.contains("UnknownIssuer"))
                    .then_some(()),
            )
        },
    )
    .await
    .with_context(|| tail(&wrong.proc.log(), 20))?;
    ensure!(daemon.job_of(&wrong_id).await?.is_none());
    docker::remove(&docker, &wrong_id).await;

    // Rotation: a certificate from the next CA replaces the files; SIGHUP; new connections
    // get it, with no restart (same process).
    let pid = daemon.proc.pid().context("logarithmd pid")?;
    let trusts_next = pki::client(&next_ca.pem, Some(&agent_cert))?;
    ensure!(trusts_next.get(&healthz).send().await.is_err());
    std::fs::copy(&next_server.cert, &server.cert)?;
    std::fs::copy(&next_server.key, &server.key)?;
    let hup = std::process::Command::new("kill")
        .arg("-HUP")
        .arg(pid.to_string())
        .status()?;
    ensure!(hup.success());
    wait_until(Duration::from_secs(10), "the new certificate", || async {
        Ok(match trusts_next.get(&healthz).send().await {
            Ok(r) if r.status() == 200 => Some(()),
            _ => None,
        })
    })
    .await
    .with_context(|| tail(&daemon.proc.log(), 20))?;
    let trusts_old = pki::client(&ca.pem, Some(&agent_cert))?;
    ensure!(trusts_old.get(&healthz).send().await.is_err());
    ensure!(daemon.proc.pid() == Some(pid));
    ensure!(daemon
        .proc
        .log()
        .contains("TLS certificate and key reloaded"));
    Ok(())
}
