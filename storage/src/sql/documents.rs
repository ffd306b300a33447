//! Documents: the SQL both backends run (get, compare-and-set insert and update, list) and
//! the one decoder of a `documents` row.

use super::{corrupt, Param, RowAccess};
use crate::documents::{Document, DocumentPut, DocumentQuery};
use crate::error::Result;

/// Columns in the order [`read_document`] reads them.
pub(crate) const DOC_COLUMNS: &str = "namespace, id, version, active, body, created_at, updated_at";

/// Parameters: namespace, id.
pub(crate) fn select_one_sql() -> String {
    format!("SELECT {DOC_COLUMNS} FROM documents WHERE namespace = ? AND id = ?")
}

/// Parameters from [`insert_params`].
pub(crate) const DOC_INSERT: &str = "INSERT INTO documents (namespace, id, version, active, \
     body, created_at, updated_at) VALUES (?, ?, 1, ?, ?, ?, ?)";

pub(crate) fn insert_params(put: &DocumentPut, now: i64) -> Vec<Param> {
    vec![
        put.namespace.as_str().into(),
        put.id.as_str().into(),
        i64::from(put.active).into(),
        put.body.as_str().into(),
        now.into(),
        now.into(),
    ]
}

/// The compare-and-set: matches only the version read. Parameters from [`update_params`].
pub(crate) const DOC_UPDATE: &str = "UPDATE documents SET version = version + 1, active = ?, \
     body = ?, updated_at = ? WHERE namespace = ? AND id = ? AND version = ?";

pub(crate) fn update_params(put: &DocumentPut, version: u64, now: i64) -> Vec<Param> {
    vec![
        i64::from(put.active).into(),
        put.body.as_str().into(),
        now.into(),
        put.namespace.as_str().into(),
        put.id.as_str().into(),
        i64::try_from(version).unwrap_or(i64::MAX).into(),
    ]
}

/// `SELECT` for a query, with its parameters.
pub(crate) fn list_sql(q: &DocumentQuery) -> (String, Vec<Param>) {
    let mut sql = format!("SELECT {DOC_COLUMNS} FROM documents WHERE namespace = ?");
    let mut params: Vec<Param> = vec![q.namespace.as_str().into()];
    if q.active_only {
        sql.push_str(" AND active = 1");
    }
    sql.push_str(" ORDER BY created_at DESC, id DESC");
    if q.limit > 0 {
        sql.push_str(" LIMIT ?");
        params.push(i64::from(q.limit).into());
    }
    (sql, params)
}

/// A documents row as read, before its values are checked.
#[derive(Debug)]
struct RawDocument {
    pub namespace: String,
    pub id: String,
    pub version: i64,
    pub active: i64,
    pub body: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Reads a `documents` row selected with [`DOC_COLUMNS`].
pub(crate) fn read_document(row: &mut impl RowAccess) -> Result<Document> {
    let r = RawDocument {
        namespace: row.column(0)?,
        id: row.column(1)?,
        version: row.column(2)?,
        active: row.column(3)?,
        body: row.column(4)?,
        created_at: row.column(5)?,
        updated_at: row.column(6)?,
    };
    {
        let version = u64::try_from(r.version).map_err(|_| {
            corrupt(format!(
                "document {}/{}: version {}",
                r.namespace, r.id, r.version
            ))
        })?;
        Ok(Document {
            namespace: r.namespace,
            id: r.id,
            version,
            active: r.active != 0,
            body: r.body,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}
