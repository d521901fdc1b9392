//! The workload inventory: which workloads run on this node, their labels, host-side
//! interfaces and addresses, and the node's own addresses.
//!
//! The agent reads it from a YAML file (format in `docs/policy.md`, "Inventory").
//! Everything is validated while the YAML is read, so each error names the file, the
//! line and column, and the field that is wrong.
use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    net::IpAddr,
    path::Path,
};

use serde::{
    Deserialize, Deserializer,
    de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor, value::MapAccessDeserializer},
};

mod syntax;

pub use syntax::{check_interface_name, check_label_key, check_label_value};
pub(crate) use syntax::{check_name, check_unicast};

/// A workload's labels (Kubernetes label syntax), sorted by key.
pub type Labels = BTreeMap<String, String>;

/// Linux `IFNAMSIZ` minus the terminating NUL.
pub const MAX_INTERFACE_NAME: usize = 15;

/// Everything the agent knows about the workloads of this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Where the inventory came from (a path or a name), for messages.
    pub origin: String,
    pub host: Host,
    pub workloads: Vec<Workload>,
}

/// The node itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Host {
    /// The node's own addresses: traffic from/to them has the reserved HOST identity.
    pub addresses: Vec<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    /// Unique within the inventory.
    pub name: String,
    pub labels: Labels,
    /// Host-side interface (the host end of the workload's veth pair).
    pub interface: String,
    pub addresses: Vec<IpAddr>,
    pub mode: Mode,
}

/// What the dataplane does with a packet that policy does not allow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Drop it.
    #[default]
    Enforce,
    /// Count it as an audit event and let it through.
    Audit,
    /// Let it through (verdicts are still counted).
    Off,
}

impl Mode {
    /// The `enforcer_common::endpoint::MODE_*` value.
    pub fn abi(self) -> u32 {
        use enforcer_common::endpoint::{MODE_AUDIT, MODE_ENFORCE, MODE_OFF};
        match self {
            Mode::Enforce => MODE_ENFORCE,
            Mode::Audit => MODE_AUDIT,
            Mode::Off => MODE_OFF,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
            Mode::Off => "off",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("{file}: cannot read the inventory: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// The text is not a valid inventory. `line` and `column` start at 1; 0 means
    /// unknown (then they are left out of the message).
    #[error("{file}{at}: {message}", at = At(*line, *column))]
    Invalid {
        file: String,
        line: usize,
        column: usize,
        message: String,
    },
}

impl Inventory {
    /// Reads and validates the inventory file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, InventoryError> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| InventoryError::Read {
            file: file.clone(),
            source,
        })?;
        Self::from_str(&text, &file)
    }

    /// Parses and validates inventory text; `origin` names it in errors.
    pub fn from_str(text: &str, origin: &str) -> Result<Self, InventoryError> {
        let raw: RawInventory = serde_yaml_ng::from_str(text).map_err(|e| {
            let (line, column, message) = split_yaml_error(&e);
            InventoryError::Invalid {
                file: origin.to_string(),
                line,
                column,
                message,
            }
        })?;
        Ok(Inventory {
            origin: origin.to_string(),
            host: raw.host,
            workloads: raw.workloads,
        })
    }

    /// The workload that owns `addr`, if any.
    pub fn workload_by_address(&self, addr: IpAddr) -> Option<&Workload> {
        self.workloads.iter().find(|w| w.addresses.contains(&addr))
    }
}

/// `:line:column` when known.
pub(crate) struct At(pub usize, pub usize);

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            Ok(())
        } else {
            write!(f, ":{}:{}", self.0, self.1)
        }
    }
}

/// Splits a serde_yaml_ng error into (line, column, message without the position).
/// The message keeps serde_yaml_ng's path prefix (`workloads[1].interface: ...`).
pub(crate) fn split_yaml_error(err: &serde_yaml_ng::Error) -> (usize, usize, String) {
    let text = err.to_string();
    match err.location() {
        Some(loc) => {
            let suffix = format!(" at line {} column {}", loc.line(), loc.column());
            let message = match text.find(&suffix) {
                Some(i) => format!("{}{}", &text[..i], &text[i + suffix.len()..]),
                None => text,
            };
            (loc.line(), loc.column(), message)
        }
        None => (0, 0, text),
    }
}

// ---------------------------------------------------------------------------------
// Deserialization. Validation happens inside visitors so that serde_yaml_ng attaches
// the position of the offending node to the error.

/// A labels map with every key and value checked. Also used for policy selectors.
pub(crate) struct LabelsDe(pub Labels);

impl<'de> Deserialize<'de> for LabelsDe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = LabelsDe;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of label keys to values, like {app: web}")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<LabelsDe, A::Error> {
                labels_from_map(map).map(LabelsDe)
            }
        }
        d.deserialize_map(V)
    }
}

/// Reads a map of labels, checking every key and value where it is written.
pub(crate) fn labels_from_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<Labels, A::Error> {
    let mut labels = Labels::new();
    while let Some(key) = map.next_key_seed(LabelKey { seen: &labels })? {
        let value = map.next_value_seed(LabelValue { key: &key })?;
        labels.insert(key, value);
    }
    Ok(labels)
}

struct LabelKey<'a> {
    seen: &'a Labels,
}

impl<'de> DeserializeSeed<'de> for LabelKey<'_> {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for LabelKey<'_> {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a label key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        check_label_key(v).map_err(E::custom)?;
        if self.seen.contains_key(v) {
            return Err(E::custom(format!("label `{v}` is given twice")));
        }
        Ok(v.to_string())
    }
}

struct LabelValue<'a> {
    key: &'a str,
}

impl<'de> DeserializeSeed<'de> for LabelValue<'_> {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for LabelValue<'_> {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a value for label `{}`", self.key)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        check_label_value(self.key, v).map_err(E::custom)?;
        Ok(v.to_string())
    }
}

/// A unicast IP address.
struct AddressDe(IpAddr);

impl<'de> Deserialize<'de> for AddressDe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = AddressDe;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an IPv4 or IPv6 address")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<AddressDe, E> {
                let ip: IpAddr = v.trim().parse().map_err(|_| {
                    let hint = if v.contains('/') {
                        " (a single address, without a prefix length)"
                    } else {
                        ""
                    };
                    E::custom(format!("`{v}` is not an IP address{hint}"))
                })?;
                check_unicast(ip).map_err(E::custom)?;
                Ok(AddressDe(ip))
            }
        }
        d.deserialize_str(V)
    }
}

struct InterfaceDe(String);

impl<'de> Deserialize<'de> for InterfaceDe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = InterfaceDe;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an interface name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<InterfaceDe, E> {
                check_interface_name(v).map_err(E::custom)?;
                Ok(InterfaceDe(v.to_string()))
            }
        }
        d.deserialize_str(V)
    }
}

struct NameDe(String);

impl<'de> Deserialize<'de> for NameDe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = NameDe;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a workload name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<NameDe, E> {
                check_name("workload", v).map_err(E::custom)?;
                Ok(NameDe(v.to_string()))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Mode;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("one of enforce, audit, off")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Mode, E> {
                match v.to_ascii_lowercase().as_str() {
                    "enforce" => Ok(Mode::Enforce),
                    "audit" => Ok(Mode::Audit),
                    "off" => Ok(Mode::Off),
                    _ => Err(E::custom(format!(
                        "unknown mode `{v}`; expected one of enforce, audit, off"
                    ))),
                }
            }
        }
        d.deserialize_str(V)
    }
}

/// Who owns each address seen so far: "the host" or "workload `web`".
type Owners = HashMap<IpAddr, String>;

struct RawInventory {
    host: Host,
    workloads: Vec<Workload>,
}

impl<'de> Deserialize<'de> for RawInventory {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(field_identifier, rename_all = "lowercase")]
        enum Field {
            Host,
            Workloads,
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawInventory;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an inventory with `host` and `workloads`")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawInventory, A::Error> {
                let mut owners = Owners::new();
                let mut host = None;
                let mut workloads = None;
                while let Some(field) = map.next_key::<Field>()? {
                    match field {
                        Field::Host => {
                            if host.is_some() {
                                return Err(de::Error::duplicate_field("host"));
                            }
                            host = Some(map.next_value_seed(HostSeed {
                                owners: &mut owners,
                            })?);
                        }
                        Field::Workloads => {
                            if workloads.is_some() {
                                return Err(de::Error::duplicate_field("workloads"));
                            }
                            workloads = Some(map.next_value_seed(WorkloadsSeed {
                                owners: &mut owners,
                            })?);
                        }
                    }
                }
                Ok(RawInventory {
                    host: host.unwrap_or_default(),
                    workloads: workloads.unwrap_or_default(),
                })
            }
        }
        d.deserialize_map(V)
    }
}

struct HostSeed<'a> {
    owners: &'a mut Owners,
}

impl<'de> DeserializeSeed<'de> for HostSeed<'_> {
    type Value = Host;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Host, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for HostSeed<'_> {
    type Value = Host;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the host, like {addresses: [10.0.0.1]}")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Host, A::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            #[serde(default)]
            addresses: Vec<AddressDe>,
        }
        let raw = Raw::deserialize(MapAccessDeserializer::new(map))?;
        let mut addresses = Vec::with_capacity(raw.addresses.len());
        for AddressDe(ip) in raw.addresses {
            claim(self.owners, ip, "the host")?;
            addresses.push(ip);
        }
        Ok(Host { addresses })
    }
}

/// Records that `owner` uses `ip`; an address belongs to one owner only.
fn claim<E: de::Error>(owners: &mut Owners, ip: IpAddr, owner: &str) -> Result<(), E> {
    if let Some(first) = owners.get(&ip) {
        let msg = if first == owner {
            format!("address {ip} is listed twice for {owner}")
        } else {
            format!("address {ip} of {owner} is already an address of {first}")
        };
        return Err(E::custom(msg));
    }
    owners.insert(ip, owner.to_string());
    Ok(())
}

struct WorkloadsSeed<'a> {
    owners: &'a mut Owners,
}

impl<'de> DeserializeSeed<'de> for WorkloadsSeed<'_> {
    type Value = Vec<Workload>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Vec<Workload>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for WorkloadsSeed<'_> {
    type Value = Vec<Workload>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of workloads")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Workload>, A::Error> {
        let mut names = HashMap::new();
        let mut interfaces = HashMap::new();
        let mut out = Vec::new();
        while let Some(w) = seq.next_element_seed(WorkloadSeed {
            index: out.len(),
            owners: self.owners,
            names: &mut names,
            interfaces: &mut interfaces,
        })? {
            out.push(w);
        }
        Ok(out)
    }
}

struct WorkloadSeed<'a> {
    index: usize,
    owners: &'a mut Owners,
    /// Name → index of the workload that has it.
    names: &'a mut HashMap<String, usize>,
    /// Interface → name of the workload that has it.
    interfaces: &'a mut HashMap<String, String>,
}

impl<'de> DeserializeSeed<'de> for WorkloadSeed<'_> {
    type Value = Workload;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Workload, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for WorkloadSeed<'_> {
    type Value = Workload;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a workload with name, labels, interface and addresses")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Workload, A::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            name: NameDe,
            #[serde(default)]
            labels: Option<LabelsDe>,
            interface: InterfaceDe,
            #[serde(default)]
            addresses: Vec<AddressDe>,
            #[serde(default)]
            mode: Mode,
        }
        let raw = Raw::deserialize(MapAccessDeserializer::new(map))?;
        let name = raw.name.0;
        if let Some(first) = self.names.get(&name) {
            return Err(de::Error::custom(format!(
                "workload name `{name}` is already used by workloads[{first}]"
            )));
        }
        let interface = raw.interface.0;
        if let Some(first) = self.interfaces.get(&interface) {
            return Err(de::Error::custom(format!(
                "interface `{interface}` of workload `{name}` is already the interface of \
                 workload `{first}`"
            )));
        }
        let owner = format!("workload `{name}`");
        let mut addresses = Vec::with_capacity(raw.addresses.len());
        for AddressDe(ip) in raw.addresses {
            claim(self.owners, ip, &owner)?;
            addresses.push(ip);
        }
        self.names.insert(name.clone(), self.index);
        self.interfaces.insert(interface.clone(), name.clone());
        Ok(Workload {
            name,
            labels: raw.labels.map(|l| l.0).unwrap_or_default(),
            interface,
            addresses,
            mode: raw.mode,
        })
    }
}

#[cfg(test)]
mod tests;
