//! Bytes the agent keeps per tracked flow and per graph edge (issue #6), measured by
//! counting live heap bytes around `FlowTracker::poll`: no timing, one JSON object
//! on stdout (and in `$ENFORCER_BENCH_MEMORY_OUT` when set, for `cargo xtask bench`).
//!
//! - N flows on N edges: every flow its own edge → (flow + edge) bytes each.
//! - N flows on 1 edge: → flow bytes each (the one edge is noise).
//! - per edge = the difference.
//!
//! Hash tables grow in powers of two, so per-entry figures depend on where N falls
//! between two growths; they are given for N = 10k and 100k.
use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicIsize, Ordering},
    time::Duration,
};

use enforcer::flows::FlowTracker;

mod common;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Live bytes a tracker holds after polling `flows` flows on `edges` edges twice.
fn tracker_bytes(flows: usize, edges: usize) -> (isize, usize, usize) {
    let (resolver, _) = common::resolver();
    let mut snap = common::snapshot(flows, edges, 10);
    let before = live();
    let mut t = FlowTracker::new(flows.max(edges) * 2, Duration::from_secs(300));
    // Two polls: the second is the steady state (previous snapshot kept, rates set).
    drop(t.poll(snap.clone(), &resolver, common::POLL));
    common::advance(&mut snap);
    // The clone is moved into poll and freed there; `snap` was live before too.
    drop(t.poll(snap.clone(), &resolver, common::POLL));
    let held = live() - before;
    let out = (held, t.tracked(), t.graph.edge_count());
    drop(t);
    drop(snap);
    out
}

fn main() {
    // `cargo bench` passes `--bench` and filters: ignore them.
    let mut rows = Vec::new();
    for n in [10_000usize, 100_000] {
        let (both, flows, edges) = tracker_bytes(n, n);
        let (flow_only, flows1, edges1) = tracker_bytes(n, 1);
        assert_eq!((flows, edges, flows1, edges1), (n, n, n, 1));
        let per_flow = flow_only as f64 / n as f64;
        let per_edge = (both - flow_only) as f64 / (n - 1) as f64;
        rows.push(format!(
            "{{\"n\": {n}, \"bytes_flows_and_edges\": {both}, \"bytes_flows_one_edge\": {flow_only}, \
             \"bytes_per_flow\": {per_flow:.1}, \"bytes_per_edge\": {per_edge:.1}}}"
        ));
        eprintln!(
            "memory: {n} flows on {n} edges hold {both} B; on 1 edge {flow_only} B → \
             {per_flow:.0} B per tracked flow, {per_edge:.0} B per edge"
        );
    }
    let json = format!("{{\"memory\": [{}]}}", rows.join(", "));
    println!("{json}");
    if let Some(path) = std::env::var_os("ENFORCER_BENCH_MEMORY_OUT") {
        std::fs::write(&path, format!("{json}\n")).expect("write ENFORCER_BENCH_MEMORY_OUT");
    }
}
