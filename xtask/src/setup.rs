//! `cargo xtask setup`: installs and checks what the build and the tests need on a fresh
//! Debian 12 machine (rustup toolchains, Debian packages, bpf-linker) and warns about kernel
//! and runtime prerequisites. Idempotent, a few seconds when everything is present. One line
//! per piece: `ok`, `inst` (installed just now), `warn`, or `FAIL` with what to do; the exit
//! status is nonzero if anything is still missing.
//!
//! It runs before the project's toolchains exist, compiled by the machine's preinstalled rustc
//! (1.95), so xtask depends on nothing that needs a newer one.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use anyhow::Context as _;

/// Userspace toolchain: aya 0.16 needs rustc >= 1.98. Its LLVM 23 is fine for userspace, not
/// for the eBPF object.
pub const STABLE: &str = "1.99.1";
const STABLE_COMPONENTS: &[&str] = &["clippy", "rustfmt"];
/// eBPF toolchain: a nightly on LLVM 22, the LLVM that Debian's llvm-22-dev gives bpf-linker
/// (LLVM 23 nightlies fail at link time with `Invalid record`). `enforcer/build.rs` uses it.
pub const EBPF_NIGHTLY: &str = "nightly-2026-07-01";
const NIGHTLY_COMPONENTS: &[&str] = &["rust-src", "clippy", "rustfmt"];
const BPF_LINKER_VERSION: &str = "0.13.0";
/// Runs the fuzz targets in fuzz/ (`cargo xtask test` smoke-runs each of them).
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";
const LLVM_MAJOR: &str = "22";
/// Build: compiler, LLVM 22 for bpf-linker. Tests and demo: namespaces and traffic tools,
/// peer firewalls for the benchmarks, Prometheus for the rules tests, Chromium for
/// dashboard screenshots.
const APT_PACKAGES: &[&str] = &[
    "build-essential",
    "pkg-config",
    "llvm-22-dev",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
    "iproute2",
    "iputils-ping",
    "python3",
    "iperf3",
    // trafgen, the packet generator of `cargo xtask bench`.
    "netsniff-ng",
    "netcat-openbsd",
    "bpftool",
    "ethtool",
    "hping3",
    "tcpdump",
    "nftables",
    "iptables",
    "curl",
    "python3-scapy",
    "prometheus",
    // The baseline's Alertmanager push is tested against the real thing.
    "prometheus-alertmanager",
    "chromium",
];

/// Options of `cargo xtask setup`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only check and report; install nothing.
    #[arg(long)]
    check: bool,
}

/// Runs the setup; `ExitCode::FAILURE` if any piece is missing at the end.
pub fn execute(args: &Args) -> anyhow::Result<ExitCode> {
    let log = std::env::temp_dir().join("enforcer-setup.log");
    std::fs::write(&log, "").with_context(|| format!("cannot write {}", log.display()))?;
    let mut setup = Setup {
        check: args.check,
        log,
        failures: 0,
        root: nix::unistd::geteuid().is_root(),
    };
    let workspace = workspace_root();
    let stable = setup.toolchain(STABLE, STABLE_COMPONENTS);
    setup.toolchain(EBPF_NIGHTLY, NIGHTLY_COMPONENTS);
    if stable {
        setup.workspace_override(&workspace);
    }
    let apt = setup.apt_packages();
    setup.bpf_linker(stable && apt);
    setup.cargo_fuzz(stable);
    setup.dashboard_check_packages(&workspace);
    setup.python_tools(apt);
    setup.runtime_checks();
    if setup.failures == 0 {
        println!("setup: everything is in place");
        Ok(ExitCode::SUCCESS)
    } else {
        println!(
            "setup: {} piece(s) missing; command output is in {}",
            setup.failures,
            setup.log.display()
        );
        Ok(ExitCode::FAILURE)
    }
}

struct Setup {
    check: bool,
    log: PathBuf,
    failures: usize,
    root: bool,
}

impl Setup {
    fn ok(&self, what: &str) {
        println!("ok   {what}");
    }

    fn installed(&self, what: &str) {
        println!("inst {what}");
    }

    fn busy(&self, what: &str) {
        println!("...  {what}");
        let _ = std::io::stdout().flush();
    }

    fn warn(&self, what: &str, why: &str) {
        println!("warn {what}: {why}");
    }

    fn fail(&mut self, what: &str, why: &str) {
        println!("FAIL {what}: {why}");
        self.failures += 1;
    }

    /// The hint for a missing piece in `--check` mode.
    fn missing(&mut self, what: &str, detail: &str) {
        self.fail(
            what,
            &format!("{detail}; run `cargo xtask setup` to install it"),
        );
    }

    /// Runs an install step, logging all its output; the error holds its last lines.
    fn run(&self, cmd: &mut Command) -> Result<(), String> {
        let line = describe(cmd);
        let output = cmd.stdin(Stdio::null()).output();
        let mut entry = format!("$ {line}\n");
        let result = match &output {
            Ok(out) => {
                entry.push_str(&String::from_utf8_lossy(&out.stdout));
                entry.push_str(&String::from_utf8_lossy(&out.stderr));
                if out.status.success() {
                    Ok(())
                } else {
                    let text = String::from_utf8_lossy(&out.stderr);
                    let lines: Vec<&str> = text
                        .lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .collect();
                    let tail = &lines[lines.len().saturating_sub(3)..];
                    Err(format!(
                        "`{line}` failed ({}): {}",
                        out.status,
                        tail.join(" / ")
                    ))
                }
            }
            Err(e) => Err(format!("cannot run `{line}`: {e}")),
        };
        let _ = writeln!(entry, "-> {result:?}\n");
        if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(&self.log) {
            let _ = f.write_all(entry.as_bytes());
        }
        result
    }

    /// `kubernetes-validate` (PyPI) for the manifests in deploy/kubernetes.
    fn python_tools(&mut self, apt_ok: bool) {
        const WHAT: &str = "kubernetes-validate (PyPI)";
        let present = || {
            Command::new("kubernetes-validate")
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if present() {
            self.ok(WHAT);
            return;
        }
        if self.check {
            self.missing(WHAT, "not installed");
            return;
        }
        if !apt_ok {
            self.fail(WHAT, "python3 is not in place");
            return;
        }
        self.busy(WHAT);
        match self.run(Command::new("python3").args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "kubernetes-validate",
        ])) {
            Ok(()) if present() => self.installed(WHAT),
            Ok(()) => self.fail(WHAT, "installed, but `kubernetes-validate` is not on PATH"),
            Err(e) => self.fail(WHAT, &e),
        }
    }

    /// A rustup toolchain with its components; true if present at the end.
    fn toolchain(&mut self, name: &str, components: &[&str]) -> bool {
        let what = format!("rust {name} + {}", components.join(", "));
        let Some(list) = query(rustup().args(["toolchain", "list"])) else {
            self.fail(
                &what,
                "rustup not found or not working: install rustup (Debian package `rustup`) first",
            );
            return false;
        };
        let prefix = format!("{name}-");
        let present = list.lines().any(|l| {
            l.split_whitespace()
                .next()
                .is_some_and(|t| t == name || t.starts_with(&prefix))
        });
        let missing = if present {
            missing_components(name, components)
        } else {
            components.iter().map(|c| (*c).to_owned()).collect()
        };
        if present && missing.is_empty() {
            self.ok(&what);
            return true;
        }
        if self.check {
            let detail = if present {
                format!("components {} missing", missing.join(", "))
            } else {
                "toolchain not installed".to_owned()
            };
            self.missing(&what, &detail);
            return false;
        }
        let result = if present {
            self.busy(&format!("adding {} to {name}", missing.join(", ")));
            self.run(
                rustup()
                    .args(["component", "add", "--toolchain", name])
                    .args(&missing),
            )
        } else {
            self.busy(&format!("installing {what} (profile minimal)"));
            self.run(rustup().args([
                "toolchain",
                "install",
                name,
                "--profile",
                "minimal",
                "--no-self-update",
                "--component",
                &components.join(","),
            ]))
        };
        let still = missing_components(name, components);
        match result {
            Ok(()) if still.is_empty() => {
                self.installed(&what);
                true
            }
            Ok(()) => {
                self.fail(
                    &what,
                    &format!("components still missing: {}", still.join(", ")),
                );
                false
            }
            Err(e) => {
                self.fail(
                    &what,
                    &format!("{e}; check the network and `rustup --version`"),
                );
                false
            }
        }
    }

    /// `rustup override set 1.99.1` for the workspace, so a plain `cargo` there uses it.
    //
    // The repository deliberately has no rust-toolchain.toml: this machine sets
    // RUSTUP_AUTO_INSTALL=0, and a toolchain file naming a toolchain that is not installed yet
    // makes every cargo call in the repository fail — including the `cargo xtask setup` that
    // would install it. A directory override is machine state, so setup creates it.
    fn workspace_override(&mut self, workspace: &Path) {
        let what = format!("rustup override {STABLE} for {}", workspace.display());
        let list = query(rustup().args(["override", "list"])).unwrap_or_default();
        let set = list.lines().any(|l| {
            let l = l.trim_end();
            let Some((path, toolchain)) = l.rsplit_once(char::is_whitespace) else {
                return false;
            };
            Path::new(path.trim()) == workspace
                && (toolchain == STABLE || toolchain.starts_with(&format!("{STABLE}-")))
        });
        if set {
            self.ok(&what);
        } else if self.check {
            self.missing(&what, "not set");
        } else {
            let path = workspace.to_string_lossy();
            match self.run(rustup().args(["override", "set", STABLE, "--path", &path])) {
                Ok(()) => self.installed(&what),
                Err(e) => self.fail(&what, &e),
            }
        }
    }

    /// Debian packages, installed together; true if all are present at the end.
    fn apt_packages(&mut self) -> bool {
        let what = format!("apt packages ({})", APT_PACKAGES.len());
        let missing = missing_packages();
        if missing.is_empty() {
            self.ok(&what);
            return true;
        }
        let list = missing.join(" ");
        if self.check {
            self.missing(&what, &format!("not installed: {list}"));
            return false;
        }
        if !self.root {
            self.fail(
                &what,
                &format!("not installed: {list}; run setup as root (apt-get install needs it)"),
            );
            return false;
        }
        self.busy(&format!("apt-get install {list}"));
        let apt = |args: &[&str]| {
            let mut cmd = Command::new("apt-get");
            cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
            cmd
        };
        // A failed update (one unreachable mirror, say) can still leave usable lists: go on
        // and let the install decide.
        let updated = self.run(&mut apt(&["update"]));
        // No recommends: they would bring, among 130 other packages, prometheus-node-exporter,
        // a second daemon nothing here uses.
        let mut install = apt(&["install", "-y", "--no-install-recommends"]);
        install.args(&missing);
        let result = self.run(&mut install);
        let still = missing_packages();
        match (result, still.is_empty()) {
            (_, true) => {
                self.installed(&format!("apt packages: {list}"));
                true
            }
            (Ok(()), false) => {
                self.fail(&what, &format!("still missing: {}", still.join(" ")));
                false
            }
            (Err(e), false) => {
                let update = updated.err().map(|u| format!(" (apt-get update: {u})"));
                self.fail(
                    &what,
                    &format!(
                        "still missing: {}: {e}{}",
                        still.join(" "),
                        update.unwrap_or_default()
                    ),
                );
                false
            }
        }
    }

    /// bpf-linker 0.13.0 linked against Debian's LLVM 22.
    fn bpf_linker(&mut self, prerequisites: bool) {
        let what = format!("bpf-linker {BPF_LINKER_VERSION} (LLVM {LLVM_MAJOR})");
        let found = find_program("bpf-linker");
        let problem = match &found {
            None => Some("not installed".to_owned()),
            Some(path) => bpf_linker_problem(path),
        };
        let Some(problem) = problem else {
            self.ok(&what);
            return;
        };
        if self.check {
            self.missing(&what, &problem);
            return;
        }
        if !prerequisites {
            self.fail(
                &what,
                &format!(
                    "{problem}; building it needs rust {STABLE} and llvm-{LLVM_MAJOR}-dev (see above)"
                ),
            );
            return;
        }
        self.busy(&format!(
            "building {what}: {problem} (takes a minute or two)"
        ));
        // `rustup run` rather than `cargo +1.99.1`: it works whichever `cargo` comes first
        // on PATH. Run from $HOME so no project `.cargo/config.toml` applies.
        let mut cmd = rustup();
        cmd.args(["run", STABLE, "cargo", "install", "bpf-linker"])
            .args(["--version", BPF_LINKER_VERSION, "--locked"])
            .args(["--no-default-features", "--features"])
            .arg(format!("llvm-{LLVM_MAJOR}"))
            .env("LLVM_PREFIX", format!("/usr/lib/llvm-{LLVM_MAJOR}"))
            .current_dir(home());
        if found.is_some() {
            // Replace a binary of another version or LLVM.
            cmd.arg("--force");
        }
        let result = self.run(&mut cmd);
        let installed = find_program("bpf-linker");
        let problem = match &installed {
            None => Some("not found after install".to_owned()),
            Some(path) => bpf_linker_problem(path),
        };
        match (result, problem) {
            (Ok(()), None) => {
                self.installed(&what);
                if find_in_path("bpf-linker").is_none() {
                    self.warn(
                        &what,
                        &format!(
                            "installed in {}, which is not on PATH: add it",
                            cargo_bin().display()
                        ),
                    );
                }
            }
            (Ok(()), Some(p)) => self.fail(&what, &p),
            (Err(e), _) => self.fail(&what, &e),
        }
    }

    /// cargo-fuzz, which builds and runs the fuzz targets (fuzz/) on the eBPF nightly.
    fn cargo_fuzz(&mut self, prerequisites: bool) {
        let what = format!("cargo-fuzz {CARGO_FUZZ_VERSION}");
        let found = find_program("cargo-fuzz");
        let version = found
            .as_ref()
            .and_then(|p| query(Command::new(p).arg("--version")))
            .unwrap_or_default();
        if version.trim() == format!("cargo-fuzz {CARGO_FUZZ_VERSION}") {
            self.ok(&what);
            return;
        }
        let problem = if found.is_none() {
            "not installed".to_owned()
        } else {
            format!("found `{}`", version.trim())
        };
        if self.check {
            self.missing(&what, &problem);
            return;
        }
        if !prerequisites {
            self.fail(
                &what,
                &format!("{problem}; installing it needs rust {STABLE}"),
            );
            return;
        }
        self.busy(&format!("installing {what}: {problem}"));
        let mut cmd = rustup();
        cmd.args(["run", STABLE, "cargo", "install", "cargo-fuzz"])
            .args(["--version", CARGO_FUZZ_VERSION, "--locked", "--force"])
            .current_dir(home());
        match self.run(&mut cmd) {
            Ok(()) => self.installed(&what),
            Err(e) => self.fail(&what, &e),
        }
    }

    /// The npm packages `cargo xtask test` type-checks the Grafana dashboards with
    /// (`dashboards/check`: @grafana/schema and TypeScript, pinned by its package-lock.json),
    /// and Node.js/npm to run them (Debian's, if the machine has none).
    fn dashboard_check_packages(&mut self, workspace: &Path) {
        let dir = workspace.join("dashboards/check");
        let what = "npm packages for the dashboard check (dashboards/check)";
        if find_in_path("npm").is_none() {
            if self.check || !self.root {
                self.missing(what, "node and npm are not installed");
                return;
            }
            self.busy("apt-get install nodejs npm");
            let mut apt = Command::new("apt-get");
            apt.args(["install", "-y", "--no-install-recommends", "nodejs", "npm"])
                .env("DEBIAN_FRONTEND", "noninteractive");
            if let Err(e) = self.run(&mut apt) {
                self.fail(what, &e);
                return;
            }
        }
        // Installed, and not older than the lock file: nothing to do.
        let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let lock = modified(&dir.join("package-lock.json"));
        let installed = modified(&dir.join("node_modules/.package-lock.json"));
        let complete = [
            "node_modules/typescript/bin/tsc",
            "node_modules/@grafana/schema/package.json",
        ]
        .iter()
        .all(|f| dir.join(f).is_file());
        if complete && lock.is_some() && installed >= lock {
            self.ok(what);
            return;
        }
        if self.check {
            self.missing(what, "not installed or older than package-lock.json");
            return;
        }
        self.busy(&format!("npm ci in {}", dir.display()));
        let mut npm = Command::new("npm");
        npm.args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir);
        match self.run(&mut npm) {
            Ok(()) => self.installed(what),
            Err(e) => self.fail(
                what,
                &format!("{e}; check that the npm registry is reachable"),
            ),
        }
    }

    /// Kernel and runtime prerequisites that setup cannot fix: warnings only.
    fn runtime_checks(&mut self) {
        if Path::new("/sys/kernel/btf/vmlinux").exists() {
            self.ok("kernel BTF (/sys/kernel/btf/vmlinux)");
        } else {
            self.warn(
                "kernel BTF",
                "/sys/kernel/btf/vmlinux is missing: the agent needs a kernel built with CONFIG_DEBUG_INFO_BTF",
            );
        }
        if self.root {
            self.ok("running as root (the lab and privileged tests need it)");
        } else {
            self.warn(
                "not root",
                "the build works, but the lab and the privileged tests need root",
            );
        }
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let bpffs = mounts.lines().any(|l| {
            let mut f = l.split_whitespace().skip(1);
            f.next() == Some("/sys/fs/bpf") && f.next() == Some("bpf")
        });
        if bpffs {
            self.ok("bpffs mounted at /sys/fs/bpf");
        } else {
            self.warn(
                "bpffs",
                "not mounted at /sys/fs/bpf; the agent mounts it when it starts",
            );
        }
    }
}

/// The workspace root: xtask lives in `<root>/xtask`.
pub fn workspace_root() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = dir.parent().unwrap_or(dir);
    root.canonicalize().unwrap_or_else(|_| root.to_owned())
}

/// `rustup` without the toolchain that the rustup proxy running us put in the environment,
/// which would override what we ask for.
fn rustup() -> Command {
    let mut cmd = Command::new("rustup");
    cmd.env_remove("RUSTUP_TOOLCHAIN");
    cmd
}

/// Stdout of a successful command, `None` otherwise.
fn query(cmd: &mut Command) -> Option<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn missing_components(toolchain: &str, components: &[&str]) -> Vec<String> {
    let installed =
        query(rustup().args(["component", "list", "--installed", "--toolchain", toolchain]))
            .unwrap_or_default();
    components
        .iter()
        .filter(|c| {
            // Listed as `rust-src`, or with the target: `clippy-x86_64-unknown-linux-gnu`.
            !installed
                .lines()
                .any(|l| l == **c || l.starts_with(&format!("{c}-")))
        })
        .map(|c| (*c).to_owned())
        .collect()
}

/// Packages from [`APT_PACKAGES`] that dpkg does not report as installed.
fn missing_packages() -> Vec<String> {
    // One call for all: unknown packages go to stderr (and make the exit status 1).
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Package}\t${Status}\n"])
        .args(APT_PACKAGES)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    APT_PACKAGES
        .iter()
        .filter(|p| {
            !out.lines().any(|l| {
                l.split_once('\t')
                    .is_some_and(|(name, status)| name == **p && status == "install ok installed")
            })
        })
        .map(|p| (*p).to_owned())
        .collect()
}

/// What is wrong with this bpf-linker, if anything.
fn bpf_linker_problem(path: &Path) -> Option<String> {
    let version = query(Command::new(path).arg("--version")).unwrap_or_default();
    let version = version.trim();
    if version != format!("bpf-linker {BPF_LINKER_VERSION}") {
        let seen = if version.is_empty() {
            "no version"
        } else {
            version
        };
        return Some(format!("{} reports `{seen}`", path.display()));
    }
    let libs = query(Command::new("ldd").arg(path)).unwrap_or_default();
    let llvm = format!("libLLVM.so.{LLVM_MAJOR}");
    let linked = libs
        .lines()
        .any(|l| l.contains(&llvm) && !l.contains("not found"));
    if linked {
        None
    } else {
        let seen: Vec<&str> = libs
            .lines()
            .filter(|l| l.contains("LLVM"))
            .map(str::trim)
            .collect();
        let mut problem = format!("{} does not link {llvm}", path.display());
        if !seen.is_empty() {
            let _ = write!(problem, " ({})", seen.join(", "));
        }
        Some(problem)
    }
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("/"), PathBuf::from)
}

/// Where `cargo install` puts binaries.
fn cargo_bin() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map_or_else(|| home().join(".cargo"), PathBuf::from)
        .join("bin")
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// On PATH, or where `cargo install` puts it.
fn find_program(name: &str) -> Option<PathBuf> {
    find_in_path(name).or_else(|| Some(cargo_bin().join(name)).filter(|p| p.is_file()))
}

fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}
