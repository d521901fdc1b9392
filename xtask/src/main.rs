//! `cargo xtask`: developer tasks for the enforcer workspace. One module per subcommand; this
//! file only parses arguments.

mod bench;
mod bpffs;
mod demo;
mod lab;
mod setup;
mod test;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Developer tasks for the enforcer workspace.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install and check the toolchains, Debian packages and bpf-linker the build and tests
    /// need (idempotent; run it first on a new machine).
    Setup(setup::Args),
    /// Make, remove or show a persistent lab (network namespaces standing in for a host with
    /// workloads) from a spec file such as deploy/lab/demo.yaml.
    Lab(lab::Args),
    /// Run every check CI runs: format, clippy (userspace and eBPF), unit tests and,
    /// as root, the end-to-end tests in their own labs.
    Test(test::Args),
    /// Build, make the demo lab, run the agent with the demo policy, show allowed and
    /// blocked traffic and `enforcer status`, then tear everything down.
    Demo(demo::Args),
    /// Benchmarks (issue #6, docs/benchmarks.md): the datapath side by side with
    /// nftables and iptables, monitoring overhead, the agent; writes a report. Root.
    Bench(bench::Args),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Setup(args) => setup::execute(&args),
        Command::Lab(args) => lab::execute(&args),
        Command::Test(args) => test::execute(&args),
        Command::Demo(args) => demo::execute(&args),
        Command::Bench(args) => bench::execute(&args),
    };
    // The error and its causes on one line, without anyhow's backtrace (RUST_BACKTRACE is
    // often set here, and the trace says nothing an operator can act on).
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::FAILURE
    })
}
