//! The run report: each task's start and end, the total, and the critical path (the chain of
//! dependent tasks with the largest summed duration, the lower bound of the total). Written as
//! JSON under the run's folder and printed as a table at the end of a run.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::exec::dag::{Outcome, Timing};

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub run_id: String,
    pub consumer: String,
    pub tier: String,
    pub started_unix_ms: u128,
    pub outcome: String,
    pub total_ms: u64,
    pub critical_path: Vec<String>,
    pub critical_path_ms: u64,
    /// total / critical path: 1.0 means nothing waited on anything it did not need.
    pub total_over_critical_path: f64,
    /// Every task's duration added up: what starting one thing at a time would take.
    pub serial_ms: u64,
    pub tasks: Vec<TaskReport>,
    /// Timings after the graph: `tests_ms`, `teardown_ms`, `wall_ms`, ...
    #[serde(flatten)]
    pub extra: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskReport {
    pub id: String,
    pub deps: Vec<String>,
    pub start_ms: Option<u64>,
    pub end_ms: Option<u64>,
    pub duration_ms: u64,
    pub outcome: &'static str,
    pub message: String,
    /// Image tasks: `hit` (a cached image got the run's name) or `miss`, the key, and why.
    #[serde(flatten)]
    pub cache: Option<crate::exec::actions::build::Note>,
    /// Registry runs' push tasks: the bytes the push really sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_sent: Option<u64>,
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// The longest chain of finished tasks by summed duration, and that sum.
pub fn critical_path(timings: &[Timing]) -> (Vec<String>, Duration) {
    let g = crate::graph::of(timings, |t| t.id.as_str(), |t| t.deps.as_slice());
    let done: BTreeMap<&str, Duration> = timings
        .iter()
        .filter(|t| t.outcome == Outcome::Done)
        .map(|t| (t.id.as_str(), t.duration()))
        .collect();
    crate::graph::longest_path(&g, |id| done.get(id).copied())
}

impl Report {
    /// The bytes each push task sent (registry runs), and their sum as `bytes_sent`.
    pub fn add_bytes_sent(&mut self, bytes: BTreeMap<String, u64>) {
        if bytes.is_empty() {
            return;
        }
        for t in &mut self.tasks {
            t.bytes_sent = bytes.get(&t.id).copied();
        }
        self.extra.insert("bytes_sent".into(), bytes.values().sum());
    }

    /// What the input cache did for each image task.
    pub fn add_cache_notes(&mut self, notes: BTreeMap<String, crate::exec::actions::build::Note>) {
        for t in &mut self.tasks {
            t.cache = notes.get(&t.id).cloned();
        }
    }

    pub fn new(
        run_id: &str,
        consumer: &str,
        tier: &str,
        started_unix_ms: u128,
        timings: &[Timing],
        total: Duration,
        outcome: &str,
    ) -> Report {
        let (path, cp) = critical_path(timings);
        Report {
            run_id: run_id.to_string(),
            consumer: consumer.to_string(),
            tier: tier.to_string(),
            started_unix_ms,
            outcome: outcome.to_string(),
            total_ms: ms(total),
            critical_path: path,
            critical_path_ms: ms(cp),
            serial_ms: timings.iter().map(|t| ms(t.duration())).sum(),
            total_over_critical_path: if cp.is_zero() {
                0.0
            } else {
                (total.as_secs_f64() / cp.as_secs_f64() * 1000.0).round() / 1000.0
            },
            tasks: timings
                .iter()
                .map(|t| TaskReport {
                    id: t.id.clone(),
                    deps: t.deps.clone(),
                    start_ms: t.start.map(ms),
                    end_ms: t.end.map(ms),
                    duration_ms: ms(t.duration()),
                    outcome: match t.outcome {
                        Outcome::Done => "done",
                        Outcome::Failed => "failed",
                        Outcome::Skipped => "skipped",
                    },
                    message: t.message.lines().next().unwrap_or("").to_string(),
                    cache: None,
                    bytes_sent: None,
                })
                .collect(),
            extra: BTreeMap::new(),
        }
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let text = serde_json::to_string_pretty(self)?;
        crate::exec::record::write_atomically(path, text.as_bytes())
    }

    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let w = self
            .tasks
            .iter()
            .map(|t| t.id.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let mut s = format!(
            "{:<w$}  {:>8}  {:>8}  {:>8}  {}\n",
            "task", "start", "end", "took", "outcome"
        );
        let secs =
            |v: Option<u64>| v.map_or("-".to_string(), |m| format!("{:.1}s", m as f64 / 1000.0));
        let mut tasks = self.tasks.clone();
        tasks.sort_by_key(|t| (t.start_ms.unwrap_or(u64::MAX), t.end_ms));
        for t in &tasks {
            let mark = if self.critical_path.contains(&t.id) {
                " *"
            } else {
                ""
            };
            s.push_str(&format!(
                "{:<w$}  {:>8}  {:>8}  {:>8}  {}{mark}\n",
                t.id,
                secs(t.start_ms),
                secs(t.end_ms),
                secs(Some(t.duration_ms)),
                t.outcome
            ));
        }
        for (k, v) in &self.extra {
            let line = match k.strip_suffix("_ms") {
                Some(k) => format!("{k}: {:.1}s\n", *v as f64 / 1000.0),
                None if k.starts_with("bytes") && *v >= 1_000_000 => {
                    format!("{k}: {:.1} MB\n", *v as f64 / 1e6)
                }
                None if k.starts_with("bytes") => format!("{k}: {:.1} kB\n", *v as f64 / 1e3),
                None => format!("{k}: {v}\n"),
            };
            s.push_str(&line);
        }
        s.push_str(&format!(
            "graph {:.1}s, critical path (*) {:.1}s: {}; ratio {:.2}; one at a time it would take {:.1}s\n",
            self.total_ms as f64 / 1000.0,
            self.critical_path_ms as f64 / 1000.0,
            self.critical_path.join(" -> "),
            self.total_over_critical_path,
            self.serial_ms as f64 / 1000.0
        ));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(id: &str, deps: &[&str], start: u64, end: u64) -> Timing {
        Timing {
            id: id.into(),
            deps: deps.iter().map(|d| d.to_string()).collect(),
            start: Some(Duration::from_millis(start)),
            end: Some(Duration::from_millis(end)),
            outcome: Outcome::Done,
            message: String::new(),
        }
    }

    #[test]
    fn critical_path_is_the_longest_chain() {
        // compile 0-3000 -> image 3000-4000 -> ds 5000-6000; pg 0-1500 -> migrate 1500-2000 -> ds.
        let ts = vec![
            t("compile", &[], 0, 3000),
            t("image", &["compile"], 3000, 4000),
            t("pg", &[], 0, 1500),
            t("migrate", &["pg", "image"], 4000, 5000),
            t("redis", &[], 0, 300),
            t("ds", &["migrate", "redis"], 5000, 6000),
        ];
        let (path, d) = critical_path(&ts);
        assert_eq!(path, ["compile", "image", "migrate", "ds"]);
        assert_eq!(d, Duration::from_millis(6000));
        let r = Report::new(
            "r",
            "c",
            "integration",
            0,
            &ts,
            Duration::from_millis(6600),
            "passed",
        );
        assert_eq!(r.total_over_critical_path, 1.1);
        let mut r = r;
        r.add_bytes_sent([("push:ds".to_string(), 2_500_000)].into());
        r.extra.insert("tests_ms".into(), 1500);
        assert!(r.table().contains("bytes_sent: 2.5 MB\n"), "{}", r.table());
        assert!(r.table().contains("tests: 1.5s\n"), "{}", r.table());
        r.add_bytes_sent([("push:ds".to_string(), 12_345)].into());
        assert!(r.table().contains("bytes_sent: 12.3 kB\n"), "{}", r.table());
        assert!(r.table().contains("compile -> image -> migrate -> ds"));
        assert!(r
            .table()
            .lines()
            .any(|l| l.starts_with("ds") && l.ends_with("done *")));
    }

    #[test]
    fn failed_and_skipped_tasks_are_not_on_the_path() {
        let mut bad = t("bad", &[], 0, 9000);
        bad.outcome = Outcome::Failed;
        let ts = vec![t("a", &[], 0, 100), bad];
        assert_eq!(critical_path(&ts).0, ["a"]);
        assert_eq!(critical_path(&[]).0, Vec::<String>::new());
    }
}
