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
    /// Reserved; must be zero.
    pub flags: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<Config>() == 16);

#[cfg(feature = "user")]
// SAFETY: repr(C), integers only, no implicit padding (size asserted above).
unsafe impl aya::Pod for Config {}
