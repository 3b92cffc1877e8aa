//! The fake `kind`: a cluster is a podman network plus a state file; its node is not emulated
//! (its pods are containers on the network).

use crate::state::{self, Cluster, PortMapping, CLUSTER_LABEL};
use crate::{create_delay, podman, pods, Args, Fail, Flag, Res};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

const FLAGS: &[Flag] = &[
    (&["--name", "-n"], "name", true),
    (&["--config"], "config", true),
    (&["--kubeconfig"], "kubeconfig", true),
];

pub fn run(argv: &[String]) -> Res<()> {
    let unsupported = || {
        Fail(format!(
            "fake-kind: unsupported command: {}",
            argv.join(" ")
        ))
    };
    let a = Args::parse(argv, FLAGS).ok_or_else(unsupported)?;
    let name = a.get("name").unwrap_or("kind");
    let words: Vec<&str> = a.pos.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["version"] => println!("kind v0.27.0-fake go1.23 linux/amd64"),
        ["create", "cluster"] => create(&a)?,
        ["delete", "cluster"] => delete(name, a.get("kubeconfig"))?,
        ["get", "clusters"] => {
            let names = state::names()?;
            if names.is_empty() {
                eprintln!("No kind clusters found.");
            }
            for n in names {
                println!("{n}");
            }
        }
        ["get", "kubeconfig"] => {
            state::load(name)?.ok_or_else(|| {
                Fail(format!(
                    "ERROR: could not locate any control plane nodes for cluster named '{name}'"
                ))
            })?;
            let doc = state::kubeconfig_add(None, name)?;
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        }
        ["load", "image-archive", file] => {
            node_cluster(name)?;
            let names = archive_names(Path::new(file))
                .map_err(|e| Fail(format!("ERROR: failed to load image: {e}")))?;
            load(name, &names, &BTreeMap::new(), BTreeSet::new())?;
        }
        ["load", "docker-image", refs @ ..] if !refs.is_empty() => load_docker(name, refs)?,
        ["export", "logs", dir] => export(name, Path::new(dir))?,
        _ => return Err(unsupported()),
    }
    Ok(())
}

/// What the fake takes from a kind config: all nodes collapse into one.
#[derive(Debug, Default, PartialEq)]
pub struct Config {
    pub name: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub ports: Vec<PortMapping>,
    pub patches: Vec<String>,
}

/// Refuses the keys kind does not know and those the fake does not emulate.
fn strict(v: &Value, allowed: &[&str]) -> Result<(), String> {
    let keys = v.as_object().into_iter().flat_map(|m| m.keys());
    match keys.into_iter().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!(
            "unable to decode config: unknown field \"{k}\" (fake-kube emulates {})",
            allowed.join(", ")
        )),
        None => Ok(()),
    }
}

/// Parses a kind config (`kind.x-k8s.io/v1alpha4`, `Cluster`) strictly, like kind decodes it.
pub fn parse_config(text: &str) -> Result<Config, String> {
    let doc = state::parse_docs(text)?
        .into_iter()
        .next()
        .unwrap_or_default();
    let api = doc["apiVersion"].as_str().unwrap_or_default();
    if api != "kind.x-k8s.io/v1alpha4" {
        return Err(format!("unknown apiVersion: {api}"));
    }
    if doc["kind"] != "Cluster" {
        return Err(format!(
            "unknown kind {} for apiVersion: {api}",
            doc["kind"]
        ));
    }
    strict(
        &doc,
        &[
            "kind",
            "apiVersion",
            "name",
            "nodes",
            "containerdConfigPatches",
        ],
    )?;
    let mut cfg = Config {
        name: doc["name"].as_str().map(String::from),
        ..Default::default()
    };
    for p in doc["containerdConfigPatches"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let p = p.as_str().ok_or_else(|| {
            format!("unable to decode config: containerdConfigPatches: expected a string, not {p}")
        })?;
        cfg.patches.push(p.to_string());
    }
    for node in doc["nodes"].as_array().into_iter().flatten() {
        strict(node, &["role", "labels", "extraPortMappings"])?;
        for (k, v) in node["labels"].as_object().into_iter().flatten() {
            let v = v.as_str().map_or_else(|| v.to_string(), String::from);
            cfg.labels.insert(k.clone(), v);
        }
        for m in node["extraPortMappings"].as_array().into_iter().flatten() {
            strict(
                m,
                &["containerPort", "hostPort", "listenAddress", "protocol"],
            )?;
            let port = |f: &str| {
                m[f].as_u64()
                    .and_then(|p| u16::try_from(p).ok())
                    .filter(|p| *p > 0)
                    .ok_or_else(|| {
                        format!("invalid configuration: extraPortMappings {f}: {}", m[f])
                    })
            };
            if m["protocol"]
                .as_str()
                .is_some_and(|p| !p.eq_ignore_ascii_case("TCP"))
            {
                return Err(format!(
                    "fake-kube: extraPortMappings protocol {}: only TCP is emulated",
                    m["protocol"]
                ));
            }
            cfg.ports.push(PortMapping {
                container_port: port("containerPort")?,
                host_port: port("hostPort")?,
                listen_address: m["listenAddress"].as_str().unwrap_or("0.0.0.0").into(),
            });
        }
    }
    Ok(cfg)
}

/// A mapping whose host port is taken: repeated in the config, held by another fake cluster
/// (as kind's node container would hold it), or bound by something on the host.
fn port_taken<'a>(ports: &'a [PortMapping], others: &[Cluster]) -> Option<&'a PortMapping> {
    ports
        .iter()
        .enumerate()
        .map(|(i, p)| (p, &ports[..i]))
        .find_map(|(p, earlier)| {
            let held = earlier.iter().chain(others.iter().flat_map(|c| &c.ports));
            let mut held = held.map(|q| q.host_port);
            let busy = held.any(|h| h == p.host_port)
                || std::net::TcpListener::bind(("0.0.0.0", p.host_port)).is_err();
            busy.then_some(p)
        })
}

fn create(a: &Args) -> Res<()> {
    let fail = |m: String| Fail(format!("ERROR: failed to create cluster: {m}"));
    let text = match a.get("config") {
        Some(p) => {
            std::fs::read_to_string(p).map_err(|e| fail(format!("error reading file {p}: {e}")))?
        }
        None => "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\n".into(),
    };
    let cfg = parse_config(&text).map_err(fail)?;
    let name = a
        .get("name")
        .map(String::from)
        .or(cfg.name)
        .unwrap_or_else(|| "kind".into());
    let kubeconfig = state::kubeconfig_path(a.get("kubeconfig"));
    let _lock = state::lock(&name)?;
    if state::load(&name)?.is_some() {
        return Err(fail(format!(
            "node(s) already exist for a cluster with the name \"{name}\""
        )));
    }
    eprintln!("Creating cluster \"{name}\" ...");
    {
        // Host ports are checked and claimed under one lock for all clusters.
        let _ports = state::lock("_ports")?;
        let others: Vec<Cluster> = state::names()?
            .iter()
            .filter_map(|n| state::load(n).ok().flatten())
            .collect();
        if let Some(p) = port_taken(&cfg.ports, &others) {
            let (l, h) = (&p.listen_address, p.host_port);
            return Err(fail(format!(
                "command \"podman run --name {name}-control-plane --publish={l}:{h}:{}/TCP ...\" failed: Error: cannot listen on the TCP port: listen tcp4 {l}:{h}: bind: address already in use",
                p.container_port
            )));
        }
        remove_networks(&name)?; // left by a killed run of this fake for this very cluster
        let label = format!("{CLUSTER_LABEL}={name}");
        podman::run(&[
            "network",
            "create",
            "--label",
            &label,
            &state::network(&name),
        ])
        .map_err(|f| fail(f.0))?;
        state::save(&Cluster {
            name: name.clone(),
            created_ms: crate::now_ms(),
            node_labels: cfg.labels,
            ports: cfg.ports,
            containerd_patches: cfg.patches,
            kubeconfig: kubeconfig.clone(),
            ..Default::default()
        })?;
    }
    eprintln!(" ✓ Ensuring node image (kindest/node:v1.32.2) 🖼\n ✓ Preparing nodes 📦");
    std::thread::sleep(create_delay());
    state::kubeconfig_add(Some(&kubeconfig), &name)?;
    eprintln!(" ✓ Starting control-plane 🕹️\nSet kubectl context to \"kind-{name}\"");
    Ok(())
}

/// Removes the cluster's networks (its own and its namespaces'), found by label.
fn remove_networks(name: &str) -> Res<()> {
    let label = format!("label={CLUSTER_LABEL}={name}");
    for net in podman::run(&["network", "ls", "-q", "--filter", &label])?.split_whitespace() {
        podman::run(&["network", "rm", "-f", net])?;
    }
    Ok(())
}

/// Removes the cluster's containers (by label), networks, the images its pulls added to podman
/// storage (unless another fake cluster pulled them too, or they are in use or carry other
/// names: `podman rmi` without `-f` refuses those), state and kubeconfig entries. A missing
/// cluster is not an error.
fn delete(name: &str, kubeconfig: Option<&str>) -> Res<()> {
    eprintln!("Deleting cluster \"{name}\" ...");
    let _lock = state::lock(name)?;
    let cluster = state::load(name)?;
    let label = format!("label={CLUSTER_LABEL}={name}");
    let ids = podman::run(&["ps", "-a", "-q", "--filter", &label])?;
    let mut rm = vec!["rm", "-f", "-t", "0"];
    rm.extend(ids.split_whitespace());
    if rm.len() > 4 {
        podman::run(&rm)?;
    }
    remove_networks(name)?;
    let others: Vec<Cluster> = state::names()?
        .iter()
        .filter(|n| *n != name)
        .filter_map(|n| state::load(n).ok().flatten())
        .collect();
    // `load docker-image` put these names into podman storage; a kind node's images go with
    // the node. `rmi` of a name takes that name off (the image too, if it was its last name).
    for r in cluster.iter().flat_map(|c| &c.docker_added) {
        if !others.iter().any(|o| o.docker_ids.contains_key(r)) {
            let _ = podman::output(&["rmi", r]);
        }
    }
    for (image, p) in cluster.iter().flat_map(|c| &c.pulls) {
        if let Some(id) = &p.new_id {
            if !others
                .iter()
                .any(|o| o.pulls.get(image).is_some_and(|q| q.ok))
            {
                podman::output(&["rmi", id])?;
            }
        }
    }
    state::remove(name)?;
    let recorded = cluster.map(|c| c.kubeconfig);
    for path in kubeconfig.map(PathBuf::from).into_iter().chain(recorded) {
        state::kubeconfig_remove(&path, name)?;
    }
    Ok(())
}

/// The image names in a `podman save --format=docker-archive` file (the `RepoTags` of its
/// `manifest.json`), exactly as written.
pub fn archive_names(path: &Path) -> Result<Vec<String>, String> {
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut f = BufReader::new(std::fs::File::open(path).map_err(err)?);
    let mut h = [0u8; 512];
    while f.read_exact(&mut h).is_ok() && h.iter().any(|b| *b != 0) {
        let field = |a: usize, b: usize| {
            String::from_utf8_lossy(&h[a..b])
                .trim_matches(['\0', ' '])
                .to_string()
        };
        let size = u64::from_str_radix(&field(124, 136), 8)
            .map_err(|_| format!("{}: not a tar archive", path.display()))?;
        if field(0, 100).trim_start_matches("./") == "manifest.json" {
            let mut data = vec![0u8; size as usize];
            f.read_exact(&mut data).map_err(err)?;
            let v: Value = serde_json::from_slice(&data)
                .map_err(|e| format!("{}: manifest.json: {e}", path.display()))?;
            let tags = v
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|i| i["RepoTags"].as_array().cloned().unwrap_or_default());
            return Ok(tags.filter_map(|t| t.as_str().map(String::from)).collect());
        }
        f.seek_relative(size.div_ceil(512) as i64 * 512)
            .map_err(err)?;
    }
    Err(format!("{} is not a docker-archive (no manifest.json): `podman save --format=docker-archive` writes one", path.display()))
}

fn node_cluster(name: &str) -> Res<Cluster> {
    state::load(name)?.ok_or_else(|| Fail(format!("ERROR: no nodes found for cluster \"{name}\"")))
}

/// Records image names as loaded on the node (with their docker ids, for `docker-image`); pods
/// waiting for them start now (podman is not asked when no pod waits for them).
fn load(
    name: &str,
    names: &[String],
    ids: &BTreeMap<String, String>,
    added: BTreeSet<String>,
) -> Res<()> {
    let _lock = state::lock(name)?;
    let mut c = node_cluster(name)?;
    let now = crate::now_ms();
    let before = pods::shape(&c, now);
    for n in names {
        if !c.images.contains(n) {
            c.images.push(n.clone());
        }
    }
    c.docker_ids.extend(ids.clone());
    c.docker_added.extend(added);
    state::save(&c)?;
    match pods::shape(&c, now) != before {
        true => pods::sync(&mut c).map(drop),
        false => Ok(()),
    }
}

/// `kind load docker-image`: like kind, each reference's id from the docker engine
/// (`DOCKER_HOST`), those not on the node yet saved with `docker save` and loaded into podman
/// storage (where the pods run from), then recorded exactly as written.
fn load_docker(name: &str, refs: &[&str]) -> Res<()> {
    let node = node_cluster(name)?;
    let mut ids = BTreeMap::new();
    for r in refs {
        let id = podman::docker(&["image", "inspect", "-f", "{{ .Id }}", r])
            .map_err(|_| Fail(format!("ERROR: image: \"{r}\" not present locally")))?;
        ids.insert(r.to_string(), id.trim().to_string());
    }
    let mut send = Vec::new();
    for r in refs {
        let id = &ids[*r];
        if node.images.iter().any(|i| i == r) && node.docker_ids.get(*r) == Some(id) {
            eprintln!("Image: \"{r}\" with ID \"{id}\" found to be already present on all nodes.");
        } else {
            eprintln!(
                "Image: \"{r}\" with ID \"{id}\" not yet present on node \"{}\", loading...",
                node.node()
            );
            send.push(*r);
        }
    }
    let added: BTreeSet<String> = send
        .iter()
        .filter(|r| !podman::output(&["image", "exists", r]).is_ok_and(|o| o.ok))
        .map(|r| r.to_string())
        .collect();
    if !send.is_empty() {
        let tar = state::root()?.join(format!("images-{}.tar", std::process::id()));
        let tar_s = tar.to_string_lossy().to_string();
        let moved = podman::docker(&[&["save", "-o", &tar_s][..], &send].concat())
            .and_then(|_| podman::run(&["load", "-q", "-i", &tar_s]));
        let _ = std::fs::remove_file(&tar);
        moved.map_err(|f| Fail(format!("ERROR: failed to load image: {}", f.0)))?;
    }
    let names: Vec<String> = refs.iter().map(|r| r.to_string()).collect();
    load(name, &names, &ids, added)
}

/// `DIR/<namespace>/<pod>.log` per pod container, and `DIR/fake-kube-state.json`.
fn export(name: &str, dir: &Path) -> Res<()> {
    let (cluster, pods) = pods::observe(name, true)?;
    eprintln!("Exporting logs for cluster \"{name}\" to:");
    let io = |e: std::io::Error| Fail(format!("ERROR: {}: {e}", dir.display()));
    for o in &pods {
        let p = &o.seen.pod;
        if let Some(x) = &o.seen.container {
            std::fs::create_dir_all(dir.join(&p.ns)).map_err(io)?;
            podman::to_file(
                &["logs", &x.name],
                &dir.join(&p.ns).join(format!("{}.log", p.name)),
            )?;
        }
    }
    let node = cluster.node();
    let dump = json!({"cluster": cluster, "pods": pods.iter().map(|o| o.to_json(&node)).collect::<Vec<_>>()});
    std::fs::create_dir_all(dir).map_err(io)?;
    std::fs::write(
        dir.join("fake-kube-state.json"),
        serde_json::to_string_pretty(&dump).unwrap_or_default(),
    )
    .map_err(io)?;
    println!("{}", dir.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nname: e2e\nnodes:\n- role: control-plane\n  labels:\n    io.kubernaut.xtask.run: \"1884d074\"\n    ready: true\n  extraPortMappings:\n  - containerPort: 30080\n    hostPort: 28120\n    listenAddress: 127.0.0.1\n    protocol: TCP\n  - {containerPort: 30081, hostPort: 28121}\ncontainerdConfigPatches:\n- |-\n  [plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"localhost:5001\"]\n    endpoint = [\"http://kind-registry:5000\"]\n";

    #[test]
    fn parses_what_the_xtask_renders() {
        let cfg = parse_config(CONFIG).unwrap();
        assert_eq!(cfg.name.as_deref(), Some("e2e"));
        assert_eq!(cfg.labels["io.kubernaut.xtask.run"], "1884d074");
        assert_eq!(cfg.labels["ready"], "true");
        assert_eq!(cfg.patches, ["[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"localhost:5001\"]\n  endpoint = [\"http://kind-registry:5000\"]"]);
        let pm = |c, h, l: &str| PortMapping {
            container_port: c,
            host_port: h,
            listen_address: l.into(),
        };
        assert_eq!(
            cfg.ports,
            [pm(30080, 28120, "127.0.0.1"), pm(30081, 28121, "0.0.0.0")]
        );
        assert_eq!(
            parse_config("kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\n").unwrap(),
            Config::default()
        );
    }

    #[test]
    fn refuses_configs_like_kind() {
        let e = |t: &str| parse_config(t).unwrap_err();
        assert_eq!(
            e("kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha3\n"),
            "unknown apiVersion: kind.x-k8s.io/v1alpha3"
        );
        assert!(e(&CONFIG.replace("nodes:", "networking: {}\nnodes:"))
            .starts_with("unable to decode config: unknown field \"networking\""));
        assert!(
            e(&CONFIG.replace("hostPort: 28120", "hostPort: 70000")).contains("hostPort: 70000")
        );
        assert!(e(&CONFIG.replace("protocol: TCP", "protocol: UDP")).contains("only TCP"));
        assert!(e(&CONFIG.replace("- |-", "- 5\n- |-")).contains("expected a string, not 5"));
        assert!(
            e(&CONFIG.replace("containerPort: 30080", "containerport: 30080"))
                .contains("unknown field")
        );
    }

    #[test]
    fn host_ports_taken() {
        let pm = |h| PortMapping {
            container_port: 30000,
            host_port: h,
            listen_address: "0.0.0.0".into(),
        };
        let listener = std::net::TcpListener::bind(("0.0.0.0", 0)).unwrap();
        let busy = listener.local_addr().unwrap().port();
        let free = || {
            std::net::TcpListener::bind(("0.0.0.0", 0))
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (a, b) = (free(), free());
        assert_eq!(port_taken(&[pm(a), pm(b)], &[]), None);
        assert_eq!(port_taken(&[pm(a), pm(a)], &[]).unwrap().host_port, a);
        assert_eq!(port_taken(&[pm(busy)], &[]).unwrap().host_port, busy);
        let other = Cluster {
            ports: vec![pm(b)],
            ..Default::default()
        };
        assert_eq!(port_taken(&[pm(a), pm(b)], &[other]).unwrap().host_port, b);
    }
}
