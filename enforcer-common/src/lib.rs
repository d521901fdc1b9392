//! ABI shared by the kernel programs (`enforcer-ebpf`) and the agent (`enforcer`).
//!
//! Every type here crosses the kernel/user boundary through a BPF map, so each is
//! `#[repr(C)]`, `Copy`, made only of integers, with explicit padding and a
//! compile-time size assertion. The `user` feature adds `aya::Pod`, serde and
//! `Display` for the agent.
#![no_std]

pub mod config;
pub mod counter;
pub mod ct;
pub mod endpoint;
pub mod flow;
pub mod ipcache;
pub mod policy;

/// Map names, shared so the agent opens exactly what the kernel object declares.
/// The kernel cuts map names at 15 characters: every name here fits.
pub mod map_names {
    pub const CONFIG: &str = "ENF_CONFIG";
    pub const ENDPOINTS: &str = "ENF_ENDPOINTS";
    pub const IPCACHE: &str = "ENF_IPCACHE";
    pub const DENYLIST: &str = "ENF_DENYLIST";
    pub const POLICY: &str = "ENF_POLICY";
    pub const CT: &str = "ENF_CT";
    pub const FRAGS: &str = "ENF_FRAGS";
    pub const COUNTERS: &str = "ENF_COUNTERS";
    pub const FLOWS: &str = "ENF_FLOWS";
    pub const EVENTS: &str = "ENF_EVENTS";
    pub const EVLOSS: &str = "ENF_EVLOSS";
    pub const EVRATE: &str = "ENF_EVRATE";
}

/// Program names in the eBPF object.
pub mod prog_names {
    /// Attached to TCX ingress of a workload's host-side interface: sees what the
    /// workload sends (its egress).
    pub const TC_FROM_WORKLOAD: &str = "enf_from_wl";
    /// Attached to TCX egress of a workload's host-side interface: sees what the
    /// workload receives (its ingress).
    pub const TC_TO_WORKLOAD: &str = "enf_to_wl";
}

/// Map capacities. Policy-derived maps hold two epochs (see [`config::Config`]), so
/// each epoch gets half.
pub mod capacity {
    pub const ENDPOINTS: u32 = 2 * 4096;
    pub const IPCACHE: u32 = 2 * 131_072;
    pub const DENYLIST: u32 = 2 * 131_072;
    pub const POLICY: u32 = 2 * 131_072;
    pub const CT: u32 = 262_144;
    pub const FRAGS: u32 = 8192;
    pub const COUNTERS: u32 = 65_536;
    pub const FLOWS: u32 = 65_536;
}

/// Direction of traffic relative to the workload (not to the interface).
pub mod direction {
    /// Traffic the workload receives.
    pub const INGRESS: u8 = 0;
    /// Traffic the workload sends.
    pub const EGRESS: u8 = 1;
}

/// IP protocol numbers used in keys.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const IGMP: u8 = 2;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
}

/// Reserved identities. Workload identities start at [`identity::FIRST_WORKLOAD`].
pub mod identity {
    /// Wildcard peer in a policy key: any peer.
    pub const ANY: u32 = 0;
    /// The host itself (addresses of the node).
    pub const HOST: u32 = 1;
    /// Any address the agent knows nothing about.
    pub const WORLD: u32 = 2;
    /// Marker peer in a policy key: "this port is declared by some rule", used only to
    /// tell a drop for an undeclared port from a drop for a peer that is not allowed.
    pub const DECLARED: u32 = u32::MAX;
    /// CIDR identities (prefixes named in policy) live in `[FIRST_CIDR, FIRST_WORKLOAD)`.
    pub const FIRST_CIDR: u32 = 16;
    pub const FIRST_WORKLOAD: u32 = 1 << 24;
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_fit_the_kernel() {
        use super::{map_names as m, prog_names as p};
        for n in [
            m::CONFIG,
            m::ENDPOINTS,
            m::IPCACHE,
            m::DENYLIST,
            m::POLICY,
            m::CT,
            m::FRAGS,
            m::COUNTERS,
            m::FLOWS,
            m::EVENTS,
            m::EVLOSS,
            m::EVRATE,
            p::TC_FROM_WORKLOAD,
            p::TC_TO_WORKLOAD,
        ] {
            assert!(n.len() <= 15, "{n} is longer than 15 characters");
        }
    }
}
