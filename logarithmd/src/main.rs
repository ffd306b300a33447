//! The logarithmd binary: configuration, tracing, signals, then `logarithmd::run`.

use std::net::SocketAddr;
use std::path::PathBuf;

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use tokio::sync::Notify;
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
    /// Adds an agent secret with scope `ingest` (repeatable; comma-separated in the
    /// environment). Prefer hashed `[[tokens]]` entries in the file.
    #[arg(
        long = "ingest-token",
        env = "LOGARITHMD_INGEST_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    ingest_tokens: Vec<String>,
    /// Adds a token named `admin` with scope `admin` (the secret; prefer a hashed
    /// `[[tokens]]` entry in the file).
    #[arg(long, env = "LOGARITHMD_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Lets callers without a token read (sets `anonymous_read`).
    #[arg(long, env = "LOGARITHMD_ANONYMOUS_READ")]
    anonymous_read: bool,
    /// Overrides `public_url` (links in webhook payloads).
    #[arg(long, env = "LOGARITHMD_PUBLIC_URL")]
    public_url: Option<String>,
    /// Overrides `[retention] max_age` (`30d`, `12h`): finished jobs older than this are
    /// deleted with everything they own.
    #[arg(long, env = "LOGARITHMD_RETENTION_MAX_AGE", value_parser = humantime_serde::re::humantime::parse_duration)]
    retention_max_age: Option<std::time::Duration>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Prints the `[[tokens]]` entry for a secret read from standard input (one line), or
    /// for a new random secret with `--generate` (printed once, above the entry).
    HashToken {
        /// The token's name.
        #[arg(long, default_value = "agents")]
        name: String,
        /// Its scopes: `ingest`, `read`, `admin` (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "ingest")]
        scopes: Vec<String>,
        /// Generates a random secret instead of reading one.
        #[arg(long)]
        generate: bool,
    },
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
    if args.anonymous_read {
        config.anonymous_read = true;
    }
    if let Some(age) = args.retention_max_age {
        config.retention.max_age = Some(age);
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
    if let Some(Command::HashToken {
        name,
        scopes,
        generate,
    }) = &args.command
    {
        return hash_token(name, scopes, *generate);
    }
    let config = load(&args)?;
    let token = CancellationToken::new();
    let signal_token = token.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("signal received");
        signal_token.cancel();
    });
    let reload = Arc::new(Notify::new());
    #[cfg(unix)]
    {
        let reload = reload.clone();
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("listening for SIGHUP")?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                tracing::info!("SIGHUP received: reloading the TLS certificate");
                reload.notify_one();
            }
        });
    }
    logarithmd::run(config, token, reload).await?;
    Ok(())
}

/// `logarithmd hash-token`: prints a `[[tokens]]` entry (and a generated secret).
fn hash_token(name: &str, scopes: &[String], generate: bool) -> anyhow::Result<()> {
    use logarithmd::auth::token::{generate_secret, hash_secret};
    use logarithmd::auth::Scope;
    for s in scopes {
        if Scope::parse(s).is_none() {
            anyhow::bail!("unknown scope {s:?}: use ingest, read or admin");
        }
    }
    let secret = if generate {
        let s = generate_secret();
        println!("# secret (give it to the client; logarithmd keeps only the hash): {s}");
        s
    } else {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .context("reading the secret from standard input")?;
        let s = line.trim_end_matches(['\r', '\n']).to_owned();
        if s.len() < 16 {
            anyhow::bail!("the secret must be at least 16 characters (try --generate)");
        }
        s
    };
    let scopes: Vec<String> = scopes.iter().map(|s| format!("{s:?}")).collect();
    println!(
        "[[tokens]]\nname = {name:?}\nhash = \"{}\"\nscopes = [{}]",
        hash_secret(&secret),
        scopes.join(", ")
    );
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
