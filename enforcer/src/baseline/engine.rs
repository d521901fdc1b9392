//! The detectors, together: [`Engine::observe`] takes one interval of per-edge
//! traffic and returns the alerts that fired or resolved in it. Pure and
//! deterministic (same intervals in, same alerts out): the agent, `enforcer baseline
//! replay` and the evaluation harness all call it.
use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::{
    EdgeRef, EdgeSample, Interval,
    alert::{Alert, AlertEdge, AlertKind, AlertState, Severity},
    fanout::Fanout,
    fmt_ms,
    model::{Params, RateModel, Series},
    obs::is_workload,
    rules::{self, Judgement, Step, Trigger, fmt_rate},
    settings::{Detectors, Settings},
};

/// An edge's baseline.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EdgeState {
    pub model: RateModel,
    pub last_seen_ms: u64,
    /// When its pair and service were last marked seen (hourly, not every interval).
    #[serde(default)]
    pub touched_ms: u64,
}

/// A workload's baseline: its total traffic and its denies.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkloadState {
    pub model: RateModel,
    pub deny: Series,
    pub last_seen_ms: u64,
}

/// Counters for `enforcer baseline status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineStats {
    pub intervals: u64,
    /// Edges forgotten because `maxEdges` was reached.
    pub edges_evicted: u64,
    /// New edges of a source under a fan-out alert: counted in that alert, not learnt.
    pub new_edges_suppressed: u64,
}

/// All detectors and their baselines.
#[derive(Debug)]
pub struct Engine {
    pub(crate) settings: Settings,
    pub(crate) p: Params,
    pub(crate) learning_started_ms: Option<u64>,
    pub(crate) edges: HashMap<EdgeRef, EdgeState>,
    /// (source, destination) pairs seen, normalised (`world` aggregated), and when.
    pub(crate) pairs: HashMap<(String, String), u64>,
    /// (source, destination, protocol, port) seen, normalised, and when.
    pub(crate) services: HashMap<Service, u64>,
    pub(crate) workloads: HashMap<String, WorkloadState>,
    pub(crate) fanout: Fanout,
    triggers: HashMap<String, Trigger>,
    active: BTreeMap<String, Alert>,
    next_id: u64,
    pub stats: EngineStats,
}

/// Memory of the baselines by part, bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    pub edges: usize,
    pub workloads: usize,
    /// Pairs, services, fan-out windows and peaks.
    pub other: usize,
}

/// An alert about to fire (ids are given in key order, for determinism).
struct Raise {
    key: String,
    kind: AlertKind,
    severity: Severity,
    summary: String,
    workloads: Vec<String>,
    edge: Option<AlertEdge>,
    source: Option<String>,
    metric: Option<super::model::Metric>,
    unit: String,
    observed: f64,
    expected: f64,
    start_ms: u64,
}

fn workloads_of(e: &EdgeRef) -> Vec<String> {
    let mut w: Vec<String> = [&e.src, &e.dst]
        .into_iter()
        .filter(|n| is_workload(n))
        .cloned()
        .collect();
    w.dedup();
    w
}

impl Engine {
    pub fn new(settings: &Settings) -> Self {
        Self {
            p: Params::new(&settings.detectors, settings.interval_secs as f64),
            settings: settings.clone(),
            learning_started_ms: None,
            edges: HashMap::new(),
            pairs: HashMap::new(),
            services: HashMap::new(),
            workloads: HashMap::new(),
            fanout: Fanout::default(),
            triggers: HashMap::new(),
            active: BTreeMap::new(),
            next_id: 1,
            stats: EngineStats::default(),
        }
    }

    fn d(&self) -> &Detectors {
        &self.settings.detectors
    }

    /// The detector settings an interval is judged with: an edge that has been seen
    /// since the start of learning is old enough to go silent, when learning is
    /// shorter than `silenceMinAgeSecs` (a lab with minutes of learning).
    fn judging(&self) -> Detectors {
        let mut d = self.settings.detectors.clone();
        d.silence_min_age_secs = d.silence_min_age_secs.min(self.settings.learning_secs);
        d
    }

    /// When learning ends (known once the first interval was seen).
    pub fn learning_ends_ms(&self) -> Option<u64> {
        self.learning_started_ms
            .map(|s| s + self.settings.learning_secs * 1000)
    }

    pub fn learning(&self, at_ms: u64) -> bool {
        self.learning_ends_ms().is_none_or(|end| at_ms < end)
    }

    pub fn firing(&self) -> impl Iterator<Item = &Alert> {
        self.active.values()
    }

    pub fn edge_count(&self) -> usize {
        self.edges.len()
    }

    pub fn workload_count(&self) -> usize {
        self.workloads.len()
    }

    /// Approximate memory held by the baselines, bytes.
    pub fn memory_bytes(&self) -> usize {
        let m = self.memory();
        m.edges + m.workloads + m.other
    }

    /// Approximate memory by part, bytes.
    pub fn memory(&self) -> Memory {
        let edge = std::mem::size_of::<(EdgeRef, EdgeState)>() + 16;
        let edges = self
            .edges
            .iter()
            .map(|(k, s)| edge + k.src.capacity() + k.dst.capacity() + s.model.heap_bytes())
            .sum();
        let workloads = self
            .workloads
            .iter()
            .map(|(k, s)| {
                std::mem::size_of::<(String, WorkloadState)>() + k.capacity() + s.model.heap_bytes()
            })
            .sum();
        let pairs: usize = self.pairs.keys().map(|(a, b)| 72 + a.len() + b.len()).sum();
        let services: usize = self
            .services
            .keys()
            .map(|(a, b, ..)| 80 + a.len() + b.len())
            .sum();
        Memory {
            edges,
            workloads,
            other: pairs + services + self.fanout.heap_bytes(),
        }
    }

    pub(crate) fn pair_node(&self, id: &str) -> String {
        if self.d().aggregate_world && id.starts_with("world:") {
            "world".into()
        } else {
            id.into()
        }
    }

    /// Learns one interval and returns the alerts that fired or resolved in it.
    pub fn observe(&mut self, iv: &Interval) -> Vec<Alert> {
        let (t0, t1, secs) = (iv.start_ms, iv.end_ms(), iv.secs.max(1e-3));
        self.stats.intervals += 1;
        let started = *self.learning_started_ms.get_or_insert(t0);
        let learning = t0 < started + self.settings.learning_secs * 1000;
        let mut samples: BTreeMap<&EdgeRef, EdgeSample> = BTreeMap::new();
        for (e, s) in &iv.edges {
            samples.entry(e).or_default().add(s);
        }
        let mut raises = Vec::new();
        let mut resolved = Vec::new();

        // (e) fan-out first: its sources' new edges are part of the scan.
        let mut addrs: HashMap<&EdgeRef, Vec<std::net::IpAddr>> = HashMap::new();
        for (e, a) in &iv.addrs {
            addrs.entry(e).or_default().push(*a);
        }
        let mut contacts: Vec<(&EdgeRef, Option<std::net::IpAddr>)> = Vec::new();
        for (e, _) in samples.iter().filter(|(_, s)| s.contacts()) {
            match addrs.get(*e) {
                Some(list) => contacts.extend(list.iter().map(|a| (*e, Some(*a)))),
                None => contacts.push((*e, None)),
            }
        }
        let d = self.judging();
        let fobs = self
            .fanout
            .observe(t1, secs, contacts.into_iter(), learning, &d);
        let mut scanning: HashSet<String> = HashSet::new();
        let mut seen_fan = HashSet::new();
        for o in &fobs {
            let key = format!("fan_out|{}", o.source);
            seen_fan.insert(key.clone());
            let beyond = o.beyond && d.fan_out && !learning;
            let step = self.step(&key, beyond, o.calm, 1, d.clear_intervals, t0);
            let (observed, expected, threshold, what) =
                if f64::from(o.targets) >= o.target_threshold {
                    (
                        o.targets,
                        o.peak_targets,
                        o.target_threshold,
                        "targets (peer, port)",
                    )
                } else {
                    (o.peers, o.peak_peers, o.peer_threshold, "peers")
                };
            match step {
                Step::Fire => raises.push(Raise {
                    key: key.clone(),
                    kind: AlertKind::FanOut,
                    severity: Severity::Critical,
                    summary: format!(
                        "{} reached {} distinct {what} in {} s (learnt peak {:.0}, threshold {:.0}): scan or fan-out",
                        o.source, observed, d.fanout_window_secs, expected, threshold
                    ),
                    workloads: [&o.source]
                        .into_iter()
                        .filter(|n| is_workload(n))
                        .cloned()
                        .collect(),
                    edge: None,
                    source: Some(o.source.clone()),
                    metric: None,
                    unit: "distinct targets".into(),
                    observed: f64::from(observed),
                    expected,
                    start_ms: self.onset(&key),
                }),
                Step::Clear => resolved.push((key.clone(), t1)),
                Step::Nothing => {}
            }
            if self.triggers.get(&key).is_some_and(|t| t.firing) || step == Step::Fire {
                scanning.insert(o.source.clone());
                if let Some(a) = self.active.get_mut(&key) {
                    a.observed = a.observed.max(f64::from(observed));
                }
            }
        }
        let stale: Vec<String> = self
            .triggers
            .keys()
            .filter(|k| k.starts_with("fan_out|") && !seen_fan.contains(*k))
            .cloned()
            .collect();
        for key in stale {
            if self.step(&key, false, true, 1, d.clear_intervals, t0) == Step::Clear {
                resolved.push((key, t1));
            }
        }

        // (a), (b) new edges and new ports.
        let fresh = self.new_edges(&samples, &scanning, learning, t0, t1, &mut raises);
        if self.edges.len() + fresh.len() > self.settings.max_edges {
            let n = self.edges.len() + fresh.len() - self.settings.max_edges;
            self.evict(n, t1, &mut resolved);
        }
        for e in fresh {
            self.edges.insert(
                e,
                EdgeState {
                    model: RateModel::new(t0),
                    last_seen_ms: t1,
                    touched_ms: t1,
                },
            );
        }

        // (c), (d) spikes and silences per edge; then per workload.
        let zero = EdgeSample::default();
        let mut edge_steps: Vec<(String, Judgement, EdgeRef)> = Vec::new();
        let p = self.p;
        let pending: HashSet<&str> = self
            .triggers
            .keys()
            .filter_map(|k| k.strip_prefix("spike|").or(k.strip_prefix("silence|")))
            .collect();
        for (e, st) in &mut self.edges {
            let s = samples.get(e).unwrap_or(&zero);
            if s.active() {
                st.last_seen_ms = t1;
            }
            let fc = st.model.forecast(t0, secs, &p);
            if !learning {
                let j = rules::judge(&fc, s, &d);
                if j.spike.is_some()
                    || j.elevated.is_some()
                    || j.silent
                    || (!pending.is_empty() && pending.contains(e.to_string().as_str()))
                {
                    edge_steps.push((e.to_string(), j, e.clone()));
                }
            }
            // An idle run under a firing silence is not learnt (for a day at most).
            if s.packets == 0 && !pending.is_empty() {
                let name = e.to_string();
                if pending.contains(name.as_str())
                    && self
                        .triggers
                        .get(&format!("silence|{name}"))
                        .is_some_and(|t| t.firing && t0 < t.onset_ms + 86_400_000)
                {
                    st.model.forgive_idle();
                }
            }
            st.model
                .update(t0, rules::counts(s), s.packets > 0, &fc, &p);
        }
        edge_steps.sort_by(|a, b| a.0.cmp(&b.0));
        let mut touched: HashSet<(AlertKind, String)> = HashSet::new();
        for (name, j, e) in edge_steps {
            let subject = Subject {
                name: &name,
                workloads: workloads_of(&e),
                edge: Some(AlertEdge::from(&e)),
            };
            self.rate_steps(&subject, &j, &d, t0, t1, &mut raises, &mut resolved);
        }
        for r in &raises {
            if matches!(r.kind, AlertKind::Spike | AlertKind::Silence) && r.edge.is_some() {
                for w in &r.workloads {
                    touched.insert((r.kind, w.clone()));
                }
            }
        }
        for a in self.active.values() {
            if matches!(a.kind, AlertKind::Spike | AlertKind::Silence) && a.edge.is_some() {
                for w in &a.workloads {
                    touched.insert((a.kind, w.clone()));
                }
            }
        }
        self.workload_steps(
            &samples,
            &touched,
            learning,
            t0,
            t1,
            &mut raises,
            &mut resolved,
        );

        // Housekeeping: retention, event alerts past their hold time.
        let retain_after = t1.saturating_sub(self.settings.edge_retention_secs * 1000);
        let mut gone = Vec::new();
        self.edges.retain(|e, s| {
            let keep = s.last_seen_ms >= retain_after;
            if !keep {
                gone.push(e.to_string());
            }
            keep
        });
        self.workloads.retain(|w, s| {
            let keep = s.last_seen_ms >= retain_after;
            if !keep {
                gone.push(format!("workload|{w}"));
            }
            keep
        });
        self.pairs.retain(|_, t| *t >= retain_after);
        self.services.retain(|_, t| *t >= retain_after);
        let cap = 4 * self.settings.max_edges;
        prune_oldest(&mut self.pairs, cap);
        prune_oldest(&mut self.services, cap);
        for name in gone {
            for kind in ["spike", "silence"] {
                let key = format!("{kind}|{name}");
                if self.triggers.remove(&key).is_some_and(|t| t.firing) {
                    resolved.push((key, t1));
                }
            }
        }
        let hold = d.event_hold_secs * 1000;
        for a in self.active.values() {
            if matches!(a.kind, AlertKind::NewEdge | AlertKind::NewPort)
                && a.detected_ms + hold <= t1
            {
                resolved.push((a.key.clone(), t1));
            }
        }
        self.triggers.retain(|_, t| !t.idle());
        self.finish(raises, resolved, t1)
    }

    fn onset(&self, key: &str) -> u64 {
        self.triggers.get(key).map_or(0, |t| t.onset_ms)
    }

    fn step(&mut self, key: &str, beyond: bool, calm: bool, k: u32, m: u32, t0: u64) -> Step {
        if !beyond && !self.triggers.contains_key(key) {
            return Step::Nothing;
        }
        let t = self.triggers.entry(key.to_owned()).or_default();
        t.step(beyond, calm, k, m, t0)
    }

    /// As [`Engine::step`], for spikes ([`Trigger::step_spike`]).
    fn step_spike(
        &mut self,
        key: &str,
        beyond: bool,
        elevated: Option<(f64, f64)>,
        calm: bool,
        d: &Detectors,
        t0: u64,
    ) -> Step {
        if elevated.is_none() && !self.triggers.contains_key(key) {
            return Step::Nothing;
        }
        let t = self.triggers.entry(key.to_owned()).or_default();
        t.step_spike(
            beyond,
            elevated,
            calm,
            d.spike_intervals,
            d.clear_intervals,
            (d.spike_z, d.spike_min_ratio),
            t0,
        )
    }
}

/// A normalised (source, destination, protocol, port).
pub(crate) type Service = (String, String, u8, u16);

/// Keeps the `cap` most recently seen entries.
fn prune_oldest<K: Clone + std::hash::Hash + Eq>(m: &mut HashMap<K, u64>, cap: usize) {
    if m.len() <= cap {
        return;
    }
    let mut ages: Vec<u64> = m.values().copied().collect();
    ages.sort_unstable();
    let cut = ages[m.len() - cap];
    m.retain(|_, t| *t >= cut);
}

/// What a rate alert is about.
pub(crate) struct Subject<'a> {
    pub name: &'a str,
    pub workloads: Vec<String>,
    pub edge: Option<AlertEdge>,
}

mod events;
mod steps;

#[cfg(test)]
mod tests;
