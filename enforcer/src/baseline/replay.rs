//! Offline replay: the same detectors over (a) a flow log (the agent's JSON log lines
//! with `"event":"flow"`, or `enforcer flows --output json` lines) or (b) a CSV
//! `timestamp,value` series of one edge's rate. Prints what would have been raised.
//!
//! A flow log carries flow events (new flows, denies), not volumes: its replay judges
//! new edges and ports, new connections/s, fan-out and deny bursts; silence is off.
use std::path::Path;

use serde_json::Value;

use super::{
    Alert, BaselineError, EdgeRef, EdgeSample, Engine, Interval,
    model::Metric,
    obs::{Accumulator, is_workload},
    settings::Settings,
};

/// What the input is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `.csv` files are CSV, anything else a flow log.
    Auto,
    FlowLog,
    Csv,
}

/// Replay options beyond the detector settings.
#[derive(Debug, Clone)]
pub struct Options {
    pub format: Format,
    /// CSV: which rate the values are.
    pub metric: Metric,
    /// CSV: the edge the series belongs to (for the alerts' text).
    pub edge: EdgeRef,
    /// CSV: smallest excess over the expected value that counts, in the CSV's units.
    pub min_excess: f64,
    /// CSV: interval length; inferred from the timestamps when absent.
    pub interval_secs: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            format: Format::Auto,
            metric: Metric::Bytes,
            edge: EdgeRef::new("csv", "series", 6, 0),
            min_excess: 0.0,
            interval_secs: None,
        }
    }
}

/// What a replay found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    pub records: usize,
    /// Lines that were not flow records (other log lines).
    pub skipped: usize,
    pub intervals: usize,
    pub interval_secs: u64,
    pub first_ms: u64,
    pub last_ms: u64,
    pub learning_ends_ms: Option<u64>,
    /// Every alert transition, in order.
    pub alerts: Vec<Alert>,
}

fn replay_err(path: &Path, reason: impl Into<String>) -> BaselineError {
    BaselineError::Replay {
        path: path.into(),
        reason: reason.into(),
    }
}

/// Runs the detectors over the file at `path`.
pub fn run(settings: &Settings, path: &Path, opts: &Options) -> Result<Report, BaselineError> {
    let text = std::fs::read_to_string(path).map_err(|e| replay_err(path, e.to_string()))?;
    let csv = match opts.format {
        Format::Csv => true,
        Format::FlowLog => false,
        Format::Auto => path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("csv")),
    };
    if csv {
        let rows = parse_csv(&text, path)?;
        replay_csv(settings, &rows, opts, path)
    } else {
        let (records, skipped) = parse_flow_log(&text);
        if records.is_empty() {
            return Err(replay_err(
                path,
                format!(
                    "no flow records among {skipped} lines (expected JSON lines with \"event\":\"flow\")"
                ),
            ));
        }
        let mut r = replay_flows(settings, records);
        r.skipped = skipped;
        Ok(r)
    }
}

/// Protocol number of a protocol name as the graph writes it.
fn proto_number(name: &str) -> u8 {
    match name {
        "ICMP" => 1,
        "TCP" => 6,
        "UDP" => 17,
        "ICMPv6" => 58,
        "SCTP" => 132,
        other => other
            .strip_prefix("IP-")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
    }
}

/// Parses flow records: `(ms, edge, sample)`, and the count of other lines.
pub fn parse_flow_log(text: &str) -> (Vec<(u64, EdgeRef, EdgeSample)>, usize) {
    let mut out = Vec::new();
    let mut skipped = 0;
    for line in text.lines() {
        match flow_record(line) {
            Some(r) => out.push(r),
            None => skipped += usize::from(!line.trim().is_empty()),
        }
    }
    out.sort_by_key(|r| r.0);
    (out, skipped)
}

fn flow_record(line: &str) -> Option<(u64, EdgeRef, EdgeSample)> {
    let v: Value = serde_json::from_str(line.trim()).ok()?;
    let s = |k: &str| v.get(k).and_then(Value::as_str);
    if let Some(ev) = s("event")
        && ev != "flow"
    {
        return None;
    }
    let time = s("timestamp").or(s("time"))?;
    let ms = super::unix_ms(humantime::parse_rfc3339_weak(time).ok()?);
    let (src, dst, kind) = (s("src_name")?, s("dst_name")?, s("kind")?);
    let proto = proto_number(s("protocol").unwrap_or(""));
    let port = if proto == 6 || proto == 17 || proto == 132 {
        u16::try_from(v.get("dst_port").and_then(Value::as_u64)?).ok()?
    } else {
        0
    };
    let bytes = v.get("packet_bytes").and_then(Value::as_u64).unwrap_or(0);
    let mut sample = EdgeSample {
        packets: 1,
        bytes,
        ..EdgeSample::default()
    };
    match kind {
        // Seen at both workloads of a local flow: count it once, as the graph does.
        "new" | "audit" => {
            let egress = s("direction") == Some("egress");
            if !egress && is_workload(src) {
                return None;
            }
            sample.connections = 1;
        }
        "deny" => {
            sample.denied_packets = 1;
            sample.denied_connections = 1;
        }
        _ => return None,
    }
    Some((ms, EdgeRef::new(src, dst, proto, port), sample))
}

fn replay_flows(settings: &Settings, records: Vec<(u64, EdgeRef, EdgeSample)>) -> Report {
    let mut settings = settings.clone();
    settings.detectors.silence = false;
    let len = settings.interval_secs * 1000;
    let mut engine = Engine::new(&settings);
    let first = records.first().map_or(0, |r| r.0);
    let last = records.last().map_or(0, |r| r.0);
    let mut report = Report {
        records: records.len(),
        interval_secs: settings.interval_secs,
        first_ms: first,
        last_ms: last,
        ..Report::default()
    };
    let mut acc = Accumulator::default();
    let mut idx = first / len;
    let mut it = records.into_iter().peekable();
    while idx <= last / len {
        while let Some((_, e, s)) = it.next_if(|r| r.0 / len == idx) {
            acc.add(e, &s);
        }
        let iv = acc.take(idx * len, settings.interval_secs as f64);
        report.alerts.extend(engine.observe(&iv));
        report.intervals += 1;
        idx += 1;
    }
    report.learning_ends_ms = engine.learning_ends_ms();
    report
}

/// Parses `timestamp,value` rows (header, blank and `#` lines skipped). Timestamps
/// are Unix seconds (or milliseconds when above 10^11) or RFC 3339.
pub fn parse_csv(text: &str, path: &Path) -> Result<Vec<(u64, f64)>, BaselineError> {
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |reason: String| BaselineError::Input {
            path: path.into(),
            line: i + 1,
            reason,
        };
        let (ts, val) = line
            .split_once(',')
            .ok_or_else(|| err("expected timestamp,value".into()))?;
        let (ts, val) = (ts.trim(), val.trim());
        let Ok(value) = val.parse::<f64>() else {
            if rows.is_empty() && i == 0 {
                continue; // a header
            }
            return Err(err(format!("value {val:?} is not a number")));
        };
        if !(value.is_finite() && value >= 0.0) {
            return Err(err(format!("value {val:?} must be a rate ≥ 0")));
        }
        let ms = match ts.parse::<f64>() {
            Ok(n) if n.is_finite() && n >= 0.0 => {
                if n > 1e11 {
                    n as u64
                } else {
                    (n * 1000.0) as u64
                }
            }
            Ok(_) => return Err(err(format!("timestamp {ts:?} is out of range"))),
            Err(_) => humantime::parse_rfc3339_weak(ts)
                .map(super::unix_ms)
                .map_err(|e| err(format!("timestamp {ts:?}: {e}")))?,
        };
        rows.push((ms, value));
    }
    rows.sort_by_key(|r| r.0);
    Ok(rows)
}

/// Counts per metric relative to the CSV's metric: all three move together, and are
/// scaled so that counting noise does not apply (the CSV says nothing about counts).
const SCALE: [f64; 3] = [100.0, 1.0, 0.01];

fn replay_csv(
    settings: &Settings,
    rows: &[(u64, f64)],
    opts: &Options,
    path: &Path,
) -> Result<Report, BaselineError> {
    if rows.len() < 2 {
        return Err(replay_err(path, "need at least two rows"));
    }
    let secs = match opts.interval_secs {
        Some(s) if s > 0 => s,
        Some(_) => return Err(replay_err(path, "--interval-secs must be at least 1")),
        None => {
            let mut gaps: Vec<u64> = rows.windows(2).map(|w| w[1].0 - w[0].0).collect();
            gaps.sort_unstable();
            (gaps[gaps.len() / 2] / 1000).max(1)
        }
    };
    let mut values: Vec<f64> = rows.iter().map(|r| r.1).filter(|v| *v > 0.0).collect();
    values.sort_by(f64::total_cmp);
    let median = values.get(values.len() / 2).copied().unwrap_or(1.0);
    // The median interval carries a million packets.
    let k = 1e6 / (median * secs as f64).max(1e-9);
    let mi = opts.metric.index();
    let scale = |m: Metric| k * SCALE[m.index()] / SCALE[mi];
    let mut s = settings.clone();
    s.interval_secs = secs;
    let d = &mut s.detectors;
    d.min_excess_bytes_per_sec = opts.min_excess * scale(Metric::Bytes);
    d.min_excess_packets_per_sec = opts.min_excess * scale(Metric::Packets);
    d.min_excess_connections_per_sec = opts.min_excess * scale(Metric::Connections);
    d.silence_min_packets_per_sec = 0.0;
    d.workload_rates = false;
    d.new_edge = false;
    d.new_port = false;
    let mut engine = Engine::new(&s);
    let mut report = Report {
        records: rows.len(),
        interval_secs: secs,
        first_ms: rows[0].0,
        last_ms: rows[rows.len() - 1].0,
        ..Report::default()
    };
    let len = secs * 1000;
    for &(ms, v) in rows {
        let count = |m: Metric| (v * secs as f64 * scale(m)).round() as u64;
        let sample = EdgeSample {
            bytes: count(Metric::Bytes),
            packets: count(Metric::Packets),
            connections: count(Metric::Connections),
            ..EdgeSample::default()
        };
        let iv = Interval {
            start_ms: ms / len * len,
            secs: secs as f64,
            edges: vec![(opts.edge.clone(), sample)],
            addrs: Vec::new(),
        };
        for mut a in engine.observe(&iv) {
            // Back to the CSV's units.
            if let Some(m) = a.metric {
                let f = scale(m);
                a.observed /= f;
                a.expected /= f;
                a.metric = Some(opts.metric);
                a.unit = opts.metric.unit().into();
                a.summary = format!(
                    "{} on {}: {} vs {} expected",
                    a.kind,
                    opts.edge,
                    super::rules::fmt_rate(a.observed, &a.unit),
                    super::rules::fmt_rate(a.expected, &a.unit)
                );
            }
            report.alerts.push(a);
        }
        report.intervals += 1;
    }
    report.learning_ends_ms = engine.learning_ends_ms();
    Ok(report)
}

#[cfg(test)]
mod tests;
