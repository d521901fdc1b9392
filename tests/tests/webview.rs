//! The web view end to end: an agent with `--web-address` in a lab's host namespace,
//! allowed and denied traffic between three workloads and an outside host, then
//! headless Chromium (in the same namespace) loads the page, and both its rendered
//! DOM and a screenshot must show every workload and the expected edges.
//!
//! The screenshot and the DOM stay in `<target>/tmp/webview/` for a human to look at.
use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use enforcer::graph::{EdgeVerdict, GraphView};
use enforcer_tests::{Lab, agent::Agent, tcp_connect, tcp_echo};

const SPEC: &str = r#"
name: webview
workloads:
  - {name: web, labels: {app: web}}
  - {name: db, labels: {app: db}}
  - {name: client, labels: {app: client}}
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
        ports: [{port: 80}]
  - name: db-serves-web
    selector: {app: db}
    ingress:
      - from: [{selector: {app: web}}]
        ports: [{port: 5432}]
"#;

const WORKLOADS: [&str; 3] = ["web", "db", "client"];

/// Where the agent serves the page, inside the lab's host namespace.
const WEB_ADDRESS: &str = "127.0.0.1:9470";

const OK: Duration = Duration::from_secs(3);
const NO: Duration = Duration::from_millis(700);

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_enforcer-e2e"))
}

/// `GET path` on the web view from inside the host namespace: (status, headers, body).
fn http_get(lab: &Lab, path: &str) -> Option<(u16, String, Vec<u8>)> {
    let addr: SocketAddr = WEB_ADDRESS.parse().expect("address");
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {WEB_ADDRESS}\r\nConnection: close\r\n\r\n");
    let raw = lab.in_netns("host", || {
        let mut s = TcpStream::connect_timeout(&addr, OK).ok()?;
        s.set_read_timeout(Some(OK)).ok()?;
        s.write_all(request.as_bytes()).ok()?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).ok()?;
        Some(raw)
    })?;
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "expected a sized body:\n{head}"
    );
    Some((status, head, raw[split + 4..].to_vec()))
}

fn graph(lab: &Lab) -> Option<GraphView> {
    let (status, _, body) = http_get(lab, "/api/graph")?;
    assert_eq!(
        status,
        200,
        "/api/graph: {}",
        String::from_utf8_lossy(&body)
    );
    Some(serde_json::from_slice(&body).expect("/api/graph is a GraphView"))
}

fn has_edge(g: &GraphView, src: &str, dst: &str, port: u16, verdict: EdgeVerdict) -> bool {
    g.edges
        .iter()
        .any(|e| e.src == src && e.dst == dst && e.port == port && e.verdict == verdict)
}

/// Echoes `total` bytes over one connection (an echo server listens at `to`).
fn push(lab: &Lab, from: &str, to: IpAddr, port: u16, total: usize) -> bool {
    let target = SocketAddr::new(to, port);
    lab.in_netns(from, || {
        let Ok(mut s) = TcpStream::connect_timeout(&target, OK) else {
            return false;
        };
        if s.set_read_timeout(Some(OK)).is_err() {
            return false;
        }
        let chunk = vec![0x42u8; 16 * 1024];
        let mut back = vec![0u8; chunk.len()];
        let mut done = 0;
        while done < total {
            if s.write_all(&chunk).is_err() || s.read_exact(&mut back).is_err() {
                return false;
            }
            done += chunk.len();
        }
        true
    })
}

/// Runs headless Chromium in the lab's host namespace on the page, with `action`
/// (`--screenshot=…` or `--dump-dom`); returns its stdout. Fresh profile, no
/// sandbox (root), nothing but the page's own requests on the network.
fn chromium(lab: &Lab, work: &Path, action: &str) -> Vec<u8> {
    let profile = tempfile::tempdir().expect("profile dir");
    let out_path = work.join("chromium.out");
    let err_path = work.join("chromium.err");
    let out = std::fs::File::create(&out_path).expect("stdout file");
    let err = std::fs::File::create(&err_path).expect("stderr file");
    let mut cmd: Command = lab.cmd("host", "chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-breakpad",
        "--disable-dev-shm-usage",
        "--virtual-time-budget=5000",
        "--window-size=1280,900",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .arg(action)
    .arg(format!("http://{WEB_ADDRESS}/"))
    // Chromium writes caches and crash reports under HOME: keep them in the profile.
    .env("HOME", profile.path())
    .env("XDG_CONFIG_HOME", profile.path().join("config"))
    .env("XDG_CACHE_HOME", profile.path().join("cache"))
    .stdin(Stdio::null())
    .stdout(out)
    .stderr(err);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => panic!("cannot start chromium ({e}); `cargo xtask setup` installs it"),
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait chromium") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "chromium {action} did not finish in 90 s:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        status.success(),
        "chromium {action} failed ({status}):\n{}",
        std::fs::read_to_string(&err_path).unwrap_or_default()
    );
    std::fs::read(&out_path).expect("chromium output")
}

/// Attributes of every start tag `<name …>` in serialized HTML (Chromium's
/// `--dump-dom` quotes every value with `"` and escapes `&`, `<`, `>`, `"`).
fn start_tags(dom: &str, name: &str) -> Vec<BTreeMap<String, String>> {
    let open = format!("<{name} ");
    let mut tags = Vec::new();
    let mut rest = dom;
    while let Some(i) = rest.find(&open) {
        rest = &rest[i + open.len()..];
        let Some(end) = rest.find('>') else { break };
        let mut attrs = BTreeMap::new();
        let mut body = &rest[..end];
        while let Some(eq) = body.find("=\"") {
            let key = body[..eq].trim().to_owned();
            let after = &body[eq + 2..];
            let Some(close) = after.find('"') else { break };
            let value = after[..close]
                .replace("&quot;", "\"")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&");
            attrs.insert(key, value);
            body = &after[close + 1..];
        }
        tags.push(attrs);
        rest = &rest[end..];
    }
    tags
}

fn find_edge<'a>(
    tags: &'a [BTreeMap<String, String>],
    src: &str,
    dst: &str,
    port: u16,
) -> Option<&'a BTreeMap<String, String>> {
    let port = port.to_string();
    tags.iter().find(|t| {
        t.get("data-src").map(String::as_str) == Some(src)
            && t.get("data-dst").map(String::as_str) == Some(dst)
            && t.get("data-port") == Some(&port)
    })
}

#[test]
fn web_view_draws_the_live_graph_in_a_browser() {
    let lab = Lab::up_yaml(SPEC).expect("lab up");
    lab.serve_echo("web", &[80, 81]).expect("echo web");
    lab.serve_echo("db", &[5432]).expect("echo db");
    lab.serve_echo("outside", &[80]).expect("echo outside");
    let agent = Agent::start_with_args(
        bin(),
        lab.host_netns(),
        &lab.inventory_yaml(),
        POLICY,
        &["--web-address", WEB_ADDRESS, "--flows-interval-ms", "200"],
    );

    // The page and its assets, with the security headers.
    let (status, head, body) = http_get(&lab, "/").expect("GET / answers");
    assert_eq!(status, 200, "{head}");
    assert!(
        head.contains("default-src 'self'"),
        "no Content-Security-Policy:\n{head}"
    );
    assert!(String::from_utf8_lossy(&body).contains("/app.js"));
    for path in ["/app.js", "/style.css"] {
        let (status, head, _) = http_get(&lab, path).expect("asset answers");
        assert_eq!(status, 200, "{path}: {head}");
    }
    let (status, ..) = http_get(&lab, "/v1/status").expect("answers");
    assert_eq!(status, 404, "the web view serves nothing but the page");

    // Allowed: client -> web:80, web -> db:5432, client -> outside (client is not
    // selected). Denied: client -> web:81 (not declared), client -> db:5432 (peer).
    for a in lab.addrs("web") {
        assert!(tcp_echo(&lab, "client", a, 80, OK), "client -> web {a}:80");
        assert!(!tcp_connect(&lab, "client", a, 81, NO), "web {a}:81 denied");
    }
    for a in lab.addrs("db") {
        assert!(tcp_echo(&lab, "web", a, 5432, OK), "web -> db {a}:5432");
        assert!(
            !tcp_connect(&lab, "client", a, 5432, NO),
            "client -> db {a}:5432 denied"
        );
    }
    assert!(tcp_echo(&lab, "client", lab.addr4("outside"), 80, OK));

    let deadline = Instant::now() + Duration::from_secs(15);
    let world = loop {
        let g = graph(&lab).expect("/api/graph answers");
        let world = g
            .edges
            .iter()
            .find(|e| e.src == "client" && e.dst.starts_with("world:") && e.port == 80)
            .map(|e| e.dst.clone());
        if has_edge(&g, "client", "web", 80, EdgeVerdict::Allowed)
            && has_edge(&g, "client", "web", 81, EdgeVerdict::Denied)
            && has_edge(&g, "web", "db", 5432, EdgeVerdict::Allowed)
            && has_edge(&g, "client", "db", 5432, EdgeVerdict::Denied)
            && let Some(world) = world
        {
            break world;
        }
        assert!(
            Instant::now() < deadline,
            "the graph never showed the lab's edges:\n{}\nagent log:\n{}",
            serde_json::to_string_pretty(&g).unwrap_or_default(),
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    };

    let artifacts = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("webview");
    std::fs::create_dir_all(&artifacts).expect("artifact dir");
    let screenshot = artifacts.join("screenshot.png");
    let _ = std::fs::remove_file(&screenshot);

    // Live traffic while the browser looks, so edges have a rate (and a width).
    let stop = AtomicBool::new(false);
    let (dom, png) = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                push(&lab, "client", lab.addr4("web").into(), 80, 256 * 1024);
                push(&lab, "web", lab.addr6("db").into(), 5432, 32 * 1024);
                tcp_connect(
                    &lab,
                    "client",
                    lab.addr4("web"),
                    81,
                    Duration::from_millis(50),
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        std::thread::sleep(Duration::from_secs(2));
        let png_arg = format!("--screenshot={}", screenshot.display());
        chromium(&lab, &artifacts, &png_arg);
        let dom = chromium(&lab, &artifacts, "--dump-dom");
        stop.store(true, Ordering::SeqCst);
        (dom, std::fs::read(&screenshot).expect("screenshot written"))
    });
    let dom = String::from_utf8(dom).expect("DOM is UTF-8");
    std::fs::write(artifacts.join("dom.html"), &dom).expect("save DOM");
    println!("web view screenshot: {}", screenshot.display());
    println!("web view DOM: {}", artifacts.join("dom.html").display());

    // The page ran: it fetched the graph at least once and drew it.
    let body = start_tags(&dom, "body");
    let refreshes: u32 = body
        .first()
        .and_then(|b| b.get("data-refreshes"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(refreshes >= 1, "the page never loaded the graph:\n{dom}");

    // Every workload is drawn as a node, and the outside world too.
    let groups = start_tags(&dom, "g");
    let nodes: BTreeMap<&str, &str> = groups
        .iter()
        .filter_map(|g| Some((g.get("data-node")?.as_str(), g.get("data-kind")?.as_str())))
        .collect();
    for w in WORKLOADS {
        assert_eq!(nodes.get(w), Some(&"workload"), "node {w} drawn: {nodes:?}");
    }
    assert_eq!(nodes.get(world.as_str()), Some(&"world"), "{nodes:?}");

    // The edges: drawn in the SVG and listed in the table, verdicts marked.
    let drawn: Vec<_> = groups
        .iter()
        .filter(|g| g.get("class").is_some_and(|c| c.starts_with("edge ")))
        .cloned()
        .collect();
    let rows = start_tags(&dom, "tr");
    for (src, dst, port, verdict, class) in [
        ("client", "web", 80, "allowed", "allowed"),
        ("web", "db", 5432, "allowed", "allowed"),
        ("client", "web", 81, "denied", "denied"),
        ("client", "db", 5432, "denied", "denied"),
        ("client", world.as_str(), 80, "allowed", ""),
    ] {
        for (what, tags) in [("drawn edge", &drawn), ("table row", &rows)] {
            let t = find_edge(tags, src, dst, port)
                .unwrap_or_else(|| panic!("{what} {src} -> {dst}:{port} missing:\n{tags:?}"));
            assert_eq!(
                t.get("data-verdict").map(String::as_str),
                Some(verdict),
                "{what} {src} -> {dst}:{port}"
            );
            let classes = t.get("class").map(String::as_str).unwrap_or_default();
            assert!(
                classes.split_whitespace().any(|c| c == class) || class.is_empty(),
                "{what} {src} -> {dst}:{port} should be {class}: {classes}"
            );
        }
    }

    // A real picture: a PNG of the window's size with something on it.
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    assert_eq!(&png[12..16], b"IHDR");
    assert_eq!((be32(&png[16..20]), be32(&png[20..24])), (1280, 900));
    assert!(
        png.len() > 20_000,
        "screenshot is only {} bytes: an empty page?",
        png.len()
    );
}
