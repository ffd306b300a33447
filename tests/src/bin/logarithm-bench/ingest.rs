//! Sections 1 and 2: logarithmd's ingest into SQLite and MariaDB, and the raw ceilings.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Result};
use logarithm_tests::ingest_client::{bodies, container_id, post_all};
use logarithm_tests::{Daemon, Db};

use crate::{line, Figure, BATCH, LINES, SENDERS};

/// Ingest through this build's logarithmd, or through `baseline` (another binary, e.g.
/// the build before a change: `LOGARITHM_BENCH_BASELINE`).
pub async fn bench_ingest(db: &Db, label: &str, baseline: Option<&Path>) -> Result<Figure> {
    let daemon = match baseline {
        Some(bin) => Daemon::start_binary(bin, db.url()).await?,
        None => Daemon::start(db.url()).await?,
    };
    // Bodies are prepared before the clock starts: this measures logarithmd and storage.
    let mut lists = Vec::new();
    for _ in 0..SENDERS {
        lists.push(bodies(&container_id(), LINES / SENDERS)?);
    }
    let start = Instant::now();
    let retries = post_all(&daemon, lists).await?;
    let secs = start.elapsed().as_secs_f64();
    if retries > 0 {
        eprintln!("{label}: {retries} batches answered 503 and were sent again");
    }
    let stored = db.count("log_lines").await?;
    if stored != LINES {
        bail!("{label}: stored {stored} of {LINES}");
    }
    let build = if baseline.is_some() {
        " (baseline)"
    } else {
        ""
    };
    Ok(Figure {
        what: format!("logarithmd ingest → {label}{build}"),
        secs,
        lines: LINES,
    })
}

/// This build's ingest against a baseline binary's on one database.
pub struct Versus {
    label: &'static str,
    /// Lines/s of each round: (this build, baseline).
    rates: Vec<(f64, f64)>,
}

impl Versus {
    /// `rounds` pairs of runs, each on a fresh database, alternating which binary goes
    /// first (so a machine getting busier or quieter does not favour one); every figure
    /// is printed as it comes.
    pub async fn run(mysql: bool, baseline: &Path, rounds: usize) -> Result<Versus> {
        let label = if mysql { "MariaDB" } else { "SQLite" };
        let mut rates = Vec::new();
        for round in 0..rounds {
            let mut pair = [0.0; 2];
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for which in order {
                let db = if mysql {
                    Db::mysql().await?
                } else {
                    Db::sqlite()?
                };
                let bin = (which == 1).then_some(baseline);
                let figure = bench_ingest(&db, label, bin).await?;
                figure.print();
                pair[which] = figure.rate();
            }
            rates.push((pair[0], pair[1]));
        }
        Ok(Versus { label, rates })
    }

    /// The medians and the spread of the ratio new / old over the rounds.
    pub fn print(&self) {
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
        };
        let new = median(self.rates.iter().map(|r| r.0).collect());
        let old = median(self.rates.iter().map(|r| r.1).collect());
        let ratios: Vec<f64> = self.rates.iter().map(|(n, o)| n / o).collect();
        let lo = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        println!(
            "ingest → {}: new {new:.0} lines/s, baseline {old:.0} lines/s (medians of {}); \
             new / old = {:.3} (rounds: {lo:.3} to {hi:.3})",
            self.label,
            self.rates.len(),
            new / old
        );
    }
}

pub async fn raw_mysql(server: &str) -> Result<Figure> {
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

pub fn raw_sqlite() -> Result<Figure> {
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
