//! Per-endpoint verdict counters (`ENF_COUNTERS`, per-CPU values).

#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CounterKey {
    pub ifindex: u32,
    /// [`crate::direction`].
    pub dir: u8,
    /// A [`Reason`] as `u8`.
    pub reason: u8,
    pub _pad: u16,
}
const _: () = assert!(core::mem::size_of::<CounterKey>() == 8);

#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(core::mem::size_of::<Counter>() == 16);

/// Why a packet was passed or dropped. Numbers are ABI: never renumber.
#[repr(u8)]
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// A policy rule allowed it.
    AllowPolicy = 1,
    /// Part of a connection already allowed (same direction or reply).
    AllowEstablished = 2,
    /// No policy selects the workload in this direction.
    AllowNotSelected = 3,
    /// Would have been dropped, but the workload is in audit (or off) mode.
    AllowAudit = 4,
    /// Not subject to policy: non-IP (ARP) and IPv6 neighbour discovery.
    AllowInfra = 5,
    /// Policy selects the workload but no rule declares this port/protocol.
    DropPortNotDeclared = 16,
    /// The port is declared, but not for this peer.
    DropPeerNotAllowed = 17,
    /// The remote address is in the host CIDR deny list.
    DropCidrDenied = 18,
    /// Headers truncated or malformed.
    DropMalformed = 19,
    /// A non-first fragment whose first fragment was not allowed (or not seen).
    DropFragment = 20,
    /// Internal error (a map could not be read); see `FAIL_CLOSED` in the kernel.
    DropInternal = 21,
}

impl Reason {
    pub const ALL: [Reason; 11] = [
        Reason::AllowPolicy,
        Reason::AllowEstablished,
        Reason::AllowNotSelected,
        Reason::AllowAudit,
        Reason::AllowInfra,
        Reason::DropPortNotDeclared,
        Reason::DropPeerNotAllowed,
        Reason::DropCidrDenied,
        Reason::DropMalformed,
        Reason::DropFragment,
        Reason::DropInternal,
    ];

    #[inline(always)]
    pub const fn is_drop(self) -> bool {
        (self as u8) >= 16
    }

    /// Stable snake_case name used in CLI output, JSON and metrics labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::AllowPolicy => "allowed_by_policy",
            Reason::AllowEstablished => "allowed_established",
            Reason::AllowNotSelected => "allowed_not_selected",
            Reason::AllowAudit => "allowed_audit",
            Reason::AllowInfra => "allowed_infra",
            Reason::DropPortNotDeclared => "dropped_port_not_declared",
            Reason::DropPeerNotAllowed => "dropped_peer_not_allowed",
            Reason::DropCidrDenied => "dropped_cidr_denied",
            Reason::DropMalformed => "dropped_malformed",
            Reason::DropFragment => "dropped_fragment",
            Reason::DropInternal => "dropped_internal_error",
        }
    }
}

/// A reason number from the kernel that this build does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownReason(pub u8);

impl TryFrom<u8> for Reason {
    type Error = UnknownReason;
    fn try_from(v: u8) -> Result<Self, Self::Error> {
        Reason::ALL
            .iter()
            .copied()
            .find(|r| *r as u8 == v)
            .ok_or(UnknownReason(v))
    }
}

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: repr(C), integers only, sizes asserted.
    unsafe impl aya::Pod for CounterKey {}
    // SAFETY: repr(C), integers only, sizes asserted.
    unsafe impl aya::Pod for Counter {}

    impl core::fmt::Display for Reason {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            f.write_str(self.as_str())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn reasons_round_trip() {
        for r in Reason::ALL {
            assert_eq!(Reason::try_from(r as u8), Ok(r));
        }
        assert_eq!(Reason::try_from(0), Err(UnknownReason(0)));
        assert!(Reason::DropCidrDenied.is_drop());
        assert!(!Reason::AllowInfra.is_drop());
    }
}
