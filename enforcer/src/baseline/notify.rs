//! Push of anomaly alerts to Alertmanager's v2 API (`POST /api/v2/alerts`), optional.
//!
//! Every transition (firing, resolved) is sent at once; firing alerts are sent again
//! every `resendSecs`, with `endsAt` four re-sends ahead, so Alertmanager keeps them
//! active while the agent runs and resolves them on its own if the agent dies, the way
//! Prometheus itself does. A failed push is logged and counted, never retried beyond
//! the next re-send: the alert history, log and metrics stay the record.
use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::{Receiver, error::RecvError};

use super::{Alert, AlertState, BaselineError};

/// The `alertmanager:` section of `baseline:` in the agent config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct AlertmanagerSettings {
    /// Alertmanager base URLs, `http://` or `https://` (each gets every alert)
    /// [default: none: no push].
    pub urls: Vec<String>,
    /// Seconds between re-sends of the firing alerts [default: 60].
    pub resend_secs: u64,
    /// Timeout of one request, seconds [default: 10].
    pub timeout_secs: u64,
    /// Labels added to every alert, e.g. `cluster: prod`.
    pub labels: BTreeMap<String, String>,
}

impl Default for AlertmanagerSettings {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            resend_secs: 60,
            timeout_secs: 10,
            labels: BTreeMap::new(),
        }
    }
}

impl AlertmanagerSettings {
    pub fn enabled(&self) -> bool {
        !self.urls.is_empty()
    }

    pub fn validate(&self) -> Result<(), BaselineError> {
        let bad =
            |field: &'static str, reason: String| Err(BaselineError::Setting { field, reason });
        for u in &self.urls {
            let rest = u
                .strip_prefix("http://")
                .or_else(|| u.strip_prefix("https://"));
            if rest.is_none_or(|r| r.is_empty() || r.starts_with('/')) {
                return bad(
                    "alertmanager.urls",
                    format!("{u:?} is not an http:// or https:// URL with a host"),
                );
            }
        }
        if self.resend_secs == 0 {
            return bad("alertmanager.resendSecs", "must be at least 1".into());
        }
        if self.timeout_secs == 0 {
            return bad("alertmanager.timeoutSecs", "must be at least 1".into());
        }
        for k in self.labels.keys() {
            let valid = k
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return bad(
                    "alertmanager.labels",
                    format!("{k:?} is not a label name ([a-zA-Z_][a-zA-Z0-9_]*)"),
                );
            }
        }
        Ok(())
    }

    /// The endpoint alerts are posted to, for a base URL.
    fn endpoint(base: &str) -> String {
        format!("{}/api/v2/alerts", base.trim_end_matches('/'))
    }
}

/// What the pushes did, for `enforcer baseline status` and the metrics.
#[derive(Debug, Default)]
pub struct PushStats {
    pub sent: AtomicU64,
    pub failed: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// A snapshot of [`PushStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushStatus {
    pub urls: Vec<String>,
    /// Requests Alertmanager accepted.
    pub sent: u64,
    /// Requests that failed (connection, timeout, non-2xx answer).
    pub failed: u64,
    pub last_error: Option<String>,
}

impl PushStats {
    pub fn status(&self, urls: &[String]) -> PushStatus {
        PushStatus {
            urls: urls.to_vec(),
            sent: self.sent.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        }
    }
}

/// One alert as Alertmanager's `postableAlert`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostableAlert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    pub ends_at: String,
}

/// Labels identify an alert in Alertmanager (it groups and deduplicates by them):
/// the same anomaly keeps the same set from firing to resolved.
pub fn postable(
    a: &Alert,
    instance: &str,
    node: &str,
    extra: &BTreeMap<String, String>,
    ends_at: SystemTime,
) -> PostableAlert {
    let mut labels = extra.clone();
    let mut set = |k: &str, v: String| {
        labels.insert(k.to_owned(), v);
    };
    set("alertname", "EnforcerAnomaly".into());
    set("kind", a.kind.as_str().into());
    set("severity", a.severity.as_str().into());
    set("enforcer_instance", instance.into());
    set("node", node.into());
    if let Some(e) = &a.edge {
        set("src", e.src.clone());
        set("dst", e.dst.clone());
        set("protocol", e.protocol.clone());
        set("port", e.port.to_string());
    }
    if let Some(s) = &a.source {
        set("source", s.clone());
    }
    if a.edge.is_none()
        && a.source.is_none()
        && let Some(w) = a.workloads.first()
    {
        set("workload", w.clone());
    }
    if let Some(m) = a.metric {
        set("metric", m.unit().into());
    }
    let mut annotations = BTreeMap::new();
    annotations.insert("summary".to_owned(), a.summary.clone());
    annotations.insert(
        "observed".to_owned(),
        format!("{:.6} {}", a.observed, a.unit),
    );
    annotations.insert(
        "expected".to_owned(),
        format!("{:.6} {}", a.expected, a.unit),
    );
    annotations.insert("workloads".to_owned(), a.workloads.join(","));
    annotations.insert("alert_id".to_owned(), a.id.to_string());
    let ends_at = match (&a.state, &a.end) {
        (AlertState::Resolved, Some(end)) => end.clone(),
        _ => humantime::format_rfc3339_millis(ends_at).to_string(),
    };
    PostableAlert {
        labels,
        annotations,
        starts_at: a.start.clone(),
        ends_at,
    }
}

/// The host name, for the `node` label (a DaemonSet pod runs with the node's name in
/// `NODE_NAME` when the manifest sets it; else the kernel's host name).
pub fn node_name() -> String {
    std::env::var("NODE_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .or_else(|| {
            nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
        })
        .unwrap_or_default()
}

/// Runs until the alert stream closes: posts every transition, and re-sends the
/// firing alerts every `resendSecs`. `firing_now` gives the firing alerts (at start
/// and after the stream lagged).
pub async fn run(
    settings: AlertmanagerSettings,
    instance: String,
    mut alerts: Receiver<Alert>,
    firing_now: impl Fn() -> Vec<Alert>,
    stats: Arc<PushStats>,
) {
    let node = node_name();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(settings.timeout_secs)))
        .build()
        .into();
    let resend = Duration::from_secs(settings.resend_secs);
    let mut firing: BTreeMap<u64, Alert> = firing_now().into_iter().map(|a| (a.id, a)).collect();
    let mut tick = tokio::time::interval(resend);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let batch: Vec<Alert> = tokio::select! {
            r = alerts.recv() => match r {
                Ok(a) => {
                    match a.state {
                        AlertState::Firing => firing.insert(a.id, a.clone()),
                        AlertState::Resolved => firing.remove(&a.id),
                    };
                    vec![a]
                }
                Err(RecvError::Lagged(_)) => {
                    firing = firing_now().into_iter().map(|a| (a.id, a)).collect();
                    firing.values().cloned().collect()
                }
                Err(RecvError::Closed) => return,
            },
            _ = tick.tick() => firing.values().cloned().collect(),
        };
        if batch.is_empty() {
            continue;
        }
        let ends_at = SystemTime::now() + 4 * resend;
        let body: Vec<PostableAlert> = batch
            .iter()
            .map(|a| postable(a, &instance, &node, &settings.labels, ends_at))
            .collect();
        let Ok(body) = serde_json::to_vec(&body) else {
            continue;
        };
        for url in &settings.urls {
            let (agent, stats, body) = (agent.clone(), stats.clone(), body.clone());
            let endpoint = AlertmanagerSettings::endpoint(url);
            let n = batch.len();
            // The request blocks: off the runtime's worker threads.
            let _ = tokio::task::spawn_blocking(move || {
                push(&agent, &endpoint, &body, n, &stats);
            })
            .await;
        }
    }
}

fn push(agent: &ureq::Agent, endpoint: &str, body: &[u8], alerts: usize, stats: &PushStats) {
    match agent
        .post(endpoint)
        .content_type("application/json")
        .send(body)
    {
        Ok(_) => {
            stats.sent.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(endpoint, alerts, "alerts pushed to Alertmanager");
        }
        Err(e) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            let msg = format!("{endpoint}: {e}");
            tracing::warn!(
                event = "alertmanager_push_failed",
                endpoint,
                alerts,
                error = %e,
                "pushing alerts to Alertmanager failed; they are sent again at the next re-send"
            );
            *stats
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::{AlertKind, Severity, alert::AlertEdge};

    fn alert(state: AlertState) -> Alert {
        Alert {
            id: 7,
            key: "spike client->web TCP/5201 bytes".into(),
            kind: AlertKind::Spike,
            severity: Severity::Critical,
            state,
            summary: "client -> web TCP/5201 bytes/s 40x expected".into(),
            workloads: vec!["client".into(), "web".into()],
            edge: Some(AlertEdge {
                src: "client".into(),
                dst: "web".into(),
                protocol: "TCP".into(),
                port: 5201,
            }),
            source: None,
            metric: Some(crate::baseline::model::Metric::Bytes),
            unit: "bytes/s".into(),
            observed: 4e6,
            expected: 1e5,
            start: "2026-12-04T10:00:00.000Z".into(),
            detected: "2026-12-04T10:00:02.000Z".into(),
            end: (state == AlertState::Resolved).then(|| "2026-12-04T10:05:00.000Z".into()),
            start_ms: 0,
            detected_ms: 0,
            end_ms: None,
        }
    }

    #[test]
    fn firing_and_resolved_carry_the_same_labels() {
        let extra: BTreeMap<String, String> = [("cluster".to_owned(), "prod".to_owned())].into();
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let f = postable(&alert(AlertState::Firing), "default", "node-a", &extra, t);
        let r = postable(&alert(AlertState::Resolved), "default", "node-a", &extra, t);
        assert_eq!(f.labels, r.labels);
        assert_eq!(f.labels["alertname"], "EnforcerAnomaly");
        assert_eq!(f.labels["kind"], "spike");
        assert_eq!(f.labels["severity"], "critical");
        assert_eq!(f.labels["port"], "5201");
        assert_eq!(f.labels["cluster"], "prod");
        assert_eq!(f.labels["node"], "node-a");
        assert_eq!(f.ends_at, "2027-01-15T08:00:00.000Z");
        assert_eq!(r.ends_at, "2026-12-04T10:05:00.000Z");
        assert_eq!(f.starts_at, "2026-12-04T10:00:00.000Z");
        let json = serde_json::to_value(&f).expect("json");
        assert!(json.get("startsAt").is_some() && json.get("endsAt").is_some());
    }

    #[test]
    fn settings_are_validated_with_the_field_named() {
        let ok = AlertmanagerSettings {
            urls: vec!["http://127.0.0.1:9093".into(), "https://am.example/".into()],
            ..Default::default()
        };
        assert!(ok.validate().is_ok());
        assert_eq!(
            AlertmanagerSettings::endpoint("https://am.example/"),
            "https://am.example/api/v2/alerts"
        );
        for (s, field) in [
            (
                AlertmanagerSettings {
                    urls: vec!["am:9093".into()],
                    ..Default::default()
                },
                "alertmanager.urls",
            ),
            (
                AlertmanagerSettings {
                    urls: vec!["http://".into()],
                    ..Default::default()
                },
                "alertmanager.urls",
            ),
            (
                AlertmanagerSettings {
                    resend_secs: 0,
                    ..Default::default()
                },
                "alertmanager.resendSecs",
            ),
            (
                AlertmanagerSettings {
                    labels: [("bad-name".to_owned(), "x".to_owned())].into(),
                    ..Default::default()
                },
                "alertmanager.labels",
            ),
        ] {
            match s.validate() {
                Err(BaselineError::Setting { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{s:?}: {other:?}"),
            }
        }
    }

    /// A failed push (nothing listens) is counted and remembered, not fatal.
    #[test]
    fn a_failed_push_is_counted() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(2)))
            .build()
            .into();
        let stats = PushStats::default();
        push(
            &agent,
            &AlertmanagerSettings::endpoint(&format!("http://{addr}")),
            b"[]",
            0,
            &stats,
        );
        let st = stats.status(&[]);
        assert_eq!((st.sent, st.failed), (0, 1));
        assert!(st.last_error.is_some_and(|e| e.contains(&addr.to_string())));
    }
}
