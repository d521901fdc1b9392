//! `enforcer-bench`: the privileged half of `cargo xtask bench` (issue #6, results in
//! docs/benchmarks.md). It uses the `enforcer` library (xtask must not), so it lives
//! here; xtask builds it and runs `enforcer-bench run`.
//!
//! Sections, in order: the classifier's cost per packet (`BPF_PROG_TEST_RUN`), the
//! datapath side by side with nftables and iptables, monitoring on vs off, and the
//! real agent under load. Everything it makes (labs of network namespaces, rules in
//! them, pin directories, the agent) is removed by guards, also on error and on
//! SIGINT/SIGTERM, which only set a flag the run checks.

mod agent;
mod datapath;
mod filters;
mod inputs;
mod report;
mod testrun;
mod traffic;
mod util;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
    time::Instant,
};

use clap::{Parser, Subcommand, ValueEnum};

use crate::{
    report::{Meta, Results},
    util::{Ctx as _, DirGuard, Result, err, say},
};

#[derive(Parser)]
#[command(name = "enforcer-bench")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Measure, write OUT/results.json and OUT/report.md, print the report.
    Run(RunArgs),
    /// Render OUT/report.md again from a results.json.
    Report { results: PathBuf },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Section {
    Testrun,
    Datapath,
    Monitoring,
    Agent,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Fewer configurations, one pair each, one-second samples: a smoke check.
    #[arg(long)]
    quick: bool,
    /// Interleaved A/B pairs per configuration [default: 4, quick 1].
    #[arg(long)]
    pairs: Option<usize>,
    /// Seconds per UDP and TCP sample [default: 3, quick 1].
    #[arg(long)]
    secs: Option<f64>,
    /// Output directory.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// The `enforcer` binary the agent section runs (a release build).
    #[arg(long, default_value = "target/release/enforcer")]
    enforcer: PathBuf,
    /// Criterion's output directory, to put its medians in the report.
    #[arg(long)]
    criterion_dir: Option<PathBuf>,
    /// JSON written by `cargo bench -p enforcer --bench memory`.
    #[arg(long)]
    memory_json: Option<PathBuf>,
    /// Only these sections (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Section>,
    /// The command line to name in the report.
    #[arg(long, default_value = "cargo xtask bench")]
    command: String,
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Cmd::Run(a) => match run(&a) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("enforcer-bench: {e}");
                ExitCode::FAILURE
            }
        },
        Cmd::Report { results } => match rerender(&results) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("enforcer-bench: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

fn rerender(path: &Path) -> Result<()> {
    let r: Results =
        serde_json::from_slice(&std::fs::read(path).ctx(path.display())?).ctx("results JSON")?;
    let md = report::render(&r);
    let out = path.with_file_name("report.md");
    std::fs::write(&out, &md).ctx(out.display())?;
    println!("{md}");
    Ok(())
}

fn preflight() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(err(
            "the benchmarks make network namespaces and load eBPF programs: run as root",
        ));
    }
    let missing: Vec<&str> = [
        "trafgen",
        "iperf3",
        "nft",
        "iptables-legacy-restore",
        "iptables-nft-restore",
        "timeout",
        "ip",
    ]
    .into_iter()
    .filter(|t| {
        !std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(t).is_file()))
    })
    .collect();
    if !missing.is_empty() {
        return Err(err(format!(
            "missing tools: {} (Debian: netsniff-ng for trafgen, iperf3, nftables, iptables; `cargo xtask setup` installs them)",
            missing.join(", ")
        )));
    }
    Ok(())
}

fn run(a: &RunArgs) -> Result<bool> {
    preflight()?;
    util::install_signal_handlers();
    filters::remove_stale_pins();
    let started = Instant::now();
    std::fs::create_dir_all(&a.out).ctx(a.out.display())?;
    let scratch = a.out.join(format!("scratch-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).ctx(scratch.display())?;
    let _scratch = DirGuard(scratch.clone());
    let all = a.only.is_empty();
    let wants = |s| all || a.only.contains(&s);

    let secs = a.secs.unwrap_or(if a.quick { 1.0 } else { 3.0 });
    let params = datapath::Params {
        pairs: a.pairs.unwrap_or(if a.quick { 1 } else { 4 }),
        udp_secs: secs,
        tcp_secs: secs,
        tcp_streams: 4,
        conn_secs: if a.quick { 1.0 } else { 2.0 },
        conn_threads: 2,
    };
    let mut r = Results {
        meta: Meta {
            date: now_utc(),
            command: a.command.clone(),
            kernel: nix::sys::utsname::uname()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default(),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model: cpu_model(),
            load_start: util::loadavg(),
            quick: a.quick,
            ..Default::default()
        },
        params: Some(params),
        ..Default::default()
    };
    say(format!(
        "start: load {:?}, {} pairs, {} s samples{}",
        r.meta.load_start,
        params.pairs,
        secs,
        if a.quick { " (quick)" } else { "" }
    ));

    let outcome = (|| -> Result<()> {
        if wants(Section::Testrun) {
            let (repeat, runs) = if a.quick { (20_000, 3) } else { (200_000, 7) };
            match testrun::run(repeat, runs) {
                Ok(rows) => r.testrun = rows,
                Err(e) => section_error(&mut r, "test run", e)?,
            }
        }
        if wants(Section::Datapath) {
            match datapath::run_datapath(&params, a.quick, &scratch) {
                Ok(c) => {
                    for x in c
                        .iter()
                        .filter_map(|c| c.error.as_ref().map(|e| (&c.name, e)))
                    {
                        r.errors.push(format!("datapath {}: {}", x.0, x.1));
                    }
                    r.datapath = c;
                }
                Err(e) => section_error(&mut r, "datapath", e)?,
            }
        }
        if wants(Section::Monitoring) {
            match datapath::run_monitoring(&params, &scratch) {
                Ok(c) => {
                    for x in c
                        .iter()
                        .filter_map(|c| c.error.as_ref().map(|e| (&c.name, e)))
                    {
                        r.errors.push(format!("monitoring {}: {}", x.0, x.1));
                    }
                    r.monitoring = c;
                }
                Err(e) => section_error(&mut r, "monitoring", e)?,
            }
        }
        if wants(Section::Agent) {
            let p = agent::Params {
                edges: 10_000,
                window_secs: if a.quick { 3.0 } else { 10.0 },
                flood_pps: 100_000,
                sweep_pps: 20_000,
                rules: 100_000,
            };
            match agent::run(&a.enforcer, &p, &scratch) {
                Ok(x) => {
                    if x.apply.is_none() {
                        r.errors.push("agent: the 100k-rule apply failed".into());
                    }
                    r.agent = Some(x);
                }
                Err(e) => section_error(&mut r, "agent", e)?,
            }
        }
        Ok(())
    })();
    if let Err(e) = outcome {
        r.errors.push(format!("stopped: {e}"));
    }

    if let Some(dir) = &a.criterion_dir {
        r.criterion = report::read_criterion(dir);
    }
    if let Some(p) = &a.memory_json {
        r.memory = std::fs::read(p)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
    }
    r.meta.load_end = util::loadavg();
    r.meta.duration_secs = started.elapsed().as_secs_f64();

    let json = serde_json::to_string_pretty(&r).ctx("results to JSON")?;
    let results = a.out.join("results.json");
    std::fs::write(&results, json).ctx(results.display())?;
    let md = report::render(&r);
    let report_path = a.out.join("report.md");
    std::fs::write(&report_path, &md).ctx(report_path.display())?;
    println!("{md}");
    say(format!(
        "wrote {} and {}",
        results.display(),
        report_path.display()
    ));
    Ok(r.errors.is_empty())
}

/// Records a failed section and goes on, unless the run was interrupted.
fn section_error(r: &mut Results, what: &str, e: util::Error) -> Result<()> {
    util::check_interrupt()?;
    say(format!("{what}: FAILED: {e}"));
    r.errors.push(format!("{what}: {e}"));
    Ok(())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".into())
}

fn now_utc() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let (h, m) = ((secs % 86_400) / 3600, (secs % 3600) / 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{m:02} UTC")
}
