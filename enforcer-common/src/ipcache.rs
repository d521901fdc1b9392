//! Address → identity (`ENF_IPCACHE`) and the host CIDR deny list (`ENF_DENYLIST`).
//!
//! Both are LPM tries over [`LpmAddr`]: a 32-bit epoch followed by a 128-bit
//! address. IPv4 addresses are stored IPv4-mapped (`::ffff:a.b.c.d`), so one trie
//! and one lookup serve both families. The prefix length in the trie key counts the
//! epoch's 32 bits, so a lookup never crosses epochs.

/// Data part of the LPM key. `addr` is in network byte order.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct LpmAddr {
    pub epoch: u32,
    pub addr: [u8; 16],
}
const _: () = assert!(core::mem::size_of::<LpmAddr>() == 20);

/// Bits of the LPM key taken by the epoch.
pub const EPOCH_BITS: u32 = 32;
/// Prefix length of a full-address lookup.
pub const FULL_PREFIX: u32 = EPOCH_BITS + 128;
/// Extra prefix bits of an IPv4-mapped address.
pub const V4_MAPPED_BITS: u32 = 96;

/// Value of `ENF_IPCACHE`.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct IpInfo {
    pub identity: u32,
    pub _pad: u32,
}
const _: () = assert!(core::mem::size_of::<IpInfo>() == 8);

/// Value of `ENF_DENYLIST`.
#[repr(C)]
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct DenyInfo {
    /// [`DENY`] or [`EXCEPT`] (a hole punched in a wider deny).
    pub action: u32,
    /// Index of the entry in the policy file's deny list, for attribution.
    pub rule: u32,
}
const _: () = assert!(core::mem::size_of::<DenyInfo>() == 8);

pub const DENY: u32 = 1;
pub const EXCEPT: u32 = 2;

#[cfg(feature = "user")]
mod user {
    use super::*;
    // SAFETY: repr(C), integers only, sizes asserted.
    unsafe impl aya::Pod for LpmAddr {}
    // SAFETY: repr(C), integers only, sizes asserted.
    unsafe impl aya::Pod for IpInfo {}
    // SAFETY: repr(C), integers only, sizes asserted.
    unsafe impl aya::Pod for DenyInfo {}

    impl LpmAddr {
        /// IPv4 addresses become IPv4-mapped IPv6 addresses.
        pub fn new(epoch: u32, ip: core::net::IpAddr) -> Self {
            let addr = match ip {
                core::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                core::net::IpAddr::V6(v6) => v6.octets(),
            };
            Self { epoch, addr }
        }
    }

    /// Trie prefix length for an address prefix of `len` bits of `ip`'s family.
    pub fn trie_prefix_len(ip: core::net::IpAddr, len: u8) -> u32 {
        let base = match ip {
            core::net::IpAddr::V4(_) => EPOCH_BITS + V4_MAPPED_BITS,
            core::net::IpAddr::V6(_) => EPOCH_BITS,
        };
        base + u32::from(len)
    }
}
#[cfg(feature = "user")]
pub use user::trie_prefix_len;
