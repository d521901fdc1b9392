//! The policy language: the file model, its parser and the compiler that turns a
//! policy plus the inventory into kernel map entries.
//!
//! Semantics follow Kubernetes NetworkPolicy (see `docs/policy.md`): a workload
//! selected by a policy that has an `ingress` (`egress`) key is default-deny in that
//! direction, and the rules of every policy selecting it are OR-ed together.
//!
//! - [`parse`]: YAML → [`PolicyFile`], with every check done while reading so each
//!   error has a file, line and column.
//! - [`compile()`]: [`PolicyFile`] + [`Inventory`](crate::inventory::Inventory) →
//!   [`compiled::Compiled`].
use std::{fmt, net::IpAddr, path::Path};

use enforcer_common::proto;
use ipnet::IpNet;

use crate::inventory::{At, Labels};

mod compile;
pub mod compiled;
mod locate;
pub mod parse;
#[cfg(test)]
mod parse_tests;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod testgen;

pub use compile::{CompileError, compile};

/// The only file format version this enforcer reads.
pub const VERSION: u32 = 1;

/// A parsed and validated policy file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyFile {
    /// Where the policy came from (a path or a name), for messages.
    pub origin: String,
    pub version: u32,
    pub host: HostPolicy,
    pub policies: Vec<Policy>,
}

/// Node-wide rules, applied to every workload before any policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostPolicy {
    /// Peers in these blocks are dropped in both directions, for every workload.
    pub deny_cidrs: Vec<CidrBlock>,
}

/// A CIDR with optional holes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CidrBlock {
    pub cidr: IpNet,
    /// Strictly inside `cidr`, same family.
    pub except: Vec<IpNet>,
}

impl CidrBlock {
    /// Whether `ip` is in the block and in none of its holes.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.cidr.contains(&ip) && !self.except.iter().any(|e| e.contains(&ip))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Unique within the file.
    pub name: String,
    pub selector: Selector,
    /// `Some` (even empty): selected workloads are default-deny inbound.
    pub ingress: Option<Vec<Rule>>,
    /// `Some` (even empty): selected workloads are default-deny outbound.
    pub egress: Option<Vec<Rule>>,
}

impl Policy {
    pub fn rules(&self, dir: Direction) -> Option<&[Rule]> {
        match dir {
            Direction::Ingress => self.ingress.as_deref(),
            Direction::Egress => self.egress.as_deref(),
        }
    }
}

/// Which workloads a policy (or a peer) means: those whose labels include all of these.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    pub match_labels: Labels,
}

impl Selector {
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// One allow rule: traffic from/to any of `peers` on any of `ports`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub peers: Peers,
    pub ports: Ports,
    /// Line in the file where the rule starts, when known.
    pub line: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peers {
    /// `from`/`to` absent or empty: every peer.
    Any,
    Only(Vec<Peer>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// Workloads of this node whose labels match.
    Workloads(Selector),
    /// The node itself.
    Host,
    /// Addresses that are neither workloads nor the host.
    Cidr(CidrBlock),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ports {
    /// `ports` absent or empty: every port of TCP and UDP, and ICMP and ICMPv6.
    Any,
    Only(Vec<PortSpec>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortSpec {
    pub protocol: Protocol,
    /// Inclusive range `(first, last)`, `1 <= first <= last`; `None` = every port.
    /// Always `None` for the ICMP protocols.
    pub ports: Option<(u16, u16)>,
}

impl PortSpec {
    /// Whether a packet of IP protocol `proto` to `port` matches. `port` is the
    /// destination port for TCP and UDP and ignored otherwise.
    pub fn matches(&self, proto_num: u8, port: u16) -> bool {
        if !self.protocol.ip_protocols().contains(&proto_num) {
            return false;
        }
        match self.ports_or_any() {
            None => true,
            Some((first, last)) => (first..=last).contains(&port),
        }
    }

    /// Like `ports`, with a range covering every port (1-65535) read as "any port".
    pub fn ports_or_any(&self) -> Option<(u16, u16)> {
        match self.ports {
            Some((1, u16::MAX)) => None,
            other => other,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    /// ICMP for IPv4 and ICMPv6 for IPv6.
    Icmp,
    /// ICMP for IPv4 only.
    Icmpv4,
    /// ICMPv6 only.
    Icmpv6,
}

impl Protocol {
    /// The IP protocol numbers this protocol name stands for.
    pub fn ip_protocols(self) -> &'static [u8] {
        match self {
            Protocol::Tcp => &[proto::TCP],
            Protocol::Udp => &[proto::UDP],
            Protocol::Icmp => &[proto::ICMP, proto::ICMPV6],
            Protocol::Icmpv4 => &[proto::ICMP],
            Protocol::Icmpv6 => &[proto::ICMPV6],
        }
    }

    pub fn has_ports(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Udp)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Icmp => "ICMP",
            Protocol::Icmpv4 => "ICMPv4",
            Protocol::Icmpv6 => "ICMPv6",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Direction relative to the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub const BOTH: [Direction; 2] = [Direction::Ingress, Direction::Egress];

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }

    /// The `enforcer_common::direction` value.
    pub fn abi(self) -> u8 {
        match self {
            Direction::Ingress => enforcer_common::direction::INGRESS,
            Direction::Egress => enforcer_common::direction::EGRESS,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{file}: cannot read the policy file: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// The text is not a valid policy. `line` and `column` start at 1; 0 means
    /// unknown (then they are left out of the message). `message` starts with the
    /// path of the offending field, like `policies[0].ingress[0].ports[1]: ...`.
    #[error("{file}{at}: {message}", at = At(*line, *column))]
    Invalid {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
}

impl PolicyFile {
    /// Reads and validates the policy file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, PolicyError> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            file: file.clone(),
            source,
        })?;
        Self::parse(&text, &file)
    }

    /// Parses and validates policy text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, PolicyError> {
        let mut file = parse::from_str(text, origin)?;
        locate::fill_rule_lines(text, &mut file);
        Ok(file)
    }

    /// Every CIDR named by a policy peer, excepts included (the ones that get
    /// identities; the host deny list does not).
    pub fn peer_cidrs(&self) -> impl Iterator<Item = IpNet> + '_ {
        self.policies
            .iter()
            .flat_map(|p| {
                Direction::BOTH
                    .into_iter()
                    .filter_map(|d| p.rules(d))
                    .flatten()
            })
            .flat_map(|r| match &r.peers {
                Peers::Any => &[][..],
                Peers::Only(peers) => &peers[..],
            })
            .flat_map(|peer| match peer {
                Peer::Cidr(b) => std::iter::once(b.cidr)
                    .chain(b.except.iter().copied())
                    .collect::<Vec<_>>(),
                Peer::Workloads(_) | Peer::Host => Vec::new(),
            })
    }
}
