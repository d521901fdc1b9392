//! Header walk: Ethernet → IPv4/IPv6 (with extension headers) → TCP/UDP/ICMP.
//!
//! Reads go through `bpf_skb_load_bytes` (`ctx.load`), which bounds-checks against
//! the whole skb, including non-linear parts, so no `data_end` arithmetic is needed
//! and a short packet is an error value, never an out-of-bounds read. Payloads are
//! never read: only headers.
use aya_ebpf::programs::TcContext;
use enforcer_common::proto;

const ETH_HLEN: usize = 14;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;

/// IPv6 extension headers we step over (RFC 8200 §4).
const NEXTHDR_HOP: u8 = 0;
const NEXTHDR_ROUTING: u8 = 43;
const NEXTHDR_FRAGMENT: u8 = 44;
const NEXTHDR_AUTH: u8 = 51;
const NEXTHDR_DEST: u8 = 60;
/// Most extension headers a packet may carry before we call it malformed.
const MAX_EXT_HEADERS: usize = 6;

#[derive(Copy, Clone, PartialEq, Eq)]
pub enum Frag {
    /// Not a fragment.
    None,
    /// First fragment: carries the L4 header, more follow.
    First,
    /// A later fragment: no L4 header.
    Later,
}

pub struct Packet {
    /// Network byte order; IPv4 mapped into IPv6.
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Host order. For ICMP echo both hold the identifier; 0 for other ICMP.
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    /// ICMP / ICMPv6 type, 0 otherwise.
    pub icmp_type: u8,
    pub frag: Frag,
    pub frag_id: u32,
}

pub enum ParseError {
    /// The packet ends inside a header.
    Truncated,
    /// A header field is impossible (bad version, IHL < 5, too many extension headers).
    Malformed,
}

pub enum Parsed {
    /// Not IPv4 or IPv6 (ARP, LLDP, …).
    NotIp,
    Ip(Packet),
}

#[inline(always)]
fn load<T>(ctx: &TcContext, off: usize) -> Result<T, ParseError> {
    ctx.load::<T>(off).map_err(|_| ParseError::Truncated)
}

#[inline(always)]
pub fn parse(ctx: &TcContext) -> Result<Parsed, ParseError> {
    let eth_proto: [u8; 2] = load(ctx, 12)?;
    match u16::from_be_bytes(eth_proto) {
        ETH_P_IPV4 => parse_v4(ctx).map(Parsed::Ip),
        ETH_P_IPV6 => parse_v6(ctx).map(Parsed::Ip),
        _ => Ok(Parsed::NotIp),
    }
}

#[inline(always)]
fn parse_v4(ctx: &TcContext) -> Result<Packet, ParseError> {
    let h: [u8; 20] = load(ctx, ETH_HLEN)?;
    if h[0] >> 4 != 4 {
        return Err(ParseError::Malformed);
    }
    let ihl = (h[0] & 0x0f) as usize;
    if ihl < 5 {
        return Err(ParseError::Malformed);
    }
    let frag_field = u16::from_be_bytes([h[6], h[7]]);
    let offset = frag_field & 0x1fff;
    let more = frag_field & 0x2000 != 0;
    let frag = if offset != 0 {
        Frag::Later
    } else if more {
        Frag::First
    } else {
        Frag::None
    };
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src[10] = 0xff;
    src[11] = 0xff;
    dst[10] = 0xff;
    dst[11] = 0xff;
    src[12..16].copy_from_slice(&h[12..16]);
    dst[12..16].copy_from_slice(&h[16..20]);
    let mut pkt = Packet {
        src,
        dst,
        sport: 0,
        dport: 0,
        proto: h[9],
        icmp_type: 0,
        frag,
        frag_id: u32::from(u16::from_be_bytes([h[4], h[5]])),
    };
    if frag != Frag::Later {
        parse_l4(ctx, ETH_HLEN + ihl * 4, &mut pkt)?;
    }
    Ok(pkt)
}

#[inline(always)]
fn parse_v6(ctx: &TcContext) -> Result<Packet, ParseError> {
    let h: [u8; 40] = load(ctx, ETH_HLEN)?;
    if h[0] >> 4 != 6 {
        return Err(ParseError::Malformed);
    }
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&h[8..24]);
    dst.copy_from_slice(&h[24..40]);
    let mut next = h[6];
    let mut off = ETH_HLEN + 40;
    let mut frag = Frag::None;
    let mut frag_id = 0u32;
    let mut done = false;
    for _ in 0..MAX_EXT_HEADERS {
        match next {
            NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST => {
                let e: [u8; 2] = load(ctx, off)?;
                next = e[0];
                off += (e[1] as usize + 1) * 8;
            }
            NEXTHDR_AUTH => {
                let e: [u8; 2] = load(ctx, off)?;
                next = e[0];
                off += (e[1] as usize + 2) * 4;
            }
            NEXTHDR_FRAGMENT => {
                let e: [u8; 8] = load(ctx, off)?;
                next = e[0];
                let fo = u16::from_be_bytes([e[2], e[3]]);
                frag_id = u32::from_be_bytes([e[4], e[5], e[6], e[7]]);
                frag = if fo >> 3 != 0 {
                    Frag::Later
                } else if fo & 1 != 0 {
                    Frag::First
                } else {
                    // An atomic fragment (RFC 6946): a whole datagram.
                    Frag::None
                };
                off += 8;
            }
            _ => {
                done = true;
                break;
            }
        }
        if frag == Frag::Later {
            done = true;
            break;
        }
    }
    if !done {
        return Err(ParseError::Malformed);
    }
    let mut pkt = Packet {
        src,
        dst,
        sport: 0,
        dport: 0,
        proto: next,
        icmp_type: 0,
        frag,
        frag_id,
    };
    if frag != Frag::Later {
        parse_l4(ctx, off, &mut pkt)?;
    }
    Ok(pkt)
}

#[inline(always)]
fn parse_l4(ctx: &TcContext, off: usize, pkt: &mut Packet) -> Result<(), ParseError> {
    match pkt.proto {
        proto::TCP => {
            let t: [u8; 20] = load(ctx, off)?;
            if (t[12] >> 4) < 5 {
                return Err(ParseError::Malformed);
            }
            pkt.sport = u16::from_be_bytes([t[0], t[1]]);
            pkt.dport = u16::from_be_bytes([t[2], t[3]]);
        }
        proto::UDP => {
            let u: [u8; 8] = load(ctx, off)?;
            pkt.sport = u16::from_be_bytes([u[0], u[1]]);
            pkt.dport = u16::from_be_bytes([u[2], u[3]]);
        }
        proto::ICMP | proto::ICMPV6 => {
            let i: [u8; 8] = load(ctx, off)?;
            pkt.icmp_type = i[0];
            let echo = if pkt.proto == proto::ICMP {
                i[0] == 8 || i[0] == 0
            } else {
                i[0] == 128 || i[0] == 129
            };
            if echo {
                let id = u16::from_be_bytes([i[4], i[5]]);
                pkt.sport = id;
                pkt.dport = id;
            }
        }
        _ => {}
    }
    Ok(())
}
