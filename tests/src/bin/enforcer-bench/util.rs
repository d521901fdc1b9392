//! Errors, the interrupt flag, statistics and small process helpers.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds what was being done to an error.
pub trait Ctx<T> {
    fn ctx(self, what: impl std::fmt::Display) -> Result<T>;
}

impl<T, E: std::fmt::Display> Ctx<T> for std::result::Result<T, E> {
    fn ctx(self, what: impl std::fmt::Display) -> Result<T> {
        self.map_err(|e| format!("{what}: {e}").into())
    }
}

impl<T> Ctx<T> for Option<T> {
    fn ctx(self, what: impl std::fmt::Display) -> Result<T> {
        self.ok_or_else(|| format!("{what}").into())
    }
}

pub fn err(msg: impl std::fmt::Display) -> Error {
    msg.to_string().into()
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc_int) {
    STOP.store(true, Ordering::SeqCst);
}

#[allow(non_camel_case_types)]
type libc_int = std::os::raw::c_int;

/// SIGINT and SIGTERM set a flag instead of killing: the run stops at the next
/// check and every guard (labs, pin directories, agent) cleans up on the way out.
pub fn install_signal_handlers() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        let _ = unsafe { sigaction(sig, &action) };
    }
}

pub fn interrupted() -> bool {
    STOP.load(Ordering::SeqCst)
}

pub fn check_interrupt() -> Result<()> {
    if interrupted() {
        Err(err("interrupted"))
    } else {
        Ok(())
    }
}

/// Sleeps `d`, waking early (with an error) when interrupted.
pub fn sleep(d: Duration) -> Result<()> {
    let end = Instant::now() + d;
    loop {
        check_interrupt()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

/// Median, minimum and maximum of some samples.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub samples: Vec<f64>,
}

impl Spread {
    pub fn of(samples: &[f64]) -> Self {
        let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        let median = match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
        };
        Self {
            median,
            min: v.first().copied().unwrap_or(f64::NAN),
            max: v.last().copied().unwrap_or(f64::NAN),
            samples: samples.to_vec(),
        }
    }
}

/// Runs a command to completion; error with its stderr if it fails.
pub fn run(cmd: &mut Command) -> Result<std::process::Output> {
    let line = describe(cmd);
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .ctx(format!("cannot run `{line}`"))?;
    if !out.status.success() {
        return Err(err(format!(
            "`{line}` failed ({}): {}",
            out.status,
            first_lines(&String::from_utf8_lossy(&out.stderr))
        )));
    }
    Ok(out)
}

/// Runs a command with `input` on its stdin.
pub fn run_with_input(cmd: &mut Command, input: &Path) -> Result<std::process::Output> {
    let line = format!("{} < {}", describe(cmd), input.display());
    let file = std::fs::File::open(input).ctx(format!("open {}", input.display()))?;
    let out = cmd
        .stdin(file)
        .output()
        .ctx(format!("cannot run `{line}`"))?;
    if !out.status.success() {
        return Err(err(format!(
            "`{line}` failed ({}): {}",
            out.status,
            first_lines(&String::from_utf8_lossy(&out.stderr))
        )));
    }
    Ok(out)
}

/// The first lines of a tool's error output (nft quotes whole files).
fn first_lines(text: &str) -> String {
    let lines: Vec<&str> = text.trim().lines().collect();
    let mut s = lines[..lines.len().min(3)].join(" / ");
    if lines.len() > 3 {
        s.push_str(" / …");
    }
    s
}

pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A directory removed on drop (pin directories, scratch files).
pub struct DirGuard(pub PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        let _ = enforcer::dataplane::cleanup(&self.0);
    }
}

/// The 1-, 5- and 15-minute load averages.
pub fn loadavg() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = text
        .split_whitespace()
        .map(|s| s.parse().unwrap_or(f64::NAN));
    [
        it.next().unwrap_or(f64::NAN),
        it.next().unwrap_or(f64::NAN),
        it.next().unwrap_or(f64::NAN),
    ]
}

/// Progress on stderr.
pub fn say(msg: impl std::fmt::Display) {
    eprintln!("bench: {msg}");
}
