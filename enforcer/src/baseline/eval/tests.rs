//! The targets, asserted on a smaller seeded run (CI checks them; the full
//! table in docs/baseline.md comes from `enforcer baseline eval`).
use super::*;

fn small() -> Spec {
    Spec {
        seed: 7,
        edges: 30,
        days: 10,
        learning_days: 7,
        interval_secs: 60,
        per_class: 8,
    }
}

#[test]
fn targets_hold_on_a_small_seeded_run() {
    let r = run(&small());
    let table = r.markdown();
    println!("{table}");
    // Every target but two documented as not met (docs/baseline.md): recall of x3
    // connection-rate spikes (on low-rate, noisy edges a x3 is within the noise),
    // and the strict "every detection within 3 intervals" (checked below as
    // "90% of them").
    let known_gaps = ["recall, connection-rate", "detection within"];
    for t in &r.targets {
        if known_gaps.iter().any(|g| t.name.starts_with(g)) {
            continue;
        }
        assert!(t.met, "target not met: {} = {}\n{table}", t.name, t.value);
    }
    let conn3 = r
        .classes
        .iter()
        .find(|c| c.class.starts_with("spike x3 (connections"))
        .expect("row");
    assert!(
        conn3.recall >= 0.6,
        "x3 connection spikes regressed\n{table}"
    );
    // Detection delay: on average within 3 intervals, and 90% of the time.
    for c in r.classes.iter().filter(|c| {
        c.class.starts_with("spike x3 (bytes")
            || c.class.starts_with("spike x10")
            || c.class == "new edge"
            || c.class.starts_with("scan")
    }) {
        assert!(
            c.mean_delay <= 3.0,
            "{}: mean delay {}\n{table}",
            c.class,
            c.mean_delay
        );
        assert!(
            c.within_3 as f64 >= 0.9 * c.detected as f64,
            "{}: {} of {} within 3 intervals\n{table}",
            c.class,
            c.within_3,
            c.detected
        );
    }
    // Every class was injected.
    assert!(r.classes.iter().all(|c| c.injected > 0), "{table}");
}

#[test]
fn the_harness_is_deterministic() {
    let spec = Spec {
        days: 3,
        learning_days: 1,
        edges: 8,
        per_class: 2,
        ..small()
    };
    assert_eq!(run(&spec), run(&spec));
}
