//! Service jobs (`type: service`): the job is an HTTP call, not a container. The engine
//! knows no HTTP: it starts, stops and checks the job through its one [`JobRunner`] and
//! hears the verdict through its one results interface, like a container's. This module
//! is the runner logarithmd gives it: [`ServiceRunner`] sends service jobs to the
//! [`ledger::Ledger`] and a [`call::Call`], and every other job to the container runner.
//!
//! A call is recorded in storage before it is made (its token and its job row), so the
//! callback may arrive at any replica (`api::callbacks`), and the replica that drives the
//! run hears of the verdict (in-process when it committed it, otherwise by the lookup its
//! reconciliation makes when [`JobRunner::state`] says the job ended).
//!
//! # Layout
//! - [`answer`]: the JSON a service answers or calls back with.
//! - [`call`]: the signed, retried request.
//! - [`ledger`]: tokens and the job rows of calls in storage.
//! - [`metrics`]: counters of attempts and callbacks.

pub mod answer;
pub mod call;
pub mod ledger;
pub mod metrics;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::flow::JobKind;
use engine::runner::{ContainerState, Found};
use engine::{Error, ErrorKind, JobRunner, JobSpec, Result};

use crate::webhooks::config::WebhooksConfig;
use ledger::{is_call, Ending, Ledger};

/// The secret a service job without `secret:` is signed with.
pub const DEFAULT_SECRET: &str = "default";

/// What service calls need besides storage.
pub struct ServiceSettings {
    /// Signing secrets by name (`[engine] service_secrets`).
    pub secrets: BTreeMap<String, String>,
    /// Request timeout and retry schedule (`[webhooks]`).
    pub webhooks: WebhooksConfig,
    /// logarithmd's public URL, the base of callback URLs.
    pub public_url: String,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Service jobs here, containers in `containers`.
pub struct ServiceRunner {
    containers: Arc<dyn JobRunner>,
    ledger: Ledger,
    settings: Arc<ServiceSettings>,
    client: reqwest::Client,
    /// Calls whose request this process is making (the others, pending and not accepted,
    /// were cut short by a restart and are made again).
    in_flight: Arc<Mutex<HashSet<String>>>,
}

/// Takes a call off the in-flight set when its request ends.
struct InFlight(Arc<Mutex<HashSet<String>>>, String);

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Ok(mut s) = self.0.lock() {
            s.remove(&self.1);
        }
    }
}

impl ServiceRunner {
    pub fn new(
        containers: Arc<dyn JobRunner>,
        ledger: Ledger,
        settings: ServiceSettings,
    ) -> Result<ServiceRunner> {
        let timeout = settings.webhooks.request_timeout;
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("logarithmd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                Error::new(
                    ErrorKind::Internal,
                    format!("cannot build the service HTTP client: {e}"),
                )
            })?;
        Ok(ServiceRunner {
            containers,
            ledger,
            settings: Arc::new(settings),
            client,
            in_flight: Arc::new(Mutex::new(HashSet::new())),
        })
    }

    async fn call(&self, spec: &JobSpec) -> Result<String> {
        if let Some(id) = self.ledger.existing(spec).await? {
            tracing::info!(call = %id, job = %spec.name, "service call exists already: a repeated start");
            return Ok(id);
        }
        let name = spec.secret.as_deref().unwrap_or(DEFAULT_SECRET);
        let secret = self.settings.secrets.get(name).ok_or_else(|| {
            Error::new(
                ErrorKind::Invalid,
                format!("no secret {name:?} in [engine] service_secrets to sign the call with"),
            )
        })?;
        let (id, token, deadline) = self.ledger.open(spec).await?;
        tracing::info!(call = %id, job = %spec.name, endpoint = %ledger::shown_url(&spec.image), "calling a service");
        self.spawn(spec.clone(), id.clone(), token, deadline, secret.clone());
        Ok(id)
    }

    /// Makes the call's request in the background.
    fn spawn(
        &self,
        spec: JobSpec,
        id: String,
        token: String,
        deadline: Option<i64>,
        secret: String,
    ) {
        let guard = match self.in_flight.lock() {
            Ok(mut s) => {
                s.insert(id.clone());
                InFlight(self.in_flight.clone(), id.clone())
            }
            Err(_) => return,
        };
        let call = call::Call {
            spec,
            id,
            token,
            secret,
            callback_base: self.settings.public_url.clone(),
            deadline,
            metrics: self.settings.metrics.clone(),
        };
        let client = self.client.clone();
        let webhooks = self.settings.webhooks.clone();
        let ledger = self.ledger.clone();
        tokio::spawn(async move {
            let _guard = guard;
            call.run(client, webhooks, ledger).await;
        });
    }

    /// A waiting call whose request no process makes (cut short by a restart of the
    /// replica that started it) is made again, with a new token.
    async fn resume(&self, id: &str) -> Result<()> {
        let mine = self
            .in_flight
            .lock()
            .map(|s| s.contains(id))
            .unwrap_or(true);
        if mine {
            return Ok(());
        }
        let Some((spec, token, deadline)) = self.ledger.reissue(id).await? else {
            return Ok(());
        };
        let name = spec.secret.as_deref().unwrap_or(DEFAULT_SECRET);
        let Some(secret) = self.settings.secrets.get(name).cloned() else {
            let why = format!("no secret {name:?} in [engine] service_secrets");
            self.ledger.end(id, Ending::Failed(why), None).await?;
            return Ok(());
        };
        tracing::info!(call = %id, job = %spec.name, "making a service call again: its request was cut short by a restart");
        self.spawn(spec, id.to_owned(), token, deadline, secret);
        Ok(())
    }
}

#[async_trait::async_trait]
impl JobRunner for ServiceRunner {
    fn kind(&self) -> &'static str {
        self.containers.kind()
    }

    async fn start(&self, spec: &JobSpec) -> Result<String> {
        match spec.kind {
            JobKind::Service => self.call(spec).await,
            JobKind::Component => self.containers.start(spec).await,
        }
    }

    /// A service job is stopped by revoking its token: a later answer or callback is
    /// refused, and the job ends as failed (the engine has marked it timed out or
    /// cancelled already).
    async fn stop(&self, container_id: &str, grace: Duration) -> Result<()> {
        if !is_call(container_id) {
            return self.containers.stop(container_id, grace).await;
        }
        let why = "stopped before the service answered".to_owned();
        if self
            .ledger
            .end(container_id, Ending::Failed(why), None)
            .await?
        {
            tracing::info!(call = %container_id, "service call revoked");
        }
        Ok(())
    }

    /// Nothing to remove: the call's record stays with the job.
    async fn remove(&self, container_id: &str) -> Result<()> {
        if is_call(container_id) {
            return Ok(());
        }
        self.containers.remove(container_id).await
    }

    async fn state(&self, container_id: &str) -> Result<ContainerState> {
        if !is_call(container_id) {
            return self.containers.state(container_id).await;
        }
        let state = self.ledger.state(container_id).await?;
        if state == ContainerState::Running {
            self.resume(container_id).await?;
        }
        Ok(state)
    }

    async fn find_run(&self, run: &str) -> Result<Vec<Found>> {
        let mut found = self.containers.find_run(run).await?;
        found.extend(self.ledger.find_run(run).await?);
        Ok(found)
    }
}
