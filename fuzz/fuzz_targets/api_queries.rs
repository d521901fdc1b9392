//! API request bodies and graph filters from clients: refused cleanly, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<enforcer::api::ApplyRequest>(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let q = enforcer::api::GraphQuery {
            label: Some(text.to_owned()),
            verdict: Some(text.to_owned()),
            ..Default::default()
        };
        let g = enforcer::graph::GraphView {
            generated_at: String::new(),
            nodes: vec![],
            edges: vec![],
            edges_dropped: 0,
        };
        let _ = enforcer::api::filter_graph(g, &q);
    }
});
