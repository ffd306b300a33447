//! The driver: one task that owns every active run, feeds it events (verdicts, API
//! requests, timer ticks, runner results), saves it after each transition, and carries out
//! the commands the state machine returns.
//!
//! Runner calls run in spawned tasks that report back, so a slow `docker stop` never holds
//! up other runs. A run is saved before its commands are carried out, so after a crash
//! the stored state never lags behind a started container: a job saved as starting (no
//! container id yet) is started again on resume, and the runner finds the container by
//! its name and labels instead of making a second one.
//!
//! On start the driver loads the stored active runs and reconciles them: containers still
//! running are re-attached (their verdicts arrive as usual), containers that exited while
//! the engine was down get their verdict by lookup, unremoved containers of finished jobs
//! are removed, unannounced finished runs are announced. The same reconciliation runs
//! periodically and after missed notices.
//!
//! Several engines may share one store (logarithmd replicas): each run is driven by the
//! one that owns it, and runs of a dead engine are taken over ([`crate::lease`]; the
//! driver's side of it in `replicas`: heartbeats, takeover, claims on request, adopting
//! the containers of jobs a dead replica was starting).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Completions of Docker calls waiting for the driver (each call's task waits when full).
const INTERNAL_CAPACITY: usize = 1024;

mod hooks;
mod replicas;

use crate::error::{Error, ErrorKind, Result};
use crate::flow::Flow;
use crate::lease::{self, Liveness};
use crate::results::{JobResult, JobResults, Notice};
use crate::run::{Cause, Command, Event, JobKey, Nanos, Run, RunSummary, Status, Verdict};
use crate::runner::{ContainerState, JobRunner};
use crate::store::{RunQuery, RunStore, StoredFlow};

/// Tuning of the driver.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How long a stopped container gets between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// How often every waiting job is checked against the runner and the verdict lookup
    /// (a safety net: verdicts normally arrive as notices).
    pub reconcile_every: Duration,
    /// Budgets of pre and post scripts.
    pub scripts: crate::script::Limits,
    /// This engine's replica id, the owner it writes into the runs it drives
    /// ([`lease::replica_id`] by default: unique per process).
    pub replica: String,
    /// How long another engine's heartbeat may stand still before its runs are taken over.
    /// Heartbeats and takeover checks happen every fifth of it.
    pub lease_ttl: Duration,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            stop_grace: Duration::from_secs(10),
            reconcile_every: Duration::from_secs(15),
            scripts: crate::script::Limits::default(),
            replica: lease::replica_id(),
            lease_ttl: Duration::from_secs(15),
        }
    }
}

/// Told when a run reaches its final status (logarithmd turns it into `flow.finished`).
/// Called at least once per finished run: again after a restart if the engine could not
/// record that it was called.
#[async_trait::async_trait]
pub trait RunEvents: Send + Sync + 'static {
    async fn run_finished(&self, summary: &RunSummary) -> Result<()>;
}

/// [`RunEvents`] that only logs.
#[derive(Debug, Default)]
pub struct LogRunEvents;

#[async_trait::async_trait]
impl RunEvents for LogRunEvents {
    async fn run_finished(&self, s: &RunSummary) -> Result<()> {
        tracing::info!(run = %s.run, flow = %s.flow, status = s.status.as_str(), "flow run finished");
        Ok(())
    }
}

/// Current time as nanoseconds since the Unix epoch.
pub fn now() -> Nanos {
    protocol::now_ns()
}

/// How a run starts, besides its flow.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// Replaces CO_DATA for every job.
    pub co_data: Option<String>,
    /// Environment values every job gets, above the flow's and the job's own.
    pub env: BTreeMap<String, String>,
    /// What started it.
    pub cause: Cause,
    /// The run's id (a trigger derives it from its event, so an event starts one run
    /// across replicas); random when `None`. A run with this id that exists already is a
    /// [`ErrorKind::Conflict`].
    pub id: Option<String>,
}

enum Request {
    StartRun {
        flow: String,
        opts: RunOptions,
        reply: oneshot::Sender<Result<Run>>,
    },
    Event {
        run: String,
        event: Event,
        reply: oneshot::Sender<Result<Run>>,
    },
}

/// What spawned runner tasks report.
enum Internal {
    Event {
        run: String,
        event: Event,
    },
    Announced {
        run: String,
    },
    AnnounceFailed {
        run: String,
    },
    /// A stop call returned (whatever its outcome): the container may be stopped again.
    StopDone {
        container_id: String,
    },
}

/// The handle: register flows, start and steer runs, read them. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    requests: mpsc::Sender<Request>,
    store: Arc<dyn RunStore>,
}

impl Engine {
    /// Loads and reconciles the stored active runs, then drives runs until `shutdown`.
    /// The returned task ends after shutdown; runs in flight stay stored and resume at the
    /// next start.
    pub async fn start(
        config: EngineConfig,
        runner: Arc<dyn JobRunner>,
        store: Arc<dyn RunStore>,
        results: Box<dyn JobResults>,
        events: Arc<dyn RunEvents>,
        shutdown: CancellationToken,
    ) -> Result<(Engine, JoinHandle<()>)> {
        let (req_tx, req_rx) = mpsc::channel(64);
        // Bounded: only tasks the driver spawned send here, and they wait when it is full.
        let (int_tx, int_rx) = mpsc::channel(INTERNAL_CAPACITY);
        let beat = store.beat(&config.replica, 0).await?;
        tracing::info!(replica = %config.replica, "flow engine registered");
        let mut driver = Driver {
            liveness: Liveness::new(config.lease_ttl),
            beat,
            config,
            runner,
            store: store.clone(),
            results,
            events,
            runs: HashMap::new(),
            internal_tx: int_tx,
            starting: HashSet::new(),
            removing: HashSet::new(),
            stopping: HashSet::new(),
            announcing: HashSet::new(),
            posting: HashSet::new(),
        };
        // Runs of no one, of retired replicas, or of this one's id before a restart; the
        // runs of replicas seen alive wait until their heartbeat stands still.
        driver.observe().await;
        driver.claim_orphans().await;
        let task = tokio::spawn(driver.run(req_rx, int_rx, shutdown));
        Ok((
            Engine {
                requests: req_tx,
                store,
            },
            task,
        ))
    }

    /// Parses, checks and registers a flow (replacing one of the same name). Nothing is
    /// registered when the file has a problem.
    pub async fn register_flow(&self, source: &str) -> Result<StoredFlow> {
        self.register_flow_with_files(source, &BTreeMap::new())
            .await
    }

    /// [`Engine::register_flow`] with the files its scripts name (`file:`), by path
    /// relative to the flow file; their text is kept with the flow.
    pub async fn register_flow_with_files(
        &self,
        source: &str,
        files: &BTreeMap<String, String>,
    ) -> Result<StoredFlow> {
        let flow = Flow::from_yaml_with_files(source, files)?;
        let t = now();
        let name = flow.name();
        let created_at = match self.store.get_flow(&name).await? {
            Some(old) => old.created_at,
            None => t,
        };
        let stored = StoredFlow {
            name,
            source: source.to_owned(),
            flow,
            created_at,
            updated_at: t,
        };
        self.store.put_flow(&stored).await?;
        Ok(stored)
    }

    pub async fn list_flows(&self) -> Result<Vec<StoredFlow>> {
        self.store.list_flows().await
    }

    pub async fn get_flow(&self, name: &str) -> Result<Option<StoredFlow>> {
        self.store.get_flow(name).await
    }

    pub async fn list_runs(&self, query: &RunQuery) -> Result<Vec<Run>> {
        self.store.list_runs(query).await
    }

    pub async fn get_run(&self, id: &str) -> Result<Option<Run>> {
        Ok(self.store.get_run(id).await?.map(|(r, _)| r))
    }

    /// Starts a run of a registered flow; `co_data` replaces CO_DATA for every job.
    pub async fn start_run(&self, flow: &str, co_data: Option<String>) -> Result<Run> {
        let opts = RunOptions {
            co_data,
            ..RunOptions::default()
        };
        self.start_run_with(flow, opts).await
    }

    /// Starts a run of a registered flow with its cause, environment and id.
    pub async fn start_run_with(&self, flow: &str, opts: RunOptions) -> Result<Run> {
        self.ask(|reply| Request::StartRun {
            flow: flow.to_owned(),
            opts,
            reply,
        })
        .await
    }

    /// Approves the run's paused stage.
    pub async fn approve(&self, run: &str, by: Option<String>) -> Result<Run> {
        self.event(run, Event::Approve { by }).await
    }

    /// Rejects the run's paused stage: the run fails.
    pub async fn reject(&self, run: &str, reason: Option<String>) -> Result<Run> {
        self.event(run, Event::Reject { reason }).await
    }

    /// Cancels the run: its running containers are stopped.
    pub async fn cancel(&self, run: &str, reason: Option<String>) -> Result<Run> {
        self.event(run, Event::Cancel { reason }).await
    }

    async fn event(&self, run: &str, event: Event) -> Result<Run> {
        self.ask(|reply| Request::Event {
            run: run.to_owned(),
            event,
            reply,
        })
        .await
    }

    async fn ask(&self, req: impl FnOnce(oneshot::Sender<Result<Run>>) -> Request) -> Result<Run> {
        let (tx, rx) = oneshot::channel();
        let stopped = || Error::new(ErrorKind::Stopped, "the flow engine is not running");
        self.requests.send(req(tx)).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

/// A run in memory, with its stored version.
struct Slot {
    run: Run,
    version: u64,
    /// The last save failed; the next transition or reconciliation saves again.
    dirty: bool,
}

impl Slot {
    fn new(run: Run, version: u64) -> Slot {
        Slot {
            run,
            version,
            dirty: false,
        }
    }
}

struct Driver {
    config: EngineConfig,
    /// The version of this replica's heartbeat.
    beat: u64,
    /// The other replicas' heartbeats as seen from here.
    liveness: Liveness,
    runner: Arc<dyn JobRunner>,
    store: Arc<dyn RunStore>,
    results: Box<dyn JobResults>,
    events: Arc<dyn RunEvents>,
    runs: HashMap<String, Slot>,
    internal_tx: mpsc::Sender<Internal>,
    /// Starts, removals and announcements in flight, so reconciliation does not repeat them.
    starting: HashSet<(String, JobKey)>,
    removing: HashSet<(String, JobKey)>,
    /// Containers with a stop call in flight (reconciliation re-issues stops every tick;
    /// a hanging Docker must not pile up calls).
    stopping: HashSet<String>,
    announcing: HashSet<String>,
    /// Verdicts whose post script runs.
    posting: HashSet<(String, JobKey)>,
}

impl Driver {
    async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        mut internal: mpsc::Receiver<Internal>,
        shutdown: CancellationToken,
    ) {
        let mut reconcile = tokio::time::interval(self.config.reconcile_every);
        reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        reconcile.tick().await;
        let mut lease = tokio::time::interval(self.config.lease_ttl / 5);
        lease.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        lease.tick().await;
        let mut results_open = true;
        loop {
            let sleep = self.next_deadline().map(|d| {
                let ns = u64::try_from(d.saturating_sub(now())).unwrap_or(0);
                Duration::from_nanos(ns)
            });
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(req) = requests.recv() => self.request(req).await,
                Some(msg) = internal.recv() => self.internal(msg).await,
                notice = self.results.recv(), if results_open => match notice {
                    Notice::Result(r) => self.result(*r).await,
                    Notice::Lagged => {
                        tracing::warn!("missed job verdicts: looking them up");
                        self.reconcile(false).await;
                    }
                    Notice::Closed => results_open = false,
                },
                _ = tokio::time::sleep(sleep.unwrap_or(Duration::from_secs(3600))), if sleep.is_some() => {
                    self.tick().await
                }
                _ = reconcile.tick() => self.reconcile(false).await,
                _ = lease.tick() => self.lease_tick().await,
            }
        }
        // Others (or this engine's next start) take its runs over at once.
        if let Err(e) = self.store.retire(&self.config.replica, self.beat).await {
            tracing::warn!(error = %e, "cannot retire this replica's heartbeat; its runs are taken over after the lease ttl");
        }
        tracing::info!(
            active = self.runs.len(),
            "flow engine stopped; active runs resume at next start or on another replica"
        );
    }

    fn next_deadline(&self) -> Option<Nanos> {
        self.runs
            .values()
            .filter_map(|s| s.run.next_deadline())
            .min()
    }

    async fn request(&mut self, req: Request) {
        match req {
            Request::StartRun { flow, opts, reply } => {
                let r = self.start_run(&flow, opts).await;
                let _ = reply.send(r);
            }
            Request::Event { run, event, reply } => {
                let mut r = Err(Error::conflict(format!("run {run} is busy; try again")));
                // Twice: the first apply may find that another replica took the run.
                for _ in 0..2 {
                    r = match self.runs.contains_key(&run) {
                        true => self.apply(&run, event.clone()).await,
                        false => self.claim_for_request(&run, event.clone()).await,
                    };
                    let lost = matches!(&r, Err(e) if e.kind() == ErrorKind::Conflict)
                        && !self.runs.contains_key(&run);
                    if !lost {
                        break;
                    }
                }
                let _ = reply.send(r);
            }
        }
    }

    async fn start_run(&mut self, flow: &str, opts: RunOptions) -> Result<Run> {
        let stored = self
            .store
            .get_flow(flow)
            .await?
            .ok_or_else(|| Error::not_found(format!("no flow {flow}")))?;
        let id = opts
            .id
            .unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()));
        if self.runs.contains_key(&id) {
            return Err(Error::conflict(format!("run {id} exists already")));
        }
        let mut run = Run::new(id.clone(), stored.flow, opts.co_data, now());
        run.cause = opts.cause;
        run.env = opts.env;
        run.owner = Some(self.config.replica.clone());
        let cmds = run.apply(Event::Start, now())?;
        // A run that cannot be saved is not started.
        let version = self.store.put_run(&run, 0).await?;
        tracing::info!(run = %id, flow, "flow run started");
        self.runs
            .insert(id.clone(), Slot::new(run.clone(), version));
        self.execute(&id, cmds);
        Ok(run)
    }

    /// Applies an event to an active run, saves it, carries out its commands.
    async fn apply(&mut self, id: &str, event: Event) -> Result<Run> {
        let slot = self
            .runs
            .get_mut(id)
            .ok_or_else(|| Error::not_found(format!("no active run {id}")))?;
        let mut next = slot.run.clone();
        let cmds = next.apply(event, now())?;
        if next != slot.run || slot.dirty {
            slot.run = next;
            if save(&*self.store, slot, &self.config.replica).await == SaveOutcome::Lost {
                // Another replica drives it now: nothing of this transition is carried out.
                self.runs.remove(id);
                return Err(Error::conflict(format!(
                    "run {id} is driven by another replica now"
                )));
            }
        }
        let run = slot.run.clone();
        self.execute(id, cmds);
        self.retire(id);
        Ok(run)
    }

    /// Forgets a run the driver has nothing left to do for.
    fn retire(&mut self, id: &str) {
        if let Some(slot) = self.runs.get(id) {
            if !slot.run.is_active() && !slot.dirty {
                tracing::debug!(run = %id, "flow run retired");
                self.runs.remove(id);
            }
        }
    }

    fn execute(&mut self, id: &str, cmds: Vec<Command>) {
        for cmd in cmds {
            match cmd {
                Command::StartJob { job, mut spec } => {
                    if !self.starting.insert((id.to_owned(), job)) {
                        continue;
                    }
                    let pre = self
                        .runs
                        .get(id)
                        .and_then(|slot| hooks::pre_task(&slot.run, job, self.config.scripts));
                    let runner = self.runner.clone();
                    let tx = self.internal_tx.clone();
                    let run = id.to_owned();
                    tokio::spawn(async move {
                        if let Some(pre) = pre {
                            match pre.run(spec.env.clone()).await {
                                Ok(env) => spec.env = env,
                                Err(reason) => {
                                    tracing::info!(run = %run, job = %spec.name, reason = %reason, "pre script failed the job");
                                    let event = Event::Refused { job, reason };
                                    let _ = tx.send(Internal::Event { run, event }).await;
                                    return;
                                }
                            }
                        }
                        let event = match runner.start(&spec).await {
                            Ok(container_id) => {
                                tracing::info!(run = %run, job = %spec.name, container_id = %container_id, "job started");
                                Event::Launched { job, container_id }
                            }
                            Err(e) => {
                                tracing::warn!(run = %run, job = %spec.name, error = %e, "job could not start");
                                Event::LaunchFailed {
                                    job,
                                    error: e.to_string(),
                                }
                            }
                        };
                        let _ = tx.send(Internal::Event { run, event }).await;
                    });
                }
                Command::Stop { container_id, .. } => {
                    if !self.stopping.insert(container_id.clone()) {
                        continue;
                    }
                    let runner = self.runner.clone();
                    let grace = self.config.stop_grace;
                    let tx = self.internal_tx.clone();
                    tokio::spawn(async move {
                        if let Err(e) = runner.stop(&container_id, grace).await {
                            tracing::warn!(container_id = %container_id, error = %e, "cannot stop job container; will retry");
                        }
                        let _ = tx.send(Internal::StopDone { container_id }).await;
                    });
                }
                Command::Remove { job, container_id } => {
                    if !self.removing.insert((id.to_owned(), job)) {
                        continue;
                    }
                    let runner = self.runner.clone();
                    let tx = self.internal_tx.clone();
                    let run = id.to_owned();
                    tokio::spawn(async move {
                        match runner.remove(&container_id).await {
                            Ok(()) => {
                                let _ = tx
                                    .send(Internal::Event {
                                        run,
                                        event: Event::Removed { job },
                                    })
                                    .await;
                            }
                            Err(e) => {
                                tracing::warn!(container_id = %container_id, error = %e, "cannot remove job container; will retry");
                                let _ = tx
                                    .send(Internal::Event {
                                        run,
                                        event: Event::Tick,
                                    })
                                    .await;
                            }
                        }
                    });
                }
                Command::Finished => self.announce(id),
            }
        }
    }

    fn announce(&mut self, id: &str) {
        let Some(slot) = self.runs.get(id) else {
            return;
        };
        if !self.announcing.insert(id.to_owned()) {
            return;
        }
        let summary = slot.run.summary();
        let events = self.events.clone();
        let tx = self.internal_tx.clone();
        let run = id.to_owned();
        tokio::spawn(async move {
            match events.run_finished(&summary).await {
                Ok(()) => {
                    let _ = tx.send(Internal::Announced { run }).await;
                }
                Err(e) => {
                    tracing::warn!(run = %run, error = %e, "cannot announce the end of the run; will retry");
                    let _ = tx.send(Internal::AnnounceFailed { run }).await;
                }
            }
        });
    }

    async fn internal(&mut self, msg: Internal) {
        match msg {
            Internal::Event { run, event } => {
                match &event {
                    Event::Launched { job, .. }
                    | Event::LaunchFailed { job, .. }
                    | Event::Refused { job, .. } => {
                        self.starting.remove(&(run.clone(), *job));
                    }
                    Event::Verdict(v) => {
                        self.posting.remove(&(run.clone(), v.job));
                    }
                    Event::Removed { job } => {
                        self.removing.remove(&(run.clone(), *job));
                    }
                    Event::Tick => {
                        // A failed removal: let reconciliation try again.
                        self.removing.retain(|(r, _)| *r != run);
                        return;
                    }
                    _ => {}
                }
                if let Err(e) = self.apply(&run, event).await {
                    tracing::warn!(run = %run, error = %e, "runner report not applied");
                }
            }
            Internal::StopDone { container_id } => {
                self.stopping.remove(&container_id);
            }
            Internal::Announced { run } => {
                self.announcing.remove(&run);
                if let Some(slot) = self.runs.get_mut(&run) {
                    slot.run.announced = true;
                    if save(&*self.store, slot, &self.config.replica).await == SaveOutcome::Lost {
                        self.runs.remove(&run);
                    }
                }
                self.retire(&run);
            }
            Internal::AnnounceFailed { run } => {
                self.announcing.remove(&run);
            }
        }
    }

    async fn result(&mut self, r: JobResult) {
        let Some(slot) = self.runs.get(&r.run) else {
            return;
        };
        let Some(job) = slot.run.key_of(&r.stage, &r.action, &r.job) else {
            tracing::warn!(run = %r.run, stage = %r.stage, action = %r.action, job = %r.job, "verdict for a job the run does not have");
            return;
        };
        let run = r.run.clone();
        if let Some(post) = hooks::post_task(&slot.run, job, &r, self.config.scripts) {
            if !self.posting.insert((run.clone(), job)) {
                return;
            }
            let log = match self
                .results
                .log_tail(&r.container_id, post.log_lines())
                .await
            {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(run = %run, container_id = %r.container_id, error = %e, "cannot read the log tail for a post script");
                    Vec::new()
                }
            };
            let tx = self.internal_tx.clone();
            tokio::spawn(async move {
                let event = Event::Verdict(post.run(job, r, log).await);
                let _ = tx.send(Internal::Event { run, event }).await;
            });
            return;
        }
        let event = Event::Verdict(Verdict {
            job,
            container_id: r.container_id,
            success: r.success,
            reason: r.reason,
            exit_code: r.exit_code,
            outputs: r.outputs,
            finished_at: r.finished_at,
            overridden: None,
        });
        if let Err(e) = self.apply(&run, event).await {
            tracing::warn!(run = %run, error = %e, "verdict not applied");
        }
    }

    async fn tick(&mut self) {
        let t = now();
        let due: Vec<String> = self
            .runs
            .iter()
            .filter(|(_, s)| s.run.next_deadline().is_some_and(|d| d <= t))
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            if let Err(e) = self.apply(&id, Event::Tick).await {
                tracing::warn!(run = %id, error = %e, "timeout check failed");
            }
        }
    }

    /// Brings every active run in line with the runner and the verdicts committed so far.
    /// `resume`: the engine just started, so jobs saved as starting are started again.
    async fn reconcile(&mut self, resume: bool) {
        let ids: Vec<String> = self.runs.keys().cloned().collect();
        for id in ids {
            self.reconcile_run(&id, resume).await;
        }
    }

    /// [`Driver::reconcile`] for one run.
    async fn reconcile_run(&mut self, id: &str, resume: bool) {
        let id = id.to_owned();
        {
            let Some(slot) = self.runs.get_mut(&id) else {
                return;
            };
            if slot.dirty
                && save(&*self.store, slot, &self.config.replica).await == SaveOutcome::Lost
            {
                self.runs.remove(&id);
                return;
            }
            let run = slot.run.clone();
            let mut cmds = Vec::new();
            let mut verdicts = Vec::new();
            let mut orphans = Vec::new();
            for (key, job) in run.jobs() {
                match &job.container_id {
                    // Stopped while starting, and the engine went down before the start
                    // reported back: look for the container by its labels.
                    None if resume
                        && job.status.is_final()
                        && job.started_at.is_some()
                        && !job.removed =>
                    {
                        orphans.push(key);
                    }
                    None if job.status == Status::Running && resume => {
                        if let Ok(spec) = run.job_spec(key) {
                            cmds.push(Command::StartJob {
                                job: key,
                                spec: Box::new(spec),
                            });
                        }
                    }
                    Some(c) if !job.exited => {
                        let state = match self.runner.state(c).await {
                            Ok(s) => s,
                            Err(e) => {
                                tracing::warn!(container_id = %c, error = %e, "cannot check job container");
                                continue;
                            }
                        };
                        if state == ContainerState::Running {
                            if job.status.is_final() {
                                // Stopped by us, but still running: stop again.
                                cmds.push(Command::Stop {
                                    job: key,
                                    container_id: c.clone(),
                                });
                            }
                            continue;
                        }
                        match self.results.lookup(c).await {
                            Ok(Some(r)) => verdicts.push(r),
                            Ok(None) => {
                                tracing::debug!(container_id = %c, "job container exited; waiting for its verdict")
                            }
                            Err(e) => {
                                tracing::warn!(container_id = %c, error = %e, "cannot look up a job verdict")
                            }
                        }
                    }
                    Some(c) if !job.removed => cmds.push(Command::Remove {
                        job: key,
                        container_id: c.clone(),
                    }),
                    _ => {}
                }
            }
            if !orphans.is_empty() {
                self.adopt(&run, orphans).await;
            }
            self.execute(&id, cmds);
            for v in verdicts {
                self.result(v).await;
            }
            // Deadlines that passed while the engine was down.
            if run.next_deadline().is_some_and(|d| d <= now()) {
                let _ = self.apply(&id, Event::Tick).await;
            }
            if let Some(slot) = self.runs.get(&id) {
                if slot.run.status.is_final() && !slot.run.announced {
                    self.announce(&id);
                }
            }
            self.retire(&id);
        }
    }
}

/// What a save came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SaveOutcome {
    Done,
    /// Not saved (storage failed); the next transition or reconciliation tries again.
    Failed,
    /// Another replica owns the run now: it must be dropped here.
    Lost,
}

/// Saves a run, tracking failures so the next attempt saves it again. A conflict means
/// another engine changed the run: if that one owns it now, the run is lost to this one;
/// otherwise (a write of ours raced one of our own) ours is saved over it.
async fn save(store: &dyn RunStore, slot: &mut Slot, replica: &str) -> SaveOutcome {
    match store.put_run(&slot.run, slot.version).await {
        Ok(v) => {
            slot.version = v;
            slot.dirty = false;
            SaveOutcome::Done
        }
        Err(e) if e.kind() == ErrorKind::Conflict => {
            match store.get_run(&slot.run.id).await {
                Ok(Some((stored, v))) => {
                    if stored.owner.as_deref() != Some(replica) {
                        tracing::info!(run = %slot.run.id, owner = stored.owner.as_deref().unwrap_or("-"), "flow run taken over by another replica; dropping it here");
                        return SaveOutcome::Lost;
                    }
                    tracing::warn!(run = %slot.run.id, error = %e, "run changed in the store under us; saving ours over it");
                    slot.version = v;
                }
                Ok(None) => slot.version = 0,
                Err(_) => {}
            }
            slot.dirty = true;
            SaveOutcome::Failed
        }
        Err(e) => {
            tracing::error!(run = %slot.run.id, error = %e, "cannot save run state; will retry");
            slot.dirty = true;
            SaveOutcome::Failed
        }
    }
}
