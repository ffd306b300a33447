//! [`RunStore`] over storage's generic documents: flows in namespace `flows` (keyed by
//! name), runs in namespace `runs` (keyed by id, `active` while the engine has work for
//! them). Bodies are JSON of the engine's own types. The replicas' heartbeats
//! ([`engine::lease`]) are documents in namespace `replicas`, keyed by replica id,
//! `active` until retired; a beat is a compare-and-set that bumps the version.

use std::sync::Arc;

use engine::lease::Heartbeat;
use engine::{Error, Result, Run, RunQuery, RunStore, StoredFlow};
use storage::{DocumentPut, DocumentQuery, Expected, Storage};

use super::engine_error;
use crate::live::RunHub;

/// Namespace of flows.
pub const FLOWS: &str = "flows";
/// Namespace of runs.
pub const RUNS: &str = "runs";
/// Namespace of the replicas' heartbeats.
pub const REPLICAS: &str = "replicas";
/// Heartbeats a listing reads at most (live replicas; retired ones are not listed).
const REPLICAS_MAX: u32 = 1000;

pub struct DocumentRunStore {
    storage: Arc<dyn Storage>,
    /// Where saved runs are pushed for live followers, if anywhere.
    live: Option<Arc<RunHub>>,
}

impl DocumentRunStore {
    pub fn new(storage: Arc<dyn Storage>) -> DocumentRunStore {
        DocumentRunStore {
            storage,
            live: None,
        }
    }

    /// Pushes every saved run to its live followers (right after the save).
    pub fn publishing_to(mut self, hub: Arc<RunHub>) -> DocumentRunStore {
        self.live = Some(hub);
        self
    }

    async fn list(
        &self,
        namespace: &str,
        active_only: bool,
        limit: u32,
    ) -> Result<Vec<storage::Document>> {
        self.storage
            .list_documents(&DocumentQuery {
                namespace: namespace.to_owned(),
                active_only,
                limit,
            })
            .await
            .map_err(|e| engine_error("cannot list documents", e))
    }
}

/// Runs a filtered listing reads at most (the newest ones).
const FILTER_SCAN_MAX: u32 = 2000;
/// Flows a listing returns at most.
const FLOWS_MAX: u32 = 1000;

fn corrupt(what: &str, id: &str, e: impl std::fmt::Display) -> Error {
    Error::new(
        engine::ErrorKind::Internal,
        format!("stored {what} {id} cannot be read: {e}"),
    )
}

fn to_json<T: serde::Serialize>(what: &str, v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| {
        Error::new(
            engine::ErrorKind::Internal,
            format!("cannot encode {what}: {e}"),
        )
    })
}

fn run_of(doc: &storage::Document) -> Result<(Run, u64)> {
    let run: Run = serde_json::from_str(&doc.body).map_err(|e| corrupt("run", &doc.id, e))?;
    if !run.matches_flow() {
        return Err(corrupt(
            "run",
            &doc.id,
            "its stages, actions and jobs do not match its flow",
        ));
    }
    Ok((run, doc.version))
}

#[async_trait::async_trait]
impl RunStore for DocumentRunStore {
    async fn put_flow(&self, flow: &StoredFlow) -> Result<()> {
        let put = DocumentPut {
            namespace: FLOWS.into(),
            id: flow.name.clone(),
            active: false,
            body: to_json("flow", flow)?,
            expected: Expected::Any,
        };
        match self.storage.put_document(&put).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(Error::conflict(format!(
                "flow {} changed while it was being saved; try again",
                flow.name
            ))),
            Err(e) => Err(engine_error("cannot save the flow", e)),
        }
    }

    async fn get_flow(&self, name: &str) -> Result<Option<StoredFlow>> {
        let doc = self
            .storage
            .get_document(FLOWS, name)
            .await
            .map_err(|e| engine_error("cannot read the flow", e))?;
        doc.map(|d| serde_json::from_str(&d.body).map_err(|e| corrupt("flow", &d.id, e)))
            .transpose()
    }

    async fn list_flows(&self) -> Result<Vec<StoredFlow>> {
        let mut flows = self
            .list(FLOWS, false, FLOWS_MAX)
            .await?
            .iter()
            .map(|d| serde_json::from_str(&d.body).map_err(|e| corrupt("flow", &d.id, e)))
            .collect::<Result<Vec<StoredFlow>>>()?;
        flows.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(flows)
    }

    async fn put_run(&self, run: &Run, version: u64) -> Result<u64> {
        let put = DocumentPut {
            namespace: RUNS.into(),
            id: run.id.clone(),
            active: run.is_active(),
            body: to_json("run", run)?,
            expected: match version {
                0 => Expected::Absent,
                v => Expected::Version(v),
            },
        };
        match self.storage.put_document(&put).await {
            Ok(Some(v)) => {
                if let Some(hub) = &self.live {
                    hub.publish(run, v);
                }
                Ok(v)
            }
            Ok(None) => Err(Error::conflict(format!(
                "run {} is no longer at version {version}",
                run.id
            ))),
            Err(e) => Err(engine_error("cannot save the run", e)),
        }
    }

    async fn get_run(&self, id: &str) -> Result<Option<(Run, u64)>> {
        if id.is_empty() || id.len() > storage::documents::DOCUMENT_ID_MAX {
            return Ok(None);
        }
        let doc = self
            .storage
            .get_document(RUNS, id)
            .await
            .map_err(|e| engine_error("cannot read the run", e))?;
        doc.as_ref().map(run_of).transpose()
    }

    async fn list_runs(&self, query: &RunQuery) -> Result<Vec<Run>> {
        // Filters look inside the body, so with one the limit applies after filtering, over
        // the newest FILTER_SCAN_MAX runs: a bounded cost per request, not every run ever.
        let filtered = query.flow.is_some() || query.status.is_some();
        let limit = if filtered {
            FILTER_SCAN_MAX
        } else {
            query.limit
        };
        let mut runs = Vec::new();
        for doc in self.list(RUNS, false, limit).await? {
            let (run, _) = run_of(&doc)?;
            if query.flow.as_ref().is_some_and(|f| *f != run.flow_name)
                || query.status.is_some_and(|s| s != run.status)
            {
                continue;
            }
            runs.push(run);
            if query.limit > 0 && runs.len() >= query.limit as usize {
                break;
            }
        }
        Ok(runs)
    }

    async fn active_runs(&self) -> Result<Vec<(Run, u64)>> {
        // One unreadable run must not keep every other run from resuming: it is reported
        // by id and left as stored.
        let docs = self.list(RUNS, true, 0).await?;
        Ok(docs
            .iter()
            .filter_map(|d| match run_of(d) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::error!(error = %e, "skipping a stored run that cannot be resumed");
                    None
                }
            })
            .collect())
    }

    async fn beat(&self, replica: &str, version: u64) -> Result<u64> {
        let put = DocumentPut {
            namespace: REPLICAS.into(),
            id: replica.to_owned(),
            active: true,
            body: "{}".into(),
            // Registering (again, under a configured id after a restart) takes the record
            // whatever it holds.
            expected: match version {
                0 => Expected::Any,
                v => Expected::Version(v),
            },
        };
        match self.storage.put_document(&put).await {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(Error::conflict(format!(
                "the heartbeat of replica {replica} is no longer at version {version}"
            ))),
            Err(e) => Err(engine_error("cannot write the heartbeat", e)),
        }
    }

    async fn heartbeats(&self) -> Result<Vec<Heartbeat>> {
        Ok(self
            .list(REPLICAS, true, REPLICAS_MAX)
            .await?
            .into_iter()
            .map(|d| Heartbeat {
                replica: d.id,
                version: d.version,
            })
            .collect())
    }

    async fn retire(&self, replica: &str, version: u64) -> Result<()> {
        let put = DocumentPut {
            namespace: REPLICAS.into(),
            id: replica.to_owned(),
            active: false,
            body: "{}".into(),
            expected: Expected::Version(version),
        };
        // A conflict: it beat meanwhile (alive after all) or was retired already.
        self.storage
            .put_document(&put)
            .await
            .map(|_| ())
            .map_err(|e| engine_error("cannot retire the heartbeat", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLOW: &str = include_str!("../../../examples/demo.yaml");

    async fn store() -> DocumentRunStore {
        let s = storage::open(&storage::StorageConfig::new("sqlite::memory:"))
            .await
            .expect("open");
        DocumentRunStore::new(s)
    }

    #[tokio::test]
    async fn flows_and_runs_round_trip_with_compare_and_set() {
        let s = store().await;
        let flow = engine::Flow::from_yaml(FLOW).expect("flow");
        let stored = StoredFlow {
            name: flow.name(),
            source: FLOW.into(),
            flow: flow.clone(),
            created_at: 1,
            updated_at: 2,
        };
        s.put_flow(&stored).await.expect("put flow");
        s.put_flow(&stored).await.expect("put flow again");
        assert_eq!(
            s.get_flow(&stored.name).await.expect("get"),
            Some(stored.clone())
        );
        assert_eq!(s.list_flows().await.expect("list"), vec![stored]);

        let mut run = Run::new("r1".into(), flow, Some("data".into()), 10);
        run.apply(engine::run::Event::Start, 11).expect("start");
        let v = s.put_run(&run, 0).await.expect("put run");
        assert_eq!(v, 1);
        let err = s.put_run(&run, 0).await.expect_err("second create");
        assert_eq!(err.kind(), engine::ErrorKind::Conflict);
        let (back, v) = s.get_run("r1").await.expect("get").expect("run");
        assert_eq!((back, v), (run.clone(), 1));
        assert_eq!(s.put_run(&run, 1).await.expect("cas"), 2);
        let err = s.put_run(&run, 1).await.expect_err("stale");
        assert_eq!(err.kind(), engine::ErrorKind::Conflict);
        assert_eq!(s.active_runs().await.expect("active").len(), 1);
        let q = RunQuery {
            flow: Some("nope".into()),
            ..RunQuery::default()
        };
        assert!(s.list_runs(&q).await.expect("list").is_empty());
        let q = RunQuery {
            status: Some(engine::Status::Running),
            limit: 5,
            ..RunQuery::default()
        };
        assert_eq!(s.list_runs(&q).await.expect("list").len(), 1);
        assert_eq!(s.get_run("missing").await.expect("get"), None);
    }
}
