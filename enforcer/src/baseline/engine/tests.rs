use super::*;

const MIN: u64 = 60_000;

fn settings(learning_min: u64) -> Settings {
    Settings {
        learning_secs: learning_min * 60,
        ..Settings::default()
    }
}

fn steady(bytes: u64) -> EdgeSample {
    EdgeSample {
        bytes,
        packets: bytes / 500,
        connections: 3,
        ..EdgeSample::default()
    }
}

fn iv(i: u64, edges: Vec<(EdgeRef, EdgeSample)>) -> Interval {
    Interval {
        start_ms: i * MIN,
        secs: 60.0,
        edges,
        addrs: Vec::new(),
    }
}

/// A little jitter so the deviation is not zero.
fn jitter(i: u64) -> u64 {
    100_000 + (i % 5) * 2000
}

#[test]
fn learning_then_new_edge_and_new_port_deduplicated() {
    let mut e = Engine::new(&settings(10));
    let ab = EdgeRef::new("a", "b", 6, 80);
    for i in 0..10 {
        assert!(
            e.observe(&iv(i, vec![(ab.clone(), steady(jitter(i)))]))
                .is_empty()
        );
    }
    assert!(!e.learning(10 * MIN));
    // a → b on two new ports in one interval: one new_port alert; a → c: new_edge.
    let out = e.observe(&iv(
        10,
        vec![
            (ab.clone(), steady(jitter(10))),
            (EdgeRef::new("a", "b", 6, 81), steady(1000)),
            (EdgeRef::new("a", "b", 17, 53), steady(1000)),
            (EdgeRef::new("a", "c", 6, 80), steady(1000)),
        ],
    ));
    let kinds: Vec<(AlertKind, f64)> = out.iter().map(|a| (a.kind, a.observed)).collect();
    assert_eq!(
        kinds,
        vec![(AlertKind::NewEdge, 1.0), (AlertKind::NewPort, 2.0)],
        "{out:#?}"
    );
    assert!(out[1].summary.contains("UDP/53"), "{}", out[1].summary);
    assert_eq!(out[0].workloads, vec!["a".to_string(), "c".to_string()]);
    // Known now: no second alert; resolved after the hold time (5 min).
    let mut resolved = Vec::new();
    for i in 11..20 {
        let edges = vec![
            (ab.clone(), steady(jitter(i))),
            (EdgeRef::new("a", "c", 6, 80), steady(1000)),
        ];
        for a in e.observe(&iv(i, edges)) {
            assert_eq!(a.state, AlertState::Resolved, "{a:?}");
            resolved.push(a);
        }
    }
    assert_eq!(resolved.len(), 2);
    assert_eq!(resolved[0].end_ms, Some(16 * MIN));
}

#[test]
fn world_prefixes_on_a_known_port_are_not_new() {
    let mut e = Engine::new(&settings(5));
    let w1 = EdgeRef::new("a", "world:192.0.2.0/24", 6, 443);
    for i in 0..5 {
        e.observe(&iv(i, vec![(w1.clone(), steady(10_000))]));
    }
    let w2 = EdgeRef::new("a", "world:198.51.100.0/24", 6, 443);
    assert!(e.observe(&iv(5, vec![(w2, steady(10_000))])).is_empty());
    let w3 = EdgeRef::new("a", "world:198.51.100.0/24", 6, 22);
    let out = e.observe(&iv(6, vec![(w3, steady(10_000))]));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].kind, AlertKind::NewPort);
}

#[test]
fn spike_needs_k_intervals_and_clears_with_hysteresis() {
    let mut e = Engine::new(&settings(30));
    let ab = EdgeRef::new("a", "b", 6, 80);
    let mut i = 0;
    while i < 60 {
        assert!(
            e.observe(&iv(i, vec![(ab.clone(), steady(jitter(i)))]))
                .is_empty()
        );
        i += 1;
    }
    // One interval ×10: nothing yet (k = 2); the second fires.
    assert!(
        e.observe(&iv(i, vec![(ab.clone(), steady(1_000_000))]))
            .is_empty()
    );
    let out = e.observe(&iv(i + 1, vec![(ab.clone(), steady(2_000_000))]));
    let spikes: Vec<&Alert> = out.iter().filter(|a| a.edge.is_some()).collect();
    assert_eq!(spikes.len(), 1, "{out:#?}");
    let a = spikes[0];
    assert_eq!((a.kind, a.severity), (AlertKind::Spike, Severity::Critical));
    assert_eq!(a.start_ms, i * MIN);
    assert_eq!(a.detected_ms, (i + 2) * MIN);
    // The workload totals spiked too, but the edge alert explains them.
    assert!(out.iter().all(|a| a.edge.is_some()), "{out:#?}");
    // Back to normal: resolved after 3 calm intervals, with the peak observed.
    let mut end = None;
    for j in i + 2..i + 8 {
        for a in e.observe(&iv(j, vec![(ab.clone(), steady(jitter(j)))])) {
            assert_eq!(a.state, AlertState::Resolved);
            end = Some((j, a));
        }
    }
    let (j, a) = end.expect("resolved");
    assert_eq!(j, i + 4);
    assert!(a.observed > 30_000.0, "peak kept: {}", a.observed);
}

#[test]
fn a_dip_between_the_thresholds_does_not_restart_a_spike() {
    let mut e = Engine::new(&settings(30));
    let ab = EdgeRef::new("a", "b", 6, 80);
    for i in 0..60 {
        e.observe(&iv(i, vec![(ab.clone(), steady(10 * jitter(i)))]));
    }
    // x10, then x1.45 (under spikePoolZ and spikeMinRatio, over clearZ), then x10:
    // the second interval beyond the threshold fires, with the run's start.
    let mut fired = Vec::new();
    for (i, bytes) in [(60, 10_000_000), (61, 1_450_000), (62, 10_000_000)] {
        let out = e.observe(&iv(i, vec![(ab.clone(), steady(bytes))]));
        fired.extend(out.into_iter().filter(|a| a.edge.is_some()).map(|a| (i, a)));
    }
    assert_eq!(fired.len(), 1, "{fired:#?}");
    let (i, a) = &fired[0];
    assert_eq!((*i, a.kind), (62, AlertKind::Spike));
    assert_eq!(a.start_ms, 60 * MIN);
    // x10 then x1.8 (elevated: z over spikePoolZ): the evidence of the two is
    // pooled, and the second fires.
    let ef = EdgeRef::new("e", "f", 6, 80);
    let mut e = Engine::new(&settings(30));
    for i in 0..60 {
        e.observe(&iv(i, vec![(ef.clone(), steady(10 * jitter(i)))]));
    }
    let mut fired = Vec::new();
    for (i, bytes) in [(60, 10_000_000), (61, 1_800_000)] {
        let out = e.observe(&iv(i, vec![(ef.clone(), steady(bytes))]));
        fired.extend(out.into_iter().filter(|a| a.edge.is_some()).map(|a| (i, a)));
    }
    assert_eq!(fired.len(), 1, "{fired:#?}");
    assert_eq!((fired[0].0, fired[0].1.start_ms), (61, 60 * MIN));
    // x1.8 (elevated, not beyond: under spikeMinRatio) then x3: pooled from the
    // first, which no trigger was watching yet; fires at the second.
    let gh = EdgeRef::new("g", "h", 6, 80);
    let mut e = Engine::new(&settings(30));
    for i in 0..60 {
        e.observe(&iv(i, vec![(gh.clone(), steady(10 * jitter(i)))]));
    }
    let mut fired = Vec::new();
    for (i, bytes) in [(60, 1_850_000), (61, 3_100_000)] {
        let out = e.observe(&iv(i, vec![(gh.clone(), steady(bytes))]));
        fired.extend(out.into_iter().filter(|a| a.edge.is_some()).map(|a| (i, a)));
    }
    assert_eq!(fired.len(), 1, "{fired:#?}");
    assert_eq!((fired[0].0, fired[0].1.start_ms), (61, 60 * MIN));
    // A calm interval ends the run: x10, normal, x10 does not fire.
    let cd = EdgeRef::new("c", "d", 6, 80);
    let mut e = Engine::new(&settings(30));
    for i in 0..60 {
        e.observe(&iv(i, vec![(cd.clone(), steady(jitter(i)))]));
    }
    for (i, bytes) in [(60, 1_000_000), (61, jitter(61)), (62, 1_000_000)] {
        let out = e.observe(&iv(i, vec![(cd.clone(), steady(bytes))]));
        assert!(out.iter().all(|a| a.edge.is_none()), "{out:#?}");
    }
}

#[test]
fn a_busy_edge_going_silent_fires_after_three_intervals() {
    let mut e = Engine::new(&settings(30));
    let ab = EdgeRef::new("a", "b", 6, 80);
    for i in 0..60 {
        e.observe(&iv(i, vec![(ab.clone(), steady(jitter(i)))]));
    }
    let mut fired = Vec::new();
    for i in 60..66 {
        fired.extend(e.observe(&iv(i, vec![])).into_iter().map(|a| (i, a)));
    }
    assert_eq!(fired.len(), 1, "{fired:#?}");
    let (i, a) = &fired[0];
    assert_eq!((*i, a.kind), (62, AlertKind::Silence));
    assert_eq!(a.start_ms, 60 * MIN);
    assert!(a.expected > 3.0 && a.observed == 0.0, "{a:?}");
}

#[test]
fn with_a_short_learning_period_an_edge_learnt_in_it_can_go_silent() {
    // A lab: 1 s intervals, 20 s of learning, far shorter than silenceMinAgeSecs.
    let mut e = Engine::new(&Settings {
        interval_secs: 1,
        learning_secs: 20,
        ..Settings::default()
    });
    let ab = EdgeRef::new("a", "b", 6, 80);
    let second = |i: u64, edges| Interval {
        start_ms: i * 1000,
        secs: 1.0,
        edges,
        addrs: Vec::new(),
    };
    for i in 0..40 {
        let s = EdgeSample {
            bytes: 20_000 + (i % 3) * 500,
            packets: 40 + i % 3,
            connections: 1,
            ..EdgeSample::default()
        };
        assert!(e.observe(&second(i, vec![(ab.clone(), s)])).is_empty());
    }
    let mut fired = Vec::new();
    for i in 40..46 {
        fired.extend(e.observe(&second(i, vec![])).into_iter().map(|a| (i, a)));
    }
    let silences: Vec<_> = fired
        .iter()
        .filter(|(_, a)| a.kind == AlertKind::Silence && a.edge.is_some())
        .collect();
    assert_eq!(silences.len(), 1, "{fired:#?}");
    assert_eq!(silences[0].0, 42);
}

#[test]
fn a_short_lived_edge_that_stops_is_not_a_silence() {
    // 40 busy minutes then nothing, at the default settings (60 s intervals, an
    // hour of activity needed; an hour of learning): not once its first sight is
    // an hour old either (it fired then, 20 minutes late, as if it had just
    // stopped).
    let mut e = Engine::new(&settings(60));
    let ab = EdgeRef::new("a", "b", 6, 80);
    let cd = EdgeRef::new("c", "d", 6, 80);
    for i in 0..120 {
        let mut edges = vec![(cd.clone(), steady(jitter(i)))];
        if i < 40 {
            edges.push((ab.clone(), steady(jitter(i))));
        }
        let out = e.observe(&iv(i, edges));
        assert!(
            out.iter().all(|a| a.kind != AlertKind::Silence),
            "{i}: {out:#?}"
        );
    }
}

#[test]
fn a_sweep_of_one_outside_prefix_counts_its_addresses() {
    // "api" calls one outside /24 on 443 while learning, then sweeps 60 of its
    // addresses on 443 in one minute: one graph edge, 60 peers.
    let mut e = Engine::new(&settings(10));
    let out = EdgeRef::new("api", "world:198.51.100.0/24", 6, 443);
    let call = EdgeSample {
        bytes: 60_000,
        packets: 60,
        connections: 2,
        ..EdgeSample::default()
    };
    let one: std::net::IpAddr = "198.51.100.7".parse().expect("addr");
    for i in 0..20 {
        let mut v = iv(i, vec![(out.clone(), call.clone())]);
        v.addrs = vec![(out.clone(), one)];
        e.observe(&v);
    }
    let mut v = iv(20, vec![(out.clone(), call.clone())]);
    v.addrs = (1..=60u8)
        .map(|h| (out.clone(), std::net::IpAddr::from([198, 51, 100, h])))
        .collect();
    let fired = e.observe(&v);
    let fan: Vec<_> = fired
        .iter()
        .filter(|a| a.kind == AlertKind::FanOut)
        .collect();
    assert_eq!(fan.len(), 1, "{fired:#?}");
    assert_eq!(fan[0].source.as_deref(), Some("api"));
    assert_eq!(fan[0].observed, 60.0);
    // Without the addresses (a flow log's replay) it is one peer: nothing.
    let mut e = Engine::new(&settings(10));
    for i in 0..21 {
        let out = e.observe(&iv(i, vec![(out.clone(), call.clone())]));
        assert!(out.iter().all(|a| a.kind != AlertKind::FanOut));
    }
}

#[test]
fn a_retry_storm_of_a_few_denies_per_second_is_a_deny_burst_at_1_s_intervals() {
    let mut e = Engine::new(&Settings {
        interval_secs: 1,
        learning_secs: 30,
        ..Settings::default()
    });
    let ab = EdgeRef::new("a", "b", 6, 80);
    let second = |i: u64, denied: u64| Interval {
        start_ms: i * 1000,
        secs: 1.0,
        edges: vec![(
            ab.clone(),
            EdgeSample {
                bytes: 20_000 + (i % 3) * 500,
                packets: 40 + i % 3 + denied,
                connections: 1,
                denied_packets: denied,
                denied_connections: denied,
            },
        )],
        addrs: Vec::new(),
    };
    for i in 0..60 {
        assert!(e.observe(&second(i, 0)).is_empty());
    }
    // 5 denied packets/s where none are usual: fires in its first interval.
    let out = e.observe(&second(60, 5));
    let burst: Vec<_> = out
        .iter()
        .filter(|a| a.kind == AlertKind::DenyBurst)
        .collect();
    assert_eq!(burst.len(), 1, "{out:#?}");
    assert_eq!(burst[0].workloads, vec!["a".to_owned()]);
    // A few stray denies are not a burst (over denyMinPerSec, but z under 4).
    for stray in [1, 2, 4] {
        let mut e2 = Engine::new(&Settings {
            interval_secs: 1,
            learning_secs: 30,
            ..Settings::default()
        });
        for i in 0..60 {
            e2.observe(&second(i, 0));
        }
        let out = e2.observe(&second(60, stray));
        assert!(
            out.iter().all(|a| a.kind != AlertKind::DenyBurst),
            "{out:#?}"
        );
    }
}

#[test]
fn deny_burst_and_scan_are_per_workload_and_per_source() {
    let mut e = Engine::new(&settings(30));
    let ab = EdgeRef::new("a", "b", 6, 80);
    for i in 0..40 {
        e.observe(&iv(i, vec![(ab.clone(), steady(jitter(i)))]));
    }
    let mut edges = vec![(ab.clone(), steady(jitter(40)))];
    for port in 1000..1200 {
        edges.push((
            EdgeRef::new("a", "b", 6, port),
            EdgeSample {
                bytes: 60,
                packets: 1,
                denied_packets: 1,
                denied_connections: 1,
                ..EdgeSample::default()
            },
        ));
    }
    let out = e.observe(&iv(40, edges));
    let kinds: Vec<AlertKind> = out.iter().map(|a| a.kind).collect();
    assert_eq!(
        kinds,
        vec![AlertKind::DenyBurst, AlertKind::FanOut],
        "{out:#?}"
    );
    assert_eq!(out[1].source.as_deref(), Some("a"));
    // 200 scanned ports and the usual port 80 (it opened connections too).
    assert_eq!(out[1].observed, 201.0);
    assert_eq!(out[0].workloads, vec!["a".to_string()]);
    // The scanned ports were not learnt as edges.
    assert_eq!(e.edge_count(), 1);
    assert_eq!(e.stats.new_edges_suppressed, 200);
}

#[test]
fn edges_are_capped_and_memory_per_edge_is_bounded() {
    let s = Settings {
        max_edges: 100,
        learning_secs: 3 * 3600,
        ..Settings::default()
    };
    let mut e = Engine::new(&s);
    // 100 steady edges for two hours (profiles allocated), then 50 more.
    let edges: Vec<EdgeRef> = (0..100)
        .map(|k| EdgeRef::new(&format!("w{k}"), "db", 6, 5432))
        .collect();
    for i in 0..120 {
        e.observe(&iv(
            i,
            edges
                .iter()
                .map(|x| (x.clone(), steady(jitter(i))))
                .collect(),
        ));
    }
    let per_edge = e.memory().edges / e.edge_count();
    println!("memory per edge with profiles: {per_edge} bytes");
    let file = serde_json::to_vec(&e.to_file(0)).expect("json");
    println!(
        "baseline file per edge: {} bytes",
        file.len() / e.edge_count()
    );
    assert!(per_edge < 3600, "{per_edge} bytes per edge");
    let more: Vec<(EdgeRef, EdgeSample)> = (0..50)
        .map(|k| (EdgeRef::new("x", &format!("y{k}"), 6, 80), steady(1000)))
        .collect();
    e.observe(&iv(120, more));
    assert_eq!(e.edge_count(), 100);
    assert_eq!(e.stats.edges_evicted, 50);
}

#[test]
fn reset_forgets_and_resolves() {
    let mut e = Engine::new(&settings(1));
    let ab = EdgeRef::new("a", "b", 6, 80);
    e.observe(&iv(0, vec![(ab.clone(), steady(1000))]));
    let out = e.observe(&iv(1, vec![(EdgeRef::new("a", "c", 6, 80), steady(1000))]));
    assert_eq!(out.len(), 1);
    let gone = e.reset(2 * MIN);
    assert_eq!(gone.len(), 1);
    assert_eq!(gone[0].state, AlertState::Resolved);
    assert_eq!(e.edge_count(), 0);
    assert!(e.learning(3 * MIN));
}

#[test]
fn memory_of_a_short_lived_edge_is_small() {
    let mut e = Engine::new(&settings(1));
    let edges: Vec<(EdgeRef, EdgeSample)> = (0..100)
        .map(|k| {
            (
                EdgeRef::new("client", &format!("world:10.{k}.0.0/24"), 6, 443),
                steady(1000),
            )
        })
        .collect();
    e.observe(&iv(0, edges));
    let per_edge = e.memory().edges / e.edge_count();
    println!("memory per edge without profiles: {per_edge} bytes");
    assert!(per_edge < 600, "{per_edge}");
}
