//! End-to-end enforcement: a real agent in a lab's host namespace, real traffic
//! between lab namespaces, verdicts checked both by what gets through and by the
//! agent's counters. One lab and one agent instance per test; both are torn down on
//! drop, also when the test fails.
use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpStream},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use enforcer_tests::{Lab, agent::Agent, tcp_connect, tcp_echo, udp_echo};

const SPEC: &str = r#"
name: e2e
workloads:
  - {name: web, labels: {app: web}}
  - {name: db, labels: {app: db}}
  - {name: client, labels: {app: client}}
  - {name: other, labels: {app: other}}
externals:
  - {name: outside, address4: 203.0.113.10/24, address6: "2001:db8:113::10/64"}
  - {name: partner, address4: 198.51.100.10/24, address6: "2001:db8:51::10/64"}
"#;

const OK: Duration = Duration::from_secs(3);
/// Long enough for a reply on veth; a dropped SYN or datagram just times out.
const NO: Duration = Duration::from_millis(700);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_enforcer-e2e"))
}

fn lab() -> Lab {
    let lab = Lab::up_yaml(SPEC).expect("lab up");
    for w in ["web", "db", "outside", "partner"] {
        lab.serve_echo(w, &[53, 54, 80, 81, 5432, 8080])
            .expect("echo servers");
    }
    lab
}

fn agent(lab: &Lab, policy: &str) -> Agent {
    Agent::start(bin(), lab.host_netns(), &lab.inventory_yaml(), policy)
}

fn both(lab: &Lab, name: &str) -> [IpAddr; 2] {
    [lab.addr4(name).into(), lab.addr6(name).into()]
}

/// Without the agent everything in the lab reaches everything: a test that expects
/// a drop must not pass because the lab was broken.
fn assert_open_baseline(lab: &Lab) {
    for a in both(lab, "web") {
        assert!(tcp_echo(lab, "client", a, 81, OK), "baseline TCP {a}:81");
        assert!(udp_echo(lab, "client", a, 54, OK), "baseline UDP {a}:54");
    }
    for a in both(lab, "outside") {
        assert!(
            tcp_echo(lab, "web", a, 80, OK),
            "baseline web -> outside {a}"
        );
    }
}

const WEB_SERVES: &str = r#"
version: 1
policies:
  - name: web-serves
    selector: {app: web}
    ingress:
      - from: [{selector: {app: client}}]
        ports:
          - {port: 80, protocol: TCP}
          - {port: 53, protocol: UDP}
"#;

#[test]
fn a_declared_ports_are_reachable_and_undeclared_ones_are_not() {
    let lab = lab();
    assert_open_baseline(&lab);
    let agent = agent(&lab, WEB_SERVES);
    for a in both(&lab, "web") {
        assert!(tcp_echo(&lab, "client", a, 80, OK), "TCP {a}:80 declared");
        assert!(
            !tcp_connect(&lab, "client", a, 81, NO),
            "TCP {a}:81 undeclared"
        );
        assert!(udp_echo(&lab, "client", a, 53, OK), "UDP {a}:53 declared");
        assert!(
            !udp_echo(&lab, "client", a, 54, NO),
            "UDP {a}:54 undeclared"
        );
        assert!(
            !tcp_connect(&lab, "other", a, 80, NO),
            "TCP {a}:80 from a peer not allowed"
        );
    }
    assert!(agent.drops("web", "ingress", "dropped_port_not_declared") >= 4);
    assert!(agent.drops("web", "ingress", "dropped_peer_not_allowed") >= 2);
    let st = agent.status();
    let web = st.workloads.iter().find(|w| w.name == "web").expect("web");
    assert!(web.ingress.enforced && !web.egress.enforced);
    assert!(web.ingress.allowed.packets > 0);
    assert_eq!(
        web.attached.len(),
        2,
        "both hooks attached: {:?}",
        web.attached
    );
    // Workloads no policy selects are left alone.
    assert!(tcp_echo(&lab, "client", lab.addr4("db"), 5432, OK));
}

#[test]
fn b_denied_cidrs_are_blocked_both_ways_ipv4_and_ipv6() {
    let lab = lab();
    assert_open_baseline(&lab);
    let agent = agent(
        &lab,
        r#"
version: 1
host:
  denyCIDRs: [203.0.113.0/24, "2001:db8:113::/64"]
policies:
  - name: web-open
    selector: {app: web}
    ingress: [{ports: [{port: 80}]}]
"#,
    );
    for a in both(&lab, "web") {
        assert!(
            !tcp_connect(&lab, "outside", a, 80, NO),
            "outside -> web {a}"
        );
        assert!(tcp_echo(&lab, "partner", a, 80, OK), "partner -> web {a}");
    }
    for a in both(&lab, "outside") {
        assert!(!tcp_connect(&lab, "web", a, 80, NO), "web -> outside {a}");
        assert!(!udp_echo(&lab, "web", a, 53, NO), "web -> outside {a} UDP");
        // The deny list covers every workload, selected by a policy or not.
        assert!(
            !tcp_connect(&lab, "client", a, 80, NO),
            "client -> outside {a}"
        );
    }
    for a in both(&lab, "partner") {
        assert!(tcp_echo(&lab, "web", a, 80, OK), "web -> partner {a}");
    }
    assert!(agent.drops("web", "ingress", "dropped_cidr_denied") >= 2);
    assert!(agent.drops("web", "egress", "dropped_cidr_denied") >= 4);
    assert!(agent.drops("client", "egress", "dropped_cidr_denied") >= 2);
}

#[test]
fn c_egress_allow_list_and_replies_of_allowed_connections() {
    let lab = lab();
    assert_open_baseline(&lab);
    let agent = agent(
        &lab,
        r#"
version: 1
policies:
  - name: client-egress
    selector: {app: client}
    egress:
      - to: [{selector: {app: web}}]
        ports: [{port: 80}]
  - name: web-initiates-nothing
    selector: {app: web}
    egress: []
"#,
    );
    for a in both(&lab, "web") {
        // The reply leaves web although web may send nothing of its own.
        assert!(tcp_echo(&lab, "client", a, 80, OK), "client -> web {a}:80");
        assert!(
            !tcp_connect(&lab, "client", a, 81, NO),
            "client -> web {a}:81"
        );
    }
    for a in both(&lab, "db") {
        assert!(
            !tcp_connect(&lab, "client", a, 80, NO),
            "client -> db {a}:80"
        );
        assert!(
            !tcp_connect(&lab, "client", a, 5432, NO),
            "client -> db {a}:5432"
        );
        assert!(!tcp_connect(&lab, "web", a, 5432, NO), "web -> db {a}:5432");
    }
    assert!(!tcp_connect(&lab, "client", lab.addr4("partner"), 80, NO));
    assert!(agent.drops("client", "egress", "dropped_peer_not_allowed") >= 2);
    assert!(agent.drops("client", "egress", "dropped_port_not_declared") >= 4);
    assert!(agent.drops("web", "egress", "dropped_port_not_declared") >= 2);
    // db is not selected: it still answers others.
    assert!(tcp_echo(&lab, "other", lab.addr6("db"), 5432, OK));
}

/// A TCP connection that stays open across policy changes.
struct Conn(TcpStream);

impl Conn {
    fn open(lab: &Lab, from: &str, to: SocketAddr) -> Self {
        let s = lab
            .in_netns(from, || TcpStream::connect_timeout(&to, OK))
            .expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(1)))
            .expect("timeout");
        Conn(s)
    }

    fn echoes(&mut self, msg: &[u8]) -> bool {
        if self.0.write_all(msg).is_err() {
            return false;
        }
        let mut got = vec![0u8; msg.len()];
        let mut n = 0;
        while n < got.len() {
            match self.0.read(&mut got[n..]) {
                Ok(0) | Err(_) => return false,
                Ok(k) => n += k,
            }
        }
        got == msg
    }
}

fn web_serves(ports: &[u16]) -> String {
    let ports: Vec<String> = ports.iter().map(|p| format!("{{port: {p}}}")).collect();
    format!(
        "version: 1\npolicies:\n  - name: web-serves\n    selector: {{app: web}}\n    ingress:\n      - from: [{{selector: {{app: client}}}}]\n        ports: [{}]\n",
        ports.join(", ")
    )
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn d_policy_changes_apply_live_without_cutting_allowed_connections() {
    let lab = lab();
    // A long poll interval: only `policy apply` and SIGHUP may reload here.
    let agent = Agent::start_with(
        bin(),
        lab.host_netns(),
        &lab.inventory_yaml(),
        &web_serves(&[80]),
        600_000,
    );
    let web4 = lab.addr4("web");
    let g0 = agent.status().policy.generation;
    let mut conn = Conn::open(&lab, "client", SocketAddr::new(web4.into(), 80));
    assert!(conn.echoes(b"before"));
    assert!(!tcp_connect(&lab, "client", web4, 81, NO));

    // `enforcer policy apply`: 81 opens, the open connection on 80 carries on.
    let out = agent.apply("p2.yaml", &web_serves(&[80, 81]));
    assert!(
        out.status.success(),
        "policy apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(agent.status().policy.generation, g0 + 1);
    assert!(tcp_echo(&lab, "client", web4, 81, OK), "81 after apply");
    assert!(
        conn.echoes(b"after apply"),
        "established connection cut by apply"
    );

    // SIGHUP re-reads the (now watched) file: 81 closes again, 8080 opens.
    std::fs::write(agent.dir.path().join("p2.yaml"), web_serves(&[80, 8080])).expect("write");
    agent.hup();
    wait_for("generation after SIGHUP", OK, || {
        agent.status().policy.generation == g0 + 2
    });
    assert!(
        !tcp_connect(&lab, "client", web4, 81, NO),
        "81 after SIGHUP"
    );
    assert!(
        tcp_echo(&lab, "client", web4, 8080, OK),
        "8080 after SIGHUP"
    );
    assert!(
        conn.echoes(b"after hup"),
        "established connection cut by SIGHUP"
    );

    // A policy that no longer allows port 80 ends the established connection too.
    let out = agent.apply("p3.yaml", &web_serves(&[8080]));
    assert!(out.status.success());
    assert!(
        !conn.echoes(b"after removal"),
        "connection survived a policy that forbids it"
    );
    assert!(!tcp_connect(&lab, "client", web4, 80, NO));
}

#[test]
fn d_file_changes_are_applied_automatically() {
    let lab = lab();
    let agent = agent(&lab, &web_serves(&[80]));
    let web6 = lab.addr6("web");
    assert!(!tcp_connect(&lab, "client", web6, 81, NO));
    let g0 = agent.status().policy.generation;
    std::fs::write(&agent.policy, web_serves(&[81])).expect("rewrite policy");
    wait_for(
        "the watched file to be applied",
        Duration::from_secs(5),
        || agent.status().policy.generation > g0,
    );
    assert!(tcp_echo(&lab, "client", web6, 81, OK));
    assert!(!tcp_connect(&lab, "client", web6, 80, NO));
}

#[test]
fn e_sigkill_leaves_enforcement_in_place_and_a_new_agent_adopts_it() {
    let lab = lab();
    let mut agent = agent(&lab, WEB_SERVES);
    let web4 = lab.addr4("web");
    assert!(tcp_echo(&lab, "client", web4, 80, OK));
    assert!(!tcp_connect(&lab, "client", web4, 81, NO));
    let before = agent.status();
    let allowed_before = before
        .workloads
        .iter()
        .find(|w| w.name == "web")
        .expect("web")
        .ingress
        .allowed
        .packets;

    // A prober runs across the crash and the restart: every probe must get the
    // verdict the policy says, with no gap.
    let stop = Arc::new(AtomicBool::new(false));
    let wrong = Arc::new(AtomicU32::new(0));
    let probes = Arc::new(AtomicU32::new(0));
    let prober = {
        let (stop, wrong, probes) = (stop.clone(), wrong.clone(), probes.clone());
        let ns = lab.netns("client").to_owned();
        std::thread::spawn(move || {
            enforcer_tests::in_netns(&ns, move || {
                while !stop.load(Ordering::SeqCst) {
                    let ok =
                        TcpStream::connect_timeout(&SocketAddr::new(web4.into(), 80), OK).is_ok();
                    let blocked = TcpStream::connect_timeout(
                        &SocketAddr::new(web4.into(), 81),
                        Duration::from_millis(200),
                    )
                    .is_err();
                    if !(ok && blocked) {
                        wrong.fetch_add(1, Ordering::SeqCst);
                    }
                    probes.fetch_add(1, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
            .expect("enter client namespace")
        })
    };

    agent.kill9();
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        agent
            .pin_dir()
            .join("links")
            .read_dir()
            .expect("pins")
            .count()
            >= 8
    );
    assert!(
        tcp_echo(&lab, "client", web4, 80, OK),
        "allowed after SIGKILL"
    );
    assert!(
        !tcp_connect(&lab, "client", web4, 81, NO),
        "blocked after SIGKILL"
    );

    agent.spawn();
    std::thread::sleep(Duration::from_millis(800));
    stop.store(true, Ordering::SeqCst);
    prober.join().expect("prober");
    assert!(probes.load(Ordering::SeqCst) >= 10, "prober barely ran");
    assert_eq!(
        wrong.load(Ordering::SeqCst),
        0,
        "a probe saw the wrong verdict"
    );

    let after = agent.status();
    assert!(
        after.links.iter().all(|l| l.origin == "adopted"),
        "links not adopted: {:?}",
        after.links
    );
    assert_eq!(after.links.len(), before.links.len());
    assert!(after.policy.generation > before.policy.generation);
    let web = after
        .workloads
        .iter()
        .find(|w| w.name == "web")
        .expect("web");
    assert!(
        web.ingress.allowed.packets > allowed_before,
        "counters restarted from zero: {} <= {allowed_before}",
        web.ingress.allowed.packets
    );
    assert!(!tcp_connect(&lab, "client", web4, 81, NO));
}

#[test]
fn f_malformed_policies_are_refused_with_location_and_change_nothing() {
    let lab = lab();
    let agent = agent(&lab, WEB_SERVES);
    let web4 = lab.addr4("web");
    let g0 = agent.status().policy.generation;

    // Through the CLI: exit code 4, file:line and what is wrong (the agent's answer).
    let bad = "version: 1\npolicies:\n  - name: web\n    selector: {app: web}\n    ingress:\n      - ports:\n          - {port: 90, endPort: 85}\n";
    let out = agent.apply("bad.yaml", bad);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "exit code; stderr: {err}");
    assert!(err.contains("bad.yaml:7"), "no file:line in: {err}");
    assert!(err.contains("endPort"), "no field in: {err}");

    let out = agent.apply(
        "bad2.yaml",
        "version: 1\nhost:\n  denyCIDRs: [10.0.0.1/8]\n",
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("bad2.yaml:3"), "{err}");

    // Through the watched file: rejected by the agent itself, reported in status.
    std::fs::write(
        &agent.policy,
        "version: 1\npolicies:\n  - name: x\n    selectr: {}\n",
    )
    .expect("write");
    // (The CLI's rejections above are in status too: wait for this file's.)
    wait_for(
        "the rejection to show in status",
        Duration::from_secs(5),
        || {
            agent
                .status()
                .policy
                .last_error
                .is_some_and(|e| e.contains("policy.yaml"))
        },
    );
    let st = agent.status();
    let e = st.policy.last_error.expect("last error");
    assert!(e.contains("policy.yaml:4"), "{e}");
    assert!(e.contains("selectr"), "{e}");

    assert_eq!(
        st.policy.generation, g0,
        "a rejected policy reached the kernel"
    );
    assert!(tcp_echo(&lab, "client", web4, 80, OK));
    assert!(!tcp_connect(&lab, "client", web4, 81, NO));
    assert!(agent.log_text().contains("policy_rejected"));

    // Fixing the file clears the error.
    std::fs::write(&agent.policy, web_serves(&[81])).expect("write");
    wait_for("the fixed file to apply", Duration::from_secs(5), || {
        agent.status().policy.generation > g0
    });
    assert!(agent.status().policy.last_error.is_none());
}
