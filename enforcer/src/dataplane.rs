//! The kernel side, as seen from userspace. The only module that uses aya.
//!
//! Loads the embedded eBPF object with every map pinned under the instance's pin
//! directory, attaches the two classifiers to each workload interface through TCX
//! links that are pinned too (so enforcement outlives the agent), and applies a
//! compiled policy by writing it into the inactive epoch of the maps and flipping
//! the live epoch with one array write.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray, PerCpuHashMap, RingBuf, lpm_trie::Key},
    programs::{
        ProgramError, SchedClassifier, TcAttachType,
        links::{FdLink, PinnedLink},
        tc::SchedClassifierLink,
    },
};
use enforcer_common::{
    config::{Config, DEFAULT_EVENTS_BURST, DEFAULT_EVENTS_PER_SEC, FLAG_EVENTS, FLAG_FLOWS},
    counter::{Counter, CounterKey},
    endpoint::{EndpointInfo, EndpointKey},
    flow::{EventLoss, FlowKey, FlowStats},
    ipcache::{DenyInfo, IpInfo, LpmAddr, trie_prefix_len},
    map_names,
    policy::{PolicyKey, PolicyValue},
    prog_names,
};
use ipnet::IpNet;
use serde::Serialize;
use tracing::{debug, info, warn};

use crate::policy::compiled::Compiled;

/// The eBPF object built by `build.rs`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/enforcer-ebpf"));

/// `BPF_FS_MAGIC` from linux/magic.h.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("{path} is not on a bpffs and mounting bpffs failed: {source}")]
    Bpffs {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("pin directory {path}: {source}")]
    PinDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "loading the eBPF object with maps pinned in {pin_dir}: {source} \
         (if an older enforcer pinned maps of another layout there, remove it with \
         `enforcer cleanup --pin-dir {pin_dir}`)"
    )]
    Load {
        pin_dir: PathBuf,
        #[source]
        source: Box<aya::EbpfError>,
    },
    #[error("program {program}: {source}")]
    Program {
        program: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("map {map} is missing from the eBPF object")]
    MissingMap { map: &'static str },
    #[error("program {program} is missing from the eBPF object")]
    MissingProgram { program: &'static str },
    #[error("map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    #[error("attaching {program} to {interface} ({hook}): {source}")]
    Attach {
        program: &'static str,
        interface: String,
        hook: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("interface name {interface:?} contains a NUL byte")]
    InterfaceName { interface: String },
    #[error("pinning link {path}: {source}")]
    PinLink {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

type Result<T, E = DataplaneError> = std::result::Result<T, E>;

/// The two hooks on a workload's host-side interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// TCX ingress: what the workload sends.
    FromWorkload,
    /// TCX egress: what the workload receives.
    ToWorkload,
}

impl Hook {
    pub const BOTH: [Hook; 2] = [Hook::FromWorkload, Hook::ToWorkload];
    fn program(self) -> &'static str {
        match self {
            Hook::FromWorkload => prog_names::TC_FROM_WORKLOAD,
            Hook::ToWorkload => prog_names::TC_TO_WORKLOAD,
        }
    }
    fn attach_type(self) -> TcAttachType {
        match self {
            Hook::FromWorkload => TcAttachType::Ingress,
            Hook::ToWorkload => TcAttachType::Egress,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Hook::FromWorkload => "tcx_ingress",
            Hook::ToWorkload => "tcx_egress",
        }
    }
}

/// How a link came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkOrigin {
    /// Attached by this agent.
    Attached,
    /// Found pinned from an earlier agent; its program was swapped atomically.
    Adopted,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkStatus {
    pub interface: String,
    pub ifindex: u32,
    pub hook: &'static str,
    pub program: &'static str,
    pub origin: LinkOrigin,
    pub pin: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MapStatus {
    pub name: &'static str,
    pub entries: usize,
    pub max_entries: u32,
}

/// What one apply did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct ApplyReport {
    pub generation: u32,
    pub epoch: u32,
    pub endpoints: usize,
    pub ipcache_entries: usize,
    pub denylist_entries: usize,
    pub policy_entries: usize,
    /// Workload interfaces named in the inventory that do not exist here.
    pub missing_interfaces: Vec<String>,
    pub attached: Vec<String>,
    pub detached: Vec<String>,
    pub duration_ms: f64,
}

/// Flow monitoring settings written into `ENF_CONFIG` with every apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Monitoring {
    /// Account packets and bytes per flow (`ENF_FLOWS`).
    pub flows: bool,
    /// Emit new-flow / deny / audit events into the ring buffer.
    pub events: bool,
    pub events_per_sec: u32,
    pub events_burst: u32,
}

impl Default for Monitoring {
    fn default() -> Self {
        Self {
            flows: true,
            events: true,
            events_per_sec: DEFAULT_EVENTS_PER_SEC,
            events_burst: DEFAULT_EVENTS_BURST,
        }
    }
}

pub struct Dataplane {
    ebpf: Ebpf,
    pin_dir: PathBuf,
    links: BTreeMap<(String, &'static str), LinkStatus>,
    monitoring: Monitoring,
    /// Entries of the maps the agent writes (ENDPOINTS, IPCACHE, DENYLIST, POLICY), as
    /// left by the last successful apply: the map status then needs no walk over
    /// hundreds of thousands of keys. `None` until an apply succeeds, and after one
    /// fails half-way (the maps then hold a partial epoch: walked and counted).
    written: Option<std::collections::HashMap<&'static str, usize>>,
}

impl Dataplane {
    /// Loads the object, reusing maps already pinned under `pin_dir` (so counters,
    /// connection tracking and the live policy carry over from an earlier agent).
    pub fn open(pin_dir: &Path) -> Result<Self> {
        ensure_bpffs(pin_dir)?;
        let links_dir = pin_dir.join("links");
        std::fs::create_dir_all(&links_dir).map_err(|source| DataplaneError::PinDir {
            path: links_dir.clone(),
            source,
        })?;
        raise_memlock();
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(pin_dir)
            .load(OBJECT)
            .map_err(|source| DataplaneError::Load {
                pin_dir: pin_dir.into(),
                source: Box::new(source),
            })?;
        for program in [prog_names::TC_FROM_WORKLOAD, prog_names::TC_TO_WORKLOAD] {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(program)
                .ok_or(DataplaneError::MissingProgram { program })?
                .try_into()
                .map_err(|source| DataplaneError::Program {
                    program,
                    source: Box::new(source),
                })?;
            prog.load().map_err(|source| DataplaneError::Program {
                program,
                source: Box::new(source),
            })?;
        }
        Ok(Self {
            ebpf,
            pin_dir: pin_dir.into(),
            links: BTreeMap::new(),
            monitoring: Monitoring::default(),
            written: None,
        })
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Takes effect with the next `apply`.
    pub fn set_monitoring(&mut self, m: Monitoring) {
        self.monitoring = m;
    }

    pub fn config(&self) -> Result<Config> {
        let map = self.map(map_names::CONFIG)?;
        let arr: Array<&MapData, Config> =
            Array::try_from(map).map_err(map_err(map_names::CONFIG))?;
        arr.get(&0, 0).map_err(map_err(map_names::CONFIG))
    }

    /// Writes `compiled` into the inactive epoch, attaches to its interfaces and
    /// flips the live epoch. On error the live epoch is untouched: the last good
    /// policy keeps being enforced.
    pub fn apply(&mut self, compiled: &Compiled) -> Result<ApplyReport> {
        let start = std::time::Instant::now();
        self.written = None;
        let old = self.config()?;
        let epoch = 1 - (old.active_epoch & 1);
        let mut report = ApplyReport {
            epoch,
            ..Default::default()
        };

        // Resolve interfaces first: an endpoint whose interface is gone is skipped.
        let mut endpoints = Vec::new();
        for ep in &compiled.endpoints {
            match nix::net::if_::if_nametoindex(ep.interface.as_str()) {
                Ok(ifindex) => endpoints.push((ep, ifindex)),
                Err(_) => report.missing_interfaces.push(ep.interface.clone()),
            }
        }
        for missing in &report.missing_interfaces {
            warn!(interface = %missing, "workload interface not found; not enforced until it appears");
        }

        self.clear_epoch(epoch)?;
        {
            let name = map_names::ENDPOINTS;
            let mut m: HashMap<&mut MapData, EndpointKey, EndpointInfo> =
                HashMap::try_from(self.map_mut(name)?).map_err(map_err(name))?;
            for (ep, ifindex) in &endpoints {
                let key = EndpointKey {
                    ifindex: *ifindex,
                    epoch,
                };
                let val = EndpointInfo {
                    identity: ep.identity,
                    mode: ep.mode,
                    flags: ep.flags,
                    _pad: 0,
                };
                m.insert(&key, &val, 0).map_err(map_err(name))?;
            }
            report.endpoints = endpoints.len();
        }
        {
            let name = map_names::IPCACHE;
            let mut m: LpmTrie<&mut MapData, LpmAddr, IpInfo> =
                LpmTrie::try_from(self.map_mut(name)?).map_err(map_err(name))?;
            for (net, identity) in &compiled.ipcache {
                let val = IpInfo {
                    identity: *identity,
                    _pad: 0,
                };
                m.insert(&lpm_key(epoch, net), &val, 0)
                    .map_err(map_err(name))?;
            }
            report.ipcache_entries = compiled.ipcache.len();
        }
        {
            let name = map_names::DENYLIST;
            let mut m: LpmTrie<&mut MapData, LpmAddr, DenyInfo> =
                LpmTrie::try_from(self.map_mut(name)?).map_err(map_err(name))?;
            for (net, info) in &compiled.denylist {
                m.insert(&lpm_key(epoch, net), info, 0)
                    .map_err(map_err(name))?;
            }
            report.denylist_entries = compiled.denylist.len();
        }
        {
            let name = map_names::POLICY;
            let mut m: HashMap<&mut MapData, PolicyKey, PolicyValue> =
                HashMap::try_from(self.map_mut(name)?).map_err(map_err(name))?;
            for (key, val) in &compiled.policy {
                let key = PolicyKey { epoch, ..*key };
                m.insert(&key, val, 0).map_err(map_err(name))?;
            }
            report.policy_entries = compiled.policy.len();
        }

        // Attach before the flip: until then the new interfaces have no endpoint in
        // the live epoch and the programs pass their traffic untouched.
        let wanted: BTreeSet<(String, u32)> = endpoints
            .iter()
            .map(|(ep, ifindex)| (ep.interface.clone(), *ifindex))
            .collect();
        for (iface, ifindex) in &wanted {
            for hook in Hook::BOTH {
                if self.ensure_link(iface, *ifindex, hook)? {
                    report.attached.push(format!("{iface}/{}", hook.as_str()));
                }
            }
        }

        let m = self.monitoring;
        let new = Config {
            active_epoch: epoch,
            generation: old.generation.wrapping_add(1).max(1),
            flags: if m.flows { FLAG_FLOWS } else { 0 } | if m.events { FLAG_EVENTS } else { 0 },
            events_per_sec: m.events_per_sec,
            events_burst: m.events_burst,
            _pad: 0,
        };
        {
            let name = map_names::CONFIG;
            let mut arr: Array<&mut MapData, Config> =
                Array::try_from(self.map_mut(name)?).map_err(map_err(name))?;
            arr.set(0, &new, 0).map_err(map_err(name))?;
        }
        report.generation = new.generation;

        // The old epoch is no longer read by any program run that starts from now;
        // a run that read the old config a moment ago may still look at it, which is
        // why the flip comes first and the cleanup second.
        self.clear_epoch(1 - epoch)?;

        let stale: Vec<(String, &'static str)> = self
            .links
            .keys()
            .filter(|(iface, _)| !wanted.iter().any(|(w, _)| w == iface))
            .cloned()
            .collect();
        for key in stale {
            if let Some(link) = self.links.remove(&key) {
                remove_pin(&link.pin);
                report.detached.push(format!("{}/{}", key.0, key.1));
            }
        }
        // Pins left by an earlier agent for interfaces no longer in the inventory.
        let live: BTreeSet<PathBuf> = self.links.values().map(|l| l.pin.clone()).collect();
        if let Ok(dir) = std::fs::read_dir(self.pin_dir.join("links")) {
            for entry in dir.flatten() {
                let path = entry.path();
                if !live.contains(&path) {
                    remove_pin(&path);
                    report
                        .detached
                        .push(entry.file_name().to_string_lossy().into_owned());
                }
            }
        }
        self.written = Some(
            [
                (map_names::ENDPOINTS, report.endpoints),
                (map_names::IPCACHE, report.ipcache_entries),
                (map_names::DENYLIST, report.denylist_entries),
                (map_names::POLICY, report.policy_entries),
            ]
            .into(),
        );
        report.duration_ms = start.elapsed().as_secs_f64() * 1e3;
        info!(
            generation = report.generation,
            epoch,
            endpoints = report.endpoints,
            policy_entries = report.policy_entries,
            ipcache_entries = report.ipcache_entries,
            denylist_entries = report.denylist_entries,
            duration_ms = report.duration_ms,
            "policy applied to the kernel"
        );
        Ok(report)
    }

    /// Makes sure `hook` of `iface` runs our program: adopt a pinned link (swapping
    /// in this agent's program atomically, no gap) or attach and pin a new one.
    /// Returns whether a new link was created.
    fn ensure_link(&mut self, iface: &str, ifindex: u32, hook: Hook) -> Result<bool> {
        let key = (iface.to_owned(), hook.as_str());
        if let Some(l) = self.links.get(&key)
            && l.ifindex == ifindex
        {
            return Ok(false);
        }
        let pin = self.link_pin(iface, ifindex, hook);
        let program = hook.program();
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(program)
            .ok_or(DataplaneError::MissingProgram { program })?
            .try_into()
            .map_err(|source| DataplaneError::Program {
                program,
                source: Box::new(source),
            })?;

        if pin.exists() {
            match adopt(prog, &pin) {
                Ok(()) => {
                    debug!(
                        interface = iface,
                        hook = hook.as_str(),
                        "adopted pinned link"
                    );
                    self.links.insert(
                        key,
                        LinkStatus {
                            interface: iface.into(),
                            ifindex,
                            hook: hook.as_str(),
                            program,
                            origin: LinkOrigin::Adopted,
                            pin,
                        },
                    );
                    return Ok(false);
                }
                Err(e) => {
                    warn!(pin = %pin.display(), error = %e, "pinned link unusable; attaching anew");
                    remove_pin(&pin);
                }
            }
        }
        let c_iface = std::ffi::CString::new(iface).map_err(|_| DataplaneError::InterfaceName {
            interface: iface.into(),
        })?;
        let id = prog
            .attach(c_iface.as_c_str(), hook.attach_type())
            .map_err(|source| DataplaneError::Attach {
                program,
                interface: iface.into(),
                hook: hook.as_str(),
                source: Box::new(source),
            })?;
        let link = prog
            .take_link(id)
            .map_err(|source| DataplaneError::Program {
                program,
                source: Box::new(source),
            })?;
        let fd: FdLink = link.try_into().map_err(|e| DataplaneError::PinLink {
            path: pin.clone(),
            source: Box::new(e),
        })?;
        // Dropping the pinned handle closes our fd; the pin keeps the link alive.
        fd.pin(&pin).map_err(|e| DataplaneError::PinLink {
            path: pin.clone(),
            source: Box::new(e),
        })?;
        self.links.insert(
            key,
            LinkStatus {
                interface: iface.into(),
                ifindex,
                hook: hook.as_str(),
                program,
                origin: LinkOrigin::Attached,
                pin,
            },
        );
        Ok(true)
    }

    /// Pins are named by interface and index: an interface deleted and recreated
    /// under the same name gets a fresh link instead of a dead one.
    fn link_pin(&self, iface: &str, ifindex: u32, hook: Hook) -> PathBuf {
        self.pin_dir
            .join("links")
            .join(format!("{}-{ifindex}-{}", pin_safe(iface), hook.as_str()))
    }

    /// Removes every entry of `epoch` from the policy-derived maps.
    fn clear_epoch(&mut self, epoch: u32) -> Result<()> {
        {
            let name = map_names::ENDPOINTS;
            let mut m: HashMap<&mut MapData, EndpointKey, EndpointInfo> =
                HashMap::try_from(self.map_mut(name)?).map_err(map_err(name))?;
            let keys: Vec<_> = m
                .keys()
                .filter_map(|k| k.ok())
                .filter(|k| k.epoch == epoch)
                .collect();
            for k in keys {
                let _ = m.remove(&k);
            }
        }
        {
            let name = map_names::POLICY;
            let mut m: HashMap<&mut MapData, PolicyKey, PolicyValue> =
                HashMap::try_from(self.map_mut(name)?).map_err(map_err(name))?;
            let keys: Vec<_> = m
                .keys()
                .filter_map(|k| k.ok())
                .filter(|k| k.epoch == epoch)
                .collect();
            for k in keys {
                let _ = m.remove(&k);
            }
        }
        for name in [map_names::IPCACHE, map_names::DENYLIST] {
            // Both tries share the key type; the value type only matters for reads.
            let mut m: LpmTrie<&mut MapData, LpmAddr, [u8; 8]> =
                LpmTrie::try_from(self.map_mut(name)?).map_err(map_err(name))?;
            let keys: Vec<Key<LpmAddr>> = m
                .keys()
                .filter_map(|k| k.ok())
                .filter(|k| k.data().epoch == epoch)
                .collect();
            for k in keys {
                let _ = m.remove(&k);
            }
        }
        Ok(())
    }

    /// Counters summed over CPUs.
    pub fn counters(&self) -> Result<Vec<(CounterKey, Counter)>> {
        let name = map_names::COUNTERS;
        let m: PerCpuHashMap<&MapData, CounterKey, Counter> =
            PerCpuHashMap::try_from(self.map(name)?).map_err(map_err(name))?;
        let mut out = Vec::new();
        for item in m.iter() {
            let (k, per_cpu) = item.map_err(map_err(name))?;
            let sum = per_cpu.iter().fold(Counter::default(), |a, c| Counter {
                packets: a.packets + c.packets,
                bytes: a.bytes + c.bytes,
            });
            out.push((k, sum));
        }
        out.sort_by_key(|(k, _)| *k);
        Ok(out)
    }

    /// Every flow with its per-CPU values folded: sums, earliest first seen, latest
    /// last seen, and the verdict of the CPU that saw the latest packet.
    pub fn flows(&self) -> Result<Vec<(FlowKey, FlowStats)>> {
        let name = map_names::FLOWS;
        let m: PerCpuHashMap<&MapData, FlowKey, FlowStats> =
            PerCpuHashMap::try_from(self.map(name)?).map_err(map_err(name))?;
        let mut out = Vec::new();
        for item in m.iter() {
            // An entry evicted between key and value reads is simply skipped.
            let Ok((k, per_cpu)) = item else { continue };
            let mut sum = FlowStats::default();
            for c in per_cpu.iter() {
                sum.packets += c.packets;
                sum.bytes += c.bytes;
                sum.rev_packets += c.rev_packets;
                sum.rev_bytes += c.rev_bytes;
                sum.drop_packets += c.drop_packets;
                sum.drop_bytes += c.drop_bytes;
                if c.first_seen_ns != 0
                    && (sum.first_seen_ns == 0 || c.first_seen_ns < sum.first_seen_ns)
                {
                    sum.first_seen_ns = c.first_seen_ns;
                }
                if c.last_seen_ns > sum.last_seen_ns {
                    sum.last_seen_ns = c.last_seen_ns;
                    sum.reason = c.reason;
                    sum.rule = c.rule;
                }
            }
            out.push((k, sum));
        }
        Ok(out)
    }

    /// Deletes flow entries (idle ones, after their last delta was taken).
    pub fn remove_flows(&mut self, keys: &[FlowKey]) -> Result<()> {
        let name = map_names::FLOWS;
        let mut m: PerCpuHashMap<&mut MapData, FlowKey, FlowStats> =
            PerCpuHashMap::try_from(self.map_mut(name)?).map_err(map_err(name))?;
        for k in keys {
            let _ = m.remove(k);
        }
        Ok(())
    }

    /// Events lost since the maps were created, summed over CPUs.
    pub fn event_loss(&self) -> Result<EventLoss> {
        let name = map_names::EVLOSS;
        let m: PerCpuArray<&MapData, EventLoss> =
            PerCpuArray::try_from(self.map(name)?).map_err(map_err(name))?;
        let per_cpu = m.get(&0, 0).map_err(map_err(name))?;
        Ok(per_cpu.iter().fold(EventLoss::default(), |a, c| EventLoss {
            ringbuf_full: a.ringbuf_full + c.ringbuf_full,
            rate_limited: a.rate_limited + c.rate_limited,
            flow_insert_failed: a.flow_insert_failed + c.flow_insert_failed,
        }))
    }

    /// The event ring buffer, moved out for the reader task (once).
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>> {
        let name = map_names::EVENTS;
        let map = self
            .ebpf
            .take_map(name)
            .ok_or(DataplaneError::MissingMap { map: name })?;
        RingBuf::try_from(map).map_err(map_err(name))
    }

    pub fn links(&self) -> Vec<LinkStatus> {
        self.links.values().cloned().collect()
    }

    /// Entries and capacity of every map (a full LRU evicts; a full hash refuses).
    pub fn maps(&self) -> Vec<MapStatus> {
        let mut out = Vec::new();
        for (name, map) in self.ebpf.maps() {
            let Some(name) = known_map_name(name) else {
                continue;
            };
            let data: &MapData = match map {
                aya::maps::Map::Array(d)
                | aya::maps::Map::HashMap(d)
                | aya::maps::Map::LruHashMap(d)
                | aya::maps::Map::PerCpuHashMap(d)
                | aya::maps::Map::PerCpuLruHashMap(d)
                | aya::maps::Map::LpmTrie(d) => d,
                _ => continue,
            };
            let max_entries = data.info().map(|i| i.max_entries()).unwrap_or(0);
            let written = self.written.as_ref().and_then(|w| w.get(name)).copied();
            out.push(MapStatus {
                name,
                entries: written.unwrap_or_else(|| count_entries(data)),
                max_entries,
            });
        }
        out.sort_by_key(|m| m.name);
        out
    }

    fn map(&self, name: &'static str) -> Result<&aya::maps::Map> {
        self.ebpf
            .map(name)
            .ok_or(DataplaneError::MissingMap { map: name })
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut aya::maps::Map> {
        self.ebpf
            .map_mut(name)
            .ok_or(DataplaneError::MissingMap { map: name })
    }

    /// For tests without traffic (`BPF_PROG_TEST_RUN`): the loaded classifier.
    pub fn program(&self, hook: Hook) -> Result<&SchedClassifier> {
        let program = hook.program();
        self.ebpf
            .program(program)
            .ok_or(DataplaneError::MissingProgram { program })?
            .try_into()
            .map_err(|source| DataplaneError::Program {
                program,
                source: Box::new(source),
            })
    }
}

fn known_map_name(name: &str) -> Option<&'static str> {
    [
        map_names::CONFIG,
        map_names::ENDPOINTS,
        map_names::IPCACHE,
        map_names::DENYLIST,
        map_names::POLICY,
        map_names::CT,
        map_names::FRAGS,
        map_names::COUNTERS,
        map_names::FLOWS,
    ]
    .into_iter()
    .find(|n| *n == name)
}

/// Counts entries by walking keys with `BPF_MAP_GET_NEXT_KEY` (no values copied).
fn count_entries(data: &MapData) -> usize {
    let Ok(info) = data.info() else { return 0 };
    if info.map_type().ok() == Some(aya::maps::MapType::Array) {
        return info.max_entries() as usize;
    }
    let key_size = info.key_size() as usize;
    let fd = data.fd();
    let mut count = 0usize;
    let mut key = vec![0u8; key_size];
    let mut next = vec![0u8; key_size];
    let mut first = true;
    loop {
        // SAFETY: buffers are key_size bytes as the kernel expects for this map.
        let rc = unsafe {
            get_next_key(
                std::os::fd::AsRawFd::as_raw_fd(&std::os::fd::AsFd::as_fd(fd)),
                if first { None } else { Some(&key) },
                &mut next,
            )
        };
        if rc.is_err() {
            break;
        }
        first = false;
        count += 1;
        std::mem::swap(&mut key, &mut next);
    }
    count
}

/// `BPF_MAP_GET_NEXT_KEY` on raw bytes (aya's typed iterators need the key type).
///
/// # Safety
/// `key` (when given) and `next` must be exactly the map's key size.
unsafe fn get_next_key(fd: i32, key: Option<&[u8]>, next: &mut [u8]) -> std::io::Result<()> {
    #[repr(C)]
    struct Attr {
        map_fd: u32,
        _pad: u32,
        key: u64,
        next_key: u64,
        rest: [u64; 13],
    }
    let attr = Attr {
        map_fd: fd as u32,
        _pad: 0,
        key: key.map_or(0, |k| k.as_ptr() as u64),
        next_key: next.as_mut_ptr() as u64,
        rest: [0; 13],
    };
    const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;
    // SAFETY: attr is a valid bpf_attr prefix for BPF_MAP_GET_NEXT_KEY; the caller
    // guarantees the buffer sizes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_GET_NEXT_KEY,
            &attr as *const Attr,
            std::mem::size_of::<Attr>(),
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn adopt(
    prog: &mut SchedClassifier,
    pin: &Path,
) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let pinned = PinnedLink::from_pin(pin)?;
    let fd: FdLink = pinned.into();
    let link = SchedClassifierLink::try_from(fd)?;
    let id = prog.attach_to_link(link)?;
    // Keep the link out of the program's managed set so dropping the program (agent
    // exit) never detaches it; the pin holds it.
    let _ = prog.take_link(id)?;
    Ok(())
}

/// bpffs refuses names containing '.', which interface names may contain: escape
/// every byte outside `[A-Za-z0-9_]` as `+XX`.
fn pin_safe(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02x}"));
        }
    }
    out
}

fn remove_pin(pin: &Path) {
    if let Err(e) = std::fs::remove_file(pin)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        warn!(pin = %pin.display(), error = %e, "could not remove link pin");
    }
}

fn lpm_key(epoch: u32, net: &IpNet) -> Key<LpmAddr> {
    let ip: IpAddr = net.network();
    Key::new(
        trie_prefix_len(ip, net.prefix_len()),
        LpmAddr::new(epoch, ip),
    )
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> DataplaneError {
    move |source| DataplaneError::Map {
        map,
        source: Box::new(source),
    }
}

/// Mounts bpffs at /sys/fs/bpf if the pin directory's bpffs is missing.
fn ensure_bpffs(pin_dir: &Path) -> Result<()> {
    let bpffs = Path::new(crate::paths::BPFFS);
    let target = if pin_dir.starts_with(bpffs) {
        bpffs
    } else {
        pin_dir
    };
    if is_bpffs(target) || (target != bpffs && nearest_existing_is_bpffs(pin_dir)) {
        return Ok(());
    }
    if target == bpffs {
        info!("bpffs is not mounted at {}; mounting it", bpffs.display());
        std::fs::create_dir_all(bpffs).map_err(|source| DataplaneError::PinDir {
            path: bpffs.into(),
            source,
        })?;
        nix::mount::mount(
            Some("bpf"),
            bpffs,
            Some("bpf"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .map_err(|source| DataplaneError::Bpffs {
            path: pin_dir.into(),
            source,
        })?;
        return Ok(());
    }
    Err(DataplaneError::Bpffs {
        path: pin_dir.into(),
        source: nix::Error::EINVAL,
    })
}

fn nearest_existing_is_bpffs(p: &Path) -> bool {
    p.ancestors().find(|a| a.exists()).is_some_and(is_bpffs)
}

fn is_bpffs(p: &Path) -> bool {
    nix::sys::statfs::statfs(p).is_ok_and(|st| st.filesystem_type().0 == BPF_FS_MAGIC)
}

/// On 6.18 BPF memory is charged to the memory cgroup; RLIMIT_MEMLOCK only matters on
/// old kernels, and raising it may not be permitted here. Warn, don't fail.
fn raise_memlock() {
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: valid pointer to an initialised rlimit.
    let rc = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) };
    if rc != 0 {
        debug!(
            error = %std::io::Error::last_os_error(),
            "could not raise RLIMIT_MEMLOCK; fine on kernels that charge BPF memory to cgroups"
        );
    }
}

/// Removes a pin directory: every pinned link goes (detaching its program) and every
/// pinned map goes once no program holds it. The shared root of the default pin
/// directories (`/sys/fs/bpf/enforcer`) goes too once no instance is left in it.
pub fn cleanup(pin_dir: &Path) -> std::io::Result<()> {
    let result = match std::fs::remove_dir_all(pin_dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    };
    let root = crate::paths::pin_root();
    if pin_dir.parent() == Some(root.as_path()) {
        // Fails, harmlessly, while another instance's directory is in it.
        let _ = std::fs::remove_dir(&root);
    }
    result
}

#[cfg(test)]
mod tests {
    #[test]
    fn pin_names_have_no_dots() {
        assert_eq!(super::pin_safe("eth0.100"), "eth0+2e100");
        assert_eq!(super::pin_safe("lw-web"), "lw+2dweb");
        assert_ne!(super::pin_safe("a.b"), super::pin_safe("a_b"));
    }
}
