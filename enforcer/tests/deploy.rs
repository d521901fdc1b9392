//! The files shipped in deploy/ parse with the agent's own parsers: the Kubernetes
//! ConfigMap's embedded agent config and policy, and the demo lab policy.
use std::path::Path;

use enforcer::{config::ConfigFile, policy::PolicyFile};

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn configmap_policy_and_agent_config_are_valid() {
    let text = std::fs::read_to_string(root().join("deploy/kubernetes/configmap.yaml"))
        .expect("read configmap");
    let cm: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("configmap YAML");
    let data = &cm["data"];
    let policy = data["policy.yaml"].as_str().expect("data.policy.yaml");
    PolicyFile::parse(policy, "configmap:policy.yaml").expect("ConfigMap policy parses");
    let agent = data["agent.yaml"].as_str().expect("data.agent.yaml");
    let cfg: ConfigFile = serde_yaml_ng::from_str(agent).expect("ConfigMap agent config parses");
    assert!(cfg.policy.is_some() && cfg.inventory.is_some());
}

#[test]
fn demo_policy_is_valid() {
    PolicyFile::load(root().join("deploy/lab/demo-policy.yaml")).expect("demo policy");
}
