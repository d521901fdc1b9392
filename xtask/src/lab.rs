//! `cargo xtask lab up|down|status FILE`: a persistent lab made from a spec file (for the demo
//! and for trying the agent by hand), kept until `down`. Its state and inventory live in
//! `/run/enforcer-lab/enf-<name>/`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use enforcer_tests::lab::namespaces_for;
use enforcer_tests::{Lab, LabSpec, LabState, NodeKind};

/// Options of `cargo xtask lab`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Create the lab (if it is not up already), write its inventory and show how to run the
    /// agent in it.
    Up {
        /// Lab spec, e.g. deploy/lab/demo.yaml.
        file: PathBuf,
        /// Policy file to put in the suggested agent command line.
        #[arg(long)]
        policy: Option<PathBuf>,
    },
    /// Remove the lab: its namespaces (and everything in them) and its state. Idempotent.
    Down {
        /// The lab spec it was made from.
        file: PathBuf,
    },
    /// Show the lab's namespaces, interfaces and addresses.
    Status {
        /// The lab spec it was made from.
        file: PathBuf,
    },
}

/// Runs `cargo xtask lab …`.
pub fn execute(args: &Args) -> anyhow::Result<ExitCode> {
    match &args.action {
        Action::Up { file, policy } => up(file, policy.as_deref()),
        Action::Down { file } => down(file),
        Action::Status { file } => status(file),
    }
}

/// `enf-<name>`: persistent labs are told apart from test labs (`enf<pid><n>`) by the dash.
fn prefix_of(spec: &LabSpec) -> String {
    format!("{}-{}", enforcer_tests::lab::PREFIX_START, spec.name)
}

fn load(file: &Path) -> anyhow::Result<LabSpec> {
    Ok(LabSpec::load(file)?)
}

fn require_root(action: &str) -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("`cargo xtask lab {action}` creates and deletes network namespaces: run it as root");
    }
    Ok(())
}

fn up(file: &Path, policy: Option<&Path>) -> anyhow::Result<ExitCode> {
    require_root("up")?;
    let spec = load(file)?;
    let prefix = prefix_of(&spec);
    let lab = match Lab::status_named(&prefix)? {
        Some(status) if status.complete() => {
            println!("lab {} is already up", spec.name);
            Lab::open_named(&spec, &prefix).with_context(|| {
                format!(
                    "lab {} is up but does not match {}: run `cargo xtask lab down {}` first",
                    spec.name,
                    file.display(),
                    file.display()
                )
            })?
        }
        Some(_) => {
            println!("lab {} is partly there: recreating it", spec.name);
            Lab::down_named(&prefix)?;
            Lab::up_named(&spec, &prefix)?
        }
        None => Lab::up_named(&spec, &prefix).with_context(|| {
            format!("cannot bring up lab {} from {}", spec.name, file.display())
        })?,
    };
    let inventory = LabState::dir(&prefix).join("inventory.yaml");
    lab.write_inventory(&inventory)?;
    print!("{}", describe(&lab, &inventory, policy, file));
    Ok(ExitCode::SUCCESS)
}

/// What `up` made and how to use it.
fn describe(lab: &Lab, inventory: &Path, policy: Option<&Path>, file: &Path) -> String {
    let spec = lab.spec();
    let mut out = String::new();
    let _ = writeln!(out, "lab {} (prefix {}):", spec.name, lab.prefix());
    let _ = writeln!(
        out,
        "  {:<9} {:<22} {:<16} {:<22} br0",
        "host",
        lab.host_netns(),
        format!("{}/{}", lab.host_addr4(), spec.subnet4.prefix_len()),
        format!("{}/{}", lab.host_addr6(), spec.subnet6.prefix_len()),
    );
    for node in lab.nodes() {
        let extra = match node.kind {
            NodeKind::Workload => spec
                .workload(&node.name)
                .map(|w| {
                    let ports: Vec<String> = w
                        .ports
                        .iter()
                        .map(|p| format!("{}/{}", p.protocol, p.port))
                        .collect();
                    if ports.is_empty() {
                        String::new()
                    } else {
                        format!("  serves {}", ports.join(" "))
                    }
                })
                .unwrap_or_default(),
            NodeKind::External => "  (external, routed)".to_owned(),
        };
        let _ = writeln!(
            out,
            "  {:<9} {:<22} {:<16} {:<22} {}{extra}",
            node.name,
            node.netns,
            node.addr4.addr().to_string(),
            node.addr6.addr().to_string(),
            node.host_iface,
        );
    }
    let policy = policy.map_or_else(|| "POLICY.yaml".to_owned(), |p| p.display().to_string());
    // From the last workload (a client, in the demo) to the first.
    let client = lab
        .nodes()
        .iter()
        .rfind(|n| n.kind == NodeKind::Workload)
        .map(|n| n.netns.clone());
    let target = lab.nodes().iter().find(|n| n.kind == NodeKind::Workload);
    let _ = writeln!(out, "inventory: {}", inventory.display());
    let _ = writeln!(out, "run the agent in it:");
    let _ = writeln!(
        out,
        "  enforcer agent --netns {} --inventory {} --policy {policy}",
        lab.host_netns(),
        inventory.display()
    );
    if let (Some(client), Some(target)) = (client, target) {
        let _ = writeln!(out, "send traffic:");
        let _ = writeln!(
            out,
            "  ip netns exec {client} ping -c1 {}",
            target.addr4.addr()
        );
    }
    let _ = writeln!(out, "remove it: cargo xtask lab down {}", file.display());
    out
}

fn down(file: &Path) -> anyhow::Result<ExitCode> {
    require_root("down")?;
    let spec = load(file)?;
    let prefix = prefix_of(&spec);
    if Lab::down_named(&prefix)? {
        println!("lab {} removed", spec.name);
        return Ok(ExitCode::SUCCESS);
    }
    // No state (a lost /run/enforcer-lab, say): remove namespaces by their spec-given names.
    let mut removed = 0;
    for ns in namespaces_for(&spec, &prefix) {
        if enforcer_tests::netns_exists(&ns) {
            enforcer_tests::lab::netns::del_netns(&ns)?;
            removed += 1;
        }
    }
    if removed > 0 {
        println!(
            "lab {} removed ({removed} namespaces without state)",
            spec.name
        );
    } else {
        println!("lab {} is not up", spec.name);
    }
    Ok(ExitCode::SUCCESS)
}

fn status(file: &Path) -> anyhow::Result<ExitCode> {
    let spec = load(file)?;
    let prefix = prefix_of(&spec);
    match Lab::status_named(&prefix)? {
        Some(status) => {
            print!("{status}");
            let inventory = LabState::dir(&prefix).join("inventory.yaml");
            if inventory.exists() {
                println!("inventory: {}", inventory.display());
            }
            Ok(if status.complete() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        None => {
            println!("lab {} is not up", spec.name);
            Ok(ExitCode::FAILURE)
        }
    }
}
