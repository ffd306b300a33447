//! logarithmd, Logarithm's central daemon: it ingests batches of container log lines from
//! agents over HTTP, stores them through the `storage` crate, parses the ContainerOps
//! component contract (`[COUT] KEY = VALUE`, `CO_RESULT`) into job outputs and verdicts,
//! and serves the query API.
//!
//! # Layout
//! - [`auth`]: tokens with scopes (`ingest`, `read`, `admin`) and the one extractor every
//!   route uses to require a scope.
//! - [`config`]: the configuration file's schema and defaults.
//! - [`cout`]: the `[COUT]` line parser.
//! - [`masking`]: secret masks (`***`) applied at ingest, before storage: global ones, a
//!   flow job's own secrets (`masking/run_masks.rs`), values cut between batches
//!   (`masking/edges.rs`).
//! - [`metrics`]: the Prometheus metrics (`GET /metrics`).
//! - [`api`]: the HTTP routes: `ingest` (bounded, authenticated, acknowledged after
//!   commit; `ingest_order`: a container's batches stored in order when an agent sends
//!   several at once, the batches waiting bounded by their decoded bytes), `query` (jobs and logs), `line_reader` (stored logs as whole lines), `loki`
//!   (Loki's read API for Grafana), `read_limits` (the line and time budget of long reads:
//!   downloads, follows, tails), `webhooks` (subscriptions, deliveries, redelivery),
//!   `callbacks` (service jobs' results), `error` (the one HTTP error type), health.
//! - [`job_view`]: a job as the API, its streams and webhook payloads show it.
//! - [`timefmt`]: RFC 3339 times (formatting and parsing), for the API, webhooks and runs.
//! - [`live`]: the live hub: committed lines and run saves pushed to followers (SSE,
//!   `follow=true`), with a cheap catch-up read for other replicas' commits.
//! - [`notify`]: in-process job events (the typed subscriber interface the flow engine
//!   uses), published after each commit.
//! - [`tls`]: HTTPS with rustls (certificate re-read on SIGHUP, optional client
//!   certificates).
//! - [`webhooks`]: signed, durable, retried webhook deliveries (outbox, dispatcher); its
//!   routes are `api::webhooks`.
//! - [`retention`]: the sweeper that deletes expired jobs with what they own
//!   (`[retention]`), in bounded transactions, with its metrics.
//! - [`flows`]: the flow engine (`engine` crate) wired to storage, job events and
//!   `flow.finished` webhooks; its routes are `api::flows`.
//! - [`run`]: opens storage, starts the webhook dispatcher (and the retention sweeper when
//!   a `[retention]` rule is set), serves until cancelled, drains with a deadline.

pub mod api;
pub mod auth;
pub mod config;
pub mod cout;
pub mod flows;
pub mod job_view;
pub mod live;
pub mod masking;
pub mod metrics;
pub mod notify;
pub mod retention;
pub mod timefmt;
pub mod tls;
pub mod webhooks;

use std::net::SocketAddr;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use config::Config;

/// Why logarithmd stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Storage(#[from] storage::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
    #[error(transparent)]
    Webhooks(#[from] webhooks::dispatcher::BuildError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// Opens storage (applying migrations), binds the listener, and serves until `shutdown` is
/// cancelled; in-flight requests then get `config.shutdown_timeout` to finish. Each
/// notification of `reload` (SIGHUP in `main`) re-reads the TLS certificate and key.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    reload: Arc<Notify>,
) -> Result<(), Error> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Listen {
            addr: config.listen,
            source,
        })?;
    serve_reloadable(config, listener, shutdown, reload).await
}

/// Like [`run`], on a listener the caller bound (tests bind `127.0.0.1:0`).
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    serve_reloadable(config, listener, shutdown, Arc::new(Notify::new())).await
}

/// Like [`serve`], re-reading the TLS files whenever `reload` is notified.
pub async fn serve_reloadable(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
    reload: Arc<Notify>,
) -> Result<(), Error> {
    config.validate().map_err(Error::Config)?;
    let tls = match &config.tls {
        Some(t) => Some(tls::TlsFiles::load(t.clone())?),
        None => None,
    };
    let mut sc = storage::StorageConfig::new(config.storage_url.clone());
    sc.max_connections = config.storage_connections;
    sc.max_read_connections = config.storage_read_connections;
    sc.busy_read_connections = config.storage_busy_read_connections;
    sc.busy_read_percent = config.storage_busy_read_percent;
    let store = storage::open(&sc).await?;
    let auth = config.authenticator().map_err(Error::Config)?;
    if auth.ingest_open() {
        tracing::warn!("no token has the ingest scope: anyone who reaches the port can ingest");
    }
    if auth.anonymous_read() {
        tracing::warn!("anonymous_read is on: anyone who reaches the port can read logs");
    }
    webhooks::sync_config_subscriptions(&*store, &config.webhooks).await?;
    let addr = listener.local_addr().map_err(Error::Serve)?;
    tracing::info!(%addr, storage = store.backend(), tls = tls.is_some(), "logarithmd listening");
    let drain = config.shutdown_timeout;
    let public_url = match &config.public_url {
        Some(u) => u.trim_end_matches('/').to_owned(),
        None if tls.is_some() => format!("https://{addr}"),
        None => format!("http://{addr}"),
    };
    let webhooks_config = config.webhooks.clone();
    let engine_settings = config.engine.clone();
    let config_retention = config.retention.clone();
    let sweeper_store = store.clone();
    let state = api::AppState::new(store.clone(), config);
    if engine_settings.enabled {
        state.flows.mark_starting();
    }
    let engine = tokio::spawn(flows::run(
        flows::Wiring {
            settings: engine_settings,
            storage: store.clone(),
            events: state.events.clone(),
            webhook_wake: state.webhook_wake.clone(),
            public_url: public_url.clone(),
            handle: state.flows.clone(),
            runs_live: state.live.runs.clone(),
            webhooks: webhooks_config.clone(),
            notify: state.commit_notifier(),
            masker: state.masker.clone(),
            secrets: state.flow_secrets.clone(),
            metrics: state.metrics.clone(),
        },
        shutdown.clone(),
    ));
    // Commits wake the dispatcher through the state's handle.
    let dispatcher = webhooks::dispatcher::Dispatcher::new(
        store,
        webhooks_config,
        public_url,
        state.webhook_wake.clone(),
        state.metrics.clone(),
    )?;
    let dispatcher = tokio::spawn(dispatcher.run(shutdown.clone()));
    let retention = config_retention.enabled().then(|| {
        let sweeper = retention::Sweeper::new(
            sweeper_store,
            &config_retention,
            state.metrics.retention.clone(),
        );
        tokio::spawn(sweeper.run(shutdown.clone()))
    });
    let live = state.live.clone();
    let app = api::router(state);
    tokio::spawn(reload_on_notify(tls.clone(), reload, shutdown.clone()));
    let token = shutdown.clone();
    let stop = async move { token.cancelled().await };
    let server = match tls {
        Some(files) => {
            let listener = tls::TlsListener::new(listener, files).map_err(Error::Serve)?;
            let server = axum::serve(listener, app).with_graceful_shutdown(stop);
            tokio::spawn(async move { server.await })
        }
        None => {
            let server = axum::serve(listener, app).with_graceful_shutdown(stop);
            tokio::spawn(async move { server.await })
        }
    };
    shutdown.cancelled().await;
    // Live streams never end by themselves: end them so draining does not wait for them.
    live.close();
    tracing::info!(deadline = ?drain, "shutting down: draining in-flight requests");
    // One deadline for both: requests in flight and webhook attempts in flight.
    let drained = tokio::time::timeout(drain, async move {
        let served = server.await;
        if dispatcher.await.is_err() {
            tracing::error!("the webhook dispatcher panicked");
        }
        if engine.await.is_err() {
            tracing::error!("the flow engine task panicked");
        }
        if let Some(sweeper) = retention {
            if sweeper.await.is_err() {
                tracing::error!("the retention sweeper panicked");
            }
        }
        served
    });
    match drained.await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(Error::Serve(e)),
        Ok(Err(join)) => Err(Error::Serve(std::io::Error::other(join))),
        Err(_) => {
            tracing::warn!("in-flight requests did not finish before the deadline");
            Ok(())
        }
    }
}

/// Re-reads the TLS files on each notification until shutdown; a failed reload keeps the
/// certificate in use.
async fn reload_on_notify(
    tls: Option<tls::TlsFiles>,
    reload: Arc<Notify>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = reload.notified() => {}
        }
        match &tls {
            Some(files) => match files.reload() {
                Ok(()) => tracing::info!("TLS certificate and key reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "TLS reload failed; the previous certificate stays in use")
                }
            },
            None => tracing::info!("reload requested; nothing to reload (no [tls])"),
        }
    }
}
