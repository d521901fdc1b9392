//! `cargo xtask test`: every check CI runs, in order: format, lints (userspace and
//! the eBPF crate with its own toolchain), unprivileged unit tests, the Prometheus
//! rule tests, the dashboard type check, a short run of every fuzz target, then the
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
    name: String,
    cmd: Command,
}

/// Seconds each fuzz target runs in `cargo xtask test`.
const FUZZ_SECS: u32 = 20;

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
            name: "cargo fmt --check".into(),
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
            name: "clippy (userspace)".into(),
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
            name: "clippy (eBPF)".into(),
            cmd: c,
        });
    }
    let mut c = Command::new("kubernetes-validate");
    c.args(["--strict", "--quiet"]);
    for m in ["daemonset.yaml", "configmap.yaml", "rbac.yaml"] {
        c.arg(root.join("deploy/kubernetes").join(m));
    }
    steps.push(Step {
        name: "kubernetes-validate deploy/kubernetes".into(),
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
        name: "unit tests".into(),
        cmd: c,
    });
    // Prometheus rules: syntax, then the unit tests of every alert (dashboards/rules/tests).
    let rules = root.join("dashboards/rules");
    let mut c = Command::new("promtool");
    c.args(["check", "rules"])
        .arg(rules.join("enforcer.rules.yaml"));
    steps.push(Step {
        name: "promtool check rules".into(),
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
        name: "promtool test rules".into(),
        cmd: c,
    });
    // Grafana dashboards against @grafana/schema (`cargo xtask setup` installs it).
    let mut c = Command::new("npm");
    c.args(["--prefix", "dashboards/check", "run", "check"]);
    steps.push(Step {
        name: "dashboards type-check (@grafana/schema)".into(),
        cmd: c,
    });
    // Every fuzz target (fuzz/fuzz_targets) builds and runs a short while on the eBPF
    // nightly with sanitizers: a parser panic found here fails CI, and the targets
    // cannot rot. Long runs are for `cargo fuzz run` by hand (fuzz/Cargo.toml).
    let mut targets: Vec<String> = std::fs::read_dir(root.join("fuzz/fuzz_targets"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.strip_suffix(".rs").map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default();
    targets.sort();
    if targets.is_empty() {
        bail!(
            "no fuzz targets in {}",
            root.join("fuzz/fuzz_targets").display()
        );
    }
    for t in targets {
        let mut c = Command::new("rustup");
        c.env_remove("RUSTUP_TOOLCHAIN");
        c.args(["run", EBPF_NIGHTLY, "cargo", "fuzz", "run", "-O", &t, "--"])
            .arg(format!("-max_total_time={FUZZ_SECS}"));
        steps.push(Step {
            name: format!("fuzz {t} ({FUZZ_SECS} s)"),
            cmd: c,
        });
    }
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
            name: "end-to-end tests (root)".into(),
            cmd: c,
        });
    }

    let bpffs = (!args.unprivileged).then(crate::bpffs::BpffsGuard::new);
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
    drop(bpffs);
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
