//! The MySQL-protocol side of documents: schema version 3 and the get, compare-and-set put
//! and list operations. Portable across TiDB 7.5+, MariaDB 10.11 and MySQL 8: the
//! compare-and-set is an `UPDATE … WHERE version = ?` (every one of them evaluates the
//! latest committed row), and a new document is an `INSERT … ON DUPLICATE KEY UPDATE` that
//! changes nothing when another writer created it first.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};

use crate::documents::{self as docs, Document, DocumentPut, DocumentQuery, Expected, RawDocument};
use crate::error::Result;
use crate::mysql::{positional, take};

/// Schema version 3: documents (see `docs/storage.md`). The key `(namespace, id)` leads
/// with the application's namespace and id (run ids are random), clustered on TiDB.
pub(crate) const MIGRATION_3: &[&str] = &["CREATE TABLE IF NOT EXISTS documents (
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

fn raw_document(mut r: Row) -> Result<Document> {
    Document::try_from(RawDocument {
        namespace: take(&mut r, 0)?,
        id: take(&mut r, 1)?,
        version: take(&mut r, 2)?,
        active: take(&mut r, 3)?,
        body: take(&mut r, 4)?,
        created_at: take(&mut r, 5)?,
        updated_at: take(&mut r, 6)?,
    })
}

pub(crate) async fn get(conn: &mut Conn, namespace: &str, id: &str) -> Result<Option<Document>> {
    let row: Option<Row> = conn
        .exec_first(
            docs::select_one_sql(),
            positional(vec![namespace.into(), id.into()]),
        )
        .await?;
    row.map(raw_document).transpose()
}

/// Writes without a transaction: each statement is its own compare-and-set.
pub(crate) async fn put(conn: &mut Conn, put: &DocumentPut, now: i64) -> Result<Option<u64>> {
    // `Any` may race another writer between reading the version and writing; a few rounds
    // settle it (each round either writes or sees a newer version).
    for _ in 0..5 {
        let expected = match put.expected {
            Expected::Any => match current_version(conn, put).await? {
                Some(v) => Expected::Version(v),
                None => Expected::Absent,
            },
            e => e,
        };
        let written = match expected {
            Expected::Absent => {
                let sql = format!(
                    "{} ON DUPLICATE KEY UPDATE version = version",
                    docs::DOC_INSERT
                );
                conn.exec_drop(sql, positional(docs::insert_params(put, now)))
                    .await?;
                // 1: inserted; 0: it exists (the no-op update changed nothing).
                (conn.affected_rows() == 1).then_some(1)
            }
            Expected::Version(v) => {
                conn.exec_drop(
                    docs::DOC_UPDATE,
                    positional(docs::update_params(put, v, now)),
                )
                .await?;
                (conn.affected_rows() == 1).then_some(v + 1)
            }
            Expected::Any => None,
        };
        if written.is_some() || put.expected != Expected::Any {
            return Ok(written);
        }
    }
    Ok(None)
}

async fn current_version(conn: &mut Conn, put: &DocumentPut) -> Result<Option<u64>> {
    let v: Option<i64> = conn
        .exec_first(
            "SELECT version FROM documents WHERE namespace = ? AND id = ?",
            positional(vec![put.namespace.as_str().into(), put.id.as_str().into()]),
        )
        .await?;
    Ok(v.map(|v| u64::try_from(v).unwrap_or(0)))
}

pub(crate) async fn list(conn: &mut Conn, q: &DocumentQuery) -> Result<Vec<Document>> {
    let (sql, params) = docs::list_sql(q);
    let rows: Vec<Row> = conn.exec(sql, positional(params)).await?;
    rows.into_iter().map(raw_document).collect()
}
