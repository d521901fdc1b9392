//! Agent hot paths (issue #6; results in docs/benchmarks.md):
//!
//! - `ingest/*`: flow-map snapshots folded into the graph by `FlowTracker::poll`,
//!   steady state (edges exist, counters moved) and first sight (every edge new),
//!   and steady state with the baseline taking every poll's deltas.
//!   Throughput is in flow records per second, on one core.
//! - `policy/*`: parsing a policy of 100k rules (one CIDR peer each) and compiling
//!   policies of 1k and 10k such rules.
//!
//! `cargo bench -p enforcer --bench agent`; `cargo xtask bench` runs it too and reads
//! the medians from `target/criterion/*/new/estimates.json`.
use std::{
    hint::black_box,
    time::{Duration, SystemTime},
};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use enforcer::{
    baseline::{Monitor, Settings},
    flows::FlowTracker,
    policy::{self, PolicyFile},
};

mod common;

/// Records per poll in the ingestion benchmarks.
const FLOWS: usize = 10_000;

fn ingest(c: &mut Criterion) {
    let (resolver, _) = common::resolver();
    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Elements(FLOWS as u64));
    for edges in [100usize, 10_000] {
        // Steady state: the tracker already knows every flow and edge; each poll
        // carries one interval's worth of new counters for every flow.
        let mut tracker = FlowTracker::new(100_000, Duration::from_secs(300));
        let mut snap = common::snapshot(FLOWS, edges, 10);
        tracker.poll(snap.clone(), &resolver, common::POLL);
        g.bench_function(format!("steady_{FLOWS}_flows_{edges}_edges"), |b| {
            b.iter_batched(
                || {
                    common::advance(&mut snap);
                    snap.clone()
                },
                |s| black_box(tracker.poll(s, &resolver, common::POLL)),
                BatchSize::LargeInput,
            )
        });
        assert_eq!(tracker.graph.edge_count(), edges);
        // The same, with the baseline taking each poll's deltas as the agent does
        // (within one detection interval: the per-interval judgement, once a minute
        // by default, is not part of a poll).
        let dir = tempfile::tempdir().expect("tempdir");
        let settings = Settings {
            file: Some(dir.path().join("baseline.json")),
            ..Settings::default()
        };
        let mut monitor = Monitor::open(settings, "bench");
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        monitor.on_poll(&tracker.take_deltas(), at);
        g.bench_function(
            format!("steady_{FLOWS}_flows_{edges}_edges_with_baseline"),
            |b| {
                b.iter_batched(
                    || {
                        common::advance(&mut snap);
                        snap.clone()
                    },
                    |s| {
                        let idle = tracker.poll(s, &resolver, common::POLL);
                        monitor.on_poll(&tracker.take_deltas(), at);
                        black_box(idle)
                    },
                    BatchSize::LargeInput,
                )
            },
        );
        // First sight: a fresh tracker, every flow and edge new.
        let first = common::snapshot(FLOWS, edges, 10);
        g.bench_function(format!("new_{FLOWS}_flows_{edges}_edges"), |b| {
            b.iter_batched(
                || {
                    (
                        FlowTracker::new(100_000, Duration::from_secs(300)),
                        first.clone(),
                    )
                },
                |(mut t, s)| {
                    black_box(t.poll(s, &resolver, common::POLL));
                    t
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

fn policy_bench(c: &mut Criterion) {
    let inv = common::inventory();
    let mut g = c.benchmark_group("policy");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(10));
    // Parsing scales linearly: 100k rules is measured directly.
    let yaml = common::policy_yaml(100_000);
    g.throughput(Throughput::Elements(100_000));
    g.bench_function("parse_100k_rules", |b| {
        b.iter(|| black_box(PolicyFile::parse(black_box(&yaml), "bench-100k")))
    });
    // Compiling is O(n log n) (CIDR peers are found by a range query on the sorted
    // CIDR identities): 1k, 10k and 100k rules.
    for rules in [1_000usize, 10_000, 100_000] {
        let pol = PolicyFile::parse(&common::policy_yaml(rules), "bench")
            .expect("generated policy parses");
        let compiled = policy::compile(&pol, &inv).expect("generated policy compiles");
        assert!(compiled.policy.len() > rules, "one entry per rule at least");
        g.throughput(Throughput::Elements(rules as u64));
        g.bench_function(format!("compile_{}k_rules", rules / 1000), |b| {
            b.iter(|| black_box(policy::compile(black_box(&pol), &inv)))
        });
    }
    g.finish();
}

criterion_group!(benches, ingest, policy_bench);
criterion_main!(benches);
