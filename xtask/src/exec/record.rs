//! Run records: before a run creates anything it writes `target/xtask/runs/<id>/record.jsonl`,
//! then appends one line per resource *before* creating it. Each line is a single `write` of a
//! complete line followed by `fsync`, so a crash at any moment leaves a readable file (a torn
//! last line is ignored). `clean --orphans` reads these to remove what killed runs left.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// One line of a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The first line.
    Run {
        run_id: String,
        pid: u32,
        /// When the process started (clock ticks since boot, Linux), against pid reuse.
        pid_start: Option<u64>,
        owner: String,
        consumer: String,
        tier: String,
        created: u64,
        engine: String,
        argv: Vec<String>,
    },
    Container {
        name: String,
    },
    Network {
        name: String,
    },
    Image {
        reference: String,
    },
    Cluster {
        name: String,
        kubeconfig: PathBuf,
    },
    Archive {
        path: PathBuf,
    },
    /// A run's namespace in a kept or shared cluster.
    Namespace {
        name: String,
        kubeconfig: PathBuf,
        context: Option<String>,
    },
    /// An admission slot (a ConfigMap) held in a kept or shared cluster.
    Slot {
        name: String,
        kubeconfig: PathBuf,
        context: Option<String>,
    },
    /// An image pushed to a registry under the run's tag (removed by its digest, after
    /// checking it carries the run's label).
    Pushed {
        reference: String,
    },
    /// Left running on purpose (`--keep`): not an orphan.
    Kept,
    /// Everything was removed.
    Finished,
}

impl Event {
    /// `container notification_redis_test`, for the dry run.
    pub fn describe(&self) -> String {
        match self {
            Event::Run { run_id, .. } => format!("run {run_id}"),
            Event::Container { name } => format!("container {name}"),
            Event::Network { name } => format!("network {name}"),
            Event::Image { reference } => format!("image {reference}"),
            Event::Cluster { name, .. } => format!("cluster {name}"),
            Event::Archive { path } => format!("archive {}", path.display()),
            Event::Namespace { name, .. } => format!("namespace {name}"),
            Event::Slot { name, .. } => format!("admission slot {name}"),
            Event::Pushed { reference } => format!("pushed {reference}"),
            Event::Kept => "kept".into(),
            Event::Finished => "finished".into(),
        }
    }
}

pub struct Record {
    path: PathBuf,
    file: Mutex<File>,
}

impl Record {
    /// Creates the record (failing if this run id exists) with its first line.
    pub fn create(dir: &Path, header: Event) -> Result<Record> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("record.jsonl");
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("creating the run record {}", path.display()))?;
        let r = Record {
            path,
            file: Mutex::new(file),
        };
        r.add(&header)?;
        Ok(r)
    }

    /// Opens an existing record to append to it (e.g. `--down` marking a kept run finished).
    pub fn open(path: &Path) -> Result<Record> {
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .with_context(|| format!("opening the run record {}", path.display()))?;
        Ok(Record {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event durably.
    pub fn add(&self, e: &Event) -> Result<()> {
        let mut line = serde_json::to_string(e)?;
        line.push('\n');
        let mut f = self
            .file
            .lock()
            .map_err(|_| anyhow::anyhow!("run record lock poisoned"))?;
        f.write_all(line.as_bytes())
            .and_then(|_| f.sync_data())
            .with_context(|| format!("writing the run record {}", self.path.display()))
    }
}

/// What a run keeps in its folder only while it lives: build contexts and image archives.
pub const SCRATCH: [&str; 2] = ["context", "images"];

/// Removes a run's scratch folders (its record and report stay).
pub fn remove_scratch(run_dir: &Path) -> Result<()> {
    for d in SCRATCH {
        let dir = run_dir.join(d);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
    }
    Ok(())
}

/// Marks the run of `record_path` finished (everything removed); a missing record is fine.
pub fn mark_finished(record_path: &Path) -> Result<()> {
    match Record::open(record_path) {
        Ok(r) => r.add(&Event::Finished),
        Err(_) => Ok(()),
    }
}

/// A record as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInfo {
    pub path: PathBuf,
    pub run_id: String,
    pub pid: u32,
    pub pid_start: Option<u64>,
    pub owner: String,
    pub consumer: String,
    pub tier: String,
    pub created: u64,
    pub engine: String,
    pub resources: Vec<Event>,
    pub kept: bool,
    pub finished: bool,
}

impl RunInfo {
    /// Whether the run's process is still running (same pid, same start time).
    pub fn alive(&self) -> bool {
        if !crate::exec::process::pid_alive(self.pid) {
            return false;
        }
        match (self.pid_start, pid_start(self.pid)) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
    }
}

/// Reads a record; lines that do not parse (a torn last line) are skipped.
pub fn read(path: &Path) -> Result<RunInfo> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(path, &text)
}

pub fn parse(path: &Path, text: &str) -> Result<RunInfo> {
    let mut events = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Event>(l).ok());
    let Some(Event::Run {
        run_id,
        pid,
        pid_start,
        owner,
        consumer,
        tier,
        created,
        engine,
        ..
    }) = events.next()
    else {
        anyhow::bail!(
            "{} does not start with a run line; remove it by hand if it is not needed",
            path.display()
        );
    };
    let mut info = RunInfo {
        path: path.to_path_buf(),
        run_id,
        pid,
        pid_start,
        owner,
        consumer,
        tier,
        created,
        engine,
        resources: Vec::new(),
        kept: false,
        finished: false,
    };
    for e in events {
        match e {
            Event::Kept => info.kept = true,
            Event::Finished => info.finished = true,
            Event::Run { .. } => {}
            other => info.resources.push(other),
        }
    }
    Ok(info)
}

/// Every readable record under `runs_dir`, oldest first.
pub fn list(runs_dir: &Path) -> Vec<RunInfo> {
    let Ok(entries) = std::fs::read_dir(runs_dir) else {
        return Vec::new();
    };
    let mut runs: Vec<RunInfo> = entries
        .flatten()
        .filter_map(|e| read(&e.path().join("record.jsonl")).ok())
        .collect();
    runs.sort_by_key(|r| r.created);
    runs
}

/// `target/xtask/runs` of the workspace (or of `CARGO_TARGET_DIR`).
pub fn runs_dir(root: &Path) -> PathBuf {
    target_dir(root).join("xtask").join("runs")
}

pub fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                root.join(d)
            }
        }
        _ => root.join("target"),
    }
}

/// Start time of a process in clock ticks since boot (Linux `/proc/<pid>/stat` field 22).
pub fn pid_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Writes a file so that readers see the old or the new contents, never a mix.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(id: &str, pid: u32) -> Event {
        Event::Run {
            run_id: id.into(),
            pid,
            pid_start: pid_start(pid),
            owner: "alice".into(),
            consumer: "notification".into(),
            tier: "integration".into(),
            created: 1,
            engine: "podman".into(),
            argv: vec!["xtask".into()],
        }
    }

    #[test]
    fn records_round_trip_and_survive_a_torn_line() {
        let dir =
            std::env::temp_dir().join(format!("xtask-rec-{}", crate::host::facts::random_id()));
        let r = Record::create(&dir, header("ab12cd34", std::process::id())).unwrap();
        r.add(&Event::Network { name: "n".into() }).unwrap();
        r.add(&Event::Container { name: "c".into() }).unwrap();
        assert!(
            Record::create(&dir, header("ab12cd34", 1)).is_err(),
            "one record per run"
        );
        // A crash in the middle of a write leaves a partial line.
        let mut f = OpenOptions::new().append(true).open(r.path()).unwrap();
        f.write_all(b"{\"event\":\"image\",\"refer").unwrap();
        let info = read(r.path()).unwrap();
        assert_eq!(info.run_id, "ab12cd34");
        assert_eq!(
            info.resources,
            vec![
                Event::Network { name: "n".into() },
                Event::Container { name: "c".into() }
            ]
        );
        assert!(!info.kept && !info.finished);
        assert!(info.alive(), "this test process is alive");
        assert_eq!(
            list(dir.parent().unwrap())
                .iter()
                .filter(|i| i.run_id == "ab12cd34")
                .count(),
            1
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dead_and_reused_pids_are_not_alive() {
        let text = serde_json::to_string(&header("x", std::process::id())).unwrap();
        let mut info = parse(Path::new("r"), &text).unwrap();
        assert!(info.alive());
        info.pid_start = info.pid_start.map(|s| s + 1);
        if pid_start(std::process::id()).is_some() {
            assert!(!info.alive(), "same pid, different start time: reused");
        }
        info.pid = 0;
        assert!(!info.alive());
    }

    #[test]
    fn a_record_without_header_is_refused() {
        assert!(parse(Path::new("r"), "{\"event\":\"kept\"}\n").is_err());
        assert!(parse(Path::new("r"), "").is_err());
    }
}
