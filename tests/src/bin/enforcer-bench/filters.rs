//! The filters compared on the lab's path, each put in place in the lab's host
//! namespace (the router between `a` and `b`) and taken away by a guard:
//!
//! - the enforcer, driven through `Dataplane` directly (load, apply a compiled
//!   policy, attach to `lx-a` and `lx-b` in both directions), with a thread that
//!   drains its event ring buffer as the agent would;
//! - nftables: a named interval set on the forward hook;
//! - iptables (nft or legacy backend): linear rules in FORWARD.
//!
//! Nothing is made outside the lab's namespaces except the enforcer's pin
//! directory on bpffs, which the guard removes.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use enforcer::dataplane::{ApplyReport, Dataplane, Monitoring};
use serde::{Deserialize, Serialize};

use crate::{
    inputs::{self, EnforcerPolicy},
    traffic::BenchLab,
    util::{Ctx as _, DirGuard, Result, run, run_with_input},
};

#[derive(Debug, Clone, Copy)]
pub enum Filter {
    None,
    Enforcer {
        policy: EnforcerPolicy,
        monitoring: Monitoring,
    },
    Nft(usize),
    Iptables {
        legacy: bool,
        rules: usize,
    },
}

pub fn monitoring(flows: bool, events: bool) -> Monitoring {
    Monitoring {
        flows,
        events,
        ..Monitoring::default()
    }
}

/// What putting a filter in place took.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Setup {
    /// Wall time to load the rules (nft -f, iptables-restore, Dataplane::apply).
    pub load_secs: f64,
    /// Entries the enforcer wrote, when it is the enforcer.
    pub enforcer: Option<ApplyReport>,
    /// Parsing and compiling the enforcer's policy (before `load_secs`).
    #[serde(default)]
    pub compile_secs: f64,
}

/// A filter in place; dropping it removes it.
pub enum Active {
    None,
    Enforcer(Box<EnforcerOn>),
    Netfilter { ns: String, legacy: bool },
}

impl Drop for Active {
    fn drop(&mut self) {
        if let Active::Netfilter { ns, legacy } = self {
            // The lab's namespace goes right after; this keeps a failed run from
            // measuring "no filter" with rules still in place.
            let _ = run(Command::new("ip").args(["netns", "exec", ns, "nft", "flush", "ruleset"]));
            if *legacy {
                let _ =
                    run(Command::new("ip").args(["netns", "exec", ns, "iptables-legacy", "-F"]));
            }
        }
    }
}

pub fn put_in_place(filter: &Filter, blab: &BenchLab, scratch: &Path) -> Result<(Active, Setup)> {
    let ns = blab.lab.host_netns().to_owned();
    match *filter {
        Filter::None => Ok((Active::None, Setup::default())),
        Filter::Enforcer { policy, monitoring } => {
            let (compiled, compile_secs) = inputs::compile_timed(policy)?;
            let mut on = EnforcerOn::open()?;
            on.dp.set_monitoring(monitoring);
            let start = Instant::now();
            let dp = &mut on.dp;
            let report = blab
                .lab
                .try_in_netns("host", || dp.apply(&compiled))
                .ctx("enter the lab's host namespace")?
                .ctx("applying the bench policy")?;
            let load_secs = start.elapsed().as_secs_f64();
            if report.attached.len() != 4 {
                return Err(format!("expected 4 links, attached {:?}", report.attached).into());
            }
            Ok((
                Active::Enforcer(Box::new(on)),
                Setup {
                    load_secs,
                    enforcer: Some(report),
                    compile_secs,
                },
            ))
        }
        Filter::Nft(n) => {
            let file = scratch.join(format!("nft-{n}.nft"));
            std::fs::write(&file, inputs::nft_ruleset(n)).ctx("write nft ruleset")?;
            let active = Active::Netfilter {
                ns: ns.clone(),
                legacy: false,
            };
            let start = Instant::now();
            run(Command::new("ip")
                .args(["netns", "exec", &ns, "nft", "-f"])
                .arg(&file))?;
            Ok((
                active,
                Setup {
                    load_secs: start.elapsed().as_secs_f64(),
                    ..Setup::default()
                },
            ))
        }
        Filter::Iptables { legacy, rules } => {
            let file = scratch.join(format!("iptables-{rules}.rules"));
            std::fs::write(&file, inputs::iptables_ruleset(rules)).ctx("write iptables rules")?;
            let tool = if legacy {
                "iptables-legacy-restore"
            } else {
                "iptables-nft-restore"
            };
            let active = Active::Netfilter {
                ns: ns.clone(),
                legacy,
            };
            let start = Instant::now();
            run_with_input(Command::new("ip").args(["netns", "exec", &ns, tool]), &file)?;
            Ok((
                active,
                Setup {
                    load_secs: start.elapsed().as_secs_f64(),
                    ..Setup::default()
                },
            ))
        }
    }
}

/// A loaded enforcer: its dataplane, its pin directory and an event reader.
pub struct EnforcerOn {
    // Field order is drop order: stop the reader, close the object, remove the pins
    // (which detaches the links and frees the maps).
    events: EventDrain,
    pub dp: Dataplane,
    _pins: DirGuard,
}

impl EnforcerOn {
    pub fn open() -> Result<Self> {
        let pins = pin_dir();
        let _ = std::fs::remove_dir_all(&pins);
        let guard = DirGuard(pins.clone());
        let mut dp = Dataplane::open(&pins).ctx("loading the eBPF object")?;
        let events = EventDrain::start(&mut dp)?;
        Ok(Self {
            events,
            dp,
            _pins: guard,
        })
    }

    pub fn events_read(&self) -> u64 {
        self.events.count.load(Ordering::Relaxed)
    }
}

/// `/sys/fs/bpf/enforcer/bench-<pid>-<n>`: unique per process and use.
pub fn pin_dir() -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    PathBuf::from(format!(
        "/sys/fs/bpf/enforcer/bench-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ))
}

/// Removes pin directories left by bench runs that were killed (their pid is gone).
pub fn remove_stale_pins() {
    let Ok(dir) = std::fs::read_dir("/sys/fs/bpf/enforcer") else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("bench-") else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if let Some(pid) = pid
            && pid != std::process::id()
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Reads the event ring buffer every few milliseconds, as the agent's reader task
/// does, so events cost what they cost with a consumer (not a full ring).
struct EventDrain {
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl EventDrain {
    fn start(dp: &mut Dataplane) -> Result<Self> {
        let mut ring = dp.take_events().ctx("event ring buffer")?;
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let (s, c) = (Arc::clone(&stop), Arc::clone(&count));
        let thread = std::thread::Builder::new()
            .name("events".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    let mut n = 0;
                    while let Some(item) = ring.next() {
                        drop(item);
                        n += 1;
                    }
                    c.fetch_add(n, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
            .ctx("event reader thread")?;
        Ok(Self {
            stop,
            count,
            thread: Some(thread),
        })
    }
}

impl Drop for EventDrain {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
