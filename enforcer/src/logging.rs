//! Logging: `tracing`, human-readable on a terminal, JSON lines with
//! `--log-format json` (for a central log system: SS-028 10.6.1).
use clap::ValueEnum;
use tracing_subscriber::{EnvFilter, fmt};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Installs the global subscriber. `RUST_LOG` overrides `default_level`. The agent
/// logs to stdout (what a container log collector reads); CLI commands log to
/// stderr so their stdout stays machine-readable.
pub fn init(format: LogFormat, default_level: &str, to_stdout: bool) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let writer = move || -> Box<dyn std::io::Write> {
        if to_stdout {
            Box::new(std::io::stdout())
        } else {
            Box::new(std::io::stderr())
        }
    };
    let builder = fmt().with_env_filter(filter).with_writer(writer);
    // A second init (tests) is harmless: keep the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}
