//! The SQL both backends run, and the rules around it, written once: bind values
//! ([`Param`]), multi-row placeholders and chunking, column limits, migrations, and the
//! [`RowAccess`] trait through which each driver hands rows to the one decoder of each
//! table.
//!
//! # Layout
//! - [`jobs`]: jobs, lines and outputs: statements, queries, batch validation, row decoding.
//! - [`webhooks`]: subscriptions, deliveries and attempts: statements, the upsert and
//!   outbox rules, row decoding.
//! - [`outbox`]: which delivery rows an event gets (job events and announced events).
//! - [`documents`]: the document table's statements and row decoding.
//! - [`retention`]: finding expired jobs and deleting them by primary-key range: the SQL.
//! - [`retention_delete`]: retention's delete steps, written once over [`exec::Exec`].
//! - [`stream_blocks`]: `log_stream_blocks`, the bitmap index of each stream's lines that
//!   one-stream reads go through, and the rounds such a read takes.
//! - [`exec`]: [`exec::Exec`], a transaction as the shared multi-statement steps drive it.

pub(crate) mod documents;
pub(crate) mod exec;
pub(crate) mod jobs;
pub(crate) mod outbox;
pub(crate) mod retention;
pub(crate) mod retention_delete;
pub(crate) mod stream_blocks;
pub(crate) mod webhooks;

use crate::error::{Error, ErrorKind, Result};

/// Column limits, in characters unless noted (MySQL counts VARCHAR in characters; the SQLite
/// schema checks the same limits so both backends accept the same data).
pub(crate) const NAME_MAX: usize = 255;
pub(crate) const LOG_DRIVER_MAX: usize = 64;
pub(crate) const TEXT_MAX: usize = 1024;
pub(crate) const OUTPUT_NAME_MAX: usize = 255;
/// `TEXT` holds 65,535 bytes.
pub(crate) const OUTPUT_VALUE_MAX_BYTES: usize = 65_535;
pub(crate) const LABEL_NAME_MAX: usize = 128;
pub(crate) const LABEL_VALUE_MAX: usize = 512;

/// One schema migration: applied once, in version order, and recorded in
/// `schema_migrations`. Statements must be idempotent (`IF NOT EXISTS`): MySQL commits each
/// DDL statement on its own, so a migration interrupted half-way is simply run again.
pub(crate) struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub statements: &'static [&'static str],
}

/// The error for a database whose schema is newer than this binary.
pub(crate) fn schema_too_new(found: i64, known: i64) -> Error {
    corrupt(format!(
        "database schema version {found} is newer than this binary knows ({known}): \
         upgrade logarithmd before using this database"
    ))
}

/// A bind value in SQL shared by both backends; each backend converts it to its own type.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Param {
    Null,
    Int(i64),
    Text(String),
}

impl From<i64> for Param {
    fn from(v: i64) -> Param {
        Param::Int(v)
    }
}

impl From<String> for Param {
    fn from(v: String) -> Param {
        Param::Text(v)
    }
}

impl From<&str> for Param {
    fn from(v: &str) -> Param {
        Param::Text(v.to_owned())
    }
}

impl<T: Into<Param>> From<Option<T>> for Param {
    fn from(v: Option<T>) -> Param {
        v.map_or(Param::Null, Into::into)
    }
}

/// `s` cut to at most `max` characters. Container-provided text is cut rather than
/// rejected: one over-long image name or output must not make a whole batch unstorable.
pub(crate) fn clamp_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((end, _)) => s[..end].to_owned(),
        None => s.to_owned(),
    }
}

/// `s` cut to at most `max` bytes, on a character boundary.
pub(crate) fn clamp_bytes(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}
pub(crate) fn invalid(message: String) -> Error {
    Error::new(ErrorKind::Invalid, message)
}

pub(crate) fn corrupt(message: String) -> Error {
    Error::new(ErrorKind::Corrupt, message)
}

/// Splits `items` into runs of at most `max_rows` items and (unless one item alone is
/// larger) `max_bytes` bytes as measured by `size`.
pub(crate) fn chunk_by_size<T>(
    items: &[T],
    max_rows: usize,
    max_bytes: usize,
    size: impl Fn(&T) -> usize,
) -> Vec<&[T]> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (i, item) in items.iter().enumerate() {
        let n = size(item);
        if i > start && (i - start >= max_rows || bytes + n > max_bytes) {
            chunks.push(&items[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += n;
    }
    if start < items.len() {
        chunks.push(&items[start..]);
    }
    chunks
}

/// `(?, ?, …), (?, ?, …)` for `rows` rows of `cols` placeholders.
pub(crate) fn placeholders(rows: usize, cols: usize) -> String {
    let row = format!("({})", vec!["?"; cols].join(", "));
    vec![row.as_str(); rows].join(", ")
}

/// A random positive non-zero 64-bit id (random, so TiDB spreads keys that lead with it).
pub(crate) fn random_id() -> i64 {
    loop {
        let id = rand::random::<i64>() & i64::MAX;
        if id != 0 {
            return id;
        }
    }
}

/// A value both drivers can decode from a column: integers, text, bytes, and their
/// `Option`s for NULLable columns.
pub(crate) trait Column: rusqlite::types::FromSql + mysql_async::prelude::FromValue {}

impl<T: rusqlite::types::FromSql + mysql_async::prelude::FromValue> Column for T {}

/// One result row, read by column index. Each driver implements it for its row type, so
/// the decoder of each table (in this module's files) is written once.
pub(crate) trait RowAccess {
    /// Column `idx`, or an error of kind Corrupt if it holds something else.
    fn column<T: Column>(&mut self, idx: usize) -> Result<T>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamps_on_char_boundaries() {
        assert_eq!(clamp_chars("héllo", 2), "hé");
        assert_eq!(clamp_chars("abc", 5), "abc");
        assert_eq!(clamp_bytes("héllo", 2), "h");
        assert_eq!(clamp_bytes("abc", 3), "abc");
    }

    #[test]
    fn placeholders_shape() {
        assert_eq!(placeholders(2, 3), "(?, ?, ?), (?, ?, ?)");
    }
}
