//! The hard caps on series. At most `max` keys (workloads, or workload-pair edges) own
//! label values of their own; the others are folded into one `_other` bucket. Slots
//! are sticky: a key keeps its slot for as long as it stays present (no series churn
//! from one scrape to the next), and frees it when it leaves. Free slots go to
//! waiting keys in sort order.
use std::{
    collections::BTreeSet,
    sync::{Mutex, PoisonError},
};

/// Remembers which keys own series across scrapes.
#[derive(Debug)]
pub struct Limiter<K> {
    max: usize,
    state: Mutex<State<K>>,
}

/// Workloads owning a `workload` label value.
pub type WorkloadLimiter = Limiter<String>;
/// Workload pairs (source, destination) owning their `source`/`destination` values.
pub type EdgeLimiter = Limiter<(String, String)>;

#[derive(Debug)]
struct State<K> {
    admitted: BTreeSet<K>,
    folded: BTreeSet<K>,
    /// Keys that started being folded, over the agent's life.
    folded_total: u64,
}

/// The outcome for one scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment<K = String> {
    pub max: usize,
    admitted: BTreeSet<K>,
    /// Keys folded into `_other` in this scrape.
    pub folded: usize,
    /// Keys that started being folded, over the agent's life (a counter).
    pub folded_total: u64,
}

impl<K: Ord> Assignment<K> {
    /// Whether `key` owns its series.
    pub fn owns<Q>(&self, key: &Q) -> bool
    where
        K: std::borrow::Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.admitted.contains(key)
    }
}

impl<K: Ord + Clone> Limiter<K> {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            state: Mutex::new(State {
                admitted: BTreeSet::new(),
                folded: BTreeSet::new(),
                folded_total: 0,
            }),
        }
    }

    /// Decides, for the keys present now, which own series.
    pub fn assign<'a>(&self, present: impl IntoIterator<Item = &'a K>) -> Assignment<K>
    where
        K: 'a,
    {
        let current: BTreeSet<&K> = present.into_iter().collect();
        // The state stays consistent whatever panicked while holding the lock: every
        // field is replaced whole below.
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        st.admitted.retain(|k| current.contains(k));
        let mut folded = BTreeSet::new();
        for k in current {
            if st.admitted.contains(k) {
                continue;
            }
            if st.admitted.len() < self.max {
                st.admitted.insert(k.clone());
            } else {
                folded.insert(k.clone());
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

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn slots_are_sticky_freed_on_leave_and_refilled_in_name_order() {
        let l = WorkloadLimiter::new(2);
        let a = l.assign(&names(&["web", "db", "api"]));
        // Name order on first sight: api, db.
        assert!(a.owns("api") && a.owns("db") && !a.owns("web"));
        assert_eq!((a.folded, a.folded_total), (1, 1));
        // A newcomer sorting first does not take a slot away.
        let a = l.assign(&names(&["web", "db", "api", "aaa"]));
        assert!(a.owns("api") && a.owns("db"));
        assert!(!a.owns("aaa") && !a.owns("web"));
        assert_eq!((a.folded, a.folded_total), (2, 2));
        // db leaves: its slot goes to the first waiting workload by name.
        let a = l.assign(&names(&["web", "api", "aaa"]));
        assert!(a.owns("api") && a.owns("aaa") && !a.owns("web") && !a.owns("db"));
        assert_eq!((a.folded, a.folded_total), (1, 2));
        // Same inventory again: nothing changes, nothing is counted twice.
        assert_eq!(l.assign(&names(&["web", "api", "aaa"])), a);
    }

    #[test]
    fn zero_cap_folds_everything() {
        let a = WorkloadLimiter::new(0).assign(&names(&["a", "b"]));
        assert!(!a.owns("a") && !a.owns("b"));
        assert_eq!(a.folded, 2);
    }

    #[test]
    fn edges_are_capped_by_pair() {
        let pair = |s: &str, d: &str| (s.to_owned(), d.to_owned());
        let l = EdgeLimiter::new(1);
        let edges = [pair("client", "web"), pair("api", "db")];
        let a = l.assign(&edges);
        assert!(a.owns(&pair("api", "db")) && !a.owns(&pair("client", "web")));
        assert_eq!((a.folded, a.folded_total), (1, 1));
    }
}
