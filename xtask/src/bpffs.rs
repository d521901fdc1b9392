//! Leaves /sys/fs/bpf as the demo or the tests found it. The agent mounts bpffs there
//! when it is missing (a fresh machine of this kind has none); when a run of ours did
//! that and left nothing pinned, the mount goes again at the end of the run.
use std::path::Path;

const BPFFS: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// What the kernel itself puts in every new bpffs mount (bpf_preload).
const KERNEL_ENTRIES: &[&str] = &["maps.debug", "progs.debug"];

fn is_bpffs(p: &Path) -> bool {
    nix::sys::statfs::statfs(p).is_ok_and(|st| st.filesystem_type().0 == BPF_FS_MAGIC)
}

/// Records whether bpffs is mounted now; on drop, unmounts one mounted since if only
/// the kernel's own entries are in it.
pub struct BpffsGuard {
    was_mounted: bool,
}

impl BpffsGuard {
    pub fn new() -> Self {
        Self {
            was_mounted: is_bpffs(Path::new(BPFFS)),
        }
    }
}

impl Drop for BpffsGuard {
    fn drop(&mut self) {
        let dir = Path::new(BPFFS);
        if self.was_mounted || !is_bpffs(dir) {
            return;
        }
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let only_kernel = entries.filter_map(Result::ok).all(|e| {
            KERNEL_ENTRIES
                .iter()
                .any(|k| e.file_name().to_str() == Some(*k))
        });
        if !only_kernel {
            println!("bpffs stays mounted at {BPFFS}: something is pinned in it");
            return;
        }
        match nix::mount::umount(dir) {
            Ok(()) => println!("unmounted the bpffs this run mounted at {BPFFS}"),
            Err(e) => println!("cannot unmount the bpffs at {BPFFS}: {e}"),
        }
    }
}
