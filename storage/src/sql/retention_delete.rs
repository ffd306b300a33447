//! Retention's delete steps, written once for both backends over [`Exec`]: each runs
//! inside one transaction its backend opens (and commits when the step returns `Ok`), and
//! deletes a bounded number of rows by primary-key range (see [`super::retention`]).

use super::exec::{first, Exec};
use super::retention::{
    attempts_delete_sql, deliveries_delete_sql, deliveries_within, documents_delete_sql,
    range_delete_sql, range_end_sql, read_delivery, read_job_check, rest_delete_sql, RangeKey,
    DELIVERIES_OF_JOB, DOCUMENT_DELETE, JOB_CHECK, JOB_DELETE, OLD_EVENT_DELIVERIES,
    ORPHAN_DOCUMENTS, OWNED_RANGES, RUN_DOCUMENT_DELETE, RUN_HAS_JOBS,
};
use super::stream_blocks::{BLOCKS_DELETE_UPTO, BLOCK_SEQS};
use super::{Param, RowAccess};
use crate::error::Result;
use crate::retention::{DeleteStep, Deleted, StepOutcome};

/// Deletes up to `budget` of a job's rows of `table` by key range; returns how many.
async fn delete_range<E: Exec>(
    tx: &mut E,
    (table, key, kind): (&str, &str, RangeKey),
    job: i64,
    budget: u64,
) -> Result<u64> {
    let offset = i64::try_from(budget.saturating_sub(1)).unwrap_or(i64::MAX);
    let sql = range_end_sql(table, key);
    let params = vec![job.into(), offset.into()];
    let end: Option<Param> = match kind {
        RangeKey::Int => first(tx, &sql, params, |r| r.column::<i64>(0))
            .await?
            .map(Param::from),
        RangeKey::Text => first(tx, &sql, params, |r| r.column::<String>(0))
            .await?
            .map(Param::from),
    };
    match end {
        Some(end) => {
            tx.execute(&range_delete_sql(table, key), vec![job.into(), end])
                .await
        }
        None => tx.execute(&rest_delete_sql(table), vec![job.into()]).await,
    }
}

/// Deletes up to `budget` of a job's lines by seq range, with their blocks of the stream
/// index (see [`super::stream_blocks`]); returns how many lines. The blocks are the lines'
/// index, as version 5's index entries were: at most one per line, deleted with them and
/// not counted. The block holding the range's last seq goes too: no stream read needs it
/// once the job is being deleted.
async fn delete_lines_with_index<E: Exec>(tx: &mut E, job: i64, budget: u64) -> Result<u64> {
    let offset = i64::try_from(budget.saturating_sub(1)).unwrap_or(i64::MAX);
    let sql = range_end_sql("log_lines", "seq");
    let end = first(tx, &sql, vec![job.into(), offset.into()], |r| {
        r.column::<i64>(0)
    })
    .await?;
    let lines = match end {
        Some(end) => {
            let blocks = vec![job.into(), (end / BLOCK_SEQS).into()];
            tx.execute(BLOCKS_DELETE_UPTO, blocks).await?;
            let params = vec![job.into(), end.into()];
            tx.execute(&range_delete_sql("log_lines", "seq"), params)
                .await?
        }
        None => {
            tx.execute(&rest_delete_sql("log_stream_blocks"), vec![job.into()])
                .await?;
            tx.execute(&rest_delete_sql("log_lines"), vec![job.into()])
                .await?
        }
    };
    Ok(lines)
}

/// Deletes deliveries with their attempts; returns `(deliveries, attempts)`.
async fn delete_deliveries<E: Exec>(tx: &mut E, ids: &[i64]) -> Result<(u64, u64)> {
    let params: Vec<Param> = ids.iter().map(|id| (*id).into()).collect();
    let attempts = tx
        .execute(&attempts_delete_sql(ids.len()), params.clone())
        .await?;
    let deliveries = tx
        .execute(&deliveries_delete_sql(ids.len()), params)
        .await?;
    Ok((deliveries, attempts))
}

/// Deliveries of announced events created before `before`, at most `limit` rows counting
/// attempts (at least one delivery); returns `(deliveries, attempts)`.
pub(crate) async fn delete_old_events<E: Exec>(
    tx: &mut E,
    before: i64,
    limit: u32,
) -> Result<(u64, u64)> {
    let params = vec![before.into(), i64::from(limit.max(1)).into()];
    let rows = tx
        .rows(OLD_EVENT_DELIVERIES, params, |r| read_delivery(r))
        .await?;
    let ids = deliveries_within(&rows, u64::from(limit.max(1)));
    if ids.is_empty() {
        return Ok((0, 0));
    }
    delete_deliveries(tx, &ids).await
}

/// One step of deleting a job: first its row is read (locked on MySQL) and checked to be
/// still expired; then its owned rows go by range, then its deliveries, and last (when
/// nothing owned is left) its row with its documents. `finished` as [`StepOutcome`] says.
pub(crate) async fn delete_step<E: Exec>(tx: &mut E, step: &DeleteStep) -> Result<StepOutcome> {
    let check_sql = format!("{JOB_CHECK}{}", E::LOCKING_READ);
    let check = first(tx, &check_sql, vec![step.job.into()], |r| read_job_check(r)).await?;
    let Some(job) = check.filter(|j| j.expired(step.finished_by)) else {
        // Gone already, or running again: nothing for this deletion to do.
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
    for range in OWNED_RANGES {
        let n = if range.0 == "log_lines" {
            let n = delete_lines_with_index(tx, step.job, budget).await?;
            deleted.lines += n;
            n
        } else {
            let n = delete_range(tx, range, step.job, budget).await?;
            deleted.other += n;
            n
        };
        budget -= n.min(budget);
        if budget == 0 {
            return Ok(more(deleted));
        }
    }
    let budget_param = i64::try_from(budget).unwrap_or(i64::MAX);
    let params = vec![step.job.into(), budget_param.into()];
    let rows = tx
        .rows(DELIVERIES_OF_JOB, params, |r| read_delivery(r))
        .await?;
    let ids = deliveries_within(&rows, budget);
    if !ids.is_empty() {
        let (deliveries, attempts) = delete_deliveries(tx, &ids).await?;
        deleted.deliveries += deliveries;
        deleted.attempts += attempts;
        return Ok(more(deleted));
    }
    // Nothing owned is left: the job's row goes, with its documents.
    deleted.jobs += tx.execute(JOB_DELETE, vec![step.job.into()]).await?;
    for ns in &step.job_namespaces {
        let params = vec![ns.as_str().into(), job.container_id.as_str().into()];
        deleted.documents += tx.execute(DOCUMENT_DELETE, params).await?;
    }
    if let (Some(ns), Some(run)) = (&step.run_namespace, &job.run) {
        // On MySQL a locking read: it sees (waits for) another sweep deleting the run's
        // last other job, so one of the two deletes the run's document.
        let sql = format!("{RUN_HAS_JOBS}{}", E::LOCKING_READ);
        let left = first(tx, &sql, vec![run.as_str().into()], |r| r.column::<i64>(0)).await?;
        if left.is_none() {
            let params = vec![ns.as_str().into(), run.as_str().into()];
            deleted.documents += tx.execute(RUN_DOCUMENT_DELETE, params).await?;
        }
    }
    Ok(StepOutcome {
        deleted,
        finished: true,
    })
}

/// Inactive documents of `ns` created before `before` whose id is no job's run, at most
/// `limit`; returns how many went.
pub(crate) async fn delete_orphans<E: Exec>(
    tx: &mut E,
    ns: &str,
    before: i64,
    limit: u32,
) -> Result<u64> {
    let params = vec![ns.into(), before.into(), i64::from(limit.max(1)).into()];
    let ids = tx
        .rows(ORPHAN_DOCUMENTS, params, |r| r.column::<String>(0))
        .await?;
    if ids.is_empty() {
        return Ok(0);
    }
    let mut params: Vec<Param> = vec![ns.into()];
    params.extend(ids.iter().map(|id| Param::from(id.as_str())));
    tx.execute(&documents_delete_sql(ids.len()), params).await
}
