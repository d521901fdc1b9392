//! The `enforcer` binary: parse arguments, hand over to the library.
use clap::Parser as _;

fn main() -> std::process::ExitCode {
    let cli = enforcer::cli::Cli::parse();
    if !matches!(cli.command, enforcer::cli::Command::Agent(_)) {
        enforcer::logging::init(cli.log_format, "warn", false);
    }
    std::process::ExitCode::from(enforcer::cli::execute(cli))
}
