//! Policy files: any bytes must give a policy or a located error, never a panic;
//! a policy that parses must compile (or fail with a capacity error) against an
//! inventory.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(p) = enforcer::policy::PolicyFile::parse(text, "fuzz.yaml") {
        let inv = enforcer::inventory::Inventory::from_str(
            "host: {addresses: [10.0.0.1]}\nworkloads:\n  - {name: a, labels: {app: a}, interface: lw-a, addresses: [10.0.0.2, 'fd00::2']}\n",
            "inv.yaml",
        )
        .expect("fixed inventory");
        let _ = enforcer::policy::compile(&p, &inv);
    }
});
