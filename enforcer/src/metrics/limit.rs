//! The hard cap on per-workload series. At most `max` workloads own a `workload` label
//! value; the others are folded into one `workload="_other"` bucket. Slots are sticky:
//! a workload keeps its slot for as long as it stays in the inventory (no series churn
//! from one scrape to the next), and frees it when it leaves. Free slots go to waiting
//! workloads in name order.
use std::{
    collections::BTreeSet,
    sync::{Mutex, PoisonError},
};

/// Remembers which workloads own series across scrapes.
#[derive(Debug)]
pub struct WorkloadLimiter {
    max: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    admitted: BTreeSet<String>,
    folded: BTreeSet<String>,
    /// Workloads that started being folded, over the agent's life.
    folded_total: u64,
}

/// The outcome for one scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub max: usize,
    admitted: BTreeSet<String>,
    /// Workloads folded into `_other` in this scrape.
    pub folded: usize,
    /// Workloads that started being folded, over the agent's life (a counter).
    pub folded_total: u64,
}

impl Assignment {
    /// Whether `workload` owns its series.
    pub fn owns(&self, workload: &str) -> bool {
        self.admitted.contains(workload)
    }
}

impl WorkloadLimiter {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            state: Mutex::new(State::default()),
        }
    }

    /// Decides, for the workloads in the inventory now, which own series.
    pub fn assign<'a>(&self, workloads: impl IntoIterator<Item = &'a str>) -> Assignment {
        let current: BTreeSet<&str> = workloads.into_iter().collect();
        // The state stays consistent whatever panicked while holding the lock: every
        // field is replaced whole below.
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.admitted.retain(|w| current.contains(w.as_str()));
        let mut folded = BTreeSet::new();
        for w in &current {
            if st.admitted.contains(*w) {
                continue;
            }
            if st.admitted.len() < self.max {
                st.admitted.insert((*w).to_owned());
            } else {
                folded.insert((*w).to_owned());
            }
        }
        let newly = folded.difference(&st.folded).count() as u64;
        st.folded_total += newly;
        st.folded = folded;
        Assignment {
            max: self.max,
            admitted: st.admitted.clone(),
            folded: st.folded.len(),
            folded_total: st.folded_total,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_sticky_freed_on_leave_and_refilled_in_name_order() {
        let l = WorkloadLimiter::new(2);
        let a = l.assign(["web", "db", "api"]);
        // Name order on first sight: api, db.
        assert!(a.owns("api") && a.owns("db") && !a.owns("web"));
        assert_eq!((a.folded, a.folded_total), (1, 1));
        // A newcomer sorting first does not take a slot away.
        let a = l.assign(["web", "db", "api", "aaa"]);
        assert!(a.owns("api") && a.owns("db"));
        assert!(!a.owns("aaa") && !a.owns("web"));
        assert_eq!((a.folded, a.folded_total), (2, 2));
        // db leaves: its slot goes to the first waiting workload by name.
        let a = l.assign(["web", "api", "aaa"]);
        assert!(a.owns("api") && a.owns("aaa") && !a.owns("web") && !a.owns("db"));
        assert_eq!((a.folded, a.folded_total), (1, 2));
        // Same inventory again: nothing changes, nothing is counted twice.
        assert_eq!(l.assign(["web", "api", "aaa"]), a);
    }

    #[test]
    fn zero_cap_folds_everything() {
        let a = WorkloadLimiter::new(0).assign(["a", "b"]);
        assert!(!a.owns("a") && !a.owns("b"));
        assert_eq!(a.folded, 2);
    }
}
