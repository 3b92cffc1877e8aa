//! Runs a plan's tasks as a dependency graph: each task starts the moment everything it needs
//! has finished, independent tasks run in parallel (bounded per pool, e.g. image builds by
//! `--jobs`), and the first failure stops the rest. Records when each task started and ended,
//! for the run report. Knows nothing about containers: the work is a closure.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::exec::progress::{Line, Progress};

pub use crate::graph::Node;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Failed,
    /// Not started: something it needs failed, or the run was stopped.
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timing {
    pub id: String,
    pub deps: Vec<String>,
    /// Offsets from the start of the execution.
    pub start: Option<Duration>,
    pub end: Option<Duration>,
    pub outcome: Outcome,
    /// The work's own summary, or the error.
    pub message: String,
}

impl Timing {
    pub fn duration(&self) -> Duration {
        match (self.start, self.end) {
            (Some(s), Some(e)) => e.saturating_sub(s),
            _ => Duration::ZERO,
        }
    }
}

pub struct Execution {
    pub timings: Vec<Timing>,
    /// The first failure, with its context.
    pub error: Option<anyhow::Error>,
    pub total: Duration,
}

/// What a task's work can see: its progress line and whether to stop.
pub struct Ctx<'a> {
    pub line: &'a Line,
    abort: &'a AtomicBool,
}

impl Ctx<'_> {
    /// True once another task failed or the user interrupted: polling loops must return.
    pub fn stopped(&self) -> bool {
        self.abort.load(Ordering::SeqCst) || crate::exec::signals::interrupted()
    }

    /// Sleeps up to `d`, returning early (with an error) when the run is stopping.
    pub fn pause(&self, d: Duration) -> Result<()> {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if self.stopped() {
                anyhow::bail!("stopped");
            }
            std::thread::sleep(
                Duration::from_millis(10).min(until.saturating_duration_since(Instant::now())),
            );
        }
        Ok(())
    }
}

pub use crate::graph::validate;

#[derive(Clone, Copy, PartialEq)]
enum State {
    Pending,
    Running,
    Finished,
}

/// Runs `nodes`; `work` does one task. Blocks until every task finished or was skipped.
pub fn execute<A: Sync>(
    nodes: &[Node<A>],
    limits: &BTreeMap<&'static str, usize>,
    progress: &Progress,
    work: impl Fn(&Node<A>, &Ctx) -> Result<String> + Sync,
) -> Execution {
    let start = Instant::now();
    if let Err(e) = validate(nodes) {
        return Execution {
            timings: Vec::new(),
            error: Some(e),
            total: Duration::ZERO,
        };
    }
    let lines: Vec<Line> = nodes.iter().map(|n| progress.line(&n.id)).collect();
    let abort = AtomicBool::new(false);
    let mut state = vec![State::Pending; nodes.len()];
    let mut timings: Vec<Timing> = nodes
        .iter()
        .map(|n| Timing {
            id: n.id.clone(),
            deps: n.deps.clone(),
            start: None,
            end: None,
            outcome: Outcome::Skipped,
            message: String::new(),
        })
        .collect();
    let index: BTreeMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    let mut error: Option<anyhow::Error> = None;
    let (tx, rx) = mpsc::channel::<(usize, Duration, Duration, Result<String>)>();

    std::thread::scope(|scope| {
        let mut running = 0usize;
        let mut in_pool: BTreeMap<&'static str, usize> = BTreeMap::new();
        loop {
            let stopping = error.is_some() || crate::exec::signals::interrupted();
            if !stopping {
                for i in 0..nodes.len() {
                    if state[i] != State::Pending {
                        continue;
                    }
                    let n = &nodes[i];
                    let ready = n.deps.iter().all(|d| {
                        let j = index[d.as_str()];
                        state[j] == State::Finished && timings[j].outcome == Outcome::Done
                    });
                    if !ready {
                        continue;
                    }
                    if let Some(pool) = n.pool {
                        let limit = limits.get(pool).copied().unwrap_or(usize::MAX).max(1);
                        let used = in_pool.entry(pool).or_default();
                        if *used >= limit {
                            continue;
                        }
                        *used += 1;
                    }
                    state[i] = State::Running;
                    running += 1;
                    let tx = tx.clone();
                    let (line, abort, work) = (&lines[i], &abort, &work);
                    scope.spawn(move || {
                        let t0 = start.elapsed();
                        line.state("started", "");
                        let ctx = Ctx { line, abort };
                        // A bug that panics in one task must fail the run (and let teardown
                        // happen), not leave this loop waiting for a message that never comes.
                        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            work(n, &ctx)
                        }))
                        .unwrap_or_else(|p| Err(panic_error(p.as_ref())));
                        let _ = tx.send((i, t0, start.elapsed(), r));
                    });
                }
            }
            if running == 0 {
                break;
            }
            let Ok((i, t0, t1, result)) = rx.recv() else {
                break;
            };
            running -= 1;
            if let Some(pool) = nodes[i].pool {
                if let Some(u) = in_pool.get_mut(pool) {
                    *u -= 1;
                }
            }
            state[i] = State::Finished;
            let t = &mut timings[i];
            t.start = Some(t0);
            t.end = Some(t1);
            let took = format!("{:.1}s", (t1 - t0).as_secs_f64());
            match result {
                Ok(msg) => {
                    t.outcome = Outcome::Done;
                    lines[i].finish(
                        true,
                        &if msg.is_empty() {
                            format!("done ({took})")
                        } else {
                            format!("{msg} ({took})")
                        },
                    );
                    t.message = msg;
                }
                Err(e) => {
                    t.outcome = Outcome::Failed;
                    let first = format!("{e:#}").lines().next().unwrap_or("").to_string();
                    let stopped_by_other =
                        abort.load(Ordering::SeqCst) || crate::exec::signals::interrupted();
                    lines[i].finish(
                        false,
                        &if stopped_by_other {
                            "stopped".to_string()
                        } else {
                            format!("failed: {first}")
                        },
                    );
                    t.message = format!("{e:#}");
                    if error.is_none() && !stopped_by_other {
                        error = Some(e.context(format!("{} failed", nodes[i].id)));
                        abort.store(true, Ordering::SeqCst);
                    } else if error.is_none() && crate::exec::signals::interrupted() {
                        error = Some(anyhow::anyhow!("interrupted"));
                    }
                }
            }
        }
    });
    for (i, t) in timings.iter().enumerate() {
        if t.start.is_none() {
            lines[i].finish(false, "skipped");
        }
    }
    if error.is_none() && crate::exec::signals::interrupted() {
        error = Some(anyhow::anyhow!("interrupted"));
    }
    Execution {
        timings,
        error,
        total: start.elapsed(),
    }
}

/// A task's panic as an error: its message, and that it is a bug to report.
fn panic_error(payload: &(dyn std::any::Any + Send)) -> anyhow::Error {
    let msg = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string());
    anyhow::anyhow!("the task panicked: {msg} (a bug in cargo xtask; please report it)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn node(id: &str, deps: &[&str]) -> Node<u64> {
        Node {
            id: id.into(),
            deps: deps.iter().map(|d| d.to_string()).collect(),
            pool: None,
            action: 0,
        }
    }

    #[test]
    fn dependants_start_when_their_needs_are_done() {
        let order = Mutex::new(Vec::new());
        let nodes = vec![
            node("pg", &[]),
            node("redis", &[]),
            node("migrate", &["pg"]),
            node("ds", &["migrate", "redis"]),
        ];
        let ex = execute(&nodes, &BTreeMap::new(), &Progress::plain(), |n, _| {
            order.lock().unwrap().push(n.id.clone());
            std::thread::sleep(Duration::from_millis(if n.id == "pg" { 60 } else { 10 }));
            Ok(String::new())
        });
        assert!(ex.error.is_none());
        let t: BTreeMap<_, _> = ex.timings.iter().map(|t| (t.id.as_str(), t)).collect();
        // redis does not wait for pg; migrate starts after pg ended; ds after both.
        assert!(t["redis"].start.unwrap() < t["pg"].end.unwrap());
        assert!(t["migrate"].start.unwrap() >= t["pg"].end.unwrap());
        assert!(t["ds"].start.unwrap() >= t["migrate"].end.unwrap().max(t["redis"].end.unwrap()));
        assert_eq!(order.lock().unwrap().last().unwrap(), "ds");
    }

    #[test]
    fn a_failure_skips_dependants_and_stops_pollers() {
        let nodes = vec![
            node("bad", &[]),
            node("after", &["bad"]),
            node("poller", &[]),
        ];
        let ex = execute(
            &nodes,
            &BTreeMap::new(),
            &Progress::plain(),
            |n, ctx| match n.id.as_str() {
                "bad" => {
                    std::thread::sleep(Duration::from_millis(20));
                    anyhow::bail!("boom")
                }
                "poller" => {
                    for _ in 0..500 {
                        ctx.pause(Duration::from_millis(10))?;
                    }
                    Ok("never".into())
                }
                _ => Ok(String::new()),
            },
        );
        let err = format!("{:#}", ex.error.unwrap());
        assert!(err.contains("bad failed") && err.contains("boom"), "{err}");
        let t: BTreeMap<_, _> = ex.timings.iter().map(|t| (t.id.as_str(), t)).collect();
        assert_eq!(t["after"].outcome, Outcome::Skipped);
        assert_eq!(t["poller"].outcome, Outcome::Failed);
        assert!(
            ex.total < Duration::from_secs(2),
            "the poller stopped early"
        );
    }

    #[test]
    fn pools_bound_concurrency() {
        let live = Mutex::new((0usize, 0usize));
        let nodes: Vec<Node<u64>> = (0..6)
            .map(|i| Node {
                id: format!("b{i}"),
                deps: vec![],
                pool: Some("build"),
                action: 0,
            })
            .collect();
        let limits = [("build", 2)].into_iter().collect();
        let ex = execute(&nodes, &limits, &Progress::plain(), |_, _| {
            {
                let mut l = live.lock().unwrap();
                l.0 += 1;
                l.1 = l.1.max(l.0);
            }
            std::thread::sleep(Duration::from_millis(20));
            live.lock().unwrap().0 -= 1;
            Ok(String::new())
        });
        assert!(ex.error.is_none());
        assert_eq!(live.lock().unwrap().1, 2);
    }

    /// A panicking task used to leave the executor waiting on its channel forever (no teardown).
    #[test]
    fn a_panicking_task_fails_the_run_instead_of_hanging_it() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let nodes = vec![node("boom", &[]), node("after", &["boom"]), node("ok", &[])];
            let ex = execute(&nodes, &BTreeMap::new(), &Progress::plain(), |n, _| {
                if n.id == "boom" {
                    panic!("task bug");
                }
                Ok(String::new())
            });
            let _ = tx.send(ex);
        });
        let ex = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the executor hung after a task panicked");
        let err = format!("{:#}", ex.error.expect("a panic is a failure"));
        assert!(
            err.contains("boom failed") && err.contains("task bug"),
            "{err}"
        );
        let t: BTreeMap<_, _> = ex.timings.iter().map(|t| (t.id.as_str(), t)).collect();
        assert_eq!(t["boom"].outcome, Outcome::Failed);
        assert_eq!(t["after"].outcome, Outcome::Skipped);
    }

    #[test]
    fn invalid_plans_are_refused() {
        assert!(validate(&[node("a", &["b"])])
            .unwrap_err()
            .to_string()
            .contains("unknown task b"));
        assert!(validate(&[node("a", &["b"]), node("b", &["a"])])
            .unwrap_err()
            .to_string()
            .contains("cycle"));
        assert!(validate(&[node("a", &[]), node("a", &[])]).is_err());
    }
}
