//! The agent's inventory file for a lab: which workloads sit behind which host-side interface,
//! with their labels and addresses. Written by hand (not by serde) so the file keeps the
//! compact, reviewable layout the agent's docs show.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::spec::LabSpec;

/// One workload as the inventory lists it.
#[derive(Debug, Clone)]
pub struct InventoryWorkload<'a> {
    pub name: &'a str,
    pub labels: &'a std::collections::BTreeMap<String, String>,
    pub interface: String,
    pub addr4: Ipv4Addr,
    pub addr6: Ipv6Addr,
    pub mode: Option<&'a str>,
}

/// The inventory of a lab built from `spec`. It does not depend on the lab's prefix (it
/// names host-side interfaces and addresses, not namespaces), so it needs no running lab.
pub fn for_spec(spec: &LabSpec) -> String {
    let workloads: Vec<InventoryWorkload<'_>> = spec
        .workloads
        .iter()
        .enumerate()
        .map(|(i, w)| InventoryWorkload {
            name: w.name.as_str(),
            labels: &w.labels,
            interface: w.host_iface(),
            addr4: spec.workload_addr4(i),
            addr6: spec.workload_addr6(i),
            mode: w.mode.as_deref(),
        })
        .collect();
    render(spec.host_addr4(), spec.host_addr6(), &workloads)
}

/// Renders the inventory YAML.
pub fn render(host4: Ipv4Addr, host6: Ipv6Addr, workloads: &[InventoryWorkload<'_>]) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "host:\n  addresses: [{host4}, \"{host6}\"]");
    if workloads.is_empty() {
        out.push_str("workloads: []\n");
        return out;
    }
    out.push_str("workloads:\n");
    for w in workloads {
        let labels = w
            .labels
            .iter()
            .map(|(k, v)| format!("{}: {}", scalar(k), scalar(v)))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(out, "  - name: {}", scalar(w.name));
        let _ = writeln!(out, "    labels: {{{labels}}}");
        let _ = writeln!(out, "    interface: {}", scalar(&w.interface));
        let _ = writeln!(out, "    addresses: [{}, \"{}\"]", w.addr4, w.addr6);
        if let Some(mode) = w.mode {
            let _ = writeln!(out, "    mode: {}", scalar(mode));
        }
    }
    out
}

/// A YAML scalar that reads back as exactly `s`: plain when that is unambiguous, else
/// double-quoted.
pub fn scalar(s: &str) -> String {
    const RESERVED: &[&str] = &[
        "true", "false", "yes", "no", "on", "off", "y", "n", "null", "~",
    ];
    let plain = !s.is_empty()
        && s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == '/')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./-".contains(c))
        && !RESERVED.iter().any(|r| r.eq_ignore_ascii_case(s));
    if plain {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn layout_matches_the_documented_format() {
        let labels: BTreeMap<String, String> = [("app", "web"), ("env", "prod")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let none = BTreeMap::new();
        let text = render(
            Ipv4Addr::new(10, 77, 0, 1),
            "fd00:77::1".parse().expect("v6"),
            &[
                InventoryWorkload {
                    name: "web",
                    labels: &labels,
                    interface: "lw-web".to_owned(),
                    addr4: Ipv4Addr::new(10, 77, 0, 10),
                    addr6: "fd00:77::10".parse().expect("v6"),
                    mode: Some("enforce"),
                },
                InventoryWorkload {
                    name: "client",
                    labels: &none,
                    interface: "lw-client".to_owned(),
                    addr4: Ipv4Addr::new(10, 77, 0, 11),
                    addr6: "fd00:77::11".parse().expect("v6"),
                    mode: None,
                },
            ],
        );
        assert_eq!(
            text,
            "host:\n  addresses: [10.77.0.1, \"fd00:77::1\"]\nworkloads:\n  - name: web\n    labels: {app: web, env: prod}\n    interface: lw-web\n    addresses: [10.77.0.10, \"fd00:77::10\"]\n    mode: enforce\n  - name: client\n    labels: {}\n    interface: lw-client\n    addresses: [10.77.0.11, \"fd00:77::11\"]\n"
        );
    }

    #[test]
    fn awkward_label_values_read_back_unchanged() {
        for value in [
            "yes",
            "No",
            "1.0",
            "007",
            "-x",
            "a b",
            "x: y",
            "{}",
            "quote\"back\\slash",
            "",
            "é",
            "app.kubernetes.io/name",
            "~",
            "null",
            "#c",
        ] {
            let yaml = format!("{{{}: {}}}", scalar(value), scalar(value));
            let map: BTreeMap<String, String> =
                serde_yaml_ng::from_str(&yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"));
            assert_eq!(map.get(value).map(String::as_str), Some(value), "{yaml}");
        }
    }
}
