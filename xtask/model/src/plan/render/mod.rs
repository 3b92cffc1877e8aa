//! Rendering for E2E runs, pure: each component's manifests (its template from `manifests/`
//! with `${...}` filled in, plus the Service, env Secret and mounted-files ConfigMap that
//! `infra.toml` determines, and its `command`, `args` and `mounts` put into the workload), the
//! kind config and the Namespace ([`kind`]), and the Phase 0 image check ([`images`]).

mod images;
mod inject;
mod kind;
mod yaml;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use yaml_rust2::yaml::{Hash, Yaml};
use yaml_rust2::YamlLoader;

use crate::config::{Component, Config, PortRef, Ready, Stack};
use crate::plan::stack::{self, Site};

pub use images::{check_images_from, image_uses, ImageUse, Source};
pub use kind::{
    annotated_namespace_doc, configmap_doc, kept_kind_config, kind_config, label_value,
    namespace_doc, registry_hosting,
};
pub use yaml::emit;
#[cfg(test)]
pub use yaml::to_json;
use yaml::{labels_yaml, map, s, string_map};

/// What rendering reads: templates and the files `mounts` name (relative to nothing: the
/// paths given are already joined to the repository root).
pub trait Files {
    fn read(&self, path: &Path) -> Result<String>;
    /// The names of the files directly in `dir`, sorted.
    fn list(&self, dir: &Path) -> Result<Vec<String>>;
}

/// A component's rendered manifests.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifests {
    pub component: String,
    /// The template it came from (relative to the root).
    pub source: PathBuf,
    /// The YAML stream to apply (generated objects first, then the template's).
    pub text: String,
    pub docs: Vec<Yaml>,
    pub workload: Workload,
}

/// What readiness is judged on: the pods of a Deployment (by selector) or of a Job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Workload {
    Deployment {
        name: String,
        selector: BTreeMap<String, String>,
    },
    Job {
        name: String,
    },
}

impl Workload {
    pub fn name(&self) -> &str {
        match self {
            Workload::Deployment { name, .. } | Workload::Job { name } => name,
        }
    }

    /// `-l` selector of its pods.
    pub fn selector(&self) -> String {
        match self {
            Workload::Deployment { selector, .. } => selector
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
            Workload::Job { name } => format!("job-name={name}"),
        }
    }
}

/// Where a component is rendered for: its namespace, the consumer's NodePorts, its labels.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    pub namespace: &'a str,
    pub node_ports: &'a BTreeMap<PortRef, u16>,
    pub labels: &'a BTreeMap<String, String>,
    /// The pull policy the run's images get instead of the template's (registry runs:
    /// `IfNotPresent`), if any.
    pub pull: Option<&'a str>,
}

/// Renders one member of an E2E stack: generated Secret, ConfigMap and Service, then its
/// template's objects (with `command`, `args` and `mounts` put into the workload).
pub fn component(
    config: &Config,
    stack: &Stack,
    name: &str,
    image: &str,
    target: Target,
    files: &dyn Files,
) -> Result<Manifests> {
    let comp = stack.get(name).with_context(|| {
        format!(
            "`{name}` is not part of the E2E stack of {}",
            stack.consumer
        )
    })?;
    let source = comp.manifest.clone();
    let template = files.read(&config.root.join(&source)).with_context(|| {
        format!(
            "reading the manifest template of {name}, {}",
            source.display()
        )
    })?;
    let text = substitute(
        &template,
        &source,
        &placeholders(comp, image, target.namespace)?,
    )?;
    let mut docs: Vec<Yaml> = YamlLoader::load_from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e} (after filling in placeholders)", source.display()))?
        .into_iter()
        .filter(|d| !d.is_null())
        .collect();
    let workload = workload(&docs, &source, name)?;
    let mut generated = Vec::new();
    generated.extend(env_secret(config, stack, comp, &target)?);
    let mounted = inject::mounted_files(config, comp, files)?;
    generated.extend(inject::config_map(comp, &mounted, &target));
    generated.extend(service(comp, &workload, &source, &target)?);
    let mut injected = inject::into_workload(&mut docs, comp, &mounted, &source)?;
    if let Some(policy) = target.pull {
        injected |= inject::pull_policy(&mut docs, image, policy);
    }
    let mut out = String::new();
    for g in &generated {
        out.push_str(&emit(g));
        out.push('\n');
    }
    out.push_str(&format!("--- # {}\n", source.display()));
    if injected {
        // The workload changed: its objects are written out again (the template's comments go).
        out.push_str(&docs.iter().map(emit).collect::<Vec<_>>().join("\n"));
    } else {
        out.push_str(text.trim_start_matches("---").trim_start());
    }
    let mut all = generated;
    all.extend(docs);
    Ok(Manifests {
        component: name.to_string(),
        source,
        text: out,
        docs: all,
        workload,
    })
}

/// The `${...}` values of a component's template (see manifests/README.md).
fn placeholders(
    comp: &Component,
    image: &str,
    namespace: &str,
) -> Result<BTreeMap<String, String>> {
    let name = &comp.name;
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    vars.insert("NAMESPACE".into(), namespace.into());
    vars.insert("NAME".into(), name.clone());
    vars.insert("IMAGE".into(), image.into());
    vars.insert("ENV_SECRET".into(), format!("{name}-env"));
    if let Some(p) = comp.port {
        vars.insert("PORT".into(), p.to_string());
    }
    for (k, p) in &comp.extra_ports {
        vars.insert(
            format!("PORT_{}", k.to_uppercase().replace('-', "_")),
            p.to_string(),
        );
    }
    if let Ready::Http { path, .. } = &comp.ready {
        vars.insert("READY_PATH".into(), path.clone());
    }
    if comp.is_job() {
        vars.insert("ARGS".into(), serde_json::to_string(&comp.args)?);
    }
    Ok(vars)
}

/// The `<name>-env` Secret: the component's environment with URLs as seen in the cluster.
fn env_secret(
    config: &Config,
    stack: &Stack,
    comp: &Component,
    t: &Target,
) -> Result<Option<Yaml>> {
    let env = stack::env(config, stack, comp, Site::Cluster)?;
    if env.is_empty() {
        return Ok(None);
    }
    let data: Hash = env.iter().map(|(k, v)| (s(k), s(v))).collect();
    Ok(Some(map(vec![
        ("apiVersion", s("v1")),
        ("kind", s("Secret")),
        ("metadata", metadata(&format!("{}-env", comp.name), t)),
        ("type", s("Opaque")),
        ("stringData", Yaml::Hash(data)),
    ])))
}

fn metadata(name: &str, t: &Target) -> Yaml {
    map(vec![
        ("name", s(name)),
        ("namespace", s(t.namespace)),
        ("labels", labels_yaml(t.labels)),
    ])
}

/// The component's Service (NodePort when the consumer maps one of its ports), selecting its
/// Deployment's pods by `app: <name>`.
fn service(comp: &Component, w: &Workload, source: &Path, t: &Target) -> Result<Option<Yaml>> {
    let (Workload::Deployment { selector, .. }, Some(main)) = (w, comp.port) else {
        return Ok(None);
    };
    let name = &comp.name;
    if selector.get("app") != Some(name) {
        bail!(
            "{}: the Deployment's pods must carry the label `app: {name}` (its generated \
             Service selects them by it)",
            source.display()
        );
    }
    let node_port = |port: Option<&String>| {
        t.node_ports
            .get(&PortRef {
                component: name.clone(),
                port: port.cloned(),
            })
            .copied()
    };
    let mut ports = vec![("main".to_string(), main, node_port(None))];
    for (k, p) in &comp.extra_ports {
        ports.push((k.clone(), *p, node_port(Some(k))));
    }
    let any_node_port = ports.iter().any(|p| p.2.is_some());
    let port_docs: Vec<Yaml> = ports
        .iter()
        .map(|(pn, p, np)| {
            let mut v = vec![
                ("name", s(pn)),
                ("port", Yaml::Integer(i64::from(*p))),
                ("targetPort", Yaml::Integer(i64::from(*p))),
                ("protocol", s("TCP")),
            ];
            if let Some(np) = np {
                v.push(("nodePort", Yaml::Integer(i64::from(*np))));
            }
            map(v)
        })
        .collect();
    let kind = if any_node_port {
        "NodePort"
    } else {
        "ClusterIP"
    };
    Ok(Some(map(vec![
        ("apiVersion", s("v1")),
        ("kind", s("Service")),
        ("metadata", metadata(name, t)),
        (
            "spec",
            map(vec![
                ("type", s(kind)),
                ("selector", map(vec![("app", s(name))])),
                ("ports", Yaml::Array(port_docs)),
            ]),
        ),
    ])))
}

/// Fills `${NAME}` placeholders; an unknown one is an error naming the file and line.
pub fn substitute(
    template: &str,
    source: &Path,
    vars: &BTreeMap<String, String>,
) -> Result<String> {
    let mut out = String::with_capacity(template.len());
    for (i, line) in template.lines().enumerate() {
        let mut rest = line;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                bail!(
                    "{}:{}: `${{` without a closing `}}`",
                    source.display(),
                    i + 1
                );
            };
            let key = &after[..end];
            match vars.get(key) {
                Some(v) => out.push_str(v),
                None => {
                    bail!(
                    "{}:{}: unknown placeholder `${{{key}}}`; known here: {} (shell variables: \
                     write `$VAR` without braces)",
                    source.display(),
                    i + 1,
                    vars.keys().map(|k| format!("${{{k}}}")).collect::<Vec<_>>().join(", ")
                )
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out.push('\n');
    }
    Ok(out)
}

fn workload(docs: &[Yaml], source: &Path, name: &str) -> Result<Workload> {
    let mut found = Vec::new();
    for d in docs {
        match d["kind"].as_str() {
            Some("Deployment") => {
                let n = d["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let selector = string_map(&d["spec"]["selector"]["matchLabels"]);
                if selector.is_empty() {
                    bail!(
                        "{}: Deployment/{n} has no spec.selector.matchLabels",
                        source.display()
                    );
                }
                found.push(Workload::Deployment { name: n, selector });
            }
            Some("Job") => found.push(Workload::Job {
                name: d["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            }),
            _ => {}
        }
    }
    match found.len() {
        1 => {
            let w = found.remove(0);
            if w.name() != name {
                bail!(
                    "{}: the workload is named `{}`; name it `${{NAME}}` ({name})",
                    source.display(),
                    w.name()
                );
            }
            Ok(w)
        }
        0 => bail!(
            "{}: no Deployment or Job found; the template must hold the component's workload",
            source.display()
        ),
        n => bail!(
            "{}: {n} workloads found; one Deployment or Job per component template",
            source.display()
        ),
    }
}

#[cfg(test)]
mod tests;
