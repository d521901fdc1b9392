//! The CLI without an agent and without root: clear messages and exit codes.
use std::process::Command;

fn enforcer() -> Command {
    Command::new(env!("CARGO_BIN_EXE_enforcer"))
}

#[test]
fn commands_say_when_the_agent_is_not_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("none.sock");
    for args in [
        vec!["status"],
        vec!["graph", "--output", "json"],
        vec!["flows"],
    ] {
        let out = enforcer()
            .arg("--socket")
            .arg(&sock)
            .args(&args)
            .output()
            .expect("run enforcer");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {err}");
        assert!(err.contains("not running"), "{args:?}: {err}");
        assert!(err.contains("none.sock"), "{args:?}: {err}");
    }
}

#[test]
fn policy_check_reports_file_line_and_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("p.yaml");
    std::fs::write(
        &p,
        "version: 1\npolicies:\n  - name: a\n    selector: {app: a}\n    ingress:\n      - ports: [{port: 70000}]\n",
    )
    .expect("write");
    let out = enforcer()
        .args(["policy", "check"])
        .arg(&p)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("p.yaml:6"), "{err}");
    assert!(err.contains("port"), "{err}");

    std::fs::write(&p, "version: 1\npolicies: []\n").expect("write");
    let out = enforcer()
        .args(["policy", "check", "--output", "json"])
        .arg(&p)
        .output()
        .expect("run");
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["valid"], true);
}

#[test]
fn bad_instance_names_are_refused() {
    let out = enforcer()
        .args(["--instance", "../etc", "status"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
}
