//! logarithmd, Logarithm's central daemon: it ingests batches of container log lines from
//! agents over HTTP, stores them through the `storage` crate, parses the ContainerOps
//! component contract (`[COUT] KEY = VALUE`, `CO_RESULT`) into job outputs and verdicts,
//! and serves the query API.
//!
//! # Layout
//! - [`config`]: the configuration file's schema and defaults.
//! - [`cout`]: the `[COUT]` line parser.
//! - [`api`]: the HTTP routes: `ingest` (bounded, authenticated, acknowledged after
//!   commit), `query` (jobs and logs), `error` (the one HTTP error type), health.
//! - [`run`]: opens storage, serves until cancelled, drains with a deadline.

pub mod api;
pub mod config;
pub mod cout;

use std::net::SocketAddr;

use tokio::net::TcpListener;
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
}

/// Opens storage (applying migrations), binds the listener, and serves until `shutdown` is
/// cancelled; in-flight requests then get `config.shutdown_timeout` to finish.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), Error> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Listen {
            addr: config.listen,
            source,
        })?;
    serve(config, listener, shutdown).await
}

/// Like [`run`], on a listener the caller bound (tests bind `127.0.0.1:0`).
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    config.validate().map_err(Error::Config)?;
    let mut sc = storage::StorageConfig::new(config.storage_url.clone());
    sc.max_connections = config.storage_connections;
    let store = storage::open(&sc).await?;
    if config.ingest_tokens.is_empty() {
        tracing::warn!("no ingest_tokens configured: anyone who reaches the port can ingest");
    }
    let addr = listener.local_addr().map_err(Error::Serve)?;
    tracing::info!(%addr, storage = store.backend(), "logarithmd listening");
    let drain = config.shutdown_timeout;
    let app = api::router(api::AppState::new(store, config));
    let token = shutdown.clone();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        token.cancelled().await;
    });
    let server = tokio::spawn(async move { server.await });
    shutdown.cancelled().await;
    tracing::info!(deadline = ?drain, "shutting down: draining in-flight requests");
    match tokio::time::timeout(drain, server).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(e))) => Err(Error::Serve(e)),
        Ok(Err(join)) => Err(Error::Serve(std::io::Error::other(join))),
        Err(_) => {
            tracing::warn!("in-flight requests did not finish before the deadline");
            Ok(())
        }
    }
}
