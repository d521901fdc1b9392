//! `enforcer alerts`: recent anomaly alerts, or a live stream (`--follow`).
use std::io::Write as _;

use crate::{
    api::client,
    baseline::{Alert, AlertState},
    cli::graph::encode,
};

/// Show recent anomaly alerts (new edges, new ports, rate spikes, silences, scans,
/// deny bursts) with what was observed and what the baseline expected; `--follow`
/// streams every alert as it fires and resolves. See docs/baseline.md.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Keep streaming alert transitions.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// firing or resolved.
    #[arg(long)]
    pub state: Option<String>,
    /// new_edge, new_port, spike, silence, fan_out or deny_burst.
    #[arg(long)]
    pub kind: Option<String>,
    /// Involves this workload (or node).
    #[arg(long)]
    pub workload: Option<String>,
    /// Recent alerts to show first.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// `json` prints one JSON object per line.
    #[arg(long, short = 'o', value_enum, default_value_t = super::Output::Table)]
    pub output: super::Output,
}

pub fn execute(cli: &super::Cli, a: &Args) -> u8 {
    let mut q = vec![format!("limit={}", a.limit)];
    for (k, v) in [
        ("state", &a.state),
        ("kind", &a.kind),
        ("workload", &a.workload),
    ] {
        if let Some(v) = v {
            q.push(format!("{k}={}", encode(v)));
        }
    }
    if a.follow {
        q.push("follow=true".into());
    }
    let path = format!("/v1/alerts?{}", q.join("&"));
    let socket = cli.paths().socket;
    let json = a.output == super::Output::Json;
    let mut stdout = std::io::stdout();
    let res = super::block_on(client::stream_lines(&socket, &path, |line| {
        let text = if json {
            line.to_owned()
        } else {
            match serde_json::from_str::<Alert>(line) {
                Ok(a) => render(&a),
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

/// One line per alert: when, state, severity, kind, summary, and its span.
pub fn render(a: &Alert) -> String {
    let state = match a.state {
        AlertState::Firing => "FIRING",
        AlertState::Resolved => "resolved",
    };
    let span = match &a.end {
        Some(end) => format!("{} .. {end}", a.start),
        None => format!("since {}", a.start),
    };
    format!(
        "{} {state:<8} {:<8} {:<10} {} [{span}]",
        a.detected,
        a.severity.as_str(),
        a.kind.as_str(),
        a.summary
    )
}
