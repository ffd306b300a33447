//! Ending a transaction, and running one again that the server rolled back for a
//! deadlock or write conflict: which errors those are, and the rerun schedule that
//! `apply` and retention's delete steps share.

use std::time::Duration;

use backon::ExponentialBuilder;
use mysql_async::Transaction;

use crate::error::{Error, Result};

/// Runs of one transaction that ends in a deadlock or write conflict.
const CONFLICT_RETRIES: usize = 5;

/// Deadlock (MySQL/MariaDB 1213) or a TiDB write conflict / retryable transaction (9007,
/// 8022, 8028): the transaction was rolled back as a whole.
pub(super) fn is_write_conflict(e: &Error) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<mysql_async::Error>())
        .is_some_and(|m| matches!(m, mysql_async::Error::Server(s) if matches!(s.code, 1213 | 9007 | 8022 | 8028)))
}

/// When to run a transaction again after a write conflict: short, jittered waits, at most
/// [`CONFLICT_RETRIES`] runs in all.
pub(super) fn conflict_reruns() -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(10))
        .with_max_delay(Duration::from_millis(200))
        .with_jitter()
        .with_max_times(CONFLICT_RETRIES - 1)
}

/// Commits `result`'s transaction, or rolls it back and returns the error.
pub(super) async fn finish<T>(tx: Transaction<'_>, result: Result<T>) -> Result<T> {
    match result {
        Ok(v) => {
            tx.commit().await?;
            Ok(v)
        }
        Err(e) => {
            // If the rollback fails the connection is broken, and the server rolls back
            // when it closes; the original error is the one to report.
            let _ = tx.rollback().await;
            Err(e)
        }
    }
}
