//! The compiled form of a policy plus inventory: exactly what the dataplane writes
//! into one epoch of the kernel maps, with no kernel handles in it.
use std::collections::BTreeMap;

use enforcer_common::{
    ipcache::DenyInfo,
    policy::{PolicyKey, PolicyValue},
};
use ipnet::IpNet;
use serde::Serialize;

/// One workload interface to attach to and its endpoint entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointEntry {
    pub workload: String,
    /// Host-side interface name, in the agent's network namespace.
    pub interface: String,
    pub identity: u32,
    /// `enforcer_common::endpoint::MODE_*`.
    pub mode: u32,
    /// `enforcer_common::endpoint::FLAG_*`.
    pub flags: u32,
}

/// Where a compiled rule came from, for attribution ("which policy dropped my packet").
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleInfo {
    pub id: u32,
    pub policy: String,
    /// "ingress" or "egress".
    pub direction: &'static str,
    /// Index of the rule within the policy's ingress/egress list.
    pub index: usize,
    /// Line in the policy file where the rule starts, when known.
    pub line: Option<usize>,
}

/// What an identity stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IdentitySource {
    Reserved(&'static str),
    Labels(BTreeMap<String, String>),
    Cidr(IpNet),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compiled {
    pub endpoints: Vec<EndpointEntry>,
    /// Address or prefix → identity. Workload addresses are host prefixes (/32, /128).
    pub ipcache: Vec<(IpNet, u32)>,
    /// Host CIDR deny list, with `except` holes as `DenyInfo { action: EXCEPT }`.
    pub denylist: Vec<(IpNet, DenyInfo)>,
    /// Policy map entries; `key.epoch` is left 0 and set by the dataplane.
    pub policy: Vec<(PolicyKey, PolicyValue)>,
    pub rules: Vec<RuleInfo>,
    pub identities: BTreeMap<u32, IdentitySource>,
}
