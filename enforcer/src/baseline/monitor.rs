//! The baseline inside the agent: sums the graph's flow deltas into detection
//! intervals aligned on the wall clock, runs the engine when one closes, logs every
//! alert transition (`event="alert"`), keeps the bounded history for `/v1/alerts`,
//! streams it to followers, and saves the baseline file on an interval and at
//! shutdown.
use std::{path::PathBuf, time::SystemTime};

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::{
    Alert, AlertCounts, AlertState, Engine,
    alert::{AlertFilter, AlertLog},
    fmt_ms,
    obs::Accumulator,
    settings::Settings,
    store::{self, BaselineFile, Loaded},
    unix_ms,
};
use std::sync::Arc;

use super::notify::PushStats;
use crate::graph::{Delta, GraphView};

/// What `enforcer baseline status` shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BaselineStatus {
    pub enabled: bool,
    pub file: String,
    pub learning: bool,
    pub learning_started: Option<String>,
    pub learning_ends: Option<String>,
    pub interval_secs: u64,
    pub learning_secs: u64,
    pub edges: usize,
    pub workloads: usize,
    pub pairs: usize,
    pub fanout_sources: usize,
    /// Approximate memory of the baselines.
    pub memory_bytes: usize,
    pub intervals: u64,
    pub edges_evicted: u64,
    pub new_edges_suppressed: u64,
    /// How the baseline file was loaded at start (or at reset).
    pub loaded: Option<Loaded>,
    pub last_saved: Option<String>,
    pub last_save_error: Option<String>,
    pub firing: usize,
    pub alerts: AlertCounts,
    /// Pushes to Alertmanager, when configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alertmanager: Option<super::notify::PushStatus>,
}

pub struct Monitor {
    settings: Settings,
    file: PathBuf,
    engine: Engine,
    log: AlertLog,
    acc: Accumulator,
    /// Index (`unix ms / interval ms`) of the interval being summed.
    current: Option<u64>,
    /// The current interval started before the agent did: not judged.
    skip: bool,
    polls: u64,
    loaded: Loaded,
    last_save_ms: u64,
    last_saved: Option<String>,
    last_save_error: Option<String>,
    follow: tokio::sync::broadcast::Sender<Alert>,
    push: Arc<PushStats>,
}

impl Monitor {
    /// Loads (or starts) the baseline of `instance`.
    pub fn open(settings: Settings, instance: &str) -> Self {
        let file = settings.file_for(instance);
        let now = unix_ms(SystemTime::now());
        let (engine, loaded) = store::load(&file, &settings, now);
        match &loaded {
            Loaded::Fresh => info!(
                event = "baseline_loaded",
                file = %file.display(),
                learning_secs = settings.learning_secs,
                "no baseline file: learning"
            ),
            Loaded::Resumed { edges } => info!(
                event = "baseline_loaded",
                file = %file.display(),
                edges,
                learning = engine.learning(now),
                "baseline resumed"
            ),
            Loaded::SetAside { reason, set_aside } => warn!(
                event = "baseline_corrupt",
                file = %file.display(),
                set_aside = %set_aside,
                error = %reason,
                "baseline file unusable: set aside, learning again"
            ),
            Loaded::Unreadable { reason } => warn!(
                event = "baseline_corrupt",
                file = %file.display(),
                error = %reason,
                "baseline file unreadable: learning again"
            ),
        }
        let (follow, _) = tokio::sync::broadcast::channel(256);
        Self {
            log: AlertLog::new(settings.history),
            file,
            engine,
            acc: Accumulator::default(),
            current: None,
            skip: true,
            polls: 0,
            loaded,
            last_save_ms: now,
            last_saved: None,
            last_save_error: None,
            follow,
            push: Arc::default(),
            settings,
        }
    }

    /// The Alertmanager push settings, its counters, and the alerts firing now: what
    /// the notifier task needs (`notify::run`).
    pub fn push_handle(&self) -> (super::notify::AlertmanagerSettings, Arc<PushStats>) {
        (self.settings.alertmanager.clone(), self.push.clone())
    }

    pub fn firing(&self) -> Vec<Alert> {
        self.engine.firing().cloned().collect()
    }

    /// One poll of the flow map: its deltas, read at `now`.
    pub fn on_poll(&mut self, deltas: &[Delta], now: SystemTime) {
        let now_ms = unix_ms(now);
        let len = self.settings.interval_secs * 1000;
        let idx = now_ms / len;
        self.polls += 1;
        // The first poll after a start reports whole flow lifetimes, not deltas.
        if self.polls == 1 {
            self.current = Some(idx);
            self.skip = true;
            return;
        }
        let cur = *self.current.get_or_insert(idx);
        self.acc.add_deltas(deltas);
        if idx > cur {
            let iv = self.acc.take(cur * len, self.settings.interval_secs as f64);
            // After a stall (idx > cur + 1) the sums span several intervals: skip.
            if !self.skip && idx == cur + 1 {
                let alerts = self.engine.observe(&iv);
                self.emit(&alerts);
            }
            self.skip = false;
            self.current = Some(idx);
        }
        if now_ms.saturating_sub(self.last_save_ms) >= self.settings.save_interval_secs * 1000 {
            self.save();
        }
    }

    fn emit(&mut self, alerts: &[Alert]) {
        for a in alerts {
            log_alert(a);
            self.log.record(a);
            let _ = self.follow.send(a.clone());
        }
    }

    /// Writes the baseline file now.
    pub fn save(&mut self) {
        let now = unix_ms(SystemTime::now());
        self.last_save_ms = now;
        match store::save(&self.file, &self.engine.to_file(now)) {
            Ok(()) => {
                self.last_saved = Some(fmt_ms(now));
                self.last_save_error = None;
            }
            Err(e) => {
                if self.last_save_error.is_none() {
                    warn!(event = "baseline_save_failed", error = %e, "saving the baseline");
                }
                self.last_save_error = Some(e.to_string());
            }
        }
    }

    pub fn status(&self) -> BaselineStatus {
        let now = unix_ms(SystemTime::now());
        BaselineStatus {
            enabled: true,
            file: self.file.display().to_string(),
            learning: self.engine.learning(now),
            learning_started: self.engine.learning_started_ms.map(fmt_ms),
            learning_ends: self.engine.learning_ends_ms().map(fmt_ms),
            interval_secs: self.settings.interval_secs,
            learning_secs: self.settings.learning_secs,
            edges: self.engine.edge_count(),
            workloads: self.engine.workload_count(),
            pairs: self.engine.pairs.len(),
            fanout_sources: self.engine.fanout.peaks.len(),
            memory_bytes: self.engine.memory_bytes(),
            intervals: self.engine.stats.intervals,
            edges_evicted: self.engine.stats.edges_evicted,
            new_edges_suppressed: self.engine.stats.new_edges_suppressed,
            loaded: Some(self.loaded.clone()),
            last_saved: self.last_saved.clone(),
            last_save_error: self.last_save_error.clone(),
            firing: self.engine.firing().count(),
            alerts: self.counts(),
            alertmanager: self
                .settings
                .alertmanager
                .enabled()
                .then(|| self.push.status(&self.settings.alertmanager.urls)),
        }
    }

    /// The whole learnt state, as the file would hold it.
    pub fn export(&self) -> BaselineFile {
        self.engine.to_file(unix_ms(SystemTime::now()))
    }

    /// Forgets everything learnt (firing alerts resolve) and saves the empty baseline.
    pub fn reset(&mut self) {
        let now = unix_ms(SystemTime::now());
        let alerts = self.engine.reset(now);
        self.emit(&alerts);
        self.loaded = Loaded::Fresh;
        self.skip = true;
        info!(event = "baseline_reset", "baseline reset: learning again");
        self.save();
    }

    pub fn alerts(&self, f: &AlertFilter, limit: usize) -> Vec<Alert> {
        self.log.query(f, limit)
    }

    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Alert> {
        self.follow.subscribe()
    }

    /// Firing alerts by kind and severity, raised alerts by kind (for metrics).
    pub fn counts(&self) -> AlertCounts {
        self.log.counts(self.engine.firing())
    }

    /// Sets `anomalous` on every graph edge with a firing alert.
    pub fn mark_graph(&self, g: &mut GraphView) {
        for a in self.engine.firing() {
            let Some(ae) = &a.edge else { continue };
            for e in &mut g.edges {
                if e.src == ae.src
                    && e.dst == ae.dst
                    && e.port == ae.port
                    && e.protocol == ae.protocol
                {
                    e.anomalous = true;
                }
            }
        }
    }
}

fn log_alert(a: &Alert) {
    let (src, dst, protocol, port) = a.edge.as_ref().map_or(("", "", String::new(), 0), |e| {
        (e.src.as_str(), e.dst.as_str(), e.protocol.clone(), e.port)
    });
    let metric = a.metric.map(|m| m.unit()).unwrap_or("");
    let source = a.source.as_deref().unwrap_or("");
    let workloads = a.workloads.join(",");
    match a.state {
        AlertState::Firing => warn!(
            target: "enforcer::alerts",
            event = "alert",
            state = "firing",
            id = a.id,
            kind = %a.kind,
            severity = a.severity.as_str(),
            workloads = %workloads,
            src,
            dst,
            protocol = %protocol,
            port,
            source,
            metric,
            observed = a.observed,
            expected = a.expected,
            start = %a.start,
            "{}",
            a.summary
        ),
        AlertState::Resolved => info!(
            target: "enforcer::alerts",
            event = "alert",
            state = "resolved",
            id = a.id,
            kind = %a.kind,
            severity = a.severity.as_str(),
            workloads = %workloads,
            src,
            dst,
            protocol = %protocol,
            port,
            source,
            metric,
            observed = a.observed,
            expected = a.expected,
            start = %a.start,
            end = %a.end.clone().unwrap_or_default(),
            "{}",
            a.summary
        ),
    }
}
