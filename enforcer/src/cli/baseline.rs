//! `enforcer baseline`: the traffic baseline of a running agent (status, export,
//! reset), offline replay of the detectors over a flow log or CSV series, and the
//! evaluation harness. Also the agent's `--baseline-*` flags.
use std::{io::Write as _, path::PathBuf};

use hyper::Method;

use super::Output;
use crate::{
    api::client,
    baseline::{
        Alert, AlertKind, AlertState, EdgeRef, Settings, eval, fmt_ms,
        model::Metric,
        monitor::BaselineStatus,
        replay::{self, Format},
    },
    config::ConfigFile,
};

/// The agent's baseline flags (the rest is in the config file's `baseline:` section).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AgentFlags {
    /// Learning period of the traffic baseline, seconds [default: 86400]: no
    /// anomaly alerts until it has passed. See docs/baseline.md.
    #[arg(long, value_name = "SECS")]
    pub baseline_learning_secs: Option<u64>,
    /// Detection interval of the baseline, seconds [default: 60].
    #[arg(long, value_name = "SECS")]
    pub baseline_interval_secs: Option<u64>,
    /// Baseline file [default: /var/lib/enforcer/<instance>/baseline.json].
    #[arg(long, value_name = "FILE")]
    pub baseline_file: Option<PathBuf>,
    /// Turn the traffic baseline and anomaly alerts off.
    #[arg(long)]
    pub no_baseline: bool,
    /// Push anomaly alerts to this Alertmanager (base URL, e.g.
    /// http://alertmanager:9093; repeat for several) [default: no push].
    #[arg(long, value_name = "URL")]
    pub alertmanager_url: Vec<String>,
}

impl AgentFlags {
    /// The config file's settings with these flags applied; `None` if no flag is set.
    pub fn merge(&self, file: Option<&Settings>) -> Option<Settings> {
        let any = self.baseline_learning_secs.is_some()
            || self.baseline_interval_secs.is_some()
            || self.baseline_file.is_some()
            || self.no_baseline
            || !self.alertmanager_url.is_empty();
        if !any {
            return None;
        }
        let mut s = file.cloned().unwrap_or_default();
        if let Some(v) = self.baseline_learning_secs {
            s.learning_secs = v;
        }
        if let Some(v) = self.baseline_interval_secs {
            s.interval_secs = v;
        }
        if let Some(f) = &self.baseline_file {
            s.file = Some(f.clone());
        }
        if self.no_baseline {
            s.enabled = false;
        }
        if !self.alertmanager_url.is_empty() {
            s.alertmanager.urls.clone_from(&self.alertmanager_url);
        }
        Some(s)
    }
}

/// The traffic baseline and its anomaly detectors (docs/baseline.md).
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Learning or detecting, edges and workloads with a baseline, memory, last save,
    /// alert counts.
    Status {
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Print everything the agent has learnt, as JSON (the baseline file format).
    Export,
    /// Write the baseline file now (it is also written every `saveIntervalSecs` and
    /// at shutdown), e.g. before an upgrade.
    Save,
    /// Forget everything learnt: firing alerts resolve and learning starts again.
    Reset {
        /// Confirm.
        #[arg(long)]
        yes: bool,
    },
    /// Run the detectors offline over a flow log or a CSV series and print the
    /// alerts they would have raised.
    Replay(ReplayArgs),
    /// Evaluation harness: synthetic seasonal traffic with labelled anomalies,
    /// through the real detectors; prints recall, delay, precision, false alarms.
    Eval(EvalArgs),
}

/// `enforcer baseline replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The agent's flow log (JSON lines with "event":"flow"; `--flow-log all` logs
    /// every new flow), `enforcer flows --output json` lines, or a CSV file of
    /// `timestamp,value` (Unix seconds or RFC 3339, rate per second) for one edge.
    pub file: PathBuf,
    #[arg(long, value_enum, default_value_t = Format::Auto)]
    pub format: Format,
    /// Start from the `baseline:` section of this agent config file.
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Learning period at the start of the file, seconds [default: 86400].
    #[arg(long)]
    pub learning_secs: Option<u64>,
    /// Detection interval, seconds [default: 60; CSV: inferred from timestamps].
    #[arg(long)]
    pub interval_secs: Option<u64>,
    /// Spike threshold: z-score [default: 4].
    #[arg(long)]
    pub spike_z: Option<f64>,
    /// Spike threshold: at least this many times the expected rate [default: 2].
    #[arg(long)]
    pub spike_min_ratio: Option<f64>,
    /// Intervals beyond the threshold (in one run) before a spike fires [default: 2].
    #[arg(long)]
    pub spike_intervals: Option<u32>,
    /// Pooled spikes: that many consecutive intervals, each with z at least this,
    /// whose mean z reaches --spike-z fire too [default: 3; = --spike-z: off].
    #[arg(long)]
    pub spike_pool_z: Option<f64>,
    /// Calm intervals before a rate alert clears [default: 3].
    #[arg(long)]
    pub clear_intervals: Option<u32>,
    /// Consecutive silent intervals before a silence fires [default: 3].
    #[arg(long)]
    pub silence_intervals: Option<u32>,
    /// Distinct targets in the fan-out window that fire [default: 50].
    #[arg(long)]
    pub fanout_min_targets: Option<u32>,
    /// Distinct peers in the fan-out window that fire [default: 20].
    #[arg(long)]
    pub fanout_min_peers: Option<u32>,
    /// Denied packets/s of a workload that can fire [default: 1].
    #[arg(long)]
    pub deny_min_per_sec: Option<f64>,
    /// Detectors to turn off, comma-separated (new_edge, new_port, spike, silence,
    /// fan_out, deny_burst).
    #[arg(long, value_delimiter = ',')]
    pub disable: Vec<String>,
    /// CSV: what the values are.
    #[arg(long, value_enum, default_value_t = MetricArg::Bytes)]
    pub metric: MetricArg,
    /// CSV: smallest excess over the expected value that counts, in the CSV's units.
    #[arg(long, default_value_t = 0.0)]
    pub min_excess: f64,
    /// CSV: the edge the series is about, `SRC->DST:PORT` (for the alerts' text).
    #[arg(long)]
    pub edge: Option<String>,
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MetricArg {
    Bytes,
    Packets,
    Connections,
}

/// `enforcer baseline eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Background edges.
    #[arg(long, default_value_t = 100)]
    pub edges: usize,
    #[arg(long, default_value_t = 28)]
    pub days: u32,
    #[arg(long, default_value_t = 7)]
    pub learning_days: u32,
    #[arg(long, default_value_t = 60)]
    pub interval_secs: u64,
    /// Injections of each anomaly class.
    #[arg(long, default_value_t = 40)]
    pub per_class: usize,
    /// Tuning: the spike z-score threshold [default: the agent's, 4].
    #[arg(long)]
    pub spike_z: Option<f64>,
    /// Tuning: consecutive intervals before a spike fires [default: 2].
    #[arg(long)]
    pub spike_intervals: Option<u32>,
    /// Tuning: the elevated z of pooled spikes [default: the agent's, 3].
    #[arg(long)]
    pub spike_pool_z: Option<f64>,
    /// Tuning: start from the `baseline:` section of this agent config file (the
    /// options above override it).
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// `table` prints Markdown tables.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

pub fn execute(cli: &super::Cli, c: &Command) -> u8 {
    match c {
        Command::Status { output } => status(cli, *output),
        Command::Export => export(cli),
        Command::Save => match call::<BaselineStatus>(cli, Method::POST, "/v1/baseline/save") {
            Ok(st) => {
                print!("{}", render_status(&st));
                u8::from(st.last_save_error.is_some())
            }
            Err(code) => code,
        },
        Command::Reset { yes } => reset(cli, *yes),
        Command::Replay(a) => run_replay(a),
        Command::Eval(a) => run_eval(a),
    }
}

fn call<T: serde::de::DeserializeOwned>(cli: &super::Cli, m: Method, path: &str) -> Result<T, u8> {
    let socket = cli.paths().socket;
    match super::block_on(client::call::<(), T>(&socket, m, path, None)) {
        Err(e) => {
            eprintln!("error: {e}");
            Err(1)
        }
        Ok(Err(e)) => Err(super::client_failure(&e)),
        Ok(Ok(v)) => Ok(v),
    }
}

fn status(cli: &super::Cli, output: Output) -> u8 {
    let st: BaselineStatus = match call(cli, Method::GET, "/v1/baseline") {
        Ok(s) => s,
        Err(code) => return code,
    };
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&st).unwrap_or_default());
    } else {
        print!("{}", render_status(&st));
    }
    0
}

/// `enforcer baseline status` as text.
pub fn render_status(st: &BaselineStatus) -> String {
    if !st.enabled {
        return "baseline: disabled\n".into();
    }
    let phase = if st.learning {
        format!(
            "learning until {}",
            st.learning_ends.as_deref().unwrap_or("?")
        )
    } else {
        format!(
            "detecting since {}",
            st.learning_ends.as_deref().unwrap_or("?")
        )
    };
    let loaded = match &st.loaded {
        Some(replay_loaded) => format!("{replay_loaded:?}"),
        None => String::new(),
    };
    let raised: Vec<String> = st
        .alerts
        .raised_total
        .iter()
        .map(|(k, n)| format!("{k}={n}"))
        .collect();
    format!(
        "baseline: {phase}\nfile: {} (at start: {loaded})\nlast saved: {}{}\n\
         edges: {}  workloads: {}  pairs: {}  fan-out sources: {}  memory: {} KiB\n\
         intervals: {} of {} s  edges evicted: {}  new edges suppressed (scans): {}\n\
         firing alerts: {}  raised: {}\n",
        st.file,
        st.last_saved.as_deref().unwrap_or("never"),
        st.last_save_error
            .as_ref()
            .map(|e| format!(" (last save failed: {e})"))
            .unwrap_or_default(),
        st.edges,
        st.workloads,
        st.pairs,
        st.fanout_sources,
        st.memory_bytes / 1024,
        st.intervals,
        st.interval_secs,
        st.edges_evicted,
        st.new_edges_suppressed,
        st.firing,
        raised.join(" ")
    )
}

fn export(cli: &super::Cli) -> u8 {
    match call::<serde_json::Value>(cli, Method::GET, "/v1/baseline/export") {
        Ok(v) => {
            let mut out = std::io::stdout();
            let _ = writeln!(out, "{v}");
            0
        }
        Err(code) => code,
    }
}

fn reset(cli: &super::Cli, yes: bool) -> u8 {
    if !yes {
        eprintln!("error: this forgets everything learnt; run again with --yes to confirm");
        return 2;
    }
    match call::<BaselineStatus>(cli, Method::POST, "/v1/baseline/reset") {
        Ok(st) => {
            print!("{}", render_status(&st));
            0
        }
        Err(code) => code,
    }
}

fn parse_edge(s: &str) -> Option<EdgeRef> {
    let (src, rest) = s.split_once("->")?;
    let (dst, port) = rest.rsplit_once(':')?;
    Some(EdgeRef::new(
        src.trim(),
        dst.trim(),
        6,
        port.trim().parse().ok()?,
    ))
}

fn replay_settings(a: &ReplayArgs) -> Result<Settings, String> {
    let mut s = match &a.config {
        Some(p) => ConfigFile::load(p)
            .map_err(|e| e.to_string())?
            .baseline
            .unwrap_or_default(),
        None => Settings::default(),
    };
    let d = &mut s.detectors;
    macro_rules! set {
        ($($field:ident),*) => { $( if let Some(v) = a.$field { d.$field = v; } )* };
    }
    set!(
        spike_z,
        spike_min_ratio,
        spike_intervals,
        spike_pool_z,
        clear_intervals,
        silence_intervals
    );
    set!(fanout_min_targets, fanout_min_peers, deny_min_per_sec);
    if a.spike_pool_z.is_none() {
        // A lower --spike-z alone lowers the pooled threshold with it.
        d.spike_pool_z = d.spike_pool_z.min(d.spike_z);
    }
    for k in &a.disable {
        match AlertKind::parse(k.trim()) {
            Some(AlertKind::NewEdge) => d.new_edge = false,
            Some(AlertKind::NewPort) => d.new_port = false,
            Some(AlertKind::Spike) => d.spike = false,
            Some(AlertKind::Silence) => d.silence = false,
            Some(AlertKind::FanOut) => d.fan_out = false,
            Some(AlertKind::DenyBurst) => d.deny_burst = false,
            None => return Err(format!("--disable {k:?}: not a detector")),
        }
    }
    if let Some(v) = a.learning_secs {
        s.learning_secs = v;
    }
    if let Some(v) = a.interval_secs {
        s.interval_secs = v;
    }
    s.validate().map_err(|e| e.to_string())?;
    Ok(s)
}

fn run_replay(a: &ReplayArgs) -> u8 {
    let settings = match replay_settings(a) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let mut opts = replay::Options {
        format: a.format,
        metric: match a.metric {
            MetricArg::Bytes => Metric::Bytes,
            MetricArg::Packets => Metric::Packets,
            MetricArg::Connections => Metric::Connections,
        },
        min_excess: a.min_excess,
        interval_secs: a.interval_secs,
        ..replay::Options::default()
    };
    if let Some(e) = &a.edge {
        match parse_edge(e) {
            Some(edge) => opts.edge = edge,
            None => {
                eprintln!("error: --edge {e:?} must look like SRC->DST:PORT");
                return 2;
            }
        }
    }
    let r = match replay::run(&settings, &a.file, &opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return super::EXIT_REJECTED;
        }
    };
    // One entry per alert, in its final state.
    let mut alerts: Vec<Alert> = Vec::new();
    for t in r.alerts {
        match t.state {
            AlertState::Firing => alerts.push(t),
            AlertState::Resolved => {
                if let Some(a) = alerts.iter_mut().find(|a| a.id == t.id) {
                    *a = t;
                }
            }
        }
    }
    let learning = r.learning_ends_ms.map_or_else(|| "-".into(), fmt_ms);
    let summary = format!(
        "replayed {} records ({} other lines) from {} to {} in {} intervals of {} s; learning until {learning}; {} alerts",
        r.records,
        r.skipped,
        fmt_ms(r.first_ms),
        fmt_ms(r.last_ms),
        r.intervals,
        r.interval_secs,
        alerts.len()
    );
    eprintln!("{summary}");
    if r.learning_ends_ms.is_none_or(|end| end > r.last_ms) {
        eprintln!(
            "note: the whole input fell in the learning period; pass a shorter --learning-secs"
        );
    }
    let mut out = std::io::stdout();
    for al in &alerts {
        let line = if a.output == Output::Json {
            serde_json::to_string(al).unwrap_or_default()
        } else {
            super::alerts::render(al)
        };
        if writeln!(out, "{line}").is_err() {
            break;
        }
    }
    0
}

fn run_eval(a: &EvalArgs) -> u8 {
    let spec = eval::Spec {
        seed: a.seed,
        edges: a.edges.max(1),
        days: a.days.max(a.learning_days + 1),
        learning_days: a.learning_days,
        interval_secs: a.interval_secs.clamp(1, 3600),
        per_class: a.per_class,
    };
    let mut base = match &a.config {
        Some(p) => match ConfigFile::load(p) {
            Ok(c) => c.baseline.unwrap_or_default(),
            Err(e) => {
                eprintln!("error: {e}");
                return 2;
            }
        },
        None => Settings::default(),
    };
    if let Some(z) = a.spike_pool_z {
        base.detectors.spike_pool_z = z;
    }
    if let Some(z) = a.spike_z {
        base.detectors.spike_z = z;
    }
    if let Some(k) = a.spike_intervals {
        base.detectors.spike_intervals = k;
    }
    if a.spike_pool_z.is_none() {
        base.detectors.spike_pool_z = base.detectors.spike_pool_z.min(base.detectors.spike_z);
    }
    if let Err(e) = base.validate() {
        eprintln!("error: {e}");
        return 2;
    }
    let r = eval::run_with(&spec, &base);
    if a.output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
    } else {
        print!("{}", r.markdown());
    }
    if r.targets.iter().all(|t| t.met) {
        0
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_only_when_given() {
        let none = AgentFlags::default();
        assert_eq!(none.merge(None), None);
        let file = Settings {
            interval_secs: 10,
            ..Settings::default()
        };
        let f = AgentFlags {
            baseline_learning_secs: Some(5),
            ..AgentFlags::default()
        };
        let s = f.merge(Some(&file)).expect("some");
        assert_eq!((s.learning_secs, s.interval_secs), (5, 10));
        assert_eq!(
            parse_edge("client->web:5201"),
            Some(EdgeRef::new("client", "web", 6, 5201))
        );
        assert_eq!(parse_edge("client:80"), None);
    }
}
