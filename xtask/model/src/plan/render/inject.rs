//! `infra.toml`'s `command`, `args` and `mounts` of a component, put into its workload: the
//! first container's `command`/`args`, and the mounted files in a generated ConfigMap
//! `<name>-files` mounted read-only at each target (files by `subPath`, folders as a folder of
//! their files). `infra.toml` wins over what the template says.

use std::path::Path;

use anyhow::{bail, Context, Result};
use yaml_rust2::yaml::Yaml;

use super::yaml::{labels_yaml, map, s};
use super::{Files, Target};
use crate::config::{Component, Config};

/// One mounted file: its ConfigMap key, text, and path inside the volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountedFile {
    pub key: String,
    pub text: String,
    /// `m<i>` for a mounted file, `m<i>/<name>` for a file of a mounted folder.
    pub path: String,
}

/// The files of the component's `mounts`, read through `files`.
pub fn mounted_files(
    config: &Config,
    c: &Component,
    files: &dyn Files,
) -> Result<Vec<MountedFile>> {
    let mut out = Vec::new();
    for (i, m) in c.mounts.iter().enumerate() {
        let src = config.root.join(&m.source);
        let read = |p: &Path| {
            files.read(p).with_context(|| {
                format!(
                    "{}: mounts `{}` of an E2E run are put into a ConfigMap, so they must be \
                     text files",
                    c.name,
                    p.display()
                )
            })
        };
        if m.dir {
            for name in files.list(&src)? {
                out.push(MountedFile {
                    key: format!("m{i}-{name}"),
                    text: read(&src.join(&name))?,
                    path: format!("m{i}/{name}"),
                });
            }
        } else {
            out.push(MountedFile {
                key: format!("m{i}"),
                text: read(&src)?,
                path: format!("m{i}"),
            });
        }
    }
    Ok(out)
}

/// The `<name>-files` ConfigMap, when the component mounts anything.
pub fn config_map(c: &Component, mounted: &[MountedFile], t: &Target) -> Option<Yaml> {
    if mounted.is_empty() {
        return None;
    }
    let data = mounted.iter().map(|f| (s(&f.key), s(&f.text))).collect();
    Some(map(vec![
        ("apiVersion", s("v1")),
        ("kind", s("ConfigMap")),
        (
            "metadata",
            map(vec![
                ("name", s(&format!("{}-files", c.name))),
                ("namespace", s(t.namespace)),
                ("labels", labels_yaml(t.labels)),
            ]),
        ),
        ("data", Yaml::Hash(data)),
    ]))
}

/// Puts `command`, `args` and the mounts into the workload's first container; true when
/// anything was put in.
pub fn into_workload(
    docs: &mut [Yaml],
    c: &Component,
    mounted: &[MountedFile],
    source: &Path,
) -> Result<bool> {
    let long_running_args = !c.is_job() && !c.args.is_empty();
    if c.command.is_empty() && !long_running_args && c.mounts.is_empty() {
        return Ok(false);
    }
    let Some(pod) = docs.iter_mut().find_map(pod_spec) else {
        bail!(
            "{}: no pod template to put {}'s command, args or mounts into",
            source.display(),
            c.name
        );
    };
    let strings = |v: &[String]| Yaml::Array(v.iter().map(|a| s(a)).collect());
    let volumes = volumes(c, mounted);
    let Some(container) = first_container(pod) else {
        bail!("{}: the workload has no containers", source.display());
    };
    if !c.command.is_empty() {
        insert(container, "command", strings(&c.command));
    }
    if long_running_args {
        insert(container, "args", strings(&c.args));
    }
    if let Some((volume, mounts)) = volumes {
        push_all(container, "volumeMounts", mounts);
        push_all(pod, "volumes", vec![volume]);
    }
    Ok(true)
}

/// The volume of the component's ConfigMap and one read-only mount per `mounts` entry.
fn volumes(c: &Component, mounted: &[MountedFile]) -> Option<(Yaml, Vec<Yaml>)> {
    if c.mounts.is_empty() {
        return None;
    }
    let items = mounted
        .iter()
        .map(|f| map(vec![("key", s(&f.key)), ("path", s(&f.path))]))
        .collect();
    let volume = map(vec![
        ("name", s("xtask-files")),
        (
            "configMap",
            map(vec![
                ("name", s(&format!("{}-files", c.name))),
                ("items", Yaml::Array(items)),
            ]),
        ),
    ]);
    let mounts = c
        .mounts
        .iter()
        .enumerate()
        .map(|(i, m)| {
            map(vec![
                ("name", s("xtask-files")),
                ("mountPath", s(&m.target)),
                ("subPath", s(&format!("m{i}"))),
                ("readOnly", Yaml::Boolean(true)),
            ])
        })
        .collect();
    Some((volume, mounts))
}

/// Gives every container running `image` the pull policy `policy`; true when one changed.
pub fn pull_policy(docs: &mut [Yaml], image: &str, policy: &str) -> bool {
    let mut changed = false;
    for doc in docs.iter_mut() {
        let Some(pod) = pod_spec(doc) else { continue };
        let Some(Yaml::Array(containers)) = get_mut(pod, "containers") else {
            continue;
        };
        for c in containers
            .iter_mut()
            .filter(|c| c["image"].as_str() == Some(image))
        {
            insert(c, "imagePullPolicy", s(policy));
            changed = true;
        }
    }
    changed
}

fn pod_spec(doc: &mut Yaml) -> Option<&mut Yaml> {
    let kind = doc["kind"].as_str()?.to_string();
    if kind != "Deployment" && kind != "Job" {
        return None;
    }
    let spec = get_mut(doc, "spec")?;
    let template = get_mut(spec, "template")?;
    get_mut(template, "spec")
}

fn first_container(pod: &mut Yaml) -> Option<&mut Yaml> {
    match get_mut(pod, "containers")? {
        Yaml::Array(a) => a.first_mut(),
        _ => None,
    }
}

fn get_mut<'a>(y: &'a mut Yaml, key: &str) -> Option<&'a mut Yaml> {
    match y {
        Yaml::Hash(h) => h.get_mut(&s(key)),
        _ => None,
    }
}

fn insert(y: &mut Yaml, key: &str, value: Yaml) {
    if let Yaml::Hash(h) = y {
        h.insert(s(key), value);
    }
}

/// Appends to the list at `key`, creating it.
fn push_all(y: &mut Yaml, key: &str, items: Vec<Yaml>) {
    if let Yaml::Hash(h) = y {
        let list = h.entry(s(key)).or_insert(Yaml::Array(Vec::new()));
        if let Yaml::Array(a) = list {
            a.extend(items);
        }
    }
}
