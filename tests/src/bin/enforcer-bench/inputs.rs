//! Generated inputs: CIDR lists, the enforcer's inventory and policies, and the
//! equivalent nftables and iptables rulesets. Deterministic (a fixed-seed
//! xorshift), so every run and every tool gets the same lists.

use std::{
    collections::HashSet,
    fmt::Write as _,
    net::Ipv4Addr,
    sync::{Mutex, PoisonError},
    time::Instant,
};

use enforcer::{
    inventory::Inventory,
    policy::{self, PolicyFile, compiled::Compiled},
};
use ipnet::Ipv4Net;

use crate::util::{Ctx as _, Result};

/// The two ends of the measured path, routed through the lab's host namespace.
pub const A4: Ipv4Addr = Ipv4Addr::new(10, 201, 1, 2);
pub const B4: Ipv4Addr = Ipv4Addr::new(10, 201, 2, 2);
pub const GW_A4: Ipv4Addr = Ipv4Addr::new(10, 201, 1, 1);
pub const GW_B4: Ipv4Addr = Ipv4Addr::new(10, 201, 2, 1);
/// UDP flood destination port; iperf3; the connection-rate server.
pub const UDP_PORT: u16 = 9;
pub const IPERF_PORT: u16 = 5201;
pub const CONN_PORT: u16 = 7000;
/// Extra addresses of `a` (10.201.1.100 onwards) that the connection-rate clients
/// rotate through: with one source address the 64k ports repeat after 64k
/// connections and their tuples are still in the enforcer's connection-tracking and
/// flow maps (an established, not a new, connection); with 128 they never repeat
/// within a run.
pub const CONN_SOURCES: u8 = 128;

pub fn conn_source(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 201, 1, 100 + (i % CONN_SOURCES as usize) as u8)
}

/// UDP ports the agent test spreads its edges over.
pub const EDGE_PORT0: u16 = 10_000;

/// The lab: two outside hosts `a` and `b`, each on its own link to the host
/// namespace, which routes between them (`lx-a`, `lx-b` are the host-side ends).
pub fn lab_yaml() -> String {
    format!(
        "name: bench\nexternals:\n  - {{name: a, address4: {A4}/24, address6: \"fd00:201:1::2/64\"}}\n  - {{name: b, address4: {B4}/24, address6: \"fd00:201:2::2/64\"}}\n"
    )
}

/// The enforcer's inventory for that lab: `a` and `b` are workloads behind `lx-a`
/// and `lx-b`.
pub fn inventory_yaml() -> String {
    let extra: String = (0..CONN_SOURCES as usize)
        .map(|i| format!(", {}", conn_source(i)))
        .collect();
    format!(
        "host:\n  addresses: [{GW_A4}, {GW_B4}]\nworkloads:\n  - name: a\n    labels: {{role: a, tier: bench}}\n    interface: lx-a\n    addresses: [{A4}, \"fd00:201:1::2\"{extra}]\n  - name: b\n    labels: {{role: b, tier: bench}}\n    interface: lx-b\n    addresses: [{B4}, \"fd00:201:2::2\"]\n"
    )
}

/// `n` distinct, non-overlapping IPv4 prefixes (lengths 20 to 32, each in its own
/// /20 block), none in 10.0.0.0/8 (the lab) or 127.0.0.0/8. The first `k` of
/// `cidrs(n)` are `cidrs(k)`.
pub fn cidrs(n: usize) -> Vec<Ipv4Net> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut blocks = HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let r = next();
        let first = 11 + (r % 213) as u32; // 11..=223
        if first == 127 {
            continue;
        }
        let block = (first << 12) | ((r >> 8) as u32 & 0xfff); // a /20
        if !blocks.insert(block) {
            continue;
        }
        let len = 20 + ((r >> 24) % 13) as u8; // 20..=32
        // Anywhere inside the /20; `trunc` aligns it to its length (≥ 20).
        let addr = (block << 12) | ((r >> 32) as u32 & 0xfff);
        let net = Ipv4Net::new(Ipv4Addr::from(addr), len).map(|n| n.trunc());
        if let Ok(net) = net {
            out.push(net);
        }
    }
    out
}

/// Ports every datapath policy allows between `a` and `b`, both ways.
const PORTS: &str =
    "[{port: 9, protocol: UDP}, {port: 5201, protocol: TCP}, {port: 7000, protocol: TCP}]";

/// What the enforcer is given in one configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnforcerPolicy {
    /// Host deny list of this many CIDRs (neither end in it) plus the policy that
    /// selects both workloads in both directions.
    Deny(usize),
    /// As `Deny(0)`, and `b`'s ingress also allows this many CIDR peers: the
    /// ipcache and policy maps hold them.
    CidrPeers(usize),
    /// The agent test: `Deny(1000)`, and any UDP port (edges over many ports).
    Agent,
}

pub fn policy_yaml(p: EnforcerPolicy) -> String {
    let (deny, peers, any_udp) = match p {
        EnforcerPolicy::Deny(n) => (n, 0, false),
        EnforcerPolicy::CidrPeers(n) => (0, n, false),
        EnforcerPolicy::Agent => (1000, 0, true),
    };
    let mut y = String::with_capacity(64 + (deny + peers) * 24);
    y.push_str("version: 1\n");
    if deny > 0 {
        y.push_str("host:\n  denyCIDRs:\n");
        for c in cidrs(deny) {
            let _ = writeln!(y, "    - {c}");
        }
    }
    let ports = if any_udp {
        "[{port: 9, protocol: UDP}, {port: 5201, protocol: TCP}, {port: 7000, protocol: TCP}, {protocol: UDP}]"
    } else {
        PORTS
    };
    let _ = write!(
        y,
        "policies:\n  - name: bench\n    selector: {{tier: bench}}\n    ingress:\n      - from: [{{selector: {{tier: bench}}}}]\n        ports: {ports}\n    egress:\n      - to: [{{selector: {{tier: bench}}}}]\n        ports: {ports}\n"
    );
    if peers > 0 {
        y.push_str("  - name: cidr-peers\n    selector: {role: b}\n    ingress:\n      - from:\n");
        for c in cidrs(peers) {
            let _ = writeln!(y, "          - cidr: {c}");
        }
        let _ = writeln!(y, "        ports: {PORTS}");
    }
    y
}

/// A policy of `rules` ingress rules for `b`, each one CIDR peer on TCP 5432, on
/// top of the datapath policy: the "100k-rule policy" of the apply-time test.
pub fn many_rules_yaml(rules: usize) -> String {
    let mut y = policy_yaml(EnforcerPolicy::Agent);
    y.push_str("  - name: many-rules\n    selector: {role: b}\n    ingress:\n");
    for c in cidrs(rules) {
        let _ = writeln!(
            y,
            "      - from: [{{cidr: {c}}}]\n        ports: [{{port: 5432}}]"
        );
    }
    y
}

/// The compiled policy and the seconds parsing and compiling it took. Kept for the
/// process: compiling a large deny list or many CIDR peers takes long (see
/// docs/benchmarks.md), and every section uses the same few.
pub fn compile_timed(p: EnforcerPolicy) -> Result<(Compiled, f64)> {
    static CACHE: Mutex<Vec<(EnforcerPolicy, Compiled, f64)>> = Mutex::new(Vec::new());
    let mut cache = CACHE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, c, secs)) = cache.iter().find(|(k, _, _)| *k == p) {
        return Ok((c.clone(), *secs));
    }
    let start = Instant::now();
    let inv = Inventory::from_str(&inventory_yaml(), "bench-inventory").ctx("bench inventory")?;
    let pol = PolicyFile::parse(&policy_yaml(p), "bench-policy").ctx("bench policy")?;
    let c = policy::compile(&pol, &inv).ctx("compiling the bench policy")?;
    let secs = start.elapsed().as_secs_f64();
    cache.push((p, c.clone(), secs));
    Ok((c, secs))
}

pub fn compile(p: EnforcerPolicy) -> Result<Compiled> {
    compile_timed(p).map(|(c, _)| c)
}

/// nftables: one table in the router namespace with the CIDRs in a named interval
/// set, checked against source and destination (the deny list's semantics: a peer
/// in the list is dropped in both directions).
pub fn nft_ruleset(n: usize) -> String {
    let mut s = String::with_capacity(64 + n * 20);
    s.push_str("table inet enfbench {\n  set deny4 {\n    type ipv4_addr\n    flags interval\n");
    if n > 0 {
        s.push_str("    elements = {\n");
        let list = cidrs(n);
        for (i, c) in list.iter().enumerate() {
            let sep = if i + 1 == list.len() { "" } else { "," };
            let _ = writeln!(s, "      {c}{sep}");
        }
        s.push_str("    }\n");
    }
    s.push_str(
        "  }\n  chain bench_forward {\n    type filter hook forward priority filter; policy accept;\n    ip saddr @deny4 drop\n    ip daddr @deny4 drop\n  }\n}\n",
    );
    s
}

/// iptables: `n` linear rules `-A FORWARD -s CIDR -j DROP` (source only: one rule
/// per CIDR, as usually written; both directions would double the rules).
pub fn iptables_ruleset(n: usize) -> String {
    let mut s = String::with_capacity(64 + n * 40);
    s.push_str("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    for c in cidrs(n) {
        let _ = writeln!(s, "-A FORWARD -s {c} -j DROP");
    }
    s.push_str("COMMIT\n");
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn cidrs_are_distinct_prefixes_outside_the_lab() {
        let v = super::cidrs(5000);
        let set: std::collections::HashSet<_> = v.iter().collect();
        assert_eq!(set.len(), 5000);
        for c in &v {
            assert_eq!(*c, c.trunc());
            assert_ne!(c.addr().octets()[0], 10);
            assert_ne!(c.addr().octets()[0], 127);
        }
        assert_eq!(super::cidrs(10), v[..10]);
    }
}
