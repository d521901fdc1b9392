//! One collector per subsystem, each encoding its part of a [`Scrape`] under its own
//! prefix (`enforcer_agent_`, `enforcer_inventory_`, `enforcer_policy_`,
//! `enforcer_dataplane_`, `enforcer_workload_`, `enforcer_metrics_`). Values are
//! encoded as they are read (`ConstCounter`, `ConstGauge`): kernel counters are
//! cumulative totals already.
use std::{collections::BTreeMap, fmt, sync::Arc};

use enforcer_common::counter::Reason;
use prometheus_client::{
    collector::Collector,
    encoding::{
        DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeLabelSet, EncodeMetric,
    },
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};

use super::{Scrape, limit::Assignment, unix_seconds};
use crate::status::{DirectionCounters, Traffic, WorkloadStatus};

/// The `workload` label value of workloads beyond the cap. Kubernetes names cannot
/// start with `_`, so it does not collide with a real workload there.
pub const OTHER_WORKLOAD: &str = "_other";

/// Reason label of a kernel reason number this build does not know (one value for
/// all of them, so an unexpected kernel cannot blow up cardinality).
const UNKNOWN_REASON: &str = "unknown";

/// Upper bound of series one `workload` label value can have: packets and bytes for
/// 2 directions × (11 reasons + `unknown` allowed + `unknown` dropped), connections for
/// 2 directions, plus `info` and `attached_hooks`.
pub const MAX_SERIES_PER_WORKLOAD: usize = 2 * 2 * (Reason::ALL.len() + 2) + 2 + 2;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct TrafficLabels {
    workload: String,
    direction: &'static str,
    verdict: &'static str,
    reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct DropLabels {
    direction: &'static str,
    reason: String,
}

#[derive(Debug, Clone, EncodeLabelSet)]
struct WorkloadInfoLabels {
    workload: String,
    interface: String,
    mode: String,
}

#[derive(Debug, Clone, EncodeLabelSet)]
struct WorkloadLabels {
    workload: String,
}

#[derive(Debug, Clone, EncodeLabelSet)]
struct RuleLabels {
    policy: String,
    rule: String,
    verdict: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct WorkloadDirectionLabels {
    workload: String,
    direction: &'static str,
}

#[derive(Debug, Clone, EncodeLabelSet)]
struct MapLabels {
    map: String,
}

#[derive(Debug, Clone, EncodeLabelSet)]
struct AgentInfoLabels {
    version: String,
    instance: String,
}

fn family<L: EncodeLabelSet, M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    series: impl IntoIterator<Item = (L, M)>,
) -> fmt::Result {
    let mut series = series.into_iter().peekable();
    // A family with no series is left out: same text for every format and scraper.
    if series.peek().is_none() {
        return Ok(());
    }
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, metric) in series {
        metric.encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

pub(super) fn gauges<L: EncodeLabelSet, V: EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, V)>,
) -> fmt::Result {
    family(
        enc,
        name,
        help,
        MetricType::Gauge,
        series.into_iter().map(|(l, v)| (l, ConstGauge::new(v))),
    )
}

pub(super) fn counters<L: EncodeLabelSet, V: EncodeCounterValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, V)>,
) -> fmt::Result {
    family(
        enc,
        name,
        help,
        MetricType::Counter,
        series.into_iter().map(|(l, v)| (l, ConstCounter::new(v))),
    )
}

pub(super) fn gauge<V: EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: V,
) -> fmt::Result {
    ConstGauge::new(v).encode(enc.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

pub(super) fn counter<V: EncodeCounterValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: V,
) -> fmt::Result {
    ConstCounter::new(v).encode(enc.encode_descriptor(name, help, None, MetricType::Counter)?)
}

/// `(verdict, reason)` labels for a reason name from the status (`unknown_N` for
/// numbers this build does not know).
fn reason_labels(name: &str) -> (&'static str, &'static str) {
    if let Some(r) = Reason::ALL.iter().find(|r| r.as_str() == name) {
        return (if r.is_drop() { "dropped" } else { "allowed" }, r.as_str());
    }
    // Same rule as `Reason::is_drop`: numbers from 16 up are drops.
    let dropped = name
        .strip_prefix("unknown_")
        .and_then(|n| n.parse::<u8>().ok())
        .is_some_and(|n| n >= 16);
    (if dropped { "dropped" } else { "allowed" }, UNKNOWN_REASON)
}

fn directions(w: &WorkloadStatus) -> [(&'static str, &DirectionCounters); 2] {
    [("ingress", &w.ingress), ("egress", &w.egress)]
}

/// `enforcer_agent_*`: the agent process.
#[derive(Debug)]
pub(super) struct AgentCollector(pub Arc<Scrape>);

impl Collector for AgentCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let s = &self.0;
        gauges(
            &mut enc,
            "info",
            "Agent build and instance (always 1)",
            [(
                AgentInfoLabels {
                    version: s.status.version.clone(),
                    instance: s.status.instance.clone(),
                },
                1i64,
            )],
        )?;
        let Some(p) = &s.process else { return Ok(()) };
        counter(
            &mut enc,
            "cpu_seconds",
            "User and system CPU time the agent has used, in seconds",
            p.cpu_seconds,
        )?;
        gauge(
            &mut enc,
            "resident_memory_bytes",
            "Resident memory of the agent, in bytes",
            p.resident_memory_bytes as f64,
        )?;
        gauge(
            &mut enc,
            "virtual_memory_bytes",
            "Virtual memory of the agent, in bytes",
            p.virtual_memory_bytes as f64,
        )?;
        gauge(
            &mut enc,
            "threads",
            "Threads of the agent",
            p.threads as f64,
        )?;
        gauge(
            &mut enc,
            "open_fds",
            "Open file descriptors of the agent",
            p.open_fds as f64,
        )?;
        gauge(
            &mut enc,
            "start_time_seconds",
            "When the agent process started, in seconds since the Unix epoch",
            p.start_time_seconds,
        )
    }
}

/// `enforcer_inventory_*`: the workloads the agent knows.
#[derive(Debug)]
pub(super) struct InventoryCollector(pub Arc<Scrape>);

impl Collector for InventoryCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let w = &self.0.status.workloads;
        gauge(
            &mut enc,
            "workloads",
            "Workloads in the inventory",
            w.len() as i64,
        )?;
        gauge(
            &mut enc,
            "workloads_unattached",
            "Workloads whose interface does not have both programs attached (interface \
             missing, or attach failed): their traffic is not enforced",
            w.iter().filter(|w| w.attached.len() < 2).count() as i64,
        )
    }
}

/// `enforcer_policy_*`: the policy in force and the last apply.
#[derive(Debug)]
pub(super) struct PolicyCollector(pub Arc<Scrape>);

impl Collector for PolicyCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let p = &self.0.status.policy;
        gauge(
            &mut enc,
            "generation",
            "Generation of the policy in force in the kernel (increments on every apply)",
            i64::from(p.generation),
        )?;
        gauge(
            &mut enc,
            "rules",
            "Compiled rules of the policy in force",
            p.rules as i64,
        )?;
        gauges(
            &mut enc,
            "kernel_entries",
            "Kernel map entries the policy in force was compiled to, by map",
            [
                ("ENF_POLICY", p.policy_entries),
                ("ENF_IPCACHE", p.ipcache_entries),
                ("ENF_DENYLIST", p.denylist_entries),
            ]
            .map(|(map, n)| (MapLabels { map: map.into() }, n as i64)),
        )?;
        gauge(
            &mut enc,
            "last_apply_success",
            "1 if the last attempt to apply a policy or inventory change succeeded, 0 if it \
             was rejected (the previous policy stays in force)",
            i64::from(p.last_error.is_none()),
        )?;
        if let Some(t) = p.applied_at.as_deref().and_then(unix_seconds) {
            gauge(
                &mut enc,
                "last_success_timestamp_seconds",
                "When the policy in force was applied, in seconds since the Unix epoch",
                t,
            )?;
        }
        if let Some(t) = p.last_error_at.as_deref().and_then(unix_seconds) {
            gauge(
                &mut enc,
                "last_failure_timestamp_seconds",
                "When the last attempt was rejected, in seconds since the Unix epoch (only \
                 while the last attempt is a failure)",
                t,
            )?;
        }
        counters(
            &mut enc,
            "rule_packets",
            "Packets by the rule that decided their flow's verdict (policy name and \
             ingress[i]/egress[i]; a mechanism such as _default_deny or _deny_list \
             otherwise), counted at every workload interface the flow crosses",
            self.0.totals.rules().into_iter().map(|(k, n)| {
                (
                    RuleLabels {
                        policy: k.policy.clone(),
                        rule: k.rule.clone(),
                        verdict: k.verdict,
                    },
                    n,
                )
            }),
        )
    }
}

/// `enforcer_dataplane_*`: kernel maps and host-wide drops.
#[derive(Debug)]
pub(super) struct DataplaneCollector(pub Arc<Scrape>);

impl Collector for DataplaneCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let s = &self.0.status;
        let map = |name: &str| MapLabels { map: name.into() };
        gauges(
            &mut enc,
            "map_entries",
            "Entries in each kernel map",
            s.maps.iter().map(|m| (map(&m.name), m.entries as i64)),
        )?;
        gauges(
            &mut enc,
            "map_max_entries",
            "Capacity of each kernel map",
            s.maps
                .iter()
                .map(|m| (map(&m.name), i64::from(m.max_entries))),
        )?;
        gauges(
            &mut enc,
            "map_fill_ratio",
            "Entries over capacity of each kernel map (0 to 1); a full LRU map evicts, a full \
             hash map refuses new entries",
            s.maps.iter().map(|m| (map(&m.name), m.fill_ratio)),
        )?;
        let mut drops: BTreeMap<DropLabels, u64> = BTreeMap::new();
        for w in &s.workloads {
            for (direction, d) in directions(w) {
                for (name, t) in &d.by_reason {
                    let (verdict, reason) = reason_labels(name);
                    if verdict == "dropped" {
                        *drops
                            .entry(DropLabels {
                                direction,
                                reason: reason.into(),
                            })
                            .or_default() += t.packets;
                    }
                }
            }
        }
        counters(
            &mut enc,
            "dropped_packets",
            "Packets dropped on all workload interfaces, by direction (of the workload) and \
             reason; not subject to the workload cap",
            drops,
        )
    }
}

/// `enforcer_workload_*`: verdict counters per workload, capped.
#[derive(Debug)]
pub(super) struct WorkloadCollector {
    pub scrape: Arc<Scrape>,
    pub assignment: Arc<Assignment>,
}

impl Collector for WorkloadCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let workloads = &self.scrape.status.workloads;
        let owned = || workloads.iter().filter(|w| self.assignment.owns(&w.name));
        gauges(
            &mut enc,
            "info",
            "A workload with its own series: interface and mode (always 1)",
            owned().map(|w| {
                (
                    WorkloadInfoLabels {
                        workload: w.name.clone(),
                        interface: w.interface.clone(),
                        mode: w.mode.clone(),
                    },
                    1i64,
                )
            }),
        )?;
        gauges(
            &mut enc,
            "attached_hooks",
            "Programs attached to the workload's interface (2 when enforced both ways)",
            owned().map(|w| {
                (
                    WorkloadLabels {
                        workload: w.name.clone(),
                    },
                    w.attached.len() as i64,
                )
            }),
        )?;
        let mut traffic: BTreeMap<TrafficLabels, Traffic> = BTreeMap::new();
        for w in workloads {
            let workload = if self.assignment.owns(&w.name) {
                w.name.as_str()
            } else {
                OTHER_WORKLOAD
            };
            for (direction, d) in directions(w) {
                for (name, t) in &d.by_reason {
                    let (verdict, reason) = reason_labels(name);
                    let sum = traffic
                        .entry(TrafficLabels {
                            workload: workload.to_owned(),
                            direction,
                            verdict,
                            reason: reason.to_owned(),
                        })
                        .or_default();
                    sum.packets += t.packets;
                    sum.bytes += t.bytes;
                }
            }
        }
        counters(
            &mut enc,
            "packets",
            "Packets seen on the workload's interface, by direction (of the workload), \
             verdict and reason; the kernel's cumulative count",
            traffic.iter().map(|(l, t)| (l.clone(), t.packets)),
        )?;
        counters(
            &mut enc,
            "bytes",
            "Bytes (IP packet length, link headers included) seen on the workload's \
             interface, by direction, verdict and reason; the kernel's cumulative count",
            traffic.iter().map(|(l, t)| (l.clone(), t.bytes)),
        )?;
        let mut conns: BTreeMap<WorkloadDirectionLabels, u64> = BTreeMap::new();
        let known: std::collections::BTreeSet<&str> =
            workloads.iter().map(|w| w.name.as_str()).collect();
        for (w, [ingress, egress]) in self.scrape.totals.connections() {
            if !known.contains(w) {
                continue;
            }
            let workload = if self.assignment.owns(w) {
                w
            } else {
                OTHER_WORKLOAD
            };
            for (direction, n) in [("ingress", ingress), ("egress", egress)] {
                *conns
                    .entry(WorkloadDirectionLabels {
                        workload: workload.to_owned(),
                        direction,
                    })
                    .or_default() += n;
            }
        }
        counters(
            &mut enc,
            "connections",
            "New flows seen on the workload's interface, by direction of the flow's first \
             packet (ingress: opened towards the workload; egress: opened by it)",
            conns,
        )
    }
}

/// `enforcer_metrics_*` (with the duration histogram registered beside it): the cap.
#[derive(Debug)]
pub(super) struct LimitCollector(pub Arc<Assignment>);

impl Collector for LimitCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let a = &self.0;
        gauge(
            &mut enc,
            "workload_limit",
            "Workloads that may have their own series (--metrics-max-workloads)",
            a.max as i64,
        )?;
        gauge(
            &mut enc,
            "workloads_folded",
            "Workloads over the limit, whose series are summed into workload=\"_other\"",
            a.folded as i64,
        )?;
        counter(
            &mut enc,
            "series_dropped",
            "Workloads that started being folded into workload=\"_other\" (their own series \
             dropped), over the agent's life",
            a.folded_total,
        )
    }
}

/// A scrape in which every metric has at least one series: for [`super::metric_names`]
/// and the tests.
pub(super) fn sample_scrape() -> Scrape {
    use crate::status::{LinkStatusView, MapStatusView, PolicyStatus, Status};
    let traffic = |packets, bytes| Traffic { packets, bytes };
    let counters = |enforced| DirectionCounters {
        enforced,
        allowed: traffic(10, 1000),
        dropped: traffic(3, 180),
        by_reason: [
            (Reason::AllowPolicy.as_str().to_owned(), traffic(10, 1000)),
            (
                Reason::DropPortNotDeclared.as_str().to_owned(),
                traffic(2, 120),
            ),
            ("unknown_99".to_owned(), traffic(1, 60)),
        ]
        .into_iter()
        .collect(),
    };
    let workload = |name: &str, ifindex| WorkloadStatus {
        name: name.into(),
        interface: format!("lw-{name}"),
        ifindex: Some(ifindex),
        identity: 256 + ifindex,
        mode: "enforce".into(),
        attached: vec!["tcx_ingress".into(), "tcx_egress".into()],
        ingress: counters(true),
        egress: counters(false),
    };
    Scrape {
        status: Status {
            version: env!("CARGO_PKG_VERSION").into(),
            instance: "sample".into(),
            pin_dir: "/sys/fs/bpf/enforcer/sample".into(),
            netns: None,
            policy: PolicyStatus {
                file: "/etc/enforcer/policy.yaml".into(),
                generation: 3,
                active_epoch: 1,
                applied_at: Some("2026-01-01T00:00:00Z".into()),
                rules: 4,
                policy_entries: 6,
                ipcache_entries: 5,
                denylist_entries: 2,
                last_error: Some("policy.yaml:3: unknown field".into()),
                last_error_at: Some("2026-01-01T00:01:00Z".into()),
            },
            workloads: vec![workload("web", 7), workload("db", 8)],
            flows: Default::default(),
            links: vec![LinkStatusView {
                interface: "lw-web".into(),
                ifindex: 7,
                hook: "tcx_ingress".into(),
                program: "enf_from_wl".into(),
                origin: "attached".into(),
                pin: "/sys/fs/bpf/enforcer/sample/links/x".into(),
            }],
            maps: vec![MapStatusView {
                name: "ENF_CT".into(),
                entries: 10,
                max_entries: 100,
                fill_ratio: 0.1,
            }],
        },
        process: Some(super::ProcessStats {
            cpu_seconds: 1.5,
            resident_memory_bytes: 1 << 20,
            virtual_memory_bytes: 1 << 30,
            threads: 4,
            open_fds: 12,
            start_time_seconds: 1.7e9,
        }),
        collect_seconds: 0.002,
        totals: sample_totals(),
        baseline: Some(crate::baseline::monitor::BaselineStatus {
            enabled: true,
            learning: true,
            edges: 2,
            memory_bytes: 6400,
            alerts: crate::baseline::AlertCounts::zero(),
            ..Default::default()
        }),
        poll_duration: Some(super::poll_duration_histogram()),
    }
}

/// Traffic between the sample's workloads: web → db allowed, client → web dropped.
fn sample_totals() -> crate::flows::Totals {
    use crate::{
        flows::{
            RuleKey,
            totals::{PairDelta, RulePoll},
        },
        graph::{Node, NodeKind},
    };
    let node = |id: &str| Node {
        id: id.into(),
        kind: NodeKind::Workload,
        labels: Default::default(),
    };
    let t0 = std::time::SystemTime::UNIX_EPOCH;
    let mut t = crate::flows::Totals::default();
    let allowed = PairDelta {
        packets: 10,
        bytes: 1000,
        reply_packets: 8,
        reply_bytes: 900,
        connections: 1,
        ..PairDelta::default()
    };
    t.add_pair(&node("web"), &node("db"), &allowed, t0);
    let dropped = PairDelta {
        packets: 2,
        bytes: 120,
        dropped_packets: 2,
        drop_reason: Some(Reason::DropPortNotDeclared),
        ..PairDelta::default()
    };
    t.add_pair(&node("db"), &node("web"), &dropped, t0);
    t.add_connection("web", enforcer_common::direction::EGRESS);
    t.add_connection("db", enforcer_common::direction::INGRESS);
    t.add_rule(
        RuleKey {
            policy: "db-serves".into(),
            rule: "ingress[0]".into(),
            verdict: "allowed",
        },
        18,
    );
    let mut poll = RulePoll::default();
    poll.add(0, Reason::DropPortNotDeclared, 0, 2);
    poll.fold_into(&mut t, |_, _, _| ("_default_deny".into(), "ingress".into()));
    t
}
