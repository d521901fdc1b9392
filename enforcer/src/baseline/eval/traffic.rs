//! Deterministic synthetic traffic: a topology of workloads and edges with diurnal
//! and weekly seasonality, autocorrelated multiplicative noise and counting
//! (Poisson) noise, plus labelled anomalies injected at random times.
use super::super::{EdgeRef, EdgeSample};

/// SplitMix64: small, fast, and the same numbers on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.f64()
    }

    /// Log-uniform in [lo, hi).
    pub fn log_uniform(&mut self, lo: f64, hi: f64) -> f64 {
        self.uniform(lo.ln(), hi.ln()).exp()
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.f64().max(1e-300);
        let v = self.f64();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// Poisson: exact below 30, normal approximation above.
    pub fn poisson(&mut self, lambda: f64) -> u64 {
        if lambda <= 0.0 {
            return 0;
        }
        if lambda < 30.0 {
            let l = (-lambda).exp();
            let (mut k, mut p) = (0u64, 1.0);
            loop {
                p *= self.f64();
                if p <= l {
                    return k;
                }
                k += 1;
            }
        }
        (lambda + lambda.sqrt() * self.normal()).round().max(0.0) as u64
    }
}

/// One background edge and how its traffic behaves.
#[derive(Debug, Clone)]
pub struct EdgeProfile {
    pub edge: EdgeRef,
    /// Mean bytes/s at the daily mean level.
    pub bytes_per_sec: f64,
    pub packet_size: f64,
    pub connections_per_sec: f64,
    /// Diurnal amplitude (log units) and hour of the daily peak (UTC).
    pub amplitude: f64,
    pub peak_hour: f64,
    /// Weekend level (log units, ≤ 0).
    pub weekend: f64,
    /// Noise σ (log units) and its lag-1 autocorrelation.
    pub sigma: f64,
    pub phi: f64,
    /// Background denied packets/s (mostly 0).
    pub denied_per_sec: f64,
    noise: f64,
}

/// The synthetic network.
#[derive(Debug, Clone)]
pub struct Topology {
    pub workloads: Vec<String>,
    pub edges: Vec<EdgeProfile>,
}

const PORTS: [u16; 8] = [80, 443, 5432, 6379, 8080, 9090, 3306, 11211];

impl Topology {
    /// `edges` background edges among `edges / 4` (at least 4) workloads, one in ten
    /// to the outside world; a few workloads also have a trickle of denies.
    pub fn new(rng: &mut Rng, edges: usize) -> Self {
        let nw = (edges / 4).max(4);
        let workloads: Vec<String> = (0..nw).map(|i| format!("w{i:03}")).collect();
        let mut out: Vec<EdgeProfile> = Vec::new();
        let mut used = std::collections::HashSet::new();
        while out.len() < edges {
            let src = rng.below(nw);
            let world = rng.f64() < 0.1;
            let dst = if world {
                format!("world:203.0.{}.0/24", rng.below(4))
            } else {
                let d = rng.below(nw);
                if d == src {
                    continue;
                }
                workloads[d].clone()
            };
            let port = PORTS[rng.below(PORTS.len())];
            let edge = EdgeRef::new(&workloads[src], &dst, 6, port);
            if !used.insert(edge.clone()) {
                continue;
            }
            let deny = rng.f64() < 0.05;
            out.push(EdgeProfile {
                edge,
                bytes_per_sec: rng.log_uniform(2e3, 5e6),
                packet_size: rng.uniform(200.0, 1400.0),
                connections_per_sec: rng.log_uniform(0.02, 5.0),
                amplitude: rng.uniform(0.2, 1.0),
                peak_hour: 14.0 + rng.uniform(-3.0, 3.0),
                weekend: rng.uniform(0.3, 1.0).ln(),
                sigma: rng.uniform(0.05, 0.25),
                phi: 0.5,
                denied_per_sec: if deny {
                    rng.log_uniform(0.002, 0.05)
                } else {
                    0.0
                },
                noise: 0.0,
            });
        }
        Self {
            workloads,
            edges: out,
        }
    }
}

/// Seasonal level (log units) of an edge at a Unix time in ms.
pub fn seasonal(p: &EdgeProfile, ms: u64) -> f64 {
    let hours = ms as f64 / 3_600_000.0;
    let hod = hours % 24.0;
    let day = super::super::model::hour_of_week(ms) / 24; // 0 = Monday
    let weekend = if day >= 5 { p.weekend } else { 0.0 };
    p.amplitude * ((hod - p.peak_hour) / 24.0 * std::f64::consts::TAU).cos() + weekend
}

/// One interval of a background edge: `volume` and `conns` multiply the normal
/// volume and connection rate (1.0: normal; 0.0: silent).
impl EdgeProfile {
    /// The rate's current noise factor: the rate is the noise-free seasonal rate
    /// times this (times an injection's factor).
    pub fn noise_factor(&self) -> f64 {
        self.noise.exp()
    }
}

pub fn sample(
    rng: &mut Rng,
    p: &mut EdgeProfile,
    ms: u64,
    secs: f64,
    volume: f64,
    conns: f64,
) -> EdgeSample {
    p.noise = p.phi * p.noise + (1.0 - p.phi * p.phi).sqrt() * p.sigma * rng.normal();
    let level = (seasonal(p, ms) + p.noise).exp();
    let packets = rng.poisson(p.bytes_per_sec / p.packet_size * level * secs * volume);
    let bytes = (packets as f64 * p.packet_size * (1.0 + 0.02 * rng.normal())).max(0.0) as u64;
    let connections = rng.poisson(p.connections_per_sec * level * secs * conns * volume.min(1.0));
    let denied = rng.poisson(p.denied_per_sec * secs);
    EdgeSample {
        bytes,
        packets: packets + denied,
        connections,
        denied_packets: denied,
        denied_connections: denied.min(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_roughly_right() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        assert_eq!(a.next_u64(), b.next_u64());
        let n = 20_000;
        let mean: f64 = (0..n).map(|_| a.normal()).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.05, "{mean}");
        let pm: f64 = (0..n).map(|_| a.poisson(4.0) as f64).sum::<f64>() / n as f64;
        assert!((pm - 4.0).abs() < 0.1, "{pm}");
        let big: f64 = (0..n).map(|_| a.poisson(400.0) as f64).sum::<f64>() / n as f64;
        assert!((big - 400.0).abs() < 1.0, "{big}");
    }

    #[test]
    fn topology_has_distinct_edges() {
        let mut r = Rng::new(1);
        let t = Topology::new(&mut r, 40);
        assert_eq!(t.edges.len(), 40);
        let set: std::collections::HashSet<_> = t.edges.iter().map(|e| &e.edge).collect();
        assert_eq!(set.len(), 40);
    }
}
