//! The logarithmd binary: configuration, tracing, signals, then `logarithmd::run`.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

/// Logarithm's central daemon.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// TOML configuration file (every field optional; see docs/configuration.md).
    #[arg(long, env = "LOGARITHMD_CONFIG")]
    config: Option<PathBuf>,
    /// Overrides `listen`.
    #[arg(long, env = "LOGARITHMD_LISTEN")]
    listen: Option<SocketAddr>,
    /// Overrides `storage_url` (`sqlite://…` or `mysql://…`).
    #[arg(long, env = "LOGARITHMD_STORAGE_URL")]
    storage_url: Option<String>,
    /// Adds an accepted agent token (repeatable; comma-separated in the environment).
    #[arg(
        long = "ingest-token",
        env = "LOGARITHMD_INGEST_TOKENS",
        value_delimiter = ','
    )]
    ingest_tokens: Vec<String>,
    /// Overrides `admin_token` (managing webhooks).
    #[arg(long, env = "LOGARITHMD_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Overrides `public_url` (links in webhook payloads).
    #[arg(long, env = "LOGARITHMD_PUBLIC_URL")]
    public_url: Option<String>,
}

fn load(args: &Args) -> anyhow::Result<logarithmd::Config> {
    let mut config: logarithmd::Config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
        }
        None => logarithmd::Config::default(),
    };
    if let Some(l) = args.listen {
        config.listen = l;
    }
    if let Some(u) = &args.storage_url {
        config.storage_url = u.clone();
    }
    if let Some(t) = &args.admin_token {
        config.admin_token = Some(t.clone());
    }
    if let Some(u) = &args.public_url {
        config.public_url = Some(u.clone());
    }
    config
        .ingest_tokens
        .extend(args.ingest_tokens.iter().filter(|t| !t.is_empty()).cloned());
    config.validate().map_err(anyhow::Error::msg)?;
    Ok(config)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let config = load(&args)?;
    let token = CancellationToken::new();
    let signal_token = token.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("signal received");
        signal_token.cancel();
    });
    logarithmd::run(config, token).await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
