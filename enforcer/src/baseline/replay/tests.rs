use std::fmt::Write as _;

use proptest::prelude::*;

use super::*;
use crate::baseline::{AlertKind, AlertState};

fn settings(learning_secs: u64) -> Settings {
    Settings {
        learning_secs,
        ..Settings::default()
    }
}

#[test]
fn csv_parses_header_units_and_reports_bad_lines() {
    let p = Path::new("x.csv");
    let rows = parse_csv(
        "timestamp,value\n# comment\n60,1.5\n1704067200000,2\n2024-01-01T00:02:00Z, 3\n",
        p,
    )
    .expect("csv");
    assert_eq!(
        rows,
        vec![
            (60_000, 1.5),
            (1_704_067_200_000, 2.0),
            (1_704_067_320_000, 3.0)
        ]
    );
    let e = parse_csv("0,1\n60,abc\n", p).expect_err("bad value");
    assert!(e.to_string().contains("x.csv:2"), "{e}");
    let e = parse_csv("0,1\n60,-1\n", p).expect_err("negative");
    assert!(e.to_string().contains("≥ 0"), "{e}");
    let e = parse_csv("0,1\nyesterday,1\n", p).expect_err("bad time");
    assert!(e.to_string().contains(":2:"), "{e}");
}

#[test]
fn csv_replay_finds_a_spike_in_the_series_units() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("edge.csv");
    let mut text = String::from("timestamp,value\n");
    for i in 0..400u64 {
        let v = if (300..306).contains(&i) {
            10_000.0
        } else {
            1000.0 * (1.0 + 0.05 * ((i % 5) as f64 - 2.0) / 2.0)
        };
        let _ = writeln!(text, "{},{v}", i * 60);
    }
    std::fs::write(&path, text).expect("write");
    let r = run(&settings(3600), &path, &Options::default()).expect("replay");
    assert_eq!((r.records, r.interval_secs), (400, 60));
    let fired: Vec<&Alert> = r
        .alerts
        .iter()
        .filter(|a| a.state == AlertState::Firing)
        .collect();
    assert_eq!(fired.len(), 1, "{fired:#?}");
    let a = fired[0];
    assert_eq!(a.kind, AlertKind::Spike);
    assert_eq!(a.start_ms, 300 * 60_000);
    assert!((9000.0..11_000.0).contains(&a.observed), "{}", a.observed);
    assert!((900.0..1100.0).contains(&a.expected), "{}", a.expected);
    assert_eq!(a.unit, "bytes/s");
    assert!(r.alerts.iter().any(|a| a.state == AlertState::Resolved));
}

fn flow_line(t: u64, kind: &str, src: &str, dst: &str, port: u16) -> String {
    let time = crate::baseline::fmt_ms(1_704_067_200_000 + t);
    let verdict = if kind == "deny" { "dropped" } else { "allowed" };
    format!(
        r#"{{"timestamp":"{time}","level":"INFO","event":"flow","kind":"{kind}","verdict":"{verdict}","workload":"{src}","direction":"egress","protocol":"TCP","src":"10.0.0.1","src_port":40000,"src_name":"{src}","dst":"10.0.0.2","dst_port":{port},"dst_name":"{dst}","target":"enforcer::flowlog"}}"#
    )
}

#[test]
fn flow_log_replay_raises_new_edge_and_scan() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("agent.log");
    let mut text = String::from(
        "{\"event\":\"agent_started\",\"timestamp\":\"2024-01-01T00:00:00Z\"}\nnot json\n",
    );
    // Two hours of one connection a minute from client to web:80.
    for m in 0..120u64 {
        let _ = writeln!(
            text,
            "{}",
            flow_line(m * 60_000 + 5, "new", "client", "web", 80)
        );
    }
    // Then a first flow to db, and a denied scan of 200 ports of web.
    let _ = writeln!(
        text,
        "{}",
        flow_line(120 * 60_000 + 10, "new", "client", "db", 5432)
    );
    for p in 1..=200u16 {
        let _ = writeln!(
            text,
            "{}",
            flow_line(
                125 * 60_000 + u64::from(p),
                "deny",
                "client",
                "web",
                1000 + p
            )
        );
    }
    std::fs::write(&path, text).expect("write");
    let r = run(&settings(3600), &path, &Options::default()).expect("replay");
    assert_eq!((r.records, r.skipped), (321, 2));
    let kinds: Vec<(AlertKind, u64)> = r
        .alerts
        .iter()
        .filter(|a| a.state == AlertState::Firing)
        .map(|a| (a.kind, (a.detected_ms - 1_704_067_200_000) / 60_000))
        .collect();
    assert!(kinds.contains(&(AlertKind::NewEdge, 121)), "{kinds:?}");
    assert!(kinds.contains(&(AlertKind::FanOut, 126)), "{kinds:?}");
    assert!(kinds.contains(&(AlertKind::DenyBurst, 126)), "{kinds:?}");
    // The scan's ports were not raised one by one.
    assert!(
        !kinds.iter().any(|k| k.0 == AlertKind::NewPort),
        "{kinds:?}"
    );
}

#[test]
fn flow_records_from_enforcer_flows_count_once() {
    let ingress_copy = r#"{"time":"2024-01-01T00:00:01Z","kind":"new","workload":"web","direction":"ingress","src":"10.0.0.1","src_port":1,"dst":"10.0.0.2","dst_port":80,"protocol":"TCP","src_name":"client","dst_name":"web","verdict":"allowed","reason":"allowed_by_policy","decided_by":"","reply":false,"packet_bytes":60}"#;
    let egress = ingress_copy
        .replace("\"ingress\"", "\"egress\"")
        .replace("\"workload\":\"web\"", "\"workload\":\"client\"");
    let from_world = ingress_copy.replace("\"client\"", "\"world:198.51.100.0/24\"");
    let (recs, skipped) = parse_flow_log(&format!("{ingress_copy}\n{egress}\n{from_world}\n"));
    assert_eq!((recs.len(), skipped), (2, 1));
    assert_eq!(recs[0].1, EdgeRef::new("client", "web", 6, 80));
    assert_eq!(recs[0].2.connections, 1);
}

proptest! {
    #[test]
    fn parsers_never_panic(text in "\\PC{0,200}") {
        let _ = parse_csv(&text, Path::new("p.csv"));
        let _ = parse_flow_log(&text);
    }

    #[test]
    fn csv_rows_round_trip(rows in proptest::collection::vec((0u64..4_000_000_000, 0.0f64..1e12), 1..20)) {
        let text: String = rows.iter().map(|(t, v)| format!("{t},{v}\n")).collect();
        let parsed = parse_csv(&text, Path::new("p.csv")).expect("valid rows");
        let mut want: Vec<(u64, f64)> = rows.iter().map(|(t, v)| (t * 1000, *v)).collect();
        want.sort_by_key(|r| r.0);
        prop_assert_eq!(parsed.len(), want.len());
        for (a, b) in parsed.iter().zip(&want) {
            prop_assert_eq!(a.0, b.0);
            prop_assert!((a.1 - b.1).abs() <= 1e-9 * b.1.max(1.0));
        }
    }
}
