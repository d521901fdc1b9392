//! The decision for one packet at one workload interface.
//!
//! Order: endpoint → parse → host deny list → fragments → connection tracking →
//! policy. Every decision is counted per (interface, direction, reason).
use aya_ebpf::{
    EbpfContext as _, bindings::__sk_buff, helpers::bpf_ktime_get_ns, maps::lpm_trie::Key,
    programs::TcContext,
};
use enforcer_common::{
    config::Config,
    counter::{Counter, CounterKey, Reason},
    ct::{CtKey, CtValue, FragKey},
    direction,
    endpoint::{EndpointInfo, EndpointKey, MODE_ENFORCE},
    identity,
    ipcache::{DENY, FULL_PREFIX, LpmAddr},
    policy::{ALLOW, PolicyKey},
    proto,
};

use crate::{
    maps::{CONFIG, COUNTERS, CT, DENYLIST, ENDPOINTS, FRAGS, IPCACHE, POLICY},
    parse::{Frag, Packet, ParseError, Parsed, parse},
};

/// TCX: let the next program (or the stack) decide; with nothing after us, pass.
const TCX_NEXT: i32 = -1;
const TCX_DROP: i32 = 2;

/// Fail mode. When the dataplane cannot read its own configuration (a map lookup
/// that must succeed fails), traffic of enforced workloads is dropped and counted as
/// `DropInternal`: an enforcer that fails open would silently stop enforcing.
const FAIL_CLOSED: bool = true;

/// How often (ns) a connection's `last_seen` is refreshed; fewer writes to a shared
/// cache line on busy connections.
const CT_TOUCH_NS: u64 = 1_000_000_000;

enum Decision {
    /// Not a workload interface in the live epoch: no verdict, no counter.
    NotOurs,
    Verdict(Reason),
}

#[inline(always)]
pub fn run(ctx: &TcContext, dir: u8) -> i32 {
    let skb = ctx.as_ptr() as *const __sk_buff;
    // SAFETY: the context pointer the kernel passes a classifier is a valid __sk_buff.
    let ifindex = unsafe { (*skb).ifindex };
    match decide(ctx, ifindex, dir) {
        Decision::NotOurs => TCX_NEXT,
        Decision::Verdict(reason) => {
            count(ifindex, dir, reason, ctx.len());
            if reason.is_drop() { TCX_DROP } else { TCX_NEXT }
        }
    }
}

#[inline(always)]
fn decide(ctx: &TcContext, ifindex: u32, dir: u8) -> Decision {
    let Some(cfg) = CONFIG.get(0) else {
        return if FAIL_CLOSED {
            Decision::Verdict(Reason::DropInternal)
        } else {
            Decision::NotOurs
        };
    };
    let cfg: Config = *cfg;
    let epoch = cfg.active_epoch;
    let key = EndpointKey { ifindex, epoch };
    // SAFETY: ENDPOINTS is only replaced wholesale per epoch by the agent; a torn
    // read of a 16-byte value is not possible for a hash map element we copy at once.
    let Some(ep) = (unsafe { ENDPOINTS.get(&key) }) else {
        return Decision::NotOurs;
    };
    let ep: EndpointInfo = *ep;
    let reason = classify(ctx, &cfg, &ep, ifindex, dir);
    if reason.is_drop() && ep.mode != MODE_ENFORCE {
        return Decision::Verdict(Reason::AllowAudit);
    }
    Decision::Verdict(reason)
}

#[inline(always)]
fn classify(ctx: &TcContext, cfg: &Config, ep: &EndpointInfo, ifindex: u32, dir: u8) -> Reason {
    let pkt = match parse(ctx) {
        Ok(Parsed::Ip(p)) => p,
        Ok(Parsed::NotIp) => return Reason::AllowInfra,
        Err(ParseError::Truncated | ParseError::Malformed) => {
            return if ep.enforced(dir) {
                Reason::DropMalformed
            } else {
                Reason::AllowNotSelected
            };
        }
    };
    // IPv6 neighbour discovery (RS, RA, NS, NA, redirect: 133-137) and multicast
    // listener discovery (MLD queries and reports: 130-132, 143) are what make IPv6
    // work on a link at all; routers never forward them.
    if pkt.proto == proto::ICMPV6
        && ((133..=137).contains(&pkt.icmp_type)
            || (130..=132).contains(&pkt.icmp_type)
            || pkt.icmp_type == 143)
    {
        return Reason::AllowInfra;
    }
    let peer = if dir == direction::EGRESS {
        pkt.dst
    } else {
        pkt.src
    };
    let epoch = cfg.active_epoch;

    let lpm = Key::new(FULL_PREFIX, LpmAddr { epoch, addr: peer });
    if let Some(d) = DENYLIST.get(&lpm)
        && d.action == DENY
    {
        return Reason::DropCidrDenied;
    }

    if pkt.frag == Frag::Later {
        let fk = frag_key(ifindex, dir, &pkt);
        // SAFETY: value is a plain u32 copied out immediately.
        return if unsafe { FRAGS.get(&fk) }.is_some() {
            Reason::AllowEstablished
        } else if ep.enforced(dir) {
            Reason::DropFragment
        } else {
            Reason::AllowNotSelected
        };
    }

    let port = policy_port(&pkt);
    let fwd = CtKey {
        ifindex,
        src: pkt.src,
        dst: pkt.dst,
        sport: pkt.sport,
        dport: pkt.dport,
        proto: pkt.proto,
        _pad: [0; 3],
    };
    if let Some(r) = conntrack(cfg, ep, dir, &fwd, &peer, port) {
        remember_first_fragment(ifindex, dir, &pkt, r);
        return r;
    }

    let r = evaluate(ep, dir, &peer, pkt.proto, port, epoch);
    if !r.is_drop() {
        let v = CtValue {
            // SAFETY: helper without preconditions.
            last_seen_ns: unsafe { bpf_ktime_get_ns() },
            generation: cfg.generation,
            dir,
            _pad: [0; 3],
        };
        // A full LRU evicts the oldest entry; an insert can only fail on memory
        // pressure, and then the next packet is simply evaluated again.
        let _ = CT.insert(&fwd, &v, 0);
    }
    remember_first_fragment(ifindex, dir, &pkt, r);
    r
}

/// Established or reply traffic of a tracked connection. Entries from an older
/// policy generation are re-checked against the live policy; if it no longer allows
/// the connection, the entry is removed and the packet is evaluated as new.
#[inline(always)]
fn conntrack(
    cfg: &Config,
    ep: &EndpointInfo,
    dir: u8,
    fwd: &CtKey,
    peer: &[u8; 16],
    port: u16,
) -> Option<Reason> {
    let rev = CtKey {
        ifindex: fwd.ifindex,
        src: fwd.dst,
        dst: fwd.src,
        sport: fwd.dport,
        dport: fwd.sport,
        proto: fwd.proto,
        _pad: [0; 3],
    };
    let (key, ptr, orig_port) = match CT.get_ptr_mut(fwd) {
        Some(p) => (fwd, p, port),
        None => {
            let p = CT.get_ptr_mut(&rev)?;
            // A reply: the connection's destination port is this packet's source port.
            let orig = if fwd.proto == proto::TCP || fwd.proto == proto::UDP {
                fwd.sport
            } else {
                0
            };
            (&rev, p, orig)
        }
    };
    // SAFETY: pointer from a successful lookup in an LRU hash; we read and write
    // plain integers of a value the kernel keeps alive for this program run.
    let ct = unsafe { &mut *ptr };
    let reply = core::ptr::eq(key, &rev);
    // A tuple seen in the direction opposite to how it was first allowed is not a
    // reply but a new, unrelated connection attempt.
    if (ct.dir == dir) == reply {
        return None;
    }
    if ct.generation != cfg.generation {
        let r = evaluate(ep, ct.dir, peer, fwd.proto, orig_port, cfg.active_epoch);
        if r.is_drop() {
            let _ = CT.remove(key);
            return None;
        }
        ct.generation = cfg.generation;
    }
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    if now.wrapping_sub(ct.last_seen_ns) > CT_TOUCH_NS {
        ct.last_seen_ns = now;
    }
    Some(Reason::AllowEstablished)
}

/// Policy for a new connection from/to `peer` on `port`.
#[inline(always)]
fn evaluate(
    ep: &EndpointInfo,
    dir: u8,
    peer: &[u8; 16],
    proto: u8,
    port: u16,
    epoch: u32,
) -> Reason {
    if !ep.enforced(dir) {
        return Reason::AllowNotSelected;
    }
    let lpm = Key::new(FULL_PREFIX, LpmAddr { epoch, addr: *peer });
    let peer_id = match IPCACHE.get(&lpm) {
        Some(i) => i.identity,
        None => identity::WORLD,
    };
    let mut key = PolicyKey {
        subject: ep.identity,
        peer: peer_id,
        port,
        proto,
        dir,
        epoch,
    };
    if allowed(&key) {
        return Reason::AllowPolicy;
    }
    if port != 0 {
        key.port = 0;
        if allowed(&key) {
            return Reason::AllowPolicy;
        }
        key.port = port;
    }
    key.peer = identity::ANY;
    if allowed(&key) {
        return Reason::AllowPolicy;
    }
    if port != 0 {
        key.port = 0;
        if allowed(&key) {
            return Reason::AllowPolicy;
        }
        key.port = port;
    }
    key.peer = identity::DECLARED;
    if present(&key) {
        return Reason::DropPeerNotAllowed;
    }
    if port != 0 {
        key.port = 0;
        if present(&key) {
            return Reason::DropPeerNotAllowed;
        }
    }
    Reason::DropPortNotDeclared
}

#[inline(always)]
fn allowed(key: &PolicyKey) -> bool {
    // SAFETY: the value is read once and not kept.
    matches!(unsafe { POLICY.get(key) }, Some(v) if v.action == ALLOW)
}

#[inline(always)]
fn present(key: &PolicyKey) -> bool {
    // SAFETY: as above.
    unsafe { POLICY.get(key) }.is_some()
}

/// The port policy matches on: the destination port for TCP and UDP, 0 otherwise.
#[inline(always)]
fn policy_port(pkt: &Packet) -> u16 {
    if pkt.proto == proto::TCP || pkt.proto == proto::UDP {
        pkt.dport
    } else {
        0
    }
}

#[inline(always)]
fn frag_key(ifindex: u32, dir: u8, pkt: &Packet) -> FragKey {
    FragKey {
        ifindex,
        src: pkt.src,
        dst: pkt.dst,
        id: pkt.frag_id,
        proto: pkt.proto,
        dir,
        _pad: [0; 2],
    }
}

/// The first fragment carries the ports; remember its verdict so the later
/// fragments of the same datagram follow it.
#[inline(always)]
fn remember_first_fragment(ifindex: u32, dir: u8, pkt: &Packet, r: Reason) {
    if pkt.frag == Frag::First && !r.is_drop() {
        let _ = FRAGS.insert(&frag_key(ifindex, dir, pkt), &1, 0);
    }
}

#[inline(always)]
fn count(ifindex: u32, dir: u8, reason: Reason, len: u32) {
    let key = CounterKey {
        ifindex,
        dir,
        reason: reason as u8,
        _pad: 0,
    };
    if let Some(c) = COUNTERS.get_ptr_mut(&key) {
        // SAFETY: per-CPU value of this CPU; no other writer while we run.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += u64::from(len);
        }
    } else {
        let c = Counter {
            packets: 1,
            bytes: u64::from(len),
        };
        let _ = COUNTERS.insert(&key, &c, 0);
    }
}
