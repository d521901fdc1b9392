//! `cargo xtask demo`: builds the agent, makes the demo lab (deploy/lab/demo.yaml),
//! runs the agent with deploy/lab/demo-policy.yaml, sends real traffic that the
//! policy allows and traffic it blocks (an undeclared port, a peer not allowed, a
//! denied CIDR in both directions), shows `enforcer status`, and tears it all down.
//! Exits non-zero if any verdict differs from what the policy says.
use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use enforcer_tests::{Lab, LabSpec, tcp_connect, tcp_echo};

use crate::{setup::workspace_root, test::cargo};

/// Options of `cargo xtask demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Lab spec.
    #[arg(long, default_value = "deploy/lab/demo.yaml")]
    lab: PathBuf,
    /// Policy the agent enforces.
    #[arg(long, default_value = "deploy/lab/demo-policy.yaml")]
    policy: PathBuf,
    /// Keep the lab and agent running until Enter is pressed (to explore with
    /// `enforcer --instance demo status` or `ip netns exec ...`).
    #[arg(long)]
    pause: bool,
}

const INSTANCE: &str = "demo";

struct AgentProc {
    bin: PathBuf,
    child: Child,
}

impl AgentProc {
    fn cli(&self, args: &[&str]) -> std::io::Result<std::process::Output> {
        Command::new(&self.bin)
            .args(["--instance", INSTANCE])
            .args(args)
            .output()
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The demo leaves nothing behind: unpin programs and maps.
        let _ = self.cli(&["cleanup"]);
    }
}

pub fn execute(args: &Args) -> anyhow::Result<ExitCode> {
    if !nix::unistd::geteuid().is_root() {
        bail!("the demo creates network namespaces and loads eBPF programs: run it as root");
    }
    let _bpffs = crate::bpffs::BpffsGuard::new();
    let root = workspace_root();
    let lab_file = root.join(&args.lab);
    let policy = root.join(&args.policy);

    step("building the agent (cargo build -p enforcer)");
    let st = cargo()
        .args(["build", "-p", "enforcer"])
        .current_dir(&root)
        .status()
        .context("running cargo build")?;
    if !st.success() {
        bail!("cargo build -p enforcer failed");
    }
    let bin = target_dir(&root).join("debug/enforcer");

    step("checking the policy offline (enforcer policy check)");
    let st = Command::new(&bin)
        .args(["policy", "check"])
        .arg(&policy)
        .status()?;
    if !st.success() {
        bail!("the demo policy does not validate");
    }

    step(&format!("making the lab from {}", args.lab.display()));
    let spec = LabSpec::load(&lab_file)?;
    let lab = Lab::up(&spec)?;
    for n in lab.nodes() {
        println!(
            "  {:<8} {:<18} {:<24} netns {}",
            n.name,
            lab.addr4(&n.name),
            lab.addr6(&n.name),
            n.netns
        );
    }
    lab.serve_echo("web", &[80, 8080])?;
    lab.serve_echo("db", &[5432])?;
    lab.serve_echo("outside", &[80])?;

    let work = std::env::temp_dir().join(format!("enforcer-demo-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let inventory = work.join("inventory.yaml");
    lab.write_inventory(&inventory)?;

    step("starting the agent in the lab's host namespace");
    let log_path = work.join("agent.log");
    let log = std::fs::File::create(&log_path)?;
    let child = Command::new(&bin)
        .args(["--instance", INSTANCE, "agent", "--netns", lab.host_netns()])
        .arg("--inventory")
        .arg(&inventory)
        .arg("--policy")
        .arg(&policy)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting enforcer agent")?;
    let agent = AgentProc { bin, child };
    wait_ready(&agent, &log_path)?;
    println!("  agent log: {}", log_path.display());

    step("sending traffic");
    let ok = Duration::from_secs(3);
    let no = Duration::from_millis(700);
    let mut wrong = 0;
    let mut check = |what: &str, expect_allowed: bool, got: bool| {
        let verdict = if got { "allowed" } else { "blocked" };
        let good = got == expect_allowed;
        if !good {
            wrong += 1;
        }
        println!(
            "  {} {what:<58} {verdict}",
            if good { "ok  " } else { "FAIL" }
        );
    };
    for (fam, web, db, outside) in [
        (
            "IPv4",
            ip(&lab, "web", 4),
            ip(&lab, "db", 4),
            ip(&lab, "outside", 4),
        ),
        (
            "IPv6",
            ip(&lab, "web", 6),
            ip(&lab, "db", 6),
            ip(&lab, "outside", 6),
        ),
    ] {
        println!("  {fam}:");
        check(
            "client -> web:80    (declared port)",
            true,
            tcp_echo(&lab, "client", web, 80, ok),
        );
        check(
            "client -> web:8080  (listening, but port not declared)",
            false,
            tcp_connect(&lab, "client", web, 8080, no),
        );
        check(
            "web    -> db:5432   (allowed peer)",
            true,
            tcp_echo(&lab, "web", db, 5432, ok),
        );
        check(
            "client -> db:5432   (peer not allowed)",
            false,
            tcp_connect(&lab, "client", db, 5432, no),
        );
        check(
            "web    -> outside:80 (denied CIDR, outbound)",
            false,
            tcp_connect(&lab, "web", outside, 80, no),
        );
        check(
            "outside -> web:80   (denied CIDR, inbound)",
            false,
            tcp_connect(&lab, "outside", web, 80, no),
        );
    }

    step("enforcer status");
    let out = agent.cli(&["status"])?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));

    // The agent folds the flow map into the graph every second.
    std::thread::sleep(Duration::from_millis(1500));
    step("enforcer graph (the service-communication graph learned from that traffic)");
    let out = agent.cli(&["graph"])?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    step("enforcer flows --verdict dropped (recent denies and what decided them)");
    let out = agent.cli(&["flows", "--verdict", "dropped", "--limit", "8"])?;
    print!("{}", String::from_utf8_lossy(&out.stdout));

    if args.pause {
        println!(
            "\nthe lab and agent keep running; try `target/debug/enforcer --instance {INSTANCE} status`. Press Enter to tear down."
        );
        let mut s = String::new();
        let _ = std::io::stdin().read_line(&mut s);
    }

    step("tearing down (agent stopped, pins removed, lab namespaces deleted)");
    drop(agent);
    lab.down()?;
    let _ = std::fs::remove_dir_all(&work);
    if wrong > 0 {
        println!("demo: {wrong} verdicts differ from the policy");
        return Ok(ExitCode::FAILURE);
    }
    println!("demo: every verdict matched the policy");
    Ok(ExitCode::SUCCESS)
}

fn step(s: &str) {
    println!("\n==> {s}");
}

fn ip(lab: &Lab, name: &str, family: u8) -> IpAddr {
    if family == 4 {
        lab.addr4(name).into()
    } else {
        lab.addr6(name).into()
    }
}

fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

fn wait_ready(agent: &AgentProc, log: &Path) -> anyhow::Result<()> {
    let end = Instant::now() + Duration::from_secs(30);
    while Instant::now() < end {
        if agent.cli(&["status", "--output", "json"])?.status.success() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!(
        "the agent did not come up in 30 s; its log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    )
}
