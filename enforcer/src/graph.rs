//! The live service-communication graph: workloads (and the outside world) as nodes,
//! one edge per (source, destination, protocol, destination port) with verdicts,
//! bytes, packets, connections, rates and first/last seen. Fed with flow deltas by
//! `flows`; edges idle longer than the TTL expire.
//!
//! Memory is bounded: at most `max_edges` edges (new edges beyond it are counted in
//! `edges_dropped` and not stored) and nodes only as long as an edge uses them.
use std::{collections::BTreeMap, time::SystemTime};

use petgraph::stable_graph::{EdgeIndex, NodeIndex, StableDiGraph};

/// A hash map with foldhash, hashbrown's default hasher: several times faster than
/// SipHash on the keys hashed for every flow and edge on every poll, and seeded per
/// map.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
use serde::{Deserialize, Serialize};

/// What a node stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    Workload,
    Host,
    /// Addresses named by a policy CIDR.
    Cidr,
    /// Anything else, grouped by prefix.
    World,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Unique name: the workload name, `host`, `cidr:<prefix>` or `world:<prefix>`.
    pub id: String,
    pub kind: NodeKind,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Key of an edge: traffic from `src` to `dst` on `protocol`/`port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EdgeKey {
    pub src: String,
    pub dst: String,
    pub proto: u8,
    pub port: u16,
}

/// Verdict summary of an edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EdgeVerdict {
    Allowed,
    Denied,
    /// Some packets allowed, some dropped (a policy change, or some flows denied).
    Mixed,
}

/// Counters and rates of one edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Edge {
    pub src: String,
    pub dst: String,
    pub protocol: String,
    pub port: u16,
    pub verdict: EdgeVerdict,
    /// Source → destination (all verdicts), as seen at the first workload interface
    /// on the path. Bytes are IP packet lengths plus the Ethernet header.
    pub packets: u64,
    pub bytes: u64,
    /// Destination → source (replies).
    pub reply_packets: u64,
    pub reply_bytes: u64,
    pub dropped_packets: u64,
    pub dropped_bytes: u64,
    /// Distinct flows (connections; for UDP and ICMP, distinct tuples).
    pub connections: u64,
    pub denied_connections: u64,
    /// Exponentially weighted rates over poll intervals (per second, both directions).
    pub rate_bps: f64,
    pub rate_pps: f64,
    pub connection_rate: f64,
    pub first_seen: String,
    pub last_seen: String,
    /// Reason of the last verdict (`allowed_by_policy`, `dropped_port_not_declared`, …).
    pub last_reason: String,
    /// What decided the last verdict: a policy rule, the host deny list, or default deny.
    pub decided_by: String,
    /// Set by the anomaly detectors (issue: baseline); false until they exist.
    pub anomalous: bool,
    #[serde(skip)]
    pub last_seen_at: Option<SystemTime>,
    #[serde(skip)]
    pub first_seen_at: Option<SystemTime>,
}

/// One flow's contribution over one poll interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    pub key: EdgeKey,
    pub packets: u64,
    pub bytes: u64,
    pub reply_packets: u64,
    pub reply_bytes: u64,
    pub dropped_packets: u64,
    pub dropped_bytes: u64,
    /// 1 when this is the flow's first appearance, else 0.
    pub new_connections: u64,
    pub new_denied_connections: u64,
    pub last_reason: &'static str,
    /// Shared by every delta one poll decided the same way.
    pub decided_by: std::sync::Arc<str>,
    /// How telling `last_reason` is: within one poll the edge keeps the reason of
    /// the highest weight (a drop over a policy rule over "not selected").
    pub reason_weight: u8,
    pub first_seen: SystemTime,
    pub last_seen: SystemTime,
    /// The destination's address, when the destination is not a workload (a `world`
    /// or `cidr` node groups many addresses): fan-out counts addresses, so that a
    /// sweep of one outside /24 is many peers, not one.
    pub dst_addr: Option<std::net::IpAddr>,
}

/// The whole graph, as served by `/v1/graph`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphView {
    pub generated_at: String,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    /// Edges not stored because `max_edges` was reached.
    pub edges_dropped: u64,
}

pub fn proto_name(p: u8) -> String {
    match p {
        1 => "ICMP".into(),
        6 => "TCP".into(),
        17 => "UDP".into(),
        58 => "ICMPv6".into(),
        132 => "SCTP".into(),
        n => format!("IP-{n}"),
    }
}

/// Weight of the newest interval in the rate averages.
const RATE_ALPHA: f64 = 0.5;

pub struct Graph {
    g: StableDiGraph<Node, Edge>,
    nodes: FastMap<String, NodeIndex>,
    edges: FastMap<EdgeKey, EdgeIndex>,
    max_edges: usize,
    pub edges_dropped: u64,
}

impl Graph {
    pub fn new(max_edges: usize) -> Self {
        Self {
            g: StableDiGraph::new(),
            nodes: FastMap::default(),
            edges: FastMap::default(),
            max_edges,
            edges_dropped: 0,
        }
    }

    pub fn edge_count(&self) -> usize {
        self.edges.len()
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    fn node(&mut self, n: &Node) -> NodeIndex {
        if let Some(&i) = self.nodes.get(&n.id) {
            // Labels may change with the inventory.
            if let Some(w) = self.g.node_weight_mut(i) {
                w.labels.clone_from(&n.labels);
            }
            return i;
        }
        let i = self.g.add_node(n.clone());
        self.nodes.insert(n.id.clone(), i);
        i
    }

    /// Adds one interval's deltas (`nodes` describes every node they name) and
    /// updates rates over `interval_secs`.
    pub fn apply(&mut self, nodes: &[Node], deltas: &[Delta], interval_secs: f64) {
        for n in nodes {
            if self.nodes.contains_key(&n.id) {
                self.node(n);
            }
        }
        let by_id: FastMap<&str, &Node> = nodes.iter().map(|n| (n.id.as_str(), n)).collect();
        let mut interval: FastMap<EdgeIndex, (u64, u64, u64)> = FastMap::default();
        let mut chosen: FastMap<EdgeIndex, (u8, SystemTime)> = FastMap::default();
        for d in deltas {
            let idx = match self.edges.get(&d.key) {
                Some(&i) => i,
                None => {
                    if self.edges.len() >= self.max_edges {
                        self.edges_dropped += 1;
                        continue;
                    }
                    let (Some(s), Some(t)) =
                        (by_id.get(d.key.src.as_str()), by_id.get(d.key.dst.as_str()))
                    else {
                        continue;
                    };
                    let (s, t) = ((*s).clone(), (*t).clone());
                    let si = self.node(&s);
                    let ti = self.node(&t);
                    let e = Edge {
                        src: d.key.src.clone(),
                        dst: d.key.dst.clone(),
                        protocol: proto_name(d.key.proto),
                        port: d.key.port,
                        verdict: EdgeVerdict::Allowed,
                        packets: 0,
                        bytes: 0,
                        reply_packets: 0,
                        reply_bytes: 0,
                        dropped_packets: 0,
                        dropped_bytes: 0,
                        connections: 0,
                        denied_connections: 0,
                        rate_bps: 0.0,
                        rate_pps: 0.0,
                        connection_rate: 0.0,
                        first_seen: String::new(),
                        last_seen: String::new(),
                        last_reason: String::new(),
                        decided_by: String::new(),
                        anomalous: false,
                        last_seen_at: None,
                        first_seen_at: None,
                    };
                    let i = self.g.add_edge(si, ti, e);
                    self.edges.insert(d.key.clone(), i);
                    i
                }
            };
            let Some(e) = self.g.edge_weight_mut(idx) else {
                continue;
            };
            e.packets += d.packets;
            e.bytes += d.bytes;
            e.reply_packets += d.reply_packets;
            e.reply_bytes += d.reply_bytes;
            e.dropped_packets += d.dropped_packets;
            e.dropped_bytes += d.dropped_bytes;
            e.connections += d.new_connections;
            e.denied_connections += d.new_denied_connections;
            // The times are formatted by `view`, not on every poll.
            if e.first_seen_at.is_none_or(|f| d.first_seen < f) {
                e.first_seen_at = Some(d.first_seen);
            }
            if e.last_seen_at.is_none_or(|l| d.last_seen > l) {
                e.last_seen_at = Some(d.last_seen);
            }
            if !d.last_reason.is_empty() {
                let better = chosen.get(&idx).is_none_or(|(w, t)| {
                    d.reason_weight > *w || (d.reason_weight == *w && d.last_seen >= *t)
                });
                if better {
                    chosen.insert(idx, (d.reason_weight, d.last_seen));
                    d.last_reason.clone_into(&mut e.last_reason);
                    e.decided_by.clear();
                    e.decided_by.push_str(&d.decided_by);
                }
            }
            let total = e.packets + e.reply_packets;
            e.verdict = if e.dropped_packets == 0 {
                EdgeVerdict::Allowed
            } else if e.dropped_packets >= total {
                EdgeVerdict::Denied
            } else {
                EdgeVerdict::Mixed
            };
            let acc = interval.entry(idx).or_default();
            acc.0 += d.bytes + d.reply_bytes;
            acc.1 += d.packets + d.reply_packets;
            acc.2 += d.new_connections;
        }
        let secs = interval_secs.max(1e-3);
        let idxs: Vec<EdgeIndex> = self.edges.values().copied().collect();
        for idx in idxs {
            let (b, p, c) = interval.get(&idx).copied().unwrap_or_default();
            if let Some(e) = self.g.edge_weight_mut(idx) {
                e.rate_bps = RATE_ALPHA * (b as f64 / secs) + (1.0 - RATE_ALPHA) * e.rate_bps;
                e.rate_pps = RATE_ALPHA * (p as f64 / secs) + (1.0 - RATE_ALPHA) * e.rate_pps;
                e.connection_rate =
                    RATE_ALPHA * (c as f64 / secs) + (1.0 - RATE_ALPHA) * e.connection_rate;
            }
        }
    }

    /// Removes edges idle since before `cutoff`, and nodes left without edges.
    pub fn expire(&mut self, cutoff: SystemTime) -> usize {
        let stale: Vec<(EdgeKey, EdgeIndex)> = self
            .edges
            .iter()
            .filter(|(_, i)| {
                self.g
                    .edge_weight(**i)
                    .and_then(|e| e.last_seen_at)
                    .is_none_or(|l| l < cutoff)
            })
            .map(|(k, i)| (k.clone(), *i))
            .collect();
        for (k, i) in &stale {
            self.g.remove_edge(*i);
            self.edges.remove(k);
        }
        let lonely: Vec<(String, NodeIndex)> = self
            .nodes
            .iter()
            .filter(|(_, i)| self.g.neighbors_undirected(**i).next().is_none())
            .map(|(k, i)| (k.clone(), *i))
            .collect();
        for (k, i) in lonely {
            self.g.remove_node(i);
            self.nodes.remove(&k);
        }
        stale.len()
    }

    /// A copy for the API, edges sorted by (src, dst, protocol, port).
    pub fn view(&self) -> GraphView {
        let mut nodes: Vec<Node> = self.g.node_weights().cloned().collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        let mut edges: Vec<Edge> = self
            .g
            .edge_weights()
            .map(|e| Edge {
                first_seen: e.first_seen_at.map(fmt_time).unwrap_or_default(),
                last_seen: e.last_seen_at.map(fmt_time).unwrap_or_default(),
                ..e.clone()
            })
            .collect();
        edges.sort_by(|a, b| {
            (&a.src, &a.dst, &a.protocol, a.port).cmp(&(&b.src, &b.dst, &b.protocol, b.port))
        });
        GraphView {
            generated_at: fmt_time(SystemTime::now()),
            nodes,
            edges,
            edges_dropped: self.edges_dropped,
        }
    }
}

pub fn fmt_time(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn node(id: &str) -> Node {
        Node {
            id: id.into(),
            kind: NodeKind::Workload,
            labels: BTreeMap::new(),
        }
    }

    fn delta(src: &str, dst: &str, port: u16, bytes: u64, dropped: u64, t: SystemTime) -> Delta {
        Delta {
            key: EdgeKey {
                src: src.into(),
                dst: dst.into(),
                proto: 6,
                port,
            },
            packets: 10,
            bytes,
            reply_packets: 5,
            reply_bytes: 100,
            dropped_packets: dropped,
            dropped_bytes: 0,
            new_connections: 1,
            new_denied_connections: u64::from(dropped > 0),
            last_reason: "allowed_by_policy",
            decided_by: "policy p ingress[0]".into(),
            reason_weight: 2,
            first_seen: t,
            last_seen: t,
            dst_addr: None,
        }
    }

    #[test]
    fn deltas_accumulate_and_verdicts_summarise() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let mut g = Graph::new(10);
        let nodes = [node("a"), node("b")];
        g.apply(&nodes, &[delta("a", "b", 80, 1000, 0, t)], 1.0);
        g.apply(
            &nodes,
            &[delta("a", "b", 80, 500, 0, t + Duration::from_secs(1))],
            1.0,
        );
        g.apply(&nodes, &[delta("a", "b", 81, 0, 10, t)], 1.0);
        let v = g.view();
        assert_eq!(v.edges.len(), 2);
        let e80 = &v.edges[0];
        assert_eq!((e80.port, e80.bytes, e80.connections), (80, 1500, 2));
        assert_eq!(e80.verdict, EdgeVerdict::Allowed);
        assert!(e80.rate_bps > 0.0);
        assert_eq!(v.edges[1].verdict, EdgeVerdict::Mixed);
        assert_eq!(v.nodes.len(), 2);
    }

    #[test]
    fn edge_cap_and_expiry() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let mut g = Graph::new(1);
        let nodes = [node("a"), node("b"), node("c")];
        g.apply(
            &nodes,
            &[delta("a", "b", 80, 1, 0, t), delta("a", "c", 80, 1, 0, t)],
            1.0,
        );
        assert_eq!(g.edge_count(), 1);
        assert_eq!(g.edges_dropped, 1);
        assert_eq!(g.expire(t + Duration::from_secs(1)), 1);
        assert_eq!((g.edge_count(), g.node_count()), (0, 0));
    }
}
