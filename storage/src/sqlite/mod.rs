//! The SQLite backend: one database file (or memory, for tests) through `rusqlite`.
//!
//! rusqlite is blocking, so all of its work runs in `spawn_blocking`. SQLite allows one
//! writer at a time anyway, so there is exactly one writer connection behind a mutex
//! (writes queue there instead of spinning on `SQLITE_BUSY`), plus a small pool of reader
//! connections (`max_read_connections`, at most 4) that WAL mode lets read while the writer
//! writes; readers never take the writer. An in-memory database
//! exists per connection, so it uses the writer connection for everything.
//!
//! # Layout
//! - this file: connections (open, writer, readers), error kinds, bind values and the
//!   [`RowAccess`] of a rusqlite row.
//! - `schema`: migrations.
//! - `jobs`: [`crate::JobStore`]: `apply` and the job and line reads.
//! - `webhooks`: [`crate::WebhookStore`]: subscriptions, outbox, claims, attempts, events.
//! - `documents`: [`crate::DocumentStore`].
//! - `retention`: [`crate::RetentionStore`]: expired jobs, and the shared delete steps
//!   (`crate::sql::retention_delete`) each run in one IMMEDIATE transaction.

mod documents;
mod jobs;
mod retention;
mod schema;
mod webhooks;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension};
use tokio::sync::Semaphore;

use crate::error::{Error, ErrorKind, Result};
use crate::read_gate::{ReadClass, ReadGate, Writing};
use crate::sql::exec::Exec;
use crate::sql::{Column, Param, RowAccess};
use crate::Storage;

/// How long a connection waits for another process's lock before `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_millis(5000);
/// How often opening retries when another process holds the lock it needs to set up the
/// file (see `SqliteStorage::open`), and the pause between tries.
const OPEN_BUSY_RETRIES: u32 = 10;
const OPEN_BUSY_PAUSE: Duration = Duration::from_millis(20);
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

/// A rusqlite row as the shared decoders read it.
pub(crate) struct SqliteRow<'a, 's>(&'a rusqlite::Row<'s>);

impl RowAccess for SqliteRow<'_, '_> {
    fn column<T: Column>(&mut self, idx: usize) -> Result<T> {
        Ok(self.0.get(idx)?)
    }
}

/// A writer transaction as the shared steps drive it; its futures never wait.
impl Exec for rusqlite::Transaction<'_> {
    type Row<'r> = SqliteRow<'r, 'r>;

    const LOCKING_READ: &'static str = "";

    async fn rows<T>(
        &mut self,
        sql: &str,
        params: Vec<Param>,
        mut decode: impl FnMut(&mut Self::Row<'_>) -> Result<T> + Send,
    ) -> Result<Vec<T>> {
        query_all(self, sql, params, |r| decode(&mut SqliteRow(r.0)))
    }

    async fn execute(&mut self, sql: &str, params: Vec<Param>) -> Result<u64> {
        Ok(self.prepare_cached(sql)?.execute(values(params))? as u64)
    }
}

/// Runs a (cached) query and decodes every row with `decode`.
pub(crate) fn query_all<T>(
    conn: &Connection,
    sql: &str,
    params: Vec<Param>,
    mut decode: impl FnMut(&mut SqliteRow<'_, '_>) -> Result<T>,
) -> Result<Vec<T>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(values(params))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(decode(&mut SqliteRow(row))?);
    }
    Ok(out)
}

/// Runs a (cached) query and decodes its first row, if any.
pub(crate) fn query_opt<T>(
    conn: &Connection,
    sql: &str,
    params: Vec<Param>,
    mut decode: impl FnMut(&mut SqliteRow<'_, '_>) -> Result<T>,
) -> Result<Option<T>> {
    let first = conn
        .prepare_cached(sql)?
        .query_row(values(params), |row| Ok(decode(&mut SqliteRow(row))))
        .optional()?;
    first.transpose()
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

struct Readers {
    location: Location,
    idle: Mutex<Vec<Connection>>,
    permits: Semaphore,
}

struct Inner {
    writer: Mutex<Connection>,
    /// Reads yield to `apply` (see [`crate::read_gate`]).
    gate: ReadGate,
    /// `None` for an in-memory database (readers would see other, empty databases).
    readers: Option<Readers>,
}

pub(crate) struct SqliteStorage {
    inner: Arc<Inner>,
}

impl SqliteStorage {
    pub(crate) async fn open(config: &crate::StorageConfig) -> Result<SqliteStorage> {
        let location = parse_url(&config.url)?;
        let readers = config.max_read_connections.clamp(1, MAX_READERS);
        let writer_location = location.clone();
        let writer = tokio::task::spawn_blocking(move || -> Result<Connection> {
            if let Location::File(path) = &writer_location {
                create_parent(path)?;
            }
            // Two processes opening a new file at once: switching it to WAL needs an
            // exclusive lock, and SQLite answers SQLITE_BUSY for that without waiting on
            // the busy timeout. Try again a bounded number of times.
            let mut attempt = 0;
            loop {
                let opened = open_connection(&writer_location, true).and_then(|mut conn| {
                    schema::migrate(&mut conn)?;
                    Ok(conn)
                });
                match opened {
                    Err(e) if e.kind() == ErrorKind::Timeout && attempt < OPEN_BUSY_RETRIES => {
                        attempt += 1;
                        std::thread::sleep(OPEN_BUSY_PAUSE);
                    }
                    result => break result,
                }
            }
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
                gate: ReadGate::new(config.busy_read_connections, config.busy_read_percent),
                readers,
            }),
        })
    }

    /// Marks a batch being applied: reads yield to it until the guard is dropped.
    pub(crate) fn writing(&self) -> Writing<'_> {
        self.inner.gate.writing()
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

    /// Runs `f` on a reader connection (opened on first use, then reused) as a small read.
    pub(crate) async fn with_reader<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.with_reader_of(ReadClass::Small, f).await
    }

    /// Runs `f` on a reader connection once the read gate lets a read of `class` run.
    pub(crate) async fn with_reader_of<T, F>(&self, class: ReadClass, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let Some(readers) = &self.inner.readers else {
            return self.with_writer(move |conn| f(conn)).await;
        };
        let _beside_ingest = self.inner.gate.read(class).await?;
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

#[async_trait::async_trait]
impl Storage for SqliteStorage {
    async fn ping(&self) -> Result<()> {
        self.with_reader(|conn| {
            conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?;
            Ok(())
        })
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
