//! The decision for one packet at one workload interface.
//!
//! Order: endpoint → parse → (later fragments: host deny list, then the first
//! fragment's verdict) → connection tracking → host deny list → policy. Every
//! decision is counted per (interface, direction, reason).
//!
//! A connection-tracking hit made under the live policy generation skips the deny
//! list: its entry was made (or re-checked) against this very deny list, and every
//! apply bumps the generation, so a deny-list change re-checks every tracked
//! connection on its next packet. Established traffic, the bulk of all packets,
//! costs one LPM lookup less.
use aya_ebpf::{
    EbpfContext as _, bindings::__sk_buff, helpers::bpf_ktime_get_coarse_ns, maps::lpm_trie::Key,
    programs::TcContext,
};
use enforcer_common::{
    config::{Config, FLAG_EVENTS, FLAG_FLOWS},
    counter::{Counter, CounterKey, Reason},
    ct::{CtKey, CtValue, FragKey},
    direction,
    endpoint::{EndpointInfo, EndpointKey, MODE_ENFORCE},
    flow::{
        EVENT_AUDIT, EVENT_DENY, EVENT_NEW_FLOW, EventHeader, FlowEvent, FlowKey, FlowStats,
        TOKEN_SCALE,
    },
    identity,
    ipcache::{DENY, FULL_PREFIX, LpmAddr},
    policy::{ALLOW, PolicyKey},
    proto,
};

use crate::{
    maps::{
        CONFIG, COUNTERS, CT, DENYLIST, ENDPOINTS, EVENTS, EVLOSS, EVRATE, FLOWS, FRAGS, IPCACHE,
        POLICY,
    },
    parse::{Frag, Packet, ParseError, Parsed, parse},
};

/// TCX: let the next program (or the stack) decide; with nothing after us, pass.
const TCX_NEXT: i32 = -1;
const TCX_DROP: i32 = 2;

/// Fail mode. When the dataplane cannot read its own configuration (a map lookup
/// that must succeed fails), traffic of enforced workloads is dropped and counted as
/// `DropInternal`: an enforcer that fails open would silently stop enforcing.
const FAIL_CLOSED: bool = true;

/// Every timestamp comes from `bpf_ktime_get_coarse_ns` (CLOCK_MONOTONIC at tick
/// resolution, 1-4 ms): connection tracking, flow first/last seen and the event
/// rate limit all work at a second's resolution, and the precise clock cost about
/// 18 ns a read here, more than some map lookups.
///
/// How often (ns) a connection's `last_seen` is refreshed; fewer writes to a shared
/// cache line on busy connections.
const CT_TOUCH_NS: u64 = 1_000_000_000;

/// At most one deny/audit event per flow per CPU in this many ns.
const FLOW_EVENT_GAP_NS: u64 = 1_000_000_000;

/// Longest idle time the event token bucket credits (keeps the arithmetic in u64).
const MAX_REFILL_NS: u64 = 10_000_000_000;

enum Decision {
    /// Not a workload interface in the live epoch: no verdict, no counter.
    NotOurs,
    Verdict(Reason),
}

/// What the policy path decided for one packet, with what flow accounting needs.
#[derive(Clone, Copy)]
struct Outcome {
    reason: Reason,
    /// Rule that decided (policy rule id, deny-list entry), 0 if none.
    rule: u32,
    peer_id: u32,
    /// The packet is a reply of a tracked connection.
    reply: bool,
}

impl Outcome {
    #[inline(always)]
    const fn new(reason: Reason, rule: u32, peer_id: u32) -> Self {
        Self {
            reason,
            rule,
            peer_id,
            reply: false,
        }
    }
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
    let pkt = match parse(ctx) {
        Ok(Parsed::Ip(p)) => p,
        Ok(Parsed::NotIp) => return Decision::Verdict(Reason::AllowInfra),
        Err(ParseError::Truncated | ParseError::Malformed) => {
            let r = if ep.enforced(dir) {
                Reason::DropMalformed
            } else {
                Reason::AllowNotSelected
            };
            return Decision::Verdict(audit(r, &ep));
        }
    };
    let mut out = classify(&cfg, &ep, ifindex, dir, &pkt);
    out.reason = audit(out.reason, &ep);
    if cfg.flags & FLAG_FLOWS != 0 && out.reason != Reason::AllowInfra {
        account(&cfg, &ep, ifindex, dir, &pkt, &out, ctx.len());
    }
    Decision::Verdict(out.reason)
}

/// In audit and off modes a drop is only counted.
#[inline(always)]
fn audit(r: Reason, ep: &EndpointInfo) -> Reason {
    if r.is_drop() && ep.mode != MODE_ENFORCE {
        Reason::AllowAudit
    } else {
        r
    }
}

#[inline(always)]
fn classify(cfg: &Config, ep: &EndpointInfo, ifindex: u32, dir: u8, pkt: &Packet) -> Outcome {
    // IPv6 neighbour discovery (RS, RA, NS, NA, redirect: 133-137) and multicast
    // listener discovery (MLD queries and reports: 130-132, 143) are what make IPv6
    // work on a link at all; routers never forward them.
    // IGMP is the IPv4 counterpart of MLD (the bridge's multicast querier sends it).
    if (pkt.proto == proto::ICMPV6
        && ((133..=137).contains(&pkt.icmp_type)
            || (130..=132).contains(&pkt.icmp_type)
            || pkt.icmp_type == 143))
        || pkt.proto == proto::IGMP
    {
        return Outcome::new(Reason::AllowInfra, 0, 0);
    }
    let peer = if dir == direction::EGRESS {
        pkt.dst
    } else {
        pkt.src
    };
    let epoch = cfg.active_epoch;

    if pkt.frag == Frag::Later {
        if let Some(out) = deny_listed(&peer, epoch) {
            return out;
        }
        let fk = frag_key(ifindex, dir, pkt);
        // SAFETY: value is a plain u32 copied out immediately.
        let r = if unsafe { FRAGS.get(&fk) }.is_some() {
            Reason::AllowEstablished
        } else if ep.enforced(dir) {
            Reason::DropFragment
        } else {
            Reason::AllowNotSelected
        };
        return Outcome::new(r, 0, peer_identity(&peer, epoch));
    }

    let port = policy_port(pkt);
    let fwd = CtKey {
        ifindex,
        src: pkt.src,
        dst: pkt.dst,
        sport: pkt.sport,
        dport: pkt.dport,
        proto: pkt.proto,
        _pad: [0; 3],
    };
    if let Some(out) = conntrack(cfg, ep, dir, &fwd, &peer, port) {
        remember_first_fragment(ifindex, dir, pkt, out.reason);
        return out;
    }
    if let Some(out) = deny_listed(&peer, epoch) {
        return out;
    }

    let out = evaluate(ep, dir, &peer, pkt.proto, port, epoch);
    if !out.reason.is_drop() {
        let v = CtValue {
            // SAFETY: helper without preconditions.
            last_seen_ns: unsafe { bpf_ktime_get_coarse_ns() },
            generation: cfg.generation,
            peer_id: out.peer_id,
            rule: out.rule,
            dir,
            _pad: [0; 3],
        };
        // A full LRU evicts the oldest entry; an insert can only fail on memory
        // pressure, and then the next packet is simply evaluated again.
        let _ = CT.insert(&fwd, &v, 0);
    }
    remember_first_fragment(ifindex, dir, pkt, out.reason);
    out
}

/// The host deny list: a `deny` prefix drops, an `except` prefix inside it does not.
#[inline(always)]
fn deny_listed(peer: &[u8; 16], epoch: u32) -> Option<Outcome> {
    let lpm = Key::new(FULL_PREFIX, LpmAddr { epoch, addr: *peer });
    match DENYLIST.get(&lpm) {
        Some(d) if d.action == DENY => Some(Outcome::new(
            Reason::DropCidrDenied,
            d.rule,
            identity::WORLD,
        )),
        _ => None,
    }
}

#[inline(always)]
fn peer_identity(peer: &[u8; 16], epoch: u32) -> u32 {
    let lpm = Key::new(FULL_PREFIX, LpmAddr { epoch, addr: *peer });
    match IPCACHE.get(&lpm) {
        Some(i) => i.identity,
        None => identity::WORLD,
    }
}

/// Established or reply traffic of a tracked connection. Entries from an older
/// policy generation are re-checked against the live deny list and policy; if they
/// no longer allow the connection, the entry is removed and the packet is evaluated
/// as new.
#[inline(always)]
fn conntrack(
    cfg: &Config,
    ep: &EndpointInfo,
    dir: u8,
    fwd: &CtKey,
    peer: &[u8; 16],
    port: u16,
) -> Option<Outcome> {
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
        // Made under another policy: the deny list and the policy in force decide
        // again. If either refuses, the packet is judged as new (and dropped).
        if deny_listed(peer, cfg.active_epoch).is_some() {
            let _ = CT.remove(key);
            return None;
        }
        let out = evaluate(ep, ct.dir, peer, fwd.proto, orig_port, cfg.active_epoch);
        if out.reason.is_drop() {
            let _ = CT.remove(key);
            return None;
        }
        ct.generation = cfg.generation;
        ct.peer_id = out.peer_id;
        ct.rule = out.rule;
    }
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if now.wrapping_sub(ct.last_seen_ns) > CT_TOUCH_NS {
        ct.last_seen_ns = now;
    }
    Some(Outcome {
        reason: Reason::AllowEstablished,
        rule: ct.rule,
        peer_id: ct.peer_id,
        reply,
    })
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
) -> Outcome {
    let peer_id = peer_identity(peer, epoch);
    if !ep.enforced(dir) {
        return Outcome::new(Reason::AllowNotSelected, 0, peer_id);
    }
    let mut key = PolicyKey {
        subject: ep.identity,
        peer: peer_id,
        port,
        proto,
        dir,
        epoch,
    };
    if let Some(rule) = allowed(&key) {
        return Outcome::new(Reason::AllowPolicy, rule, peer_id);
    }
    if port != 0 {
        key.port = 0;
        if let Some(rule) = allowed(&key) {
            return Outcome::new(Reason::AllowPolicy, rule, peer_id);
        }
        key.port = port;
    }
    key.peer = identity::ANY;
    if let Some(rule) = allowed(&key) {
        return Outcome::new(Reason::AllowPolicy, rule, peer_id);
    }
    if port != 0 {
        key.port = 0;
        if let Some(rule) = allowed(&key) {
            return Outcome::new(Reason::AllowPolicy, rule, peer_id);
        }
        key.port = port;
    }
    key.peer = identity::DECLARED;
    if present(&key) {
        return Outcome::new(Reason::DropPeerNotAllowed, 0, peer_id);
    }
    if port != 0 {
        key.port = 0;
        if present(&key) {
            return Outcome::new(Reason::DropPeerNotAllowed, 0, peer_id);
        }
    }
    Outcome::new(Reason::DropPortNotDeclared, 0, peer_id)
}

/// The rule id of an allowing entry.
#[inline(always)]
fn allowed(key: &PolicyKey) -> Option<u32> {
    // SAFETY: the value is read once and not kept.
    match unsafe { POLICY.get(key) } {
        Some(v) if v.action == ALLOW => Some(v.rule),
        _ => None,
    }
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

/// Adds the packet to its flow (in the flow's original orientation) and emits a
/// flow event for a new flow, or for a drop/audit at most once a second per flow.
#[inline(always)]
fn account(
    cfg: &Config,
    ep: &EndpointInfo,
    ifindex: u32,
    dir: u8,
    pkt: &Packet,
    out: &Outcome,
    len: u32,
) {
    let key = if out.reply {
        FlowKey {
            ifindex,
            peer_id: out.peer_id,
            src: pkt.dst,
            dst: pkt.src,
            sport: pkt.dport,
            dport: pkt.sport,
            proto: pkt.proto,
            dir: 1 - dir,
            _pad: [0; 2],
        }
    } else {
        FlowKey {
            ifindex,
            peer_id: out.peer_id,
            src: pkt.src,
            dst: pkt.dst,
            sport: pkt.sport,
            dport: pkt.dport,
            proto: pkt.proto,
            dir,
            _pad: [0; 2],
        }
    };
    let len64 = u64::from(len);
    let drop = out.reason.is_drop();
    let flagged = drop || out.reason == Reason::AllowAudit;
    // SAFETY: helper without preconditions.
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    if let Some(p) = FLOWS.get_ptr_mut(&key) {
        // SAFETY: this CPU's slot of a per-CPU value: no concurrent writer.
        let st = unsafe { &mut *p };
        if out.reply {
            st.rev_packets += 1;
            st.rev_bytes += len64;
        } else {
            st.packets += 1;
            st.bytes += len64;
        }
        if drop {
            st.drop_packets += 1;
            st.drop_bytes += len64;
        }
        if st.first_seen_ns == 0 {
            st.first_seen_ns = now;
        }
        st.last_seen_ns = now;
        st.reason = out.reason as u8;
        st.rule = out.rule;
        if flagged && now.wrapping_sub(st.last_event_ns) > FLOW_EVENT_GAP_NS {
            st.last_event_ns = now;
            let kind = if drop { EVENT_DENY } else { EVENT_AUDIT };
            emit(cfg, ep, kind, &key, out, len, now);
        }
        return;
    }
    let (packets, bytes, rev_packets, rev_bytes) = if out.reply {
        (0, 0, 1, len64)
    } else {
        (1, len64, 0, 0)
    };
    let st = FlowStats {
        packets,
        bytes,
        rev_packets,
        rev_bytes,
        drop_packets: u64::from(drop),
        drop_bytes: if drop { len64 } else { 0 },
        first_seen_ns: now,
        last_seen_ns: now,
        last_event_ns: now,
        rule: out.rule,
        reason: out.reason as u8,
        _pad: [0; 3],
    };
    if FLOWS.insert(&key, &st, 0).is_err() {
        if let Some(l) = EVLOSS.get_ptr_mut(0) {
            // SAFETY: this CPU's slot.
            unsafe { (*l).flow_insert_failed += 1 };
        }
        return;
    }
    let kind = if drop {
        EVENT_DENY
    } else if flagged {
        EVENT_AUDIT
    } else {
        EVENT_NEW_FLOW
    };
    emit(cfg, ep, kind, &key, out, len, now);
}

/// Writes one event into the ring buffer, within the per-CPU rate limit; every event
/// lost (limit or full ring) is counted.
#[inline(always)]
fn emit(
    cfg: &Config,
    ep: &EndpointInfo,
    kind: u32,
    key: &FlowKey,
    out: &Outcome,
    len: u32,
    now: u64,
) {
    if cfg.flags & FLAG_EVENTS == 0 {
        return;
    }
    let Some(loss) = EVLOSS.get_ptr_mut(0) else {
        return;
    };
    if let Some(rs) = EVRATE.get_ptr_mut(0) {
        // SAFETY: this CPU's slot of a per-CPU array.
        let rs = unsafe { &mut *rs };
        let elapsed = now.wrapping_sub(rs.last_ns).min(MAX_REFILL_NS);
        // ns * events/s / 1000 = events * 1e6 = events in TOKEN_SCALE units.
        let refill = elapsed * u64::from(cfg.events_per_sec) / 1000;
        let cap = u64::from(cfg.events_burst) * TOKEN_SCALE;
        rs.tokens = (rs.tokens + refill).min(cap);
        rs.last_ns = now;
        if rs.tokens < TOKEN_SCALE {
            // SAFETY: this CPU's slot.
            unsafe { (*loss).rate_limited += 1 };
            return;
        }
        rs.tokens -= TOKEN_SCALE;
    }
    match EVENTS.reserve::<FlowEvent>(0) {
        Some(mut e) => {
            e.write(FlowEvent {
                header: EventHeader {
                    kind,
                    len: core::mem::size_of::<FlowEvent>() as u32,
                    ts_ns: now,
                },
                key: *key,
                subject_id: ep.identity,
                rule: out.rule,
                reason: out.reason as u8,
                reply: u8::from(out.reply),
                _pad: [0; 2],
                pkt_len: len,
            });
            e.submit(0);
        }
        None => {
            // SAFETY: this CPU's slot.
            unsafe { (*loss).ringbuf_full += 1 };
        }
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
