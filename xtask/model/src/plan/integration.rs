//! The plan of an integration run, pure: `infra.toml` and the run's facts in, the task graph
//! out (the one compile, image builds, the network, every container with its argv spec and
//! readiness check, the test compile), with the host ports to claim and the tests' command and
//! environment (design.md section 4).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::config::{names, Component, PortRef, Stack, TierName};
use crate::graph::Node;
use crate::plan::images::{self, Build, ThirdParty};
use crate::plan::labels::RunLabels;
use crate::plan::probe::Probe;
use crate::plan::specs::{Claim, ContainerSpec};
use crate::plan::stack::{self, Site};
use crate::plan::{Run, Tests};

pub const TIER: &str = "integration";

/// One task of an integration run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// One `cargo build` for every Rust image of the stack.
    Compile {
        packages: Vec<String>,
    },
    /// `cargo test --no-run` of the consumer's tests, while the stack starts.
    CompileTests {
        package: String,
        target: String,
    },
    Image(Build),
    Network {
        name: String,
        labels: BTreeMap<String, String>,
    },
    /// Gives a cached data image the run's own reference (a snapshot hit).
    NameData {
        source: String,
        reference: String,
    },
    /// A job whose effect the data image already holds: verified by the image's key.
    Verified {
        job: String,
        key: String,
    },
    /// Flushes and commits a member's container as its data image (a snapshot miss).
    Snapshot {
        container: String,
        flush: Vec<String>,
        reference: String,
        labels: BTreeMap<String, String>,
        key: String,
        why: String,
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
    /// Every host port of the run: published ports and the consumer's own.
    pub claims: Vec<Claim>,
    pub tests: Tests,
}

/// Everything the run will do. `test_args` go to the test command.
pub fn plan(run: &Run, test_args: &[String]) -> Result<Plan> {
    let (config, consumer) = (run.config, run.consumer);
    let tier = config
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
    let labels = run.labels(TIER);
    let network = names::network_name(consumer);
    let images = images::plan(run, &stack, ThirdParty::AsIs)?;
    let mut tests = Tests::new(&tier.test, test_args);
    let mut nodes = build_nodes(&images);
    nodes.push(Node {
        id: "network".into(),
        deps: vec![],
        pool: None,
        action: Step::Network {
            name: network.clone(),
            labels: labels.for_service("network"),
        },
    });
    for c in &stack.members {
        nodes.extend(member(run, &stack, c, &images, &tier.ports)?);
    }
    let compile = tests.compile_node(&nodes, |package, target| Step::CompileTests {
        package,
        target,
    });
    nodes.extend(compile);
    crate::graph::validate(&nodes)?;
    tests.env = stack::test_env(config, &stack, &tier.ports)?;
    for (name, port) in &tier.own_ports {
        tests
            .env
            .insert(names::own_port_var(consumer, name), port.to_string());
    }
    tests
        .env
        .insert("XTASK_RUN_ID".into(), run.id().to_string());
    tests.env.insert("XTASK_TIER".into(), TIER.into());
    Ok(Plan {
        run_id: run.id().to_string(),
        consumer: consumer.to_string(),
        labels,
        run_dir: run.dir(),
        network,
        nodes,
        claims: claims(consumer, &tier.ports, &tier.own_ports),
        tests,
    })
}

/// The one compile (when there is Rust to compile) and one task per image build.
pub fn build_nodes<S: From<Build> + FromCompile>(images: &images::Images) -> Vec<Node<S>> {
    let mut nodes = Vec::new();
    if !images.packages.is_empty() {
        nodes.push(Node {
            id: "compile".into(),
            deps: vec![],
            pool: None,
            action: S::compile(images.packages.clone()),
        });
    }
    for b in &images.builds {
        let deps = match b {
            Build::Rust { .. } => vec!["compile".to_string()],
            _ => vec![],
        };
        nodes.push(Node {
            id: format!("image:{}", b.component()),
            deps,
            pool: Some("build"),
            action: S::from(b.clone()),
        });
    }
    nodes
}

/// The steps of both tiers that compile and build.
pub trait FromCompile {
    fn compile(packages: Vec<String>) -> Self;
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

/// A member's tasks: its container; with a data image, naming it (hit) or making it (miss);
/// a job whose effect a cached data image holds is only verified.
fn member(
    run: &Run,
    stack: &Stack,
    c: &Component,
    images: &images::Images,
    ports: &BTreeMap<PortRef, u16>,
) -> Result<Vec<Node<Step>>> {
    if let Some(o) = run.holder(stack, &c.name) {
        let key = run.snapshots[o].key.clone();
        return Ok(vec![Node {
            id: c.name.clone(),
            deps: vec![o.to_string()],
            pool: None,
            action: Step::Verified {
                job: c.name.clone(),
                key,
            },
        }]);
    }
    let mut node = container(run, stack, c, images, ports)?;
    let (Some(snap), Some(d)) = (&c.snapshot, run.snapshots.get(&c.name)) else {
        return Ok(vec![node]);
    };
    let Step::Container { spec, .. } = &mut node.action else {
        return Ok(vec![node]);
    };
    spec.env.extend(snap.env.clone());
    let extra = if d.hit {
        let reference = run
            .facts
            .infra_ref(&format!("{}-data", c.name), run.consumer);
        // The container starts from the cached image while the run names it (0.15 s off the
        // critical path): from its start the container holds the image against removal as
        // the run's name does (`clean-images` spares both), and teardown takes off the name.
        spec.image = d.cache_ref.clone();
        Node {
            id: format!("data:{}", c.name),
            deps: vec![],
            pool: None,
            action: Step::NameData {
                source: d.cache_ref.clone(),
                reference,
            },
        }
    } else {
        snapshot_node(run, c, snap, d, &spec.name)?
    };
    Ok(vec![node, extra])
}

/// Making a member's data image after its `after` jobs (a miss).
fn snapshot_node(
    run: &Run,
    c: &Component,
    snap: &crate::config::Snapshot,
    d: &crate::plan::Snapshot,
    container: &str,
) -> Result<Node<Step>> {
    let flush = snap
        .flush
        .iter()
        .map(|w| stack::postgres_template(run.config, w))
        .collect::<Result<Vec<_>>>()?;
    let labels = crate::plan::labels::cache_labels(&run.labels(TIER).for_service(&c.name), &d.key);
    Ok(Node {
        id: format!("snapshot:{}", c.name),
        deps: snap.after.clone(),
        pool: None,
        action: Step::Snapshot {
            container: container.to_string(),
            flush,
            reference: d.cache_ref.clone(),
            labels,
            key: d.key.clone(),
            why: d.why.clone(),
        },
    })
}

/// A member's container: on the run's network, publishing its host ports, its environment
/// with the other members' URLs as seen from the network, after what it needs and its image.
fn container(
    run: &Run,
    stack: &Stack,
    c: &Component,
    images: &images::Images,
    ports: &BTreeMap<PortRef, u16>,
) -> Result<Node<Step>> {
    let consumer = run.consumer;
    let name = names::container_name(consumer, &c.name);
    let host_port = |p: Option<&str>| {
        ports
            .get(&PortRef {
                component: c.name.clone(),
                port: p.map(str::to_string),
            })
            .copied()
    };
    let publish = ports
        .iter()
        .filter(|(pr, _)| pr.component == c.name)
        .filter_map(|(pr, host)| Some((*host, c.internal_port(pr.port.as_deref())?)))
        .collect();
    let spec = ContainerSpec {
        name: name.clone(),
        image: images.refs[&c.name].clone(),
        network: names::network_name(consumer),
        labels: run.labels(TIER).for_service(&c.name),
        env: stack::env(run.config, stack, c, Site::Network { consumer })?,
        publish,
        command: c.command.clone(),
        args: c.args.clone(),
        mounts: c
            .mounts
            .iter()
            .map(|m| (run.config.root.join(&m.source), m.target.clone()))
            .collect(),
    };
    let probe = Probe::for_component(&c.ready, &name, &run.config.postgres, &host_port)?;
    let mut deps = vec!["network".to_string()];
    deps.extend(c.needs.iter().filter(|n| stack.get(n).is_some()).cloned());
    if let Some(owner) = c.image_service() {
        let id = format!("image:{owner}");
        deps.push(id);
    }
    Ok(Node {
        id: c.name.clone(),
        deps,
        pool: None,
        action: Step::Container {
            component: c.name.clone(),
            spec,
            probe,
            timeout: c.timeout,
            job: c.is_job(),
        },
    })
}

fn claims(
    consumer: &str,
    ports: &BTreeMap<PortRef, u16>,
    own: &BTreeMap<String, u16>,
) -> Vec<Claim> {
    let published = ports.iter().map(|(pr, p)| Claim {
        port: *p,
        what: format!("{consumer} integration {pr}"),
    });
    let own = own.iter().map(|(name, p)| Claim {
        port: *p,
        what: format!("{consumer}'s own port {name} (its tests bind it)"),
    });
    published.chain(own).collect()
}

#[cfg(test)]
mod tests;
