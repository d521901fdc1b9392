//! `enforcer cleanup`: remove an instance's pinned state.
use std::path::PathBuf;

/// Remove everything the agent pinned for this instance: the TCX links (which
/// detaches the programs: enforcement STOPS) and the maps (counters and connection
/// tracking are lost). Stop the agent first.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Pin directory to remove (default /sys/fs/bpf/enforcer/<instance>).
    #[arg(long)]
    pub pin_dir: Option<PathBuf>,
}

pub fn execute(cli: &super::Cli, a: &Args) -> u8 {
    let paths = cli.paths();
    let dir = a.pin_dir.clone().unwrap_or(paths.pin_dir);
    if std::os::unix::net::UnixStream::connect(&paths.socket).is_ok() {
        eprintln!(
            "error: an agent is still serving {}; stop it before cleaning up",
            paths.socket.display()
        );
        return 1;
    }
    match crate::dataplane::cleanup(&dir) {
        Ok(()) => {
            println!("removed {}", dir.display());
            0
        }
        Err(e) => {
            eprintln!("error: removing {}: {e}", dir.display());
            1
        }
    }
}
