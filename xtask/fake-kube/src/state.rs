//! On-disk state under `$FAKE_KUBE_STATE`: clusters, API objects, locks, the call log, kubeconfigs.
//!
//! Layout: `calls.jsonl`, `locks/<cluster>.lock`, `clusters/<name>/{cluster.json, objects.json,
//! pod-errors.json, volumes/}`. Files are replaced atomically; mutations hold the cluster's lock.

use crate::util::{write_atomic, Fail, Res};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Label put on every podman resource the fakes create.
pub const CLUSTER_LABEL: &str = "io.kubernaut.fake-kube.cluster";
/// The fake API server address written into kubeconfigs.
pub const SERVER: &str = "https://127.0.0.1:6443";

pub fn root() -> Res<PathBuf> {
    let dir = std::env::var_os("FAKE_KUBE_STATE")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            Fail::new("fake-kube: FAKE_KUBE_STATE is not set (a directory for the fake cluster state and the call log)")
        })?;
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir)
        .map_err(|e| Fail::new(format!("fake-kube: FAKE_KUBE_STATE={}: {e}", dir.display())))?;
    Ok(dir)
}

pub fn cluster_dir(name: &str) -> Res<PathBuf> {
    Ok(root()?.join("clusters").join(name))
}

/// Appends one line to the call log with a single write (O_APPEND keeps concurrent lines whole).
pub fn append_call_log(line: &str) -> std::io::Result<()> {
    let path = root()
        .map_err(|f| std::io::Error::other(f.msg))?
        .join("calls.jsonl");
    let mut f = OpenOptions::new().create(true).append(true).open(path)?;
    f.write_all(format!("{line}\n").as_bytes())
}

/// An exclusive lock on one cluster's state, released on drop.
pub struct Lock(#[allow(dead_code)] File);

pub fn lock(name: &str) -> Res<Lock> {
    let path = root()?.join("locks").join(format!("{name}.lock"));
    let io = |e: std::io::Error| Fail::new(format!("fake-kube: lock {}: {e}", path.display()));
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new("."))).map_err(io)?;
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io)?;
    f.lock().map_err(io)?;
    Ok(Lock(f))
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PortMapping {
    pub container_port: u16,
    pub host_port: u16,
    pub listen_address: String,
    pub protocol: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct LoadedImage {
    /// Exactly as the archive named it (e.g. `localhost/x:tag`).
    pub reference: String,
    /// The image config digest or file name from the archive.
    pub id: String,
    pub archive: String,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct Cluster {
    pub name: String,
    pub config_yaml: String,
    pub node_labels: BTreeMap<String, String>,
    pub port_mappings: Vec<PortMapping>,
    pub images: Vec<LoadedImage>,
    pub created: i64,
    pub kubeconfig: String,
}

impl Cluster {
    pub fn network(&self) -> String {
        network_name(&self.name)
    }
    pub fn node_name(&self) -> String {
        format!("{}-control-plane", self.name)
    }
}

pub fn network_name(cluster: &str) -> String {
    format!("kindfake-{cluster}")
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Res<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Fail::new(format!(
                "fake-kube: corrupt state file {}: {e}",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Fail::new(format!(
            "fake-kube: read {}: {e}",
            path.display()
        ))),
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Res<()> {
    let text = serde_json::to_vec_pretty(value)
        .map_err(|e| Fail::new(format!("fake-kube: encode state: {e}")))?;
    write_atomic(path, &text)
}

pub fn load_cluster(name: &str) -> Res<Option<Cluster>> {
    read_json(&cluster_dir(name)?.join("cluster.json"))
}

pub fn save_cluster(c: &Cluster) -> Res<()> {
    write_json(&cluster_dir(&c.name)?.join("cluster.json"), c)
}

pub fn list_clusters() -> Res<Vec<String>> {
    let dir = root()?.join("clusters");
    let mut names: Vec<String> = match std::fs::read_dir(&dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("cluster.json").is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    Ok(names)
}

/// API objects of a cluster, keyed `namespace/Kind/name` (cluster-scoped objects: empty namespace).
pub type Objects = BTreeMap<String, Value>;

pub fn object_key(ns: &str, kind: &str, name: &str) -> String {
    format!("{ns}/{kind}/{name}")
}

pub fn load_objects(cluster: &str) -> Res<Objects> {
    Ok(read_json(&cluster_dir(cluster)?.join("objects.json"))?.unwrap_or_default())
}

pub fn save_objects(cluster: &str, objects: &Objects) -> Res<()> {
    write_json(&cluster_dir(cluster)?.join("objects.json"), objects)
}

/// Why a pod has no container (podman refused to start it), keyed `namespace/pod`.
pub fn load_pod_errors(cluster: &str) -> Res<BTreeMap<String, String>> {
    Ok(read_json(&cluster_dir(cluster)?.join("pod-errors.json"))?.unwrap_or_default())
}

pub fn save_pod_errors(cluster: &str, errors: &BTreeMap<String, String>) -> Res<()> {
    write_json(&cluster_dir(cluster)?.join("pod-errors.json"), errors)
}

/// Restarts done by the fake kubelet for one container (podman itself restarts nothing).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq)]
pub struct RestartRec {
    pub count: i64,
    /// Exit code of the run before the latest restart.
    pub last_exit: i64,
}

/// Restart records keyed by podman container id.
pub fn load_restarts(cluster: &str) -> Res<BTreeMap<String, RestartRec>> {
    Ok(read_json(&cluster_dir(cluster)?.join("restarts.json"))?.unwrap_or_default())
}

pub fn save_restarts(cluster: &str, recs: &BTreeMap<String, RestartRec>) -> Res<()> {
    write_json(&cluster_dir(cluster)?.join("restarts.json"), recs)
}

/// Objects of one kind in one namespace (`None`: all namespaces), in key order.
pub fn objects_of<'a>(
    objects: &'a Objects,
    kind: &'a str,
    ns: Option<&'a str>,
) -> impl Iterator<Item = &'a Value> + 'a {
    objects
        .iter()
        .filter(move |(k, _)| {
            let mut parts = k.splitn(3, '/');
            let (o_ns, o_kind) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            o_kind == kind && ns.is_none_or(|n| n == o_ns)
        })
        .map(|(_, v)| v)
}

/// Namespaces that exist in every cluster.
pub const BUILTIN_NAMESPACES: [&str; 4] =
    ["default", "kube-node-lease", "kube-public", "kube-system"];

pub fn namespace_exists(objects: &Objects, ns: &str) -> bool {
    BUILTIN_NAMESPACES.contains(&ns) || objects.contains_key(&object_key("", "Namespace", ns))
}

// ---- kubeconfig ----

/// The kubeconfig file to use: explicit flag, else the first entry of `$KUBECONFIG`, else
/// `~/.kube/config`.
pub fn kubeconfig_path(explicit: Option<&str>) -> PathBuf {
    if let Some(p) = explicit.filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    if let Some(first) = std::env::var("KUBECONFIG")
        .ok()
        .and_then(|v| v.split(':').find(|s| !s.is_empty()).map(String::from))
    {
        return PathBuf::from(first);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".kube").join("config")
}

/// From kubeconfig text: the server URL and the kind cluster name of `context` (or of the
/// current context). A context whose cluster is not `kind-<name>` gives no cluster name.
pub fn kubeconfig_target(text: &str, context: Option<&str>) -> Option<(String, Option<String>)> {
    let doc = crate::yaml::parse_docs(text).ok()?.into_iter().next()?;
    let ctx_name = context
        .map(String::from)
        .or_else(|| doc["current-context"].as_str().map(String::from))?;
    let find = |list: &str, name: &str| -> Option<Value> {
        doc[list]
            .as_array()?
            .iter()
            .find(|e| e["name"].as_str() == Some(name))
            .cloned()
    };
    let ctx = find("contexts", &ctx_name)?;
    let cluster_name = ctx["context"]["cluster"].as_str()?.to_string();
    let server = find("clusters", &cluster_name)
        .and_then(|c| c["cluster"]["server"].as_str().map(String::from))
        .unwrap_or_else(|| SERVER.into());
    Some((server, cluster_name.strip_prefix("kind-").map(String::from)))
}

fn upsert(list: &mut Value, entry: Value) {
    if !list.is_array() {
        *list = json!([]);
    }
    let arr = list.as_array_mut().expect("array");
    arr.retain(|e| e["name"] != entry["name"]);
    arr.push(entry);
}

/// Kubeconfig text with the kind cluster `name` added (merging into `existing`) and made current,
/// the way `kind create cluster` does it.
pub fn kubeconfig_with(existing: Option<&str>, name: &str) -> String {
    let mut doc = existing
        .and_then(|t| crate::yaml::parse_docs(t).ok())
        .and_then(|d| d.into_iter().next())
        .filter(Value::is_object)
        .unwrap_or_else(|| json!({"apiVersion": "v1", "kind": "Config", "preferences": {}}));
    let id = format!("kind-{name}");
    upsert(
        &mut doc["clusters"],
        json!({"name": id, "cluster": {"server": SERVER, "insecure-skip-tls-verify": true}}),
    );
    upsert(
        &mut doc["contexts"],
        json!({"name": id, "context": {"cluster": id, "user": id}}),
    );
    upsert(
        &mut doc["users"],
        json!({"name": id, "user": {"token": format!("fake-kube-token-{name}")}}),
    );
    doc["current-context"] = json!(id);
    crate::yaml::emit(&doc)
}

/// Kubeconfig text without the kind cluster `name` (as `kind delete cluster` leaves it), or None
/// when it did not mention the cluster.
pub fn kubeconfig_without(existing: &str, name: &str) -> Option<String> {
    let mut doc = crate::yaml::parse_docs(existing).ok()?.into_iter().next()?;
    let id = format!("kind-{name}");
    let mut changed = false;
    for list in ["clusters", "contexts", "users"] {
        if let Some(arr) = doc[list].as_array_mut() {
            let before = arr.len();
            arr.retain(|e| e["name"].as_str() != Some(id.as_str()));
            changed |= arr.len() != before;
        }
    }
    if doc["current-context"].as_str() == Some(id.as_str()) {
        doc["current-context"] = json!("");
        changed = true;
    }
    changed.then(|| crate::yaml::emit(&doc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_create_merge_and_remove() {
        let first = kubeconfig_with(None, "alpha");
        assert_eq!(
            kubeconfig_target(&first, None),
            Some((SERVER.into(), Some("alpha".into())))
        );
        let both = kubeconfig_with(Some(&first), "beta");
        assert_eq!(
            kubeconfig_target(&both, None).unwrap().1.as_deref(),
            Some("beta")
        );
        assert_eq!(
            kubeconfig_target(&both, Some("kind-alpha"))
                .unwrap()
                .1
                .as_deref(),
            Some("alpha")
        );
        assert_eq!(kubeconfig_target(&both, Some("kind-gamma")), None);
        let without = kubeconfig_without(&both, "beta").unwrap();
        assert_eq!(
            kubeconfig_target(&without, None),
            None,
            "current context cleared"
        );
        assert_eq!(
            kubeconfig_target(&without, Some("kind-alpha"))
                .unwrap()
                .1
                .as_deref(),
            Some("alpha")
        );
        assert!(kubeconfig_without(&without, "beta").is_none());
        // Re-creating does not duplicate entries.
        let again = kubeconfig_with(Some(&both), "beta");
        let doc = &crate::yaml::parse_docs(&again).unwrap()[0];
        assert_eq!(doc["clusters"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn kubeconfig_foreign_context() {
        let text = "apiVersion: v1\nkind: Config\ncurrent-context: prod\ncontexts:\n- name: prod\n  context: {cluster: gke-prod, user: me}\n\
                    clusters:\n- name: gke-prod\n  cluster: {server: 'https://10.0.0.1'}\n";
        assert_eq!(
            kubeconfig_target(text, None),
            Some(("https://10.0.0.1".into(), None))
        );
    }

    #[test]
    fn object_filtering() {
        let mut o = Objects::new();
        o.insert(object_key("a", "Pod", "x"), json!(1));
        o.insert(object_key("b", "Pod", "y"), json!(2));
        o.insert(object_key("", "Namespace", "a"), json!(3));
        assert_eq!(objects_of(&o, "Pod", None).count(), 2);
        assert_eq!(objects_of(&o, "Pod", Some("b")).next(), Some(&json!(2)));
        assert!(
            namespace_exists(&o, "a")
                && namespace_exists(&o, "default")
                && !namespace_exists(&o, "b")
        );
    }
}
