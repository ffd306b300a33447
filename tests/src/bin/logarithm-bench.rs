//! Throughput benchmark (docs/performance.md; run by `scripts/bench.sh`).
//!
//! 1. Ingest: 1,000,000 lines of 100 bytes POSTed to a real logarithmd (zstd batches of
//!    5,000 lines from 4 containers at once) into SQLite and into MariaDB; lines/s and MB/s
//!    from the first request to the last acknowledgement (acknowledged = committed).
//! 2. Raw ceiling, in the same run: the same rows written straight to each database with
//!    multi-row INSERTs (1,000 rows a statement on MariaDB, 100 on SQLite; one transaction
//!    per 5,000 rows; on MariaDB 4 connections at once, like the 4 ingest senders), no
//!    HTTP, no JSON, no dedup bookkeeping.
//! 3. Agent, API source, live: a container prints 1,000,000 lines of 100 bytes at full
//!    speed; antilog follows it through the Docker API and ships to logarithmd (SQLite);
//!    lines/s from container start to the job being final with every line stored, the
//!    agent's and dockerd's CPU seconds (utime + stime from /proc/<pid>/stat), the agent's
//!    peak RSS (VmHWM) and the time from the container's exit to the job being final.
//! 4. Agent, API source, catching up: the same container has finished before the agent
//!    starts; lines/s from the agent's start to the job being final, same CPU and memory
//!    figures.
//! 5. The same two agent paths on the file source (`docker-files`: the json-file log read
//!    from its files), and, as ceilings from the same run, the time `cat` takes to read
//!    that log file (page cache warm) and each path's rate as a share of logarithmd's own
//!    SQLite ingest rate (section 1).

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use logarithm_tests::docker::{self, Spec};
use logarithm_tests::{Agent, Daemon, Db, TOKEN};
use protocol::{Agent as WireAgent, Batch, ContainerMeta, ContainerSegment, Record, Stream};

const LINES: u64 = 1_000_000;
const LINE_BYTES: usize = 100;
const BATCH: u64 = 5_000;
const SENDERS: u64 = 4;

fn line(seq: u64) -> String {
    let s = format!("{seq:010} ");
    format!("{s}{}", "x".repeat(LINE_BYTES - s.len()))
}

struct Figure {
    what: String,
    secs: f64,
    lines: u64,
}

impl Figure {
    fn print(&self) {
        let mb = (self.lines as f64 * LINE_BYTES as f64) / 1e6;
        println!(
            "| {:<44} | {:>9.2} | {:>12.0} | {:>8.1} |",
            self.what,
            self.secs,
            self.lines as f64 / self.secs,
            mb / self.secs
        );
    }
}

fn compress_batch(container: &str, first_seq: u64, n: u64, meta: bool) -> Result<Vec<u8>> {
    let records = (first_seq..first_seq + n)
        .map(|seq| {
            Record::new(
                seq,
                1_764_000_000_000_000_000 + seq as i64,
                if seq % 2 == 0 {
                    Stream::Stderr
                } else {
                    Stream::Stdout
                },
                line(seq).into_bytes(),
                false,
            )
        })
        .collect();
    let batch = Batch {
        version: protocol::PROTOCOL_VERSION,
        agent: WireAgent {
            id: "bench".into(),
            node: "bench-node".into(),
        },
        segments: vec![ContainerSegment {
            container_id: container.to_owned(),
            meta: meta.then(|| ContainerMeta {
                name: format!("bench-{container}"),
                image: "bench".into(),
                labels: Default::default(),
                created_at: 1,
                started_at: 1,
                restart_count: 0,
                tty: false,
                log_driver: "json-file".into(),
            }),
            records,
            exit: None,
            logs_unavailable: None,
        }],
    };
    Ok(zstd::encode_all(&serde_json::to_vec(&batch)?[..], 1)?)
}

async fn bench_ingest(db: &Db, label: &str) -> Result<Figure> {
    let daemon = Daemon::start(db.url()).await?;
    let per_sender = LINES / SENDERS;
    // Bodies are prepared before the clock starts: this measures logarithmd and storage.
    let mut bodies = Vec::new();
    for s in 0..SENDERS {
        let container = format!("{:064x}", logarithm_tests::rand_u64() as u128 + s as u128);
        let mut list = Vec::new();
        let mut seq = 1;
        while seq <= per_sender {
            let n = BATCH.min(per_sender - seq + 1);
            list.push(compress_batch(&container, seq, n, seq == 1)?);
            seq += n;
        }
        bodies.push(list);
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for list in bodies {
        let http = daemon.http.clone();
        let url = format!("{}/api/v1/ingest", daemon.base);
        tasks.push(tokio::spawn(async move {
            let mut retries = 0u64;
            for body in list {
                loop {
                    let r = http
                        .post(&url)
                        .header("authorization", format!("Bearer {TOKEN}"))
                        .header("content-type", "application/json")
                        .header("content-encoding", "zstd")
                        .body(body.clone())
                        .send()
                        .await?;
                    // Like an agent: 503 means "send the same batch again shortly".
                    if r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE {
                        retries += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    if !r.status().is_success() {
                        bail!("ingest answered {}: {}", r.status(), r.text().await?);
                    }
                    break;
                }
            }
            Ok(retries)
        }));
    }
    let mut retries = 0;
    for t in tasks {
        retries += t.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    if retries > 0 {
        eprintln!("{label}: {retries} batches answered 503 and were sent again");
    }
    let stored = db.count("log_lines").await?;
    if stored != LINES {
        bail!("{label}: stored {stored} of {LINES}");
    }
    Ok(Figure {
        what: format!("logarithmd ingest → {label}"),
        secs,
        lines: LINES,
    })
}

async fn raw_mysql(server: &str) -> Result<Figure> {
    use mysql_async::prelude::Queryable;
    let name = format!("lg_raw_{:x}", logarithm_tests::rand_u64());
    let admin = mysql_async::Pool::new(server);
    let mut conn = admin.get_conn().await?;
    conn.query_drop(format!("CREATE DATABASE {name}")).await?;
    conn.query_drop(format!(
        "CREATE TABLE {name}.log_lines (job_id BIGINT NOT NULL, seq BIGINT NOT NULL, \
         stream TINYINT NOT NULL, ts BIGINT NOT NULL, cont TINYINT NOT NULL, \
         line MEDIUMBLOB NOT NULL, PRIMARY KEY (job_id, seq)) ENGINE=InnoDB"
    ))
    .await?;
    // The same parallelism as the ingest run: one connection per sender, each writing its
    // own job's rows.
    let pool = mysql_async::Pool::new(format!("{}/{name}", server.trim_end_matches('/')).as_str());
    let per_sender = LINES / SENDERS;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for sender in 0..SENDERS {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = pool.get_conn().await?;
            let job_id = 42 + sender as i64;
            let mut seq = 1u64;
            while seq <= per_sender {
                let batch_end = (seq + BATCH).min(per_sender + 1);
                let mut tx = conn
                    .start_transaction(mysql_async::TxOpts::default())
                    .await?;
                for chunk_start in (seq..batch_end).step_by(1000) {
                    let end = (chunk_start + 1000).min(batch_end);
                    let mut sql = String::from(
                        "INSERT INTO log_lines (job_id, seq, stream, ts, cont, line) VALUES ",
                    );
                    let mut params: Vec<mysql_async::Value> = Vec::new();
                    for s in chunk_start..end {
                        if s != chunk_start {
                            sql.push(',');
                        }
                        sql.push_str("(?,?,?,?,?,?)");
                        params.extend([
                            job_id.into(),
                            s.into(),
                            1u8.into(),
                            (s as i64).into(),
                            0u8.into(),
                            line(s).into_bytes().into(),
                        ]);
                    }
                    tx.exec_drop(sql, params).await?;
                }
                tx.commit().await?;
                seq = batch_end;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    pool.disconnect().await?;
    conn.query_drop(format!("DROP DATABASE {name}")).await?;
    drop(conn);
    admin.disconnect().await?;
    Ok(Figure {
        what: format!("raw multi-row INSERT → MariaDB ({SENDERS} conns)"),
        secs,
        lines: LINES,
    })
}

fn raw_sqlite() -> Result<Figure> {
    let dir = tempfile::tempdir()?;
    let mut conn = rusqlite::Connection::open(dir.path().join("raw.db"))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute(
        "CREATE TABLE log_lines (job_id INTEGER NOT NULL, seq INTEGER NOT NULL, stream INTEGER NOT NULL, \
         ts INTEGER NOT NULL, cont INTEGER NOT NULL, line BLOB NOT NULL, PRIMARY KEY (job_id, seq)) WITHOUT ROWID",
        [],
    )?;
    let rows = 100usize;
    let sql = format!(
        "INSERT INTO log_lines (job_id, seq, stream, ts, cont, line) VALUES {}",
        vec!["(?,?,?,?,?,?)"; rows].join(",")
    );
    let start = Instant::now();
    let mut seq = 1u64;
    while seq <= LINES {
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached(&sql)?;
            for chunk in (seq..seq + BATCH).step_by(rows) {
                let lines: Vec<Vec<u8>> = (chunk..chunk + rows as u64)
                    .map(|s| line(s).into_bytes())
                    .collect();
                let mut params: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(rows * 6);
                let seqs: Vec<i64> = (chunk..chunk + rows as u64).map(|s| s as i64).collect();
                for (i, l) in lines.iter().enumerate() {
                    params.push(&42i64);
                    params.push(&seqs[i]);
                    params.push(&1i64);
                    params.push(&seqs[i]);
                    params.push(&0i64);
                    params.push(l);
                }
                stmt.execute(params.as_slice())?;
            }
        }
        tx.commit()?;
        seq += BATCH;
    }
    Ok(Figure {
        what: "raw multi-row INSERT → SQLite".into(),
        secs: start.elapsed().as_secs_f64(),
        lines: LINES,
    })
}

fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = stat.rsplit_once(')').context("stat format")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

/// Peak resident memory of a process (VmHWM), in MiB.
fn peak_rss_mib(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .context("VmHWM")?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kb / 1024.0)
}

/// dockerd's pid (the engine the bench's containers run on).
fn dockerd_pid() -> Result<u32> {
    for dir in std::fs::read_dir("/proc")? {
        let dir = dir?;
        let Ok(pid) = dir.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if std::fs::read_to_string(dir.path().join("comm")).is_ok_and(|c| c.trim() == "dockerd") {
            return Ok(pid);
        }
    }
    bail!("no dockerd process found")
}

/// What one agent path cost.
struct AgentRun {
    figure: Figure,
    agent_cpu: f64,
    dockerd_cpu: f64,
    peak_rss_mib: f64,
    /// From the container's exit (Docker's FinishedAt) to the job seen final.
    exit_to_final: Option<f64>,
    /// Catching up: seconds `cat` takes to read the container's log file.
    cat_secs: Option<f64>,
}

impl AgentRun {
    fn print_costs(&self) {
        let per_m = 1e6 / self.figure.lines as f64;
        println!(
            "| {:<44} | {:>9.2} | {:>9.2} | {:>9.1} | {:>9} |",
            self.figure.what,
            self.agent_cpu * per_m,
            self.dockerd_cpu * per_m,
            self.peak_rss_mib,
            self.exit_to_final
                .map_or("-".to_string(), |s| format!("{s:.2}"))
        );
    }
}

fn bench_spec(label: &str) -> Spec {
    let payload = "x".repeat(LINE_BYTES);
    let mut spec = Spec::new(label, &format!("yes '{payload}' | head -n {LINES}"));
    // Docker deletes rotated log files whether or not anyone read them (this machine keeps
    // 3 × 10 MB); a container printing 170 MB at full speed would outrun any reader, so
    // the bench container keeps its whole log, as a production job's retention should.
    spec.log_driver = Some("json-file".into());
    spec.log_opts = vec![
        ("max-size".into(), "1g".into()),
        ("max-file".into(), "1".into()),
    ];
    spec
}

/// Docker's FinishedAt of a container, in ns since the epoch.
async fn finished_at(docker: &bollard::Docker, id: &str) -> Result<i64> {
    let info = docker.inspect_container(id, None).await?;
    let at = info
        .state
        .and_then(|s| s.finished_at)
        .context("FinishedAt")?;
    docker::parse_ts(&at)
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// `live`: the agent follows the container while it prints; else it starts once the
/// container has finished (catching up). `source`: antilog's `source` setting.
async fn bench_agent(live: bool, source: &str) -> Result<AgentRun> {
    let db = Db::sqlite()?;
    let daemon = Daemon::start(db.url()).await?;
    let label = format!("bench-{:x}", logarithm_tests::rand_u64());
    let docker = docker::connect().await?;
    let dockerd = dockerd_pid()?;
    let mut id = None;
    if !live {
        let c = docker::run(&docker, &bench_spec(&label)).await?;
        docker::wait_exit(&docker, &c).await?;
        id = Some(c);
    }
    let data = tempfile::tempdir()?;
    let agent = Agent::start_with(
        &daemon.base,
        &label,
        tempfile::tempdir()?,
        data.path().join("data"),
        &format!("source = \"{source}\"\n"),
    )?;
    let pid = agent.proc.pid().context("agent pid")?;
    if live {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let cpu0 = cpu_seconds(pid)?;
    let d0 = cpu_seconds(dockerd)?;
    let start = Instant::now();
    let id = match id {
        Some(id) => id,
        None => docker::run(&docker, &bench_spec(&label)).await?,
    };
    let job = daemon.wait_finished(&id, Duration::from_secs(900)).await?;
    let final_seen = now_ns();
    let secs = start.elapsed().as_secs_f64();
    let agent_cpu = cpu_seconds(pid)? - cpu0;
    let dockerd_cpu = cpu_seconds(dockerd)? - d0;
    let peak_rss_mib = peak_rss_mib(pid)?;
    let exit_to_final = if live {
        Some((final_seen - finished_at(&docker, &id).await?) as f64 / 1e9)
    } else {
        None
    };
    let cat_secs = if live {
        None
    } else {
        Some(cat(&docker, &id).await?)
    };
    docker::remove(&docker, &id).await;
    if job["line_count"] != LINES {
        bail!("agent bench stored {} lines", job["line_count"]);
    }
    let what = if live {
        format!("container → antilog ({source}, live) → SQLite")
    } else {
        format!("finished container → antilog ({source}) → SQLite")
    };
    Ok(AgentRun {
        figure: Figure {
            what,
            secs,
            lines: LINES,
        },
        agent_cpu,
        dockerd_cpu,
        peak_rss_mib,
        exit_to_final,
        cat_secs,
    })
}

/// Seconds `cat` takes to read a container's log file (page cache warm: just read).
async fn cat(docker: &bollard::Docker, id: &str) -> Result<f64> {
    let path = docker
        .inspect_container(id, None)
        .await?
        .log_path
        .context("LogPath")?;
    let t = Instant::now();
    let status = std::process::Command::new("cat")
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .status()?;
    if !status.success() {
        bail!("cat {path} failed");
    }
    Ok(t.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> Result<()> {
    println!("{LINES} lines of {LINE_BYTES} bytes each\n");
    println!(
        "| path                                         |   seconds |      lines/s |     MB/s |"
    );
    println!(
        "|----------------------------------------------|-----------|--------------|----------|"
    );
    std::io::stdout().flush()?;
    raw_sqlite()?.print();
    let sqlite_ingest = bench_ingest(&Db::sqlite()?, "SQLite").await?;
    sqlite_ingest.print();
    let server = logarithm_tests::mysql_server_url()?;
    raw_mysql(&server).await?.print();
    bench_ingest(&Db::mysql().await?, "MariaDB").await?.print();
    let mut runs = Vec::new();
    for source in ["docker-api", "docker-files"] {
        for live in [true, false] {
            let run = bench_agent(live, source).await?;
            run.figure.print();
            runs.push(run);
        }
    }
    println!(
        "\n| agent path                                   | antilog CPU-s/M lines | dockerd CPU-s/M lines | antilog VmHWM MiB | exit → final s |"
    );
    println!(
        "|----------------------------------------------|-----------|-----------|-----------|-----------|"
    );
    for run in &runs {
        run.print_costs();
    }
    let ingest_rate = sqlite_ingest.lines as f64 / sqlite_ingest.secs;
    println!();
    for run in &runs {
        println!(
            "{}: {:.0} % of logarithmd's own SQLite ingest rate",
            run.figure.what,
            100.0 * (run.figure.lines as f64 / run.figure.secs) / ingest_rate
        );
    }
    for run in runs.iter().filter_map(|r| r.cat_secs.map(|c| (r, c))) {
        println!(
            "cat of the log file read by \"{}\": {:.2} s",
            run.0.figure.what, run.1
        );
    }
    Ok(())
}
