//! Property tests: the compiled maps, looked up the way the kernel does, give the
//! same answer as NetworkPolicy semantics evaluated directly on the policy file.
//!
//! - [`reference`] is written from the documented semantics only (it does not use
//!   the compiler or identities): host deny list, then per-direction default deny
//!   for selected workloads, then "some rule of some selecting policy matches the
//!   peer and the port".
//! - [`kernel`] replays `enforcer-ebpf/src/verdict.rs` over a [`Compiled`]: LPM on the
//!   deny list and the ipcache in the kernel's single IPv4-mapped trie, then the
//!   four policy lookups and the DECLARED marker.
//!
//! Random policies and inventories are drawn from small pools of labels, addresses
//! and overlapping prefixes (IPv4 and IPv6, `/0` included) so that collisions and
//! nesting are common. Each case is rendered to YAML and parsed back, so the parser
//! is exercised on every case too.
use std::{collections::HashMap, net::IpAddr};

use enforcer_common::{
    endpoint::EndpointInfo,
    identity,
    ipcache::DENY,
    policy::{ALLOW, PolicyKey, PolicyValue},
    proto,
};
use ipnet::IpNet;
use proptest::prelude::*;

use super::{
    CidrBlock, Direction, Peer, Peers, Policy, PolicyFile, PortSpec, Ports, Protocol, compile,
    compiled::Compiled,
    testgen::{
        OUTSIDERS, OWNABLE, inventory, ip, policy_file, render_inventory, render_policy,
        without_lines,
    },
};
use crate::inventory::{Inventory, Labels, Workload};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    CidrDenied,
    NotSelected,
    Allowed,
    PeerNotAllowed,
    PortNotDeclared,
}

// ---------------------------------------------------------------------------------
// The reference: NetworkPolicy semantics, straight from docs/policy.md.

enum PeerKind<'a> {
    Workload(&'a Labels),
    Host,
    /// Neither a workload nor the host.
    Other(IpAddr),
}

fn reference(
    pf: &PolicyFile,
    inv: &Inventory,
    subject: &Workload,
    dir: Direction,
    peer: IpAddr,
    ip_proto: u8,
    port: u16,
) -> Verdict {
    let in_block =
        |b: &CidrBlock| b.cidr.contains(&peer) && !b.except.iter().any(|e| e.contains(&peer));
    if pf.host.deny_cidrs.iter().any(in_block) {
        return Verdict::CidrDenied;
    }
    let selecting: Vec<&Policy> = pf
        .policies
        .iter()
        .filter(|p| {
            p.rules(dir).is_some()
                && p.selector
                    .match_labels
                    .iter()
                    .all(|(k, v)| subject.labels.get(k) == Some(v))
        })
        .collect();
    if selecting.is_empty() {
        return Verdict::NotSelected;
    }
    let kind = if let Some(w) = inv.workloads.iter().find(|w| w.addresses.contains(&peer)) {
        PeerKind::Workload(&w.labels)
    } else if inv.host.addresses.contains(&peer) {
        PeerKind::Host
    } else {
        PeerKind::Other(peer)
    };
    let port_ok = |s: &PortSpec| {
        let proto_ok = match s.protocol {
            Protocol::Tcp => ip_proto == proto::TCP,
            Protocol::Udp => ip_proto == proto::UDP,
            Protocol::Icmp => ip_proto == proto::ICMP || ip_proto == proto::ICMPV6,
            Protocol::Icmpv4 => ip_proto == proto::ICMP,
            Protocol::Icmpv6 => ip_proto == proto::ICMPV6,
        };
        proto_ok
            && match s.ports {
                None | Some((1, 65535)) => true,
                Some((first, last)) => first <= port && port <= last,
            }
    };
    let peer_ok = |p: &Peer| match (p, &kind) {
        (Peer::Workloads(sel), PeerKind::Workload(labels)) => sel
            .match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v)),
        (Peer::Host, PeerKind::Host) => true,
        (Peer::Cidr(b), PeerKind::Other(ip)) => {
            b.cidr.contains(ip) && !b.except.iter().any(|e| e.contains(ip))
        }
        _ => false,
    };
    let mut declared = false;
    for rule in selecting.iter().filter_map(|p| p.rules(dir)).flatten() {
        let ports = match &rule.ports {
            Ports::Any => [proto::TCP, proto::UDP, proto::ICMP, proto::ICMPV6].contains(&ip_proto),
            Ports::Only(specs) => specs.iter().any(port_ok),
        };
        if !ports {
            continue;
        }
        declared = true;
        let peers = match &rule.peers {
            Peers::Any => true,
            Peers::Only(peers) => peers.iter().any(peer_ok),
        };
        if peers {
            return Verdict::Allowed;
        }
    }
    if declared {
        Verdict::PeerNotAllowed
    } else {
        Verdict::PortNotDeclared
    }
}

// ---------------------------------------------------------------------------------
// The kernel, replayed over compiled entries.

/// An address in the kernel's trie: IPv4 is IPv4-mapped IPv6.
fn mapped(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// A prefix in the kernel's trie: (mapped network, mapped prefix length).
fn mapped_net(net: &IpNet) -> (u128, u32) {
    match net {
        IpNet::V4(n) => (
            mapped(IpAddr::V4(n.network())),
            96 + u32::from(n.prefix_len()),
        ),
        IpNet::V6(n) => (u128::from(n.network()), u32::from(n.prefix_len())),
    }
}

fn lpm<T>(entries: &[(IpNet, T)], ip: IpAddr) -> Option<&T> {
    let a = mapped(ip);
    entries
        .iter()
        .filter(|(n, _)| {
            let (net, len) = mapped_net(n);
            len == 0 || (a ^ net) >> (128 - len) == 0
        })
        .max_by_key(|(n, _)| mapped_net(n).1)
        .map(|(_, t)| t)
}

struct Kernel<'a> {
    c: &'a Compiled,
    policy: HashMap<PolicyKey, PolicyValue>,
}

impl<'a> Kernel<'a> {
    fn new(c: &'a Compiled) -> Self {
        Self {
            c,
            policy: c.policy.iter().copied().collect(),
        }
    }

    /// `classify` minus parsing, fragments and conntrack: a new connection.
    fn verdict(
        &self,
        interface: &str,
        dir: Direction,
        peer: IpAddr,
        ip_proto: u8,
        dport: u16,
    ) -> Verdict {
        let Some(e) = self.c.endpoints.iter().find(|e| e.interface == interface) else {
            panic!("no endpoint for {interface}");
        };
        let ep = EndpointInfo {
            identity: e.identity,
            mode: e.mode,
            flags: e.flags,
            _pad: 0,
        };
        if let Some(d) = lpm(&self.c.denylist, peer)
            && d.action == DENY
        {
            return Verdict::CidrDenied;
        }
        let dir = dir.abi();
        if !ep.enforced(dir) {
            return Verdict::NotSelected;
        }
        let port = if ip_proto == proto::TCP || ip_proto == proto::UDP {
            dport
        } else {
            0
        };
        let peer_id = lpm(&self.c.ipcache, peer)
            .copied()
            .unwrap_or(identity::WORLD);
        let allowed = |k: &PolicyKey| matches!(self.policy.get(k), Some(v) if v.action == ALLOW);
        let present = |k: &PolicyKey| self.policy.contains_key(k);
        let mut key = PolicyKey {
            subject: ep.identity,
            peer: peer_id,
            port,
            proto: ip_proto,
            dir,
            epoch: 0,
        };
        for peer in [peer_id, identity::ANY] {
            key.peer = peer;
            key.port = port;
            if allowed(&key) {
                return Verdict::Allowed;
            }
            if port != 0 {
                key.port = 0;
                if allowed(&key) {
                    return Verdict::Allowed;
                }
            }
        }
        key.peer = identity::DECLARED;
        key.port = port;
        if present(&key) {
            return Verdict::PeerNotAllowed;
        }
        if port != 0 {
            key.port = 0;
            if present(&key) {
                return Verdict::PeerNotAllowed;
            }
        }
        Verdict::PortNotDeclared
    }
}

const PROBE_PROTOCOLS: [u8; 5] = [proto::TCP, proto::UDP, proto::ICMP, proto::ICMPV6, 132];
const PROBE_PORTS: [u16; 7] = [0, 53, 80, 443, 8001, 8002, 65535];

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    /// The main correctness property of the compiler.
    #[test]
    fn kernel_lookups_agree_with_network_policy(pf in policy_file(), inv in inventory()) {
        let policy_text = render_policy(&pf);
        let parsed = PolicyFile::parse(&policy_text, "policy.yaml")
            .map_err(|e| TestCaseError::fail(format!("{e}\n{policy_text}")))?;
        prop_assert!(
            parsed.policies.iter().flat_map(|p| p.ingress.iter().chain(p.egress.iter()).flatten()).all(|r| r.line.is_some()),
            "every rule has a line"
        );
        prop_assert_eq!(&without_lines(parsed), &pf, "policy round trip:\n{}", policy_text);
        let inv_text = render_inventory(&inv);
        let parsed_inv = Inventory::from_str(&inv_text, "inventory.yaml")
            .map_err(|e| TestCaseError::fail(format!("{e}\n{inv_text}")))?;
        prop_assert_eq!(&parsed_inv, &inv, "inventory round trip:\n{}", inv_text);

        let compiled = compile(&pf, &inv).map_err(|e| TestCaseError::fail(e.to_string()))?;
        // The trie has one entry per mapped prefix: no two entries may collide.
        let mut seen = std::collections::HashSet::new();
        for (n, _) in &compiled.ipcache {
            prop_assert!(seen.insert(mapped_net(n)), "ipcache collision at {}", n);
        }
        let kernel = Kernel::new(&compiled);
        let peers: Vec<IpAddr> = OWNABLE.iter().chain(OUTSIDERS.iter()).map(|a| ip(a)).collect();
        for w in &inv.workloads {
            for dir in Direction::BOTH {
                for &peer in &peers {
                    for ip_proto in PROBE_PROTOCOLS {
                        let ports: &[u16] = if ip_proto == proto::TCP || ip_proto == proto::UDP {
                            &PROBE_PORTS
                        } else {
                            &[0]
                        };
                        for &port in ports {
                            let want = reference(&pf, &inv, w, dir, peer, ip_proto, port);
                            let got = kernel.verdict(&w.interface, dir, peer, ip_proto, port);
                            prop_assert_eq!(
                                got, want,
                                "workload {} ({:?}) {} peer {} proto {} port {}\n{}\n{}",
                                w.name, w.labels, dir, peer, ip_proto, port, policy_text, inv_text
                            );
                        }
                    }
                }
            }
        }
    }

    /// Arbitrary text never panics the parsers.
    #[test]
    fn parsing_arbitrary_text_never_panics(text in "\\PC*") {
        let _ = PolicyFile::parse(&text, "fuzz.yaml");
        let _ = Inventory::from_str(&text, "fuzz.yaml");
    }

    /// Nor does a valid file with a few bytes changed: the near misses are the
    /// interesting inputs for a YAML parser.
    #[test]
    fn parsing_mutated_files_never_panics(
        pf in policy_file(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), prop_oneof![
            Just(""), Just(" "), Just("\n"), Just(":"), Just("-"), Just("["), Just("]"),
            Just("{"), Just("}"), Just("\""), Just("0"), Just("/"), Just("&a"), Just("*a"),
            Just("!!"), Just("#"), Just("\t"),
        ]), 1..4),
    ) {
        let mut text = render_policy(&pf);
        for (at, with) in edits {
            if text.is_empty() {
                break;
            }
            let mut i = at.index(text.len());
            while !text.is_char_boundary(i) {
                i -= 1;
            }
            let end = (i + 1..=text.len()).find(|&e| text.is_char_boundary(e)).unwrap_or(text.len());
            text.replace_range(i..end, with);
        }
        if let Ok(parsed) = PolicyFile::parse(&text, "fuzz.yaml") {
            // Whatever parses must compile or fail cleanly.
            let _ = compile(&parsed, &Inventory::default());
        }
    }
}

#[test]
fn reference_and_kernel_agree_on_a_hand_written_case() {
    let pf = PolicyFile::parse(
        concat!(
            "version: 1\n",
            "host: {denyCIDRs: [{cidr: 10.0.0.0/8, except: [10.0.0.0/16]}]}\n",
            "policies:\n",
            "  - name: web\n    selector: {app: web}\n    ingress:\n",
            "      - from: [{selector: {app: client}}, {cidr: \"::/0\"}]\n",
            "        ports: [{port: 80}]\n",
        ),
        "policy.yaml",
    )
    .expect("policy");
    let inv = Inventory::from_str(
        concat!(
            "workloads:\n",
            "  - {name: web, labels: {app: web}, interface: lw0, addresses: [10.0.0.1]}\n",
            "  - {name: client, labels: {app: client}, interface: lw1, addresses: [10.0.0.2]}\n",
        ),
        "inventory.yaml",
    )
    .expect("inventory");
    let c = compile(&pf, &inv).expect("compiles");
    let k = Kernel::new(&c);
    let web = &inv.workloads[0];
    let cases = [
        ("10.0.0.2", proto::TCP, 80, Verdict::Allowed),
        ("10.0.0.2", proto::TCP, 81, Verdict::PortNotDeclared),
        ("2001:db8::1", proto::TCP, 80, Verdict::Allowed),
        // ::/0 must not match IPv4 even though the kernel's trie is IPv6.
        ("192.0.2.1", proto::TCP, 80, Verdict::PeerNotAllowed),
        ("10.1.0.1", proto::TCP, 80, Verdict::CidrDenied),
    ];
    for (peer, p, port, want) in cases {
        let peer = ip(peer);
        assert_eq!(
            reference(&pf, &inv, web, Direction::Ingress, peer, p, port),
            want,
            "{peer}"
        );
        assert_eq!(
            k.verdict("lw0", Direction::Ingress, peer, p, port),
            want,
            "{peer}"
        );
    }
    assert_eq!(
        k.verdict("lw0", Direction::Egress, ip("8.8.8.8"), proto::UDP, 53),
        Verdict::NotSelected
    );
}
