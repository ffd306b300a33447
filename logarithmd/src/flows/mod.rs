//! The flow engine inside logarithmd: the `engine` crate, fed and stored by logarithmd.
//!
//! The engine knows no HTTP and no database. logarithmd gives it:
//! - [`store::DocumentRunStore`]: flows and runs as storage documents (namespaces `flows`
//!   and `runs`), saved with compare-and-set;
//! - [`results::EventResults`]: the job verdicts logarithmd commits, from the in-process
//!   job events (`notify`), with storage as the lookup for missed ones;
//! - [`announce::WebhookRunEvents`]: a finished run becomes a durable `flow.finished`
//!   webhook delivery with one line per job;
//! - [`runner::LabelledRunner`]: adds the configured extra labels to every job, and the
//!   values of a container job's `secrets:` to its environment, around
//!   [`service::ServiceRunner`], which makes the HTTP calls of service jobs (`type:
//!   service`) and records them in storage, and hands containers to the Docker or
//!   Kubernetes runner (`[engine] runner`).
//!
//! [`run`] starts it, and the scheduler of its `cron` triggers (`engine::cron`), under the
//! shutdown token; until it is up (or when it is disabled, or
//! its runner is unreachable) the flow routes (`api::flows`) answer 503.
//!
//! # Layout
//! - [`config`]: the `[engine]` section.
//! - [`clock`]: the time the cron scheduler reads (the system's, or a file's in tests).
//! - [`store`], [`results`], [`announce`], [`runner`], [`service`]: the adapters above.
//! - [`secrets`]: `[engine.secrets]`, the values of flows' `secrets:`.
//! - [`view`]: the JSON shapes of flows and runs, shared by the API and `flow.finished`.

pub mod announce;
pub mod clock;
pub mod config;
pub mod results;
pub mod runner;
pub mod secrets;
pub mod service;
pub mod store;
pub mod view;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use engine::runner::docker::DockerRunner;
use engine::{Engine, JobRunner};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Waits between attempts to start the flow engine (exponential, with jitter).
const ENGINE_RETRY_MIN: Duration = Duration::from_millis(500);
const ENGINE_RETRY_MAX: Duration = Duration::from_secs(30);

pub use config::{EngineSettings, RunnerKind};

/// The running engine, once it is up. Cheap to clone.
#[derive(Clone, Default)]
pub struct EngineHandle(Arc<OnceLock<Engine>>, Arc<AtomicBool>);

impl std::fmt::Debug for EngineHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineHandle")
            .field("running", &self.0.get().is_some())
            .finish()
    }
}

impl EngineHandle {
    /// The engine, if it runs.
    pub fn get(&self) -> Option<&Engine> {
        self.0.get()
    }

    /// Makes `engine` reachable (once; `false` if one was set already). [`run`] does this;
    /// embedders that start an engine of their own (tests) call it themselves.
    pub fn set(&self, engine: Engine) -> bool {
        self.0.set(engine).is_ok()
    }

    /// Marks the engine as on its way up: `/readyz` answers 503 until it runs or [`run`]
    /// gave up on it (disabled, no Docker), so a load balancer or a test sends flow
    /// requests only once they can be served.
    pub fn mark_starting(&self) {
        self.1.store(true, Ordering::Release);
    }

    /// The engine runs, or will not run.
    pub fn mark_settled(&self) {
        self.1.store(false, Ordering::Release);
    }

    pub fn is_starting(&self) -> bool {
        self.1.load(Ordering::Acquire)
    }
}

/// Marks the handle settled when [`run`] returns, whichever way.
struct Settled<'a>(&'a EngineHandle);

impl Drop for Settled<'_> {
    fn drop(&mut self) {
        self.0.mark_settled();
    }
}

/// What [`run`] needs from logarithmd.
pub struct Wiring {
    pub settings: EngineSettings,
    pub storage: Arc<dyn storage::Storage>,
    pub events: crate::notify::JobEvents,
    pub webhook_wake: Arc<Notify>,
    pub public_url: String,
    pub handle: EngineHandle,
    /// Run saves are pushed to the run's live followers.
    pub runs_live: Arc<crate::live::RunHub>,
    /// The retry schedule and request timeout of service calls (`[webhooks]`).
    pub webhooks: crate::webhooks::config::WebhooksConfig,
    /// Told of the commits service calls make (as ingest's are announced).
    pub notify: service::ledger::Notifier,
    /// The secret masks ingest applies, applied to service jobs' records too.
    pub masker: Arc<crate::masking::Masker>,
    /// The values of `[engine.secrets]`, read at start.
    pub secrets: Arc<secrets::FlowSecrets>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Connects to the runner (Docker or Kubernetes), starts the engine (retrying while storage is unavailable), makes it
/// reachable through the handle, and drives it until `shutdown`. Returns at once when the
/// engine is disabled or its runner cannot be reached (flow routes then answer 503).
pub async fn run(w: Wiring, shutdown: CancellationToken) {
    let _settled = Settled(&w.handle);
    if !w.settings.enabled {
        tracing::info!("flow engine disabled ([engine] enabled = false)");
        return;
    }
    let inner = tokio::select! {
        _ = shutdown.cancelled() => return,
        r = connect(&w.settings) => r,
    };
    let inner = match inner {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(runner = ?w.settings.runner, error = %e, "flow engine not started: its runner is unreachable; flow routes answer 503");
            return;
        }
    };
    // Service jobs are made here, containers by `inner`; both get the extra labels, and
    // container jobs their secrets.
    let services = service::ServiceRunner::new(
        inner,
        service::ledger::Ledger::new(w.storage.clone(), w.masker.clone(), w.notify.clone()),
        service::ServiceSettings {
            secrets: w.settings.service_secrets.clone(),
            webhooks: w.webhooks.clone(),
            public_url: w.public_url.clone(),
            metrics: w.metrics.clone(),
        },
    );
    let services: Arc<dyn JobRunner> = match services {
        Ok(r) => Arc::new(r),
        Err(e) => {
            tracing::warn!(error = %e, "flow engine not started; flow routes answer 503");
            return;
        }
    };
    let runner: Arc<dyn JobRunner> = Arc::new(runner::LabelledRunner::new(
        services,
        w.settings.extra_labels.clone(),
        w.secrets.clone(),
    ));
    let store = Arc::new(
        store::DocumentRunStore::new(w.storage.clone()).publishing_to(w.runs_live.clone()),
    );
    let announcer = Arc::new(announce::WebhookRunEvents::new(
        w.storage.clone(),
        w.webhook_wake.clone(),
        w.public_url.clone(),
    ));
    let mut backoff = ExponentialBuilder::new()
        .with_min_delay(ENGINE_RETRY_MIN)
        .with_max_delay(ENGINE_RETRY_MAX)
        .with_jitter()
        .without_max_times()
        .build();
    loop {
        // Subscribed before the engine reconciles, so no verdict falls between its lookups
        // and the first notice.
        let results = Box::new(results::EventResults::new(
            w.events.subscribe(),
            w.storage.clone(),
        ));
        let started = Engine::start(
            w.settings.engine_config(),
            runner.clone(),
            store.clone(),
            results,
            announcer.clone(),
            shutdown.clone(),
        )
        .await;
        match started {
            Ok((engine, task)) => {
                tracing::info!(runner = runner.kind(), "flow engine started");
                let clock: Arc<dyn engine::cron::Clock> = match &w.settings.clock_file {
                    Some(path) => Arc::new(clock::FileClock::new(path.clone())),
                    None => Arc::new(engine::cron::SystemClock),
                };
                tokio::spawn(engine::cron::run(
                    engine.clone(),
                    clock,
                    w.settings.cron_poll,
                    shutdown.clone(),
                ));
                if !w.handle.set(engine) {
                    tracing::error!("a flow engine was already running; this one is not served");
                }
                w.handle.mark_settled();
                if task.await.is_err() {
                    tracing::error!("the flow engine panicked");
                }
                return;
            }
            Err(e) => {
                // Ingest and queries must not wait on the engine: readiness settles at the
                // first failure while the engine keeps trying in the background.
                w.handle.mark_settled();
                let retry_in = backoff.next().unwrap_or(ENGINE_RETRY_MAX);
                tracing::warn!(error = %e, ?retry_in, "flow engine cannot start yet");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(retry_in) => {}
                }
            }
        }
    }
}

/// The configured runner: the local Docker engine, or the Kubernetes API server.
async fn connect(settings: &EngineSettings) -> engine::Result<Arc<dyn JobRunner>> {
    Ok(match settings.runner {
        RunnerKind::Docker => Arc::new(DockerRunner::connect().await?),
        #[cfg(feature = "kubernetes")]
        RunnerKind::Kubernetes => {
            let k = &settings.kubernetes;
            let r = engine::runner::kubernetes::KubernetesRunner::infer(k.namespace.as_deref())
                .await?
                .with_options(k.pod_options());
            tracing::info!(namespace = r.namespace(), "jobs run as Kubernetes Pods");
            Arc::new(r)
        }
        // Refused by the configuration's validation already; kept for embedders that skip it.
        #[cfg(not(feature = "kubernetes"))]
        RunnerKind::Kubernetes => {
            return Err(engine::Error::invalid(config::KUBERNETES_NOT_BUILT));
        }
    })
}

/// Maps a storage failure to the engine's kinds: transient stays transient.
pub(crate) fn engine_error(context: &str, e: storage::Error) -> engine::Error {
    let kind = match e.kind() {
        storage::ErrorKind::Unavailable => engine::ErrorKind::Unavailable,
        storage::ErrorKind::Timeout => engine::ErrorKind::Timeout,
        storage::ErrorKind::Invalid => engine::ErrorKind::Invalid,
        storage::ErrorKind::Corrupt | storage::ErrorKind::Internal => engine::ErrorKind::Internal,
    };
    engine::Error::with_source(kind, format!("{context}: {e}"), e)
}
