//! Doing things inside named network namespaces (`/run/netns/NAME`): `ip` commands, threads that
//! `setns` into a namespace (keeping the mount namespace, unlike `ip netns exec`), sysctls.
//!
//! Every `ip` command that touches links, addresses or routes goes through [`ip_in`], which
//! always passes `-n NS`: the lab never changes the machine's own namespace.

use std::fs::File;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::thread;

use nix::sched::{CloneFlags, setns};

/// Where `ip netns` keeps its namespace handles.
pub const NETNS_DIR: &str = "/run/netns";

/// What went wrong running something in a namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot open network namespace `{netns}` ({})", netns_path(netns).display())]
    Open {
        netns: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot enter network namespace `{netns}`")]
    Enter {
        netns: String,
        #[source]
        source: nix::Error,
    },
    #[error("cannot start a thread for network namespace `{netns}`")]
    Thread {
        netns: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("cannot set sysctl {key}={value} in network namespace `{netns}`")]
    Sysctl {
        netns: String,
        key: String,
        value: String,
        #[source]
        source: std::io::Error,
    },
}

/// The path of a named namespace's handle.
pub fn netns_path(name: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(name)
}

/// Whether `ip netns` knows a namespace of this name.
pub fn netns_exists(name: &str) -> bool {
    netns_path(name).exists()
}

/// Names of all namespaces under [`NETNS_DIR`] (empty if the directory does not exist).
pub fn list_netns() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

fn enter(netns: &str) -> Result<(), NetnsError> {
    let file = File::open(netns_path(netns)).map_err(|source| NetnsError::Open {
        netns: netns.to_owned(),
        source,
    })?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter {
        netns: netns.to_owned(),
        source,
    })
}

/// Runs `f` on a fresh thread that has entered network namespace `netns` and returns its
/// result. Sockets made in `f` belong to that namespace (and keep working after it returns),
/// and so does `/proc/sys/net`. The mount namespace is kept: `/sys/fs/bpf` stays visible, but
/// `/sys/class/net` still shows the namespace that mounted `/sys`, not `netns`.
/// `f` may borrow from the caller. A panic in `f` is passed on to the caller.
pub fn in_netns<F, R>(netns: &str, f: F) -> Result<R, NetnsError>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    thread::scope(|scope| {
        let handle = thread::Builder::new()
            .name(format!("netns-{netns}"))
            .spawn_scoped(scope, || enter(netns).map(|()| f()))
            .map_err(|source| NetnsError::Thread {
                netns: netns.to_owned(),
                source,
            })?;
        match handle.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Starts a long-lived thread in `netns`. It has entered the namespace before this returns
/// (an error entering it is returned here, not inside the thread), so the thread's result is
/// always `Some`.
pub fn spawn_in_netns<F, R>(
    netns: &str,
    thread_name: String,
    f: F,
) -> Result<thread::JoinHandle<Option<R>>, NetnsError>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let ns = netns.to_owned();
    let handle = thread::Builder::new()
        .name(thread_name)
        .spawn(move || {
            let entered = enter(&ns);
            let ok = entered.is_ok();
            // The receiver waits for this message; if it is gone the caller gave up anyway.
            let _ = tx.send(entered);
            // `f` only runs once the thread is in the namespace.
            ok.then(f)
        })
        .map_err(|source| NetnsError::Thread {
            netns: netns.to_owned(),
            source,
        })?;
    match rx.recv() {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => {
            let _ = handle.join();
            Err(e)
        }
        Err(_) => {
            // The thread died before reporting: join it to pass its panic on.
            match handle.join() {
                Ok(_) => Err(NetnsError::Thread {
                    netns: netns.to_owned(),
                    source: std::io::Error::other("thread ended before entering the namespace"),
                }),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    }
}

/// Writes sysctls (`net.ipv4.ip_forward` style keys) inside `netns` only: a thread that has
/// entered the namespace sees that namespace's `/proc/sys/net`.
pub fn sysctls_in(netns: &str, settings: &[(&str, &str)]) -> Result<(), NetnsError> {
    in_netns(netns, || {
        for (key, value) in settings {
            let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
            let written = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|mut f| f.write_all(value.as_bytes()));
            written.map_err(|source| NetnsError::Sysctl {
                netns: netns.to_owned(),
                key: (*key).to_owned(),
                value: (*value).to_owned(),
                source,
            })?;
        }
        Ok(())
    })?
}

/// Reads a sysctl inside `netns`.
pub fn sysctl_get(netns: &str, key: &str) -> Result<String, NetnsError> {
    in_netns(netns, || {
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        std::fs::read_to_string(&path)
            .map(|s| s.trim().to_owned())
            .map_err(|source| NetnsError::Sysctl {
                netns: netns.to_owned(),
                key: key.to_owned(),
                value: String::from("(read)"),
                source,
            })
    })?
}

/// Runs `cmd`, returning its output if it exits with success; the error names the command and
/// carries its stderr.
pub fn run(cmd: &mut Command) -> Result<Output, NetnsError> {
    let command = describe(cmd);
    let output = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| NetnsError::Spawn {
            command: command.clone(),
            source,
        })?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(NetnsError::Command {
            command,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// Runs `ip -n NETNS ARGS…`, returning its stdout.
pub fn ip_in(netns: &str, args: &[&str]) -> Result<String, NetnsError> {
    let out = run(Command::new("ip").arg("-n").arg(netns).args(args))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Creates the named namespace (fails if it exists).
pub fn add_netns(name: &str) -> Result<(), NetnsError> {
    run(Command::new("ip").args(["netns", "add", name])).map(drop)
}

/// Deletes the named namespace; a namespace that is already gone is not an error.
pub fn del_netns(name: &str) -> Result<(), NetnsError> {
    if !netns_exists(name) {
        return Ok(());
    }
    match run(Command::new("ip").args(["netns", "del", name])) {
        Err(_) if !netns_exists(name) => Ok(()),
        other => other.map(drop),
    }
}

/// `program arg arg` for error messages.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}
