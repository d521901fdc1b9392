//! The real agent under load: `enforcer agent` (the release build) in the lab's
//! host namespace enforcing `a` and `b`, while `a` floods `b` and sweeps UDP over
//! enough ports to make the wanted number of graph edges. Reported: the agent's
//! resident memory and CPU over a window, and then the time to apply a policy of
//! 100k rules (`enforcer policy apply -o json`: wall time at the client, and the
//! kernel part, `ApplyReport.duration_ms`).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use enforcer::{
    inventory::Inventory,
    policy::{self, PolicyFile},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    inputs::{self, EnforcerPolicy},
    traffic::BenchLab,
    util::{Ctx as _, Result, err, say, sleep},
};

#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub edges: usize,
    pub window_secs: f64,
    pub flood_pps: u64,
    pub sweep_pps: u64,
    pub rules: usize,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AgentResult {
    pub edges_wanted: usize,
    pub graph_edges: u64,
    pub flows_tracked: u64,
    pub window_secs: f64,
    /// Agent CPU time over the window / window, in % of one core.
    pub cpu_percent: f64,
    pub rss_kib: u64,
    pub hwm_kib: u64,
    /// Packets/s `b` received during the window (the load).
    pub load_rx_pps: f64,
    pub flood_pps: u64,
    pub sweep_pps: u64,
    pub events_received: u64,
    pub events_lost: u64,
    pub apply: Option<ApplyTiming>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ApplyTiming {
    pub rules: usize,
    pub policy_bytes: usize,
    /// `enforcer policy apply` from start to answer.
    pub wall_ms: f64,
    /// The agent's own measure of the kernel part (`ApplyReport.duration_ms`).
    pub kernel_ms: f64,
    pub policy_entries: u64,
    pub ipcache_entries: u64,
    /// The same file parsed and compiled here, for the breakdown.
    pub parse_ms: f64,
    pub compile_ms: f64,
    pub rss_after_kib: u64,
}

/// A running agent; dropping it stops it and removes its pins and socket.
struct AgentProc {
    bin: PathBuf,
    instance: String,
    child: Option<Child>,
}

impl AgentProc {
    fn cli(&self, args: &[&str]) -> Result<std::process::Output> {
        Command::new(&self.bin)
            .args(["--instance", &self.instance])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .ctx("run the enforcer CLI")
    }

    fn status(&self) -> Option<Value> {
        let out = self.cli(&["status", "--output", "json"]).ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let end = Instant::now() + Duration::from_secs(5);
            while Instant::now() < end {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.cli(&["cleanup"]);
        let _ = enforcer::dataplane::cleanup(&enforcer::paths::pin_root().join(&self.instance));
        let _ = std::fs::remove_file(format!("/run/enforcer/{}.sock", self.instance));
    }
}

pub fn run(bin: &Path, p: &Params, scratch: &Path) -> Result<AgentResult> {
    if !bin.exists() {
        return Err(err(format!("no agent binary at {}", bin.display())));
    }
    let blab = BenchLab::up(scratch).ctx("agent lab")?;
    let inv = scratch.join("agent-inventory.yaml");
    let pol = scratch.join("agent-policy.yaml");
    std::fs::write(&inv, inputs::inventory_yaml()).ctx("write inventory")?;
    std::fs::write(&pol, inputs::policy_yaml(EnforcerPolicy::Agent)).ctx("write policy")?;
    let log = scratch.join("agent.log");
    let logf = std::fs::File::create(&log).ctx("agent log")?;
    let instance = format!("bench-{}-agent", std::process::id());
    let mut agent = AgentProc {
        bin: bin.into(),
        instance: instance.clone(),
        child: None,
    };
    let child = Command::new(bin)
        .args(["--instance", &instance, "--log-format", "json", "agent"])
        .args(["--netns", blab.lab.host_netns()])
        .arg("--inventory")
        .arg(&inv)
        .arg("--policy")
        .arg(&pol)
        .args(["--max-edges", &(p.edges * 2 + 100).to_string()])
        .stdin(Stdio::null())
        .stdout(logf.try_clone().ctx("dup log")?)
        .stderr(logf)
        .spawn()
        .ctx("start enforcer agent")?;
    agent.child = Some(child);
    say(format!(
        "agent: started (pid {}, log {})",
        agent.pid(),
        log.display()
    ));
    wait_ready(&agent, &log)?;

    // Load: a flood on one flow, and a sweep over `edges` UDP ports (one edge each).
    let last_port = inputs::EDGE_PORT0 + (p.edges as u16).saturating_sub(1);
    let flood = blab.flood(scratch, None, Some(p.flood_pps))?;
    let sweep = blab.flood(
        scratch,
        Some((inputs::EDGE_PORT0, last_port)),
        Some(p.sweep_pps),
    )?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut edges = 0;
    while Instant::now() < deadline {
        sleep(Duration::from_secs(1))?;
        edges = agent
            .status()
            .and_then(|s| s["flows"]["graph_edges"].as_u64())
            .unwrap_or(0);
        if edges as usize >= p.edges {
            break;
        }
    }
    say(format!(
        "agent: {edges} graph edges; measuring for {} s",
        p.window_secs
    ));
    let pid = agent.pid();
    let (cpu0, rx0, t0) = (cpu_ticks(pid)?, rx_packets(&blab)?, Instant::now());
    sleep(Duration::from_secs_f64(p.window_secs))?;
    let (cpu1, rx1, dt) = (
        cpu_ticks(pid)?,
        rx_packets(&blab)?,
        t0.elapsed().as_secs_f64(),
    );
    let (rss_kib, hwm_kib) = memory_kib(pid)?;
    let tck = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let mut r = AgentResult {
        edges_wanted: p.edges,
        window_secs: dt,
        cpu_percent: (cpu1 - cpu0) as f64 / tck / dt * 100.0,
        rss_kib,
        hwm_kib,
        load_rx_pps: (rx1 - rx0) as f64 / dt,
        flood_pps: p.flood_pps,
        sweep_pps: p.sweep_pps,
        ..Default::default()
    };
    drop(sweep);
    drop(flood);
    if let Some(s) = agent.status() {
        let f = &s["flows"];
        r.graph_edges = f["graph_edges"].as_u64().unwrap_or(0);
        r.flows_tracked = f["flows_tracked"].as_u64().unwrap_or(0);
        r.events_received = f["events_received"].as_u64().unwrap_or(0);
        r.events_lost = f["events_lost_ringbuf_full"].as_u64().unwrap_or(0)
            + f["events_lost_rate_limited"].as_u64().unwrap_or(0);
    }
    say(format!(
        "agent: RSS {} KiB (peak {} KiB), CPU {:.1}% of a core, {} edges, load {:.0} pps",
        r.rss_kib, r.hwm_kib, r.cpu_percent, r.graph_edges, r.load_rx_pps
    ));

    if p.rules > 0 {
        match apply_many(&agent, p.rules, scratch) {
            Ok(a) => r.apply = Some(a),
            Err(e) => {
                crate::util::check_interrupt()?;
                say(format!("agent: {}-rule apply FAILED: {e}", p.rules));
                let tail: String = std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .lines()
                    .rev()
                    .take(5)
                    .collect::<Vec<_>>()
                    .join("\n");
                say(format!("agent log tail:\n{tail}"));
            }
        }
    }
    drop(agent);
    drop(blab);
    Ok(r)
}

fn wait_ready(agent: &AgentProc, log: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(s) = agent.status() {
            let attached = s["workloads"].as_array().is_some_and(|w| {
                w.len() == 2
                    && w.iter()
                        .all(|x| x["attached"].as_array().is_some_and(|a| a.len() == 2))
            });
            if attached {
                return Ok(());
            }
        }
        sleep(Duration::from_millis(200))?;
    }
    Err(err(format!(
        "agent not ready after 30 s; log:\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    )))
}

fn apply_many(agent: &AgentProc, rules: usize, scratch: &Path) -> Result<ApplyTiming> {
    let yaml = inputs::many_rules_yaml(rules);
    let file = scratch.join(format!("policy-{rules}-rules.yaml"));
    std::fs::write(&file, &yaml).ctx("write the big policy")?;
    // Breakdown, in this process: parse and compile the same file.
    let t = Instant::now();
    let pol = PolicyFile::parse(&yaml, "big").ctx("parse the big policy")?;
    let parse_ms = t.elapsed().as_secs_f64() * 1e3;
    let inv = Inventory::from_str(&inputs::inventory_yaml(), "inv").ctx("inventory")?;
    let t = Instant::now();
    let compiled = policy::compile(&pol, &inv).ctx("compile the big policy")?;
    let compile_ms = t.elapsed().as_secs_f64() * 1e3;
    drop(compiled);

    say(format!(
        "agent: applying a policy of {rules} rules ({} bytes)",
        yaml.len()
    ));
    let path = file.to_str().ctx("UTF-8 path")?;
    let t = Instant::now();
    let out = agent.cli(&["policy", "apply", path, "-o", "json"])?;
    let wall_ms = t.elapsed().as_secs_f64() * 1e3;
    if !out.status.success() {
        return Err(err(format!(
            "policy apply failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let v: Value = serde_json::from_slice(&out.stdout).ctx("apply JSON")?;
    let rep = &v["report"];
    let a = ApplyTiming {
        rules,
        policy_bytes: yaml.len(),
        wall_ms,
        kernel_ms: rep["duration_ms"].as_f64().unwrap_or(f64::NAN),
        policy_entries: rep["policy_entries"].as_u64().unwrap_or(0),
        ipcache_entries: rep["ipcache_entries"].as_u64().unwrap_or(0),
        parse_ms,
        compile_ms,
        rss_after_kib: memory_kib(agent.pid()).map(|m| m.0).unwrap_or(0),
    };
    say(format!(
        "agent: applied in {:.0} ms wall ({:.0} ms kernel; here parse {:.0} ms, compile {:.0} ms)",
        a.wall_ms, a.kernel_ms, a.parse_ms, a.compile_ms
    ));
    Ok(a)
}

/// utime + stime of every thread of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ctx("agent /proc stat")?;
    let after = &stat[stat.rfind(')').ctx("stat format")? + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) are at 11 and 12 after the name.
    let u: u64 = f.get(11).and_then(|x| x.parse().ok()).ctx("utime")?;
    let s: u64 = f.get(12).and_then(|x| x.parse().ok()).ctx("stime")?;
    Ok(u + s)
}

/// (VmRSS, VmHWM) in KiB.
fn memory_kib(pid: u32) -> Result<(u64, u64)> {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).ctx("agent /proc status")?;
    let get = |k: &str| {
        st.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    Ok((get("VmRSS:"), get("VmHWM:")))
}

fn rx_packets(blab: &BenchLab) -> Result<u64> {
    let text = enforcer_tests::in_netns(blab.lab.netns("b"), || {
        std::fs::read_to_string("/proc/thread-self/net/dev")
    })
    .ctx("enter b")?
    .ctx("read /proc/net/dev")?;
    text.lines()
        .find_map(|l| {
            let (name, rest) = l.split_once(':')?;
            (name.trim() == "eth0").then(|| rest.split_whitespace().nth(1)?.parse().ok())?
        })
        .ctx("eth0 in b")
}
