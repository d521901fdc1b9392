//! Anomaly alerts end to end: after a short learning period (1 s intervals) with
//! steady iperf3 traffic and no alert, a real iperf3 spike on the learnt edge, a
//! first flow to a never-contacted workload and a port scan (hping3) each raise the
//! right alert within a few intervals, logged as `event="alert"` and pushed to a real
//! Alertmanager (Debian's prometheus-alertmanager); the baseline is saved (on request
//! and at shutdown) and a restarted agent resumes it without relearning.
use std::{
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use enforcer::baseline::{Alert, AlertKind, AlertState, store::Loaded};
use enforcer_tests::{Lab, agent::Agent, tcp_echo};

const SPEC: &str = r#"
name: anomaly
workloads:
  - {name: web, labels: {app: web}}
  - {name: client, labels: {app: client}}
  - {name: db, labels: {app: db}}
"#;

const POLICY: &str = r#"
version: 1
policies:
  - name: web-serves
    selector: {app: web}
    ingress:
      - from: [{selector: {app: client}}]
        ports: [{port: 5201}]
"#;

const LEARNING_SECS: u64 = 6;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_enforcer-e2e"))
}

/// Waits (up to `secs`) for an alert matching `f`; returns it and how long it took.
fn wait_alert(agent: &Agent, what: &str, secs: u64, f: impl Fn(&Alert) -> bool) -> (Alert, f64) {
    let start = Instant::now();
    loop {
        if let Some(a) = agent.alerts().into_iter().find(|a| f(a)) {
            return (a, start.elapsed().as_secs_f64());
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "no {what} alert after {secs} s; alerts: {:#?}",
            agent.alerts()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Where the test's Alertmanager listens, in the lab's host namespace (the agent's).
const ALERTMANAGER: &str = "127.0.0.1:9093";

/// Starts Debian's Alertmanager in the lab's host namespace, clustering off, with a
/// route to nowhere (the test reads what it received through its API); stopped with
/// the lab.
fn start_alertmanager(lab: &Lab, dir: &Path) -> enforcer_tests::LabChild {
    let config = dir.join("alertmanager.yml");
    std::fs::write(
        &config,
        "route: {receiver: none}\nreceivers: [{name: none}]\n",
    )
    .expect("alertmanager config");
    let storage = dir.join("alertmanager-data");
    let mut cmd = lab.cmd("host", "prometheus-alertmanager");
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", storage.display()))
        .arg(format!("--web.listen-address={ALERTMANAGER}"))
        .arg("--cluster.listen-address=")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = lab
        .spawn_command(cmd)
        .expect("start prometheus-alertmanager");
    let end = Instant::now() + Duration::from_secs(20);
    while alertmanager_alerts(lab).is_none() {
        assert!(
            Instant::now() < end,
            "Alertmanager did not start on {ALERTMANAGER}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    child
}

type Labels = std::collections::BTreeMap<String, String>;

/// The label sets of the alerts Alertmanager holds (`None`: it does not answer).
fn alertmanager_alerts(lab: &Lab) -> Option<Vec<Labels>> {
    let out = lab
        .cmd("host", "curl")
        .args(["-sf", "--max-time", "2"])
        .arg(format!("http://{ALERTMANAGER}/api/v2/alerts"))
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct Gettable {
        labels: Labels,
    }
    let v: Vec<Gettable> = serde_json::from_slice(&out.stdout).ok()?;
    Some(v.into_iter().map(|a| a.labels).collect())
}

/// Waits (up to `secs`) until Alertmanager holds an alert whose labels match `f`.
fn wait_alertmanager(lab: &Lab, secs: u64, f: impl Fn(&Labels) -> bool) -> Labels {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        let got = alertmanager_alerts(lab).unwrap_or_default();
        if let Some(l) = got.iter().find(|l| f(l)) {
            return l.clone();
        }
        assert!(
            Instant::now() < end,
            "no matching alert in Alertmanager after {secs} s; it holds: {got:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn edge_is(a: &Alert, src: &str, dst: &str, port: u16) -> bool {
    a.edge
        .as_ref()
        .is_some_and(|e| e.src == src && e.dst == dst && e.port == port)
}

fn iperf(lab: &Lab, web: &str, args: &[&str]) -> std::process::Output {
    lab.cmd("client", "iperf3")
        .args(["-c", web, "-p", "5201"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("iperf3 client")
}

#[test]
fn spike_new_edge_and_scan_raise_alerts_and_the_baseline_survives_a_restart() {
    let lab = Lab::up_yaml(SPEC).expect("lab");
    lab.serve_echo("db", &[80]).expect("echo");
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("baseline.json");
    let file_arg = file.to_str().expect("utf-8 path");
    let learning = LEARNING_SECS.to_string();
    let _alertmanager = start_alertmanager(&lab, dir.path());
    let mut agent = Agent::start_with_args(
        bin(),
        lab.host_netns(),
        &lab.inventory_yaml(),
        POLICY,
        &[
            "--flows-interval-ms",
            "200",
            "--baseline-interval-secs",
            "1",
            "--baseline-learning-secs",
            &learning,
            "--baseline-file",
            file_arg,
            "--alertmanager-url",
            &format!("http://{ALERTMANAGER}"),
        ],
    );
    let web4 = lab.addr4("web").to_string();
    let server = lab
        .spawn("web", &["iperf3", "-s", "-p", "5201"])
        .expect("iperf3 server");
    lab.wait_listening("web", 5201);

    // Steady traffic through learning and beyond: 2 Mbit/s for 12 s.
    let steady = iperf(&lab, &web4, &["-b", "2M", "-t", "12"]);
    assert!(
        steady.status.success(),
        "steady iperf3: {}",
        String::from_utf8_lossy(&steady.stderr)
    );
    let st = agent.baseline_status();
    assert!(!st.learning, "still learning after 12 s: {st:?}");
    assert!(st.edges >= 1, "no edge learnt: {st:?}");
    let quiet = agent.alerts();
    assert!(quiet.is_empty(), "steady traffic raised alerts: {quiet:#?}");

    // 1. A real spike on the learnt edge: iperf3 unlimited.
    let spike_start = Instant::now();
    let spike = iperf(&lab, &web4, &["-t", "4"]);
    assert!(spike.status.success(), "spike iperf3 failed");
    let (a, _) = wait_alert(&agent, "spike", 5, |a| {
        a.kind == AlertKind::Spike && edge_is(a, "client", "web", 5201)
    });
    let delay = a.detected_ms.saturating_sub(a.start_ms) as f64 / 1000.0;
    println!(
        "spike: {} (fired {delay:.0} s after its first interval, {:.1} s after iperf3 started)",
        a.summary,
        spike_start.elapsed().as_secs_f64()
    );
    assert!(a.observed > 10.0 * a.expected, "{a:?}");
    assert!(delay <= 3.0, "spike took {delay} s (> 3 intervals)");
    let _ = server.stop(Duration::from_secs(2));

    // 2. A first flow to a workload client never contacted.
    assert!(tcp_echo(
        &lab,
        "client",
        lab.addr4("db"),
        80,
        Duration::from_secs(3)
    ));
    let (a, took) = wait_alert(&agent, "new edge", 5, |a| {
        a.kind == AlertKind::NewEdge && edge_is(a, "client", "db", 80)
    });
    println!(
        "new edge: {} (seen by the CLI after {took:.1} s)",
        a.summary
    );
    assert_eq!(a.workloads, vec!["client".to_string(), "db".to_string()]);
    // The same alert reached Alertmanager, with the labels it routes on.
    let pushed = wait_alertmanager(&lab, 10, |l| {
        let is = |k: &str, v: &str| l.get(k).is_some_and(|x| x == v);
        is("kind", "new_edge") && is("src", "client") && is("dst", "db")
    });
    assert_eq!(pushed["alertname"], "EnforcerAnomaly");
    assert_eq!(pushed["port"], "80");
    assert_eq!(pushed["severity"], a.severity.as_str());
    let am = agent
        .baseline_status()
        .alertmanager
        .expect("alertmanager push status");
    assert!(am.sent >= 1 && am.failed == 0, "{am:?}");

    // 3. A port scan: 300 SYNs to ports 2000..2299 of web (all dropped).
    let out = lab
        .cmd("client", "hping3")
        .args([
            "-S", "-q", "-p", "++2000", "-c", "300", "-i", "u2000", &web4,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("hping3");
    let _ = out;
    let (a, took) = wait_alert(&agent, "fan-out", 5, |a| {
        a.kind == AlertKind::FanOut && a.source.as_deref() == Some("client")
    });
    println!("scan: {} (seen after {took:.1} s)", a.summary);
    assert!(a.observed >= 50.0, "{a:?}");
    // The scan's ports are in the fan-out alert, not one new-port alert each.
    let all = agent.alerts();
    let new_ports = all.iter().filter(|a| a.kind == AlertKind::NewPort).count();
    assert!(new_ports <= 1, "new-port alerts for a scan: {all:#?}");

    // Alerts are JSON log lines too.
    let log = agent.log_text();
    assert!(
        log.lines().any(|l| l.contains("\"event\":\"alert\"")
            && l.contains("\"kind\":\"fan_out\"")
            && l.contains("\"state\":\"firing\"")),
        "no fan_out alert in the log"
    );
    let firing = agent
        .alerts()
        .iter()
        .filter(|a| a.state == AlertState::Firing)
        .count();
    assert!(firing >= 1);

    // 4. Persistence: save, kill, restart: the baseline is resumed, not relearnt.
    let out = agent.cli(&["baseline", "save"]);
    assert!(
        out.status.success(),
        "baseline save: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let learnt = agent.baseline_status().edges;
    agent.kill9();
    agent.spawn();
    let st = agent.baseline_status();
    assert!(
        matches!(st.loaded, Some(Loaded::Resumed { edges }) if edges == learnt),
        "{st:?}"
    );
    assert!(!st.learning, "relearning after a restart: {st:?}");

    // 5. SIGTERM saves the baseline too.
    let saved_at = |f: &Path| -> String {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(f).expect("baseline file")).expect("JSON");
        assert_eq!(v["format"], "enforcer-baseline");
        v["saved_at"].as_str().expect("saved_at").to_owned()
    };
    let before = saved_at(&file);
    std::thread::sleep(Duration::from_millis(1100));
    drop(agent);
    let after = saved_at(&file);
    assert!(
        after > before,
        "not saved at shutdown: {before} then {after}"
    );
}
