//! Global dataplane configuration: which epoch of the policy-derived maps is live.
//!
//! Policy-derived maps (endpoints, ipcache, denylist, policy) carry an `epoch` in
//! their key. The agent writes a complete new state into the inactive epoch and then
//! flips [`Config::active_epoch`] with one array update, so the kernel never sees a
//! half-applied policy.

#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// 0 or 1.
    pub active_epoch: u32,
    /// Bumped on every apply; connection-tracking entries made under an older
    /// generation are re-checked against the live policy on their next packet.
    pub generation: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Event rate limit per CPU (events per second); 0 = no events.
    pub events_per_sec: u32,
    /// Burst the limit allows per CPU.
    pub events_burst: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<Config>() == 24);

/// Account packets and bytes per flow in `ENF_FLOWS`.
pub const FLAG_FLOWS: u32 = 1 << 0;
/// Emit flow events into `ENF_EVENTS`.
pub const FLAG_EVENTS: u32 = 1 << 1;

/// Defaults the agent writes (documented in docs/flows.md).
pub const DEFAULT_EVENTS_PER_SEC: u32 = 2000;
pub const DEFAULT_EVENTS_BURST: u32 = 4000;

#[cfg(feature = "user")]
// SAFETY: repr(C), integers only, no implicit padding (size asserted above).
unsafe impl aya::Pod for Config {}
