//! `cargo xtask test`: every check CI runs, in order: format, lints (userspace and
//! the eBPF crate with its own toolchain), unprivileged unit tests, the Prometheus
//! rule tests and the dashboard type check, then the
//! privileged end-to-end tests (root; each in its own lab of network namespaces).
//! All steps run even after a failure; the summary says which failed.
use std::{
    process::{Command, ExitCode},
    time::Instant,
};

use anyhow::bail;

use crate::setup::{EBPF_NIGHTLY, workspace_root};

/// Options of `cargo xtask test`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only the unprivileged steps (format, lints, unit tests): no root needed.
    #[arg(long)]
    unprivileged: bool,
    /// Skip format and lint checks.
    #[arg(long)]
    no_lint: bool,
    /// Test-name filter passed to the end-to-end tests.
    filter: Option<String>,
}

struct Step {
    name: &'static str,
    cmd: Command,
}

pub fn cargo() -> Command {
    // The rustup proxy without the toolchain the proxy that started us pinned, so
    // the directory override set by `setup` picks the toolchain.
    let mut c = Command::new("cargo");
    c.env_remove("RUSTUP_TOOLCHAIN");
    c
}

pub fn execute(args: &Args) -> anyhow::Result<ExitCode> {
    let root = workspace_root();
    let mut steps = Vec::new();
    if !args.no_lint {
        let mut c = cargo();
        c.args(["fmt", "--all", "--check"]);
        steps.push(Step {
            name: "cargo fmt --check",
            cmd: c,
        });
        let mut c = cargo();
        c.args([
            "clippy",
            "--workspace",
            "--exclude",
            "enforcer-ebpf",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]);
        steps.push(Step {
            name: "clippy (userspace)",
            cmd: c,
        });
        let mut c = Command::new("rustup");
        c.env_remove("RUSTUP_TOOLCHAIN");
        c.args([
            "run",
            EBPF_NIGHTLY,
            "cargo",
            "clippy",
            "-p",
            "enforcer-ebpf",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--",
            "-D",
            "warnings",
        ]);
        steps.push(Step {
            name: "clippy (eBPF)",
            cmd: c,
        });
    }
    let mut c = Command::new("kubernetes-validate");
    c.args(["--strict", "--quiet"]);
    for m in ["daemonset.yaml", "configmap.yaml", "rbac.yaml"] {
        c.arg(root.join("deploy/kubernetes").join(m));
    }
    steps.push(Step {
        name: "kubernetes-validate deploy/kubernetes",
        cmd: c,
    });
    let mut c = cargo();
    c.args([
        "test",
        "--workspace",
        "--exclude",
        "enforcer-ebpf",
        "--exclude",
        "enforcer-tests",
    ]);
    steps.push(Step {
        name: "unit tests",
        cmd: c,
    });
    // Prometheus rules: syntax, then the unit tests of every alert (dashboards/rules/tests).
    let rules = root.join("dashboards/rules");
    let mut c = Command::new("promtool");
    c.args(["check", "rules"])
        .arg(rules.join("enforcer.rules.yaml"));
    steps.push(Step {
        name: "promtool check rules",
        cmd: c,
    });
    let mut rule_tests: Vec<_> = std::fs::read_dir(rules.join("tests"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    rule_tests.retain(|p| p.extension().is_some_and(|x| x == "yaml"));
    rule_tests.sort();
    if rule_tests.is_empty() {
        bail!(
            "no promtool rule tests in {}",
            rules.join("tests").display()
        );
    }
    let mut c = Command::new("promtool");
    c.args(["test", "rules"]).args(&rule_tests);
    steps.push(Step {
        name: "promtool test rules",
        cmd: c,
    });
    // Grafana dashboards against @grafana/schema (`cargo xtask setup` installs it).
    let mut c = Command::new("npm");
    c.args(["--prefix", "dashboards/check", "run", "check"]);
    steps.push(Step {
        name: "dashboards type-check (@grafana/schema)",
        cmd: c,
    });
    if !args.unprivileged {
        if !nix::unistd::geteuid().is_root() {
            bail!(
                "the end-to-end tests create network namespaces and load eBPF programs: run as \
                 root, or pass --unprivileged"
            );
        }
        let mut c = cargo();
        c.args(["test", "-p", "enforcer-tests", "--"]);
        if let Some(f) = &args.filter {
            c.arg(f);
        }
        // Labs are isolated, but timing-based "no answer" probes are steadier
        // without a second test competing for the two cores.
        c.arg("--test-threads=1");
        steps.push(Step {
            name: "end-to-end tests (root)",
            cmd: c,
        });
    }

    let mut results = Vec::new();
    for mut s in steps {
        println!("\n==> {}", s.name);
        let start = Instant::now();
        let ok = s
            .cmd
            .current_dir(&root)
            .status()
            .map(|st| st.success())
            .unwrap_or_else(|e| {
                eprintln!("cannot run {}: {e}", s.name);
                false
            });
        results.push((s.name, ok, start.elapsed().as_secs_f64()));
    }
    println!("\nsummary:");
    for (name, ok, secs) in &results {
        println!(
            "  {:<4} {name} ({secs:.0} s)",
            if *ok { "ok" } else { "FAIL" }
        );
    }
    let failed = results.iter().filter(|(_, ok, _)| !ok).count();
    println!("steps: {} passed, {failed} failed", results.len() - failed);
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
