//! The SQLite schema: every migration, and how they are applied at open.

use rusqlite::{params, Connection, TransactionBehavior};

use crate::error::Result;
use crate::sql::stream_blocks::blocks_fill_sql;
use crate::sql::{schema_too_new, Migration};

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
    statements: MIGRATION_2,
}, Migration {
    version: 3,
    name: "documents",
    statements: MIGRATION_3,
}, Migration {
    version: 4,
    name: "retention",
    statements: MIGRATION_4,
}, Migration {
    version: 5,
    name: "log lines by stream",
    statements: MIGRATION_5,
}, Migration {
    version: 6,
    name: "stream blocks",
    statements: MIGRATION_6,
}, Migration {
    version: 7,
    name: "job annotations",
    statements: MIGRATION_7,
}];

const SCHEMA_MIGRATIONS: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER NOT NULL PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at INTEGER NOT NULL
) STRICT";

/// Schema version 2: subscriptions, the delivery outbox and its attempts (see
/// `docs/storage.md`). Same limits as the MySQL schema, checked by CHECK constraints.
const MIGRATION_2: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS webhook_subscriptions (
        id INTEGER NOT NULL PRIMARY KEY,
        name TEXT NULL CHECK (length(name) <= 255),
        source TEXT NOT NULL CHECK (length(source) <= 16),
        url TEXT NOT NULL CHECK (length(url) <= 2048),
        secret TEXT NOT NULL CHECK (length(secret) <= 1024),
        events TEXT NOT NULL CHECK (length(events) <= 255),
        filters_json TEXT NOT NULL,
        enabled INTEGER NOT NULL,
        disabled_reason TEXT NULL CHECK (length(disabled_reason) <= 1024),
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    ) STRICT",
    "CREATE TABLE IF NOT EXISTS webhook_deliveries (
        id INTEGER NOT NULL PRIMARY KEY,
        subscription_id INTEGER NOT NULL,
        event TEXT NOT NULL CHECK (length(event) <= 32),
        job_id INTEGER NOT NULL,
        job_json TEXT NOT NULL,
        status TEXT NOT NULL CHECK (length(status) <= 16),
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        window_start INTEGER NOT NULL,
        next_attempt_at INTEGER NOT NULL,
        lease_owner TEXT NULL CHECK (length(lease_owner) <= 64),
        lease_until INTEGER NOT NULL DEFAULT 0,
        last_status_code INTEGER NULL,
        last_error TEXT NULL CHECK (length(last_error) <= 1024),
        completed_at INTEGER NULL
    ) STRICT",
    "CREATE INDEX IF NOT EXISTS idx_webhook_deliveries_due
        ON webhook_deliveries (status, next_attempt_at)",
    "CREATE INDEX IF NOT EXISTS idx_webhook_deliveries_subscription
        ON webhook_deliveries (subscription_id, created_at)",
    "CREATE TABLE IF NOT EXISTS webhook_attempts (
        delivery_id INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        subscription_id INTEGER NOT NULL,
        owner TEXT NOT NULL CHECK (length(owner) <= 64),
        started_at INTEGER NOT NULL,
        latency_ms INTEGER NOT NULL,
        status_code INTEGER NULL,
        error TEXT NULL CHECK (length(error) <= 1024),
        PRIMARY KEY (delivery_id, attempt)
    ) STRICT, WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS idx_webhook_attempts_subscription
        ON webhook_attempts (subscription_id)",
];

/// Schema version 3: documents (see `docs/storage.md`). Same limits as the MySQL schema,
/// checked by CHECK constraints; `WITHOUT ROWID`, so the key is the table as TiDB's
/// clustered index is.
const MIGRATION_3: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS documents (
        namespace TEXT NOT NULL CHECK (length(namespace) <= 64),
        id TEXT NOT NULL CHECK (length(id) <= 255),
        version INTEGER NOT NULL,
        active INTEGER NOT NULL,
        body TEXT NOT NULL CHECK (length(CAST(body AS BLOB)) <= 16777215),
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (namespace, id)
    ) STRICT, WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS idx_documents_active ON documents (namespace, active)",
    "CREATE INDEX IF NOT EXISTS idx_documents_created ON documents (namespace, created_at, id)",
];

/// Schema version 4: retention (see `docs/storage.md`). Each job's stored line bytes (what
/// `max_bytes` sums; jobs stored before this version count 0), and the indexes that find
/// expired jobs (by `finished_at`, per flow), a run's remaining jobs, and a job's (or, job
/// id 0, an announced event's) webhook deliveries by age without a scan. SQLite runs DDL in the migration's transaction.
const MIGRATION_4: &[&str] = &[
    "ALTER TABLE jobs ADD COLUMN line_bytes INTEGER NOT NULL DEFAULT 0",
    "CREATE INDEX IF NOT EXISTS idx_jobs_finished ON jobs (finished_at, id)",
    "CREATE INDEX IF NOT EXISTS idx_jobs_flow_finished ON jobs (flow, finished_at)",
    "CREATE INDEX IF NOT EXISTS idx_jobs_run ON jobs (run)",
    "CREATE INDEX IF NOT EXISTS idx_webhook_deliveries_job ON webhook_deliveries (job_id, created_at)",
];

/// Schema version 5: the index that serves `stream=stdout|stderr` reads of a job's lines
/// without scanning the other stream's rows (it holds `(job_id, stream, seq)` and, as every
/// index of a `WITHOUT ROWID` table, the primary key, so it points straight at the row).
const MIGRATION_5: &[&str] =
    &["CREATE INDEX IF NOT EXISTS idx_log_lines_stream ON log_lines (job_id, stream, seq)"];

/// Schema version 6: `log_stream_blocks`, the bitmap index of each stream's lines by blocks
/// of 63 seqs that one-stream reads go through (see `crate::sql::stream_blocks`), filled
/// from the lines already stored (reading
/// each once; [`blocks_fill_sql`]), in place of version 5's index, which cost an entry per
/// line at ingest.
const MIGRATION_6: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS log_stream_blocks (
        job_id INTEGER NOT NULL,
        stream INTEGER NOT NULL,
        block INTEGER NOT NULL,
        bits INTEGER NOT NULL,
        PRIMARY KEY (job_id, stream, block)
    ) STRICT, WITHOUT ROWID",
    blocks_fill_sql!("INSERT OR IGNORE", "/", "%"),
    "DROP INDEX IF EXISTS idx_log_lines_stream",
];

/// Schema version 7: each job's annotations (a Pod's, on Kubernetes nodes) as a JSON
/// object, NULL when it has none (every job stored before this version). Not indexed:
/// they are shown, not filtered on.
const MIGRATION_7: &[&str] = &["ALTER TABLE jobs ADD COLUMN annotations_json TEXT NULL"];

/// Applies pending migrations under `BEGIN IMMEDIATE`, which takes SQLite's write lock
/// first: a second process opening the same file waits (busy timeout), then finds the
/// migrations recorded and does nothing.
pub(super) fn migrate(conn: &mut Connection) -> Result<()> {
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
            params![m.version, m.name, protocol::now_ns()],
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
