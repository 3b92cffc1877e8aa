//! The plan of an E2E run, pure (design.md section 6). Phase 0 happens here: every image
//! reference is generated once ([`images`](crate::plan::images)), the kind config and every
//! manifest are rendered with those exact references ([`manifests`]), and the manifests are
//! checked to reference nothing else. Then the task graph ([`graph`]): the compile and image
//! builds (phase 1) alongside the cluster (phase 2), each image saved and loaded as soon as it
//! and the cluster are there (phase 3), each component deployed once what it needs is ready
//! (phase 4).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::config::{names, PortRef, Stack, TierName};
use crate::graph::Node;
use crate::plan::images::{self, Build, Images, ThirdParty};
use crate::plan::integration::{build_nodes, FromCompile};
use crate::plan::labels::RunLabels;
use crate::plan::render::{self, Files, Manifests};
use crate::plan::specs::Claim;
use crate::plan::stack;
use crate::plan::{Run, Tests};

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
    Image(Build),
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
    /// Registry runs: a run-labelled image over the local one, pushed; deploys use the digest.
    Push {
        local: String,
        remote: String,
        labels: BTreeMap<String, String>,
        /// Where its one-line Dockerfile is written.
        context: PathBuf,
    },
    /// Registry runs: one of the cluster's admission slots (waits while all are taken).
    Admit,
    /// Registry runs: a supervised `kubectl port-forward` for the tests.
    Forward(shared::Forward),
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
            Step::Compile { .. } | Step::CompileTests { .. } | Step::Image(_) => 1,
            Step::Cluster { .. } | Step::Admit => 2,
            Step::Save { .. } | Step::Load { .. } | Step::Push { .. } => 3,
            Step::Namespace { .. } | Step::Deploy { .. } | Step::Forward(_) => 4,
        }
    }
}

impl From<Build> for Step {
    fn from(b: Build) -> Step {
        Step::Image(b)
    }
}

impl FromCompile for Step {
    fn compile(packages: Vec<String>) -> Step {
        Step::Compile { packages }
    }
}

pub mod shared;

/// Where an E2E run goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A fresh kind cluster of its own (the default): NodePorts, loaded images.
    Fresh(Loading),
    /// A kept cluster or a kube context: a namespace of its own, images through a registry.
    Shared(shared::Shared),
}

/// How images reach the cluster's node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loading {
    /// `podman save` to an archive, then `kind load image-archive` (podman).
    Archive,
    /// `kind load docker-image`, straight from docker's store.
    DockerImage,
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
    /// Member -> the image reference used to build, load and deploy it.
    pub images: BTreeMap<String, String>,
    pub manifests: Vec<Manifests>,
    pub namespace_doc: String,
    pub nodes: Vec<Node<Step>>,
    pub claims: Vec<Claim>,
    pub tests: Tests,
    /// Job -> the member whose cached data image holds its work: what needs the job waits
    /// for that member's deploy only, and the job runs beside the tests (`beside_tests`).
    pub held: BTreeMap<String, String>,
    /// Registry runs: where, and the port-forwards the tests' URLs come from.
    pub shared: Option<shared::Shared>,
    pub forwards: Vec<shared::Forward>,
}

impl Plan {
    pub fn archives_dir(&self) -> PathBuf {
        self.run_dir.join("images")
    }

    pub fn kind_config_path(&self) -> PathBuf {
        self.run_dir.join("kind-config.yaml")
    }

    /// The deploys the tests do not wait for: a held job's, which nothing needs. Each starts
    /// when everything else is deployed and runs beside the tests; the run fails if it fails.
    pub fn beside_tests(&self) -> BTreeSet<String> {
        self.held.keys().map(|m| format!("deploy:{m}")).collect()
    }
}

/// Phase 0 and the graph. Reads manifest templates and mounted files through `files`.
pub fn plan(run: &Run, target: &Target, files: &dyn Files, test_args: &[String]) -> Result<Plan> {
    let (config, consumer) = (run.config, run.consumer);
    let tier = config.consumer(consumer)?.e2e.as_ref();
    let Some(tier) = tier.filter(|t| !t.ports.is_empty()) else {
        bail!(
            "{} has no [consumers.{consumer}.e2e] ports; add its NodePorts to run E2E tests",
            config.file.display()
        );
    };
    let stack = config.stack(consumer, TierName::E2e)?;
    let images = images::plan(run, &stack, ThirdParty::Retag)?;
    let mut plan = skeleton(run, target, tier, &stack)?;
    let (node_ports, refs, source, pull) = match target {
        Target::Fresh(_) => (
            tier.ports
                .iter()
                .map(|(k, v)| (k.clone(), v.node_port))
                .collect(),
            images.refs.clone(),
            render::Source::Loaded,
            None,
        ),
        Target::Shared(s) => (
            BTreeMap::new(),
            shared::remote_refs(&images, &s.registry),
            render::Source::Registry {
                prefix: s.registry.base(),
                pinned: false,
            },
            Some("IfNotPresent"),
        ),
    };
    let ctx = Rendering {
        namespace: &plan.namespace,
        node_ports: &node_ports,
        refs: &refs,
        source: &source,
        pull,
    };
    plan.manifests = manifests(run, &stack, &ctx, files)?;
    if let Target::Shared(s) = target {
        let pushed: BTreeSet<String> = refs.values().cloned().collect();
        let pushed: Vec<String> = pushed.into_iter().collect();
        plan.namespace_doc = shared::namespace_doc(&plan.namespace, &plan.labels, s, &pushed);
    }
    plan.images = refs;
    plan.tests = tests(run, tier, &stack, test_args)?;
    plan.nodes = match target {
        Target::Fresh(loading) => graph(&plan, &stack, &images, *loading)?,
        Target::Shared(s) => shared::graph(&plan, &stack, &images, s)?,
    };
    crate::graph::validate(&plan.nodes)?;
    Ok(plan)
}

/// Names, labels, the kind config or namespace of the run (manifests and graph come next).
fn skeleton(
    run: &Run,
    target: &Target,
    tier: &crate::config::Tier<crate::config::NodePort>,
    stack: &Stack,
) -> Result<Plan> {
    let consumer = run.consumer;
    let labels = run.labels(TIER);
    let mut plan = Plan {
        run_id: run.id().to_string(),
        consumer: consumer.to_string(),
        cluster: names::cluster_name(consumer, run.id()),
        namespace: names::e2e_namespace(consumer),
        run_dir: run.dir(),
        kubeconfig: run.dir().join("kubeconfig"),
        kind_config: String::new(),
        images: BTreeMap::new(),
        manifests: Vec::new(),
        namespace_doc: String::new(),
        nodes: Vec::new(),
        claims: Vec::new(),
        tests: Tests::new(&tier.test, &[]),
        held: stack
            .names()
            .into_iter()
            .filter_map(|m| run.holder(stack, &m).map(|h| (m, h.to_string())))
            .collect(),
        shared: None,
        forwards: Vec::new(),
        labels: labels.clone(),
    };
    match target {
        Target::Fresh(_) => {
            let mapping: Vec<(u16, u16)> = tier
                .ports
                .values()
                .map(|v| (v.node_port, v.host_port))
                .collect();
            plan.kind_config =
                render::kind_config(&plan.cluster, &labels.for_service("cluster"), &mapping);
            plan.namespace_doc =
                render::namespace_doc(&plan.namespace, &labels.for_service("namespace"));
            plan.claims = tier
                .ports
                .iter()
                .map(|(pr, v)| Claim {
                    port: v.host_port,
                    what: format!("{consumer} e2e {pr}"),
                })
                .collect();
        }
        Target::Shared(s) => {
            plan.cluster = s.cluster.clone();
            plan.namespace = names::run_namespace(consumer, run.id());
            plan.kubeconfig = s.kubeconfig.clone();
            let ports: BTreeSet<PortRef> = tier.ports.keys().cloned().collect();
            plan.forwards = shared::forwards(run.config, stack, &ports)?;
            plan.shared = Some(s.clone());
        }
    }
    Ok(plan)
}

/// The tests: their command, and the URLs of the ports the consumer maps (registry runs fill
/// the forwarded ones in when the port-forwards are up).
fn tests(
    run: &Run,
    tier: &crate::config::Tier<crate::config::NodePort>,
    stack: &Stack,
    test_args: &[String],
) -> Result<Tests> {
    let mut tests = Tests::new(&tier.test, test_args);
    let host_map: BTreeMap<PortRef, u16> = tier
        .ports
        .iter()
        .map(|(k, v)| (k.clone(), v.host_port))
        .collect();
    tests.env = stack::test_env(run.config, stack, &host_map)?;
    tests
        .env
        .insert("XTASK_RUN_ID".into(), run.id().to_string());
    tests.env.insert("XTASK_TIER".into(), TIER.into());
    Ok(tests)
}

/// What every member is rendered with.
pub struct Rendering<'a> {
    pub namespace: &'a str,
    pub node_ports: &'a BTreeMap<PortRef, u16>,
    /// Member -> the image its manifests reference.
    pub refs: &'a BTreeMap<String, String>,
    pub source: &'a render::Source,
    pub pull: Option<&'a str>,
}

/// Every member's manifests with the run's references, and the Phase 0 check: they reference
/// exactly what this run builds, as the run's images come (loaded: `localhost/`, not
/// `:latest`, pulled `Never`; a registry: in it, `IfNotPresent`).
pub fn manifests(
    run: &Run,
    stack: &Stack,
    ctx: &Rendering,
    files: &dyn Files,
) -> Result<Vec<Manifests>> {
    let labels = run.labels(TIER);
    let mut out = Vec::new();
    for m in stack.names() {
        let labels = labels.for_service(&m);
        let target = render::Target {
            namespace: ctx.namespace,
            node_ports: ctx.node_ports,
            labels: &labels,
            pull: ctx.pull,
        };
        out.push(render::component(
            run.config,
            stack,
            &m,
            &ctx.refs[&m],
            target,
            files,
        )?);
    }
    let built: BTreeSet<String> = ctx.refs.values().cloned().collect();
    let uses: Vec<render::ImageUse> = out
        .iter()
        .flat_map(|m| render::image_uses(&m.source, &m.docs))
        .collect();
    let problems = render::check_images_from(&uses, &built, ctx.source);
    if !problems.is_empty() {
        bail!(
            "the manifests would not run what this run builds; nothing was built or applied:\n  {}",
            problems.join("\n  ")
        );
    }
    Ok(out)
}

/// The task graph: builds, cluster, save and load, namespace, one deploy per member.
pub fn graph(
    plan: &Plan,
    stack: &Stack,
    images: &Images,
    loading: Loading,
) -> Result<Vec<Node<Step>>> {
    let mut nodes: Vec<Node<Step>> = build_nodes(images);
    nodes.push(Node {
        id: "cluster".into(),
        deps: vec![],
        pool: None,
        action: Step::Cluster {
            config: plan.kind_config_path(),
        },
    });
    let mut load_of: BTreeMap<String, String> = BTreeMap::new();
    for b in &images.builds {
        let (id, spec) = (b.component(), b.spec());
        load_of.insert(spec.reference.clone(), format!("load:{id}"));
        nodes.extend(load_nodes(plan, id, &spec.reference, loading));
    }
    nodes.push(Node {
        id: "namespace".into(),
        deps: vec!["cluster".into()],
        pool: None,
        action: Step::Namespace {
            doc: plan.namespace_doc.clone(),
        },
    });
    deploy_nodes(plan, stack, &load_of, &mut nodes)?;
    Ok(nodes)
}

/// One deploy per member (after the namespace, the tasks that bring its images in, and the
/// deploys of what it needs; for a job a data image holds, the deploy of that image's member),
/// then the test compile. A deploy beside the tests starts after every other deploy.
pub fn deploy_nodes(
    plan: &Plan,
    stack: &Stack,
    image_task: &BTreeMap<String, String>,
    nodes: &mut Vec<Node<Step>>,
) -> Result<()> {
    let beside = plan.beside_tests();
    let before_tests: Vec<String> = plan
        .manifests
        .iter()
        .map(|m| format!("deploy:{}", m.component))
        .filter(|id| !beside.contains(id))
        .collect();
    for m in &plan.manifests {
        let Some(c) = stack.get(&m.component) else {
            bail!("{} has manifests but is not in the stack", m.component);
        };
        let used: BTreeSet<String> = render::image_uses(&m.source, &m.docs)
            .into_iter()
            .map(|u| u.image)
            .collect();
        let mut deps = vec!["namespace".to_string()];
        deps.extend(used.iter().filter_map(|r| image_task.get(r).cloned()));
        let id = format!("deploy:{}", m.component);
        let mut needs: Vec<String> = c
            .needs
            .iter()
            .filter(|n| stack.get(n).is_some())
            .map(|n| format!("deploy:{}", plan.held.get(n).unwrap_or(n)))
            .collect();
        if beside.contains(&id) {
            needs.extend(before_tests.iter().cloned());
        }
        for n in needs {
            if !deps.contains(&n) {
                deps.push(n);
            }
        }
        nodes.push(Node {
            id,
            deps,
            pool: None,
            action: Step::Deploy {
                manifests: m.clone(),
                images: used,
                timeout: c.timeout,
            },
        });
    }
    let compile = plan
        .tests
        .compile_node(nodes, |package, target| Step::CompileTests {
            package,
            target,
        });
    nodes.extend(compile);
    Ok(())
}

/// Save (podman) and load one image, as soon as it is built and the cluster exists.
fn load_nodes(plan: &Plan, id: &str, reference: &str, loading: Loading) -> Vec<Node<Step>> {
    let image_task = format!("image:{id}");
    let load = |deps: Vec<String>, archive| Node {
        id: format!("load:{id}"),
        deps,
        pool: Some("load"),
        action: Step::Load {
            reference: reference.to_string(),
            archive,
        },
    };
    match loading {
        Loading::DockerImage => vec![load(vec![image_task, "cluster".into()], None)],
        Loading::Archive => {
            let archive = plan.archives_dir().join(format!("{id}.tar"));
            vec![
                Node {
                    id: format!("save:{id}"),
                    deps: vec![image_task],
                    pool: Some("save"),
                    action: Step::Save {
                        reference: reference.to_string(),
                        archive: archive.clone(),
                    },
                },
                load(vec![format!("save:{id}"), "cluster".into()], Some(archive)),
            ]
        }
    }
}

#[cfg(test)]
mod tests;
