//! The job runner logarithmd uses: any [`JobRunner`] (Docker), with the configured extra
//! labels added to every job container.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use engine::runner::{ContainerState, Found};
use engine::{JobRunner, JobSpec, Result};

/// Adds `extra` labels to every job (never replacing the engine's own).
pub struct LabelledRunner {
    inner: Arc<dyn JobRunner>,
    extra: BTreeMap<String, String>,
}

impl LabelledRunner {
    pub fn new(inner: Arc<dyn JobRunner>, extra: BTreeMap<String, String>) -> LabelledRunner {
        LabelledRunner { inner, extra }
    }
}

#[async_trait::async_trait]
impl JobRunner for LabelledRunner {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn start(&self, spec: &JobSpec) -> Result<String> {
        if self.extra.is_empty() {
            return self.inner.start(spec).await;
        }
        let mut spec = spec.clone();
        for (k, v) in &self.extra {
            spec.labels.entry(k.clone()).or_insert_with(|| v.clone());
        }
        self.inner.start(&spec).await
    }

    async fn stop(&self, container_id: &str, grace: Duration) -> Result<()> {
        self.inner.stop(container_id, grace).await
    }

    async fn remove(&self, container_id: &str) -> Result<()> {
        self.inner.remove(container_id).await
    }

    async fn state(&self, container_id: &str) -> Result<ContainerState> {
        self.inner.state(container_id).await
    }

    async fn find_run(&self, run: &str) -> Result<Vec<Found>> {
        self.inner.find_run(run).await
    }
}
