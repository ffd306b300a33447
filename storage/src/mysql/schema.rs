//! The MySQL-protocol schema: every migration, and how they are applied at open (under a
//! server-wide advisory lock, so two processes opening at once apply them once).

use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use super::MysqlStorage;
use crate::error::{Error, ErrorKind, Result};
use crate::sql::stream_blocks::blocks_fill_sql;
use crate::sql::{schema_too_new, Migration};

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
        statements: MIGRATION_2,
    },
    Migration {
        version: 3,
        name: "documents",
        statements: MIGRATION_3,
    },
    Migration {
        version: 4,
        name: "retention",
        statements: MIGRATION_4,
    },
    Migration {
        version: 5,
        name: "log lines by stream",
        statements: MIGRATION_5,
    },
    Migration {
        version: 6,
        name: "stream blocks",
        statements: MIGRATION_6,
    },
    Migration {
        version: 7,
        name: "job annotations",
        statements: MIGRATION_7,
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

/// Schema version 2: subscriptions, the delivery outbox and its attempts (see
/// `docs/storage.md`). Keys lead with random 64-bit ids; the due-index
/// `(status, next_attempt_at)` is small (pending rows only matter) and read by polls.
const MIGRATION_2: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS webhook_subscriptions (
        id BIGINT NOT NULL,
        name VARCHAR(255) NULL,
        source VARCHAR(16) NOT NULL,
        url VARCHAR(2048) NOT NULL,
        secret VARCHAR(1024) NOT NULL,
        events VARCHAR(255) NOT NULL,
        filters_json TEXT NOT NULL,
        enabled TINYINT NOT NULL,
        disabled_reason VARCHAR(1024) NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (id) /*T![clustered_index] CLUSTERED */
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    "CREATE TABLE IF NOT EXISTS webhook_deliveries (
        id BIGINT NOT NULL,
        subscription_id BIGINT NOT NULL,
        event VARCHAR(32) NOT NULL,
        job_id BIGINT NOT NULL,
        job_json MEDIUMTEXT NOT NULL,
        status VARCHAR(16) NOT NULL,
        attempts INT NOT NULL DEFAULT 0,
        created_at BIGINT NOT NULL,
        window_start BIGINT NOT NULL,
        next_attempt_at BIGINT NOT NULL,
        lease_owner VARCHAR(64) NULL,
        lease_until BIGINT NOT NULL DEFAULT 0,
        last_status_code INT NULL,
        last_error VARCHAR(1024) NULL,
        completed_at BIGINT NULL,
        PRIMARY KEY (id) /*T![clustered_index] CLUSTERED */,
        KEY idx_webhook_deliveries_due (status, next_attempt_at),
        KEY idx_webhook_deliveries_subscription (subscription_id, created_at)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    "CREATE TABLE IF NOT EXISTS webhook_attempts (
        delivery_id BIGINT NOT NULL,
        attempt INT NOT NULL,
        subscription_id BIGINT NOT NULL,
        owner VARCHAR(64) NOT NULL,
        started_at BIGINT NOT NULL,
        latency_ms BIGINT NOT NULL,
        status_code INT NULL,
        error VARCHAR(1024) NULL,
        PRIMARY KEY (delivery_id, attempt) /*T![clustered_index] CLUSTERED */,
        KEY idx_webhook_attempts_subscription (subscription_id)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
];

/// Schema version 3: documents (see `docs/storage.md`). The key `(namespace, id)` leads
/// with the application's namespace and id (run ids are random), clustered on TiDB.
const MIGRATION_3: &[&str] = &["CREATE TABLE IF NOT EXISTS documents (
        namespace VARCHAR(64) NOT NULL,
        id VARCHAR(255) NOT NULL,
        version BIGINT NOT NULL,
        active TINYINT NOT NULL,
        body MEDIUMTEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (namespace, id) /*T![clustered_index] CLUSTERED */,
        KEY idx_documents_active (namespace, active),
        KEY idx_documents_created (namespace, created_at, id)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"];

/// Schema version 4: retention (see `docs/storage.md`). Each job's stored line bytes (what
/// `max_bytes` sums; jobs stored before this version count 0), and the indexes that find
/// expired jobs (by `finished_at`, per flow), a run's remaining jobs, and a job's (or, job
/// id 0, an announced event's) webhook deliveries by age without a scan. MySQL 8 has no `IF NOT EXISTS` for these, so a statement run
/// again after an interrupted migration fails with "duplicate column/key name", which
/// [`migrate_locked`] takes as done (TiDB and MariaDB answer the same codes).
const MIGRATION_4: &[&str] = &[
    "ALTER TABLE jobs ADD COLUMN line_bytes BIGINT NOT NULL DEFAULT 0",
    "CREATE INDEX idx_jobs_finished ON jobs (finished_at, id)",
    "CREATE INDEX idx_jobs_flow_finished ON jobs (flow, finished_at)",
    "CREATE INDEX idx_jobs_run ON jobs (run)",
    "CREATE INDEX idx_webhook_deliveries_job ON webhook_deliveries (job_id, created_at)",
];

/// Server errors meaning a DDL statement's work is there already: duplicate column name,
/// duplicate key name, and (a `DROP INDEX` run again) no such key.
const ALREADY_DONE: [u16; 3] = [1060, 1061, 1091];

/// Schema version 5: the index that serves `stream=stdout|stderr` reads of a job's lines
/// (`WHERE job_id = ? AND stream = ? AND seq > ? ORDER BY seq`) without scanning the
/// other stream's rows. Online DDL on InnoDB and TiDB: ingest goes on while it builds. Run
/// again after an interruption, the server answers 1061 (duplicate key name), which
/// [`migrate_locked`] takes as done (MySQL 8 has no `ADD INDEX IF NOT EXISTS`).
const MIGRATION_5: &[&str] =
    &["ALTER TABLE log_lines ADD INDEX idx_log_lines_stream (job_id, stream, seq)"];

/// Schema version 6: `log_stream_blocks`, the bitmap index of each stream's lines by blocks
/// of 63 seqs that one-stream reads go through (see `crate::sql::stream_blocks`), filled
/// from the lines already stored (reading
/// each once, in one statement, [`blocks_fill_sql`]; `INSERT IGNORE`, so running it again
/// after an interruption adds nothing twice), in place of version 5's index, which cost an
/// entry per line at ingest. All
/// replicas are upgraded together: version 5's binaries name the index this drops, and
/// write no runs.
const MIGRATION_6: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS log_stream_blocks (
        job_id BIGINT NOT NULL,
        stream TINYINT NOT NULL,
        block BIGINT NOT NULL,
        bits BIGINT NOT NULL,
        PRIMARY KEY (job_id, stream, block) /*T![clustered_index] CLUSTERED */
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
    blocks_fill_sql!("INSERT IGNORE", "DIV", "MOD"),
    "ALTER TABLE log_lines DROP INDEX idx_log_lines_stream",
];

/// Schema version 7: each job's annotations (a Pod's, on Kubernetes nodes) as a JSON
/// object, NULL when it has none (every job stored before this version; TiDB allows no
/// default on a TEXT column). Not indexed: they are shown, not filtered on. Run again after
/// an interruption, the server answers 1060 (duplicate column name), taken as done.
const MIGRATION_7: &[&str] = &["ALTER TABLE jobs ADD COLUMN annotations_json MEDIUMTEXT NULL"];

impl MysqlStorage {
    /// Applies pending migrations holding the advisory lock on one connection (the lock
    /// belongs to the connection), so two processes opening at once apply them once.
    pub(super) async fn migrate(&self) -> Result<()> {
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
            match conn.query_drop(*statement).await {
                Err(mysql_async::Error::Server(e)) if ALREADY_DONE.contains(&e.code) => {
                    tracing::info!(code = e.code, statement, "migration step was done already");
                }
                other => other?,
            }
        }
        conn.exec_drop(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
            (m.version, m.name, protocol::now_ns()),
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
