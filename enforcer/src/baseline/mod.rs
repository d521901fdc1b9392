//! Traffic baseline and anomaly alerts (SS-028 10.1.8, 10.6.4): learns, per edge and
//! per workload, what normal traffic looks like (a robust seasonal model of bytes/s,
//! packets/s and new connections/s, which peers and ports each workload uses, how many
//! distinct targets each source reaches, how many denies each workload collects) and
//! raises deduplicated alerts when the live traffic departs from it.
//!
//! The detectors are pure: [`engine::Engine::observe`] takes one interval of per-edge
//! observations ([`obs::Interval`]) and returns alert transitions. The agent
//! ([`monitor::Monitor`]), the offline replay ([`replay`]) and the evaluation harness
//! ([`eval`]) all drive that same function. Memory is bounded: fixed-size seasonal
//! buckets per edge, capped edge, pair, source and alert-history counts.
//!
//! Operator documentation: `docs/baseline.md`.

pub mod alert;
pub mod api;
pub mod engine;
pub mod eval;
pub mod fanout;
pub mod model;
pub mod monitor;
pub mod notify;
pub mod obs;
pub mod replay;
pub mod rules;
pub mod settings;
pub mod store;

pub use alert::{Alert, AlertCounts, AlertKind, AlertState, Severity};
pub use engine::Engine;
pub use monitor::Monitor;
pub use obs::{EdgeRef, EdgeSample, Interval};
pub use settings::{Detectors, Settings};

/// Errors of the baseline module: settings, the baseline file, replay input.
#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("baseline setting {field}: {reason}")]
    Setting { field: &'static str, reason: String },
    #[error("baseline file {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("baseline file {path} is not a usable baseline: {reason}")]
    Corrupt {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("encoding the baseline: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("{path}:{line}: {reason}")]
    Input {
        path: std::path::PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{path}: {reason}")]
    Replay {
        path: std::path::PathBuf,
        reason: String,
    },
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// RFC 3339 (UTC, seconds) of a Unix time in milliseconds.
pub fn fmt_ms(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}
