//! Endpoints: a workload's host-side interface mapped to its identity and mode.

/// Key of `ENF_ENDPOINTS`.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    pub ifindex: u32,
    pub epoch: u32,
}
const _: () = assert!(core::mem::size_of::<EndpointKey>() == 8);

/// Value of `ENF_ENDPOINTS`.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointInfo {
    pub identity: u32,
    /// One of the `MODE_*` constants.
    pub mode: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<EndpointInfo>() == 16);

/// Verdicts are computed and counted but nothing is dropped.
pub const MODE_OFF: u32 = 0;
/// Drops what policy does not allow.
pub const MODE_ENFORCE: u32 = 1;
/// Would-be drops are counted as `AUDIT` and let through.
pub const MODE_AUDIT: u32 = 2;

/// Some policy selects this workload for ingress: default deny inbound.
pub const FLAG_INGRESS_ENFORCED: u32 = 1 << 0;
/// Some policy selects this workload for egress: default deny outbound.
pub const FLAG_EGRESS_ENFORCED: u32 = 1 << 1;

impl EndpointInfo {
    #[inline(always)]
    pub fn enforced(&self, dir: u8) -> bool {
        let bit = if dir == crate::direction::INGRESS {
            FLAG_INGRESS_ENFORCED
        } else {
            FLAG_EGRESS_ENFORCED
        };
        self.flags & bit != 0
    }
}

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: repr(C), integers only, sizes asserted.
    unsafe impl aya::Pod for EndpointKey {}
    // SAFETY: repr(C), integers only, sizes asserted.
    unsafe impl aya::Pod for EndpointInfo {}
}
