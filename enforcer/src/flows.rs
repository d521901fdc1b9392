//! Flow monitoring: polls `ENF_FLOWS` for per-flow deltas and feeds the graph;
//! decodes `ENF_EVENTS` (new flows, denies, audits) into the recent-flow buffer, the
//! flow log and live followers. Addresses and identities are resolved to workloads
//! here; unknown addresses become `world` nodes grouped by prefix.
use crate::graph::FastMap;
use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    net::{IpAddr, Ipv6Addr},
    sync::Arc,
    time::{Duration, SystemTime},
};

use enforcer_common::{
    counter::Reason,
    direction,
    flow::{EVENT_AUDIT, EVENT_DENY, FlowEvent, FlowKey, FlowStats},
    identity,
};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub mod totals;

use self::totals::{PairDelta, RulePoll};
pub use self::totals::{PairTotals, RuleKey, Totals};
use crate::{
    graph::{Delta, EdgeKey, Graph, Node, NodeKind, fmt_time, proto_name},
    inventory::{Inventory, Labels},
    policy::{Direction, PolicyFile, compiled::Compiled},
};

/// Default prefix lengths that group unknown (world) addresses into one node.
pub const WORLD_PREFIX_V4: u8 = 24;
pub const WORLD_PREFIX_V6: u8 = 64;

/// Names for everything a flow can mention, rebuilt on every policy apply.
#[derive(Debug, Clone, Default)]
pub struct Resolver {
    /// ifindex → workload name.
    endpoints: HashMap<u32, String>,
    workloads: HashMap<String, Labels>,
    by_addr: HashMap<IpAddr, String>,
    host_addrs: Vec<IpAddr>,
    cidrs: HashMap<u32, IpNet>,
    /// rule id → "policy NAME ingress[0] (line 12)".
    rules: HashMap<u32, String>,
    /// rule id → (policy name, "ingress[0]"): the labels of the rule's metrics.
    rule_labels: HashMap<u32, (String, String)>,
    /// deny-list index → "host.denyCIDRs[0] 203.0.113.0/24".
    deny: Vec<String>,
    /// (workload, direction) → names of the policies that make it default-deny.
    selecting: HashMap<(String, u8), Vec<String>>,
}

impl Resolver {
    pub fn new(
        compiled: &Compiled,
        inventory: &Inventory,
        policy: &PolicyFile,
        ifindex_of: impl Fn(&str) -> Option<u32>,
    ) -> Self {
        let mut r = Resolver::default();
        for ep in &compiled.endpoints {
            if let Some(i) = ifindex_of(&ep.interface) {
                r.endpoints.insert(i, ep.workload.clone());
            }
        }
        for w in &inventory.workloads {
            r.workloads.insert(w.name.clone(), w.labels.clone());
            for a in &w.addresses {
                r.by_addr.insert(*a, w.name.clone());
            }
            for dir in Direction::BOTH {
                let names: Vec<String> = policy
                    .policies
                    .iter()
                    .filter(|p| p.rules(dir).is_some() && p.selector.matches(&w.labels))
                    .map(|p| p.name.clone())
                    .collect();
                r.selecting.insert((w.name.clone(), dir.abi()), names);
            }
        }
        r.host_addrs.clone_from(&inventory.host.addresses);
        for (id, src) in &compiled.identities {
            if let crate::policy::compiled::IdentitySource::Cidr(n) = src {
                r.cidrs.insert(*id, *n);
            }
        }
        for rule in &compiled.rules {
            let line = rule
                .line
                .map(|l| format!(" (line {l})"))
                .unwrap_or_default();
            r.rule_labels.insert(
                rule.id,
                (
                    rule.policy.clone(),
                    format!("{}[{}]", rule.direction, rule.index),
                ),
            );
            r.rules.insert(
                rule.id,
                format!(
                    "policy {} {}[{}]{line}",
                    rule.policy, rule.direction, rule.index
                ),
            );
        }
        r.deny = policy
            .host
            .deny_cidrs
            .iter()
            .enumerate()
            .map(|(i, b)| format!("host.denyCIDRs[{i}] {}", b.cidr))
            .collect();
        r
    }

    /// Forgets the metric counters of workloads and rules this resolver does not
    /// know (after an inventory or policy change).
    pub fn prune_totals(&self, totals: &mut Totals) {
        let rules = totals::rule_label_set(self.rule_labels.values());
        totals.retain_known(|w| self.is_workload(w), |p, r| rules.contains(&(p, r)));
    }

    pub fn workload_of(&self, ifindex: u32) -> Option<&str> {
        self.endpoints.get(&ifindex).map(String::as_str)
    }

    pub fn is_workload(&self, id: &str) -> bool {
        self.workloads.contains_key(id)
    }

    /// The graph node of an address.
    pub fn node_for(&self, addr: IpAddr, peer_id: u32) -> Node {
        let (id, kind) = self.node_id_for(addr, peer_id);
        let labels = match kind {
            NodeKind::Workload => self.workloads.get(&id).cloned().unwrap_or_default(),
            _ => BTreeMap::new(),
        };
        Node { id, kind, labels }
    }

    /// The id and kind of [`node_for`](Self::node_for), without the labels (what the
    /// per-flow path needs; a node's labels are copied once per poll).
    pub fn node_id_for(&self, addr: IpAddr, peer_id: u32) -> (String, NodeKind) {
        if let Some(w) = self.by_addr.get(&addr) {
            return (w.clone(), NodeKind::Workload);
        }
        if peer_id == identity::HOST || self.host_addrs.contains(&addr) {
            return ("host".into(), NodeKind::Host);
        }
        if let Some(n) = self.cidrs.get(&peer_id) {
            return (format!("cidr:{n}"), NodeKind::Cidr);
        }
        let prefix = match addr {
            IpAddr::V4(_) => WORLD_PREFIX_V4,
            IpAddr::V6(_) => WORLD_PREFIX_V6,
        };
        let net = IpNet::new(addr, prefix).map(|n| n.trunc()).ok();
        (
            format!("world:{}", net.map_or(addr.to_string(), |n| n.to_string())),
            NodeKind::World,
        )
    }

    pub fn workload_node(&self, name: &str) -> Node {
        Node {
            id: name.into(),
            kind: NodeKind::Workload,
            labels: self.workloads.get(name).cloned().unwrap_or_default(),
        }
    }

    /// What decided a verdict as two short labels (policy, rule), for metrics: a
    /// policy rule is (`policy name`, `ingress[0]`); the rest name the mechanism:
    /// (`_deny_list`, `denyCIDRs[i]`), (`_default_deny`, direction),
    /// (`_not_selected`, direction), (`_established`, direction) for a connection
    /// allowed before the rule ids it carries were known, (`_other`, reason).
    pub fn rule_labels(&self, reason: Reason, rule: u32, dir: u8) -> (String, String) {
        let dir_name = if dir == direction::INGRESS {
            "ingress"
        } else {
            "egress"
        };
        let mech = |m: &str, r: &str| (m.to_owned(), r.to_owned());
        match reason {
            Reason::AllowPolicy | Reason::AllowEstablished if rule != 0 => self
                .rule_labels
                .get(&rule)
                .cloned()
                .unwrap_or_else(|| mech("_older_policy", dir_name)),
            Reason::AllowEstablished => mech("_established", dir_name),
            Reason::DropCidrDenied => mech("_deny_list", &format!("denyCIDRs[{rule}]")),
            Reason::DropPortNotDeclared | Reason::DropPeerNotAllowed | Reason::AllowAudit => {
                mech("_default_deny", dir_name)
            }
            Reason::AllowNotSelected => mech("_not_selected", dir_name),
            other => mech("_other", other.as_str()),
        }
    }

    /// What decided a verdict, in words an operator can look up in the policy file.
    pub fn decided_by(&self, reason: Reason, rule: u32, workload: &str, dir: u8) -> String {
        match reason {
            Reason::AllowPolicy | Reason::AllowEstablished if rule != 0 => self
                .rules
                .get(&rule)
                .cloned()
                .unwrap_or_else(|| format!("rule {rule} (from an older policy)")),
            Reason::AllowEstablished => "connection tracking (allowed earlier)".into(),
            Reason::DropCidrDenied => self
                .deny
                .get(rule as usize)
                .cloned()
                .unwrap_or_else(|| "host deny list".into()),
            Reason::DropPortNotDeclared | Reason::DropPeerNotAllowed | Reason::AllowAudit => {
                let pols = self
                    .selecting
                    .get(&(workload.to_owned(), dir))
                    .map(|v| v.join(", "))
                    .unwrap_or_default();
                format!(
                    "default deny: {workload} {} is selected by [{pols}] and no rule allows it",
                    if dir == direction::INGRESS {
                        "ingress"
                    } else {
                        "egress"
                    }
                )
            }
            Reason::AllowNotSelected => "no policy selects the workload in this direction".into(),
            Reason::DropMalformed => "malformed headers".into(),
            Reason::DropFragment => "fragment without an allowed first fragment".into(),
            Reason::DropInternal => "internal error (fail closed)".into(),
            Reason::AllowInfra | Reason::AllowPolicy => String::new(),
        }
    }
}

pub fn addr(bytes: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(bytes);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// Converts `bpf_ktime_get_ns` (CLOCK_MONOTONIC) to wall-clock time.
pub fn mono_to_wall(ns: u64) -> SystemTime {
    let now_wall = SystemTime::now();
    let now_mono = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32))
        .unwrap_or_default();
    let age = now_mono.saturating_sub(Duration::from_nanos(ns));
    now_wall.checked_sub(age).unwrap_or(now_wall)
}

fn mono_now_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

fn sub(a: &FlowStats, b: &FlowStats) -> FlowStats {
    // A counter lower than last time means the entry was evicted and recreated:
    // then all of it is new.
    if a.packets < b.packets || a.rev_packets < b.rev_packets || a.drop_packets < b.drop_packets {
        return *a;
    }
    FlowStats {
        packets: a.packets - b.packets,
        bytes: a.bytes.saturating_sub(b.bytes),
        rev_packets: a.rev_packets - b.rev_packets,
        rev_bytes: a.rev_bytes.saturating_sub(b.rev_bytes),
        drop_packets: a.drop_packets - b.drop_packets,
        drop_bytes: a.drop_bytes.saturating_sub(b.drop_bytes),
        ..*a
    }
}

/// Flow-map deltas into graph edges.
pub struct FlowTracker {
    prev: FastMap<FlowKey, FlowStats>,
    pub graph: Graph,
    pub edge_ttl: Duration,
    /// Flow entries idle this long are deleted from the kernel map.
    pub flow_idle: Duration,
    pub polls: u64,
    /// The last poll's deltas, for the baseline (`take_deltas`).
    last_deltas: Vec<Delta>,
    /// Cumulative per-pair, per-workload and per-rule counters, for metrics.
    pub totals: Totals,
}

impl FlowTracker {
    pub fn new(max_edges: usize, edge_ttl: Duration) -> Self {
        Self {
            prev: FastMap::default(),
            graph: Graph::new(max_edges),
            edge_ttl,
            flow_idle: Duration::from_secs(30),
            polls: 0,
            last_deltas: Vec::new(),
            totals: Totals::default(),
        }
    }

    /// Flows seen in the last poll.
    pub fn tracked(&self) -> usize {
        self.prev.len()
    }

    /// The deltas of the last poll (once): what the baseline detectors learn from.
    pub fn take_deltas(&mut self) -> Vec<Delta> {
        std::mem::take(&mut self.last_deltas)
    }

    /// Turns one snapshot of the flow map into graph deltas; returns the keys of
    /// idle flows to delete from the kernel map.
    pub fn poll(
        &mut self,
        flows: Vec<(FlowKey, FlowStats)>,
        r: &Resolver,
        interval: Duration,
    ) -> Vec<FlowKey> {
        self.polls += 1;
        let now_ns = mono_now_ns();
        let idle_ns = self.flow_idle.as_nanos() as u64;
        let mut nodes: FastMap<String, Node> = FastMap::default();
        let mut deltas = Vec::new();
        let mut idle = Vec::new();
        let mut seen = FastMap::with_capacity_and_hasher(flows.len(), Default::default());
        let mut rules = RulePoll::default();
        // What decided, per (reason, rule, workload, direction): formatted once a poll.
        let mut decided: FastMap<(u8, u32, &str, u8), Arc<str>> = FastMap::default();
        let now = SystemTime::now();
        for (k, total) in flows {
            let before = self.prev.get(&k).copied();
            let d = before.map_or(total, |p| sub(&total, &p));
            if now_ns.saturating_sub(total.last_seen_ns) > idle_ns {
                idle.push(k);
            } else {
                seen.insert(k, total);
            }
            if d.packets == 0 && d.rev_packets == 0 && d.drop_packets == 0 {
                continue;
            }
            let Some(wl) = r.workload_of(k.ifindex) else {
                continue;
            };
            let wnode = (wl.to_owned(), NodeKind::Workload);
            let (src, dst) = if k.dir == direction::EGRESS {
                (wnode, r.node_id_for(addr(k.dst), k.peer_id))
            } else {
                (r.node_id_for(addr(k.src), k.peer_id), wnode)
            };
            // A node's labels are copied once a poll, not once a flow.
            for (id, kind) in [&src, &dst] {
                if !nodes.contains_key(id) {
                    let node = match kind {
                        NodeKind::Workload => r.workload_node(id),
                        _ => Node {
                            id: id.clone(),
                            kind: *kind,
                            labels: BTreeMap::new(),
                        },
                    };
                    nodes.insert(id.clone(), node);
                }
            }
            // Traffic between two local workloads is seen twice (sender's egress,
            // receiver's ingress): bytes count at the first interface on the path,
            // drops wherever they happened.
            let primary = k.dir == direction::EGRESS || !r.is_workload(&src.0);
            let port = if k.proto == enforcer_common::proto::TCP
                || k.proto == enforcer_common::proto::UDP
            {
                k.dport
            } else {
                0
            };
            let reason = Reason::try_from(total.reason).ok();
            let dropped_now = d.drop_packets > 0;
            // Both observations of a workload-to-workload flow can explain it; the
            // graph keeps the most telling: a drop, else a policy rule.
            let reason_weight = match reason {
                Some(rs) if rs.is_drop() => 3,
                Some(_) if total.rule != 0 => 2,
                Some(_) if primary => 1,
                _ => 0,
            };
            let (last_reason, decided_by): (&'static str, Arc<str>) = match reason {
                Some(rs) if reason_weight > 0 => (
                    rs.as_str(),
                    decided
                        .entry((total.reason, total.rule, wl, k.dir))
                        .or_insert_with(|| r.decided_by(rs, total.rule, wl, k.dir).into())
                        .clone(),
                ),
                _ => ("", Arc::from("")),
            };
            if let Some(rs) = reason {
                rules.add(total.rule, rs, k.dir, d.packets + d.rev_packets);
            }
            if before.is_none() {
                self.totals.add_connection(wl, k.dir);
            }
            let pd = PairDelta {
                packets: if primary { d.packets } else { 0 },
                bytes: if primary { d.bytes } else { 0 },
                reply_packets: if primary { d.rev_packets } else { 0 },
                reply_bytes: if primary { d.rev_bytes } else { 0 },
                connections: u64::from(primary && before.is_none()),
                dropped_packets: d.drop_packets,
                drop_reason: reason.filter(|rs| rs.is_drop()),
            };
            self.totals
                .add_pair_of((&src.0, src.1), (&dst.0, dst.1), &pd, now);
            deltas.push(Delta {
                key: EdgeKey {
                    src: src.0,
                    dst: dst.0,
                    proto: k.proto,
                    port,
                },
                packets: pd.packets,
                bytes: pd.bytes,
                reply_packets: pd.reply_packets,
                reply_bytes: pd.reply_bytes,
                dropped_packets: d.drop_packets,
                dropped_bytes: d.drop_bytes,
                new_connections: pd.connections,
                new_denied_connections: u64::from(
                    dropped_now && before.is_none_or(|p| p.drop_packets == 0),
                ),
                last_reason,
                decided_by,
                reason_weight,
                first_seen: mono_to_wall(total.first_seen_ns),
                last_seen: mono_to_wall(total.last_seen_ns),
                dst_addr: matches!(dst.1, NodeKind::World | NodeKind::Cidr).then(|| addr(k.dst)),
            });
        }
        self.prev = seen;
        rules.fold_into(&mut self.totals, |reason, rule, dir| {
            r.rule_labels(reason, rule, dir)
        });
        let nodes: Vec<Node> = nodes.into_values().collect();
        self.graph.apply(&nodes, &deltas, interval.as_secs_f64());
        self.last_deltas = deltas;
        if let Some(cutoff) = now.checked_sub(self.edge_ttl) {
            self.graph.expire(cutoff);
            self.totals.expire(cutoff);
        }
        idle
    }
}

/// One flow event as logged, kept and streamed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowRecord {
    pub time: String,
    /// `new`, `deny` or `audit`.
    pub kind: String,
    /// The workload whose interface saw it.
    pub workload: String,
    /// Of the flow, relative to `workload`.
    pub direction: String,
    pub src: String,
    pub src_port: u16,
    pub dst: String,
    pub dst_port: u16,
    pub protocol: String,
    pub src_name: String,
    pub dst_name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub src_labels: Labels,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dst_labels: Labels,
    /// `allowed`, `dropped` or `audit`.
    pub verdict: String,
    pub reason: String,
    /// The policy rule, deny-list entry or default deny that decided.
    pub decided_by: String,
    /// Whether the packet was a reply of the flow.
    pub reply: bool,
    pub packet_bytes: u32,
}

impl FlowRecord {
    pub fn from_event(ev: &FlowEvent, r: &Resolver) -> Self {
        let k = &ev.key;
        let wl = r.workload_of(k.ifindex).unwrap_or("?").to_owned();
        let wnode = r.workload_node(&wl);
        let (s, d) = (addr(k.src), addr(k.dst));
        let (snode, dnode) = if k.dir == direction::EGRESS {
            (wnode, r.node_for(d, k.peer_id))
        } else {
            (r.node_for(s, k.peer_id), wnode)
        };
        let reason = Reason::try_from(ev.reason).ok();
        let verdict = match ev.header.kind {
            EVENT_DENY => "dropped",
            EVENT_AUDIT => "audit",
            _ => match reason {
                Some(r) if r.is_drop() => "dropped",
                Some(Reason::AllowAudit) => "audit",
                _ => "allowed",
            },
        };
        FlowRecord {
            time: fmt_time(mono_to_wall(ev.header.ts_ns)),
            kind: match ev.header.kind {
                EVENT_DENY => "deny",
                EVENT_AUDIT => "audit",
                _ => "new",
            }
            .into(),
            direction: if k.dir == direction::EGRESS {
                "egress"
            } else {
                "ingress"
            }
            .into(),
            src: s.to_string(),
            src_port: k.sport,
            dst: d.to_string(),
            dst_port: k.dport,
            protocol: proto_name(k.proto),
            src_name: snode.id.clone(),
            dst_name: dnode.id.clone(),
            src_labels: snode.labels,
            dst_labels: dnode.labels,
            verdict: verdict.into(),
            reason: reason.map_or_else(|| format!("unknown_{}", ev.reason), |r| r.as_str().into()),
            decided_by: reason
                .map(|rs| r.decided_by(rs, ev.rule, &wl, k.dir))
                .unwrap_or_default(),
            workload: wl,
            reply: ev.reply != 0,
            packet_bytes: ev.pkt_len,
        }
    }
}

/// Filters shared by `/v1/flows` and `enforcer flows`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowFilter {
    /// Source: workload name, node id or IP address.
    pub from: Option<String>,
    pub to: Option<String>,
    pub port: Option<u16>,
    /// `allowed`, `dropped` or `audit`.
    pub verdict: Option<String>,
    /// Either side.
    pub workload: Option<String>,
}

impl FlowFilter {
    pub fn matches(&self, f: &FlowRecord) -> bool {
        let side = |want: &Option<String>, name: &str, ip: &str| {
            want.as_ref().is_none_or(|w| w == name || w == ip)
        };
        side(&self.from, &f.src_name, &f.src)
            && side(&self.to, &f.dst_name, &f.dst)
            && self.port.is_none_or(|p| p == f.dst_port)
            && self.verdict.as_ref().is_none_or(|v| *v == f.verdict)
            && self
                .workload
                .as_ref()
                .is_none_or(|w| *w == f.src_name || *w == f.dst_name)
    }
}

/// The most recent flow records, bounded.
pub struct Recent {
    buf: VecDeque<FlowRecord>,
    cap: usize,
    pub total: u64,
}

impl Recent {
    pub fn new(cap: usize) -> Self {
        Self {
            buf: VecDeque::with_capacity(cap.min(4096)),
            cap,
            total: 0,
        }
    }

    pub fn push(&mut self, r: FlowRecord) {
        if self.buf.len() == self.cap {
            self.buf.pop_front();
        }
        self.buf.push_back(r);
        self.total += 1;
    }

    /// Up to `limit` newest matching records, oldest first.
    pub fn query(&self, f: &FlowFilter, limit: usize) -> Vec<FlowRecord> {
        let mut out: Vec<FlowRecord> = self
            .buf
            .iter()
            .rev()
            .filter(|r| f.matches(r))
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        out
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn mapped_addresses_decode_to_ipv4() {
        let mut b = [0u8; 16];
        b[10] = 0xff;
        b[11] = 0xff;
        b[12..].copy_from_slice(&[10, 0, 0, 1]);
        assert_eq!(addr(b), IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
        let v6: Ipv6Addr = "fd00::1".parse().expect("addr");
        assert_eq!(addr(v6.octets()), IpAddr::V6(v6));
    }

    #[test]
    fn world_addresses_group_by_prefix() {
        let r = Resolver::default();
        let n = r.node_for("198.51.100.77".parse().expect("ip"), identity::WORLD);
        assert_eq!(n.id, "world:198.51.100.0/24");
        assert_eq!(n.kind, NodeKind::World);
    }

    #[test]
    fn deltas_survive_recreated_entries() {
        let a = FlowStats {
            packets: 5,
            bytes: 500,
            ..Default::default()
        };
        let b = FlowStats {
            packets: 9,
            bytes: 900,
            ..Default::default()
        };
        assert_eq!(sub(&b, &a).bytes, 400);
        assert_eq!(sub(&a, &b).bytes, 500);
    }

    #[test]
    fn recent_is_bounded_and_filtered() {
        let mut r = Recent::new(2);
        let rec = |dst_port| FlowRecord {
            time: String::new(),
            kind: "new".into(),
            workload: "web".into(),
            direction: "ingress".into(),
            src: "10.0.0.2".into(),
            src_port: 1,
            dst: "10.0.0.1".into(),
            dst_port,
            protocol: "TCP".into(),
            src_name: "client".into(),
            dst_name: "web".into(),
            src_labels: Labels::new(),
            dst_labels: Labels::new(),
            verdict: "allowed".into(),
            reason: "allowed_by_policy".into(),
            decided_by: String::new(),
            reply: false,
            packet_bytes: 60,
        };
        for p in [1, 2, 3] {
            r.push(rec(p));
        }
        assert_eq!(r.total, 3);
        let all = r.query(&FlowFilter::default(), 10);
        assert_eq!(
            all.iter().map(|f| f.dst_port).collect::<Vec<_>>(),
            vec![2, 3]
        );
        let f = FlowFilter {
            port: Some(3),
            from: Some("client".into()),
            ..Default::default()
        };
        assert_eq!(r.query(&f, 10).len(), 1);
    }
}
