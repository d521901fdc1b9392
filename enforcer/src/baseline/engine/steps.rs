//! The engine's rate triggers (spike, silence, deny burst) for edges and workloads,
//! eviction, and the turning of raises and resolutions into alert transitions.
use std::collections::{BTreeMap, HashSet};

use super::{
    Alert, AlertKind, AlertState, EdgeRef, EdgeSample, Engine, Raise, Severity, Step, Subject,
    WorkloadState, fmt_ms, fmt_rate, is_workload, rules,
};
use crate::baseline::{
    model::{Metric, RateModel},
    settings::Detectors,
};

impl Engine {
    /// Spike and silence triggers of one subject for one judged interval.
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site, all state of one step"
    )]
    pub(super) fn rate_steps(
        &mut self,
        s: &Subject<'_>,
        j: &rules::Judgement,
        d: &Detectors,
        t0: u64,
        t1: u64,
        raises: &mut Vec<Raise>,
        resolved: &mut Vec<(String, u64)>,
    ) {
        let what = match &s.edge {
            Some(_) => format!("edge {}", s.name),
            None => format!("workload {} (all its traffic)", s.workloads.join(",")),
        };
        let key = format!("spike|{}", s.name);
        let beyond = d.spike && j.spike.is_some();
        let elevated = j.elevated.filter(|_| d.spike).map(|x| (x.z, x.ratio()));
        match self.step_spike(&key, beyond, elevated, j.spike_calm, d, t0) {
            Step::Fire => {
                if let Some(x) = j.spike.or(j.elevated) {
                    let ratio = if x.expected > 0.0 {
                        x.observed / x.expected
                    } else {
                        f64::INFINITY
                    };
                    raises.push(Raise {
                        key: key.clone(),
                        kind: AlertKind::Spike,
                        severity: if ratio >= 10.0 {
                            Severity::Critical
                        } else {
                            Severity::Warning
                        },
                        summary: format!(
                            "spike on {what}: {} vs {} expected ({ratio:.1}x, z {:.1})",
                            fmt_rate(x.observed, x.metric.unit()),
                            fmt_rate(x.expected, x.metric.unit()),
                            x.z
                        ),
                        workloads: s.workloads.clone(),
                        edge: s.edge.clone(),
                        source: None,
                        metric: Some(x.metric),
                        unit: x.metric.unit().into(),
                        observed: x.observed,
                        expected: x.expected,
                        start_ms: self.onset(&key),
                    });
                }
            }
            Step::Clear => resolved.push((key.clone(), t1)),
            Step::Nothing => {}
        }
        if let (Some(x), Some(a)) = (j.spike.or(j.elevated), self.active.get_mut(&key))
            && a.metric == Some(x.metric)
        {
            a.observed = a.observed.max(x.observed);
        }
        let key = format!("silence|{}", s.name);
        let beyond = d.silence && j.silent;
        match self.step(
            &key,
            beyond,
            j.silence_calm,
            d.silence_intervals,
            d.clear_intervals,
            t0,
        ) {
            Step::Fire => raises.push(Raise {
                key: key.clone(),
                kind: AlertKind::Silence,
                severity: Severity::Warning,
                summary: format!(
                    "silence on {what}: {} where {} is usual",
                    fmt_rate(j.observed_pps, "packets/s"),
                    fmt_rate(j.expected_pps, "packets/s")
                ),
                workloads: s.workloads.clone(),
                edge: s.edge.clone(),
                source: None,
                metric: Some(Metric::Packets),
                unit: Metric::Packets.unit().into(),
                observed: j.observed_pps,
                expected: j.expected_pps,
                start_ms: self.onset(&key),
            }),
            Step::Clear => resolved.push((key, t1)),
            Step::Nothing => {}
        }
    }

    /// Per-workload totals (spike, silence) and denies (deny burst). Workload spikes
    /// and silences already explained by an edge alert of the same kind are not raised.
    #[expect(
        clippy::too_many_arguments,
        reason = "one call site, all state of one step"
    )]
    pub(super) fn workload_steps(
        &mut self,
        samples: &BTreeMap<&EdgeRef, EdgeSample>,
        touched: &HashSet<(AlertKind, String)>,
        learning: bool,
        t0: u64,
        t1: u64,
        raises: &mut Vec<Raise>,
        resolved: &mut Vec<(String, u64)>,
    ) {
        let d = self.judging();
        let secs = (t1 - t0) as f64 / 1000.0;
        let mut per: BTreeMap<&str, EdgeSample> = BTreeMap::new();
        let mut denied: BTreeMap<&str, u64> = BTreeMap::new();
        for (e, s) in samples {
            per.entry(e.src.as_str()).or_default().add(s);
            if e.dst != e.src {
                per.entry(e.dst.as_str()).or_default().add(s);
            }
            // A deny counts for the workload that tried (else the one it targeted).
            if s.denied_packets > 0 {
                let w = if is_workload(&e.src) { &e.src } else { &e.dst };
                *denied.entry(w.as_str()).or_default() += s.denied_packets;
            }
        }
        for w in per.keys().filter(|w| is_workload(w)) {
            if !self.workloads.contains_key(*w) {
                self.workloads.insert(
                    (*w).to_owned(),
                    WorkloadState {
                        model: RateModel::new(t0),
                        ..WorkloadState::default()
                    },
                );
            }
        }
        let p = self.p;
        let zero = EdgeSample::default();
        let mut judged = Vec::new();
        for (w, st) in &mut self.workloads {
            let s = per.get(w.as_str()).unwrap_or(&zero);
            if s.active() {
                st.last_seen_ms = t1;
            }
            let den = denied.get(w.as_str()).copied().unwrap_or(0);
            let fc = st.model.forecast(t0, secs, &p);
            let dj = rules::judge_deny(&st.deny, den, secs, &p, &d);
            let j = (!learning && d.workload_rates).then(|| rules::judge(&fc, s, &d));
            st.model
                .update(t0, rules::counts(s), s.packets > 0, &fc, &p);
            st.deny.update(
                Metric::Packets.y(den as f64, secs),
                &dj.expect,
                t0,
                &p,
                0,
                0,
            );
            judged.push((w.clone(), j, dj));
        }
        judged.sort_by(|a, b| a.0.cmp(&b.0));
        for (w, j, dj) in judged {
            let name = format!("workload|{w}");
            if let Some(mut j) = j {
                if touched.contains(&(AlertKind::Spike, w.clone())) {
                    j.spike = None;
                    j.elevated = None;
                }
                if touched.contains(&(AlertKind::Silence, w.clone())) {
                    j.silent = false;
                }
                let subject = Subject {
                    name: &name,
                    workloads: vec![w.clone()],
                    edge: None,
                };
                self.rate_steps(&subject, &j, &d, t0, t1, raises, resolved);
            }
            let key = format!("deny_burst|{w}");
            let beyond = d.deny_burst && !learning && dj.beyond;
            match self.step(
                &key,
                beyond,
                dj.calm,
                d.deny_intervals,
                d.clear_intervals,
                t0,
            ) {
                Step::Fire => raises.push(Raise {
                    key: key.clone(),
                    kind: AlertKind::DenyBurst,
                    severity: Severity::Warning,
                    summary: format!(
                        "deny burst for workload {w}: {} denied where {} is usual",
                        fmt_rate(dj.observed, "packets/s"),
                        fmt_rate(dj.expected, "packets/s")
                    ),
                    workloads: vec![w.clone()],
                    edge: None,
                    source: None,
                    metric: None,
                    unit: "denied packets/s".into(),
                    observed: dj.observed,
                    expected: dj.expected,
                    start_ms: self.onset(&key),
                }),
                Step::Clear => resolved.push((key.clone(), t1)),
                Step::Nothing => {}
            }
            if dj.beyond
                && let Some(a) = self.active.get_mut(&key)
            {
                a.observed = a.observed.max(dj.observed);
            }
        }
    }

    /// Forgets the `n` least recently active edges (at least 1% of the cap at once,
    /// so a flood does not sort the map on every new edge).
    pub(super) fn evict(&mut self, n: usize, t1: u64, resolved: &mut Vec<(String, u64)>) {
        let n = n.max(self.settings.max_edges / 100).min(self.edges.len());
        let mut by_age: Vec<(u64, EdgeRef)> = self
            .edges
            .iter()
            .map(|(e, s)| (s.last_seen_ms, e.clone()))
            .collect();
        by_age.sort();
        for (_, e) in by_age.into_iter().take(n) {
            self.edges.remove(&e);
            self.stats.edges_evicted += 1;
            for kind in ["spike", "silence"] {
                let key = format!("{kind}|{e}");
                if self.triggers.remove(&key).is_some_and(|t| t.firing) {
                    resolved.push((key, t1));
                }
            }
        }
    }

    /// Applies resolutions, then raises (ids in key order), and returns the
    /// transitions: resolved alerts first.
    pub(super) fn finish(
        &mut self,
        mut raises: Vec<Raise>,
        mut resolved: Vec<(String, u64)>,
        t1: u64,
    ) -> Vec<Alert> {
        resolved.sort();
        resolved.dedup_by(|a, b| a.0 == b.0);
        let mut out = Vec::new();
        for (key, end) in resolved {
            self.triggers.remove(&key);
            if let Some(mut a) = self.active.remove(&key) {
                a.state = AlertState::Resolved;
                a.end_ms = Some(end);
                a.end = Some(fmt_ms(end));
                out.push(a);
            }
        }
        raises.sort_by(|a, b| a.key.cmp(&b.key));
        raises.dedup_by(|a, b| a.key == b.key);
        for r in raises {
            if self.active.contains_key(&r.key) {
                continue;
            }
            let start_ms = if r.start_ms == 0 { t1 } else { r.start_ms };
            let a = Alert {
                id: self.next_id,
                key: r.key.clone(),
                kind: r.kind,
                severity: r.severity,
                state: AlertState::Firing,
                summary: r.summary,
                workloads: r.workloads,
                edge: r.edge,
                source: r.source,
                metric: r.metric,
                unit: r.unit,
                observed: r.observed,
                expected: r.expected,
                start: fmt_ms(start_ms),
                detected: fmt_ms(t1),
                end: None,
                start_ms,
                detected_ms: t1,
                end_ms: None,
            };
            self.next_id += 1;
            self.active.insert(r.key, a.clone());
            out.push(a);
        }
        out
    }

    /// Forgets everything learnt and resolves every firing alert: learning starts
    /// again with the next interval.
    pub fn reset(&mut self, now_ms: u64) -> Vec<Alert> {
        let keys: Vec<(String, u64)> = self.active.keys().map(|k| (k.clone(), now_ms)).collect();
        let out = self.finish(Vec::new(), keys, now_ms);
        let next_id = self.next_id;
        *self = Engine::new(&self.settings);
        self.next_id = next_id;
        out
    }
}
