//! Agent configuration: a YAML file (`enforcer agent --config FILE`) whose every
//! field a command-line flag may override. Relative paths in the file are taken
//! relative to the file's directory.
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{
    logging::LogFormat,
    metrics::{MetricsAddress, MetricsConfig},
    paths,
};

/// Default interval between checks of the policy and inventory files for changes.
pub const DEFAULT_POLL_INTERVAL_MS: u64 = 2000;
/// Default interval between reads of the kernel flow map.
pub const DEFAULT_FLOWS_INTERVAL_MS: u64 = 1000;
/// Default idle time after which a graph edge expires.
pub const DEFAULT_EDGE_TTL_SECS: u64 = 300;
/// Default cap on graph edges.
pub const DEFAULT_MAX_EDGES: usize = 10_000;
/// Default number of recent flow records kept for `enforcer flows`.
pub const DEFAULT_RECENT_FLOWS: usize = 10_000;

/// Which flow events go to the flow log (JSON lines on stdout with `--log-format json`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowLog {
    /// Nothing.
    Off,
    /// Denied (and audit-mode would-be-denied) flows.
    #[default]
    Denied,
    /// Every new flow, plus denies.
    All,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConfigFile {
    /// Instance name; derives the pin directory and socket path. Default `default`.
    pub instance: Option<String>,
    /// Workload inventory file (required here or as `--inventory`).
    pub inventory: Option<PathBuf>,
    /// Policy file (required here or as `--policy`).
    pub policy: Option<PathBuf>,
    /// Network namespace to run in: a name under /run/netns or a path.
    pub netns: Option<String>,
    /// Overrides the pin directory (must be on bpffs).
    pub pin_dir: Option<PathBuf>,
    /// Overrides the control socket path.
    pub socket: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
    /// Milliseconds between checks of the policy and inventory files.
    pub poll_interval_ms: Option<u64>,
    /// Milliseconds between reads of the kernel flow map (graph refresh).
    pub flows_interval_ms: Option<u64>,
    /// Seconds an edge may stay idle before it leaves the graph.
    pub edge_ttl_secs: Option<u64>,
    /// Most edges the graph holds; new edges beyond it are counted, not stored.
    pub max_edges: Option<usize>,
    pub flow_log: Option<FlowLog>,
    /// Kernel event rate limit per CPU (events per second).
    pub events_per_sec: Option<u32>,
    /// Address (`IP:port`) of the read-only web view of the graph (docs/webview.md);
    /// unset: no web view.
    pub web_address: Option<std::net::SocketAddr>,
    /// Where `/metrics`, `/healthz` and `/readyz` listen (`IP:PORT`), or `off`.
    /// Default `127.0.0.1:9469`; see docs/metrics.md.
    pub metrics_address: Option<MetricsAddress>,
    /// Workloads that may have their own metric series; the rest share
    /// `workload="_other"`. Default 256.
    pub metrics_max_workloads: Option<usize>,
    /// Workload-pair edges that may have their own metric series; the rest share
    /// `source="_other"`. Default 1024.
    pub metrics_max_edges: Option<usize>,
    /// Traffic baseline and anomaly alerts (docs/baseline.md).
    pub baseline: Option<crate::baseline::Settings>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_yaml_ng::Error,
    },
    #[error("{what} is not set: give it in the config file or as --{flag}")]
    Missing {
        what: &'static str,
        flag: &'static str,
    },
    #[error("instance name {0:?} is not valid: use letters, digits, '-' or '_', at most 64")]
    Instance(String),
    #[error(transparent)]
    Baseline(#[from] crate::baseline::BaselineError),
}

impl ConfigFile {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let mut cfg: ConfigFile =
            serde_yaml_ng::from_str(&text).map_err(|source| ConfigError::Parse {
                path: path.into(),
                source,
            })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut cfg.inventory,
            &mut cfg.policy,
            &mut cfg.pin_dir,
            &mut cfg.socket,
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if let Some(f) = cfg.baseline.as_mut().and_then(|b| b.file.as_mut())
            && f.is_relative()
        {
            *f = base.join(&*f);
        }
        Ok(cfg)
    }
}

/// The resolved configuration the agent runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    pub paths: paths::Paths,
    pub inventory: PathBuf,
    pub policy: PathBuf,
    pub netns: Option<String>,
    pub log_format: LogFormat,
    pub poll_interval_ms: u64,
    pub flows_interval_ms: u64,
    pub edge_ttl_secs: u64,
    pub max_edges: usize,
    pub flow_log: FlowLog,
    pub events_per_sec: u32,
    /// Where the web view listens (docs/webview.md); `None`: off.
    pub web_address: Option<std::net::SocketAddr>,
    /// `/metrics` (docs/metrics.md).
    pub metrics: MetricsConfig,
    /// Traffic baseline and anomaly alerts (docs/baseline.md).
    pub baseline: crate::baseline::Settings,
}

impl AgentConfig {
    /// `flags` wins over `file` field by field.
    pub fn resolve(file: ConfigFile, flags: ConfigFile) -> Result<Self, ConfigError> {
        let instance = flags
            .instance
            .or(file.instance)
            .unwrap_or_else(|| paths::DEFAULT_INSTANCE.to_owned());
        if !paths::valid_instance(&instance) {
            return Err(ConfigError::Instance(instance));
        }
        let mut p = paths::Paths::for_instance(&instance);
        if let Some(d) = flags.pin_dir.or(file.pin_dir) {
            p.pin_dir = d;
        }
        if let Some(s) = flags.socket.or(file.socket) {
            p.socket = s;
        }
        Ok(Self {
            paths: p,
            inventory: flags
                .inventory
                .or(file.inventory)
                .ok_or(ConfigError::Missing {
                    what: "inventory",
                    flag: "inventory",
                })?,
            policy: flags.policy.or(file.policy).ok_or(ConfigError::Missing {
                what: "policy",
                flag: "policy",
            })?,
            netns: flags.netns.or(file.netns),
            log_format: flags.log_format.or(file.log_format).unwrap_or_default(),
            poll_interval_ms: flags
                .poll_interval_ms
                .or(file.poll_interval_ms)
                .unwrap_or(DEFAULT_POLL_INTERVAL_MS),
            flows_interval_ms: flags
                .flows_interval_ms
                .or(file.flows_interval_ms)
                .unwrap_or(DEFAULT_FLOWS_INTERVAL_MS),
            edge_ttl_secs: flags
                .edge_ttl_secs
                .or(file.edge_ttl_secs)
                .unwrap_or(DEFAULT_EDGE_TTL_SECS),
            max_edges: flags
                .max_edges
                .or(file.max_edges)
                .unwrap_or(DEFAULT_MAX_EDGES),
            flow_log: flags.flow_log.or(file.flow_log).unwrap_or_default(),
            events_per_sec: flags
                .events_per_sec
                .or(file.events_per_sec)
                .unwrap_or(enforcer_common::config::DEFAULT_EVENTS_PER_SEC),
            web_address: flags.web_address.or(file.web_address),
            metrics: MetricsConfig {
                address: flags
                    .metrics_address
                    .or(file.metrics_address)
                    .unwrap_or_default(),
                max_workloads: flags
                    .metrics_max_workloads
                    .or(file.metrics_max_workloads)
                    .unwrap_or(crate::metrics::DEFAULT_MAX_WORKLOADS),
                max_edges: flags
                    .metrics_max_edges
                    .or(file.metrics_max_edges)
                    .unwrap_or(crate::metrics::DEFAULT_MAX_EDGES),
            },
            baseline: {
                let b = flags.baseline.or(file.baseline).unwrap_or_default();
                b.validate()?;
                b
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_and_paths_are_relative_to_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.yaml");
        std::fs::write(
            &path,
            "instance: lab\ninventory: inv.yaml\npolicy: /etc/p.yaml\nlogFormat: json\n",
        )
        .expect("write");
        let file = ConfigFile::load(&path).expect("load");
        assert_eq!(file.inventory, Some(dir.path().join("inv.yaml")));
        let flags = ConfigFile {
            policy: Some("/x/p.yaml".into()),
            ..Default::default()
        };
        let cfg = AgentConfig::resolve(file, flags).expect("resolve");
        assert_eq!(cfg.policy, PathBuf::from("/x/p.yaml"));
        assert_eq!(cfg.log_format, LogFormat::Json);
        assert_eq!(cfg.paths.socket, PathBuf::from("/run/enforcer/lab.sock"));
    }

    #[test]
    fn unknown_field_and_missing_values_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.yaml");
        std::fs::write(&path, "polcy: p.yaml\n").expect("write");
        let err = ConfigFile::load(&path)
            .expect_err("typo must fail")
            .to_string();
        assert!(err.contains("polcy"), "{err}");
        let err = AgentConfig::resolve(ConfigFile::default(), ConfigFile::default())
            .expect_err("missing inventory");
        assert!(err.to_string().contains("--inventory"));
    }
}
