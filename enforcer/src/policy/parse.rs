//! Reading a policy file: YAML → [`PolicyFile`].
//!
//! Every check runs inside a serde visitor, while the node being checked is the one
//! serde_yaml_ng is reading, so the error carries that node's line, column and path
//! (`policies[0].ingress[0].ports[1]`). Checks that span fields of one mapping run in
//! that mapping's `visit_map` and point at the mapping; checks of a single value
//! point at the value.
use std::{collections::HashMap, fmt, net::IpAddr};

use ipnet::IpNet;
use serde::{
    Deserialize, Deserializer,
    de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor, value::MapAccessDeserializer},
};

use super::{
    CidrBlock, HostPolicy, Peer, Peers, Policy, PolicyError, PolicyFile, PortSpec, Ports, Protocol,
    Rule, Selector, VERSION,
};
use crate::inventory::{check_name, labels_from_map, split_yaml_error};

/// Parses and validates policy text; rule lines are left `None`.
pub(crate) fn from_str(text: &str, origin: &str) -> Result<PolicyFile, PolicyError> {
    let raw: RawFile = serde_yaml_ng::from_str(text).map_err(|e| {
        let (line, column, message) = split_yaml_error(&e);
        PolicyError::Invalid {
            file: origin.to_string(),
            line,
            column,
            message,
        }
    })?;
    Ok(PolicyFile {
        origin: origin.to_string(),
        version: raw.version.0,
        host: HostPolicy {
            deny_cidrs: raw
                .host
                .map(|h| h.deny_cidrs.into_iter().map(|b| b.0).collect())
                .unwrap_or_default(),
        },
        policies: raw.policies.map(|p| p.0).unwrap_or_default(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    version: VersionDe,
    #[serde(default)]
    host: Option<RawHost>,
    #[serde(default)]
    policies: Option<PoliciesDe>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    #[serde(default, rename = "denyCIDRs")]
    deny_cidrs: Vec<CidrBlockDe>,
}

struct VersionDe(u32);

impl<'de> Deserialize<'de> for VersionDe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl V {
            fn unsupported<E: de::Error>(v: impl fmt::Display) -> E {
                E::custom(format!(
                    "unsupported policy file version `{v}`; this enforcer reads version {VERSION}"
                ))
            }
        }
        impl Visitor<'_> for V {
            type Value = VersionDe;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "the file format version, {VERSION}")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<VersionDe, E> {
                if v == u64::from(VERSION) {
                    Ok(VersionDe(VERSION))
                } else {
                    Err(Self::unsupported(v))
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<VersionDe, E> {
                Err(Self::unsupported(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<VersionDe, E> {
                Err(Self::unsupported(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<VersionDe, E> {
                Err(Self::unsupported(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// A CIDR in canonical form. A bare address means its host prefix (/32, /128).
pub(crate) struct CidrDe(pub IpNet);

/// Parses one CIDR as written in a policy file.
pub fn parse_cidr(v: &str) -> Result<IpNet, String> {
    let v = v.trim();
    let net: IpNet = match v.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => match v.parse::<IpAddr>() {
            Ok(ip) => IpNet::from(ip),
            Err(_) => {
                return Err(format!(
                    "`{v}` is not a CIDR (expected an address and prefix length, like \
                     192.0.2.0/24 or 2001:db8::/32)"
                ));
            }
        },
    };
    if net.trunc() != net {
        return Err(format!(
            "`{v}` has bits set after its /{} prefix; did you mean {}?",
            net.prefix_len(),
            net.trunc()
        ));
    }
    if let IpNet::V6(v6) = net
        && let Some(v4) = v6.network().to_ipv4_mapped()
        && v6.prefix_len() >= 96
    {
        return Err(format!(
            "`{v}` is an IPv4-mapped IPv6 prefix; write it as IPv4 ({v4}/{})",
            v6.prefix_len() - 96
        ));
    }
    Ok(net)
}

impl<'de> Deserialize<'de> for CidrDe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = CidrDe;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a CIDR, like 192.0.2.0/24 or 2001:db8::/32")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CidrDe, E> {
                parse_cidr(v).map(CidrDe).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// Checks that every except is a strict subset of `cidr`.
fn check_except(cidr: IpNet, except: &[IpNet]) -> Result<(), String> {
    for e in except {
        if *e == cidr {
            return Err(format!(
                "except {e} is the whole of cidr {cidr}; an except must be smaller"
            ));
        }
        if !cidr.contains(e) {
            return Err(format!("except {e} is not inside cidr {cidr}"));
        }
    }
    Ok(())
}

/// A deny list entry: `192.0.2.0/24` or `{cidr: 192.0.2.0/24, except: [...]}`.
struct CidrBlockDe(CidrBlock);

impl<'de> Deserialize<'de> for CidrBlockDe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CidrBlockDe;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a CIDR, or {cidr: CIDR, except: [CIDR, ...]}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CidrBlockDe, E> {
                let cidr = parse_cidr(v).map_err(E::custom)?;
                Ok(CidrBlockDe(CidrBlock {
                    cidr,
                    except: Vec::new(),
                }))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<CidrBlockDe, A::Error> {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Raw {
                    cidr: CidrDe,
                    #[serde(default)]
                    except: Vec<CidrDe>,
                }
                let raw = Raw::deserialize(MapAccessDeserializer::new(map))?;
                let cidr = raw.cidr.0;
                let except: Vec<IpNet> = raw.except.into_iter().map(|e| e.0).collect();
                check_except(cidr, &except).map_err(de::Error::custom)?;
                Ok(CidrBlockDe(CidrBlock { cidr, except }))
            }
        }
        d.deserialize_any(V)
    }
}

/// A label selector. Unlike an inventory's labels it must be written out: `{}` selects
/// everything, an empty value is an error (it is too easy to write by mistake).
struct SelectorDe(Selector);

impl<'de> Deserialize<'de> for SelectorDe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SelectorDe;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of labels to match, like {app: web}, or {} for all")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<SelectorDe, A::Error> {
                Ok(SelectorDe(Selector {
                    match_labels: labels_from_map(map)?,
                }))
            }
            fn visit_unit<E: de::Error>(self) -> Result<SelectorDe, E> {
                Err(E::custom(
                    "selector is empty; write `selector: {}` to select every workload",
                ))
            }
        }
        d.deserialize_any(V)
    }
}

struct PolicyNameDe(String);

impl<'de> Deserialize<'de> for PolicyNameDe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = PolicyNameDe;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a policy name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PolicyNameDe, E> {
                check_name("policy", v).map_err(E::custom)?;
                Ok(PolicyNameDe(v.to_string()))
            }
        }
        d.deserialize_str(V)
    }
}

/// The policy list; names must be unique.
struct PoliciesDe(Vec<Policy>);

impl<'de> Deserialize<'de> for PoliciesDe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PoliciesDe;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of policies")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PoliciesDe, A::Error> {
                let mut names = HashMap::new();
                let mut out = Vec::new();
                while let Some(p) = seq.next_element_seed(PolicySeed {
                    index: out.len(),
                    names: &mut names,
                })? {
                    out.push(p);
                }
                Ok(PoliciesDe(out))
            }
        }
        d.deserialize_seq(V)
    }
}

struct PolicySeed<'a> {
    index: usize,
    /// Name → index of the policy that has it.
    names: &'a mut HashMap<String, usize>,
}

impl<'de> DeserializeSeed<'de> for PolicySeed<'_> {
    type Value = Policy;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Policy, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for PolicySeed<'_> {
    type Value = Policy;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a policy with name, selector, and ingress and/or egress")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Policy, A::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            name: PolicyNameDe,
            selector: SelectorDe,
            // Not plain `Option`s: serde would read a bare `ingress:` as absent.
            #[serde(default, deserialize_with = "present::<_, false>")]
            ingress: Option<RulesDe<false>>,
            #[serde(default, deserialize_with = "present::<_, true>")]
            egress: Option<RulesDe<true>>,
        }
        let raw = Raw::deserialize(MapAccessDeserializer::new(map))?;
        let name = raw.name.0;
        if let Some(first) = self.names.get(&name) {
            return Err(de::Error::custom(format!(
                "policy name `{name}` is already used by policies[{first}]"
            )));
        }
        if raw.ingress.is_none() && raw.egress.is_none() {
            return Err(de::Error::custom(format!(
                "policy `{name}` has neither `ingress` nor `egress`, so it would do nothing; \
                 write `ingress: []` to deny all inbound traffic"
            )));
        }
        self.names.insert(name.clone(), self.index);
        Ok(Policy {
            name,
            selector: raw.selector.0,
            ingress: raw.ingress.map(|r| r.0),
            egress: raw.egress.map(|r| r.0),
        })
    }
}

/// An `ingress` (`EGRESS = false`) or `egress` rule list. Present but empty (`[]`)
/// denies everything in that direction; a bare key with no value is rejected because
/// it reads like "no rules" to some and "no restriction" to others.
struct RulesDe<const EGRESS: bool>(Vec<Rule>);

impl<'de, const EGRESS: bool> Deserialize<'de> for RulesDe<EGRESS> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<const EGRESS: bool>;
        impl<'de, const EGRESS: bool> Visitor<'de> for V<EGRESS> {
            type Value = RulesDe<EGRESS>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of rules")
            }
            fn visit_unit<E: de::Error>(self) -> Result<RulesDe<EGRESS>, E> {
                let (key, what) = if EGRESS {
                    ("egress", "outbound")
                } else {
                    ("ingress", "inbound")
                };
                Err(E::custom(format!(
                    "`{key}` has no value; write `{key}: []` to deny all {what} traffic, or \
                     remove the key to leave {what} traffic unrestricted by this policy"
                )))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RulesDe<EGRESS>, A::Error> {
                let mut out = Vec::new();
                if EGRESS {
                    while let Some(r) = seq.next_element::<RawEgressRule>()? {
                        out.push(rule(r.to, r.ports));
                    }
                } else {
                    while let Some(r) = seq.next_element::<RawIngressRule>()? {
                        out.push(rule(r.from, r.ports));
                    }
                }
                Ok(RulesDe(out))
            }
        }
        d.deserialize_any(V::<EGRESS>)
    }
}

/// A rule list whose key is present, whatever its value.
fn present<'de, D: Deserializer<'de>, const EGRESS: bool>(
    d: D,
) -> Result<Option<RulesDe<EGRESS>>, D::Error> {
    RulesDe::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIngressRule {
    #[serde(default)]
    from: Option<Vec<PeerDe>>,
    #[serde(default)]
    ports: Option<Vec<PortSpecDe>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEgressRule {
    #[serde(default)]
    to: Option<Vec<PeerDe>>,
    #[serde(default)]
    ports: Option<Vec<PortSpecDe>>,
}

/// As in Kubernetes, an absent or empty peer or port list means "any".
fn rule(peers: Option<Vec<PeerDe>>, ports: Option<Vec<PortSpecDe>>) -> Rule {
    let peers = peers.unwrap_or_default();
    let ports = ports.unwrap_or_default();
    Rule {
        peers: if peers.is_empty() {
            Peers::Any
        } else {
            Peers::Only(peers.into_iter().map(|p| p.0).collect())
        },
        ports: if ports.is_empty() {
            Ports::Any
        } else {
            Ports::Only(ports.into_iter().map(|p| p.0).collect())
        },
        line: None,
    }
}

struct PeerDe(Peer);

impl<'de> Deserialize<'de> for PeerDe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PeerDe;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a peer: {selector: {...}}, {cidr: CIDR} or {host: true}")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<PeerDe, A::Error> {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Raw {
                    selector: Option<SelectorDe>,
                    cidr: Option<CidrDe>,
                    except: Option<Vec<CidrDe>>,
                    host: Option<bool>,
                }
                let raw = Raw::deserialize(MapAccessDeserializer::new(map))?;
                let kinds = usize::from(raw.selector.is_some())
                    + usize::from(raw.cidr.is_some())
                    + usize::from(raw.host.is_some());
                if raw.except.is_some() && raw.cidr.is_none() {
                    return Err(de::Error::custom("`except` needs a `cidr` next to it"));
                }
                if kinds == 0 {
                    return Err(de::Error::custom(
                        "a peer needs one of `selector`, `cidr` or `host`",
                    ));
                }
                if kinds > 1 {
                    return Err(de::Error::custom(
                        "a peer has only one of `selector`, `cidr` or `host`; write one list \
                         item per peer",
                    ));
                }
                if raw.host == Some(false) {
                    return Err(de::Error::custom(
                        "`host: false` matches nothing; remove the peer",
                    ));
                }
                let peer = if let Some(s) = raw.selector {
                    Peer::Workloads(s.0)
                } else if let Some(c) = raw.cidr {
                    let except: Vec<IpNet> = raw
                        .except
                        .unwrap_or_default()
                        .into_iter()
                        .map(|e| e.0)
                        .collect();
                    check_except(c.0, &except).map_err(de::Error::custom)?;
                    Peer::Cidr(CidrBlock { cidr: c.0, except })
                } else {
                    Peer::Host
                };
                Ok(PeerDe(peer))
            }
        }
        d.deserialize_map(V)
    }
}

/// A port number, 1 to 65535.
struct PortDe(u16);

impl<'de> Deserialize<'de> for PortDe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl V {
            fn out_of_range<E: de::Error>(v: impl fmt::Display) -> E {
                E::custom(format!("port {v} is out of range; ports are 1 to 65535"))
            }
        }
        impl Visitor<'_> for V {
            type Value = PortDe;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number from 1 to 65535")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortDe, E> {
                match u16::try_from(v) {
                    Ok(p) if p != 0 => Ok(PortDe(p)),
                    _ => Err(Self::out_of_range(v)),
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortDe, E> {
                match u64::try_from(v) {
                    Ok(u) => self.visit_u64(u),
                    Err(_) => Err(Self::out_of_range(v)),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PortDe, E> {
                Err(E::custom(format!(
                    "port `{v}` is not a number; named ports are not supported"
                )))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Protocol;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("one of TCP, UDP, ICMP, ICMPv4, ICMPv6")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Protocol, E> {
                match v.to_ascii_lowercase().as_str() {
                    "tcp" => Ok(Protocol::Tcp),
                    "udp" => Ok(Protocol::Udp),
                    "icmp" => Ok(Protocol::Icmp),
                    "icmpv4" => Ok(Protocol::Icmpv4),
                    "icmpv6" => Ok(Protocol::Icmpv6),
                    _ => Err(E::custom(format!(
                        "unknown protocol `{v}`; expected one of TCP, UDP, ICMP, ICMPv4, ICMPv6"
                    ))),
                }
            }
        }
        d.deserialize_str(V)
    }
}

/// `{port, endPort, protocol}`.
struct PortSpecDe(PortSpec);

impl<'de> Deserialize<'de> for PortSpecDe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = PortSpecDe;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port, like {port: 80, protocol: TCP}")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<PortSpecDe, A::Error> {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Raw {
                    port: Option<PortDe>,
                    #[serde(rename = "endPort")]
                    end_port: Option<PortDe>,
                    protocol: Option<Protocol>,
                }
                let raw = Raw::deserialize(MapAccessDeserializer::new(map))?;
                let protocol = raw.protocol.unwrap_or(Protocol::Tcp);
                let port = raw.port.map(|p| p.0);
                let end = raw.end_port.map(|p| p.0);
                if !protocol.has_ports() {
                    if let Some(p) = port {
                        return Err(de::Error::custom(format!(
                            "{protocol} has no ports; remove `port: {p}`"
                        )));
                    }
                    if let Some(e) = end {
                        return Err(de::Error::custom(format!(
                            "{protocol} has no ports; remove `endPort: {e}`"
                        )));
                    }
                }
                let ports = match (port, end) {
                    (None, None) => None,
                    (Some(p), None) => Some((p, p)),
                    (None, Some(_)) => {
                        return Err(de::Error::custom("`endPort` needs a `port` to start from"));
                    }
                    (Some(p), Some(e)) if e < p => {
                        return Err(de::Error::custom(format!(
                            "endPort {e} is lower than port {p}"
                        )));
                    }
                    (Some(p), Some(e)) => Some((p, e)),
                };
                Ok(PortSpecDe(PortSpec { protocol, ports }))
            }
        }
        d.deserialize_map(V)
    }
}
