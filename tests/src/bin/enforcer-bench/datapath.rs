//! Side-by-side datapath measurements: each configuration against a baseline, in
//! interleaved pairs (A B, B A, A B, …), ratio = B / A per pair, reported as the
//! median with the spread.
//!
//! - Datapath: A is a lab that never has a filter; B is a fresh lab with the
//!   configuration in place (a fresh lab per configuration, so no rule, hook or
//!   table of an earlier one lingers: iptables-legacy tables, for one, stay
//!   registered in a namespace until it is deleted).
//! - Monitoring: one lab with the enforcer; A has flow accounting and events off,
//!   B on (switched by an apply, which only rewrites the config word's flags).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{
    filters::{self, Filter, Setup},
    inputs::EnforcerPolicy,
    traffic::BenchLab,
    util::{Ctx as _, Result, Spread, check_interrupt, say},
};

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Params {
    pub pairs: usize,
    pub udp_secs: f64,
    pub tcp_secs: f64,
    pub tcp_streams: u32,
    pub conn_secs: f64,
    pub conn_threads: usize,
}

/// One measurement of every test on one state of the path.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Measure {
    pub udp_pps: f64,
    /// What trafgen got out of `a` meanwhile (the offered load).
    pub udp_sent_pps: f64,
    pub tcp_gbps: f64,
    pub conn_per_s: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Comparison {
    pub name: String,
    /// What A was.
    pub baseline: String,
    pub setup: Setup,
    pub a: Vec<Measure>,
    pub b: Vec<Measure>,
    /// B / A per pair.
    pub udp: Spread,
    pub tcp: Spread,
    pub conn: Spread,
    pub error: Option<String>,
}

impl Comparison {
    fn finish(&mut self) {
        let ratio = |f: fn(&Measure) -> f64| {
            let r: Vec<f64> = self
                .a
                .iter()
                .zip(&self.b)
                .map(|(a, b)| f(b) / f(a))
                .collect();
            Spread::of(&r)
        };
        self.udp = ratio(|m| m.udp_pps);
        self.tcp = ratio(|m| m.tcp_gbps);
        self.conn = ratio(|m| m.conn_per_s);
    }
}

pub fn measure(blab: &BenchLab, p: &Params) -> Result<Measure> {
    let (udp_pps, udp_sent_pps) = blab.udp_pps(p.udp_secs).ctx("UDP packet rate")?;
    let tcp_gbps = blab
        .tcp_gbps(p.tcp_secs, p.tcp_streams)
        .ctx("TCP throughput")?;
    let conn_per_s = blab
        .conn_rate(p.conn_secs, p.conn_threads)
        .ctx("connection rate")?;
    Ok(Measure {
        udp_pps,
        udp_sent_pps,
        tcp_gbps,
        conn_per_s,
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    A,
    B,
}

/// `pairs` interleaved pairs, the order alternating (AB, BA, AB, …) so a drift in
/// the machine's load hits both sides alike.
fn interleave(
    p: &Params,
    mut run: impl FnMut(Side) -> Result<Measure>,
) -> Result<(Vec<Measure>, Vec<Measure>)> {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for i in 0..p.pairs {
        let order = if i % 2 == 0 {
            [Side::A, Side::B]
        } else {
            [Side::B, Side::A]
        };
        for side in order {
            check_interrupt()?;
            let m = run(side)?;
            match side {
                Side::A => a.push(m),
                Side::B => b.push(m),
            }
        }
    }
    Ok((a, b))
}

/// The datapath configurations, in the order they run.
pub fn datapath_configs(quick: bool) -> Vec<(String, Filter)> {
    let enf = |p| Filter::Enforcer {
        policy: p,
        monitoring: filters::monitoring(true, true),
    };
    let mut v = vec![("control: no filter (second lab)".to_owned(), Filter::None)];
    let (deny, nft, ipt): (&[usize], &[usize], &[usize]) = if quick {
        (&[10, 100_000], &[100_000], &[1000])
    } else {
        (
            &[10, 1000, 10_000, 100_000],
            &[10, 1000, 10_000, 100_000],
            &[10, 1000, 10_000],
        )
    };
    for &n in deny {
        v.push((
            format!("enforcer, deny list {}", human(n)),
            enf(EnforcerPolicy::Deny(n)),
        ));
    }
    v.push((
        "enforcer, 10k CIDR peers in policy".to_owned(),
        enf(EnforcerPolicy::CidrPeers(10_000)),
    ));
    for &n in nft {
        v.push((format!("nftables, set of {}", human(n)), Filter::Nft(n)));
    }
    for legacy in [false, true] {
        for &n in ipt {
            v.push((
                format!(
                    "iptables-{}, {} rules",
                    if legacy { "legacy" } else { "nft" },
                    human(n)
                ),
                Filter::Iptables { legacy, rules: n },
            ));
        }
    }
    v
}

pub fn human(n: usize) -> String {
    if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

/// Runs every datapath configuration against the clean lab.
pub fn run_datapath(p: &Params, quick: bool, scratch: &Path) -> Result<Vec<Comparison>> {
    let clean = BenchLab::up(scratch).ctx("baseline lab")?;
    let mut out = Vec::new();
    for (name, filter) in datapath_configs(quick) {
        check_interrupt()?;
        say(format!("datapath: {name}"));
        let mut c = Comparison {
            name: name.clone(),
            baseline: "no filter".into(),
            ..Default::default()
        };
        match one_config(p, &clean, &filter, scratch, &mut c) {
            Ok(()) => c.finish(),
            Err(e) => {
                crate::util::check_interrupt()?;
                say(format!("  {name}: FAILED: {e}"));
                c.error = Some(e.to_string());
            }
        }
        if c.error.is_none() {
            say(format!(
                "  UDP {:.3}x  TCP {:.3}x  conn {:.3}x  (load {:.2} s)",
                c.udp.median, c.tcp.median, c.conn.median, c.setup.load_secs
            ));
        }
        out.push(c);
    }
    Ok(out)
}

fn one_config(
    p: &Params,
    clean: &BenchLab,
    filter: &Filter,
    scratch: &Path,
    c: &mut Comparison,
) -> Result<()> {
    let lab = BenchLab::up(scratch).ctx("lab for the filter")?;
    let (active, setup) = filters::put_in_place(filter, &lab, scratch)?;
    c.setup = setup;
    let (a, b) = interleave(p, |side| match side {
        Side::A => measure(clean, p),
        Side::B => measure(&lab, p),
    })?;
    c.a = a;
    c.b = b;
    // Filter first, then the lab (and with it every namespace it made).
    drop(active);
    drop(lab);
    Ok(())
}

/// Monitoring on vs off, on the enforcer with a 1k deny list.
pub fn run_monitoring(p: &Params, scratch: &Path) -> Result<Vec<Comparison>> {
    let lab = BenchLab::up(scratch).ctx("monitoring lab")?;
    let policy = EnforcerPolicy::Deny(1000);
    let (mut active, setup) = filters::put_in_place(
        &Filter::Enforcer {
            policy,
            monitoring: filters::monitoring(false, false),
        },
        &lab,
        scratch,
    )?;
    let compiled = crate::inputs::compile(policy)?;
    let mut out = Vec::new();
    for (name, on) in [
        ("flow accounting on", filters::monitoring(true, false)),
        (
            "flow accounting and events on (default)",
            filters::monitoring(true, true),
        ),
    ] {
        check_interrupt()?;
        say(format!("monitoring: {name}"));
        let mut c = Comparison {
            name: name.into(),
            baseline: "enforcer (deny list 1k), flows and events off".into(),
            setup: setup.clone(),
            ..Default::default()
        };
        let filters::Active::Enforcer(enf) = &mut active else {
            return Err("the enforcer is not in place".into());
        };
        let res = interleave(p, |side| {
            let m = match side {
                Side::A => filters::monitoring(false, false),
                Side::B => on,
            };
            enf.dp.set_monitoring(m);
            let dp = &mut enf.dp;
            lab.lab
                .try_in_netns("host", || dp.apply(&compiled))
                .ctx("enter the lab's host namespace")?
                .ctx("re-applying with other monitoring flags")?;
            measure(&lab, p)
        });
        match res {
            Ok((a, b)) => {
                c.a = a;
                c.b = b;
                c.finish();
                say(format!(
                    "  UDP {:.3}x  TCP {:.3}x  conn {:.3}x",
                    c.udp.median, c.tcp.median, c.conn.median
                ));
            }
            Err(e) => {
                check_interrupt()?;
                say(format!("  {name}: FAILED: {e}"));
                c.error = Some(e.to_string());
            }
        }
        out.push(c);
    }
    if let filters::Active::Enforcer(enf) = &active {
        let loss = enf.dp.event_loss().ok();
        say(format!(
            "monitoring: {} events read; lost: {} ring buffer full, {} over the rate limit, {} flow entries not created",
            enf.events_read(),
            loss.map_or(0, |l| l.ringbuf_full),
            loss.map_or(0, |l| l.rate_limited),
            loss.map_or(0, |l| l.flow_insert_failed),
        ));
    }
    drop(active);
    drop(lab);
    Ok(out)
}
