//! Compiling a policy against the inventory into the entries of one map epoch.
//!
//! The kernel decides with two longest-prefix lookups and a few hash lookups
//! (`enforcer-ebpf/src/verdict.rs`): the host deny list on the peer address, the
//! peer's identity in `IPCACHE` (WORLD on a miss), then `POLICY` keyed by
//! (subject, peer, port, proto, dir) with wildcards for peer (ANY) and port (0).
//! This module produces entries for which those lookups give exactly the
//! NetworkPolicy answer; `proptests.rs` checks that against a direct evaluator.
//!
//! Two facts make the LPM lookups exact:
//! - Every prefix that policy can name (peer CIDRs and their excepts) is in `IPCACHE`
//!   with its own identity, so the longest match of an address decides, for every
//!   named prefix, whether the address is inside it. A CIDR peer then allows exactly
//!   the CIDR identities inside it and outside its excepts.
//! - The kernel stores IPv4 as IPv4-mapped IPv6 in one trie, so an IPv6 prefix that
//!   contains `::ffff:0:0/96` (`::/0`, say) would also match IPv4 addresses. Whenever
//!   one is present, `0.0.0.0/0` is added so that IPv4 addresses stop at an IPv4 entry.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{Ipv4Addr, Ipv6Addr},
};

use enforcer_common::{
    capacity,
    endpoint::{FLAG_EGRESS_ENFORCED, FLAG_INGRESS_ENFORCED},
    identity,
    ipcache::{DENY, DenyInfo, EXCEPT},
    policy::{ALLOW, DECLARED, PolicyKey, PolicyValue},
    proto,
};
use ipnet::{IpNet, Ipv4Net};

use super::{
    Direction, Peer, Peers, PolicyFile, Ports,
    compiled::{Compiled, EndpointEntry, RuleInfo},
};
use crate::{
    identity::{Identities, IdentityError},
    inventory::Inventory,
};

#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("cannot allocate identities: {0}")]
    Identity(#[from] IdentityError),
    #[error(
        "{map}: the policy needs {needed} entries, more than the {limit} one policy \
         generation may use{hint}"
    )]
    Capacity {
        /// Kernel map name.
        map: &'static str,
        /// Entries needed. For the policy map this is the expansion before duplicates
        /// are removed, which can overcount; it is at least `limit + 1` either way.
        needed: u64,
        limit: u64,
        hint: &'static str,
    },
}

/// Compiles `policy` against `inventory` into the contents of one map epoch.
pub fn compile(policy: &PolicyFile, inventory: &Inventory) -> Result<Compiled, CompileError> {
    let ids = Identities::allocate(
        inventory.workloads.iter().map(|w| &w.labels),
        policy.peer_cidrs(),
    )?;
    let endpoints = endpoints(policy, inventory, &ids)?;
    let ipcache = ipcache(inventory, &ids)?;
    let denylist = denylist(policy)?;
    let (policy_entries, rules) = policy_entries(policy, &ids)?;
    Ok(Compiled {
        endpoints,
        ipcache,
        denylist,
        policy: policy_entries,
        rules,
        identities: ids.sources(),
    })
}

impl PolicyFile {
    /// Names of the policies that select no workload of `inventory` (harmless, but
    /// often a typo in a selector).
    pub fn unmatched_policies<'a>(&'a self, inventory: &Inventory) -> Vec<&'a str> {
        self.policies
            .iter()
            .filter(|p| {
                !inventory
                    .workloads
                    .iter()
                    .any(|w| p.selector.matches(&w.labels))
            })
            .map(|p| p.name.as_str())
            .collect()
    }
}

fn check_capacity(
    map: &'static str,
    needed: usize,
    capacity: u32,
    hint: &'static str,
) -> Result<(), CompileError> {
    // Each map holds two epochs (live and next), so one policy generation gets half.
    let limit = u64::from(capacity / 2);
    let needed = needed as u64;
    if needed > limit {
        return Err(CompileError::Capacity {
            map,
            needed,
            limit,
            hint,
        });
    }
    Ok(())
}

fn endpoints(
    policy: &PolicyFile,
    inventory: &Inventory,
    ids: &Identities,
) -> Result<Vec<EndpointEntry>, CompileError> {
    check_capacity(
        enforcer_common::map_names::ENDPOINTS,
        inventory.workloads.len(),
        capacity::ENDPOINTS,
        "",
    )?;
    Ok(inventory
        .workloads
        .iter()
        .filter_map(|w| {
            let identity = ids.of_labels(&w.labels)?;
            let mut flags = 0;
            for p in policy
                .policies
                .iter()
                .filter(|p| p.selector.matches(&w.labels))
            {
                if p.ingress.is_some() {
                    flags |= FLAG_INGRESS_ENFORCED;
                }
                if p.egress.is_some() {
                    flags |= FLAG_EGRESS_ENFORCED;
                }
            }
            Some(EndpointEntry {
                workload: w.name.clone(),
                interface: w.interface.clone(),
                identity,
                mode: w.mode.abi(),
                flags,
            })
        })
        .collect())
}

/// Whether the kernel's single trie would let `net` match IPv4 addresses.
fn covers_ipv4_mapped(net: &IpNet) -> bool {
    const MAPPED: Ipv6Addr = Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0);
    matches!(net, IpNet::V6(n) if n.prefix_len() <= 96 && n.contains(&MAPPED))
}

const ALL_IPV4: IpNet = IpNet::V4(match Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0) {
    Ok(n) => n,
    Err(_) => panic!("0.0.0.0/0 is a valid prefix"),
});

fn ipcache(inventory: &Inventory, ids: &Identities) -> Result<Vec<(IpNet, u32)>, CompileError> {
    let mut out: BTreeMap<IpNet, u32> = BTreeMap::new();
    // Workloads and the host first: a CIDR identity never shadows them, because CIDR
    // peers only stand for addresses that are neither.
    for w in &inventory.workloads {
        if let Some(id) = ids.of_labels(&w.labels) {
            for ip in &w.addresses {
                out.entry(IpNet::from(*ip)).or_insert(id);
            }
        }
    }
    for ip in &inventory.host.addresses {
        out.entry(IpNet::from(*ip)).or_insert(identity::HOST);
    }
    for (cidr, id) in ids.cidrs() {
        out.entry(cidr).or_insert(id);
    }
    if out.keys().any(covers_ipv4_mapped) {
        out.entry(ALL_IPV4).or_insert(identity::WORLD);
    }
    check_capacity(
        enforcer_common::map_names::IPCACHE,
        out.len(),
        capacity::IPCACHE,
        " (workload and host addresses plus the CIDRs named in policy)",
    )?;
    Ok(out.into_iter().collect())
}

/// The deny list as trie entries. For each prefix the trie may return, the entry says
/// what the file means for the addresses whose longest match it is: denied if some
/// deny entry contains the prefix and none of that entry's excepts does. This is exact
/// even when entries overlap (an except of one entry inside another entry).
fn denylist(policy: &PolicyFile) -> Result<Vec<(IpNet, DenyInfo)>, CompileError> {
    let blocks = &policy.host.deny_cidrs;
    let mut prefixes: BTreeSet<IpNet> = blocks
        .iter()
        .flat_map(|b| std::iter::once(b.cidr).chain(b.except.iter().copied()))
        .collect();
    if prefixes.iter().any(covers_ipv4_mapped) {
        prefixes.insert(ALL_IPV4);
    }
    check_capacity(
        enforcer_common::map_names::DENYLIST,
        prefixes.len(),
        capacity::DENYLIST,
        " (deny CIDRs plus their excepts)",
    )?;
    let index = |i: usize| u32::try_from(i).unwrap_or(u32::MAX);
    // The blocks by their (truncated) prefix, in file order: the blocks containing a
    // prefix are those keyed by one of its supernets, at most 33 or 129 lookups, so a
    // deny list of 100k entries compiles in O(n log n), not O(n²).
    let mut by_cidr: HashMap<IpNet, Vec<usize>> = HashMap::new();
    for (i, b) in blocks.iter().enumerate() {
        by_cidr.entry(b.cidr.trunc()).or_default().push(i);
    }
    let first_mapped = blocks.iter().position(|b| covers_ipv4_mapped(&b.cidr));
    Ok(prefixes
        .into_iter()
        .map(|p| {
            let mut containing: Vec<usize> = (0..=p.prefix_len())
                .filter_map(|len| supernet(&p, len))
                .filter_map(|s| by_cidr.get(&s))
                .flatten()
                .copied()
                .collect();
            containing.sort_unstable();
            let denied_by = containing
                .iter()
                .copied()
                .find(|&i| !blocks[i].except.iter().any(|e| e.contains(&p)));
            let info = match denied_by {
                Some(i) => DenyInfo {
                    action: DENY,
                    rule: index(i),
                },
                None => DenyInfo {
                    action: EXCEPT,
                    rule: index(
                        containing
                            .first()
                            .copied()
                            .into_iter()
                            .chain(first_mapped)
                            .min()
                            .unwrap_or(0),
                    ),
                },
            };
            (p, info)
        })
        .collect())
}

/// The prefix of length `len` that contains `net` (`None` if `len` is longer).
fn supernet(net: &IpNet, len: u8) -> Option<IpNet> {
    if len > net.prefix_len() {
        return None;
    }
    IpNet::new(net.network(), len).ok().map(|n| n.trunc())
}

/// (protocol, port) pairs a rule's ports stand for; port 0 = any port.
fn port_keys(ports: &Ports) -> Vec<(u8, u16)> {
    match ports {
        Ports::Any => vec![
            (proto::TCP, 0),
            (proto::UDP, 0),
            (proto::ICMP, 0),
            (proto::ICMPV6, 0),
        ],
        Ports::Only(specs) => {
            let mut out = Vec::new();
            for spec in specs {
                for &p in spec.protocol.ip_protocols() {
                    match spec.ports_or_any() {
                        None => out.push((p, 0)),
                        Some((first, last)) => out.extend((first..=last).map(|port| (p, port))),
                    }
                }
            }
            out.sort_unstable();
            out.dedup();
            out
        }
    }
}

/// Identities a rule's peers stand for.
fn peer_ids(peers: &Peers, ids: &Identities) -> BTreeSet<u32> {
    let Peers::Only(peers) = peers else {
        return BTreeSet::from([identity::ANY]);
    };
    let mut out = BTreeSet::new();
    for peer in peers {
        match peer {
            Peer::Workloads(sel) => out.extend(
                ids.label_sets()
                    .filter(|(labels, _)| sel.matches(labels))
                    .map(|(_, id)| id),
            ),
            Peer::Host => {
                out.insert(identity::HOST);
            }
            Peer::Cidr(block) => out.extend(
                ids.cidrs_within(block.cidr)
                    .filter(|(c, _)| !block.except.iter().any(|e| e.contains(c)))
                    .map(|(_, id)| id),
            ),
        }
    }
    out
}

type PolicyEntries = (Vec<(PolicyKey, PolicyValue)>, Vec<RuleInfo>);

fn policy_entries(policy: &PolicyFile, ids: &Identities) -> Result<PolicyEntries, CompileError> {
    let limit = (capacity::POLICY / 2) as usize;
    let mut entries: BTreeMap<PolicyKey, PolicyValue> = BTreeMap::new();
    let mut rules = Vec::new();
    // What the rules expand to before duplicates are removed, for the error message.
    let mut expansion: u64 = 0;
    let mut over = false;
    let mut next_id: u32 = 1;
    for p in &policy.policies {
        let subjects: Vec<u32> = ids
            .label_sets()
            .filter(|(labels, _)| p.selector.matches(labels))
            .map(|(_, id)| id)
            .collect();
        for dir in Direction::BOTH {
            for (index, rule) in p.rules(dir).into_iter().flatten().enumerate() {
                let id = next_id;
                next_id = next_id.saturating_add(1);
                rules.push(RuleInfo {
                    id,
                    policy: p.name.clone(),
                    direction: dir.as_str(),
                    index,
                    line: rule.line,
                });
                let ports = port_keys(&rule.ports);
                let peers = peer_ids(&rule.peers, ids);
                expansion = expansion.saturating_add(
                    (subjects.len() as u64)
                        .saturating_mul(ports.len() as u64)
                        .saturating_mul(peers.len() as u64 + 1),
                );
                if over {
                    continue;
                }
                over = !expand(&mut entries, &subjects, &peers, &ports, dir, id, limit);
            }
        }
    }
    if over {
        return Err(CompileError::Capacity {
            map: enforcer_common::map_names::POLICY,
            needed: expansion,
            limit: limit as u64,
            hint: " (every port of a port range is one entry per selected identity and \
                   peer; prefer fewer, wider rules)",
        });
    }
    Ok((entries.into_iter().collect(), rules))
}

/// Adds a rule's entries; false if the map would exceed `limit`.
fn expand(
    entries: &mut BTreeMap<PolicyKey, PolicyValue>,
    subjects: &[u32],
    peers: &BTreeSet<u32>,
    ports: &[(u8, u16)],
    dir: Direction,
    rule: u32,
    limit: usize,
) -> bool {
    for &subject in subjects {
        for &(proto, port) in ports {
            let marker = std::iter::once((identity::DECLARED, DECLARED));
            for (peer, action) in marker.chain(peers.iter().map(|&p| (p, ALLOW))) {
                let k = PolicyKey {
                    subject,
                    peer,
                    port,
                    proto,
                    dir: dir.abi(),
                    epoch: 0,
                };
                entries.entry(k).or_insert(PolicyValue { action, rule });
                if entries.len() > limit {
                    return false;
                }
            }
        }
    }
    true
}

#[cfg(test)]
#[path = "compile_tests.rs"]
mod tests;
