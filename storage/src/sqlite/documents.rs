//! SQLite: documents ([`DocumentStore`]): get, compare-and-set put and list, on the
//! connections `mod.rs` hands out (blocking code, run in `spawn_blocking` there).

use protocol::now_ns;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::{query_all, query_opt, values, SqliteStorage};
use crate::documents::{
    validate_get, validate_put, validate_query, Document, DocumentPut, DocumentQuery, Expected,
};
use crate::error::Result;
use crate::sql::documents as docs;
use crate::DocumentStore;

fn get(conn: &Connection, namespace: &str, id: &str) -> Result<Option<Document>> {
    let params = vec![namespace.into(), id.into()];
    query_opt(conn, &docs::select_one_sql(), params, |r| {
        docs::read_document(r)
    })
}

/// The compare-and-set write, in one IMMEDIATE transaction on the (single) writer: the
/// version read is the version replaced.
fn put_in(conn: &mut Connection, put: &DocumentPut, now: i64) -> Result<Option<u64>> {
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

fn list(conn: &Connection, q: &DocumentQuery) -> Result<Vec<Document>> {
    let (sql, params) = docs::list_sql(q);
    query_all(conn, &sql, params, |r| docs::read_document(r))
}

#[async_trait::async_trait]
impl DocumentStore for SqliteStorage {
    async fn get_document(&self, namespace: &str, id: &str) -> Result<Option<Document>> {
        validate_get(namespace, id)?;
        let (namespace, id) = (namespace.to_owned(), id.to_owned());
        self.with_reader(move |conn| get(conn, &namespace, &id))
            .await
    }

    async fn put_document(&self, put: &DocumentPut) -> Result<Option<u64>> {
        validate_put(put)?;
        let p = put.clone();
        self.with_writer(move |conn| put_in(conn, &p, now_ns()))
            .await
    }

    async fn list_documents(&self, query: &DocumentQuery) -> Result<Vec<Document>> {
        validate_query(query)?;
        let query = query.clone();
        self.with_reader(move |conn| list(conn, &query)).await
    }
}
