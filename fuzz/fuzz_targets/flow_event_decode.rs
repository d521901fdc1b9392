//! Ring-buffer records from the kernel: any bytes decode or are refused.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = enforcer_common::flow::FlowEvent::decode(data);
});
