//! `cargo xtask integration <consumer>`: a real podman stack in dependency order, the
//! consumer's integration tests against it, then teardown.
//!
//! The plan ([`plan::integration`]) is pure; here the host is prepared, earlier runs and host
//! ports are checked, the run is recorded, the graph runs (each step's actions from
//! [`exec::steps`]), the tests get the URLs, and everything the run labelled is removed.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use crate::config::Config;
use crate::exec::actions::Runner;
use crate::exec::steps::{self, Tools};
use crate::exec::{dag, lifecycle, record};
use crate::flags::{self, ProgressMode};
use crate::host::preflight::{self, EarlierState};
use crate::host::tools::{self, Engine, Need};
use crate::plan::integration::{self as planner, Plan, Step, TIER};
use crate::plan::Run;

/// The entry point of the command.
pub fn run(config: &Config, args: &flags::Integration, mode: ProgressMode) -> Result<ExitCode> {
    config.consumer(&args.consumer)?;
    let runs_dir = record::runs_dir(&config.root);
    if args.down {
        let engine = tools::require(&[Need::Engine])?.context("no container engine")?;
        return down(&engine, &runs_dir, &args.consumer).map(|_| ExitCode::SUCCESS);
    }
    let engine = crate::cmd::setup::prepare(config, crate::cmd::setup::Purpose::Run)?;
    let facts = crate::host::facts::gather(&config.root)?;
    let env = |k: &str| std::env::var(k).ok();
    let stack = config.stack(&args.consumer, crate::config::TierName::Integration)?;
    let cache = crate::exec::cache::Cache::open(&record::target_dir(&config.root));
    let snapshots = crate::exec::snapshot::decide(config, &stack, &engine, &cache, args.rebuild)?;
    cache.save_hashes();
    let run = Run {
        config,
        consumer: &args.consumer,
        facts: &facts,
        runs_dir: &runs_dir,
        pid: std::process::id(),
        env: &env,
        snapshots: &snapshots,
    };
    let mut plan = planner::plan(&run, &args.test_args)?;
    if args.no_tests {
        plan.nodes
            .retain(|n| !matches!(n.action, Step::CompileTests { .. }));
    }
    preflight_checks(&engine, &runs_dir, &plan)?;
    execute(config, &engine, &plan, args, mode)
}

/// Records the run, runs the graph and the tests, tears down (or keeps) and reports.
fn execute(
    config: &Config,
    engine: &Engine,
    plan: &Plan,
    args: &flags::Integration,
    mode: ProgressMode,
) -> Result<ExitCode> {
    let width = plan.nodes.iter().map(|n| n.id.len()).max().unwrap_or(8);
    let run = lifecycle::begin(&plan.labels, &plan.run_dir, engine.name(), width, mode)?;
    let containers = plan
        .nodes
        .iter()
        .filter(|n| matches!(n.action, Step::Container { .. }))
        .count();
    run.progress.println(&format!(
        "integration {}: run {} ({containers} containers on {}, {} engine)",
        plan.consumer,
        plan.run_id,
        plan.network,
        engine.name()
    ));
    let tools = Tools {
        engine,
        root: &config.root,
        kind: None,
        kubectl: None,
        slots: 0,
        rebuild: args.rebuild,
    };
    let runner = Runner::new(engine, &run.record, &config.root, &plan.run_dir);
    let limits = [("build", 4usize)].into_iter().collect();
    let ex = dag::execute(&plan.nodes, &limits, &run.progress, |n, ctx| {
        runner.perform_all(&n.id, &steps::integration(&n.action, &tools), ctx)
    });
    let mut report = run.report(&ex);
    report.add_cache_notes(runner.cache_notes());
    let mut outcome: Result<ExitCode> = ex.error.map_or(Ok(ExitCode::SUCCESS), Err);
    if outcome.is_ok() && !crate::exec::signals::interrupted() {
        run.progress
            .println(&format!("stack ready in {:.1}s", ex.total.as_secs_f64()));
        if !args.no_tests {
            let ms;
            (outcome, ms) = run.run_tests(lifecycle::tests_cmd(&plan.tests, &config.root));
            report.extra.insert("tests_ms".into(), ms);
        }
    }
    // --no-tests keeps a stack that came up; --keep keeps it whatever happened (to debug it).
    let keep = args.keep || (args.no_tests && outcome.is_ok());
    if keep && !crate::exec::signals::interrupted() {
        run.keep()?;
        print!("{}", kept(plan));
    } else {
        outcome = run.teardown(&mut report, outcome, || {
            let removed = crate::host::removal::remove_run_recorded(
                engine,
                &plan.run_dir,
                &plan.run_id,
                false,
            )?;
            record::remove_scratch(&plan.run_dir)?;
            Ok(removed.to_string())
        })?;
    }
    run.finish(report, outcome)
}

/// Stale runs of this consumer are removed; a taken port (naming its holder), a kept stack or
/// a live run stops here, before anything is created.
fn preflight_checks(engine: &Engine, runs_dir: &Path, plan: &Plan) -> Result<()> {
    let earlier =
        preflight::earlier_runs(engine, runs_dir, &plan.labels.owner, &plan.consumer, TIER)?;
    let c = &plan.consumer;
    let mut notes = BTreeMap::new();
    for e in &earlier {
        let note = match e.state {
            EarlierState::Stale => {
                let removed = crate::host::removal::remove_run_recorded(
                    engine,
                    &runs_dir.join(&e.run_id),
                    &e.run_id,
                    false,
                )?;
                record::mark_finished(&runs_dir.join(&e.run_id).join("record.jsonl"))?;
                crate::exec::progress::Progress::plain().println(&format!(
                    "removed what an earlier run {} left (its process {} is gone): {removed}",
                    e.run_id, e.pid
                ));
                continue;
            }
            EarlierState::Kept => format!(
                "it was kept with --keep: take it down with `cargo xtask integration {c} --down`"
            ),
            EarlierState::Live => "that run is still in progress: wait for it to finish".into(),
        };
        notes.insert(e.run_id.clone(), note);
    }
    preflight::check_ports(engine, &plan.claims, &notes)?;
    crate::cmd::setup::disk_check(engine, runs_dir)?;
    if let Some(e) = earlier.iter().find(|e| e.state != EarlierState::Stale) {
        let (what, next) = if e.state == EarlierState::Live {
            (
                format!("process {} running", e.pid),
                "wait for it to finish".to_string(),
            )
        } else {
            (
                "kept with --keep".to_string(),
                format!("take it down with `cargo xtask integration {c} --down`"),
            )
        };
        bail!(
            "another integration stack of {c} is up (run {}, {what}); {next}",
            e.run_id
        );
    }
    Ok(())
}

/// What `--keep` / `--no-tests` print: the URLs, and how to take the stack down.
fn kept(plan: &Plan) -> String {
    let mut s = format!(
        "the {} integration stack (run {}) is up:\n",
        plan.consumer, plan.run_id
    );
    for (k, v) in &plan.tests.env {
        if k.ends_with("_URL") {
            s.push_str(&format!("  export {k}={v}\n"));
        }
    }
    s.push_str(&format!(
        "take it down with: cargo xtask integration {} --down\n",
        plan.consumer
    ));
    s
}

/// Takes down what `--keep` (or a killed run) left of this owner's stacks of `consumer`.
fn down(engine: &Engine, runs_dir: &Path, consumer: &str) -> Result<()> {
    let owner = crate::plan::facts::sanitize_user(&crate::host::facts::login_name());
    let earlier = preflight::earlier_runs(engine, runs_dir, &owner, consumer, TIER)?;
    let say = |s: &str| println!("{s}");
    if earlier.is_empty() {
        say(&format!(
            "no integration stack of {consumer} owned by {owner} is up"
        ));
        return Ok(());
    }
    for e in &earlier {
        if e.state == EarlierState::Live {
            bail!(
                "run {} of {consumer} is still in progress (process {}); stop it first (Ctrl-C \
                 in its terminal), it cleans up itself",
                e.run_id,
                e.pid
            );
        }
        let run_dir = runs_dir.join(&e.run_id);
        let removed =
            crate::host::removal::remove_run_recorded(engine, &run_dir, &e.run_id, false)?;
        record::mark_finished(&run_dir.join("record.jsonl"))?;
        say(&format!("run {}: removed {removed}", e.run_id));
    }
    Ok(())
}
