//! Anomaly scenarios the detectors were not tuned on, replayed through the real agent
//! in a lab (1 s intervals, 30 s of learning), with real traffic tools.
//!
//! Background: bursty request/response loops with jittered sleeps (curl against a
//! Python HTTP server, `nc` over TCP and UDP against echo servers, calls to an outside
//! host) and a steady `ping` stream, on ten edges of ten workloads. After learning it
//! runs 60 s on its own and must raise nothing. Then, one after the other:
//!
//! | scenario | must |
//! |---|---|
//! | ×4 connections of a bursty TCP edge (client → web:80, more curl loops) | measured |
//! | ×5 of a bursty UDP edge (web → cache:11211, more `nc -u` loops) | spike |
//! | a known pair on a new port (web → api:9090) | new_port |
//! | an outside host calling a workload for the first time | new_edge |
//! | a new outside /24 on a port api already uses outside (api → cdn:443) | nothing |
//! | a quick vertical scan (`nc -z`, 100 ports of api, under a second) | fan_out |
//! | a quick horizontal scan (`hping3 --rand-dest`, 100 outside addresses in 0.5 s) | fan_out |
//! | a slow vertical scan (10 ports/s) and a slow horizontal one (~3 peers/s) | fan_out |
//! | a sweep of one outside /24 on a port already used outside | fan_out |
//! | deny retries at 5/s (worker → db:5432, not admitted by db's policy) | deny_burst |
//! | a deny burst at 50 SYN/s (`hping3`) | deny_burst |
//! | a busy edge going silent for 8 s (the monitor → api ping stream) | silence |
//!
//! The test prints, per scenario, whether it was caught, by which alert, after how many
//! intervals, and the other alerts it raised; an alert after learning that no scenario
//! explains (all its nodes among the scenario's, while it runs or up to 5 s after) is a
//! false alert. It asserts the "must" column and no false alert. The ×4 spike is only
//! measured: at 1 s intervals and about 5 connections per interval its z-score is near
//! `spikeZ` (caught in 5 runs of 5, after 3 to 7 intervals, z 4.3 to 6.1 when it fired).
//!
//! Every detector setting is the default but the interval and learning period. This
//! test found three defects, fixed since: slow scans taught the fan-out peak their
//! own size and never fired (the peak now learns a window late); a deny burst from
//! zero needed about 54 denied packets in one interval (now count-aware: 5); and
//! silence needed an edge first seen an hour ago, idle time included (now: active
//! for the learning period, or `silenceMinAgeSecs` if shorter). A fourth: the sweep
//! of one outside /24 was one peer and one target, as the graph groups outside
//! addresses by /24; fan-out now counts the addresses behind such a node.
use std::{
    collections::BTreeSet,
    os::unix::process::CommandExt as _,
    path::Path,
    process::Stdio,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use enforcer::baseline::{Alert, AlertKind};
use enforcer_tests::{Lab, LabChild, agent::Agent};

const SPEC: &str = r#"
name: scen
workloads:
  - {name: client, labels: {app: client}}
  - {name: web, labels: {app: web}}
  - {name: api, labels: {app: api}}
  - {name: db, labels: {app: db}}
  - {name: cache, labels: {app: cache}}
  - {name: batch, labels: {app: batch}}
  - {name: monitor, labels: {app: monitor}}
  - {name: worker, labels: {app: worker}}
  - {name: dev, labels: {app: dev}}
  - {name: ops, labels: {app: ops}}
externals:
  - name: outside
    address4: 203.0.113.10/24
    address6: 2001:db8:113::10/64
  - name: cdn
    address4: 192.0.2.10/24
    address6: 2001:db8:2::10/64
"#;

const POLICY: &str = r#"
version: 1
policies:
  - name: db-from-api
    selector: {app: db}
    ingress:
      - from: [{selector: {app: api}}]
        ports: [{port: 5432}]
"#;

/// The agent's config file: only silence's minimum edge age is lowered (the lab's
/// edges are seconds old, not hours).
const CONFIG: &str = "baseline:\n  enabled: true\n";

const LEARNING_SECS: u64 = 30;
const STEADY_SECS: u64 = 60;
/// After a scenario ends, alerts it explains may still come this late.
const GRACE_MS: u64 = 5_000;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_enforcer-e2e"))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn sleep(secs: f64) {
    std::thread::sleep(Duration::from_secs_f64(secs));
}

/// A shell loop in a lab namespace, in its own process group so that stopping it
/// also stops the curl, nc or sleep it is running; stopped when dropped.
struct Loop(LabChild);

impl Loop {
    fn start(lab: &Lab, ns: &str, script: &str) -> Self {
        let mut cmd = lab.cmd(ns, "bash");
        cmd.args(["-c", script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        Self(lab.spawn_command(cmd).expect("start traffic loop"))
    }

    /// Waits (up to `secs`) for a loop that ends by itself.
    fn wait(self, secs: u64) -> Self {
        let _ = self.0.wait_timeout(Duration::from_secs(secs));
        self
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.pid()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.0.stop(Duration::from_secs(1));
    }
}

/// Requests with jittered sleeps of 0.1 × (`min`..=`max`) s; with `burst`, one
/// iteration in eight sends three requests at once.
fn request_loop(req: &str, min: u32, max: u32, burst: bool) -> String {
    let burst = if burst {
        format!("if (( RANDOM % 8 == 0 )); then for i in 1 2 3; do {req} & done; wait; fi; ")
    } else {
        String::new()
    };
    format!(
        "while :; do {burst}{req}; sleep 0.$(( RANDOM % {} + {min} )); done",
        max - min + 1
    )
}

fn curl(addr: &str) -> String {
    format!("curl -s -o /dev/null -m 2 http://{addr}/")
}

fn tcp_req(addr: &str, port: u16) -> String {
    format!("head -c $(( RANDOM % 1500 + 50 )) /dev/zero | nc -N -w1 {addr} {port} >/dev/null")
}

fn udp_req(addr: &str, port: u16) -> String {
    format!("echo get-$RANDOM | nc -u -W1 -w1 {addr} {port} >/dev/null")
}

/// The nodes an alert is about (`world:…` nodes as `world`).
fn nodes_of(a: &Alert) -> BTreeSet<String> {
    let norm = |n: &str| {
        if n.starts_with("world:") {
            "world".to_owned()
        } else {
            n.to_owned()
        }
    };
    let mut s: BTreeSet<String> = a.workloads.iter().map(|w| norm(w)).collect();
    if let Some(e) = &a.edge {
        s.insert(norm(&e.src));
        s.insert(norm(&e.dst));
    }
    if let Some(src) = &a.source {
        s.insert(norm(src));
    }
    s
}

fn edge_is(a: &Alert, src: &str, dst: &str, port: Option<u16>) -> bool {
    a.edge.as_ref().is_some_and(|e| {
        (e.src == src || (src == "world" && e.src.starts_with("world:")))
            && (e.dst == dst || (dst == "world" && e.dst.starts_with("world:")))
            && port.is_none_or(|p| e.port == p)
    })
}

type Matcher = Box<dyn Fn(&Alert) -> bool>;

/// What a scenario must do.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Must {
    /// Raise its alert within this many intervals of its start.
    Catch(u64),
    /// Raise nothing.
    Nothing,
    /// Measured only: a known gap of the detectors (see the comment where it is played).
    Measure,
}

/// One played scenario: when, which nodes it involves, and the alert that catches it
/// (`None`: nothing should be raised).
struct Scenario {
    name: &'static str,
    start_ms: u64,
    end_ms: u64,
    nodes: Vec<&'static str>,
    expect: Option<(AlertKind, Matcher)>,
    must: Must,
    /// End of the window in which its alerts are looked for.
    until_ms: u64,
}

impl Scenario {
    /// From its start to `GRACE_MS` after its end, or to the next scenario's start.
    fn window(&self, a: &Alert) -> bool {
        a.detected_ms >= self.start_ms && a.detected_ms <= self.until_ms
    }

    /// An alert during the scenario whose nodes are all the scenario's.
    fn explains(&self, a: &Alert) -> bool {
        self.window(a) && nodes_of(a).iter().all(|n| self.nodes.contains(&n.as_str()))
    }

    fn caught<'a>(&self, all: &'a [Alert]) -> Option<&'a Alert> {
        let (kind, m) = self.expect.as_ref()?;
        all.iter()
            .filter(|a| a.kind == *kind && m(a) && self.window(a))
            .min_by_key(|a| a.detected_ms)
    }
}

fn scenario(
    name: &'static str,
    start_ms: u64,
    nodes: &[&'static str],
    must: Must,
    expect: Option<(AlertKind, Matcher)>,
) -> Scenario {
    Scenario {
        name,
        start_ms,
        end_ms: now_ms(),
        nodes: nodes.to_vec(),
        expect,
        must,
        until_ms: u64::MAX,
    }
}

fn line(a: &Alert) -> String {
    format!(
        "{} {} [{}] {}",
        a.kind,
        a.severity.as_str(),
        nodes_of(a).into_iter().collect::<Vec<_>>().join(","),
        a.summary
    )
}

#[test]
fn unseen_scenarios_are_caught_and_steady_bursty_traffic_raises_nothing() {
    let lab = Lab::up_yaml(SPEC).expect("lab");
    let a4 = |n: &str| lab.addr4(n).to_string();
    let (web, api, db, cache) = (a4("web"), a4("api"), a4("db"), a4("cache"));
    let (outside, cdn) = (a4("outside"), a4("cdn"));
    // Outside addresses for the scans go nowhere, silently (no ICMP errors back):
    // a route in the lab's own host namespace.
    let st = lab
        .cmd("host", "ip")
        .args(["route", "add", "blackhole", "100.64.0.0/10"])
        .status()
        .expect("ip route");
    assert!(st.success(), "blackhole route in the lab host namespace");

    lab.serve_echo("api", &[8080, 9090]).expect("echo api");
    lab.serve_echo("db", &[5432]).expect("echo db");
    lab.serve_echo("cache", &[11211]).expect("echo cache");
    lab.serve_echo("outside", &[443]).expect("echo outside");
    lab.serve_echo("cdn", &[443]).expect("echo cdn");
    let docroot = tempfile::tempdir().expect("tempdir");
    std::fs::write(docroot.path().join("index.html"), "x".repeat(1500)).expect("index");
    let mut http = lab.cmd("web", "/usr/bin/python3");
    http.args([
        "-m",
        "http.server",
        "80",
        "--bind",
        "0.0.0.0",
        "--directory",
    ])
    .arg(docroot.path())
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let _http = lab.spawn_command(http).expect("http server");
    lab.wait_listening("web", 80);

    // Background: bursty request/response loops, TCP and UDP, and a steady stream.
    let client_web = request_loop(&curl(&web), 1, 4, true);
    let web_cache = request_loop(&udp_req(&cache, 11211), 1, 4, true);
    let background = [
        ("client", client_web.clone()),
        ("web", request_loop(&tcp_req(&api, 8080), 2, 7, true)),
        ("api", request_loop(&tcp_req(&db, 5432), 2, 6, true)),
        ("web", web_cache.clone()),
        ("api", request_loop(&tcp_req(&outside, 443), 5, 9, false)),
        ("batch", request_loop(&tcp_req(&api, 8080), 5, 9, false)),
        ("dev", request_loop(&curl(&web), 6, 9, false)),
        ("ops", request_loop(&curl(&web), 6, 9, false)),
        ("worker", request_loop(&udp_req(&cache, 11211), 5, 9, false)),
    ];
    let _bg: Vec<Loop> = background
        .iter()
        .map(|(ns, s)| Loop::start(&lab, ns, s))
        .collect();
    let ping_stream = format!("exec ping -q -i 0.05 -s 100 {api}");
    let mut monitor = Some(Loop::start(&lab, "monitor", &ping_stream));
    sleep(2.0);

    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("agent.yaml");
    std::fs::write(&config, CONFIG).expect("config");
    let learning = LEARNING_SECS.to_string();
    let agent = Agent::start_with_args(
        bin(),
        lab.host_netns(),
        &lab.inventory_yaml(),
        POLICY,
        &[
            "--config",
            config.to_str().expect("utf-8 path"),
            "--flows-interval-ms",
            "200",
            "--baseline-interval-secs",
            "1",
            "--baseline-learning-secs",
            &learning,
        ],
    );

    let end = Instant::now() + Duration::from_secs(LEARNING_SECS + 20);
    while agent.baseline_status().learning {
        assert!(
            Instant::now() < end,
            "still learning: {:?}",
            agent.baseline_status()
        );
        sleep(0.5);
    }
    let detect_ms = now_ms();
    let st = agent.baseline_status();
    println!(
        "learnt: {} edges, {} workloads, {} intervals",
        st.edges, st.workloads, st.intervals
    );

    // Steady phase: the same traffic, now judged.
    sleep(STEADY_SECS as f64);
    let steady_end_ms = now_ms();
    let mut played: Vec<Scenario> = Vec::new();
    let edge = |src: &'static str, dst: &'static str, port: Option<u16>| -> Matcher {
        Box::new(move |a| edge_is(a, src, dst, port))
    };
    let source =
        |src: &'static str| -> Matcher { Box::new(move |a| a.source.as_deref() == Some(src)) };

    // 1. ×4 client -> web:80: three more copies of its bursty curl loop.
    let t = now_ms();
    let extra: Vec<Loop> = (0..3)
        .map(|_| Loop::start(&lab, "client", &client_web))
        .collect();
    sleep(12.0);
    drop(extra);
    played.push(scenario(
        "spike x4 client->web:80 (curl loops)",
        t,
        &["client", "web"],
        Must::Measure,
        Some((AlertKind::Spike, edge("client", "web", Some(80)))),
    ));
    sleep(5.0);

    // 2. ×5 web -> cache:11211 (UDP): four more copies of its `nc -u` loop.
    let t = now_ms();
    let extra: Vec<Loop> = (0..4)
        .map(|_| Loop::start(&lab, "web", &web_cache))
        .collect();
    sleep(12.0);
    drop(extra);
    played.push(scenario(
        "spike x5 web->cache:11211/udp (nc -u loops)",
        t,
        &["web", "cache"],
        Must::Catch(5),
        Some((AlertKind::Spike, edge("web", "cache", Some(11211)))),
    ));
    sleep(5.0);

    // 3. A known pair on a new port, and, at the same time, an outside host calling a
    //    workload for the first time.
    let t = now_ms();
    let l1 = Loop::start(
        &lab,
        "web",
        &format!(
            "for i in 1 2 3 4 5; do {}; sleep 1; done",
            tcp_req(&api, 9090)
        ),
    );
    let l2 = Loop::start(
        &lab,
        "outside",
        &format!("for i in 1 2 3 4 5; do {}; sleep 1; done", curl(&web)),
    );
    let _ = (l1.wait(10), l2.wait(10));
    played.push(scenario(
        "new port web->api:9090",
        t,
        &["web", "api"],
        Must::Catch(3),
        Some((AlertKind::NewPort, edge("web", "api", Some(9090)))),
    ));
    played.push(scenario(
        "new edge world(outside)->web:80",
        t,
        &["world", "web"],
        Must::Catch(3),
        Some((AlertKind::NewEdge, edge("world", "web", Some(80)))),
    ));
    sleep(2.0);

    // 4. A new outside address on a port api already uses outside: with
    //    `aggregateWorld`, nothing to raise.
    let t = now_ms();
    let l = Loop::start(
        &lab,
        "api",
        &format!(
            "for i in 1 2 3 4 5; do {}; sleep 1; done",
            tcp_req(&cdn, 443)
        ),
    );
    let _ = l.wait(10);
    played.push(scenario(
        "known world service, new /24: api->cdn:443",
        t,
        &["api", "world"],
        Must::Nothing,
        None,
    ));
    sleep(2.0);

    // 5. Quick vertical scan: `nc -z` over 100 ports of api from dev (under a second).
    let t = now_ms();
    let l = Loop::start(&lab, "dev", &format!("nc -z -w1 {api} 3000-3099"));
    let _ = l.wait(10);
    played.push(scenario(
        "quick vertical scan dev->api 100 ports (nc -z)",
        t,
        &["dev", "api"],
        Must::Catch(3),
        Some((AlertKind::FanOut, source("dev"))),
    ));
    sleep(3.0);

    // 6. Quick horizontal scan: 100 SYNs to random outside addresses from client in
    //    half a second.
    let t = now_ms();
    let l = Loop::start(
        &lab,
        "client",
        "hping3 -q -S -p 443 -I eth0 --rand-dest -i u5000 -c 100 100.66.x.x",
    );
    let _ = l.wait(10);
    played.push(scenario(
        "quick horizontal scan client->~80 world /24s (hping3)",
        t,
        &["client", "world"],
        Must::Catch(3),
        Some((AlertKind::FanOut, source("client"))),
    ));
    sleep(3.0);

    // 7. Slow scans, at once: ops walks 100 ports of api at 10 ports/s; batch pings
    //    every workload, then sends SYNs to 32 random outside addresses, ~3 peers/s.
    //    Neither reaches the threshold in one interval: the window's count must not
    //    become the source's peak while the scan grows (fanout.rs, `Peak`).
    let t = now_ms();
    let slow_v = Loop::start(
        &lab,
        "ops",
        &format!("for p in $(seq 2000 2099); do nc -z -w1 {api} $p & sleep 0.1; done; wait"),
    );
    let sweep: Vec<String> = [
        "client", "web", "api", "db", "cache", "monitor", "worker", "dev",
    ]
    .iter()
    .map(|n| format!("ping -c1 -W1 {} >/dev/null; sleep 0.3;", a4(n)))
    .collect();
    let slow_h = Loop::start(
        &lab,
        "batch",
        &format!(
            "{} hping3 -q -S -p 22 -I eth0 --rand-dest -i u300000 -c 32 100.64.x.x",
            sweep.join(" ")
        ),
    );
    let _ = (slow_v.wait(20), slow_h.wait(25));
    played.push(scenario(
        "slow vertical scan ops->api 100 ports @10/s",
        t,
        &["ops", "api"],
        Must::Catch(10),
        Some((AlertKind::FanOut, source("ops"))),
    ));
    played.push(scenario(
        "slow horizontal scan batch->8 workloads+32 world @3/s",
        t,
        &[
            "batch", "client", "web", "api", "db", "cache", "monitor", "worker", "dev", "world",
        ],
        Must::Catch(10),
        Some((AlertKind::FanOut, source("batch"))),
    ));
    sleep(2.0);

    // 8. At once: a sweep of one outside /24 on a port api already uses outside (one
    //    node of the graph, whose addresses fan-out counts), and worker retrying db:5432, which db's policy does not admit it, five
    //    times a second (a deny burst: 5 denied packets in an interval where none
    //    are usual).
    let t = now_ms();
    let sweep = Loop::start(
        &lab,
        "api",
        "hping3 -q -S -p 443 -I eth0 --rand-dest -i u100000 -c 60 100.65.0.x",
    );
    let retry = Loop::start(
        &lab,
        "worker",
        &format!("for i in $(seq 40); do nc -z -w1 {db} 5432 & sleep 0.2; done; wait"),
    );
    let _ = (sweep.wait(15), retry.wait(15));
    played.push(scenario(
        "sweep of one world /24 api->100.65.0.x:443",
        t,
        &["api", "world"],
        Must::Catch(5),
        Some((AlertKind::FanOut, source("api"))),
    ));
    played.push(scenario(
        "deny retries worker->db:5432 @5/s",
        t,
        &["worker", "db"],
        Must::Catch(5),
        Some((
            AlertKind::DenyBurst,
            Box::new(|a| a.workloads.iter().any(|w| w == "worker")),
        )),
    ));
    sleep(3.0);

    // 9. A deny burst: worker floods db:5432 with SYNs, 50 per second for 5 s.
    let t = now_ms();
    let l = Loop::start(
        &lab,
        "worker",
        &format!("hping3 -q -S -p 5432 -i u20000 -c 250 {db}"),
    );
    let _ = l.wait(10);
    played.push(scenario(
        "deny burst worker->db:5432 @50/s (hping3)",
        t,
        &["worker", "db"],
        Must::Catch(3),
        Some((
            AlertKind::DenyBurst,
            Box::new(|a| a.workloads.iter().any(|w| w == "worker")),
        )),
    ));
    sleep(3.0);

    // 10. Silence: the monitor -> api ping stream (40 packets/s) stops for 8 s.
    let t = now_ms();
    drop(monitor.take());
    sleep(8.0);
    monitor = Some(Loop::start(&lab, "monitor", &ping_stream));
    played.push(scenario(
        "silence monitor->api icmp (8 s)",
        t,
        &["monitor", "api"],
        Must::Catch(6),
        Some((AlertKind::Silence, edge("monitor", "api", None))),
    ));
    sleep(5.0);
    drop(monitor);

    // Results. A scenario's window ends at the next one's start.
    let starts: Vec<u64> = played.iter().map(|s| s.start_ms).collect();
    for s in &mut played {
        let next = starts.iter().filter(|t| **t > s.start_ms).min();
        s.until_ms = next.map_or(u64::MAX, |n| *n).min(s.end_ms + GRACE_MS);
    }
    let all = agent.alerts();
    let after: Vec<&Alert> = all.iter().filter(|a| a.detected_ms >= detect_ms).collect();
    let learning_alerts = all.len() - after.len();
    let steady: Vec<&&Alert> = after
        .iter()
        .filter(|a| a.detected_ms < steady_end_ms)
        .collect();
    println!("\n== alerts while learning: {learning_alerts}");
    println!(
        "== steady phase ({:.0} s): {} alerts",
        (steady_end_ms - detect_ms) as f64 / 1000.0,
        steady.len()
    );
    for a in &steady {
        println!("   FALSE {}", line(a));
    }
    println!("== scenarios");
    let mut failures = Vec::new();
    let mut false_in_scenarios = 0;
    for s in &played {
        let caught = s.caught(&all);
        let delay = caught.map(|a| a.detected_ms.saturating_sub(s.start_ms).div_ceil(1000));
        let verdict = match (&s.expect, caught, delay) {
            (None, ..) => "(nothing expected)".to_owned(),
            (Some((k, _)), Some(_), Some(d)) => format!("CAUGHT {k} after {d} intervals"),
            (Some((k, _)), ..) => format!("MISSED (no {k})"),
        };
        println!(
            "-- {} [{:?}, {:.0} s]: {verdict}",
            s.name,
            s.must,
            (s.end_ms - s.start_ms) as f64 / 1000.0
        );
        for a in after.iter().filter(|a| s.explains(a)) {
            let tag = if caught.is_some_and(|c| c.id == a.id) {
                "*"
            } else if s.must == Must::Nothing {
                false_in_scenarios += 1;
                "FALSE"
            } else {
                "+"
            };
            println!(
                "   {tag} +{}i {}",
                a.detected_ms.saturating_sub(s.start_ms).div_ceil(1000),
                line(a)
            );
        }
        match (s.must, delay) {
            (Must::Catch(max), Some(d)) if d > max => {
                failures.push(format!("{}: caught after {d} intervals (> {max})", s.name));
            }
            (Must::Catch(_), None) => failures.push(format!("{}: missed", s.name)),
            _ => {}
        }
    }
    let unexplained: Vec<&&Alert> = after
        .iter()
        .filter(|a| a.detected_ms >= steady_end_ms && !played.iter().any(|s| s.explains(a)))
        .collect();
    println!("== not explained by any scenario: {}", unexplained.len());
    for a in &unexplained {
        println!("   FALSE {}", line(a));
    }
    for a in &all {
        println!("   ALERT {}", serde_json::to_string(a).expect("alert JSON"));
    }
    let n_false = steady.len() + false_in_scenarios + unexplained.len();
    println!(
        "== SUMMARY false alerts: steady {} / in a must-raise-nothing scenario {} / unexplained {}",
        steady.len(),
        false_in_scenarios,
        unexplained.len()
    );
    assert_eq!(learning_alerts, 0, "alerts while learning");
    assert!(failures.is_empty(), "scenarios not caught: {failures:#?}");
    assert_eq!(n_false, 0, "false alerts (see above)");
}
