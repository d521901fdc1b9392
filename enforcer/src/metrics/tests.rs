//! Unit tests of the metrics module: encoding, folding, cardinality, names, docs.
use std::collections::BTreeSet;

use enforcer_common::counter::Reason;

use super::*;
use crate::status::Traffic;

fn encode(max_workloads: usize, scrape: Scrape, format: Format) -> String {
    Metrics::new(&MetricsConfig {
        max_workloads,
        ..Default::default()
    })
    .encode(scrape, format)
    .expect("encode")
}

/// The value of the series written exactly as `series` (name and labels).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn both_formats_carry_the_same_samples() {
    let om = encode(8, collect::sample_scrape(), Format::OpenMetrics);
    let prom = encode(8, collect::sample_scrape(), Format::Prometheus);
    assert!(om.ends_with("# EOF\n"), "OpenMetrics ends with EOF");
    assert!(!prom.contains("# EOF"));
    // Prometheus text names the counter family with its `_total`; OpenMetrics does not.
    assert!(prom.contains("# TYPE enforcer_workload_packets_total counter"));
    assert!(om.contains("# TYPE enforcer_workload_packets counter"));
    let samples = |t: &str| -> BTreeSet<String> {
        t.lines()
            .filter(|l| !l.starts_with('#'))
            // Floats print as `1.0` in one format and `1` in the other.
            .map(|l| l.trim_end_matches(".0").to_owned())
            .filter(|l| !l.contains("collect_duration"))
            .collect()
    };
    assert_eq!(samples(&om), samples(&prom));
}

#[test]
fn workload_counters_are_the_kernel_totals_and_labelled_by_verdict() {
    let text = encode(8, collect::sample_scrape(), Format::Prometheus);
    let v = |s: &str| value(&text, s).unwrap_or_else(|| panic!("no series {s} in\n{text}"));
    assert_eq!(
        v(
            r#"enforcer_workload_bytes_total{workload="web",direction="ingress",verdict="allowed",reason="allowed_by_policy"}"#
        ),
        1000.0
    );
    assert_eq!(
        v(
            r#"enforcer_workload_packets_total{workload="db",direction="egress",verdict="dropped",reason="dropped_port_not_declared"}"#
        ),
        2.0
    );
    // A reason number this build does not know: one `unknown` value, a drop (>= 16).
    assert_eq!(
        v(
            r#"enforcer_workload_packets_total{workload="web",direction="ingress",verdict="dropped",reason="unknown"}"#
        ),
        1.0
    );
    // Host-wide drops: both workloads, both reasons that drop.
    assert_eq!(
        v(
            r#"enforcer_dataplane_dropped_packets_total{direction="ingress",reason="dropped_port_not_declared"}"#
        ),
        4.0
    );
    assert_eq!(v("enforcer_policy_last_apply_success"), 0.0);
    assert_eq!(
        v("enforcer_policy_last_success_timestamp_seconds"),
        1_767_225_600.0
    );
    assert_eq!(
        v(r#"enforcer_policy_kernel_entries{map="ENF_POLICY"}"#),
        6.0
    );
    assert_eq!(v(r#"enforcer_dataplane_map_fill_ratio{map="ENF_CT"}"#), 0.1);
    assert_eq!(v("enforcer_agent_cpu_seconds_total"), 1.5);
    assert_eq!(v("enforcer_metrics_collect_duration_seconds_count"), 1.0);
}

#[test]
fn workloads_over_the_cap_are_summed_into_other_and_counted() {
    let text = encode(1, collect::sample_scrape(), Format::Prometheus);
    // Name order: db owns the one slot, web is folded.
    assert!(text.contains(r#"enforcer_workload_info{workload="db""#));
    assert!(!text.contains(r#"workload="web""#), "{text}");
    let v = |s: &str| value(&text, s).unwrap_or_else(|| panic!("no series {s} in\n{text}"));
    assert_eq!(
        v(
            r#"enforcer_workload_bytes_total{workload="_other",direction="ingress",verdict="allowed",reason="allowed_by_policy"}"#
        ),
        1000.0
    );
    assert_eq!(v("enforcer_metrics_workloads_folded"), 1.0);
    assert_eq!(v("enforcer_metrics_series_dropped_total"), 1.0);
    assert_eq!(v("enforcer_metrics_workload_limit"), 1.0);
    // Host-wide drops do not depend on the cap.
    assert_eq!(
        v(
            r#"enforcer_dataplane_dropped_packets_total{direction="ingress",reason="dropped_port_not_declared"}"#
        ),
        4.0
    );
}

#[test]
fn a_workload_that_leaves_the_inventory_loses_its_series() {
    let metrics = Metrics::new(&MetricsConfig::default());
    let first = metrics
        .encode(collect::sample_scrape(), Format::Prometheus)
        .expect("encode");
    assert!(first.contains(r#"workload="web""#));
    let mut scrape = collect::sample_scrape();
    scrape.status.workloads.retain(|w| w.name != "web");
    let second = metrics.encode(scrape, Format::Prometheus).expect("encode");
    assert!(!second.contains(r#"workload="web""#), "{second}");
    assert!(second.contains(r#"workload="db""#));
}

#[test]
fn series_per_workload_stay_within_the_documented_bound() {
    let mut scrape = collect::sample_scrape();
    let every_reason = Reason::ALL
        .iter()
        .map(|r| r.as_str().to_owned())
        .chain((0..=255u8).map(|n| format!("unknown_{n}")))
        .map(|r| {
            (
                r,
                Traffic {
                    packets: 1,
                    bytes: 1,
                },
            )
        })
        .collect::<std::collections::BTreeMap<_, _>>();
    for w in &mut scrape.status.workloads {
        w.ingress.by_reason = every_reason.clone();
        w.egress.by_reason = every_reason.clone();
    }
    let text = encode(8, scrape, Format::Prometheus);
    let per_web = text
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(r#"workload="web""#))
        .count();
    assert_eq!(per_web, MAX_SERIES_PER_WORKLOAD);
}

#[test]
fn process_series_are_left_out_when_proc_is_unreadable() {
    let mut scrape = collect::sample_scrape();
    scrape.process = None;
    let text = encode(8, scrape, Format::Prometheus);
    assert!(!text.contains("enforcer_agent_cpu_seconds"));
    assert!(text.contains("enforcer_agent_info"));
}

#[test]
fn the_prometheus_text_passes_promtool() {
    use std::io::Write as _;
    let text = encode(1, collect::sample_scrape(), Format::Prometheus);
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; `cargo xtask setup` installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn accept_header_picks_the_format() {
    let prometheus_scraper = "application/openmetrics-text;version=1.0.0,\
        application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    assert_eq!(
        Format::from_accept(Some(prometheus_scraper)),
        Format::OpenMetrics
    );
    assert_eq!(Format::from_accept(Some("*/*")), Format::Prometheus);
    assert_eq!(Format::from_accept(None), Format::Prometheus);
}

#[test]
fn metrics_address_parses_off_and_socket_addresses() {
    assert_eq!(
        "off".parse::<MetricsAddress>().ok(),
        Some(MetricsAddress::Off)
    );
    assert_eq!(
        "[::1]:9469".parse::<MetricsAddress>().ok(),
        Some(MetricsAddress::Listen("[::1]:9469".parse().expect("addr")))
    );
    assert_eq!(MetricsAddress::default().to_string(), DEFAULT_ADDRESS);
    let err = "localhost:9469"
        .parse::<MetricsAddress>()
        .expect_err("names are not resolved")
        .to_string();
    assert!(
        err.contains("localhost:9469") && err.contains("off"),
        "{err}"
    );
}

#[test]
fn metric_names_cover_every_family_with_prometheus_suffixes() {
    let names = metric_names();
    for n in [
        "enforcer_workload_packets_total",
        "enforcer_workload_bytes_total",
        "enforcer_dataplane_map_fill_ratio",
        "enforcer_metrics_collect_duration_seconds_bucket",
        "enforcer_policy_last_failure_timestamp_seconds",
        "enforcer_agent_resident_memory_bytes",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} missing from {names:?}");
    }
    for n in &names {
        assert!(n.starts_with("enforcer_"), "{n}");
    }
}

/// `docs/metrics.md` documents exactly the metrics the agent exports: its reference
/// tables list every family name in backquotes as the first cell of a row.
#[test]
fn docs_list_exactly_the_exported_metrics() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md");
    let doc = std::fs::read_to_string(path).expect("docs/metrics.md");
    let documented: BTreeSet<String> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `enforcer_"))
        .filter_map(|l| l.split('`').next())
        .map(|n| format!("enforcer_{n}"))
        .collect();
    // Histograms are documented once, by family name.
    let exported: BTreeSet<String> = metric_names()
        .into_iter()
        .map(|n| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s).map(str::to_owned))
                .unwrap_or(n)
        })
        .collect();
    let undocumented: Vec<_> = exported.difference(&documented).collect();
    let stale: Vec<_> = documented.difference(&exported).collect();
    assert!(
        undocumented.is_empty() && stale.is_empty(),
        "docs/metrics.md is out of step: undocumented {undocumented:?}, documented but not \
         exported {stale:?}"
    );
}

fn encode_capped(max_edges: usize, scrape: Scrape) -> String {
    Metrics::new(&MetricsConfig {
        max_edges,
        ..Default::default()
    })
    .encode(scrape, Format::Prometheus)
    .expect("encode")
}

#[test]
fn edges_rules_flows_and_alerts_are_exported() {
    let text = encode_capped(8, collect::sample_scrape());
    let v = |s: &str| value(&text, s).unwrap_or_else(|| panic!("no series {s} in\n{text}"));
    assert_eq!(
        v(r#"enforcer_edge_bytes_total{source="web",destination="db"}"#),
        1000.0
    );
    assert_eq!(
        v(r#"enforcer_edge_reply_bytes_total{source="web",destination="db"}"#),
        900.0
    );
    assert_eq!(
        v(r#"enforcer_edge_connections_total{source="web",destination="db"}"#),
        1.0
    );
    assert_eq!(
        v(
            r#"enforcer_edge_dropped_packets_total{source="db",destination="web",reason="dropped_port_not_declared"}"#
        ),
        2.0
    );
    assert_eq!(
        v(
            r#"enforcer_policy_rule_packets_total{policy="db-serves",rule="ingress[0]",verdict="allowed"}"#
        ),
        18.0
    );
    assert_eq!(
        v(
            r#"enforcer_policy_rule_packets_total{policy="_default_deny",rule="ingress",verdict="dropped"}"#
        ),
        2.0
    );
    assert_eq!(
        v(r#"enforcer_workload_connections_total{workload="web",direction="egress"}"#),
        1.0
    );
    assert_eq!(
        v(r#"enforcer_flows_events_lost_total{cause="ringbuf_full"}"#),
        0.0
    );
    assert_eq!(
        v(r#"enforcer_baseline_alerts_firing{kind="spike",severity="warning"}"#),
        0.0
    );
    assert_eq!(v(r#"enforcer_baseline_alerts_total{kind="fan_out"}"#), 0.0);
    assert_eq!(v("enforcer_baseline_learning"), 1.0);
    assert_eq!(v("enforcer_metrics_edge_limit"), 8.0);
    // Every kind and severity exists from the start (6 × 3), so alert rules need no
    // `absent()`.
    let firing = text
        .lines()
        .filter(|l| l.starts_with("enforcer_baseline_alerts_firing{"))
        .count();
    assert_eq!(firing, 18);
}

#[test]
fn edges_over_the_cap_are_summed_into_other_and_counted() {
    let text = encode_capped(1, collect::sample_scrape());
    let v = |s: &str| value(&text, s).unwrap_or_else(|| panic!("no series {s} in\n{text}"));
    // Sort order: (db, web) owns the one slot; (web, db) is folded.
    assert!(text.contains(r#"source="db",destination="web""#));
    assert!(!text.contains(r#"source="web",destination="db""#), "{text}");
    assert_eq!(
        v(r#"enforcer_edge_bytes_total{source="_other",destination="_other"}"#),
        1000.0
    );
    assert_eq!(v("enforcer_metrics_edges_folded"), 1.0);
    assert_eq!(v("enforcer_metrics_edge_series_dropped_total"), 1.0);
}

#[test]
fn series_per_edge_stay_within_the_documented_bound() {
    use crate::{
        flows::totals::PairDelta,
        graph::{Node, NodeKind},
    };
    let mut scrape = collect::sample_scrape();
    let node = |id: &str| Node {
        id: id.into(),
        kind: NodeKind::Workload,
        labels: Default::default(),
    };
    let t0 = std::time::SystemTime::UNIX_EPOCH;
    for reason in Reason::ALL
        .iter()
        .copied()
        .filter(|r| r.is_drop())
        .map(Some)
        .chain([None])
    {
        let d = PairDelta {
            packets: 1,
            bytes: 1,
            reply_packets: 1,
            reply_bytes: 1,
            connections: 1,
            dropped_packets: 1,
            drop_reason: reason,
        };
        scrape.totals.add_pair(&node("a"), &node("b"), &d, t0);
    }
    let text = encode_capped(8, scrape);
    let per_edge = text
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(r#"source="a",destination="b""#))
        .count();
    assert_eq!(per_edge, MAX_SERIES_PER_EDGE);
}
