//! The lab spec: which workloads and outside hosts a lab has, parsed from YAML and checked,
//! and the addresses each of them gets.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::num::NonZeroU16;
use std::path::{Path, PathBuf};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

/// Longest workload or external name: `lw-<name>` must fit the kernel's 15-byte ifname.
pub const MAX_NODE_NAME: usize = 8;
/// Longest lab name (it becomes part of namespace names and state paths).
pub const MAX_LAB_NAME: usize = 24;
/// Host part of the first workload address: `.10`, `::10`.
const FIRST_WORKLOAD: u32 = 10;

/// What went wrong reading or checking a lab spec. `origin` is the file, or `<yaml>` for text.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{}: cannot read the lab spec", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}{}: not a valid lab spec", Line(*line))]
    Parse {
        origin: String,
        line: Option<usize>,
        #[source]
        source: serde_yaml_ng::Error,
    },
    #[error("{origin}{}: the name `{name}` is used twice (names are unique across workloads and externals)", Line(*line))]
    DuplicateName {
        origin: String,
        line: Option<usize>,
        name: String,
    },
    #[error("{origin}{}: workload name `{name}` is reserved: {reason}", Line(*line))]
    ReservedName {
        origin: String,
        line: Option<usize>,
        name: String,
        reason: &'static str,
    },
    #[error("{origin}{}: {field} {subnet} is too small for {needed} addresses (bridge + workloads from host part {FIRST_WORKLOAD})", Line(*line))]
    SubnetTooSmall {
        origin: String,
        line: Option<usize>,
        field: &'static str,
        subnet: String,
        needed: usize,
    },
    #[error("{origin}{}: external `{name}`: {address} {problem}", Line(*line))]
    ExternalAddress {
        origin: String,
        line: Option<usize>,
        name: String,
        address: String,
        problem: &'static str,
    },
}

/// Renders `:LINE` after an origin when the line is known.
struct Line(Option<usize>);

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(line) => write!(f, ":{line}"),
            None => Ok(()),
        }
    }
}

/// A checked name: `[a-z0-9-]`, not starting or ending with `-`, at most `MAX` bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name<const MAX: usize>(String);

/// The name of a workload or external host (at most 8 characters).
pub type NodeName = Name<MAX_NODE_NAME>;
/// The name of a lab.
pub type LabName = Name<MAX_LAB_NAME>;

impl<const MAX: usize> Name<MAX> {
    /// Checks `name`; the error says what is wrong with it.
    pub fn new(name: &str) -> Result<Self, String> {
        if name.is_empty() || name.len() > MAX {
            return Err(format!("name `{name}` must have 1 to {MAX} characters"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(format!(
                "name `{name}` may only contain a-z, 0-9 and `-` (it becomes a namespace and interface name)"
            ));
        }
        if name.starts_with('-') || name.ends_with('-') {
            return Err(format!("name `{name}` must not start or end with `-`"));
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<const MAX: usize> TryFrom<String> for Name<MAX> {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(&value)
    }
}

impl<const MAX: usize> From<Name<MAX>> for String {
    fn from(value: Name<MAX>) -> Self {
        value.0
    }
}

impl<const MAX: usize> fmt::Display for Name<MAX> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<const MAX: usize> AsRef<str> for Name<MAX> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Transport protocol of a served port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        })
    }
}

/// A port a workload serves (informational: tests and the demo decide what really listens).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    pub port: NonZeroU16,
    #[serde(default)]
    pub protocol: Protocol,
}

/// One workload: a namespace on the lab bridge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    pub name: NodeName,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    /// Copied into the inventory as `mode:` when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

impl WorkloadSpec {
    /// The workload's veth end in the host namespace: `lw-<name>`.
    pub fn host_iface(&self) -> String {
        format!("lw-{}", self.name)
    }
}

/// One outside host: a namespace routed (not bridged) through the host namespace.
/// The prefix of each address is the link between it and the host namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalSpec {
    pub name: NodeName,
    pub address4: Ipv4Net,
    pub address6: Ipv6Net,
}

impl ExternalSpec {
    /// The external's veth end in the host namespace: `lx-<name>`.
    pub fn host_iface(&self) -> String {
        format!("lx-{}", self.name)
    }

    /// The host namespace's address on the link to this external: the first host address of
    /// the link that is not the external's own.
    pub fn gateway4(&self) -> Option<Ipv4Addr> {
        self.address4.hosts().find(|a| *a != self.address4.addr())
    }

    /// IPv6 counterpart of [`gateway4`](Self::gateway4).
    pub fn gateway6(&self) -> Option<Ipv6Addr> {
        let net = u128::from(self.address6.network());
        [1u128, 2]
            .into_iter()
            .map(|i| Ipv6Addr::from(net + i))
            .find(|a| *a != self.address6.addr() && self.address6.contains(a))
    }
}

/// A whole lab, as written in a spec file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabSpec {
    pub name: LabName,
    #[serde(default = "default_subnet4")]
    pub subnet4: Ipv4Net,
    #[serde(default = "default_subnet6")]
    pub subnet6: Ipv6Net,
    #[serde(default)]
    pub workloads: Vec<WorkloadSpec>,
    #[serde(default)]
    pub externals: Vec<ExternalSpec>,
}

fn default_subnet4() -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(10, 77, 0, 0), 24).unwrap_or_default()
}

fn default_subnet6() -> Ipv6Net {
    Ipv6Net::new(Ipv6Addr::new(0xfd00, 0x77, 0, 0, 0, 0, 0, 0), 64).unwrap_or_default()
}

impl LabSpec {
    /// Parses and checks a spec from YAML text.
    pub fn from_yaml(text: &str) -> Result<Self, SpecError> {
        Self::parse(text, "<yaml>")
    }

    /// Reads, parses and checks a spec file.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, SpecError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    fn parse(text: &str, origin: &str) -> Result<Self, SpecError> {
        let spec: Self = serde_yaml_ng::from_str(text).map_err(|source| SpecError::Parse {
            origin: origin.to_owned(),
            line: source.location().map(|l| l.line()),
            source,
        })?;
        spec.check(origin, Some(text))?;
        Ok(spec)
    }

    /// Checks what the types alone cannot: unique names, room in the subnets, externals that
    /// do not overlap the lab. `text` (the YAML source) is only used to find line numbers.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.check("<spec>", None)
    }

    fn check(&self, origin: &str, text: Option<&str>) -> Result<(), SpecError> {
        let line_of = |key: &str, value: Option<&str>, nth: usize| {
            text.and_then(|t| find_line(t, key, value, nth))
        };
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        let names = self
            .workloads
            .iter()
            .map(|w| w.name.as_str())
            .chain(self.externals.iter().map(|e| e.name.as_str()));
        for name in names {
            let count = seen.entry(name).or_insert(0);
            *count += 1;
            if *count > 1 {
                return Err(SpecError::DuplicateName {
                    origin: origin.to_owned(),
                    line: line_of("name", Some(name), *count - 1),
                    name: name.to_owned(),
                });
            }
        }
        for w in &self.workloads {
            let reason = if w.name.as_str() == "host" {
                Some("the host namespace is `<prefix>-host`")
            } else if w.name.as_str().starts_with("x-") {
                Some("`<prefix>-x-…` namespaces are for externals")
            } else {
                None
            };
            if let Some(reason) = reason {
                return Err(SpecError::ReservedName {
                    origin: origin.to_owned(),
                    line: line_of("name", Some(w.name.as_str()), 0),
                    name: w.name.to_string(),
                    reason,
                });
            }
        }
        let needed = FIRST_WORKLOAD as usize + self.workloads.len();
        // v4: the last workload must stay below the broadcast address.
        let room4 = (1u64 << (32 - u32::from(self.subnet4.prefix_len()))).saturating_sub(1);
        if (needed as u64) >= room4 {
            return Err(SpecError::SubnetTooSmall {
                origin: origin.to_owned(),
                line: line_of("subnet4", None, 0),
                field: "subnet4",
                subnet: self.subnet4.to_string(),
                needed,
            });
        }
        if self.subnet6.prefix_len() > 112 {
            return Err(SpecError::SubnetTooSmall {
                origin: origin.to_owned(),
                line: line_of("subnet6", None, 0),
                field: "subnet6",
                subnet: self.subnet6.to_string(),
                needed,
            });
        }
        let mut links4: Vec<Ipv4Net> = vec![self.subnet4.trunc()];
        let mut links6: Vec<Ipv6Net> = vec![self.subnet6.trunc()];
        for e in &self.externals {
            let err = |address: String, problem| SpecError::ExternalAddress {
                origin: origin.to_owned(),
                line: line_of("name", Some(e.name.as_str()), 0),
                name: e.name.to_string(),
                address,
                problem,
            };
            if e.gateway4().is_none() || e.address4.prefix_len() > 30 {
                return Err(err(
                    e.address4.to_string(),
                    "needs a prefix of /30 or shorter",
                ));
            }
            if e.gateway6().is_none() || e.address6.prefix_len() > 126 {
                return Err(err(
                    e.address6.to_string(),
                    "needs a prefix of /126 or shorter",
                ));
            }
            let net4 = e.address4.trunc();
            if links4.iter().any(|n| n.contains(&net4) || net4.contains(n)) {
                return Err(err(
                    e.address4.to_string(),
                    "overlaps the lab subnet or another external",
                ));
            }
            let net6 = e.address6.trunc();
            if links6.iter().any(|n| n.contains(&net6) || net6.contains(n)) {
                return Err(err(
                    e.address6.to_string(),
                    "overlaps the lab subnet or another external",
                ));
            }
            links4.push(net4);
            links6.push(net6);
        }
        Ok(())
    }

    /// The host namespace's bridge address (first host of `subnet4`).
    pub fn host_addr4(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet4.network()) + 1)
    }

    /// The host namespace's bridge address (`::1` of `subnet6`).
    pub fn host_addr6(&self) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.subnet6.network()) + 1)
    }

    /// Address of the workload at `index` in spec order: `.10`, `.11`, …
    pub fn workload_addr4(&self, index: usize) -> Ipv4Addr {
        let host = FIRST_WORKLOAD.saturating_add(u32::try_from(index).unwrap_or(u32::MAX));
        Ipv4Addr::from(u32::from(self.subnet4.network()).saturating_add(host))
    }

    /// Address of the workload at `index`: `::10`, `::11`, … (the decimal digits read as hex,
    /// so v4 `.23` pairs with v6 `::23`).
    pub fn workload_addr6(&self, index: usize) -> Ipv6Addr {
        let decimal = u64::from(FIRST_WORKLOAD) + index as u64;
        let host = u128::from_str_radix(&decimal.to_string(), 16).unwrap_or(u128::from(decimal));
        Ipv6Addr::from(u128::from(self.subnet6.network()).saturating_add(host))
    }

    /// The workload with this name.
    pub fn workload(&self, name: &str) -> Option<&WorkloadSpec> {
        self.workloads.iter().find(|w| w.name.as_str() == name)
    }

    /// The spec as YAML (round-trips through [`from_yaml`](Self::from_yaml)).
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).unwrap_or_default()
    }
}

/// 1-based line of the `nth` (0-based) line holding `key:` (with `value`, if given), allowing
/// a leading `- ` and quotes around the value.
fn find_line(text: &str, key: &str, value: Option<&str>, nth: usize) -> Option<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| {
            let line = line.trim_start();
            let line = line.strip_prefix("- ").unwrap_or(line).trim_start();
            let Some(rest) = line.strip_prefix(key).and_then(|r| r.strip_prefix(':')) else {
                return false;
            };
            let rest = rest.split(" #").next().unwrap_or("").trim();
            value.is_none_or(|v| rest.trim_matches(|c| c == '"' || c == '\'') == v)
        })
        .nth(nth)
        .map(|(i, _)| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEMO: &str = "\
name: demo
workloads:
  - name: web
    labels: {app: web, env: prod}
    ports: [{port: 80, protocol: tcp}, {port: 53, protocol: udp}]
    mode: enforce
  - name: client
    labels: {app: client}
externals:
  - name: outside
    address4: 198.51.100.10/24
    address6: 2001:db8:51::10/64
";

    #[test]
    fn parses_demo_with_defaults() {
        let spec = LabSpec::from_yaml(DEMO).expect("demo spec");
        assert_eq!(spec.subnet4.to_string(), "10.77.0.0/24");
        assert_eq!(spec.subnet6.to_string(), "fd00:77::/64");
        assert_eq!(spec.workloads.len(), 2);
        assert_eq!(spec.workloads[0].ports[1].protocol, Protocol::Udp);
        assert_eq!(spec.workloads[0].mode.as_deref(), Some("enforce"));
        assert_eq!(spec.host_addr4(), Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(spec.host_addr6().to_string(), "fd00:77::1");
        assert_eq!(spec.workload_addr4(1), Ipv4Addr::new(10, 77, 0, 11));
        assert_eq!(spec.workload_addr6(1).to_string(), "fd00:77::11");
        assert_eq!(spec.workload_addr6(13).to_string(), "fd00:77::23");
        let ext = &spec.externals[0];
        assert_eq!(ext.gateway4(), Some(Ipv4Addr::new(198, 51, 100, 1)));
        assert_eq!(
            ext.gateway6().map(|a| a.to_string()).as_deref(),
            Some("2001:db8:51::1")
        );
    }

    #[test]
    fn round_trips_through_yaml() {
        let spec = LabSpec::from_yaml(DEMO).expect("demo spec");
        let again = LabSpec::from_yaml(&spec.to_yaml()).expect("round trip");
        assert_eq!(spec, again);
    }

    #[test]
    fn bad_name_has_a_line_number() {
        let text = "name: demo\nworkloads:\n  - name: web\n  - name: Much-too-long\n";
        let err = LabSpec::from_yaml(text).expect_err("invalid name");
        match &err {
            SpecError::Parse { line, .. } => assert_eq!(*line, Some(4)),
            other => panic!("unexpected error {other:?}"),
        }
        let chain = format!(
            "{err}: {}",
            std::error::Error::source(&err)
                .map(|s| s.to_string())
                .unwrap_or_default()
        );
        assert!(chain.contains("1 to 8 characters"), "{chain}");
    }

    #[test]
    fn unknown_field_is_rejected() {
        let err = LabSpec::from_yaml("name: demo\nworkloads:\n  - name: web\n    lables: {}\n")
            .expect_err("typo");
        assert!(
            matches!(err, SpecError::Parse { line: Some(4), .. }),
            "{err:?}"
        );
    }

    #[test]
    fn duplicate_points_at_second_occurrence() {
        let text = "name: demo\nworkloads:\n  - name: web\n  - name: db\nexternals:\n  - name: web\n    address4: 192.0.2.2/24\n    address6: 2001:db8::2/64\n";
        let err = LabSpec::from_yaml(text).expect_err("duplicate");
        assert!(
            matches!(err, SpecError::DuplicateName { line: Some(6), .. }),
            "{err:?}"
        );
        assert!(err.to_string().starts_with("<yaml>:6: "), "{err}");
    }

    #[test]
    fn reserved_and_overlapping_are_rejected() {
        let err = LabSpec::from_yaml("name: demo\nworkloads:\n  - name: host\n").expect_err("host");
        assert!(
            matches!(err, SpecError::ReservedName { line: Some(3), .. }),
            "{err:?}"
        );
        let text = "name: demo\nexternals:\n  - name: out\n    address4: 10.77.0.200/24\n    address6: 2001:db8::2/64\n";
        let err = LabSpec::from_yaml(text).expect_err("overlap");
        assert!(
            matches!(err, SpecError::ExternalAddress { line: Some(3), .. }),
            "{err:?}"
        );
    }

    #[test]
    fn small_subnet_is_rejected() {
        let text = "name: demo\nsubnet4: 10.1.0.0/29\nworkloads:\n  - name: a\n";
        let err = LabSpec::from_yaml(text).expect_err("too small");
        assert!(
            matches!(err, SpecError::SubnetTooSmall { line: Some(2), .. }),
            "{err:?}"
        );
    }
}
