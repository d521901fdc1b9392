//! Helpers shared by the metrics end-to-end tests (`metrics.rs`, `prometheus.rs`): a
//! minimal HTTP/1.1 client run inside a lab namespace (the agent's metrics listener is
//! on that namespace's loopback), and a parser for the Prometheus text format.
#![allow(dead_code, reason = "each test file uses a different subset")]

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use enforcer_tests::Lab;

/// The agent's default metrics address (inside the lab's host namespace).
pub const METRICS: &str = "127.0.0.1:9469";

/// An HTTP answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// Sends one request from inside `ns` (a lab namespace or `host`) and reads the answer.
/// `None` if nothing answers.
pub fn http(
    lab: &Lab,
    ns: &str,
    addr: &str,
    method: &str,
    path: &str,
    accept: Option<&str>,
) -> Option<Answer> {
    let addr: SocketAddr = addr.parse().expect("socket address");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{}Content-Length: 0\r\n\r\n",
        accept
            .map(|a| format!("Accept: {a}\r\n"))
            .unwrap_or_default()
    );
    lab.in_netns(ns, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
        s.write_all(request.as_bytes()).ok()?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).ok()?;
        parse_answer(&String::from_utf8_lossy(&raw))
    })
}

fn parse_answer(raw: &str) -> Option<Answer> {
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let mut lines = head.lines();
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let mut content_type = String::new();
    let mut chunked = false;
    for l in lines {
        let (k, v) = l.split_once(':')?;
        match k.trim().to_ascii_lowercase().as_str() {
            "content-type" => content_type = v.trim().to_owned(),
            "transfer-encoding" => chunked = v.trim().eq_ignore_ascii_case("chunked"),
            _ => {}
        }
    }
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    Some(Answer {
        status,
        content_type,
        body,
    })
}

fn dechunk(mut s: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n")?;
        let n = usize::from_str_radix(size.trim(), 16).ok()?;
        if n == 0 {
            return Some(out);
        }
        out.push_str(rest.get(..n)?);
        s = rest.get(n + 2..)?;
    }
}

/// `GET /metrics` from the lab's host namespace, in Prometheus text; panics unless 200.
pub fn scrape(lab: &Lab) -> String {
    let a = http(lab, "host", METRICS, "GET", "/metrics", None).expect("metrics endpoint answers");
    assert_eq!(a.status, 200, "GET /metrics: {}", a.body);
    a.body
}

/// Samples of a Prometheus text exposition: series (name and labels) → value.
#[derive(Debug, Default)]
pub struct Samples(pub Vec<(String, BTreeMap<String, String>, f64)>);

impl Samples {
    pub fn parse(text: &str) -> Self {
        let mut out = Vec::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            let value: f64 = value.parse().expect("sample value");
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, parse_labels(rest.trim_end_matches('}'))),
                None => (series, BTreeMap::new()),
            };
            out.push((name.to_owned(), labels, value));
        }
        Samples(out)
    }

    /// Values of `name` whose labels include all of `with`.
    pub fn find(&self, name: &str, with: &[(&str, &str)]) -> Vec<f64> {
        self.0
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && with
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| *v)
            .collect()
    }

    /// The one value of `name` with exactly these labels (panics if absent).
    pub fn one(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        let v = self.find(name, with);
        assert_eq!(v.len(), 1, "{name} {with:?}: {v:?}");
        v[0]
    }

    /// Distinct values of `label` over the series of `name`.
    pub fn label_values(&self, name: &str, label: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .0
            .iter()
            .filter(|(n, _, _)| n == name)
            .filter_map(|(_, l, _)| l.get(label).cloned())
            .collect();
        v.sort();
        v.dedup();
        v
    }
}

/// `a="x",b="y"` with `\"`, `\\` and `\n` escapes.
fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            return out;
        }
        assert_eq!(chars.next(), Some('"'), "label value quote in {s}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.insert(key.trim_start_matches(',').trim().to_owned(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
}

/// Runs `promtool check metrics` on an exposition; panics with its complaints.
pub fn promtool_check_metrics(text: &str) {
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
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n---- scrape ----\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
