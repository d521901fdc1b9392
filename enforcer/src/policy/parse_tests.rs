//! Parser tests: the documented example, and one test per error with its position.
use super::*;

/// The example of `docs/policy.md`.
const EXAMPLE: &str = r#"version: 1
host:
  denyCIDRs:
    - 203.0.113.0/24
    - cidr: 2001:db8:bad::/48
      except: [2001:db8:bad:1::/64]
policies:
  - name: web-allow
    selector: {app: web}
    ingress:
      - from:
          - selector: {app: client}
          - cidr: 198.51.100.0/24
            except: [198.51.100.128/25]
          - host: true
        ports:
          - {port: 80, protocol: TCP}
          - {port: 8000, endPort: 8010, protocol: tcp}
          - {protocol: ICMP}
          - {port: 53, protocol: UDP}
    egress:
      - to: [{selector: {app: db}}]
        ports: [{port: 5432}]
  - name: db-deny-all
    selector: {app: db}
    ingress: []
    egress: []
"#;

fn net(s: &str) -> IpNet {
    s.parse().expect("cidr")
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn sel(pairs: &[(&str, &str)]) -> Selector {
    Selector {
        match_labels: labels(pairs),
    }
}

fn err(text: &str) -> String {
    match PolicyFile::parse(text, "policy.yaml") {
        Ok(p) => panic!("accepted: {p:?}"),
        Err(e) => e.to_string(),
    }
}

/// A one-rule ingress policy with `peer` and `port` spliced in, so that the peer is
/// on line 7 (column 13) and the port on line 9 (column 13).
fn with(peer: &str, port: &str) -> String {
    format!(
        "version: 1\npolicies:\n  - name: web\n    selector: {{app: web}}\n    ingress:\n      \
         - from:\n          - {peer}\n        ports:\n          - {port}\n"
    )
}

fn assert_err(text: &str, at: &str, contains: &str) {
    let e = err(text);
    assert!(e.starts_with(at), "want prefix {at:?}, got: {e}");
    assert!(e.contains(contains), "want {contains:?} in: {e}");
}

#[test]
fn parses_the_documented_example() {
    let p = PolicyFile::parse(EXAMPLE, "policy.yaml").expect("valid");
    assert_eq!(p.origin, "policy.yaml");
    assert_eq!(p.version, 1);
    assert_eq!(
        p.host.deny_cidrs,
        vec![
            CidrBlock {
                cidr: net("203.0.113.0/24"),
                except: vec![]
            },
            CidrBlock {
                cidr: net("2001:db8:bad::/48"),
                except: vec![net("2001:db8:bad:1::/64")]
            },
        ]
    );
    assert_eq!(p.policies.len(), 2);
    let web = &p.policies[0];
    assert_eq!(web.name, "web-allow");
    assert_eq!(web.selector, sel(&[("app", "web")]));
    let ingress = web.ingress.as_deref().expect("ingress");
    assert_eq!(ingress.len(), 1);
    assert_eq!(
        ingress[0],
        Rule {
            peers: Peers::Only(vec![
                Peer::Workloads(sel(&[("app", "client")])),
                Peer::Cidr(CidrBlock {
                    cidr: net("198.51.100.0/24"),
                    except: vec![net("198.51.100.128/25")],
                }),
                Peer::Host,
            ]),
            ports: Ports::Only(vec![
                PortSpec {
                    protocol: Protocol::Tcp,
                    ports: Some((80, 80))
                },
                PortSpec {
                    protocol: Protocol::Tcp,
                    ports: Some((8000, 8010))
                },
                PortSpec {
                    protocol: Protocol::Icmp,
                    ports: None
                },
                PortSpec {
                    protocol: Protocol::Udp,
                    ports: Some((53, 53))
                },
            ]),
            line: Some(11),
        }
    );
    let egress = web.egress.as_deref().expect("egress");
    assert_eq!(egress[0].line, Some(22));
    assert_eq!(
        egress[0].ports,
        Ports::Only(vec![PortSpec {
            protocol: Protocol::Tcp,
            ports: Some((5432, 5432))
        }]),
        "protocol defaults to TCP"
    );
    let db = &p.policies[1];
    assert_eq!(db.ingress.as_deref(), Some(&[][..]));
    assert_eq!(db.egress.as_deref(), Some(&[][..]));
    let cidrs: Vec<IpNet> = p.peer_cidrs().collect();
    assert_eq!(
        cidrs,
        vec![net("198.51.100.0/24"), net("198.51.100.128/25")]
    );
}

#[test]
fn empty_lists_and_missing_keys_mean_any() {
    let p = PolicyFile::parse(
        "version: 1\npolicies:\n  - name: a\n    selector: {}\n    ingress:\n      \
         - from: []\n        ports: []\n      - {}\n    egress: [{to: }]\n",
        "policy.yaml",
    )
    .expect("valid");
    let a = &p.policies[0];
    for r in a.ingress.iter().chain(a.egress.iter()).flatten() {
        assert_eq!((&r.peers, &r.ports), (&Peers::Any, &Ports::Any));
    }
    assert_eq!(a.selector, Selector::default());
}

#[test]
fn protocols_are_case_insensitive_and_addresses_are_host_prefixes() {
    let p = PolicyFile::parse(
        &with("cidr: 192.0.2.7", "{protocol: icmpV6}"),
        "policy.yaml",
    )
    .expect("valid");
    let rule = &p.policies[0].ingress.as_deref().expect("ingress")[0];
    assert_eq!(
        rule.peers,
        Peers::Only(vec![Peer::Cidr(CidrBlock {
            cidr: net("192.0.2.7/32"),
            except: vec![]
        })])
    );
    assert_eq!(
        rule.ports,
        Ports::Only(vec![PortSpec {
            protocol: Protocol::Icmpv6,
            ports: None
        }])
    );
}

#[test]
fn port_errors() {
    let at = "policy.yaml:9:13: policies[0].ingress[0].ports[0]: ";
    let peer = "{host: true}";
    assert_err(
        &with(peer, "{port: 80, endPort: 70}"),
        at,
        "endPort 70 is lower than port 80",
    );
    assert_err(&with(peer, "{endPort: 80}"), at, "`endPort` needs a `port`");
    assert_err(
        &with(peer, "{protocol: ICMP, port: 8}"),
        at,
        "ICMP has no ports",
    );
    assert_err(
        &with(peer, "{protocol: ICMPv6, endPort: 8}"),
        at,
        "ICMPv6 has no ports",
    );
    let at_port = "policy.yaml:9:20: policies[0].ingress[0].ports[0].port: ";
    assert_err(&with(peer, "{port: 0}"), at_port, "port 0 is out of range");
    assert_err(
        &with(peer, "{port: 65536}"),
        at_port,
        "port 65536 is out of range",
    );
    assert_err(
        &with(peer, "{port: -5}"),
        at_port,
        "port -5 is out of range",
    );
    assert_err(
        &with(peer, "{port: http}"),
        at_port,
        "named ports are not supported",
    );
    assert_err(
        &with(peer, "{protocol: SCTP}"),
        "policy.yaml:9:24: policies[0].ingress[0].ports[0].protocol: ",
        "unknown protocol `SCTP`",
    );
    assert_err(
        &with(peer, "{port: 80, proto: TCP}"),
        "policy.yaml:9:24: policies[0].ingress[0].ports[0]: ",
        "unknown field `proto`",
    );
}

#[test]
fn peer_errors() {
    let port = "{port: 80}";
    let at = "policy.yaml:7:13: policies[0].ingress[0].from[0]: ";
    let at_cidr = "policy.yaml:7:19: policies[0].ingress[0].from[0].cidr: ";
    assert_err(
        &with("cidr: 10.0.0.1/8", port),
        at_cidr,
        "did you mean 10.0.0.0/8?",
    );
    assert_err(&with("cidr: 10.0.0.0/33", port), at_cidr, "is not a CIDR");
    assert_err(
        &with("cidr: \"::ffff:10.0.0.0/104\"", port),
        at_cidr,
        "(10.0.0.0/8)",
    );
    assert_err(
        &with("{cidr: 10.0.0.0/8, except: [11.0.0.0/16]}", port),
        at,
        "except 11.0.0.0/16 is not inside cidr 10.0.0.0/8",
    );
    assert_err(
        &with("{cidr: 10.0.0.0/8, except: [\"fd00::/8\"]}", port),
        at,
        "is not inside",
    );
    assert_err(
        &with("{cidr: 10.0.0.0/8, except: [10.0.0.0/8]}", port),
        at,
        "must be smaller",
    );
    assert_err(
        &with("{cidr: 10.0.0.0/8, host: true}", port),
        at,
        "only one of",
    );
    assert_err(
        &with("{except: [10.0.0.0/8]}", port),
        at,
        "`except` needs a `cidr`",
    );
    assert_err(
        &with("{}", port),
        at,
        "needs one of `selector`, `cidr` or `host`",
    );
    assert_err(
        &with("{host: false}", port),
        at,
        "`host: false` matches nothing",
    );
    assert_err(
        &with("{namespaceSelector: {}}", port),
        "policy.yaml:7:14: policies[0].ingress[0].from[0]: ",
        "unknown field `namespaceSelector`",
    );
    assert_err(
        &with("{selector: {app: \"a b\"}}", port),
        "policy.yaml:7:30: policies[0].ingress[0].from[0].selector.app: ",
        "value `a b`",
    );
}

#[test]
fn policy_errors() {
    let base = with("{host: true}", "{port: 80}");
    assert_err(
        &base.replace("version: 1", "version: 2"),
        "policy.yaml:1:10: version: ",
        "unsupported policy file version `2`; this enforcer reads version 1",
    );
    assert_err(
        &base.replace("version: 1\n", ""),
        "policy.yaml:1:1: ",
        "missing field `version`",
    );
    assert_err("", "policy.yaml:", "missing field `version`");
    assert_err(
        &base.replace("name: web", "name: \"\""),
        "policy.yaml:3:11: policies[0].name: ",
        "policy name is empty",
    );
    assert_err(
        &base.replace("    selector: {app: web}\n", ""),
        "policy.yaml:3:5: policies[0]: ",
        "missing field `selector`",
    );
    assert_err(
        &base.replace("selector: {app: web}", "selector:"),
        "policy.yaml:4:14: policies[0].selector: ",
        "write `selector: {}`",
    );
    assert_err(
        &base.replace("- from:", "- to:"),
        "policy.yaml:6:9: ",
        "unknown field `to`",
    );
    let two = format!("{base}  - name: web\n    selector: {{}}\n    egress: []\n");
    assert_err(
        &two,
        "policy.yaml:10:5: policies[1]: ",
        "policy name `web` is already used by policies[0]",
    );
    let idle = format!("{base}  - name: idle\n    selector: {{}}\n");
    assert_err(
        &idle,
        "policy.yaml:10:5: policies[1]: ",
        "neither `ingress` nor `egress`",
    );
    let bare = "version: 1\npolicies:\n  - name: a\n    selector: {}\n    egress:\n";
    assert_err(
        bare,
        "policy.yaml:5:12: policies[0].egress: ",
        "write `egress: []`",
    );
    assert_err(
        "version: 1\npolicy: []\n",
        "policy.yaml:2:1: ",
        "unknown field `policy`",
    );
}

#[test]
fn host_deny_errors() {
    assert_err(
        "version: 1\nhost:\n  denyCIDRs:\n    - 10.0.0.0/8\n    - 10.0.0.0/88\n",
        "policy.yaml:5:7: host.denyCIDRs[1]: ",
        "is not a CIDR",
    );
    assert_err(
        "version: 1\nhost:\n  denyCIDRs:\n    - {cidr: 10.0.0.0/8, except: [192.0.2.0/24]}\n",
        "policy.yaml:4:7: host.denyCIDRs[0]: ",
        "except 192.0.2.0/24 is not inside cidr 10.0.0.0/8",
    );
    assert_err(
        "version: 1\nhost:\n  denyCIDR: []\n",
        "policy.yaml:3:3: host: ",
        "unknown field `denyCIDR`",
    );
}

#[test]
fn yaml_syntax_errors_have_a_position() {
    assert_err(
        &with("{host: true}", "{port: 80"),
        "policy.yaml:10:1: ",
        "did not find expected ',' or '}'",
    );
}

#[test]
fn load_names_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("policy.yaml");
    std::fs::write(&path, EXAMPLE).expect("write");
    let p = PolicyFile::load(&path).expect("valid");
    assert_eq!(p.origin, path.display().to_string());
    std::fs::write(&path, "version: 3\n").expect("write");
    let e = PolicyFile::load(&path)
        .expect_err("bad version")
        .to_string();
    assert!(
        e.starts_with(&format!("{}:1:10: version: ", path.display())),
        "{e}"
    );
    let e = PolicyFile::load(dir.path().join("missing.yaml")).expect_err("missing");
    assert!(matches!(e, PolicyError::Read { .. }), "{e}");
}
