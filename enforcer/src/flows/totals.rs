//! Cumulative traffic counters behind the per-edge, per-workload and per-rule metrics.
//!
//! They are folded from the same flow-map deltas as the graph (so they agree with
//! it), live for the agent's life, and are pruned when what they describe goes away:
//! a workload leaves the inventory, a workload pair has had no traffic for the edge
//! TTL, a rule leaves the policy. Their series then disappear at the next scrape.
//! Unlike the graph, nothing here is keyed by port, so a port scan adds no entries.
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    time::SystemTime,
};

use enforcer_common::{counter::Reason, direction};

use crate::graph::{FastMap, Node, NodeKind};

/// The name a node has in edge metrics: workloads, `host` and policy CIDRs
/// (`cidr:10.0.0.0/8`) by their graph id; every unknown address is `world`, so the
/// number of names follows the inventory and the policy, not the traffic.
/// The `(id, kind)` form of [`metric_name`].
fn pair_name((id, kind): (&str, NodeKind)) -> &str {
    match kind {
        NodeKind::World => "world",
        _ => id,
    }
}

pub fn metric_name(n: &Node) -> &str {
    match n.kind {
        NodeKind::World => "world",
        _ => &n.id,
    }
}

/// Counters of one workload pair (source → destination, all ports).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PairTotals {
    /// Source → destination, counted once at the first workload interface on the path.
    pub packets: u64,
    pub bytes: u64,
    /// Destination → source (replies).
    pub reply_packets: u64,
    pub reply_bytes: u64,
    /// New flows (connections; for UDP and ICMP, distinct tuples).
    pub connections: u64,
    /// Dropped packets (either direction, wherever dropped) by reason name.
    pub dropped: BTreeMap<&'static str, u64>,
    /// Whether each side is a workload (and so must stay in the inventory).
    src_workload: bool,
    dst_workload: bool,
    last_active: Option<SystemTime>,
}

/// One flow's share of a poll, for [`Totals::add_pair`].
#[derive(Debug, Clone, Copy, Default)]
pub struct PairDelta {
    pub packets: u64,
    pub bytes: u64,
    pub reply_packets: u64,
    pub reply_bytes: u64,
    pub connections: u64,
    pub dropped_packets: u64,
    /// Reason of the drops: the flow's last verdict when it is a drop.
    pub drop_reason: Option<Reason>,
}

/// Packets decided by one rule (or mechanism), by verdict.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleKey {
    /// Policy name, or a mechanism: `_deny_list`, `_default_deny`, `_not_selected`,
    /// `_established`, `_older_policy`, `_other`.
    pub policy: String,
    /// `ingress[0]`, `egress[2]`, `denyCIDRs[1]`, or a direction for mechanisms.
    pub rule: String,
    /// `allowed`, `dropped` or `audit`.
    pub verdict: &'static str,
}

/// The verdict label of a reason.
pub fn verdict_of(reason: Reason) -> &'static str {
    if reason.is_drop() {
        "dropped"
    } else if reason == Reason::AllowAudit {
        "audit"
    } else {
        "allowed"
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// source → destination → counters; nested so a lookup needs no allocation.
    pairs: FastMap<String, FastMap<String, PairTotals>>,
    rules: HashMap<RuleKey, u64>,
    /// Workload → new flows seen on its interface, [ingress, egress].
    connections: FastMap<String, [u64; 2]>,
}

impl Totals {
    pub fn add_pair(&mut self, src: &Node, dst: &Node, d: &PairDelta, now: SystemTime) {
        self.add_pair_of((&src.id, src.kind), (&dst.id, dst.kind), d, now);
    }

    /// [`add_pair`](Self::add_pair) with the nodes as (id, kind).
    pub fn add_pair_of(
        &mut self,
        src: (&str, NodeKind),
        dst: (&str, NodeKind),
        d: &PairDelta,
        now: SystemTime,
    ) {
        let (s, t) = (pair_name(src), pair_name(dst));
        let by_dst = match self.pairs.get_mut(s) {
            Some(m) => m,
            None => self.pairs.entry(s.to_owned()).or_default(),
        };
        let p = match by_dst.get_mut(t) {
            Some(p) => p,
            None => by_dst.entry(t.to_owned()).or_insert_with(|| PairTotals {
                src_workload: src.1 == NodeKind::Workload,
                dst_workload: dst.1 == NodeKind::Workload,
                ..PairTotals::default()
            }),
        };
        p.packets += d.packets;
        p.bytes += d.bytes;
        p.reply_packets += d.reply_packets;
        p.reply_bytes += d.reply_bytes;
        p.connections += d.connections;
        if d.dropped_packets > 0 {
            let reason = d.drop_reason.map_or("unknown", Reason::as_str);
            *p.dropped.entry(reason).or_default() += d.dropped_packets;
        }
        p.last_active = Some(now);
    }

    pub fn add_rule(&mut self, key: RuleKey, packets: u64) {
        *self.rules.entry(key).or_default() += packets;
    }

    /// One new flow on `workload`'s interface, in its direction `dir`.
    pub fn add_connection(&mut self, workload: &str, dir: u8) {
        let i = usize::from(dir == direction::EGRESS);
        match self.connections.get_mut(workload) {
            Some(c) => c[i] += 1,
            None => {
                let mut c = [0; 2];
                c[i] = 1;
                self.connections.insert(workload.to_owned(), c);
            }
        }
    }

    /// Drops pairs idle since before `cutoff`.
    pub fn expire(&mut self, cutoff: SystemTime) {
        for by_dst in self.pairs.values_mut() {
            by_dst.retain(|_, p| p.last_active.is_some_and(|t| t >= cutoff));
        }
        self.pairs.retain(|_, m| !m.is_empty());
    }

    /// After an inventory or policy change: drops what names a workload that is gone
    /// or a rule the policy no longer has (`rule_known(policy, rule)`).
    pub fn retain_known(
        &mut self,
        is_workload: impl Fn(&str) -> bool,
        rule_known: impl Fn(&str, &str) -> bool,
    ) {
        for (src, by_dst) in &mut self.pairs {
            by_dst.retain(|dst, p| {
                (!p.src_workload || is_workload(src)) && (!p.dst_workload || is_workload(dst))
            });
        }
        self.pairs.retain(|_, m| !m.is_empty());
        self.connections.retain(|w, _| is_workload(w));
        self.rules
            .retain(|k, _| k.policy.starts_with('_') || rule_known(&k.policy, &k.rule));
    }

    /// Pairs as (source, destination, counters), sorted.
    pub fn pairs(&self) -> Vec<(&str, &str, &PairTotals)> {
        let mut v: Vec<_> = self
            .pairs
            .iter()
            .flat_map(|(s, m)| m.iter().map(move |(d, p)| (s.as_str(), d.as_str(), p)))
            .collect();
        v.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        v
    }

    pub fn pair_count(&self) -> usize {
        self.pairs.values().map(|m| m.len()).sum()
    }

    /// Rule counters, sorted.
    pub fn rules(&self) -> BTreeMap<&RuleKey, u64> {
        self.rules.iter().map(|(k, v)| (k, *v)).collect()
    }

    /// New flows per workload: (workload, [ingress, egress]), sorted.
    pub fn connections(&self) -> BTreeMap<&str, [u64; 2]> {
        self.connections
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect()
    }
}

/// Per-poll accumulator of rule verdicts by (rule id, reason, direction): resolved to
/// labels once per distinct key at the end of a poll, not once per flow.
#[derive(Debug, Default)]
pub struct RulePoll(HashMap<(u32, u8, u8), u64>);

impl RulePoll {
    pub fn add(&mut self, rule: u32, reason: Reason, dir: u8, packets: u64) {
        if packets > 0 {
            *self.0.entry((rule, reason as u8, dir)).or_default() += packets;
        }
    }

    /// Folds the poll into `totals`, naming each key with `label(reason, rule, dir)`.
    pub fn fold_into(
        self,
        totals: &mut Totals,
        label: impl Fn(Reason, u32, u8) -> (String, String),
    ) {
        for ((rule, reason, dir), packets) in self.0 {
            let Ok(reason) = Reason::try_from(reason) else {
                continue;
            };
            let (policy, rule) = label(reason, rule, dir);
            totals.add_rule(
                RuleKey {
                    policy,
                    rule,
                    verdict: verdict_of(reason),
                },
                packets,
            );
        }
    }
}

/// The (policy, rule) labels of a compiled policy, for [`Totals::retain_known`].
pub fn rule_label_set<'a>(
    labels: impl IntoIterator<Item = &'a (String, String)>,
) -> HashSet<(&'a str, &'a str)> {
    labels
        .into_iter()
        .map(|(p, r)| (p.as_str(), r.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn node(id: &str, kind: NodeKind) -> Node {
        Node {
            id: id.into(),
            kind,
            labels: BTreeMap::new(),
        }
    }

    #[test]
    fn pairs_accumulate_by_metric_name_and_expire() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let mut t = Totals::default();
        let web = node("web", NodeKind::Workload);
        let d = PairDelta {
            packets: 2,
            bytes: 200,
            reply_packets: 1,
            reply_bytes: 60,
            connections: 1,
            dropped_packets: 0,
            drop_reason: None,
        };
        // Two world prefixes are one `world` pair.
        t.add_pair(
            &node("world:198.51.100.0/24", NodeKind::World),
            &web,
            &d,
            t0,
        );
        t.add_pair(&node("world:203.0.113.0/24", NodeKind::World), &web, &d, t0);
        let drop = PairDelta {
            dropped_packets: 3,
            drop_reason: Some(Reason::DropPortNotDeclared),
            ..PairDelta::default()
        };
        t.add_pair(&node("client", NodeKind::Workload), &web, &drop, t0);
        let pairs = t.pairs();
        assert_eq!(pairs.len(), 2);
        assert_eq!((pairs[1].0, pairs[1].1), ("world", "web"));
        assert_eq!((pairs[1].2.bytes, pairs[1].2.connections), (400, 2));
        assert_eq!(pairs[0].2.dropped["dropped_port_not_declared"], 3);
        t.add_pair(
            &node("client", NodeKind::Workload),
            &web,
            &d,
            t0 + Duration::from_secs(10),
        );
        t.expire(t0 + Duration::from_secs(5));
        assert_eq!(t.pair_count(), 1);
        assert_eq!(t.pairs()[0].0, "client");
    }

    #[test]
    fn unknown_workloads_and_rules_are_pruned() {
        let t0 = SystemTime::UNIX_EPOCH;
        let mut t = Totals::default();
        let d = PairDelta {
            packets: 1,
            ..PairDelta::default()
        };
        let host = node("host", NodeKind::Host);
        t.add_pair(&node("gone", NodeKind::Workload), &host, &d, t0);
        t.add_pair(&node("web", NodeKind::Workload), &host, &d, t0);
        t.add_connection("gone", direction::EGRESS);
        t.add_connection("web", direction::INGRESS);
        t.add_connection("web", direction::INGRESS);
        let mut poll = RulePoll::default();
        poll.add(7, Reason::AllowPolicy, direction::INGRESS, 5);
        poll.add(9, Reason::AllowPolicy, direction::INGRESS, 1);
        poll.add(0, Reason::DropPortNotDeclared, direction::INGRESS, 2);
        poll.fold_into(&mut t, |reason, rule, _| match (reason, rule) {
            (Reason::AllowPolicy, 7) => ("web-serves".into(), "ingress[0]".into()),
            (Reason::AllowPolicy, _) => ("old".into(), "ingress[3]".into()),
            _ => ("_default_deny".into(), "ingress".into()),
        });
        assert_eq!(t.rules().len(), 3);
        let known = [("web-serves".to_owned(), "ingress[0]".to_owned())];
        let set = rule_label_set(&known);
        t.retain_known(|w| w == "web", |p, r| set.contains(&(p, r)));
        assert_eq!(t.pairs().len(), 1);
        assert_eq!(
            t.connections().into_iter().collect::<Vec<_>>(),
            vec![("web", [2, 0])]
        );
        let rules: Vec<_> = t
            .rules()
            .into_iter()
            .map(|(k, v)| (k.policy.clone(), k.verdict, v))
            .collect();
        assert_eq!(
            rules,
            vec![
                ("_default_deny".to_owned(), "dropped", 2),
                ("web-serves".to_owned(), "allowed", 5)
            ]
        );
    }
}
