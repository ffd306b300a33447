//! The async driver with a scripted runner and hand-fed verdicts: runs advance, timers
//! fire, cancel stops containers, state is saved, and a new engine on the same store
//! resumes a run whose verdict was committed while no engine was running.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::runner::{ContainerState, Found, JobRunner, JobSpec};
use engine::{
    ChannelResults, Engine, EngineConfig, JobResult, MemoryRunStore, Result, ResultsFeed, Run,
    RunEvents, RunStore, RunSummary, Status,
};
use tokio_util::sync::CancellationToken;

/// A runner that records calls; containers "run" until stopped or told they exited.
#[derive(Default)]
struct FakeRunner {
    state: Mutex<FakeState>,
}

#[derive(Default)]
struct FakeState {
    /// container id → (spec, state)
    containers: HashMap<String, (JobSpec, ContainerState)>,
    started: Vec<String>,
    stopped: Vec<String>,
    removed: Vec<String>,
}

impl FakeRunner {
    fn with<T>(&self, f: impl FnOnce(&mut FakeState) -> T) -> T {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s)
    }

    /// The container of a job (by its `stage.action.job` path), once started.
    fn container(&self, path: &str) -> Option<(String, JobSpec)> {
        self.with(|s| {
            s.containers
                .iter()
                .find(|(_, (spec, _))| {
                    format!("{}.{}.{}", spec.stage, spec.action, spec.job) == path
                })
                .map(|(id, (spec, _))| (id.clone(), spec.clone()))
        })
    }

    fn exit(&self, id: &str) {
        self.with(|s| {
            if let Some(c) = s.containers.get_mut(id) {
                c.1 = ContainerState::Exited;
            }
        })
    }
}

#[async_trait::async_trait]
impl JobRunner for FakeRunner {
    fn kind(&self) -> &'static str {
        "fake"
    }
    async fn start(&self, spec: &JobSpec) -> Result<String> {
        Ok(self.with(|s| {
            let id = format!("c-{}", spec.name);
            s.containers
                .entry(id.clone())
                .or_insert((spec.clone(), ContainerState::Running));
            s.started.push(id.clone());
            id
        }))
    }
    async fn stop(&self, id: &str, _grace: Duration) -> Result<()> {
        self.with(|s| {
            s.stopped.push(id.to_owned());
            if let Some(c) = s.containers.get_mut(id) {
                c.1 = ContainerState::Exited;
            }
        });
        Ok(())
    }
    async fn remove(&self, id: &str) -> Result<()> {
        self.with(|s| {
            s.removed.push(id.to_owned());
            s.containers.remove(id);
        });
        Ok(())
    }
    async fn state(&self, id: &str) -> Result<ContainerState> {
        Ok(self.with(|s| s.containers.get(id).map_or(ContainerState::Gone, |c| c.1)))
    }
    async fn find_run(&self, run: &str) -> Result<Vec<Found>> {
        Ok(self.with(|s| {
            s.containers
                .iter()
                .filter(|(_, (spec, _))| spec.run == run)
                .map(|(id, (spec, st))| Found {
                    container_id: id.clone(),
                    labels: spec.labels.clone(),
                    state: *st,
                })
                .collect()
        }))
    }
}

#[derive(Default)]
struct Announced(Mutex<Vec<RunSummary>>);

#[async_trait::async_trait]
impl RunEvents for Announced {
    async fn run_finished(&self, s: &RunSummary) -> Result<()> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(s.clone());
        Ok(())
    }
}

struct Harness {
    engine: Engine,
    task: tokio::task::JoinHandle<()>,
    shutdown: CancellationToken,
    feed: ResultsFeed,
    runner: Arc<FakeRunner>,
    store: Arc<MemoryRunStore>,
    announced: Arc<Announced>,
}

async fn harness(runner: Arc<FakeRunner>, store: Arc<MemoryRunStore>) -> Harness {
    let (feed, results) = ChannelResults::new();
    let announced = Arc::new(Announced::default());
    let shutdown = CancellationToken::new();
    let config = EngineConfig {
        stop_grace: Duration::from_secs(1),
        reconcile_every: Duration::from_millis(200),
        lease_ttl: Duration::from_secs(1),
        ..EngineConfig::default()
    };
    let started = Engine::start(
        config,
        runner.clone(),
        store.clone(),
        Box::new(results),
        announced.clone(),
        shutdown.clone(),
    )
    .await;
    let Ok((engine, task)) = started else {
        panic!("engine did not start")
    };
    Harness {
        engine,
        task,
        shutdown,
        feed,
        runner,
        store,
        announced,
    }
}

/// Two engines on one runner and one store, as two logarithmd replicas.
async fn two_replicas() -> (Harness, Harness) {
    let runner = Arc::new(FakeRunner::default());
    let store = Arc::new(MemoryRunStore::new());
    let a = harness(runner.clone(), store.clone()).await;
    let b = harness(runner, store).await;
    (a, b)
}

impl Harness {
    /// Registers the [`demo`] flow and starts a run of it, without input.
    async fn start_demo_run(&self) -> Run {
        let flow = self.engine.register_flow(&demo()).await.map(|f| f.name);
        let Ok(flow) = flow else { panic!("{flow:?}") };
        let run = self.engine.start_run(&flow, None).await;
        let Ok(run) = run else { panic!("{run:?}") };
        run
    }

    /// Waits for the job's container to be started.
    async fn wait_started(&self, path: &str) -> (String, JobSpec) {
        for _ in 0..200 {
            if let Some(c) = self.runner.container(path) {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("job {path} never started")
    }

    /// Plays logarithmd: the job's container exited and its verdict was committed.
    async fn finish(&self, path: &str, success: bool, outputs: &[(&str, &str)]) {
        let (id, spec) = self.wait_started(path).await;
        self.runner.exit(&id);
        self.feed.send(result(&id, &spec, success, outputs));
    }

    async fn run_until(&self, id: &str, what: &str, f: impl Fn(&Run) -> bool) -> Run {
        for _ in 0..300 {
            if let Ok(Some((run, _))) = self.store.get_run(id).await {
                if f(&run) {
                    return run;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let now = self.store.get_run(id).await.ok().flatten().map(|(r, _)| r);
        panic!("run {id} never got to: {what}; it is {now:#?}")
    }

    async fn stop(self) -> (Arc<FakeRunner>, Arc<MemoryRunStore>, ResultsFeed) {
        self.shutdown.cancel();
        let _ = self.task.await;
        (self.runner, self.store, self.feed)
    }
}

fn result(id: &str, spec: &JobSpec, success: bool, outputs: &[(&str, &str)]) -> JobResult {
    JobResult {
        container_id: id.to_owned(),
        run: spec.run.clone(),
        stage: spec.stage.clone(),
        action: spec.action.clone(),
        job: spec.job.clone(),
        success,
        reason: if success {
            "CO_RESULT = true"
        } else {
            "CO_RESULT = false"
        }
        .into(),
        exit_code: Some(0),
        outputs: outputs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        finished_at: None,
    }
}

fn demo() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/demo.yaml");
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test]
async fn the_demo_flow_runs_to_its_failing_check() {
    let h = harness(Arc::default(), Arc::default()).await;
    let flow = h
        .engine
        .register_flow(&demo())
        .await
        .map_err(|e| e.to_string());
    assert_eq!(
        flow.map(|f| f.name),
        Ok("logarithm.examples.demo".to_owned())
    );
    let run = h
        .engine
        .start_run("logarithm.examples.demo", Some("run input".into()))
        .await;
    let Ok(run) = run else { panic!("{run:?}") };
    let id = run.id.clone();
    assert_eq!(run.status, Status::Running);

    h.finish("build.compile.version", true, &[("VERSION", "1.2.3")])
        .await;
    h.finish("build.lint.lint", true, &[]).await;
    let (_, tag) = h.wait_started("package.image.tag").await;
    assert_eq!(
        tag.env.get("APP_VERSION").map(String::as_str),
        Some("1.2.3")
    );
    assert_eq!(
        tag.env.get("CO_DATA").map(String::as_str),
        Some("run input")
    );
    assert_eq!(tag.env.get("GREETING").map(String::as_str), Some("hello"));
    h.finish("package.image.tag", true, &[]).await;
    let paused = h
        .run_until(&id, "paused", |r| r.stages[3].status == Status::Running)
        .await;
    assert_eq!(paused.stages[2].status, Status::Success);
    assert_eq!(paused.stages[4].status, Status::Pending);

    // Approving a run that does not exist, or twice, is refused.
    let missing = h.engine.approve("nope", None).await.map_err(|e| e.kind());
    assert_eq!(missing.err(), Some(engine::ErrorKind::NotFound));
    let approved = h.engine.approve(&id, Some("tester".into())).await;
    assert!(approved.is_ok(), "{approved:?}");
    let again = h.engine.approve(&id, None).await.map_err(|e| e.kind());
    assert_eq!(again.err(), Some(engine::ErrorKind::Conflict));

    h.finish("checks.verify.first", true, &[]).await;
    h.finish("checks.verify.second", false, &[]).await;
    let done = h
        .run_until(&id, "failed, containers removed, announced", |r| {
            r.status == Status::Failure && r.announced && !r.is_active()
        })
        .await;
    assert_eq!(
        done.reason.as_deref(),
        Some("stage checks: action verify: job second: CO_RESULT = false")
    );
    assert!(
        h.runner.container("checks.verify.third").is_none(),
        "third never ran"
    );
    let (mut started, mut removed) = h.runner.with(|s| (s.started.clone(), s.removed.clone()));
    started.sort();
    removed.sort();
    assert_eq!(started.len(), 5);
    assert_eq!(
        removed, started,
        "every started container is removed after its verdict"
    );

    let announced = h.announced.0.lock().map(|a| a.clone()).unwrap_or_default();
    assert_eq!(announced.len(), 1);
    let s = &announced[0];
    assert_eq!((s.run.as_str(), s.status), (id.as_str(), Status::Failure));
    let jobs: Vec<String> = s
        .jobs
        .iter()
        .map(|j| format!("{}.{}.{}={}", j.stage, j.action, j.job, j.status.as_str()))
        .collect();
    assert_eq!(
        jobs,
        [
            "build.compile.version=success",
            "build.lint.lint=success",
            "package.image.tag=success",
            "checks.verify.first=success",
            "checks.verify.second=failure",
            "checks.verify.third=pending",
        ]
    );
    h.stop().await;
}

const SLOW: &str = r#"
uri: tests/slow
stages:
  - {type: start, name: start}
  - type: normal
    name: work
    actions:
      - name: a
        jobs:
          - {type: component, name: slow, endpoint: img, timeout: 300ms}
          - {type: component, name: next, endpoint: img}
  - {type: end, name: end}
"#;

#[tokio::test]
async fn a_job_over_its_timeout_is_stopped_and_the_run_cancelled_run_stops_too() {
    let h = harness(Arc::default(), Arc::default()).await;
    assert!(h.engine.register_flow(SLOW).await.is_ok());
    let Ok(run) = h.engine.start_run("tests.slow", None).await else {
        panic!("no run")
    };
    let (cid, spec) = h.wait_started("work.a.slow").await;
    let timed_out = h
        .run_until(&run.id, "timed out", |r| r.status == Status::Timeout)
        .await;
    assert_eq!(
        timed_out.stages[1].actions[0].jobs[0].reason.as_deref(),
        Some("job timed out after 300ms")
    );
    let stopped = h.runner.with(|s| s.stopped.clone());
    assert_eq!(stopped, vec![cid.clone()]);
    // The container goes only once its verdict (after the stop) is committed.
    assert!(h.runner.with(|s| s.removed.is_empty()));
    h.feed.send(result(&cid, &spec, false, &[]));
    h.run_until(&run.id, "removed", |r| !r.is_active()).await;
    assert_eq!(h.runner.with(|s| s.removed.clone()), vec![cid]);

    // Cancel: the running container is stopped.
    let Ok(run) = h.engine.start_run("tests.slow", None).await else {
        panic!("no run")
    };
    let (cid2, _) = h.wait_started("work.a.slow").await;
    let cid2 = if cid2.contains(&run.id) {
        cid2
    } else {
        panic!("wrong container {cid2}")
    };
    let cancelled = h
        .engine
        .cancel(&run.id, Some("no longer needed".into()))
        .await;
    assert_eq!(cancelled.map(|r| r.status).ok(), Some(Status::Cancelled));
    for _ in 0..100 {
        if h.runner.with(|s| s.stopped.contains(&cid2)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(h.runner.with(|s| s.stopped.contains(&cid2)));
    let stored = h
        .run_until(&run.id, "cancelled", |r| r.status == Status::Cancelled)
        .await;
    assert_eq!(
        stored.reason.as_deref(),
        Some("cancelled: no longer needed")
    );
    h.stop().await;
}

#[tokio::test]
async fn a_new_engine_resumes_a_run_whose_verdict_came_while_it_was_down() {
    let h = harness(Arc::default(), Arc::default()).await;
    assert!(h
        .engine
        .register_flow(SLOW.replace("timeout: 300ms", "timeout: 1h").as_str())
        .await
        .is_ok());
    let Ok(run) = h.engine.start_run("tests.slow", None).await else {
        panic!("no run")
    };
    let (cid, spec) = h.wait_started("work.a.slow").await;
    h.run_until(&run.id, "container attached", |r| {
        r.stages[1].actions[0].jobs[0].container_id.is_some()
    })
    .await;
    let (runner, store, feed) = h.stop().await;

    // While no engine runs, the container exits and logarithmd commits its verdict.
    runner.exit(&cid);
    feed.record_silently(result(&cid, &spec, true, &[]));
    drop(feed);

    let h = harness(runner, store).await;
    // The new engine's own feed knows nothing; copy what logarithmd would find in storage.
    h.feed.record_silently(result(&cid, &spec, true, &[]));
    let (next, spec2) = h.wait_started("work.a.next").await;
    h.feed.send(result(&next, &spec2, true, &[]));
    let done = h
        .run_until(&run.id, "success", |r| {
            r.status == Status::Success && !r.is_active()
        })
        .await;
    assert_eq!(done.stages[1].actions[0].jobs[0].status, Status::Success);
    assert_eq!(h.runner.with(|s| s.removed.len()), 2);
    // Started once each: the resumed engine re-attached instead of starting again.
    assert_eq!(h.runner.with(|s| s.started.len()), 2);
    h.stop().await;
}

/// Two engines on one store, as two logarithmd replicas: the one driving a run dies (its
/// task aborted, so it never retires its heartbeat); after the lease ttl the other takes the
/// run over, re-attaches the running container instead of starting another, and drives the
/// run on from the verdicts it gets.
#[tokio::test]
async fn a_dead_replicas_run_is_taken_over_and_no_container_starts_twice() {
    let (a, b) = two_replicas().await;
    let run = a.start_demo_run().await;
    let owner_a = run.owner.clone();
    assert!(owner_a.is_some());
    let (first, _) = a.wait_started("build.compile.version").await;

    a.task.abort();
    let taken = b
        .run_until(&run.id, "taken over by b", |r| {
            r.owner.is_some() && r.owner != owner_a
        })
        .await;
    assert_eq!(taken.status, Status::Running);
    b.finish("build.compile.version", true, &[("VERSION", "9")])
        .await;
    b.wait_started("build.lint.lint").await;
    b.runner.with(|s| {
        assert_eq!(s.started.iter().filter(|c| **c == first).count(), 1);
        assert_eq!(
            s.started.iter().filter(|c| c.contains("lint")).count(),
            1,
            "{:?}",
            s.started
        );
    });
    b.stop().await;
}

/// A cancel that reaches the replica not driving the run: that replica claims the run and
/// cancels it; the old owner's next save is refused, so it drops the run and its late
/// verdict changes nothing.
#[tokio::test]
async fn a_request_on_another_replica_moves_the_run_there() {
    let (a, b) = two_replicas().await;
    let run = a.start_demo_run().await;
    let (c, spec) = a.wait_started("build.compile.version").await;

    let cancelled = b.engine.cancel(&run.id, Some("from b".into())).await;
    let Ok(cancelled) = cancelled else {
        panic!("{cancelled:?}")
    };
    assert_eq!(cancelled.status, Status::Cancelled);
    assert!(cancelled.owner.is_some() && cancelled.owner != run.owner);
    // The late verdict on the old owner: its save is refused.
    a.feed.send(result(&c, &spec, true, &[]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let Ok(Some((now, _))) = a.store.get_run(&run.id).await else {
        panic!("run gone")
    };
    assert_eq!(now.status, Status::Cancelled);
    assert_eq!(now.owner, cancelled.owner);
    // Both jobs of the parallel build stage, each stopped once.
    a.runner.with(|s| {
        let mut stopped = s.stopped.clone();
        stopped.sort();
        let mut started = s.started.clone();
        started.sort();
        assert_eq!(stopped, started);
        assert!(stopped.contains(&c));
    });
    a.stop().await;
    b.stop().await;
}
