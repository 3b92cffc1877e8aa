//! `cargo xtask integration <consumer>`: a real podman stack in dependency order, the
//! consumer's integration tests against it, then teardown.
//!
//! [`plan`] is pure: `infra.toml` + the run's facts in, the task graph with every container's
//! argv out. [`run`] checks tools and ports, records the run, executes the graph (independent
//! parts in parallel, each container checked for readiness), runs the tests with the URLs in the
//! environment, and removes everything the run labelled.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::config::{names, Config, PortRef, RustSpec, Source, TestCmd, TierName};
use crate::exec::builds;
use crate::exec::dag::{self, Node};
use crate::exec::lifecycle;
use crate::exec::process::Cmd;
use crate::exec::progress::Progress;
use crate::exec::record::{self, Event, Record};
use crate::flags::{self, ProgressMode};
use crate::host::engine::{BuildSpec, ContainerSpec};
use crate::host::labels::RunLabels;
use crate::host::preflight::{self, Claim, EarlierState};
use crate::host::ready::{self, Probe};
use crate::host::tools::{self, Engine, Need};
use crate::plan::facts::Facts;
use crate::plan::stack::{self, Site};

pub const TIER: &str = "integration";

/// One task of an integration run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// One `cargo build` for every service image of the stack.
    Compile { packages: Vec<String> },
    /// `cargo test --no-run` of the consumer's integration tests, while the stack starts.
    CompileTests { package: String, target: String },
    Image {
        service: String,
        spec: RustSpec,
        build: BuildSpec,
    },
    Network {
        name: String,
        labels: BTreeMap<String, String>,
    },
    /// A long-running component (ready when its probe passes) or a job (ready when it exited 0).
    Container {
        component: String,
        spec: ContainerSpec,
        probe: Option<Probe>,
        timeout: Duration,
        job: bool,
    },
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub run_id: String,
    pub consumer: String,
    pub labels: RunLabels,
    pub run_dir: PathBuf,
    pub network: String,
    pub nodes: Vec<Node<Step>>,
    /// Host ports of the stack, and the environment the tests get.
    pub ports: BTreeMap<PortRef, u16>,
    pub test_env: BTreeMap<String, String>,
    pub test_package: String,
    pub test_target: String,
}

/// Everything the run will do, derived from the config and the facts gathered once.
#[allow(clippy::too_many_arguments)]
pub fn plan(
    config: &Config,
    consumer: &str,
    facts: &Facts,
    runs_dir: &Path,
    pid: u32,
    env: &dyn Fn(&str) -> Option<String>,
    compile_tests: bool,
) -> Result<Plan> {
    let c = config
        .consumer(consumer)?
        .integration
        .as_ref()
        .with_context(|| {
            format!(
                "{} has no [consumers.{consumer}.integration] table; add one to run its \
                 integration tests",
                config.file.display()
            )
        })?;
    let stack = config.stack(consumer, TierName::Integration)?;
    stack::refuse_not_yet_run(&stack)?;
    let (test_package, test_target) = cargo_test(&c.test, consumer)?;
    let run_id = facts.run_id.clone();
    let run_dir = runs_dir.join(&run_id);
    let labels = RunLabels {
        owner: facts.user.clone(),
        run: run_id.clone(),
        created: facts.unix,
        consumer: consumer.to_string(),
        tier: TIER,
        pid,
    };
    let network = names::network_name(consumer);
    let mut nodes = Vec::new();

    let services = stack::image_services(&stack);
    let runtime = config
        .images
        .get("runtime")
        .context("infra.toml has no [images.runtime] (the base of service images)")?;
    let runtime_base = runtime.resolve(env);
    let mut image_refs: BTreeMap<String, String> = BTreeMap::new();
    if !services.is_empty() {
        let packages = services
            .iter()
            .map(|s| Ok(config.service(s)?.package.clone()))
            .collect::<Result<Vec<_>>>()?;
        nodes.push(Node {
            id: "compile".into(),
            deps: vec![],
            pool: None,
            action: Step::Compile { packages },
        });
        for s in &services {
            let spec = config.service(s)?.clone();
            let reference = facts.infra_ref(s, consumer);
            let ctx = builds::context_dir(&run_dir, s);
            let build = builds::build_spec(
                config,
                &spec,
                &reference,
                &ctx,
                labels.for_service(s),
                facts,
                &runtime_base,
            );
            image_refs.insert(s.clone(), reference);
            nodes.push(Node {
                id: format!("image:{s}"),
                deps: vec!["compile".into()],
                pool: Some("build"),
                action: Step::Image {
                    service: s.clone(),
                    spec,
                    build,
                },
            });
        }
    }
    nodes.push(Node {
        id: "network".into(),
        deps: vec![],
        pool: None,
        action: Step::Network {
            name: network.clone(),
            labels: labels.for_service("network"),
        },
    });

    for comp in &stack.members {
        let m = &comp.name;
        let image = match &comp.source {
            Source::Image { image } => config.images[image].resolve(env),
            _ => image_refs[comp.image_service().unwrap_or_default()].clone(),
        };
        let mut publish = Vec::new();
        for (pr, host) in &c.ports {
            if &pr.component == m {
                if let Some(internal) = comp.internal_port(pr.port.as_deref()) {
                    publish.push((*host, internal));
                }
            }
        }
        let name = names::container_name(consumer, m);
        // Only jobs' args are run today (command, args and mounts of others: not yet).
        let args = if comp.is_job() {
            comp.args.clone()
        } else {
            Vec::new()
        };
        let spec = ContainerSpec {
            name: name.clone(),
            image,
            network: network.clone(),
            labels: labels.for_service(m),
            env: stack::env(config, &stack, comp, Site::Network { consumer })?,
            publish,
            args,
        };
        let host_port = |p: Option<&str>| {
            c.ports
                .get(&PortRef {
                    component: m.clone(),
                    port: p.map(str::to_string),
                })
                .copied()
        };
        let probe = Probe::for_component(&comp.ready, &name, &config.postgres, &host_port)?;
        let mut deps = vec!["network".to_string()];
        deps.extend(comp.needs.iter().cloned());
        if let Some(s) = comp.image_service() {
            deps.push(format!("image:{s}"));
        }
        nodes.push(Node {
            id: m.clone(),
            deps,
            pool: None,
            action: Step::Container {
                component: m.clone(),
                spec,
                probe,
                timeout: comp.timeout,
                job: comp.is_job(),
            },
        });
    }
    if compile_tests {
        nodes.push(Node {
            id: "compile-tests".into(),
            // After the image binaries: both are cargo, which serialises on its lock anyway.
            deps: if services.is_empty() {
                vec![]
            } else {
                vec!["compile".into()]
            },
            pool: None,
            action: Step::CompileTests {
                package: test_package.clone(),
                target: test_target.clone(),
            },
        });
    }
    dag::validate(&nodes)?;
    let mut test_env = stack::test_env(config, &stack, &c.ports)?;
    test_env.insert("XTASK_RUN_ID".into(), run_id.clone());
    test_env.insert("XTASK_TIER".into(), TIER.into());
    Ok(Plan {
        run_id,
        consumer: consumer.to_string(),
        labels,
        run_dir,
        network,
        nodes,
        ports: c.ports.clone(),
        test_env,
        test_package,
        test_target,
    })
}

/// The package and target of a consumer's `cargo test` (an argv `test` is not run yet).
pub fn cargo_test(test: &TestCmd, consumer: &str) -> Result<(String, String)> {
    match test {
        TestCmd::Cargo { package, target } => Ok((package.clone(), target.clone())),
        TestCmd::Argv(argv) => bail!(
            "{consumer}'s tests are the command `{}`; running a test command other than `cargo \
             test` is not implemented yet",
            argv.join(" ")
        ),
    }
}

/// The entry point of the command.
pub fn run(config: &Config, args: &flags::Integration, mode: ProgressMode) -> Result<ExitCode> {
    config.consumer(&args.consumer)?;
    let engine = if args.down {
        tools::require(&[Need::Engine])?.context("no container engine")?
    } else {
        crate::cmd::setup::prepare(config, crate::cmd::setup::Purpose::Run)?
    };
    let runs_dir = record::runs_dir(&config.root);
    if args.down {
        return down(&engine, &runs_dir, &args.consumer).map(|_| ExitCode::SUCCESS);
    }
    let facts = Facts::gather(&config.root)?;
    let env = |k: &str| std::env::var(k).ok();
    let with_tests = !args.no_tests;
    let plan = plan(
        config,
        &args.consumer,
        &facts,
        &runs_dir,
        std::process::id(),
        &env,
        with_tests,
    )?;

    prepare(&engine, &runs_dir, &plan)?;
    let width = plan.nodes.iter().map(|n| n.id.len()).max().unwrap_or(8);
    let run = lifecycle::begin(&plan.labels, &plan.run_dir, &engine, width, mode)?;
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
    let ex = execute(config, &engine, &plan, &run.record, &run.progress);
    let mut report = run.report(&ex);
    let mut outcome: Result<ExitCode> = ex.error.map_or(Ok(ExitCode::SUCCESS), Err);
    if outcome.is_ok() && !crate::exec::signals::interrupted() {
        run.progress
            .println(&format!("stack ready in {:.1}s", ex.total.as_secs_f64()));
        if with_tests {
            let cmd = test_cmd(&plan, &args.test_args).current_dir(&config.root);
            outcome = run.run_tests(cmd, &mut report);
        }
    }
    // --no-tests keeps a stack that came up; --keep keeps it whatever happened (to debug it).
    let keep = args.keep || (args.no_tests && outcome.is_ok());
    if keep && !crate::exec::signals::interrupted() {
        run.keep()?;
        print_kept(&plan);
    } else {
        outcome = run.teardown(&mut report, outcome, || {
            let removed = crate::host::removal::remove_run(&engine, &plan.run_id, false)?;
            record::remove_scratch(&plan.run_dir)?;
            Ok(removed.to_string())
        })?;
    }
    run.finish(report, outcome)
}

/// Stale runs of this consumer are removed; a taken port (naming its holder), a kept stack or
/// a live run stops here, before anything is created.
fn prepare(engine: &Engine, runs_dir: &Path, plan: &Plan) -> Result<()> {
    let earlier =
        preflight::earlier_runs(engine, runs_dir, &plan.labels.owner, &plan.consumer, TIER)?;
    let mut notes = BTreeMap::new();
    for e in &earlier {
        match e.state {
            EarlierState::Stale => {
                let removed = crate::host::removal::remove_run(engine, &e.run_id, false)?;
                record::mark_finished(&runs_dir.join(&e.run_id).join("record.jsonl"))?;
                eprintln!(
                    "removed what an earlier run {} left (its process {} is gone): {removed}",
                    e.run_id, e.pid
                );
            }
            EarlierState::Kept => {
                notes.insert(
                    e.run_id.clone(),
                    format!("it was kept with --keep: take it down with `cargo xtask integration {} --down`", plan.consumer),
                );
            }
            EarlierState::Live => {
                notes.insert(
                    e.run_id.clone(),
                    "that run is still in progress: wait for it to finish".to_string(),
                );
            }
        }
    }
    let claims: Vec<Claim> = plan
        .ports
        .iter()
        .map(|(pr, p)| Claim {
            port: *p,
            what: format!("{} integration {pr}", plan.consumer),
        })
        .collect();
    preflight::check_ports(engine, &claims, &notes)?;
    if let Some(e) = earlier.iter().find(|e| e.state != EarlierState::Stale) {
        bail!(
            "another integration stack of {c} is up (run {}, {}); {}",
            e.run_id,
            if e.state == EarlierState::Live {
                format!("process {} running", e.pid)
            } else {
                "kept with --keep".to_string()
            },
            if e.state == EarlierState::Live {
                "wait for it to finish".to_string()
            } else {
                format!(
                    "take it down with `cargo xtask integration {c} --down`",
                    c = plan.consumer
                )
            },
            c = plan.consumer
        );
    }
    Ok(())
}

/// Runs the graph; the work of each task is here.
fn execute(
    config: &Config,
    engine: &Engine,
    plan: &Plan,
    record: &Record,
    progress: &Progress,
) -> dag::Execution {
    let builds = builds::Builds::new(&config.root, engine, record);
    let limits = [("build", 4usize)].into_iter().collect();
    dag::execute(&plan.nodes, &limits, progress, |node, ctx| {
        match &node.action {
            Step::Compile { packages } => builds.compile(packages, ctx.line),
            Step::CompileTests { package, target } => {
                builds.compile_tests(package, target, ctx.line)
            }
            Step::Image {
                service,
                spec,
                build,
            } => builds.service_image(service, spec, build, ctx.line),
            Step::Network { name, labels } => {
                record.add(&Event::Network { name: name.clone() })?;
                engine.create_network(name, labels)?;
                Ok(name.clone())
            }
            Step::Container {
                component,
                spec,
                probe,
                timeout,
                job,
            } => {
                record.add(&Event::Container {
                    name: spec.name.clone(),
                })?;
                ctx.line.state("starting", &spec.image);
                engine
                    .run_container(spec)
                    .with_context(|| missing_image_hint(config, component, &spec.image))?;
                if *job {
                    ctx.line.state("running", &spec.args.join(" "));
                    let code = engine.wait_exit(&spec.name, *timeout)?;
                    if code != 0 {
                        bail!(
                            "{component} (a one-shot job in {}) exited with {code}; its last log lines:\n{}",
                            spec.name,
                            crate::exec::process::indent(&engine.logs_tail(&spec.name, 30))
                        );
                    }
                    return Ok("completed".into());
                }
                match probe {
                    Some(p) => {
                        let took = ready::wait(engine, &spec.name, p, *timeout, ctx)?;
                        Ok(format!(
                            "ready ({}, after {:.1}s)",
                            p.describe(),
                            took.as_secs_f64()
                        ))
                    }
                    None => Ok("started".into()),
                }
            }
        }
    })
}

/// What to do when a container cannot start: for a third-party image, where a local one
/// comes from on a host without a registry.
fn missing_image_hint(config: &Config, component: &str, image: &str) -> String {
    match config.components.get(component).map(|c| &c.source) {
        Some(Source::Image { image: name }) => {
            let var = config
                .images
                .get(name)
                .and_then(|i| i.env.clone())
                .unwrap_or_else(|| format!("[images.{name}].ref"));
            format!(
                "{component} could not start from `{image}`; if the host has no registry, build local \
                 stand-ins with `sudo -E cargo xtask standins` and point {var} at them with \
                 `eval \"$(cargo xtask standins --print-env)\"`"
            )
        }
        _ => format!("{component} could not start from `{image}`"),
    }
}

fn test_cmd(plan: &Plan, extra: &[String]) -> Cmd {
    lifecycle::test_cmd(&plan.test_package, &plan.test_target, extra, &plan.test_env)
}

fn print_kept(plan: &Plan) {
    println!(
        "the {} integration stack (run {}) is up:",
        plan.consumer, plan.run_id
    );
    for (k, v) in &plan.test_env {
        if k.ends_with("_URL") {
            println!("  export {k}={v}");
        }
    }
    println!(
        "take it down with: cargo xtask integration {} --down",
        plan.consumer
    );
}

/// Takes down what `--keep` (or a killed run) left of this owner's stacks of `consumer`.
fn down(engine: &Engine, runs_dir: &Path, consumer: &str) -> Result<()> {
    let owner = crate::plan::facts::sanitize_user(&crate::plan::facts::login_name());
    let earlier = preflight::earlier_runs(engine, runs_dir, &owner, consumer, TIER)?;
    if earlier.is_empty() {
        println!("no integration stack of {consumer} owned by {owner} is up");
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
        let removed = crate::host::removal::remove_run(engine, &e.run_id, false)?;
        record::mark_finished(&runs_dir.join(&e.run_id).join("record.jsonl"))?;
        println!("run {}: removed {removed}", e.run_id);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::stack::tests::{facts, repo_config};

    fn plan_for(consumer: &str) -> Plan {
        let env = |k: &str| {
            (k == "XTASK_IMAGE_POSTGRES")
                .then(|| "localhost/xtask-standin/postgres:15-bookworm".to_string())
        };
        plan(
            &repo_config(),
            consumer,
            &facts(),
            Path::new("/repo/target/xtask/runs"),
            42,
            &env,
            true,
        )
        .unwrap()
    }

    fn node<'a>(p: &'a Plan, id: &str) -> &'a Node<Step> {
        p.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no task {id}"))
    }

    fn container(p: &Plan, id: &str) -> ContainerSpec {
        match &node(p, id).action {
            Step::Container { spec, .. } => spec.clone(),
            other => panic!("{id} is {other:?}"),
        }
    }

    #[test]
    fn redis_does_not_wait_for_postgres() {
        let p = plan_for("notification");
        assert_eq!(node(&p, "redis").deps, ["network"]);
        assert_eq!(node(&p, "postgres").deps, ["network"]);
        assert_eq!(
            node(&p, "migrations").deps,
            ["network", "postgres", "image:datastorage"]
        );
        assert_eq!(
            node(&p, "datastorage").deps,
            ["network", "migrations", "redis", "image:datastorage"]
        );
        assert_eq!(node(&p, "image:datastorage").deps, ["compile"]);
        assert_eq!(node(&p, "compile-tests").deps, ["compile"]);
    }

    #[test]
    fn one_tag_per_run_everywhere() {
        let p = plan_for("gateway");
        let reference = "localhost/datastorage:gateway-1884d074";
        match &node(&p, "image:datastorage").action {
            Step::Image { build, .. } => assert_eq!(build.reference, reference),
            _ => unreachable!(),
        }
        assert_eq!(container(&p, "datastorage").image, reference);
        assert_eq!(
            container(&p, "migrations").image,
            reference,
            "the job runs the same image"
        );
        assert_eq!(
            container(&p, "notification").image,
            "localhost/notification:gateway-1884d074"
        );
        assert_eq!(
            container(&p, "postgres").image,
            "localhost/xtask-standin/postgres:15-bookworm",
            "env override"
        );
        assert_eq!(
            container(&p, "redis").image,
            "docker.io/library/redis:7-bookworm"
        );
    }

    #[test]
    fn containers_reach_each_other_by_name_and_internal_port() {
        let p = plan_for("notification");
        let ds = container(&p, "datastorage");
        assert_eq!(ds.name, "notification_datastorage_test");
        assert_eq!(ds.network, "notification_test_network");
        assert_eq!(ds.env["REDIS_URL"], "redis://notification_redis_test:6379");
        assert_eq!(ds.publish, vec![(18096, 8080), (19096, 9090)]);
        let pg = container(&p, "postgres");
        assert_eq!(pg.env["POSTGRES_DB"], "action_history");
        assert_eq!(pg.publish, vec![(15440, 5432)]);
        let job = container(&p, "migrations");
        assert!(matches!(
            node(&p, "migrations").action,
            Step::Container { job: true, .. }
        ));
        assert!(matches!(
            node(&p, "datastorage").action,
            Step::Container { job: false, .. }
        ));
        assert_eq!(job.args, ["migrate"]);
        assert!(job.publish.is_empty());
        assert_eq!(p.test_env["DATASTORAGE_URL"], "http://localhost:18096");
        assert_eq!(p.test_env["XTASK_RUN_ID"], "1884d074a1b2");
    }

    #[test]
    fn everything_carries_the_run_labels() {
        let p = plan_for("notification");
        for n in &p.nodes {
            let labels = match &n.action {
                Step::Container { spec, .. } => &spec.labels,
                Step::Image { build, .. } => &build.labels,
                Step::Network { labels, .. } => labels,
                _ => continue,
            };
            assert_eq!(labels[crate::host::labels::RUN], "1884d074a1b2", "{}", n.id);
            assert_eq!(labels[crate::host::labels::OWNER], "alice", "{}", n.id);
            assert_eq!(labels[crate::host::labels::TIER], "integration", "{}", n.id);
            assert_eq!(labels[crate::host::labels::PID], "42", "{}", n.id);
        }
    }

    #[test]
    fn readiness_checks_by_kind() {
        let p = plan_for("notification");
        let probe = |id: &str| match &node(&p, id).action {
            Step::Container { probe, .. } => probe.clone(),
            _ => unreachable!(),
        };
        assert!(matches!(
            probe("postgres"),
            Some(Probe::Sql {
                host_port: Some(15440),
                ..
            })
        ));
        assert_eq!(probe("redis"), Some(Probe::Redis { port: 16385 }));
        assert_eq!(
            probe("datastorage"),
            Some(Probe::Http {
                port: 18096,
                path: "/readyz".into()
            })
        );
        assert_eq!(probe("migrations"), None);
    }

    #[test]
    fn a_missing_third_party_image_names_its_variable_and_the_stand_ins() {
        let c = repo_config();
        let hint = missing_image_hint(&c, "redis", "docker.io/library/redis:7-bookworm");
        assert!(
            hint.contains("XTASK_IMAGE_REDIS") && hint.contains("cargo xtask standins"),
            "{hint}"
        );
        assert!(!missing_image_hint(&c, "datastorage", "x").contains("standins"));
    }

    #[test]
    fn datastorage_runs_its_own_tests_in_process() {
        let p = plan_for("datastorage");
        assert!(
            p.nodes.iter().all(|n| n.id != "datastorage"),
            "the consumer is not in its own stack"
        );
        assert!(p.nodes.iter().any(|n| n.id == "migrations"));
        assert_eq!(
            p.test_env["POSTGRES_URL"],
            "postgres://slm_user:test_password@localhost:15433/action_history"
        );
        let t = test_cmd(&p, &["dedup".into()]).argv();
        assert_eq!(
            t[1..],
            [
                "test",
                "--package",
                "datastorage",
                "--test",
                "integration",
                "--",
                "--include-ignored",
                "dedup"
            ]
        );
    }
}
