//! `cargo xtask bench`: the benchmarks of issue #6, documented with their results in
//! docs/benchmarks.md. Needs root (labs of network namespaces, eBPF) and trafgen,
//! iperf3, nft and iptables (`cargo xtask setup` installs them).
//!
//! 1. Builds the release `enforcer` and the bench helper `enforcer-bench` (in the
//!    tests crate: it uses the `enforcer` library, which xtask must not, since xtask
//!    builds with the machine's older rustc).
//! 2. Runs the agent micro-benchmarks: `cargo bench -p enforcer --bench agent`
//!    (criterion: flow ingestion, policy parse and compile) and `--bench memory`
//!    (bytes per tracked flow and graph edge).
//! 3. Runs `enforcer-bench run`: per-packet program cost (BPF_PROG_TEST_RUN), the
//!    datapath side by side with nftables and iptables, monitoring on vs off, and
//!    the real agent under load. It writes `results.json` and `report.md` (the
//!    tables of docs/benchmarks.md) to the output directory and prints the report.
//!
//! Not part of `cargo xtask test`: benchmarks are not tests. `--quick` is a smoke run.
use std::{
    path::{Path, PathBuf},
    process::{Command, ExitCode},
};

use anyhow::{Context as _, bail};

use crate::{setup::workspace_root, test::cargo};

/// Options of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Smoke run: fewer configurations, one pair each, one-second samples, short
    /// criterion runs (a few minutes in all). Not for quoting.
    #[arg(long)]
    quick: bool,
    /// Interleaved A/B pairs per datapath configuration [default: 4; quick: 1].
    #[arg(long)]
    pairs: Option<usize>,
    /// Seconds per UDP and TCP sample [default: 3; quick: 1].
    #[arg(long)]
    secs: Option<f64>,
    /// Only these sections of the privileged run: testrun, datapath, monitoring,
    /// agent (comma-separated; default all).
    #[arg(long)]
    only: Option<String>,
    /// Skip the criterion and memory benchmarks (`cargo bench -p enforcer`).
    #[arg(long)]
    no_criterion: bool,
    /// Output directory [default: <target>/bench].
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn execute(args: &Args) -> anyhow::Result<ExitCode> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the benchmarks make network namespaces and load eBPF programs: run as root");
    }
    let root = workspace_root();
    let target = target_dir(&root);
    let out = args.out.clone().unwrap_or_else(|| target.join("bench"));
    let out = if out.is_absolute() {
        out
    } else {
        root.join(out)
    };
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;

    step("building enforcer and enforcer-bench (release)");
    let st = cargo()
        .args([
            "build",
            "--release",
            "-p",
            "enforcer",
            "-p",
            "enforcer-tests",
        ])
        .args(["--bin", "enforcer", "--bin", "enforcer-bench"])
        .current_dir(&root)
        .status()
        .context("running cargo build")?;
    if !st.success() {
        bail!("cargo build failed");
    }

    let criterion_dir = out.join("criterion");
    let memory_json = out.join("memory.json");
    if !args.no_criterion {
        step("agent micro-benchmarks (cargo bench -p enforcer --bench agent --bench memory)");
        let _ = std::fs::remove_file(&memory_json);
        let mut c = cargo();
        c.args([
            "bench", "-p", "enforcer", "--bench", "agent", "--bench", "memory",
        ])
        .args(["--", "--noplot"])
        .env("CRITERION_HOME", &criterion_dir)
        .env("ENFORCER_BENCH_MEMORY_OUT", &memory_json)
        .current_dir(&root);
        if args.quick {
            c.args(["--warm-up-time", "0.5", "--measurement-time", "1"]);
        }
        let st = c.status().context("running cargo bench")?;
        if !st.success() {
            bail!("cargo bench -p enforcer failed");
        }
    }

    step("datapath, monitoring and agent measurements (enforcer-bench run)");
    let mut command = String::from("cargo xtask bench");
    if args.quick {
        command.push_str(" --quick");
    }
    let mut c = Command::new(target.join("release/enforcer-bench"));
    c.arg("run")
        .arg("--out")
        .arg(&out)
        .arg("--enforcer")
        .arg(target.join("release/enforcer"))
        .current_dir(&root);
    if args.quick {
        c.arg("--quick");
    }
    if let Some(p) = args.pairs {
        c.args(["--pairs", &p.to_string()]);
        command.push_str(&format!(" --pairs {p}"));
    }
    if let Some(s) = args.secs {
        c.args(["--secs", &s.to_string()]);
        command.push_str(&format!(" --secs {s}"));
    }
    if let Some(o) = &args.only {
        c.args(["--only", o]);
        command.push_str(&format!(" --only {o}"));
    }
    if !args.no_criterion {
        c.arg("--criterion-dir").arg(&criterion_dir);
        c.arg("--memory-json").arg(&memory_json);
    }
    c.args(["--command", &command]);
    let st = c.status().context("running enforcer-bench")?;
    println!(
        "\nresults: {} and {}",
        out.join("results.json").display(),
        out.join("report.md").display()
    );
    Ok(if st.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        Some(p) if p.is_absolute() => p,
        Some(p) => root.join(p),
        None => root.join("target"),
    }
}

fn step(what: &str) {
    println!("\n==> {what}");
}
