//! The MySQL-protocol backend (`mysql_async`): TiDB in production, MariaDB in tests.
//!
//! The SQL is portable across TiDB 7.5+, MariaDB 10.11 and MySQL 8: no AUTO_INCREMENT,
//! `ON DUPLICATE KEY UPDATE` for idempotent writes, `/*T![clustered_index] */` comments
//! for TiDB-only syntax. Every operation is bounded in time, so an unreachable server gives
//! an `Unavailable` or `Timeout` error instead of a hang.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use mysql_async::prelude::{FromValue, Queryable};
use mysql_async::{
    Conn, Opts, OptsBuilder, Params, Pool, PoolConstraints, PoolOpts, Row, Transaction, TxOpts,
    Value,
};

use crate::documents::{self as docs, Document, DocumentPut, DocumentQuery};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{
    ApplyOutcome, Job, JobId, JobQuery, JobWrite, LineQuery, StoredLine, TransitionKind, WriteBatch,
};
use crate::mysql_documents;
use crate::mysql_webhooks;
use crate::shared::{
    self, chunk_by_size, line_chunks, list_jobs_sql, now_ns, outputs_by_name, placeholders,
    read_lines_sql, schema_too_new, validate, JobRow, Migration, Param, RawJob, JOB_INSERT,
    JOB_SELECT_COLUMNS, JOB_UPDATE,
};
use crate::webhook_events::{self, EventWrite};
use crate::webhooks::{
    self as wh, ClaimRequest, ClaimedDelivery, Delivery, DeliveryHistory, DeliveryId, Subscription,
    SubscriptionId, SubscriptionSpec,
};
use crate::{Storage, StorageConfig};

/// Applied in order; see `docs/storage.md`. Indexes are declared inside `CREATE TABLE`
/// because MySQL 8 has no `CREATE INDEX IF NOT EXISTS`, and every statement must be safe
/// to run again (DDL commits on its own, so a migration cannot be rolled back).
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial schema",
        statements: &[
            "CREATE TABLE IF NOT EXISTS jobs (
            id BIGINT NOT NULL,
            container_id VARCHAR(128) NOT NULL,
            name VARCHAR(255) NOT NULL,
            image VARCHAR(255) NOT NULL,
            node VARCHAR(255) NOT NULL,
            flow VARCHAR(255) NULL,
            run VARCHAR(255) NULL,
            stage VARCHAR(255) NULL,
            action VARCHAR(255) NULL,
            job_name VARCHAR(255) NULL,
            labels_json MEDIUMTEXT NOT NULL,
            status VARCHAR(16) NOT NULL,
            reason VARCHAR(1024) NULL,
            exit_code BIGINT NULL,
            co_result VARCHAR(1024) NULL,
            co_result_seq BIGINT NOT NULL DEFAULT 0,
            created_at BIGINT NOT NULL,
            started_at BIGINT NOT NULL,
            finished_at BIGINT NULL,
            updated_at BIGINT NOT NULL,
            restart_count INT NOT NULL DEFAULT 0,
            tty TINYINT NOT NULL DEFAULT 0,
            log_driver VARCHAR(64) NOT NULL DEFAULT '',
            logs_unavailable VARCHAR(1024) NULL,
            placeholder TINYINT NOT NULL DEFAULT 0,
            last_seq BIGINT NOT NULL DEFAULT 0,
            line_count BIGINT NOT NULL DEFAULT 0,
            PRIMARY KEY (id) /*T![clustered_index] CLUSTERED */,
            UNIQUE KEY uk_jobs_container_id (container_id),
            KEY idx_jobs_flow_run (flow, run),
            KEY idx_jobs_status_created (status, created_at),
            KEY idx_jobs_created (created_at, id)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            "CREATE TABLE IF NOT EXISTS log_lines (
            job_id BIGINT NOT NULL,
            seq BIGINT NOT NULL,
            stream TINYINT NOT NULL,
            ts BIGINT NOT NULL,
            cont TINYINT NOT NULL,
            line MEDIUMBLOB NOT NULL,
            PRIMARY KEY (job_id, seq) /*T![clustered_index] CLUSTERED */
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            "CREATE TABLE IF NOT EXISTS job_outputs (
            job_id BIGINT NOT NULL,
            name VARCHAR(255) NOT NULL,
            value TEXT NOT NULL,
            seq BIGINT NOT NULL,
            PRIMARY KEY (job_id, name) /*T![clustered_index] CLUSTERED */
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
            "CREATE TABLE IF NOT EXISTS job_labels (
            job_id BIGINT NOT NULL,
            name VARCHAR(128) NOT NULL,
            value VARCHAR(512) NOT NULL,
            PRIMARY KEY (job_id, name) /*T![clustered_index] CLUSTERED */,
            KEY idx_job_labels_name_value (name, value, job_id)
        ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
        ],
    },
    Migration {
        version: 2,
        name: "webhooks",
        statements: crate::mysql_webhooks::MIGRATION_2,
    },
    Migration {
        version: 3,
        name: "documents",
        statements: crate::mysql_documents::MIGRATION_3,
    },
];

const SCHEMA_MIGRATIONS: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version INT NOT NULL,
    name VARCHAR(200) NOT NULL,
    applied_at BIGINT NOT NULL,
    PRIMARY KEY (version)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin";

/// Server-wide advisory lock serialising migrations between processes.
const MIGRATION_LOCK: &str = "logarithm_migrations";

/// Strict mode makes the server reject (not silently truncate) a value too long for its
/// column, which is what keeps a failed batch all-or-nothing. Set on every new connection
/// so it does not depend on the server's configuration.
const SESSION_SETUP: &str = "SET SESSION sql_mode = 'STRICT_TRANS_TABLES,NO_ZERO_IN_DATE,\
     NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION'";

/// Waiting longer than this for a connection means the server is not there.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound on one operation (a whole `apply` included).
const OPERATION_TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound on opening (migrations wait up to 60 s for the lock themselves).
const OPEN_TIMEOUT: Duration = Duration::from_secs(120);
/// Rows per multi-row INSERT into `job_outputs` / `job_labels`; outputs are also bounded
/// by bytes, as values may be up to 64 KiB each.
const SMALL_CHUNK_ROWS: usize = 500;

impl From<mysql_async::Error> for Error {
    fn from(e: mysql_async::Error) -> Error {
        use mysql_async::{DriverError as D, Error as E};
        let kind = match &e {
            E::Io(_) => ErrorKind::Unavailable,
            E::Driver(D::ConnectionClosed | D::PoolDisconnected) => ErrorKind::Unavailable,
            E::Driver(D::FromValue { .. } | D::FromRow { .. }) => ErrorKind::Corrupt,
            E::Driver(D::PacketTooLarge) => ErrorKind::Invalid,
            E::Driver(_) | E::Other(_) => ErrorKind::Internal,
            E::Server(s) => server_error_kind(s.code),
            E::Url(_) => ErrorKind::Invalid,
        };
        Error::with_source(kind, format!("mysql: {e}"), e)
    }
}

/// Kinds of server error codes (MySQL/MariaDB, plus TiDB's 8xxx/9xxx).
fn server_error_kind(code: u16) -> ErrorKind {
    match code {
        // Lock wait timeout, deadlock, statement time limit, query interrupted; TiDB:
        // transaction retry, PD/TiKV timeouts, TiKV busy, write conflict.
        1205 | 1213 | 1317 | 3024 | 8022 | 8028 | 9001 | 9002 | 9003 | 9007 => ErrorKind::Timeout,
        // Too many connections, access denied, unknown database, shutting down, network
        // errors, host blocked, killed connection; TiDB: region unavailable.
        1040
        | 1044
        | 1045
        | 1049
        | 1053
        | 1077..=1081
        | 1129
        | 1130
        | 1152
        | 1158..=1161
        | 1184
        | 1203
        | 1927
        | 2002
        | 2003
        | 2006
        | 2013
        | 9005 => ErrorKind::Unavailable,
        // The data does not fit the schema: NULL in NOT NULL, duplicate key, out of range,
        // truncated or incorrect value, too long, packet too large.
        1048 | 1062 | 1136 | 1153 | 1264 | 1265 | 1292 | 1366 | 1406 | 1451 | 1452 => {
            ErrorKind::Invalid
        }
        _ => ErrorKind::Internal,
    }
}

fn to_value(p: Param) -> Value {
    match p {
        Param::Null => Value::NULL,
        Param::Int(v) => Value::Int(v),
        Param::Text(v) => Value::Bytes(v.into_bytes()),
    }
}

pub(crate) fn positional(params: Vec<Param>) -> Params {
    Params::Positional(params.into_iter().map(to_value).collect())
}

/// Column `idx` of `row`, or Corrupt.
pub(crate) fn take<T: FromValue>(row: &mut Row, idx: usize) -> Result<T> {
    match row.take_opt::<T, usize>(idx) {
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => Err(Error::new(
            ErrorKind::Corrupt,
            format!("mysql: column {idx} has an unexpected value: {e}"),
        )),
        None => Err(Error::new(
            ErrorKind::Corrupt,
            format!("mysql: column {idx} missing from the row"),
        )),
    }
}

fn raw_job(mut r: Row) -> Result<RawJob> {
    Ok(RawJob {
        id: take(&mut r, 0)?,
        container_id: take(&mut r, 1)?,
        name: take(&mut r, 2)?,
        image: take(&mut r, 3)?,
        node: take(&mut r, 4)?,
        labels_json: take(&mut r, 5)?,
        status: take(&mut r, 6)?,
        reason: take(&mut r, 7)?,
        exit_code: take(&mut r, 8)?,
        co_result: take(&mut r, 9)?,
        co_result_seq: take(&mut r, 10)?,
        created_at: take(&mut r, 11)?,
        started_at: take(&mut r, 12)?,
        finished_at: take(&mut r, 13)?,
        updated_at: take(&mut r, 14)?,
        restart_count: take(&mut r, 15)?,
        tty: take(&mut r, 16)?,
        log_driver: take(&mut r, 17)?,
        logs_unavailable: take(&mut r, 18)?,
        placeholder: take(&mut r, 19)?,
        last_seq: take(&mut r, 20)?,
        line_count: take(&mut r, 21)?,
    })
}

pub(crate) struct MysqlStorage {
    pool: Pool,
}

impl MysqlStorage {
    pub(crate) async fn open(config: &StorageConfig) -> Result<MysqlStorage> {
        // The URL error never echoes the URL, so a password cannot leak into logs.
        let opts = Opts::from_url(&config.url).map_err(|e| {
            Error::with_source(ErrorKind::Invalid, format!("invalid MySQL URL: {e}"), e)
        })?;
        if matches!(opts.db_name(), None | Some("")) {
            return Err(Error::new(
                ErrorKind::Invalid,
                "the MySQL URL names no database (mysql://user:pass@host:port/DATABASE)",
            ));
        }
        let max = config.max_connections.max(1);
        let constraints = PoolConstraints::new(max.min(2), max)
            .ok_or_else(|| Error::new(ErrorKind::Invalid, format!("invalid pool size {max}")))?;
        // No reset on return to the pool: it would cost a round trip per operation and
        // drop the server-side prepared statements the multi-row INSERTs reuse. Nothing
        // leaks between uses: every transaction ends in COMMIT or ROLLBACK.
        let pool_opts = PoolOpts::default()
            .with_constraints(constraints)
            .with_reset_connection(false)
            .with_inactive_connection_ttl(Duration::from_secs(60));
        let builder = OptsBuilder::from_opts(opts)
            .pool_opts(pool_opts)
            .setup(vec![SESSION_SETUP])
            .stmt_cache_size(64)
            .tcp_keepalive(Some(30_000u32))
            // affected_rows must count changed rows, not matched ones: that is how a
            // duplicate line (ON DUPLICATE KEY UPDATE that changes nothing) counts as 0.
            .client_found_rows(false);
        let storage = MysqlStorage {
            pool: Pool::new(builder),
        };
        let migrated = tokio::time::timeout(OPEN_TIMEOUT, storage.migrate()).await;
        let result = match migrated {
            Ok(r) => r,
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!("opening MySQL storage took longer than {OPEN_TIMEOUT:?}"),
            )),
        };
        if let Err(e) = result {
            // Close the pool's connections rather than leave them to the runtime.
            let _ = storage.pool.disconnect().await;
            return Err(e);
        }
        Ok(storage)
    }

    pub(crate) async fn conn(&self) -> Result<Conn> {
        match tokio::time::timeout(CONNECT_TIMEOUT, self.pool.get_conn()).await {
            Ok(conn) => Ok(conn?),
            Err(_) => Err(Error::new(
                ErrorKind::Unavailable,
                format!("no MySQL connection within {CONNECT_TIMEOUT:?}"),
            )),
        }
    }

    /// Runs `fut` with the operation time limit.
    pub(crate) async fn bounded<T>(
        &self,
        what: &str,
        fut: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(OPERATION_TIMEOUT, fut).await {
            Ok(r) => r,
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!("mysql: {what} did not finish within {OPERATION_TIMEOUT:?}"),
            )),
        }
    }

    /// Applies pending migrations holding the advisory lock on one connection (the lock
    /// belongs to the connection), so two processes opening at once apply them once.
    async fn migrate(&self) -> Result<()> {
        let mut conn = self.conn().await?;
        let locked: Option<Option<i64>> = conn
            .exec_first("SELECT GET_LOCK(?, 60)", (MIGRATION_LOCK,))
            .await?;
        match locked {
            Some(Some(1)) => {}
            Some(Some(0)) => {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    "another process held the migration lock for 60 s",
                ))
            }
            other => {
                return Err(Error::new(
                    ErrorKind::Internal,
                    format!("GET_LOCK answered {other:?}"),
                ))
            }
        }
        let result = migrate_locked(&mut conn).await;
        let released = conn
            .exec_drop("SELECT RELEASE_LOCK(?)", (MIGRATION_LOCK,))
            .await;
        if released.is_err() {
            // The lock dies with the connection; make sure it does not go back to the pool.
            let _ = conn.disconnect().await;
        }
        result
    }
}

async fn migrate_locked(conn: &mut Conn) -> Result<()> {
    conn.query_drop(SCHEMA_MIGRATIONS).await?;
    let current: Option<Option<i64>> = conn
        .query_first("SELECT MAX(version) FROM schema_migrations")
        .await?;
    let current = current.flatten().unwrap_or(0);
    let known = MIGRATIONS.last().map_or(0, |m| m.version);
    if current > known {
        return Err(schema_too_new(current, known));
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        for statement in m.statements {
            conn.query_drop(*statement).await?;
        }
        conn.exec_drop(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            (m.version, m.name, now_ns()),
        )
        .await?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "applied MySQL migration"
        );
    }
    Ok(())
}

async fn load_job(tx: &mut Transaction<'_>, id: JobId) -> Result<Option<JobRow>> {
    // FOR UPDATE: the row stays locked until commit, so two replicas applying writes for
    // the same job serialise instead of overwriting each other's counters.
    let sql = format!("SELECT {JOB_SELECT_COLUMNS} FROM jobs WHERE id = ? FOR UPDATE");
    let row: Option<Row> = tx.exec_first(sql, (id,)).await?;
    row.map(|r| raw_job(r).and_then(JobRow::try_from))
        .transpose()
}

async fn apply_batch(tx: &mut Transaction<'_>, batch: &WriteBatch) -> Result<ApplyOutcome> {
    let mut outcome = ApplyOutcome::default();
    let now = now_ns();
    for jw in &batch.jobs {
        apply_job(tx, jw, now, &mut outcome).await?;
    }
    // The outbox: deliveries commit with the transitions they announce.
    mysql_webhooks::insert_deliveries(tx, &outcome.events).await?;
    Ok(outcome)
}

async fn apply_job(
    tx: &mut Transaction<'_>,
    jw: &JobWrite,
    now: i64,
    out: &mut ApplyOutcome,
) -> Result<()> {
    let job_id = jw.job_id;
    // The job as it was at each transition, for notifications and webhook deliveries.
    let mut snapshots: Vec<(TransitionKind, Job)> = Vec::new();
    let (mut row, created) = match load_job(tx, job_id).await? {
        Some(row) => (row, false),
        None => {
            let row = match &jw.meta {
                Some(meta) => JobRow::from_meta(jw, meta, now),
                None => JobRow::placeholder(jw, now),
            };
            // Another replica may insert the same job between our SELECT and INSERT: the
            // no-op ON DUPLICATE KEY UPDATE turns that race into "row exists" (0 rows
            // affected) instead of an error, and we continue with the stored row.
            let sql = format!("{JOB_INSERT} ON DUPLICATE KEY UPDATE id = id");
            tx.exec_drop(sql, positional(row.insert_params())).await?;
            if tx.affected_rows() == 1 {
                (row, true)
            } else {
                match load_job(tx, job_id).await? {
                    Some(row) => (row, false),
                    None => {
                        return Err(Error::new(
                            ErrorKind::Invalid,
                            format!(
                                "container {} is already stored under another job id than {job_id}",
                                jw.container_id
                            ),
                        ))
                    }
                }
            }
        }
    };
    let before = row.clone();

    // 1. metadata
    if shared::apply_meta_step(&mut row, &before, jw, created, out, &mut snapshots) {
        replace_labels(tx, &row).await?;
    }

    // 2. lines
    if !jw.lines.is_empty() {
        let stored = insert_lines(tx, jw).await?;
        shared::count_lines(&mut row, jw, stored, out);
    }

    // 3. outputs and CO_RESULT
    if !jw.outputs.is_empty() {
        upsert_outputs(tx, jw).await?;
    }
    // 4. exit, 5. logs unavailable
    let finished = shared::apply_result_steps(&mut row, jw, out);

    if row != before {
        row.updated_at = now;
        tx.exec_drop(JOB_UPDATE, positional(row.update_params()))
            .await?;
    }
    if finished {
        let outputs = load_outputs(tx, job_id).await?;
        snapshots.push((TransitionKind::Finished, row.clone().into_job(outputs)));
    }
    out.events.extend(wh::job_events(snapshots, now));
    Ok(())
}

async fn load_outputs<Q: Queryable>(q: &mut Q, id: JobId) -> Result<BTreeMap<String, String>> {
    let rows: Vec<Row> = q
        .exec(
            "SELECT name, value FROM job_outputs WHERE job_id = ?",
            (id,),
        )
        .await?;
    let mut outputs = BTreeMap::new();
    for mut r in rows {
        outputs.insert(take(&mut r, 0)?, take(&mut r, 1)?);
    }
    Ok(outputs)
}

async fn replace_labels(tx: &mut Transaction<'_>, row: &JobRow) -> Result<()> {
    tx.exec_drop("DELETE FROM job_labels WHERE job_id = ?", (row.id,))
        .await?;
    let labels = row.indexed_labels();
    for chunk in labels.chunks(SMALL_CHUNK_ROWS) {
        let sql = format!(
            "INSERT INTO job_labels (job_id, name, value) VALUES {}",
            placeholders(chunk.len(), 3)
        );
        let mut params = Vec::with_capacity(chunk.len() * 3);
        for (name, value) in chunk {
            params.push(Value::Int(row.id));
            params.push(Value::Bytes(name.as_bytes().to_vec()));
            params.push(Value::Bytes(value.as_bytes().to_vec()));
        }
        tx.exec_drop(sql, Params::Positional(params)).await?;
    }
    Ok(())
}

/// Inserts lines, leaving stored ones untouched; returns how many were new.
async fn insert_lines(tx: &mut Transaction<'_>, jw: &JobWrite) -> Result<u64> {
    let mut stored = 0;
    for chunk in line_chunks(&jw.lines) {
        let sql = format!(
            "INSERT INTO log_lines (job_id, seq, stream, ts, cont, line) VALUES {} \
             ON DUPLICATE KEY UPDATE job_id = job_id",
            placeholders(chunk.len(), 6)
        );
        let mut params = Vec::with_capacity(chunk.len() * 6);
        for line in chunk {
            params.push(Value::Int(jw.job_id));
            params.push(Value::Int(shared::seq_to_db(line.seq)?));
            params.push(Value::Int(i64::from(line.stream.as_u8())));
            params.push(Value::Int(line.ts));
            params.push(Value::Int(i64::from(line.cont)));
            params.push(Value::Bytes(line.line.clone()));
        }
        tx.exec_drop(sql, Params::Positional(params)).await?;
        // 1 per inserted row, 0 per duplicate left as it was.
        stored += tx.affected_rows();
    }
    Ok(stored)
}

/// Upserts outputs; a stored value is replaced only by one with a higher seq. MySQL
/// evaluates assignments left to right, so `value` is decided while `seq` is still the
/// stored one.
async fn upsert_outputs(tx: &mut Transaction<'_>, jw: &JobWrite) -> Result<()> {
    let outputs = outputs_by_name(jw);
    let chunks = chunk_by_size(
        &outputs,
        SMALL_CHUNK_ROWS,
        shared::LINE_CHUNK_BYTES,
        |(name, value, _)| name.len() + value.len() + 32,
    );
    for chunk in chunks {
        let sql = format!(
            "INSERT INTO job_outputs (job_id, name, value, seq) VALUES {} \
             ON DUPLICATE KEY UPDATE value = IF(VALUES(seq) > seq, VALUES(value), value), \
             seq = GREATEST(seq, VALUES(seq))",
            placeholders(chunk.len(), 4)
        );
        let mut params = Vec::with_capacity(chunk.len() * 4);
        for (name, value, seq) in chunk {
            params.push(Value::Int(jw.job_id));
            params.push(Value::Bytes(name.as_bytes().to_vec()));
            params.push(Value::Bytes(value.as_bytes().to_vec()));
            params.push(Value::Int(*seq));
        }
        tx.exec_drop(sql, Params::Positional(params)).await?;
    }
    Ok(())
}

/// Attempts of one batch that ends in a deadlock or write conflict.
const CONFLICT_RETRIES: u64 = 5;

/// Deadlock (MySQL/MariaDB 1213) or a TiDB write conflict / retryable transaction (9007,
/// 8022, 8028): the transaction was rolled back as a whole.
fn is_write_conflict(e: &Error) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<mysql_async::Error>())
        .is_some_and(|m| matches!(m, mysql_async::Error::Server(s) if matches!(s.code, 1213 | 9007 | 8022 | 8028)))
}

impl MysqlStorage {
    /// One transaction of [`Storage::apply`].
    async fn apply_once(&self, batch: &WriteBatch) -> Result<ApplyOutcome> {
        let mut conn = self.conn().await?;
        let mut tx = conn.start_transaction(TxOpts::default()).await?;
        match apply_batch(&mut tx, batch).await {
            Ok(outcome) => {
                tx.commit().await?;
                Ok(outcome)
            }
            Err(e) => {
                // If the rollback fails the connection is broken, and the server rolls
                // back when it closes; the original error is the one to report.
                let _ = tx.rollback().await;
                Err(e)
            }
        }
    }
}

#[async_trait::async_trait]
impl Storage for MysqlStorage {
    async fn apply(&self, batch: &WriteBatch) -> Result<ApplyOutcome> {
        validate(batch)?;
        if batch.jobs.is_empty() {
            return Ok(ApplyOutcome::default());
        }
        self.bounded("apply", async {
            let mut attempt = 1;
            loop {
                match self.apply_once(batch).await {
                    // Concurrent first writes of new jobs can deadlock on InnoDB gap locks
                    // (and conflict optimistically on TiDB): the server rolled the whole
                    // transaction back, so running it again is safe and usually succeeds.
                    Err(e) if is_write_conflict(&e) && attempt < CONFLICT_RETRIES => {
                        tracing::debug!(error = %e, attempt, "write conflict; retrying the batch");
                        let jitter = rand::random::<u64>() % 20;
                        tokio::time::sleep(Duration::from_millis(10 * attempt + jitter)).await;
                        attempt += 1;
                    }
                    other => return other,
                }
            }
        })
        .await
    }

    async fn get_job(&self, id: JobId) -> Result<Option<Job>> {
        self.bounded("get_job", async {
            let mut conn = self.conn().await?;
            let sql = format!("SELECT {JOB_SELECT_COLUMNS} FROM jobs WHERE id = ?");
            let Some(row) = conn.exec_first::<Row, _, _>(sql, (id,)).await? else {
                return Ok(None);
            };
            let row = JobRow::try_from(raw_job(row)?)?;
            let outputs = load_outputs(&mut conn, id).await?;
            Ok(Some(row.into_job(outputs)))
        })
        .await
    }

    async fn list_jobs(&self, query: &JobQuery) -> Result<Vec<Job>> {
        let (sql, params) = list_jobs_sql(query);
        self.bounded("list_jobs", async {
            let mut conn = self.conn().await?;
            let rows: Vec<Row> = conn.exec(sql, positional(params)).await?;
            rows.into_iter()
                .map(|r| Ok(JobRow::try_from(raw_job(r)?)?.into_job(BTreeMap::new())))
                .collect()
        })
        .await
    }

    async fn read_lines(&self, query: &LineQuery) -> Result<Vec<StoredLine>> {
        let (sql, params) = read_lines_sql(query);
        self.bounded("read_lines", async {
            let mut conn = self.conn().await?;
            let rows: Vec<Row> = conn.exec(sql, positional(params)).await?;
            rows.into_iter()
                .map(|mut r| {
                    shared::stored_line(
                        query.job_id,
                        take(&mut r, 0)?,
                        take(&mut r, 1)?,
                        take(&mut r, 2)?,
                        take(&mut r, 3)?,
                        take(&mut r, 4)?,
                    )
                })
                .collect()
        })
        .await
    }

    async fn upsert_subscription(&self, spec: &SubscriptionSpec) -> Result<Subscription> {
        wh::validate_spec(spec)?;
        self.bounded("upsert_subscription", async {
            let mut conn = self.conn().await?;
            mysql_webhooks::upsert_subscription(&mut conn, spec, now_ns()).await
        })
        .await
    }

    async fn list_subscriptions(&self) -> Result<Vec<Subscription>> {
        self.bounded("list_subscriptions", async {
            let mut conn = self.conn().await?;
            mysql_webhooks::list_subscriptions(&mut conn, None, false).await
        })
        .await
    }

    async fn get_subscription(&self, id: SubscriptionId) -> Result<Option<Subscription>> {
        self.bounded("get_subscription", async {
            let mut conn = self.conn().await?;
            Ok(
                mysql_webhooks::list_subscriptions(&mut conn, Some(id), false)
                    .await?
                    .pop(),
            )
        })
        .await
    }

    async fn delete_subscription(&self, id: SubscriptionId) -> Result<bool> {
        self.bounded("delete_subscription", async {
            let mut conn = self.conn().await?;
            mysql_webhooks::delete_subscription(&mut conn, id).await
        })
        .await
    }

    async fn claim_deliveries(&self, req: &ClaimRequest) -> Result<Vec<ClaimedDelivery>> {
        wh::validate_claim(req)?;
        self.bounded("claim_deliveries", async {
            let mut conn = self.conn().await?;
            mysql_webhooks::claim(&mut conn, req).await
        })
        .await
    }

    async fn complete_attempt(&self, rec: &wh::AttemptRecord) -> Result<bool> {
        self.bounded("complete_attempt", async {
            let mut conn = self.conn().await?;
            mysql_webhooks::complete_attempt(&mut conn, rec, now_ns()).await
        })
        .await
    }

    async fn list_deliveries(
        &self,
        subscription: SubscriptionId,
        limit: u32,
    ) -> Result<Vec<DeliveryHistory>> {
        self.bounded("list_deliveries", async {
            let mut conn = self.conn().await?;
            mysql_webhooks::list_deliveries(&mut conn, subscription, limit).await
        })
        .await
    }

    async fn redeliver(
        &self,
        subscription: SubscriptionId,
        delivery: DeliveryId,
        now: i64,
    ) -> Result<Option<Delivery>> {
        self.bounded("redeliver", async {
            let mut conn = self.conn().await?;
            mysql_webhooks::redeliver(&mut conn, subscription, delivery, now).await
        })
        .await
    }

    async fn count_pending_deliveries(&self) -> Result<u64> {
        self.bounded("count_pending_deliveries", async {
            let mut conn = self.conn().await?;
            let n: Option<u64> = conn
                .query_first(crate::webhooks::DELIVERY_COUNT_PENDING)
                .await?;
            Ok(n.unwrap_or(0))
        })
        .await
    }

    async fn ping(&self) -> Result<()> {
        self.bounded("ping", async {
            let mut conn = self.conn().await?;
            conn.query_drop("SELECT 1").await?;
            Ok(())
        })
        .await
    }

    async fn get_document(&self, namespace: &str, id: &str) -> Result<Option<Document>> {
        docs::validate_get(namespace, id)?;
        self.bounded("get_document", async {
            let mut conn = self.conn().await?;
            mysql_documents::get(&mut conn, namespace, id).await
        })
        .await
    }

    async fn put_document(&self, put: &DocumentPut) -> Result<Option<u64>> {
        docs::validate_put(put)?;
        self.bounded("put_document", async {
            let mut conn = self.conn().await?;
            mysql_documents::put(&mut conn, put, now_ns()).await
        })
        .await
    }

    async fn list_documents(&self, query: &DocumentQuery) -> Result<Vec<Document>> {
        docs::validate_query(query)?;
        self.bounded("list_documents", async {
            let mut conn = self.conn().await?;
            mysql_documents::list(&mut conn, query).await
        })
        .await
    }

    async fn enqueue_event(&self, event: &EventWrite) -> Result<u64> {
        webhook_events::validate(event)?;
        self.bounded("enqueue_event", async {
            let mut conn = self.conn().await?;
            webhook_events::mysql::enqueue(&mut conn, event).await
        })
        .await
    }

    fn backend(&self) -> &'static str {
        "mysql"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds() {
        assert_eq!(server_error_kind(1213), ErrorKind::Timeout);
        assert_eq!(server_error_kind(1406), ErrorKind::Invalid);
        assert_eq!(server_error_kind(1045), ErrorKind::Unavailable);
        assert_eq!(server_error_kind(1064), ErrorKind::Internal);
    }
}
