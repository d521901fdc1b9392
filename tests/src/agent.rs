//! A real `enforcer agent` process inside a lab's host namespace, for end-to-end
//! tests: unique instance (socket and pin directory), started with the lab's
//! inventory and a policy, queried through the real CLI, and cleaned up on drop
//! (agent stopped, pins removed so nothing stays attached).
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use enforcer::status::Status;

/// A running agent. Panics (with the agent's log) on anything unexpected: tests
/// want loud failures.
pub struct Agent {
    bin: PathBuf,
    pub instance: String,
    pub dir: tempfile::TempDir,
    pub policy: PathBuf,
    pub inventory: PathBuf,
    netns: String,
    child: Option<Child>,
    log: PathBuf,
    poll_ms: u64,
    extra: Vec<String>,
}

impl Agent {
    /// Starts an agent in `netns` with the inventory and policy texts, and waits
    /// until it answers `status` with every workload attached.
    pub fn start(bin: &Path, netns: &str, inventory_yaml: &str, policy_yaml: &str) -> Self {
        Self::start_with(bin, netns, inventory_yaml, policy_yaml, 200)
    }

    /// As [`Agent::start`], with extra `enforcer agent` arguments.
    pub fn start_with_args(
        bin: &Path,
        netns: &str,
        inventory_yaml: &str,
        policy_yaml: &str,
        extra: &[&str],
    ) -> Self {
        Self::start_full(bin, netns, inventory_yaml, policy_yaml, 200, extra)
    }

    /// As [`Agent::start`], with the agent's file poll interval in milliseconds.
    pub fn start_with(
        bin: &Path,
        netns: &str,
        inventory_yaml: &str,
        policy_yaml: &str,
        poll_ms: u64,
    ) -> Self {
        Self::start_full(bin, netns, inventory_yaml, policy_yaml, poll_ms, &[])
    }

    fn start_full(
        bin: &Path,
        netns: &str,
        inventory_yaml: &str,
        policy_yaml: &str,
        poll_ms: u64,
        extra: &[&str],
    ) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let instance = format!(
            "t{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let policy = dir.path().join("policy.yaml");
        std::fs::write(&policy, policy_yaml).expect("write policy");
        let inv = dir.path().join("inventory.yaml");
        std::fs::write(&inv, inventory_yaml).expect("write inventory");
        let log = dir.path().join("agent.log");
        let mut a = Self {
            bin: bin.into(),
            instance,
            policy,
            inventory: inv,
            netns: netns.into(),
            child: None,
            log,
            dir,
            poll_ms,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        a.spawn();
        a
    }

    /// Starts (again) the agent process with the same instance and files.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "agent already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("agent log");
        let child = Command::new(&self.bin)
            .args(["--instance", &self.instance, "--log-format", "json"])
            .args(["agent", "--netns", &self.netns])
            .arg("--inventory")
            .arg(&self.inventory)
            .arg("--policy")
            .arg(&self.policy)
            .args(["--poll-interval-ms", &self.poll_ms.to_string()])
            .args(&self.extra)
            .args(self.isolation_args())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn enforcer agent");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.try_status()
                && st.workloads.iter().all(|w| w.attached.len() == 2)
            {
                return;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(code)) = c.try_wait()
            {
                panic!(
                    "agent exited with {code} while starting:\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "agent not ready after 30 s:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Keeps the agent's baseline file inside this test's directory (not in
    /// /var/lib/enforcer), unless the test chose it itself. (The metrics listener
    /// needs nothing: the agent listens inside the lab's host namespace.)
    fn isolation_args(&self) -> Vec<String> {
        let given = |flag: &str| self.extra.iter().any(|a| a.starts_with(flag));
        let mut args = Vec::new();
        if !given("--baseline-file") && !given("--no-baseline") {
            args.push("--baseline-file".to_owned());
            args.push(self.dir.path().join("baseline.json").display().to_string());
        }
        args
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs `enforcer --instance I ARGS...` and returns its output.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .args(["--instance", &self.instance])
            .args(args)
            .output()
            .expect("run enforcer CLI")
    }

    /// `enforcer alerts --output json` (the last 1000), parsed.
    pub fn alerts(&self) -> Vec<enforcer::baseline::Alert> {
        let out = self.cli(&["alerts", "--output", "json", "--limit", "1000"]);
        assert!(
            out.status.success(),
            "enforcer alerts: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("alert JSON line"))
            .collect()
    }

    /// `enforcer baseline status --output json`, parsed.
    pub fn baseline_status(&self) -> enforcer::baseline::monitor::BaselineStatus {
        let out = self.cli(&["baseline", "status", "--output", "json"]);
        assert!(
            out.status.success(),
            "enforcer baseline status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("baseline status JSON")
    }

    pub fn try_status(&self) -> Option<Status> {
        let out = self.cli(&["status", "--output", "json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    pub fn status(&self) -> Status {
        let out = self.cli(&["status", "--output", "json"]);
        assert!(
            out.status.success(),
            "enforcer status failed: {}\nagent log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }

    /// Dropped packets of `workload` for `reason` (a stable reason name) in `dir`
    /// ("ingress" or "egress").
    pub fn drops(&self, workload: &str, dir: &str, reason: &str) -> u64 {
        let st = self.status();
        let w = st
            .workloads
            .iter()
            .find(|w| w.name == workload)
            .unwrap_or_else(|| panic!("workload {workload} not in status"));
        let d = if dir == "ingress" {
            &w.ingress
        } else {
            &w.egress
        };
        d.by_reason.get(reason).map_or(0, |t| t.packets)
    }

    /// `enforcer policy apply FILE` with new policy text written to a new file.
    pub fn apply(&self, name: &str, policy_yaml: &str) -> Output {
        let p = self.dir.path().join(name);
        std::fs::write(&p, policy_yaml).expect("write policy");
        self.cli(&["policy", "apply", p.to_str().expect("utf-8 path")])
    }

    /// SIGKILL: no chance to clean anything up.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGHUP: reload files.
    pub fn hup(&self) {
        if let Some(c) = &self.child {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGHUP,
            );
        }
    }

    pub fn pin_dir(&self) -> PathBuf {
        PathBuf::from("/sys/fs/bpf/enforcer").join(&self.instance)
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
        let _ = self.cli(&["cleanup"]);
        let _ = enforcer::dataplane::cleanup(&self.pin_dir());
        let _ = std::fs::remove_file(format!("/run/enforcer/{}.sock", self.instance));
        if std::thread::panicking() {
            eprintln!(
                "---- agent log ({}) ----\n{}",
                self.instance,
                self.log_text()
            );
        }
    }
}
