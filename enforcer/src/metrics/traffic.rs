//! Collectors for what userspace learns from the flow map and the event ring:
//! `enforcer_edge_*` (workload-pair traffic, capped), `enforcer_flows_*` (polling and
//! event delivery, every lost event counted), `enforcer_graph_*` and
//! `enforcer_baseline_*` (learning and alerts).
use std::{collections::BTreeMap, fmt, sync::Arc};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet},
};

use super::{
    Scrape,
    collect::{counter, counters, gauge, gauges},
    limit::Assignment,
};
use crate::{
    baseline::{AlertKind, Severity},
    flows::PairTotals,
};

/// The `source` and `destination` of pairs beyond the edge cap.
pub const OTHER_EDGE: &str = "_other";

/// Upper bound of series of one edge: packets, bytes, reply packets, reply bytes,
/// connections, and dropped packets for each of the 6 drop reasons and `unknown`.
pub const MAX_SERIES_PER_EDGE: usize = 5 + 7;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct EdgeLabels {
    source: String,
    destination: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct EdgeDropLabels {
    source: String,
    destination: String,
    reason: String,
}

#[derive(Debug, Clone, EncodeLabelSet)]
struct CauseLabels {
    cause: &'static str,
}

#[derive(Debug, Clone, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Debug, Clone, EncodeLabelSet)]
struct KindSeverityLabels {
    kind: &'static str,
    severity: &'static str,
}

/// `enforcer_edge_*`: traffic per workload pair, capped.
#[derive(Debug)]
pub(super) struct EdgeCollector {
    pub scrape: Arc<Scrape>,
    pub assignment: Arc<Assignment<(String, String)>>,
}

impl EdgeCollector {
    /// The pairs with the ones over the cap summed into (`_other`, `_other`).
    fn folded(&self) -> BTreeMap<EdgeLabels, PairTotals> {
        let mut out: BTreeMap<EdgeLabels, PairTotals> = BTreeMap::new();
        for (src, dst, p) in self.scrape.totals.pairs() {
            let owned = self.assignment.owns(&(src.to_owned(), dst.to_owned()));
            let (source, destination) = if owned {
                (src, dst)
            } else {
                (OTHER_EDGE, OTHER_EDGE)
            };
            let sum = out
                .entry(EdgeLabels {
                    source: source.to_owned(),
                    destination: destination.to_owned(),
                })
                .or_default();
            sum.packets += p.packets;
            sum.bytes += p.bytes;
            sum.reply_packets += p.reply_packets;
            sum.reply_bytes += p.reply_bytes;
            sum.connections += p.connections;
            for (reason, n) in &p.dropped {
                *sum.dropped.entry(reason).or_default() += n;
            }
        }
        out
    }
}

impl Collector for EdgeCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let edges = self.folded();
        let each = |f: fn(&PairTotals) -> u64| {
            edges
                .iter()
                .map(move |(l, p)| (l.clone(), f(p)))
                .collect::<Vec<_>>()
        };
        counters(
            &mut enc,
            "packets",
            "Packets from source to destination (all verdicts, all ports), counted once \
             at the first workload interface on the path",
            each(|p| p.packets),
        )?;
        counters(
            &mut enc,
            "bytes",
            "Bytes (IP packet length plus the Ethernet header) from source to destination",
            each(|p| p.bytes),
        )?;
        counters(
            &mut enc,
            "reply_packets",
            "Packets from destination back to source in connections the source opened",
            each(|p| p.reply_packets),
        )?;
        counters(
            &mut enc,
            "reply_bytes",
            "Bytes from destination back to source in connections the source opened",
            each(|p| p.reply_bytes),
        )?;
        counters(
            &mut enc,
            "connections",
            "New flows from source to destination (TCP connections; distinct UDP and ICMP \
             tuples)",
            each(|p| p.connections),
        )?;
        counters(
            &mut enc,
            "dropped_packets",
            "Packets of the pair dropped (either direction), by reason",
            edges.iter().flat_map(|(l, p)| {
                p.dropped.iter().map(|(reason, n)| {
                    (
                        EdgeDropLabels {
                            source: l.source.clone(),
                            destination: l.destination.clone(),
                            reason: (*reason).to_owned(),
                        },
                        *n,
                    )
                })
            }),
        )
    }
}

/// `enforcer_flows_*`: polling of the flow map and delivery of events.
#[derive(Debug)]
pub(super) struct FlowsCollector(pub Arc<Scrape>);

impl Collector for FlowsCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let f = &self.0.status.flows;
        counter(
            &mut enc,
            "events_received",
            "Flow events (new flow, deny, audit) read from the kernel ring buffer",
            f.events_received,
        )?;
        counters(
            &mut enc,
            "events_lost",
            "Flow events the kernel could not deliver, by cause: ringbuf_full (the agent \
             read too slowly), rate_limited (over the per-CPU event rate limit)",
            [
                (
                    CauseLabels {
                        cause: "ringbuf_full",
                    },
                    f.events_lost_ringbuf_full,
                ),
                (
                    CauseLabels {
                        cause: "rate_limited",
                    },
                    f.events_lost_rate_limited,
                ),
            ],
        )?;
        counter(
            &mut enc,
            "entries_not_created",
            "Packets whose flow could not get a flow-map entry (map full or memory \
             pressure): counted in the verdict counters, missing from flows and edges",
            f.flow_entries_not_created,
        )?;
        gauge(
            &mut enc,
            "tracked",
            "Flows in the kernel flow map at the last poll",
            f.flows_tracked as i64,
        )?;
        counter(&mut enc, "polls", "Polls of the kernel flow map", f.polls)
    }
}

/// `enforcer_graph_*`: the service graph.
#[derive(Debug)]
pub(super) struct GraphCollector(pub Arc<Scrape>);

impl Collector for GraphCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let f = &self.0.status.flows;
        gauge(
            &mut enc,
            "nodes",
            "Nodes of the service graph (workloads, host, CIDR and world groups)",
            f.graph_nodes as i64,
        )?;
        gauge(
            &mut enc,
            "edges",
            "Edges of the service graph (source, destination, protocol, port)",
            f.graph_edges as i64,
        )?;
        counter(
            &mut enc,
            "edges_dropped",
            "New graph edges not stored because the graph was at its edge limit \
             (--max-edges)",
            f.graph_edges_dropped,
        )
    }
}

/// `enforcer_baseline_*`: learning state and alerts; absent when the baseline is off.
#[derive(Debug)]
pub(super) struct BaselineCollector(pub Arc<Scrape>);

impl Collector for BaselineCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let Some(b) = &self.0.baseline else {
            return Ok(());
        };
        gauge(
            &mut enc,
            "learning",
            "1 while the baseline is learning (no alerts yet), 0 when detecting",
            i64::from(b.learning),
        )?;
        gauge(
            &mut enc,
            "edges",
            "Edges with a learnt baseline",
            b.edges as i64,
        )?;
        gauge(
            &mut enc,
            "memory_bytes",
            "Estimated memory of the learnt baselines, in bytes",
            b.memory_bytes as i64,
        )?;
        gauges(
            &mut enc,
            "alerts_firing",
            "Alerts firing now, by kind and severity",
            AlertKind::ALL.iter().flat_map(|k| {
                Severity::ALL.iter().map(move |s| {
                    let n = b
                        .alerts
                        .firing
                        .get(k)
                        .and_then(|m| m.get(s))
                        .copied()
                        .unwrap_or(0);
                    (
                        KindSeverityLabels {
                            kind: k.as_str(),
                            severity: s.as_str(),
                        },
                        n as i64,
                    )
                })
            }),
        )?;
        counters(
            &mut enc,
            "alerts",
            "Alerts raised since the agent started, by kind",
            AlertKind::ALL.iter().map(|k| {
                (
                    KindLabels { kind: k.as_str() },
                    b.alerts.raised_total.get(k).copied().unwrap_or(0),
                )
            }),
        )
    }
}

/// `enforcer_metrics_edge*`: the edge cap.
#[derive(Debug)]
pub(super) struct EdgeLimitCollector(pub Arc<Assignment<(String, String)>>);

impl Collector for EdgeLimitCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        let a = &self.0;
        gauge(
            &mut enc,
            "edge_limit",
            "Workload pairs that may have their own enforcer_edge_* series \
             (--metrics-max-edges)",
            a.max as i64,
        )?;
        gauge(
            &mut enc,
            "edges_folded",
            "Workload pairs over the limit, summed into source=\"_other\", \
             destination=\"_other\"",
            a.folded as i64,
        )?;
        counter(
            &mut enc,
            "edge_series_dropped",
            "Workload pairs that started being folded into _other (their own series \
             dropped), over the agent's life",
            a.folded_total,
        )
    }
}
