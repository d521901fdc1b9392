//! The classifier's own cost per packet, from `BPF_PROG_TEST_RUN` with a repeat
//! count (the kernel times the loop and reports the mean per run).
//!
//! Runs on a thread in a fresh network namespace of its own, whose loopback is the
//! workload interface of `a` (TCX ingress program: `a`'s egress, the peer is the
//! destination). The floor is the same program with no endpoint for the interface:
//! the "not ours" early exit after the config and endpoint lookups (a second,
//! empty program cannot be added to the object, so this stands in for one).

use aya::programs::{TestRun as _, TestRunOptions};
use enforcer::{
    dataplane::{Dataplane, Hook},
    policy::compiled::Compiled,
};
use serde::{Deserialize, Serialize};

use crate::{
    datapath::human,
    filters::{self, pin_dir},
    inputs::{self, EnforcerPolicy},
    util::{Ctx as _, DirGuard, Result, Spread, check_interrupt, err, say},
};

const TCX_NEXT: u32 = u32::MAX;
const TCX_DROP: u32 = 2;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Row {
    pub config: String,
    pub packet: String,
    pub monitoring: String,
    /// ns per packet, one sample per test run of `repeat` packets.
    pub ns: Spread,
    pub repeat: u32,
}

pub fn run(repeat: u32, runs: usize) -> Result<Vec<Row>> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let own = std::fs::metadata("/proc/thread-self/ns/net").ctx("own netns")?;
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .ctx("unshare(CLONE_NEWNET)")?;
            let new = std::fs::metadata("/proc/thread-self/ns/net").ctx("new netns")?;
            // Never attach to the machine's own loopback.
            use std::os::unix::fs::MetadataExt as _;
            if own.ino() == new.ino() {
                return Err(err("still in the machine's network namespace"));
            }
            in_fresh_netns(repeat, runs)
        })
        .join()
        .map_err(|_| err("test-run thread panicked"))?
    })
}

fn in_fresh_netns(repeat: u32, runs: usize) -> Result<Vec<Row>> {
    let pins = pin_dir();
    let _guard = DirGuard(pins.clone());
    let mut dp = Dataplane::open(&pins).ctx("loading the eBPF object")?;
    let mut rows = Vec::new();
    let on = filters::monitoring(true, true);
    let off = filters::monitoring(false, false);

    let established = udp(inputs::A4.octets(), inputs::B4.octets(), inputs::UDP_PORT);
    // Not a workload, not in any list (the generated CIDRs avoid 10/8): the peer
    // gets `world`, the port is declared, the peer is not allowed. Every policy
    // lookup runs, and a drop makes no connection-tracking entry, so each repeat
    // walks the whole path again.
    let stranger = udp(inputs::A4.octets(), [10, 201, 3, 3], inputs::UDP_PORT);

    // Floor: nothing is ours.
    dp.set_monitoring(on);
    dp.apply(&Compiled::default()).ctx("apply (empty)")?;
    rows.push(measure(
        &dp,
        "none (floor)",
        "any packet: no endpoint, early exit",
        "on",
        &established,
        repeat,
        runs,
        TCX_NEXT,
    )?);

    let configs = [
        EnforcerPolicy::Deny(10),
        EnforcerPolicy::Deny(1000),
        EnforcerPolicy::Deny(100_000),
        EnforcerPolicy::CidrPeers(10_000),
    ];
    for cfg in configs {
        check_interrupt()?;
        let name = match cfg {
            EnforcerPolicy::Deny(n) => format!("deny list {}", human(n)),
            EnforcerPolicy::CidrPeers(n) => format!("{} CIDR peers in policy", human(n)),
            EnforcerPolicy::Agent => "agent".into(),
        };
        say(format!("test run: {name}"));
        let mut compiled = inputs::compile(cfg)?;
        // `a` on this namespace's loopback; `b` is not here.
        compiled.endpoints.retain(|e| e.workload == "a");
        for e in &mut compiled.endpoints {
            e.interface = "lo".into();
        }
        for (mon, label) in [(on, "on"), (off, "off")] {
            dp.set_monitoring(mon);
            let rep = dp.apply(&compiled).ctx("apply")?;
            if rep.endpoints != 1 {
                return Err(err("lo did not resolve in the fresh namespace"));
            }
            // The first run makes the connection-tracking entry.
            single(&dp, &established)?;
            rows.push(measure(
                &dp,
                &name,
                "UDP a→b, established (tracked connection)",
                label,
                &established,
                repeat,
                runs,
                TCX_NEXT,
            )?);
            rows.push(measure(
                &dp,
                &name,
                "UDP a→stranger, new, dropped by policy (full lookup)",
                label,
                &stranger,
                repeat,
                runs,
                TCX_DROP,
            )?);
            if let EnforcerPolicy::Deny(n) = cfg {
                let hit = inputs::cidrs(n)[n / 2].addr().octets();
                rows.push(measure(
                    &dp,
                    &name,
                    "UDP a→deny-listed address (dropped)",
                    label,
                    &udp(inputs::A4.octets(), hit, inputs::UDP_PORT),
                    repeat,
                    runs,
                    TCX_DROP,
                )?);
            }
        }
    }
    Ok(rows)
}

fn single(dp: &Dataplane, pkt: &[u8]) -> Result<u32> {
    let prog = dp.program(Hook::FromWorkload).ctx("program")?;
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(pkt);
    Ok(prog.test_run(opts).ctx("BPF_PROG_TEST_RUN")?.return_value)
}

#[allow(clippy::too_many_arguments)]
fn measure(
    dp: &Dataplane,
    config: &str,
    packet: &str,
    monitoring: &str,
    pkt: &[u8],
    repeat: u32,
    runs: usize,
    want: u32,
) -> Result<Row> {
    let prog = dp.program(Hook::FromWorkload).ctx("program")?;
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(pkt);
        opts.repeat = repeat;
        let r = prog.test_run(opts).ctx("BPF_PROG_TEST_RUN")?;
        if r.return_value != want {
            return Err(err(format!(
                "{config} / {packet}: program returned {:#x}, expected {want:#x}",
                r.return_value
            )));
        }
        samples.push(r.duration.as_nanos() as f64);
    }
    let row = Row {
        config: config.into(),
        packet: packet.into(),
        monitoring: monitoring.into(),
        ns: Spread::of(&samples),
        repeat,
    };
    say(format!(
        "  {packet} (monitoring {monitoring}): {:.1} ns",
        row.ns.median
    ));
    Ok(row)
}

/// Ethernet + IPv4 + UDP, 64 bytes in all (checksums are not checked).
fn udp(src: [u8; 4], dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut p = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
    let payload = 22usize;
    let total = (20 + 8 + payload) as u16;
    p.extend_from_slice(&[0x45, 0]);
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&[0, 1, 0, 0, 64, 17, 0, 0]);
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(&4000u16.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend(std::iter::repeat_n(0u8, payload));
    debug_assert_eq!(p.len(), 64);
    p
}
