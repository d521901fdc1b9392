//! Detectors (a) new edge and (b) new port or protocol.
//!
//! A pair is (source, destination) with every `world:` node counted as one when
//! `aggregateWorld` is on; a service is a pair with a protocol and port. An edge the
//! engine has no baseline for (never seen, forgotten or evicted) is:
//! - part of a known service: learnt silently (a new world prefix on a known port);
//! - of a known pair, not a known service: `new_port`;
//! - of a new pair: `new_edge`.
//!
//! One alert per pair while it fires (`eventHoldSecs`); further ports join it.
use std::collections::{BTreeMap, HashSet};

use super::{AlertEdge, AlertKind, EdgeRef, EdgeSample, Engine, Raise, Severity, workloads_of};
use crate::graph::proto_name;

/// Pair and service bookkeeping of a known edge happens at most this often.
const TOUCH_EVERY_MS: u64 = 3_600_000;

impl Engine {
    /// Raises new-edge and new-port alerts; returns the edges to start a baseline for.
    pub(super) fn new_edges(
        &mut self,
        samples: &BTreeMap<&EdgeRef, EdgeSample>,
        scanning: &HashSet<String>,
        learning: bool,
        t0: u64,
        t1: u64,
        raises: &mut Vec<Raise>,
    ) -> Vec<EdgeRef> {
        let (new_edge_on, new_port_on) = (self.d().new_edge, self.d().new_port);
        let mut fresh = Vec::new();
        for e in samples.keys() {
            let touch = match self.edges.get_mut(*e) {
                Some(st) if t1.saturating_sub(st.touched_ms) >= TOUCH_EVERY_MS => {
                    st.touched_ms = t1;
                    true
                }
                Some(_) => false,
                None => true,
            };
            if !touch {
                continue;
            }
            let pair = (self.pair_node(&e.src), self.pair_node(&e.dst));
            let service = (pair.0.clone(), pair.1.clone(), e.proto, e.port);
            if self.edges.contains_key(*e) {
                self.pairs.insert(pair, t1);
                self.services.insert(service, t1);
                continue;
            }
            if !learning && scanning.contains(&e.src) {
                self.stats.new_edges_suppressed += 1;
                continue;
            }
            if !learning && !self.services.contains_key(&service) {
                let known = self.pairs.contains_key(&pair);
                let (kind, on) = if known {
                    (AlertKind::NewPort, new_port_on)
                } else {
                    (AlertKind::NewEdge, new_edge_on)
                };
                let key = format!("{kind}|{}|{}", pair.0, pair.1);
                let port = format!("{}/{}", proto_name(e.proto), e.port);
                if let Some(a) = self.active.get_mut(&key) {
                    a.observed += 1.0;
                    if a.summary.matches(", ").count() < 10 {
                        a.summary.push_str(&format!(", {port}"));
                    }
                } else if let Some(r) = raises.iter_mut().find(|r| r.key == key) {
                    r.observed += 1.0;
                    r.summary.push_str(&format!(", {port}"));
                } else if on {
                    let what = if known {
                        "known pair on a new port or protocol"
                    } else {
                        "first traffic between these nodes"
                    };
                    raises.push(Raise {
                        key,
                        kind,
                        severity: Severity::Warning,
                        summary: format!("{what}: {e}"),
                        workloads: workloads_of(e),
                        edge: Some(AlertEdge::from(*e)),
                        source: None,
                        metric: None,
                        unit: "new services".into(),
                        observed: 1.0,
                        expected: 0.0,
                        start_ms: t0,
                    });
                }
            }
            self.pairs.insert(pair, t1);
            self.services.insert(service, t1);
            fresh.push((*e).clone());
        }
        fresh
    }
}
