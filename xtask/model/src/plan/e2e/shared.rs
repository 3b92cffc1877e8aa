//! E2E runs in a kept or shared cluster (design.md section 11): a namespace per run
//! (`{consumer}-{run id}`, labelled, with a TTL), at most `max_runs` runs at once (admission
//! slots), images pushed to a registry under the run's tags and deployed by the digest each
//! push returned (`IfNotPresent`), no NodePorts (two runs could not both claim one): the tests
//! reach the services through supervised `kubectl port-forward`s.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use anyhow::{bail, Result};

use super::{Plan, Step};
use crate::config::{names, PortRef, Stack};
use crate::graph::Node;
use crate::plan::images::Images;
use crate::plan::integration::build_nodes;
use crate::plan::labels::{RunLabels, EXPIRES, PUSHED, SYSTEM_NAMESPACE};
use crate::plan::render;

/// Where a shared-cluster run goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shared {
    /// What the user named: a kept cluster or a kube context.
    pub cluster: String,
    pub kubeconfig: PathBuf,
    pub context: Option<String>,
    pub registry: Registry,
    pub ttl_secs: u64,
    pub max_runs: usize,
    /// This host's name: a run's pid means something only here.
    pub host: String,
}

/// `HOST[:PORT][/PREFIX]`: where the run's images go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    pub host: String,
    pub prefix: String,
}

impl Registry {
    pub fn parse(s: &str) -> Result<Registry> {
        let s = s.trim().trim_end_matches('/');
        let (host, prefix) = s.split_once('/').unwrap_or((s, ""));
        let ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:".contains(c))
            && prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c));
        if !ok || s.contains("://") {
            bail!("--registry `{s}`: give HOST[:PORT][/PREFIX], e.g. localhost:5001 or registry.example.com/team");
        }
        Ok(Registry {
            host: host.to_string(),
            prefix: prefix.to_string(),
        })
    }

    /// What every reference in it starts with.
    pub fn base(&self) -> String {
        if self.prefix.is_empty() {
            format!("{}/", self.host)
        } else {
            format!("{}/{}/", self.host, self.prefix)
        }
    }

    /// `localhost/datastorage:T` -> `HOST[/PREFIX]/datastorage:T` (the run's tag, kept).
    pub fn remote(&self, local: &str) -> String {
        format!("{}{}", self.base(), local.trim_start_matches("localhost/"))
    }
}

/// A service port the tests reach through a supervised `kubectl port-forward`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward {
    pub port: PortRef,
    pub service: String,
    pub target_port: u16,
    /// The tests' variable (`DATASTORAGE_URL`) and its URL, `{local}` for the local port.
    pub var: String,
    pub url: String,
}

/// The namespace of the run: our labels, this host, and when it expires.
pub fn namespace_doc(namespace: &str, labels: &RunLabels, s: &Shared, pushed: &[String]) -> String {
    let mut l = labels.for_service("namespace");
    l.insert(crate::plan::labels::HOST.into(), s.host.clone());
    let a = [
        (
            EXPIRES.to_string(),
            (labels.created + s.ttl_secs).to_string(),
        ),
        (PUSHED.to_string(), pushed.join(" ")),
    ]
    .into();
    render::annotated_namespace_doc(namespace, &l, &a)
}

/// Member -> the registry reference its manifests use (the run's tag; pinned at deploy).
pub fn remote_refs(images: &Images, registry: &Registry) -> BTreeMap<String, String> {
    images
        .refs
        .iter()
        .map(|(m, r)| (m.clone(), registry.remote(r)))
        .collect()
}

/// The graph: builds, push of each image, admission, namespace, deploys, port-forwards.
pub fn graph(plan: &Plan, stack: &Stack, images: &Images, s: &Shared) -> Result<Vec<Node<Step>>> {
    let mut nodes: Vec<Node<Step>> = build_nodes(images);
    let mut push_of: BTreeMap<String, String> = BTreeMap::new();
    for b in &images.builds {
        let (id, spec) = (b.component(), b.spec());
        let remote = s.registry.remote(&spec.reference);
        push_of.insert(remote.clone(), format!("push:{id}"));
        nodes.push(Node {
            id: format!("push:{id}"),
            deps: vec![format!("image:{id}")],
            pool: Some("push"),
            action: Step::Push {
                local: spec.reference.clone(),
                remote,
                labels: spec.labels.clone(),
                context: plan.run_dir.join("push").join(id),
            },
        });
    }
    nodes.push(Node {
        id: "admit".into(),
        deps: vec![],
        pool: None,
        action: Step::Admit,
    });
    nodes.push(Node {
        id: "namespace".into(),
        deps: vec!["admit".into()],
        pool: None,
        action: Step::Namespace {
            doc: plan.namespace_doc.clone(),
        },
    });
    super::deploy_nodes(plan, stack, &push_of, &mut nodes)?;
    for f in &plan.forwards {
        nodes.push(Node {
            id: format!("forward:{}", f.port),
            deps: vec![format!("deploy:{}", f.port.component)],
            pool: None,
            action: Step::Forward(f.clone()),
        });
    }
    Ok(nodes)
}

/// The port-forwards the tests need: one per port the consumer's E2E tier maps, with the URL
/// the tests get (`{local}` stands for the forward's local port).
pub fn forwards(
    config: &crate::config::Config,
    stack: &Stack,
    ports: &BTreeSet<PortRef>,
) -> Result<Vec<Forward>> {
    let mut out = Vec::new();
    for pr in ports {
        let Some(c) = stack.get(&pr.component) else {
            continue;
        };
        let Some(target_port) = c.internal_port(pr.port.as_deref()) else {
            bail!("{pr} has no such port");
        };
        // Rendered with a stand-in port 1, which is then marked for the real one.
        let one: BTreeMap<PortRef, u16> = [(pr.clone(), 1)].into();
        let url = crate::plan::stack::url(
            config,
            c,
            pr.port.as_deref(),
            crate::plan::stack::Site::Host { ports: &one },
        )?;
        out.push(Forward {
            port: pr.clone(),
            service: pr.component.clone(),
            target_port,
            var: names::url_env_var(&pr.component, pr.port.as_deref()),
            url: url.replacen("localhost:1", "localhost:{local}", 1),
        });
    }
    Ok(out)
}

/// The namespace admission slots live in (shared by every run; never removed by us).
pub fn system_namespace_doc() -> String {
    let l: BTreeMap<String, String> =
        [("io.kubernaut.xtask.system".to_string(), "1".to_string())].into();
    render::namespace_doc(crate::plan::labels::SYSTEM_NAMESPACE, &l)
}

/// Admission slot `i`: a ConfigMap in the system namespace carrying the run's labels, its
/// host and when it expires (a slot of a dead or expired run is taken back).
pub fn slot_doc(i: usize, labels: &RunLabels, s: &Shared) -> String {
    let mut l = labels.for_service("slot");
    l.insert(crate::plan::labels::HOST.into(), s.host.clone());
    let a = [(
        EXPIRES.to_string(),
        (labels.created + s.ttl_secs).to_string(),
    )]
    .into();
    let data = [("run".to_string(), labels.run.clone())].into();
    render::configmap_doc(&format!("xtask-slot-{i}"), SYSTEM_NAMESPACE, &l, &a, &data)
}
