//! What the router tests with a flow engine share: a fake job runner (the one thing that
//! cannot run here without Docker), and starting the engine on a state's storage.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::runner::{ContainerState, Found};
use engine::{Engine, EngineConfig, JobRunner, JobSpec};
use logarithmd::api::AppState;
use logarithmd::flows::{announce, results, store};
use tokio_util::sync::CancellationToken;

/// Records every start; containers "run" until an ingested exit says otherwise.
#[derive(Default)]
pub struct FakeRunner {
    pub started: Mutex<Vec<(String, JobSpec)>>,
}

#[async_trait::async_trait]
impl JobRunner for FakeRunner {
    fn kind(&self) -> &'static str {
        "fake"
    }
    async fn start(&self, spec: &JobSpec) -> engine::Result<String> {
        let mut started = self.started.lock().unwrap();
        let id = format!("{:0>64}", started.len() + 1);
        started.push((id.clone(), spec.clone()));
        Ok(id)
    }
    async fn stop(&self, _: &str, _: Duration) -> engine::Result<()> {
        Ok(())
    }
    async fn remove(&self, _: &str) -> engine::Result<()> {
        Ok(())
    }
    async fn state(&self, _: &str) -> engine::Result<ContainerState> {
        Ok(ContainerState::Running)
    }
    async fn find_run(&self, _: &str) -> engine::Result<Vec<Found>> {
        Ok(Vec::new())
    }
}

/// Starts the flow engine on `state` with a fake runner; the engine stops with `token`.
#[allow(dead_code)]
pub async fn start_engine(
    state: &AppState,
    token: CancellationToken,
) -> (Arc<FakeRunner>, tokio::task::JoinHandle<()>) {
    let runner = Arc::new(FakeRunner::default());
    let (engine, task) = Engine::start(
        EngineConfig {
            stop_grace: Duration::from_secs(1),
            reconcile_every: Duration::from_secs(60),
            ..EngineConfig::default()
        },
        runner.clone(),
        Arc::new(store::DocumentRunStore::new(state.storage.clone())),
        Box::new(results::EventResults::new(
            state.events.subscribe(),
            state.storage.clone(),
        )),
        Arc::new(announce::WebhookRunEvents::new(
            state.storage.clone(),
            state.webhook_wake.clone(),
            "http://logs.example".into(),
        )),
        token,
    )
    .await
    .unwrap();
    assert!(state.flows.set(engine));
    (runner, task)
}

#[allow(dead_code)]
pub async fn wait_started(runner: &FakeRunner, n: usize) -> (String, JobSpec) {
    for _ in 0..200 {
        if let Some(s) = runner.started.lock().unwrap().get(n - 1) {
            return s.clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("job {n} never started");
}
