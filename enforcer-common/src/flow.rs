//! Flow accounting (`ENF_FLOWS`, LRU hash with per-CPU values), flow events
//! (`ENF_EVENTS`, ring buffer) and their loss counters (`ENF_EVLOSS`).
//!
//! A flow is one connection as seen at one workload interface, keyed in the
//! orientation in which it was first seen (its "original" direction); replies are
//! counted in the same entry. Payloads are never read: only headers and counters.

/// Key of `ENF_FLOWS`.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// The workload interface that saw the flow.
    pub ifindex: u32,
    /// Identity of the other side (ipcache lookup; WORLD if unknown).
    pub peer_id: u32,
    /// Original orientation, network byte order, IPv4 mapped into IPv6.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Host order; ICMP echo: both hold the identifier.
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    /// Direction of the original orientation relative to the workload.
    pub dir: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(core::mem::size_of::<FlowKey>() == 48);

/// Per-CPU value of `ENF_FLOWS`. Userspace sums CPUs (min of `first_seen_ns`).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// Packets and bytes in the original direction (all verdicts).
    pub packets: u64,
    pub bytes: u64,
    /// Packets and bytes in the reply direction.
    pub rev_packets: u64,
    pub rev_bytes: u64,
    /// Of the above, dropped (either direction).
    pub drop_packets: u64,
    pub drop_bytes: u64,
    /// `bpf_ktime_get_ns` (monotonic, since boot) of the first and last packet.
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    /// When this CPU last emitted a deny/audit event for the flow.
    pub last_event_ns: u64,
    /// Rule id of the last verdict (0 when no rule decided: default deny, …).
    pub rule: u32,
    /// Last verdict [`crate::counter::Reason`].
    pub reason: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(core::mem::size_of::<FlowStats>() == 80);

/// Header of every record in `ENF_EVENTS` (kunai style: kind, length, timestamp).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// One of the `EVENT_*` kinds.
    pub kind: u32,
    /// Length of the whole record in bytes.
    pub len: u32,
    /// `bpf_ktime_get_ns`.
    pub ts_ns: u64,
}
const _: () = assert!(core::mem::size_of::<EventHeader>() == 16);

/// A flow's first packet at an interface (whatever its verdict).
pub const EVENT_NEW_FLOW: u32 = 1;
/// A dropped packet of a known flow (at most one per flow per CPU per second).
pub const EVENT_DENY: u32 = 2;
/// A packet policy would drop, let through by audit mode (same limit as deny).
pub const EVENT_AUDIT: u32 = 3;

#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowEvent {
    pub header: EventHeader,
    pub key: FlowKey,
    pub subject_id: u32,
    pub rule: u32,
    /// [`crate::counter::Reason`] of this packet.
    pub reason: u8,
    /// 1 if this packet went in the reply direction.
    pub reply: u8,
    pub _pad: [u8; 2],
    /// Length of the packet (skb) in bytes.
    pub pkt_len: u32,
}
const _: () = assert!(core::mem::size_of::<FlowEvent>() == 80);

/// Per-CPU value of `ENF_EVLOSS` (array of one): events that never reached
/// userspace, by cause.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct EventLoss {
    /// The ring buffer was full.
    pub ringbuf_full: u64,
    /// Over the per-CPU event rate limit.
    pub rate_limited: u64,
    /// A flow entry could not be created (map full of entries younger than LRU
    /// could evict, or memory pressure): its packets were not accounted.
    pub flow_insert_failed: u64,
}
const _: () = assert!(core::mem::size_of::<EventLoss>() == 24);

/// Per-CPU token bucket state for the event rate limit (`ENF_EVRATE`).
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct RateState {
    /// Tokens, scaled by [`TOKEN_SCALE`].
    pub tokens: u64,
    pub last_ns: u64,
}
const _: () = assert!(core::mem::size_of::<RateState>() == 16);

/// Token fixed-point scale: one event costs this many units.
pub const TOKEN_SCALE: u64 = 1_000_000;

/// Byte size of the event ring buffer.
pub const EVENTS_BYTES: u32 = 1 << 20;

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: repr(C), integers only, sizes asserted.
    unsafe impl aya::Pod for FlowKey {}
    // SAFETY: repr(C), integers only, sizes asserted.
    unsafe impl aya::Pod for FlowStats {}
    // SAFETY: repr(C), integers only, sizes asserted.
    unsafe impl aya::Pod for EventHeader {}
    // SAFETY: repr(C), integers only, sizes asserted.
    unsafe impl aya::Pod for FlowEvent {}
    // SAFETY: repr(C), integers only, sizes asserted.
    unsafe impl aya::Pod for EventLoss {}
    // SAFETY: repr(C), integers only, sizes asserted.
    unsafe impl aya::Pod for RateState {}

    /// Decoding failure of a ring buffer record.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum DecodeError {
        Short { len: usize },
        UnknownKind { kind: u32 },
    }

    impl FlowEvent {
        /// Reads a record; copies (ring buffer memory is not aligned for us).
        pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
            if bytes.len() < core::mem::size_of::<FlowEvent>() {
                return Err(DecodeError::Short { len: bytes.len() });
            }
            // SAFETY: length checked; FlowEvent is Pod, read_unaligned copies.
            let ev: FlowEvent = unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast()) };
            match ev.header.kind {
                EVENT_NEW_FLOW | EVENT_DENY | EVENT_AUDIT => Ok(ev),
                kind => Err(DecodeError::UnknownKind { kind }),
            }
        }
    }
}
#[cfg(feature = "user")]
pub use user::DecodeError;
