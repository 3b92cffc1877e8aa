//! State under `$FAKE_KUBE_STATE`: `calls.jsonl`, and per cluster one file,
//! `clusters/<name>/cluster.json` (its kind config, loaded images, applied objects, restarts),
//! replaced atomically while `locks/<name>.lock` is held. Also the kubeconfig files kind writes,
//! and YAML input (kubectl reads YAML or JSON).

use crate::{Fail, Res};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use yaml_rust2::{Yaml, YamlLoader};

/// The label on every podman resource the fake creates.
pub const CLUSTER_LABEL: &str = "io.kubernaut.fake-kube.cluster";

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PortMapping {
    pub container_port: u16,
    pub host_port: u16,
    pub listen_address: String,
}

/// What the fake kubelet did to one exited container.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq)]
pub struct Restart {
    pub count: u32,
    /// Exit code of the run before the latest restart.
    pub last_exit: i64,
    /// When the fake first saw the current run exited (0: it is not known to have exited).
    pub exited_seen_ms: u64,
}

/// The last pull of one image (as a pod names it) for this cluster's node.
#[derive(Serialize, Deserialize, Debug, Clone, Default, PartialEq)]
pub struct Pull {
    pub ok: bool,
    /// Failed pulls in a row (the back-off grows with them).
    pub failures: u32,
    /// When the last pull was tried (the start of the call that tried it).
    pub at_ms: u64,
    /// Why it failed.
    pub message: String,
    /// The image id the pull added to podman storage (removed with the cluster).
    pub new_id: Option<String>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default)]
#[serde(default)]
pub struct Cluster {
    pub name: String,
    pub created_ms: u64,
    pub node_labels: BTreeMap<String, String>,
    pub ports: Vec<PortMapping>,
    /// The kind config's `containerdConfigPatches`, recorded (pulls go to the registry as the
    /// pod names it).
    pub containerd_patches: Vec<String>,
    /// Image names loaded with `kind load`, exactly as the archives or the command name them.
    pub images: Vec<String>,
    /// Docker image ids of the names loaded with `kind load docker-image`.
    pub docker_ids: BTreeMap<String, String>,
    /// The names of those that were not in podman storage before: `kind delete` takes them off.
    pub docker_added: BTreeSet<String>,
    /// Pulls by image as the pods name it.
    pub pulls: BTreeMap<String, Pull>,
    pub kubeconfig: PathBuf,
    /// Applied objects as sent (plus `metadata.creationTimestamp`), keyed `namespace/Kind/name`
    /// (cluster-scoped: no namespace).
    pub objects: BTreeMap<String, Value>,
    /// By podman container id.
    pub restarts: BTreeMap<String, Restart>,
}

impl Cluster {
    pub fn node(&self) -> String {
        format!("{}-control-plane", self.name)
    }

    pub fn object(&self, ns: &str, kind: &str, name: &str) -> Option<&Value> {
        self.objects.get(&key(ns, kind, name))
    }

    /// Objects of one kind in one namespace, in name order.
    pub fn objects_of<'a>(&'a self, kind: &'a str, ns: &'a str) -> impl Iterator<Item = &'a Value> {
        let prefix = format!("{ns}/{kind}/");
        self.objects
            .iter()
            .filter(move |(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| v)
    }
}

pub fn key(ns: &str, kind: &str, name: &str) -> String {
    format!("{ns}/{kind}/{name}")
}

/// The cluster's own network (its "node").
pub fn network(cluster: &str) -> String {
    format!("kindfake-{cluster}")
}

/// The network of one namespace's pods (`_` is in neither cluster names nor namespaces).
pub fn ns_network(cluster: &str, ns: &str) -> String {
    format!("kindfake-{cluster}_{ns}")
}

/// `2024-05-01T12:00:00Z` (as `metadata.creationTimestamp`).
pub fn rfc3339(ms: u64) -> String {
    let (days, secs) = ((ms / 1000 / 86400) as i64, ms / 1000 % 86400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let (era, doe) = (z.div_euclid(146_097), z.rem_euclid(146_097));
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let (d, m) = (
        doy - (153 * mp + 2) / 5 + 1,
        if mp < 10 { mp + 3 } else { mp - 9 },
    );
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (h, mi, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

pub fn root() -> Res<PathBuf> {
    let dir = std::env::var_os("FAKE_KUBE_STATE")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .ok_or_else(|| Fail("fake-kube: FAKE_KUBE_STATE is not set (a folder for the fake clusters and the call log)".into()))?;
    std::fs::create_dir_all(&dir)
        .map_err(|e| Fail(format!("fake-kube: FAKE_KUBE_STATE={}: {e}", dir.display())))?;
    Ok(dir)
}

fn dir(name: &str) -> Res<PathBuf> {
    Ok(root()?.join("clusters").join(name))
}

/// The folders of the cluster's pods' mounted files: `files/<namespace>_<pod>`.
pub fn files_root(cluster: &str) -> PathBuf {
    let files = dir(cluster).unwrap_or_default().join("files");
    std::path::absolute(&files).unwrap_or(files) // a relative source would name a podman volume
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Fail + '_ {
    move |e| Fail(format!("fake-kube: {}: {e}", path.display()))
}

/// One line to the call log, in a single append (concurrent calls do not interleave).
pub fn append_call(line: &str) -> Res<()> {
    let path = root()?.join("calls.jsonl");
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io(&path))?;
    f.write_all(format!("{line}\n").as_bytes())
        .map_err(io(&path))
}

/// An exclusive lock (released on drop) on one cluster, or on `_ports` (host ports of all).
pub struct Lock(#[allow(dead_code)] File);

pub fn lock(name: &str) -> Res<Lock> {
    let path = root()?.join("locks").join(format!("{name}.lock"));
    std::fs::create_dir_all(path.parent().unwrap_or(&path)).map_err(io(&path))?;
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io(&path))?;
    f.lock().map_err(io(&path))?;
    Ok(Lock(f))
}

/// Replaces a file atomically (a temporary file in the same folder, then rename).
pub fn write_atomic(path: &Path, data: &[u8]) -> Res<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let tmp = parent.join(format!(".fake-kube.{}.tmp", std::process::id()));
    std::fs::write(&tmp, data)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(io(path))
}

pub fn load(name: &str) -> Res<Option<Cluster>> {
    let path = dir(name)?.join("cluster.json");
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Fail(format!("fake-kube: corrupt {}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path)(e)),
    }
}

pub fn save(c: &Cluster) -> Res<()> {
    let text = serde_json::to_vec_pretty(c).unwrap_or_default();
    write_atomic(&dir(&c.name)?.join("cluster.json"), &text)
}

pub fn remove(name: &str) -> Res<()> {
    let d = dir(name)?;
    match std::fs::remove_dir_all(&d) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&d)(e)),
        _ => Ok(()),
    }
}

pub fn names() -> Res<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(root()?.join("clusters"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().join("cluster.json").is_file())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    Ok(names)
}

// ---- YAML ----

fn to_json(y: &Yaml) -> Value {
    match y {
        Yaml::Real(s) => s
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or_else(|| json!(s), Value::Number),
        Yaml::Integer(i) => json!(i),
        Yaml::String(s) => json!(s),
        Yaml::Boolean(b) => json!(b),
        Yaml::Array(a) => a.iter().map(to_json).collect(),
        Yaml::Hash(h) => h
            .iter()
            .map(|(k, v)| match to_json(k) {
                Value::String(k) => (k, to_json(v)),
                k => (k.to_string(), to_json(v)),
            })
            .collect(),
        _ => Value::Null,
    }
}

/// The documents of a YAML (or JSON) stream; empty ones are dropped.
pub fn parse_docs(text: &str) -> Result<Vec<Value>, String> {
    let docs = YamlLoader::load_from_str(text)
        .map_err(|e| format!("error converting YAML to JSON: yaml: {e}"))?;
    Ok(docs.iter().map(to_json).filter(|v| !v.is_null()).collect())
}

// ---- kubeconfig (written as JSON, which kubectl reads as YAML) ----

/// `--kubeconfig`, else the first entry of `$KUBECONFIG`, else `~/.kube/config`.
pub fn kubeconfig_path(flag: Option<&str>) -> PathBuf {
    let env = std::env::var("KUBECONFIG").unwrap_or_default();
    match flag.or(env.split(':').find(|s| !s.is_empty())) {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".kube/config"),
    }
}

fn read_kubeconfig(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    parse_docs(&text)
        .ok()
        .and_then(|d| d.into_iter().next())
        .filter(Value::is_object)
        .unwrap_or_else(empty_kubeconfig)
}

fn empty_kubeconfig() -> Value {
    json!({"apiVersion": "v1", "kind": "Config"})
}

fn write_kubeconfig(path: &Path, doc: &Value) -> Res<()> {
    write_atomic(
        path,
        serde_json::to_string_pretty(doc)
            .unwrap_or_default()
            .as_bytes(),
    )
}

/// The cluster (e.g. `kind-<name>`) of the context `context`, else of the current one: `Ok(None)`
/// without a current context, `Err(name)` when the context does not exist.
pub fn kubeconfig_cluster(path: &Path, context: Option<&str>) -> Result<Option<String>, String> {
    let doc = read_kubeconfig(path);
    let Some(name) = context.or(doc["current-context"].as_str().filter(|c| !c.is_empty())) else {
        return Ok(None);
    };
    let contexts = doc["contexts"].as_array().cloned().unwrap_or_default();
    match contexts.iter().find(|c| c["name"] == name) {
        Some(c) => Ok(c["context"]["cluster"].as_str().map(String::from)),
        None => Err(name.to_string()),
    }
}

/// The context names in a kubeconfig, sorted (`kubectl config get-contexts -o name`).
pub fn kubeconfig_contexts(path: &Path) -> Vec<String> {
    let doc = read_kubeconfig(path);
    let mut names: Vec<String> = doc["contexts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(String::from))
        .collect();
    names.sort();
    names
}

/// Adds the cluster `name` (context, cluster and user `kind-<name>`) and makes it current, as
/// `kind create cluster` does; `None` = only this cluster (`kind get kubeconfig`).
pub fn kubeconfig_add(path: Option<&Path>, name: &str) -> Res<Value> {
    let mut doc = path.map_or_else(empty_kubeconfig, read_kubeconfig);
    let id = format!("kind-{name}");
    for (list, entry) in [
        (
            "clusters",
            json!({"name": id, "cluster": {"server": "https://127.0.0.1:6443"}}),
        ),
        (
            "contexts",
            json!({"name": id, "context": {"cluster": id, "user": id}}),
        ),
        ("users", json!({"name": id, "user": {"token": "fake-kube"}})),
    ] {
        let mut items: Vec<Value> = doc[list].as_array().cloned().unwrap_or_default();
        items.retain(|e| e["name"] != id);
        items.push(entry);
        doc[list] = json!(items);
    }
    doc["current-context"] = json!(id);
    if let Some(p) = path {
        write_kubeconfig(p, &doc)?;
    }
    Ok(doc)
}

/// Removes the cluster `name` from a kubeconfig, as `kind delete cluster` does.
pub fn kubeconfig_remove(path: &Path, name: &str) -> Res<()> {
    if !path.is_file() {
        return Ok(());
    }
    let mut doc = read_kubeconfig(path);
    let id = format!("kind-{name}");
    let before = doc.clone();
    for list in ["clusters", "contexts", "users"] {
        if let Some(items) = doc[list].as_array_mut() {
            items.retain(|e| e["name"] != id);
        }
    }
    if doc["current-context"] == id {
        doc["current-context"] = json!("");
    }
    if doc == before {
        return Ok(());
    }
    write_kubeconfig(path, &doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_streams_and_scalars() {
        let docs = parse_docs(
            "a: 1\nb: 1.5\nc: true\nd: ~\ne: '8080'\n8: x\n---\n# empty\n---\n{\"k\": [1]}\n",
        )
        .unwrap();
        assert_eq!(
            docs,
            [
                json!({"a": 1, "b": 1.5, "c": true, "d": null, "e": "8080", "8": "x"}),
                json!({"k": [1]})
            ]
        );
        assert!(parse_docs("a: [1, 2\n")
            .unwrap_err()
            .starts_with("error converting YAML"));
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400_000 + 3_723_000), "2000-02-29T01:02:03Z");
        assert_eq!(rfc3339(1_767_225_599_000), "2025-12-31T23:59:59Z");
    }

    #[test]
    fn kubeconfig_add_switch_and_remove() {
        let path = std::env::temp_dir().join(format!("fake-kube-kc-{}", std::process::id()));
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\nusers: [{name: me, user: {}}]\n",
        )
        .unwrap();
        kubeconfig_add(Some(&path), "alpha").unwrap();
        kubeconfig_add(Some(&path), "beta").unwrap();
        kubeconfig_add(Some(&path), "beta").unwrap();
        assert_eq!(
            kubeconfig_cluster(&path, None),
            Ok(Some("kind-beta".into()))
        );
        assert_eq!(
            kubeconfig_cluster(&path, Some("kind-alpha")),
            Ok(Some("kind-alpha".into()))
        );
        assert_eq!(kubeconfig_cluster(&path, Some("x")), Err("x".into()));
        assert_eq!(kubeconfig_contexts(&path), ["kind-alpha", "kind-beta"]);
        let doc = read_kubeconfig(&path);
        assert_eq!(doc["contexts"].as_array().unwrap().len(), 2);
        assert_eq!(doc["users"][0]["name"], "me", "foreign entries are kept");
        kubeconfig_remove(&path, "beta").unwrap();
        assert_eq!(
            kubeconfig_cluster(&path, None),
            Ok(None),
            "current context cleared"
        );
        assert_eq!(read_kubeconfig(&path)["clusters"][0]["name"], "kind-alpha");
        let only = kubeconfig_add(None, "gamma").unwrap();
        assert_eq!(only["contexts"].as_array().unwrap().len(), 1);
        let _ = std::fs::remove_file(path);
    }
}
