//! Compiler unit tests: small cases with the exact entries expected.
use std::net::IpAddr;

use super::*;
use crate::policy::{PolicyFile, compiled::IdentitySource};

const INVENTORY: &str = r#"
host: {addresses: [10.77.0.1, "fd77::1"]}
workloads:
  - {name: web, labels: {app: web}, interface: lw-web, addresses: [10.77.0.10, "fd77::10"]}
  - {name: web2, labels: {app: web}, interface: lw-web2, addresses: [10.77.0.11]}
  - {name: db, labels: {app: db}, interface: lw-db, addresses: [10.77.0.20], mode: audit}
  - {name: client, labels: {app: client}, interface: lw-client, addresses: [10.77.0.30]}
"#;

fn inv() -> Inventory {
    Inventory::from_str(INVENTORY, "inv.yaml").expect("inventory")
}

fn build(policy: &str) -> Compiled {
    let p = PolicyFile::parse(policy, "p.yaml").expect("policy");
    compile(&p, &inv()).expect("compiles")
}

fn id_of(c: &Compiled, workload: &str) -> u32 {
    c.endpoints
        .iter()
        .find(|e| e.workload == workload)
        .map(|e| e.identity)
        .expect("workload")
}

fn net(s: &str) -> IpNet {
    s.parse().expect("cidr")
}

#[test]
fn endpoints_identities_and_flags() {
    let c = build(
        "version: 1\npolicies:\n  - {name: a, selector: {app: web}, ingress: []}\n  \
         - {name: b, selector: {app: db}, egress: []}\n",
    );
    assert_eq!(c.endpoints.len(), 4);
    let web = &c.endpoints[0];
    assert_eq!(
        (web.workload.as_str(), web.interface.as_str()),
        ("web", "lw-web")
    );
    assert_eq!(web.flags, FLAG_INGRESS_ENFORCED);
    assert_eq!(
        c.endpoints[1].identity, web.identity,
        "same labels, same identity"
    );
    assert_eq!(c.endpoints[2].flags, FLAG_EGRESS_ENFORCED);
    assert_eq!(c.endpoints[2].mode, enforcer_common::endpoint::MODE_AUDIT);
    assert_eq!(c.endpoints[3].flags, 0);
    // Sorted label sets: client < db < web.
    assert_eq!(id_of(&c, "client"), identity::FIRST_WORKLOAD);
    assert_eq!(id_of(&c, "db"), identity::FIRST_WORKLOAD + 1);
    assert_eq!(id_of(&c, "web"), identity::FIRST_WORKLOAD + 2);
    assert!(c.policy.is_empty(), "deny-all needs no entries");
}

#[test]
fn ipcache_has_workloads_host_and_cidrs() {
    let c = build(concat!(
        "version: 1\npolicies:\n  - name: a\n    selector: {}\n    egress:\n",
        "      - to: [{cidr: 10.0.0.0/8, except: [10.77.0.0/16]}]\n",
    ));
    let map: BTreeMap<IpNet, u32> = c.ipcache.iter().copied().collect();
    assert_eq!(map[&net("10.77.0.10/32")], id_of(&c, "web"));
    assert_eq!(map[&net("fd77::10/128")], id_of(&c, "web"));
    assert_eq!(map[&net("10.77.0.1/32")], identity::HOST);
    assert_eq!(map[&net("fd77::1/128")], identity::HOST);
    assert_eq!(map[&net("10.0.0.0/8")], identity::FIRST_CIDR);
    assert_eq!(map[&net("10.77.0.0/16")], identity::FIRST_CIDR + 1);
    assert_eq!(map.len(), 5 + 2 + 2);
    assert_eq!(
        c.identities[&identity::FIRST_CIDR],
        IdentitySource::Cidr(net("10.0.0.0/8"))
    );
}

#[test]
fn ipv6_default_route_does_not_swallow_ipv4() {
    let c = build(concat!(
        "version: 1\npolicies:\n  - name: a\n    selector: {}\n",
        "    egress: [{to: [{cidr: \"::/0\"}]}]\n",
    ));
    let map: BTreeMap<IpNet, u32> = c.ipcache.iter().copied().collect();
    assert_eq!(map[&net("0.0.0.0/0")], identity::WORLD);
    assert_eq!(map[&net("::/0")], identity::FIRST_CIDR);
}

#[test]
fn policy_entries_for_one_rule() {
    let c = build(concat!(
        "version: 1\npolicies:\n  - name: web-allow\n    selector: {app: web}\n",
        "    ingress:\n      - from: [{selector: {app: client}}, {host: true}]\n",
        "        ports: [{port: 80}, {protocol: icmp}]\n",
    ));
    let web = id_of(&c, "web");
    let client = id_of(&c, "client");
    let dir = enforcer_common::direction::INGRESS;
    let k = |peer, port, proto| PolicyKey {
        subject: web,
        peer,
        port,
        proto,
        dir,
        epoch: 0,
    };
    let allow = PolicyValue {
        action: ALLOW,
        rule: 1,
    };
    let declared = PolicyValue {
        action: DECLARED,
        rule: 1,
    };
    let want: BTreeMap<PolicyKey, PolicyValue> = [
        (k(client, 80, proto::TCP), allow),
        (k(identity::HOST, 80, proto::TCP), allow),
        (k(identity::DECLARED, 80, proto::TCP), declared),
        (k(client, 0, proto::ICMP), allow),
        (k(identity::HOST, 0, proto::ICMP), allow),
        (k(identity::DECLARED, 0, proto::ICMP), declared),
        (k(client, 0, proto::ICMPV6), allow),
        (k(identity::HOST, 0, proto::ICMPV6), allow),
        (k(identity::DECLARED, 0, proto::ICMPV6), declared),
    ]
    .into_iter()
    .collect();
    let got: BTreeMap<PolicyKey, PolicyValue> = c.policy.iter().copied().collect();
    assert_eq!(got, want);
    assert_eq!(
        c.rules,
        vec![RuleInfo {
            id: 1,
            policy: "web-allow".into(),
            direction: "ingress",
            index: 0,
            line: Some(6),
        }]
    );
}

#[test]
fn absent_peers_and_ports_mean_any_and_first_rule_wins() {
    let c = build(concat!(
        "version: 1\npolicies:\n  - name: a\n    selector: {app: db}\n",
        "    egress: [{}, {}]\n",
    ));
    let db = id_of(&c, "db");
    assert_eq!(c.rules.len(), 2);
    // 4 protocols × (ANY + DECLARED), all attributed to rule 1.
    assert_eq!(c.policy.len(), 8);
    for (k, v) in &c.policy {
        assert_eq!(k.subject, db);
        assert_eq!(k.port, 0);
        assert!(k.peer == identity::ANY || k.peer == identity::DECLARED);
        assert_eq!(v.rule, 1);
    }
}

#[test]
fn port_ranges_expand_and_full_range_is_any() {
    let ranges = |s: &str| {
        let text = format!(
            "version: 1\npolicies:\n  - name: a\n    selector: {{app: db}}\n    \
             ingress: [{{ports: [{s}]}}]\n"
        );
        let c = build(&text);
        c.policy
            .iter()
            .filter(|(k, _)| k.peer == identity::ANY)
            .map(|(k, _)| (k.proto, k.port))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ranges("{port: 8000, endPort: 8002}"),
        vec![(proto::TCP, 8000), (proto::TCP, 8001), (proto::TCP, 8002)]
    );
    assert_eq!(
        ranges("{port: 1, endPort: 65535, protocol: UDP}"),
        vec![(proto::UDP, 0)]
    );
    assert_eq!(ranges("{protocol: UDP}"), vec![(proto::UDP, 0)]);
    assert_eq!(ranges("{protocol: ICMPv6}"), vec![(proto::ICMPV6, 0)]);
}

#[test]
fn cidr_peer_allows_cidr_identities_inside_and_outside_excepts() {
    let c = build(concat!(
        "version: 1\npolicies:\n  - name: a\n    selector: {app: db}\n    egress:\n",
        "      - to: [{cidr: 10.0.0.0/8, except: [10.1.0.0/16]}]\n",
        "      - to: [{cidr: 10.1.2.0/24}]\n        ports: [{port: 5432}]\n",
    ));
    // Identities in sorted order: 10.0.0.0/8, 10.1.0.0/16, 10.1.2.0/24.
    let (wide, hole, inner) = (
        identity::FIRST_CIDR,
        identity::FIRST_CIDR + 1,
        identity::FIRST_CIDR + 2,
    );
    let rule1: BTreeSet<u32> = c
        .policy
        .iter()
        .filter(|(_, v)| v.rule == 1 && v.action == ALLOW)
        .map(|(k, _)| k.peer)
        .collect();
    assert_eq!(
        rule1,
        BTreeSet::from([wide]),
        "the except and what is inside it are out"
    );
    let rule2: BTreeSet<u32> = c
        .policy
        .iter()
        .filter(|(_, v)| v.rule == 2 && v.action == ALLOW)
        .map(|(k, _)| k.peer)
        .collect();
    assert_eq!(rule2, BTreeSet::from([inner]));
    assert!(!c.policy.iter().any(|(k, _)| k.peer == hole));
}

#[test]
fn denylist_is_exact_with_overlaps() {
    let p = PolicyFile::parse(
        concat!(
            "version: 1\nhost:\n  denyCIDRs:\n",
            "    - {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}\n",
            "    - 10.1.2.0/24\n",
            "    - {cidr: 10.0.0.0/9, except: [10.0.0.0/16]}\n",
        ),
        "p.yaml",
    )
    .expect("policy");
    let c = compile(&p, &inv()).expect("compiles");
    let got: BTreeMap<IpNet, (u32, u32)> = c
        .denylist
        .iter()
        .map(|(n, d)| (*n, (d.action, d.rule)))
        .collect();
    let want: BTreeMap<IpNet, (u32, u32)> = [
        (net("10.0.0.0/8"), (DENY, 0)),
        // 10.1/16 is a hole in entry 0 but entry 2 (10.0/9) still denies it.
        (net("10.1.0.0/16"), (DENY, 2)),
        (net("10.1.2.0/24"), (DENY, 1)),
        // 10.0/16 is a hole in entry 2 but entry 0 denies it.
        (net("10.0.0.0/9"), (DENY, 0)),
        (net("10.0.0.0/16"), (DENY, 0)),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want);
}

#[test]
fn denylist_except_and_ipv6_default() {
    let p = PolicyFile::parse(
        concat!(
            "version: 1\nhost:\n  denyCIDRs:\n",
            "    - {cidr: \"::/0\", except: [\"fd77::/16\"]}\n",
        ),
        "p.yaml",
    )
    .expect("policy");
    let c = compile(&p, &inv()).expect("compiles");
    let got: BTreeMap<IpNet, u32> = c.denylist.iter().map(|(n, d)| (*n, d.action)).collect();
    let want: BTreeMap<IpNet, u32> = [
        (net("::/0"), DENY),
        (net("fd77::/16"), EXCEPT),
        (net("0.0.0.0/0"), EXCEPT),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want);
}

#[test]
fn capacity_is_guarded() {
    let c = PolicyFile::parse(
        concat!(
            "version: 1\npolicies:\n  - name: a\n    selector: {}\n    ingress:\n",
            "      - from: [{selector: {app: web}}, {selector: {app: db}}]\n",
            "        ports: [{port: 2, endPort: 65535}]\n",
        ),
        "p.yaml",
    )
    .expect("policy");
    let e = compile(&c, &inv()).expect_err("too big");
    let msg = e.to_string();
    assert!(msg.starts_with("ENF_POLICY: the policy needs "), "{msg}");
    assert!(msg.contains("more than the 131072"), "{msg}");
    match e {
        CompileError::Capacity { needed, limit, .. } => {
            // 3 subjects × 65534 ports × (2 peers + marker).
            assert_eq!(needed, 3 * 65534 * 3);
            assert_eq!(limit, 131_072);
        }
        other => panic!("{other}"),
    }
}

#[test]
fn unmatched_policies_are_reported() {
    let p = PolicyFile::parse(
        "version: 1\npolicies:\n  - {name: typo, selector: {app: wbe}, ingress: []}\n",
        "p.yaml",
    )
    .expect("policy");
    assert_eq!(p.unmatched_policies(&inv()), vec!["typo"]);
    let c = compile(&p, &inv()).expect("compiles");
    assert!(c.endpoints.iter().all(|e| e.flags == 0));
}

#[test]
fn addresses_map_to_ipv4_and_ipv6_prefixes() {
    let v4: IpAddr = "10.0.0.1".parse().expect("ip");
    assert_eq!(IpNet::from(v4).prefix_len(), 32);
    assert!(covers_ipv4_mapped(&net("::/0")));
    assert!(covers_ipv4_mapped(&net("::ffff:0:0/96")));
    assert!(!covers_ipv4_mapped(&net("fd00::/8")));
    assert!(!covers_ipv4_mapped(&net("0.0.0.0/0")));
}
