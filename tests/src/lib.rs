//! Harness for Logarithm's end-to-end tests: starts the real `logarithmd` and `antilog`
//! binaries as child processes against real Docker and a real MariaDB (or SQLite), and
//! polls until a predicate holds.
//!
//! # Layout
//! - [`bin_path`]: finds the built binaries (scripts/test.sh builds them first).
//! - [`Daemon`], [`Agent`]: child processes, killed on drop.
//! - [`browser`]: a headless Chromium over WebDriver, with screenshots as artefacts.
//! - [`Db`]: a fresh database per test, on the MariaDB named by `LOGARITHM_TEST_MYSQL_URL`,
//!   or a SQLite file.
//! - [`cri`]: a Kubernetes node for antilog's `cri` source: a mock API server (k8s-openapi
//!   Pods, list and watch), pod logs written as the kubelet writes them, a kubeconfig.
//! - [`flows`]: flow YAML the tests share.
//! - [`docker`]: running test containers from the offline image and reading Docker's own
//!   view of their logs.
//! - [`prometheus`]: a real Prometheus scraping the daemons; `prometheus/dashboards.rs`
//!   the dashboard checks.
//! - [`mariadb`]: a MariaDB server of one test's own, to kill and start again.
//! - [`ingest_client`]: numbered zstd batches POSTed as agents do (503 sent again).
//! - [`load`]: the reads-beside-ingest scenario (the `load` bench section and
//!   `tests/tests/reads.rs`).
//! - [`rotation`]: numbered writers under json-file rotation and the checks the rotation
//!   tests of both Docker sources share; the `--rm` containers scenario.
//! - [`webhook_receiver`]: a webhook receiver that verifies signatures on its own.
//! - [`wait_until`]: polling with a deadline.
//! - [`on_both_backends!`]: one scenario as two tests, on SQLite and on MariaDB.

pub mod browser;
pub mod cri;
pub mod docker;
pub mod flows;
pub mod ingest_client;
pub mod load;
pub mod mariadb;
pub mod pki;
pub mod prometheus;
pub mod rotation;
pub mod stored_log;
pub mod webhook_receiver;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The image tests run; scripts/test-image.sh builds it from Debian's static busybox.
pub const TEST_IMAGE: &str = "logarithm/busybox:test";
/// The agent token tests use.
pub const TOKEN: &str = "test-token-0123456789";

/// Path of a workspace binary in the same target directory as the running test or bench
/// binary (`target/<profile>/deps/<test>` or `target/<profile>/<bench>`).
pub fn bin_path(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the running binary")?;
    let dir = exe.parent().context("binary has no directory")?;
    for candidate in [Some(dir), dir.parent()].into_iter().flatten() {
        let path = candidate.join(name);
        if path.exists() {
            return Ok(path);
        }
    }
    bail!(
        "{name} is not built next to {}: run `cargo build --bins` first (scripts/test.sh does)",
        exe.display()
    )
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Polls `f` every 100 ms until it returns `Some`, failing after `timeout` with `what`.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() > deadline {
            match last_err {
                Some(e) => {
                    bail!("timed out after {timeout:?} waiting for {what}; last error: {e:#}")
                }
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until a GET of `url` answers 2xx (a server that is starting: its health or ready
/// endpoint), polling as [`wait_until`] does.
pub async fn wait_http_ok(
    http: &reqwest::Client,
    url: &str,
    timeout: Duration,
    what: &str,
) -> Result<()> {
    wait_until(timeout, what, move || async move {
        Ok(match http.get(url).send().await {
            Ok(r) if r.status().is_success() => Some(()),
            _ => None,
        })
    })
    .await
}

/// Two tests of one scenario (an `async fn(Db) -> Result<()>`), on a fresh SQLite file
/// and on a fresh MariaDB database, under the test attribute given:
/// `on_both_backends!(#[tokio::test] name_sqlite, name_mariadb => scenario);`.
#[macro_export]
macro_rules! on_both_backends {
    (#[$test:meta] $sqlite:ident, $mariadb:ident => $scenario:path) => {
        #[$test]
        async fn $sqlite() -> anyhow::Result<()> {
            $scenario($crate::Db::sqlite()?).await
        }

        #[$test]
        async fn $mariadb() -> anyhow::Result<()> {
            $scenario($crate::Db::mysql().await?).await
        }
    };
}

/// A response's status and body: the body as JSON when it parses, else its text as a JSON
/// string.
pub async fn status_and_json(r: reqwest::Response) -> Result<(u16, serde_json::Value)> {
    let status = r.status().as_u16();
    let text = r.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    ))
}

/// A storage for one test.
pub enum Db {
    Sqlite {
        _dir: tempfile::TempDir,
        url: String,
    },
    Mysql {
        url: String,
        name: String,
        server: String,
    },
}

impl Db {
    /// A fresh SQLite file.
    pub fn sqlite() -> Result<Db> {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}", dir.path().join("logarithm.db").display());
        Ok(Db::Sqlite { _dir: dir, url })
    }

    /// A fresh database on the MariaDB of `LOGARITHM_TEST_MYSQL_URL`. Fails (never skips)
    /// when it is not set.
    pub async fn mysql() -> Result<Db> {
        let server = mysql_server_url()?;
        let name = format!("lg_e2e_{:016x}", rand_u64());
        let pool = mysql_async::Pool::new(server.as_str());
        let mut conn = pool
            .get_conn()
            .await
            .with_context(|| format!("connecting to {server}"))?;
        use mysql_async::prelude::Queryable;
        conn.query_drop(format!("CREATE DATABASE {name}")).await?;
        drop(conn);
        pool.disconnect().await?;
        Ok(Db::Mysql {
            url: format!("{}/{name}", server.trim_end_matches('/')),
            name,
            server,
        })
    }

    pub fn url(&self) -> &str {
        match self {
            Db::Sqlite { url, .. } | Db::Mysql { url, .. } => url,
        }
    }

    /// Rows in a table, counted straight in the database (to prove nothing was written).
    pub async fn count(&self, table: &str) -> Result<u64> {
        match self {
            Db::Sqlite { url, .. } => {
                let path = url.trim_start_matches("sqlite://").to_owned();
                let table = table.to_owned();
                tokio::task::spawn_blocking(move || -> Result<u64> {
                    let conn = rusqlite::Connection::open(path)?;
                    let n: i64 =
                        conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?;
                    Ok(n as u64)
                })
                .await?
            }
            Db::Mysql { url, .. } => {
                use mysql_async::prelude::Queryable;
                let pool = mysql_async::Pool::new(url.as_str());
                let mut conn = pool.get_conn().await?;
                let n: Option<u64> = conn
                    .query_first(format!("SELECT COUNT(*) FROM {table}"))
                    .await?;
                drop(conn);
                pool.disconnect().await?;
                Ok(n.unwrap_or(0))
            }
        }
    }

    pub fn is_mysql(&self) -> bool {
        matches!(self, Db::Mysql { .. })
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Db::Mysql { name, server, .. } = self {
            // Best effort: a leftover database in a throwaway server is harmless.
            let _ = Command::new("mariadb")
                .args(mysql_cli_args(server))
                .arg("-e")
                .arg(format!("DROP DATABASE IF EXISTS {name}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn mysql_cli_args(server: &str) -> Vec<String> {
    // mysql://user[:pass]@host:port
    let rest = server.trim_start_matches("mysql://").trim_end_matches('/');
    let (cred, hostport) = rest.split_once('@').unwrap_or(("root", rest));
    let (user, pass) = cred.split_once(':').unwrap_or((cred, ""));
    let (host, port) = hostport.split_once(':').unwrap_or((hostport, "3306"));
    let mut args = vec![
        "--no-defaults".to_owned(),
        format!("-u{user}"),
        format!("-h{host}"),
        format!("-P{port}"),
    ];
    if !pass.is_empty() {
        args.push(format!("-p{pass}"));
    }
    args
}

/// The MariaDB server URL for tests; an error (never a skip) when unset.
pub fn mysql_server_url() -> Result<String> {
    std::env::var("LOGARITHM_TEST_MYSQL_URL").map_err(|_| {
        anyhow::anyhow!(
            "LOGARITHM_TEST_MYSQL_URL is not set: run the tests through scripts/test.sh, \
             which starts a throwaway MariaDB"
        )
    })
}

pub fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// 12 random hex digits, to tell one test's flows, labels and containers from another's.
pub fn rand_tag() -> String {
    format!("{:012x}", rand_u64() & 0xffff_ffff_ffff)
}

/// A child process that is killed when dropped; its output goes to a log file kept in
/// `dir` (printed when a test fails, see [`Proc::log`]).
pub struct Proc {
    child: Option<Child>,
    log_path: PathBuf,
}

impl Proc {
    pub(crate) fn spawn(mut cmd: Command, log_path: PathBuf) -> Result<Proc> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let child = cmd
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        Ok(Proc {
            child: Some(child),
            log_path,
        })
    }

    /// Everything the process printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait up to `timeout` for a clean exit; returns whether it exited 0.
    pub fn terminate(&mut self, timeout: Duration) -> bool {
        let Some(mut c) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(c.id().to_string())
            .status();
        let deadline = Instant::now() + timeout;
        loop {
            match c.try_wait() {
                Ok(Some(status)) => return status.success(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = c.kill();
                    let _ = c.wait();
                    return false;
                }
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A running logarithmd.
pub struct Daemon {
    pub proc: Proc,
    pub base: String,
    pub http: reqwest::Client,
    /// What [`Daemon::start_again`] starts it with.
    storage_url: String,
    port: u16,
    how: Launch,
    dir: tempfile::TempDir,
}

/// How a logarithmd process is started.
struct Launch {
    /// The binary: this build's, or another (the benchmark's baseline).
    bin: PathBuf,
    /// Whether it reads without a token (`--anonymous-read`, the default for tests).
    anonymous_read: bool,
    /// Environment variables it gets besides the test's own.
    env: Vec<(String, String)>,
}

impl Launch {
    fn this_build(anonymous_read: bool, env: Vec<(String, String)>) -> Result<Launch> {
        Ok(Launch {
            bin: bin_path("logarithmd")?,
            anonymous_read,
            env,
        })
    }
}

impl Daemon {
    /// Starts logarithmd on a free port with `storage_url` and [`TOKEN`], and waits until it
    /// is ready.
    pub async fn start(storage_url: &str) -> Result<Daemon> {
        Self::start_with(storage_url, "").await
    }

    /// Like [`Daemon::start`], with `extra_toml` as its configuration file (when not empty).
    pub async fn start_with(storage_url: &str, extra_toml: &str) -> Result<Daemon> {
        Self::start_on(storage_url, free_port()?, extra_toml).await
    }

    /// Like [`Daemon::start_with`], on `127.0.0.1:port`.
    pub async fn start_on(storage_url: &str, port: u16, extra_toml: &str) -> Result<Daemon> {
        Self::start_plain(storage_url, port, extra_toml, Vec::new()).await
    }

    /// Like [`Daemon::start_with`], with these environment variables (`KUBECONFIG`, ...).
    pub async fn start_with_env(
        storage_url: &str,
        extra_toml: &str,
        env: &[(&str, &str)],
    ) -> Result<Daemon> {
        let env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Self::start_plain(storage_url, free_port()?, extra_toml, env).await
    }

    /// Plain HTTP on `127.0.0.1:port`, anonymous reads.
    async fn start_plain(
        storage_url: &str,
        port: u16,
        extra_toml: &str,
        env: Vec<(String, String)>,
    ) -> Result<Daemon> {
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let how = Launch::this_build(true, env)?;
        Self::launch(storage_url, port, extra_toml, base, http, how).await
    }

    /// Like [`Daemon::start`], with another logarithmd binary (the benchmark's baseline,
    /// an older build).
    pub async fn start_binary(bin: &std::path::Path, storage_url: &str) -> Result<Daemon> {
        let port = free_port()?;
        let base = format!("http://127.0.0.1:{port}");
        let how = Launch {
            bin: bin.to_owned(),
            anonymous_read: true,
            env: Vec::new(),
        };
        Self::launch(storage_url, port, "", base, reqwest::Client::new(), how).await
    }

    /// Like [`Daemon::start_with`] for a configuration with `[tls]`: the API is
    /// `https://127.0.0.1:port`, reached through `http` (which trusts the right CA).
    pub async fn start_https(
        storage_url: &str,
        extra_toml: &str,
        http: reqwest::Client,
    ) -> Result<Daemon> {
        let port = free_port()?;
        let base = format!("https://127.0.0.1:{port}");
        let how = Launch::this_build(true, Vec::new())?;
        Self::launch(storage_url, port, extra_toml, base, http, how).await
    }

    /// Like [`Daemon::start_with`], but reading needs a token (no `--anonymous-read`).
    pub async fn start_private(storage_url: &str, extra_toml: &str) -> Result<Daemon> {
        let port = free_port()?;
        let base = format!("http://127.0.0.1:{port}");
        Self::launch(
            storage_url,
            port,
            extra_toml,
            base,
            reqwest::Client::new(),
            Launch::this_build(false, Vec::new())?,
        )
        .await
    }

    async fn launch(
        storage_url: &str,
        port: u16,
        extra_toml: &str,
        base: String,
        http: reqwest::Client,
        how: Launch,
    ) -> Result<Daemon> {
        let dir = tempfile::tempdir()?;
        if !extra_toml.is_empty() {
            std::fs::write(dir.path().join("logarithmd.toml"), extra_toml)?;
        }
        let cmd = daemon_command(dir.path(), port, storage_url, &how);
        let proc = Proc::spawn(cmd, dir.path().join("logarithmd.log"))?;
        let d = Daemon {
            proc,
            base,
            http,
            storage_url: storage_url.to_owned(),
            port,
            how,
            dir,
        };
        d.wait_ready().await?;
        Ok(d)
    }

    /// SIGKILLs logarithmd if it still runs, then starts it again on the same address with
    /// the same storage and configuration (appending to the same log), and waits until it
    /// is ready: agents retrying against the old address reach the new process.
    pub async fn start_again(&mut self) -> Result<()> {
        self.proc.kill();
        let cmd = daemon_command(self.dir.path(), self.port, &self.storage_url, &self.how);
        self.proc = Proc::spawn(cmd, self.dir.path().join("logarithmd.log"))?;
        self.wait_ready().await
    }

    /// Waits until `/readyz` answers 2xx.
    async fn wait_ready(&self) -> Result<()> {
        let url = format!("{}/readyz", self.base);
        let ready = wait_http_ok(
            &self.http,
            &url,
            Duration::from_secs(60),
            "logarithmd /readyz",
        )
        .await;
        if let Err(e) = ready {
            bail!("{e:#}\nlogarithmd log:\n{}", self.proc.log());
        }
        Ok(())
    }

    pub async fn get_json(&self, path: &str) -> Result<(u16, serde_json::Value)> {
        let r = self.http.get(format!("{}{path}", self.base)).send().await?;
        let status = r.status().as_u16();
        let body = r.json().await?;
        Ok((status, body))
    }

    /// POSTs an ingest batch (JSON) with the agent token [`TOKEN`]; fails unless it is
    /// answered 200.
    pub async fn ingest_json(&self, batch: &serde_json::Value) -> Result<()> {
        let resp = self
            .http
            .post(format!("{}/api/v1/ingest", self.base))
            .bearer_auth(TOKEN)
            .json(batch)
            .send()
            .await?;
        let status = resp.status();
        if status != 200 {
            bail!("ingest: {status} {}", resp.text().await.unwrap_or_default());
        }
        Ok(())
    }

    /// A job's raw download: its lines as text, each ending in a newline.
    pub async fn raw_logs(&self, job_id: &str) -> Result<axum::body::Bytes> {
        let r = self
            .http
            .get(format!("{}/api/v1/jobs/{job_id}/logs", self.base))
            .header("accept", "text/plain")
            .send()
            .await?;
        Ok(r.bytes().await?)
    }

    /// The daemon's Prometheus page.
    pub async fn metrics_text(&self) -> Result<String> {
        let r = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await?;
        Ok(r.text().await?)
    }

    /// The job of a container, once logarithmd knows it.
    pub async fn job_of(&self, container_id: &str) -> Result<Option<serde_json::Value>> {
        let (status, body) = self.get_json("/api/v1/jobs?limit=500").await?;
        if status != 200 {
            bail!("GET /api/v1/jobs answered {status}: {body}");
        }
        Ok(body["jobs"]
            .as_array()
            .and_then(|jobs| {
                jobs.iter()
                    .find(|j| j["container_id"].as_str() == Some(container_id))
            })
            .cloned())
    }

    /// Waits until the container's job has a final status and returns it.
    pub async fn wait_finished(
        &self,
        container_id: &str,
        timeout: Duration,
    ) -> Result<serde_json::Value> {
        let r = wait_until(timeout, "the job to finish", || async {
            Ok(self
                .job_of(container_id)
                .await?
                .filter(|j| j["status"] != "running"))
        })
        .await;
        match r {
            Ok(j) => {
                let id = j["id"].as_str().context("job id")?.to_owned();
                Ok(self.get_json(&format!("/api/v1/jobs/{id}")).await?.1)
            }
            Err(e) => bail!(
                "{e:#}\nlogarithmd log (tail):\n{}",
                tail(&self.proc.log(), 40)
            ),
        }
    }

    /// Every stored line of a job, in seq order, via the JSON API (paging through).
    pub async fn all_lines(&self, job_id: &str) -> Result<Vec<serde_json::Value>> {
        let mut out = Vec::new();
        let mut after = 0u64;
        loop {
            let (status, page) = self
                .get_json(&format!(
                    "/api/v1/jobs/{job_id}/logs?after={after}&limit=10000"
                ))
                .await?;
            if status != 200 {
                bail!("logs answered {status}: {page}");
            }
            let lines = page["lines"].as_array().context("lines")?;
            out.extend(lines.iter().cloned());
            after = page["next_after"].as_u64().context("next_after")?;
            if page["more"] != true {
                return Ok(out);
            }
        }
    }
}

/// logarithmd's command line: `dir/logarithmd.toml` (when present), `127.0.0.1:port`,
/// `storage_url` and [`TOKEN`].
fn daemon_command(dir: &std::path::Path, port: u16, storage_url: &str, how: &Launch) -> Command {
    let mut cmd = Command::new(&how.bin);
    let config = dir.join("logarithmd.toml");
    if config.exists() {
        cmd.arg("--config").arg(config);
    }
    cmd.arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--storage-url")
        .arg(storage_url)
        .arg("--ingest-token")
        .arg(TOKEN)
        .env("RUST_LOG", "info,logarithmd=debug")
        .envs(how.env.iter().map(|(k, v)| (k, v)));
    if how.anonymous_read {
        // The tests read without a token, as the README's local run does.
        cmd.arg("--anonymous-read");
    }
    cmd
}

/// A running antilog.
pub struct Agent {
    pub proc: Proc,
    pub data_dir: PathBuf,
    /// `host:port` of its `/metrics`, unless `extra_toml` set `metrics_listen` itself.
    pub metrics_addr: Option<String>,
    _dir: tempfile::TempDir,
}

impl Agent {
    /// Starts antilog shipping to `server` and collecting only containers labelled
    /// `logarithm.test=<test_label>` (so concurrent tests do not see each other's).
    pub fn start(server: &str, test_label: &str) -> Result<Agent> {
        let dir = tempfile::tempdir()?;
        let data_dir = dir.path().join("data");
        Self::start_with(server, test_label, dir, data_dir, "")
    }

    /// Like [`Agent::start`], with extra TOML lines in its config.
    pub fn start_with(
        server: &str,
        test_label: &str,
        dir: tempfile::TempDir,
        data_dir: PathBuf,
        extra_toml: &str,
    ) -> Result<Agent> {
        let config = dir.path().join("antilog.toml");
        // Each agent serves metrics on a port of its own, so the agents of concurrent
        // tests do not compete for the default one.
        let (metrics_line, metrics_addr) = if extra_toml.contains("metrics_listen") {
            (String::new(), None)
        } else {
            let addr = format!("127.0.0.1:{}", free_port()?);
            (format!("metrics_listen = \"{addr}\"\n"), Some(addr))
        };
        std::fs::write(
            &config,
            format!(
                "server_url = \"{server}\"\ntoken = \"{TOKEN}\"\nnode_name = \"test-node\"\n\
                 data_dir = \"{}\"\ninclude_labels = [\"logarithm.test={test_label}\"]\n\
                 {metrics_line}{extra_toml}",
                data_dir.display()
            ),
        )?;
        let mut cmd = Command::new(bin_path("antilog")?);
        cmd.arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info,antilog=debug");
        let proc = Proc::spawn(cmd, dir.path().join("antilog.log"))?;
        Ok(Agent {
            proc,
            data_dir,
            metrics_addr,
            _dir: dir,
        })
    }
}

/// The container's entry in the checkpoint file of the antilog whose data_dir is
/// `data_dir`: (seq, exit recorded); None when it has no entry (or no file yet).
pub fn checkpoint_of(data_dir: &std::path::Path, container: &str) -> Result<Option<(u64, bool)>> {
    let text = match std::fs::read_to_string(data_dir.join("checkpoints.json")) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let v: serde_json::Value = serde_json::from_str(&text)?;
    Ok(v["containers"].get(container).map(|e| {
        (
            e["seq"].as_u64().unwrap_or(0),
            e.get("exit").is_some_and(|x| !x.is_null()),
        )
    }))
}

/// An agent that is killed and started again, always on the same data_dir (so it resumes
/// from its checkpoint and spool); the logs of every incarnation are kept.
pub struct Agents {
    server: String,
    label: String,
    extra_toml: String,
    data: tempfile::TempDir,
    current: Option<Agent>,
    old_logs: String,
}

impl Agents {
    pub fn start(server: &str, label: &str) -> Result<Agents> {
        Self::start_with(server, label, "")
    }

    /// Like [`Agents::start`], with extra TOML lines in every incarnation's config.
    pub fn start_with(server: &str, label: &str, extra_toml: &str) -> Result<Agents> {
        let mut a = Agents {
            server: server.to_owned(),
            label: label.to_owned(),
            extra_toml: extra_toml.to_owned(),
            data: tempfile::tempdir()?,
            current: None,
            old_logs: String::new(),
        };
        a.restart()?;
        Ok(a)
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut a) = self.current.take() {
            a.proc.kill();
            self.old_logs.push_str(&a.proc.log());
        }
    }

    /// SIGKILL (if running), then a new incarnation on the same data_dir.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.current = Some(Agent::start_with(
            &self.server,
            &self.label,
            tempfile::tempdir()?,
            self.data_dir(),
            &self.extra_toml,
        )?);
        Ok(())
    }

    /// The data_dir every incarnation shares (checkpoint, spool).
    pub fn data_dir(&self) -> PathBuf {
        self.data.path().join("data")
    }

    /// The running incarnation's process id.
    pub fn pid(&self) -> Option<u32> {
        self.current.as_ref().and_then(|a| a.proc.pid())
    }

    /// What every incarnation printed, oldest first.
    pub fn logs(&self) -> String {
        let mut s = self.old_logs.clone();
        if let Some(a) = &self.current {
            s.push_str(&a.proc.log());
        }
        s
    }
}

/// A small valid ingest batch for `container` (64 hex characters): metadata and two
/// lines, one UTF-8 on stdout and one invalid byte (base64) on stderr. For tests that
/// talk to the ingest API directly rather than through an agent.
pub fn small_batch(container: &str) -> serde_json::Value {
    serde_json::json!({
        "version": 1,
        "agent": {"id": "test", "node": "n"},
        "segments": [{
            "container_id": container,
            "meta": {"name": "c", "image": "i", "labels": {}, "created_at": 1, "started_at": 2},
            "records": [
                {"seq": 1, "ts": 10, "stream": "stdout", "text": "hello"},
                {"seq": 2, "ts": 11, "stream": "stderr", "b64": "/w=="}
            ]
        }]
    })
}

/// A `[[tokens]]` entry of logarithmd's configuration for `secret` (its SHA-256, as
/// `logarithmd hash-token` prints it) with `scopes` (e.g. `"admin"` or `"read"`). Put it
/// after the file's top-level keys.
pub fn token_toml(name: &str, secret: &str, scopes: &[&str]) -> String {
    use sha2::Digest;
    let scopes: Vec<String> = scopes.iter().map(|s| format!("{s:?}")).collect();
    format!(
        "[[tokens]]\nname = {name:?}\nhash = \"sha256:{}\"\nscopes = [{}]\n",
        hex::encode(sha2::Sha256::digest(secret.as_bytes())),
        scopes.join(", ")
    )
}

/// The last `n` lines of a text.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
