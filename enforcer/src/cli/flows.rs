//! `enforcer flows`: recent flow events, or a live stream (`--follow`).
use std::io::Write as _;

use crate::{api::client, cli::graph::encode, flows::FlowRecord};

/// Show recent flow events (new flows, denies, audit-mode would-be denies) with
/// the workloads on each side and, for every deny, the policy rule or default deny
/// that decided. `--follow` streams new events as they happen, like `hubble observe`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Keep streaming new events.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Source: workload name, node id (world:…, cidr:…, host) or IP address.
    #[arg(long)]
    pub from: Option<String>,
    /// Destination: workload name, node id or IP address.
    #[arg(long)]
    pub to: Option<String>,
    /// Destination port.
    #[arg(long)]
    pub port: Option<u16>,
    /// allowed, dropped or audit.
    #[arg(long)]
    pub verdict: Option<String>,
    /// Either side is this workload.
    #[arg(long)]
    pub workload: Option<String>,
    /// Recent events to show first.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// `json` prints one JSON object per line.
    #[arg(long, short = 'o', value_enum, default_value_t = super::Output::Table)]
    pub output: super::Output,
}

pub fn execute(cli: &super::Cli, a: &Args) -> u8 {
    let mut q = vec![format!("limit={}", a.limit)];
    for (k, v) in [
        ("from", &a.from),
        ("to", &a.to),
        ("verdict", &a.verdict),
        ("workload", &a.workload),
    ] {
        if let Some(v) = v {
            q.push(format!("{k}={}", encode(v)));
        }
    }
    if let Some(p) = a.port {
        q.push(format!("port={p}"));
    }
    if a.follow {
        q.push("follow=true".into());
    }
    let path = format!("/v1/flows?{}", q.join("&"));
    let socket = cli.paths().socket;
    let json = a.output == super::Output::Json;
    let mut stdout = std::io::stdout();
    let res = super::block_on(client::stream_lines(&socket, &path, |line| {
        let text = if json {
            line.to_owned()
        } else {
            match serde_json::from_str::<FlowRecord>(line) {
                Ok(r) => render(&r),
                Err(_) => format!("# {line}"),
            }
        };
        // Stop quietly when the reader goes away (`| head`).
        writeln!(stdout, "{text}").is_ok() && stdout.flush().is_ok()
    }));
    match res {
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
        Ok(Err(e)) => super::client_failure(&e),
        Ok(Ok(())) => 0,
    }
}

pub fn render(r: &FlowRecord) -> String {
    let verdict = match r.verdict.as_str() {
        "dropped" => "DROPPED",
        "audit" => "AUDIT",
        _ => "allowed",
    };
    let mut s = format!(
        "{} {:<5} {} {}:{} ({}) -> {}:{} ({}) {} {}",
        r.time,
        r.kind,
        r.protocol,
        r.src,
        r.src_port,
        r.src_name,
        r.dst,
        r.dst_port,
        r.dst_name,
        verdict,
        r.reason
    );
    if !r.decided_by.is_empty() && r.verdict != "allowed" {
        s.push_str(&format!(" [{}]", r.decided_by));
    }
    s
}
