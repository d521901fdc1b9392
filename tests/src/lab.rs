//! The lab: a "host" network namespace holding bridge `br0`, one namespace per workload joined
//! to it by a veth pair (IPv4 and IPv6), and optional outside hosts routed (not bridged)
//! through the host namespace. Built from a [`LabSpec`], torn down on drop.
//!
//! Names, for a lab with prefix `P`: namespaces `P-host`, `P-<workload>`, `P-x-<external>`;
//! in the host namespace the workload's veth end is `lw-<workload>` (`lx-<external>` for
//! externals); inside a workload or external namespace the interface is `eth0`.
//!
//! Everything is made inside namespaces the lab creates, sysctls included: the machine's own
//! interfaces, routes, firewall and sysctls are never touched.

mod build;
pub mod inventory;
pub mod netns;
pub mod process;
pub mod spec;
pub mod state;
pub mod status;
pub mod traffic;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use ipnet::{Ipv4Net, Ipv6Net};

pub use self::build::namespaces_for;
use self::build::{create, plan, unique_prefix};
use self::netns::{NetnsError, del_netns, netns_exists};
pub use self::process::LabChild;
use self::spec::{LabSpec, SpecError};
use self::state::{LabState, Owner, StateError};
use self::status::LabStatus;
use self::traffic::{EchoServers, ServeError};

/// Bridge in the host namespace.
pub const BRIDGE: &str = "br0";
/// Interface name inside workload and external namespaces.
pub const NODE_IFACE: &str = "eth0";
/// Namespace-name prefix of every lab.
pub const PREFIX_START: &str = "enf";

/// What went wrong building, using or removing a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Serve(#[from] ServeError),
    #[error("the lab needs root (to create network namespaces); this process has uid {euid}")]
    NotRoot { euid: u32 },
    #[error("lab `{prefix}`: network namespace `{netns}` already exists (left by another lab?)")]
    Exists { prefix: String, netns: String },
    #[error("lab `{prefix}`: cannot set up {what}")]
    Setup {
        prefix: String,
        what: String,
        #[source]
        source: Box<NetnsError>,
    },
    #[error("cannot write the inventory {}", path.display())]
    Inventory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("lab `{prefix}` is not (fully) up: network namespace `{netns}` is missing")]
    Missing { prefix: String, netns: String },
}

/// Whether a node is a workload (on the bridge) or an external (routed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Workload,
    External,
}

/// A workload or external host as built.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub kind: NodeKind,
    pub netns: String,
    /// The veth end in the host namespace (`lw-…` or `lx-…`).
    pub host_iface: String,
    /// Address (with prefix) of `eth0` in the node's namespace.
    pub addr4: Ipv4Net,
    pub addr6: Ipv6Net,
    /// The host-namespace addresses the node's default routes point at.
    pub gateway4: Ipv4Addr,
    pub gateway6: Ipv6Addr,
}

/// A running lab. Dropping it tears it down, unless it was made with [`Lab::up_named`].
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    spec: LabSpec,
    host_ns: String,
    nodes: Vec<Node>,
    /// Made by `up_named`: kept when this value is dropped.
    persistent: bool,
    torn_down: bool,
    children: Mutex<Vec<LabChild>>,
    servers: Mutex<Vec<EchoServers>>,
}

impl Lab {
    /// Builds a lab with a prefix unique to this process and call (`enf<pid><n>`). It is torn
    /// down when dropped; labs left by a process that died are removed first.
    pub fn up(spec: &LabSpec) -> Result<Self, LabError> {
        require_root()?;
        // Best effort: a lab we cannot clean up is reported by the namespace checks below.
        let _ = Self::cleanup_stale();
        let owner = Owner::current();
        let mut last = None;
        for _ in 0..16 {
            let prefix = unique_prefix();
            match Self::build(spec, &prefix, owner) {
                Err(e @ LabError::Exists { .. }) => last = Some(e),
                other => return other,
            }
        }
        Err(last.unwrap_or(LabError::Exists {
            prefix: String::new(),
            netns: String::new(),
        }))
    }

    /// Parses `yaml` as a [`LabSpec`] and builds it with [`Lab::up`].
    pub fn up_yaml(yaml: &str) -> Result<Self, LabError> {
        Self::up(&LabSpec::from_yaml(yaml)?)
    }

    /// Builds a persistent lab with the given prefix (`cargo xtask lab up` uses `enf-<name>`).
    /// It stays when this value is dropped (echo servers stop, processes it started keep
    /// running); remove it with [`Lab::down`] or [`Lab::down_named`].
    pub fn up_named(spec: &LabSpec, prefix: &str) -> Result<Self, LabError> {
        require_root()?;
        let mut lab = Self::build(spec, prefix, None)?;
        lab.persistent = true;
        Ok(lab)
    }

    /// A handle on a persistent lab that is already up (made by [`Lab::up_named`] in another
    /// process). Fails with [`LabError::Missing`] unless all its namespaces exist.
    pub fn open_named(spec: &LabSpec, prefix: &str) -> Result<Self, LabError> {
        spec.validate()?;
        if let Some(netns) = namespaces_for(spec, prefix)
            .into_iter()
            .find(|n| !netns_exists(n))
        {
            return Err(LabError::Missing {
                prefix: prefix.to_owned(),
                netns,
            });
        }
        let (host_ns, nodes) = plan(spec, prefix);
        Ok(Self {
            prefix: prefix.to_owned(),
            spec: spec.clone(),
            host_ns,
            nodes,
            persistent: true,
            torn_down: false,
            children: Mutex::new(Vec::new()),
            servers: Mutex::new(Vec::new()),
        })
    }

    fn build(spec: &LabSpec, prefix: &str, owner: Option<Owner>) -> Result<Self, LabError> {
        spec.validate()?;
        let (host_ns, nodes) = plan(spec, prefix);
        let namespaces = namespaces_for(spec, prefix);
        if let Some(netns) = namespaces.iter().find(|n| netns_exists(n)) {
            return Err(LabError::Exists {
                prefix: prefix.to_owned(),
                netns: netns.clone(),
            });
        }
        // Recorded before anything exists, so every namespace made is found by cleanup.
        LabState {
            prefix: prefix.to_owned(),
            owner,
            namespaces,
        }
        .write()?;
        let lab = Self {
            prefix: prefix.to_owned(),
            spec: spec.clone(),
            host_ns,
            nodes,
            persistent: false,
            torn_down: false,
            children: Mutex::new(Vec::new()),
            servers: Mutex::new(Vec::new()),
        };
        // On error `lab` is dropped here, which removes whatever was made.
        create(&lab)?;
        Ok(lab)
    }
    /// The lab's prefix (every namespace name starts with `<prefix>-`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The spec the lab was built from.
    pub fn spec(&self) -> &LabSpec {
        &self.spec
    }

    /// The host namespace's name (its handle is `/run/netns/<name>`); the agent runs here.
    pub fn host_netns(&self) -> &str {
        &self.host_ns
    }

    /// Every workload and external, workloads first, in spec order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The workload or external with this name.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.name == name)
    }

    fn expect_node(&self, name: &str) -> &Node {
        match self.node(name) {
            Some(n) => n,
            None => panic!(
                "lab {} has no workload or external `{name}` (it has: {})",
                self.prefix,
                self.nodes
                    .iter()
                    .map(|n| n.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// All namespaces of the lab, host first.
    pub fn namespaces(&self) -> Vec<&str> {
        std::iter::once(self.host_ns.as_str())
            .chain(self.nodes.iter().map(|n| n.netns.as_str()))
            .collect()
    }

    /// The namespace of a workload or external (`host` gives the host namespace).
    ///
    /// # Panics
    /// If the lab has no such node (a mistake in the test).
    pub fn netns(&self, name: &str) -> &str {
        if name == "host" {
            return &self.host_ns;
        }
        &self.expect_node(name).netns
    }

    /// Accepts a namespace name, a workload or external name, or `host`, and gives the
    /// namespace name; anything else is passed through unchanged.
    pub fn resolve_ns<'a>(&'a self, name: &'a str) -> &'a str {
        if name == "host" {
            return &self.host_ns;
        }
        self.node(name).map_or(name, |n| n.netns.as_str())
    }

    /// IPv4 address of a workload or external (`host`: the bridge address).
    ///
    /// # Panics
    /// If the lab has no such node.
    pub fn addr4(&self, name: &str) -> Ipv4Addr {
        if name == "host" {
            return self.host_addr4();
        }
        self.expect_node(name).addr4.addr()
    }

    /// IPv6 address of a workload or external (`host`: the bridge address).
    ///
    /// # Panics
    /// If the lab has no such node.
    pub fn addr6(&self, name: &str) -> Ipv6Addr {
        if name == "host" {
            return self.host_addr6();
        }
        self.expect_node(name).addr6.addr()
    }

    /// Both addresses of a node, IPv4 first: handy for "for every family" loops.
    pub fn addrs(&self, name: &str) -> [IpAddr; 2] {
        [self.addr4(name).into(), self.addr6(name).into()]
    }

    /// The host namespace's address on the bridge.
    pub fn host_addr4(&self) -> Ipv4Addr {
        self.spec.host_addr4()
    }

    /// The host namespace's IPv6 address on the bridge.
    pub fn host_addr6(&self) -> Ipv6Addr {
        self.spec.host_addr6()
    }

    /// The host-side interface of a workload (`lw-<name>`) or external (`lx-<name>`).
    ///
    /// # Panics
    /// If the lab has no such node.
    pub fn workload_iface(&self, name: &str) -> &str {
        &self.expect_node(name).host_iface
    }

    /// The inventory YAML the agent reads for this lab.
    pub fn inventory_yaml(&self) -> String {
        inventory::for_spec(&self.spec)
    }

    /// Writes [`inventory_yaml`](Self::inventory_yaml) to `path`.
    pub fn write_inventory(&self, path: impl AsRef<Path>) -> Result<(), LabError> {
        let path = path.as_ref();
        std::fs::write(path, self.inventory_yaml()).map_err(|source| LabError::Inventory {
            path: path.to_owned(),
            source,
        })
    }

    /// Waits (up to 10 s) for a listening TCP socket on `port` in `ns`, without
    /// connecting to it (a probe connection would be taken for a client by iperf3).
    pub fn wait_listening(&self, ns: &str, port: u16) {
        let end = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let out = self
                .cmd(ns, "ss")
                .args(["-Hltn", &format!("sport = :{port}")])
                .output()
                .expect("ss");
            if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
                return;
            }
            assert!(
                std::time::Instant::now() < end,
                "nothing listens on {port} in {ns}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `ip netns exec NS program` as a `Command` to add arguments to. `ns` may be a node name
    /// or `host` (see [`resolve_ns`](Self::resolve_ns)). Note that `ip netns exec` remounts
    /// `/sys`, so `/sys/fs/bpf` is not visible to the program.
    pub fn cmd(&self, ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.resolve_ns(ns)])
            .arg(program);
        cmd
    }

    /// Starts `args` in `ns` (stdin closed, output inherited); stopped on teardown.
    pub fn spawn(&self, ns: &str, args: &[&str]) -> Result<LabChild, LabError> {
        let Some((program, rest)) = args.split_first() else {
            return Err(LabError::Spawn {
                command: String::new(),
                source: std::io::Error::other("no program given"),
            });
        };
        let mut cmd = self.cmd(ns, program);
        cmd.args(rest).stdin(Stdio::null());
        self.spawn_command(cmd)
    }

    /// Starts a prepared command (from [`cmd`](Self::cmd), say, with its own stdio);
    /// stopped on teardown.
    pub fn spawn_command(&self, mut cmd: Command) -> Result<LabChild, LabError> {
        let command = netns::describe(&cmd);
        let child = cmd.spawn().map_err(|source| LabError::Spawn {
            command: command.clone(),
            source,
        })?;
        let tracked = LabChild::new(child, command);
        lock(&self.children).push(tracked.clone());
        Ok(tracked)
    }

    /// Runs `f` on a thread inside `ns` (a namespace, node name or `host`) and returns its
    /// result; sockets made there belong to that namespace. The mount namespace is kept, so
    /// `/sys/fs/bpf` stays visible.
    ///
    /// # Panics
    /// If the namespace cannot be entered, or if `f` panics.
    pub fn in_netns<R: Send>(&self, ns: &str, f: impl FnOnce() -> R + Send) -> R {
        let ns = self.resolve_ns(ns);
        match netns::in_netns(ns, f) {
            Ok(r) => r,
            Err(e) => panic!(
                "lab {}: {e}: {:?}",
                self.prefix,
                std::error::Error::source(&e)
            ),
        }
    }

    /// Like [`in_netns`](Self::in_netns) but returns an error instead of panicking when the
    /// namespace cannot be entered.
    pub fn try_in_netns<R: Send>(
        &self,
        ns: &str,
        f: impl FnOnce() -> R + Send,
    ) -> Result<R, LabError> {
        Ok(netns::in_netns(self.resolve_ns(ns), f)?)
    }

    /// Starts TCP and UDP echo servers on each port in `ns`, listening on `[::]`
    /// (dual-stack); they stop on teardown.
    pub fn serve_echo(&self, ns: &str, ports: &[u16]) -> Result<(), LabError> {
        let servers = traffic::serve_echo(self.resolve_ns(ns), ports)?;
        lock(&self.servers).push(servers);
        Ok(())
    }

    /// What the lab's namespaces hold right now.
    pub fn status(&self) -> LabStatus {
        LabStatus::of(&self.state())
    }

    fn state(&self) -> LabState {
        LabState {
            prefix: self.prefix.clone(),
            owner: None,
            namespaces: self.namespaces().into_iter().map(str::to_owned).collect(),
        }
    }

    /// Tears the lab down (also a persistent one): stops servers and children, deletes the
    /// namespaces and the state directory. Keeps going past errors; returns the first.
    pub fn down(mut self) -> Result<(), LabError> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<(), LabError> {
        if self.torn_down {
            return Ok(());
        }
        self.torn_down = true;
        for servers in lock(&self.servers).drain(..) {
            servers.stop();
        }
        for child in lock(&self.children).drain(..) {
            // A child that cannot be stopped keeps its namespace alive but not its name.
            let _ = child.stop(Duration::from_secs(2));
        }
        teardown_namespaces(&self.state())
    }

    /// Removes the lab with this prefix, as recorded in its state file. `Ok(false)` if there
    /// was no such lab.
    pub fn down_named(prefix: &str) -> Result<bool, LabError> {
        match LabState::read(prefix)? {
            Some(state) => teardown_namespaces(&state).map(|()| true),
            None => Ok(false),
        }
    }

    /// Status of the lab with this prefix, `None` if there is no such lab.
    pub fn status_named(prefix: &str) -> Result<Option<LabStatus>, LabError> {
        Ok(LabState::read(prefix)?.map(|s| LabStatus::of(&s)))
    }

    /// Removes labs whose owning process has exited (left by a test that was killed);
    /// returns their prefixes. Persistent labs are never removed here.
    pub fn cleanup_stale() -> Result<Vec<String>, LabError> {
        let mut removed = Vec::new();
        let mut first_error = None;
        for state in LabState::all().into_iter().filter(LabState::is_stale) {
            match teardown_namespaces(&state) {
                Ok(()) => removed.push(state.prefix),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(removed),
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.persistent {
            return;
        }
        if let Err(e) = self.teardown() {
            eprintln!("warning: tearing down lab {}: {e}", self.prefix);
        }
    }
}

/// Deletes a lab's namespaces (node namespaces first, so their veth ends go before the host
/// namespace) and then its state directory, which stays if a namespace could not be deleted.
fn teardown_namespaces(state: &LabState) -> Result<(), LabError> {
    let mut first_error: Option<LabError> = None;
    for ns in state.namespaces.iter().rev() {
        if let Err(e) = del_netns(ns) {
            first_error.get_or_insert(e.into());
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(LabState::remove(&state.prefix)?),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn require_root() -> Result<(), LabError> {
    let euid = nix::unistd::geteuid().as_raw();
    if euid == 0 {
        Ok(())
    } else {
        Err(LabError::NotRoot { euid })
    }
}
