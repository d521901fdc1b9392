//! Real traffic for tests: TCP and UDP echo servers running on threads inside a lab namespace,
//! and the probes tests send at them (connect, echo, ping).
//!
//! Probes take a namespace, a workload or external name, or `host` (see [`Lab::resolve_ns`]),
//! and return `false` for "no answer in time"; they panic only when the namespace itself cannot
//! be entered, which is a bug in the test.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::Lab;
use super::netns::{NetnsError, spawn_in_netns};
use super::spec::Protocol;

/// How often server loops look at their stop flag.
const POLL: Duration = Duration::from_millis(50);

/// Echo servers started by one [`Lab::serve_echo`] call; they stop on [`stop`](Self::stop)
/// or when dropped.
#[derive(Debug)]
pub struct EchoServers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Option<()>>>,
}

impl EchoServers {
    /// Stops the servers and waits for their threads.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            // A panicking server thread has already printed its panic.
            let _ = t.join();
        }
    }
}

impl Drop for EchoServers {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Why an echo server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error("cannot listen on {protocol} port {port} in network namespace `{netns}`")]
    Bind {
        netns: String,
        port: u16,
        protocol: Protocol,
        #[source]
        source: std::io::Error,
    },
}

/// Starts TCP and UDP echo servers on `[::]:port` (dual-stack: the lab sets
/// `net.ipv6.bindv6only=0` in its namespaces) for each port.
pub(crate) fn serve_echo(netns: &str, ports: &[u16]) -> Result<EchoServers, ServeError> {
    let mut servers = EchoServers {
        stop: Arc::new(AtomicBool::new(false)),
        threads: Vec::new(),
    };
    for &port in ports {
        for protocol in [Protocol::Tcp, Protocol::Udp] {
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            let stop = Arc::clone(&servers.stop);
            let thread = spawn_in_netns(netns, format!("echo-{protocol}-{port}"), move || {
                let addr = SocketAddr::from((Ipv6Addr::UNSPECIFIED, port));
                match protocol {
                    Protocol::Tcp => match TcpListener::bind(addr) {
                        Ok(l) => {
                            let _ = tx.send(Ok(()));
                            tcp_echo_loop(&l, &stop);
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    },
                    Protocol::Udp => match UdpSocket::bind(addr) {
                        Ok(s) => {
                            let _ = tx.send(Ok(()));
                            udp_echo_loop(&s, &stop);
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    },
                }
            })?;
            servers.threads.push(thread);
            let bound = rx
                .recv()
                .unwrap_or_else(|_| Err(std::io::Error::other("server thread ended")));
            bound.map_err(|source| ServeError::Bind {
                netns: netns.to_owned(),
                port,
                protocol,
                source,
            })?;
        }
    }
    Ok(servers)
}

fn tcp_echo_loop(listener: &TcpListener, stop: &Arc<AtomicBool>) {
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    let mut connections: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let stop = Arc::clone(stop);
                if let Ok(t) = thread::Builder::new()
                    .name("echo-tcp-conn".into())
                    .spawn(move || tcp_echo_connection(stream, &stop))
                {
                    connections.push(t);
                }
                connections.retain(|t| !t.is_finished());
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(POLL / 5),
            Err(_) => thread::sleep(POLL),
        }
    }
    for t in connections {
        let _ = t.join();
    }
}

fn tcp_echo_connection(mut stream: TcpStream, stop: &AtomicBool) {
    if stream.set_nonblocking(false).is_err() || stream.set_read_timeout(Some(POLL)).is_err() {
        return;
    }
    let mut buf = [0u8; 16 * 1024];
    while !stop.load(Ordering::SeqCst) {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

fn udp_echo_loop(socket: &UdpSocket, stop: &AtomicBool) {
    if socket.set_read_timeout(Some(POLL)).is_err() {
        return;
    }
    let mut buf = [0u8; 64 * 1024];
    while !stop.load(Ordering::SeqCst) {
        if let Ok((n, peer)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&buf[..n], peer);
        }
    }
}

/// Whether a TCP connection from `from` to `addr:port` is established within `timeout`.
pub fn tcp_connect(
    lab: &Lab,
    from: &str,
    addr: impl Into<IpAddr>,
    port: u16,
    timeout: Duration,
) -> bool {
    let target = SocketAddr::new(addr.into(), port);
    lab.in_netns(from, || {
        TcpStream::connect_timeout(&target, timeout).is_ok()
    })
}

/// Whether a TCP connection from `from` to `addr:port` carries a message there and back
/// (an echo server must listen there) within `timeout`.
pub fn tcp_echo(
    lab: &Lab,
    from: &str,
    addr: impl Into<IpAddr>,
    port: u16,
    timeout: Duration,
) -> bool {
    let target = SocketAddr::new(addr.into(), port);
    let deadline = Instant::now() + timeout;
    lab.in_netns(from, || {
        let Ok(mut stream) = TcpStream::connect_timeout(&target, timeout) else {
            return false;
        };
        let message = probe_message("tcp");
        if stream.write_all(&message).is_err() {
            return false;
        }
        let mut got = vec![0u8; message.len()];
        let mut filled = 0;
        while filled < got.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
                return false;
            }
            match stream.read(&mut got[filled..]) {
                Ok(0) => return false,
                Ok(n) => filled += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        got == message
    })
}

/// Whether a UDP datagram from `from` to `addr:port` is echoed back within `timeout` (sent up
/// to three times, in case the first is lost while neighbours are resolved).
pub fn udp_echo(
    lab: &Lab,
    from: &str,
    addr: impl Into<IpAddr>,
    port: u16,
    timeout: Duration,
) -> bool {
    let target = SocketAddr::new(addr.into(), port);
    lab.in_netns(from, || {
        let local: IpAddr = match target {
            SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
            SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
        };
        let Ok(socket) = UdpSocket::bind((local, 0)) else {
            return false;
        };
        if socket.connect(target).is_err() {
            return false;
        }
        let message = probe_message("udp");
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; message.len() + 1];
        for attempt in 1..=3u32 {
            // A send can fail at once with ECONNREFUSED from an earlier ICMP error: keep trying
            // until the deadline like a real client would.
            let _ = socket.send(&message);
            let attempt_end = Instant::now() + timeout / 3;
            let until = if attempt == 3 {
                deadline
            } else {
                attempt_end.min(deadline)
            };
            loop {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() || socket.set_read_timeout(Some(left)).is_err() {
                    break;
                }
                match socket.recv(&mut buf) {
                    Ok(n) if buf[..n] == message[..] => return true,
                    Ok(_) => {}
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                        thread::sleep(POLL.min(left));
                        break;
                    }
                    Err(_) => break,
                }
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        false
    })
}

/// Whether one ICMP echo from `from` to `addr` is answered within a second
/// (`ip netns exec NS ping -c1 -W1`).
pub fn ping(lab: &Lab, from: &str, addr: impl Into<IpAddr>) -> bool {
    let addr = addr.into();
    let family = if addr.is_ipv4() { "-4" } else { "-6" };
    lab.cmd(from, "ping")
        .args([family, "-n", "-q", "-c1", "-W1", &addr.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A payload unique per probe, so a stale echo cannot be taken for the answer.
fn probe_message(kind: &str) -> Vec<u8> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("enforcer-lab {kind} probe {} {n}", std::process::id()).into_bytes()
}
