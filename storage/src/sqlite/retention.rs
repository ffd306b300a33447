//! SQLite: retention's reads and deletes ([`RetentionStore`]). Each delete step is one
//! IMMEDIATE transaction on the writer connection, so it queues behind (and ahead of)
//! ingest's batches instead of failing; the one writer also makes concurrent sweeps of
//! one file take turns.

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};

use super::{query_all, query_opt, values, SqliteStorage};
use crate::error::Result;
use crate::retention::{DeleteStep, Deleted, FinishedQuery, JobRef, StepOutcome, StoredTotals};
use crate::sql::retention::{
    attempts_delete_sql, deliveries_delete_sql, deliveries_within, documents_delete_sql,
    finished_jobs_sql, range_delete_sql, range_end_sql, read_delivery, read_job_check,
    read_job_ref, read_totals, rest_delete_sql, DELIVERIES_OF_JOB, DOCUMENT_DELETE, JOB_CHECK,
    JOB_DELETE, OLD_EVENT_DELIVERIES, ORPHAN_DOCUMENTS, OWNED_RANGES, RUN_DOCUMENT_DELETE,
    RUN_HAS_JOBS,
};
use crate::sql::{Param, RowAccess};
use crate::RetentionStore;

/// Deletes up to `budget` of a job's rows of `table` by key range; returns how many.
fn delete_range(
    tx: &Transaction<'_>,
    table: &str,
    key: &str,
    job: i64,
    budget: u64,
) -> Result<u64> {
    let offset = i64::try_from(budget.saturating_sub(1)).unwrap_or(i64::MAX);
    let end: Option<Value> = tx
        .prepare_cached(&range_end_sql(table, key))?
        .query_row(rusqlite::params![job, offset], |r| r.get(0))
        .optional()?;
    let n = match end {
        Some(end) => tx
            .prepare_cached(&range_delete_sql(table, key))?
            .execute(rusqlite::params![job, end])?,
        None => tx.prepare_cached(&rest_delete_sql(table))?.execute([job])?,
    };
    Ok(n as u64)
}

/// Deletes deliveries with their attempts; returns `(deliveries, attempts)`.
fn delete_deliveries(tx: &Transaction<'_>, ids: &[i64]) -> Result<(u64, u64)> {
    let params: Vec<Param> = ids.iter().map(|id| (*id).into()).collect();
    let attempts = tx
        .prepare_cached(&attempts_delete_sql(ids.len()))?
        .execute(values(params.clone()))?;
    let deliveries = tx
        .prepare_cached(&deliveries_delete_sql(ids.len()))?
        .execute(values(params))?;
    Ok((deliveries as u64, attempts as u64))
}

fn delete_old_events(conn: &mut Connection, before: i64, limit: u32) -> Result<(u64, u64)> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let budget = u64::from(limit.max(1));
    let rows = query_all(
        &tx,
        OLD_EVENT_DELIVERIES,
        vec![before.into(), i64::from(limit.max(1)).into()],
        |r| read_delivery(r),
    )?;
    let ids = deliveries_within(&rows, budget);
    if ids.is_empty() {
        return Ok((0, 0));
    }
    let deleted = delete_deliveries(&tx, &ids)?;
    tx.commit()?;
    Ok(deleted)
}

fn delete_step(conn: &mut Connection, step: &DeleteStep) -> Result<StepOutcome> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let check = query_opt(&tx, JOB_CHECK, vec![step.job.into()], |r| read_job_check(r))?;
    let Some(job) = check.filter(|j| j.expired(step.finished_by)) else {
        // Gone already, or running again: nothing for this deletion to do.
        return Ok(StepOutcome {
            deleted: Deleted::default(),
            finished: true,
        });
    };
    let mut budget = u64::from(step.max_rows.max(1));
    let mut deleted = Deleted::default();
    let more = |tx: Transaction<'_>, deleted: Deleted| -> Result<StepOutcome> {
        tx.commit()?;
        Ok(StepOutcome {
            deleted,
            finished: false,
        })
    };
    for (table, key) in OWNED_RANGES {
        let n = delete_range(&tx, table, key, step.job, budget)?;
        if table == "log_lines" {
            deleted.lines += n;
        } else {
            deleted.other += n;
        }
        budget -= n.min(budget);
        if budget == 0 {
            return more(tx, deleted);
        }
    }
    let budget_param = i64::try_from(budget).unwrap_or(i64::MAX);
    let rows = query_all(
        &tx,
        DELIVERIES_OF_JOB,
        vec![step.job.into(), budget_param.into()],
        |r| read_delivery(r),
    )?;
    let ids = deliveries_within(&rows, budget);
    if !ids.is_empty() {
        let (deliveries, attempts) = delete_deliveries(&tx, &ids)?;
        deleted.deliveries += deliveries;
        deleted.attempts += attempts;
        return more(tx, deleted);
    }
    // Nothing owned is left: the job's row goes, with its documents.
    deleted.jobs += tx.prepare_cached(JOB_DELETE)?.execute([step.job])? as u64;
    for ns in &step.job_namespaces {
        deleted.documents += tx
            .prepare_cached(DOCUMENT_DELETE)?
            .execute(rusqlite::params![ns, job.container_id])? as u64;
    }
    if let (Some(ns), Some(run)) = (&step.run_namespace, &job.run) {
        let left: Option<i64> = tx
            .prepare_cached(RUN_HAS_JOBS)?
            .query_row([run], |r| r.get(0))
            .optional()?;
        if left.is_none() {
            deleted.documents += tx
                .prepare_cached(RUN_DOCUMENT_DELETE)?
                .execute(rusqlite::params![ns, run])? as u64;
        }
    }
    tx.commit()?;
    Ok(StepOutcome {
        deleted,
        finished: true,
    })
}

fn delete_orphans(conn: &mut Connection, ns: &str, before: i64, limit: u32) -> Result<u64> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let ids: Vec<String> = query_all(
        &tx,
        ORPHAN_DOCUMENTS,
        vec![ns.into(), before.into(), i64::from(limit.max(1)).into()],
        |r| r.column(0),
    )?;
    if ids.is_empty() {
        return Ok(0);
    }
    let mut params: Vec<Param> = vec![ns.into()];
    params.extend(ids.iter().map(|id| Param::from(id.as_str())));
    let n = tx
        .prepare_cached(&documents_delete_sql(ids.len()))?
        .execute(values(params))?;
    tx.commit()?;
    Ok(n as u64)
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
            .with_reader(|conn| {
                query_opt(conn, crate::sql::retention::TOTALS, Vec::new(), |r| {
                    read_totals(r)
                })
            })
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
        self.with_writer(move |conn| delete_step(conn, &step)).await
    }

    async fn delete_old_event_deliveries(
        &self,
        created_before: i64,
        limit: u32,
    ) -> Result<(u64, u64)> {
        self.with_writer(move |conn| delete_old_events(conn, created_before, limit))
            .await
    }

    async fn delete_orphan_documents(
        &self,
        namespace: &str,
        created_before: i64,
        limit: u32,
    ) -> Result<u64> {
        let ns = namespace.to_owned();
        self.with_writer(move |conn| delete_orphans(conn, &ns, created_before, limit))
            .await
    }
}
