//! The web view's router over a real loopback socket, with a fixed graph.
use std::{collections::BTreeMap, net::SocketAddr};

use http_body_util::{BodyExt as _, Empty};
use hyper::{Method, Request, body::Bytes, header::HeaderMap};
use hyper_util::rt::TokioIo;

use super::*;
use crate::graph::{Edge, EdgeVerdict, Node, NodeKind};

fn edge(src: &str, dst: &str, port: u16, verdict: EdgeVerdict) -> Edge {
    Edge {
        src: src.into(),
        dst: dst.into(),
        protocol: "TCP".into(),
        port,
        verdict,
        packets: 10,
        bytes: 1000,
        reply_packets: 8,
        reply_bytes: 800,
        dropped_packets: u64::from(verdict == EdgeVerdict::Denied) * 10,
        dropped_bytes: 0,
        connections: 2,
        denied_connections: 0,
        rate_bps: 1800.0,
        rate_pps: 18.0,
        connection_rate: 0.5,
        first_seen: "2026-01-01T00:00:00.000Z".into(),
        last_seen: "2026-01-01T00:00:10.000Z".into(),
        last_reason: "allowed_by_policy".into(),
        decided_by: "policy web-serves ingress[0]".into(),
        anomalous: false,
        last_seen_at: None,
        first_seen_at: None,
    }
}

fn fake_view() -> GraphView {
    let node = |id: &str| Node {
        id: id.into(),
        kind: NodeKind::Workload,
        labels: BTreeMap::from([("app".to_owned(), id.to_owned())]),
    };
    GraphView {
        generated_at: "2026-01-01T00:00:10.000Z".into(),
        nodes: vec![node("client"), node("web")],
        edges: vec![
            edge("client", "web", 80, EdgeVerdict::Allowed),
            edge("client", "web", 81, EdgeVerdict::Denied),
        ],
        edges_dropped: 0,
    }
}

async fn start() -> SocketAddr {
    let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let source: GraphSource = Arc::new(fake_view);
    tokio::spawn(async move { axum::serve(listener, router(source)).await });
    addr
}

async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    host: Option<&str>,
) -> (StatusCode, HeaderMap, Bytes) {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut req = Request::builder().method(method).uri(path);
    if let Some(h) = host {
        req = req.header(header::HOST, h);
    }
    let resp = sender
        .send_request(req.body(Empty::<Bytes>::new()).expect("request"))
        .await
        .expect("send");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    (parts.status, parts.headers, body)
}

async fn get(addr: SocketAddr, path: &str) -> (StatusCode, HeaderMap, Bytes) {
    request(addr, Method::GET, path, Some(&addr.to_string())).await
}

#[tokio::test]
async fn serves_the_page_and_its_assets_with_a_strict_policy() {
    let addr = start().await;
    for (path, ty, needle) in [
        ("/", "text/html", "/app.js"),
        ("/app.js", "text/javascript", "/api/graph"),
        ("/style.css", "text/css", ".edge.denied"),
    ] {
        let (status, headers, body) = get(addr, path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        let ct = headers[header::CONTENT_TYPE].to_str().expect("ascii");
        assert!(ct.starts_with(ty), "{path}: {ct}");
        assert_eq!(
            headers[header::CONTENT_SECURITY_POLICY],
            CONTENT_SECURITY_POLICY
        );
        assert!(CONTENT_SECURITY_POLICY.starts_with("default-src 'self'"));
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        let text = String::from_utf8(body.to_vec()).expect("utf-8");
        assert!(text.contains(needle), "{path} lacks {needle}");
    }
}

#[test]
fn assets_reference_nothing_outside_the_server() {
    for (name, text) in [
        ("index.html", INDEX_HTML),
        ("app.js", APP_JS),
        ("style.css", STYLE_CSS),
    ] {
        for bad in ["http://", "https://", "//cdn", "@import", "url("] {
            // The SVG namespace is a name, not something the browser loads.
            let hits = text
                .match_indices(bad)
                .filter(|(i, _)| !text[*i..].starts_with("http://www.w3.org/2000/svg"))
                .count();
            assert_eq!(hits, 0, "{name} refers to {bad}");
        }
        assert!(
            !text.contains("innerHTML"),
            "{name} builds markup from data"
        );
    }
}

#[tokio::test]
async fn serves_the_graph_as_json() {
    let addr = start().await;
    let (status, headers, body) = get(addr, "/api/graph").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .expect("ascii")
            .starts_with("application/json")
    );
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    let view: GraphView = serde_json::from_slice(&body).expect("GraphView JSON");
    assert_eq!(view, fake_view());
}

#[tokio::test]
async fn is_read_only_and_has_nothing_else() {
    let addr = start().await;
    let host = addr.to_string();
    let (status, ..) = request(addr, Method::POST, "/api/graph", Some(&host)).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (status, ..) = request(addr, Method::DELETE, "/", Some(&host)).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    for path in [
        "/v1/status",
        "/api/graph/x",
        "/../etc/passwd",
        "/index.html",
    ] {
        let (status, headers, _) = get(addr, path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        // Errors carry the headers too.
        assert_eq!(
            headers[header::CONTENT_SECURITY_POLICY],
            CONTENT_SECURITY_POLICY
        );
    }
    let (status, _, body) = request(addr, Method::HEAD, "/", Some(&host)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.is_empty());
}

#[tokio::test]
async fn refuses_dns_names_other_than_localhost() {
    let addr = start().await;
    let port = addr.port();
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "LOCALHOST".to_owned(),
        format!("[::1]:{port}"),
        "10.1.2.3".to_owned(),
    ] {
        let (status, ..) = request(addr, Method::GET, "/api/graph", Some(&host)).await;
        assert_eq!(status, StatusCode::OK, "Host: {host}");
    }
    for host in [
        format!("attacker.example:{port}"),
        "localhost.attacker.example".to_owned(),
        "[not-an-ip]:80".to_owned(),
        "127.0.0.1.nip.io".to_owned(),
    ] {
        let (status, headers, _) = request(addr, Method::GET, "/api/graph", Some(&host)).await;
        assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "Host: {host}");
        assert_eq!(
            headers[header::CONTENT_SECURITY_POLICY],
            CONTENT_SECURITY_POLICY
        );
    }
}

#[tokio::test]
async fn a_busy_address_is_an_error_naming_it() {
    let first = bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("bind");
    let addr = first.local_addr().expect("addr");
    let err = bind(addr).await.expect_err("address in use");
    assert!(err.to_string().contains(&addr.to_string()), "{err}");
}
