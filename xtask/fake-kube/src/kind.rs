//! The fake `kind`: clusters are podman networks plus state files; nodes are not emulated.

use crate::state::{self, Cluster, LoadedImage, PortMapping, CLUSTER_LABEL};
use crate::util::{podman, podman_ok, Fail, Injections, Res};
use crate::{archive, argv, pods};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the fake needs from a kind config.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KindConfig {
    pub name: Option<String>,
    pub node_labels: BTreeMap<String, String>,
    pub port_mappings: Vec<PortMapping>,
}

const TOP_FIELDS: [&str; 11] = [
    "kind",
    "apiVersion",
    "name",
    "nodes",
    "networking",
    "featureGates",
    "runtimeConfig",
    "kubeadmConfigPatches",
    "kubeadmConfigPatchesJSON6902",
    "containerdConfigPatches",
    "containerdConfigPatchesJSON6902",
];
const NODE_FIELDS: [&str; 7] = [
    "role",
    "image",
    "labels",
    "extraPortMappings",
    "extraMounts",
    "kubeadmConfigPatches",
    "kubeadmConfigPatchesJSON6902",
];
const PORT_FIELDS: [&str; 4] = ["containerPort", "hostPort", "listenAddress", "protocol"];

fn strict(obj: &Value, allowed: &[&str]) -> Result<(), String> {
    for key in obj.as_object().into_iter().flat_map(|m| m.keys()) {
        if !allowed.contains(&key.as_str()) {
            return Err(format!(
                "unable to decode config: error unmarshaling JSON: while decoding JSON: json: unknown field \"{key}\""
            ));
        }
    }
    Ok(())
}

fn port_number(v: &Value, what: &str, node: usize, i: usize) -> Result<u16, String> {
    v.as_u64()
        .filter(|p| (1..=65535).contains(p))
        .map(|p| p as u16)
        .ok_or_else(|| {
            format!("invalid configuration for node {node}: extraPortMappings[{i}].{what}: invalid port number {v} (fake-kube needs 1-65535)")
        })
}

/// Parses and validates a kind config (v1alpha4). Errors read like kind's (without the
/// `ERROR: failed to create cluster: ` prefix). All nodes collapse into one: labels and port
/// mappings of every node are merged.
pub fn parse_config(text: &str) -> Result<KindConfig, String> {
    let doc = crate::yaml::parse_docs(text)?
        .into_iter()
        .next()
        .unwrap_or(Value::Null);
    let api = doc["apiVersion"].as_str().unwrap_or("");
    let kind = doc["kind"].as_str().unwrap_or("");
    if api != "kind.x-k8s.io/v1alpha4" {
        return Err(format!("unknown apiVersion: {api}"));
    }
    if kind != "Cluster" {
        return Err(format!("unknown kind {kind} for apiVersion: {api}"));
    }
    strict(&doc, &TOP_FIELDS)?;
    let mut cfg = KindConfig {
        name: doc["name"].as_str().map(String::from),
        ..Default::default()
    };
    let default_nodes = vec![json!({"role": "control-plane"})];
    let nodes = match &doc["nodes"] {
        Value::Null => &default_nodes,
        Value::Array(a) => a,
        _ => return Err("unable to decode config: nodes must be a list".into()),
    };
    if !nodes
        .iter()
        .any(|n| n["role"].as_str().unwrap_or("control-plane") == "control-plane")
    {
        return Err("invalid configuration: must have at least one control-plane node".into());
    }
    for (n, node) in nodes.iter().enumerate() {
        strict(node, &NODE_FIELDS)?;
        let role = node["role"].as_str().unwrap_or("control-plane");
        if role != "control-plane" && role != "worker" {
            return Err(format!(
                "invalid configuration for node {n}: unknown role \"{role}\""
            ));
        }
        for (k, v) in node["labels"].as_object().into_iter().flatten() {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            cfg.node_labels.insert(k.clone(), v);
        }
        for (i, pm) in node["extraPortMappings"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            strict(pm, &PORT_FIELDS)?;
            let protocol = pm["protocol"]
                .as_str()
                .unwrap_or("TCP")
                .to_ascii_uppercase();
            if !["TCP", "UDP", "SCTP"].contains(&protocol.as_str()) {
                return Err(format!(
                    "invalid configuration for node {n}: unknown protocol {protocol}"
                ));
            }
            cfg.port_mappings.push(PortMapping {
                container_port: port_number(&pm["containerPort"], "containerPort", n, i)?,
                host_port: port_number(&pm["hostPort"], "hostPort", n, i)?,
                listen_address: pm["listenAddress"]
                    .as_str()
                    .unwrap_or("0.0.0.0")
                    .to_string(),
                protocol,
            });
        }
    }
    Ok(cfg)
}

/// kind's rule for cluster names.
pub fn valid_cluster_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 50
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
}

/// A port mapping that cannot be bound: another fake cluster holds it, it repeats within the
/// config, or something on the host listens there.
fn port_conflict(cfg: &KindConfig, others: &[Cluster]) -> Option<PortMapping> {
    let same =
        |a: &PortMapping, b: &PortMapping| a.host_port == b.host_port && a.protocol == b.protocol;
    for (i, pm) in cfg.port_mappings.iter().enumerate() {
        let taken = cfg.port_mappings[..i].iter().any(|p| same(p, pm))
            || others
                .iter()
                .flat_map(|c| &c.port_mappings)
                .any(|p| same(p, pm))
            || match pm.protocol.as_str() {
                "UDP" => std::net::UdpSocket::bind(("0.0.0.0", pm.host_port)).is_err(),
                _ => std::net::TcpListener::bind(("0.0.0.0", pm.host_port)).is_err(),
            };
        if taken {
            return Some(pm.clone());
        }
    }
    None
}

fn flag_value(args: &[String], i: &mut usize, name: &str) -> Res<String> {
    let arg = &args[*i];
    if let Some(v) = arg.strip_prefix(&format!("{name}=")) {
        return Ok(v.to_string());
    }
    *i += 1;
    args.get(*i)
        .cloned()
        .ok_or_else(|| Fail::new(format!("ERROR: flag needs an argument: {name}")))
}

/// Parsed kind flags: `(positional, flags)`. Unknown flags are errors like cobra's.
fn parse_flags(
    args: &[String],
    with_value: &[&str],
    boolean: &[&str],
) -> Res<(Vec<String>, BTreeMap<String, String>)> {
    let mut pos = Vec::new();
    let mut flags = BTreeMap::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        let name = arg.split('=').next().unwrap_or(arg);
        if name == "-v" || name == "--verbosity" {
            flag_value(args, &mut i, name)?;
        } else if name == "-q" || name == "--quiet" {
        } else if with_value.contains(&name) {
            let v = flag_value(args, &mut i, name)?;
            flags.insert(name.to_string(), v);
        } else if boolean.contains(&name) {
            flags.insert(
                name.to_string(),
                arg.split_once('=').map_or("true", |x| x.1).to_string(),
            );
        } else if arg.starts_with('-') && arg != "-" {
            return Err(Fail::new(format!("ERROR: unknown flag: {name}")));
        } else {
            pos.push(arg.clone());
        }
        i += 1;
    }
    Ok((pos, flags))
}

pub fn run(args: &[String]) -> Res<i32> {
    let words: Vec<&str> = args.iter().take(2).map(String::as_str).collect();
    match words.as_slice() {
        ["version", ..] | ["--version", ..] => {
            println!("kind v0.27.0-fake go1.23 linux/amd64");
            Ok(0)
        }
        ["create", "cluster"] => create(&args[2..]),
        ["delete", "cluster"] => delete(&args[2..]),
        ["get", "clusters"] => {
            parse_flags(&args[2..], &[], &[])?;
            let names = state::list_clusters()?;
            if names.is_empty() {
                eprintln!("No kind clusters found.");
            }
            for n in names {
                println!("{n}");
            }
            Ok(0)
        }
        ["get", "nodes"] => {
            let (_, flags) = parse_flags(&args[2..], &["--name"], &["--all-clusters"])?;
            let name = flags.get("--name").map_or("kind", String::as_str);
            match state::load_cluster(name)? {
                Some(c) => println!("{}", c.node_name()),
                None => eprintln!("No kind nodes found for cluster \"{name}\"."),
            }
            Ok(0)
        }
        ["get", "kubeconfig"] => {
            let (_, flags) = parse_flags(&args[2..], &["--name"], &["--internal"])?;
            let name = flags.get("--name").map_or("kind", String::as_str);
            state::load_cluster(name)?.ok_or_else(|| Fail::new(format!("ERROR: could not locate any control plane nodes for cluster named '{name}'. Use the --name option to select a different cluster")))?;
            print!("{}", state::kubeconfig_with(None, name));
            Ok(0)
        }
        ["load", "image-archive"] => load(&args[2..]),
        ["load", "docker-image"] => load_docker_image(&args[2..]),
        ["export", "logs"] => export_logs(&args[2..]),
        _ => Err(Fail::new(format!(
            "ERROR: unknown command \"{}\" for \"kind\"",
            args.join(" ")
        ))),
    }
}

fn create(args: &[String]) -> Res<i32> {
    let (pos, flags) = parse_flags(
        args,
        &[
            "--name",
            "-n",
            "--config",
            "--kubeconfig",
            "--wait",
            "--image",
        ],
        &["--retain"],
    )?;
    if !pos.is_empty() {
        return Err(Fail::new(format!(
            "ERROR: unknown command \"{}\" for \"kind create cluster\"",
            pos[0]
        )));
    }
    let config_text = match flags.get("--config").map(String::as_str) {
        None => "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\n".to_string(),
        Some("-") => crate::util::read_stdin()?,
        Some(path) => std::fs::read_to_string(path).map_err(|e| {
            Fail::new(format!(
                "ERROR: failed to create cluster: error reading file: open {path}: {}",
                archive::io_msg(&e)
            ))
        })?,
    };
    let fail = |m: String| Fail::new(format!("ERROR: failed to create cluster: {m}"));
    let cfg = parse_config(&config_text).map_err(fail)?;
    let name = flags
        .get("--name")
        .or(flags.get("-n"))
        .cloned()
        .or(cfg.name.clone())
        .unwrap_or_else(|| "kind".into());
    if !valid_cluster_name(&name) {
        return Err(fail(format!(
            "'{name}' is not a valid cluster name, cluster names must match `^[a-z0-9.-]+$`"
        )));
    }
    if let Some(w) = flags.get("--wait") {
        crate::util::parse_duration(w).ok_or_else(|| Fail::new(format!("ERROR: invalid argument \"{w}\" for \"--wait\" flag: time: invalid duration \"{w}\"")))?;
    }
    let delay = std::env::var("FAKE_KIND_CREATE_DELAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500u64);
    let _lock = state::lock(&name)?;
    if state::load_cluster(&name)?.is_some() {
        return Err(fail(format!(
            "node(s) already exist for a cluster with the name \"{name}\""
        )));
    }
    eprintln!("Creating cluster \"{name}\" ...");
    if Injections::from_env().has("kind-create") {
        std::thread::sleep(Duration::from_millis(delay));
        return Err(fail(format!(
            "failed to init node with kubeadm: command \"podman exec --privileged {name}-control-plane kubeadm init --skip-phases=preflight --config=/kind/kubeadm.conf --skip-token-print --v=6\" failed with error: exit status 1 (fake-kube: injected failure kind-create)"
        )));
    }
    eprintln!(" ✓ Ensuring node image (kindest/node:v1.32.2) 🖼");
    {
        let _ports = state::lock("_ports")?;
        let others: Vec<Cluster> = state::list_clusters()?
            .iter()
            .filter_map(|n| state::load_cluster(n).ok().flatten())
            .collect();
        if let Some(pm) = port_conflict(&cfg, &others) {
            let proto = pm.protocol.to_ascii_lowercase();
            return Err(fail(format!(
                "command \"podman run --name {name}-control-plane --publish={}:{}:{}/{} ...\" failed with error: exit status 126\nCommand Output: Error: cannot listen on the {} port: listen {proto}4 {}:{}: bind: address already in use",
                pm.listen_address, pm.host_port, pm.container_port, pm.protocol, pm.protocol, pm.listen_address, pm.host_port
            )));
        }
        let net = state::network_name(&name);
        // A network left behind by a killed run of this fake for this very cluster.
        remove_cluster_network(&name)?;
        let mut cmd = Vec::from(argv![
            "network",
            "create",
            "--label",
            format!("{CLUSTER_LABEL}={name}")
        ]);
        for (k, v) in &cfg.node_labels {
            cmd.extend(argv!["--label", format!("{k}={v}")]);
        }
        cmd.push(net);
        podman_ok(&cmd).map_err(|f| fail(f.msg))?;
        let kubeconfig = state::kubeconfig_path(flags.get("--kubeconfig").map(String::as_str));
        state::save_cluster(&Cluster {
            name: name.clone(),
            config_yaml: config_text.clone(),
            node_labels: cfg.node_labels.clone(),
            port_mappings: cfg.port_mappings.clone(),
            images: Vec::new(),
            created: crate::util::now_s(),
            kubeconfig: kubeconfig.display().to_string(),
        })?;
    }
    eprintln!(" ✓ Preparing nodes 📦");
    std::thread::sleep(Duration::from_millis(delay));
    eprintln!(" ✓ Writing configuration 📜");
    eprintln!(" ✓ Starting control-plane 🕹️");
    eprintln!(" ✓ Installing CNI 🔌");
    eprintln!(" ✓ Installing StorageClass 💾");
    let kubeconfig = state::kubeconfig_path(flags.get("--kubeconfig").map(String::as_str));
    let existing = std::fs::read_to_string(&kubeconfig).ok();
    crate::util::write_atomic(
        &kubeconfig,
        state::kubeconfig_with(existing.as_deref(), &name).as_bytes(),
    )?;
    eprintln!("Set kubectl context to \"kind-{name}\"");
    eprintln!("You can now use your cluster with:\n\nkubectl cluster-info --context kind-{name}");
    if flags.contains_key("--kubeconfig") {
        eprintln!(" --kubeconfig {}", kubeconfig.display());
    }
    eprintln!("\nHave a nice day! 👋");
    Ok(0)
}

/// Removes every podman container carrying the cluster label (`podman rm -f -t 0`).
pub fn remove_cluster_containers(name: &str) -> Res<()> {
    let ids = podman_ok(&argv![
        "ps",
        "-a",
        "-q",
        "--filter",
        format!("label={CLUSTER_LABEL}={name}")
    ])?;
    let ids: Vec<String> = ids.split_whitespace().map(String::from).collect();
    if !ids.is_empty() {
        let mut cmd = Vec::from(argv!["rm", "-f", "-t", "0"]);
        cmd.extend(ids);
        podman_ok(&cmd)?;
    }
    Ok(())
}

fn delete(args: &[String]) -> Res<i32> {
    let (_, flags) = parse_flags(args, &["--name", "-n", "--kubeconfig"], &[])?;
    let name = flags
        .get("--name")
        .or(flags.get("-n"))
        .cloned()
        .unwrap_or_else(|| "kind".into());
    eprintln!("Deleting cluster \"{name}\" ...");
    if Injections::from_env().has("kind-delete") {
        return Err(Fail::new(format!(
            "ERROR: failed to delete cluster \"{name}\": failed to delete nodes: command \"podman rm -f -v {name}-control-plane\" failed with error: exit status 125 (fake-kube: injected failure kind-delete)"
        )));
    }
    let _lock = state::lock(&name)?;
    let cluster = state::load_cluster(&name)?;
    remove_cluster_containers(&name)?;
    remove_cluster_network(&name)?;
    let dir = state::cluster_dir(&name)?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir)
            .map_err(|e| Fail::new(format!("ERROR: failed to delete cluster \"{name}\": {e}")))?;
    }
    let mut kubeconfigs = vec![state::kubeconfig_path(
        flags.get("--kubeconfig").map(String::as_str),
    )];
    if let Some(c) = &cluster {
        kubeconfigs.push(PathBuf::from(&c.kubeconfig));
    }
    kubeconfigs.dedup();
    for path in kubeconfigs {
        if let Some(text) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| state::kubeconfig_without(&t, &name))
        {
            crate::util::write_atomic(&path, text.as_bytes())?;
        }
    }
    if let Some(c) = cluster {
        eprintln!("Deleted nodes: [\"{}\"]", c.node_name());
    }
    Ok(0)
}

fn load(args: &[String]) -> Res<i32> {
    let (pos, flags) = parse_flags(args, &["--name", "-n", "--nodes"], &[])?;
    let name = flags
        .get("--name")
        .or(flags.get("-n"))
        .cloned()
        .unwrap_or_else(|| "kind".into());
    if pos.len() != 1 {
        return Err(Fail::new(format!(
            "ERROR: accepts 1 arg(s), received {}",
            pos.len()
        )));
    }
    let file = &pos[0];
    let _lock = state::lock(&name)?;
    let mut cluster = state::load_cluster(&name)?
        .ok_or_else(|| Fail::new(format!("ERROR: no nodes found for cluster \"{name}\"")))?;
    if Injections::from_env().has("kind-load") {
        return Err(Fail::new(format!(
            "ERROR: failed to load image: command \"podman exec --privileged -i {name}-control-plane ctr --namespace=k8s.io images import --all-platforms --digests --snapshotter=overlayfs -\" failed with error: exit status 1 (fake-kube: injected failure kind-load)"
        )));
    }
    let refs = archive::image_refs(Path::new(file))
        .map_err(|e| Fail::new(format!("ERROR: failed to load image: {e}")))?;
    for (reference, id) in refs {
        cluster.images.retain(|i| i.reference != reference);
        cluster.images.push(LoadedImage {
            reference,
            id,
            archive: file.clone(),
        });
    }
    state::save_cluster(&cluster)?;
    // Pods that were waiting for this image start now (kubelet retries image pulls).
    for w in pods::reconcile(&cluster, &state::load_objects(&name)?)? {
        eprintln!("{w}");
    }
    Ok(0)
}

/// `kind load docker-image REF... --name N`: kind reads docker's image store, which does not
/// exist with the podman provider (it fails there, as the design notes say). Otherwise the fake
/// takes local podman storage as the docker store and records the names.
fn load_docker_image(args: &[String]) -> Res<i32> {
    let (refs, flags) = parse_flags(args, &["--name", "-n", "--nodes"], &[])?;
    let name = flags
        .get("--name")
        .or(flags.get("-n"))
        .cloned()
        .unwrap_or_else(|| "kind".into());
    let Some(first) = refs.first() else {
        return Err(Fail::new("ERROR: a list of image names is required"));
    };
    let _lock = state::lock(&name)?;
    let mut cluster = state::load_cluster(&name)?
        .ok_or_else(|| Fail::new(format!("ERROR: no nodes found for cluster \"{name}\"")))?;
    if Injections::from_env().has("kind-load") {
        return Err(Fail::new(format!("ERROR: failed to load image: command \"docker save -o /tmp/images-tar/images.tar {first}\" failed with error: exit status 1 (fake-kube: injected failure kind-load)")));
    }
    if std::env::var("KIND_EXPERIMENTAL_PROVIDER").is_ok_and(|p| p == "podman") {
        return Err(Fail::new(format!(
            "ERROR: image: \"{first}\" not present locally (fake-kube: with KIND_EXPERIMENTAL_PROVIDER=podman, `kind load docker-image` reads docker's image store; use `kind load image-archive`)"
        )));
    }
    for r in &refs {
        let out = podman(&argv!["image", "inspect", "--format", "{{.Id}}", r])?;
        if !out.status.success() {
            return Err(Fail::new(format!(
                "ERROR: image: \"{r}\" not present locally"
            )));
        }
        let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
        eprintln!(
            "Image: \"{r}\" with ID \"sha256:{id}\" not yet present on node \"{}\", loading...",
            cluster.node_name()
        );
        cluster.images.retain(|i| i.reference != *r);
        cluster.images.push(LoadedImage {
            reference: r.clone(),
            id,
            archive: String::new(),
        });
    }
    state::save_cluster(&cluster)?;
    for w in pods::reconcile(&cluster, &state::load_objects(&name)?)? {
        eprintln!("{w}");
    }
    Ok(0)
}

fn export_logs(args: &[String]) -> Res<i32> {
    let (pos, flags) = parse_flags(args, &["--name", "-n"], &[])?;
    let name = flags
        .get("--name")
        .or(flags.get("-n"))
        .cloned()
        .unwrap_or_else(|| "kind".into());
    let cluster = state::load_cluster(&name)?
        .ok_or_else(|| Fail::new(format!("ERROR: unknown cluster \"{name}\"")))?;
    if Injections::from_env().has("kind-export") {
        return Err(Fail::new(format!(
            "ERROR: [command \"podman exec --privileged {name}-control-plane journalctl --no-pager\" failed with error: exit status 1] (fake-kube: injected failure kind-export)"
        )));
    }
    let dir = match pos.first() {
        Some(d) => PathBuf::from(d),
        None => {
            std::env::temp_dir().join(format!("fake-kind-logs-{}-{}", name, crate::util::now_ms()))
        }
    };
    let io = |e: std::io::Error| Fail::new(format!("ERROR: {}: {e}", dir.display()));
    std::fs::create_dir_all(&dir).map_err(io)?;
    eprintln!("Exporting logs for cluster \"{name}\" to:");
    let objects = state::load_objects(&name)?;
    let pods = pods::observe(&cluster, &objects, None)?;
    for pod in &pods {
        if let Some(info) = &pod.container {
            let out = podman(&argv!["logs", &info.name])?;
            let mut text = out.stdout;
            text.extend_from_slice(&out.stderr);
            std::fs::write(dir.join(format!("{}.log", pod.plan.name)), text).map_err(io)?;
        }
    }
    let dump = json!({
        "cluster": cluster,
        "objects": objects,
        "pods": pods.iter().map(|p| p.to_json()).collect::<Vec<_>>(),
        "podErrors": state::load_pod_errors(&name)?,
    });
    std::fs::write(
        dir.join("fake-kube-state.json"),
        serde_json::to_string_pretty(&dump).unwrap_or_default(),
    )
    .map_err(io)?;
    println!("{}", dir.display());
    Ok(0)
}

/// Removes the cluster's network, if there is one and its label says it is this cluster's.
fn remove_cluster_network(name: &str) -> Result<(), Fail> {
    let net = state::network_name(name);
    let owner = podman(&argv![
        "network",
        "inspect",
        "--format",
        format!("{{{{index .Labels \"{CLUSTER_LABEL}\"}}}}"),
        &net
    ])?;
    if owner.status.success() && String::from_utf8_lossy(&owner.stdout).trim() == name {
        podman_ok(&argv!["network", "rm", "-f", &net])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
name: notification-e2e
nodes:
- role: control-plane
  labels:
    io.kubernaut/owner: alice
    ingress-ready: true
  extraPortMappings:
  - containerPort: 30080
    hostPort: 8080
  - containerPort: 30090
    hostPort: 9090
    listenAddress: 127.0.0.1
    protocol: udp
"#;

    #[test]
    fn parses_a_kind_config() {
        let cfg = parse_config(CONFIG).unwrap();
        assert_eq!(cfg.name.as_deref(), Some("notification-e2e"));
        assert_eq!(cfg.node_labels["io.kubernaut/owner"], "alice");
        assert_eq!(cfg.node_labels["ingress-ready"], "true");
        assert_eq!(
            cfg.port_mappings,
            [
                PortMapping {
                    container_port: 30080,
                    host_port: 8080,
                    listen_address: "0.0.0.0".into(),
                    protocol: "TCP".into()
                },
                PortMapping {
                    container_port: 30090,
                    host_port: 9090,
                    listen_address: "127.0.0.1".into(),
                    protocol: "UDP".into()
                },
            ]
        );
        let minimal = parse_config("kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\n").unwrap();
        assert_eq!(minimal, KindConfig::default());
    }

    #[test]
    fn rejects_bad_configs_like_kind() {
        assert_eq!(
            parse_config("kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha3\n").unwrap_err(),
            "unknown apiVersion: kind.x-k8s.io/v1alpha3"
        );
        assert_eq!(
            parse_config("kind: Pod\napiVersion: kind.x-k8s.io/v1alpha4\n").unwrap_err(),
            "unknown kind Pod for apiVersion: kind.x-k8s.io/v1alpha4"
        );
        assert!(
            parse_config("kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnodez: []\n")
                .unwrap_err()
                .contains("unknown field \"nodez\"")
        );
        assert!(
            parse_config(&CONFIG.replace("hostPort: 8080", "hostPort: 70000"))
                .unwrap_err()
                .contains("hostPort")
        );
        assert!(
            parse_config(&CONFIG.replace("containerPort: 30080", "containerport: 30080"))
                .unwrap_err()
                .contains("unknown field")
        );
        assert!(parse_config(
            "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnodes:\n- role: worker\n"
        )
        .is_err());
    }

    #[test]
    fn cluster_names() {
        assert!(valid_cluster_name("notification-e2e-alice-1"));
        assert!(!valid_cluster_name("Notification"));
        assert!(!valid_cluster_name("a_b"));
        assert!(!valid_cluster_name(""));
    }

    #[test]
    fn port_conflicts_within_config_and_with_other_clusters() {
        // Ports chosen high to be free on the test machine.
        let pm = |h: u16| PortMapping {
            container_port: 30000,
            host_port: h,
            listen_address: "0.0.0.0".into(),
            protocol: "TCP".into(),
        };
        let cfg = KindConfig {
            port_mappings: vec![pm(47_311), pm(47_311)],
            ..Default::default()
        };
        assert_eq!(port_conflict(&cfg, &[]).unwrap().host_port, 47_311);
        let other = Cluster {
            port_mappings: vec![pm(47_312)],
            ..Default::default()
        };
        let cfg = KindConfig {
            port_mappings: vec![pm(47_313), pm(47_312)],
            ..Default::default()
        };
        assert_eq!(port_conflict(&cfg, &[other]).unwrap().host_port, 47_312);
        let listener = std::net::TcpListener::bind(("0.0.0.0", 0)).unwrap();
        let busy = listener.local_addr().unwrap().port();
        let cfg = KindConfig {
            port_mappings: vec![pm(busy)],
            ..Default::default()
        };
        assert!(port_conflict(&cfg, &[]).is_some());
    }

    #[test]
    fn flag_parsing() {
        let args = argv!["--name=x", "--config", "c.yaml", "--retain", "-v", "3", "--wait", "60s"];
        let (pos, flags) =
            parse_flags(&args, &["--name", "--config", "--wait"], &["--retain"]).unwrap();
        assert!(pos.is_empty());
        assert_eq!(flags["--name"], "x");
        assert_eq!(flags["--config"], "c.yaml");
        assert_eq!(flags["--retain"], "true");
        assert_eq!(flags["--wait"], "60s");
        assert!(parse_flags(&argv!["--bogus"], &[], &[]).is_err());
        assert!(parse_flags(&argv!["--name"], &["--name"], &[]).is_err());
    }
}
