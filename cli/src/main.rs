//! The `logarithm` binary: parse the command line, run the command, map the outcome to the
//! exit status (0 success, 1 failure, 2 error).

use std::process::ExitCode;

use clap::Parser;
use logarithm_cli::{args::Cli, run, Outcome};

fn main() -> ExitCode {
    // clap exits with status 2 on a usage error.
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("logarithm: cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Failure) => ExitCode::from(1),
        Err(e) => {
            eprintln!("logarithm: {e}");
            ExitCode::from(2)
        }
    }
}
