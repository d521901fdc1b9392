//! The agent's status: what is attached and pinned, the live policy generation, and
//! per-workload verdict counters by reason. Shared by the API and the CLI.
use std::collections::BTreeMap;

use enforcer_common::{
    counter::{Counter, CounterKey, Reason},
    direction,
    endpoint::{FLAG_EGRESS_ENFORCED, FLAG_INGRESS_ENFORCED, MODE_AUDIT, MODE_ENFORCE},
};
use serde::{Deserialize, Serialize};

use crate::dataplane::{LinkStatus, MapStatus};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
}

impl Traffic {
    fn add(&mut self, c: &Counter) {
        self.packets += c.packets;
        self.bytes += c.bytes;
    }
}

/// Counters of one workload in one direction.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct DirectionCounters {
    pub enforced: bool,
    pub allowed: Traffic,
    pub dropped: Traffic,
    /// Keyed by the reason's stable name (`dropped_port_not_declared`, …).
    pub by_reason: BTreeMap<String, Traffic>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkloadStatus {
    pub name: String,
    pub interface: String,
    pub ifindex: Option<u32>,
    pub identity: u32,
    pub mode: String,
    pub attached: Vec<String>,
    pub ingress: DirectionCounters,
    pub egress: DirectionCounters,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PolicyStatus {
    pub file: String,
    pub generation: u32,
    pub active_epoch: u32,
    pub applied_at: Option<String>,
    pub rules: usize,
    pub policy_entries: usize,
    pub ipcache_entries: usize,
    pub denylist_entries: usize,
    /// The last reload that failed (the previous policy stayed in force).
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub version: String,
    pub instance: String,
    pub pin_dir: String,
    pub netns: Option<String>,
    pub policy: PolicyStatus,
    pub workloads: Vec<WorkloadStatus>,
    pub flows: FlowsStatus,
    pub links: Vec<LinkStatusView>,
    pub maps: Vec<MapStatusView>,
}

/// Flow monitoring health: events received and lost, graph size.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FlowsStatus {
    pub events_received: u64,
    /// Events dropped because the ring buffer was full (agent too slow).
    pub events_lost_ringbuf_full: u64,
    /// Events dropped by the kernel's per-CPU rate limit.
    pub events_lost_rate_limited: u64,
    /// Flows whose packets could not be accounted (flow map entry not created).
    pub flow_entries_not_created: u64,
    pub flows_tracked: usize,
    pub graph_nodes: usize,
    pub graph_edges: usize,
    pub graph_edges_dropped: u64,
    pub polls: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LinkStatusView {
    pub interface: String,
    pub ifindex: u32,
    pub hook: String,
    pub program: String,
    pub origin: String,
    pub pin: String,
}

impl From<&LinkStatus> for LinkStatusView {
    fn from(l: &LinkStatus) -> Self {
        Self {
            interface: l.interface.clone(),
            ifindex: l.ifindex,
            hook: l.hook.into(),
            program: l.program.into(),
            origin: match l.origin {
                crate::dataplane::LinkOrigin::Attached => "attached".into(),
                crate::dataplane::LinkOrigin::Adopted => "adopted".into(),
            },
            pin: l.pin.display().to_string(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MapStatusView {
    pub name: String,
    pub entries: usize,
    pub max_entries: u32,
    pub fill_ratio: f64,
}

impl From<&MapStatus> for MapStatusView {
    fn from(m: &MapStatus) -> Self {
        Self {
            name: m.name.into(),
            entries: m.entries,
            max_entries: m.max_entries,
            fill_ratio: if m.max_entries == 0 {
                0.0
            } else {
                m.entries as f64 / f64::from(m.max_entries)
            },
        }
    }
}

pub fn mode_name(mode: u32) -> &'static str {
    match mode {
        MODE_ENFORCE => "enforce",
        MODE_AUDIT => "audit",
        _ => "off",
    }
}

/// Folds raw counters into per-direction totals for one interface.
pub fn direction_counters(
    counters: &[(CounterKey, Counter)],
    ifindex: Option<u32>,
    flags: u32,
) -> (DirectionCounters, DirectionCounters) {
    let mut ingress = DirectionCounters {
        enforced: flags & FLAG_INGRESS_ENFORCED != 0,
        ..Default::default()
    };
    let mut egress = DirectionCounters {
        enforced: flags & FLAG_EGRESS_ENFORCED != 0,
        ..Default::default()
    };
    let Some(ifindex) = ifindex else {
        return (ingress, egress);
    };
    for (k, c) in counters.iter().filter(|(k, _)| k.ifindex == ifindex) {
        let d = if k.dir == direction::INGRESS {
            &mut ingress
        } else {
            &mut egress
        };
        let name = match Reason::try_from(k.reason) {
            Ok(r) => {
                if r.is_drop() {
                    d.dropped.add(c);
                } else {
                    d.allowed.add(c);
                }
                r.as_str().to_owned()
            }
            Err(u) => format!("unknown_{}", u.0),
        };
        d.by_reason.entry(name).or_default().add(c);
    }
    (ingress, egress)
}

/// Human table for `enforcer status`.
pub fn render_table(s: &Status) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let p = &s.policy;
    let _ = writeln!(
        out,
        "instance {}  pin dir {}{}",
        s.instance,
        s.pin_dir,
        s.netns
            .as_ref()
            .map(|n| format!("  netns {n}"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "policy {}  generation {}  epoch {}  rules {}  entries {}  applied {}",
        p.file,
        p.generation,
        p.active_epoch,
        p.rules,
        p.policy_entries,
        p.applied_at.as_deref().unwrap_or("never")
    );
    if let Some(e) = &p.last_error {
        let _ = writeln!(
            out,
            "LAST RELOAD FAILED ({}), previous policy still enforced:\n  {e}",
            p.last_error_at.as_deref().unwrap_or("?")
        );
    }
    let _ = writeln!(out);
    let header = [
        "WORKLOAD", "DIR", "ENFORCED", "MODE", "ALLOWED", "DROPPED", "PORT", "PEER", "CIDR",
        "OTHER", "ATTACHED",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
    for w in &s.workloads {
        for (dir, d) in [("in", &w.ingress), ("out", &w.egress)] {
            let pk = |r: Reason| d.by_reason.get(r.as_str()).map_or(0, |t| t.packets);
            let port = pk(Reason::DropPortNotDeclared);
            let peer = pk(Reason::DropPeerNotAllowed);
            let cidr = pk(Reason::DropCidrDenied);
            let other = d.dropped.packets.saturating_sub(port + peer + cidr);
            rows.push(vec![
                w.name.clone(),
                dir.into(),
                if d.enforced { "yes" } else { "no" }.into(),
                w.mode.clone(),
                d.allowed.packets.to_string(),
                d.dropped.packets.to_string(),
                port.to_string(),
                peer.to_string(),
                cidr.to_string(),
                other.to_string(),
                if w.attached.is_empty() {
                    format!("NO ({})", w.interface)
                } else {
                    w.interface.clone()
                },
            ]);
        }
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    let _ = writeln!(
        out,
        "\n(packets; DROPPED = PORT not declared + PEER not allowed + CIDR denied + OTHER: malformed, fragment, internal)"
    );
    let f = &s.flows;
    let _ = writeln!(
        out,
        "\nflows: {} tracked, graph {} nodes / {} edges ({} not stored), events {} received, lost {} (ring full) + {} (rate limit), {} flows not accounted",
        f.flows_tracked,
        f.graph_nodes,
        f.graph_edges,
        f.graph_edges_dropped,
        f.events_received,
        f.events_lost_ringbuf_full,
        f.events_lost_rate_limited,
        f.flow_entries_not_created
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "MAP              ENTRIES  MAX      FILL");
    for m in &s.maps {
        let _ = writeln!(
            out,
            "{:<16} {:<8} {:<8} {:.1}%",
            m.name,
            m.entries,
            m.max_entries,
            m.fill_ratio * 100.0
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_fold_by_direction_and_reason() {
        let k = |dir, reason: Reason| CounterKey {
            ifindex: 7,
            dir,
            reason: reason as u8,
            _pad: 0,
        };
        let c = |p, b| Counter {
            packets: p,
            bytes: b,
        };
        let raw = vec![
            (k(direction::INGRESS, Reason::AllowPolicy), c(3, 300)),
            (
                k(direction::INGRESS, Reason::DropPortNotDeclared),
                c(2, 120),
            ),
            (k(direction::EGRESS, Reason::DropCidrDenied), c(1, 60)),
            (
                CounterKey {
                    ifindex: 8,
                    dir: 0,
                    reason: Reason::AllowPolicy as u8,
                    _pad: 0,
                },
                c(100, 1),
            ),
        ];
        let (i, e) = direction_counters(&raw, Some(7), FLAG_INGRESS_ENFORCED);
        assert!(i.enforced && !e.enforced);
        assert_eq!(
            i.allowed,
            Traffic {
                packets: 3,
                bytes: 300
            }
        );
        assert_eq!(
            i.dropped,
            Traffic {
                packets: 2,
                bytes: 120
            }
        );
        assert_eq!(e.dropped.packets, 1);
        assert_eq!(e.by_reason["dropped_cidr_denied"].bytes, 60);
    }
}
