//! Everything one run measured (`results.json`) and its rendering as the markdown
//! tables of docs/benchmarks.md (`report.md`), with the goals of issue #6 checked.

use std::{fmt::Write as _, path::Path};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{
    agent::AgentResult,
    datapath::{Comparison, Params},
    testrun::Row,
    util::Spread,
};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Meta {
    pub date: String,
    pub command: String,
    pub kernel: String,
    pub cpus: usize,
    pub cpu_model: String,
    pub load_start: [f64; 3],
    pub load_end: [f64; 3],
    pub quick: bool,
    pub duration_secs: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CriterionRow {
    pub id: String,
    pub median_ns: f64,
    pub low_ns: f64,
    pub high_ns: f64,
    /// Elements per iteration (flow records, rules), when declared.
    pub elements: Option<u64>,
}

impl CriterionRow {
    pub fn per_sec(&self) -> Option<f64> {
        self.elements.map(|e| e as f64 / (self.median_ns * 1e-9))
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Results {
    pub meta: Meta,
    pub params: Option<Params>,
    pub datapath: Vec<Comparison>,
    pub monitoring: Vec<Comparison>,
    pub testrun: Vec<Row>,
    pub agent: Option<AgentResult>,
    pub criterion: Vec<CriterionRow>,
    pub memory: Option<Value>,
    pub errors: Vec<String>,
}

/// Reads criterion's estimates under `dir` for the `ingest` and `policy` groups.
pub fn read_criterion(dir: &Path) -> Vec<CriterionRow> {
    let mut rows = Vec::new();
    for group in ["ingest", "policy"] {
        let Ok(entries) = std::fs::read_dir(dir.join(group)) else {
            continue;
        };
        let mut names: Vec<_> = entries
            .flatten()
            .filter(|e| e.path().join("new/estimates.json").exists())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in names {
            let base = dir.join(group).join(&name).join("new");
            let est: Value = std::fs::read(base.join("estimates.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or(Value::Null);
            let bench: Value = std::fs::read(base.join("benchmark.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or(Value::Null);
            let m = &est["median"];
            rows.push(CriterionRow {
                id: format!("{group}/{name}"),
                median_ns: m["point_estimate"].as_f64().unwrap_or(f64::NAN),
                low_ns: m["confidence_interval"]["lower_bound"]
                    .as_f64()
                    .unwrap_or(f64::NAN),
                high_ns: m["confidence_interval"]["upper_bound"]
                    .as_f64()
                    .unwrap_or(f64::NAN),
                elements: bench["throughput"]["Elements"].as_u64(),
            });
        }
    }
    rows
}

fn ratio(s: &Spread) -> String {
    if s.samples.is_empty() || !s.median.is_finite() {
        return "–".into();
    }
    if s.samples.len() == 1 {
        return format!("{:.3}×", s.median);
    }
    format!("{:.3}× [{:.3}–{:.3}]", s.median, s.min, s.max)
}

fn median_of(v: impl Iterator<Item = f64>) -> f64 {
    Spread::of(&v.collect::<Vec<_>>()).median
}

fn find<'a>(v: &'a [Comparison], name: &str) -> Option<&'a Comparison> {
    v.iter().find(|c| c.name == name && c.error.is_none())
}

fn b_median(c: &Comparison, f: fn(&crate::datapath::Measure) -> f64) -> f64 {
    median_of(c.b.iter().map(f))
}

pub fn render(r: &Results) -> String {
    let mut o = String::new();
    let m = &r.meta;
    let _ = writeln!(
        o,
        "Measured {} with `{}`{}.",
        m.date,
        m.command,
        if m.quick {
            " (quick mode: a smoke run, not for quoting)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        o,
        "Machine: {} cores ({}), kernel {}; load average {:.2} / {:.2} / {:.2} at the start, {:.2} / {:.2} / {:.2} at the end; {:.0} min.",
        m.cpus,
        m.cpu_model,
        m.kernel,
        m.load_start[0],
        m.load_start[1],
        m.load_start[2],
        m.load_end[0],
        m.load_end[1],
        m.load_end[2],
        m.duration_secs / 60.0
    );
    if let Some(p) = &r.params {
        let _ = writeln!(
            o,
            "Each ratio is the median of {} interleaved pairs (B/A, the order alternating), with [min–max] of the pairs; \
             UDP {} s per sample, TCP {} s with {} streams, connections {} s from {} threads.",
            p.pairs, p.udp_secs, p.tcp_secs, p.tcp_streams, p.conn_secs, p.conn_threads
        );
    }
    o.push('\n');

    if !r.datapath.is_empty() {
        let all_a: Vec<&crate::datapath::Measure> = r.datapath.iter().flat_map(|c| &c.a).collect();
        let _ = writeln!(
            o,
            "### Datapath: each configuration as a ratio to no filter\n"
        );
        let _ = writeln!(
            o,
            "No-filter ceiling (median of every A sample): **{:.0} kpps** of 64-byte UDP (trafgen offered {:.0} kpps), \
             **{:.1} Gbit/s** TCP, **{:.0}** new TCP connections/s.\n",
            median_of(all_a.iter().map(|a| a.udp_pps)) / 1e3,
            median_of(all_a.iter().map(|a| a.udp_sent_pps)) / 1e3,
            median_of(all_a.iter().map(|a| a.tcp_gbps)),
            median_of(all_a.iter().map(|a| a.conn_per_s)),
        );
        let _ = writeln!(
            o,
            "| configuration | load time | 64-byte UDP rate | TCP throughput | new connections/s | B: kpps |"
        );
        let _ = writeln!(o, "|---|---:|---|---|---|---:|");
        for c in &r.datapath {
            if let Some(e) = &c.error {
                let _ = writeln!(
                    o,
                    "| {} | | failed: {} | | | |",
                    c.name,
                    e.replace('|', "/")
                );
                continue;
            }
            let load = match &c.setup.enforcer {
                Some(rep) => format!(
                    "{:.2} s + compile {:.2} s ({} deny, {} ipcache, {} policy entries)",
                    c.setup.load_secs,
                    c.setup.compile_secs,
                    rep.denylist_entries,
                    rep.ipcache_entries,
                    rep.policy_entries
                ),
                None if c.setup.load_secs > 0.0 => format!("{:.2} s", c.setup.load_secs),
                None => "–".into(),
            };
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {:.0} |",
                c.name,
                load,
                ratio(&c.udp),
                ratio(&c.tcp),
                ratio(&c.conn),
                b_median(c, |m| m.udp_pps) / 1e3
            );
        }
        o.push('\n');
    }

    if !r.monitoring.is_empty() {
        let _ = writeln!(
            o,
            "### Monitoring: on as a ratio to off (enforcer, deny list 1k)\n"
        );
        let _ = writeln!(
            o,
            "| monitoring | 64-byte UDP rate | TCP throughput | new connections/s | A (off): kpps, conn/s |"
        );
        let _ = writeln!(o, "|---|---|---|---|---:|");
        for c in &r.monitoring {
            if let Some(e) = &c.error {
                let _ = writeln!(o, "| {} | failed: {} | | | |", c.name, e.replace('|', "/"));
                continue;
            }
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {:.0}, {:.0} |",
                c.name,
                ratio(&c.udp),
                ratio(&c.tcp),
                ratio(&c.conn),
                median_of(c.a.iter().map(|m| m.udp_pps)) / 1e3,
                median_of(c.a.iter().map(|m| m.conn_per_s)),
            );
        }
        o.push('\n');
    }

    if !r.testrun.is_empty() {
        let repeat = r.testrun[0].repeat;
        let _ = writeln!(
            o,
            "### Program cost per packet (BPF_PROG_TEST_RUN, {repeat} repeats, median of runs, ns)\n"
        );
        let _ = writeln!(
            o,
            "| configuration | packet | monitoring on | monitoring off |"
        );
        let _ = writeln!(o, "|---|---|---:|---:|");
        let mut seen = Vec::new();
        for row in &r.testrun {
            let key = (row.config.clone(), row.packet.clone());
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
            let get = |mon: &str| {
                r.testrun
                    .iter()
                    .find(|x| {
                        x.config == row.config && x.packet == row.packet && x.monitoring == mon
                    })
                    .map_or("–".into(), |x| format!("{:.1}", x.ns.median))
            };
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} |",
                row.config,
                row.packet,
                get("on"),
                get("off")
            );
        }
        o.push('\n');
    }

    let _ = writeln!(o, "### Agent\n");
    if !r.criterion.is_empty() {
        let _ = writeln!(
            o,
            "| benchmark (criterion, one core) | median | per second |"
        );
        let _ = writeln!(o, "|---|---:|---:|");
        for c in &r.criterion {
            let per = c
                .per_sec()
                .map_or("–".into(), |p| format!("{:.2} M", p / 1e6));
            let _ = writeln!(o, "| {} | {:.2} ms | {} |", c.id, c.median_ns / 1e6, per);
        }
        o.push('\n');
    }
    if let Some(mem) = r.memory.as_ref().and_then(|v| v["memory"].as_array()) {
        for row in mem {
            let _ = writeln!(
                o,
                "- Memory held by the flow tracker and graph at {} flows: {:.0} bytes per tracked flow, {:.0} bytes per graph edge (allocation counting).",
                row["n"],
                row["bytes_per_flow"].as_f64().unwrap_or(f64::NAN),
                row["bytes_per_edge"].as_f64().unwrap_or(f64::NAN)
            );
        }
    }
    if let Some(a) = &r.agent {
        let _ = writeln!(
            o,
            "- Agent (release build) under load ({:.0} pps received by `b`: a flood at {} pps plus a sweep over {} UDP ports at {} pps): \
             **{:.1} MiB RSS** (peak {:.1} MiB) with {} graph edges and {} tracked flows; **{:.1}% of one core** over {:.0} s; \
             {} events received, {} lost.",
            a.load_rx_pps,
            a.flood_pps,
            a.edges_wanted,
            a.sweep_pps,
            a.rss_kib as f64 / 1024.0,
            a.hwm_kib as f64 / 1024.0,
            a.graph_edges,
            a.flows_tracked,
            a.cpu_percent,
            a.window_secs,
            a.events_received,
            a.events_lost
        );
        if let Some(ap) = &a.apply {
            let _ = writeln!(
                o,
                "- Policy of {} rules ({:.1} MB of YAML; {} policy and {} ipcache entries): `enforcer policy apply` **{:.0} ms** end to end, \
                 of which the kernel maps {:.0} ms (ApplyReport.duration_ms); parsing alone {:.0} ms and compiling {:.0} ms (measured in the bench process). \
                 Agent RSS after it: {:.1} MiB.",
                ap.rules,
                ap.policy_bytes as f64 / 1e6,
                ap.policy_entries,
                ap.ipcache_entries,
                ap.wall_ms,
                ap.kernel_ms,
                ap.parse_ms,
                ap.compile_ms,
                ap.rss_after_kib as f64 / 1024.0
            );
        }
    }
    o.push('\n');
    o.push_str(&goals(r));
    if !r.errors.is_empty() {
        let _ = writeln!(o, "\nErrors in this run:\n");
        for e in &r.errors {
            let _ = writeln!(o, "- {e}");
        }
    }
    o
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "**not met**",
        None => "not measured",
    }
}

fn goals(r: &Results) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "### Goals (issue #6)\n");
    let _ = writeln!(o, "| goal | measured | |");
    let _ = writeln!(o, "|---|---|---|");
    let d = &r.datapath;

    let e100k = find(d, "enforcer, deny list 100k");
    let _ = writeln!(
        o,
        "| ≥ 0.95× no-filter throughput at 100k CIDRs | {} | {} |",
        e100k.map_or("–".into(), |c| format!(
            "UDP {:.3}×, TCP {:.3}×",
            c.udp.median, c.tcp.median
        )),
        verdict(e100k.map(|c| c.udp.median >= 0.95 && c.tcp.median >= 0.95))
    );

    let mut cmp = Vec::new();
    for n in ["10", "1k", "10k", "100k"] {
        if let (Some(e), Some(f)) = (
            find(d, &format!("enforcer, deny list {n}")),
            find(d, &format!("nftables, set of {n}")),
        ) {
            cmp.push((n, e.udp.median, f.udp.median));
        }
    }
    let _ = writeln!(
        o,
        "| at least nftables-set speed (64-byte UDP) | {} | {} |",
        if cmp.is_empty() {
            "–".into()
        } else {
            cmp.iter()
                .map(|(n, e, f)| format!("{n}: {e:.3}× vs {f:.3}×"))
                .collect::<Vec<_>>()
                .join("; ")
        },
        verdict((!cmp.is_empty()).then(|| cmp.iter().all(|(_, e, f)| e >= f)))
    );

    let e10k = find(d, "enforcer, deny list 10k");
    let mut ipt = Vec::new();
    for flavour in ["nft", "legacy"] {
        if let (Some(e), Some(i)) = (e10k, find(d, &format!("iptables-{flavour}, 10k rules"))) {
            ipt.push((
                flavour,
                b_median(e, |m| m.udp_pps) / b_median(i, |m| m.udp_pps),
            ));
        }
    }
    let _ = writeln!(
        o,
        "| ≥ 10× iptables linear at 10k rules (64-byte UDP) | {} | {} |",
        if ipt.is_empty() {
            "–".into()
        } else {
            ipt.iter()
                .map(|(f, x)| format!("{x:.1}× iptables-{f}"))
                .collect::<Vec<_>>()
                .join(", ")
        },
        verdict((!ipt.is_empty()).then(|| ipt.iter().all(|(_, x)| *x >= 10.0)))
    );

    let mon = r
        .monitoring
        .iter()
        .find(|c| c.name.contains("events") && c.error.is_none());
    let _ = writeln!(
        o,
        "| monitoring overhead ≤ 5% | {} | {} |",
        mon.map_or("–".into(), |c| format!(
            "UDP {:+.1}%, TCP {:+.1}%, new connections {:+.1}%",
            (1.0 - c.udp.median) * 100.0,
            (1.0 - c.tcp.median) * 100.0,
            (1.0 - c.conn.median) * 100.0
        )),
        verdict(mon.map(|c| c.udp.median >= 0.95 && c.tcp.median >= 0.95 && c.conn.median >= 0.95))
    );

    let ingest = r
        .criterion
        .iter()
        .filter(|c| c.id.starts_with("ingest/steady"))
        .filter_map(|c| c.per_sec().map(|p| (c.id.clone(), p)))
        .collect::<Vec<_>>();
    let _ = writeln!(
        o,
        "| ≥ 1M flow records/s ingested per core | {} | {} |",
        if ingest.is_empty() {
            "–".into()
        } else {
            ingest
                .iter()
                .map(|(id, p)| format!("{:.2} M/s ({})", p / 1e6, id.trim_start_matches("ingest/")))
                .collect::<Vec<_>>()
                .join("; ")
        },
        verdict((!ingest.is_empty()).then(|| ingest.iter().all(|(_, p)| *p >= 1e6)))
    );

    let a = r.agent.as_ref();
    let _ = writeln!(
        o,
        "| agent RSS ≤ 64 MiB at 10k active edges | {} | {} |",
        a.map_or("–".into(), |a| format!(
            "{:.1} MiB at {} edges",
            a.rss_kib as f64 / 1024.0,
            a.graph_edges
        )),
        verdict(a.map(|a| a.rss_kib <= 64 * 1024 && a.graph_edges as usize >= a.edges_wanted))
    );
    let ap = a.and_then(|a| a.apply.as_ref());
    let _ = writeln!(
        o,
        "| 100k-rule policy applied in < 1 s | {} | {} |",
        ap.map_or("–".into(), |p| format!(
            "{:.0} ms end to end ({:.0} ms in the kernel maps)",
            p.wall_ms, p.kernel_ms
        )),
        verdict(ap.map(|p| p.wall_ms < 1000.0))
    );
    o
}
