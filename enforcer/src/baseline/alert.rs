//! Alerts: what the detectors raise, the bounded in-memory history behind
//! `/v1/alerts`, and the counts behind the Prometheus metrics.
use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::{EdgeRef, model::Metric};
use crate::graph::proto_name;

/// What an alert is about; each kind is one detector with its own switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// Two nodes that never talked while learning now do.
    NewEdge,
    /// A known pair on a new port or protocol.
    NewPort,
    /// Bytes/s, packets/s or new connections/s far above the baseline.
    Spike,
    /// A normally busy edge (or workload) with no traffic.
    Silence,
    /// One source reaching many distinct peers or ports: a scan.
    FanOut,
    /// A burst of denied packets for one workload.
    DenyBurst,
}

impl AlertKind {
    pub const ALL: [AlertKind; 6] = [
        AlertKind::NewEdge,
        AlertKind::NewPort,
        AlertKind::Spike,
        AlertKind::Silence,
        AlertKind::FanOut,
        AlertKind::DenyBurst,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::NewEdge => "new_edge",
            AlertKind::NewPort => "new_port",
            AlertKind::Spike => "spike",
            AlertKind::Silence => "silence",
            AlertKind::FanOut => "fan_out",
            AlertKind::DenyBurst => "deny_burst",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for AlertKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 3] = [Severity::Info, Severity::Warning, Severity::Critical];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Firing,
    Resolved,
}

/// The edge of an alert, as the graph names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertEdge {
    pub src: String,
    pub dst: String,
    pub protocol: String,
    pub port: u16,
}

impl From<&EdgeRef> for AlertEdge {
    fn from(e: &EdgeRef) -> Self {
        Self {
            src: e.src.clone(),
            dst: e.dst.clone(),
            protocol: proto_name(e.proto),
            port: e.port,
        }
    }
}

/// One alert: raised once per anomaly (deduplicated by `key`), resolved when it ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Unique within one agent run (increasing).
    pub id: u64,
    /// Deduplication key: one firing alert per key.
    pub key: String,
    pub kind: AlertKind,
    pub severity: Severity,
    pub state: AlertState,
    /// One line for a human.
    pub summary: String,
    /// Workloads involved (graph node ids that are workloads).
    pub workloads: Vec<String>,
    /// The edge, for edge alerts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge: Option<AlertEdge>,
    /// The source node, for fan-out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The metric judged (spike, silence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<Metric>,
    /// Unit of `observed` and `expected`.
    pub unit: String,
    /// When it fired (then the largest seen while firing, for spikes and bursts).
    pub observed: f64,
    /// What the baseline expected then.
    pub expected: f64,
    /// Start of the first interval beyond the threshold (RFC 3339).
    pub start: String,
    /// When the detector fired.
    pub detected: String,
    /// When it cleared (end of the last anomalous interval); absent while firing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    #[serde(default)]
    pub start_ms: u64,
    #[serde(default)]
    pub detected_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_ms: Option<u64>,
}

/// Filters of `/v1/alerts` and `enforcer alerts`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertFilter {
    /// `firing` or `resolved`.
    pub state: Option<String>,
    pub kind: Option<String>,
    /// Involves this workload or node (either side, or the source).
    pub workload: Option<String>,
}

impl AlertFilter {
    /// Checks the values before use.
    pub fn check(&self) -> Result<(), String> {
        if let Some(s) = &self.state
            && s != "firing"
            && s != "resolved"
        {
            return Err(format!("state {s:?} must be firing or resolved"));
        }
        if let Some(k) = &self.kind
            && AlertKind::parse(k).is_none()
        {
            let all: Vec<&str> = AlertKind::ALL.iter().map(|k| k.as_str()).collect();
            return Err(format!("kind {k:?} must be one of {}", all.join(", ")));
        }
        Ok(())
    }

    pub fn matches(&self, a: &Alert) -> bool {
        let state = match a.state {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        };
        self.state.as_ref().is_none_or(|s| s == state)
            && self.kind.as_ref().is_none_or(|k| k == a.kind.as_str())
            && self.workload.as_ref().is_none_or(|w| {
                a.workloads.contains(w)
                    || a.source.as_ref() == Some(w)
                    || a.edge.as_ref().is_some_and(|e| e.src == *w || e.dst == *w)
            })
    }
}

/// Firing alerts by kind and severity, and alerts raised since start by kind: for
/// `enforcer_baseline_alerts_firing{kind,severity}` and
/// `enforcer_baseline_alerts_total{kind}`. Every kind (and severity) is present, so
/// the series exist from the start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AlertCounts {
    pub firing: BTreeMap<AlertKind, BTreeMap<Severity, u64>>,
    pub raised_total: BTreeMap<AlertKind, u64>,
}

impl AlertCounts {
    pub fn zero() -> Self {
        let sev: BTreeMap<Severity, u64> = Severity::ALL.iter().map(|s| (*s, 0)).collect();
        Self {
            firing: AlertKind::ALL.iter().map(|k| (*k, sev.clone())).collect(),
            raised_total: AlertKind::ALL.iter().map(|k| (*k, 0)).collect(),
        }
    }
}

/// The most recent alerts, bounded; firing ones are updated in place when they end.
#[derive(Debug)]
pub struct AlertLog {
    buf: VecDeque<Alert>,
    cap: usize,
    raised: BTreeMap<AlertKind, u64>,
}

impl AlertLog {
    pub fn new(cap: usize) -> Self {
        Self {
            buf: VecDeque::new(),
            cap: cap.max(1),
            raised: BTreeMap::new(),
        }
    }

    /// Records a transition from the engine.
    pub fn record(&mut self, a: &Alert) {
        match a.state {
            AlertState::Firing => {
                *self.raised.entry(a.kind).or_default() += 1;
                if self.buf.len() == self.cap {
                    self.buf.pop_front();
                }
                self.buf.push_back(a.clone());
            }
            AlertState::Resolved => {
                if let Some(old) = self.buf.iter_mut().rev().find(|o| o.id == a.id) {
                    *old = a.clone();
                }
            }
        }
    }

    /// Up to `limit` newest matching alerts, oldest first.
    pub fn query(&self, f: &AlertFilter, limit: usize) -> Vec<Alert> {
        let mut out: Vec<Alert> = self
            .buf
            .iter()
            .rev()
            .filter(|a| f.matches(a))
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        out
    }

    pub fn counts<'a>(&self, firing: impl Iterator<Item = &'a Alert>) -> AlertCounts {
        let mut c = AlertCounts::zero();
        for a in firing {
            *c.firing
                .entry(a.kind)
                .or_default()
                .entry(a.severity)
                .or_default() += 1;
        }
        for (k, n) in &self.raised {
            c.raised_total.insert(*k, *n);
        }
        c
    }

    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn alert(id: u64, kind: AlertKind, state: AlertState) -> Alert {
        Alert {
            id,
            key: format!("k{id}"),
            kind,
            severity: Severity::Warning,
            state,
            summary: String::new(),
            workloads: vec!["web".into()],
            edge: None,
            source: None,
            metric: None,
            unit: String::new(),
            observed: 1.0,
            expected: 0.0,
            start: String::new(),
            detected: String::new(),
            end: None,
            start_ms: 0,
            detected_ms: 0,
            end_ms: None,
        }
    }

    #[test]
    fn log_is_bounded_and_resolves_in_place() {
        let mut log = AlertLog::new(2);
        for id in 1..=3 {
            log.record(&alert(id, AlertKind::Spike, AlertState::Firing));
        }
        assert_eq!(log.len(), 2);
        log.record(&alert(3, AlertKind::Spike, AlertState::Resolved));
        let f = AlertFilter {
            state: Some("resolved".into()),
            ..Default::default()
        };
        assert_eq!(log.query(&f, 10).len(), 1);
        let all = log.query(&AlertFilter::default(), 10);
        assert_eq!(all.iter().map(|a| a.id).collect::<Vec<_>>(), vec![2, 3]);
        let firing = [alert(9, AlertKind::FanOut, AlertState::Firing)];
        let c = log.counts(firing.iter());
        assert_eq!(c.raised_total[&AlertKind::Spike], 3);
        assert_eq!(c.raised_total[&AlertKind::NewEdge], 0);
        assert_eq!(c.firing[&AlertKind::FanOut][&Severity::Warning], 1);
        let w = AlertFilter {
            workload: Some("web".into()),
            kind: Some("spike".into()),
            ..Default::default()
        };
        assert_eq!(log.query(&w, 10).len(), 2);
        assert!(
            AlertFilter {
                kind: Some("nope".into()),
                ..Default::default()
            }
            .check()
            .is_err()
        );
    }
}
