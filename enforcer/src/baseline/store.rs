//! The baseline file: versioned JSON, written atomically (temporary file in the same
//! directory, fsync, rename, fsync of the directory) so a crash leaves the old or the
//! new file, never half of one. A file that cannot be used (not JSON, another format
//! or version, values out of range) is renamed `<file>.corrupt-<unix seconds>` and
//! reported; learning starts afresh. Never a crash.
use std::{
    io::Write as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::{
    BaselineError, EdgeRef, Engine,
    engine::{EdgeState, WorkloadState},
    fanout::Peak,
    fmt_ms,
    settings::Settings,
};

/// `format` of every baseline file.
pub const FORMAT: &str = "enforcer-baseline";
/// Bumped on every incompatible change; another version is set aside, not misread.
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EdgeEntry {
    #[serde(flatten)]
    pub edge: EdgeRef,
    #[serde(flatten)]
    pub state: EdgeState,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairEntry {
    pub src: String,
    pub dst: String,
    pub last_seen_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceEntry {
    pub src: String,
    pub dst: String,
    pub proto: u8,
    pub port: u16,
    pub last_seen_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkloadEntry {
    pub name: String,
    #[serde(flatten)]
    pub state: WorkloadState,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeakEntry {
    pub source: String,
    #[serde(flatten)]
    pub peak: Peak,
}

/// Everything learnt, as saved and exported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineFile {
    pub format: String,
    pub version: u32,
    pub saved_at: String,
    pub interval_secs: u64,
    pub learning_secs: u64,
    pub learning_started_ms: Option<u64>,
    pub edges: Vec<EdgeEntry>,
    pub pairs: Vec<PairEntry>,
    #[serde(default)]
    pub services: Vec<ServiceEntry>,
    pub workloads: Vec<WorkloadEntry>,
    pub fanout: Vec<PeakEntry>,
}

#[derive(Deserialize)]
struct Header {
    format: Option<String>,
    version: Option<u32>,
}

impl Engine {
    /// The learnt state, sorted (stable files for diffing).
    pub fn to_file(&self, now_ms: u64) -> BaselineFile {
        let mut edges: Vec<EdgeEntry> = self
            .edges
            .iter()
            .map(|(e, s)| EdgeEntry {
                edge: e.clone(),
                state: s.clone(),
            })
            .collect();
        edges.sort_by(|a, b| a.edge.cmp(&b.edge));
        let mut pairs: Vec<PairEntry> = self
            .pairs
            .iter()
            .map(|((s, d), t)| PairEntry {
                src: s.clone(),
                dst: d.clone(),
                last_seen_ms: *t,
            })
            .collect();
        pairs.sort_by(|a, b| (&a.src, &a.dst).cmp(&(&b.src, &b.dst)));
        let mut services: Vec<ServiceEntry> = self
            .services
            .iter()
            .map(|((s, d, proto, port), t)| ServiceEntry {
                src: s.clone(),
                dst: d.clone(),
                proto: *proto,
                port: *port,
                last_seen_ms: *t,
            })
            .collect();
        services.sort_by(|a, b| {
            (&a.src, &a.dst, a.proto, a.port).cmp(&(&b.src, &b.dst, b.proto, b.port))
        });
        let mut workloads: Vec<WorkloadEntry> = self
            .workloads
            .iter()
            .map(|(n, s)| WorkloadEntry {
                name: n.clone(),
                state: s.clone(),
            })
            .collect();
        workloads.sort_by(|a, b| a.name.cmp(&b.name));
        let mut fanout: Vec<PeakEntry> = self
            .fanout
            .peaks
            .iter()
            .map(|(s, p)| PeakEntry {
                source: s.clone(),
                peak: *p,
            })
            .collect();
        fanout.sort_by(|a, b| a.source.cmp(&b.source));
        BaselineFile {
            format: FORMAT.into(),
            version: VERSION,
            saved_at: fmt_ms(now_ms),
            interval_secs: self.settings.interval_secs,
            learning_secs: self.settings.learning_secs,
            learning_started_ms: self.learning_started_ms,
            edges,
            pairs,
            services,
            workloads,
            fanout,
        }
    }

    /// An engine that resumes from a file (already known to be of this version).
    /// The settings in force apply; the file's only say how it was learnt.
    pub fn from_file(settings: &Settings, f: BaselineFile) -> Result<Self, String> {
        let mut e = Engine::new(settings);
        e.learning_started_ms = f.learning_started_ms;
        let mut edges = f.edges;
        if let Some(bad) = edges.iter().find(|x| !x.state.model.is_valid()) {
            return Err(format!("edge {} has an invalid model", bad.edge));
        }
        if let Some(bad) = f.workloads.iter().find(|w| {
            !w.state.model.is_valid() || !w.state.deny.is_valid() || !w.state.deny.daily.is_empty()
        }) {
            return Err(format!("workload {} has an invalid model", bad.name));
        }
        if let Some(bad) = f
            .fanout
            .iter()
            .find(|p| !(p.peak.targets.is_finite() && p.peak.peers.is_finite()))
        {
            return Err(format!("fan-out peak of {} is not a number", bad.source));
        }
        // A smaller cap than when it was saved: keep the most recently active.
        if edges.len() > settings.max_edges {
            edges.sort_by_key(|x| std::cmp::Reverse(x.state.last_seen_ms));
            edges.truncate(settings.max_edges);
        }
        e.edges = edges.into_iter().map(|x| (x.edge, x.state)).collect();
        e.pairs = f
            .pairs
            .into_iter()
            .map(|p| ((p.src, p.dst), p.last_seen_ms))
            .collect();
        e.services = f
            .services
            .into_iter()
            .map(|s| ((s.src, s.dst, s.proto, s.port), s.last_seen_ms))
            .collect();
        e.workloads = f.workloads.into_iter().map(|w| (w.name, w.state)).collect();
        e.fanout.peaks = f.fanout.into_iter().map(|p| (p.source, p.peak)).collect();
        Ok(e)
    }
}

/// How loading went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum Loaded {
    /// No file: learning from scratch.
    Fresh,
    /// Resumed: `edges` baselines, learnt since `learning_started`.
    Resumed { edges: usize },
    /// The file was unusable, renamed to `set_aside`; learning from scratch.
    SetAside { reason: String, set_aside: String },
    /// The file could not be read (nor renamed); learning from scratch.
    Unreadable { reason: String },
}

/// Loads the baseline at `path`, or starts afresh (saying why).
pub fn load(path: &Path, settings: &Settings, now_ms: u64) -> (Engine, Loaded) {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return (Engine::new(settings), Loaded::Fresh);
        }
        Err(e) => {
            return (
                Engine::new(settings),
                Loaded::Unreadable {
                    reason: e.to_string(),
                },
            );
        }
    };
    match parse(&bytes, settings) {
        Ok(engine) => {
            let edges = engine.edge_count();
            (engine, Loaded::Resumed { edges })
        }
        Err(reason) => {
            let loaded = match set_aside(path, now_ms) {
                Ok(to) => Loaded::SetAside {
                    reason,
                    set_aside: to.display().to_string(),
                },
                Err(e) => Loaded::Unreadable {
                    reason: format!("{reason}; and it could not be set aside: {e}"),
                },
            };
            (Engine::new(settings), loaded)
        }
    }
}

/// Parses and checks a baseline file's bytes.
pub fn parse(bytes: &[u8], settings: &Settings) -> Result<Engine, String> {
    let h: Header = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    if h.format.as_deref() != Some(FORMAT) {
        return Err(format!(
            "format is {:?}, expected {FORMAT:?}",
            h.format.unwrap_or_default()
        ));
    }
    if h.version != Some(VERSION) {
        return Err(format!(
            "version {:?} cannot be read by this agent (it reads version {VERSION})",
            h.version
        ));
    }
    let f: BaselineFile = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    Engine::from_file(settings, f)
}

/// Renames an unusable file out of the way: `<file>.corrupt-<unix seconds>`.
pub fn set_aside(path: &Path, now_ms: u64) -> std::io::Result<PathBuf> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "baseline.json".into());
    let to = path.with_file_name(format!("{name}.corrupt-{}", now_ms / 1000));
    std::fs::rename(path, &to)?;
    Ok(to)
}

/// Writes `f` to `path` atomically; creates the directory (mode 0700) if needed.
pub fn save(path: &Path, f: &BaselineFile) -> Result<(), BaselineError> {
    let io = |source| BaselineError::Io {
        path: path.into(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    if !dir.as_os_str().is_empty() && !dir.exists() {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
    }
    let bytes = serde_json::to_vec(f).map_err(BaselineError::Encode)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "baseline.json".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself survives a crash only once the directory is synced.
        std::fs::File::open(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        })?
        .sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::{EdgeSample, Interval};
    use proptest::prelude::*;

    fn learnt() -> Engine {
        let s = Settings::default();
        let mut e = Engine::new(&s);
        for i in 0..20u64 {
            let iv = Interval {
                start_ms: i * 60_000,
                secs: 60.0,
                edges: vec![(
                    EdgeRef::new("a", "b", 6, 80),
                    EdgeSample {
                        bytes: 60_000,
                        packets: 60,
                        connections: 3,
                        ..Default::default()
                    },
                )],
                addrs: Vec::new(),
            };
            e.observe(&iv);
        }
        e
    }

    #[test]
    fn saved_baseline_resumes_identically() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/baseline.json");
        let e = learnt();
        let f = e.to_file(1_000_000);
        save(&path, &f).expect("save");
        let (back, loaded) = load(&path, &Settings::default(), 2_000_000);
        assert_eq!(loaded, Loaded::Resumed { edges: 1 });
        assert_eq!(back.to_file(1_000_000), f);
        // No temporary file left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn corrupt_and_incompatible_files_are_set_aside() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("baseline.json");
        let s = Settings::default();
        assert_eq!(load(&path, &s, 0).1, Loaded::Fresh);
        for (i, text) in [
            "{not json".to_string(),
            r#"{"format":"enforcer-baseline","version":99}"#.to_string(),
            r#"{"format":"something-else","version":1}"#.to_string(),
            serde_json::to_string(&learnt().to_file(0))
                .expect("json")
                .replace("\"first_ms\":0", "\"first_ms\":-5"),
        ]
        .iter()
        .enumerate()
        {
            std::fs::write(&path, text).expect("write");
            let now = (i as u64 + 1) * 1000;
            let (e, loaded) = load(&path, &s, now);
            assert_eq!(e.edge_count(), 0);
            match loaded {
                Loaded::SetAside { set_aside, .. } => {
                    assert!(set_aside.ends_with(&format!("baseline.json.corrupt-{}", i + 1)));
                    assert!(Path::new(&set_aside).exists());
                }
                other => panic!("{text}: {other:?}"),
            }
            assert!(!path.exists());
        }
    }

    #[test]
    fn invalid_profile_sizes_are_rejected_not_indexed() {
        let mut f = learnt().to_file(0);
        f.edges[0].state.model.activity_daily = vec![0.5; 3];
        let text = serde_json::to_vec(&f).expect("json");
        assert!(parse(&text, &Settings::default()).is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse(&bytes, &Settings::default());
        }
    }
}
