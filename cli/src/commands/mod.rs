//! One module per group of subcommands.

pub mod flows;
pub mod jobs;
pub mod logs;
pub mod runs;
pub mod webhooks;
