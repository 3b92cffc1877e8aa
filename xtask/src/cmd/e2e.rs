//! `cargo xtask e2e <consumer>`: build images while the kind cluster is created, load them,
//! deploy, run the consumer's E2E tests against NodePorts, clean up.
//!
//! Phase 0 ([`plan`], pure) generates every tag once and renders the kind config and every
//! manifest with those exact references, then checks the manifests reference nothing else. The
//! graph runs phase 1 (compile once, build images, bounded by `--jobs`) in parallel with phase 2
//! (cluster creation, admitted by a host-wide slot); phase 3 loads each image as soon as it is
//! saved and the cluster exists, then verifies the node has them; phase 4 applies each
//! component when what it needs is ready; phase 5 runs the tests; phase 6 cleans up, also on
//! failure and on Ctrl-C.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::config::{names, Config, PortRef, RustSpec, Source, TierName};
use crate::exec::builds;
use crate::exec::dag::{self, Ctx, Node};
use crate::exec::lifecycle;
use crate::exec::process::Cmd;
use crate::exec::progress::Progress;
use crate::exec::record::{self, Event, Record};
use crate::flags::{self, ProgressMode};
use crate::host::engine::BuildSpec;
use crate::host::kube::{self, Kind, Kubectl, Verdict};
use crate::host::labels::RunLabels;
use crate::host::preflight::{self, Claim};
use crate::host::tools::{self, Engine, Need, Tool};
use crate::plan::facts::Facts;
use crate::plan::render::{self, Manifests};
use crate::plan::stack;

pub const TIER: &str = "e2e";

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Compile {
        packages: Vec<String>,
    },
    CompileTests {
        package: String,
        target: String,
    },
    /// One of our services, from its Dockerfile and a host-built binary.
    ServiceImage {
        component: String,
        spec: RustSpec,
        build: BuildSpec,
    },
    /// A third-party image re-built under this run's tag with our labels (`FROM` the base).
    InfraImage {
        component: String,
        base: String,
        build: BuildSpec,
    },
    Save {
        reference: String,
        archive: PathBuf,
    },
    Cluster {
        config: PathBuf,
    },
    Load {
        reference: String,
        archive: Option<PathBuf>,
    },
    Namespace {
        doc: String,
    },
    /// Checks the node has the images the manifests reference (phase 3's verification, per
    /// component so that each deploys as soon as its own images are in), applies, waits.
    Deploy {
        manifests: Manifests,
        images: BTreeSet<String>,
        timeout: Duration,
    },
}

/// What each phase of the graph does (index = phase number).
pub const PHASES: [&str; 5] = [
    "tags and rendering",
    "build images (while phase 2 runs)",
    "create the kind cluster",
    "load images and verify",
    "deploy and wait",
];

impl Step {
    /// Phase number, for the plan and the progress lines.
    pub fn phase(&self) -> u8 {
        match self {
            Step::Compile { .. }
            | Step::CompileTests { .. }
            | Step::ServiceImage { .. }
            | Step::InfraImage { .. } => 1,
            Step::Save { .. } | Step::Load { .. } => 3,
            Step::Cluster { .. } => 2,
            Step::Namespace { .. } | Step::Deploy { .. } => 4,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub run_id: String,
    pub consumer: String,
    pub cluster: String,
    pub namespace: String,
    pub run_dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub labels: RunLabels,
    pub kind_config: String,
    /// Component -> the image reference used to build, load and deploy it.
    pub images: BTreeMap<String, String>,
    pub manifests: Vec<Manifests>,
    pub namespace_doc: String,
    pub nodes: Vec<Node<Step>>,
    pub host_ports: Vec<Claim>,
    pub test_env: BTreeMap<String, String>,
    pub test_package: String,
    pub test_target: String,
}

impl Plan {
    pub fn archives_dir(&self) -> PathBuf {
        self.run_dir.join("images")
    }

    pub fn kind_config_path(&self) -> PathBuf {
        self.run_dir.join("kind-config.yaml")
    }
}

/// Phase 0: every tag, the kind config and every manifest, checked. Reads templates via `read`.
#[allow(clippy::too_many_arguments)]
pub fn plan(
    config: &Config,
    consumer: &str,
    facts: &Facts,
    engine: &Engine,
    runs_dir: &Path,
    pid: u32,
    env: &dyn Fn(&str) -> Option<String>,
    read: &dyn Fn(&Path) -> Result<String>,
) -> Result<Plan> {
    let c = config.consumer(consumer)?.e2e.as_ref();
    let Some(c) = c.filter(|c| !c.ports.is_empty()) else {
        bail!(
            "{} has no [consumers.{consumer}.e2e] ports; add its NodePorts to run E2E tests",
            config.file.display()
        );
    };
    let stack = config.stack(consumer, TierName::E2e)?;
    stack::refuse_not_yet_run(&stack)?;
    let (test_package, test_target) = crate::cmd::integration::cargo_test(&c.test, consumer)?;
    let run_id = facts.run_id.clone();
    let run_dir = runs_dir.join(&run_id);
    let cluster = names::cluster_name(consumer, &run_id);
    let namespace = names::e2e_namespace(consumer);
    let labels = RunLabels {
        owner: facts.user.clone(),
        run: run_id.clone(),
        created: facts.unix,
        consumer: consumer.to_string(),
        tier: TIER,
        pid,
    };
    // Every image reference of the run, generated here once.
    let mut images: BTreeMap<String, String> = BTreeMap::new();
    for comp in &stack.members {
        let m = &comp.name;
        let reference = match comp.image_service() {
            Some(s) if s == consumer => facts.service_ref(consumer),
            Some(s) => facts.infra_ref(s, consumer),
            None => facts.infra_ref(m, consumer),
        };
        images.insert(m.clone(), reference);
    }

    let node_ports: BTreeMap<PortRef, u16> = c
        .ports
        .iter()
        .map(|(k, v)| (k.clone(), v.node_port))
        .collect();
    let mapping: Vec<(u16, u16)> = c
        .ports
        .values()
        .map(|v| (v.node_port, v.host_port))
        .collect();
    let node_labels = labels.for_service("cluster");
    let kind_config = render::kind_config(&cluster, &node_labels, &mapping);
    let namespace_doc = render::namespace_doc(&namespace, &labels.for_service("namespace"));
    let mut manifests = Vec::new();
    for m in stack.names() {
        let labels = labels.for_service(&m);
        let target = render::Target {
            namespace: &namespace,
            node_ports: &node_ports,
            labels: &labels,
        };
        manifests.push(render::component(
            config,
            &stack,
            &m,
            &images[&m],
            target,
            read,
        )?);
    }
    // The Phase 0 check: manifests reference exactly what this run builds, correctly.
    let built: BTreeSet<String> = images.values().cloned().collect();
    let uses: Vec<render::ImageUse> = manifests
        .iter()
        .flat_map(|m| render::image_uses(&m.source, &m.docs))
        .collect();
    let problems = render::check_images(&uses, &built);
    if !problems.is_empty() {
        bail!(
            "the manifests would not run what this run builds; nothing was built or applied:\n  {}",
            problems.join("\n  ")
        );
    }

    // The graph.
    let mut nodes: Vec<Node<Step>> = Vec::new();
    let services = stack::image_services(&stack);
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
    let runtime_base = config
        .images
        .get("runtime")
        .context("infra.toml has no [images.runtime]")?
        .resolve(env);
    let mut built_by: BTreeMap<String, String> = BTreeMap::new(); // reference -> image task id
    for comp in &stack.members {
        let m = &comp.name;
        let reference = images[m].clone();
        if built_by.contains_key(&reference) {
            continue;
        }
        let id = format!("image:{m}");
        let ctx = builds::context_dir(&run_dir, m);
        let step = match &comp.source {
            Source::Rust(spec) => Step::ServiceImage {
                component: m.clone(),
                spec: spec.clone(),
                build: builds::build_spec(
                    config,
                    spec,
                    &reference,
                    &ctx,
                    labels.for_service(m),
                    facts,
                    &runtime_base,
                ),
            },
            Source::Image { image } => {
                let base = config.images[image].resolve(env);
                let mut build_args = BTreeMap::new();
                build_args.insert("BASE".to_string(), base.clone());
                Step::InfraImage {
                    component: m.clone(),
                    base,
                    build: BuildSpec {
                        reference: reference.clone(),
                        dockerfile: ctx.join("Dockerfile"),
                        context: ctx.clone(),
                        labels: labels.for_service(m),
                        build_args,
                    },
                }
            }
            // A job runs its service's image, built for the service (also a member).
            Source::Job { .. } => continue,
            Source::Dockerfile { .. } => {
                bail!("{m} is built by its own Dockerfile; E2E runs do not build such images yet")
            }
        };
        let deps = if matches!(step, Step::ServiceImage { .. }) {
            vec!["compile".to_string()]
        } else {
            vec![]
        };
        nodes.push(Node {
            id: id.clone(),
            deps,
            pool: Some("build"),
            action: step,
        });
        built_by.insert(reference, id);
    }
    for (m, reference) in &images {
        if !built_by.contains_key(reference) {
            bail!("no image task builds {reference} for {m}; a job's service must be part of the stack");
        }
    }
    nodes.push(Node {
        id: "cluster".into(),
        deps: vec![],
        pool: None,
        action: Step::Cluster {
            config: run_dir.join("kind-config.yaml"),
        },
    });
    let mut load_of: BTreeMap<String, String> = BTreeMap::new(); // reference -> load task id
    for (reference, image_task) in &built_by {
        let name = image_task.trim_start_matches("image:").to_string();
        let (archive, load_deps) = if engine.is_podman() {
            let archive = run_dir.join("images").join(format!("{name}.tar"));
            nodes.push(Node {
                id: format!("save:{name}"),
                deps: vec![image_task.clone()],
                pool: Some("save"),
                action: Step::Save {
                    reference: reference.clone(),
                    archive: archive.clone(),
                },
            });
            (
                Some(archive),
                vec![format!("save:{name}"), "cluster".into()],
            )
        } else {
            (None, vec![image_task.clone(), "cluster".into()])
        };
        nodes.push(Node {
            id: format!("load:{name}"),
            deps: load_deps,
            pool: Some("load"),
            action: Step::Load {
                reference: reference.clone(),
                archive,
            },
        });
        load_of.insert(reference.clone(), format!("load:{name}"));
    }
    nodes.push(Node {
        id: "namespace".into(),
        deps: vec!["cluster".into()],
        pool: None,
        action: Step::Namespace {
            doc: namespace_doc.clone(),
        },
    });
    for m in &manifests {
        let comp = stack
            .get(&m.component)
            .context("a manifest of a non-member")?;
        let used: BTreeSet<String> = render::image_uses(&m.source, &m.docs)
            .into_iter()
            .map(|u| u.image)
            .collect();
        let mut deps = vec!["namespace".to_string()];
        deps.extend(used.iter().filter_map(|r| load_of.get(r).cloned()));
        deps.extend(comp.needs.iter().map(|n| format!("deploy:{n}")));
        nodes.push(Node {
            id: format!("deploy:{}", m.component),
            deps,
            pool: None,
            action: Step::Deploy {
                manifests: m.clone(),
                images: used,
                timeout: comp.timeout,
            },
        });
    }
    nodes.push(Node {
        id: "compile-tests".into(),
        deps: vec!["compile".into()],
        pool: None,
        action: Step::CompileTests {
            package: test_package.clone(),
            target: test_target.clone(),
        },
    });
    dag::validate(&nodes)?;

    let host_map: BTreeMap<PortRef, u16> = c
        .ports
        .iter()
        .map(|(k, v)| (k.clone(), v.host_port))
        .collect();
    let mut test_env = stack::test_env(config, &stack, &host_map)?;
    test_env.insert("XTASK_RUN_ID".into(), run_id.clone());
    test_env.insert("XTASK_TIER".into(), TIER.into());
    let host_ports = c
        .ports
        .iter()
        .map(|(pr, v)| Claim {
            port: v.host_port,
            what: format!("{consumer} e2e {pr}"),
        })
        .collect();
    Ok(Plan {
        kubeconfig: run_dir.join("kubeconfig"),
        run_id,
        consumer: consumer.to_string(),
        cluster,
        namespace,
        run_dir,
        labels,
        kind_config,
        images,
        manifests,
        namespace_doc,
        nodes,
        host_ports,
        test_env,
        test_package,
        test_target,
    })
}

/// The Dockerfile of a re-tagged third-party image (its labels come from `--label`).
pub const INFRA_DOCKERFILE: &str = "ARG BASE\nFROM ${BASE}\n";

/// The commands a task runs, for `--dry-run`.
pub fn commands(
    step: &Step,
    plan: &Plan,
    config: &Config,
    engine: &Engine,
    kind: &Kind,
    kubectl: &Kubectl,
    slots: usize,
) -> Vec<String> {
    match step {
        Step::Compile { packages } => vec![builds::compile_cmd(&config.root, packages).to_string()],
        Step::CompileTests { package, target } => {
            vec![builds::compile_tests_cmd(&config.root, package, target).to_string()]
        }
        Step::ServiceImage { build, .. } => vec![engine.build_cmd(build).to_string()],
        Step::InfraImage { build, base, .. } => {
            vec![
                format!("(Dockerfile: FROM {base})"),
                engine.build_cmd(build).to_string(),
            ]
        }
        Step::Save { reference, archive } => vec![engine.save_cmd(reference, archive).to_string()],
        Step::Cluster { config: path } => vec![
            format!("(wait for one of {slots} host-wide cluster slots)"),
            kind.create(&plan.cluster, path, &plan.kubeconfig)
                .to_string(),
        ],
        Step::Load { reference, archive } => vec![match archive {
            Some(a) => kind.load_archive(&plan.cluster, a).to_string(),
            None => kind.load_docker_image(&plan.cluster, reference).to_string(),
        }],
        Step::Namespace { .. } => vec![format!(
            "{} < namespace {}",
            kubectl.apply(""),
            plan.namespace
        )],
        Step::Deploy {
            manifests, images, ..
        } => vec![
            format!(
                "{}   (the node must list {})",
                kubectl.get_nodes(),
                images.iter().cloned().collect::<Vec<_>>().join(" ")
            ),
            format!(
                "{} < {} (+ generated Service/Secret)",
                kubectl.apply(""),
                manifests.source.display()
            ),
            format!(
                "{}   (until {} is ready)",
                kubectl.get_pods(&plan.namespace),
                manifests.workload.selector()
            ),
        ],
    }
}

fn print_plan(
    plan: &Plan,
    config: &Config,
    engine: &Engine,
    kind: &Kind,
    kubectl: &Kubectl,
    slots: usize,
    extra: &[String],
) {
    println!(
        "e2e {}: run {} (dry run: nothing is executed)",
        plan.consumer, plan.run_id
    );
    println!("phase 0: tags and rendering (done)");
    for (c, r) in &plan.images {
        println!("  image {c:<14} {r}");
    }
    println!(
        "  cluster {}  namespace {}  kubeconfig {}",
        plan.cluster,
        plan.namespace,
        plan.kubeconfig.display()
    );
    println!(
        "  would write {} and {}",
        plan.kind_config_path().display(),
        plan.run_dir.join("manifests.yaml").display()
    );
    for phase in 1..=4u8 {
        println!("phase {phase}: {}", PHASES[phase as usize]);
        for n in plan.nodes.iter().filter(|n| n.action.phase() == phase) {
            let deps = if n.deps.is_empty() {
                String::new()
            } else {
                format!(" (after {})", n.deps.join(", "))
            };
            println!("  [{}]{deps}", n.id);
            for c in commands(&n.action, plan, config, engine, kind, kubectl, slots) {
                println!("    {c}");
            }
        }
    }
    println!("phase 5: tests");
    println!("    {}", test_cmd(plan, extra));
    println!("phase 6: cleanup (also on failure and Ctrl-C; skipped with --keep)");
    println!("    {}", kind.delete(&plan.cluster, &plan.kubeconfig));
    println!(
        "    {} rmi <every image labelled io.kubernaut.xtask.run={}>",
        engine.name(),
        plan.run_id
    );
    println!("    remove {}", plan.archives_dir().display());
}

fn test_cmd(plan: &Plan, extra: &[String]) -> Cmd {
    lifecycle::test_cmd(&plan.test_package, &plan.test_target, extra, &plan.test_env)
}

/// Phase 0 for this process, with the real environment and the templates on disk.
fn plan_here(config: &Config, consumer: &str, engine: &Engine) -> Result<Plan> {
    let facts = Facts::gather(&config.root)?;
    let env = |k: &str| std::env::var(k).ok();
    let read =
        |p: &Path| std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()));
    let runs_dir = record::runs_dir(&config.root);
    plan(
        config,
        consumer,
        &facts,
        engine,
        &runs_dir,
        std::process::id(),
        &env,
        &read,
    )
}

/// The engine if there is one; planning and rendering do not need it (podman's argv then).
fn engine_or_podman() -> Engine {
    Engine::detect().unwrap_or(Engine {
        tool: Tool::Podman,
        program: "podman".into(),
    })
}

/// The entry point of the command.
pub fn run(config: &Config, args: &flags::E2e, mode: ProgressMode) -> Result<ExitCode> {
    // Every tool first: a missing one stops the run before any build. The dry run needs none.
    let (engine, kind_program, kubectl_program) = if args.dry_run {
        (engine_or_podman(), "kind".into(), "kubectl".into())
    } else {
        // kind and kubectl first: nothing is installed for a run that cannot go ahead.
        tools::require(&[Need::Tool(Tool::Kind), Need::Tool(Tool::Kubectl)])?;
        let engine = crate::cmd::setup::prepare(config, crate::cmd::setup::Purpose::Run)?;
        let kind = crate::exec::process::find_in_path("kind", None).context("kind")?;
        let kubectl = crate::exec::process::find_in_path("kubectl", None).context("kubectl")?;
        (engine, kind, kubectl)
    };
    let plan = plan_here(config, &args.consumer, &engine)?;
    let kind = Kind {
        program: kind_program,
        podman: engine.is_podman(),
    };
    let kubectl = Kubectl {
        program: kubectl_program,
        kubeconfig: plan.kubeconfig.clone(),
    };
    if args.dry_run {
        print_plan(
            &plan,
            config,
            &engine,
            &kind,
            &kubectl,
            args.cluster_slots,
            &args.test_args,
        );
        return Ok(ExitCode::SUCCESS);
    }

    preflight::check_ports(&engine, &plan.host_ports, &BTreeMap::new())?;
    let width = plan.nodes.iter().map(|n| n.id.len()).max().unwrap_or(8);
    let run = lifecycle::begin(&plan.labels, &plan.run_dir, &engine, width, mode)?;
    write_rendered(&plan, &plan.run_dir)?;
    let images = plan.images.values().collect::<BTreeSet<_>>().len();
    run.progress.println(&format!(
        "e2e {}: run {}, cluster {}, {images} images",
        plan.consumer, plan.run_id, plan.cluster
    ));
    let runner = Runner {
        engine: &engine,
        kind: &kind,
        kubectl: &kubectl,
        plan: &plan,
        record: &run.record,
        slots: args.cluster_slots,
        builds: builds::Builds::new(&config.root, &engine, &run.record),
        progress: &run.progress,
        phases: std::sync::Mutex::new(BTreeSet::new()),
    };
    let mut limits = BTreeMap::new();
    limits.insert("build", args.jobs.max(1));
    limits.insert("save", args.jobs.max(1));
    limits.insert("load", 2);
    let ex = dag::execute(&plan.nodes, &limits, &run.progress, |n, ctx| {
        runner.step(n, ctx)
    });
    let mut report = run.report(&ex);
    let mut outcome: Result<ExitCode> = match ex.error {
        Some(e) => Err(e.context(format!(
            "diagnostics: {}",
            runner.diagnostics(&run.progress).display()
        ))),
        None => Ok(ExitCode::SUCCESS),
    };
    if outcome.is_ok() && !crate::exec::signals::interrupted() {
        run.progress.println(&format!(
            "deployed in {:.1}s; phase 5: tests",
            ex.total.as_secs_f64()
        ));
        let cmd = test_cmd(&plan, &args.test_args).current_dir(&config.root);
        outcome = run.run_tests(cmd, &mut report);
        if matches!(&outcome, Ok(c) if *c != ExitCode::SUCCESS) {
            eprintln!(
                "diagnostics: {}",
                runner.diagnostics(&run.progress).display()
            );
        }
    }
    if args.keep && !crate::exec::signals::interrupted() {
        run.keep()?;
        println!(
            "kept cluster {} (kubeconfig {}), images and archives of run {}",
            plan.cluster,
            plan.kubeconfig.display(),
            plan.run_id
        );
        println!(
            "  kubectl --kubeconfig {} --namespace {} get pods",
            plan.kubeconfig.display(),
            plan.namespace
        );
        println!("remove them with: cargo xtask clean --run {}", plan.run_id);
    } else {
        run.progress.println("phase 6: cleanup");
        outcome = run.teardown(&mut report, outcome, || cleanup(&engine, &kind, &plan))?;
    }
    run.finish(report, outcome)
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

/// Deletes the cluster, this run's images (by label) and its archives.
fn cleanup(engine: &Engine, kind: &Kind, plan: &Plan) -> Result<String> {
    let mut errors = Vec::new();
    let deleted = kind
        .delete(&plan.cluster, &plan.kubeconfig)
        .timeout(Duration::from_secs(180))
        .run();
    if let Err(e) = &deleted {
        errors.push(format!("{e:#}"));
    }
    let removed = crate::host::removal::remove_run(engine, &plan.run_id, false);
    if let Err(e) = &removed {
        errors.push(format!("{e:#}"));
    }
    if let Err(e) = record::remove_scratch(&plan.run_dir) {
        errors.push(format!("{e:#}"));
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    Ok(format!(
        "cluster {}; {}",
        plan.cluster,
        removed.map(|r| r.to_string()).unwrap_or_default()
    ))
}

struct Runner<'a> {
    engine: &'a Engine,
    kind: &'a Kind,
    kubectl: &'a Kubectl,
    plan: &'a Plan,
    record: &'a Record,
    slots: usize,
    builds: builds::Builds<'a>,
    progress: &'a Progress,
    /// Phases whose first task has started (each is announced once).
    phases: std::sync::Mutex<BTreeSet<u8>>,
}

impl Runner<'_> {
    fn step(&self, node: &Node<Step>, ctx: &Ctx) -> Result<String> {
        let plan = self.plan;
        let phase = node.action.phase();
        if self.phases.lock().is_ok_and(|mut p| p.insert(phase)) {
            self.progress
                .println(&format!("phase {phase}: {}", PHASES[phase as usize]));
        }
        match &node.action {
            Step::Compile { packages } => self.builds.compile(packages, ctx.line),
            Step::CompileTests { package, target } => {
                self.builds.compile_tests(package, target, ctx.line)
            }
            Step::ServiceImage {
                component,
                spec,
                build,
            } => self.builds.service_image(component, spec, build, ctx.line),
            Step::InfraImage { build, base, .. } => {
                std::fs::create_dir_all(&build.context)?;
                std::fs::write(&build.dockerfile, INFRA_DOCKERFILE)?;
                self.builds.build(build, ctx.line).with_context(|| {
                    format!("re-tagging {base}: is it in local storage? (`cargo xtask standins` builds local stand-ins)")
                })
            }
            Step::Save { reference, archive } => {
                if let Some(d) = archive.parent() {
                    std::fs::create_dir_all(d)?;
                }
                self.record.add(&Event::Archive {
                    path: archive.clone(),
                })?;
                ctx.line.state("saving", &archive.display().to_string());
                self.engine.save_cmd(reference, archive).run()?;
                let mb = std::fs::metadata(archive)
                    .map(|m| m.len() / 1_000_000)
                    .unwrap_or(0);
                Ok(format!("{mb} MB"))
            }
            Step::Cluster { config } => {
                std::fs::write(config, &plan.kind_config)?;
                let me = format!(
                    "{} {} run {} (pid {})",
                    plan.labels.owner, plan.consumer, plan.run_id, plan.labels.pid
                );
                let line = ctx.line;
                let _slot = crate::exec::slots::acquire(
                    &crate::exec::slots::default_dir(),
                    self.slots,
                    &me,
                    Duration::from_secs(1800),
                    &|holders| line.state("waiting for a cluster slot", &holders.join("; ")),
                    &|| ctx.stopped(),
                )?;
                self.record.add(&Event::Cluster {
                    name: plan.cluster.clone(),
                    kubeconfig: plan.kubeconfig.clone(),
                })?;
                ctx.line.state("creating", &plan.cluster);
                let show = ctx.line.detail_sink();
                self.kind
                    .create(&plan.cluster, config, &plan.kubeconfig)
                    .timeout(Duration::from_secs(600))
                    .run_streaming(move |l| show(l.trim()))
                    .context("creating the kind cluster")?;
                Ok(plan.cluster.clone())
            }
            Step::Load { reference, archive } => {
                ctx.line.state("loading", reference);
                let cmd = match archive {
                    Some(a) => self.kind.load_archive(&plan.cluster, a),
                    None => self.kind.load_docker_image(&plan.cluster, reference),
                };
                cmd.timeout(Duration::from_secs(600))
                    .run()
                    .with_context(|| format!("loading {reference} into {}", plan.cluster))?;
                Ok(reference.clone())
            }
            Step::Namespace { doc } => {
                self.kubectl
                    .apply(doc)
                    .timeout(Duration::from_secs(60))
                    .run()
                    .context("creating the namespace")?;
                Ok(plan.namespace.clone())
            }
            Step::Deploy {
                manifests,
                images,
                timeout,
            } => {
                self.verify_on_node(images, ctx)?;
                ctx.line
                    .state("applying", &manifests.source.display().to_string());
                self.kubectl
                    .apply(&manifests.text)
                    .timeout(Duration::from_secs(60))
                    .run()
                    .with_context(|| format!("applying {}", manifests.source.display()))?;
                let start = Instant::now();
                loop {
                    let out = self
                        .kubectl
                        .get_pods(&plan.namespace)
                        .timeout(Duration::from_secs(30))
                        .read()?;
                    let pods: serde_json::Value =
                        serde_json::from_str(&out).context("kubectl get pods -o json")?;
                    match kube::judge(&pods, &manifests.workload) {
                        Verdict::Ready => {
                            return Ok(format!(
                                "ready after {:.1}s",
                                start.elapsed().as_secs_f64()
                            ));
                        }
                        Verdict::Failed(why) => {
                            bail!("{} cannot start: {why}", manifests.component)
                        }
                        Verdict::Waiting(why) => {
                            ctx.line.state("waiting", &why);
                            if start.elapsed() > *timeout {
                                bail!(
                                    "{} was not ready after {}s: {why}",
                                    manifests.component,
                                    timeout.as_secs()
                                );
                            }
                        }
                    }
                    ctx.pause(Duration::from_millis(500))?;
                }
            }
        }
    }

    /// Phase 3's check: the node lists exactly the references the manifests use (what was
    /// loaded and what is deployed cannot differ). Polled: the node's image list can lag.
    fn verify_on_node(&self, references: &BTreeSet<String>, ctx: &Ctx) -> Result<()> {
        let start = Instant::now();
        loop {
            ctx.line.state("verifying", "images on the node");
            let out = self
                .kubectl
                .get_nodes()
                .timeout(Duration::from_secs(30))
                .read()?;
            let nodes: serde_json::Value =
                serde_json::from_str(&out).context("kubectl get nodes -o json")?;
            let missing = kube::missing_on_node(references, &kube::node_images(&nodes));
            if missing.is_empty() {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(60) {
                bail!(
                    "the cluster's node does not have {} although it was loaded; what the manifests \
                     reference and what was loaded differ",
                    missing.join(", ")
                );
            }
            ctx.line.state(
                "waiting",
                &format!("node does not list {} yet", missing.join(", ")),
            );
            ctx.pause(Duration::from_millis(500))?;
        }
    }

    /// Collects `kubectl describe`, pod logs and `kind export logs` under the run's folder.
    fn diagnostics(&self, progress: &Progress) -> PathBuf {
        let dir = self.plan.run_dir.join("diagnostics");
        let _ = std::fs::create_dir_all(&dir);
        let ns = &self.plan.namespace;
        for m in &self.plan.manifests {
            let sel = m.workload.selector();
            for (what, cmd) in [
                ("describe", self.kubectl.describe_pods(ns, &sel)),
                ("logs", self.kubectl.logs(ns, &sel)),
            ] {
                let text = match cmd.timeout(Duration::from_secs(30)).output() {
                    Ok(o) => format!("{}{}", o.stdout, o.stderr),
                    Err(e) => format!("{e:#}"),
                };
                let _ = std::fs::write(dir.join(format!("{}.{what}.txt", m.component)), text);
            }
        }
        let kind_logs = dir.join("kind");
        if let Err(e) = self
            .kind
            .export_logs(&self.plan.cluster, &kind_logs)
            .timeout(Duration::from_secs(120))
            .run()
        {
            let _ = std::fs::write(dir.join("kind-export-failed.txt"), format!("{e:#}"));
        }
        progress.println(&format!("diagnostics written to {}", dir.display()));
        dir
    }
}

/// `cargo xtask render`: phase 0 only, written to files.
pub fn render_cmd(config: &Config, args: &flags::Render) -> Result<()> {
    let plan = plan_here(config, &args.consumer, &engine_or_podman())?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::stack::tests::{facts, read_repo, repo_config};

    fn plan_for(consumer: &str, engine: Tool) -> Plan {
        let e = Engine {
            tool: engine,
            program: engine.name().into(),
        };
        plan(
            &repo_config(),
            consumer,
            &facts(),
            &e,
            Path::new("/repo/target/xtask/runs"),
            7,
            &|_| None,
            &read_repo,
        )
        .unwrap()
    }

    fn deps<'a>(p: &'a Plan, id: &str) -> &'a [String] {
        &p.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no {id}"))
            .deps
    }

    #[test]
    fn one_reference_per_image_from_phase0_to_deploy() {
        let p = plan_for("notification", Tool::Podman);
        assert_eq!(
            p.images["notification"],
            "localhost/notification:notification-alice-abc1234-1734278400"
        );
        assert_eq!(
            p.images["datastorage"],
            "localhost/datastorage:notification-1884d074"
        );
        assert_eq!(p.images["migrations"], p.images["datastorage"]);
        assert_eq!(
            p.images["postgres"],
            "localhost/postgres:notification-1884d074"
        );
        // The reference built is the reference saved, loaded, verified and deployed.
        let mut built = BTreeSet::new();
        let mut loaded = BTreeSet::new();
        for n in &p.nodes {
            match &n.action {
                Step::ServiceImage { build, .. } | Step::InfraImage { build, .. } => {
                    built.insert(build.reference.clone());
                }
                Step::Load { reference, .. } => {
                    loaded.insert(reference.clone());
                }
                _ => {}
            }
        }
        let deployed: BTreeSet<String> = p
            .manifests
            .iter()
            .flat_map(|m| render::image_uses(&m.source, &m.docs))
            .map(|u| u.image)
            .collect();
        assert_eq!(built, loaded);
        assert_eq!(built, deployed);
    }

    #[test]
    fn images_build_while_the_cluster_is_created() {
        let p = plan_for("gateway", Tool::Podman);
        assert!(
            deps(&p, "cluster").is_empty(),
            "cluster creation waits for nothing"
        );
        assert_eq!(deps(&p, "image:datastorage"), ["compile"]);
        assert!(
            deps(&p, "image:postgres").is_empty(),
            "re-tagging needs no compile"
        );
        assert_eq!(deps(&p, "save:datastorage"), ["image:datastorage"]);
        assert_eq!(
            deps(&p, "load:datastorage"),
            ["save:datastorage", "cluster"]
        );
        assert!(deps(&p, "deploy:datastorage").contains(&"deploy:migrations".to_string()));
        assert!(deps(&p, "deploy:gateway").contains(&"deploy:notification".to_string()));
        assert_eq!(
            deps(&p, "deploy:redis"),
            ["namespace", "load:redis"],
            "infrastructure deploys while Rust compiles"
        );
        assert_eq!(
            deps(&p, "deploy:migrations"),
            ["namespace", "load:datastorage", "deploy:postgres"]
        );
        assert_eq!(
            p.nodes
                .iter()
                .filter(|n| n.id.starts_with("image:"))
                .count(),
            5
        );
    }

    #[test]
    fn docker_loads_from_its_store() {
        let p = plan_for("notification", Tool::Docker);
        assert!(p.nodes.iter().all(|n| !n.id.starts_with("save:")));
        assert_eq!(
            deps(&p, "load:datastorage"),
            ["image:datastorage", "cluster"]
        );
    }

    #[test]
    fn cluster_and_tests_use_this_consumers_ports() {
        let p = plan_for("notification", Tool::Podman);
        assert_eq!(p.cluster, "notification-e2e-1884d074a1b2");
        assert!(p.kind_config.contains("hostPort: 28120"));
        assert!(p.kind_config.contains("containerPort: 30086"));
        assert!(p
            .kind_config
            .contains("io.kubernaut.xtask.run: 1884d074a1b2"));
        assert_eq!(p.test_env["NOTIFICATION_URL"], "http://localhost:28120");
        assert_eq!(p.test_env["DATASTORAGE_URL"], "http://localhost:28121");
        assert_eq!(p.host_ports.len(), 2);
    }

    #[test]
    fn image_tag_override_reaches_the_manifests() {
        let f = Facts {
            image_tag: Some("ci-deadbee-7".into()),
            ..facts()
        };
        let e = Engine {
            tool: Tool::Podman,
            program: "podman".into(),
        };
        let p = plan(
            &repo_config(),
            "notification",
            &f,
            &e,
            Path::new("/r"),
            7,
            &|_| None,
            &read_repo,
        )
        .unwrap();
        let m = p
            .manifests
            .iter()
            .find(|m| m.component == "notification")
            .unwrap();
        assert!(
            m.text
                .contains("image: localhost/notification:ci-deadbee-7"),
            "{}",
            m.text
        );
    }

    #[test]
    fn a_template_with_a_foreign_image_is_refused_before_anything_runs() {
        let e = Engine {
            tool: Tool::Podman,
            program: "podman".into(),
        };
        let bad = |p: &Path| {
            Ok(read_repo(p)?.replace("image: ${IMAGE}", "image: docker.io/library/redis:latest"))
        };
        let err = plan(
            &repo_config(),
            "notification",
            &facts(),
            &e,
            Path::new("/r"),
            7,
            &|_| None,
            &bad,
        )
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("nothing was built or applied"), "{msg}");
        assert!(msg.contains("manifests/redis.yaml: Deployment/redis spec.template.spec.containers[0].image `docker.io/library/redis:latest` was not built by this run"), "{msg}");
    }
}
