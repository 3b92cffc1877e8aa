//! The kind config of a run and the Namespace: small documents made from data.

use std::collections::BTreeMap;

use yaml_rust2::yaml::{Hash, Yaml};

use super::yaml::{emit, labels_yaml, map, s};

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
    annotated_namespace_doc(namespace, labels, &BTreeMap::new())
}

/// A Namespace with annotations too (values kept as they are, unlike label values).
pub fn annotated_namespace_doc(
    namespace: &str,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> String {
    emit(&map(vec![
        ("apiVersion", s("v1")),
        ("kind", s("Namespace")),
        ("metadata", metadata(namespace, None, labels, annotations)),
    ]))
}

/// A ConfigMap of string data.
pub fn configmap_doc(
    name: &str,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
    data: &BTreeMap<String, String>,
) -> String {
    emit(&map(vec![
        ("apiVersion", s("v1")),
        ("kind", s("ConfigMap")),
        (
            "metadata",
            metadata(name, Some(namespace), labels, annotations),
        ),
        (
            "data",
            Yaml::Hash(data.iter().map(|(k, v)| (s(k), s(v))).collect()),
        ),
    ]))
}

fn metadata(
    name: &str,
    namespace: Option<&str>,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> Yaml {
    let mut m = vec![("name", s(name))];
    if let Some(ns) = namespace {
        m.push(("namespace", s(ns)));
    }
    m.push(("labels", labels_yaml(labels)));
    if !annotations.is_empty() {
        m.push((
            "annotations",
            Yaml::Hash(annotations.iter().map(|(k, v)| (s(k), s(v))).collect()),
        ));
    }
    map(m)
}

/// The kind config of a kept cluster: one control-plane node with our labels, and containerd
/// told that `localhost:<port>` (the registry as this host sees it) is the registry container
/// on the kind network (the kind local-registry pattern).
pub fn kept_kind_config(
    cluster: &str,
    labels: &BTreeMap<String, String>,
    port: u16,
    registry: &str,
) -> String {
    let mut node = Hash::new();
    node.insert(s("role"), s("control-plane"));
    let l: Hash = labels
        .iter()
        .map(|(k, v)| (s(k), s(&label_value(v))))
        .collect();
    node.insert(s("labels"), Yaml::Hash(l));
    let patch = format!(
        "[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"localhost:{port}\"]\n  endpoint = [\"http://{registry}:5000\"]\n"
    );
    let doc = map(vec![
        ("kind", s("Cluster")),
        ("apiVersion", s("kind.x-k8s.io/v1alpha4")),
        ("name", s(cluster)),
        ("containerdConfigPatches", Yaml::Array(vec![s(&patch)])),
        ("nodes", Yaml::Array(vec![Yaml::Hash(node)])),
    ]);
    format!(
        "# kept kind cluster with a local registry, rendered by cargo xtask\n{}",
        emit(&doc)
    )
}

/// The `local-registry-hosting` ConfigMap (KEP-1755) telling tools where the registry is.
pub fn registry_hosting(port: u16) -> String {
    let data = format!("host: \"localhost:{port}\"\nhelp: \"https://kind.sigs.k8s.io/docs/user/local-registry/\"\n");
    emit(&map(vec![
        ("apiVersion", s("v1")),
        ("kind", s("ConfigMap")),
        (
            "metadata",
            map(vec![
                ("name", s("local-registry-hosting")),
                ("namespace", s("kube-public")),
            ]),
        ),
        ("data", map(vec![("localRegistryHosting.v1", s(&data))])),
    ]))
}
