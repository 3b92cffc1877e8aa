//! Planning: pure functions from `infra.toml` and a run's facts to what the run will do.
//! Nothing here starts a process, touches the engine or imports `exec` or `host` (a tidy test
//! checks): the dry run and the real run are made from the same plan.
// Workers never print straight to the terminal: output goes through exec::progress or is
// returned to the command.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod e2e;
pub mod facts;
pub mod images;
pub mod integration;
pub mod labels;
pub mod probe;
pub mod render;
pub mod specs;
pub mod stack;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::config::{Config, TestCmd};
use crate::plan::facts::Facts;
use crate::plan::labels::RunLabels;

/// What every planner is given: the configuration, the consumer, the run's facts (gathered
/// once), where runs are recorded, this process's id, and how to read the environment.
#[derive(Clone, Copy)]
pub struct Run<'a> {
    pub config: &'a Config,
    pub consumer: &'a str,
    pub facts: &'a Facts,
    pub runs_dir: &'a Path,
    pub pid: u32,
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// Ready-made data images, decided before planning (integration runs make them; E2E runs
    /// deploy from the cached ones).
    pub snapshots: &'a std::collections::BTreeMap<String, Snapshot>,
}

/// A member's data image (see `exec::snapshot`): its key and cache reference, whether it is
/// cached (`hit`: start from it, skip its jobs) or to be made by this run, and why not cached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub key: String,
    pub cache_ref: String,
    pub hit: bool,
    pub why: String,
}

/// No data images (callers that plan without the engine).
pub static NO_SNAPSHOTS: std::sync::LazyLock<std::collections::BTreeMap<String, Snapshot>> =
    std::sync::LazyLock::new(Default::default);

impl Run<'_> {
    pub fn id(&self) -> &str {
        &self.facts.run_id
    }

    /// `target/xtask/runs/<run id>`: the record, report and scratch files of the run.
    pub fn dir(&self) -> PathBuf {
        self.runs_dir.join(self.id())
    }

    /// The member whose cached data image already holds `job`'s work (its `snapshot.after`
    /// names the job and the image is a hit), if any: the job is then verified (integration)
    /// or runs beside what needs it (E2E) instead of before it.
    pub fn holder<'s>(&self, stack: &'s crate::config::Stack, job: &str) -> Option<&'s str> {
        stack
            .members
            .iter()
            .find(|o| {
                o.snapshot
                    .as_ref()
                    .is_some_and(|s| s.after.iter().any(|a| a == job))
                    && self.snapshots.get(&o.name).is_some_and(|d| d.hit)
            })
            .map(|o| o.name.as_str())
    }

    pub fn labels(&self, tier: &'static str) -> RunLabels {
        RunLabels {
            owner: self.facts.user.clone(),
            run: self.id().to_string(),
            created: self.facts.unix,
            consumer: self.consumer.to_string(),
            tier,
            pid: self.pid,
        }
    }

    /// The base our service images are built on (`[images.runtime]`, or its override).
    pub fn runtime_base(&self) -> Result<String> {
        let runtime = self.config.images.get("runtime").with_context(|| {
            format!(
                "{} has no [images.runtime] (the base of service images)",
                self.config.file.display()
            )
        })?;
        Ok(runtime.resolve(self.env))
    }
}

/// How a consumer's tests are run: argv, from the repository root, with the stack's URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tests {
    pub argv: Vec<String>,
    /// The cargo test target to compile while the stack starts (cargo tests only).
    pub compile: Option<(String, String)>,
    pub env: std::collections::BTreeMap<String, String>,
}

impl Tests {
    /// `cargo test --package P --test T -- --include-ignored <extra>`, or the consumer's argv
    /// with `extra` appended.
    pub fn new(test: &TestCmd, extra: &[String]) -> Tests {
        let (argv, compile) = match test {
            TestCmd::Cargo { package, target } => {
                let mut a: Vec<String> = ["cargo", "test", "--package", package, "--test", target]
                    .map(String::from)
                    .to_vec();
                a.extend(["--", "--include-ignored"].map(String::from));
                (a, Some((package.clone(), target.clone())))
            }
            TestCmd::Argv(argv) => (argv.clone(), None),
        };
        let mut argv = argv;
        argv.extend(extra.iter().cloned());
        Tests {
            argv,
            compile,
            env: Default::default(),
        }
    }

    /// The `compile-tests` task (cargo tests only), after the images' `compile` if there is
    /// one: both are cargo, which serialises on its lock anyway.
    pub fn compile_node<S>(
        &self,
        nodes: &[crate::graph::Node<S>],
        step: impl FnOnce(String, String) -> S,
    ) -> Option<crate::graph::Node<S>> {
        let (package, target) = self.compile.clone()?;
        let after_compile = nodes.iter().any(|n| n.id == "compile");
        Some(crate::graph::Node {
            id: "compile-tests".into(),
            deps: after_compile
                .then(|| "compile".to_string())
                .into_iter()
                .collect(),
            pool: None,
            action: step(package, target),
        })
    }
}
