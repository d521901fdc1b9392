//! Lab bookkeeping under `/run/enforcer-lab/<prefix>/`: which namespaces a lab owns and which
//! process owns it, so labs left by a crashed test run can be removed and persistent labs
//! (made by `cargo xtask lab up`) found again by later commands.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Directory holding one state directory per lab. It is on tmpfs, like `/run/netns`, so a
/// reboot clears both together.
pub const STATE_ROOT: &str = "/run/enforcer-lab";
const STATE_FILE: &str = "state.yaml";

/// What went wrong reading or writing lab state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot {action} lab state {}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("lab state {} is not valid", path.display())]
    Format {
        path: PathBuf,
        #[source]
        source: serde_yaml_ng::Error,
    },
}

/// The process that made a lab, told apart from a later process with the same pid by its
/// start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub pid: u32,
    /// Field 22 of `/proc/PID/stat`, in clock ticks since boot.
    pub start_time: u64,
}

impl Owner {
    /// This process.
    pub fn current() -> Option<Self> {
        let pid = std::process::id();
        Some(Self {
            pid,
            start_time: start_time(pid)?,
        })
    }

    /// Whether the owning process still runs.
    pub fn is_alive(&self) -> bool {
        start_time(self.pid) == Some(self.start_time)
    }
}

fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count from the last `)`.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// One lab's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabState {
    pub prefix: String,
    /// The owning process; `None` for a persistent lab, which stays until `down`.
    #[serde(default)]
    pub owner: Option<Owner>,
    /// Every namespace the lab may have made, host namespace first.
    pub namespaces: Vec<String>,
}

impl LabState {
    /// The state directory of the lab with this prefix.
    pub fn dir(prefix: &str) -> PathBuf {
        Path::new(STATE_ROOT).join(prefix)
    }

    /// Reads the state of the lab with this prefix, `None` if there is none.
    pub fn read(prefix: &str) -> Result<Option<Self>, StateError> {
        let path = Self::dir(prefix).join(STATE_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Io {
                    action: "read",
                    path,
                    source,
                });
            }
        };
        serde_yaml_ng::from_str(&text)
            .map(Some)
            .map_err(|source| StateError::Format { path, source })
    }

    /// Writes the state (atomically, by rename).
    pub fn write(&self) -> Result<(), StateError> {
        let dir = Self::dir(&self.prefix);
        let io = |action, path: &Path| {
            let path = path.to_owned();
            move |source| StateError::Io {
                action,
                path,
                source,
            }
        };
        std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        let text = serde_yaml_ng::to_string(self).map_err(|source| StateError::Format {
            path: dir.join(STATE_FILE),
            source,
        })?;
        let tmp = dir.join(format!(".{STATE_FILE}.tmp"));
        std::fs::write(&tmp, text).map_err(io("write", &tmp))?;
        let path = dir.join(STATE_FILE);
        std::fs::rename(&tmp, &path).map_err(io("write", &path))
    }

    /// Removes the lab's state directory (and anything else kept in it, like an inventory).
    pub fn remove(prefix: &str) -> Result<(), StateError> {
        let dir = Self::dir(prefix);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StateError::Io {
                action: "remove",
                path: dir,
                source: e,
            }),
            _ => Ok(()),
        }
    }

    /// Every lab with a readable state file.
    pub fn all() -> Vec<Self> {
        let Ok(entries) = std::fs::read_dir(STATE_ROOT) else {
            return Vec::new();
        };
        let mut labs: Vec<Self> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|prefix| Self::read(&prefix).ok().flatten())
            .collect();
        labs.sort_by(|a, b| a.prefix.cmp(&b.prefix));
        labs
    }

    /// Whether the lab belonged to a process that has ended (persistent labs are never stale).
    pub fn is_stale(&self) -> bool {
        self.owner.is_some_and(|o| !o.is_alive())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_made_up_one_is_not() {
        let me = Owner::current().expect("own /proc entry");
        assert!(me.is_alive());
        let other = Owner {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!other.is_alive());
        let state = LabState {
            prefix: "x".into(),
            owner: Some(other),
            namespaces: vec![],
        };
        assert!(state.is_stale());
        assert!(
            !LabState {
                owner: None,
                ..state
            }
            .is_stale()
        );
    }
}
