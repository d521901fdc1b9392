//! What a lab looks like right now: its namespaces, whether each exists, and the interfaces
//! and addresses in it (as `ip -brief address` shows them).

use std::fmt;

use super::netns::{ip_in, netns_exists};
use super::state::{LabState, Owner};

/// A lab's namespaces as they are now.
#[derive(Debug, Clone)]
pub struct LabStatus {
    pub prefix: String,
    /// `None` for a persistent lab.
    pub owner: Option<Owner>,
    pub namespaces: Vec<NamespaceStatus>,
}

/// One namespace of a lab.
#[derive(Debug, Clone)]
pub struct NamespaceStatus {
    pub name: String,
    pub present: bool,
    /// `ip -brief address` lines, without `lo`.
    pub interfaces: Vec<String>,
}

impl LabStatus {
    /// Looks at every namespace a lab's state lists.
    pub fn of(state: &LabState) -> Self {
        let namespaces = state
            .namespaces
            .iter()
            .map(|name| {
                let present = netns_exists(name);
                let interfaces = if present {
                    ip_in(name, &["-brief", "address", "show"])
                        .map(|out| {
                            out.lines()
                                .filter(|l| !l.starts_with("lo "))
                                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                                .collect()
                        })
                        .unwrap_or_default()
                } else {
                    Vec::new()
                };
                NamespaceStatus {
                    name: name.clone(),
                    present,
                    interfaces,
                }
            })
            .collect();
        Self {
            prefix: state.prefix.clone(),
            owner: state.owner,
            namespaces,
        }
    }

    /// Whether every namespace of the lab exists.
    pub fn complete(&self) -> bool {
        self.namespaces.iter().all(|n| n.present)
    }
}

impl fmt::Display for LabStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let owner = match self.owner {
            None => "persistent".to_owned(),
            Some(o) if o.is_alive() => format!("owned by pid {}", o.pid),
            Some(o) => format!("stale: owner pid {} has exited", o.pid),
        };
        let present = self.namespaces.iter().filter(|n| n.present).count();
        writeln!(
            f,
            "lab {} ({owner}), {present}/{} namespaces present",
            self.prefix,
            self.namespaces.len()
        )?;
        for ns in &self.namespaces {
            if !ns.present {
                writeln!(f, "  {:<24} missing", ns.name)?;
                continue;
            }
            writeln!(f, "  {}", ns.name)?;
            for line in &ns.interfaces {
                writeln!(f, "      {line}")?;
            }
        }
        Ok(())
    }
}
