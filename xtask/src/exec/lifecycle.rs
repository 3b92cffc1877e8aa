//! What every run (integration or E2E) does around its task graph: record and signal handling
//! before anything is created, the consumer's tests, teardown bookkeeping, and the report.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};

use crate::exec::builds::cargo;
use crate::exec::process::Cmd;
use crate::exec::progress::Progress;
use crate::exec::record::{self, Event, Record};
use crate::exec::report::Report;
use crate::flags::ProgressMode;
use crate::plan::labels::RunLabels;
use crate::plan::Tests;

/// A run that has started: its record exists, Ctrl-C cleans up.
pub struct Run {
    pub labels: RunLabels,
    pub run_dir: PathBuf,
    pub record: Record,
    pub progress: Progress,
    started_ms: u128,
    t0: Instant,
}

/// Writes the run record (before anything is created), installs signal handling, and starts
/// the progress output. `width` aligns task names.
pub fn begin(
    labels: &RunLabels,
    run_dir: &Path,
    engine: &str,
    width: usize,
    mode: ProgressMode,
) -> Result<Run> {
    let record = Record::create(
        run_dir,
        Event::Run {
            run_id: labels.run.clone(),
            pid: labels.pid,
            pid_start: record::pid_start(labels.pid),
            owner: labels.owner.clone(),
            consumer: labels.consumer.clone(),
            tier: labels.tier.into(),
            created: labels.created,
            engine: engine.into(),
            argv: std::env::args().collect(),
        },
    )?;
    crate::exec::signals::install(
        format!("{} run {} of {}", labels.tier, labels.run, labels.consumer),
        "`cargo xtask clean --orphans` then removes what is left",
    )?;
    Ok(Run {
        labels: labels.clone(),
        run_dir: run_dir.to_path_buf(),
        record,
        progress: Progress::new(mode, width),
        started_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0),
        t0: Instant::now(),
    })
}

/// The consumer's test command, from the repository root, with the stack's URLs; `cargo` is
/// the cargo running this xtask (`$CARGO`).
pub fn tests_cmd(tests: &Tests, root: &Path) -> Cmd {
    let (program, args) = match tests.argv.split_first() {
        Some((p, rest)) if p == "cargo" => (cargo(), rest),
        Some((p, rest)) => (Cmd::new(p), rest),
        None => (Cmd::new("true"), &[][..]),
    };
    program.args(args).envs(&tests.env).current_dir(root)
}

/// The report's word for how a run ended.
pub fn outcome_label(outcome: &Result<ExitCode>, interrupted: bool) -> &'static str {
    match (outcome, interrupted) {
        (_, true) => "interrupted",
        (Ok(c), _) if *c == ExitCode::SUCCESS => "passed",
        (Ok(_), _) => "tests failed",
        (Err(_), _) => "failed",
    }
}

impl Run {
    /// A report of the graph's timings, to which later phases add their times.
    pub fn report(&self, ex: &crate::exec::dag::Execution) -> Report {
        Report::new(
            &self.labels.run,
            &self.labels.consumer,
            self.labels.tier,
            self.started_ms,
            &ex.timings,
            ex.total,
            "",
        )
    }

    /// Runs the consumer's tests with the terminal (bars hidden); the exit code is theirs,
    /// with how long they took (the report's `tests_ms`).
    pub fn run_tests(&self, cmd: Cmd) -> (Result<ExitCode>, u64) {
        let t = Instant::now();
        let outcome = self.tests(cmd);
        (outcome, t.elapsed().as_millis() as u64)
    }

    fn tests(&self, cmd: Cmd) -> Result<ExitCode> {
        let urls: Vec<String> = cmd
            .env_vars()
            .into_iter()
            .filter(|(k, _)| k.ends_with("_URL"))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        self.progress.println(&format!(
            "running the {} {} tests with {}",
            self.labels.consumer,
            self.labels.tier,
            urls.join(" ")
        ));
        let status = self.progress.hand_over(|| cmd.run_inherit())?;
        if status.success() {
            return Ok(ExitCode::SUCCESS);
        }
        self.progress.println(&format!(
            "{} {} tests failed ({})",
            self.labels.consumer,
            self.labels.tier,
            crate::exec::process::describe_status(status)
        ));
        Ok(ExitCode::from(
            status.code().unwrap_or(1).clamp(1, 255) as u8
        ))
    }

    /// Runs the teardown and records the run as finished when it worked. A failed teardown
    /// fails the run (whatever the tests said), telling how to retry.
    pub fn teardown(
        &self,
        report: &mut Report,
        outcome: Result<ExitCode>,
        work: impl FnOnce() -> Result<String>,
    ) -> Result<Result<ExitCode>> {
        let t = Instant::now();
        let result = work();
        report
            .extra
            .insert("teardown_ms".into(), t.elapsed().as_millis() as u64);
        Ok(match result {
            Ok(summary) => {
                self.record.add(&Event::Finished)?;
                self.progress.println(&format!("removed {summary}"));
                outcome
            }
            Err(e) => {
                let e = e.context(format!(
                    "cleanup of run {run} failed; retry with `cargo xtask clean --run {run}`",
                    run = self.labels.run
                ));
                match outcome {
                    // The run's own failure comes first; the cleanup's is printed too.
                    Err(first) => {
                        self.progress.block(&format!("error: {e:#}\n"));
                        Err(first)
                    }
                    Ok(_) => Err(e),
                }
            }
        })
    }

    /// Marks the run as kept on purpose (`--keep`): not an orphan.
    pub fn keep(&self) -> Result<()> {
        self.record.add(&Event::Kept)
    }

    /// Writes the report, prints its table, and returns the run's result.
    pub fn finish(&self, mut report: Report, outcome: Result<ExitCode>) -> Result<ExitCode> {
        let interrupted = crate::exec::signals::interrupted();
        report.outcome = outcome_label(&outcome, interrupted).to_string();
        report
            .extra
            .insert("wall_ms".into(), self.t0.elapsed().as_millis() as u64);
        let path = self.run_dir.join("report.json");
        report.write(&path)?;
        self.progress.block(&report.table());
        self.progress
            .block(&format!("run report: {}\n", path.display()));
        if interrupted {
            bail!("interrupted; run {} was cleaned up", self.labels.run);
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes() {
        assert_eq!(outcome_label(&Ok(ExitCode::SUCCESS), false), "passed");
        assert_eq!(
            outcome_label(&Ok(ExitCode::from(101)), false),
            "tests failed"
        );
        assert_eq!(outcome_label(&Err(anyhow::anyhow!("x")), false), "failed");
        assert_eq!(outcome_label(&Ok(ExitCode::SUCCESS), true), "interrupted");
    }

    #[test]
    fn test_command_is_one_argv() {
        let mut t = Tests::new(
            &crate::config::TestCmd::Cargo {
                package: "gateway".into(),
                target: "e2e".into(),
            },
            &["name".into()],
        );
        t.env.insert("A_URL".into(), "http://x".into());
        let c = tests_cmd(&t, Path::new("/repo"));
        assert_eq!(
            c.argv()[1..],
            [
                "test",
                "--package",
                "gateway",
                "--test",
                "e2e",
                "--",
                "--include-ignored",
                "name"
            ]
        );
        assert_eq!(
            c.env_vars(),
            vec![("A_URL".to_string(), "http://x".to_string())]
        );
        let t = Tests::new(
            &crate::config::TestCmd::Argv(vec!["./smoke".into(), "-v".into()]),
            &[],
        );
        assert_eq!(tests_cmd(&t, Path::new("/repo")).argv(), ["./smoke", "-v"]);
    }
}
