//! A MariaDB server of one test's own, which the test may kill and start again on the same
//! datadir and port (the shared server of `LOGARITHM_TEST_MYSQL_URL` must never be stopped:
//! other tests use it). Laid out and started the way `scripts/mariadb.sh` does it.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::{free_port, wait_until, Proc};

/// A dedicated `mariadbd` in a temp dir, killed (and its files removed) when dropped.
pub struct MariaDb {
    proc: Proc,
    port: u16,
    dir: tempfile::TempDir,
}

impl MariaDb {
    /// Lays out an empty datadir with `mariadb-install-db`, starts `mariadbd` on a free
    /// port and waits until it answers.
    pub async fn start() -> Result<MariaDb> {
        let dir = tempfile::Builder::new()
            .prefix("logarithm-mariadb-own.")
            .tempdir()?;
        let datadir = dir.path().join("data");
        let install_log = dir.path().join("install.log");
        let log = std::fs::File::create(&install_log)?;
        let status = tokio::process::Command::new("mariadb-install-db")
            .arg("--no-defaults")
            .arg("--user=root")
            .arg(format!("--datadir={}", datadir.display()))
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .status()
            .await
            .context("running mariadb-install-db (is mariadb-server installed?)")?;
        if !status.success() {
            bail!(
                "mariadb-install-db failed ({status}):\n{}",
                std::fs::read_to_string(&install_log).unwrap_or_default()
            );
        }
        let port = free_port()?;
        let proc = Proc::spawn(
            server_command(dir.path(), port),
            dir.path().join("stdout.log"),
        )?;
        let db = MariaDb { proc, port, dir };
        db.wait_ready().await?;
        Ok(db)
    }

    /// `mysql://root@127.0.0.1:<port>` (no database).
    pub fn server_url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}", self.port)
    }

    /// Creates database `name` and returns its URL.
    pub async fn create_database(&self, name: &str) -> Result<String> {
        use mysql_async::prelude::Queryable;
        let mut conn = mysql_async::Conn::from_url(self.server_url()).await?;
        conn.query_drop(format!("CREATE DATABASE IF NOT EXISTS {name}"))
            .await?;
        conn.disconnect().await?;
        Ok(format!("{}/{name}", self.server_url()))
    }

    /// SIGKILL, then reap: a crash as far as clients are concerned (connections reset,
    /// new ones refused). Committed data survives (InnoDB recovers it at the next start).
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// SIGSTOP: the server hangs (connections stay open, nothing is answered), the way
    /// an overloaded or partitioned database looks to a client.
    pub fn freeze(&self) -> Result<()> {
        self.signal("-STOP")
    }

    /// SIGCONT after [`MariaDb::freeze`].
    pub fn thaw(&self) -> Result<()> {
        self.signal("-CONT")
    }

    fn signal(&self, sig: &str) -> Result<()> {
        let pid = self.proc.pid().context("mariadbd is not running")?;
        let status = Command::new("kill")
            .arg(sig)
            .arg(pid.to_string())
            .status()?;
        anyhow::ensure!(status.success(), "kill {sig} {pid} failed");
        Ok(())
    }

    /// Starts `mariadbd` again on the same datadir and port and waits until it answers.
    pub async fn start_again(&mut self) -> Result<()> {
        self.proc.kill();
        self.proc = Proc::spawn(
            server_command(self.dir.path(), self.port),
            self.dir.path().join("stdout.log"),
        )?;
        self.wait_ready().await
    }

    /// The server's error log (startup, crash recovery, shutdown).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.error_log_path()).unwrap_or_default()
    }

    fn error_log_path(&self) -> PathBuf {
        self.dir.path().join("error.log")
    }

    async fn wait_ready(&self) -> Result<()> {
        let url = self.server_url();
        let ready = wait_until(Duration::from_secs(60), "MariaDB to answer", || {
            let url = url.clone();
            async move {
                use mysql_async::prelude::Queryable;
                let mut conn = mysql_async::Conn::from_url(url).await?;
                conn.query_drop("SELECT 1").await?;
                conn.disconnect().await?;
                Ok(Some(()))
            }
        })
        .await;
        if let Err(e) = ready {
            bail!("{e:#}\nMariaDB error log:\n{}", self.error_log());
        }
        Ok(())
    }
}

/// `mariadbd` as scripts/mariadb.sh starts it, with a smaller buffer pool. With
/// `innodb_flush_log_at_trx_commit=2` a commit reaches the OS at once and the disk within
/// a second, so killing the process (not the machine) loses no committed transaction.
fn server_command(dir: &std::path::Path, port: u16) -> Command {
    let bin = if std::path::Path::new("/usr/sbin/mariadbd").exists() {
        "/usr/sbin/mariadbd"
    } else {
        "mariadbd"
    };
    let mut cmd = Command::new(bin);
    cmd.arg("--no-defaults")
        .arg("--user=root")
        .arg(format!("--datadir={}", dir.join("data").display()))
        .arg(format!("--port={port}"))
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--socket={}", dir.join("mysqld.sock").display()))
        .arg(format!("--pid-file={}", dir.join("mysqld.pid").display()))
        .arg("--skip-name-resolve")
        .arg("--innodb-buffer-pool-size=128M")
        .arg("--innodb-flush-log-at-trx-commit=2")
        .arg("--max-connections=200")
        .arg("--max-allowed-packet=64M")
        .arg(format!("--log-error={}", dir.join("error.log").display()));
    cmd
}
