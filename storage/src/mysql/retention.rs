//! MySQL protocol: retention's reads and deletes ([`RetentionStore`]). A delete step
//! (written once, in [`crate::sql::retention_delete`]) is one transaction that first locks
//! the job's row (`FOR UPDATE`, as ingest's `apply` does), so it serialises with writes to
//! the same job and with another replica's sweep; a step the server rolled back for a
//! deadlock or write conflict is run again.

use backon::Retryable;
use mysql_async::prelude::Queryable;
use mysql_async::{Row, TxOpts};

use super::conflicts::{conflict_reruns, finish, is_write_conflict};
use super::{positional, MysqlStorage};
use crate::error::Result;
use crate::retention::{DeleteStep, FinishedQuery, JobRef, StepOutcome, StoredTotals};
use crate::sql::retention::{finished_jobs_sql, read_job_ref, read_totals, TOTALS};
use crate::sql::retention_delete::{delete_old_events, delete_orphans, delete_step};
use crate::RetentionStore;

/// Runs `$step` (a shared step's future over the transaction `$tx`) in a transaction of
/// `$storage`, bounded in time as `$label`: committed if it succeeds, rolled back if not,
/// and run again on a write conflict.
macro_rules! in_transaction {
    ($storage:expr, $label:expr, $tx:ident => $step:expr) => {
        $storage.bounded($label, async {
            (|| async {
                let mut conn = $storage.conn().await?;
                let mut $tx = conn.start_transaction(TxOpts::default()).await?;
                let result = $step.await;
                finish($tx, result).await
            })
            .retry(conflict_reruns())
            .when(is_write_conflict)
            .await
        })
    };
}

#[async_trait::async_trait]
impl RetentionStore for MysqlStorage {
    async fn finished_jobs(&self, query: &FinishedQuery) -> Result<Vec<JobRef>> {
        let (sql, params) = finished_jobs_sql(query);
        self.bounded("finished_jobs", async {
            let mut conn = self.conn().await?;
            let rows: Vec<Row> = conn.exec(sql, positional(params)).await?;
            rows.into_iter().map(|mut r| read_job_ref(&mut r)).collect()
        })
        .await
    }

    async fn stored_totals(&self) -> Result<StoredTotals> {
        self.bounded("stored_totals", async {
            let mut conn = self.conn().await?;
            let row: Option<Row> = conn.query_first(TOTALS).await?;
            let (jobs, lines, bytes) = match row {
                Some(mut r) => read_totals(&mut r)?,
                None => (0, 0, 0),
            };
            Ok(StoredTotals {
                jobs: jobs.max(0) as u64,
                lines: lines.max(0) as u64,
                bytes: bytes.max(0) as u64,
            })
        })
        .await
    }

    async fn delete_job_step(&self, step: &DeleteStep) -> Result<StepOutcome> {
        in_transaction!(self, "delete_job_step", tx => delete_step(&mut tx, step)).await
    }

    async fn delete_old_event_deliveries(&self, before: i64, limit: u32) -> Result<(u64, u64)> {
        in_transaction!(self, "delete_old_event_deliveries", tx => delete_old_events(&mut tx, before, limit))
            .await
    }

    async fn delete_orphan_documents(&self, ns: &str, before: i64, limit: u32) -> Result<u64> {
        in_transaction!(self, "delete_orphan_documents", tx => delete_orphans(&mut tx, ns, before, limit))
            .await
    }
}
