//! Connection tracking (`ENF_CT`) and fragment tracking (`ENF_FRAGS`).
//!
//! An entry is keyed by the endpoint interface and the tuple in the direction the
//! connection was first allowed. A packet matches it either as the same tuple
//! (established) or reversed (reply). Keying by interface keeps one workload's
//! allowance from letting a packet past another workload's check.

#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct CtKey {
    pub ifindex: u32,
    /// Network byte order, IPv4 mapped into IPv6.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Host order. For ICMP echo both ports hold the echo identifier.
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<CtKey>() == 44);

#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct CtValue {
    /// `bpf_ktime_get_ns` of the last packet seen in either direction.
    pub last_seen_ns: u64,
    /// Policy generation the connection was last checked against.
    pub generation: u32,
    /// Identity of the peer when the connection was allowed (for flow accounting).
    pub peer_id: u32,
    /// Rule that allowed it (0 when no policy selected the workload).
    pub rule: u32,
    /// Direction (relative to the workload) of the packet that created the entry.
    pub dir: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<CtValue>() == 24);

/// Key of `ENF_FRAGS`: the fragments of one datagram whose first fragment was allowed.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub ifindex: u32,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// IPv4 identification (16 bits) or IPv6 fragment identification.
    pub id: u32,
    pub proto: u8,
    pub dir: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<FragKey>() == 44);

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: repr(C), integers only, sizes asserted.
    unsafe impl aya::Pod for CtKey {}
    // SAFETY: repr(C), integers only, sizes asserted.
    unsafe impl aya::Pod for CtValue {}
    // SAFETY: repr(C), integers only, sizes asserted.
    unsafe impl aya::Pod for FragKey {}
}
