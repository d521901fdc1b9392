//! Entering a network namespace without leaving the mount namespace.
//!
//! `ip netns exec` also remounts /sys, which hides /sys/fs/bpf; the agent therefore
//! joins the namespace itself with `setns(2)`, before any thread is started, so every
//! thread it creates later (tokio's included) lives in that namespace.
use std::{fs::File, path::PathBuf};

use nix::sched::{CloneFlags, setns};

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("network namespace {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("entering network namespace {path}: {source}")]
    Enter {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
}

/// A name (as made by `ip netns add`) or a path (`/proc/PID/ns/net`).
pub fn resolve(name_or_path: &str) -> PathBuf {
    if name_or_path.contains('/') {
        PathBuf::from(name_or_path)
    } else {
        PathBuf::from("/run/netns").join(name_or_path)
    }
}

/// Moves the calling thread into the namespace. Call before starting threads.
pub fn enter(name_or_path: &str) -> Result<(), NetnsError> {
    let path = resolve(name_or_path);
    let file = File::open(&path).map_err(|source| NetnsError::Open {
        path: path.clone(),
        source,
    })?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter { path, source })
}
