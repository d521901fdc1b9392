//! Prometheus metrics: what the agent exports on its read-only TCP endpoint
//! (`/metrics`, `/healthz`, `/readyz`; see [`server`]) and how.
//!
//! Nothing here counts events itself. At every scrape the agent's state is read once
//! (policy, workloads, the kernel's verdict counters, map fill) into a [`Scrape`] and
//! encoded by one collector per subsystem, each in its own
//! `sub_registry_with_prefix`. Kernel counters are cumulative and survive agent
//! restarts (the maps are pinned), so they are exported as counters whose value *is*
//! the kernel total: nothing can be counted twice or lost between scrapes.
//!
//! Cardinality is bounded: per-workload series exist only for workloads in the current
//! inventory, at most [`MetricsConfig::max_workloads`] of them; the rest are folded into
//! `workload="_other"` (see [`limit`]). Every name, label and bound is documented in
//! `docs/metrics.md`, which a unit test keeps in step with [`metric_names`].
//!
//! Extension point: subsystems that keep their own state (flows, graph, alerts) add a
//! [`prometheus_client::collector::Collector`] with [`Metrics::add_collector`] before the
//! server starts; it is encoded under `enforcer_<subsystem>_` at every scrape.

mod collect;
pub mod limit;
pub mod process;
#[cfg(test)]
mod promql;
pub mod server;
mod traffic;

use std::{fmt, net::SocketAddr, str::FromStr, sync::Arc, time::SystemTime};

use prometheus_client::{
    collector::Collector, encoding::DescriptorEncoder, metrics::histogram::Histogram,
    registry::Registry,
};

use crate::status::Status;

pub use self::{
    collect::{MAX_SERIES_PER_WORKLOAD, OTHER_WORKLOAD},
    traffic::{MAX_SERIES_PER_EDGE, OTHER_EDGE},
};
use self::{
    limit::{EdgeLimiter, WorkloadLimiter},
    process::ProcessStats,
};

/// Where `/metrics` listens unless configured otherwise: loopback only, so nothing is
/// exposed off the host until an operator chooses an address.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:9469";
/// Default cap on workloads with their own series (Kubernetes' default pod limit per
/// node is 110).
pub const DEFAULT_MAX_WORKLOADS: usize = 256;
/// Default cap on workload-pair edges with their own series (about 9 series each).
pub const DEFAULT_MAX_EDGES: usize = 1024;

/// Errors of the metrics endpoint.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(
        "metrics address {input:?} is not valid: give IP:PORT (e.g. {DEFAULT_ADDRESS}, \
         [::1]:9469) or `off`"
    )]
    Address {
        input: String,
        #[source]
        source: std::net::AddrParseError,
    },
    #[error(
        "cannot listen for metrics on {address}: {source}; choose another --metrics-address \
         (or `off`)"
    )]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("encoding metrics: {0}")]
    Encode(#[from] fmt::Error),
}

/// `--metrics-address`: a socket address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsAddress {
    Off,
    Listen(SocketAddr),
}

impl Default for MetricsAddress {
    fn default() -> Self {
        match DEFAULT_ADDRESS.parse() {
            Ok(a) => MetricsAddress::Listen(a),
            Err(_) => MetricsAddress::Off,
        }
    }
}

impl FromStr for MetricsAddress {
    type Err = MetricsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("off") {
            return Ok(MetricsAddress::Off);
        }
        s.parse()
            .map(MetricsAddress::Listen)
            .map_err(|source| MetricsError::Address {
                input: s.to_owned(),
                source,
            })
    }
}

impl fmt::Display for MetricsAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetricsAddress::Off => f.write_str("off"),
            MetricsAddress::Listen(a) => write!(f, "{a}"),
        }
    }
}

impl<'de> serde::Deserialize<'de> for MetricsAddress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The resolved metrics settings of an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    pub address: MetricsAddress,
    /// Workloads beyond this many share `workload="_other"`.
    pub max_workloads: usize,
    /// Edges beyond this many share `source="_other"`.
    pub max_edges: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            address: MetricsAddress::default(),
            max_workloads: DEFAULT_MAX_WORKLOADS,
            max_edges: DEFAULT_MAX_EDGES,
        }
    }
}

/// The exposition format, chosen from the scraper's `Accept` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0 text: what Prometheus asks for.
    OpenMetrics,
    /// Prometheus text 0.0.4: what curl, promtool and older scrapers get.
    Prometheus,
}

impl Format {
    pub fn from_accept(accept: Option<&str>) -> Self {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Prometheus,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }
}

/// Everything one scrape encodes: read once, so all series of a scrape agree.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub status: Status,
    /// `None` where /proc/self cannot be read (then the agent_* process series are
    /// left out rather than reported as zero).
    pub process: Option<ProcessStats>,
    /// Seconds the agent needed to read `status` (for the duration histogram).
    pub collect_seconds: f64,
    /// Cumulative per-pair, per-workload and per-rule counters from the flow map.
    pub totals: crate::flows::Totals,
    /// Learning state and alert counts; `None` when the baseline is disabled.
    pub baseline: Option<crate::baseline::monitor::BaselineStatus>,
    /// Durations of the agent's flow-map polls (shared with the agent, which observes).
    pub poll_duration: Option<Histogram>,
}

/// Buckets of `enforcer_flows_poll_duration_seconds`: 100 µs to 2.5 s.
const POLL_BUCKETS: [f64; 11] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5,
];

/// The histogram the agent observes each flow-map poll's duration in.
pub fn poll_duration_histogram() -> Histogram {
    Histogram::new(POLL_BUCKETS)
}

/// A collector added by another subsystem (see [`Metrics::add_collector`]).
#[derive(Debug, Clone)]
struct Extension {
    prefix: String,
    collector: Arc<dyn Collector>,
}

#[derive(Debug)]
struct SharedCollector(Arc<dyn Collector>);

impl Collector for SharedCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        self.0.encode(encoder)
    }
}

/// State kept across scrapes: which workloads own series, the duration histogram, and
/// collectors added by other subsystems.
#[derive(Debug)]
pub struct Metrics {
    limiter: WorkloadLimiter,
    edge_limiter: EdgeLimiter,
    collect_duration: Histogram,
    extensions: Vec<Extension>,
}

/// Buckets of `enforcer_metrics_collect_duration_seconds`: 1 ms to 2.5 s.
const DURATION_BUCKETS: [f64; 11] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

impl Metrics {
    pub fn new(cfg: &MetricsConfig) -> Self {
        Self {
            limiter: WorkloadLimiter::new(cfg.max_workloads),
            edge_limiter: EdgeLimiter::new(cfg.max_edges),
            collect_duration: Histogram::new(DURATION_BUCKETS),
            extensions: Vec::new(),
        }
    }

    /// Adds a collector encoded under `enforcer_<prefix>_` at every scrape: the
    /// extension point for subsystems with their own state (flows: per-edge traffic,
    /// ring-buffer losses; see docs/metrics.md, "coming with flows").
    pub fn add_collector(&mut self, prefix: &str, collector: Arc<dyn Collector>) {
        self.extensions.push(Extension {
            prefix: prefix.to_owned(),
            collector,
        });
    }

    /// Encodes one scrape in `format`.
    pub fn encode(&self, scrape: Scrape, format: Format) -> Result<String, MetricsError> {
        self.collect_duration.observe(scrape.collect_seconds);
        let registry = self.registry(Arc::new(scrape));
        let mut out = String::new();
        match format {
            Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &registry)?,
            Format::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
            }
        }
        Ok(out)
    }

    /// A registry for one scrape: one collector per subsystem over the same snapshot,
    /// plus the long-lived histogram and the extensions.
    fn registry(&self, scrape: Arc<Scrape>) -> Registry {
        let mut root = Registry::with_prefix("enforcer");
        let assignment = Arc::new(
            self.limiter
                .assign(scrape.status.workloads.iter().map(|w| &w.name)),
        );
        let pairs: Vec<(String, String)> = scrape
            .totals
            .pairs()
            .into_iter()
            .map(|(s, d, _)| (s.to_owned(), d.to_owned()))
            .collect();
        let edge_assignment = Arc::new(self.edge_limiter.assign(&pairs));
        root.sub_registry_with_prefix("agent")
            .register_collector(Box::new(collect::AgentCollector(scrape.clone())));
        root.sub_registry_with_prefix("inventory")
            .register_collector(Box::new(collect::InventoryCollector(scrape.clone())));
        root.sub_registry_with_prefix("policy")
            .register_collector(Box::new(collect::PolicyCollector(scrape.clone())));
        root.sub_registry_with_prefix("dataplane")
            .register_collector(Box::new(collect::DataplaneCollector(scrape.clone())));
        root.sub_registry_with_prefix("workload")
            .register_collector(Box::new(collect::WorkloadCollector {
                scrape: scrape.clone(),
                assignment: assignment.clone(),
            }));
        root.sub_registry_with_prefix("edge")
            .register_collector(Box::new(traffic::EdgeCollector {
                scrape: scrape.clone(),
                assignment: edge_assignment.clone(),
            }));
        let flows = root.sub_registry_with_prefix("flows");
        flows.register_collector(Box::new(traffic::FlowsCollector(scrape.clone())));
        if let Some(h) = &scrape.poll_duration {
            flows.register(
                "poll_duration_seconds",
                "Time to read the kernel flow map and fold it into the graph, per poll",
                h.clone(),
            );
        }
        root.sub_registry_with_prefix("graph")
            .register_collector(Box::new(traffic::GraphCollector(scrape.clone())));
        root.sub_registry_with_prefix("baseline")
            .register_collector(Box::new(traffic::BaselineCollector(scrape)));
        let own = root.sub_registry_with_prefix("metrics");
        own.register(
            "collect_duration_seconds",
            "Time to read the agent's state and the kernel counters for one scrape",
            self.collect_duration.clone(),
        );
        own.register_collector(Box::new(collect::LimitCollector(assignment)));
        own.register_collector(Box::new(traffic::EdgeLimitCollector(edge_assignment)));
        for e in &self.extensions {
            root.sub_registry_with_prefix(&e.prefix)
                .register_collector(Box::new(SharedCollector(e.collector.clone())));
        }
        root
    }
}

/// Reads what one scrape needs from the agent (under its lock) and from /proc/self.
pub fn scrape(shared: &crate::agent::Shared) -> Scrape {
    let start = std::time::Instant::now();
    let (status, totals, baseline, poll_duration) = {
        let agent = crate::agent::lock(shared);
        (
            agent.status(),
            agent.totals().clone(),
            agent.baseline().map(crate::baseline::Monitor::status),
            agent.poll_duration(),
        )
    };
    let collect_seconds = start.elapsed().as_secs_f64();
    Scrape {
        status,
        process: ProcessStats::read_self().ok(),
        collect_seconds,
        totals,
        baseline,
        poll_duration: Some(poll_duration),
    }
}

/// Seconds since the Unix epoch of an RFC 3339 time as the status reports it.
fn unix_seconds(rfc3339: &str) -> Option<f64> {
    humantime::parse_rfc3339(rfc3339)
        .ok()?
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs_f64())
}

/// Every series name the agent can export (counters with `_total`, histograms with
/// `_bucket`, `_sum`, `_count`), sorted: what dashboards and rules may use.
pub fn metric_names() -> Vec<String> {
    let metrics = Metrics::new(&MetricsConfig {
        max_workloads: 1,
        ..MetricsConfig::default()
    });
    let text = metrics
        .encode(collect::sample_scrape(), Format::Prometheus)
        .unwrap_or_default();
    let mut names: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests;
