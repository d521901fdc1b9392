//! Command line: one module per subcommand, each with an `execute`.
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::{logging::LogFormat, paths};

pub mod agent;
pub mod alerts;
pub mod baseline;
pub mod cleanup;
pub mod flows;
pub mod graph;
pub mod policy;
pub mod status;

/// Exit code when the agent cannot be reached.
pub const EXIT_AGENT_DOWN: u8 = 3;
/// Exit code when input (a policy, a config) is rejected.
pub const EXIT_REJECTED: u8 = 4;

#[derive(Debug, Parser)]
#[command(
    name = "enforcer",
    version,
    about = "eBPF host network enforcer and monitor",
    long_about = "eBPF host network enforcer and monitor.\n\n\
        `enforcer agent` runs on each host: it attaches kernel programs to every workload \
        interface, enforces the policy file (allowed peers, ports, host CIDR deny list) and \
        counts every verdict. The other commands talk to a running agent over its unix socket \
        (/run/enforcer/<instance>.sock).",
    after_help = "Exit codes: 0 ok, 1 error, 2 usage, 3 agent not running, 4 input rejected."
)]
pub struct Cli {
    /// Agent instance: selects the socket (/run/enforcer/<instance>.sock) and the pin
    /// directory (/sys/fs/bpf/enforcer/<instance>).
    #[arg(long, global = true, env = "ENFORCER_INSTANCE", default_value = paths::DEFAULT_INSTANCE)]
    pub instance: String,
    /// Control socket path (overrides the one derived from --instance).
    #[arg(long, global = true, env = "ENFORCER_SOCKET")]
    pub socket: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    Agent(agent::Args),
    Status(status::Args),
    Graph(graph::Args),
    Flows(flows::Args),
    /// Check a policy file offline (`check`), or have the running agent apply one
    /// atomically (`apply`): a bad file is refused with file, line and reason, and the
    /// policy in force stays. See docs/policy.md
    #[command(subcommand)]
    Policy(policy::Command),
    Cleanup(cleanup::Args),
    Alerts(alerts::Args),
    #[command(subcommand)]
    Baseline(baseline::Command),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    #[default]
    Table,
    Json,
}

impl Cli {
    pub fn paths(&self) -> paths::Paths {
        let mut p = paths::Paths::for_instance(&self.instance);
        if let Some(s) = &self.socket {
            p.socket = s.clone();
        }
        p
    }
}

/// Runs the parsed command; returns the process exit code.
pub fn execute(cli: Cli) -> u8 {
    if !paths::valid_instance(&cli.instance) {
        eprintln!(
            "error: instance name {:?} is not valid: use letters, digits, '-' or '_'",
            cli.instance
        );
        return 2;
    }
    match &cli.command {
        Command::Agent(a) => agent::execute(&cli, a),
        Command::Status(a) => status::execute(&cli, a),
        Command::Graph(a) => graph::execute(&cli, a),
        Command::Flows(a) => flows::execute(&cli, a),
        Command::Policy(c) => policy::execute(&cli, c),
        Command::Cleanup(a) => cleanup::execute(&cli, a),
        Command::Alerts(a) => alerts::execute(&cli, a),
        Command::Baseline(c) => baseline::execute(&cli, c),
    }
}

/// A current-thread runtime for the short client commands.
pub fn block_on<F: std::future::Future>(f: F) -> std::io::Result<F::Output> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(f))
}

/// Maps a client error to a message and exit code.
pub fn client_failure(e: &crate::api::client::ClientError) -> u8 {
    eprintln!("error: {e}");
    match e {
        crate::api::client::ClientError::NotRunning { .. } => EXIT_AGENT_DOWN,
        crate::api::client::ClientError::Refused(_) => EXIT_REJECTED,
        _ => 1,
    }
}
