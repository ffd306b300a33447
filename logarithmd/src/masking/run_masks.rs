//! The masks of each job of a batch: the global ones, plus the values of a flow job's
//! `secrets:` (its flow's and its own, merged).
//!
//! A job container carries its run's identity in its `io.containerops.*` labels. The
//! agent sends them with the container's metadata (its first batch); for later batches
//! storage's job row has them. The run document holds the flow as the run started it, so
//! the secrets are those the job was started with; their values are logarithmd's own
//! (`[engine.secrets]`), the same that went into the container. What each container gets
//! is kept in a bounded cache, so the lookups happen once per container (and again after a
//! restart); jobs with the same secrets share one compiled masker. A failed lookup refuses the batch (the agent retries it): nothing is stored
//! unmasked. A container whose metadata has not been seen yet (a batch overtaking the one
//! that carries it) gets every flow secret masked, base64 forms included, and is looked up
//! again with its next batch.

use std::sync::{Arc, Mutex};

use engine::RunStore;
use storage::{JobWrite, Storage, WriteBatch};

use super::bounded::Bounded;
use super::edges::{head_fragment, OpenLines};
use super::{Masker, Value};
use crate::flows::secrets::FlowSecrets;
use crate::flows::store::DocumentRunStore;

/// Containers whose masks are cached (per generation).
const CACHE_MAX: usize = 4_096;
/// Sets of secrets whose compiled masks are kept (per generation): containers share them.
const SETS_MAX: usize = 256;

/// A job's secrets: names, each with whether its base64 forms are masked, sorted.
type SecretSet = Vec<(String, bool)>;

/// What masks one job's part of a batch.
#[derive(Debug, Clone)]
pub struct JobMasks {
    pub masker: Arc<Masker>,
    /// Its first record continues a line of an earlier batch.
    pub continues: bool,
}

/// Finds each job's masks.
pub struct RunMasks {
    global: Arc<Masker>,
    /// The global masks and every flow secret: for containers not known yet.
    everything: Arc<Masker>,
    secrets: Arc<FlowSecrets>,
    storage: Arc<dyn Storage>,
    runs: DocumentRunStore,
    cache: Mutex<Bounded<String, Arc<Masker>>>,
    /// The compiled masks of each set of secrets (by name, with `base64`).
    sets: Mutex<Bounded<SecretSet, Arc<Masker>>>,
    open: OpenLines,
}

impl RunMasks {
    /// Fails only for a secret too short to be masked (which the configuration's
    /// validation refuses first).
    pub fn new(
        global: Arc<Masker>,
        secrets: Arc<FlowSecrets>,
        storage: Arc<dyn Storage>,
    ) -> Result<RunMasks, String> {
        let all: Vec<Value> = secrets
            .values()
            .map(|v| Value {
                text: v.to_owned(),
                base64: true,
            })
            .collect();
        Ok(RunMasks {
            everything: Arc::new(global.with_values(&all)?),
            global,
            secrets,
            runs: DocumentRunStore::new(storage.clone()),
            storage,
            cache: Mutex::new(Bounded::new(CACHE_MAX)),
            sets: Mutex::new(Bounded::new(SETS_MAX)),
            open: OpenLines::default(),
        })
    }

    /// The masks of each job of `batch`, in its order.
    pub async fn for_batch(&self, batch: &WriteBatch) -> storage::Result<Vec<JobMasks>> {
        let mut out = Vec::with_capacity(batch.jobs.len());
        for job in &batch.jobs {
            let masker = self.masker_of(job).await?;
            let continues = if masker.is_active() {
                // Storage is asked only when the first record could end a value.
                let lookup = job.lines.first().is_some_and(|l| {
                    l.line.len() < masker.longest_literal()
                        || head_fragment(&masker.literals, &l.line) > 0
                });
                self.open
                    .continues(self.storage.as_ref(), job, lookup)
                    .await?
            } else {
                false
            };
            out.push(JobMasks { masker, continues });
        }
        Ok(out)
    }

    async fn masker_of(&self, job: &JobWrite) -> storage::Result<Arc<Masker>> {
        if self.secrets.is_empty() {
            return Ok(self.global.clone());
        }
        if let Some(m) = self.cached(&job.container_id) {
            return Ok(m);
        }
        let identity = match &job.meta {
            Some(meta) => Identity::from_labels(|k| meta.labels.get(k).cloned()),
            None => match self
                .storage
                .get_job(storage::job_id_for_container(&job.container_id))
                .await?
            {
                Some(j) => match (j.run, j.stage, j.action, j.job) {
                    (Some(run), Some(stage), Some(action), Some(job)) => Some(Identity {
                        run,
                        stage,
                        action,
                        job,
                    }),
                    // Metadata stored: not a flow job.
                    _ if !j.image.is_empty() || !j.labels.is_empty() => None,
                    // A row made from lines before the metadata arrived.
                    _ => return Ok(self.everything.clone()),
                },
                // Not seen yet: the metadata is in a batch still on its way.
                None => return Ok(self.everything.clone()),
            },
        };
        let masker = match identity {
            Some(id) => self.masker_for(&id).await?,
            None => self.global.clone(),
        };
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(job.container_id.clone(), masker.clone());
        Ok(masker)
    }

    fn cached(&self, container_id: &str) -> Option<Arc<Masker>> {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&container_id.to_owned())
    }

    /// The global masks and the values of the job's secrets, from its run's flow.
    async fn masker_for(&self, id: &Identity) -> storage::Result<Arc<Masker>> {
        let run = match self.runs.get_run(&id.run).await {
            Ok(Some((run, _))) => run,
            Ok(None) => return Ok(self.global.clone()),
            Err(e) => {
                let kind = match e.kind() {
                    engine::ErrorKind::Unavailable => storage::ErrorKind::Unavailable,
                    engine::ErrorKind::Timeout => storage::ErrorKind::Timeout,
                    _ => storage::ErrorKind::Internal,
                };
                return Err(storage::Error::new(
                    kind,
                    format!("reading run {} for its secrets: {e}", id.run),
                ));
            }
        };
        let Some(key) = run.key_of(&id.stage, &id.action, &id.job) else {
            return Ok(self.global.clone());
        };
        // Which secrets (by name), so jobs with the same ones share one compiled masker.
        let mut set: SecretSet = run
            .flow
            .job_secrets(key.stage, key.action, key.job)
            .into_iter()
            .filter(|r| self.secrets.get(&r.from_secret).is_some())
            .map(|r| (r.from_secret, r.base64))
            .collect();
        if set.is_empty() {
            return Ok(self.global.clone());
        }
        set.sort();
        set.dedup();
        let mut sets = self.sets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = sets.get(&set) {
            return Ok(m);
        }
        let values: Vec<Value> = set
            .iter()
            .filter_map(|(name, base64)| {
                self.secrets.get(name).map(|text| Value {
                    text: text.to_owned(),
                    base64: *base64,
                })
            })
            .collect();
        // The values were checked when the configuration was read (length).
        let masker = self
            .global
            .with_values(&values)
            .map(Arc::new)
            .map_err(|e| storage::Error::new(storage::ErrorKind::Internal, e))?;
        sets.insert(set, masker.clone());
        Ok(masker)
    }
}

/// Which job of which run a container is.
struct Identity {
    run: String,
    stage: String,
    action: String,
    job: String,
}

impl Identity {
    fn from_labels(label: impl Fn(&str) -> Option<String>) -> Option<Identity> {
        Some(Identity {
            run: label(protocol::LABEL_RUN)?,
            stage: label(protocol::LABEL_STAGE)?,
            action: label(protocol::LABEL_ACTION)?,
            job: label(protocol::LABEL_JOB)?,
        })
    }
}
