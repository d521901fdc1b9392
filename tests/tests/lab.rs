//! Privileged self-test of the lab, with no agent: real TCP, UDP and ICMP between workloads
//! and to and from an external host, over IPv4 and IPv6; nothing left behind; the machine's
//! own namespace untouched. Needs root: `cargo test -p enforcer-tests --test lab`.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use enforcer_tests::{Lab, LabSpec, netns_exists, ping, tcp_connect, tcp_echo, udp_echo};

const T: Duration = Duration::from_secs(2);

const SPEC: &str = "\
name: selftest
workloads:
  - name: web
    labels: {app: web, env: prod}
    ports: [{port: 80, protocol: tcp}, {port: 53, protocol: udp}]
    mode: enforce
  - name: db
    labels: {app: db, env: prod}
    ports: [{port: 5432}]
  - name: client
    labels: {app: client}
externals:
  - name: outside
    address4: 198.51.100.10/24
    address6: 2001:db8:51::10/64
";

fn spec() -> LabSpec {
    LabSpec::from_yaml(SPEC).expect("self-test spec")
}

/// Interfaces of the machine's own namespace: `ip -o link` names with their state and
/// addresses, so any change the lab made there shows up.
fn root_interfaces() -> BTreeSet<String> {
    let out = |args: &[&str]| {
        let o = Command::new("ip").args(args).output().expect("run ip");
        assert!(o.status.success(), "ip {args:?} failed");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let mut set = BTreeSet::new();
    for line in out(&["-o", "link", "show"]).lines() {
        // "2: eth0: <FLAGS> mtu ..." — the name and flags, not the counters.
        let fields: Vec<&str> = line.split_whitespace().take(3).collect();
        set.insert(fields.join(" "));
    }
    for line in out(&["-o", "address", "show"]).lines() {
        let fields: Vec<&str> = line.split_whitespace().take(4).collect();
        set.insert(fields.join(" "));
    }
    set
}

fn root_sysctl(key: &str) -> String {
    std::fs::read_to_string(format!("/proc/sys/{}", key.replace('.', "/")))
        .expect("read sysctl")
        .trim()
        .to_owned()
}

#[test]
fn workloads_and_external_talk_over_both_families() {
    let lab = Lab::up(&spec()).expect("lab up");
    for name in ["web", "db", "client", "outside"] {
        lab.serve_echo(name, &[7000, 53]).expect("echo servers");
    }
    let pairs = [
        ("client", "web"),
        ("web", "db"),
        ("db", "client"),
        ("client", "outside"),
        ("outside", "web"),
    ];
    for (from, to) in pairs {
        for addr in lab.addrs(to) {
            assert!(ping(&lab, from, addr), "ping {from} -> {to} {addr}");
            assert!(
                tcp_echo(&lab, from, addr, 7000, T),
                "tcp echo {from} -> {to} {addr}"
            );
            assert!(
                udp_echo(&lab, from, addr, 53, T),
                "udp echo {from} -> {to} {addr}"
            );
        }
    }
    // The host namespace reaches everyone (the agent's view).
    for to in ["web", "outside"] {
        for addr in lab.addrs(to) {
            assert!(
                tcp_connect(&lab, "host", addr, 7000, T),
                "host -> {to} {addr}"
            );
        }
    }
    // A port nobody serves: refused at once, not a hang.
    assert!(!tcp_connect(&lab, "client", lab.addr4("web"), 7001, T));
    assert!(!udp_echo(
        &lab,
        "client",
        lab.addr6("web"),
        7001,
        Duration::from_millis(300)
    ));
}

#[test]
fn addresses_names_and_inventory_follow_the_spec() {
    let lab = Lab::up(&spec()).expect("lab up");
    assert_eq!(lab.addr4("web").to_string(), "10.77.0.10");
    assert_eq!(lab.addr6("client").to_string(), "fd00:77::12");
    assert_eq!(lab.host_addr4().to_string(), "10.77.0.1");
    assert_eq!(lab.workload_iface("db"), "lw-db");
    assert_eq!(lab.netns("web"), format!("{}-web", lab.prefix()));
    assert_eq!(lab.netns("outside"), format!("{}-x-outside", lab.prefix()));
    assert_eq!(lab.host_netns(), format!("{}-host", lab.prefix()));

    // Inside a workload: eth0 with both addresses, default routes to the bridge.
    let out = lab
        .cmd("web", "ip")
        .args(["-brief", "address", "show", "dev", "eth0"])
        .output()
        .expect("ip in web");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("10.77.0.10/24") && text.contains("fd00:77::10/64"),
        "{text}"
    );
    assert!(!text.contains("tentative"), "DAD is off in the lab: {text}");
    // Host side: the bridge with lw-web enslaved.
    let out = lab
        .cmd("host", "ip")
        .args(["-o", "link", "show", "master", "br0"])
        .output()
        .expect("ip in host");
    let text = String::from_utf8_lossy(&out.stdout);
    for w in ["lw-web", "lw-db", "lw-client"] {
        assert!(text.contains(&format!(" {w}@")), "{w} on br0: {text}");
    }

    // Forwarding is on in the host namespace only.
    let forwarding = lab.in_netns("host", || {
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").expect("read")
    });
    assert_eq!(forwarding.trim(), "1");

    let dir = std::env::temp_dir().join(format!("{}-inventory.yaml", lab.prefix()));
    lab.write_inventory(&dir).expect("write inventory");
    let inventory = std::fs::read_to_string(&dir).expect("read inventory");
    let _ = std::fs::remove_file(&dir);
    assert!(inventory.starts_with("host:\n  addresses: [10.77.0.1, \"fd00:77::1\"]\n"));
    assert!(inventory.contains(
        "  - name: web\n    labels: {app: web, env: prod}\n    interface: lw-web\n    addresses: [10.77.0.10, \"fd00:77::10\"]\n    mode: enforce\n"
    ));
    assert!(
        !inventory.contains("outside"),
        "externals are not workloads"
    );

    let status = lab.status();
    assert!(status.complete(), "{status}");
    assert!(status.to_string().contains("lw-web"), "{status}");
}

#[test]
fn teardown_removes_everything_and_leaves_the_machine_alone() {
    let before = root_interfaces();
    let forward_before = root_sysctl("net.ipv4.ip_forward");
    let dad_before = root_sysctl("net.ipv6.conf.default.accept_dad");
    let namespaces: Vec<String>;
    let state_dir;
    {
        let lab = Lab::up(&spec()).expect("lab up");
        lab.serve_echo("web", &[7000]).expect("echo");
        let child = lab.spawn("client", &["sleep", "60"]).expect("spawn");
        assert!(child.try_wait().expect("try_wait").is_none());
        namespaces = lab.namespaces().into_iter().map(str::to_owned).collect();
        state_dir = enforcer_tests::LabState::dir(lab.prefix());
        assert_eq!(namespaces.len(), 5);
        assert!(namespaces.iter().all(|n| netns_exists(n)));
        assert!(state_dir.exists());
        assert_eq!(root_interfaces(), before, "lab changed the root namespace");
        assert_eq!(root_sysctl("net.ipv4.ip_forward"), forward_before);
        assert_eq!(root_sysctl("net.ipv6.conf.default.accept_dad"), dad_before);
    }
    for ns in &namespaces {
        assert!(!netns_exists(ns), "{ns} still exists after drop");
    }
    assert!(!state_dir.exists(), "state left behind");
    assert_eq!(root_interfaces(), before, "root namespace changed");
}

#[test]
fn a_panicking_test_still_removes_its_lab() {
    let namespaces = std::sync::Mutex::new(Vec::new());
    let result = std::panic::catch_unwind(|| {
        let lab = Lab::up(&spec()).expect("lab up");
        lab.serve_echo("web", &[7000]).expect("echo");
        if let Ok(mut n) = namespaces.lock() {
            n.extend(lab.namespaces().into_iter().map(str::to_owned));
        }
        panic!("test failure inside a lab");
    });
    assert!(result.is_err());
    let namespaces = namespaces.into_inner().expect("names");
    assert_eq!(namespaces.len(), 5);
    assert!(namespaces.iter().all(|n| !netns_exists(n)));
}

#[test]
fn explicit_down_and_two_labs_at_once() {
    let spec = spec();
    let a = Lab::up(&spec).expect("lab a");
    let b = Lab::up(&spec).expect("lab b");
    assert_ne!(a.prefix(), b.prefix());
    // Same addresses, separate worlds: each lab's client reaches only its own web.
    a.serve_echo("web", &[7000]).expect("echo a");
    assert!(tcp_echo(&a, "client", a.addr4("web"), 7000, T));
    assert!(!tcp_connect(&b, "client", b.addr4("web"), 7000, T));
    b.serve_echo("web", &[7000]).expect("echo b");
    assert!(tcp_echo(
        &b,
        "client",
        IpAddr::from(b.addr6("web")),
        7000,
        T
    ));

    let a_namespaces: Vec<String> = a.namespaces().into_iter().map(str::to_owned).collect();
    a.down().expect("down a");
    assert!(a_namespaces.iter().all(|n| !netns_exists(n)));
    // b is unaffected.
    assert!(tcp_echo(&b, "client", b.addr4("web"), 7000, T));
}

#[test]
fn stale_lab_of_a_dead_process_is_cleaned_up() {
    let lab = Lab::up(&spec()).expect("lab up");
    let prefix = lab.prefix().to_owned();
    let namespaces: Vec<String> = lab.namespaces().into_iter().map(str::to_owned).collect();
    // Pretend the owner died: rewrite the state with an owner that does not run.
    let mut state = enforcer_tests::LabState::read(&prefix)
        .expect("read state")
        .expect("state exists");
    if let Some(owner) = state.owner.as_mut() {
        owner.start_time += 1;
    }
    state.write().expect("write state");
    std::mem::forget(lab);
    // Another test's `Lab::up` may clean it first when tests run in parallel: either way it
    // must be gone afterwards.
    let removed = Lab::cleanup_stale().expect("cleanup");
    assert!(
        removed.contains(&prefix)
            || enforcer_tests::LabState::read(&prefix)
                .expect("read")
                .is_none(),
        "{removed:?}"
    );
    assert!(namespaces.iter().all(|n| !netns_exists(n)));
    assert!(!enforcer_tests::LabState::dir(&prefix).exists());
}

#[test]
fn persistent_lab_survives_drop_until_down_named() {
    let prefix = format!("enf-t{}", std::process::id());
    let lab = Lab::up_named(&spec(), &prefix).expect("named lab");
    let host = lab.host_netns().to_owned();
    drop(lab);
    assert!(netns_exists(&host), "persistent lab removed on drop");
    let status = Lab::status_named(&prefix)
        .expect("status")
        .expect("lab known");
    assert!(status.complete(), "{status}");
    assert!(
        Lab::up_named(&spec(), &prefix).is_err(),
        "second up must not clobber"
    );
    assert!(Lab::down_named(&prefix).expect("down"));
    assert!(!netns_exists(&host));
    assert!(!Lab::down_named(&prefix).expect("down again"), "idempotent");
}
