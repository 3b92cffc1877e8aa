//! State under `$FAKE_KUBE_STATE`: `calls.jsonl`, and per cluster one file,
//! `clusters/<name>/cluster.json` (its kind config, loaded images, applied objects, restarts),
//! replaced atomically while `locks/<name>.lock` is held. Also the kubeconfig files kind writes,
//! and YAML input (kubectl reads YAML or JSON).

use crate::{Fail, Res};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
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

#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct Cluster {
    pub name: String,
    pub node_labels: BTreeMap<String, String>,
    pub ports: Vec<PortMapping>,
    /// Image names loaded with `kind load`, exactly as the archives name them.
    pub images: Vec<String>,
    pub kubeconfig: PathBuf,
    /// Applied objects as sent, keyed `namespace/Kind/name` (cluster-scoped: no namespace).
    pub objects: BTreeMap<String, Value>,
    /// By podman container id.
    pub restarts: BTreeMap<String, Restart>,
}

impl Cluster {
    pub fn network(&self) -> String {
        network(&self.name)
    }

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

pub fn network(cluster: &str) -> String {
    format!("kindfake-{cluster}")
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

/// The kind cluster the kubeconfig's current context names (`kind-<name>`).
pub fn kubeconfig_cluster(path: &Path) -> Option<String> {
    let doc = read_kubeconfig(path);
    let current = doc["current-context"].as_str()?;
    let ctx = doc["contexts"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == current)?;
    Some(
        ctx["context"]["cluster"]
            .as_str()?
            .strip_prefix("kind-")?
            .to_string(),
    )
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
        assert_eq!(kubeconfig_cluster(&path).as_deref(), Some("beta"));
        let doc = read_kubeconfig(&path);
        assert_eq!(doc["contexts"].as_array().unwrap().len(), 2);
        assert_eq!(doc["users"][0]["name"], "me", "foreign entries are kept");
        kubeconfig_remove(&path, "beta").unwrap();
        assert_eq!(kubeconfig_cluster(&path), None, "current context cleared");
        assert_eq!(read_kubeconfig(&path)["clusters"][0]["name"], "kind-alpha");
        let only = kubeconfig_add(None, "gamma").unwrap();
        assert_eq!(only["contexts"].as_array().unwrap().len(), 1);
        let _ = std::fs::remove_file(path);
    }
}
