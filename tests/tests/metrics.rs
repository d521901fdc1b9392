//! End-to-end metrics: a real agent in a lab's host namespace, real traffic, and its
//! `/metrics` endpoint scraped from inside that namespace (the listener is on the
//! namespace's loopback). The scrape must pass `promtool check metrics`, agree with
//! `enforcer status`, lose the series of a workload that leaves the inventory, and
//! fold workloads over the cap into `_other`.
mod support;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use enforcer::{graph::GraphView, status::Status};
use enforcer_tests::{
    Lab,
    agent::Agent,
    lab::inventory::{InventoryWorkload, render},
    tcp_connect, tcp_echo,
};
use support::{METRICS, Samples, http, promtool_check_metrics, scrape};

const SPEC: &str = r#"
name: metrics
workloads:
  - {name: api, labels: {app: api}}
  - {name: client, labels: {app: client}}
  - {name: web, labels: {app: web}}
"#;

const POLICY: &str = r#"
version: 1
policies:
  - name: web-serves
    selector: {app: web}
    ingress:
      - from: [{selector: {app: client}}]
        ports: [{port: 80, protocol: TCP}]
  - name: api-serves
    selector: {app: api}
    ingress:
      - ports: [{port: 8080, protocol: TCP}]
"#;

const OK: Duration = Duration::from_secs(3);
const NO: Duration = Duration::from_millis(500);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_enforcer-e2e"))
}

fn lab() -> Lab {
    let lab = Lab::up_yaml(SPEC).expect("lab up");
    for w in ["api", "web"] {
        lab.serve_echo(w, &[80, 81, 8080]).expect("echo servers");
    }
    lab
}

/// Allowed and dropped traffic to web and api, both families.
fn traffic(lab: &Lab) {
    for _ in 0..3 {
        for a in lab.addrs("web") {
            assert!(tcp_echo(lab, "client", a, 80, OK), "client -> web {a}:80");
            assert!(
                !tcp_connect(lab, "client", a, 81, NO),
                "client -> web {a}:81"
            );
        }
        for a in lab.addrs("api") {
            assert!(
                tcp_echo(lab, "client", a, 8080, OK),
                "client -> api {a}:8080"
            );
            assert!(!tcp_connect(lab, "web", a, 80, NO), "web -> api {a}:80");
        }
    }
}

/// Every per-workload counter of the scrape lies between two `enforcer status` readings
/// taken around it (background traffic such as neighbour discovery may tick between
/// them), and equals them where they agree.
fn assert_matches_status(scrape: &Samples, before: &Status, after: &Status) {
    let mut compared = 0;
    for (b, a) in before.workloads.iter().zip(&after.workloads) {
        assert_eq!(b.name, a.name);
        for (dir, bd, ad) in [
            ("ingress", &b.ingress, &a.ingress),
            ("egress", &b.egress, &a.egress),
        ] {
            for (reason, at) in &ad.by_reason {
                let bt = bd.by_reason.get(reason).cloned().unwrap_or_default();
                let with = [
                    ("workload", b.name.as_str()),
                    ("direction", dir),
                    ("reason", reason.as_str()),
                ];
                for (metric, lo, hi) in [
                    ("enforcer_workload_packets_total", bt.packets, at.packets),
                    ("enforcer_workload_bytes_total", bt.bytes, at.bytes),
                ] {
                    let v = scrape.find(metric, &with).first().copied().unwrap_or(0.0);
                    assert!(
                        (lo as f64) <= v && v <= (hi as f64),
                        "{metric} {with:?} = {v}, status says {lo}..{hi}"
                    );
                    compared += 1;
                }
            }
        }
    }
    assert!(compared >= 12, "compared only {compared} series");
}

#[test]
fn a_scrape_passes_promtool_and_agrees_with_status() {
    let lab = lab();
    let agent = Agent::start(bin(), lab.host_netns(), &lab.inventory_yaml(), POLICY);
    traffic(&lab);

    let before = agent.status();
    let text = scrape(&lab);
    let after = agent.status();
    promtool_check_metrics(&text);
    let s = Samples::parse(&text);
    assert_matches_status(&s, &before, &after);

    // The drops this test made, exactly: nothing else drops in the lab.
    let web = after
        .workloads
        .iter()
        .find(|w| w.name == "web")
        .expect("web");
    let port = &web.ingress.by_reason["dropped_port_not_declared"];
    assert!(port.packets >= 6, "{port:?}");
    let with = [
        ("workload", "web"),
        ("direction", "ingress"),
        ("verdict", "dropped"),
        ("reason", "dropped_port_not_declared"),
    ];
    assert_eq!(
        s.one("enforcer_workload_packets_total", &with),
        port.packets as f64
    );
    assert_eq!(
        s.one("enforcer_workload_bytes_total", &with),
        port.bytes as f64
    );
    let host_drops: f64 = s
        .find(
            "enforcer_dataplane_dropped_packets_total",
            &[("reason", "dropped_port_not_declared")],
        )
        .iter()
        .sum();
    assert!(host_drops >= port.packets as f64, "{host_drops}");

    // Policy, inventory and maps.
    assert_eq!(
        s.one("enforcer_policy_generation", &[]),
        f64::from(after.policy.generation)
    );
    assert_eq!(
        s.one("enforcer_policy_rules", &[]),
        after.policy.rules as f64
    );
    assert_eq!(s.one("enforcer_policy_last_apply_success", &[]), 1.0);
    assert!(s.one("enforcer_policy_last_success_timestamp_seconds", &[]) > 1.7e9);
    assert_eq!(s.one("enforcer_inventory_workloads", &[]), 3.0);
    assert_eq!(s.one("enforcer_inventory_workloads_unattached", &[]), 0.0);
    for w in ["api", "client", "web"] {
        assert_eq!(
            s.one("enforcer_workload_attached_hooks", &[("workload", w)]),
            2.0
        );
        assert_eq!(
            s.find(
                "enforcer_workload_info",
                &[("workload", w), ("mode", "enforce")]
            ),
            [1.0]
        );
    }
    for m in &after.maps {
        let cap = s.one("enforcer_dataplane_map_max_entries", &[("map", &m.name)]);
        assert_eq!(cap, f64::from(m.max_entries), "{}", m.name);
        let fill = s.one("enforcer_dataplane_map_fill_ratio", &[("map", &m.name)]);
        assert!((0.0..=1.0).contains(&fill), "{}: {fill}", m.name);
    }
    assert!(s.one("enforcer_dataplane_map_entries", &[("map", "ENF_CT")]) >= 1.0);
    // The entries of the maps the agent writes come from its last apply, not a walk
    // of the map: check them against bpftool's dump of the pinned maps.
    for m in after.maps.iter().filter(|m| {
        ["ENF_ENDPOINTS", "ENF_IPCACHE", "ENF_DENYLIST", "ENF_POLICY"].contains(&m.name.as_str())
    }) {
        let pin = agent.pin_dir().join(&m.name);
        let out = std::process::Command::new("bpftool")
            .args(["-j", "map", "dump", "pinned"])
            .arg(&pin)
            .output()
            .expect("bpftool");
        assert!(out.status.success(), "bpftool map dump {}", pin.display());
        let dump: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(dump.len(), m.entries, "{}: status vs bpftool", m.name);
        assert_eq!(
            s.one("enforcer_dataplane_map_entries", &[("map", &m.name)]),
            m.entries as f64,
            "{}",
            m.name
        );
    }
    // The agent process.
    assert!(s.one("enforcer_agent_resident_memory_bytes", &[]) > 1e6);
    assert!(s.one("enforcer_agent_cpu_seconds_total", &[]) > 0.0);
    assert_eq!(
        s.find(
            "enforcer_agent_info",
            &[("instance", agent.instance.as_str())]
        ),
        [1.0]
    );
    assert!(s.one("enforcer_metrics_collect_duration_seconds_count", &[]) >= 1.0);
    assert_eq!(s.one("enforcer_metrics_workloads_folded", &[]), 0.0);
}

#[test]
fn the_endpoint_serves_openmetrics_probes_and_nothing_else() {
    let lab = lab();
    let agent = Agent::start(bin(), lab.host_netns(), &lab.inventory_yaml(), POLICY);
    let get = |method: &str, path: &str, accept: Option<&str>| {
        http(&lab, "host", METRICS, method, path, accept)
            .unwrap_or_else(|| panic!("no answer to {method} {path}\n{}", agent.log_text()))
    };
    let om = get(
        "GET",
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    );
    assert_eq!(om.status, 200);
    assert!(
        om.content_type.starts_with("application/openmetrics-text"),
        "{}",
        om.content_type
    );
    assert!(om.body.ends_with("# EOF\n"), "{}", om.body);
    let text = get("GET", "/metrics", None);
    assert!(text.content_type.starts_with("text/plain; version=0.0.4"));
    assert_eq!(get("GET", "/healthz", None).body, "ok\n");
    let ready = get("GET", "/readyz", None);
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));
    assert_eq!(get("GET", "/", None).status, 404);
    assert_eq!(get("GET", "/v1/status", None).status, 404);
    assert_eq!(get("POST", "/metrics", None).status, 405);
    assert_eq!(get("DELETE", "/healthz", None).status, 405);
    assert_eq!(get("HEAD", "/metrics", None).status, 200);
    // Nothing listens outside the lab's host namespace's loopback.
    let bridge = format!("{}:9469", lab.host_addr4());
    assert!(
        http(&lab, "client", &bridge, "GET", "/metrics", None).is_none(),
        "metrics reachable from a workload"
    );
}

#[test]
fn metrics_address_off_and_a_custom_address() {
    let lab = lab();
    let off = Agent::start_with_args(
        bin(),
        lab.host_netns(),
        &lab.inventory_yaml(),
        POLICY,
        &["--metrics-address", "off"],
    );
    assert!(
        http(&lab, "host", METRICS, "GET", "/healthz", None).is_none(),
        "metrics served although off"
    );
    drop(off);
    let _custom = Agent::start_with_args(
        bin(),
        lab.host_netns(),
        &lab.inventory_yaml(),
        POLICY,
        &["--metrics-address", "[::1]:19469"],
    );
    let a = http(&lab, "host", "[::1]:19469", "GET", "/healthz", None).expect("custom address");
    assert_eq!(a.status, 200);
}

/// Inventory of the lab's workloads except `without`.
fn inventory_without(lab: &Lab, without: &str) -> String {
    let spec = lab.spec();
    let kept: Vec<InventoryWorkload<'_>> = spec
        .workloads
        .iter()
        .enumerate()
        .filter(|(_, w)| w.name.as_ref() != without)
        .map(|(i, w)| InventoryWorkload {
            name: w.name.as_str(),
            labels: &w.labels,
            interface: w.host_iface(),
            addr4: spec.workload_addr4(i),
            addr6: spec.workload_addr6(i),
            mode: w.mode.as_deref(),
        })
        .collect();
    render(spec.host_addr4(), spec.host_addr6(), &kept)
}

#[test]
fn the_workload_cap_folds_into_other_and_a_removed_workload_loses_its_series() {
    let lab = lab();
    let agent = Agent::start_with_args(
        bin(),
        lab.host_netns(),
        &lab.inventory_yaml(),
        POLICY,
        &["--metrics-max-workloads", "2"],
    );
    traffic(&lab);

    // api and client own the two slots (name order); web is folded into _other.
    let before = agent.status();
    let text = scrape(&lab);
    let after = agent.status();
    promtool_check_metrics(&text);
    let s = Samples::parse(&text);
    assert_eq!(
        s.label_values("enforcer_workload_packets_total", "workload"),
        ["_other", "api", "client"]
    );
    assert_eq!(s.one("enforcer_metrics_workload_limit", &[]), 2.0);
    assert_eq!(s.one("enforcer_metrics_workloads_folded", &[]), 1.0);
    assert_eq!(s.one("enforcer_metrics_series_dropped_total", &[]), 1.0);
    assert!(
        s.find("enforcer_workload_info", &[("workload", "web")])
            .is_empty()
    );
    // _other carries web's counters.
    let port = |st: &Status| {
        st.workloads
            .iter()
            .find(|w| w.name == "web")
            .expect("web")
            .ingress
            .by_reason["dropped_port_not_declared"]
            .packets as f64
    };
    let other = s.one(
        "enforcer_workload_packets_total",
        &[
            ("workload", "_other"),
            ("direction", "ingress"),
            ("reason", "dropped_port_not_declared"),
        ],
    );
    assert!(port(&before) <= other && other <= port(&after), "{other}");

    // api leaves the inventory: its series go, and web takes the freed slot.
    std::fs::write(&agent.inventory, inventory_without(&lab, "api")).expect("write inventory");
    let deadline = Instant::now() + Duration::from_secs(15);
    while agent.status().workloads.iter().any(|w| w.name == "api") {
        assert!(
            Instant::now() < deadline,
            "inventory change not applied\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = scrape(&lab);
    promtool_check_metrics(&text);
    let s = Samples::parse(&text);
    assert!(
        !text.contains(r#"workload="api""#),
        "api still exported:\n{text}"
    );
    assert_eq!(
        s.label_values("enforcer_workload_packets_total", "workload"),
        ["client", "web"]
    );
    assert_eq!(s.one("enforcer_inventory_workloads", &[]), 2.0);
    assert_eq!(s.one("enforcer_metrics_workloads_folded", &[]), 0.0);
    assert_eq!(s.one("enforcer_metrics_series_dropped_total", &[]), 1.0);
    assert!(
        s.one(
            "enforcer_workload_packets_total",
            &[
                ("workload", "web"),
                ("direction", "ingress"),
                ("reason", "dropped_port_not_declared"),
            ],
        ) >= port(&after)
    );
}

fn graph(agent: &Agent) -> GraphView {
    let out = agent.cli(&["graph", "--output", "json"]);
    assert!(
        out.status.success(),
        "enforcer graph: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("graph JSON")
}

/// The graph's edges from `src` to `dst`, all ports, summed: (bytes, packets, reply
/// bytes, connections, dropped packets).
fn pair_sums(g: &GraphView, src: &str, dst: &str) -> [f64; 5] {
    let mut sum = [0.0; 5];
    for e in g.edges.iter().filter(|e| e.src == src && e.dst == dst) {
        for (i, v) in [
            e.bytes,
            e.packets,
            e.reply_bytes,
            e.connections,
            e.dropped_packets,
        ]
        .into_iter()
        .enumerate()
        {
            sum[i] += v as f64;
        }
    }
    sum
}

/// Edge, connection and rule series come from the same flow deltas as the graph: once
/// the traffic has stopped and a poll has passed, they are equal to the graph's sums.
#[test]
fn edge_rule_and_flow_series_agree_with_the_graph_and_follow_the_inventory() {
    let lab = lab();
    let agent = Agent::start_with_args(
        bin(),
        lab.host_netns(),
        &lab.inventory_yaml(),
        POLICY,
        &["--flows-interval-ms", "200"],
    );
    traffic(&lab);
    // Let the last packets reach a poll, then read graph and metrics between polls
    // until two graph readings around a scrape agree (a poll may land in between).
    std::thread::sleep(Duration::from_millis(600));
    let deadline = Instant::now() + Duration::from_secs(15);
    let (g, s) = loop {
        let g1 = graph(&agent);
        let text = scrape(&lab);
        let g2 = graph(&agent);
        let same = |a: &GraphView, b: &GraphView| {
            ["client", "web", "api"].iter().all(|src| {
                ["client", "web", "api"]
                    .iter()
                    .all(|dst| pair_sums(a, src, dst) == pair_sums(b, src, dst))
            })
        };
        if same(&g1, &g2) {
            promtool_check_metrics(&text);
            break (g2, Samples::parse(&text));
        }
        assert!(Instant::now() < deadline, "graph never settled");
    };
    let edge = |src: &str, dst: &str| {
        let with = [("source", src), ("destination", dst)];
        let drops: f64 = s
            .find("enforcer_edge_dropped_packets_total", &with)
            .iter()
            .sum();
        [
            s.one("enforcer_edge_bytes_total", &with),
            s.one("enforcer_edge_packets_total", &with),
            s.one("enforcer_edge_reply_bytes_total", &with),
            s.one("enforcer_edge_connections_total", &with),
            drops,
        ]
    };
    for (src, dst) in [("client", "web"), ("client", "api"), ("web", "api")] {
        assert_eq!(edge(src, dst), pair_sums(&g, src, dst), "{src} -> {dst}");
    }
    // What the test sent: 6 echoes and 6 refused connects to web (3 rounds × 2
    // families), 6 echoes to api, 6 refused connects web -> api.
    let [bytes, _, reply, conns, dropped] = edge("client", "web");
    assert!(
        bytes > 0.0 && reply > 0.0,
        "client -> web carries both ways"
    );
    assert!(conns >= 12.0, "client -> web connections {conns}");
    assert!(dropped >= 6.0, "client -> web drops {dropped}");
    assert!(
        s.one(
            "enforcer_edge_dropped_packets_total",
            &[
                ("source", "client"),
                ("destination", "web"),
                ("reason", "dropped_port_not_declared")
            ]
        ) >= 6.0
    );
    assert!(
        s.one(
            "enforcer_edge_dropped_packets_total",
            &[
                ("source", "web"),
                ("destination", "api"),
                ("reason", "dropped_port_not_declared")
            ]
        ) >= 6.0
    );
    // Per workload: connections opened by client, received by web and api.
    let conn = |w: &str, d: &str| {
        s.one(
            "enforcer_workload_connections_total",
            &[("workload", w), ("direction", d)],
        )
    };
    assert!(conn("client", "egress") >= 18.0);
    assert!(conn("web", "ingress") >= 12.0);
    assert!(conn("api", "ingress") >= 12.0);
    // Per rule: the two policies' rules allowed traffic, default deny dropped some,
    // client's egress is selected by no policy.
    let rule = |p: &str, r: &str, v: &str| {
        s.find(
            "enforcer_policy_rule_packets_total",
            &[("policy", p), ("rule", r), ("verdict", v)],
        )
        .first()
        .copied()
        .unwrap_or(0.0)
    };
    assert!(rule("web-serves", "ingress[0]", "allowed") >= 6.0 * 3.0);
    assert!(rule("api-serves", "ingress[0]", "allowed") >= 6.0 * 3.0);
    assert!(rule("_default_deny", "ingress", "dropped") >= 12.0);
    assert!(rule("_not_selected", "egress", "allowed") > 0.0);
    // Flow monitoring itself.
    assert!(s.one("enforcer_flows_events_received_total", &[]) >= 24.0);
    for cause in ["ringbuf_full", "rate_limited"] {
        assert_eq!(
            s.one("enforcer_flows_events_lost_total", &[("cause", cause)]),
            0.0
        );
    }
    assert!(s.one("enforcer_flows_polls_total", &[]) >= 2.0);
    assert!(s.one("enforcer_flows_poll_duration_seconds_count", &[]) >= 2.0);
    assert_eq!(s.one("enforcer_graph_edges", &[]), g.edges.len() as f64);
    assert_eq!(s.one("enforcer_baseline_learning", &[]), 1.0);
    assert_eq!(
        s.find("enforcer_baseline_alerts_firing", &[]).len(),
        6 * 3,
        "every kind and severity"
    );

    // api leaves the inventory: its pairs and connections go with it.
    std::fs::write(&agent.inventory, inventory_without(&lab, "api")).expect("write inventory");
    let deadline = Instant::now() + Duration::from_secs(15);
    while agent.status().workloads.iter().any(|w| w.name == "api") {
        assert!(
            Instant::now() < deadline,
            "inventory change not applied\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = scrape(&lab);
    let s = Samples::parse(&text);
    for name in [
        "enforcer_edge_bytes_total",
        "enforcer_edge_dropped_packets_total",
    ] {
        for label in ["source", "destination"] {
            assert!(
                !s.label_values(name, label).contains(&"api".to_owned()),
                "{name} still names api:\n{text}"
            );
        }
    }
    assert!(
        s.find(
            "enforcer_edge_bytes_total",
            &[("source", "client"), ("destination", "web")]
        )
        .len()
            == 1
    );
    assert!(!text.contains(r#"workload="api""#), "{text}");
}

#[test]
fn a_rejected_policy_shows_as_a_failed_apply() {
    let lab = lab();
    let agent = Agent::start(bin(), lab.host_netns(), &lab.inventory_yaml(), POLICY);
    let s = Samples::parse(&scrape(&lab));
    assert_eq!(s.one("enforcer_policy_last_apply_success", &[]), 1.0);
    let generation = s.one("enforcer_policy_generation", &[]);
    // A broken edit of the watched policy file: the agent rejects it, keeps the old one.
    std::fs::write(
        &agent.policy,
        "version: 1\npolicies:\n  - name: x\n    selectr: {}\n",
    )
    .expect("write policy");
    let deadline = Instant::now() + Duration::from_secs(15);
    while agent.status().policy.last_error.is_none() {
        assert!(
            Instant::now() < deadline,
            "bad policy not rejected\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let s = Samples::parse(&scrape(&lab));
    assert_eq!(s.one("enforcer_policy_last_apply_success", &[]), 0.0);
    assert!(s.one("enforcer_policy_last_failure_timestamp_seconds", &[]) > 1.7e9);
    assert_eq!(s.one("enforcer_policy_generation", &[]), generation);
    // Fixed through the API: success again, one generation on.
    let out = agent.apply("good.yaml", POLICY);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = Samples::parse(&scrape(&lab));
    assert_eq!(s.one("enforcer_policy_last_apply_success", &[]), 1.0);
    assert!(
        s.find("enforcer_policy_last_failure_timestamp_seconds", &[])
            .is_empty()
    );
    assert_eq!(s.one("enforcer_policy_generation", &[]), generation + 1.0);
}
