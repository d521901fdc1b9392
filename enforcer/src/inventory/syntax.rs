//! Syntax of the names and values in an inventory: Kubernetes labels, Linux
//! interface names, workload and policy names, unicast addresses.
use std::net::IpAddr;

use super::MAX_INTERFACE_NAME;

fn is_alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

/// The name part of a key, and a value: at most 63 characters, letters, digits, `-`,
/// `_`, `.`, starting and ending with a letter or digit.
fn check_label_name(s: &str) -> bool {
    s.len() <= 63
        && s.starts_with(is_alnum)
        && s.ends_with(is_alnum)
        && s.chars()
            .all(|c| is_alnum(c) || matches!(c, '-' | '_' | '.'))
}

/// A DNS subdomain: lowercase labels of letters, digits and `-` joined by `.`.
fn check_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && l.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

/// Checks a label key (`[prefix/]name`) against the Kubernetes syntax.
pub fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix
        && !check_dns_subdomain(p)
    {
        return Err(format!(
            "label key `{key}`: the prefix before `/` must be a DNS subdomain \
             (lowercase letters, digits, `-` and `.`, at most 253 characters)"
        ));
    }
    if !check_label_name(name) {
        return Err(format!(
            "label key `{key}`: the name must be 1 to 63 characters of letters, digits, \
             `-`, `_` and `.`, starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// Checks a label value against the Kubernetes syntax (empty is allowed).
pub fn check_label_value(key: &str, value: &str) -> Result<(), String> {
    if value.is_empty() || check_label_name(value) {
        Ok(())
    } else {
        Err(format!(
            "label `{key}`: value `{value}` must be empty or 1 to 63 characters of letters, \
             digits, `-`, `_` and `.`, starting and ending with a letter or digit"
        ))
    }
}

/// Checks a host-side interface name the way the kernel does (`dev_valid_name`).
pub fn check_interface_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("interface name is empty".into());
    }
    if name.len() > MAX_INTERFACE_NAME {
        return Err(format!(
            "interface name `{name}` is {} bytes long; Linux allows at most {MAX_INTERFACE_NAME}",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("`{name}` is not a valid interface name"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| *c == '/' || *c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "interface name `{name}` contains {c:?}; Linux interface names cannot contain \
             `/`, `:` or whitespace"
        ));
    }
    Ok(())
}

/// Checks a name (workload or policy) that appears in logs and metrics.
pub(crate) fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err(format!("{what} name is empty"));
    }
    if name.len() > 253 {
        return Err(format!("{what} name is longer than 253 characters"));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{what} name `{}` contains whitespace or control characters",
            name.escape_debug()
        ));
    }
    Ok(())
}

/// Addresses a workload or the host can own: unicast, and IPv4 written as IPv4 (the
/// dataplane stores IPv4 as IPv4-mapped IPv6, so `::ffff:a.b.c.d` would alias it).
pub(crate) fn check_unicast(ip: IpAddr) -> Result<(), String> {
    if ip.is_unspecified() || ip.is_multicast() {
        return Err(format!("{ip} is not a unicast address"));
    }
    if let IpAddr::V6(v6) = ip
        && let Some(v4) = v6.to_ipv4_mapped()
    {
        return Err(format!(
            "{ip} is an IPv4-mapped IPv6 address; write it as {v4}"
        ));
    }
    Ok(())
}
