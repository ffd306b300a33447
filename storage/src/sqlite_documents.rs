//! The SQLite side of documents: schema version 3 and the get, compare-and-set put and list
//! operations, on the connections `sqlite.rs` hands out (blocking code, run in
//! `spawn_blocking` there).

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::documents::{self as docs, Document, DocumentPut, DocumentQuery, Expected, RawDocument};
use crate::error::Result;
use crate::sqlite::values;

/// Schema version 3: documents (see `docs/storage.md`). Same limits as the MySQL schema,
/// checked by CHECK constraints; `WITHOUT ROWID`, so the key is the table as TiDB's
/// clustered index is.
pub(crate) const MIGRATION_3: &[&str] = &[
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

fn raw_document(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawDocument> {
    Ok(RawDocument {
        namespace: r.get(0)?,
        id: r.get(1)?,
        version: r.get(2)?,
        active: r.get(3)?,
        body: r.get(4)?,
        created_at: r.get(5)?,
        updated_at: r.get(6)?,
    })
}

pub(crate) fn get(conn: &Connection, namespace: &str, id: &str) -> Result<Option<Document>> {
    let mut stmt = conn.prepare_cached(&docs::select_one_sql())?;
    let raw = stmt
        .query_row(values(vec![namespace.into(), id.into()]), raw_document)
        .optional()?;
    raw.map(Document::try_from).transpose()
}

/// The compare-and-set write, in one IMMEDIATE transaction on the (single) writer: the
/// version read is the version replaced.
pub(crate) fn put(conn: &mut Connection, put: &DocumentPut, now: i64) -> Result<Option<u64>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current: Option<i64> = tx
        .query_row(
            "SELECT version FROM documents WHERE namespace = ? AND id = ?",
            values(vec![put.namespace.as_str().into(), put.id.as_str().into()]),
            |r| r.get(0),
        )
        .optional()?;
    let current = current.map(|v| u64::try_from(v).unwrap_or(0));
    let written = match (put.expected, current) {
        (Expected::Any | Expected::Absent, None) => {
            tx.prepare_cached(docs::DOC_INSERT)?
                .execute(values(docs::insert_params(put, now)))?;
            Some(1)
        }
        (Expected::Any, Some(v)) => {
            tx.prepare_cached(docs::DOC_UPDATE)?
                .execute(values(docs::update_params(put, v, now)))?;
            Some(v + 1)
        }
        (Expected::Version(want), Some(v)) if want == v => {
            tx.prepare_cached(docs::DOC_UPDATE)?
                .execute(values(docs::update_params(put, v, now)))?;
            Some(v + 1)
        }
        (Expected::Absent, Some(_)) | (Expected::Version(_), _) => None,
    };
    tx.commit()?;
    Ok(written)
}

pub(crate) fn list(conn: &Connection, q: &DocumentQuery) -> Result<Vec<Document>> {
    let (sql, params) = docs::list_sql(q);
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(values(params), raw_document)?;
    let mut out = Vec::new();
    for raw in rows {
        out.push(Document::try_from(raw?)?);
    }
    Ok(out)
}
