//! A real Prometheus (Debian's `prometheus`) scraping a real agent, both in a lab's host
//! namespace and on its loopback only: traffic goes through the lab, and a workload's
//! byte counter read back through Prometheus' HTTP API must equal what `enforcer status`
//! says, and so must an edge's byte counter and `enforcer graph`. The shipped rules are loaded (the recording rules must produce series) and
//! every query of every shipped dashboard must run without error, and return data where
//! the lab has some. Prometheus is stopped and its storage removed even when the test
//! fails (a guard, plus the lab's own teardown).
mod support;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use enforcer_tests::{Lab, LabChild, agent::Agent, tcp_connect, tcp_echo};
use serde_json::Value;
use support::{METRICS, http};

/// Where Prometheus listens, inside the lab's host namespace.
const PROMETHEUS: &str = "127.0.0.1:19090";

const SPEC: &str = r#"
name: prom
workloads:
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
"#;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_enforcer-e2e"))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A Prometheus process and its storage; stopped and removed on drop.
struct Prometheus {
    child: LabChild,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(lab: &Lab) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let rules = repo().join("dashboards/rules/enforcer.rules.yaml");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files: [\"{}\"]\n\
                 scrape_configs:\n  - job_name: enforcer\n    static_configs:\n      - targets: [\"{METRICS}\"]\n",
                rules.display()
            ),
        )
        .expect("write prometheus.yml");
        let log = dir.path().join("prometheus.log");
        let out = std::fs::File::create(&log).expect("prometheus log");
        let mut cmd = lab.cmd("host", "prometheus");
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={PROMETHEUS}"))
            .arg("--storage.tsdb.retention.time=1h")
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup log"))
            .stderr(out);
        let child = lab.spawn_command(cmd).expect("start prometheus");
        let p = Self {
            child,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(a) = http(lab, "host", PROMETHEUS, "GET", "/-/ready", None)
                && a.status == 200
            {
                return p;
            }
            if let Ok(Some(st)) = p.child.try_wait() {
                panic!("prometheus exited with {st}:\n{}", p.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready after 30 s:\n{}",
                p.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.stop(Duration::from_secs(5));
        if std::thread::panicking() {
            eprintln!("---- prometheus log ----\n{}", self.log_text());
        }
    }
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET /api/v1/query`: the result vector, or the error Prometheus gives.
fn query(lab: &Lab, expr: &str) -> Result<Vec<Value>, String> {
    let path = format!("/api/v1/query?query={}", encode(expr));
    let a = http(lab, "host", PROMETHEUS, "GET", &path, None).ok_or("no answer")?;
    let v: Value = serde_json::from_str(&a.body).map_err(|e| format!("{e}: {}", a.body))?;
    if v["status"] != "success" {
        return Err(format!("{}: {}", v["errorType"], v["error"]));
    }
    Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
}

/// The single value of an instant query, if it has exactly one series.
fn scalar(lab: &Lab, expr: &str) -> Option<f64> {
    let r = query(lab, expr).ok()?;
    match r.as_slice() {
        [one] => one["value"][1].as_str()?.parse().ok(),
        _ => None,
    }
}

/// Waits until `check` holds, for at most `secs`; panics with `what` and the last value.
fn eventually<T: std::fmt::Debug>(secs: u64, what: &str, mut check: impl FnMut() -> (bool, T)) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (ok, last) = check();
        if ok {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: last {last:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Every query in a dashboard: (where, PromQL) for targets, annotations and `query`
/// variables, with Grafana's variables replaced by values valid in this lab.
fn dashboard_queries(file: &Path) -> Vec<(String, String, bool)> {
    let json: Value = serde_json::from_str(&std::fs::read_to_string(file).expect("read dashboard"))
        .expect("dashboard JSON");
    let subst = |e: &str| {
        e.replace("$__rate_interval", "15s")
            .replace("$__range", "5m")
            .replace("$instance", ".*")
            .replace("$workload", "web")
    };
    let mut out = Vec::new();
    let mut panels: Vec<Value> = Vec::new();
    for p in json["panels"].as_array().cloned().unwrap_or_default() {
        panels.extend(p["panels"].as_array().cloned().unwrap_or_default());
        panels.push(p);
    }
    for p in &panels {
        for t in p["targets"].as_array().cloned().unwrap_or_default() {
            if let Some(e) = t["expr"].as_str() {
                out.push((format!("panel {:?}", p["title"]), subst(e), true));
            }
        }
    }
    for a in json["annotations"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        if let Some(e) = a["target"]["expr"].as_str() {
            out.push((format!("annotation {:?}", a["name"]), subst(e), false));
        }
    }
    for v in json["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        if v["type"] != "query" {
            continue;
        }
        let q = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .unwrap_or_default();
        // label_values(metric, label): the metric must have series.
        let metric = q
            .strip_prefix("label_values(")
            .and_then(|r| r.rsplit_once(','))
            .map_or(q, |(m, _)| m);
        out.push((format!("variable {:?}", v["name"]), subst(metric), true));
    }
    out
}

#[test]
fn prometheus_scrapes_the_agent_and_serves_its_counters_and_dashboards() {
    let lab = Lab::up_yaml(SPEC).expect("lab up");
    lab.serve_echo("web", &[80, 81]).expect("echo servers");
    let agent = Agent::start(bin(), lab.host_netns(), &lab.inventory_yaml(), POLICY);
    let prometheus = Prometheus::start(&lab);

    // Traffic only once Prometheus scrapes (target discovery takes a few seconds), so
    // that it sees the counters grow.
    eventually(30, "up{job=\"enforcer\"} == 1", || {
        let v = scalar(&lab, r#"up{job="enforcer"}"#);
        (v == Some(1.0), (v, prometheus.log_text()))
    });

    for _ in 0..5 {
        for a in lab.addrs("web") {
            assert!(
                tcp_echo(&lab, "client", a, 80, Duration::from_secs(3)),
                "web {a}:80"
            );
            assert!(!tcp_connect(
                &lab,
                "client",
                a,
                81,
                Duration::from_millis(500)
            ));
        }
    }

    // web's allowed ingress bytes, through Prometheus, equal `enforcer status`. Only
    // the traffic above makes new allowed connections to web, and it is over, so the
    // value settles at the next scrape.
    let series = r#"enforcer_workload_bytes_total{job="enforcer", workload="web", direction="ingress", verdict="allowed", reason="allowed_by_policy"}"#;
    eventually(
        30,
        "web's byte counter in Prometheus equals enforcer status",
        || {
            let st = agent.status();
            let web = st.workloads.iter().find(|w| w.name == "web").expect("web");
            let want = web
                .ingress
                .by_reason
                .get("allowed_by_policy")
                .map(|t| t.bytes);
            let got = scalar(&lab, series);
            (
                want.is_some_and(|w| w > 0 && Some(w as f64) == got),
                (got, want),
            )
        },
    );
    let drops = r#"enforcer_workload_packets_total{workload="web", direction="ingress", reason="dropped_port_not_declared"}"#;
    eventually(
        30,
        "web's drops in Prometheus equal enforcer status",
        || {
            let want = agent.drops("web", "ingress", "dropped_port_not_declared");
            let got = scalar(&lab, drops);
            (want >= 10 && Some(want as f64) == got, (got, want))
        },
    );

    // The client -> web edge's byte counter, through Prometheus, equals the sum of the
    // graph's client -> web edges (both come from the same flow-map deltas).
    let edge = r#"enforcer_edge_bytes_total{job="enforcer", source="client", destination="web"}"#;
    eventually(
        30,
        "the client -> web edge's bytes in Prometheus equal enforcer graph",
        || {
            let out = agent.cli(&["graph", "--output", "json"]);
            let g: enforcer::graph::GraphView =
                serde_json::from_slice(&out.stdout).expect("graph JSON");
            let want: u64 = g
                .edges
                .iter()
                .filter(|e| e.src == "client" && e.dst == "web")
                .map(|e| e.bytes)
                .sum();
            let got = scalar(&lab, edge);
            (want > 0 && Some(want as f64) == got, (got, want))
        },
    );

    // The shipped recording rules evaluate to series for this agent.
    for rec in [
        "workload:enforcer_workload_bytes:rate5m",
        "workload:enforcer_workload_dropped_packets:rate5m",
        "instance:enforcer_dataplane_dropped_packets:rate5m",
    ] {
        eventually(30, rec, || {
            let r = query(&lab, rec);
            (r.as_ref().is_ok_and(|v| !v.is_empty()), r)
        });
    }
    // No alert but the informational ones fires for a healthy agent.
    let firing = query(&lab, r#"ALERTS{alertstate="firing", severity!="info"}"#).expect("ALERTS");
    assert!(firing.is_empty(), "alerts firing: {firing:?}");

    // Every dashboard query runs; those about things the lab has return data.
    let mut checked = 0;
    let mut dashboards: Vec<PathBuf> = std::fs::read_dir(repo().join("dashboards"))
        .expect("dashboards/")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    dashboards.sort();
    assert!(dashboards.len() >= 3, "{dashboards:?}");
    for d in &dashboards {
        for (place, expr, want_data) in dashboard_queries(d) {
            // Nothing in the lab runs in audit mode or fails closed, and no anomaly
            // fires (the baseline is still learning).
            let may_be_empty = !want_data
                || expr.contains("allowed_audit")
                || expr.contains("dropped_internal_error")
                || (expr.contains("enforcer_baseline_alerts_firing") && expr.ends_with("> 0"));
            let file = d
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            eventually(20, &format!("{file}: {place}: {expr}"), || {
                let r = query(&lab, &expr);
                (r.as_ref().is_ok_and(|v| may_be_empty || !v.is_empty()), r)
            });
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} dashboard queries");
}
