//! Test generators for the policy property tests: random policies and inventories
//! drawn from small pools (so that overlaps are common), and their YAML rendering.
use std::{fmt::Write as _, net::IpAddr};

use ipnet::IpNet;
use proptest::prelude::*;

use super::{
    CidrBlock, Direction, HostPolicy, Peer, Peers, Policy, PolicyFile, PortSpec, Ports, Protocol,
    Rule, Selector,
};
use crate::inventory::{Host, Inventory, Labels, Mode, Workload};

pub(super) const LABEL_KEYS: [&str; 2] = ["app", "env"];
pub(super) const LABEL_VALUES: [&str; 2] = ["a", "b"];

/// Addresses workloads and the host may own.
pub(super) const OWNABLE: [&str; 10] = [
    "10.0.0.1",
    "10.0.0.2",
    "10.0.0.3",
    "10.0.1.1",
    "10.0.1.2",
    "192.168.1.1",
    "fd00::1",
    "fd00::2",
    "fd00::1:1",
    "2001:db8::5",
];

/// Addresses nobody owns, inside and outside the prefixes below.
pub(super) const OUTSIDERS: [&str; 9] = [
    "10.0.0.5",
    "10.200.0.1",
    "8.8.8.8",
    "192.168.1.77",
    "fd00::3",
    "fd00::ff:1",
    "2001:db8::1",
    "2a00::1",
    "172.16.0.1",
];

/// Overlapping prefixes, `/0` of both families and IPv6 prefixes that contain the
/// IPv4-mapped range (`::/1`, `::/64`) included.
pub(super) const PREFIXES: [&str; 17] = [
    "0.0.0.0/0",
    "10.0.0.0/8",
    "10.0.0.0/16",
    "10.0.0.0/24",
    "10.0.0.0/30",
    "10.0.0.2/32",
    "10.0.1.0/24",
    "192.168.0.0/16",
    "192.168.1.1/32",
    "::/0",
    "::/1",
    "::/64",
    "fd00::/8",
    "fd00::/64",
    "fd00::/126",
    "fd00::2/128",
    "2001:db8::/32",
];

pub(super) fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

pub(super) fn prefix(i: usize) -> IpNet {
    PREFIXES[i % PREFIXES.len()].parse().expect("test prefix")
}

pub(super) fn labels() -> impl Strategy<Value = Labels> {
    proptest::collection::vec(
        proptest::option::of(0..LABEL_VALUES.len()),
        LABEL_KEYS.len(),
    )
    .prop_map(|vals| {
        LABEL_KEYS
            .iter()
            .zip(vals)
            .filter_map(|(k, v)| v.map(|v| (k.to_string(), LABEL_VALUES[v].to_string())))
            .collect()
    })
}

pub(super) fn cidr_block() -> impl Strategy<Value = CidrBlock> {
    (
        0..PREFIXES.len(),
        proptest::collection::vec(0..PREFIXES.len(), 0..3),
    )
        .prop_map(|(c, ex)| {
            let cidr = prefix(c);
            let mut except: Vec<IpNet> = ex
                .into_iter()
                .map(prefix)
                .filter(|e| *e != cidr && cidr.contains(e))
                .collect();
            except.dedup();
            CidrBlock { cidr, except }
        })
}

pub(super) fn peer() -> impl Strategy<Value = Peer> {
    prop_oneof![
        3 => labels().prop_map(|l| Peer::Workloads(Selector { match_labels: l })),
        1 => Just(Peer::Host),
        4 => cidr_block().prop_map(Peer::Cidr),
    ]
}

pub(super) fn port_spec() -> impl Strategy<Value = PortSpec> {
    let spec = |protocol, ports| PortSpec { protocol, ports };
    prop_oneof![
        Just(spec(Protocol::Tcp, None)),
        Just(spec(Protocol::Udp, None)),
        Just(spec(Protocol::Tcp, Some((80, 80)))),
        Just(spec(Protocol::Tcp, Some((8000, 8002)))),
        Just(spec(Protocol::Udp, Some((53, 53)))),
        Just(spec(Protocol::Udp, Some((8001, 8001)))),
        Just(spec(Protocol::Tcp, Some((1, 65535)))),
        Just(spec(Protocol::Icmp, None)),
        Just(spec(Protocol::Icmpv4, None)),
        Just(spec(Protocol::Icmpv6, None)),
    ]
}

pub(super) fn rule() -> impl Strategy<Value = Rule> {
    let peers = prop_oneof![
        1 => Just(Peers::Any),
        4 => proptest::collection::vec(peer(), 1..4).prop_map(Peers::Only),
    ];
    let ports = prop_oneof![
        1 => Just(Ports::Any),
        3 => proptest::collection::vec(port_spec(), 1..4).prop_map(Ports::Only),
    ];
    (peers, ports).prop_map(|(peers, ports)| Rule {
        peers,
        ports,
        line: None,
    })
}

pub(super) fn rules() -> impl Strategy<Value = Option<Vec<Rule>>> {
    proptest::option::of(proptest::collection::vec(rule(), 0..3))
}

pub(super) fn policy_file() -> impl Strategy<Value = PolicyFile> {
    let policy = (labels(), rules(), rules());
    (
        // Mostly without a deny list: a denied peer hides the policy decision.
        prop_oneof![
            3 => Just(Vec::new()),
            1 => proptest::collection::vec(cidr_block(), 1..3),
        ],
        proptest::collection::vec(policy, 0..4),
    )
        .prop_map(|(deny, policies)| PolicyFile {
            origin: "policy.yaml".into(),
            version: 1,
            host: HostPolicy { deny_cidrs: deny },
            policies: policies
                .into_iter()
                .enumerate()
                .map(|(i, (sel, ingress, egress))| Policy {
                    name: format!("p{i}"),
                    selector: Selector { match_labels: sel },
                    ingress: if ingress.is_none() && egress.is_none() {
                        Some(Vec::new())
                    } else {
                        ingress
                    },
                    egress,
                })
                .collect(),
        })
}

pub(super) fn inventory() -> impl Strategy<Value = Inventory> {
    let modes = prop_oneof![Just(Mode::Enforce), Just(Mode::Audit), Just(Mode::Off)];
    (
        proptest::collection::vec((labels(), modes), 1..5),
        // Owner of each ownable address: a workload, the host, or nobody.
        proptest::collection::vec(0..8usize, OWNABLE.len()),
    )
        .prop_map(|(wls, owners)| {
            let n = wls.len();
            let owned_by = |who: usize| -> Vec<IpAddr> {
                OWNABLE
                    .iter()
                    .zip(&owners)
                    .filter(|(_, o)| **o % (n + 2) == who)
                    .map(|(a, _)| ip(a))
                    .collect()
            };
            Inventory {
                origin: "inventory.yaml".into(),
                host: Host {
                    addresses: owned_by(n),
                },
                workloads: wls
                    .into_iter()
                    .enumerate()
                    .map(|(i, (labels, mode))| Workload {
                        name: format!("w{i}"),
                        labels,
                        interface: format!("lw{i}"),
                        addresses: owned_by(i),
                        mode,
                    })
                    .collect(),
            }
        })
}

// ---------------------------------------------------------------------------------
// Rendering the models as YAML, the way an operator would write them.

pub(super) fn yaml_labels(l: &Labels) -> String {
    let items: Vec<String> = l.iter().map(|(k, v)| format!("{k}: \"{v}\"")).collect();
    format!("{{{}}}", items.join(", "))
}

pub(super) fn yaml_block(b: &CidrBlock) -> String {
    if b.except.is_empty() {
        format!("{{cidr: \"{}\"}}", b.cidr)
    } else {
        let ex: Vec<String> = b.except.iter().map(|e| format!("\"{e}\"")).collect();
        format!("{{cidr: \"{}\", except: [{}]}}", b.cidr, ex.join(", "))
    }
}

pub(super) fn render_policy(pf: &PolicyFile) -> String {
    let mut y = String::from("version: 1\nhost:\n  denyCIDRs:\n");
    for b in &pf.host.deny_cidrs {
        let _ = writeln!(y, "    - {}", yaml_block(b));
    }
    y.push_str("policies:\n");
    for p in &pf.policies {
        let _ = writeln!(
            y,
            "  - name: {}\n    selector: {}",
            p.name,
            yaml_labels(&p.selector.match_labels)
        );
        for dir in Direction::BOTH {
            let Some(rules) = p.rules(dir) else { continue };
            if rules.is_empty() {
                let _ = writeln!(y, "    {dir}: []");
                continue;
            }
            let _ = writeln!(y, "    {dir}:");
            for r in rules {
                y.push_str("      - ");
                if r.peers == Peers::Any && r.ports == Ports::Any {
                    y.push_str("{}\n");
                    continue;
                }
                let key = if dir == Direction::Ingress {
                    "from"
                } else {
                    "to"
                };
                let mut indent = "";
                if let Peers::Only(peers) = &r.peers {
                    let _ = writeln!(y, "{key}:");
                    indent = "        ";
                    for peer in peers {
                        let text = match peer {
                            Peer::Workloads(s) => {
                                format!("{{selector: {}}}", yaml_labels(&s.match_labels))
                            }
                            Peer::Host => "{host: true}".to_string(),
                            Peer::Cidr(b) => yaml_block(b),
                        };
                        let _ = writeln!(y, "          - {text}");
                    }
                }
                if let Ports::Only(specs) = &r.ports {
                    let _ = writeln!(y, "{indent}ports:");
                    for s in specs {
                        let text = match s.ports {
                            None => format!("{{protocol: {}}}", s.protocol),
                            Some((a, b)) if a == b => {
                                format!("{{port: {a}, protocol: {}}}", s.protocol)
                            }
                            Some((a, b)) => {
                                format!("{{port: {a}, endPort: {b}, protocol: {}}}", s.protocol)
                            }
                        };
                        let _ = writeln!(y, "          - {text}");
                    }
                }
            }
        }
    }
    y
}

pub(super) fn render_inventory(inv: &Inventory) -> String {
    let addrs = |a: &[IpAddr]| {
        a.iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut y = format!(
        "host:\n  addresses: [{}]\nworkloads:\n",
        addrs(&inv.host.addresses)
    );
    for w in &inv.workloads {
        let _ = writeln!(
            y,
            "  - name: {}\n    labels: {}\n    interface: {}\n    addresses: [{}]\n    mode: {}",
            w.name,
            yaml_labels(&w.labels),
            w.interface,
            addrs(&w.addresses),
            w.mode
        );
    }
    y
}

pub(super) fn without_lines(mut pf: PolicyFile) -> PolicyFile {
    for p in &mut pf.policies {
        for r in p.ingress.iter_mut().chain(p.egress.iter_mut()).flatten() {
            r.line = None;
        }
    }
    pf
}
