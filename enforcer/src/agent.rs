//! The agent: owns the dataplane, turns files into kernel state, reloads on change.
//!
//! Reload sources: SIGHUP, a change of the policy or inventory file (polled: works
//! for Kubernetes ConfigMap volumes, which swap a symlink), and `enforcer policy
//! apply` through the API. Every reload parses, validates and compiles first; only a
//! good result reaches the kernel, and it does so atomically. A bad file is reported
//! (log, status, API answer) and the last good policy keeps being enforced.
use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::{
    config::{AgentConfig, FlowLog},
    dataplane::{ApplyReport, Dataplane, DataplaneError, Monitoring},
    flows::{FlowFilter, FlowRecord, FlowTracker, Recent, Resolver},
    graph::GraphView,
    inventory::{Inventory, InventoryError},
    policy::{self, CompileError, PolicyError, PolicyFile, compiled::Compiled},
    status::{self, FlowsStatus, PolicyStatus, Status, WorkloadStatus},
};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Inventory(#[from] InventoryError),
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Compile(#[from] CompileError),
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error("control socket {path}: {source}")]
    Socket {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another agent is already serving {path}; stop it or choose another --instance")]
    AlreadyRunning { path: PathBuf },
}

/// Change detection for a watched file: content, not mtime (ConfigMap updates swap
/// symlinks and may keep timestamps).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp(Option<Vec<u8>>);

fn stamp(path: &Path) -> Stamp {
    Stamp(std::fs::read(path).ok())
}

pub struct Agent {
    cfg: AgentConfig,
    dataplane: Dataplane,
    policy_path: PathBuf,
    inventory: Inventory,
    policy: PolicyFile,
    compiled: Compiled,
    resolver: Resolver,
    tracker: FlowTracker,
    recent: Recent,
    follow: tokio::sync::broadcast::Sender<FlowRecord>,
    events_received: u64,
    last_flow_poll: std::time::Instant,
    last: ApplyReport,
    applied_at: Option<SystemTime>,
    last_error: Option<(String, SystemTime)>,
    stamps: (Stamp, Stamp),
    /// Traffic baseline and anomaly alerts (docs/baseline.md); `None` when disabled.
    baseline: Option<crate::baseline::Monitor>,
    /// Durations of flow-map polls, for `enforcer_flows_poll_duration_seconds`.
    poll_duration: prometheus_client::metrics::histogram::Histogram,
}

impl Agent {
    /// Loads files, opens (or adopts) the pinned dataplane and applies the policy.
    /// A bad file at start is an error: nothing in the kernel changes, and whatever
    /// an earlier agent pinned keeps being enforced.
    pub fn start(cfg: AgentConfig) -> Result<Self, AgentError> {
        let inventory = Inventory::load(&cfg.inventory)?;
        let file = PolicyFile::load(&cfg.policy)?;
        let compiled = policy::compile(&file, &inventory)?;
        let mut dataplane = Dataplane::open(&cfg.paths.pin_dir)?;
        dataplane.set_monitoring(Monitoring {
            events_per_sec: cfg.events_per_sec,
            events_burst: cfg.events_per_sec.saturating_mul(2),
            ..Monitoring::default()
        });
        let adopted = dataplane.config()?.generation;
        if adopted != 0 {
            info!(
                generation = adopted,
                pin_dir = %cfg.paths.pin_dir.display(),
                "adopting pinned dataplane state from an earlier agent"
            );
        }
        let last = dataplane.apply(&compiled)?;
        let stamps = (stamp(&cfg.policy), stamp(&cfg.inventory));
        let resolver = Resolver::new(&compiled, &inventory, &file, ifindex_of);
        let tracker = FlowTracker::new(cfg.max_edges, Duration::from_secs(cfg.edge_ttl_secs));
        let (follow, _) = tokio::sync::broadcast::channel(1024);
        Ok(Self {
            policy_path: cfg.policy.clone(),
            baseline: cfg
                .baseline
                .enabled
                .then(|| crate::baseline::Monitor::open(cfg.baseline.clone(), &cfg.paths.instance)),
            recent: Recent::new(crate::config::DEFAULT_RECENT_FLOWS),
            cfg,
            dataplane,
            inventory,
            policy: file,
            compiled,
            resolver,
            tracker,
            follow,
            events_received: 0,
            last_flow_poll: std::time::Instant::now(),
            last,
            applied_at: Some(SystemTime::now()),
            last_error: None,
            stamps,
            poll_duration: crate::metrics::poll_duration_histogram(),
        })
    }

    /// Re-reads inventory and policy (from `policy_path` when given, which then
    /// becomes the watched policy file) and applies them.
    pub fn reload(
        &mut self,
        policy_path: Option<&Path>,
        why: &str,
    ) -> Result<ApplyReport, AgentError> {
        let path = policy_path.unwrap_or(&self.policy_path).to_path_buf();
        let result = (|| {
            let inventory = Inventory::load(&self.cfg.inventory)?;
            let file = PolicyFile::load(&path)?;
            let compiled = policy::compile(&file, &inventory)?;
            let report = self.dataplane.apply(&compiled)?;
            Ok::<_, AgentError>((inventory, file, compiled, report))
        })();
        match result {
            Ok((inventory, file, compiled, report)) => {
                info!(
                    event = "policy_applied",
                    reason = why,
                    file = %path.display(),
                    generation = report.generation,
                    rules = compiled.rules.len(),
                    "policy change applied"
                );
                self.resolver = Resolver::new(&compiled, &inventory, &file, ifindex_of);
                self.resolver.prune_totals(&mut self.tracker.totals);
                self.inventory = inventory;
                self.policy = file;
                self.compiled = compiled;
                self.last = report.clone();
                self.applied_at = Some(SystemTime::now());
                self.last_error = None;
                self.policy_path = path;
                self.stamps = (stamp(&self.policy_path), stamp(&self.cfg.inventory));
                Ok(report)
            }
            Err(e) => {
                error!(
                    event = "policy_rejected",
                    reason = why,
                    file = %path.display(),
                    error = %e,
                    generation = self.last.generation,
                    "policy change rejected; the previous policy stays in force"
                );
                self.last_error = Some((e.to_string(), SystemTime::now()));
                // Remember what we saw so an unchanged bad file is not retried forever.
                if policy_path.is_none() {
                    self.stamps = (stamp(&self.policy_path), stamp(&self.cfg.inventory));
                }
                Err(e)
            }
        }
    }

    /// The policy file in force (what `status` shows as `policy.file`).
    pub fn policy_file(&self) -> String {
        self.policy_path.display().to_string()
    }

    fn files_changed(&self) -> bool {
        (stamp(&self.policy_path), stamp(&self.cfg.inventory)) != self.stamps
    }

    pub fn status(&self) -> Status {
        let counters = self.dataplane.counters().unwrap_or_else(|e| {
            warn!(error = %e, "reading counters");
            Vec::new()
        });
        let links = self.dataplane.links();
        let cfg = self.dataplane.config().unwrap_or_default();
        let workloads = self
            .compiled
            .endpoints
            .iter()
            .map(|ep| {
                let ifindex = nix::net::if_::if_nametoindex(ep.interface.as_str()).ok();
                let (ingress, egress) = status::direction_counters(&counters, ifindex, ep.flags);
                WorkloadStatus {
                    name: ep.workload.clone(),
                    interface: ep.interface.clone(),
                    ifindex,
                    identity: ep.identity,
                    mode: status::mode_name(ep.mode).into(),
                    attached: links
                        .iter()
                        .filter(|l| l.interface == ep.interface)
                        .map(|l| l.hook.to_owned())
                        .collect(),
                    ingress,
                    egress,
                }
            })
            .collect();
        Status {
            version: env!("CARGO_PKG_VERSION").into(),
            instance: self.cfg.paths.instance.clone(),
            pin_dir: self.cfg.paths.pin_dir.display().to_string(),
            netns: self.cfg.netns.clone(),
            policy: PolicyStatus {
                file: self.policy_path.display().to_string(),
                generation: cfg.generation,
                active_epoch: cfg.active_epoch,
                applied_at: self.applied_at.map(fmt_time),
                rules: self.compiled.rules.len(),
                policy_entries: self.last.policy_entries,
                ipcache_entries: self.last.ipcache_entries,
                denylist_entries: self.last.denylist_entries,
                last_error: self.last_error.as_ref().map(|(e, _)| e.clone()),
                last_error_at: self.last_error.as_ref().map(|(_, t)| fmt_time(*t)),
            },
            workloads,
            flows: self.flows_status(),
            links: links.iter().map(Into::into).collect(),
            maps: self.dataplane.maps().iter().map(Into::into).collect(),
        }
    }
}

impl Agent {
    /// Reads the kernel flow map once and folds it into the graph.
    pub fn poll_flows(&mut self) {
        let start = std::time::Instant::now();
        self.poll_flows_once();
        self.poll_duration.observe(start.elapsed().as_secs_f64());
    }

    fn poll_flows_once(&mut self) {
        let interval = self.last_flow_poll.elapsed();
        self.last_flow_poll = std::time::Instant::now();
        match self.dataplane.flows() {
            Ok(flows) => {
                let idle = self.tracker.poll(flows, &self.resolver, interval);
                if let Some(b) = self.baseline.as_mut() {
                    b.on_poll(&self.tracker.take_deltas(), SystemTime::now());
                }
                if let Err(e) = self.dataplane.remove_flows(&idle) {
                    warn!(error = %e, "removing idle flows");
                }
            }
            Err(e) => warn!(error = %e, "reading the flow map"),
        }
    }

    /// One event from the kernel: keep it, stream it, log it.
    pub fn flow_event(&mut self, ev: &enforcer_common::flow::FlowEvent) {
        self.events_received += 1;
        let rec = FlowRecord::from_event(ev, &self.resolver);
        let log = match self.cfg.flow_log {
            FlowLog::Off => false,
            FlowLog::Denied => rec.kind != "new",
            FlowLog::All => true,
        };
        if log {
            info!(
                target: "enforcer::flowlog",
                event = "flow",
                kind = %rec.kind,
                verdict = %rec.verdict,
                reason = %rec.reason,
                workload = %rec.workload,
                direction = %rec.direction,
                protocol = %rec.protocol,
                src = %rec.src,
                src_port = rec.src_port,
                src_name = %rec.src_name,
                src_labels = %labels_text(&rec.src_labels),
                dst = %rec.dst,
                dst_port = rec.dst_port,
                dst_name = %rec.dst_name,
                dst_labels = %labels_text(&rec.dst_labels),
                decided_by = %rec.decided_by,
                "flow"
            );
        }
        let _ = self.follow.send(rec.clone());
        self.recent.push(rec);
    }

    pub fn take_events(
        &mut self,
    ) -> Result<aya::maps::RingBuf<aya::maps::MapData>, DataplaneError> {
        self.dataplane.take_events()
    }

    pub fn graph_view(&self) -> GraphView {
        let mut g = self.tracker.graph.view();
        if let Some(b) = &self.baseline {
            b.mark_graph(&mut g);
        }
        g
    }

    /// Cumulative per-pair, per-workload and per-rule traffic counters (metrics).
    pub fn totals(&self) -> &crate::flows::Totals {
        &self.tracker.totals
    }

    /// The flow-poll duration histogram (a handle: the metrics encode it).
    pub fn poll_duration(&self) -> prometheus_client::metrics::histogram::Histogram {
        self.poll_duration.clone()
    }

    /// The baseline and its alerts (docs/baseline.md), unless disabled.
    pub fn baseline(&self) -> Option<&crate::baseline::Monitor> {
        self.baseline.as_ref()
    }

    pub fn baseline_mut(&mut self) -> Option<&mut crate::baseline::Monitor> {
        self.baseline.as_mut()
    }

    pub fn recent_flows(&self, f: &FlowFilter, limit: usize) -> Vec<FlowRecord> {
        self.recent.query(f, limit)
    }

    pub fn subscribe_flows(&self) -> tokio::sync::broadcast::Receiver<FlowRecord> {
        self.follow.subscribe()
    }

    fn flows_status(&self) -> FlowsStatus {
        let loss = self.dataplane.event_loss().unwrap_or_default();
        FlowsStatus {
            events_received: self.events_received,
            events_lost_ringbuf_full: loss.ringbuf_full,
            events_lost_rate_limited: loss.rate_limited,
            flow_entries_not_created: loss.flow_insert_failed,
            flows_tracked: self.tracker_flows(),
            graph_nodes: self.tracker.graph.node_count(),
            graph_edges: self.tracker.graph.edge_count(),
            graph_edges_dropped: self.tracker.graph.edges_dropped,
            polls: self.tracker.polls,
        }
    }

    fn tracker_flows(&self) -> usize {
        self.tracker.tracked()
    }
}

fn labels_text(l: &crate::inventory::Labels) -> String {
    l.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn ifindex_of(iface: &str) -> Option<u32> {
    nix::net::if_::if_nametoindex(iface).ok()
}

fn fmt_time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

pub type Shared = Arc<Mutex<Agent>>;

/// Runs the agent until SIGTERM or SIGINT. Pinned state is left in place on exit:
/// enforcement continues and the next agent adopts it (`enforcer cleanup` removes it).
pub async fn run(cfg: AgentConfig) -> anyhow::Result<()> {
    let socket = cfg.paths.socket.clone();
    let poll = Duration::from_millis(cfg.poll_interval_ms.max(100));
    let listener = crate::api::bind(&socket).await?;
    // The web view (docs/webview.md), bound before the start so a bad address fails it.
    let web_listener = match cfg.web_address {
        Some(address) => Some(crate::web::bind(address).await?),
        None => None,
    };
    // Bound before the kernel is touched: a taken port fails the start cleanly.
    let metrics = crate::metrics::server::Server::bind(&cfg.metrics).await?;
    let agent = tokio::task::spawn_blocking(move || Agent::start(cfg)).await??;
    info!(
        event = "agent_started",
        socket = %socket.display(),
        generation = agent.last.generation,
        endpoints = agent.last.endpoints,
        "enforcer agent running"
    );
    let flows_every = Duration::from_millis(agent.cfg.flows_interval_ms.max(100));
    let mut agent = agent;
    let ring = agent.take_events();
    let shared: Shared = Arc::new(Mutex::new(agent));
    let server = tokio::spawn(crate::api::serve(listener, shared.clone()));
    let metrics = metrics.map(|m| tokio::spawn(m.serve(shared.clone())));
    let web = web_listener.map(|l| tokio::spawn(crate::web::serve(l, shared.clone())));
    let poller = tokio::spawn(poll_flows_every(shared.clone(), flows_every));
    let notifier = spawn_notifier(&shared);
    let reader = match ring {
        Ok(ring) => Some(tokio::spawn(read_events(shared.clone(), ring))),
        Err(e) => {
            error!(error = %e, "flow events unavailable");
            None
        }
    };

    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut tick = tokio::time::interval(poll);
    loop {
        tokio::select! {
            _ = hup.recv() => reload_blocking(&shared, "sighup").await,
            _ = tick.tick() => {
                let changed = lock(&shared).files_changed();
                if changed {
                    reload_blocking(&shared, "file_changed").await;
                }
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    server.abort();
    if let Some(m) = metrics {
        m.abort();
    }
    if let Some(w) = web {
        w.abort();
    }
    poller.abort();
    if let Some(n) = notifier {
        n.abort();
    }
    if let Some(r) = reader {
        r.abort();
    }
    if let Some(b) = lock(&shared).baseline_mut() {
        b.save();
    }
    let _ = std::fs::remove_file(&socket);
    info!(
        event = "agent_stopped",
        "enforcer agent stopping; pinned enforcement stays in place"
    );
    Ok(())
}

/// Starts the Alertmanager push (docs/baseline.md) when the baseline has URLs for it.
fn spawn_notifier(shared: &Shared) -> Option<tokio::task::JoinHandle<()>> {
    let a = lock(shared);
    let b = a.baseline()?;
    let (settings, stats) = b.push_handle();
    if !settings.enabled() {
        return None;
    }
    let rx = b.subscribe();
    let instance = a.cfg.paths.instance.clone();
    drop(a);
    info!(
        event = "alertmanager_push",
        urls = ?settings.urls,
        resend_secs = settings.resend_secs,
        "pushing anomaly alerts to Alertmanager"
    );
    let s = shared.clone();
    let firing_now = move || lock(&s).baseline().map(|b| b.firing()).unwrap_or_default();
    Some(tokio::spawn(crate::baseline::notify::run(
        settings, instance, rx, firing_now, stats,
    )))
}

async fn poll_flows_every(shared: Shared, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let s = shared.clone();
        let _ = tokio::task::spawn_blocking(move || lock(&s).poll_flows()).await;
    }
}

/// Drains the event ring buffer whenever the kernel signals it readable.
async fn read_events(shared: Shared, ring: aya::maps::RingBuf<aya::maps::MapData>) {
    // SAFETY: the RingBuf owns its map fd for as long as the AsyncFd owns it, and
    // `as_raw_fd` always returns that same fd.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE)
    };
    let mut fd = match registered {
        Ok(fd) => fd,
        Err(e) => {
            error!(error = %e, "cannot watch the event ring buffer");
            return;
        }
    };
    loop {
        let mut guard = match fd.readable_mut().await {
            Ok(g) => g,
            Err(e) => {
                error!(error = %e, "event ring buffer");
                return;
            }
        };
        // Drain in batches (the agent lock is taken once per batch), and clear the
        // readiness only once the ring is empty: the kernel wakes the fd for new data
        // only, so events left behind would wait for the next one.
        loop {
            let ring = guard.get_inner_mut();
            let mut batch = Vec::new();
            let mut drained = false;
            while batch.len() < 1024 {
                let Some(item) = ring.next() else {
                    drained = true;
                    break;
                };
                match enforcer_common::flow::FlowEvent::decode(&item) {
                    Ok(ev) => batch.push(ev),
                    Err(e) => warn!(error = ?e, "undecodable flow event"),
                }
            }
            if !batch.is_empty() {
                let mut a = lock(&shared);
                for ev in &batch {
                    a.flow_event(ev);
                }
            }
            if drained {
                guard.clear_ready();
                break;
            }
        }
    }
}

async fn reload_blocking(shared: &Shared, why: &'static str) {
    let s = shared.clone();
    let _ = tokio::task::spawn_blocking(move || {
        let _ = lock(&s).reload(None, why);
    })
    .await;
}

/// A poisoned lock only means a panic elsewhere; the state itself stays consistent
/// (every mutation is a whole-value replace), so keep serving.
pub fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Agent> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}
