//! Each plan step as its [`Action`]s: the one function per tier from which both `--dry-run`
//! and execution come. Pure apart from what the tools' argv builders read (nothing runs here).

use std::path::Path;
use std::time::Duration;

use crate::exec::actions::build::{cache_spec, Cached};
use crate::exec::actions::shared::Push;
use crate::exec::actions::{Action, Command, Use};
use crate::exec::builds;
use crate::exec::process::Cmd;
use crate::exec::record::Event;
use crate::host::kube::{Kind, Kubectl};
use crate::host::tools::Engine;
use crate::plan::e2e::{self, shared, Loading};
use crate::plan::images::{Build, RETAG_DOCKERFILE};
use crate::plan::integration;

/// The tools steps become commands of.
pub struct Tools<'a> {
    pub engine: &'a Engine,
    pub root: &'a Path,
    /// E2E only.
    pub kind: Option<&'a Kind>,
    pub kubectl: Option<&'a Kubectl>,
    /// Host-wide cluster-creation slots (E2E).
    pub slots: usize,
    /// `--rebuild`: build every image even when the cache has it.
    pub rebuild: bool,
}

/// The actions of an integration step.
pub fn integration(step: &integration::Step, t: &Tools) -> Vec<Action> {
    use integration::Step;
    match step {
        Step::Compile { packages } => vec![compile(t, packages)],
        Step::CompileTests { package, target } => vec![compile_tests(t, package, target)],
        Step::Image(b) => image(t, b),
        Step::NameData { .. } | Step::Verified { .. } | Step::Snapshot { .. } => {
            data_image(step, t)
        }
        Step::Network { name, labels } => vec![
            Action::Record(Event::Network { name: name.clone() }),
            Action::Run {
                state: "creating",
                cmd: Command::Engine(t.engine.network_create_cmd(name, labels)),
                output: Use::Show,
                what: format!("creating network {name}"),
            },
        ],
        Step::Container {
            component,
            spec,
            probe,
            timeout,
            job,
        } => {
            let mut a = vec![
                Action::Record(Event::Container {
                    name: spec.name.clone(),
                }),
                Action::Run {
                    state: "starting",
                    cmd: Command::Engine(t.engine.run_cmd(spec)),
                    output: Use::Show,
                    what: format!("{component} could not start from `{}`", spec.image),
                },
            ];
            if *job {
                a.push(Action::Exit {
                    container: spec.name.clone(),
                    args: spec.args.clone(),
                    timeout: *timeout,
                });
            } else if let Some(p) = probe {
                a.push(Action::Ready {
                    container: spec.name.clone(),
                    probe: p.clone(),
                    timeout: *timeout,
                });
            }
            a
        }
    }
}

/// The data-image steps of an integration run (see `exec::snapshot`).
fn data_image(step: &integration::Step, t: &Tools) -> Vec<Action> {
    match step {
        integration::Step::NameData { source, reference } => vec![
            Action::Record(Event::Image {
                reference: reference.clone(),
            }),
            Action::Run {
                state: "naming",
                cmd: Command::Tag(
                    t.engine.clone(),
                    t.engine.tag_cmd(source, reference),
                    reference.clone(),
                ),
                output: Use::Show,
                what: format!("naming the cached data image {source}"),
            },
            Action::Note {
                cache: "hit",
                key: source.rsplit(':').next().unwrap_or_default().to_string(),
                why: String::new(),
                summary: format!("cached data image ({source})"),
            },
        ],
        integration::Step::Verified { job, key } => vec![Action::Note {
            cache: "hit",
            key: key.clone(),
            why: String::new(),
            summary: format!("{job}: its effect is in the data image {key}, not run again"),
        }],
        integration::Step::Snapshot {
            container,
            flush,
            reference,
            labels,
            key,
            why,
        } => {
            let mut a = Vec::new();
            if !flush.is_empty() {
                a.push(Action::Run {
                    state: "flushing",
                    cmd: Command::Timed(
                        t.engine
                            .exec(container, flush, &[])
                            .timeout(Duration::from_secs(60)),
                    ),
                    output: Use::Show,
                    what: format!("flushing {container} before its data image is taken"),
                });
            }
            a.push(Action::Run {
                state: "committing",
                cmd: Command::Engine(t.engine.commit_cmd(container, reference, labels)),
                output: Use::Show,
                what: format!("committing {container} as {reference}"),
            });
            a.push(Action::Supersede {
                key: key.clone(),
                owner: labels
                    .get(crate::plan::labels::OWNER)
                    .cloned()
                    .unwrap_or_default(),
            });
            a.push(Action::Note {
                cache: "miss",
                key: key.clone(),
                why: why.clone(),
                summary: format!("data image {reference} made ({why})"),
            });
            a
        }
        _ => Vec::new(),
    }
}

/// The actions of an E2E step.
pub fn e2e(step: &e2e::Step, plan: &e2e::Plan, t: &Tools) -> Vec<Action> {
    use e2e::Step;
    let (kind, kubectl) = match (t.kind, t.kubectl) {
        (Some(k), Some(c)) => (k, c),
        _ => return vec![],
    };
    match step {
        Step::Compile { packages } => vec![compile(t, packages)],
        Step::CompileTests { package, target } => vec![compile_tests(t, package, target)],
        Step::Image(b) => image(t, b),
        Step::Save { .. } | Step::Cluster { .. } | Step::Load { .. } => fresh(step, plan, t, kind),
        Step::Namespace { .. } | Step::Push { .. } | Step::Admit | Step::Forward(_) => {
            in_namespace(step, plan, kubectl)
        }
        Step::Deploy { .. } => deploy(step, plan, kubectl),
    }
}

/// Steps of a fresh kind cluster: archives, the cluster, loading images onto its node.
fn fresh(step: &e2e::Step, plan: &e2e::Plan, t: &Tools, kind: &Kind) -> Vec<Action> {
    use e2e::Step;
    let limit = Duration::from_secs;
    match step {
        Step::Save { reference, archive } => vec![
            Action::Mkdir(plan.archives_dir()),
            Action::Record(Event::Archive {
                path: archive.clone(),
            }),
            Action::SaveCached {
                reference: reference.clone(),
                archive: archive.clone(),
                rebuild: t.rebuild,
                save: Command::Engine(t.engine.save_cmd(
                    reference,
                    std::path::Path::new("<cache>/archives/<image id>.tar.partial"),
                )),
            },
        ],
        Step::Cluster { config } => vec![
            Action::Write {
                path: config.clone(),
                text: plan.kind_config.clone(),
            },
            Action::Slot {
                slots: t.slots,
                holder: format!(
                    "{} {} run {} (pid {})",
                    plan.labels.owner, plan.consumer, plan.run_id, plan.labels.pid
                ),
            },
            Action::Record(Event::Cluster {
                name: plan.cluster.clone(),
                kubeconfig: plan.kubeconfig.clone(),
            }),
            Action::Run {
                state: "creating",
                cmd: Command::Timed(
                    kind.create(&plan.cluster, config, &plan.kubeconfig)
                        .timeout(limit(600)),
                ),
                output: Use::Show,
                what: "creating the kind cluster".into(),
            },
        ],
        Step::Load { reference, archive } => {
            let cmd = match archive {
                Some(a) => kind.load_archive(&plan.cluster, a),
                None => kind.load_docker_image(&plan.cluster, reference),
            };
            vec![Action::Run {
                state: "loading",
                cmd: Command::Timed(cmd.timeout(limit(600))),
                output: Use::Show,
                what: format!("loading {reference} into {}", plan.cluster),
            }]
        }
        _ => vec![],
    }
}

/// Steps around the run's namespace: creating it, pushing images (shared clusters), the
/// admission slot, port-forwards.
fn in_namespace(step: &e2e::Step, plan: &e2e::Plan, kubectl: &Kubectl) -> Vec<Action> {
    use e2e::Step;
    let limit = Duration::from_secs;
    match step {
        Step::Namespace { doc } => {
            let mut a = Vec::new();
            if plan.shared.is_some() {
                a.push(Action::Record(Event::Namespace {
                    name: plan.namespace.clone(),
                    kubeconfig: kubectl.kubeconfig.clone(),
                    context: kubectl.context.clone(),
                }));
            }
            a.push(Action::Run {
                state: "creating",
                cmd: Command::Timed(kubectl.apply(doc).timeout(limit(60))),
                output: Use::Show,
                what: "creating the namespace".into(),
            });
            a
        }
        Step::Push {
            local,
            remote,
            labels,
            context,
        } => vec![Action::Push(Push {
            local: local.clone(),
            remote: remote.clone(),
            labels: labels.clone(),
            context: context.clone(),
        })],
        Step::Admit => {
            let Some(s) = &plan.shared else { return vec![] };
            vec![Action::Admit {
                kubectl: kubectl.clone(),
                system_doc: shared::system_namespace_doc(),
                docs: (0..s.max_runs.max(1))
                    .map(|i| shared::slot_doc(i, &plan.labels, s))
                    .collect(),
                host: s.host.clone(),
            }]
        }
        Step::Forward(f) => vec![Action::Forward {
            kubectl: kubectl.clone(),
            namespace: plan.namespace.clone(),
            forward: f.clone(),
        }],
        _ => vec![],
    }
}

/// Deploying one component: pinned to registry digests in a shared cluster, checked to be on
/// the node in a fresh one; then waiting for its pods.
fn deploy(step: &e2e::Step, plan: &e2e::Plan, kubectl: &Kubectl) -> Vec<Action> {
    use e2e::Step;
    let limit = Duration::from_secs;
    match step {
        Step::Deploy {
            manifests,
            images,
            timeout,
        } if plan.shared.is_some() => vec![
            Action::ApplyPinned {
                kubectl: kubectl.clone(),
                text: manifests.text.clone(),
                images: images.clone(),
            },
            Action::Pods {
                get_pods: kubectl.get_pods(&plan.namespace).timeout(limit(30)),
                workload: manifests.workload.clone(),
                component: manifests.component.clone(),
                timeout: *timeout,
            },
        ],
        Step::Deploy {
            manifests,
            images,
            timeout,
        } => vec![
            Action::OnNode {
                get_nodes: kubectl.get_nodes().timeout(limit(30)),
                images: images.clone(),
            },
            Action::Run {
                state: "applying",
                cmd: Command::Timed(kubectl.apply(&manifests.text).timeout(limit(60))),
                output: Use::Show,
                what: format!("applying {}", manifests.source.display()),
            },
            Action::Pods {
                get_pods: kubectl.get_pods(&plan.namespace).timeout(limit(30)),
                workload: manifests.workload.clone(),
                component: manifests.component.clone(),
                timeout: *timeout,
            },
        ],
        _ => vec![],
    }
}

/// How images reach a fresh kind cluster with this engine.
pub fn loading(engine: &Engine) -> Loading {
    if engine.is_podman() {
        Loading::Archive
    } else {
        Loading::DockerImage
    }
}

fn compile(t: &Tools, packages: &[String]) -> Action {
    Action::Run {
        state: "compiling",
        cmd: Command::Plain(builds::compile_cmd(t.root, packages)),
        output: Use::Artifacts,
        what: "compiling the service binaries (fix the build, then run again)".into(),
    }
}

fn compile_tests(t: &Tools, package: &str, target: &str) -> Action {
    Action::Run {
        state: "compiling",
        cmd: Command::Plain(builds::compile_tests_cmd(t.root, package, target)),
        output: Use::Show,
        what: format!("compiling the {target} tests of {package}"),
    }
}

/// Record, (assemble or write the Dockerfile), build.
fn image(t: &Tools, b: &Build) -> Vec<Action> {
    let spec = b.spec();
    let mut a = vec![Action::Record(Event::Image {
        reference: spec.reference.clone(),
    })];
    match b {
        Build::Rust { binary, extra, .. } => a.push(Action::Assemble {
            binary: binary.clone(),
            extra: extra.clone(),
            context: spec.context.clone(),
        }),
        Build::Retag { .. } => a.push(Action::Write {
            path: spec.dockerfile.clone(),
            text: RETAG_DOCKERFILE.into(),
        }),
        Build::Dockerfile { .. } => {}
    }
    let binary = match b {
        Build::Rust { binary, .. } => Some(binary.clone()),
        _ => None,
    };
    let mut c = Cached {
        component: b.component().to_string(),
        spec: spec.clone(),
        binary,
        rebuild: t.rebuild,
        build: Command::Plain(Cmd::new("true")),
        engine: t.engine.program.display().to_string(),
    };
    c.build = Command::Engine(t.engine.build_cmd(&cache_spec(&c, "{key}")));
    a.push(Action::CachedBuild(c));
    a
}
