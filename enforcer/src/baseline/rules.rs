//! The per-interval judgements (is this interval beyond the spike, silence or deny
//! threshold? calm enough to clear?) and the k-of-k / hysteresis trigger that turns
//! them into fire and clear transitions.
use super::{
    EdgeSample,
    model::{Expect, Forecast, Metric, Params, Series, count_z, counting_var},
    settings::Detectors,
};

/// Most intervals a spike may need (`spikeIntervals`): the trigger keeps the z of
/// that many recent intervals.
pub const MAX_SPIKE_INTERVALS: usize = 16;

/// k consecutive intervals beyond the threshold fire; `m` consecutive calm
/// intervals clear. Intervals neither beyond nor calm keep a firing alert firing.
/// With [`Trigger::step_spike`] the same hysteresis holds before firing (k intervals
/// beyond the threshold within one run of intervals none of which is calm fire, so
/// an interval that dips between the two thresholds neither counts nor restarts the
/// run), and the evidence of the last k intervals is pooled: k consecutive
/// intervals each at least elevated whose mean z reaches the threshold fire too.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Trigger {
    /// Intervals beyond the threshold in the current run.
    over: u32,
    calm: u32,
    /// Start of the first interval beyond the threshold of the current run.
    pub onset_ms: u64,
    pub firing: bool,
    /// Consecutive elevated intervals up to the last one, and the z, log ratio
    /// (observed over expected) and start of the most recent ones (a ring of
    /// `MAX_SPIKE_INTERVALS`).
    elevated: u32,
    recent: [(f32, f32, u64); MAX_SPIKE_INTERVALS],
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

    /// One interval of a spike: k intervals beyond the threshold within a run of
    /// intervals not calm fire, and so do the last k consecutive intervals when
    /// each is elevated (`elevated` is its z and observed/expected ratio, `None`
    /// when it is not), their mean z is at least `mean_z` and the geometric mean of
    /// their ratios at least `mean_ratio`.
    #[expect(clippy::too_many_arguments, reason = "one interval of one trigger")]
    pub fn step_spike(
        &mut self,
        beyond: bool,
        elevated: Option<(f64, f64)>,
        calm: bool,
        k: u32,
        m: u32,
        (mean_z, mean_ratio): (f64, f64),
        start_ms: u64,
    ) -> Step {
        let k = k.clamp(1, MAX_SPIKE_INTERVALS as u32);
        match elevated {
            Some((z, ratio)) if !self.firing => {
                self.recent[self.elevated as usize % MAX_SPIKE_INTERVALS] =
                    (z as f32, ratio.max(1e-9).ln() as f32, start_ms);
                self.elevated = self.elevated.saturating_add(1);
            }
            _ => self.elevated = 0,
        }
        let pooled = (!self.firing && self.elevated >= k).then(|| {
            let last = (self.elevated - k..self.elevated)
                .map(|i| self.recent[i as usize % MAX_SPIKE_INTERVALS]);
            let (z, r, first) = last.fold((0.0, 0.0, u64::MAX), |(z, r, f), (zi, ri, t)| {
                (z + f64::from(zi), r + f64::from(ri), f.min(t))
            });
            let n = f64::from(k);
            (z / n >= mean_z && r / n >= mean_ratio.ln(), first)
        });
        let step = self.advance(beyond, calm, k, m, start_ms, true);
        match pooled {
            Some((true, first)) if step == Step::Nothing => {
                self.onset_ms = if self.over > 0 {
                    self.onset_ms.min(first)
                } else {
                    first
                };
                self.firing = true;
                self.calm = 0;
                self.elevated = 0;
                Step::Fire
            }
            _ => {
                if step == Step::Fire {
                    self.elevated = 0;
                }
                step
            }
        }
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
        !self.firing && self.over == 0 && self.elevated == 0
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

impl Excess {
    /// Observed over expected (infinite when nothing was expected).
    pub fn ratio(&self) -> f64 {
        if self.expected > 0.0 {
            self.observed / self.expected
        } else {
            f64::INFINITY
        }
    }
}

/// One interval of one subject, judged.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Judgement {
    /// The metric with the highest z beyond the spike threshold (`spikeZ`).
    pub spike: Option<Excess>,
    /// The metric with the highest z at least elevated (`spikePoolZ`, with the
    /// spike's ratio and excess), for the pooled rule of [`Trigger::step_spike`].
    pub elevated: Option<Excess>,
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
            let expected = fc.rate_now(m);
            let excess = observed - expected;
            let floor = min_excess(d, m);
            let x = Excess {
                metric: m,
                z,
                observed,
                expected,
            };
            if excess >= floor {
                if z >= d.spike_pool_z
                    && observed >= (d.spike_min_ratio / 2.0).max(1.0) * expected
                    && j.elevated.is_none_or(|e| z > e.z)
                {
                    j.elevated = Some(x);
                }
                if z >= d.spike_z
                    && observed >= d.spike_min_ratio * expected
                    && j.spike.is_none_or(|e| z > e.z)
                {
                    j.spike = Some(x);
                }
            }
            // Hysteresis on the excess too: an interval whose excess dips under the
            // floor, but not under half of it, is not calm (it neither ends a run
            // nor counts towards clearing).
            let still = z >= d.clear_z
                && observed >= (d.spike_min_ratio / 2.0).max(1.0) * expected
                && excess >= floor / 2.0;
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
        && f64::from(fc.samples) * secs >= d.silence_min_age_secs as f64;
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

/// Deny rates are not seasonal: the series' level and deviation only. Denied
/// packets are counts, and usually few or none: they are scored like packets, with
/// [`count_z`] (Poisson around a rate with its own noise, learnt as for packets),
/// against the count the series expects. The log-rate z used before needed about
/// 54 denies in one interval where none were usual, whatever `denyMinPerSec`
/// said: at 1 s intervals a retry storm of 5 denied packets/s went unnoticed. Now
/// 5 in one interval are enough where none are usual.
pub fn judge_deny(
    series: &Series,
    denied: u64,
    secs: f64,
    p: &Params,
    d: &Detectors,
) -> DenyJudgement {
    let m = Metric::Packets;
    let mut ex = series.expect(0, 0, secs, p);
    let lambda = ex.y.exp() * secs - 1.0;
    ex.sigma = ex.sigma.max(1.0 / (lambda.max(0.0) + 1.0).sqrt());
    ex.count_var = counting_var(ex.y, secs);
    ex.extra = series.rate_noise(p.scale_floor);
    let observed = denied as f64 / secs;
    let expected = m.rate(ex.y, secs);
    // An unseen rate is not a zero rate: never expect fewer than a quarter of a
    // denied packet per interval, so that where none are usual a burst takes 5
    // in one interval (z 4.5; 4 are z 3.8), not 1.
    let z = count_z(denied as f64, (expected * secs).max(0.25), ex.extra);
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

    /// One spike interval with the default thresholds (k = 2, 3 calm to clear,
    /// mean z 4, mean ratio 2): `z` and `ratio` of the worst metric; beyond when
    /// z ≥ 4 and ratio ≥ 2, elevated when z ≥ 3 and ratio ≥ 1, calm below z 2.
    fn spike(t: &mut Trigger, z: f64, ratio: f64, at: u64) -> Step {
        let beyond = z >= 4.0 && ratio >= 2.0;
        let elevated = (z >= 3.0 && ratio >= 1.0).then_some((z, ratio));
        t.step_spike(beyond, elevated, z < 2.0, 2, 3, (4.0, 2.0), at)
    }

    #[test]
    fn a_dip_between_thresholds_does_not_restart_a_spike_run() {
        // Beyond, between thresholds (neither beyond nor calm), beyond: k = 2 fires,
        // with the onset at the first interval beyond.
        let mut t = Trigger::default();
        assert_eq!(spike(&mut t, 4.5, 3.0, 10), Step::Nothing);
        assert_eq!(spike(&mut t, 2.5, 1.5, 20), Step::Nothing);
        assert!(!t.idle());
        assert_eq!(spike(&mut t, 4.5, 3.0, 30), Step::Fire);
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
        assert_eq!(spike(&mut t, 4.5, 3.0, 10), Step::Nothing);
        assert_eq!(spike(&mut t, 1.0, 1.2, 20), Step::Nothing);
        assert!(t.idle());
        assert_eq!(spike(&mut t, 4.5, 3.0, 30), Step::Nothing);
        assert_eq!(spike(&mut t, 1.0, 1.2, 40), Step::Nothing);
        assert!(t.idle());
        // A single interval beyond, between calm ones, never fires either.
        let mut t = Trigger::default();
        for (i, (z, ratio)) in [(0.0, 1.0), (4.5, 3.0), (2.5, 1.5), (0.0, 1.0)]
            .into_iter()
            .enumerate()
        {
            assert_eq!(spike(&mut t, z, ratio, i as u64), Step::Nothing);
        }
    }

    #[test]
    fn the_evidence_of_k_elevated_intervals_is_pooled() {
        // 4.4 then 3.6: the second is not beyond, but the mean z is 4.0 and the mean
        // ratio (geometric) 2.4: fires at the second, with the onset at the first.
        let mut t = Trigger::default();
        assert_eq!(spike(&mut t, 4.4, 2.9, 10), Step::Nothing);
        assert_eq!(spike(&mut t, 3.6, 2.0, 20), Step::Fire);
        assert_eq!(t.onset_ms, 10);
        // Two intervals at 3.9 (a x2.4 on a noisy edge): still under the mean.
        let mut t = Trigger::default();
        for at in 0..5 {
            assert_eq!(spike(&mut t, 3.9, 2.4, at), Step::Nothing);
        }
        // An elevated interval before one beyond fires too, from the first.
        let mut t = Trigger::default();
        assert_eq!(spike(&mut t, 3.5, 2.1, 10), Step::Nothing);
        assert_eq!(spike(&mut t, 4.6, 3.0, 20), Step::Fire);
        assert_eq!(t.onset_ms, 10);
        // One strong interval does not carry one under the elevated threshold: 9.0
        // then 2.9 (mean 5.9) does not fire; the run goes on (2.9 is not calm).
        let mut t = Trigger::default();
        assert_eq!(spike(&mut t, 9.0, 10.0, 10), Step::Nothing);
        assert_eq!(spike(&mut t, 2.9, 1.8, 20), Step::Nothing);
        assert!(!t.idle());
        assert_eq!(spike(&mut t, 1.0, 1.1, 30), Step::Nothing);
        assert!(t.idle());
        // Nor does a high z with a small ratio (a steady edge): mean ratio under 2.
        let mut t = Trigger::default();
        assert_eq!(spike(&mut t, 6.0, 1.6, 10), Step::Nothing);
        assert_eq!(spike(&mut t, 6.0, 1.6, 20), Step::Nothing);
        // While firing, elevated intervals keep it firing; calm ones clear it.
        let mut t = Trigger::default();
        spike(&mut t, 5.0, 3.0, 10);
        assert_eq!(spike(&mut t, 5.0, 3.0, 20), Step::Fire);
        assert_eq!(spike(&mut t, 3.5, 2.0, 30), Step::Nothing);
        for at in [40, 50] {
            assert_eq!(spike(&mut t, 0.5, 1.0, at), Step::Nothing);
        }
        assert_eq!(spike(&mut t, 0.5, 1.0, 60), Step::Clear);
        assert!(t.idle());
        // k = 3 pools three intervals: 3.3, 4.2, 4.6 (mean 4.03) fires at the third.
        let mut t = Trigger::default();
        let step = |t: &mut Trigger, z: f64, at| {
            t.step_spike(z >= 4.0, Some((z, 3.0)), false, 3, 3, (4.0, 2.0), at)
        };
        assert_eq!(step(&mut t, 3.3, 10), Step::Nothing);
        assert_eq!(step(&mut t, 4.2, 20), Step::Nothing);
        assert_eq!(step(&mut t, 4.6, 30), Step::Fire);
        assert_eq!(t.onset_ms, 10);
    }

    #[test]
    fn fmt_rate_scales() {
        assert_eq!(fmt_rate(1_500_000.0, "B/s"), "1.500 MB/s");
        assert_eq!(fmt_rate(12.0, "packets/s"), "12.000 packets/s");
    }
}
