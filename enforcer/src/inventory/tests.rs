//! Inventory parsing: the documented example and one test per error.
use super::*;

const GOOD: &str = r#"
host:
  addresses: [10.77.0.1, "fd77::1"]
workloads:
  - name: web
    labels: {app: web, env: prod}
    interface: lw-web
    addresses: [10.77.0.10, "fd77::10"]
  - name: db
    labels:
      app: db
      example.com/tier: "1"
    interface: lw-db
    addresses: [10.77.0.20]
    mode: audit
"#;

fn err(text: &str) -> String {
    match Inventory::from_str(text, "inv.yaml") {
        Ok(i) => panic!("accepted: {i:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn parses_the_documented_example() {
    let inv = Inventory::from_str(GOOD, "inv.yaml").expect("valid");
    assert_eq!(inv.host.addresses.len(), 2);
    assert_eq!(inv.workloads.len(), 2);
    let web = &inv.workloads[0];
    assert_eq!(web.name, "web");
    assert_eq!(web.interface, "lw-web");
    assert_eq!(web.mode, Mode::Enforce);
    assert_eq!(web.labels.get("env").map(String::as_str), Some("prod"));
    let db = &inv.workloads[1];
    assert_eq!(db.mode, Mode::Audit);
    assert_eq!(
        db.labels.get("example.com/tier").map(String::as_str),
        Some("1")
    );
    let ip: IpAddr = "fd77::10".parse().expect("ip");
    assert_eq!(
        inv.workload_by_address(ip).map(|w| w.name.as_str()),
        Some("web")
    );
}

#[test]
fn empty_inventory_is_valid() {
    let inv = Inventory::from_str("", "inv.yaml").expect("valid");
    assert!(inv.workloads.is_empty());
    let inv = Inventory::from_str("workloads: []\n", "inv.yaml").expect("valid");
    assert!(inv.workloads.is_empty());
}

#[test]
fn unquoted_numbers_are_label_values() {
    let inv = Inventory::from_str(
        "workloads:\n  - {name: a, interface: a0, labels: {tier: 1, on: true}}\n",
        "inv.yaml",
    )
    .expect("valid");
    assert_eq!(inv.workloads[0].labels["tier"], "1");
    assert_eq!(inv.workloads[0].labels["on"], "true");
}

#[test]
fn duplicate_workload_name() {
    let e = err("workloads:\n  - {name: a, interface: a0}\n  - {name: a, interface: a1}\n");
    assert!(e.starts_with("inv.yaml:3:5: workloads[1]: "), "{e}");
    assert!(
        e.contains("workload name `a` is already used by workloads[0]"),
        "{e}"
    );
}

#[test]
fn duplicate_interface() {
    let e = err("workloads:\n  - {name: a, interface: a0}\n  - {name: b, interface: a0}\n");
    assert!(e.starts_with("inv.yaml:3:5:"), "{e}");
    assert!(e.contains("interface `a0`"), "{e}");
}

#[test]
fn duplicate_address_across_workloads() {
    let e = err(concat!(
        "workloads:\n",
        "  - {name: a, interface: a0, addresses: [10.0.0.1]}\n",
        "  - name: b\n",
        "    interface: b0\n",
        "    addresses: [10.0.0.2, 10.0.0.1]\n",
    ));
    assert!(e.starts_with("inv.yaml:3:5: workloads[1]: "), "{e}");
    assert!(
        e.contains("address 10.0.0.1 of workload `b` is already an address of workload `a`"),
        "{e}"
    );
}

#[test]
fn address_shared_by_host_and_workload_either_order() {
    let e = err(concat!(
        "workloads:\n",
        "  - {name: a, interface: a0, addresses: [\"fd00::1\"]}\n",
        "host:\n",
        "  addresses: [\"fd00::1\"]\n",
    ));
    assert!(e.starts_with("inv.yaml:4:3: host: "), "{e}");
    assert!(e.contains("already an address of workload `a`"), "{e}");
    let e = err(concat!(
        "host: {addresses: [10.0.0.1]}\n",
        "workloads:\n",
        "  - {name: a, interface: a0, addresses: [10.0.0.1]}\n",
    ));
    assert!(e.contains(":3:5:"), "{e}");
    assert!(e.contains("already an address of the host"), "{e}");
}

#[test]
fn bad_interface_name() {
    let e = err("workloads:\n  - name: a\n    interface: this-name-is-too-long\n");
    assert!(
        e.starts_with("inv.yaml:3:16: workloads[0].interface: "),
        "{e}"
    );
    assert!(e.contains("at most 15"), "{e}");
    let e = err("workloads:\n  - {name: a, interface: \"a/b\"}\n");
    assert!(e.contains("cannot contain"), "{e}");
}

#[test]
fn bad_labels() {
    let e = err("workloads:\n  - name: a\n    interface: a0\n    labels: {-app: x}\n");
    assert!(e.starts_with("inv.yaml:4:14: workloads[0].labels: "), "{e}");
    assert!(e.contains("label key `-app`"), "{e}");
    let e = err("workloads:\n  - name: a\n    interface: a0\n    labels: {app: \"a b\"}\n");
    assert!(e.contains("inv.yaml:4:19:"), "{e}");
    assert!(e.contains("value `a b`"), "{e}");
    let e = err("workloads:\n  - name: a\n    interface: a0\n    labels: {Bad.Prefix/x: y}\n");
    assert!(e.contains("DNS subdomain"), "{e}");
    let long = "x".repeat(64);
    let e = err(&format!(
        "workloads:\n  - name: a\n    interface: a0\n    labels: {{app: {long}}}\n"
    ));
    assert!(e.contains("1 to 63"), "{e}");
}

#[test]
fn bad_addresses() {
    let e = err("workloads:\n  - {name: a, interface: a0, addresses: [10.0.0.300]}\n");
    assert!(
        e.starts_with("inv.yaml:2:42: workloads[0].addresses[0]: "),
        "{e}"
    );
    assert!(e.contains("`10.0.0.300` is not an IP address"), "{e}");
    let e = err("host: {addresses: [\"::ffff:10.0.0.1\"]}\n");
    assert!(e.contains("write it as 10.0.0.1"), "{e}");
    let e = err("host: {addresses: [0.0.0.0]}\n");
    assert!(e.contains("not a unicast address"), "{e}");
    let e = err("host: {addresses: [10.0.0.0/8]}\n");
    assert!(e.contains("without a prefix length"), "{e}");
}

#[test]
fn unknown_fields_and_bad_mode() {
    let e = err("workloads:\n  - {name: a, interface: a0, labes: {}}\n");
    assert!(
        e.starts_with("inv.yaml:2:30: workloads[0]: unknown field `labes`"),
        "{e}"
    );
    assert!(e.contains("unknown field `labes`"), "{e}");
    let e = err("hosts: {}\n");
    assert!(e.starts_with("inv.yaml:1:1: unknown field `hosts`"), "{e}");
    let e = err("workloads:\n  - {name: a, interface: a0, mode: strict}\n");
    assert!(e.contains("unknown mode `strict`"), "{e}");
    let e = err("workloads:\n  - {interface: a0}\n");
    assert!(e.contains("missing field `name`"), "{e}");
}

#[test]
fn syntax_error_has_a_position() {
    let e = err("workloads:\n  - {name: a\n");
    assert!(e.starts_with("inv.yaml:"), "{e}");
    assert!(!e.starts_with("inv.yaml: "), "no position: {e}");
}

#[test]
fn load_reads_a_file_and_names_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("inventory.yaml");
    std::fs::write(&path, GOOD).expect("write");
    let inv = Inventory::load(&path).expect("valid");
    assert_eq!(inv.origin, path.display().to_string());
    let missing = dir.path().join("nope.yaml");
    let e = Inventory::load(&missing).expect_err("missing file");
    assert!(e.to_string().contains("nope.yaml: cannot read"), "{e}");
}
