//! Each plan step as its [`Action`]s: the one function per tier from which both `--dry-run`
//! and execution come. Pure apart from what the tools' argv builders read (nothing runs here).

use std::path::Path;
use std::time::Duration;

use crate::exec::actions::{Action, Command, Use};
use crate::exec::builds;
use crate::exec::record::Event;
use crate::host::kube::{Kind, Kubectl};
use crate::host::tools::Engine;
use crate::plan::e2e::{self, Loading};
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
}

/// The actions of an integration step.
pub fn integration(step: &integration::Step, t: &Tools) -> Vec<Action> {
    use integration::Step;
    match step {
        Step::Compile { packages } => vec![compile(t, packages)],
        Step::CompileTests { package, target } => vec![compile_tests(t, package, target)],
        Step::Image(b) => image(t, b),
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

/// The actions of an E2E step.
pub fn e2e(step: &e2e::Step, plan: &e2e::Plan, t: &Tools) -> Vec<Action> {
    use e2e::Step;
    let (kind, kubectl) = match (t.kind, t.kubectl) {
        (Some(k), Some(c)) => (k, c),
        _ => return vec![],
    };
    let limit = Duration::from_secs;
    match step {
        Step::Compile { packages } => vec![compile(t, packages)],
        Step::CompileTests { package, target } => vec![compile_tests(t, package, target)],
        Step::Image(b) => image(t, b),
        Step::Save { reference, archive } => vec![
            Action::Mkdir(plan.archives_dir()),
            Action::Record(Event::Archive {
                path: archive.clone(),
            }),
            Action::Run {
                state: "saving",
                cmd: Command::Engine(t.engine.save_cmd(reference, archive)),
                output: Use::FileSize,
                what: format!("saving {reference}"),
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
        Step::Namespace { doc } => vec![Action::Run {
            state: "creating",
            cmd: Command::Timed(kubectl.apply(doc).timeout(limit(60))),
            output: Use::Show,
            what: "creating the namespace".into(),
        }],
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
    let what = match b {
        Build::Retag { base, .. } => format!(
            "re-tagging {base} as {}: is {base} in local storage?",
            spec.reference
        ),
        _ => format!(
            "building {} (is its base there? `cargo xtask doctor` checks the images)",
            spec.reference
        ),
    };
    a.push(Action::Run {
        state: "building",
        cmd: Command::Engine(t.engine.build_cmd(spec)),
        output: Use::Show,
        what,
    });
    a
}
