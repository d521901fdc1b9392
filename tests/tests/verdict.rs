//! Kernel verdicts without traffic: the classifiers run on hand-made packets through
//! `BPF_PROG_TEST_RUN`, against maps filled from a hand-made `Compiled` (not from the
//! policy compiler, so a failure here points at the kernel side alone).
//!
//! Each test runs in a fresh network namespace (its loopback is the "workload
//! interface") with its own pin directory, both removed at the end.
use std::{
    os::fd::AsFd as _,
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

use aya::programs::{TestRun as _, TestRunOptions};
use enforcer::{
    dataplane::{Dataplane, Hook},
    policy::compiled::{Compiled, EndpointEntry},
};
use enforcer_common::{
    counter::Reason,
    direction::{EGRESS, INGRESS},
    endpoint::{FLAG_EGRESS_ENFORCED, FLAG_INGRESS_ENFORCED, MODE_AUDIT, MODE_ENFORCE},
    identity::{ANY, DECLARED, FIRST_CIDR, FIRST_WORKLOAD},
    ipcache::{DENY, DenyInfo, EXCEPT},
    policy::{ALLOW, DECLARED as DECLARED_ACTION, PolicyKey, PolicyValue},
    proto::{ICMP, ICMPV6, TCP, UDP},
};

const TCX_NEXT: u32 = u32::MAX; // -1
const TCX_DROP: u32 = 2;

/// The workload under test and its peers.
const WL: u32 = FIRST_WORKLOAD;
const CLIENT: u32 = FIRST_WORKLOAD + 1;
const CIDR_ID: u32 = FIRST_CIDR;

const WL4: [u8; 4] = [10, 0, 0, 10];
const CLIENT4: [u8; 4] = [10, 0, 0, 11];
const STRANGER4: [u8; 4] = [10, 0, 0, 99];
const DENIED4: [u8; 4] = [203, 0, 113, 7];
const EXCEPTED4: [u8; 4] = [203, 0, 113, 200];
const CIDR4: [u8; 4] = [192, 0, 2, 5];

fn v6(last: u8) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0] = 0xfd;
    a[15] = last;
    a
}

/// Fresh network namespace for the calling thread, left on drop.
struct NetnsGuard {
    old: std::fs::File,
}

impl NetnsGuard {
    fn new() -> Self {
        let old = std::fs::File::open("/proc/thread-self/ns/net").expect("open own netns");
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
            .expect("unshare(CLONE_NEWNET): run as root");
        Self { old }
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = nix::sched::setns(self.old.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET);
    }
}

/// A pin directory on bpffs, removed on drop (which also frees the maps).
struct PinDir(PathBuf);

impl PinDir {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let p = PathBuf::from(format!(
            "/sys/fs/bpf/enforcer/verdict-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        Self(p)
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = enforcer::dataplane::cleanup(&self.0);
    }
}

fn net(s: &str) -> ipnet::IpNet {
    s.parse().expect("test CIDR")
}

fn allow(
    subject: u32,
    peer: u32,
    dir: u8,
    proto: u8,
    port: u16,
    rule: u32,
) -> Vec<(PolicyKey, PolicyValue)> {
    let k = |peer, action| {
        (
            PolicyKey {
                subject,
                peer,
                port,
                proto,
                dir,
                epoch: 0,
            },
            PolicyValue { action, rule },
        )
    };
    vec![k(peer, ALLOW), k(DECLARED, DECLARED_ACTION)]
}

/// The workload on `lo`: ingress TCP 80 from CLIENT, UDP 53 from anyone, ICMP from
/// anyone; egress only to the CIDR 192.0.2.0/24 on TCP 443; host deny list
/// 203.0.113.0/24 except 203.0.113.128/25.
fn compiled(mode: u32) -> Compiled {
    let mut policy = Vec::new();
    policy.extend(allow(WL, CLIENT, INGRESS, TCP, 80, 1));
    policy.extend(allow(WL, ANY, INGRESS, UDP, 53, 2));
    policy.extend(allow(WL, ANY, INGRESS, ICMP, 0, 3));
    policy.extend(allow(WL, ANY, INGRESS, ICMPV6, 0, 3));
    policy.extend(allow(WL, CIDR_ID, EGRESS, TCP, 443, 4));
    Compiled {
        endpoints: vec![EndpointEntry {
            workload: "wl".into(),
            interface: "lo".into(),
            identity: WL,
            mode,
            flags: FLAG_INGRESS_ENFORCED | FLAG_EGRESS_ENFORCED,
        }],
        ipcache: vec![
            (net("10.0.0.10/32"), WL),
            (net("fd00::10/128"), WL),
            (net("10.0.0.11/32"), CLIENT),
            (net("fd00::11/128"), CLIENT),
            (net("192.0.2.0/24"), CIDR_ID),
            (net("2001:db8::/32"), CIDR_ID),
        ],
        denylist: vec![
            (
                net("203.0.113.0/24"),
                DenyInfo {
                    action: DENY,
                    rule: 0,
                },
            ),
            (
                net("203.0.113.128/25"),
                DenyInfo {
                    action: EXCEPT,
                    rule: 0,
                },
            ),
            (
                net("2001:db8:bad::/48"),
                DenyInfo {
                    action: DENY,
                    rule: 1,
                },
            ),
        ],
        policy,
        rules: vec![],
        identities: Default::default(),
    }
}

struct Fixture {
    dp: Dataplane,
    _pins: PinDir,
    _ns: NetnsGuard,
}

impl Fixture {
    fn new(mode: u32) -> Self {
        let ns = NetnsGuard::new();
        let pins = PinDir::new();
        let mut dp = Dataplane::open(&pins.0).expect("load eBPF object");
        let report = dp.apply(&compiled(mode)).expect("apply");
        assert_eq!(
            report.endpoints, 1,
            "lo must resolve in the fresh namespace"
        );
        Self {
            dp,
            _pins: pins,
            _ns: ns,
        }
    }

    /// Runs `hook` on `pkt`; returns the program's return value and the reason it
    /// counted (the one counter that moved).
    fn run(&self, hook: Hook, pkt: &[u8]) -> (u32, Reason) {
        let before = self.dp.counters().expect("counters");
        let prog = self.dp.program(hook).expect("program");
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(pkt);
        let res = prog
            .test_run(opts)
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN on {} bytes {pkt:02x?}: {e}", pkt.len()));
        let after = self.dp.counters().expect("counters");
        let moved: Vec<_> = after
            .iter()
            .filter(|(k, c)| {
                before
                    .iter()
                    .find(|(bk, _)| bk == k)
                    .is_none_or(|(_, bc)| bc.packets != c.packets)
            })
            .collect();
        assert_eq!(
            moved.len(),
            1,
            "exactly one counter must move, got {moved:?}"
        );
        let reason = Reason::try_from(moved[0].0.reason).expect("known reason");
        (res.return_value, reason)
    }

    fn expect(&self, hook: Hook, pkt: &[u8], want: Reason) {
        let (rv, got) = self.run(hook, pkt);
        assert_eq!(got, want, "reason");
        let want_rv = if want.is_drop() { TCX_DROP } else { TCX_NEXT };
        assert_eq!(rv, want_rv, "return value for {want:?}");
    }
}

// ---- packet builders (checksums are not checked by the classifier) ----

fn eth(ethertype: u16) -> Vec<u8> {
    let mut p = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    p.extend_from_slice(&ethertype.to_be_bytes());
    p
}

fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, frag: u16, id: u16, l4: &[u8]) -> Vec<u8> {
    let mut p = eth(0x0800);
    let total = (20 + l4.len()) as u16;
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&frag.to_be_bytes());
    p.extend_from_slice(&[64, proto, 0, 0]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(l4);
    p
}

fn ipv6(src: [u8; 16], dst: [u8; 16], next: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = eth(0x86DD);
    p.extend_from_slice(&[0x60, 0, 0, 0]);
    p.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    p.extend_from_slice(&[next, 64]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(payload);
    p
}

fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&[0; 8]);
    t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t
}

fn udp(sport: u16, dport: u16) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&[0, 8, 0, 0]);
    u
}

fn icmp_echo(ty: u8, id: u16) -> Vec<u8> {
    let mut i = vec![ty, 0, 0, 0];
    i.extend_from_slice(&id.to_be_bytes());
    i.extend_from_slice(&[0, 1]);
    i
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

fn tcp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    ipv4(src, dst, TCP, 0, 1, &tcp(sport, dport, SYN))
}

// ---- tests ----

#[test]
fn declared_port_from_allowed_peer_passes_others_drop_with_reason() {
    let f = Fixture::new(MODE_ENFORCE);
    let to = Hook::ToWorkload;
    f.expect(to, &tcp4(CLIENT4, WL4, 40000, 80), Reason::AllowPolicy);
    f.expect(
        to,
        &tcp4(STRANGER4, WL4, 40001, 80),
        Reason::DropPeerNotAllowed,
    );
    f.expect(
        to,
        &tcp4(CLIENT4, WL4, 40002, 81),
        Reason::DropPortNotDeclared,
    );
    f.expect(
        to,
        &ipv4(STRANGER4, WL4, UDP, 0, 2, &udp(5000, 53)),
        Reason::AllowPolicy,
    );
    f.expect(
        to,
        &ipv4(STRANGER4, WL4, UDP, 0, 3, &udp(5000, 54)),
        Reason::DropPortNotDeclared,
    );
}

#[test]
fn rules_without_ports_allow_every_port_for_one_peer_or_for_anyone() {
    let mut f = Fixture::new(MODE_ENFORCE);
    // Egress UDP to CLIENT on any port and TCP to anyone on any port: port-0 entries,
    // reached only through the (peer, any port) and (any peer, any port) lookups.
    let mut c = compiled(MODE_ENFORCE);
    c.policy.extend(allow(WL, CLIENT, EGRESS, UDP, 0, 5));
    c.policy.extend(allow(WL, ANY, EGRESS, TCP, 0, 6));
    f.dp.apply(&c).expect("apply rules without ports");
    let from = Hook::FromWorkload;
    f.expect(
        from,
        &ipv4(WL4, CLIENT4, UDP, 0, 1, &udp(5000, 5353)),
        Reason::AllowPolicy,
    );
    // Another peer: every UDP port is declared, this peer is not allowed on any.
    f.expect(
        from,
        &ipv4(WL4, STRANGER4, UDP, 0, 2, &udp(5000, 5353)),
        Reason::DropPeerNotAllowed,
    );
    f.expect(
        from,
        &tcp4(WL4, STRANGER4, 50000, 8080),
        Reason::AllowPolicy,
    );
    f.expect(from, &tcp4(WL4, CLIENT4, 50001, 22), Reason::AllowPolicy);
}

#[test]
fn a_direction_no_policy_selects_is_not_enforced() {
    let mut f = Fixture::new(MODE_ENFORCE);
    let mut c = compiled(MODE_ENFORCE);
    c.endpoints[0].flags = FLAG_INGRESS_ENFORCED;
    f.dp.apply(&c).expect("apply ingress-only");
    // Egress has no rule for this, but egress is not enforced any more.
    f.expect(
        Hook::FromWorkload,
        &tcp4(WL4, STRANGER4, 50000, 9999),
        Reason::AllowNotSelected,
    );
    f.expect(
        Hook::ToWorkload,
        &tcp4(STRANGER4, WL4, 50001, 9999),
        Reason::DropPortNotDeclared,
    );
}

#[test]
fn replies_of_allowed_connections_pass_and_unrelated_reverse_traffic_does_not() {
    let f = Fixture::new(MODE_ENFORCE);
    // Egress to the allowed CIDR on 443 creates a connection...
    f.expect(
        Hook::FromWorkload,
        &tcp4(WL4, CIDR4, 50000, 443),
        Reason::AllowPolicy,
    );
    // ...whose reply passes ingress although no ingress rule allows TCP from there.
    let reply = ipv4(CIDR4, WL4, TCP, 0, 9, &tcp(443, 50000, SYN | ACK));
    f.expect(Hook::ToWorkload, &reply, Reason::AllowEstablished);
    // The same tuple as the original, arriving inbound, is not a reply.
    f.expect(
        Hook::ToWorkload,
        &tcp4(WL4, CIDR4, 50000, 443),
        Reason::DropPortNotDeclared,
    );
    // Egress elsewhere is denied.
    f.expect(
        Hook::FromWorkload,
        &tcp4(WL4, STRANGER4, 50001, 443),
        Reason::DropPeerNotAllowed,
    );
    f.expect(
        Hook::FromWorkload,
        &tcp4(WL4, CIDR4, 50002, 444),
        Reason::DropPortNotDeclared,
    );
}

#[test]
fn host_deny_list_blocks_both_ways_with_except_holes_ipv4_and_ipv6() {
    let f = Fixture::new(MODE_ENFORCE);
    f.expect(
        Hook::ToWorkload,
        &ipv4(DENIED4, WL4, UDP, 0, 1, &udp(1, 53)),
        Reason::DropCidrDenied,
    );
    f.expect(
        Hook::FromWorkload,
        &tcp4(WL4, DENIED4, 1234, 443),
        Reason::DropCidrDenied,
    );
    // The except hole: policy decides (UDP 53 from anyone is allowed).
    f.expect(
        Hook::ToWorkload,
        &ipv4(EXCEPTED4, WL4, UDP, 0, 1, &udp(1, 53)),
        Reason::AllowPolicy,
    );
    let mut bad6 = [0u8; 16];
    bad6[..6].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0x0b, 0xad]);
    bad6[15] = 1;
    f.expect(
        Hook::ToWorkload,
        &ipv6(bad6, v6(0x10), UDP, &udp(1, 53)),
        Reason::DropCidrDenied,
    );
    f.expect(
        Hook::FromWorkload,
        &ipv6(v6(0x10), bad6, TCP, &tcp(1, 443, SYN)),
        Reason::DropCidrDenied,
    );
}

#[test]
fn ipv6_policy_and_neighbour_discovery() {
    let f = Fixture::new(MODE_ENFORCE);
    let to = Hook::ToWorkload;
    f.expect(
        to,
        &ipv6(v6(0x11), v6(0x10), TCP, &tcp(40000, 80, SYN)),
        Reason::AllowPolicy,
    );
    f.expect(
        to,
        &ipv6(v6(0x99), v6(0x10), TCP, &tcp(40000, 80, SYN)),
        Reason::DropPeerNotAllowed,
    );
    f.expect(
        to,
        &ipv6(v6(0x11), v6(0x10), TCP, &tcp(40000, 22, SYN)),
        Reason::DropPortNotDeclared,
    );
    // Neighbour solicitation passes whatever the policy.
    f.expect(
        to,
        &ipv6(v6(0x99), v6(0x10), ICMPV6, &[135, 0, 0, 0, 0, 0, 0, 0]),
        Reason::AllowInfra,
    );
    f.expect(
        to,
        &ipv6(v6(0x99), v6(0x10), ICMPV6, &icmp_echo(128, 7)),
        Reason::AllowPolicy,
    );
    // MLDv2 report: link infrastructure too.
    f.expect(
        Hook::FromWorkload,
        &ipv6(v6(0x10), v6(0x16), ICMPV6, &[143, 0, 0, 0, 0, 0, 0, 0]),
        Reason::AllowInfra,
    );
    // IGMP (a membership query from the bridge): infrastructure as well.
    f.expect(
        to,
        &ipv4(
            [10, 0, 0, 1],
            [224, 0, 0, 1],
            2,
            0,
            9,
            &[0x11, 0, 0, 0, 0, 0, 0, 0],
        ),
        Reason::AllowInfra,
    );
    // Other ICMPv6 (destination unreachable) is policy's business.
    f.expect(
        Hook::FromWorkload,
        &ipv6(v6(0x10), v6(0x99), ICMPV6, &[1, 4, 0, 0, 0, 0, 0, 0]),
        Reason::DropPortNotDeclared,
    );
    // Extension headers are walked: hop-by-hop (8 bytes) then TCP.
    let mut hbh = vec![TCP, 0, 1, 4, 0, 0, 0, 0];
    hbh.extend_from_slice(&tcp(40001, 22, SYN));
    f.expect(
        to,
        &ipv6(v6(0x11), v6(0x10), 0, &hbh),
        Reason::DropPortNotDeclared,
    );
    let mut hbh = vec![TCP, 0, 1, 4, 0, 0, 0, 0];
    hbh.extend_from_slice(&tcp(40001, 80, SYN));
    f.expect(to, &ipv6(v6(0x11), v6(0x10), 0, &hbh), Reason::AllowPolicy);
}

#[test]
fn icmp_echo_reply_tracks_the_request() {
    let f = Fixture::new(MODE_ENFORCE);
    // Egress ICMP is not allowed by policy...
    f.expect(
        Hook::FromWorkload,
        &ipv4(WL4, CLIENT4, ICMP, 0, 1, &icmp_echo(8, 42)),
        Reason::DropPortNotDeclared,
    );
    // ...ingress is: the request in, its reply out as established.
    f.expect(
        Hook::ToWorkload,
        &ipv4(CLIENT4, WL4, ICMP, 0, 1, &icmp_echo(8, 43)),
        Reason::AllowPolicy,
    );
    f.expect(
        Hook::FromWorkload,
        &ipv4(WL4, CLIENT4, ICMP, 0, 1, &icmp_echo(0, 43)),
        Reason::AllowEstablished,
    );
}

#[test]
fn fragments_follow_their_first_fragment() {
    let f = Fixture::new(MODE_ENFORCE);
    let to = Hook::ToWorkload;
    const MF: u16 = 0x2000;
    // Allowed first fragment (UDP 53), then a later fragment of the same datagram.
    f.expect(
        to,
        &ipv4(STRANGER4, WL4, UDP, MF, 777, &udp(5000, 53)),
        Reason::AllowPolicy,
    );
    f.expect(
        to,
        &ipv4(STRANGER4, WL4, UDP, 185, 777, &[0u8; 16]),
        Reason::AllowEstablished,
    );
    // A later fragment with no allowed first fragment.
    f.expect(
        to,
        &ipv4(STRANGER4, WL4, UDP, 185, 778, &[0u8; 16]),
        Reason::DropFragment,
    );
    // Denied first fragment: its followers are dropped too.
    f.expect(
        to,
        &ipv4(STRANGER4, WL4, UDP, MF, 779, &udp(5000, 54)),
        Reason::DropPortNotDeclared,
    );
    f.expect(
        to,
        &ipv4(STRANGER4, WL4, UDP, 185, 779, &[0u8; 16]),
        Reason::DropFragment,
    );
    // IPv6 fragment header: first fragment of TCP 80 from CLIENT, then a later one.
    let mut first = vec![TCP, 0, 0, 1, 0, 0, 0x12, 0x34];
    first.extend_from_slice(&tcp(40000, 80, SYN));
    f.expect(
        to,
        &ipv6(v6(0x11), v6(0x10), 44, &first),
        Reason::AllowPolicy,
    );
    let later = vec![TCP, 0, 0, 0x18, 0, 0, 0x12, 0x34, 0, 0, 0, 0];
    f.expect(
        to,
        &ipv6(v6(0x11), v6(0x10), 44, &later),
        Reason::AllowEstablished,
    );
}

#[test]
fn truncated_and_malformed_headers_are_dropped_not_misread() {
    let f = Fixture::new(MODE_ENFORCE);
    let to = Hook::ToWorkload;
    // TCP header cut after 10 bytes.
    let full = tcp4(CLIENT4, WL4, 40000, 80);
    f.expect(to, &full[..14 + 20 + 10], Reason::DropMalformed);
    // The kernel refuses to test-run an IP packet shorter than its base header, so
    // header truncation is exercised through lengths that point past the end:
    // an IPv4 header length of 60 bytes in a 42-byte frame...
    let mut long_ihl = full[..14 + 20 + 8].to_vec();
    long_ihl[14] = 0x4f;
    f.expect(to, &long_ihl, Reason::DropMalformed);
    // IHL below 5.
    let mut bad = full.clone();
    bad[14] = 0x44;
    f.expect(to, &bad, Reason::DropMalformed);
    // ...and an IPv6 hop-by-hop header claiming 64 bytes with 8 present.
    let hbh = [TCP, 7, 1, 4, 0, 0, 0, 0];
    f.expect(
        to,
        &ipv6(v6(0x11), v6(0x10), 0, &hbh),
        Reason::DropMalformed,
    );
    // IPv6 with the TCP header cut after 6 bytes.
    let v6pkt = ipv6(v6(0x11), v6(0x10), TCP, &tcp(1, 80, SYN));
    f.expect(to, &v6pkt[..14 + 40 + 6], Reason::DropMalformed);
    // Seven extension headers: more than the walk accepts.
    let mut chain = Vec::new();
    for _ in 0..6 {
        chain.extend_from_slice(&[60, 0, 1, 4, 0, 0, 0, 0]);
    }
    chain.extend_from_slice(&[TCP, 0, 1, 4, 0, 0, 0, 0]);
    chain.extend_from_slice(&tcp(1, 80, SYN));
    f.expect(
        to,
        &ipv6(v6(0x11), v6(0x10), 60, &chain),
        Reason::DropMalformed,
    );
    // Non-IP (ARP) is infrastructure.
    let mut arp = eth(0x0806);
    arp.extend_from_slice(&[0u8; 28]);
    f.expect(to, &arp, Reason::AllowInfra);
}

#[test]
fn audit_mode_counts_but_never_drops() {
    let f = Fixture::new(MODE_AUDIT);
    f.expect(
        Hook::ToWorkload,
        &tcp4(STRANGER4, WL4, 40000, 80),
        Reason::AllowAudit,
    );
    f.expect(
        Hook::ToWorkload,
        &tcp4(CLIENT4, WL4, 40000, 80),
        Reason::AllowPolicy,
    );
    f.expect(
        Hook::FromWorkload,
        &tcp4(WL4, DENIED4, 1, 1),
        Reason::AllowAudit,
    );
}

#[test]
fn reapplied_policy_rechecks_tracked_connections() {
    let mut f = Fixture::new(MODE_ENFORCE);
    f.expect(
        Hook::ToWorkload,
        &tcp4(CLIENT4, WL4, 41000, 80),
        Reason::AllowPolicy,
    );
    let est = ipv4(CLIENT4, WL4, TCP, 0, 2, &tcp(41000, 80, ACK));
    f.expect(Hook::ToWorkload, &est, Reason::AllowEstablished);
    // Same policy again: the connection survives the generation change.
    f.dp.apply(&compiled(MODE_ENFORCE)).expect("re-apply");
    f.expect(Hook::ToWorkload, &est, Reason::AllowEstablished);
    // A policy without the TCP 80 rule: the established connection is cut.
    let mut c = compiled(MODE_ENFORCE);
    c.policy.retain(|(k, _)| !(k.proto == TCP && k.port == 80));
    f.dp.apply(&c).expect("apply narrower policy");
    f.expect(Hook::ToWorkload, &est, Reason::DropPortNotDeclared);
    let reply = ipv4(WL4, CLIENT4, TCP, 0, 3, &tcp(80, 41000, ACK));
    // Its reply is no longer a reply either (egress has no rule for it).
    f.expect(Hook::FromWorkload, &reply, Reason::DropPortNotDeclared);
}

/// Established traffic skips the deny-list lookup while the policy generation is
/// unchanged; a deny list that grows to cover a tracked peer still cuts it, in both
/// directions, on the next packet.
#[test]
fn a_deny_list_change_cuts_tracked_connections() {
    let mut f = Fixture::new(MODE_ENFORCE);
    // Anyone may reach UDP 53; 198.51.100.9 is not deny-listed yet.
    let peer = [198, 51, 100, 9];
    f.expect(
        Hook::ToWorkload,
        &ipv4(peer, WL4, UDP, 0, 1, &udp(5353, 53)),
        Reason::AllowPolicy,
    );
    let more = ipv4(peer, WL4, UDP, 0, 2, &udp(5353, 53));
    let reply = ipv4(WL4, peer, UDP, 0, 3, &udp(53, 5353));
    f.expect(Hook::ToWorkload, &more, Reason::AllowEstablished);
    f.expect(Hook::FromWorkload, &reply, Reason::AllowEstablished);
    let mut c = compiled(MODE_ENFORCE);
    c.denylist.push((
        net("198.51.100.0/24"),
        DenyInfo {
            action: DENY,
            rule: 2,
        },
    ));
    f.dp.apply(&c).expect("apply a wider deny list");
    f.expect(Hook::FromWorkload, &reply, Reason::DropCidrDenied);
    f.expect(Hook::ToWorkload, &more, Reason::DropCidrDenied);
    // And the entry is gone, not just skipped once: again, still denied.
    f.expect(Hook::ToWorkload, &more, Reason::DropCidrDenied);
}

#[test]
fn unknown_interface_is_not_ours() {
    let f = Fixture::new(MODE_ENFORCE);
    let mut c = compiled(MODE_ENFORCE);
    c.endpoints.clear();
    let mut dp = f.dp;
    dp.apply(&c).expect("apply without endpoints");
    let prog = dp.program(Hook::ToWorkload).expect("program");
    let pkt = tcp4(STRANGER4, WL4, 1, 22);
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(&pkt);
    let res = prog.test_run(opts).expect("test run");
    assert_eq!(res.return_value, TCX_NEXT);
}

/// A header-length field below its minimum makes the packet malformed on its own:
/// an IPv4 IHL under 5 in a UDP packet (no TCP data-offset check to fall back on),
/// and a TCP data offset under 5 behind a valid IPv4 or IPv6 header. Read as if
/// valid, the first would take ports from the address bytes and the second would
/// pass as TCP 80 from an allowed peer.
#[test]
fn header_lengths_below_their_minimum_are_malformed_on_their_own() {
    let f = Fixture::new(MODE_ENFORCE);
    let to = Hook::ToWorkload;
    for (proto, l4) in [(UDP, udp(5000, 53)), (ICMP, icmp_echo(8, 7))] {
        let mut short_ihl = ipv4(STRANGER4, WL4, proto, 0, 1, &l4);
        short_ihl[14] = 0x44;
        f.expect(to, &short_ihl, Reason::DropMalformed);
    }
    let mut t = tcp(40000, 80, SYN);
    t[12] = 0x40;
    f.expect(
        to,
        &ipv4(CLIENT4, WL4, TCP, 0, 1, &t),
        Reason::DropMalformed,
    );
    f.expect(
        to,
        &ipv6(v6(0x11), v6(0x10), TCP, &t),
        Reason::DropMalformed,
    );
    // The same packets with valid lengths pass: the lengths alone decided.
    f.expect(to, &tcp4(CLIENT4, WL4, 40000, 80), Reason::AllowPolicy);
    f.expect(
        to,
        &ipv4(STRANGER4, WL4, UDP, 0, 1, &udp(5000, 53)),
        Reason::AllowPolicy,
    );
}

/// Later fragments carry no ports but do carry addresses: the host deny list applies
/// to them like to any packet, also when their first fragment passed before the deny
/// list grew, and in a direction no policy selects.
#[test]
fn later_fragments_obey_the_host_deny_list() {
    let mut f = Fixture::new(MODE_ENFORCE);
    let to = Hook::ToWorkload;
    const MF: u16 = 0x2000;
    let peer = [198, 51, 100, 9];
    f.expect(
        to,
        &ipv4(peer, WL4, UDP, MF, 900, &udp(5000, 53)),
        Reason::AllowPolicy,
    );
    let later = ipv4(peer, WL4, UDP, 185, 900, &[0u8; 16]);
    f.expect(to, &later, Reason::AllowEstablished);
    let mut c = compiled(MODE_ENFORCE);
    c.denylist.push((
        net("198.51.100.0/24"),
        DenyInfo {
            action: DENY,
            rule: 2,
        },
    ));
    c.endpoints[0].flags = FLAG_INGRESS_ENFORCED;
    f.dp.apply(&c)
        .expect("apply a wider deny list, egress not enforced");
    // The remembered first fragment does not outrank the deny list.
    f.expect(to, &later, Reason::DropCidrDenied);
    // Egress is not enforced: only the deny list stops this orphan fragment.
    f.expect(
        Hook::FromWorkload,
        &ipv4(WL4, DENIED4, UDP, 185, 901, &[0u8; 16]),
        Reason::DropCidrDenied,
    );
}

/// A direction no policy selects drops neither a malformed packet nor a later
/// fragment without its first: nothing enforces that direction. The enforced
/// direction still drops both.
#[test]
fn a_direction_no_policy_selects_drops_no_malformed_packet_or_orphan_fragment() {
    let mut f = Fixture::new(MODE_ENFORCE);
    let mut c = compiled(MODE_ENFORCE);
    c.endpoints[0].flags = FLAG_INGRESS_ENFORCED;
    f.dp.apply(&c).expect("apply ingress-only");
    let out = tcp4(WL4, STRANGER4, 50000, 9999);
    f.expect(
        Hook::FromWorkload,
        &out[..14 + 20 + 10],
        Reason::AllowNotSelected,
    );
    f.expect(
        Hook::FromWorkload,
        &ipv4(WL4, STRANGER4, UDP, 185, 902, &[0u8; 16]),
        Reason::AllowNotSelected,
    );
    let inbound = tcp4(STRANGER4, WL4, 50000, 80);
    f.expect(
        Hook::ToWorkload,
        &inbound[..14 + 20 + 10],
        Reason::DropMalformed,
    );
    f.expect(
        Hook::ToWorkload,
        &ipv4(STRANGER4, WL4, UDP, 185, 903, &[0u8; 16]),
        Reason::DropFragment,
    );
}

/// After an apply, a tracked connection is re-checked in its own orientation: when
/// its first packet after the apply is a reply, the rule is looked up with the
/// connection's destination port (the reply's source port), not the reply's
/// destination port. Both directions are enforced here, so a wrong re-check would
/// cut the connection.
#[test]
fn replies_survive_a_reapply_of_the_same_policy() {
    let mut f = Fixture::new(MODE_ENFORCE);
    // Inbound: CLIENT -> WL:80 (ingress rule).
    f.expect(
        Hook::ToWorkload,
        &tcp4(CLIENT4, WL4, 42000, 80),
        Reason::AllowPolicy,
    );
    let in_reply = ipv4(WL4, CLIENT4, TCP, 0, 2, &tcp(80, 42000, SYN | ACK));
    f.expect(Hook::FromWorkload, &in_reply, Reason::AllowEstablished);
    // Outbound: WL -> CIDR:443 (egress rule).
    f.expect(
        Hook::FromWorkload,
        &tcp4(WL4, CIDR4, 42001, 443),
        Reason::AllowPolicy,
    );
    let out_reply = ipv4(CIDR4, WL4, TCP, 0, 3, &tcp(443, 42001, SYN | ACK));
    f.expect(Hook::ToWorkload, &out_reply, Reason::AllowEstablished);

    f.dp.apply(&compiled(MODE_ENFORCE)).expect("re-apply");
    f.expect(Hook::FromWorkload, &in_reply, Reason::AllowEstablished);
    f.expect(Hook::ToWorkload, &out_reply, Reason::AllowEstablished);
    // The entries were kept (re-stamped), not removed and re-made.
    f.expect(
        Hook::ToWorkload,
        &ipv4(CLIENT4, WL4, TCP, 0, 4, &tcp(42000, 80, ACK)),
        Reason::AllowEstablished,
    );
    f.expect(
        Hook::FromWorkload,
        &ipv4(WL4, CIDR4, TCP, 0, 5, &tcp(42001, 443, ACK)),
        Reason::AllowEstablished,
    );
}
