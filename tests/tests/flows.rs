//! Flow monitoring end to end: known traffic between lab workloads (iperf3 with a
//! fixed byte count, K curl requests, a denied attempt, traffic to an outside host)
//! must appear in `enforcer graph --output json` with the right nodes, edges,
//! ports, verdicts and byte counts, in `enforcer flows`, and in the flow log.
use std::{
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use enforcer::graph::{Edge, EdgeVerdict, GraphView, NodeKind};
use enforcer_tests::{Lab, agent::Agent, tcp_connect, tcp_echo};

const SPEC: &str = r#"
name: flows
workloads:
  - {name: web, labels: {app: web}}
  - {name: client, labels: {app: client}}
  - {name: db, labels: {app: db}}
externals:
  - {name: outside, address4: 203.0.113.10/24, address6: "2001:db8:113::10/64"}
"#;

const POLICY: &str = r#"
version: 1
policies:
  - name: web-serves
    selector: {app: web}
    ingress:
      - from: [{selector: {app: client}}]
        ports: [{port: 80}, {port: 5201}, {port: 7000}]
"#;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_enforcer-e2e"))
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

fn edge<'a>(g: &'a GraphView, src: &str, dst: &str, port: u16) -> Option<&'a Edge> {
    g.edges
        .iter()
        .find(|e| e.src == src && e.dst == dst && e.port == port)
}

/// Waits until `f` holds for the graph (the agent reads the flow map every 200 ms here).
fn wait_graph(agent: &Agent, what: &str, f: impl Fn(&GraphView) -> bool) -> GraphView {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let g = graph(agent);
        if f(&g) {
            return g;
        }
        assert!(
            Instant::now() < end,
            "graph never showed {what}:\n{}",
            serde_json::to_string_pretty(&g).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Ethernet, IPv4 and TCP (with the timestamps option Linux sends) headers of one
/// socket buffer.
const TCP4_HEADERS: u64 = 14 + 20 + 32;

/// `tcpi_bytes_retrans` of a TCP socket (TCP_INFO).
fn bytes_retransmitted(s: &std::net::TcpStream) -> u64 {
    use std::os::fd::AsRawFd as _;
    // SAFETY: tcp_info is plain integers; all-zero is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the buffer and its length describe `info`, which outlives the call.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &raw mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    info.tcpi_bytes_retrans
}

#[test]
fn graph_counts_match_the_traffic_sent() {
    let lab = Lab::up_yaml(SPEC).expect("lab");
    lab.serve_echo("outside", &[80]).expect("echo");
    let agent = Agent::start_with_args(
        bin(),
        lab.host_netns(),
        &lab.inventory_yaml(),
        POLICY,
        &["--flows-interval-ms", "200", "--flow-log", "all"],
    );
    let web4 = lab.addr4("web").to_string();

    // An exact payload over one TCP connection, read to EOF by the receiver: what
    // crosses the wire is exactly N bytes plus headers.
    const EXACT: u64 = 8_000_000;
    let listener = lab
        .in_netns("web", || std::net::TcpListener::bind(("0.0.0.0", 7000)))
        .expect("listen 7000");
    let receiver = std::thread::spawn(move || {
        use std::io::Read as _;
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n as u64,
            }
        }
        total
    });
    let web_sock = std::net::SocketAddr::new(lab.addr4("web").into(), 7000);
    let sender = lab.in_netns("client", || {
        use std::io::Write as _;
        let mut s = std::net::TcpStream::connect_timeout(&web_sock, Duration::from_secs(3))
            .expect("connect 7000");
        let chunk = vec![0x5au8; 1 << 16];
        let mut left = EXACT;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            s.write_all(&chunk[..n]).expect("send");
            left -= n as u64;
        }
        s.shutdown(std::net::Shutdown::Write).expect("shutdown");
        s
    });
    assert_eq!(receiver.join().expect("receiver"), EXACT);
    // TCP resends what the receiving side dropped (veth's backlog overflows on a busy
    // machine): those bytes cross the interface again and are counted, as they should.
    let retransmitted = bytes_retransmitted(&sender);
    drop(sender);

    // iperf3 with a fixed byte count. Its client counts bytes handed to the socket;
    // when the test ends the server stops reading and some of those may never cross
    // the wire, so the graph must land between what the server received and what
    // the client sent.
    let server = lab
        .spawn("web", &["iperf3", "-s", "-p", "5201"])
        .expect("iperf3 server");
    lab.wait_listening("web", 5201);
    const PAYLOAD: u64 = 20_000_000;
    let out = lab
        .cmd("client", "iperf3")
        .args(["-c", &web4, "-p", "5201", "-n", &PAYLOAD.to_string(), "-J"])
        .stdin(Stdio::null())
        .output()
        .expect("iperf3 client");
    assert!(
        out.status.success(),
        "iperf3: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("iperf3 JSON");
    let sent = report["end"]["sum_sent"]["bytes"]
        .as_u64()
        .expect("sum_sent.bytes");
    let received = report["end"]["sum_received"]["bytes"]
        .as_u64()
        .expect("sum_received.bytes");
    assert!(sent >= PAYLOAD);
    // Segments TCP sent again (at most one MSS each) cross the interface again.
    let resent = report["end"]["sum_sent"]["retransmits"]
        .as_u64()
        .unwrap_or(0)
        * 1448;
    std::thread::sleep(Duration::from_secs(1));
    let _ = server.stop(Duration::from_secs(2));

    // K HTTP requests with curl, each its own connection.
    let http = lab
        .spawn(
            "web",
            &["python3", "-m", "http.server", "80", "--bind", "0.0.0.0"],
        )
        .expect("http server");
    lab.wait_listening("web", 80);
    const K: u64 = 12;
    for _ in 0..K {
        let st = lab
            .cmd("client", "curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-m",
                "3",
                &format!("http://{web4}:80/"),
            ])
            .status()
            .expect("curl");
        assert!(st.success(), "curl failed");
    }
    let _ = http.stop(Duration::from_secs(2));

    // A denied attempt, and traffic to the outside world (client is not selected).
    assert!(!tcp_connect(
        &lab,
        "client",
        lab.addr4("web"),
        81,
        Duration::from_millis(700)
    ));
    assert!(tcp_echo(
        &lab,
        "client",
        lab.addr4("outside"),
        80,
        Duration::from_secs(3)
    ));

    let g = wait_graph(&agent, "all edges", |g| {
        edge(g, "client", "web", 7000).is_some_and(|e| e.bytes >= EXACT)
            && edge(g, "client", "web", 5201).is_some_and(|e| e.bytes >= received)
            && edge(g, "client", "web", 80).is_some_and(|e| e.connections >= K)
            && edge(g, "client", "web", 81).is_some()
            && edge(g, "client", "world:203.0.113.0/24", 80).is_some()
    });

    // The edge counts what crosses the interface: the payload plus one set of
    // Ethernet/IP/TCP headers per socket buffer. How many buffers a transfer takes is
    // the sender's stack's choice (64 KB GSO buffers when idle, MSS-sized ones under
    // load: +0.1% to +4.6%), so the payload is checked with the headers taken off
    // (66 bytes each: IPv4, TCP with timestamps; the SYN's are a few bytes longer),
    // and the raw count against the two extremes.
    let exact = edge(&g, "client", "web", 7000).expect("exact edge");
    let err = (exact.bytes as f64 - EXACT as f64) / EXACT as f64;
    let payload = exact.bytes.saturating_sub(TCP4_HEADERS * exact.packets);
    let on_wire = EXACT + retransmitted;
    let payload_err = (payload as f64 - on_wire as f64) / on_wire as f64;
    println!(
        "exact transfer: {EXACT} payload bytes ({retransmitted} retransmitted); edge client->web:7000 counts {} bytes in {} packets (+{:.3}%: Ethernet/IP/TCP headers), payload {payload} ({:+.3}% of what was sent)",
        exact.bytes,
        exact.packets,
        err * 100.0,
        payload_err * 100.0
    );
    assert!(
        payload_err.abs() < 0.02,
        "payload {payload} (bytes {} - {TCP4_HEADERS} x {} packets) is {:.2}% off {on_wire} ({EXACT} + {retransmitted} retransmitted)",
        exact.bytes,
        exact.packets,
        payload_err * 100.0
    );
    let raw_err = (exact.bytes as f64 - on_wire as f64) / on_wire as f64;
    assert!(
        (0.0..0.047).contains(&raw_err),
        "byte count {} is {:.2}% off {on_wire}, beyond headers",
        exact.bytes,
        raw_err * 100.0
    );
    assert_eq!(exact.connections, 1);

    let iperf = edge(&g, "client", "web", 5201).expect("iperf edge");
    println!(
        "iperf3: client sent {sent} (retransmitted up to {resent}), server received {received}; edge client->web:5201 counts {} bytes, {} connections",
        iperf.bytes, iperf.connections
    );
    let iperf_payload = iperf.bytes.saturating_sub(TCP4_HEADERS * iperf.packets);
    assert!(
        iperf_payload as f64 >= received as f64 * 0.98
            && (iperf_payload as f64) < (sent + resent) as f64 * 1.02,
        "iperf3 edge payload {iperf_payload} (bytes {} - headers of {} packets) outside [{received} - 2%, {sent} + {resent} retransmitted + 2%]",
        iperf.bytes,
        iperf.packets
    );
    assert_eq!(iperf.protocol, "TCP");
    assert_eq!(iperf.verdict, EdgeVerdict::Allowed);
    // iperf3 opens a control and a data connection.
    assert_eq!(iperf.connections, 2);
    assert!(iperf.reply_bytes > 0, "replies (ACKs) counted");

    let http_edge = edge(&g, "client", "web", 80).expect("http edge");
    assert_eq!(http_edge.connections, K, "one connection per curl request");
    assert_eq!(http_edge.verdict, EdgeVerdict::Allowed);
    assert!(
        http_edge.decided_by.contains("web-serves"),
        "{}",
        http_edge.decided_by
    );

    let denied = edge(&g, "client", "web", 81).expect("denied edge");
    assert_eq!(denied.verdict, EdgeVerdict::Denied);
    assert!(denied.dropped_packets >= 1);
    assert_eq!(denied.last_reason, "dropped_port_not_declared");
    assert!(
        denied.decided_by.contains("default deny"),
        "{}",
        denied.decided_by
    );

    let world = g
        .nodes
        .iter()
        .find(|n| n.id == "world:203.0.113.0/24")
        .expect("world node");
    assert_eq!(world.kind, NodeKind::World);
    let web = g.nodes.iter().find(|n| n.id == "web").expect("web node");
    assert_eq!(web.labels.get("app").map(String::as_str), Some("web"));
    // Traffic between two workloads is counted once, not at both interfaces: the
    // exact transfer above would be ~2x otherwise.

    // Filters.
    let out = agent.cli(&["graph", "--output", "json", "--verdict", "denied"]);
    let denied_only: GraphView = serde_json::from_slice(&out.stdout).expect("json");
    assert!(
        denied_only
            .edges
            .iter()
            .all(|e| e.verdict != EdgeVerdict::Allowed)
    );
    assert!(edge(&denied_only, "client", "web", 81).is_some());
    for fmt in ["dot", "mermaid", "table"] {
        let out = agent.cli(&["graph", "--output", fmt]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains("web"),
            "{fmt}: {text}"
        );
    }

    // `enforcer flows`: the deny, with what decided it.
    let out = agent.cli(&["flows", "--verdict", "dropped", "--output", "json"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let denies: Vec<enforcer::flows::FlowRecord> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("flow JSON line"))
        .collect();
    let d = denies
        .iter()
        .find(|r| r.dst_port == 81)
        .unwrap_or_else(|| panic!("no deny for port 81 in: {text}"));
    assert_eq!(
        (d.src_name.as_str(), d.dst_name.as_str()),
        ("client", "web")
    );
    assert!(d.decided_by.contains("web-serves"), "{}", d.decided_by);

    // Flow log: JSON lines in the agent's output.
    let log = agent.log_text();
    assert!(
        log.lines().any(|l| l.contains("\"event\":\"flow\"")
            && l.contains("\"verdict\":\"dropped\"")
            && l.contains("\"dst_port\":81")),
        "no deny in the flow log"
    );

    let st = agent.status();
    assert!(st.flows.events_received > 0);
    assert_eq!(st.flows.events_lost_ringbuf_full, 0);
}

#[test]
fn flows_follow_streams_live_events() {
    let lab = Lab::up_yaml(SPEC).expect("lab");
    lab.serve_echo("web", &[80, 81]).expect("echo");
    let agent = Agent::start(bin(), lab.host_netns(), &lab.inventory_yaml(), POLICY);
    let mut follow = std::process::Command::new(bin())
        .args([
            "--instance",
            &agent.instance,
            "flows",
            "--follow",
            "--output",
            "json",
            "--port",
            "81",
            "--verdict",
            "dropped",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("flows --follow");
    std::thread::sleep(Duration::from_millis(300));
    assert!(!tcp_connect(
        &lab,
        "client",
        lab.addr6("web"),
        81,
        Duration::from_millis(700)
    ));
    let stdout = follow.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("a streamed event within 5 s");
    let _ = follow.kill();
    let _ = follow.wait();
    let rec: enforcer::flows::FlowRecord = serde_json::from_str(&line).expect("JSON line");
    assert_eq!(rec.dst_port, 81);
    assert_eq!(rec.verdict, "dropped");
    assert_eq!(rec.src_name, "client");
}

/// A flow that keeps being denied is reported again, at most once a second: three
/// datagrams of one denied UDP flow, 1.3 s apart, give three deny events (the flow's
/// first one when its entry is made, then one per later drop), not just the first.
#[test]
fn a_flow_denied_again_after_a_second_is_reported_again() {
    let lab = Lab::up_yaml(SPEC).expect("lab");
    let agent = Agent::start(bin(), lab.host_netns(), &lab.inventory_yaml(), POLICY);
    // web serves TCP only: UDP 9 is not declared.
    let to = std::net::SocketAddr::new(lab.addr4("web").into(), 9);
    let port = lab.in_netns("client", || {
        let s = std::net::UdpSocket::bind(("0.0.0.0", 0)).expect("bind");
        for i in 0..3 {
            if i > 0 {
                std::thread::sleep(Duration::from_millis(1300));
            }
            s.send_to(b"denied", to).expect("send");
        }
        s.local_addr().expect("local address").port()
    });
    let src_port = format!("\"src_port\":{port},");
    let denies = || {
        agent
            .log_text()
            .lines()
            .filter(|l| {
                l.contains("\"event\":\"flow\"")
                    && l.contains("\"kind\":\"deny\"")
                    && l.contains("\"dst_port\":9,")
                    && l.contains(&src_port)
            })
            .count()
    };
    let end = Instant::now() + Duration::from_secs(5);
    while denies() < 3 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        denies(),
        3,
        "deny events for the flow from port {port}:\n{}",
        agent.log_text()
    );
    assert!(agent.drops("web", "ingress", "dropped_port_not_declared") >= 3);
}
