//! `enforcer agent`: run the per-host agent.
use std::path::PathBuf;

use crate::{
    config::{AgentConfig, ConfigFile},
    logging,
};

/// Run the agent: load the policy and inventory, attach to every workload
/// interface, enforce, and serve the control socket. Runs until SIGTERM/SIGINT;
/// enforcement stays pinned in the kernel after it exits (see `enforcer cleanup`).
/// SIGHUP, or a change to either file, reloads; a bad file is rejected and the last
/// good policy stays in force.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Agent config file (YAML); flags override its fields.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Workload inventory file (YAML): names, labels, interfaces, addresses.
    #[arg(long)]
    pub inventory: Option<PathBuf>,
    /// Policy file (YAML); see docs/policy.md.
    #[arg(long)]
    pub policy: Option<PathBuf>,
    /// Network namespace to join first (name under /run/netns, or a path). The
    /// agent joins it itself so /sys/fs/bpf stays visible.
    #[arg(long)]
    pub netns: Option<String>,
    /// Pin directory on bpffs (default /sys/fs/bpf/enforcer/<instance>).
    #[arg(long)]
    pub pin_dir: Option<PathBuf>,
    /// Milliseconds between checks of the policy and inventory files [default: 2000].
    #[arg(long)]
    pub poll_interval_ms: Option<u64>,
    /// Milliseconds between reads of the kernel flow map [default: 1000].
    #[arg(long)]
    pub flows_interval_ms: Option<u64>,
    /// Seconds an idle edge stays in the graph [default: 300].
    #[arg(long)]
    pub edge_ttl_secs: Option<u64>,
    /// Most edges the graph holds [default: 10000].
    #[arg(long)]
    pub max_edges: Option<usize>,
    /// Flow log on stdout: off, denied (default) or all new flows.
    #[arg(long, value_enum)]
    pub flow_log: Option<crate::config::FlowLog>,
    /// Kernel flow-event rate limit per CPU, events/s [default: 2000]; every event
    /// over it is counted as lost.
    #[arg(long)]
    pub events_per_sec: Option<u32>,
    /// Serve the read-only web view of the live graph on this address, e.g.
    /// 127.0.0.1:9470 (see docs/webview.md). Off unless given; it has no
    /// authentication, so keep it on localhost and reach it through a tunnel.
    #[arg(long, value_name = "IP:PORT")]
    pub web_address: Option<std::net::SocketAddr>,
    /// Where /metrics, /healthz and /readyz listen (IP:PORT), or `off`
    /// [default: 127.0.0.1:9469]. See docs/metrics.md.
    #[arg(long, value_name = "IP:PORT|off")]
    pub metrics_address: Option<crate::metrics::MetricsAddress>,
    /// Workloads that may have their own metric series; the others are summed into
    /// workload="_other" [default: 256].
    #[arg(long, value_name = "N")]
    pub metrics_max_workloads: Option<usize>,
    /// Workload-pair edges that may have their own metric series; the others are
    /// summed into source="_other" [default: 1024].
    #[arg(long, value_name = "N")]
    pub metrics_max_edges: Option<usize>,
    #[command(flatten)]
    pub baseline: super::baseline::AgentFlags,
}

pub fn execute(cli: &super::Cli, a: &Args) -> u8 {
    let file = match &a.config {
        Some(p) => match ConfigFile::load(p) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("error: {e}");
                return super::EXIT_REJECTED;
            }
        },
        None => ConfigFile::default(),
    };
    let instance_flag = (cli.instance != crate::paths::DEFAULT_INSTANCE || file.instance.is_none())
        .then(|| cli.instance.clone());
    let flags = ConfigFile {
        instance: instance_flag,
        inventory: a.inventory.clone(),
        policy: a.policy.clone(),
        netns: a.netns.clone(),
        pin_dir: a.pin_dir.clone(),
        socket: cli.socket.clone(),
        log_format: (cli.log_format != logging::LogFormat::Text).then_some(cli.log_format),
        poll_interval_ms: a.poll_interval_ms,
        flows_interval_ms: a.flows_interval_ms,
        edge_ttl_secs: a.edge_ttl_secs,
        max_edges: a.max_edges,
        flow_log: a.flow_log,
        events_per_sec: a.events_per_sec,
        web_address: a.web_address,
        metrics_address: a.metrics_address,
        metrics_max_workloads: a.metrics_max_workloads,
        metrics_max_edges: a.metrics_max_edges,
        baseline: a.baseline.merge(file.baseline.as_ref()),
    };
    let cfg = match AgentConfig::resolve(file, flags) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    logging::init(cfg.log_format, "info", true);
    // Before any thread exists, so every thread lives in the namespace.
    if let Some(ns) = &cfg.netns
        && let Err(e) = crate::netns::enter(ns)
    {
        tracing::error!(error = %e, "cannot enter network namespace");
        return 1;
    }
    limit_malloc_arenas();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return 1;
        }
    };
    match rt.block_on(crate::agent::run(cfg)) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "agent failed");
            let rejected = e
                .downcast_ref::<crate::agent::AgentError>()
                .is_some_and(|a| {
                    matches!(
                        a,
                        crate::agent::AgentError::Policy(_)
                            | crate::agent::AgentError::Inventory(_)
                            | crate::agent::AgentError::Compile(_)
                    )
                });
            if rejected { super::EXIT_REJECTED } else { 1 }
        }
    }
}

/// glibc gives every thread that allocates (runtime workers, blocking-pool threads)
/// an arena of its own, and freed memory stays spread over them: the agent held
/// 68 MB resident at 10k graph edges with the default, 50 MB with one arena and 51 MB
/// with two (`cargo xtask bench --only agent`). Two arenas keep the two workers from
/// contending. `MALLOC_ARENA_MAX` in the environment still wins.
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    // SAFETY: mallopt only sets an allocator parameter; called before the runtime
    // starts any thread.
    let ok = unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
    if ok == 0 {
        tracing::debug!("mallopt(M_ARENA_MAX) refused; keeping glibc's default arenas");
    }
}
