//! Rendering for E2E runs, pure: the kind config, and each component's manifests (its template
//! from `manifests/` with `${...}` filled in, plus the Namespace, Service and env Secret that
//! `infra.toml` determines). Also the Phase 0 check applied before anything reaches a cluster:
//! every image a manifest references must be one this run built, under `localhost/`, not
//! `:latest`, with `imagePullPolicy: Never`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use yaml_rust2::yaml::{Hash, Yaml};
use yaml_rust2::{YamlEmitter, YamlLoader};

use crate::config::{Config, PortRef, Ready, Stack};
use crate::plan::stack::{self, Site};

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

/// The kind config: one control-plane node carrying our labels, and this consumer's NodePorts
/// mapped to its unique host ports (on 127.0.0.1 only: a shared host's other users do not need
/// them).
pub fn kind_config(
    cluster: &str,
    labels: &BTreeMap<String, String>,
    ports: &[(u16, u16)],
) -> String {
    let mut node = Hash::new();
    node.insert(s("role"), s("control-plane"));
    let mut l = Hash::new();
    for (k, v) in labels {
        l.insert(s(k), s(&label_value(v)));
    }
    node.insert(s("labels"), Yaml::Hash(l));
    let maps: Vec<Yaml> = ports
        .iter()
        .map(|(node_port, host)| {
            map(vec![
                ("containerPort", Yaml::Integer(i64::from(*node_port))),
                ("hostPort", Yaml::Integer(i64::from(*host))),
                ("listenAddress", s("127.0.0.1")),
                ("protocol", s("TCP")),
            ])
        })
        .collect();
    node.insert(s("extraPortMappings"), Yaml::Array(maps));
    let doc = map(vec![
        ("kind", s("Cluster")),
        ("apiVersion", s("kind.x-k8s.io/v1alpha4")),
        ("name", s(cluster)),
        ("nodes", Yaml::Array(vec![Yaml::Hash(node)])),
    ]);
    format!(
        "# kind cluster for one E2E run, rendered by cargo xtask from infra.toml\n{}",
        emit(&doc)
    )
}

/// A Kubernetes label value: at most 63 characters, alphanumeric at both ends.
pub fn label_value(v: &str) -> String {
    let clean: String = v
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    let trimmed = clean
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string();
    if trimmed.is_empty() {
        "unknown".into()
    } else {
        trimmed
    }
}

/// The Namespace of a run.
pub fn namespace_doc(namespace: &str, labels: &BTreeMap<String, String>) -> String {
    emit(&map(vec![
        ("apiVersion", s("v1")),
        ("kind", s("Namespace")),
        (
            "metadata",
            map(vec![
                ("name", s(namespace)),
                ("labels", labels_yaml(labels)),
            ]),
        ),
    ]))
}

/// Where a component is deployed: the run's namespace, NodePorts and labels.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub namespace: &'a str,
    pub node_ports: &'a BTreeMap<PortRef, u16>,
    pub labels: &'a BTreeMap<String, String>,
}

/// Renders one member of an E2E stack: generated Service and Secret, then its template.
pub fn component(
    config: &Config,
    stack: &Stack,
    name: &str,
    image: &str,
    target: Target,
    read: &dyn Fn(&Path) -> Result<String>,
) -> Result<Manifests> {
    let Target {
        namespace,
        node_ports,
        labels,
    } = target;
    let comp = stack.get(name).with_context(|| {
        format!(
            "`{name}` is not part of the E2E stack of {}",
            stack.consumer
        )
    })?;
    let source = comp.manifest.clone();
    let template = read(&config.root.join(&source)).with_context(|| {
        format!(
            "reading the manifest template of {name}, {}",
            source.display()
        )
    })?;
    let env_secret = format!("{name}-env");
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    vars.insert("NAMESPACE".into(), namespace.into());
    vars.insert("NAME".into(), name.into());
    vars.insert("IMAGE".into(), image.into());
    vars.insert("ENV_SECRET".into(), env_secret.clone());
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
    let text = substitute(&template, &source, &vars)?;
    let docs: Vec<Yaml> = YamlLoader::load_from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e} (after filling in placeholders)", source.display()))?
        .into_iter()
        .filter(|d| !d.is_null())
        .collect();
    let workload = workload(&docs, &source, name)?;

    let mut generated = Vec::new();
    let env = stack::env(config, stack, comp, Site::Cluster)?;
    if !env.is_empty() {
        let data: Hash = env.iter().map(|(k, v)| (s(k), s(v))).collect();
        generated.push(map(vec![
            ("apiVersion", s("v1")),
            ("kind", s("Secret")),
            (
                "metadata",
                map(vec![
                    ("name", s(&env_secret)),
                    ("namespace", s(namespace)),
                    ("labels", labels_yaml(labels)),
                ]),
            ),
            ("type", s("Opaque")),
            ("stringData", Yaml::Hash(data)),
        ]));
    }
    if let (Workload::Deployment { selector, .. }, Some(main)) = (&workload, comp.port) {
        if selector.get("app").map(String::as_str) != Some(name) {
            bail!(
                "{}: the Deployment's pods must carry the label `app: {name}` (its generated \
                 Service selects them by it)",
                source.display()
            );
        }
        let mut ports = vec![(
            String::from("main"),
            main,
            node_ports
                .get(&PortRef {
                    component: name.into(),
                    port: None,
                })
                .copied(),
        )];
        for (k, p) in &comp.extra_ports {
            ports.push((
                k.clone(),
                *p,
                node_ports
                    .get(&PortRef {
                        component: name.into(),
                        port: Some(k.clone()),
                    })
                    .copied(),
            ));
        }
        let node_port = ports.iter().any(|p| p.2.is_some());
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
        generated.push(map(vec![
            ("apiVersion", s("v1")),
            ("kind", s("Service")),
            (
                "metadata",
                map(vec![
                    ("name", s(name)),
                    ("namespace", s(namespace)),
                    ("labels", labels_yaml(labels)),
                ]),
            ),
            (
                "spec",
                map(vec![
                    ("type", s(if node_port { "NodePort" } else { "ClusterIP" })),
                    ("selector", map(vec![("app", s(name))])),
                    ("ports", Yaml::Array(port_docs)),
                ]),
            ),
        ]));
    }
    let mut out = String::new();
    for g in &generated {
        out.push_str(&emit(g));
        out.push('\n');
    }
    out.push_str(&format!("--- # {}\n", source.display()));
    out.push_str(text.trim_start_matches("---").trim_start());
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

/// One image reference found in the manifests, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageUse {
    pub source: PathBuf,
    pub object: String,
    pub field: String,
    pub image: String,
    pub pull_policy: Option<String>,
}

/// Every container image field of every pod spec in `docs`.
pub fn image_uses(source: &Path, docs: &[Yaml]) -> Vec<ImageUse> {
    let mut out = Vec::new();
    for d in docs {
        let kind = d["kind"].as_str().unwrap_or("?");
        let object = format!("{kind}/{}", d["metadata"]["name"].as_str().unwrap_or("?"));
        let (spec, path) = match kind {
            "Pod" => (&d["spec"], "spec"),
            "CronJob" => (
                &d["spec"]["jobTemplate"]["spec"]["template"]["spec"],
                "spec.jobTemplate.spec.template.spec",
            ),
            _ => (&d["spec"]["template"]["spec"], "spec.template.spec"),
        };
        for list in ["initContainers", "containers", "ephemeralContainers"] {
            if let Some(cs) = spec[list].as_vec() {
                for (i, c) in cs.iter().enumerate() {
                    out.push(ImageUse {
                        source: source.to_path_buf(),
                        object: object.clone(),
                        field: format!("{path}.{list}[{i}]"),
                        image: c["image"].as_str().unwrap_or_default().to_string(),
                        pull_policy: c["imagePullPolicy"].as_str().map(str::to_string),
                    });
                }
            }
        }
    }
    out
}

/// The Phase 0 check: every problem with the images the manifests reference.
pub fn check_images(uses: &[ImageUse], built: &BTreeSet<String>) -> Vec<String> {
    let mut problems = Vec::new();
    for u in uses {
        let at = format!("{}: {} {}", u.source.display(), u.object, u.field);
        let img = &u.image;
        if img.is_empty() {
            problems.push(format!("{at}.image is missing"));
            continue;
        }
        if !built.contains(img) {
            problems.push(format!(
                "{at}.image `{img}` was not built by this run (it built: {}); use `${{IMAGE}}`",
                built.iter().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        if !img.starts_with("localhost/") {
            problems.push(format!(
                "{at}.image `{img}` lacks `localhost/`: kind would look for it in a registry"
            ));
        }
        let last = img.rsplit('/').next().unwrap_or(img);
        if !last.contains(':') || img.ends_with(":latest") {
            problems.push(format!(
                "{at}.image `{img}` is `:latest` or untagged: kind would pull it"
            ));
        }
        match u.pull_policy.as_deref() {
            Some("Never") => {}
            Some(p) => problems.push(format!("{at}.imagePullPolicy is `{p}`; it must be `Never` (the image is loaded, not pulled)")),
            None => problems.push(format!("{at}.imagePullPolicy is not set; set it to `Never`")),
        }
    }
    problems
}

/// YAML to JSON (tests compare objects as JSON).
#[cfg(test)]
pub fn to_json(y: &Yaml) -> serde_json::Value {
    use serde_json::Value;
    match y {
        Yaml::Real(r) => r
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Null, Value::Number),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Array(a) => Value::Array(a.iter().map(to_json).collect()),
        Yaml::Hash(h) => Value::Object(
            h.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Yaml::String(s) => s.clone(),
                        Yaml::Integer(i) => i.to_string(),
                        other => format!("{other:?}"),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Yaml::Alias(_) | Yaml::Null | Yaml::BadValue => Value::Null,
    }
}

fn string_map(y: &Yaml) -> BTreeMap<String, String> {
    y.as_hash()
        .map(|h| {
            h.iter()
                .filter_map(|(k, v)| {
                    let v = match v {
                        Yaml::String(s) => s.clone(),
                        Yaml::Integer(i) => i.to_string(),
                        Yaml::Boolean(b) => b.to_string(),
                        _ => return None,
                    };
                    Some((k.as_str()?.to_string(), v))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn s(v: &str) -> Yaml {
    Yaml::String(v.to_string())
}

fn map(pairs: Vec<(&str, Yaml)>) -> Yaml {
    Yaml::Hash(pairs.into_iter().map(|(k, v)| (s(k), v)).collect())
}

fn labels_yaml(labels: &BTreeMap<String, String>) -> Yaml {
    Yaml::Hash(
        labels
            .iter()
            .map(|(k, v)| (s(k), s(&label_value(v))))
            .collect(),
    )
}

/// One YAML document, starting with `---`.
pub fn emit(doc: &Yaml) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = YamlEmitter::new(&mut out).dump(doc);
    out.push('\n');
    out
}

#[cfg(test)]
mod tests;
