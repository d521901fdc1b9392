//! Baseline settings: the `baseline:` section of the agent config file, some of them
//! also flags (`--baseline-*`). Every default is documented here and in
//! `docs/baseline.md`.
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::BaselineError;

/// Where the baseline of an instance is kept by default.
pub fn default_file(instance: &str) -> PathBuf {
    PathBuf::from("/var/lib/enforcer")
        .join(instance)
        .join("baseline.json")
}

/// The baseline as a whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Settings {
    /// Learn and detect at all [default: true].
    pub enabled: bool,
    /// Baseline file [default: /var/lib/enforcer/<instance>/baseline.json].
    pub file: Option<PathBuf>,
    /// Seconds between saves of the baseline file (also saved at shutdown) [default: 300].
    pub save_interval_secs: u64,
    /// Length of one detection interval in seconds: traffic is summed over it, then
    /// every detector runs once [default: 60].
    pub interval_secs: u64,
    /// Learning period in seconds: no alerts, everything seen is normal [default: 86400].
    pub learning_secs: u64,
    /// Most edges with a baseline; beyond it the least recently active is forgotten
    /// [default: 10000].
    pub max_edges: usize,
    /// An edge idle this long is forgotten (and is new again) [default: 691200, 8 days].
    pub edge_retention_secs: u64,
    /// Alerts kept in memory for `/v1/alerts` and `enforcer alerts` [default: 1000].
    pub history: usize,
    pub detectors: Detectors,
    /// Push alerts to Alertmanager (docs/baseline.md, "Alertmanager") [default: off].
    pub alertmanager: super::notify::AlertmanagerSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            enabled: true,
            file: None,
            save_interval_secs: 300,
            interval_secs: 60,
            learning_secs: 86_400,
            max_edges: 10_000,
            edge_retention_secs: 8 * 86_400,
            history: 1000,
            detectors: Detectors::default(),
            alertmanager: super::notify::AlertmanagerSettings::default(),
        }
    }
}

/// Detector switches and thresholds, and the rate model's time constants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Detectors {
    /// (a) An edge between two nodes never seen talking.
    pub new_edge: bool,
    /// (b) A known pair on a new port or protocol.
    pub new_port: bool,
    /// (c) Bytes/s, packets/s or new connections/s far above the baseline.
    pub spike: bool,
    /// (d) A normally busy edge going silent.
    pub silence: bool,
    /// (e) One source reaching many distinct peers or ports (scans).
    pub fan_out: bool,
    /// (f) A burst of denied packets for a workload.
    pub deny_burst: bool,
    /// Spike and silence also on each workload's total traffic.
    pub workload_rates: bool,
    /// All `world:<prefix>` nodes count as one peer for new-edge and new-port: a
    /// workload that already talks to the internet is not alerted for every new prefix.
    pub aggregate_world: bool,
    /// Seconds a new-edge or new-port alert stays firing.
    pub event_hold_secs: u64,
    /// Active intervals an edge needs before spike and silence judge it.
    pub min_samples: u32,
    /// z-score of a spike against the seasonal expectation: of the log rate for
    /// bytes, count-aware for packets and connections (`model::count_z`).
    pub spike_z: f64,
    /// Observed at least this many times the expected rate.
    pub spike_min_ratio: f64,
    /// Intervals beyond the threshold before a spike fires (k), within one run of
    /// consecutive intervals none of which is calm: an interval between the two
    /// thresholds neither counts nor restarts the run.
    pub spike_intervals: u32,
    /// Pooled evidence: k consecutive intervals each with z at least this (and the
    /// ratio and excess of a spike) whose mean z reaches `spike_z` fire as well, so
    /// that a spike hovering around the threshold is not missed for one interval
    /// just under it. Equal to `spike_z`: no pooling.
    pub spike_pool_z: f64,
    /// Smallest excess over the expected rate that counts, per metric.
    pub min_excess_bytes_per_sec: f64,
    pub min_excess_packets_per_sec: f64,
    pub min_excess_connections_per_sec: f64,
    /// Hysteresis: a rate alert clears after `clear_intervals` consecutive intervals
    /// with z below `clear_z` (or the ratio below half of `spike_min_ratio`).
    pub clear_z: f64,
    pub clear_intervals: u32,
    /// Silence: packets at most this fraction of the expected count...
    pub silence_fraction: f64,
    /// ...for this many consecutive intervals...
    pub silence_intervals: u32,
    /// ...on an edge expected to carry at least this many packets/s (and 10 per
    /// interval) and to be active in at least 99% of intervals at this time of day.
    pub silence_min_packets_per_sec: f64,
    /// ...and active for at least this long (seconds; active intervals × their
    /// length, so the idle time after it stopped does not count): a short-lived
    /// edge that stops is not a silence.
    pub silence_min_age_secs: u64,
    /// Fan-out window: distinct targets are counted over the last this many seconds.
    pub fanout_window_secs: u64,
    /// A source fires when it reaches at least this many distinct (peer, protocol,
    /// port) targets in the window...
    pub fanout_min_targets: u32,
    /// ...or this many distinct peers...
    pub fanout_min_peers: u32,
    /// ...and at least this many times its own learned peak.
    pub fanout_ratio: f64,
    /// Deny burst: denied packets/s of a workload at least this...
    pub deny_min_per_sec: f64,
    /// ...and this many times the workload's usual deny rate, with z ≥ `spike_z`.
    pub deny_min_ratio: f64,
    /// Consecutive intervals of a deny burst before it fires.
    pub deny_intervals: u32,
    /// Rate model: time constant of the short-term level (seconds): how fast a
    /// lasting change of an edge's traffic becomes its new normal.
    pub level_window_secs: u64,
    /// Rate model: time constant of the slow, deseasonalised level (seconds).
    pub slow_level_window_secs: u64,
    /// Rate model: time constant of the deviation estimate (seconds).
    pub deviation_window_secs: u64,
    /// Rate model: days of history before the hour-of-day profile is used.
    pub daily_after_days: u32,
    /// Rate model: days of history before the hour-of-week profile is used.
    pub weekly_after_days: u32,
    /// Rate model: memory of the hour-of-day profile, days.
    pub daily_memory_days: f64,
    /// Rate model: memory of the hour-of-week profile, weeks.
    pub weekly_memory_weeks: f64,
    /// Rate model: smallest scale (log units, 0.15 ≈ ±15%) so that a perfectly steady
    /// edge does not alert on a tiny wiggle.
    pub scale_floor: f64,
}

impl Default for Detectors {
    fn default() -> Self {
        Self {
            new_edge: true,
            new_port: true,
            spike: true,
            silence: true,
            fan_out: true,
            deny_burst: true,
            workload_rates: true,
            aggregate_world: true,
            event_hold_secs: 300,
            min_samples: 5,
            spike_z: 4.0,
            spike_min_ratio: 2.0,
            spike_intervals: 2,
            spike_pool_z: 3.0,
            min_excess_bytes_per_sec: 1024.0,
            min_excess_packets_per_sec: 2.0,
            min_excess_connections_per_sec: 0.25,
            clear_z: 2.0,
            clear_intervals: 3,
            silence_fraction: 0.05,
            silence_intervals: 3,
            silence_min_packets_per_sec: 1.0,
            silence_min_age_secs: 3600,
            fanout_window_secs: 300,
            fanout_min_targets: 50,
            fanout_min_peers: 20,
            fanout_ratio: 3.0,
            deny_min_per_sec: 1.0,
            deny_min_ratio: 3.0,
            deny_intervals: 1,
            level_window_secs: 3600,
            slow_level_window_secs: 3 * 86_400,
            deviation_window_secs: 6 * 3600,
            daily_after_days: 2,
            weekly_after_days: 7,
            daily_memory_days: 2.0,
            weekly_memory_weeks: 2.0,
            scale_floor: 0.15,
        }
    }
}

// Config structs compare with `Eq`. A NaN would break reflexivity, and `validate`
// rejects every NaN before settings are used.
impl Eq for Settings {}
impl Eq for Detectors {}

impl Settings {
    /// Rejects values the detectors cannot work with.
    pub fn validate(&self) -> Result<(), BaselineError> {
        let bad = |field: &'static str, reason: &str| {
            Err(BaselineError::Setting {
                field,
                reason: reason.into(),
            })
        };
        let d = &self.detectors;
        if self.interval_secs == 0 || self.interval_secs > 3600 {
            return bad("intervalSecs", "must be between 1 and 3600");
        }
        if self.max_edges == 0 {
            return bad("maxEdges", "must be at least 1");
        }
        self.alertmanager.validate()?;
        if self.save_interval_secs == 0 {
            return bad("saveIntervalSecs", "must be at least 1");
        }
        for (f, v) in [
            ("spikeZ", d.spike_z),
            ("spikeMinRatio", d.spike_min_ratio),
            ("clearZ", d.clear_z),
            ("fanoutRatio", d.fanout_ratio),
            ("denyMinRatio", d.deny_min_ratio),
            ("scaleFloor", d.scale_floor),
            ("dailyMemoryDays", d.daily_memory_days),
            ("weeklyMemoryWeeks", d.weekly_memory_weeks),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return bad(f, "must be a positive number");
            }
        }
        for (f, v) in [
            ("minExcessBytesPerSec", d.min_excess_bytes_per_sec),
            ("minExcessPacketsPerSec", d.min_excess_packets_per_sec),
            (
                "minExcessConnectionsPerSec",
                d.min_excess_connections_per_sec,
            ),
            ("silenceMinPacketsPerSec", d.silence_min_packets_per_sec),
            ("denyMinPerSec", d.deny_min_per_sec),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(f, "must be a number ≥ 0");
            }
        }
        if !(0.0..1.0).contains(&d.silence_fraction) {
            return bad("silenceFraction", "must be in [0, 1)");
        }
        if d.clear_z >= d.spike_z {
            return bad("clearZ", "must be below spikeZ (hysteresis)");
        }
        if !(d.clear_z..=d.spike_z).contains(&d.spike_pool_z) {
            return bad("spikePoolZ", "must be between clearZ and spikeZ");
        }
        if d.spike_intervals as usize > super::rules::MAX_SPIKE_INTERVALS {
            return bad("spikeIntervals", "must be at most 16");
        }
        for (f, v) in [
            ("spikeIntervals", d.spike_intervals),
            ("clearIntervals", d.clear_intervals),
            ("silenceIntervals", d.silence_intervals),
            ("denyIntervals", d.deny_intervals),
        ] {
            if v == 0 {
                return bad(f, "must be at least 1");
            }
        }
        if d.level_window_secs == 0 || d.slow_level_window_secs == 0 || d.deviation_window_secs == 0
        {
            return bad("levelWindowSecs", "windows must be at least 1 s");
        }
        if d.silence_intervals > super::model::IDLE_DEFER {
            return bad("silenceIntervals", "must be at most 30");
        }
        Ok(())
    }

    /// The baseline file, given the instance name.
    pub fn file_for(&self, instance: &str) -> PathBuf {
        self.file.clone().unwrap_or_else(|| default_file(instance))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_yaml_overrides_fields() {
        Settings::default().validate().expect("defaults valid");
        let s: Settings = serde_yaml_ng::from_str(
            "learningSecs: 5\nintervalSecs: 1\ndetectors: {spikeZ: 5.0, silence: false}\n",
        )
        .expect("yaml");
        assert_eq!((s.learning_secs, s.interval_secs), (5, 1));
        assert_eq!(s.detectors.spike_z, 5.0);
        assert!(!s.detectors.silence);
        assert_eq!(s.detectors.spike_intervals, 2);
        s.validate().expect("valid");
        let bad: Result<Settings, _> = serde_yaml_ng::from_str("detectors: {spikeZed: 1}\n");
        assert!(bad.is_err(), "unknown field rejected");
        let s = Settings {
            interval_secs: 0,
            ..Settings::default()
        };
        assert!(s.validate().is_err());
    }
}
