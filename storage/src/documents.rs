//! Documents: small JSON bodies an embedder keeps by `(namespace, id)`, written with a
//! version for compare-and-set, and an `active` flag indexed so "everything still in
//! progress" is one cheap query. Storage does not look inside a body: logarithmd keeps the
//! flow engine's flows and runs here, but this module knows nothing of them.
//!
//! A write names the version it read ([`DocumentPut::expected`]): it succeeds only if the
//! stored version is still that one, so two writers never overwrite each other's changes
//! silently. A conflict is an answer, not an error: [`crate::DocumentStore::put_document`]
//! returns `Ok(None)`.

use crate::error::{Error, ErrorKind, Result};

/// Longest namespace.
pub const NAMESPACE_MAX: usize = 64;
/// Longest document id.
pub const DOCUMENT_ID_MAX: usize = 255;
/// Largest body, in bytes. Below TiDB's 6 MiB limit on one entry.
pub const BODY_MAX_BYTES: usize = 4 << 20;

/// A stored document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub namespace: String,
    pub id: String,
    /// 1 after the first write, one more after each.
    pub version: u64,
    /// Whether the owner still has work for it (indexed; see [`DocumentQuery::active_only`]).
    pub active: bool,
    /// The body as written (JSON, by convention; storage does not parse it).
    pub body: String,
    /// ns since the Unix epoch.
    pub created_at: i64,
    pub updated_at: i64,
}

/// What the writer expects to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// Write whatever is there (create or replace).
    Any,
    /// The document must not exist yet.
    Absent,
    /// The stored version must be this one.
    Version(u64),
}

/// One write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentPut {
    pub namespace: String,
    pub id: String,
    pub active: bool,
    pub body: String,
    pub expected: Expected,
}

/// Which documents to list: one namespace, newest first (by creation, then id).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DocumentQuery {
    pub namespace: String,
    /// Only documents whose `active` flag is set.
    pub active_only: bool,
    /// At most this many; 0 means no limit.
    pub limit: u32,
}

fn invalid(message: String) -> Error {
    Error::new(ErrorKind::Invalid, message)
}

fn check_key(namespace: &str, id: &str) -> Result<()> {
    if namespace.is_empty() || namespace.chars().count() > NAMESPACE_MAX {
        return Err(invalid(format!(
            "a document namespace must be 1 to {NAMESPACE_MAX} characters"
        )));
    }
    if id.is_empty() || id.chars().count() > DOCUMENT_ID_MAX {
        return Err(invalid(format!(
            "a document id must be 1 to {DOCUMENT_ID_MAX} characters"
        )));
    }
    Ok(())
}

/// Rejects what no backend can store.
pub(crate) fn validate_put(put: &DocumentPut) -> Result<()> {
    check_key(&put.namespace, &put.id)?;
    if put.body.len() > BODY_MAX_BYTES {
        return Err(invalid(format!(
            "document {}/{} is {} bytes; at most {BODY_MAX_BYTES} are stored",
            put.namespace,
            put.id,
            put.body.len()
        )));
    }
    if put.expected == Expected::Version(0) {
        return Err(invalid(
            "version 0 is never stored: expect Absent for a new document".into(),
        ));
    }
    Ok(())
}

pub(crate) fn validate_get(namespace: &str, id: &str) -> Result<()> {
    check_key(namespace, id)
}

pub(crate) fn validate_query(q: &DocumentQuery) -> Result<()> {
    check_key(&q.namespace, "-")
}
