//! The job runner logarithmd uses: any [`JobRunner`] (Docker, Kubernetes, around the
//! service runner), with what logarithmd adds to every job's spec just before it starts:
//! the configured extra labels, and the values of a container job's `secrets:` (from
//! `[engine.secrets]`) in its environment. The engine's own copy of the spec, and so every
//! stored run, never holds a secret's value.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use engine::flow::JobKind;
use engine::runner::{ContainerState, Found};
use engine::{JobRunner, JobSpec, Result};

use super::secrets::FlowSecrets;

/// Adds `extra` labels to every job (never replacing the engine's own), and the values of
/// a container job's secrets to its environment (above every other value). A secret that
/// is not configured fails the job at start. Service jobs get no secrets: they run no
/// container.
pub struct LabelledRunner {
    inner: Arc<dyn JobRunner>,
    extra: BTreeMap<String, String>,
    secrets: Arc<FlowSecrets>,
}

impl LabelledRunner {
    pub fn new(
        inner: Arc<dyn JobRunner>,
        extra: BTreeMap<String, String>,
        secrets: Arc<FlowSecrets>,
    ) -> LabelledRunner {
        LabelledRunner {
            inner,
            extra,
            secrets,
        }
    }
}

#[async_trait::async_trait]
impl JobRunner for LabelledRunner {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn start(&self, spec: &JobSpec) -> Result<String> {
        let secrets = spec.kind == JobKind::Component && !spec.secrets.is_empty();
        if self.extra.is_empty() && !secrets {
            return self.inner.start(spec).await;
        }
        let mut spec = spec.clone();
        for (k, v) in &self.extra {
            spec.labels.entry(k.clone()).or_insert_with(|| v.clone());
        }
        if secrets {
            for s in &spec.secrets {
                let Some(v) = self.secrets.get(&s.from_secret) else {
                    return Err(engine::Error::invalid(format!(
                        "no secret {:?} in logarithmd's [engine.secrets] (for ${})",
                        s.from_secret, s.env
                    )));
                };
                spec.env.insert(s.env.clone(), v.to_owned());
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use engine::flow::SecretRef;
    use std::sync::Mutex;

    /// Records the specs it is asked to start.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<JobSpec>>);

    #[async_trait::async_trait]
    impl JobRunner for Recorder {
        fn kind(&self) -> &'static str {
            "recorder"
        }
        async fn start(&self, spec: &JobSpec) -> Result<String> {
            self.0.lock().unwrap().push(spec.clone());
            Ok("c1".into())
        }
        async fn stop(&self, _: &str, _: Duration) -> Result<()> {
            Ok(())
        }
        async fn remove(&self, _: &str) -> Result<()> {
            Ok(())
        }
        async fn state(&self, _: &str) -> Result<ContainerState> {
            Ok(ContainerState::Running)
        }
        async fn find_run(&self, _: &str) -> Result<Vec<Found>> {
            Ok(Vec::new())
        }
    }

    #[tokio::test]
    async fn secret_values_go_into_the_container_env_only() {
        let inner = Arc::new(Recorder::default());
        let secrets = FlowSecrets::from_values([("deploy", "s3cret-value")]);
        let runner = LabelledRunner::new(inner.clone(), BTreeMap::new(), Arc::new(secrets));
        let mut spec = JobSpec {
            secrets: vec![SecretRef {
                env: "TOKEN".into(),
                from_secret: "deploy".into(),
                base64: false,
            }],
            ..JobSpec::default()
        };
        spec.env.insert("TOKEN".into(), "from the flow".into());
        assert_eq!(runner.start(&spec).await.unwrap(), "c1");
        let started = inner.0.lock().unwrap().pop().unwrap();
        assert_eq!(started.env["TOKEN"], "s3cret-value");
        // The caller's spec (what the engine keeps) never holds the value.
        assert_eq!(spec.env["TOKEN"], "from the flow");
        // A service job gets none.
        spec.kind = JobKind::Service;
        runner.start(&spec).await.unwrap();
        let started = inner.0.lock().unwrap().pop().unwrap();
        assert_eq!(started.env["TOKEN"], "from the flow");
        spec.kind = JobKind::Component;
        spec.secrets[0].from_secret = "missing".into();
        let e = runner.start(&spec).await.unwrap_err();
        assert!(e.to_string().contains("no secret \"missing\""), "{e}");
        assert!(inner.0.lock().unwrap().is_empty());
    }
}
