//! Fan-out and scan detection: per source node, the distinct targets (peer,
//! protocol, port) and distinct peers it opened flows to (or was denied) over a
//! sliding window, in bounded sets; compared with the source's own learned peak, so a
//! scraper that always reaches 200 pods is normal and a client that suddenly reaches
//! 200 ports is not.
use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    net::IpAddr,
};

use serde::{Deserialize, Serialize};

use super::{EdgeRef, settings::Detectors};

/// Distinct targets (and peers) remembered per source; a scan past it saturates.
pub const MAX_TARGETS: usize = 4096;
/// Sources watched at once, and learned peaks kept.
pub const MAX_SOURCES: usize = 8192;
/// Time constant of the learned peak's decay.
const PEAK_MEMORY_MS: f64 = 86_400_000.0;

/// The learned peak of one source (persisted).
///
/// After learning, the counts of a window join the peak only once a whole window
/// has passed since they were seen (the largest not beyond the threshold, kept in
/// `pending_*`). Learnt at once, a slow scan, whose window grows interval by
/// interval, taught the peak its own size as it went and never reached 3 × it (a
/// 10-minute scan of 300 ports at 30 a minute, or of 40 peers at 3 a second, was
/// never raised). Now it has a whole window to reach the threshold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Peak {
    pub targets: f32,
    pub peers: f32,
    pub last_ms: u64,
    #[serde(default)]
    pub pending_targets: f32,
    #[serde(default)]
    pub pending_peers: f32,
    /// When the pending counts started to be gathered.
    #[serde(default)]
    pub pending_since_ms: u64,
}

impl Peak {
    /// Learns one interval's window counts (`beyond`: over the threshold).
    fn learn(&mut self, targets: u32, peers: u32, beyond: bool, now: Now) {
        self.targets *= now.decay;
        self.peers *= now.decay;
        if now.learning {
            self.targets = self.targets.max(targets as f32);
            self.peers = self.peers.max(peers as f32);
        } else if !beyond {
            self.pending_targets = self.pending_targets.max(targets as f32);
            self.pending_peers = self.pending_peers.max(peers as f32);
        }
        if now.end_ms.saturating_sub(self.pending_since_ms) >= now.window_ms {
            self.targets = self.targets.max(self.pending_targets);
            self.peers = self.peers.max(self.pending_peers);
            self.pending_targets = 0.0;
            self.pending_peers = 0.0;
            self.pending_since_ms = now.end_ms;
        }
        self.last_ms = now.end_ms;
    }
}

/// The interval a peak learns from.
#[derive(Debug, Clone, Copy)]
struct Now {
    end_ms: u64,
    window_ms: u64,
    decay: f32,
    learning: bool,
}

#[derive(Debug, Default)]
struct Window {
    targets: HashMap<u64, u64>,
    peers: HashMap<u64, u64>,
}

/// One source's window after an interval.
#[derive(Debug, Clone, PartialEq)]
pub struct FanoutObs {
    pub source: String,
    pub targets: u32,
    pub peers: u32,
    pub target_threshold: f64,
    pub peer_threshold: f64,
    /// The source's learnt peaks (before this interval).
    pub peak_targets: f64,
    pub peak_peers: f64,
    /// Over either threshold.
    pub beyond: bool,
    /// Below half of both thresholds (hysteresis).
    pub calm: bool,
}

/// All sources.
#[derive(Debug, Default)]
pub struct Fanout {
    windows: HashMap<String, Window>,
    pub peaks: HashMap<String, Peak>,
    /// Sources not watched because `MAX_SOURCES` were.
    pub sources_dropped: u64,
}

fn hash(v: impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

impl Fanout {
    /// Adds one interval's contacts (edges with new or denied flows) and returns the
    /// state of every source with a non-empty window. Peaks learn from intervals that
    /// are not beyond the threshold (always while `learning`).
    pub fn observe<'a>(
        &mut self,
        end_ms: u64,
        secs: f64,
        contacts: impl Iterator<Item = (&'a EdgeRef, Option<IpAddr>)>,
        learning: bool,
        d: &Detectors,
    ) -> Vec<FanoutObs> {
        for (e, addr) in contacts {
            if !self.windows.contains_key(&e.src) && self.windows.len() >= MAX_SOURCES {
                self.sources_dropped += 1;
                continue;
            }
            let w = self.windows.entry(e.src.clone()).or_default();
            let t = hash((&e.dst, addr, e.proto, e.port));
            if w.targets.len() < MAX_TARGETS || w.targets.contains_key(&t) {
                w.targets.insert(t, end_ms);
            }
            let p = hash((&e.dst, addr));
            if w.peers.len() < MAX_TARGETS || w.peers.contains_key(&p) {
                w.peers.insert(p, end_ms);
            }
        }
        let cutoff = end_ms.saturating_sub(d.fanout_window_secs.saturating_mul(1000));
        let decay = (-(secs * 1000.0) / PEAK_MEMORY_MS).exp();
        let mut out = Vec::new();
        self.windows.retain(|src, w| {
            w.targets.retain(|_, t| *t > cutoff);
            w.peers.retain(|_, t| *t > cutoff);
            if w.targets.is_empty() {
                return false;
            }
            let (nt, np) = (w.targets.len() as u32, w.peers.len() as u32);
            let peak = self.peaks.get(src).copied().unwrap_or_default();
            let tt = f64::from(d.fanout_min_targets).max(d.fanout_ratio * f64::from(peak.targets));
            let tp = f64::from(d.fanout_min_peers).max(d.fanout_ratio * f64::from(peak.peers));
            let beyond = f64::from(nt) >= tt || f64::from(np) >= tp;
            let now = Now {
                end_ms,
                window_ms: d.fanout_window_secs.saturating_mul(1000),
                decay: decay as f32,
                learning,
            };
            self.peaks
                .entry(src.clone())
                .or_insert_with(|| Peak {
                    pending_since_ms: end_ms,
                    ..Peak::default()
                })
                .learn(nt, np, beyond, now);
            out.push(FanoutObs {
                source: src.clone(),
                targets: nt,
                peers: np,
                target_threshold: tt,
                peer_threshold: tp,
                peak_targets: f64::from(peak.targets),
                peak_peers: f64::from(peak.peers),
                beyond,
                calm: f64::from(nt) < tt / 2.0 && f64::from(np) < tp / 2.0,
            });
            true
        });
        if self.peaks.len() > MAX_SOURCES {
            let mut by_age: Vec<(u64, String)> = self
                .peaks
                .iter()
                .map(|(k, p)| (p.last_ms, k.clone()))
                .collect();
            by_age.sort();
            for (_, k) in by_age.iter().take(self.peaks.len() - MAX_SOURCES) {
                self.peaks.remove(k);
            }
        }
        out.sort_by(|a, b| a.source.cmp(&b.source));
        out
    }

    /// Sources with a live window.
    pub fn watched(&self) -> usize {
        self.windows.len()
    }

    pub fn heap_bytes(&self) -> usize {
        self.windows
            .values()
            .map(|w| 16 * (w.targets.capacity() + w.peers.capacity()))
            .sum::<usize>()
            + self.peaks.capacity() * 64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_scan_is_beyond_and_a_learnt_scraper_is_not() {
        let d = Detectors::default();
        let mut f = Fanout::default();
        // While learning, "scraper" reaches 100 peers every minute.
        let scrape: Vec<EdgeRef> = (0..100)
            .map(|i| EdgeRef::new("scraper", &format!("pod{i}"), 6, 9090))
            .collect();
        for i in 0..10u64 {
            f.observe(i * 60_000, 60.0, scrape.iter().map(|e| (e, None)), true, &d);
        }
        let obs = f.observe(
            11 * 60_000,
            60.0,
            scrape.iter().map(|e| (e, None)),
            false,
            &d,
        );
        assert!(!obs[0].beyond, "{obs:?}");
        // "client" suddenly hits 300 ports of one peer.
        let scan: Vec<EdgeRef> = (1..=300)
            .map(|p| EdgeRef::new("client", "web", 6, p))
            .collect();
        let obs = f.observe(12 * 60_000, 60.0, scan.iter().map(|e| (e, None)), false, &d);
        let c = obs.iter().find(|o| o.source == "client").expect("client");
        assert!(c.beyond && c.targets == 300 && c.peers == 1);
        // The window (5 minutes) slides: later it is empty and forgotten.
        let obs = f.observe(18 * 60_000, 60.0, std::iter::empty(), false, &d);
        assert!(obs.is_empty());
        assert_eq!(f.watched(), 0);
        assert!(f.peaks["scraper"].peers >= 99.0);
    }

    #[test]
    fn a_slow_scan_does_not_teach_the_peak_its_own_size() {
        let d = Detectors::default();
        let mut f = Fanout::default();
        // While learning, "client" reaches 5 ports of "web" every minute.
        let usual: Vec<EdgeRef> = (1..=5)
            .map(|p| EdgeRef::new("client", "web", 6, p))
            .collect();
        for i in 0..60u64 {
            f.observe(i * 60_000, 60.0, usual.iter().map(|e| (e, None)), true, &d);
        }
        // Then 30 new ports a minute: the 5-minute window grows 35, 65, ...; it
        // is beyond the threshold (50) in the second minute.
        let mut fired = None;
        for (m, i) in (60..70u64).enumerate() {
            let scan: Vec<EdgeRef> = (0..30)
                .map(|k| EdgeRef::new("client", "db", 6, 1000 + 30 * m as u16 + k))
                .chain(usual.iter().cloned())
                .collect();
            let obs = f.observe(i * 60_000, 60.0, scan.iter().map(|e| (e, None)), false, &d);
            if obs[0].beyond && fired.is_none() {
                fired = Some(m);
            }
        }
        assert_eq!(fired, Some(1));
        // A source that lastingly reaches twice its peak learns it a window later,
        // without firing.
        let mut g = Fanout::default();
        let peers = |n: usize| -> Vec<EdgeRef> {
            (0..n)
                .map(|i| EdgeRef::new("scraper", &format!("pod{i}"), 6, 9090))
                .collect()
        };
        for i in 0..60u64 {
            g.observe(
                i * 60_000,
                60.0,
                peers(40).iter().map(|e| (e, None)),
                true,
                &d,
            );
        }
        let twice = peers(80);
        for i in 60..80u64 {
            let obs = g.observe(i * 60_000, 60.0, twice.iter().map(|e| (e, None)), false, &d);
            assert!(!obs[0].beyond, "minute {i}: {obs:?}");
        }
        assert!(g.peaks["scraper"].peers > 79.0, "{:?}", g.peaks["scraper"]);
        // Three peers a second at 1 s intervals, from a source that usually
        // reaches 2 (20 peers fire: in the sixth second).
        let mut h = Fanout::default();
        let usual: Vec<EdgeRef> = (0..2)
            .map(|i| EdgeRef::new("batch", &format!("svc{i}"), 6, 80))
            .collect();
        for i in 0..60u64 {
            h.observe(i * 1000, 1.0, usual.iter().map(|e| (e, None)), true, &d);
        }
        let mut fired = None;
        for s in 0..30u64 {
            let sweep: Vec<EdgeRef> = (0..3)
                .map(|k| EdgeRef::new("batch", &format!("10.0.0.{}", 3 * s + k), 6, 22))
                .collect();
            let obs = h.observe(
                (60 + s) * 1000,
                1.0,
                sweep.iter().map(|e| (e, None)),
                false,
                &d,
            );
            if obs[0].beyond && fired.is_none() {
                fired = Some(s);
            }
        }
        assert_eq!(fired, Some(5));
    }
}
