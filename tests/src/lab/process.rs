//! Processes started inside lab namespaces (`ip netns exec`), shared between the test that
//! started them and the lab, which stops whatever is still running on teardown.

use std::process::{Child, ExitStatus};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// A process started in a lab namespace; shared with the lab, which stops it on teardown.
#[derive(Debug, Clone)]
pub struct LabChild {
    child: Arc<Mutex<Child>>,
    pid: u32,
    command: String,
}

impl LabChild {
    pub(crate) fn new(child: Child, command: String) -> Self {
        Self {
            pid: child.id(),
            child: Arc::new(Mutex::new(child)),
            command,
        }
    }
}

impl LabChild {
    /// Process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The command line, for messages.
    pub fn command(&self) -> &str {
        &self.command
    }

    fn lock(&self) -> MutexGuard<'_, Child> {
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Gives access to the `Child` (to take its stdout, say).
    pub fn with_child<R>(&self, f: impl FnOnce(&mut Child) -> R) -> R {
        f(&mut self.lock())
    }

    /// The exit status if the process has ended.
    pub fn try_wait(&self) -> std::io::Result<Option<ExitStatus>> {
        self.lock().try_wait()
    }

    /// Waits up to `timeout` for the process to end.
    pub fn wait_timeout(&self, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM, waits up to `grace`, then kills; returns the exit status.
    pub fn stop(&self, grace: Duration) -> std::io::Result<ExitStatus> {
        if let Some(status) = self.try_wait()? {
            return Ok(status);
        }
        // The child is not reaped yet (try_wait said so), so the pid is still ours.
        if let Ok(pid) = i32::try_from(self.pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if let Some(status) = self.wait_timeout(grace)? {
            return Ok(status);
        }
        let mut child = self.lock();
        child.kill()?;
        child.wait()
    }
}
