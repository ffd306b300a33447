//! The command line: one enum of subcommands (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Operate Logarithm from a terminal: jobs and their logs, flow runs, flows and webhooks.
///
/// Exit status: 0 success, 1 the job or run failed, 2 an error (bad arguments, the server
/// unreachable or answering an error, which is printed as the server's message).
#[derive(Debug, Parser)]
#[command(name = "logarithm", version)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// logarithmd's base URL.
    #[arg(
        long,
        env = "LOGARITHM_URL",
        default_value = "http://127.0.0.1:7300",
        global = true
    )]
    pub url: String,
    /// Bearer token sent with every request.
    #[arg(long, env = "LOGARITHM_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print the server's JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Colours: auto (only when printing to a terminal and NO_COLOR is unset), always, never.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto, global = true)]
    pub color: ColorChoice,
    /// PEM file with the CA certificate(s) logarithmd's certificate must chain to (https://).
    /// When set, only these are trusted, not the system roots (as antilog's `tls.ca_file`).
    #[arg(long, env = "LOGARITHM_CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,
    /// PEM file with a client certificate (chain) to present: mutual TLS, with --client-key.
    #[arg(
        long,
        env = "LOGARITHM_CLIENT_CERT",
        global = true,
        requires = "client_key"
    )]
    pub client_cert: Option<PathBuf>,
    /// PEM file with the client certificate's private key.
    #[arg(
        long,
        env = "LOGARITHM_CLIENT_KEY",
        global = true,
        requires = "client_cert"
    )]
    pub client_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List jobs, newest first.
    Jobs(JobsArgs),
    /// Print a job's log (raw bytes); with -f follow it until the job ends.
    Logs(LogsArgs),
    /// List flow runs, newest first.
    Runs(RunsArgs),
    /// Start a run of a flow; with --follow watch its stages until it ends.
    Run(RunArgs),
    /// Approve a run's paused stage.
    Approve(SteerArgs),
    /// Reject a run's paused stage (the run fails).
    Reject(SteerArgs),
    /// Cancel a run.
    Cancel(SteerArgs),
    /// Register and list flows.
    #[command(subcommand)]
    Flows(FlowsCommand),
    /// Webhook subscriptions and their deliveries (admin token).
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
}

#[derive(Debug, Args)]
pub struct JobsArgs {
    #[arg(long)]
    pub flow: Option<String>,
    #[arg(long)]
    pub run: Option<String>,
    #[arg(long)]
    pub stage: Option<String>,
    #[arg(long)]
    pub action: Option<String>,
    /// The flow job's name (`io.containerops.job`).
    #[arg(long)]
    pub job: Option<String>,
    /// running, success or failure.
    #[arg(long)]
    pub status: Option<String>,
    /// A container label, key=value (repeatable; all must hold).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Jobs to list (1–500).
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StreamArg {
    Stdout,
    Stderr,
}

impl StreamArg {
    pub fn as_str(self) -> &'static str {
        match self {
            StreamArg::Stdout => "stdout",
            StreamArg::Stderr => "stderr",
        }
    }
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The job's id (see `logarithm jobs`).
    pub job: String,
    /// Follow: print new lines as they are stored, until the job ends; the exit status is
    /// then the job's (0 success, 1 failure).
    #[arg(short, long)]
    pub follow: bool,
    /// Only this stream.
    #[arg(long, value_enum)]
    pub stream: Option<StreamArg>,
    /// Only lines containing this text.
    #[arg(long, conflicts_with = "regex")]
    pub grep: Option<String>,
    /// Only lines matching this regular expression.
    #[arg(long)]
    pub regex: Option<String>,
    /// Prefix each line with its RFC 3339 timestamp.
    #[arg(long)]
    pub timestamps: bool,
}

#[derive(Debug, Args)]
pub struct RunsArgs {
    #[arg(long)]
    pub flow: Option<String>,
    /// pending, running, success, failure, timeout or cancelled.
    #[arg(long)]
    pub status: Option<String>,
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The flow's name.
    pub flow: String,
    /// CO_DATA for every job of the run, instead of the flow's own.
    #[arg(long)]
    pub co_data: Option<String>,
    /// Watch the run's stages until it ends; the exit status is then the run's (0 success,
    /// 1 failure, timeout or cancelled).
    #[arg(long)]
    pub follow: bool,
}

#[derive(Debug, Args)]
pub struct SteerArgs {
    /// The run's id.
    pub run: String,
    /// Why (reject, cancel) or who approves (approve).
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum FlowsCommand {
    /// Register a flow from its YAML file (replacing the flow of the same name).
    Apply {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// List flows.
    Ls,
}

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// List subscriptions.
    Ls,
    /// A subscription's deliveries, newest first, with their attempts.
    Deliveries {
        id: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Send a delivery again.
    Redeliver { id: String, delivery: String },
}
