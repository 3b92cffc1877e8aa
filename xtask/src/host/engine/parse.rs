//! Reading what the engines print: `inspect` JSON (podman's and docker's field names), and
//! docker's human-readable sizes.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde_json::Value;

use super::{ContainerInfo, ImageInfo};
use crate::exec::process::Output;

pub(super) fn parse_json_array(out: &Output) -> Result<Vec<Value>> {
    if !out.success() && out.stdout.trim().is_empty() {
        anyhow::bail!("{}", out.tail(5));
    }
    let v: Value = serde_json::from_str(out.stdout.trim()).context("the engine's JSON output")?;
    Ok(match v {
        Value::Array(a) => a,
        Value::Null => Vec::new(),
        other => vec![other],
    })
}

pub(super) fn str_field(v: &Value, keys: &[&str]) -> String {
    keys.iter()
        .find_map(|k| v.get(*k).and_then(Value::as_str))
        .unwrap_or_default()
        .to_string()
}

pub(super) fn labels_at(v: &Value, paths: &[&[&str]]) -> BTreeMap<String, String> {
    for path in paths {
        let mut cur = v;
        let mut ok = true;
        for k in *path {
            match cur.get(*k) {
                Some(x) => cur = x,
                None => {
                    ok = false;
                    break;
                }
            }
        }
        if let (true, Some(obj)) = (ok, cur.as_object()) {
            return obj
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect();
        }
    }
    BTreeMap::new()
}

pub fn parse_container(v: &Value) -> ContainerInfo {
    let mut host_ports = Vec::new();
    if let Some(b) = v
        .pointer("/HostConfig/PortBindings")
        .and_then(Value::as_object)
    {
        for binds in b.values() {
            for bind in binds.as_array().into_iter().flatten() {
                if let Some(p) = bind
                    .get("HostPort")
                    .and_then(Value::as_str)
                    .and_then(|p| p.parse().ok())
                {
                    host_ports.push(p);
                }
            }
        }
    }
    host_ports.sort_unstable();
    host_ports.dedup();
    ContainerInfo {
        id: str_field(v, &["Id", "ID"]),
        name: str_field(v, &["Name"]).trim_start_matches('/').to_string(),
        labels: labels_at(v, &[&["Config", "Labels"], &["Labels"]]),
        running: v
            .pointer("/State/Running")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        status: v
            .pointer("/State/Status")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string(),
        host_ports,
        image: image_reference(v),
    }
}

pub fn parse_image(v: &Value) -> ImageInfo {
    let labels = labels_at(v, &[&["Config", "Labels"], &["Labels"]]);
    let created = labels
        .get(crate::plan::labels::CREATED)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    ImageInfo {
        id: str_field(v, &["Id", "ID"])
            .trim_start_matches("sha256:")
            .to_string(),
        tags: v
            .get("RepoTags")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .filter(|t| !t.contains("<none>"))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        labels,
        size: v.get("Size").and_then(Value::as_u64).unwrap_or(0),
        created,
        parent: str_field(v, &["Parent"])
            .trim_start_matches("sha256:")
            .to_string(),
    }
}

/// The image a container was started from, as a reference where the engine keeps one:
/// podman's `ImageName`; docker's `Config.Image` (its `Image` is the id); else the id.
fn image_reference(v: &Value) -> String {
    let reference = str_field(v, &["ImageName"]);
    if !reference.is_empty() {
        return reference;
    }
    v.pointer("/Config/Image")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
        .map_or_else(|| str_field(v, &["Image"]), str::to_string)
}

/// Bytes of a size as docker prints it (`system df`): decimal units, like `657.3MB`, `0B`,
/// `1.2kB`, `2.01GB`, optionally followed by more (` (81%)`). `None` if it is not one.
pub fn parse_human_size(text: &str) -> Option<u64> {
    let word = text.split_whitespace().next()?;
    let split = word.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = word.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match unit {
        "B" => 1e0,
        "kB" | "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        "PB" => 1e15,
        _ => return None,
    };
    Some((number * scale).round() as u64)
}

/// What a many-reference `image inspect --format {{.Id}}` says exists: a reference its error
/// output names is missing, the others exist; `None` unless one id per existing reference was
/// printed (then the answer is not trusted).
pub fn existing(
    references: &[String],
    stdout: &str,
    stderr: &str,
) -> Option<BTreeMap<String, bool>> {
    // The reference as a word: `docker.io/library/redis:7` missing says nothing of `redis:7`.
    let missing = |r: &str| {
        stderr
            .lines()
            .any(|l| l.contains(&format!(" {r}:")) || l.trim_end().ends_with(&format!(" {r}")))
    };
    let found: BTreeMap<String, bool> = references
        .iter()
        .map(|r| (r.clone(), !missing(r)))
        .collect();
    let ids = stdout.lines().filter(|l| !l.trim().is_empty()).count();
    (ids == found.values().filter(|e| **e).count()).then_some(found)
}
