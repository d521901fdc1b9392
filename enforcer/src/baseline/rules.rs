//! The per-interval judgements (is this interval beyond the spike, silence or deny
//! threshold? calm enough to clear?) and the k-of-k / hysteresis trigger that turns
//! them into fire and clear transitions.
use super::{
    EdgeSample,
    model::{Expect, Forecast, Metric, Params, Series},
    settings::Detectors,
};

/// k consecutive intervals beyond the threshold fire; `m` consecutive calm
/// intervals clear. Intervals neither beyond nor calm keep a firing alert firing.
/// With [`Trigger::step_run`] (spikes) the same hysteresis holds before firing: k
/// intervals beyond the threshold within one run of intervals none of which is calm
/// fire, so an interval that dips between the two thresholds neither counts nor
/// restarts the run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trigger {
    /// Intervals beyond the threshold in the current run.
    over: u32,
    calm: u32,
    /// Start of the first interval beyond the threshold of the current run.
    pub onset_ms: u64,
    pub firing: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Nothing,
    Fire,
    Clear,
}

impl Trigger {
    /// One interval: k consecutive intervals beyond fire.
    pub fn step(&mut self, beyond: bool, calm: bool, k: u32, m: u32, start_ms: u64) -> Step {
        self.advance(beyond, calm, k, m, start_ms, false)
    }

    /// One interval: k intervals beyond within a run of intervals not calm fire.
    pub fn step_run(&mut self, beyond: bool, calm: bool, k: u32, m: u32, start_ms: u64) -> Step {
        self.advance(beyond, calm, k, m, start_ms, true)
    }

    fn advance(
        &mut self,
        beyond: bool,
        calm: bool,
        k: u32,
        m: u32,
        start_ms: u64,
        hold: bool,
    ) -> Step {
        if self.firing {
            if calm {
                self.calm += 1;
                if self.calm >= m {
                    *self = Trigger::default();
                    return Step::Clear;
                }
            } else {
                self.calm = 0;
            }
            return Step::Nothing;
        }
        if beyond {
            if self.over == 0 {
                self.onset_ms = start_ms;
            }
            self.over += 1;
            if self.over >= k {
                self.firing = true;
                self.calm = 0;
                return Step::Fire;
            }
        } else if calm || !hold {
            self.over = 0;
        }
        Step::Nothing
    }

    /// Nothing pending: the trigger can be dropped.
    pub fn idle(&self) -> bool {
        !self.firing && self.over == 0
    }
}

/// The worst metric of a spiking interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Excess {
    pub metric: Metric,
    pub z: f64,
    pub observed: f64,
    pub expected: f64,
}

/// One interval of one subject, judged.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Judgement {
    pub spike: Option<Excess>,
    pub spike_calm: bool,
    pub silent: bool,
    pub silence_calm: bool,
    /// Expected packets/s while active, and observed (for silence alerts).
    pub expected_pps: f64,
    pub observed_pps: f64,
}

fn min_excess(d: &Detectors, m: Metric) -> f64 {
    match m {
        Metric::Bytes => d.min_excess_bytes_per_sec,
        Metric::Packets => d.min_excess_packets_per_sec,
        Metric::Connections => d.min_excess_connections_per_sec,
    }
}

/// The counts of a sample, per metric.
pub fn counts(s: &EdgeSample) -> [f64; 3] {
    [s.bytes as f64, s.packets as f64, s.connections as f64]
}

/// Judges one interval against a forecast. A subject with fewer than `min_samples`
/// active intervals is never beyond and always calm.
pub fn judge(fc: &Forecast, s: &EdgeSample, d: &Detectors) -> Judgement {
    let mut j = Judgement {
        spike_calm: true,
        silence_calm: true,
        ..Judgement::default()
    };
    if fc.samples < d.min_samples {
        return j;
    }
    let secs = fc.secs;
    let c = counts(s);
    let active = s.packets > 0;
    if active {
        for m in Metric::ALL {
            let count = c[m.index()];
            let z = fc.z(m, count);
            let observed = count / secs;
            let expected = fc.rate(m);
            let excess = observed - expected;
            let floor = min_excess(d, m);
            if z >= d.spike_z
                && observed >= d.spike_min_ratio * expected
                && excess >= floor
                && j.spike.is_none_or(|e| z > e.z)
            {
                j.spike = Some(Excess {
                    metric: m,
                    z,
                    observed,
                    expected,
                });
            }
            let still = z >= d.clear_z
                && observed >= (d.spike_min_ratio / 2.0).max(1.0) * expected
                && excess >= floor;
            if still {
                j.spike_calm = false;
            }
        }
    }
    let pps = fc.rate(Metric::Packets);
    j.expected_pps = pps;
    j.observed_pps = s.packets as f64 / secs;
    let expected_count = pps * secs;
    let busy = fc.activity >= 0.99
        && pps >= d.silence_min_packets_per_sec
        && expected_count >= 10.0
        && fc.age_ms >= d.silence_min_age_secs.saturating_mul(1000);
    let packets = s.packets as f64;
    j.silent = busy && packets <= d.silence_fraction * expected_count;
    // Traffic is back, or the edge is no longer normally busy (it has been learnt).
    j.silence_calm = packets > d.silence_fraction * expected_count || fc.activity < 0.5;
    j
}

/// A workload's denied packets over one interval, judged against its deny series.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DenyJudgement {
    pub beyond: bool,
    pub calm: bool,
    pub observed: f64,
    pub expected: f64,
    pub expect: Expect,
}

/// Deny rates are not seasonal: the series' level and deviation only.
pub fn judge_deny(
    series: &Series,
    denied: u64,
    secs: f64,
    p: &Params,
    d: &Detectors,
) -> DenyJudgement {
    let m = Metric::Packets;
    let mut ex = series.expect(0, 0, p);
    let lambda = ex.y.exp() * secs - 1.0;
    ex.sigma = ex.sigma.max(1.0 / (lambda.max(0.0) + 1.0).sqrt());
    let observed = denied as f64 / secs;
    let expected = m.rate(ex.y, secs);
    let z = (m.y(denied as f64, secs) - ex.y) / ex.sigma;
    let warm = series.n >= d.min_samples;
    DenyJudgement {
        beyond: warm
            && z >= d.spike_z
            && observed >= d.deny_min_per_sec
            && observed >= d.deny_min_ratio * expected,
        calm: observed < d.deny_min_per_sec / 2.0 || z < d.clear_z,
        observed,
        expected,
        expect: ex,
    }
}

/// A rate for humans: `12.3 k`, `4.5 M`.
pub fn fmt_rate(v: f64, unit: &str) -> String {
    let (x, p) = if v >= 1e9 {
        (v / 1e9, "G")
    } else if v >= 1e6 {
        (v / 1e6, "M")
    } else if v >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    format!("{x:.3} {p}{unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trigger_needs_k_and_clears_with_hysteresis() {
        let mut t = Trigger::default();
        assert_eq!(t.step(true, false, 2, 3, 10), Step::Nothing);
        assert_eq!(t.step(false, false, 2, 3, 20), Step::Nothing);
        assert_eq!(t.step(true, false, 2, 3, 30), Step::Nothing);
        assert_eq!(t.step(true, false, 2, 3, 40), Step::Fire);
        assert_eq!(t.onset_ms, 30);
        // Between thresholds: keeps firing, resets the calm count.
        assert_eq!(t.step(false, true, 2, 3, 50), Step::Nothing);
        assert_eq!(t.step(false, false, 2, 3, 60), Step::Nothing);
        assert_eq!(t.step(false, true, 2, 3, 70), Step::Nothing);
        assert_eq!(t.step(false, true, 2, 3, 80), Step::Nothing);
        assert_eq!(t.step(false, true, 2, 3, 90), Step::Clear);
        assert!(t.idle());
    }

    #[test]
    fn a_dip_between_thresholds_does_not_restart_a_spike_run() {
        // Beyond, between thresholds (neither beyond nor calm), beyond: k = 2 fires,
        // with the onset at the first interval beyond.
        let mut t = Trigger::default();
        assert_eq!(t.step_run(true, false, 2, 3, 10), Step::Nothing);
        assert_eq!(t.step_run(false, false, 2, 3, 20), Step::Nothing);
        assert!(!t.idle());
        assert_eq!(t.step_run(true, false, 2, 3, 30), Step::Fire);
        assert_eq!(t.onset_ms, 10);
        // The same with `step`: the dip restarts the run.
        let mut t = Trigger::default();
        assert_eq!(t.step(true, false, 2, 3, 10), Step::Nothing);
        assert_eq!(t.step(false, false, 2, 3, 20), Step::Nothing);
        assert_eq!(t.step(true, false, 2, 3, 30), Step::Nothing);
        assert_eq!(t.step(true, false, 2, 3, 40), Step::Fire);
        assert_eq!(t.onset_ms, 30);
        // A calm interval ends the run: one beyond interval on each side never fires.
        let mut t = Trigger::default();
        assert_eq!(t.step_run(true, false, 2, 3, 10), Step::Nothing);
        assert_eq!(t.step_run(false, true, 2, 3, 20), Step::Nothing);
        assert!(t.idle());
        assert_eq!(t.step_run(true, false, 2, 3, 30), Step::Nothing);
        assert_eq!(t.step_run(false, true, 2, 3, 40), Step::Nothing);
        assert!(t.idle());
        // A single interval beyond, between calm ones, never fires either.
        let mut t = Trigger::default();
        for (i, (beyond, calm)) in [(false, true), (true, false), (false, false), (false, true)]
            .into_iter()
            .enumerate()
        {
            assert_eq!(t.step_run(beyond, calm, 2, 3, i as u64), Step::Nothing);
        }
    }

    #[test]
    fn fmt_rate_scales() {
        assert_eq!(fmt_rate(1_500_000.0, "B/s"), "1.500 MB/s");
        assert_eq!(fmt_rate(12.0, "packets/s"), "12.000 packets/s");
    }
}
