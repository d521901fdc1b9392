//! Every runtime path the agent and CLI use, derived from one instance name so that
//! several agents (one per test lab, say) never share state.
use std::path::PathBuf;

/// Where bpffs is expected; mounted by the agent when absent.
pub const BPFFS: &str = "/sys/fs/bpf";
/// Default instance name.
pub const DEFAULT_INSTANCE: &str = "default";

/// Where the default pin directories live: `/sys/fs/bpf/enforcer/<instance>`.
pub fn pin_root() -> PathBuf {
    PathBuf::from(BPFFS).join("enforcer")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub instance: String,
    /// Pinned maps and links: `/sys/fs/bpf/enforcer/<instance>`.
    pub pin_dir: PathBuf,
    /// Control and query socket: `/run/enforcer/<instance>.sock`.
    pub socket: PathBuf,
}

impl Paths {
    pub fn for_instance(instance: &str) -> Self {
        Self {
            instance: instance.to_owned(),
            pin_dir: pin_root().join(instance),
            socket: PathBuf::from("/run/enforcer").join(format!("{instance}.sock")),
        }
    }
}

/// Instance names end up in paths, one of them on bpffs (which refuses '.'): keep
/// them to letters, digits, '-' and '_'.
pub fn valid_instance(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn instance_paths() {
        let p = Paths::for_instance("lab1");
        assert_eq!(p.pin_dir, PathBuf::from("/sys/fs/bpf/enforcer/lab1"));
        assert_eq!(p.socket, PathBuf::from("/run/enforcer/lab1.sock"));
        assert!(valid_instance("lab-1_a"));
        assert!(!valid_instance("a.b"));
        assert!(!valid_instance("../etc"));
        assert!(!valid_instance(""));
        assert!(!valid_instance("a/b"));
    }
}
