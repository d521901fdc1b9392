//! The evaluation harness: seeded synthetic traffic over diurnal and weekly
//! seasonality and noise, with labelled injected anomalies of every kind, run through
//! the real [`Engine`]. Reports recall and detection delay per injected class,
//! precision per alert kind, and false alarms per 100 edge-days on the same traffic
//! without injections. `enforcer baseline eval` prints it; `docs/baseline.md`
//! publishes it.
use serde::Serialize;

use super::{Alert, AlertKind, AlertState, EdgeRef, EdgeSample, Engine, Interval, Settings};

mod score;
pub mod traffic;

pub use score::{ClassRow, KindRow, Report, Target};

use traffic::{Rng, Topology};

/// What to simulate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spec {
    pub seed: u64,
    /// Background edges.
    pub edges: usize,
    pub days: u32,
    pub learning_days: u32,
    pub interval_secs: u64,
    /// Injections of each class.
    pub per_class: usize,
}

impl Default for Spec {
    fn default() -> Self {
        Self {
            seed: 1,
            edges: 100,
            days: 28,
            learning_days: 7,
            interval_secs: 60,
            per_class: 40,
        }
    }
}

/// A kind of injected anomaly.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Class {
    /// Bytes and packets × factor for 10 intervals.
    Spike(f64),
    /// New connections × factor for 10 intervals, on edges with ≥ 0.2/s.
    ConnSpike(f64),
    /// No traffic for 20 intervals, on edges expected to carry ≥ 2 packets/s.
    Silence,
    /// A workload's first flow to a workload it never contacted (30 intervals).
    NewEdge,
    /// A known pair on a new port (30 intervals).
    NewPort,
    /// One source, 100–400 denied ports of one peer within 2 intervals.
    ScanPorts,
    /// One source, 30–80 new peers on port 22 within 2 intervals.
    ScanPeers,
    /// 2–20 denied packets/s from one workload for 3 intervals.
    DenyBurst,
}

impl Class {
    pub const ALL: [Class; 13] = [
        Class::Spike(1.5),
        Class::Spike(2.0),
        Class::Spike(3.0),
        Class::Spike(5.0),
        Class::Spike(10.0),
        Class::ConnSpike(3.0),
        Class::ConnSpike(10.0),
        Class::Silence,
        Class::NewEdge,
        Class::NewPort,
        Class::ScanPorts,
        Class::ScanPeers,
        Class::DenyBurst,
    ];

    pub fn name(self) -> String {
        match self {
            Class::Spike(f) => format!("spike x{f} (bytes, packets)"),
            Class::ConnSpike(f) => format!("spike x{f} (connections)"),
            Class::Silence => "silence (busy edge)".into(),
            Class::NewEdge => "new edge".into(),
            Class::NewPort => "new port".into(),
            Class::ScanPorts => "scan: ports of one peer".into(),
            Class::ScanPeers => "scan: many peers".into(),
            Class::DenyBurst => "deny burst".into(),
        }
    }

    /// The alert kind that detects it.
    pub fn kind(self) -> AlertKind {
        match self {
            Class::Spike(_) | Class::ConnSpike(_) => AlertKind::Spike,
            Class::Silence => AlertKind::Silence,
            Class::NewEdge => AlertKind::NewEdge,
            Class::NewPort => AlertKind::NewPort,
            Class::ScanPorts | Class::ScanPeers => AlertKind::FanOut,
            Class::DenyBurst => AlertKind::DenyBurst,
        }
    }

    fn len(self) -> u64 {
        match self {
            Class::Spike(_) | Class::ConnSpike(_) => 10,
            Class::Silence => 20,
            Class::NewEdge | Class::NewPort => 30,
            Class::ScanPorts | Class::ScanPeers => 2,
            Class::DenyBurst => 3,
        }
    }
}

/// One injected anomaly (the label).
#[derive(Debug, Clone, PartialEq)]
pub struct Injected {
    pub class: Class,
    /// First interval index, and how many intervals.
    pub start: u64,
    pub len: u64,
    /// The background edge it changes (spikes, silences), if any.
    pub target: Option<usize>,
    /// The edge it adds (new edge, new port, deny burst), or the scanning source.
    pub edge: EdgeRef,
    pub size: u32,
    pub rate: f64,
    /// Nodes involved (for precision: an alert about them, then, is explained).
    pub nodes: Vec<String>,
}

/// An alert as the harness sees it: with the interval it fired in.
#[derive(Debug, Clone)]
pub struct Fired {
    pub idx: u64,
    pub alert: Alert,
}

fn per_day(spec: &Spec) -> u64 {
    86_400 / spec.interval_secs.max(1)
}

/// Monday 2024-01-01 00:00 UTC: day 0 of every simulation.
const EPOCH_MS: u64 = 1_704_067_200_000;

fn settings(spec: &Spec, base: &Settings) -> Settings {
    Settings {
        interval_secs: spec.interval_secs,
        learning_secs: u64::from(spec.learning_days) * 86_400,
        ..base.clone()
    }
}

/// Picks when and where every injection happens, keeping injections on one edge
/// 12 hours apart and on one workload 1 hour apart.
fn schedule(spec: &Spec, topo: &Topology, rng: &mut Rng) -> Vec<Injected> {
    let pd = per_day(spec);
    let first = u64::from(spec.learning_days) * pd + pd / 12;
    let last = u64::from(spec.days) * pd - 60;
    let mut out: Vec<Injected> = Vec::new();
    let mut k = 0u32;
    // Round robin over the classes, so a crowded short run still has every class.
    let mut placed = [0usize; Class::ALL.len()];
    let mut tries = 0;
    let budget = spec.per_class * Class::ALL.len() * 200;
    while placed.iter().any(|p| *p < spec.per_class) && tries < budget && last > first {
        for (ci, class) in Class::ALL.into_iter().enumerate() {
            if placed[ci] >= spec.per_class {
                continue;
            }
            tries += 1;
            let start = first + rng.next_u64() % (last - first);
            let ti = rng.below(topo.edges.len());
            let p = &topo.edges[ti];
            let ms = EPOCH_MS + start * spec.interval_secs * 1000;
            let level = traffic::seasonal(p, ms).exp();
            let src = p.edge.src.clone();
            let peer = topo.workloads[rng.below(topo.workloads.len())].clone();
            k += 1;
            let (target, edge, size, rate, nodes) = match class {
                Class::Spike(_) => (Some(ti), p.edge.clone(), 0, 0.0, vec![]),
                Class::ConnSpike(_) => {
                    if p.connections_per_sec * level < 0.2 {
                        continue;
                    }
                    (Some(ti), p.edge.clone(), 0, 0.0, vec![])
                }
                Class::Silence => {
                    if p.bytes_per_sec / p.packet_size * level < 2.0 {
                        continue;
                    }
                    (Some(ti), p.edge.clone(), 0, 0.0, vec![])
                }
                Class::NewEdge => {
                    let e = EdgeRef::new(&src, &format!("n{k:04}"), 6, 8000);
                    (None, e, 0, rng.log_uniform(2e3, 2e5), vec![])
                }
                Class::NewPort => {
                    let e = EdgeRef::new(&src, &p.edge.dst, 6, 20_000 + (k % 40_000) as u16);
                    (None, e, 0, rng.log_uniform(2e3, 2e5), vec![])
                }
                Class::ScanPorts => {
                    if peer == src {
                        continue;
                    }
                    let n = 100 + rng.below(301) as u32;
                    (None, EdgeRef::new(&src, &peer, 6, 0), n, 0.0, vec![peer])
                }
                Class::ScanPeers => {
                    let n = 30 + rng.below(51) as u32;
                    (None, EdgeRef::new(&src, "world", 6, 22), n, 0.0, vec![])
                }
                Class::DenyBurst => {
                    if peer == src {
                        continue;
                    }
                    let e = EdgeRef::new(&src, &peer, 6, 81);
                    (None, e, 0, rng.uniform(2.0, 20.0), vec![peer])
                }
            };
            let mut nodes = nodes;
            nodes.push(edge.src.clone());
            if target.is_some() || matches!(class, Class::NewEdge | Class::NewPort) {
                nodes.push(edge.dst.clone());
            }
            let len = class.len();
            let clash = out.iter().any(|o| {
                let near = |gap: u64| start < o.start + o.len + gap && o.start < start + len + gap;
                (target.is_some() && o.target == target && near(pd / 2))
                    || (o.nodes.iter().any(|n| nodes.contains(n)) && near(pd / 24))
            });
            if clash {
                continue;
            }
            out.push(Injected {
                class,
                start,
                len,
                target,
                edge,
                size,
                rate,
                nodes,
            });
            placed[ci] += 1;
        }
    }
    out.sort_by_key(|i| i.start);
    out
}

/// The samples an injection adds in interval `idx` (`i` counts from its start).
fn extra(inj: &Injected, i: u64, secs: f64, rng: &mut Rng, out: &mut Vec<(EdgeRef, EdgeSample)>) {
    match inj.class {
        Class::NewEdge | Class::NewPort => {
            let packets = rng.poisson(inj.rate / 600.0 * secs).max(1);
            out.push((
                inj.edge.clone(),
                EdgeSample {
                    bytes: packets * 600,
                    packets,
                    connections: rng.poisson(0.2 * secs).max(u64::from(i == 0)),
                    ..EdgeSample::default()
                },
            ));
        }
        Class::ScanPorts | Class::ScanPeers => {
            let half = u64::from(inj.size).div_ceil(2);
            let lo = i * half;
            let hi = (lo + half).min(u64::from(inj.size));
            for t in lo..hi {
                let (dst, port, denied) = if inj.class == Class::ScanPorts {
                    (inj.edge.dst.clone(), 30_000 + t as u16, 2)
                } else {
                    (format!("world:198.18.{t}.0/24"), 22, 0)
                };
                out.push((
                    EdgeRef::new(&inj.edge.src, &dst, 6, port),
                    EdgeSample {
                        bytes: 180,
                        packets: 3,
                        connections: u64::from(denied == 0),
                        denied_packets: denied,
                        denied_connections: u64::from(denied > 0),
                    },
                ));
            }
        }
        Class::DenyBurst => {
            let d = rng.poisson(inj.rate * secs);
            out.push((
                inj.edge.clone(),
                EdgeSample {
                    bytes: d * 60,
                    packets: d,
                    connections: 0,
                    denied_packets: d,
                    denied_connections: d.div_ceil(3),
                },
            ));
        }
        _ => {}
    }
}

/// Runs one simulation (with or without injections) through the engine.
/// Runs one simulation. `realized[i]` gets, for a spike injection, the least
/// factor over the noise-free seasonal rate (the generator's baseline) that its
/// traffic had in its first 3 intervals (the injected factor times the noise).
fn simulate(spec: &Spec, base: &Settings, inject: &[Injected], realized: &mut [f64]) -> Vec<Fired> {
    let mut rng = Rng::new(spec.seed);
    let mut topo = Topology::new(&mut rng, spec.edges);
    // Injections use their own stream, so the background is identical in both runs.
    let mut irng = Rng::new(spec.seed.wrapping_mul(31).wrapping_add(17));
    let mut engine = Engine::new(&settings(spec, base));
    let secs = spec.interval_secs as f64;
    let n = u64::from(spec.days) * per_day(spec);
    let mut fired = Vec::new();
    let mut edges = Vec::with_capacity(topo.edges.len() + 16);
    for idx in 0..n {
        let ms = EPOCH_MS + idx * spec.interval_secs * 1000;
        let live: Vec<&Injected> = inject
            .iter()
            .filter(|i| idx >= i.start && idx < i.start + i.len)
            .collect();
        edges.clear();
        for (j, p) in topo.edges.iter_mut().enumerate() {
            let (mut volume, mut conns) = (1.0, 1.0);
            for i in live.iter().filter(|i| i.target == Some(j)) {
                match i.class {
                    Class::Spike(f) => volume = f,
                    Class::ConnSpike(f) => conns = f,
                    Class::Silence => volume = 0.0,
                    _ => {}
                }
            }
            let s = traffic::sample(&mut rng, p, ms, secs, volume, conns);
            for i in live
                .iter()
                .filter(|i| i.target == Some(j) && idx < i.start + 3)
            {
                if let Class::Spike(f) | Class::ConnSpike(f) = i.class
                    && let Some(k) = inject.iter().position(|x| std::ptr::eq(x, *i))
                {
                    realized[k] = realized[k].min(f * p.noise_factor());
                }
            }
            if s.active() {
                edges.push((p.edge.clone(), s));
            }
        }
        for i in &live {
            extra(i, idx - i.start, secs, &mut irng, &mut edges);
        }
        let iv = Interval {
            start_ms: ms,
            secs,
            edges: std::mem::take(&mut edges),
            addrs: Vec::new(),
        };
        for a in engine.observe(&iv) {
            if a.state == AlertState::Firing {
                fired.push(Fired { idx, alert: a });
            }
        }
        edges = iv.edges;
    }
    fired
}

/// Runs the clean and the injected simulations with the default detector settings
/// and scores them.
pub fn run(spec: &Spec) -> Report {
    run_with(spec, &Settings::default())
}

/// As [`run`], with other detector settings (interval and learning come from `spec`).
pub fn run_with(spec: &Spec, base: &Settings) -> Report {
    let mut rng = Rng::new(spec.seed);
    let topo = Topology::new(&mut rng, spec.edges);
    let mut srng = Rng::new(spec.seed ^ 0x5eed);
    let inject = schedule(spec, &topo, &mut srng);
    let clean = simulate(spec, base, &[], &mut []);
    let mut realized = vec![f64::INFINITY; inject.len()];
    let dirty = simulate(spec, base, &inject, &mut realized);
    score::score(
        spec,
        &inject,
        &clean,
        &dirty,
        &realized,
        u64::from(spec.learning_days) * per_day(spec),
    )
}

#[cfg(test)]
mod tests;
