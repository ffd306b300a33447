//! Retention: the SQL both backends run to find expired jobs and delete them by primary-key
//! range, a bounded number of rows per statement.
//!
//! A range delete reads the key of the `n`-th row of the job in key order (`LIMIT 1 OFFSET
//! n-1`, over the primary key), then deletes the job's rows up to that key: one range of
//! the clustered index, as TiDB prefers, never more than `n` rows. When fewer than `n` rows
//! are left, the rest of the job's rows go in one statement.

use super::{corrupt, Param, RowAccess};
use crate::error::Result;
use crate::retention::{FinishedQuery, FlowFilter, JobRef};

/// The type of a range key column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RangeKey {
    Int,
    Text,
}

/// Tables a job owns rows of, deleted by range in this order (before its deliveries and
/// its own row), with the column that follows `job_id` in their primary key and its type.
pub(crate) const OWNED_RANGES: [(&str, &str, RangeKey); 3] = [
    ("log_lines", "seq", RangeKey::Int),
    ("job_outputs", "name", RangeKey::Text),
    ("job_labels", "name", RangeKey::Text),
];

/// The job's row as a delete step checks it (locked by the MySQL backend with `FOR
/// UPDATE`): `finished_at`, `run`, `container_id`.
pub(crate) const JOB_CHECK: &str = "SELECT finished_at, run, container_id FROM jobs WHERE id = ?";

/// A row of [`JOB_CHECK`].
pub(crate) struct JobCheck {
    pub finished_at: Option<i64>,
    pub run: Option<String>,
    pub container_id: String,
}

pub(crate) fn read_job_check(r: &mut impl RowAccess) -> Result<JobCheck> {
    Ok(JobCheck {
        finished_at: r.column(0)?,
        run: r.column(1)?,
        container_id: r.column(2)?,
    })
}

impl JobCheck {
    /// Whether a step for a job that finished by `finished_by` may delete it.
    pub fn expired(&self, finished_by: i64) -> bool {
        self.finished_at.is_some_and(|f| f <= finished_by)
    }
}

/// The key of the `n`-th row of a job in `table` (parameters: job id, `n - 1`).
pub(crate) fn range_end_sql(table: &str, key: &str) -> String {
    format!("SELECT {key} FROM {table} WHERE job_id = ? ORDER BY {key} LIMIT 1 OFFSET ?")
}

/// Deletes a job's rows up to a key (parameters: job id, key).
pub(crate) fn range_delete_sql(table: &str, key: &str) -> String {
    format!("DELETE FROM {table} WHERE job_id = ? AND {key} <= ?")
}

/// Deletes the rest of a job's rows (parameter: job id).
pub(crate) fn rest_delete_sql(table: &str) -> String {
    format!("DELETE FROM {table} WHERE job_id = ?")
}

/// A job's webhook deliveries with their attempt counts (parameters: job id, limit).
pub(crate) const DELIVERIES_OF_JOB: &str =
    "SELECT id, attempts FROM webhook_deliveries WHERE job_id = ? ORDER BY id LIMIT ?";

/// Deliveries of announced events (job id 0, such as `flow.finished`) created before a
/// time, oldest first, with their attempt counts (parameters: created before, limit).
pub(crate) const OLD_EVENT_DELIVERIES: &str = "SELECT id, attempts FROM webhook_deliveries \
     WHERE job_id = 0 AND created_at < ? ORDER BY created_at, id LIMIT ?";

/// Attempts of these deliveries (parameters: delivery ids).
pub(crate) fn attempts_delete_sql(n: usize) -> String {
    format!(
        "DELETE FROM webhook_attempts WHERE delivery_id IN ({})",
        vec!["?"; n].join(", ")
    )
}

/// These deliveries (parameters: delivery ids).
pub(crate) fn deliveries_delete_sql(n: usize) -> String {
    format!(
        "DELETE FROM webhook_deliveries WHERE id IN ({})",
        vec!["?"; n].join(", ")
    )
}

/// Deliveries to delete in one transaction from `(id, attempts)` rows: as many as fit in
/// `budget` rows counting each with its attempts, at least one.
pub(crate) fn deliveries_within(rows: &[(i64, i64)], budget: u64) -> Vec<i64> {
    let mut used = 0u64;
    let mut ids = Vec::new();
    for (id, attempts) in rows {
        let cost = 1 + u64::try_from(*attempts).unwrap_or(0);
        if !ids.is_empty() && used + cost > budget {
            break;
        }
        used += cost;
        ids.push(*id);
    }
    ids
}

pub(crate) fn read_delivery(r: &mut impl RowAccess) -> Result<(i64, i64)> {
    Ok((r.column(0)?, r.column(1)?))
}

/// The job's row (parameter: job id).
pub(crate) const JOB_DELETE: &str = "DELETE FROM jobs WHERE id = ?";

/// A document that goes with a job (parameters: namespace, id).
pub(crate) const DOCUMENT_DELETE: &str = "DELETE FROM documents WHERE namespace = ? AND id = ?";

/// Whether a run has jobs left (parameter: run).
pub(crate) const RUN_HAS_JOBS: &str = "SELECT id FROM jobs WHERE run = ? LIMIT 1";

/// A run's document once its run is no longer active (parameters: namespace, run).
pub(crate) const RUN_DOCUMENT_DELETE: &str =
    "DELETE FROM documents WHERE namespace = ? AND id = ? AND active = 0";

/// Inactive documents created before a time whose id is no job's run (parameters:
/// namespace, created before, limit).
pub(crate) const ORPHAN_DOCUMENTS: &str = "SELECT d.id FROM documents d \
     WHERE d.namespace = ? AND d.active = 0 AND d.created_at < ? \
     AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.run = d.id) \
     ORDER BY d.created_at, d.id LIMIT ?";

/// Deletes inactive documents of a namespace by id (parameters: namespace, ids).
pub(crate) fn documents_delete_sql(n: usize) -> String {
    format!(
        "DELETE FROM documents WHERE namespace = ? AND active = 0 AND id IN ({})",
        vec!["?"; n].join(", ")
    )
}

/// Totals over every job: count, lines, bytes. `CAST`: MySQL sums to DECIMAL.
pub(crate) const TOTALS: &str = "SELECT COUNT(*), CAST(COALESCE(SUM(line_count), 0) AS SIGNED), \
     CAST(COALESCE(SUM(line_bytes), 0) AS SIGNED) FROM jobs";

pub(crate) fn read_totals(r: &mut impl RowAccess) -> Result<(i64, i64, i64)> {
    Ok((r.column(0)?, r.column(1)?, r.column(2)?))
}

/// `SELECT` for [`crate::RetentionStore::finished_jobs`] with its parameters. Served by
/// `idx_jobs_finished (finished_at, id)`, or `idx_jobs_flow_finished` for one flow.
pub(crate) fn finished_jobs_sql(q: &FinishedQuery) -> (String, Vec<Param>) {
    let mut conds = vec!["finished_at IS NOT NULL".to_owned()];
    let mut params: Vec<Param> = Vec::new();
    if let Some(before) = q.finished_before {
        conds.push("finished_at < ?".into());
        params.push(before.into());
    }
    match &q.flow {
        FlowFilter::Any => {}
        FlowFilter::Only(flow) => {
            conds.push("flow = ?".into());
            params.push(flow.as_str().into());
        }
        FlowFilter::Except(flows) if flows.is_empty() => {}
        FlowFilter::Except(flows) => {
            conds.push(format!(
                "(flow IS NULL OR flow NOT IN ({}))",
                vec!["?"; flows.len()].join(", ")
            ));
            params.extend(flows.iter().map(|f| Param::from(f.as_str())));
        }
    }
    if let Some((finished_at, id)) = q.after {
        conds.push("(finished_at > ? OR (finished_at = ? AND id > ?))".into());
        params.extend([finished_at.into(), finished_at.into(), id.into()]);
    }
    let sql = format!(
        "SELECT id, finished_at, line_count, line_bytes FROM jobs WHERE {} \
         ORDER BY finished_at, id LIMIT ?",
        conds.join(" AND ")
    );
    params.push(i64::from(q.limit).into());
    (sql, params)
}

pub(crate) fn read_job_ref(r: &mut impl RowAccess) -> Result<JobRef> {
    let id: i64 = r.column(0)?;
    let finished_at: i64 = r.column(1)?;
    let line_count: i64 = r.column(2)?;
    let line_bytes: i64 = r.column(3)?;
    let count =
        |what: &str, v: i64| u64::try_from(v).map_err(|_| corrupt(format!("job {id}: {what} {v}")));
    Ok(JobRef {
        id,
        finished_at,
        line_count: count("line_count", line_count)?,
        line_bytes: count("line_bytes", line_bytes)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_fit_the_budget_and_at_least_one_goes() {
        let rows = [(1, 3), (2, 0), (3, 10)];
        assert_eq!(deliveries_within(&rows, 5), vec![1, 2]);
        assert_eq!(deliveries_within(&rows, 2), vec![1]);
        assert_eq!(deliveries_within(&rows, 100), vec![1, 2, 3]);
    }

    #[test]
    fn finished_query_excludes_overridden_flows() {
        let (sql, params) = finished_jobs_sql(&FinishedQuery {
            finished_before: Some(10),
            flow: FlowFilter::Except(vec!["a".into(), "b".into()]),
            after: None,
            limit: 5,
        });
        assert!(sql.contains("flow NOT IN (?, ?)"), "{sql}");
        assert_eq!(params.len(), 4);
    }
}
