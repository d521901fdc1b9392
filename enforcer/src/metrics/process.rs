//! The agent's own resource use, read from `/proc/self` at scrape time: CPU seconds,
//! resident memory, threads, open file descriptors and start time.
use std::path::PathBuf;

/// Why `/proc/self` could not be read (the process series are then left out).
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: unexpected format ({what})")]
    Format { path: PathBuf, what: &'static str },
}

/// A reading of the process's resource use.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time.
    pub cpu_seconds: f64,
    pub resident_memory_bytes: u64,
    pub virtual_memory_bytes: u64,
    pub threads: u64,
    pub open_fds: u64,
    /// Seconds since the Unix epoch.
    pub start_time_seconds: f64,
}

/// The fields of `/proc/<pid>/stat` that matter here, in clock ticks and pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    utime: u64,
    stime: u64,
    threads: u64,
    starttime: u64,
    vsize: u64,
    rss_pages: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) may hold spaces and
/// parentheses, so the fields are counted from its last `)`.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    // After the name: field 3 (state) is index 0 here.
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |field: usize| f.get(field - 3)?.parse::<u64>().ok();
    Some(Stat {
        utime: num(14)?,
        stime: num(15)?,
        threads: num(20)?,
        starttime: num(22)?,
        vsize: num(23)?,
        rss_pages: num(24)?,
    })
}

/// `btime` (boot time, seconds since the epoch) from `/proc/stat`.
fn parse_btime(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn read(path: &str) -> Result<String, ProcessError> {
    std::fs::read_to_string(path).map_err(|source| ProcessError::Read {
        path: path.into(),
        source,
    })
}

impl ProcessStats {
    /// Reads the current process's figures.
    pub fn read_self() -> Result<Self, ProcessError> {
        let stat = parse_stat(&read("/proc/self/stat")?).ok_or(ProcessError::Format {
            path: "/proc/self/stat".into(),
            what: "fewer than 24 numeric fields",
        })?;
        let btime = parse_btime(&read("/proc/stat")?).ok_or(ProcessError::Format {
            path: "/proc/stat".into(),
            what: "no btime line",
        })?;
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .map_err(|source| ProcessError::Read {
                path: "/proc/self/fd".into(),
                source,
            })?
            .count() as u64;
        // Both are fixed for the life of the process; sysconf cannot fail for them on
        // Linux, the fallbacks are the values of every Linux platform we run on.
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .filter(|t| *t > 0)
            .unwrap_or(100) as f64;
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .filter(|p| *p > 0)
            .unwrap_or(4096) as u64;
        Ok(Self {
            cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
            resident_memory_bytes: stat.rss_pages * page,
            virtual_memory_bytes: stat.vsize,
            threads: stat.threads,
            open_fds,
            start_time_seconds: btime as f64 + stat.starttime as f64 / ticks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis() {
        let text = "4242 (tokio (x) 1) S 1 4242 4242 0 -1 4194560 2181 0 0 0 \
                    150 25 0 0 20 0 7 0 123456 987654321 3000 18446744073709551615 \
                    1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                utime: 150,
                stime: 25,
                threads: 7,
                starttime: 123456,
                vsize: 987654321,
                rss_pages: 3000,
            })
        );
        assert_eq!(parse_stat("12 (x) S 1 2"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn btime_line() {
        assert_eq!(
            parse_btime("cpu 1 2 3\nbtime 1700000000\nprocesses 9\n"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_btime("cpu 1\n"), None);
    }

    #[test]
    fn reads_this_process() {
        let p = ProcessStats::read_self().expect("/proc/self");
        assert!(p.resident_memory_bytes > 0 && p.threads >= 1 && p.open_fds >= 3);
        assert!(p.start_time_seconds > 1.0e9, "{p:?}");
    }
}
