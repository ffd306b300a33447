//! The MySQL-protocol backend (`mysql_async`): TiDB in production, MariaDB in tests.
//!
//! The SQL is portable across TiDB 7.5+, MariaDB 10.11 and MySQL 8: no AUTO_INCREMENT,
//! `ON DUPLICATE KEY UPDATE` for idempotent writes, `/*T![clustered_index] */` comments
//! for TiDB-only syntax. Every operation is bounded in time, so an unreachable server gives
//! an `Unavailable` or `Timeout` error instead of a hang.
//!
//! # Layout
//! - this file: the two pools, writes and reads (open, connections, time bounds), error kinds, bind values and
//!   the [`RowAccess`] of a `mysql_async` row.
//! - `schema`: migrations, under an advisory lock.
//! - `conflicts`: ending a transaction; rerunning one rolled back for a write conflict.
//! - `jobs`: [`crate::JobStore`]: `apply` (with its conflict reruns) and the reads.
//! - `webhooks`: [`crate::WebhookStore`]: subscriptions, outbox, claims, attempts, events.
//! - `documents`: [`crate::DocumentStore`].
//! - `retention`: [`crate::RetentionStore`]: expired jobs, and the shared delete steps
//!   (`crate::sql::retention_delete`), each in one transaction rerun on a write conflict.

mod conflicts;
mod documents;
mod jobs;
mod retention;
mod schema;
mod webhooks;

use std::future::Future;
use std::time::Duration;

use mysql_async::prelude::{FromValue, Queryable};
use mysql_async::{Conn, Opts, OptsBuilder, Params, Pool, PoolConstraints, PoolOpts, Row, Value};

use crate::error::{Error, ErrorKind, Result};
use crate::read_gate::{BusyRead, ReadClass, ReadGate, Writing};
use crate::sql::exec::Exec;
use crate::sql::{Column, Param, RowAccess};
use crate::{Storage, StorageConfig};

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
fn take<T: FromValue>(row: &mut Row, idx: usize) -> Result<T> {
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

impl RowAccess for Row {
    fn column<T: Column>(&mut self, idx: usize) -> Result<T> {
        take(self, idx)
    }
}

/// A transaction as the shared steps drive it.
impl Exec for mysql_async::Transaction<'_> {
    type Row<'r> = Row;

    const LOCKING_READ: &'static str = " FOR UPDATE";

    async fn rows<T>(
        &mut self,
        sql: &str,
        params: Vec<Param>,
        mut decode: impl FnMut(&mut Row) -> Result<T> + Send,
    ) -> Result<Vec<T>> {
        let rows: Vec<Row> = self.exec(sql, positional(params)).await?;
        rows.into_iter().map(|mut r| decode(&mut r)).collect()
    }

    async fn execute(&mut self, sql: &str, params: Vec<Param>) -> Result<u64> {
        self.exec_drop(sql, positional(params)).await?;
        Ok(self.affected_rows())
    }
}

/// The options of a pool of at most `max` connections (at least one).
fn pool_builder(opts: &Opts, max: usize) -> Result<OptsBuilder> {
    let max = max.max(1);
    let constraints = PoolConstraints::new(max.min(2), max)
        .ok_or_else(|| Error::new(ErrorKind::Invalid, format!("invalid pool size {max}")))?;
    // No reset on return to the pool: it would cost a round trip per operation and
    // drop the server-side prepared statements the multi-row INSERTs reuse. Nothing
    // leaks between uses: every transaction ends in COMMIT or ROLLBACK.
    let pool_opts = PoolOpts::default()
        .with_constraints(constraints)
        .with_reset_connection(false)
        .with_inactive_connection_ttl(Duration::from_secs(60));
    Ok(OptsBuilder::from_opts(opts.clone())
        .pool_opts(pool_opts)
        .setup(vec![SESSION_SETUP])
        .stmt_cache_size(64)
        .tcp_keepalive(Some(Duration::from_secs(30)))
        // affected_rows must count changed rows, not matched ones: that is how a
        // duplicate line (ON DUPLICATE KEY UPDATE that changes nothing) counts as 0.
        .client_found_rows(false))
}

async fn get_conn(pool: &Pool) -> Result<Conn> {
    match tokio::time::timeout(CONNECT_TIMEOUT, pool.get_conn()).await {
        Ok(conn) => Ok(conn?),
        Err(_) => Err(Error::new(
            ErrorKind::Unavailable,
            format!("no MySQL connection within {CONNECT_TIMEOUT:?}"),
        )),
    }
}

/// Two pools on one database: writes (`apply`, claims, every transaction) and reads (job,
/// line and document queries), so readers wait for each other, never for a writer's
/// connection, and never hold one.
pub(crate) struct MysqlStorage {
    pool: Pool,
    read_pool: Pool,
    /// Reads yield to `apply` (see [`crate::read_gate`]).
    gate: ReadGate,
}

/// A connection of the read pool, with the read gate's permit while ingest writes.
pub(crate) struct ReadConn {
    conn: Conn,
    _beside_ingest: Option<BusyRead>,
}

impl std::ops::Deref for ReadConn {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        &self.conn
    }
}

impl std::ops::DerefMut for ReadConn {
    fn deref_mut(&mut self) -> &mut Conn {
        &mut self.conn
    }
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
        let storage = MysqlStorage {
            pool: Pool::new(pool_builder(&opts, config.max_connections)?),
            read_pool: Pool::new(pool_builder(&opts, config.max_read_connections)?),
            gate: ReadGate::new(config.busy_read_connections, config.busy_read_percent),
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
            // Close the pools' connections rather than leave them to the runtime.
            let _ = storage.pool.disconnect().await;
            let _ = storage.read_pool.disconnect().await;
            return Err(e);
        }
        Ok(storage)
    }

    /// A connection of the write pool.
    pub(crate) async fn conn(&self) -> Result<Conn> {
        get_conn(&self.pool).await
    }

    /// A connection of the read pool (for queries that write nothing), once the read gate
    /// lets a small read run.
    pub(crate) async fn read_conn(&self) -> Result<ReadConn> {
        self.read_conn_of(ReadClass::Small).await
    }

    /// A connection of the read pool once the read gate lets a read of `class` run.
    pub(crate) async fn read_conn_of(&self, class: ReadClass) -> Result<ReadConn> {
        let permit = self.gate.read(class).await?;
        Ok(ReadConn {
            conn: get_conn(&self.read_pool).await?,
            _beside_ingest: permit,
        })
    }

    /// Marks a batch being applied: reads yield to it until the guard is dropped.
    pub(crate) fn writing(&self) -> Writing<'_> {
        self.gate.writing()
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
}

#[async_trait::async_trait]
impl Storage for MysqlStorage {
    async fn ping(&self) -> Result<()> {
        self.bounded("ping", async {
            let mut conn = self.conn().await?;
            conn.query_drop("SELECT 1").await?;
            Ok(())
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
