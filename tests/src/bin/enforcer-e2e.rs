//! The `enforcer` command, built inside the test crate so end-to-end tests get its
//! path from cargo (`CARGO_BIN_EXE_enforcer-e2e`) and always run the current code.
use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let cli = enforcer::cli::Cli::parse();
    if !matches!(cli.command, enforcer::cli::Command::Agent(_)) {
        enforcer::logging::init(cli.log_format, "warn", false);
    }
    std::process::ExitCode::from(enforcer::cli::execute(cli))
}
