//! The `antilog` binary: configuration from a TOML file and flags, logging, signals.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Logarithm's node agent: ships every container's log (Docker or Kubernetes) to logarithmd.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// TOML configuration file (every field optional; see docs/configuration-antilog.md).
    #[arg(long, env = "ANTILOG_CONFIG")]
    config: Option<PathBuf>,
    /// logarithmd base URL (overrides `server_url`).
    #[arg(long, env = "ANTILOG_SERVER_URL")]
    server_url: Option<String>,
    /// Bearer token (overrides `token`; `LOGARITHM_TOKEN` is the fallback).
    #[arg(long, env = "ANTILOG_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Checkpoint directory (overrides `data_dir`).
    #[arg(long, env = "ANTILOG_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Node name sent with every batch (overrides `node_name`).
    #[arg(long, env = "ANTILOG_NODE_NAME")]
    node_name: Option<String>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let mut config = match &args.config {
        Some(path) => antilog::Config::load(path)?,
        None => antilog::Config::default(),
    };
    if let Some(v) = args.server_url {
        config.server_url = v;
    }
    if let Some(v) = args.token {
        config.token = Some(v);
    }
    if let Some(v) = args.data_dir {
        config.data_dir = v;
    }
    if let Some(v) = args.node_name {
        config.node_name = v;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let signals = tokio::spawn(cancel_on_signal(shutdown.clone()));
        let res = antilog::run(config, shutdown).await;
        signals.abort();
        res.context("antilog failed")
    })
}

/// SIGINT or SIGTERM -> graceful shutdown; a second signal exits at once.
async fn cancel_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    for round in 0..2 {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        if round == 0 {
            tracing::info!("signal received: shutting down (again to exit now)");
            shutdown.cancel();
        } else {
            std::process::exit(130);
        }
    }
}
