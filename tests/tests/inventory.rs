//! The lab's inventory is what the agent reads: the demo lab's inventory parses with the
//! agent's own parser and says what the spec says. No root needed.

use std::net::IpAddr;
use std::path::Path;

use enforcer::inventory::{Inventory, Mode};
use enforcer_tests::LabSpec;
use enforcer_tests::lab::inventory::for_spec;

#[test]
fn demo_lab_inventory_parses_with_the_agents_parser() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/lab/demo.yaml");
    let spec = LabSpec::load(&demo).expect("deploy/lab/demo.yaml");
    let text = for_spec(&spec);
    let inventory =
        Inventory::from_str(&text, "demo lab").unwrap_or_else(|e| panic!("{e}\n{text}"));
    let host: Vec<IpAddr> = vec![spec.host_addr4().into(), spec.host_addr6().into()];
    assert_eq!(inventory.host.addresses, host);
    assert_eq!(inventory.workloads.len(), spec.workloads.len());
    for (i, (w, s)) in inventory.workloads.iter().zip(&spec.workloads).enumerate() {
        assert_eq!(w.name, s.name.as_str());
        assert_eq!(w.labels, s.labels);
        assert_eq!(w.interface, format!("lw-{}", s.name));
        let addrs: Vec<IpAddr> = vec![spec.workload_addr4(i).into(), spec.workload_addr6(i).into()];
        assert_eq!(w.addresses, addrs);
        let mode = s.mode.as_deref().unwrap_or("enforce");
        assert_eq!(w.mode.as_str(), mode);
    }
    assert!(inventory.workloads.iter().any(|w| w.mode == Mode::Enforce));
}
