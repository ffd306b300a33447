//! `logarithm`, Logarithm's command line for operators: jobs and their logs (followed live
//! like `kubectl logs -f`), flow runs (watched like `gh run watch`), flows and webhooks,
//! through logarithmd's HTTP API.
//!
//! Output is a table by default and the server's JSON with `--json`; colours only on a
//! terminal. Exit status: 0 success, 1 the followed job or run failed, 2 an error (every
//! error the server sends is printed as its message).
//!
//! # Layout
//! - [`args`]: the command line (clap derive, `LOGARITHM_URL` / `LOGARITHM_TOKEN`).
//! - [`client`]: the one HTTP client, bearer token, server error messages.
//! - [`output`]: tables, colours, JSON.
//! - [`sse`]: the Server-Sent Events reader `logs -f` uses.
//! - [`commands`]: one module per group of subcommands.
//! - [`run`]: dispatches a parsed command line.

pub mod args;
pub mod client;
pub mod commands;
pub mod output;
pub mod sse;

use args::{Cli, Command, FlowsCommand, WebhooksCommand};
use commands::{flows, jobs, logs, runs, webhooks};
use output::Out;

/// What a command found, when it worked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Exit status 0.
    Success,
    /// The followed job or run failed: exit status 1.
    Failure,
}

/// Runs one command.
pub async fn run(cli: Cli) -> client::Result<Outcome> {
    let out = Out::new(cli.global.json, cli.global.color);
    let c = client::Client::new(&cli.global)?;
    let ok = |r: client::Result<()>| r.map(|()| Outcome::Success);
    match &cli.command {
        Command::Jobs(a) => ok(jobs::list(&c, &out, a).await),
        Command::Logs(a) => logs::logs(&c, a).await,
        Command::Runs(a) => ok(runs::list(&c, &out, a).await),
        Command::Run(a) => runs::run(&c, &out, a).await,
        Command::Approve(a) => ok(runs::steer(&c, &out, "approve", a).await),
        Command::Reject(a) => ok(runs::steer(&c, &out, "reject", a).await),
        Command::Cancel(a) => ok(runs::steer(&c, &out, "cancel", a).await),
        Command::Flows(FlowsCommand::Apply { file }) => ok(flows::apply(&c, &out, file).await),
        Command::Flows(FlowsCommand::Ls) => ok(flows::list(&c, &out).await),
        Command::Webhooks(WebhooksCommand::Ls) => ok(webhooks::list(&c, &out).await),
        Command::Webhooks(WebhooksCommand::Deliveries { id, limit }) => {
            ok(webhooks::deliveries(&c, &out, id, *limit).await)
        }
        Command::Webhooks(WebhooksCommand::Redeliver { id, delivery }) => {
            ok(webhooks::redeliver(&c, &out, id, delivery).await)
        }
    }
}
