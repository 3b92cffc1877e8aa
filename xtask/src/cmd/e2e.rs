//! `cargo xtask e2e <consumer>`: images built while the kind cluster is created, loaded,
//! deployed, the consumer's E2E tests against NodePorts, cleanup (design.md section 6).
//!
//! The plan ([`plan::e2e`]) is pure; `--dry-run` prints each task's actions and the real run
//! performs the same actions ([`exec::steps::e2e`]). Phase 5 runs the tests; phase 6 cleans
//! up, also on failure and on Ctrl-C.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::config::Config;
use crate::exec::actions::Runner;
use crate::exec::steps::{self, Tools};
use crate::exec::{dag, lifecycle, record};
use crate::flags::{self, ProgressMode};
use crate::host::kube::{Kind, Kubectl};
use crate::host::tools::{self, Engine, Need, Tool};
use crate::plan::e2e::{self as planner, Plan, PHASES};
use crate::plan::Run;

/// The entry point of the command.
pub fn run(config: &Config, args: &flags::E2e, mode: ProgressMode) -> Result<ExitCode> {
    let engine = if args.dry_run {
        let engine = engine_or_podman();
        for note in crate::cmd::setup::preview_images(config, &engine).unwrap_or_default() {
            println!("# {note}");
        }
        engine
    } else {
        // kind and kubectl first: nothing is installed for a run that cannot go ahead.
        let mut needs = vec![Need::Tool(Tool::Kubectl)];
        if args.cluster.is_none() {
            needs.push(Need::Tool(Tool::Kind));
        }
        tools::require(&needs)?;
        let engine = crate::cmd::setup::prepare(config, crate::cmd::setup::Purpose::Run)?;
        if args.cluster.is_some() {
            let say = |s: &str| crate::exec::progress::Progress::plain().println(s);
            let refused = crate::cmd::setup::install_refused();
            crate::host::packages::ensure(&[crate::host::packages::SKOPEO], refused, &say)?;
        }
        engine
    };
    let target = target(config, args, &engine)?;
    let snapshots = data_images(config, args, &engine)?;
    let plan = plan_here(config, &args.consumer, &target, &args.test_args, &snapshots)?;
    let find = |n: &str| crate::exec::process::find_in_path(n, None).unwrap_or(n.into());
    let kind = Kind {
        program: find("kind"),
        podman: engine.is_podman(),
    };
    let mut kubectl = Kubectl::new(find("kubectl"), plan.kubeconfig.clone());
    kubectl.context = plan.shared.as_ref().and_then(|s| s.context.clone());
    let tools = Tools {
        engine: &engine,
        root: &config.root,
        kind: Some(&kind),
        kubectl: Some(&kubectl),
        slots: args.cluster_slots,
        rebuild: args.rebuild,
    };
    if args.dry_run {
        print!("{}", dry_run(&plan, &tools));
        return Ok(ExitCode::SUCCESS);
    }
    crate::host::preflight::check_ports(&engine, &plan.claims, &Default::default())?;
    crate::cmd::setup::disk_check(&engine, &record::runs_dir(&config.root))?;
    execute(config, &plan, &tools, args, mode)
}

/// A fresh kind cluster; or with `--cluster`, a kept cluster recorded here (its registry
/// unless `--registry`), else a context of the kubeconfig (`--registry` required).
fn target(config: &Config, args: &flags::E2e, engine: &Engine) -> Result<planner::Target> {
    let Some(name) = &args.cluster else {
        return Ok(planner::Target::Fresh(steps::loading(engine)));
    };
    let ttl = crate::config::parse_duration(&args.ttl).context("--ttl")?;
    let registry = args
        .registry
        .as_deref()
        .map(planner::shared::Registry::parse)
        .transpose()?;
    let kept = crate::exec::clusters::load(&record::target_dir(&config.root), name);
    let (kubeconfig, context, registry) = match (kept, registry) {
        (Some(k), r) => {
            if r.is_none() {
                crate::host::ready::http_get(k.registry_port, "/v2/", Duration::from_secs(2))
                    .with_context(|| {
                        format!(
                            "the registry of kept cluster {name} (localhost:{}) does not answer; \
                             `cargo xtask cluster status --name {name}` shows it, `cluster down` \
                             and `cluster up` make it anew",
                            k.registry_port
                        )
                    })?;
            }
            let own = planner::shared::Registry {
                host: k.registry.clone(),
                prefix: String::new(),
            };
            (k.kubeconfig, Some(k.context), r.unwrap_or(own))
        }
        (None, Some(r)) => (crate::host::kube::user_kubeconfig()?, Some(name.clone()), r),
        (None, None) => bail!(
            "`{name}` is not a kept cluster here (`cargo xtask cluster up --name {name}`), and \
             for a kube context give the registry both this host and the cluster reach: \
             --registry HOST[:PORT][/PREFIX]"
        ),
    };
    Ok(planner::Target::Shared(planner::shared::Shared {
        cluster: name.clone(),
        kubeconfig,
        context,
        registry,
        ttl_secs: ttl.as_secs(),
        max_runs: args.max_runs,
        host: crate::host::facts::hostname(),
    }))
}

/// Records the run, runs the graph and the tests, cleans up (or keeps) and reports.
fn execute(
    config: &Config,
    plan: &Plan,
    tools: &Tools,
    args: &flags::E2e,
    mode: ProgressMode,
) -> Result<ExitCode> {
    let engine = tools.engine;
    let width = plan.nodes.iter().map(|n| n.id.len()).max().unwrap_or(8);
    let run = lifecycle::begin(&plan.labels, &plan.run_dir, engine.name(), width, mode)?;
    write_rendered(plan, &plan.run_dir)?;
    let images = plan.images.values().collect::<BTreeSet<_>>().len();
    run.progress.println(&format!(
        "e2e {}: run {}, cluster {}, {images} images",
        plan.consumer, plan.run_id, plan.cluster
    ));
    let runner = Runner::new(engine, &run.record, &config.root, &plan.run_dir);
    let phases = std::sync::Mutex::new(BTreeSet::new());
    let limits = [
        ("build", args.jobs.max(1)),
        ("save", args.jobs.max(1)),
        ("load", 2),
        ("push", args.jobs.max(1)),
    ]
    .into_iter()
    .collect();
    let work = |n: &dag::Node<planner::Step>, ctx: &dag::Ctx| {
        let phase = n.action.phase();
        if phases.lock().is_ok_and(|mut p| p.insert(phase)) {
            run.progress
                .println(&format!("phase {phase}: {}", PHASES[phase as usize]));
        }
        runner.perform_all(&n.id, &steps::e2e(&n.action, plan, tools), ctx)
    };
    // The tests start once everything they need is deployed; a held job goes on beside them.
    let (ex, tested) = dag::execute_alongside(
        &plan.nodes,
        &limits,
        &run.progress,
        &plan.beside_tests(),
        work,
        |deployed| {
            if crate::exec::signals::interrupted() {
                return None;
            }
            run.progress.println(&format!(
                "deployed in {:.1}s; phase 5: tests{}",
                deployed.as_secs_f64(),
                beside_note(plan)
            ));
            let mut tests = plan.tests.clone();
            tests.env.extend(runner.forwarded_urls());
            let cmd = lifecycle::tests_cmd(&tests, &config.root);
            Some((deployed, run.run_tests(cmd)))
        },
    );
    let mut report = run.report(&ex);
    report.add_cache_notes(runner.cache_notes());
    report.add_bytes_sent(runner.bytes_sent());
    let diagnostics = || diagnostics(plan, tools, &run.progress);
    let tested = tested.flatten();
    let mut outcome: Result<ExitCode> = match ex.error {
        Some(e) => Err(match &tested {
            Some((_, (Ok(c), _))) if *c == ExitCode::SUCCESS => {
                e.context("the tests passed; a task beside them failed")
            }
            Some(_) => e.context("the tests failed, and a task beside them"),
            None => e,
        }
        .context(format!("diagnostics: {}", diagnostics().display()))),
        None => Ok(ExitCode::SUCCESS),
    };
    if let Some((deployed, (tests, ms))) = tested {
        report
            .extra
            .insert("deployed_ms".into(), deployed.as_millis() as u64);
        report.extra.insert("tests_ms".into(), ms);
        if outcome.is_ok() {
            outcome = tests;
            if matches!(&outcome, Ok(c) if *c != ExitCode::SUCCESS) {
                run.progress
                    .println(&format!("diagnostics: {}", diagnostics().display()));
            }
        }
    }
    if args.keep && !crate::exec::signals::interrupted() {
        run.keep()?;
        print!("{}", kept(plan, &runner.forwarded_urls()));
        // The port-forwards end with this process.
    } else {
        run.progress.println("phase 6: cleanup");
        runner.stop_forwards();
        outcome = run.teardown(&mut report, outcome, || cleanup(tools, plan))?;
    }
    run.finish(report, outcome)
}

/// What goes on beside the tests, for the phase 5 line.
fn beside_note(plan: &Plan) -> String {
    let beside = plan.beside_tests();
    match beside.is_empty() {
        true => String::new(),
        false => {
            let ids: Vec<&str> = beside.iter().map(String::as_str).collect();
            format!(
                " ({} beside them: a data image holds its work)",
                ids.join(", ")
            )
        }
    }
}

/// The plan and every task's actions, nothing run: the text of the same actions the real run
/// performs.
pub fn dry_run(plan: &Plan, tools: &Tools) -> String {
    let mut s = format!(
        "e2e {}: run {} (dry run: nothing is executed)\nphase 0: tags and rendering (done)\n",
        plan.consumer, plan.run_id
    );
    for (c, r) in &plan.images {
        s.push_str(&format!("  image {c:<14} {r}\n"));
    }
    s.push_str(&format!(
        "  cluster {}  namespace {}  kubeconfig {}\n",
        plan.cluster,
        plan.namespace,
        plan.kubeconfig.display()
    ));
    let beside_tests = plan.beside_tests();
    for phase in 1..=4u8 {
        s.push_str(&format!("phase {phase}: {}\n", PHASES[phase as usize]));
        for n in plan.nodes.iter().filter(|n| n.action.phase() == phase) {
            let deps = if n.deps.is_empty() {
                String::new()
            } else {
                format!(" (after {})", n.deps.join(", "))
            };
            let beside = match beside_tests.contains(&n.id) {
                true => "; beside the tests",
                false => "",
            };
            s.push_str(&format!("  [{}]{deps}{beside}\n", n.id));
            for a in steps::e2e(&n.action, plan, tools) {
                s.push_str(&format!("    {a}\n"));
            }
        }
    }
    let kind = tools
        .kind
        .map(|k| k.delete(&plan.cluster, &plan.kubeconfig).to_string());
    s.push_str(&format!(
        "phase 5: tests{}\n    $ {}\nphase 6: cleanup (also on failure and Ctrl-C; skipped with --keep)\n    $ {}\n    # remove every image labelled io.kubernaut.xtask.run={}, and {}\n",
        beside_note(plan),
        lifecycle::tests_cmd(&plan.tests, tools.root),
        kind.unwrap_or_default(),
        plan.run_id,
        plan.archives_dir().display()
    ));
    s
}

/// Phase 0 for this process, with the real environment and the templates on disk.
fn plan_here(
    config: &Config,
    consumer: &str,
    target: &planner::Target,
    test_args: &[String],
    snapshots: &BTreeMap<String, crate::plan::Snapshot>,
) -> Result<Plan> {
    let facts = crate::host::facts::gather(&config.root)?;
    let env = |k: &str| std::env::var(k).ok();
    let runs_dir = record::runs_dir(&config.root);
    let run = Run {
        config,
        consumer,
        facts: &facts,
        runs_dir: &runs_dir,
        pid: std::process::id(),
        env: &env,
        snapshots,
    };
    planner::plan(&run, target, &Disk, test_args)
}

/// The data images an integration run cached for this stack (PostgreSQL initialised, its
/// migrations applied): the E2E run deploys from them.
fn data_images(
    config: &Config,
    args: &flags::E2e,
    engine: &Engine,
) -> Result<BTreeMap<String, crate::plan::Snapshot>> {
    let stack = config.stack(&args.consumer, crate::config::TierName::E2e)?;
    let cache = crate::exec::cache::Cache::open(&record::target_dir(&config.root));
    let found = crate::exec::snapshot::cached(config, &stack, engine, &cache, args.rebuild)?;
    cache.save_hashes();
    for (member, d) in &found {
        crate::exec::progress::Progress::plain().println(&format!(
            "{member}: from the cached data image {} (initialised, its jobs applied; they run \
             again beside the tests and find their work done)",
            d.cache_ref
        ));
    }
    Ok(found)
}

/// Templates and mounted files, from disk.
struct Disk;

impl crate::plan::render::Files for Disk {
    fn read(&self, p: &Path) -> Result<String> {
        std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
    }

    fn list(&self, dir: &Path) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let e = e?;
            if e.file_type()?.is_file() {
                names.push(e.file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        Ok(names)
    }
}

/// The engine if there is one; planning and rendering do not need it (podman's argv then).
fn engine_or_podman() -> Engine {
    Engine::detect().unwrap_or(Engine {
        tool: Tool::Podman,
        program: "podman".into(),
    })
}

/// Writes what phase 0 rendered: the kind config and all manifests in apply order.
pub fn write_rendered(plan: &Plan, dir: &Path) -> Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let kc = dir.join("kind-config.yaml");
    std::fs::write(&kc, &plan.kind_config).with_context(|| format!("writing {}", kc.display()))?;
    let mut all = format!(
        "# manifests of e2e run {} for {}, in apply order\n",
        plan.run_id, plan.consumer
    );
    all.push_str(&plan.namespace_doc);
    for m in &plan.manifests {
        all.push('\n');
        all.push_str(&m.text);
    }
    let mf = dir.join("manifests.yaml");
    std::fs::write(&mf, all).with_context(|| format!("writing {}", mf.display()))?;
    Ok((kc, mf))
}

/// `cargo xtask render`: phase 0 only, written to files.
pub fn render(config: &Config, args: &flags::Render) -> Result<()> {
    let target = planner::Target::Fresh(steps::loading(&engine_or_podman()));
    let plan = plan_here(config, &args.consumer, &target, &[], &BTreeMap::new())?;
    let dir = args.out.clone().unwrap_or_else(|| {
        record::target_dir(&config.root)
            .join("xtask")
            .join("render")
            .join(&args.consumer)
    });
    let (kc, mf) = write_rendered(&plan, &dir)?;
    println!("{}", kc.display());
    println!("{}", mf.display());
    Ok(())
}

fn kept(plan: &Plan, urls: &BTreeMap<String, String>) -> String {
    if plan.shared.is_some() {
        let forwarded: Vec<String> = urls.iter().map(|(k, v)| format!("{k}={v}")).collect();
        return format!(
            "kept namespace {} in {} (run {}); its port-forwards ended with this run ({})\nremove it with: cargo xtask clean --run {}\n",
            plan.namespace,
            plan.cluster,
            plan.run_id,
            forwarded.join(" "),
            plan.run_id
        );
    }
    format!(
        "kept cluster {} (kubeconfig {}), images and archives of run {}\n  kubectl --kubeconfig {} --namespace {} get pods\nremove them with: cargo xtask clean --run {}\n",
        plan.cluster,
        plan.kubeconfig.display(),
        plan.run_id,
        plan.kubeconfig.display(),
        plan.namespace,
        plan.run_id
    )
}

/// Deletes the cluster, this run's images (by label) and its archives.
fn cleanup(tools: &Tools, plan: &Plan) -> Result<String> {
    let mut errors = Vec::new();
    let mut shared_gone = Vec::new();
    if let (Some(_), Some(k)) = (&plan.shared, tools.kubectl) {
        let info = record::read(&plan.run_dir.join("record.jsonl"))?;
        match crate::host::shared::remove_recorded(&k.program, &info.resources, &plan.run_id, false)
        {
            Ok(g) => shared_gone = g,
            Err(e) => errors.push(format!("{e:#}")),
        }
    } else if let Some(kind) = tools.kind {
        let deleted = kind
            .delete(&plan.cluster, &plan.kubeconfig)
            .timeout(Duration::from_secs(180))
            .run();
        if let Err(e) = deleted {
            errors.push(format!("{e:#}"));
        }
    }
    let removed =
        crate::host::removal::remove_run_recorded(tools.engine, &plan.run_dir, &plan.run_id, false);
    if let Err(e) = &removed {
        errors.push(format!("{e:#}"));
    }
    if let Err(e) = record::remove_scratch(&plan.run_dir) {
        errors.push(format!("{e:#}"));
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    let cluster = if plan.shared.is_some() {
        shared_gone.join(", ")
    } else {
        format!("cluster {}", plan.cluster)
    };
    Ok(format!(
        "{cluster}; {}",
        removed.map(|r| r.to_string()).unwrap_or_default()
    ))
}

/// Collects `kubectl describe`, pod logs and `kind export logs` under the run's folder.
fn diagnostics(plan: &Plan, tools: &Tools, progress: &crate::exec::progress::Progress) -> PathBuf {
    let dir = plan.run_dir.join("diagnostics");
    let _ = std::fs::create_dir_all(&dir);
    let ns = &plan.namespace;
    if let (Some(kind), Some(kubectl)) = (tools.kind, tools.kubectl) {
        for m in &plan.manifests {
            let sel = m.workload.selector();
            for (what, cmd) in [
                ("describe", kubectl.describe_pods(ns, &sel)),
                ("logs", kubectl.logs(ns, &sel)),
            ] {
                let text = match cmd.timeout(Duration::from_secs(30)).output() {
                    Ok(o) => format!("{}{}", o.stdout, o.stderr),
                    Err(e) => format!("{e:#}"),
                };
                let _ = std::fs::write(dir.join(format!("{}.{what}.txt", m.component)), text);
            }
        }
        let exported = kind
            .export_logs(&plan.cluster, &dir.join("kind"))
            .timeout(Duration::from_secs(120))
            .run();
        if let Err(e) = exported {
            let _ = std::fs::write(dir.join("kind-export-failed.txt"), format!("{e:#}"));
        }
    }
    progress.println(&format!("diagnostics written to {}", dir.display()));
    dir
}
