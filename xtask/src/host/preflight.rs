//! Checks before a run creates anything: earlier runs of the same consumer (live, kept on
//! purpose, or stale after a crash) and host ports that are already taken, naming the holder.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::Path;

use anyhow::{bail, Result};

use crate::exec::record::{self, RunInfo};
use crate::host::tools::Engine;
use crate::plan::labels::{self, Filter};

/// A host port a run is about to publish, and what for.
pub use crate::plan::specs::Claim;

/// An earlier run of the same owner, consumer and tier that still has resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Earlier {
    pub run_id: String,
    pub state: EarlierState,
    pub pid: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EarlierState {
    /// Its process is running.
    Live,
    /// Left up with `--keep`.
    Kept,
    /// Its process is gone (crash, kill -9) and it was not kept: safe to remove.
    Stale,
}

/// Runs of `owner` for `consumer`/`tier` that still have containers, networks or images.
pub fn earlier_runs(
    engine: &Engine,
    runs_dir: &Path,
    owner: &str,
    consumer: &str,
    tier: &str,
) -> Result<Vec<Earlier>> {
    let filter = Filter::owner(owner)
        .and(labels::CONSUMER, consumer)
        .and(labels::TIER, tier);
    let pids = crate::host::removal::labelled_runs(engine, &filter)?;
    Ok(pids
        .into_iter()
        .map(|(run_id, pid)| {
            let rec = record::read(&runs_dir.join(&run_id).join("record.jsonl")).ok();
            let state = classify(rec.as_ref(), pid);
            Earlier {
                run_id,
                state,
                pid: rec.map_or(pid, |r| r.pid),
            }
        })
        .collect())
}

/// Live if its process runs; kept if its record says so; otherwise stale. Without a record
/// (deleted with `cargo clean`), the pid label decides.
pub fn classify(rec: Option<&RunInfo>, label_pid: u32) -> EarlierState {
    match rec {
        Some(r) if r.alive() => EarlierState::Live,
        Some(r) if r.kept && !r.finished => EarlierState::Kept,
        Some(_) => EarlierState::Stale,
        None if crate::exec::process::pid_alive(label_pid) => EarlierState::Live,
        None => EarlierState::Stale,
    }
}

/// Fails, naming every port that is taken and who holds it. `notes` adds advice per run id
/// (e.g. how to take down a kept stack).
pub fn check_ports(
    engine: &Engine,
    claims: &[Claim],
    notes: &BTreeMap<String, String>,
) -> Result<()> {
    let busy: Vec<&Claim> = claims.iter().filter(|c| !port_free(c.port)).collect();
    if busy.is_empty() {
        return Ok(());
    }
    let published = engine.published_ports().unwrap_or_default();
    let mut lines = Vec::new();
    // A run tearing down may free a port between the bind test and the listing: only ports
    // still taken are reported (the earlier-runs check then names that run).
    for c in busy.into_iter().filter(|c| !port_free(c.port)) {
        let mut who = holder(c.port, &published);
        if let Some(note) = published
            .iter()
            .find(|p| p.host_ports.contains(&c.port))
            .and_then(|p| p.labels.get(labels::RUN))
            .and_then(|run| notes.get(run))
        {
            who.push_str("; ");
            who.push_str(note);
        }
        lines.push(format!(
            "host port {} ({}) is taken by {who}",
            c.port, c.what
        ));
    }
    if lines.is_empty() {
        return Ok(());
    }
    bail!(
        "{}\nnothing was started; free the port(s), or pick others in infra.toml (`cargo xtask ports` lists them)",
        lines.join("\n")
    )
}

/// True if nothing listens on the port (on any address).
pub fn port_free(port: u16) -> bool {
    TcpListener::bind(("0.0.0.0", port)).is_ok() && TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Who holds `port`: a container (ours, with owner and run; or foreign), or a process.
pub fn holder(port: u16, published: &[crate::host::engine::ContainerInfo]) -> String {
    if let Some(c) = published.iter().find(|c| c.host_ports.contains(&port)) {
        let l = &c.labels;
        return match l.get(labels::RUN) {
            Some(run) => {
                let owner = l.get(labels::OWNER).map_or("?", String::as_str);
                let consumer = l.get(labels::CONSUMER).map_or("?", String::as_str);
                let pid: u32 = l.get(labels::PID).and_then(|p| p.parse().ok()).unwrap_or(0);
                let alive = if crate::exec::process::pid_alive(pid) {
                    "running"
                } else {
                    "gone"
                };
                let age = l
                    .get(labels::CREATED)
                    .and_then(|c| c.parse::<u64>().ok())
                    .map(|c| {
                        format!(
                            ", started {} ago",
                            human_age(crate::host::facts::unix_now().saturating_sub(c))
                        )
                    })
                    .unwrap_or_default();
                format!(
                    "container {} of an xtask {} run {run} (owner {owner}, consumer {consumer}, process {pid} {alive}{age})",
                    c.name,
                    l.get(labels::TIER).map_or("?", String::as_str)
                )
            }
            None => format!(
                "container {} ({}), not created by this tool",
                c.name, c.image
            ),
        };
    }
    match process_listening(port) {
        Some((pid, cmd)) => format!("process {pid} ({cmd})"),
        None => format!("another process (see `ss -ltnp 'sport = :{port}'`)"),
    }
}

pub fn human_age(secs: u64) -> String {
    match secs {
        0..=119 => format!("{secs}s"),
        120..=7199 => format!("{}m", secs / 60),
        7200..=172_799 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// The process listening on a TCP port, from /proc (Linux; only processes we may inspect).
pub fn process_listening(port: u16) -> Option<(u32, String)> {
    let mut inodes = BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        inodes.extend(listening_inodes(&text, port));
    }
    if inodes.is_empty() {
        return None;
    }
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(e.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let t = target.to_string_lossy();
            if let Some(inode) = t.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
                if inode.parse().is_ok_and(|i: u64| inodes.contains(&i)) {
                    let cmd = std::fs::read(e.path().join("cmdline"))
                        .map(|b| {
                            b.split(|c| *c == 0)
                                .filter(|p| !p.is_empty())
                                .map(|p| String::from_utf8_lossy(p).into_owned())
                                .collect::<Vec<_>>()
                                .join(" ")
                        })
                        .unwrap_or_default();
                    return Some((pid, cmd.chars().take(120).collect()));
                }
            }
        }
    }
    None
}

/// Socket inodes listening on `port` in a /proc/net/tcp table.
pub fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local = f.get(1)?;
            let p = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
            // State 0A is LISTEN.
            (p == port && *f.get(3)? == "0A")
                .then(|| f.get(9)?.parse().ok())
                .flatten()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_listening_sockets_in_proc_tables() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000:3C50 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0 0 10 0\n   1: 0100007F:3C50 0100007F:9999 01 00000000:00000000 00:00000000 00000000     0        0 777 1\n";
        assert_eq!(listening_inodes(table, 0x3C50), vec![12345]);
        assert!(listening_inodes(table, 80).is_empty());
    }

    #[test]
    fn a_taken_port_names_this_process() {
        let l = TcpListener::bind("0.0.0.0:0").unwrap();
        let port = l.local_addr().unwrap().port();
        assert!(!port_free(port));
        let who = holder(port, &[]);
        assert!(
            who.contains(&format!("process {}", std::process::id())),
            "{who}"
        );
    }

    #[test]
    fn ours_and_foreign_containers_are_told_apart() {
        let mut labels = BTreeMap::new();
        labels.insert(labels::RUN.to_string(), "ab12cd34".to_string());
        labels.insert(labels::OWNER.to_string(), "alice".to_string());
        labels.insert(labels::CONSUMER.to_string(), "gateway".to_string());
        labels.insert(labels::TIER.to_string(), "integration".to_string());
        let ours = crate::host::engine::ContainerInfo {
            id: "1".into(),
            name: "gateway_postgres_test".into(),
            labels,
            running: true,
            status: "running".into(),
            host_ports: vec![15437],
            image: "pg".into(),
        };
        let foreign = crate::host::engine::ContainerInfo {
            id: "2".into(),
            name: "someones_db".into(),
            labels: BTreeMap::new(),
            running: true,
            status: "running".into(),
            host_ports: vec![5432],
            image: "postgres:16".into(),
        };
        let h = holder(15437, &[ours.clone(), foreign.clone()]);
        assert!(
            h.contains("gateway_postgres_test")
                && h.contains("run ab12cd34")
                && h.contains("owner alice"),
            "{h}"
        );
        let h = holder(5432, &[ours, foreign]);
        assert!(
            h.contains("someones_db") && h.contains("not created by this tool"),
            "{h}"
        );
    }

    #[test]
    fn ages_are_human() {
        assert_eq!(human_age(5), "5s");
        assert_eq!(human_age(600), "10m");
        assert_eq!(human_age(3 * 86_400), "3d");
    }
}
