//! Identity allocation: every distinct workload label set and every CIDR named in
//! policy gets a numeric identity, the key the kernel's policy map is indexed by.
//!
//! Allocation is deterministic: the same inventory and policy always give the same
//! numbers. Label sets are numbered from [`identity::FIRST_WORKLOAD`] in sorted order,
//! CIDRs from [`identity::FIRST_CIDR`] in sorted order. Adding a label set or a CIDR
//! can renumber the ones after it; that is fine because every policy generation
//! rewrites all policy-derived maps at once.
use std::collections::BTreeMap;

use enforcer_common::identity;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::{inventory::Labels, policy::compiled::IdentitySource};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error(
        "the policy names {count} distinct CIDRs (peers and excepts); at most {limit} are \
         supported"
    )]
    TooManyCidrs { count: usize, limit: usize },
    #[error("the inventory has {count} distinct label sets; at most {limit} are supported")]
    TooManyLabelSets { count: usize, limit: usize },
}

/// Number of CIDR identities available.
pub const CIDR_RANGE: usize = (identity::FIRST_WORKLOAD - identity::FIRST_CIDR) as usize;
/// Number of workload identities available (up to, not including, the DECLARED marker).
pub const WORKLOAD_RANGE: usize = (identity::DECLARED - identity::FIRST_WORKLOAD) as usize;

/// The identities of one policy generation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identities {
    labels: BTreeMap<Labels, u32>,
    cidrs: BTreeMap<IpNet, u32>,
}

impl Identities {
    /// Allocates identities for the given label sets and CIDRs (duplicates are fine).
    pub fn allocate<'a>(
        label_sets: impl IntoIterator<Item = &'a Labels>,
        cidrs: impl IntoIterator<Item = IpNet>,
    ) -> Result<Self, IdentityError> {
        let mut labels: BTreeMap<Labels, u32> =
            label_sets.into_iter().map(|l| (l.clone(), 0)).collect();
        let mut cidrs: BTreeMap<IpNet, u32> = cidrs.into_iter().map(|c| (c.trunc(), 0)).collect();
        if labels.len() > WORKLOAD_RANGE {
            return Err(IdentityError::TooManyLabelSets {
                count: labels.len(),
                limit: WORKLOAD_RANGE,
            });
        }
        if cidrs.len() > CIDR_RANGE {
            return Err(IdentityError::TooManyCidrs {
                count: cidrs.len(),
                limit: CIDR_RANGE,
            });
        }
        // Both counts were checked against their ranges above, so the additions cannot
        // overflow into the next range.
        for (id, slot) in (identity::FIRST_WORKLOAD..).zip(labels.values_mut()) {
            *slot = id;
        }
        for (id, slot) in (identity::FIRST_CIDR..).zip(cidrs.values_mut()) {
            *slot = id;
        }
        Ok(Self { labels, cidrs })
    }

    /// The identity of workloads with exactly these labels.
    pub fn of_labels(&self, labels: &Labels) -> Option<u32> {
        self.labels.get(labels).copied()
    }

    /// The identity of a CIDR named in policy.
    pub fn of_cidr(&self, cidr: &IpNet) -> Option<u32> {
        self.cidrs.get(&cidr.trunc()).copied()
    }

    /// Label sets and their identities, in identity order.
    pub fn label_sets(&self) -> impl Iterator<Item = (&Labels, u32)> {
        self.labels.iter().map(|(l, id)| (l, *id))
    }

    /// CIDRs and their identities, in identity order.
    pub fn cidrs(&self) -> impl Iterator<Item = (IpNet, u32)> + '_ {
        self.cidrs.iter().map(|(c, id)| (*c, *id))
    }

    /// The CIDR identities whose prefix lies inside `net` (`net` itself included), found
    /// by a range query on the sorted prefixes: a policy with many CIDR peers compiles in
    /// O(n log n), not O(n²).
    pub fn cidrs_within(&self, net: IpNet) -> impl Iterator<Item = (IpNet, u32)> + '_ {
        let net = net.trunc();
        // Prefixes sort by (network address, length), IPv4 before IPv6; every prefix
        // inside `net` has its network address between net's first and last address.
        let (low, high) = match net {
            IpNet::V4(n) => (
                IpNet::V4(Ipv4Net::new_assert(n.network(), 0)),
                IpNet::V4(Ipv4Net::new_assert(n.broadcast(), 32)),
            ),
            IpNet::V6(n) => (
                IpNet::V6(Ipv6Net::new_assert(n.network(), 0)),
                IpNet::V6(Ipv6Net::new_assert(n.broadcast(), 128)),
            ),
        };
        self.cidrs
            .range(low..=high)
            .filter(move |(c, _)| net.contains(*c))
            .map(|(c, id)| (*c, *id))
    }

    /// What every identity stands for, the reserved ones included.
    pub fn sources(&self) -> BTreeMap<u32, IdentitySource> {
        let mut out = BTreeMap::new();
        out.insert(identity::ANY, IdentitySource::Reserved("any"));
        out.insert(identity::HOST, IdentitySource::Reserved("host"));
        out.insert(identity::WORLD, IdentitySource::Reserved("world"));
        for (c, id) in self.cidrs() {
            out.insert(id, IdentitySource::Cidr(c));
        }
        for (l, id) in self.label_sets() {
            out.insert(id, IdentitySource::Labels(l.clone()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn net(s: &str) -> IpNet {
        s.parse().expect("cidr")
    }

    #[test]
    fn allocation_is_sorted_and_order_independent() {
        let a = labels(&[("app", "a")]);
        let b = labels(&[("app", "b")]);
        let empty = labels(&[]);
        let one = Identities::allocate([&b, &a, &empty, &a], [net("10.0.0.0/8"), net("::/0")])
            .expect("fits");
        let two =
            Identities::allocate([&a, &empty, &b], [net("::/0"), net("10.0.0.0/8")]).expect("fits");
        assert_eq!(one, two);
        assert_eq!(one.of_labels(&empty), Some(identity::FIRST_WORKLOAD));
        assert_eq!(one.of_labels(&a), Some(identity::FIRST_WORKLOAD + 1));
        assert_eq!(one.of_labels(&b), Some(identity::FIRST_WORKLOAD + 2));
        assert_eq!(one.of_cidr(&net("10.0.0.0/8")), Some(identity::FIRST_CIDR));
        assert_eq!(one.of_cidr(&net("::/0")), Some(identity::FIRST_CIDR + 1));
        assert_eq!(one.of_cidr(&net("11.0.0.0/8")), None);
    }

    /// The range query gives exactly what a scan of every CIDR with `contains` gives.
    #[test]
    fn cidrs_within_matches_a_full_scan() {
        let all = [
            "0.0.0.0/0",
            "10.0.0.0/8",
            "10.0.0.0/16",
            "10.0.0.0/24",
            "10.0.0.7/32",
            "10.255.255.255/32",
            "11.0.0.0/8",
            "9.255.255.255/32",
            "::/0",
            "::ffff:0:0/96",
            "fd00::/8",
            "fd00::1/128",
            "fe00::/8",
        ];
        let ids = Identities::allocate([], all.iter().map(|s| net(s))).expect("fits");
        for outer in all
            .iter()
            .chain(&["10.0.0.5/8", "fd00::5/8", "10.0.0.0/30"])
        {
            let outer = net(outer);
            let fast: Vec<_> = ids.cidrs_within(outer).collect();
            let mut slow: Vec<_> = ids.cidrs().filter(|(c, _)| outer.contains(c)).collect();
            slow.sort();
            let mut fast_sorted = fast.clone();
            fast_sorted.sort();
            assert_eq!(fast_sorted, slow, "inside {outer}");
        }
        assert_eq!(ids.cidrs_within(net("10.0.0.0/16")).count(), 3);
    }

    #[test]
    fn sources_name_every_identity() {
        let a = labels(&[("app", "a")]);
        let ids = Identities::allocate([&a], [net("192.0.2.0/24")]).expect("fits");
        let s = ids.sources();
        assert_eq!(s[&identity::HOST], IdentitySource::Reserved("host"));
        assert_eq!(s[&identity::WORLD], IdentitySource::Reserved("world"));
        assert_eq!(
            s[&identity::FIRST_CIDR],
            IdentitySource::Cidr(net("192.0.2.0/24"))
        );
        assert_eq!(s[&identity::FIRST_WORKLOAD], IdentitySource::Labels(a));
        assert_eq!(s.len(), 5);
    }

    #[test]
    fn ranges_do_not_overlap() {
        assert_eq!(CIDR_RANGE, (1 << 24) - 16);
        const { assert!(identity::FIRST_CIDR > identity::WORLD) };
    }
}
