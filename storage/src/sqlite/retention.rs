//! SQLite: retention's reads and deletes ([`RetentionStore`]). Each delete step (written
//! once, in [`crate::sql::retention_delete`]) is one IMMEDIATE transaction on the writer
//! connection, so it queues behind (and ahead of) ingest's batches instead of failing;
//! the one writer also makes concurrent sweeps of one file take turns.

use rusqlite::{Connection, TransactionBehavior};

use super::{query_all, query_opt, SqliteStorage};
use crate::error::Result;
use crate::retention::{DeleteStep, FinishedQuery, JobRef, StepOutcome, StoredTotals};
use crate::sql::retention::{finished_jobs_sql, read_job_ref, read_totals, TOTALS};
use crate::sql::retention_delete::{delete_old_events, delete_orphans, delete_step};
use crate::RetentionStore;

/// Runs `$step` (a shared step's future over the transaction `$tx`) in one IMMEDIATE
/// transaction of `$conn`, committed if it succeeds.
macro_rules! immediate {
    ($conn:expr, $tx:ident => $step:expr) => {{
        let conn: &mut Connection = $conn;
        let mut $tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = futures::executor::block_on($step)?;
        $tx.commit()?;
        Ok(out)
    }};
}

#[async_trait::async_trait]
impl RetentionStore for SqliteStorage {
    async fn finished_jobs(&self, query: &FinishedQuery) -> Result<Vec<JobRef>> {
        let (sql, params) = finished_jobs_sql(query);
        self.with_reader(move |conn| query_all(conn, &sql, params, |r| read_job_ref(r)))
            .await
    }

    async fn stored_totals(&self) -> Result<StoredTotals> {
        let (jobs, lines, bytes) = self
            .with_reader(|conn| query_opt(conn, TOTALS, Vec::new(), |r| read_totals(r)))
            .await?
            .unwrap_or_default();
        Ok(StoredTotals {
            jobs: jobs.max(0) as u64,
            lines: lines.max(0) as u64,
            bytes: bytes.max(0) as u64,
        })
    }

    async fn delete_job_step(&self, step: &DeleteStep) -> Result<StepOutcome> {
        let step = step.clone();
        self.with_writer(move |conn| immediate!(conn, tx => delete_step(&mut tx, &step)))
            .await
    }

    async fn delete_old_event_deliveries(&self, before: i64, limit: u32) -> Result<(u64, u64)> {
        self.with_writer(
            move |conn| immediate!(conn, tx => delete_old_events(&mut tx, before, limit)),
        )
        .await
    }

    async fn delete_orphan_documents(&self, ns: &str, before: i64, limit: u32) -> Result<u64> {
        let ns = ns.to_owned();
        self.with_writer(
            move |conn| immediate!(conn, tx => delete_orphans(&mut tx, &ns, before, limit)),
        )
        .await
    }
}
