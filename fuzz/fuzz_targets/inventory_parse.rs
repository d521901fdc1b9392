//! Inventory files: any bytes give an inventory or a located error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = enforcer::inventory::Inventory::from_str(text, "fuzz.yaml");
    }
});
