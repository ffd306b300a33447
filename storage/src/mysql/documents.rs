//! MySQL protocol: documents ([`DocumentStore`]): get, compare-and-set put and list.
//! Portable across TiDB 7.5+, MariaDB 10.11 and MySQL 8: the compare-and-set is an `UPDATE … WHERE version = ?` (every one of them evaluates the
//! latest committed row), and a new document is an `INSERT … ON DUPLICATE KEY UPDATE` that
//! changes nothing when another writer created it first.

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};
use protocol::now_ns;

use super::{positional, MysqlStorage};
use crate::documents::{
    validate_get, validate_put, validate_query, Document, DocumentPut, DocumentQuery, Expected,
};
use crate::error::Result;
use crate::sql::documents as docs;
use crate::DocumentStore;

async fn get(conn: &mut Conn, namespace: &str, id: &str) -> Result<Option<Document>> {
    let row: Option<Row> = conn
        .exec_first(
            docs::select_one_sql(),
            positional(vec![namespace.into(), id.into()]),
        )
        .await?;
    row.map(|mut r| docs::read_document(&mut r)).transpose()
}

/// Writes without a transaction: each statement is its own compare-and-set.
async fn put_in(conn: &mut Conn, put: &DocumentPut, now: i64) -> Result<Option<u64>> {
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

async fn list(conn: &mut Conn, q: &DocumentQuery) -> Result<Vec<Document>> {
    let (sql, params) = docs::list_sql(q);
    let rows: Vec<Row> = conn.exec(sql, positional(params)).await?;
    rows.into_iter()
        .map(|mut r| docs::read_document(&mut r))
        .collect()
}

#[async_trait::async_trait]
impl DocumentStore for MysqlStorage {
    async fn get_document(&self, namespace: &str, id: &str) -> Result<Option<Document>> {
        validate_get(namespace, id)?;
        self.bounded("get_document", async {
            let mut conn = self.read_conn().await?;
            get(&mut conn, namespace, id).await
        })
        .await
    }

    async fn put_document(&self, put: &DocumentPut) -> Result<Option<u64>> {
        validate_put(put)?;
        self.bounded("put_document", async {
            let mut conn = self.conn().await?;
            put_in(&mut conn, put, now_ns()).await
        })
        .await
    }

    async fn list_documents(&self, query: &DocumentQuery) -> Result<Vec<Document>> {
        validate_query(query)?;
        self.bounded("list_documents", async {
            let mut conn = self.read_conn().await?;
            list(&mut conn, query).await
        })
        .await
    }
}
