//! `enforcer graph`: the live service-communication graph.
use std::fmt::Write as _;

use hyper::Method;

use crate::{
    api::{GraphQuery, client},
    graph::{Edge, EdgeVerdict, GraphView},
};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum GraphOutput {
    #[default]
    Table,
    Json,
    /// Graphviz: `enforcer graph -o dot | dot -Tsvg > graph.svg`.
    Dot,
    /// Mermaid flowchart, for Markdown pages.
    Mermaid,
}

/// Show the service-communication graph the agent has learned from traffic: one
/// edge per (source, destination, protocol, port) with its verdict (allowed,
/// denied, mixed), bytes, packets, connections, current rates and what decided it.
/// Unknown addresses appear as `world:<prefix>` nodes.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(long, short = 'o', value_enum, default_value_t = GraphOutput::Table)]
    pub output: GraphOutput,
    /// Only edges touching this workload (or node id).
    #[arg(long)]
    pub workload: Option<String>,
    /// Only edges with an endpoint labelled key=value.
    #[arg(long)]
    pub label: Option<String>,
    /// allowed, denied (includes mixed) or mixed.
    #[arg(long)]
    pub verdict: Option<String>,
    /// Only edges seen within this time, e.g. 30s, 5m, 1h.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub since: Option<std::time::Duration>,
}

pub fn execute(cli: &super::Cli, a: &Args) -> u8 {
    let q = GraphQuery {
        workload: a.workload.clone(),
        label: a.label.clone(),
        verdict: a.verdict.clone(),
        since_secs: a.since.map(|d| d.as_secs().max(1)),
    };
    let qs = match serde_urlencoded_query(&q) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let socket = cli.paths().socket;
    let path = format!("/v1/graph?{qs}");
    let res = super::block_on(client::call::<(), GraphView>(
        &socket,
        Method::GET,
        &path,
        None,
    ));
    let g = match res {
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
        Ok(Err(e)) => return super::client_failure(&e),
        Ok(Ok(g)) => g,
    };
    let text = match a.output {
        GraphOutput::Json => {
            serde_json::to_string_pretty(&g).unwrap_or_else(|e| e.to_string()) + "\n"
        }
        GraphOutput::Table => table(&g),
        GraphOutput::Dot => dot(&g),
        GraphOutput::Mermaid => mermaid(&g),
    };
    print!("{text}");
    0
}

fn serde_urlencoded_query(q: &GraphQuery) -> Result<String, String> {
    let mut parts = Vec::new();
    let mut push = |k: &str, v: &str| parts.push(format!("{k}={}", encode(v)));
    if let Some(w) = &q.workload {
        push("workload", w);
    }
    if let Some(l) = &q.label {
        if !l.contains('=') {
            return Err(format!("--label {l:?} must be key=value"));
        }
        push("label", l);
    }
    if let Some(v) = &q.verdict {
        push("verdict", v);
    }
    if let Some(s) = q.since_secs {
        push("since_secs", &s.to_string());
    }
    Ok(parts.join("&"))
}

/// Percent-encoding for query values.
pub fn encode(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

pub fn human_bytes(b: u64) -> String {
    const U: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1000.0 && i < U.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

fn verdict(e: &Edge) -> &'static str {
    match e.verdict {
        EdgeVerdict::Allowed => "allowed",
        EdgeVerdict::Denied => "DENIED",
        EdgeVerdict::Mixed => "MIXED",
    }
}

pub fn table(g: &GraphView) -> String {
    let mut rows = vec![vec![
        "SRC".to_owned(),
        "DST".into(),
        "PROTO".into(),
        "PORT".into(),
        "VERDICT".into(),
        "BYTES".into(),
        "PACKETS".into(),
        "DROPPED".into(),
        "CONNS".into(),
        "RATE".into(),
        "LAST SEEN".into(),
        "DECIDED BY".into(),
    ]];
    for e in &g.edges {
        rows.push(vec![
            e.src.clone(),
            e.dst.clone(),
            e.protocol.clone(),
            e.port.to_string(),
            verdict(e).into(),
            human_bytes(e.bytes + e.reply_bytes),
            (e.packets + e.reply_packets).to_string(),
            e.dropped_packets.to_string(),
            e.connections.to_string(),
            format!("{}/s", human_bytes(e.rate_bps as u64)),
            e.last_seen.clone(),
            e.decided_by.clone(),
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in &rows {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    if g.edges.is_empty() {
        out.push_str("(no traffic seen yet)\n");
    }
    if g.edges_dropped > 0 {
        let _ = writeln!(
            out,
            "{} edges not stored: the graph is at its edge cap",
            g.edges_dropped
        );
    }
    out
}

fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

pub fn dot(g: &GraphView) -> String {
    let mut out =
        String::from("digraph enforcer {\n  rankdir=LR;\n  node [shape=box, style=rounded];\n");
    for n in &g.nodes {
        let shape = match n.kind {
            crate::graph::NodeKind::Workload => "box",
            _ => "ellipse",
        };
        let _ = writeln!(out, "  {} [shape={shape}];", quote(&n.id));
    }
    for e in &g.edges {
        let (color, style) = match e.verdict {
            EdgeVerdict::Allowed => ("darkgreen", "solid"),
            EdgeVerdict::Denied => ("red", "dashed"),
            EdgeVerdict::Mixed => ("orange", "solid"),
        };
        let label = format!(
            "{}/{} {}",
            e.protocol,
            e.port,
            human_bytes(e.bytes + e.reply_bytes)
        );
        let _ = writeln!(
            out,
            "  {} -> {} [label={}, color={color}, style={style}];",
            quote(&e.src),
            quote(&e.dst),
            quote(&label)
        );
    }
    out.push_str("}\n");
    out
}

pub fn mermaid(g: &GraphView) -> String {
    let ids: std::collections::HashMap<&str, String> = g
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), format!("n{i}")))
        .collect();
    let mut out = String::from("flowchart LR\n");
    for n in &g.nodes {
        let label = n.id.replace('"', "'");
        let _ = writeln!(out, "  {}[\"{label}\"]", ids[n.id.as_str()]);
    }
    for e in &g.edges {
        let (Some(s), Some(d)) = (ids.get(e.src.as_str()), ids.get(e.dst.as_str())) else {
            continue;
        };
        let label = format!("{}/{}", e.protocol, e.port);
        let arrow = match e.verdict {
            EdgeVerdict::Allowed => format!("-->|{label}|"),
            EdgeVerdict::Denied => format!("-.->|{label} denied|"),
            EdgeVerdict::Mixed => format!("==>|{label} mixed|"),
        };
        let _ = writeln!(out, "  {s} {arrow} {d}");
    }
    out
}
