//! Builds the eBPF object from `enforcer-ebpf` with the pinned nightly toolchain and
//! leaves it in OUT_DIR, where `dataplane` embeds it.
use anyhow::{Context as _, anyhow};

/// The eBPF toolchain: its LLVM must match bpf-linker's (see BUILD-NOTES / `cargo xtask setup`).
const DEFAULT_EBPF_TOOLCHAIN: &str = "nightly-2026-07-01";

fn main() -> anyhow::Result<()> {
    println!("cargo::rerun-if-env-changed=ENFORCER_EBPF_TOOLCHAIN");
    let toolchain =
        std::env::var("ENFORCER_EBPF_TOOLCHAIN").unwrap_or_else(|_| DEFAULT_EBPF_TOOLCHAIN.into());
    let manifest = std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?;
    let root = std::path::Path::new(&manifest)
        .parent()
        .ok_or_else(|| anyhow!("no workspace root above {manifest}"))?
        .join("enforcer-ebpf");
    let root = root.to_str().ok_or_else(|| anyhow!("non-UTF-8 path"))?;
    let pkg = aya_build::Package {
        name: "enforcer-ebpf",
        root_dir: root,
        ..Default::default()
    };
    aya_build::build_ebpf([pkg], aya_build::Toolchain::Custom(&toolchain)).with_context(|| {
        format!(
            "building the eBPF object with toolchain {toolchain} failed; \
             run `cargo xtask setup` to install it and bpf-linker"
        )
    })
}
