//! The compiled policy (`ENF_POLICY`): (subject, peer, direction, protocol, port) →
//! verdict. Its size follows the policy, not the number of workloads.
//!
//! The kernel looks up, in order: exact peer and port; exact peer, any port; any peer,
//! exact port; any peer, any port. On a miss it looks up the [`crate::identity::DECLARED`]
//! marker to tell "port not declared" from "peer not allowed".

#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    /// Identity of the workload the policy protects.
    pub subject: u32,
    /// Identity of the other side; [`crate::identity::ANY`] for any.
    pub peer: u32,
    /// Destination port (host order); 0 for any port, and always 0 for ICMP.
    pub port: u16,
    pub proto: u8,
    /// [`crate::direction`].
    pub dir: u8,
    pub epoch: u32,
}
const _: () = assert!(core::mem::size_of::<PolicyKey>() == 16);

#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyValue {
    /// [`ALLOW`] (or [`DECLARED`] for marker entries).
    pub action: u32,
    /// Rule id assigned by the compiler, for attribution in counters and flows.
    pub rule: u32,
}
const _: () = assert!(core::mem::size_of::<PolicyValue>() == 8);

pub const ALLOW: u32 = 1;
pub const DECLARED: u32 = 2;

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: repr(C), integers only, sizes asserted.
    unsafe impl aya::Pod for PolicyKey {}
    // SAFETY: repr(C), integers only, sizes asserted.
    unsafe impl aya::Pod for PolicyValue {}
}
