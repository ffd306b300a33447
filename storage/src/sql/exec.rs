//! [`Exec`]: one transaction as the logic both backends share drives it. Each driver
//! implements it for its transaction type, so a multi-statement step (a retention delete
//! step, say) is written once: the MySQL backend awaits it, the SQLite backend runs it on
//! its blocking writer thread with [`futures::executor::block_on`] (its futures never wait).

use super::{Param, RowAccess};
use crate::error::Result;

/// A transaction that runs shared SQL with [`Param`]s.
pub(crate) trait Exec {
    /// A result row, as the shared decoders read it.
    type Row<'r>: RowAccess;

    /// What makes a `SELECT` lock the rows it reads until the transaction ends: `" FOR
    /// UPDATE"` on MySQL, nothing on SQLite (its writer transaction holds the whole file).
    const LOCKING_READ: &'static str;

    /// Runs a query and decodes every row with `decode`.
    async fn rows<T>(
        &mut self,
        sql: &str,
        params: Vec<Param>,
        decode: impl FnMut(&mut Self::Row<'_>) -> Result<T> + Send,
    ) -> Result<Vec<T>>;

    /// Runs a statement; returns how many rows it changed.
    async fn execute(&mut self, sql: &str, params: Vec<Param>) -> Result<u64>;
}

/// The first row of a query, decoded, if it has any.
pub(crate) async fn first<E: Exec, T>(
    tx: &mut E,
    sql: &str,
    params: Vec<Param>,
    decode: impl FnMut(&mut E::Row<'_>) -> Result<T> + Send,
) -> Result<Option<T>> {
    Ok(tx.rows(sql, params, decode).await?.into_iter().next())
}
