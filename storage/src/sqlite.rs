//! The SQLite backend: one database file (or memory, for tests) through `rusqlite`.
//!
//! rusqlite is blocking, so all of its work runs in `spawn_blocking`. SQLite allows one
//! writer at a time anyway, so there is exactly one writer connection behind a mutex
//! (writes queue there instead of spinning on `SQLITE_BUSY`), plus a small pool of reader
//! connections that WAL mode lets read while the writer writes. An in-memory database
//! exists per connection, so it uses the writer connection for everything.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use tokio::sync::Semaphore;

use crate::documents::{self as docs, Document, DocumentPut, DocumentQuery};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{
    ApplyOutcome, Job, JobId, JobQuery, JobWrite, LineQuery, StoredLine, TransitionKind, WriteBatch,
};
use crate::shared::{
    self, list_jobs_sql, now_ns, outputs_by_name, placeholders, read_lines_sql, schema_too_new,
    validate, JobRow, Migration, Param, RawJob, JOB_INSERT, JOB_SELECT_COLUMNS, JOB_UPDATE,
};
use crate::sqlite_documents;
use crate::sqlite_webhooks;
use crate::webhook_events::{self, EventWrite};
use crate::webhooks::{
    self as wh, ClaimRequest, ClaimedDelivery, Delivery, DeliveryHistory, DeliveryId, Subscription,
    SubscriptionId, SubscriptionSpec,
};
use crate::Storage;

/// Applied in order; see `docs/storage.md`. Tables are STRICT (types enforced) and CHECK
/// the same length limits MySQL's column types impose, so both backends accept and reject
/// the same data. `log_lines` is WITHOUT ROWID: the primary key is the table, as TiDB's
/// clustered index is.
const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "initial schema",
    statements: &[
        "CREATE TABLE IF NOT EXISTS jobs (
            id INTEGER NOT NULL PRIMARY KEY,
            container_id TEXT NOT NULL UNIQUE CHECK (length(container_id) <= 128),
            name TEXT NOT NULL CHECK (length(name) <= 255),
            image TEXT NOT NULL CHECK (length(image) <= 255),
            node TEXT NOT NULL CHECK (length(node) <= 255),
            flow TEXT NULL CHECK (length(flow) <= 255),
            run TEXT NULL CHECK (length(run) <= 255),
            stage TEXT NULL CHECK (length(stage) <= 255),
            action TEXT NULL CHECK (length(action) <= 255),
            job_name TEXT NULL CHECK (length(job_name) <= 255),
            labels_json TEXT NOT NULL,
            status TEXT NOT NULL CHECK (length(status) <= 16),
            reason TEXT NULL CHECK (length(reason) <= 1024),
            exit_code INTEGER NULL,
            co_result TEXT NULL CHECK (length(co_result) <= 1024),
            co_result_seq INTEGER NOT NULL DEFAULT 0,
            created_at INTEGER NOT NULL,
            started_at INTEGER NOT NULL,
            finished_at INTEGER NULL,
            updated_at INTEGER NOT NULL,
            restart_count INTEGER NOT NULL DEFAULT 0,
            tty INTEGER NOT NULL DEFAULT 0,
            log_driver TEXT NOT NULL DEFAULT '' CHECK (length(log_driver) <= 64),
            logs_unavailable TEXT NULL CHECK (length(logs_unavailable) <= 1024),
            placeholder INTEGER NOT NULL DEFAULT 0,
            last_seq INTEGER NOT NULL DEFAULT 0,
            line_count INTEGER NOT NULL DEFAULT 0
        ) STRICT",
        "CREATE INDEX IF NOT EXISTS idx_jobs_flow_run ON jobs (flow, run)",
        "CREATE INDEX IF NOT EXISTS idx_jobs_status_created ON jobs (status, created_at)",
        "CREATE INDEX IF NOT EXISTS idx_jobs_created ON jobs (created_at, id)",
        "CREATE TABLE IF NOT EXISTS log_lines (
            job_id INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            stream INTEGER NOT NULL,
            ts INTEGER NOT NULL,
            cont INTEGER NOT NULL,
            line BLOB NOT NULL CHECK (length(line) <= 16777215),
            PRIMARY KEY (job_id, seq)
        ) STRICT, WITHOUT ROWID",
        "CREATE TABLE IF NOT EXISTS job_outputs (
            job_id INTEGER NOT NULL,
            name TEXT NOT NULL CHECK (length(name) <= 255),
            value TEXT NOT NULL CHECK (length(CAST(value AS BLOB)) <= 65535),
            seq INTEGER NOT NULL,
            PRIMARY KEY (job_id, name)
        ) STRICT, WITHOUT ROWID",
        "CREATE TABLE IF NOT EXISTS job_labels (
            job_id INTEGER NOT NULL,
            name TEXT NOT NULL CHECK (length(name) <= 128),
            value TEXT NOT NULL CHECK (length(value) <= 512),
            PRIMARY KEY (job_id, name)
        ) STRICT, WITHOUT ROWID",
        "CREATE INDEX IF NOT EXISTS idx_job_labels_name_value ON job_labels (name, value, job_id)",
    ],
}, Migration {
    version: 2,
    name: "webhooks",
    statements: crate::sqlite_webhooks::MIGRATION_2,
}, Migration {
    version: 3,
    name: "documents",
    statements: crate::sqlite_documents::MIGRATION_3,
}];

const SCHEMA_MIGRATIONS: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER NOT NULL PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at INTEGER NOT NULL
) STRICT";

/// How long a connection waits for another process's lock before `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_millis(5000);
/// Rows per multi-row line INSERT: one cached statement of this size takes the bulk of a
/// batch, a cached one-row statement the remainder (6 × 64 parameters is far below
/// SQLite's 32,766-variable limit).
const MULTI_ROWS: usize = 64;
/// Readers beyond this are not useful on a single file.
const MAX_READERS: usize = 4;

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Error {
        use rusqlite::ErrorCode as C;
        let kind = match &e {
            rusqlite::Error::SqliteFailure(f, _) => match f.code {
                C::DatabaseBusy | C::DatabaseLocked => ErrorKind::Timeout,
                C::CannotOpen
                | C::SystemIoFailure
                | C::DiskFull
                | C::PermissionDenied
                | C::ReadOnly
                | C::FileLockingProtocolFailed => ErrorKind::Unavailable,
                C::NotADatabase | C::DatabaseCorrupt => ErrorKind::Corrupt,
                C::ConstraintViolation | C::TooBig | C::TypeMismatch | C::ParameterOutOfRange => {
                    ErrorKind::Invalid
                }
                _ => ErrorKind::Internal,
            },
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::Utf8Error(..)
            | rusqlite::Error::InvalidColumnType(..) => ErrorKind::Corrupt,
            rusqlite::Error::ToSqlConversionFailure(..) => ErrorKind::Invalid,
            _ => ErrorKind::Internal,
        };
        Error::with_source(kind, format!("sqlite: {e}"), e)
    }
}

fn join_error(e: tokio::task::JoinError) -> Error {
    Error::new(
        ErrorKind::Internal,
        format!("sqlite worker task failed: {e}"),
    )
}

fn to_value(p: Param) -> Value {
    match p {
        Param::Null => Value::Null,
        Param::Int(v) => Value::Integer(v),
        Param::Text(v) => Value::Text(v),
    }
}

pub(crate) fn values(params: Vec<Param>) -> rusqlite::ParamsFromIter<Vec<Value>> {
    rusqlite::params_from_iter(params.into_iter().map(to_value).collect::<Vec<_>>())
}

/// Where the database is, from the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Location {
    Memory,
    File(PathBuf),
}

fn parse_url(url: &str) -> Result<Location> {
    if url == "sqlite::memory:" || url == "sqlite://:memory:" {
        return Ok(Location::Memory);
    }
    // `sqlite:///abs/path.db` leaves `/abs/path.db`, `sqlite://rel.db` leaves `rel.db`.
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or("");
    if path.is_empty() {
        return Err(Error::new(
            ErrorKind::Invalid,
            format!("SQLite URL {url:?} names no file: use sqlite:///abs/path.db, sqlite://relative.db or sqlite::memory:"),
        ));
    }
    Ok(Location::File(PathBuf::from(path)))
}

/// Per-connection settings. WAL is a property of the file (set once by the writer);
/// `synchronous = NORMAL` is safe with WAL (a power loss may lose the last commits, never
/// corrupt the file) and avoids an fsync per commit.
fn configure(conn: &Connection, writer: bool, memory: bool) -> Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    if writer && !memory {
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(mode, "SQLite did not switch to WAL mode");
        }
    }
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.set_prepared_statement_cache_capacity(64);
    if !writer {
        conn.pragma_update(None, "query_only", true)?;
    }
    Ok(())
}

fn open_connection(location: &Location, writer: bool) -> Result<Connection> {
    let conn = match location {
        Location::Memory => Connection::open_in_memory()?,
        Location::File(path) => Connection::open(path)?,
    };
    configure(&conn, writer, *location == Location::Memory)?;
    Ok(conn)
}

/// Applies pending migrations under `BEGIN IMMEDIATE`, which takes SQLite's write lock
/// first: a second process opening the same file waits (busy timeout), then finds the
/// migrations recorded and does nothing.
fn migrate(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(SCHEMA_MIGRATIONS)?;
    let current: i64 = tx.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |r| r.get(0),
    )?;
    let known = MIGRATIONS.last().map_or(0, |m| m.version);
    if current > known {
        return Err(schema_too_new(current, known));
    }
    for m in MIGRATIONS.iter().filter(|m| m.version > current) {
        for statement in m.statements {
            tx.execute_batch(statement)?;
        }
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            params![m.version, m.name, now_ns()],
        )?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "applied SQLite migration"
        );
    }
    tx.commit()?;
    Ok(())
}

struct Readers {
    location: Location,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

struct Inner {
    writer: Mutex<Connection>,
    /// `None` for an in-memory database (readers would see other, empty databases).
    readers: Option<Readers>,
}

pub(crate) struct SqliteStorage {
    inner: Arc<Inner>,
}

impl SqliteStorage {
    pub(crate) async fn open(config: &crate::StorageConfig) -> Result<SqliteStorage> {
        let location = parse_url(&config.url)?;
        let readers = config.max_connections.clamp(1, MAX_READERS);
        let writer_location = location.clone();
        let writer = tokio::task::spawn_blocking(move || -> Result<Connection> {
            if let Location::File(path) = &writer_location {
                create_parent(path)?;
            }
            let mut conn = open_connection(&writer_location, true)?;
            migrate(&mut conn)?;
            Ok(conn)
        })
        .await
        .map_err(join_error)??;
        let readers = match location {
            Location::Memory => None,
            file => Some(Readers {
                location: file,
                idle: Mutex::new(Vec::new()),
                permits: Semaphore::new(readers),
            }),
        };
        Ok(SqliteStorage {
            inner: Arc::new(Inner {
                writer: Mutex::new(writer),
                readers,
            }),
        })
    }

    /// Runs `f` on the writer connection in a blocking task.
    pub(crate) async fn with_writer<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock unwound through rusqlite's Transaction, which
            // rolled back: the connection is consistent, so a poisoned lock is usable.
            let mut conn = inner.writer.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut conn)
        })
        .await
        .map_err(join_error)?
    }

    /// Runs `f` on a reader connection (opened on first use, then reused).
    pub(crate) async fn with_reader<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let Some(readers) = &self.inner.readers else {
            return self.with_writer(move |conn| f(conn)).await;
        };
        let _permit = readers
            .permits
            .acquire()
            .await
            .map_err(|_| Error::new(ErrorKind::Internal, "SQLite reader pool closed"))?;
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let Some(readers) = &inner.readers else {
                return Err(Error::new(ErrorKind::Internal, "SQLite readers vanished"));
            };
            let idle = readers
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            let conn = match idle {
                Some(conn) => conn,
                None => open_connection(&readers.location, false)?,
            };
            let result = f(&conn);
            readers
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(conn);
            result
        })
        .await
        .map_err(join_error)?
    }
}

fn create_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => {
            std::fs::create_dir_all(parent).map_err(|e| {
                Error::with_source(
                    ErrorKind::Unavailable,
                    format!("cannot create directory {}", parent.display()),
                    e,
                )
            })
        }
        _ => Ok(()),
    }
}

fn raw_job(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawJob> {
    Ok(RawJob {
        id: r.get(0)?,
        container_id: r.get(1)?,
        name: r.get(2)?,
        image: r.get(3)?,
        node: r.get(4)?,
        labels_json: r.get(5)?,
        status: r.get(6)?,
        reason: r.get(7)?,
        exit_code: r.get(8)?,
        co_result: r.get(9)?,
        co_result_seq: r.get(10)?,
        created_at: r.get(11)?,
        started_at: r.get(12)?,
        finished_at: r.get(13)?,
        updated_at: r.get(14)?,
        restart_count: r.get(15)?,
        tty: r.get(16)?,
        log_driver: r.get(17)?,
        logs_unavailable: r.get(18)?,
        placeholder: r.get(19)?,
        last_seq: r.get(20)?,
        line_count: r.get(21)?,
    })
}

fn load_job(conn: &Connection, id: JobId) -> Result<Option<JobRow>> {
    let sql = format!("SELECT {JOB_SELECT_COLUMNS} FROM jobs WHERE id = ?");
    let raw = conn
        .prepare_cached(&sql)?
        .query_row([id], raw_job)
        .optional()?;
    raw.map(JobRow::try_from).transpose()
}

pub(crate) fn load_outputs(conn: &Connection, id: JobId) -> Result<BTreeMap<String, String>> {
    let mut stmt = conn.prepare_cached("SELECT name, value FROM job_outputs WHERE job_id = ?")?;
    let rows = stmt.query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let mut outputs = BTreeMap::new();
    for row in rows {
        let (name, value): (String, String) = row?;
        outputs.insert(name, value);
    }
    Ok(outputs)
}

fn apply_batch(conn: &mut Connection, batch: &WriteBatch) -> Result<ApplyOutcome> {
    // IMMEDIATE: take the write lock now, not at the first write, so a concurrent writer
    // in another process makes us wait (busy timeout) instead of failing mid-way.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut outcome = ApplyOutcome::default();
    let now = now_ns();
    for jw in &batch.jobs {
        apply_job(&tx, jw, now, &mut outcome)?;
    }
    // The outbox: deliveries commit with the transitions they announce.
    sqlite_webhooks::insert_deliveries(&tx, &outcome.events)?;
    tx.commit()?;
    Ok(outcome)
}

fn apply_job(tx: &Transaction<'_>, jw: &JobWrite, now: i64, out: &mut ApplyOutcome) -> Result<()> {
    let job_id = jw.job_id;
    // The job as it was at each transition, for notifications and webhook deliveries.
    let mut snapshots: Vec<(TransitionKind, Job)> = Vec::new();
    let (mut row, created) = match load_job(tx, job_id)? {
        Some(row) => (row, false),
        None => {
            let row = match &jw.meta {
                Some(meta) => JobRow::from_meta(jw, meta, now),
                None => JobRow::placeholder(jw, now),
            };
            tx.prepare_cached(JOB_INSERT)?
                .execute(values(row.insert_params()))?;
            (row, true)
        }
    };
    let before = row.clone();

    // 1. metadata
    if shared::apply_meta_step(&mut row, &before, jw, created, out, &mut snapshots) {
        tx.prepare_cached("DELETE FROM job_labels WHERE job_id = ?")?
            .execute([job_id])?;
        let mut insert =
            tx.prepare_cached("INSERT INTO job_labels (job_id, name, value) VALUES (?, ?, ?)")?;
        for (name, value) in row.indexed_labels() {
            insert.execute(params![job_id, name, value])?;
        }
    }

    // 2. lines
    if !jw.lines.is_empty() {
        let stored = insert_lines(tx, job_id, jw)?;
        shared::count_lines(&mut row, jw, stored, out);
    }

    // 3. outputs and CO_RESULT
    if !jw.outputs.is_empty() {
        let mut upsert = tx.prepare_cached(
            "INSERT INTO job_outputs (job_id, name, value, seq) VALUES (?, ?, ?, ?) \
             ON CONFLICT (job_id, name) DO UPDATE SET value = excluded.value, seq = excluded.seq \
             WHERE excluded.seq > job_outputs.seq",
        )?;
        for (name, value, seq) in outputs_by_name(jw) {
            upsert.execute(params![job_id, name, value, seq])?;
        }
    }
    // 4. exit, 5. logs unavailable
    let finished = shared::apply_result_steps(&mut row, jw, out);

    if row != before {
        row.updated_at = now;
        tx.prepare_cached(JOB_UPDATE)?
            .execute(values(row.update_params()))?;
    }
    if finished {
        let job = row.clone().into_job(load_outputs(tx, job_id)?);
        snapshots.push((TransitionKind::Finished, job));
    }
    out.events.extend(wh::job_events(snapshots, now));
    Ok(())
}

/// Inserts lines, leaving stored ones untouched; returns how many were new.
fn insert_lines(tx: &Transaction<'_>, job_id: JobId, jw: &JobWrite) -> Result<u64> {
    const COLUMNS: &str = "INSERT INTO log_lines (job_id, seq, stream, ts, cont, line) VALUES ";
    let mut stored = 0usize;
    let mut chunks = jw.lines.chunks_exact(MULTI_ROWS);
    {
        let sql = format!(
            "{COLUMNS}{} ON CONFLICT DO NOTHING",
            placeholders(MULTI_ROWS, 6)
        );
        let mut stmt = tx.prepare_cached(&sql)?;
        for chunk in &mut chunks {
            let mut i = 1;
            for line in chunk {
                stmt.raw_bind_parameter(i, job_id)?;
                stmt.raw_bind_parameter(i + 1, shared::seq_to_db(line.seq)?)?;
                stmt.raw_bind_parameter(i + 2, line.stream.as_u8())?;
                stmt.raw_bind_parameter(i + 3, line.ts)?;
                stmt.raw_bind_parameter(i + 4, line.cont)?;
                stmt.raw_bind_parameter(i + 5, line.line.as_slice())?;
                i += 6;
            }
            stored += stmt.raw_execute()?;
        }
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let sql = format!("{COLUMNS}(?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING");
        let mut stmt = tx.prepare_cached(&sql)?;
        for line in rest {
            stored += stmt.execute(params![
                job_id,
                shared::seq_to_db(line.seq)?,
                line.stream.as_u8(),
                line.ts,
                line.cont,
                line.line.as_slice(),
            ])?;
        }
    }
    Ok(stored as u64)
}

#[async_trait::async_trait]
impl Storage for SqliteStorage {
    async fn apply(&self, batch: &WriteBatch) -> Result<ApplyOutcome> {
        validate(batch)?;
        if batch.jobs.is_empty() {
            return Ok(ApplyOutcome::default());
        }
        // The blocking task needs an owned batch; copying it is cheap next to the I/O.
        let batch = batch.clone();
        self.with_writer(move |conn| apply_batch(conn, &batch))
            .await
    }

    async fn get_job(&self, id: JobId) -> Result<Option<Job>> {
        self.with_reader(move |conn| {
            // One read transaction, so the job and its outputs are from the same commit.
            let tx = conn.unchecked_transaction()?;
            let Some(row) = load_job(&tx, id)? else {
                return Ok(None);
            };
            let outputs = load_outputs(&tx, id)?;
            tx.finish()?;
            Ok(Some(row.into_job(outputs)))
        })
        .await
    }

    async fn list_jobs(&self, query: &JobQuery) -> Result<Vec<Job>> {
        let (sql, params) = list_jobs_sql(query);
        self.with_reader(move |conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(values(params), raw_job)?;
            let mut jobs = Vec::new();
            for raw in rows {
                jobs.push(JobRow::try_from(raw?)?.into_job(BTreeMap::new()));
            }
            Ok(jobs)
        })
        .await
    }

    async fn read_lines(&self, query: &LineQuery) -> Result<Vec<StoredLine>> {
        let (sql, params) = read_lines_sql(query);
        let job_id = query.job_id;
        self.with_reader(move |conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(values(params), |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?;
            let mut lines = Vec::new();
            for row in rows {
                let (seq, ts, stream, cont, line) = row?;
                lines.push(shared::stored_line(job_id, seq, ts, stream, cont, line)?);
            }
            Ok(lines)
        })
        .await
    }

    async fn upsert_subscription(&self, spec: &SubscriptionSpec) -> Result<Subscription> {
        wh::validate_spec(spec)?;
        let spec = spec.clone();
        self.with_writer(move |conn| sqlite_webhooks::upsert_subscription(conn, &spec, now_ns()))
            .await
    }

    async fn list_subscriptions(&self) -> Result<Vec<Subscription>> {
        self.with_reader(|conn| sqlite_webhooks::list_subscriptions(conn, None))
            .await
    }

    async fn get_subscription(&self, id: SubscriptionId) -> Result<Option<Subscription>> {
        self.with_reader(move |conn| Ok(sqlite_webhooks::list_subscriptions(conn, Some(id))?.pop()))
            .await
    }

    async fn delete_subscription(&self, id: SubscriptionId) -> Result<bool> {
        self.with_writer(move |conn| sqlite_webhooks::delete_subscription(conn, id))
            .await
    }

    async fn claim_deliveries(&self, req: &ClaimRequest) -> Result<Vec<ClaimedDelivery>> {
        wh::validate_claim(req)?;
        let r = req.clone();
        // Reading candidates does not need the write lock; most polls find none.
        let candidates = self
            .with_reader(move |conn| sqlite_webhooks::claim_candidates(conn, &r))
            .await?;
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let r = req.clone();
        self.with_writer(move |conn| sqlite_webhooks::claim(conn, &r, candidates))
            .await
    }

    async fn complete_attempt(&self, rec: &wh::AttemptRecord) -> Result<bool> {
        let rec = rec.clone();
        self.with_writer(move |conn| sqlite_webhooks::complete_attempt(conn, &rec, now_ns()))
            .await
    }

    async fn list_deliveries(
        &self,
        subscription: SubscriptionId,
        limit: u32,
    ) -> Result<Vec<DeliveryHistory>> {
        self.with_reader(move |conn| sqlite_webhooks::list_deliveries(conn, subscription, limit))
            .await
    }

    async fn redeliver(
        &self,
        subscription: SubscriptionId,
        delivery: DeliveryId,
        now: i64,
    ) -> Result<Option<Delivery>> {
        self.with_writer(move |conn| sqlite_webhooks::redeliver(conn, subscription, delivery, now))
            .await
    }

    async fn count_pending_deliveries(&self) -> Result<u64> {
        self.with_reader(|conn| {
            let n: i64 =
                conn.query_row(crate::webhooks::DELIVERY_COUNT_PENDING, [], |r| r.get(0))?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .await
    }

    async fn ping(&self) -> Result<()> {
        self.with_reader(|conn| {
            conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?;
            Ok(())
        })
        .await
    }

    async fn get_document(&self, namespace: &str, id: &str) -> Result<Option<Document>> {
        docs::validate_get(namespace, id)?;
        let (namespace, id) = (namespace.to_owned(), id.to_owned());
        self.with_reader(move |conn| sqlite_documents::get(conn, &namespace, &id))
            .await
    }

    async fn put_document(&self, put: &DocumentPut) -> Result<Option<u64>> {
        docs::validate_put(put)?;
        let put = put.clone();
        self.with_writer(move |conn| sqlite_documents::put(conn, &put, now_ns()))
            .await
    }

    async fn list_documents(&self, query: &DocumentQuery) -> Result<Vec<Document>> {
        docs::validate_query(query)?;
        let query = query.clone();
        self.with_reader(move |conn| sqlite_documents::list(conn, &query))
            .await
    }

    async fn enqueue_event(&self, event: &EventWrite) -> Result<u64> {
        webhook_events::validate(event)?;
        let event = event.clone();
        self.with_writer(move |conn| webhook_events::sqlite::enqueue(conn, &event))
            .await
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(parse_url("sqlite::memory:").ok(), Some(Location::Memory));
        assert_eq!(
            parse_url("sqlite:///var/lib/x.db").ok(),
            Some(Location::File(PathBuf::from("/var/lib/x.db")))
        );
        assert_eq!(
            parse_url("sqlite://data/x.db").ok(),
            Some(Location::File(PathBuf::from("data/x.db")))
        );
        assert!(parse_url("sqlite://").is_err());
    }
}
