//! Synthetic inputs shared by the agent benchmarks: an inventory of workloads, a
//! policy, a resolver, and flow-map snapshots of a chosen shape. Deterministic (no
//! randomness), so runs compare.
#![allow(dead_code)] // each bench uses a part

use std::{fmt::Write as _, time::Duration};

use enforcer::{
    flows::Resolver,
    inventory::Inventory,
    policy::{self, PolicyFile, compiled::Compiled},
};
use enforcer_common::{
    direction,
    flow::{FlowKey, FlowStats},
    identity, proto,
};

/// Workloads in the synthetic inventory; ifindex of workload `i` is `FIRST_IFINDEX + i`.
pub const WORKLOADS: usize = 50;
pub const FIRST_IFINDEX: u32 = 100;

fn workload_addr(i: usize) -> [u8; 4] {
    [10, 90, (i / 250) as u8, (10 + i % 250) as u8]
}

/// `WORKLOADS` workloads `w0…`, labelled `app: wN`, on `lw-wN`.
pub fn inventory() -> Inventory {
    let mut y = String::from("host:\n  addresses: [10.90.0.1]\nworkloads:\n");
    for i in 0..WORKLOADS {
        let [a, b, c, d] = workload_addr(i);
        let _ = write!(
            y,
            "  - name: w{i}\n    labels: {{app: w{i}, tier: bench}}\n    interface: lw-w{i}\n    addresses: [{a}.{b}.{c}.{d}]\n"
        );
    }
    Inventory::from_str(&y, "bench-inventory").expect("synthetic inventory")
}

/// One policy selecting every workload, egress to anything on TCP.
pub fn small_policy() -> PolicyFile {
    PolicyFile::parse(
        "version: 1\npolicies:\n  - name: all\n    selector: {tier: bench}\n    egress:\n      - ports: [{protocol: TCP}]\n",
        "bench-policy",
    )
    .expect("synthetic policy")
}

pub fn resolver() -> (Resolver, Compiled) {
    let inv = inventory();
    let pol = small_policy();
    let compiled = policy::compile(&pol, &inv).expect("compile");
    let r = Resolver::new(&compiled, &inv, &pol, |iface: &str| {
        iface
            .strip_prefix("lw-w")
            .and_then(|n| n.parse::<u32>().ok())
            .map(|n| FIRST_IFINDEX + n)
    });
    (r, compiled)
}

fn mapped(a: [u8; 4]) -> [u8; 16] {
    let mut m = [0u8; 16];
    m[10] = 0xff;
    m[11] = 0xff;
    m[12..].copy_from_slice(&a);
    m
}

pub fn mono_now_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// A flow-map snapshot of `flows` flows spread evenly over `edges` graph edges
/// (edge = workload → one world /24 on one TCP port), every flow with `packets`
/// packets and seen just now.
pub fn snapshot(flows: usize, edges: usize, packets: u64) -> Vec<(FlowKey, FlowStats)> {
    assert!(edges >= 1 && edges <= flows);
    let now = mono_now_ns();
    (0..flows)
        .map(|j| {
            let e = j % edges;
            let w = e % WORKLOADS;
            let port = 1000 + (e / WORKLOADS) as u16;
            let n = j / edges; // flow number within its edge
            let key = FlowKey {
                ifindex: FIRST_IFINDEX + w as u32,
                peer_id: identity::WORLD,
                src: mapped(workload_addr(w)),
                // Every flow of an edge goes to 203.0.113.0/24 (one world node);
                // they differ in the last byte and the source port.
                dst: mapped([203, 0, 113, (n % 250) as u8]),
                sport: 20_000 + (n / 250) as u16,
                dport: port,
                proto: proto::TCP,
                dir: direction::EGRESS,
                _pad: [0; 2],
            };
            let stats = FlowStats {
                packets,
                bytes: packets * 100,
                rev_packets: packets,
                rev_bytes: packets * 60,
                first_seen_ns: now.saturating_sub(1_000_000_000),
                last_seen_ns: now,
                reason: enforcer_common::counter::Reason::AllowPolicy as u8,
                rule: 1,
                ..FlowStats::default()
            };
            (key, stats)
        })
        .collect()
}

/// Bumps every flow's counters as one more poll interval would.
pub fn advance(snap: &mut [(FlowKey, FlowStats)]) {
    let now = mono_now_ns();
    for (_, s) in snap {
        s.packets += 3;
        s.bytes += 300;
        s.rev_packets += 2;
        s.rev_bytes += 120;
        s.last_seen_ns = now;
    }
}

pub const POLL: Duration = Duration::from_secs(1);

/// A policy file of `rules` ingress rules, each allowing one distinct CIDR peer on
/// TCP 5432, selecting workload `w0`. The CIDRs are distinct /32s in 100.64.0.0/10
/// onwards (no overlap, so every rule is its own identity and map entry).
pub fn policy_yaml(rules: usize) -> String {
    let mut y = String::with_capacity(rules * 64);
    y.push_str("version: 1\npolicies:\n  - name: big\n    selector: {app: w0}\n    ingress:\n");
    for i in 0..rules as u32 {
        let a = 0x6440_0000u32 + i * 4; // 100.64.0.0 + 4i: distinct /30s
        let [b0, b1, b2, b3] = a.to_be_bytes();
        let _ = writeln!(
            y,
            "      - from: [{{cidr: {b0}.{b1}.{b2}.{b3}/30}}]\n        ports: [{{port: 5432}}]"
        );
    }
    y
}
