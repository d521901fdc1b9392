//! What the detectors see: per-interval traffic per edge, summed from the graph's
//! flow deltas (agent), a flow log or a CSV series (replay), or a generator (eval).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::graph::{Delta, proto_name};

/// An edge of the service graph: traffic from `src` to `dst` on `proto`/`port`
/// (node ids as in the graph: a workload name, `host`, `cidr:…` or `world:…`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct EdgeRef {
    pub src: String,
    pub dst: String,
    pub proto: u8,
    pub port: u16,
}

impl EdgeRef {
    pub fn new(src: &str, dst: &str, proto: u8, port: u16) -> Self {
        Self {
            src: src.into(),
            dst: dst.into(),
            proto,
            port,
        }
    }
}

impl std::fmt::Display for EdgeRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} -> {} {}/{}",
            self.src,
            self.dst,
            proto_name(self.proto),
            self.port
        )
    }
}

/// Whether a graph node id names a workload (not `host`, `cidr:…` or `world:…`).
pub fn is_workload(id: &str) -> bool {
    id != "host" && !id.starts_with("world:") && !id.starts_with("cidr:")
}

/// One edge's traffic over one interval (both directions for bytes and packets).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EdgeSample {
    pub bytes: u64,
    pub packets: u64,
    /// New flows (connections; for UDP and ICMP, new tuples).
    pub connections: u64,
    pub denied_packets: u64,
    pub denied_connections: u64,
}

impl EdgeSample {
    pub fn add(&mut self, o: &EdgeSample) {
        self.bytes += o.bytes;
        self.packets += o.packets;
        self.connections += o.connections;
        self.denied_packets += o.denied_packets;
        self.denied_connections += o.denied_connections;
    }

    /// Any traffic at all (allowed or denied).
    pub fn active(&self) -> bool {
        self.packets > 0 || self.denied_packets > 0 || self.connections > 0
    }

    /// A new flow or a denied attempt: what fan-out counts.
    pub fn contacts(&self) -> bool {
        self.connections > 0 || self.denied_connections > 0
    }

    /// The sample of one graph delta.
    pub fn from_delta(d: &Delta) -> Self {
        Self {
            bytes: d.bytes + d.reply_bytes,
            packets: d.packets + d.reply_packets,
            connections: d.new_connections,
            denied_packets: d.dropped_packets,
            denied_connections: d.new_denied_connections,
        }
    }
}

/// One detection interval: what every edge carried between `start_ms` and
/// `start_ms + secs`. Edges without traffic may be left out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Interval {
    /// Start, milliseconds since the Unix epoch.
    pub start_ms: u64,
    pub secs: f64,
    pub edges: Vec<(EdgeRef, EdgeSample)>,
    /// The addresses behind the new flows and denied attempts of edges whose
    /// destination groups many addresses (`world:…`, `cidr:…`), when known (the
    /// agent knows them; a flow log or a CSV does not): fan-out counts them as
    /// distinct peers. At most [`MAX_ADDRS`] an interval.
    pub addrs: Vec<(EdgeRef, IpAddr)>,
}

/// Addresses kept per interval for fan-out (a sweep past it saturates).
pub const MAX_ADDRS: usize = 65_536;

impl Interval {
    pub fn end_ms(&self) -> u64 {
        self.start_ms + (self.secs * 1000.0) as u64
    }
}

/// Sums samples per edge until an interval closes.
#[derive(Debug, Default)]
pub struct Accumulator {
    edges: crate::graph::FastMap<EdgeRef, EdgeSample>,
    addrs: std::collections::HashSet<(EdgeRef, IpAddr)>,
}

impl Accumulator {
    pub fn add(&mut self, e: EdgeRef, s: &EdgeSample) {
        self.edges.entry(e).or_default().add(s);
    }

    pub fn add_deltas(&mut self, deltas: &[Delta]) {
        for d in deltas {
            let k = EdgeRef::new(&d.key.src, &d.key.dst, d.key.proto, d.key.port);
            let s = EdgeSample::from_delta(d);
            if let Some(a) = d.dst_addr
                && s.contacts()
                && self.addrs.len() < MAX_ADDRS
            {
                self.addrs.insert((k.clone(), a));
            }
            self.add(k, &s);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.edges.is_empty()
    }

    /// The interval, sorted by edge (deterministic), and an empty accumulator.
    pub fn take(&mut self, start_ms: u64, secs: f64) -> Interval {
        let mut edges: Vec<(EdgeRef, EdgeSample)> = self.edges.drain().collect();
        edges.sort_by(|a, b| a.0.cmp(&b.0));
        let mut addrs: Vec<(EdgeRef, IpAddr)> = self.addrs.drain().collect();
        addrs.sort();
        Interval {
            start_ms,
            secs,
            edges,
            addrs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accumulator_sums_per_edge_and_sorts() {
        let mut a = Accumulator::default();
        let e = EdgeRef::new("b", "c", 6, 80);
        let s = EdgeSample {
            bytes: 10,
            packets: 1,
            connections: 1,
            ..Default::default()
        };
        a.add(e.clone(), &s);
        a.add(e.clone(), &s);
        a.add(EdgeRef::new("a", "c", 6, 80), &s);
        let iv = a.take(1000, 60.0);
        assert!(a.is_empty());
        assert_eq!(iv.edges.len(), 2);
        assert_eq!(iv.edges[0].0.src, "a");
        assert_eq!(iv.edges[1].1.bytes, 20);
        assert_eq!(iv.end_ms(), 61_000);
        assert!(is_workload("web") && !is_workload("world:1.2.3.0/24") && !is_workload("host"));
    }

    #[test]
    fn accumulator_keeps_the_addresses_of_new_flows_to_grouped_destinations() {
        use crate::graph::{Delta, EdgeKey};
        let t = std::time::SystemTime::UNIX_EPOCH;
        let delta = |addr: Option<IpAddr>, new: u64| Delta {
            key: EdgeKey {
                src: "api".into(),
                dst: "world:198.51.100.0/24".into(),
                proto: 6,
                port: 443,
            },
            packets: 2,
            bytes: 120,
            reply_packets: 0,
            reply_bytes: 0,
            dropped_packets: 0,
            dropped_bytes: 0,
            new_connections: new,
            new_denied_connections: 0,
            last_reason: "",
            decided_by: "".into(),
            reason_weight: 0,
            first_seen: t,
            last_seen: t,
            dst_addr: addr,
        };
        let a: IpAddr = "198.51.100.7".parse().expect("addr");
        let b: IpAddr = "198.51.100.8".parse().expect("addr");
        let mut acc = Accumulator::default();
        // Two new flows to a, one to b, and later packets of an old flow to a host
        // that is not counted (no new connection).
        acc.add_deltas(&[delta(Some(a), 1), delta(Some(a), 1), delta(Some(b), 1)]);
        acc.add_deltas(&[delta(Some("198.51.100.9".parse().expect("addr")), 0)]);
        let iv = acc.take(0, 60.0);
        assert_eq!(iv.edges.len(), 1);
        let addrs: Vec<IpAddr> = iv.addrs.iter().map(|(_, a)| *a).collect();
        assert_eq!(addrs, vec![a, b]);
        assert!(acc.take(60_000, 60.0).addrs.is_empty());
    }
}
