//! The robust seasonal rate model of one subject (an edge or a workload's total).
//!
//! Each metric (bytes/s, packets/s, new connections/s) is modelled in log space,
//! `y = ln((count + c) / secs)` with a small pseudo-count `c`, and only over intervals
//! in which the subject was active: an edge used by an hourly job is judged on what
//! it carries while it runs, and separately on how often it runs (`activity`).
//!
//! Expected value: `level + season + fast` (Holt-Winters style, two time scales).
//! `level` is a slow, deseasonalised EWMA (`slowLevelWindowSecs`, 3 days). `season`
//! is the hour-of-week offset once the subject has `weeklyAfterDays` (7) of history,
//! else the hour-of-day offset after `dailyAfterDays` (2), else 0: the non-seasonal
//! fallback. Both profiles learn from the first hour on, each bucket a running mean
//! of `y - level` until its memory is reached, then an EWMA; within the hour the
//! offset follows the slope of the neighbouring buckets (slope-limited). `fast` follows what the
//! two leave unexplained (`levelWindowSecs`, 1 hour): before the profiles are used it
//! is the level that tracks the day; afterwards it absorbs a lasting change, which
//! becomes normal within a few hours. Scale: an EWMA of the absolute deviation
//! (`×1.2533 ≈ σ` for normal noise, `deviationWindowSecs`), never below `scaleFloor`,
//! nor below the counting noise of the expected packets or connections per interval
//! (`1/√(λ+1)`). Updates are robust: an observation is clipped to 3σ before it moves
//! anything, so an anomaly barely moves its own baseline.
//!
//! Scores: bytes use the log-rate z with that scale. Packets and connections are
//! counts: what the deviation learnt is counting (Poisson) noise plus the rate's own
//! noise, so the model also learns the counting variance of the same intervals
//! (`cvar`), takes the rate's own noise as the rest (in quadrature, at least
//! `scaleFloor`), and scores a count with [`count_z`], which keeps the Poisson tails.
//!
//! Lag correlation: each series learns the lag-1 autocovariance of its residual and
//! scores an interval given the last ordinary one ([`Series`]'s `condition`), so a
//! spike during a low stretch of an edge's drifting rate is seen sooner.
//!
//! Memory: 3 metrics × 9 words, and, once the subject is an hour old and has been
//! active for 10 intervals, 3 × (24 + 168) profile values, 24 activity values and
//! 24 + 168 bucket counts: ≈ 3 KiB per subject (see `docs/baseline.md`).
use serde::{Deserialize, Serialize};

use super::settings::Detectors;

/// Hour-of-day buckets.
pub const DAY: usize = 24;
/// Hour-of-week buckets (0 = Monday 00:00 UTC).
pub const WEEK: usize = 168;

/// The hour of day (UTC) of a Unix time in milliseconds.
pub fn hour_of_day(ms: u64) -> usize {
    ((ms / 3_600_000) % DAY as u64) as usize
}

/// The hour of the week (UTC, Monday 00:00 is 0): the epoch was a Thursday.
pub fn hour_of_week(ms: u64) -> usize {
    ((ms / 3_600_000 + 72) % WEEK as u64) as usize
}

/// A rate the model learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Bytes,
    Packets,
    Connections,
}

impl Metric {
    pub const ALL: [Metric; 3] = [Metric::Bytes, Metric::Packets, Metric::Connections];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn unit(self) -> &'static str {
        match self {
            Metric::Bytes => "bytes/s",
            Metric::Packets => "packets/s",
            Metric::Connections => "connections/s",
        }
    }

    /// Pseudo-count added before the logarithm (an empty interval is finite).
    pub fn pseudo(self) -> f64 {
        match self {
            Metric::Bytes => 100.0,
            Metric::Packets | Metric::Connections => 1.0,
        }
    }

    /// Whether the metric counts events (packets, connections), so that its noise
    /// includes counting (Poisson) noise; bytes are the packets' sizes summed.
    pub fn is_count(self) -> bool {
        matches!(self, Metric::Packets | Metric::Connections)
    }

    /// Log rate of `count` over `secs`.
    pub fn y(self, count: f64, secs: f64) -> f64 {
        ((count.max(0.0) + self.pseudo()) / secs.max(1e-3)).ln()
    }

    /// Rate (per second) of a log rate.
    pub fn rate(self, y: f64, secs: f64) -> f64 {
        (y.exp() - self.pseudo() / secs.max(1e-3)).max(0.0)
    }
}

/// Model constants for one interval length.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    pub alpha_fast: f64,
    pub alpha_slow: f64,
    pub alpha_dev: f64,
    pub alpha_daily: f64,
    pub alpha_weekly: f64,
    pub daily_after_ms: u64,
    pub weekly_after_ms: u64,
    pub scale_floor: f64,
    pub min_samples: u32,
}

impl Params {
    pub fn new(d: &Detectors, interval_secs: f64) -> Self {
        let a = |window_secs: f64| (interval_secs / window_secs.max(1.0)).min(1.0);
        Self {
            alpha_fast: a(d.level_window_secs as f64),
            alpha_slow: a(d.slow_level_window_secs as f64),
            alpha_dev: a(d.deviation_window_secs as f64),
            // A bucket gets 3600/interval samples per day (per week for weekly).
            alpha_daily: a(3600.0 * d.daily_memory_days),
            alpha_weekly: a(3600.0 * d.weekly_memory_weeks),
            daily_after_ms: u64::from(d.daily_after_days) * 86_400_000,
            weekly_after_ms: u64::from(d.weekly_after_days) * 86_400_000,
            scale_floor: d.scale_floor,
            min_samples: d.min_samples,
        }
    }
}

/// Which profile a prediction used.
pub const NO_PROFILE: u8 = 0;
pub const DAILY: u8 = 1;
pub const WEEKLY: u8 = 2;

/// One metric of one subject, in log space: expected `level + season + fast`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// Slow, deseasonalised level.
    pub level: f32,
    /// Short-term departure from `level + season` (follows a lasting change).
    pub fast: f32,
    pub dev: f32,
    /// Counting variance of the learnt intervals (EWMA, with the weights of `dev`):
    /// the part of `dev` that is Poisson noise, for count metrics.
    #[serde(default)]
    pub cvar: f32,
    /// Samples learnt.
    pub n: u32,
    /// Lag-1 autocovariance of the residual (EWMA over pairs of consecutive
    /// ordinary intervals, with the weights of `dev`): how much of one interval's
    /// departure the next one keeps.
    #[serde(default)]
    pub acov: f32,
    /// Residual of the last ordinary interval (below 2σ, clipped at −3σ), and how
    /// many intervals ago it was (0: none yet).
    #[serde(default)]
    pub last: f32,
    #[serde(default)]
    pub since: u32,
    /// The profile the last prediction used.
    #[serde(default)]
    pub mode: u8,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub daily: Vec<f32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weekly: Vec<f32>,
}

/// What a series expects for one interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Expect {
    pub y: f64,
    pub season: f64,
    /// Scale of the log rate (robust learning, and the z-score of bytes).
    pub sigma: f64,
    pub mode: u8,
    /// Count metrics: the counting variance of the log count expected now
    /// ([`counting_var`]), and the scale of the rate's own, extra-Poisson noise
    /// (at least `scaleFloor`). Both 0 for bytes.
    pub count_var: f64,
    pub extra: f64,
    /// What the last ordinary interval says of this one (the residual's lag
    /// correlation): a shift of the expected log rate, and the scale left to score
    /// with (of the log rate for bytes, of the rate's own noise for counts; 0: the
    /// unconditional one).
    pub shift: f64,
    pub z_scale: f64,
}

impl Series {
    /// The seasonal offset of the interval that starts at `t_ms` and lasts `secs`.
    /// A bucket holds the mean of its hour; within the hour the offset follows the
    /// slope its neighbours give (limited, as in a monotonized-central scheme: none
    /// at a local peak or trough, never steeper than twice either one-sided step),
    /// taken at the middle of the interval. A smooth daily ramp is followed minute
    /// by minute instead of in hourly steps (the step was the model's largest error
    /// on smooth diurnal traffic, and false alarms gathered at the turns of the
    /// hour); a step between two hours (a weekend's start) is not smeared, and the
    /// mean over the hour is still the bucket's.
    fn season_of(&self, mode: u8, t_ms: u64, secs: f64) -> f64 {
        let (b, h) = match mode {
            WEEKLY if self.weekly.len() == WEEK => (&self.weekly, hour_of_week(t_ms)),
            DAILY if self.daily.len() == DAY => (&self.daily, hour_of_day(t_ms)),
            _ => return 0.0,
        };
        let n = b.len();
        let v = f64::from(b[h]);
        let (dl, dr) = (
            v - f64::from(b[(h + n - 1) % n]),
            f64::from(b[(h + 1) % n]) - v,
        );
        let slope = if dl * dr <= 0.0 {
            0.0
        } else {
            dl.signum()
                * ((dl + dr).abs() / 2.0)
                    .min(2.0 * dl.abs())
                    .min(2.0 * dr.abs())
        };
        let mid_ms = (t_ms % 3_600_000) as f64 + secs * 500.0;
        let pos = (mid_ms / 3_600_000.0).min(1.0) - 0.5;
        v + slope * pos
    }

    fn mode_for(&self, age_ms: u64, p: &Params) -> u8 {
        if age_ms >= p.weekly_after_ms && self.weekly.len() == WEEK {
            WEEKLY
        } else if age_ms >= p.daily_after_ms && self.daily.len() == DAY {
            DAILY
        } else {
            NO_PROFILE
        }
    }

    /// What the series expects of the interval that starts at `t_ms` and lasts
    /// `secs`, `age_ms` after the subject was first seen.
    pub fn expect(&self, age_ms: u64, t_ms: u64, secs: f64, p: &Params) -> Expect {
        let mode = self.mode_for(age_ms, p);
        let season = self.season_of(mode, t_ms, secs);
        Expect {
            y: f64::from(self.level) + season + f64::from(self.fast),
            season,
            sigma: (1.2533 * f64::from(self.dev)).max(p.scale_floor),
            mode,
            count_var: 0.0,
            extra: 0.0,
            shift: 0.0,
            z_scale: 0.0,
        }
    }

    /// Learns `y` given what was expected of it; `n_day` and `n_week` are the samples
    /// the current hour-of-day and hour-of-week buckets have seen (this one included).
    pub fn update(&mut self, y: f64, ex: &Expect, t_ms: u64, p: &Params, n_day: u16, n_week: u16) {
        self.n = self.n.saturating_add(1);
        if self.n == 1 {
            self.level = y as f32;
            return;
        }
        if ex.mode != self.mode {
            // The prediction switched to a better-informed profile: what the short-term
            // level followed (the day's shape, a quiet weekend) is the profile's now.
            self.fast = 0.0;
            self.mode = ex.mode;
        }
        let e = y - ex.y;
        let robust = self.n > p.min_samples;
        // An ordinary interval (not elevated) is the one the next is conditioned on;
        // the pair of two consecutive ones teaches the lag correlation.
        if e < 2.0 * ex.sigma {
            let ec = e.max(-3.0 * ex.sigma);
            if robust && self.since == 1 {
                let a = p.alpha_dev.max(1.0 / f64::from(self.n));
                let c = f64::from(self.acov);
                self.acov = (c + a * (ec * f64::from(self.last) - c)) as f32;
            }
            self.last = ec as f32;
            self.since = 1;
        } else if self.since > 0 {
            self.since = self.since.saturating_add(1);
        }
        let (ec, ed) = if robust {
            (
                e.clamp(-3.0 * ex.sigma, 3.0 * ex.sigma),
                e.abs().min(4.0 * ex.sigma),
            )
        } else {
            (e, e.abs())
        };
        let yc = ex.y + ec;
        let level0 = f64::from(self.level);
        let n = f64::from(self.n);
        let a_slow = p.alpha_slow.max(1.0 / n);
        let a_dev = p.alpha_dev.max(1.0 / (n - 1.0));
        self.fast = (f64::from(self.fast) + p.alpha_fast * ec) as f32;
        self.level = (level0 + a_slow * (yc - ex.season - level0)) as f32;
        self.dev = (f64::from(self.dev) + a_dev * (ed - f64::from(self.dev))) as f32;
        self.cvar = (f64::from(self.cvar) + a_dev * (ex.count_var - f64::from(self.cvar))) as f32;
        // The profiles learn what the slow level does not explain.
        let resid = yc - level0;
        let learn = |b: &mut f32, alpha: f64, count: u16| {
            let a = alpha.max(1.0 / f64::from(count.max(1)));
            *b = (f64::from(*b) + a * (resid - f64::from(*b))) as f32;
        };
        if self.daily.len() == DAY {
            learn(&mut self.daily[hour_of_day(t_ms)], p.alpha_daily, n_day);
        }
        if self.weekly.len() == WEEK {
            learn(&mut self.weekly[hour_of_week(t_ms)], p.alpha_weekly, n_week);
        }
    }

    /// Conditions `ex` on the last ordinary interval. The residual is taken as the
    /// rate's own noise, an AR(1) process (lag correlation φ, from `acov`), plus
    /// white counting noise for counts: k intervals on, the expected log rate moves
    /// by φᵏ·s²/σ² of that residual, and the rate's variance left is
    /// s² − (φᵏs²)²/σ² (σ² the residual's variance, s² the rate's part of it).
    /// While a spike lasts its intervals are not ordinary, so the condition fades
    /// (φᵏ) instead of following the spike. Nothing after 30 intervals.
    fn condition(&self, ex: &mut Expect, m: Metric, floor: f64) {
        if self.since == 0 || self.since > 30 {
            return;
        }
        let var = (1.2533 * f64::from(self.dev)).powi(2);
        let counting = if m.is_count() {
            f64::from(self.cvar).min(var)
        } else {
            0.0
        };
        let s2 = var - counting;
        if var <= 0.0 || s2 <= 1e-9 {
            return;
        }
        let phi = (f64::from(self.acov) / s2).clamp(0.0, 0.9);
        let c = phi.powi(self.since as i32) * s2;
        ex.shift = c / var * f64::from(self.last);
        let left = ((s2 - c * c / var) / s2).max(0.0).sqrt();
        ex.z_scale = if m.is_count() {
            (s2.sqrt() * left).max(floor)
        } else {
            (ex.sigma * left).max(floor)
        };
    }

    /// Scale of a count series' own rate noise: what the learnt deviation has
    /// beyond the learnt counting variance (in quadrature), at least `floor`.
    pub fn rate_noise(&self, floor: f64) -> f64 {
        let learnt = (1.2533 * f64::from(self.dev)).powi(2);
        (learnt - f64::from(self.cvar)).max(0.0).sqrt().max(floor)
    }

    /// Whether every value is finite and every profile has its size.
    pub fn is_valid(&self) -> bool {
        self.level.is_finite()
            && self.fast.is_finite()
            && self.dev.is_finite()
            && self.dev >= 0.0
            && self.cvar.is_finite()
            && self.cvar >= 0.0
            && self.acov.is_finite()
            && self.last.is_finite()
            && self.mode <= WEEKLY
            && (self.daily.is_empty() || self.daily.len() == DAY)
            && (self.weekly.is_empty() || self.weekly.len() == WEEK)
            && self.daily.iter().chain(&self.weekly).all(|v| v.is_finite())
    }
}

/// Intervals of an idle run during which the activity share is not lowered (it is
/// once traffic resumes, or past this): silence is judged on the activity before.
pub const IDLE_DEFER: u32 = 30;

/// A subject's model: three metrics and how often it is active.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RateModel {
    /// First observation, ms since the epoch: the age decides which profile is used.
    pub first_ms: u64,
    pub intervals: u32,
    pub active_intervals: u32,
    /// Share of intervals with traffic (EWMA).
    pub activity: f32,
    /// Current run of idle intervals.
    #[serde(default)]
    pub idle_run: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub activity_daily: Vec<f32>,
    /// Active samples per hour-of-day and hour-of-week bucket.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub daily_n: Vec<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub weekly_n: Vec<u16>,
    pub series: [Series; 3],
}

/// What a model expects for one interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Forecast {
    pub secs: f64,
    pub expect: [Expect; 3],
    /// Expected share of active intervals at this time.
    pub activity: f64,
    /// Active intervals learnt.
    pub samples: u32,
    /// Time since the subject was first seen.
    pub age_ms: u64,
}

impl Forecast {
    /// Expected rate per second while active.
    pub fn rate(&self, m: Metric) -> f64 {
        m.rate(self.expect[m.index()].y, self.secs)
    }

    /// Expected rate per second of this very interval: [`Forecast::rate`] given the
    /// last ordinary interval (what spikes are judged against).
    pub fn rate_now(&self, m: Metric) -> f64 {
        let ex = &self.expect[m.index()];
        m.rate(ex.y + ex.shift, self.secs)
    }

    /// z-score of an observed count, given the last ordinary interval: for bytes,
    /// the robust z of the log rate; for packets and connections, [`count_z`] of
    /// the count against the median count expected, with the rate's own noise.
    pub fn z(&self, m: Metric, count: f64) -> f64 {
        let ex = &self.expect[m.index()];
        let y = ex.y + ex.shift;
        if m.is_count() && ex.extra > 0.0 {
            // The mean of ln(count + 1) is below ln(λ + 1) by about half its
            // counting variance: undo that bias to get the median count expected.
            let mu = (y + counting_var(y, self.secs) / 2.0).exp() * self.secs - 1.0;
            let s = if ex.z_scale > 0.0 {
                ex.z_scale
            } else {
                ex.extra
            };
            return count_z(count, mu, s);
        }
        let s = if ex.z_scale > 0.0 {
            ex.z_scale
        } else {
            ex.sigma
        };
        (m.y(count, self.secs) - y) / s
    }
}

/// Counting noise of a log count whose expected value is `lambda`.
pub fn counting_sigma(lambda: f64) -> f64 {
    1.0 / (lambda.max(0.0) + 1.0).sqrt()
}

/// Counting variance of `ln(count + 1)` for a count whose log rate is expected to be
/// `y` over `secs`: `Var[ln(X + 1)] ≈ 1/(λ + 1)` for `X ~ Poisson(λ)`, with
/// `λ + 1 = e^y · secs` (the square of [`counting_sigma`]).
pub fn counting_var(y: f64, secs: f64) -> f64 {
    1.0 / (y.exp() * secs).max(1.0)
}

/// `x ln(x / lambda)`, 0 at `x = 0`.
fn xlogx(x: f64, lambda: f64) -> f64 {
    if x > 0.0 { x * (x / lambda).ln() } else { 0.0 }
}

/// How far `count` is from `mu` expected, in standard deviations, when the count is
/// Poisson around a rate that itself varies by a log-normal factor of scale `s`:
/// `X ~ Poisson(mu · e^ε)`, `ε ~ N(0, s²)`. It is the signed root of the profile
/// likelihood-ratio statistic: the least `ε²/s² + D(x, mu · e^ε)` over `ε`, where `D`
/// is the Poisson deviance. For large counts it tends to the log-rate z with the two
/// noises added in quadrature, `ln(x/mu) / √(s² + 1/mu)`; for small counts it keeps
/// the Poisson tails, which are much lighter upwards than the log's Gaussian
/// approximation, so that P(z ≥ t) stays close to the normal tail.
pub fn count_z(count: f64, mu: f64, s: f64) -> f64 {
    let x = count.max(0.0);
    let mu = mu.max(1e-6);
    let s2 = (s * s).max(1e-9);
    // The minimum solves g(ε) = ε/s² + mu·e^ε − x = 0; g is increasing and convex,
    // so Newton's method from a point where g ≥ 0 descends to it without overshoot.
    let mut e = if x > mu { (x / mu).ln() } else { 0.0 };
    for _ in 0..100 {
        let m = mu * e.exp();
        let step = (e / s2 + m - x) / (1.0 / s2 + m);
        e -= step;
        if step.abs() < 1e-12 {
            break;
        }
    }
    let lambda = mu * e.exp();
    let stat = e * e / s2 + 2.0 * (xlogx(x, lambda) - (x - lambda));
    stat.max(0.0).sqrt().copysign(x - mu)
}

impl RateModel {
    pub fn new(first_ms: u64) -> Self {
        Self {
            first_ms,
            ..Self::default()
        }
    }

    pub fn forecast(&self, t_ms: u64, secs: f64, p: &Params) -> Forecast {
        let age = t_ms.saturating_sub(self.first_ms);
        let mut expect = [Expect::default(); 3];
        for m in Metric::ALL {
            expect[m.index()] = self.series[m.index()].expect(age, t_ms, secs, p);
        }
        let packets = &expect[Metric::Packets.index()];
        let sp = counting_sigma(packets.y.exp() * secs - 1.0);
        for m in [Metric::Bytes, Metric::Packets] {
            let s = &mut expect[m.index()].sigma;
            *s = s.max(sp);
        }
        let conns = &mut expect[Metric::Connections.index()];
        conns.sigma = conns.sigma.max(counting_sigma(conns.y.exp() * secs - 1.0));
        // What `dev` learnt is both noises: the rate's own is what the counting
        // variance of the same intervals does not explain (in quadrature).
        for m in [Metric::Packets, Metric::Connections] {
            let s = &self.series[m.index()];
            let ex = &mut expect[m.index()];
            ex.count_var = counting_var(ex.y, secs);
            ex.extra = s.rate_noise(p.scale_floor);
        }
        for m in Metric::ALL {
            self.series[m.index()].condition(&mut expect[m.index()], m, p.scale_floor);
        }
        let activity = if age >= p.daily_after_ms && self.activity_daily.len() == DAY {
            self.activity_daily[hour_of_day(t_ms)]
        } else {
            self.activity
        };
        Forecast {
            secs,
            expect,
            activity: f64::from(activity),
            samples: self.series[Metric::Packets.index()].n,
            age_ms: age,
        }
    }

    fn learn_activity(&mut self, t_ms: u64, a: f64, p: &Params) {
        let a_act = p.alpha_dev.max(1.0 / f64::from(self.intervals.max(1)));
        self.activity = (f64::from(self.activity) + a_act * (a - f64::from(self.activity))) as f32;
        if self.activity_daily.len() == DAY {
            let b = &mut self.activity_daily[hour_of_day(t_ms)];
            *b = (f64::from(*b) + p.alpha_daily * (a - f64::from(*b))) as f32;
        }
    }

    /// Learns one interval: `counts` per metric, `active` whether there was traffic.
    pub fn update(&mut self, t_ms: u64, counts: [f64; 3], active: bool, fc: &Forecast, p: &Params) {
        self.intervals = self.intervals.saturating_add(1);
        if !active {
            for s in &mut self.series {
                if s.since > 0 {
                    s.since = s.since.saturating_add(1);
                }
            }
            self.idle_run = self.idle_run.saturating_add(1);
            if self.idle_run > IDLE_DEFER {
                self.learn_activity(t_ms, 0.0, p);
            }
            return;
        }
        for _ in 0..self.idle_run.min(IDLE_DEFER) {
            self.learn_activity(t_ms, 0.0, p);
        }
        self.idle_run = 0;
        self.learn_activity(t_ms, 1.0, p);
        self.active_intervals = self.active_intervals.saturating_add(1);
        let (mut nd, mut nw) = (0, 0);
        if self.daily_n.len() == DAY && self.weekly_n.len() == WEEK {
            let d = &mut self.daily_n[hour_of_day(t_ms)];
            *d = d.saturating_add(1);
            nd = *d;
            let w = &mut self.weekly_n[hour_of_week(t_ms)];
            *w = w.saturating_add(1);
            nw = *w;
        }
        for m in Metric::ALL {
            let i = m.index();
            self.series[i].update(m.y(counts[i], fc.secs), &fc.expect[i], t_ms, p, nd, nw);
        }
        // Profiles only for subjects that last: most short-lived edges never pay them.
        if self.activity_daily.is_empty()
            && t_ms.saturating_sub(self.first_ms) >= 3_600_000
            && self.active_intervals >= 10
        {
            self.activity_daily = vec![self.activity; DAY];
            self.daily_n = vec![0; DAY];
            self.weekly_n = vec![0; WEEK];
            for s in &mut self.series {
                s.daily = vec![0.0; DAY];
                s.weekly = vec![0.0; WEEK];
            }
        }
    }

    /// Forgets the current idle run: it was an anomaly (a firing silence), not a
    /// pattern to learn.
    pub fn forgive_idle(&mut self) {
        self.idle_run = 0;
    }

    /// Heap bytes held beyond the struct itself.
    pub fn heap_bytes(&self) -> usize {
        4 * self.activity_daily.capacity()
            + 2 * (self.daily_n.capacity() + self.weekly_n.capacity())
            + 4 * self
                .series
                .iter()
                .map(|s| s.daily.capacity() + s.weekly.capacity())
                .sum::<usize>()
    }

    pub fn is_valid(&self) -> bool {
        let profiles = self.activity_daily.is_empty()
            || (self.activity_daily.len() == DAY
                && self.daily_n.len() == DAY
                && self.weekly_n.len() == WEEK);
        self.activity.is_finite()
            && profiles
            && self.activity_daily.iter().all(|v| v.is_finite())
            && self.series.iter().all(Series::is_valid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(interval: f64) -> Params {
        Params::new(&Detectors::default(), interval)
    }

    #[test]
    fn buckets_follow_utc_hours_and_weekdays() {
        // 2024-01-01 was a Monday.
        let monday = 1_704_067_200_000;
        assert_eq!(hour_of_week(monday), 0);
        assert_eq!(hour_of_week(monday + 25 * 3_600_000), 25);
        assert_eq!(hour_of_day(monday + 25 * 3_600_000), 1);
    }

    #[test]
    fn steady_rate_is_learnt_and_a_spike_scores_high() {
        let p = params(60.0);
        let mut m = RateModel::new(0);
        let mut t = 0;
        for i in 0..500u64 {
            let jitter = 1.0 + 0.1 * ((i % 7) as f64 - 3.0) / 3.0;
            let counts = [60_000.0 * jitter, 60.0 * jitter, 6.0];
            let fc = m.forecast(t, 60.0, &p);
            m.update(t, counts, true, &fc, &p);
            t += 60_000;
        }
        let fc = m.forecast(t, 60.0, &p);
        let expected = fc.rate(Metric::Bytes);
        assert!((900.0..1100.0).contains(&expected), "{expected}");
        assert!(fc.z(Metric::Bytes, 60_000.0).abs() < 1.0);
        assert!(fc.z(Metric::Bytes, 5.0 * 60_000.0) > 6.0);
        assert!(m.activity > 0.99);
        assert!(m.is_valid());
        assert!(m.heap_bytes() >= 4 * (DAY * 4 + WEEK * 3) + 2 * (DAY + WEEK));
    }

    #[test]
    fn daily_profile_is_used_after_enough_history() {
        let p = params(600.0);
        let mut m = RateModel::new(0);
        let mut t = 0;
        // Busy (×8) from 08:00 to 20:00 UTC, for 4 days.
        let rate = |t: u64| {
            if (8..20).contains(&hour_of_day(t)) {
                8000.0
            } else {
                1000.0
            }
        };
        while t < 4 * 86_400_000 {
            let c = rate(t) * 600.0;
            let fc = m.forecast(t, 600.0, &p);
            m.update(t, [c, c / 1000.0, 1.0], true, &fc, &p);
            t += 600_000;
        }
        // 09:00 on day 5 is busy; 02:00 is quiet: both expected.
        let day5 = 4 * 86_400_000;
        let busy = m.forecast(day5 + 9 * 3_600_000, 600.0, &p);
        let quiet = m.forecast(day5 + 2 * 3_600_000, 600.0, &p);
        assert!(
            busy.rate(Metric::Bytes) > 3.0 * quiet.rate(Metric::Bytes),
            "busy {} quiet {}",
            busy.rate(Metric::Bytes),
            quiet.rate(Metric::Bytes)
        );
    }

    #[test]
    fn within_an_hour_the_profile_follows_its_neighbours_slope() {
        let p = params(60.0);
        let mut s = Series {
            daily: (0..DAY).map(|h| 0.1 * h as f32).collect(),
            ..Series::default()
        };
        let at = |s: &Series, h: u64, min: u64| {
            s.expect(p.daily_after_ms, h * 3_600_000 + min * 60_000, 60.0, &p)
                .season
        };
        // A ramp: followed minute by minute, the bucket's value at mid-hour.
        assert!((at(&s, 5, 0) - 0.4508).abs() < 1e-3, "{}", at(&s, 5, 0));
        assert!((at(&s, 5, 29) - 0.5).abs() < 1e-3);
        assert!((at(&s, 5, 59) - 0.5492).abs() < 1e-3);
        // A peak: flat at its bucket's value.
        s.daily[5] = 2.0;
        assert_eq!(at(&s, 5, 0), 2.0);
        assert_eq!(at(&s, 5, 59), 2.0);
        // A step (a weekend's edge): the hours on each side of it stay flat.
        s.daily = vec![0.0; DAY];
        for b in &mut s.daily[12..] {
            *b = -1.0;
        }
        for min in [0, 30, 59] {
            assert_eq!(at(&s, 11, min), 0.0);
            assert_eq!(at(&s, 12, min), -1.0);
        }
        // Before the profile is used: no offset.
        assert_eq!(s.expect(0, 5 * 3_600_000, 60.0, &p).season, 0.0);
    }

    #[test]
    fn the_lag_correlation_of_the_noise_is_learnt_and_conditions_the_next_interval() {
        use crate::baseline::eval::traffic::Rng;
        let p = params(60.0);
        let mut rng = Rng::new(3);
        let (phi, sigma): (f64, f64) = (0.6, 0.2);
        let mut noise = 0.0;
        let mut m = RateModel::new(0);
        let bytes = |noise: f64| 6e6 * f64::exp(noise);
        let (mut t, mut plain, mut cond, mut n) = (0, 0.0, 0.0, 0.0);
        for i in 0..6000u64 {
            noise = phi * noise + (1.0 - phi * phi).sqrt() * sigma * rng.normal();
            let fc = m.forecast(t, 60.0, &p);
            if i >= 3000 {
                // Scored with the condition, the residual left is smaller.
                let ex = fc.expect[Metric::Bytes.index()];
                let y = Metric::Bytes.y(bytes(noise), 60.0);
                plain += (y - ex.y).powi(2);
                cond += (y - ex.y - ex.shift).powi(2);
                n += 1.0;
            }
            m.update(t, [bytes(noise), bytes(noise) / 1000.0, 6.0], true, &fc, &p);
            t += 60_000;
        }
        let s = &m.series[Metric::Bytes.index()];
        let learnt = f64::from(s.acov) / (1.2533 * f64::from(s.dev)).powi(2);
        assert!((0.45..0.75).contains(&learnt), "phi {learnt}");
        let (plain, cond) = ((plain / n).sqrt(), (cond / n).sqrt());
        assert!(cond < 0.9 * plain, "rms {plain} -> {cond}");
        // After an ordinary interval 1.5σ above, the next is expected higher and
        // scored with a smaller scale; while a spike lasts (intervals that are not
        // ordinary) the condition fades.
        let fc = m.forecast(t, 60.0, &p);
        let sig = fc.expect[0].sigma;
        let y = fc.expect[0].y + 1.5 * sig;
        let v = (y.exp() * 60.0) - 100.0;
        m.update(t, [v, v / 1000.0, 6.0], true, &fc, &p);
        t += 60_000;
        let next = m.forecast(t, 60.0, &p).expect[0];
        assert!(
            next.shift > 0.5 * sig && next.z_scale < 0.9 * next.sigma,
            "{next:?}"
        );
        let mut shifts = vec![next.shift];
        for _ in 0..4 {
            let fc = m.forecast(t, 60.0, &p);
            let v = 5.0 * fc.rate(Metric::Bytes) * 60.0;
            m.update(t, [v, v / 1000.0, 6.0], true, &fc, &p);
            t += 60_000;
            shifts.push(m.forecast(t, 60.0, &p).expect[0].shift);
        }
        assert!(shifts.windows(2).all(|w| w[1] < w[0]), "{shifts:?}");
        assert!(m.is_valid());
    }

    /// P(X ≥ k) for X ~ Poisson(lambda).
    fn poisson_tail(k: u64, lambda: f64) -> f64 {
        let mut term = (-lambda).exp();
        let mut below = 0.0;
        for i in 0..k {
            below += term;
            term *= lambda / (i + 1) as f64;
        }
        1.0 - below
    }

    #[test]
    fn count_z_keeps_poisson_tails_and_tends_to_the_log_z() {
        // Nothing unusual: 0; monotone in the count.
        assert_eq!(count_z(13.0, 13.0, 0.15), 0.0);
        let zs: Vec<f64> = (0..100)
            .map(|x| count_z(f64::from(x), 13.0, 0.15))
            .collect();
        assert!(zs.windows(2).all(|w| w[0] < w[1]));
        assert!(zs[0] < -2.0 && zs[99] > 8.0);
        // Large counts: the log-rate z, the two noises in quadrature.
        let (mu, s): (f64, f64) = (1e6, 0.2);
        let log_z = 2f64.ln() / (s * s + 1.0 / mu).sqrt();
        assert!((count_z(2.0 * mu, mu, s) / log_z - 1.0).abs() < 0.02);
        // Pure counting noise: the first count with z ≥ 4 (or 3) is about as rare as
        // a normal deviate beyond 4 (3), at small and moderate counts alike.
        for mu in [3.0, 13.0, 40.0] {
            for (t, normal) in [(3.0, 1.35e-3), (4.0, 3.17e-5)] {
                let x = (0u64..)
                    .find(|x| count_z(*x as f64, mu, 1e-4) >= t)
                    .expect("x");
                let p = poisson_tail(x, mu);
                assert!(
                    (0.25 * normal..4.0 * normal).contains(&p),
                    "mu {mu}: P(X >= {x}) = {p:e}, normal {normal:e}"
                );
            }
        }
        // A x3 of 13 counts, with 15 % of rate noise: beyond 4 (the log-rate z with
        // the counting noise as the scale was 3.8).
        let old = (40.0f64 / 14.0).ln() / counting_sigma(13.0);
        assert!(old < 4.0);
        assert!(count_z(39.0, 13.0, 0.15) > 4.5);
    }

    /// Learns `n` steady intervals of `lambda` connections a minute with log-normal
    /// rate noise `noise`; returns the model.
    fn learn_counts(lambda: f64, noise: f64, n: u64) -> RateModel {
        use crate::baseline::eval::traffic::Rng;
        let p = params(60.0);
        let mut rng = Rng::new(11);
        let mut m = RateModel::new(0);
        for i in 0..n {
            let t = i * 60_000;
            let rate = lambda * (noise * rng.normal()).exp();
            let c = rng.poisson(rate) as f64;
            let fc = m.forecast(t, 60.0, &p);
            m.update(t, [60_000.0, 100.0, c], true, &fc, &p);
        }
        m
    }

    #[test]
    fn rate_noise_is_what_counting_noise_does_not_explain() {
        let p = params(60.0);
        let conns = Metric::Connections.index();
        // Poisson counts alone: no rate noise beyond the floor.
        let quiet = learn_counts(13.0, 0.0, 3000).forecast(3000 * 60_000, 60.0, &p);
        let ex = quiet.expect[conns];
        assert!(ex.extra < 0.17, "{ex:?}");
        assert!((ex.count_var - 1.0 / 14.0).abs() < 0.01, "{ex:?}");
        // The median count expected is the rate's.
        assert!((quiet.z(Metric::Connections, 13.0)).abs() < 0.3);
        // With 30 % of log-normal rate noise, that is what is left.
        let noisy = learn_counts(13.0, 0.3, 3000).forecast(3000 * 60_000, 60.0, &p);
        let ex = noisy.expect[conns];
        assert!((0.25..0.36).contains(&ex.extra), "{ex:?}");
        // Bytes keep the log-rate z.
        assert_eq!(noisy.expect[Metric::Bytes.index()].extra, 0.0);
    }

    #[test]
    fn count_scores_are_calibrated_on_counting_noise() {
        // Learnt on Poisson counts of 13 a minute, then scored on more of them: the
        // share of z ≥ 2 is not above the normal tail's (2.3 %; below it here, as
        // `scaleFloor` assumes 15 % of rate noise this series does not have), and
        // z ≥ 4 is rare.
        use crate::baseline::eval::traffic::Rng;
        let p = params(60.0);
        let mut m = learn_counts(13.0, 0.0, 2000);
        let mut rng = Rng::new(5);
        let (mut over2, mut over4, n) = (0, 0, 20_000u64);
        for i in 2000..2000 + n {
            let t = i * 60_000;
            let c = rng.poisson(13.0) as f64;
            let fc = m.forecast(t, 60.0, &p);
            let z = fc.z(Metric::Connections, c);
            over2 += u32::from(z >= 2.0);
            over4 += u32::from(z >= 4.0);
            m.update(t, [60_000.0, 100.0, c], true, &fc, &p);
        }
        let share = f64::from(over2) / n as f64;
        assert!((0.005..0.03).contains(&share), "{share}");
        assert!(over4 <= 3, "{over4}");
    }

    #[test]
    fn a_baseline_without_counting_variance_scores_conservatively() {
        // A file written before `cvar` existed: all of `dev` counts as rate noise.
        let p = params(60.0);
        let mut m = learn_counts(13.0, 0.0, 1000);
        let fc = m.forecast(1000 * 60_000, 60.0, &p);
        let json = serde_json::to_value(&m).expect("json");
        let mut old = json.clone();
        for s in old["series"].as_array_mut().expect("series") {
            s.as_object_mut().expect("series").remove("cvar");
        }
        m = serde_json::from_value(old).expect("old file");
        assert!(m.is_valid());
        let old_fc = m.forecast(1000 * 60_000, 60.0, &p);
        let conns = Metric::Connections;
        assert!(old_fc.expect[conns.index()].extra > fc.expect[conns.index()].extra);
        assert!(old_fc.z(conns, 39.0) < fc.z(conns, 39.0));
    }

    #[test]
    fn counting_noise_keeps_small_counts_calm() {
        let p = params(1.0);
        let mut m = RateModel::new(0);
        for t in 0..100u64 {
            let fc = m.forecast(t * 1000, 1.0, &p);
            m.update(t * 1000, [1000.0, 10.0, (t % 2) as f64], true, &fc, &p);
        }
        let fc = m.forecast(100_000, 1.0, &p);
        // Three connections where one or none is usual: not a spike.
        assert!(fc.z(Metric::Connections, 3.0) < 4.0);
    }
}
