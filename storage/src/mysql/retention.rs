//! MySQL protocol: retention's reads and deletes ([`RetentionStore`]). A delete step is
//! one transaction that first locks the job's row (`FOR UPDATE`, as ingest's `apply`
//! does), so it serialises with writes to the same job and with another replica's sweep;
//! a step the server rolled back for a deadlock or write conflict is run again.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use mysql_async::prelude::Queryable;
use mysql_async::{Row, Transaction, TxOpts, Value};

use super::jobs::is_write_conflict;
use super::{positional, MysqlStorage};
use crate::error::Result;
use crate::retention::{DeleteStep, Deleted, FinishedQuery, JobRef, StepOutcome, StoredTotals};
use crate::sql::retention::{
    attempts_delete_sql, deliveries_delete_sql, deliveries_within, documents_delete_sql,
    finished_jobs_sql, range_delete_sql, range_end_sql, read_delivery, read_job_check,
    read_job_ref, read_totals, rest_delete_sql, DELIVERIES_OF_JOB, DOCUMENT_DELETE, JOB_CHECK,
    JOB_DELETE, OLD_EVENT_DELIVERIES, ORPHAN_DOCUMENTS, OWNED_RANGES, RUN_DOCUMENT_DELETE,
    RUN_HAS_JOBS, TOTALS,
};
use crate::sql::{Param, RowAccess};
use crate::RetentionStore;

/// Runs of one step that ends in a deadlock or write conflict.
const CONFLICT_RETRIES: usize = 5;

/// Deletes up to `budget` of a job's rows of `table` by key range; returns how many.
async fn delete_range(
    tx: &mut Transaction<'_>,
    table: &str,
    key: &str,
    job: i64,
    budget: u64,
) -> Result<u64> {
    let offset = i64::try_from(budget.saturating_sub(1)).unwrap_or(i64::MAX);
    let end: Option<Row> = tx
        .exec_first(range_end_sql(table, key), (job, offset))
        .await?;
    match end.and_then(|mut r| r.take::<Value, usize>(0)) {
        Some(end) => {
            tx.exec_drop(range_delete_sql(table, key), (job, end))
                .await?;
        }
        None => tx.exec_drop(rest_delete_sql(table), (job,)).await?,
    }
    Ok(tx.affected_rows())
}

/// Deletes deliveries with their attempts; returns `(deliveries, attempts)`.
async fn delete_deliveries(tx: &mut Transaction<'_>, ids: &[i64]) -> Result<(u64, u64)> {
    let params: Vec<Param> = ids.iter().map(|id| (*id).into()).collect();
    tx.exec_drop(attempts_delete_sql(ids.len()), positional(params.clone()))
        .await?;
    let attempts = tx.affected_rows();
    tx.exec_drop(deliveries_delete_sql(ids.len()), positional(params))
        .await?;
    Ok((tx.affected_rows(), attempts))
}

async fn old_events_in(tx: &mut Transaction<'_>, before: i64, limit: u32) -> Result<(u64, u64)> {
    let rows: Vec<Row> = tx
        .exec(OLD_EVENT_DELIVERIES, (before, i64::from(limit.max(1))))
        .await?;
    let rows = rows
        .into_iter()
        .map(|mut r| read_delivery(&mut r))
        .collect::<Result<Vec<_>>>()?;
    let ids = deliveries_within(&rows, u64::from(limit.max(1)));
    if ids.is_empty() {
        return Ok((0, 0));
    }
    delete_deliveries(tx, &ids).await
}

/// The work of one step inside its transaction; `finished` as [`StepOutcome`] says.
async fn step_in(tx: &mut Transaction<'_>, step: &DeleteStep) -> Result<StepOutcome> {
    let check: Option<Row> = tx
        .exec_first(format!("{JOB_CHECK} FOR UPDATE"), (step.job,))
        .await?;
    let check = check.map(|mut r| read_job_check(&mut r)).transpose()?;
    let Some(job) = check.filter(|j| j.expired(step.finished_by)) else {
        return Ok(StepOutcome {
            deleted: Deleted::default(),
            finished: true,
        });
    };
    let mut budget = u64::from(step.max_rows.max(1));
    let mut deleted = Deleted::default();
    let more = |deleted| StepOutcome {
        deleted,
        finished: false,
    };
    for (table, key) in OWNED_RANGES {
        let n = delete_range(tx, table, key, step.job, budget).await?;
        if table == "log_lines" {
            deleted.lines += n;
        } else {
            deleted.other += n;
        }
        budget -= n.min(budget);
        if budget == 0 {
            return Ok(more(deleted));
        }
    }
    let budget_param = i64::try_from(budget).unwrap_or(i64::MAX);
    let rows: Vec<Row> = tx.exec(DELIVERIES_OF_JOB, (step.job, budget_param)).await?;
    let rows = rows
        .into_iter()
        .map(|mut r| read_delivery(&mut r))
        .collect::<Result<Vec<_>>>()?;
    let ids = deliveries_within(&rows, budget);
    if !ids.is_empty() {
        let (deliveries, attempts) = delete_deliveries(tx, &ids).await?;
        deleted.deliveries += deliveries;
        deleted.attempts += attempts;
        return Ok(more(deleted));
    }
    // Nothing owned is left: the job's row goes, with its documents.
    tx.exec_drop(JOB_DELETE, (step.job,)).await?;
    deleted.jobs += tx.affected_rows();
    for ns in &step.job_namespaces {
        tx.exec_drop(DOCUMENT_DELETE, (ns.as_str(), job.container_id.as_str()))
            .await?;
        deleted.documents += tx.affected_rows();
    }
    if let (Some(ns), Some(run)) = (&step.run_namespace, &job.run) {
        // A locking read: it sees (waits for) another sweep deleting the run's last other
        // job, so one of the two deletes the run's document.
        let left: Option<Row> = tx
            .exec_first(format!("{RUN_HAS_JOBS} FOR UPDATE"), (run.as_str(),))
            .await?;
        if left.is_none() {
            tx.exec_drop(RUN_DOCUMENT_DELETE, (ns.as_str(), run.as_str()))
                .await?;
            deleted.documents += tx.affected_rows();
        }
    }
    Ok(StepOutcome {
        deleted,
        finished: true,
    })
}

/// Runs `$body` (a future using the transaction `$tx`) in a transaction: committed if it
/// succeeds, rolled back if not.
macro_rules! in_transaction {
    ($storage:expr, $tx:ident => $body:expr) => {{
        let mut conn = $storage.conn().await?;
        let mut $tx = conn.start_transaction(TxOpts::default()).await?;
        match $body.await {
            Ok(v) => {
                $tx.commit().await?;
                Ok(v)
            }
            Err(e) => {
                // A failed rollback means a broken connection: the server rolls back.
                let _ = $tx.rollback().await;
                Err(e)
            }
        }
    }};
}

async fn orphans_in(tx: &mut Transaction<'_>, ns: &str, before: i64, limit: u32) -> Result<u64> {
    let rows: Vec<Row> = tx
        .exec(ORPHAN_DOCUMENTS, (ns, before, i64::from(limit.max(1))))
        .await?;
    let ids = rows
        .into_iter()
        .map(|mut r| r.column::<String>(0))
        .collect::<Result<Vec<_>>>()?;
    if ids.is_empty() {
        return Ok(0);
    }
    let mut params: Vec<Param> = vec![ns.into()];
    params.extend(ids.iter().map(|id| Param::from(id.as_str())));
    tx.exec_drop(documents_delete_sql(ids.len()), positional(params))
        .await?;
    Ok(tx.affected_rows())
}

fn conflicts() -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(10))
        .with_max_delay(Duration::from_millis(200))
        .with_jitter()
        .with_max_times(CONFLICT_RETRIES - 1)
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
        self.bounded("delete_job_step", async {
            (|| async { in_transaction!(self, tx => step_in(&mut tx, step)) })
                .retry(conflicts())
                .when(is_write_conflict)
                .await
        })
        .await
    }

    async fn delete_old_event_deliveries(
        &self,
        created_before: i64,
        limit: u32,
    ) -> Result<(u64, u64)> {
        self.bounded("delete_old_event_deliveries", async {
            (|| async {
                in_transaction!(self, tx => old_events_in(&mut tx, created_before, limit))
            })
            .retry(conflicts())
            .when(is_write_conflict)
            .await
        })
        .await
    }

    async fn delete_orphan_documents(
        &self,
        namespace: &str,
        created_before: i64,
        limit: u32,
    ) -> Result<u64> {
        self.bounded("delete_orphan_documents", async {
            (|| async {
                in_transaction!(self, tx => orphans_in(&mut tx, namespace, created_before, limit))
            })
            .retry(conflicts())
            .when(is_write_conflict)
            .await
        })
        .await
    }
}
