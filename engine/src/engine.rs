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
//!
//! Layout: this file holds the handle, the loop and the transitions; `config` the engine's
//! tuning and a run's start options; `commands` carries out the state machine's commands
//! in spawned tasks, `reports` takes their reports and the verdicts, `reconcile` the
//! reconciliation, `save` the save after a transition, `hooks` the scripts, `replicas` the
//! replicas' side.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Completions of Docker calls waiting for the driver (each call's task waits when full).
const INTERNAL_CAPACITY: usize = 1024;

mod commands;
mod config;
mod hooks;
mod reconcile;
mod replicas;
mod reports;
mod save;

pub use config::{EngineConfig, RunOptions};
use save::{save, SaveOutcome};

use crate::error::{Error, ErrorKind, Result};
use crate::flow::Flow;
use crate::lease::{self, Liveness};
use crate::results::{JobResults, Notice};
use crate::run::{Event, JobKey, Nanos, Run, RunSummary};
use crate::runner::JobRunner;
use crate::store::{RunQuery, RunStore, StoredFlow};

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
}
