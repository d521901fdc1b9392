//! The measured path and the load on it: a lab with outside hosts `a` and `b` routed
//! through the lab's host namespace (`a → lx-a → routing → lx-b → b`), and three
//! measurements over it, each read at the receiver:
//!
//! - 64-byte UDP packets/s from `trafgen` (two forks, both cores), counted in `b`'s
//!   interface receive counter;
//! - TCP throughput from `iperf3` with several streams;
//! - new TCP connections/s: client threads in `a` connect and reset (SO_LINGER 0,
//!   so no TIME_WAIT) against an accept loop in `b`.
//!
//! Everything lives in the lab's namespaces and is removed with it (the lab's drop
//! deletes them; trafgen runs in its own process group and is stopped with it).

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use enforcer_tests::{Lab, LabSpec, lab::netns};
use nix::sys::{
    signal::{Signal, killpg},
    socket::{
        AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, accept4, bind, connect, listen,
        setsockopt, socket, sockopt,
    },
    time::{TimeVal, TimeValLike as _},
};
use serde_json::Value;

use crate::{
    inputs,
    util::{Ctx as _, Result, err, run, sleep},
};

/// A lab ready for measurements: iperf3 and the connection server listen in `b`.
pub struct BenchLab {
    pub lab: Lab,
    /// trafgen config of the UDP flood a → b:9.
    flood: PathBuf,
    conn_server: Option<ConnServer>,
}

impl BenchLab {
    pub fn up(scratch: &Path) -> Result<Self> {
        let spec = LabSpec::from_yaml(&inputs::lab_yaml()).ctx("bench lab spec")?;
        let lab = Lab::up(&spec).ctx("making the bench lab")?;
        // Many short connections: the whole ephemeral range.
        netns::sysctls_in(
            lab.netns("a"),
            &[("net.ipv4.ip_local_port_range", "1024 65535")],
        )
        .ctx("sysctl in a")?;
        let batch: String = (0..inputs::CONN_SOURCES as usize)
            .map(|i| format!("addr add {}/24 dev eth0\n", inputs::conn_source(i)))
            .collect();
        let batch_file = scratch.join(format!("addrs-{}.ip", lab.prefix()));
        std::fs::write(&batch_file, batch).ctx("write ip batch")?;
        run(Command::new("ip")
            .args(["-n", lab.netns("a"), "-batch"])
            .arg(&batch_file))
        .ctx("connection-rate source addresses")?;
        let gw_mac = mac(lab.host_netns(), "lx-a")?;
        let own_mac = mac(lab.netns("a"), "eth0")?;
        let flood = scratch.join(format!("flood-{}.cfg", lab.prefix()));
        std::fs::write(
            &flood,
            trafgen_cfg(&gw_mac, &own_mac, inputs::UDP_PORT, None),
        )
        .ctx("write trafgen config")?;
        let mut iperf = lab.cmd("b", "iperf3");
        iperf
            .args(["-s", "-p", &inputs::IPERF_PORT.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Stopped by the lab's teardown.
        lab.spawn_command(iperf).ctx("start iperf3 -s")?;
        let conn_server = ConnServer::start(&lab)?;
        // Resolve neighbours both ways before anything is timed.
        for _ in 0..20 {
            if enforcer_tests::ping(&lab, "a", inputs::B4) {
                break;
            }
            sleep(Duration::from_millis(100))?;
        }
        Ok(Self {
            lab,
            flood,
            conn_server: Some(conn_server),
        })
    }

    /// `(received, sent)` 64-byte UDP packets/s over `secs`, after a warm-up.
    pub fn udp_pps(&self, secs: f64) -> Result<(f64, f64)> {
        let tg = Trafgen::start(&self.lab, &self.flood, None)?;
        sleep(Duration::from_millis(700))?;
        let (rx0, tx0, t0) = (
            dev_counter(self.lab.netns("b"), "eth0", Counter::RxPackets)?,
            dev_counter(self.lab.netns("a"), "eth0", Counter::TxPackets)?,
            Instant::now(),
        );
        sleep(Duration::from_secs_f64(secs))?;
        let (rx1, tx1, dt) = (
            dev_counter(self.lab.netns("b"), "eth0", Counter::RxPackets)?,
            dev_counter(self.lab.netns("a"), "eth0", Counter::TxPackets)?,
            t0.elapsed().as_secs_f64(),
        );
        tg.stop();
        Ok(((rx1 - rx0) as f64 / dt, (tx1 - tx0) as f64 / dt))
    }

    /// TCP goodput a → b in Gbit/s (`iperf3 -P streams`).
    pub fn tcp_gbps(&self, secs: f64, streams: u32) -> Result<f64> {
        let t = secs.ceil().max(1.0) as u64;
        let mut last = None;
        for _ in 0..3 {
            let mut cmd = Command::new("timeout");
            cmd.args(["-s", "KILL", &(t + 15).to_string()])
                .args(["ip", "netns", "exec", self.lab.netns("a"), "iperf3"])
                .args([
                    "-c",
                    &inputs::B4.to_string(),
                    "-p",
                    &inputs::IPERF_PORT.to_string(),
                ])
                .args(["-P", &streams.to_string(), "-t", &t.to_string(), "-J"])
                .args(["--connect-timeout", "3000"]);
            match run(&mut cmd) {
                Ok(out) => {
                    let v: Value = serde_json::from_slice(&out.stdout).ctx("iperf3 JSON")?;
                    let bps = v["end"]["sum_received"]["bits_per_second"]
                        .as_f64()
                        .ctx("iperf3 JSON has no end.sum_received.bits_per_second")?;
                    return Ok(bps / 1e9);
                }
                // The server takes one test at a time and may still be finishing.
                Err(e) => last = Some(e),
            }
            sleep(Duration::from_millis(500))?;
        }
        Err(last.unwrap_or_else(|| err("iperf3 failed")))
    }

    /// New TCP connections per second from `threads` clients.
    pub fn conn_rate(&self, secs: f64, threads: usize) -> Result<f64> {
        let deadline = Instant::now() + Duration::from_secs_f64(secs);
        let start = Instant::now();
        let mut handles = Vec::new();
        for i in 0..threads {
            let h = netns::spawn_in_netns(self.lab.netns("a"), format!("conn-{i}"), move || {
                conn_client(deadline, i, threads)
            })
            .ctx("client thread in a")?;
            handles.push(h);
        }
        let mut ok = 0u64;
        let mut failed = 0u64;
        for h in handles {
            if let Ok(Some((o, f))) = h.join() {
                ok += o;
                failed += f;
            }
        }
        let dt = start.elapsed().as_secs_f64();
        if ok == 0 {
            return Err(err(format!("no connection succeeded ({failed} failed)")));
        }
        Ok(ok as f64 / dt)
    }

    /// Starts a UDP flood at `pps` (None: as fast as it goes) to `ports` destination
    /// ports (`dinc` over them); stopped when the guard drops.
    pub fn flood(
        &self,
        scratch: &Path,
        ports: Option<(u16, u16)>,
        pps: Option<u64>,
    ) -> Result<Trafgen> {
        let cfg = match ports {
            None => self.flood.clone(),
            Some(range) => {
                let gw_mac = mac(self.lab.host_netns(), "lx-a")?;
                let own_mac = mac(self.lab.netns("a"), "eth0")?;
                let p = scratch.join(format!("ports-{}.cfg", self.lab.prefix()));
                std::fs::write(&p, trafgen_cfg(&gw_mac, &own_mac, 0, Some(range)))
                    .ctx("write trafgen config")?;
                p
            }
        };
        Trafgen::start(&self.lab, &cfg, pps)
    }
}

impl Drop for BenchLab {
    fn drop(&mut self) {
        if let Some(s) = self.conn_server.take() {
            s.stop();
        }
        // The lab itself is dropped next: namespaces (and all state in them) go.
    }
}

/// trafgen config: 64-byte Ethernet frames a → b, UDP to `port` or to every port of
/// `range` in turn.
fn trafgen_cfg(dst_mac: &str, src_mac: &str, port: u16, range: Option<(u16, u16)>) -> String {
    let dp = match range {
        Some((lo, hi)) => format!("dinc({lo}, {hi})"),
        None => port.to_string(),
    };
    format!(
        "{{\n  eth(da={dst_mac}, sa={src_mac}),\n  ipv4(saddr={}, daddr={}, ttl=64),\n  udp(sp=4000, dp={dp}),\n  fill(0x00, 22)\n}}\n",
        inputs::A4,
        inputs::B4
    )
}

/// A running trafgen, in its own process group: stopping it stops its forks too.
pub struct Trafgen {
    child: Option<Child>,
}

impl Trafgen {
    fn start(lab: &Lab, cfg: &Path, pps: Option<u64>) -> Result<Self> {
        use std::os::unix::process::CommandExt as _;
        let mut cmd = lab.cmd("a", "trafgen");
        cmd.args(["--dev", "eth0", "--conf"])
            .arg(cfg)
            // Both cores; leave the machine's socket memory sysctls and IRQ
            // affinity alone.
            .args(["-P", "2", "--no-sock-mem", "-Q", "-C"]);
        if let Some(r) = pps {
            cmd.args(["-b", &format!("{r}pps")]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0);
        let child = cmd.spawn().ctx("start trafgen")?;
        Ok(Self { child: Some(child) })
    }

    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pgid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = killpg(pgid, Signal::SIGINT);
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Whatever is left of the group (a fork that ignored SIGINT).
        let _ = killpg(pgid, Signal::SIGKILL);
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Trafgen {
    fn drop(&mut self) {
        self.halt();
    }
}

#[derive(Clone, Copy)]
enum Counter {
    RxPackets,
    TxPackets,
}

/// An interface counter read from `/proc/thread-self/net/dev` inside `ns`.
fn dev_counter(ns: &str, iface: &str, which: Counter) -> Result<u64> {
    let text = netns::in_netns(ns, || std::fs::read_to_string("/proc/thread-self/net/dev"))
        .ctx(format!("enter {ns}"))?
        .ctx("read /proc/net/dev")?;
    for line in text.lines() {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        if name.trim() != iface {
            continue;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        let i = match which {
            Counter::RxPackets => 1,
            Counter::TxPackets => 9,
        };
        return f.get(i).copied().ctx("short /proc/net/dev line");
    }
    Err(err(format!("no {iface} in {ns}")))
}

fn mac(ns: &str, iface: &str) -> Result<String> {
    let out = run(Command::new("ip").args(["-n", ns, "-j", "link", "show", iface]))?;
    let v: Value = serde_json::from_slice(&out.stdout).ctx("ip -j link JSON")?;
    v[0]["address"]
        .as_str()
        .map(str::to_owned)
        .ctx(format!("no MAC for {iface} in {ns}"))
}

/// Accepts and closes connections on `b`:7000 until stopped.
struct ConnServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ConnServer {
    fn start(lab: &Lab) -> Result<Self> {
        // The socket belongs to the namespace it was made in; the accept loop can
        // then run on any thread.
        let fd = lab
            .try_in_netns("b", || -> nix::Result<OwnedFd> {
                let fd = socket(
                    AddressFamily::Inet,
                    SockType::Stream,
                    SockFlag::SOCK_CLOEXEC,
                    None,
                )?;
                setsockopt(&fd, sockopt::ReuseAddr, &true)?;
                let addr =
                    SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, inputs::CONN_PORT));
                bind(fd.as_raw_fd(), &addr)?;
                listen(&fd, Backlog::new(4096)?)?;
                setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::milliseconds(50))?;
                Ok(fd)
            })
            .ctx("enter b")?
            .ctx("listen on b:7000")?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("conn-server".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    if let Ok(c) = accept4(fd.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
                        // SAFETY: accept4 returned a new descriptor that we own.
                        drop(unsafe { OwnedFd::from_raw_fd(c) });
                    }
                }
            })
            .ctx("conn server thread")?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connects to b:7000 and resets, as often as it can until `deadline`;
/// returns (succeeded, failed).
fn conn_client(deadline: Instant, thread: usize, threads: usize) -> (u64, u64) {
    let addr = SockaddrIn::from(SocketAddrV4::new(inputs::B4, inputs::CONN_PORT));
    let mut n = thread;
    let linger = nix::libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let (mut ok, mut failed) = (0u64, 0u64);
    while Instant::now() < deadline {
        let Ok(fd) = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        ) else {
            failed += 1;
            continue;
        };
        // A fresh tuple every time: rotate the source address, and let connect()
        // pick the port (not bind()).
        let src = SockaddrIn::from(SocketAddrV4::new(inputs::conn_source(n), 0));
        n += threads;
        let _ = setsockopt(&fd, sockopt::IpBindAddressNoPort, &true);
        if bind(fd.as_raw_fd(), &src).is_err() {
            failed += 1;
            continue;
        }
        let _ = setsockopt(&fd, sockopt::Linger, &linger);
        let _ = setsockopt(&fd, sockopt::SendTimeout, &TimeVal::milliseconds(1000));
        match connect(fd.as_raw_fd(), &addr) {
            Ok(()) => ok += 1,
            Err(_) => failed += 1,
        }
        // Closing with linger 0 sends RST: no TIME_WAIT on either side.
        drop(fd);
    }
    (ok, failed)
}
