//! How a lab is made: its names and addresses ([`plan`]), and the namespaces, bridge, veth
//! pairs, addresses, routes and sysctls that `ip` creates for it, all inside its own
//! namespaces.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, Ordering};

use ipnet::{Ipv4Net, Ipv6Net};

use super::netns::{NetnsError, add_netns, ip_in, sysctls_in};
use super::spec::LabSpec;
use super::{BRIDGE, Lab, LabError, NODE_IFACE, Node, NodeKind, PREFIX_START};

/// The namespace names of a lab with this spec and prefix, host first.
pub fn namespaces_for(spec: &LabSpec, prefix: &str) -> Vec<String> {
    let (host, nodes) = plan(spec, prefix);
    std::iter::once(host)
        .chain(nodes.into_iter().map(|n| n.netns))
        .collect()
}

/// Names and addresses of everything in a lab, before or without building it.
pub(super) fn plan(spec: &LabSpec, prefix: &str) -> (String, Vec<Node>) {
    let host_ns = format!("{prefix}-host");
    let mut nodes = Vec::new();
    for (i, w) in spec.workloads.iter().enumerate() {
        nodes.push(Node {
            name: w.name.to_string(),
            kind: NodeKind::Workload,
            netns: format!("{prefix}-{}", w.name),
            host_iface: w.host_iface(),
            addr4: Ipv4Net::new(spec.workload_addr4(i), spec.subnet4.prefix_len())
                .unwrap_or_default(),
            addr6: Ipv6Net::new(spec.workload_addr6(i), spec.subnet6.prefix_len())
                .unwrap_or_default(),
            gateway4: spec.host_addr4(),
            gateway6: spec.host_addr6(),
        });
    }
    for e in &spec.externals {
        nodes.push(Node {
            name: e.name.to_string(),
            kind: NodeKind::External,
            netns: format!("{prefix}-x-{}", e.name),
            host_iface: e.host_iface(),
            addr4: e.address4,
            addr6: e.address6,
            // validate() checked that both exist.
            gateway4: e.gateway4().unwrap_or(Ipv4Addr::UNSPECIFIED),
            gateway6: e.gateway6().unwrap_or(Ipv6Addr::UNSPECIFIED),
        });
    }
    (host_ns, nodes)
}

pub(super) fn create(lab: &Lab) -> Result<(), LabError> {
    let setup = |what: String| {
        let prefix = lab.prefix.clone();
        move |source| LabError::Setup {
            prefix,
            what,
            source: Box::new(source),
        }
    };
    // Set before any interface exists, so new interfaces inherit them: no DAD (addresses
    // usable at once) and dual-stack `[::]` sockets for the echo servers.
    let common = [
        ("net.ipv6.conf.all.accept_dad", "0"),
        ("net.ipv6.conf.default.accept_dad", "0"),
        ("net.ipv6.bindv6only", "0"),
    ];
    let host = lab.host_ns.as_str();
    add_netns(host).map_err(setup(format!("namespace {host}")))?;
    let mut host_sysctls = common.to_vec();
    host_sysctls.extend([
        ("net.ipv4.ip_forward", "1"),
        ("net.ipv6.conf.all.forwarding", "1"),
    ]);
    let spec = &lab.spec;
    let bridge4 = format!("{}/{}", spec.host_addr4(), spec.subnet4.prefix_len());
    let bridge6 = format!("{}/{}", spec.host_addr6(), spec.subnet6.prefix_len());
    sysctls_in(host, &host_sysctls)
        .and_then(|()| ip_in(host, &["link", "set", "lo", "up"]))
        .and_then(|_| {
            ip_in(
                host,
                &[
                    "link",
                    "add",
                    BRIDGE,
                    "type",
                    "bridge",
                    "forward_delay",
                    "0",
                ],
            )
        })
        .and_then(|_| ip_in(host, &["addr", "add", &bridge4, "dev", BRIDGE]))
        .and_then(|_| ip_in(host, &["addr", "add", &bridge6, "dev", BRIDGE, "nodad"]))
        .and_then(|_| ip_in(host, &["link", "set", BRIDGE, "up"]))
        .map_err(setup(format!("host namespace {host}")))?;
    for node in &lab.nodes {
        let ns = node.netns.as_str();
        let what = match node.kind {
            NodeKind::Workload => format!("workload `{}` ({ns})", node.name),
            NodeKind::External => format!("external `{}` ({ns})", node.name),
        };
        add_netns(ns).map_err(setup(what.clone()))?;
        create_node(lab, node).map_err(setup(what))?;
    }
    Ok(())
}

fn create_node(lab: &Lab, node: &Node) -> Result<(), NetnsError> {
    let host = lab.host_ns.as_str();
    let ns = node.netns.as_str();
    let iface = node.host_iface.as_str();
    sysctls_in(
        ns,
        &[
            ("net.ipv6.conf.all.accept_dad", "0"),
            ("net.ipv6.conf.default.accept_dad", "0"),
            ("net.ipv6.bindv6only", "0"),
        ],
    )?;
    ip_in(ns, &["link", "set", "lo", "up"])?;
    // The peer is created straight inside the node's namespace: nothing passes through
    // the machine's own namespace.
    ip_in(
        host,
        &[
            "link", "add", iface, "type", "veth", "peer", "name", NODE_IFACE, "netns", ns,
        ],
    )?;
    match node.kind {
        NodeKind::Workload => {
            ip_in(host, &["link", "set", iface, "master", BRIDGE, "up"])?;
        }
        NodeKind::External => {
            let gw4 = format!("{}/{}", node.gateway4, node.addr4.prefix_len());
            let gw6 = format!("{}/{}", node.gateway6, node.addr6.prefix_len());
            ip_in(host, &["addr", "add", &gw4, "dev", iface])?;
            ip_in(host, &["addr", "add", &gw6, "dev", iface, "nodad"])?;
            ip_in(host, &["link", "set", iface, "up"])?;
        }
    }
    let addr4 = node.addr4.to_string();
    let addr6 = node.addr6.to_string();
    let gw4 = node.gateway4.to_string();
    let gw6 = node.gateway6.to_string();
    ip_in(ns, &["addr", "add", &addr4, "dev", NODE_IFACE])?;
    ip_in(ns, &["addr", "add", &addr6, "dev", NODE_IFACE, "nodad"])?;
    ip_in(ns, &["link", "set", NODE_IFACE, "up"])?;
    ip_in(ns, &["-4", "route", "add", "default", "via", &gw4])?;
    ip_in(ns, &["-6", "route", "add", "default", "via", &gw6])?;
    Ok(())
}

/// `enf` + pid in base 36 padded to 5 digits (pid_max ≤ 2^22 < 36^5, so the width is fixed
/// and the counter after it cannot run into the pid) + a per-process counter.
pub(super) fn unique_prefix() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!(
        "{PREFIX_START}{:0>5}{}",
        base36(std::process::id()),
        base36(n)
    )
}

fn base36(mut n: u32) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base36_and_prefixes() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
        assert_eq!(base36(4_194_304).len(), 5);
        let a = unique_prefix();
        let b = unique_prefix();
        assert_ne!(a, b);
        assert_eq!(a.len(), 9, "{a}");
        assert!(a.starts_with(PREFIX_START));
    }
}
