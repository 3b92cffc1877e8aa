//! Runs a plan's tasks as a dependency graph: each task starts the moment everything it needs
//! has finished, independent tasks run in parallel (bounded per pool, e.g. image builds by
//! `--jobs`), and the first failure stops the rest. Records when each task started and ended,
//! for the run report. Knows nothing about containers: the work is a closure.

use std::collections::{BTreeMap, BTreeSet};
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

/// A finished task's report to the scheduler: index, start, end, result.
type Report = (usize, Duration, Duration, Result<String>);

/// The scheduler's bookkeeping: which task is where, pools in use, the first failure.
struct Schedule<'a, A> {
    nodes: &'a [Node<A>],
    limits: &'a BTreeMap<&'static str, usize>,
    index: BTreeMap<&'a str, usize>,
    state: Vec<State>,
    timings: Vec<Timing>,
    in_pool: BTreeMap<&'static str, usize>,
    running: usize,
    error: Option<anyhow::Error>,
}

impl<'a, A> Schedule<'a, A> {
    fn new(nodes: &'a [Node<A>], limits: &'a BTreeMap<&'static str, usize>) -> Self {
        Schedule {
            nodes,
            limits,
            index: nodes
                .iter()
                .enumerate()
                .map(|(i, n)| (n.id.as_str(), i))
                .collect(),
            state: vec![State::Pending; nodes.len()],
            timings: nodes
                .iter()
                .map(|n| Timing {
                    id: n.id.clone(),
                    deps: n.deps.clone(),
                    start: None,
                    end: None,
                    outcome: Outcome::Skipped,
                    message: String::new(),
                })
                .collect(),
            in_pool: BTreeMap::new(),
            running: 0,
            error: None,
        }
    }

    /// The next task whose needs are all done and whose pool has room (taking the room).
    fn next_ready(&mut self) -> Option<usize> {
        if self.error.is_some() || crate::exec::signals::interrupted() {
            return None;
        }
        let ready = |s: &Self, i: usize| {
            s.state[i] == State::Pending
                && s.nodes[i].deps.iter().all(|d| {
                    let j = s.index[d.as_str()];
                    s.state[j] == State::Finished && s.timings[j].outcome == Outcome::Done
                })
        };
        for i in 0..self.nodes.len() {
            if !ready(self, i) {
                continue;
            }
            if let Some(pool) = self.nodes[i].pool {
                let limit = self.limits.get(pool).copied().unwrap_or(usize::MAX).max(1);
                let used = self.in_pool.entry(pool).or_default();
                if *used >= limit {
                    continue;
                }
                *used += 1;
            }
            self.state[i] = State::Running;
            self.running += 1;
            return Some(i);
        }
        None
    }

    /// True when every task outside `beside` is done (none failed).
    fn done_except(&self, beside: &BTreeSet<String>) -> bool {
        self.error.is_none()
            && (0..self.nodes.len()).all(|i| {
                beside.contains(&self.nodes[i].id)
                    || (self.state[i] == State::Finished
                        && self.timings[i].outcome == Outcome::Done)
            })
    }

    /// Books a finished task; the first failure (not caused by stopping) becomes the error.
    fn finished(&mut self, (i, t0, t1, result): Report, line: &Line, abort: &AtomicBool) {
        self.running -= 1;
        if let Some(u) = self.nodes[i].pool.and_then(|p| self.in_pool.get_mut(p)) {
            *u -= 1;
        }
        self.state[i] = State::Finished;
        let t = &mut self.timings[i];
        (t.start, t.end) = (Some(t0), Some(t1));
        let took = format!("{:.1}s", (t1 - t0).as_secs_f64());
        match result {
            Ok(msg) => {
                t.outcome = Outcome::Done;
                let shown = if msg.is_empty() {
                    "done".to_string()
                } else {
                    msg.clone()
                };
                line.finish(true, &format!("{shown} ({took})"));
                t.message = msg;
            }
            Err(e) => {
                t.outcome = Outcome::Failed;
                t.message = format!("{e:#}");
                let by_other = abort.load(Ordering::SeqCst) || crate::exec::signals::interrupted();
                let first = t.message.lines().next().unwrap_or("").to_string();
                line.finish(
                    false,
                    &if by_other {
                        "stopped".into()
                    } else {
                        format!("failed: {first}")
                    },
                );
                if self.error.is_none() && !by_other {
                    self.error = Some(e.context(format!("{} failed", self.nodes[i].id)));
                    abort.store(true, Ordering::SeqCst);
                } else if self.error.is_none() && crate::exec::signals::interrupted() {
                    self.error = Some(anyhow::anyhow!("interrupted"));
                }
            }
        }
    }
}

/// Runs `nodes`; `work` does one task. Blocks until every task finished or was skipped.
pub fn execute<A: Sync>(
    nodes: &[Node<A>],
    limits: &BTreeMap<&'static str, usize>,
    progress: &Progress,
    work: impl Fn(&Node<A>, &Ctx) -> Result<String> + Sync,
) -> Execution {
    run(nodes, limits, progress, work, |_, _| {})
}

/// Runs `nodes` like [`execute`]; once every task outside `beside` is done, runs `alongside`
/// on this thread (given the time since the start) while the tasks of `beside` go on. Not
/// run when a task failed first or the run was stopped.
pub fn execute_alongside<A: Sync, R>(
    nodes: &[Node<A>],
    limits: &BTreeMap<&'static str, usize>,
    progress: &Progress,
    beside: &BTreeSet<String>,
    work: impl Fn(&Node<A>, &Ctx) -> Result<String> + Sync,
    alongside: impl FnOnce(Duration) -> R,
) -> (Execution, Option<R>) {
    let (tx, rx) = mpsc::channel::<Duration>();
    let work = &work;
    std::thread::scope(|scope| {
        // `tx` moves into the graph's thread: when it ends without sending, `recv` returns.
        let graph = scope.spawn(move || {
            run(nodes, limits, progress, work, |s, at| {
                if s.done_except(beside) {
                    let _ = tx.send(at);
                }
            })
        });
        let result = rx.recv().ok().map(alongside);
        let ex = graph
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (ex, result)
    })
}

/// [`execute`], showing `watch` the schedule and the time before any task starts and after
/// each one ends.
fn run<A: Sync>(
    nodes: &[Node<A>],
    limits: &BTreeMap<&'static str, usize>,
    progress: &Progress,
    work: impl Fn(&Node<A>, &Ctx) -> Result<String> + Sync,
    mut watch: impl FnMut(&Schedule<A>, Duration),
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
    let mut s = Schedule::new(nodes, limits);
    let (tx, rx) = mpsc::channel::<Report>();
    watch(&s, start.elapsed());
    std::thread::scope(|scope| loop {
        while let Some(i) = s.next_ready() {
            let (tx, line, abort, work, n) = (tx.clone(), &lines[i], &abort, &work, &nodes[i]);
            scope.spawn(move || {
                let t0 = start.elapsed();
                line.state("started", "");
                let ctx = Ctx { line, abort };
                // A bug that panics in one task must fail the run (and let teardown happen),
                // not leave this loop waiting for a message that never comes.
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(n, &ctx)))
                    .unwrap_or_else(|p| Err(panic_error(p.as_ref())));
                let _ = tx.send((i, t0, start.elapsed(), r));
            });
        }
        if s.running == 0 {
            break;
        }
        match rx.recv() {
            Ok(report) => {
                let i = report.0;
                s.finished(report, &lines[i], &abort);
                watch(&s, start.elapsed());
            }
            Err(_) => break,
        }
    });
    for (i, t) in s.timings.iter().enumerate() {
        if t.start.is_none() {
            lines[i].finish(false, "skipped");
        }
    }
    if s.error.is_none() && crate::exec::signals::interrupted() {
        s.error = Some(anyhow::anyhow!("interrupted"));
    }
    Execution {
        timings: s.timings,
        error: s.error,
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
                    for _ in 0..1000 {
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
            ex.total < Duration::from_secs(5),
            "the poller stopped early"
        );
    }

    /// The tests' stand-in: runs `alongside` and says whether the job had ended by then.
    fn beside_job(fail: &str) -> (Execution, Option<(Duration, bool)>) {
        let job_done = AtomicBool::new(false);
        let nodes = vec![
            node("pg", &[]),
            node("ds", &["pg"]),
            node("job", &["pg", "ds"]),
        ];
        let beside = BTreeSet::from(["job".to_string()]);
        execute_alongside(
            &nodes,
            &BTreeMap::new(),
            &Progress::plain(),
            &beside,
            |n, _| {
                std::thread::sleep(Duration::from_millis(if n.id == "job" { 300 } else { 20 }));
                if n.id == fail {
                    anyhow::bail!("{fail} failed");
                }
                job_done.store(n.id == "job", Ordering::SeqCst);
                Ok(String::new())
            },
            |at| {
                std::thread::sleep(Duration::from_millis(50));
                (at, job_done.load(Ordering::SeqCst))
            },
        )
    }

    #[test]
    fn the_tests_run_beside_a_task_they_do_not_wait_for() {
        let (ex, alongside) = beside_job("");
        assert!(ex.error.is_none(), "{:?}", ex.error);
        let (at, job_ended) = alongside.expect("the tests did not run");
        let t: BTreeMap<_, _> = ex.timings.iter().map(|t| (t.id.as_str(), t)).collect();
        // They start when ds is done, while the job still runs, and the job still finishes.
        assert!(
            at >= t["ds"].end.unwrap() && at < t["job"].end.unwrap(),
            "{at:?} {t:?}"
        );
        assert!(!job_ended);
        assert_eq!(t["job"].outcome, Outcome::Done);
    }

    #[test]
    fn beside_the_tests_a_failure_still_fails_the_run_and_before_them_skips_them() {
        let (ex, alongside) = beside_job("job");
        assert!(alongside.is_some());
        assert!(format!("{:#}", ex.error.unwrap()).contains("job failed"));
        let (ex, alongside) = beside_job("ds");
        assert!(alongside.is_none(), "the tests ran after ds failed");
        assert!(format!("{:#}", ex.error.unwrap()).contains("ds failed"));
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
