//! Pods: from Deployments and Jobs to podman containers (planning, reconciling) and back to Pod
//! objects (status at call time, readiness probes).
//!
//! Every workload has exactly one pod, `<workload>-fake-0`, run as the podman container
//! `kindfake-<cluster>-<namespace>-<pod>`. Planning is pure (state in, podman argv out), so the
//! image rule, env resolution and Service wiring are unit-tested without podman.

use crate::archive::{normalize_ref, tag_of};
use crate::argv;
use crate::state::{self, Cluster, Objects, CLUSTER_LABEL};
use crate::util::{b64_decode, fnv64, now_s, podman, podman_ok, rfc3339, Injections, Res};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const POD_LABEL: &str = "io.kubernaut.fake-kube.pod";
pub const NS_LABEL: &str = "io.kubernaut.fake-kube.namespace";
pub const OWNER_LABEL: &str = "io.kubernaut.fake-kube.owner";
pub const HASH_LABEL: &str = "io.kubernaut.fake-kube.spec-hash";
pub const TEMPLATE_LABEL_PREFIX: &str = "io.kubernaut.fake-kube.label.";

/// What to do for a pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start a container with this `podman` argv (its spec hash is one of the labels), after
    /// writing these files (configMap / secret volumes).
    Run {
        argv: Vec<String>,
        hash: String,
        files: Files,
    },
    /// The pod cannot get a container; its container waits with this reason.
    Wait { reason: String, message: String },
}

/// One pod as derived from its workload.
#[derive(Debug, Clone, PartialEq)]
pub struct PodPlan {
    pub name: String,
    pub namespace: String,
    /// `Deployment` or `Job`.
    pub owner_kind: String,
    pub owner: String,
    pub owner_uid: String,
    pub labels: BTreeMap<String, String>,
    /// The podman container name.
    pub container_name: String,
    /// The Kubernetes container (spec.template.spec.containers[0]).
    pub container: Value,
    pub image: String,
    /// Effective pull policy (defaulted like the API server does).
    pub pull_policy: String,
    pub restart_policy: String,
    pub backoff_limit: i64,
    pub created: i64,
    pub action: Action,
}

impl PodPlan {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
    pub fn is_job(&self) -> bool {
        self.owner_kind == "Job"
    }
    pub fn container_k8s_name(&self) -> &str {
        self.container["name"].as_str().unwrap_or("")
    }
}

pub fn str_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_str()
                    .map(String::from)
                    .unwrap_or_else(|| v.to_string()),
            )
        })
        .collect()
}

/// The pull policy the API server defaults to: `Always` for `:latest` or no tag, else
/// `IfNotPresent`.
pub fn effective_pull_policy(image: &str, explicit: Option<&str>) -> String {
    match explicit {
        Some(p) if !p.is_empty() => p.to_string(),
        _ if !image.contains('@') && matches!(tag_of(image), None | Some("latest")) => {
            "Always".into()
        }
        _ => "IfNotPresent".into(),
    }
}

/// The image rule: a container may start only from an image loaded into the cluster with
/// `kind load` (both sides normalised like kubelet does), and never when it would have to be
/// pulled (there is no registry). Err = (reason, message) of the waiting container.
pub fn image_decision(
    image: &str,
    policy: &str,
    loaded: &[String],
) -> Result<(), (String, String)> {
    let wanted = normalize_ref(image);
    let present = loaded.iter().any(|l| normalize_ref(l) == wanted);
    let pull_error = || {
        (
            "ErrImagePull".to_string(),
            format!(
                "failed to pull and unpack image \"{wanted}\": failed to resolve reference \"{wanted}\": \
                 no registry answers here (fake-kube: only images loaded with `kind load image-archive` can run; \
                 imagePullPolicy {policy}{})",
                if present { " pulls even though the image is loaded" } else { "" }
            ),
        )
    };
    match policy {
        "Always" => Err(pull_error()),
        _ if present => Ok(()),
        "Never" => Err((
            "ErrImageNeverPull".into(),
            format!("Container image \"{image}\" is not present with pull policy of Never"),
        )),
        _ => Err(pull_error()),
    }
}

fn find_object<'a>(objects: &'a Objects, ns: &str, kind: &str, name: &str) -> Option<&'a Value> {
    objects.get(&state::object_key(ns, kind, name))
}

/// `(key -> value)` of a Secret (decoded) or ConfigMap.
fn source_data(obj: &Value, kind: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (k, v) in obj["data"].as_object().into_iter().flatten() {
        let s = v.as_str().unwrap_or("");
        let text = if kind == "Secret" {
            String::from_utf8_lossy(&b64_decode(s).unwrap_or_default()).into_owned()
        } else {
            s.to_string()
        };
        out.insert(k.clone(), text);
    }
    if kind == "ConfigMap" {
        for (k, v) in obj["binaryData"].as_object().into_iter().flatten() {
            out.insert(
                k.clone(),
                String::from_utf8_lossy(&b64_decode(v.as_str().unwrap_or("")).unwrap_or_default())
                    .into_owned(),
            );
        }
    }
    out
}

/// Kubernetes' `$(VAR)` expansion (`$$` escapes); unknown references stay as written.
pub fn expand(text: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(r) = after.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let (Some(r), Some(end)) = (after.strip_prefix('('), after.find(')')) {
            let name = &r[..end - 1];
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&rest[i..i + 2 + end]),
            }
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn set_env(env: &mut Vec<(String, String)>, k: String, v: String) {
    match env.iter_mut().find(|(n, _)| *n == k) {
        Some(e) => e.1 = v,
        None => env.push((k, v)),
    }
}

/// Resolves a container's `envFrom` and `env` (later entries win) against the Secrets and
/// ConfigMaps of `ns`. Err = the CreateContainerConfigError message kubelet would give.
pub fn resolve_env(
    container: &Value,
    ns: &str,
    pod: &str,
    node: &str,
    objects: &Objects,
) -> Result<Vec<(String, String)>, String> {
    let mut env = Vec::new();
    for src in container["envFrom"].as_array().into_iter().flatten() {
        let prefix = src["prefix"].as_str().unwrap_or("");
        for (field, kind, word) in [
            ("secretRef", "Secret", "secret"),
            ("configMapRef", "ConfigMap", "configmap"),
        ] {
            let r = &src[field];
            if r.is_null() {
                continue;
            }
            let name = r["name"].as_str().unwrap_or("");
            match find_object(objects, ns, kind, name) {
                Some(obj) => {
                    for (k, v) in source_data(obj, kind) {
                        set_env(&mut env, format!("{prefix}{k}"), v);
                    }
                }
                None if r["optional"] == json!(true) => {}
                None => return Err(format!("{word} \"{name}\" not found")),
            }
        }
    }
    for e in container["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap_or("").to_string();
        let vf = &e["valueFrom"];
        let value = if vf.is_null() {
            expand(e["value"].as_str().unwrap_or(""), &env)
        } else if !vf["fieldRef"].is_null() {
            match vf["fieldRef"]["fieldPath"].as_str().unwrap_or("") {
                "metadata.name" => pod.to_string(),
                "metadata.namespace" => ns.to_string(),
                "spec.nodeName" => node.to_string(),
                "spec.serviceAccountName" => "default".into(),
                other => {
                    return Err(format!(
                        "fake-kube: env {name}: fieldRef {other:?} is not supported"
                    ))
                }
            }
        } else {
            let (r, kind, word) = if !vf["secretKeyRef"].is_null() {
                (&vf["secretKeyRef"], "Secret", "secret")
            } else if !vf["configMapKeyRef"].is_null() {
                (&vf["configMapKeyRef"], "ConfigMap", "configmap")
            } else {
                return Err(format!(
                    "fake-kube: env {name}: this valueFrom is not supported"
                ));
            };
            let (src, key) = (
                r["name"].as_str().unwrap_or(""),
                r["key"].as_str().unwrap_or(""),
            );
            let optional = r["optional"] == json!(true);
            match find_object(objects, ns, kind, src).map(|o| source_data(o, kind)) {
                Some(data) => match data.get(key) {
                    Some(v) => v.clone(),
                    None if optional => continue,
                    None => return Err(format!("couldn't find key {key} in {kind} {ns}/{src}")),
                },
                None if optional => continue,
                None => return Err(format!("{word} \"{src}\" not found")),
            }
        };
        set_env(&mut env, name, value);
    }
    Ok(env)
}

/// Resolves a Service `targetPort` (number or container port name) against the container.
fn resolve_port(target: &Value, container: &Value) -> Option<i64> {
    match target {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok().or_else(|| {
            container["ports"]
                .as_array()?
                .iter()
                .find(|p| p["name"].as_str() == Some(s))?["containerPort"]
                .as_i64()
        }),
        _ => None,
    }
}

/// Network aliases and host port publications for a pod from the Services selecting it.
/// `published` holds host ports already given to an earlier pod (a host port can be published
/// by one container only).
#[allow(clippy::type_complexity)]
fn service_wiring(
    cluster: &Cluster,
    objects: &Objects,
    ns: &str,
    labels: &BTreeMap<String, String>,
    container: &Value,
    published: &mut BTreeSet<u16>,
) -> Result<(Vec<String>, Vec<String>), String> {
    let mut aliases = Vec::new();
    let mut ports = Vec::new();
    for svc in state::objects_of(objects, "Service", Some(ns)) {
        let selector = str_map(&svc["spec"]["selector"]);
        if selector.is_empty() || !selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            continue;
        }
        let name = svc["metadata"]["name"].as_str().unwrap_or("");
        for a in [
            name.to_string(),
            format!("{name}.{ns}"),
            format!("{name}.{ns}.svc"),
            format!("{name}.{ns}.svc.cluster.local"),
        ] {
            if !aliases.contains(&a) {
                aliases.push(a);
            }
        }
        for (i, p) in svc["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let port = p["port"].as_i64().unwrap_or(0);
            let target_spec = if p["targetPort"].is_null() {
                p["port"].clone()
            } else {
                p["targetPort"].clone()
            };
            let Some(target) = resolve_port(&target_spec, container) else {
                return Err(format!("fake-kube: Service \"{name}\" spec.ports[{i}].targetPort {target_spec} names no port of container \"{}\"", container["name"].as_str().unwrap_or("")));
            };
            if target != port {
                return Err(format!(
                    "fake-kube: Service \"{name}\" spec.ports[{i}]: port {port} != targetPort {target}; network aliases cannot remap ports, so use port == targetPort (see xtask/fake-kube/README.md)"
                ));
            }
            if svc["spec"]["type"].as_str() != Some("NodePort") {
                continue;
            }
            let node_port = p["nodePort"].as_i64().unwrap_or(0);
            let proto = p["protocol"].as_str().unwrap_or("TCP");
            for pm in cluster
                .port_mappings
                .iter()
                .filter(|m| i64::from(m.container_port) == node_port && m.protocol == proto)
            {
                if published.insert(pm.host_port) {
                    let suffix = if proto == "TCP" {
                        String::new()
                    } else {
                        format!("/{}", proto.to_ascii_lowercase())
                    };
                    ports.push(format!(
                        "{}:{}:{target}{suffix}",
                        pm.listen_address, pm.host_port
                    ));
                }
            }
        }
    }
    Ok((aliases, ports))
}

/// Files to write before a container starts: (path, contents).
type Files = Vec<(PathBuf, Vec<u8>)>;

/// Volume mounts as podman flags plus the files to write for configMap / secret volumes.
fn volume_flags(
    spec: &Value,
    container: &Value,
    ns: &str,
    objects: &Objects,
    pod_dir: &Path,
) -> Result<(Vec<String>, Files), (String, String)> {
    let mut flags = Vec::new();
    let mut files = Vec::new();
    let volumes = spec["volumes"].as_array().cloned().unwrap_or_default();
    for vm in container["volumeMounts"].as_array().into_iter().flatten() {
        let vname = vm["name"].as_str().unwrap_or("");
        let mount = vm["mountPath"].as_str().unwrap_or("");
        let Some(vol) = volumes.iter().find(|v| v["name"].as_str() == Some(vname)) else {
            continue;
        };
        if vol.get("emptyDir").is_some() {
            // Like an emptyDir: writable by anyone, programs may run from it.
            flags.extend(argv!["--tmpfs", format!("{mount}:rw,exec,mode=1777")]);
            continue;
        }
        let (kind, word, src) = if let Some(cm) = vol.get("configMap") {
            ("ConfigMap", "configmap", cm)
        } else if let Some(s) = vol.get("secret") {
            ("Secret", "secret", s)
        } else {
            let what = vol
                .as_object()
                .and_then(|m| m.keys().find(|k| *k != "name").cloned())
                .unwrap_or_default();
            return Err((
                "CreateContainerConfigError".into(),
                format!("fake-kube: volume \"{vname}\" of type {what} is not supported"),
            ));
        };
        let src_name = src["name"]
            .as_str()
            .or(src["secretName"].as_str())
            .unwrap_or("");
        let data = match find_object(objects, ns, kind, src_name) {
            Some(obj) => source_data(obj, kind),
            None if src["optional"] == json!(true) => BTreeMap::new(),
            None => {
                return Err((
                    "ContainerCreating".into(),
                    format!("MountVolume.SetUp failed for volume \"{vname}\" : {word} \"{src_name}\" not found"),
                ))
            }
        };
        let dir = pod_dir.join(vname);
        let items: Vec<(String, String)> = match src["items"].as_array() {
            Some(items) => items
                .iter()
                .map(|it| {
                    (
                        it["key"].as_str().unwrap_or("").to_string(),
                        it["path"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect(),
            None => data.keys().map(|k| (k.clone(), k.clone())).collect(),
        };
        for (key, path) in items {
            match data.get(&key) {
                Some(v) => files.push((dir.join(&path), v.clone().into_bytes())),
                None => return Err(("ContainerCreating".into(), format!("MountVolume.SetUp failed for volume \"{vname}\" : configmap references non-existent config key: {key}"))),
            }
        }
        let host = match vm["subPath"].as_str() {
            Some(sub) if !sub.is_empty() => dir.join(sub),
            _ => dir,
        };
        flags.extend(argv!["-v", format!("{}:{mount}:ro", host.display())]);
    }
    Ok((flags, files))
}

/// Plans the pods of every Deployment (replicas > 0) and Job: pure given the state.
/// `vol_root` is where configMap / secret volume files go.
pub fn plan_pods(cluster: &Cluster, objects: &Objects, vol_root: &Path) -> Vec<PodPlan> {
    let loaded: Vec<String> = cluster.images.iter().map(|i| i.reference.clone()).collect();
    let mut published = BTreeSet::new();
    let mut plans = Vec::new();
    for (key, obj) in objects {
        let kind = key.split('/').nth(1).unwrap_or("");
        if kind != "Deployment" && kind != "Job" {
            continue;
        }
        if kind == "Deployment" && obj["spec"]["replicas"].as_i64().unwrap_or(1) == 0 {
            continue;
        }
        plans.push(plan_pod(
            cluster,
            objects,
            obj,
            kind,
            &loaded,
            &mut published,
            vol_root,
        ));
    }
    plans
}

fn plan_pod(
    cluster: &Cluster,
    objects: &Objects,
    obj: &Value,
    kind: &str,
    loaded: &[String],
    published: &mut BTreeSet<u16>,
    vol_root: &Path,
) -> PodPlan {
    let meta = &obj["metadata"];
    let owner = meta["name"].as_str().unwrap_or("").to_string();
    let ns = meta["namespace"].as_str().unwrap_or("default").to_string();
    let uid = meta["uid"].as_str().unwrap_or("").to_string();
    let template = &obj["spec"]["template"];
    let spec = &template["spec"];
    let container = spec["containers"][0].clone();
    let name = format!("{owner}-fake-0");
    let mut labels = str_map(&template["metadata"]["labels"]);
    if kind == "Job" {
        for k in ["job-name", "batch.kubernetes.io/job-name"] {
            labels.insert(k.into(), owner.clone());
        }
        for k in ["controller-uid", "batch.kubernetes.io/controller-uid"] {
            labels.insert(k.into(), uid.clone());
        }
    } else {
        labels.insert(
            "pod-template-hash".into(),
            fnv64(&template.to_string())[..10].to_string(),
        );
    }
    let image = container["image"].as_str().unwrap_or("").to_string();
    let pull_policy = effective_pull_policy(&image, container["imagePullPolicy"].as_str());
    let restart_policy = spec["restartPolicy"]
        .as_str()
        .unwrap_or("Always")
        .to_string();
    let backoff_limit = obj["spec"]["backoffLimit"].as_i64().unwrap_or(6);
    let container_name = format!("kindfake-{}-{ns}-{name}", cluster.name);
    let created = meta["creationTimestamp"]
        .as_str()
        .and_then(crate::util::parse_rfc3339)
        .unwrap_or(0);
    let mut plan = PodPlan {
        name: name.clone(),
        namespace: ns.clone(),
        owner_kind: kind.into(),
        owner: owner.clone(),
        owner_uid: uid,
        labels: labels.clone(),
        container_name: container_name.clone(),
        container: container.clone(),
        image: image.clone(),
        pull_policy: pull_policy.clone(),
        restart_policy: restart_policy.clone(),
        backoff_limit,
        created,
        action: Action::Wait {
            reason: String::new(),
            message: String::new(),
        },
    };
    let wait = |reason: &str, message: String| Action::Wait {
        reason: reason.into(),
        message,
    };
    if let Err((reason, message)) = image_decision(&image, &pull_policy, loaded) {
        plan.action = wait(&reason, message);
        return plan;
    }
    let env = match resolve_env(&container, &ns, &name, &cluster.node_name(), objects) {
        Ok(env) => env,
        Err(m) => {
            plan.action = wait("CreateContainerConfigError", m);
            return plan;
        }
    };
    let (volume_args, files) = match volume_flags(
        spec,
        &container,
        &ns,
        objects,
        &vol_root.join(&ns).join(&name),
    ) {
        Ok(v) => v,
        Err((reason, m)) => {
            plan.action = wait(&reason, m);
            return plan;
        }
    };
    let (aliases, ports) =
        match service_wiring(cluster, objects, &ns, &labels, &container, published) {
            Ok(v) => v,
            Err(m) => {
                plan.action = wait("CreateContainerConfigError", m);
                return plan;
            }
        };
    let mut args = Vec::from(argv![
        "run",
        "-d",
        "--name",
        &container_name,
        "--hostname",
        &name,
        "--network",
        cluster.network()
    ]);
    for a in aliases {
        args.extend(argv!["--network-alias", a]);
    }
    let mut container_labels = vec![
        (CLUSTER_LABEL.to_string(), cluster.name.clone()),
        (POD_LABEL.into(), name.clone()),
        (NS_LABEL.into(), ns.clone()),
        (OWNER_LABEL.into(), format!("{kind}/{owner}")),
    ];
    container_labels.extend(
        cluster
            .node_labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    container_labels.extend(
        labels
            .iter()
            .map(|(k, v)| (format!("{TEMPLATE_LABEL_PREFIX}{k}"), v.clone())),
    );
    for (k, v) in container_labels {
        args.extend(argv!["--label", format!("{k}={v}")]);
    }
    let restart = match (kind, restart_policy.as_str()) {
        // Deployments: the fake kubelet restarts them with back-off (see `kubelet_restarts`).
        ("Deployment", _) => "no".to_string(),
        (_, "OnFailure") if backoff_limit > 0 => format!("on-failure:{backoff_limit}"),
        _ => "no".into(),
    };
    args.extend(argv!["--pull=never", format!("--restart={restart}")]);
    if let Some(cmd) = container["command"].as_array() {
        let cmd: Vec<String> = cmd
            .iter()
            .map(|c| expand(c.as_str().unwrap_or(""), &env))
            .collect();
        args.extend(argv![
            "--entrypoint",
            serde_json::to_string(&cmd).unwrap_or_default()
        ]);
    }
    let security = |f: &str| {
        container["securityContext"][f]
            .as_i64()
            .or(spec["securityContext"][f].as_i64())
    };
    if let Some(uid) = security("runAsUser") {
        let user = match security("runAsGroup") {
            Some(gid) => format!("{uid}:{gid}"),
            None => uid.to_string(),
        };
        args.extend(argv!["--user", user]);
    }
    if let Some(wd) = container["workingDir"].as_str() {
        args.extend(argv!["--workdir", wd]);
    }
    for (k, v) in &env {
        args.extend(argv!["--env", format!("{k}={v}")]);
    }
    args.extend(volume_args);
    for p in ports {
        args.extend(argv!["-p", p]);
    }
    let mut fingerprint = args.join("\u{0}");
    for (path, data) in &files {
        fingerprint.push_str(&format!(
            "\u{0}{}\u{0}{}",
            path.display(),
            String::from_utf8_lossy(data)
        ));
    }
    let container_args: Vec<String> = container["args"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| expand(a.as_str().unwrap_or(""), &env))
        .collect();
    fingerprint.push_str(&format!(
        "\u{0}{image}\u{0}{}",
        container_args.join("\u{0}")
    ));
    let hash = fnv64(&fingerprint);
    args.extend(argv!["--label", format!("{HASH_LABEL}={hash}"), &image]);
    args.extend(container_args);
    plan.action = Action::Run {
        argv: args,
        hash,
        files,
    };
    plan
}

/// A pod container as `podman container inspect` describes it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    /// podman's state: created, running, exited, stopped, paused, ...
    pub status: String,
    pub exit_code: i64,
    pub restart_count: i64,
    pub started: Option<i64>,
    pub finished: Option<i64>,
    pub oom_killed: bool,
    pub ip: Option<String>,
    pub image_id: String,
    pub labels: BTreeMap<String, String>,
    /// Exit code of the run before the latest restart (from the fake kubelet's records).
    pub last_exit: Option<i64>,
    /// Seconds the fake kubelet waits before restarting this container when it has exited.
    pub backoff: i64,
}

impl ContainerInfo {
    pub fn from_inspect(v: &Value, network: &str) -> ContainerInfo {
        let time = |s: &Value| {
            s.as_str()
                .and_then(crate::util::parse_rfc3339)
                .filter(|t| *t > 0)
        };
        let st = &v["State"];
        ContainerInfo {
            id: v["Id"].as_str().unwrap_or("").to_string(),
            name: v["Name"]
                .as_str()
                .unwrap_or("")
                .trim_start_matches('/')
                .to_string(),
            status: st["Status"].as_str().unwrap_or("unknown").to_string(),
            exit_code: st["ExitCode"].as_i64().unwrap_or(0),
            restart_count: v["RestartCount"].as_i64().unwrap_or(0),
            started: time(&st["StartedAt"]),
            finished: time(&st["FinishedAt"]),
            oom_killed: st["OOMKilled"].as_bool().unwrap_or(false),
            ip: v["NetworkSettings"]["Networks"][network]["IPAddress"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(String::from),
            image_id: v["Image"].as_str().unwrap_or("").to_string(),
            labels: str_map(&v["Config"]["Labels"]),
            last_exit: None,
            backoff: 0,
        }
    }
}

/// Every container of the cluster (by label).
pub fn list_containers(cluster: &Cluster) -> Res<Vec<ContainerInfo>> {
    for attempt in 0..3 {
        let ids = podman_ok(&argv![
            "ps",
            "-a",
            "-q",
            "--filter",
            format!("label={CLUSTER_LABEL}={}", cluster.name)
        ])?;
        let ids: Vec<String> = ids.split_whitespace().map(String::from).collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = Vec::from(argv!["container", "inspect"]);
        cmd.extend(ids);
        let out = podman(&cmd)?;
        // A container removed between `ps` and `inspect` fails the call: list again.
        if out.status.success() || attempt == 2 {
            let arr: Value = serde_json::from_slice(&out.stdout).unwrap_or(json!([]));
            return Ok(arr
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| ContainerInfo::from_inspect(v, &cluster.network()))
                .collect());
        }
    }
    Ok(Vec::new())
}

/// The computed status of a pod's single container.
#[derive(Debug, Clone, PartialEq)]
pub struct PodStatus {
    pub phase: String,
    pub ready: bool,
    pub restart_count: i64,
    /// containerStatuses[0].state
    pub state: Value,
    pub last_state: Value,
    /// What `kubectl get pods` shows in STATUS.
    pub display: String,
}

/// Seconds after which an image pull error turns into ImagePullBackOff.
pub const CRASH_WINDOW: i64 = 10;

/// Kubelet's restart back-off after `restarts` restarts: 0 (restart at once), 10 s, 20 s, 40 s,
/// ... capped at 300 s.
pub fn backoff_secs(restarts: i64) -> i64 {
    match restarts {
        ..=0 => 0,
        n => (10i64 << (n - 1).min(5)).min(300),
    }
}

/// Pod status from the plan, the container (if any) and the readiness probe result: pure.
pub fn pod_status(
    plan: &PodPlan,
    c: Option<&ContainerInfo>,
    pod_error: Option<&str>,
    probe_ok: bool,
    inj: &Injections,
    now: i64,
) -> PodStatus {
    let waiting =
        |phase: &str, reason: &str, message: &str, restarts: i64, last: Value| PodStatus {
            phase: phase.into(),
            ready: false,
            restart_count: restarts,
            state: json!({"waiting": {"reason": reason, "message": message}}),
            last_state: last,
            display: reason.into(),
        };
    let terminated = |c: &ContainerInfo| {
        let reason = if c.oom_killed {
            "OOMKilled"
        } else if c.exit_code == 0 {
            "Completed"
        } else {
            "Error"
        };
        json!({"terminated": {"exitCode": c.exit_code, "reason": reason,
            "startedAt": c.started.map(rfc3339), "finishedAt": c.finished.map(rfc3339), "containerID": format!("podman://{}", c.id)}})
    };
    let crash_msg = format!(
        "back-off {}s restarting failed container={} pod={}",
        c.map_or(10, |c| c.backoff.max(10)),
        plan.container_k8s_name(),
        plan.name
    );
    if inj.pod("pod-crash", &plan.owner) {
        let last = json!({"terminated": {"exitCode": 1, "reason": "Error"}});
        return waiting(
            "Running",
            "CrashLoopBackOff",
            &crash_msg,
            c.map_or(0, |c| c.restart_count).max(3),
            last,
        );
    }
    if let Action::Wait { reason, message } = &plan.action {
        let reason = match reason.as_str() {
            "ErrImagePull" if now - plan.created >= CRASH_WINDOW => "ImagePullBackOff",
            r => r,
        };
        let message = if reason == "ImagePullBackOff" {
            format!("Back-off pulling image \"{}\"", plan.image)
        } else {
            message.clone()
        };
        return waiting("Pending", reason, &message, 0, json!({}));
    }
    let Some(c) = c else {
        return match pod_error {
            Some(e) => waiting("Pending", "CreateContainerError", e, 0, json!({})),
            None => waiting("Pending", "ContainerCreating", "", 0, json!({})),
        };
    };
    let unready = inj.pod("pod-unready", &plan.owner);
    let running = json!({"running": {"startedAt": c.started.map(rfc3339)}});
    let up = |ready: bool, last: Value| PodStatus {
        phase: "Running".into(),
        ready,
        restart_count: c.restart_count,
        state: running.clone(),
        last_state: last,
        display: "Running".into(),
    };
    let last_crash = match c.last_exit {
        Some(code) if c.restart_count > 0 => {
            json!({"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" }}})
        }
        _ => json!({}),
    };
    match c.status.as_str() {
        "running" => up(probe_ok && !unready, last_crash),
        "paused" => up(false, last_crash),
        "exited" | "stopped" | "dead" => {
            if plan.is_job() {
                let gave_up =
                    plan.restart_policy != "OnFailure" || c.restart_count >= plan.backoff_limit;
                if unready {
                    up(false, json!({}))
                } else if c.exit_code == 0 {
                    PodStatus {
                        phase: "Succeeded".into(),
                        ready: false,
                        restart_count: c.restart_count,
                        state: terminated(c),
                        last_state: json!({}),
                        display: "Completed".into(),
                    }
                } else if gave_up {
                    PodStatus {
                        phase: "Failed".into(),
                        ready: false,
                        restart_count: c.restart_count,
                        state: terminated(c),
                        last_state: json!({}),
                        display: "Error".into(),
                    }
                } else {
                    waiting(
                        "Running",
                        "CrashLoopBackOff",
                        &crash_msg,
                        c.restart_count,
                        terminated(c),
                    )
                }
            } else {
                waiting(
                    "Running",
                    "CrashLoopBackOff",
                    &crash_msg,
                    c.restart_count,
                    terminated(c),
                )
            }
        }
        _ => waiting(
            "Pending",
            "ContainerCreating",
            "",
            c.restart_count,
            json!({}),
        ),
    }
}

fn probe_port(v: &Value, container: &Value) -> Option<u16> {
    resolve_port(v, container).and_then(|p| u16::try_from(p).ok())
}

/// Runs a readiness probe once against the container. Ok = ready; Err = why not.
pub fn run_probe(probe: &Value, plan: &PodPlan, c: &ContainerInfo, now: i64) -> Result<(), String> {
    let delay = probe["initialDelaySeconds"].as_i64().unwrap_or(0);
    if c.started.is_some_and(|s| now - s < delay) {
        return Err(format!("initialDelaySeconds {delay} not yet elapsed"));
    }
    let timeout = Duration::from_secs(probe["timeoutSeconds"].as_u64().unwrap_or(1).clamp(1, 3));
    let addr = |port: u16| -> Result<SocketAddr, String> {
        let ip =
            c.ip.as_deref()
                .ok_or("the container has no IP address on the cluster network")?;
        format!("{ip}:{port}")
            .parse()
            .map_err(|e| format!("bad address {ip}:{port}: {e}"))
    };
    let https = probe["httpGet"]["scheme"].as_str() == Some("HTTPS");
    if let Some(h) = probe.get("httpGet").filter(|_| !https) {
        let port = probe_port(&h["port"], &plan.container)
            .ok_or("httpGet port names no container port")?;
        let path = h["path"].as_str().unwrap_or("/");
        let a = addr(port)?;
        let mut s = TcpStream::connect_timeout(&a, timeout)
            .map_err(|e| format!("Get \"http://{a}{path}\": dial tcp {a}: {e}"))?;
        s.set_read_timeout(Some(timeout)).ok();
        s.set_write_timeout(Some(timeout)).ok();
        let req = format!("GET {path} HTTP/1.1\r\nHost: {a}\r\nUser-Agent: kube-probe/1.32\r\nAccept: */*\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes())
            .map_err(|e| format!("Get \"http://{a}{path}\": {e}"))?;
        let mut buf = [0u8; 64];
        let mut got = Vec::new();
        while !got.contains(&b'\n') && got.len() < 1024 {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => return Err(format!("Get \"http://{a}{path}\": {e} (Client.Timeout exceeded while awaiting headers)")),
            }
        }
        let line = String::from_utf8_lossy(&got);
        let code: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("Get \"http://{a}{path}\": malformed HTTP response"))?;
        return if (200..400).contains(&code) {
            Ok(())
        } else {
            Err(format!("HTTP probe failed with statuscode: {code}"))
        };
    }
    // HTTPS and gRPC probes only check that the port accepts connections.
    if let Some(t) = probe
        .get("tcpSocket")
        .or(probe.get("grpc"))
        .or(probe.get("httpGet"))
    {
        let port = probe_port(&t["port"], &plan.container)
            .ok_or("tcpSocket port names no container port")?;
        let a = addr(port)?;
        return TcpStream::connect_timeout(&a, timeout)
            .map(|_| ())
            .map_err(|e| format!("dial tcp {a}: {e}"));
    }
    if let Some(e) = probe.get("exec") {
        let mut cmd = std::process::Command::new(crate::util::podman_bin());
        cmd.args(["exec", &c.name]);
        cmd.args(
            e["command"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| a.as_str().unwrap_or("")),
        );
        return match crate::util::run_with_timeout(cmd, timeout + Duration::from_secs(2)) {
            Some((0, _)) => Ok(()),
            Some((code, out)) => Err(format!(
                "command failed with exit code {code}: {}",
                out.trim()
            )),
            None => Err(format!("command timed out after {}s", timeout.as_secs())),
        };
    }
    Ok(())
}

/// The fake kubelet: restarts exited Deployment containers whose back-off has elapsed (podman
/// 4.3's `--restart=always` restarts without any back-off, several times a second), and adds
/// its restart records to `containers`. Runs when pods are observed (`kubectl get`, `wait`, ...),
/// so a crashed pod restarts only while someone looks. Takes the cluster lock when restarting.
fn kubelet_restarts(
    cluster: &Cluster,
    plans: &[PodPlan],
    containers: &mut Vec<ContainerInfo>,
    now: i64,
) -> Res<()> {
    let mut recs = state::load_restarts(&cluster.name)?;
    let due = |c: &ContainerInfo, recs: &BTreeMap<String, state::RestartRec>| {
        let count = recs.get(&c.id).map_or(0, |r| r.count);
        matches!(c.status.as_str(), "exited" | "stopped")
            && plans
                .iter()
                .any(|p| !p.is_job() && p.container_name == c.name)
            && c.finished.unwrap_or(0) + backoff_secs(count) <= now
    };
    if containers.iter().any(|c| due(c, &recs)) {
        let _lock = state::lock(&cluster.name)?;
        recs = state::load_restarts(&cluster.name)?;
        let due_now: Vec<&ContainerInfo> = containers.iter().filter(|c| due(c, &recs)).collect();
        for c in due_now {
            if podman(&argv!["start", &c.id])?.status.success() {
                let rec = recs.entry(c.id.clone()).or_default();
                rec.count += 1;
                rec.last_exit = c.exit_code;
            }
        }
        recs.retain(|id, _| containers.iter().any(|c| &c.id == id));
        state::save_restarts(&cluster.name, &recs)?;
        *containers = list_containers(cluster)?;
    }
    for c in containers.iter_mut() {
        if let Some(r) = recs.get(&c.id) {
            c.restart_count += r.count;
            c.last_exit = Some(r.last_exit);
            c.backoff = backoff_secs(r.count);
        }
    }
    Ok(())
}

/// A pod as observed now.
#[derive(Debug, Clone)]
pub struct ObservedPod {
    pub plan: PodPlan,
    pub container: Option<ContainerInfo>,
    pub status: PodStatus,
    /// The readiness probe's failure, if it ran and failed.
    pub probe_error: Option<String>,
    pub node: String,
}

/// Plans, inspects and probes the pods of a cluster (of one namespace when `ns` is given).
pub fn observe(cluster: &Cluster, objects: &Objects, ns: Option<&str>) -> Res<Vec<ObservedPod>> {
    let mut plans: Vec<PodPlan> = plan_pods(cluster, objects, &volume_root(cluster)?)
        .into_iter()
        .filter(|p| ns.is_none_or(|n| n == p.namespace))
        .collect();
    plans.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let mut containers = if plans.is_empty() {
        Vec::new()
    } else {
        list_containers(cluster)?
    };
    kubelet_restarts(cluster, &plans, &mut containers, now_s())?;
    let errors = state::load_pod_errors(&cluster.name)?;
    let inj = Injections::from_env();
    let now = now_s();
    let probes: Vec<Option<Result<(), String>>> = std::thread::scope(|s| {
        let handles: Vec<_> = plans
            .iter()
            .map(|plan| {
                let c = containers.iter().find(|c| c.name == plan.container_name);
                s.spawn(move || {
                    let c = c.filter(|c| c.status == "running")?;
                    Some(match plan.container.get("readinessProbe") {
                        Some(p) => run_probe(p, plan, c, now),
                        None => Ok(()),
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(None))
            .collect()
    });
    Ok(plans
        .into_iter()
        .zip(probes)
        .map(|(plan, probe)| {
            let container = containers
                .iter()
                .find(|c| c.name == plan.container_name)
                .cloned();
            let probe_ok = matches!(probe, Some(Ok(())));
            let status = pod_status(
                &plan,
                container.as_ref(),
                errors.get(&plan.key()).map(String::as_str),
                probe_ok,
                &inj,
                now,
            );
            ObservedPod {
                plan,
                container,
                status,
                probe_error: probe.and_then(Result::err),
                node: cluster.node_name(),
            }
        })
        .collect())
}

impl ObservedPod {
    /// The Pod object as the API server would return it.
    pub fn to_json(&self) -> Value {
        let p = &self.plan;
        let s = &self.status;
        let c = &p.container;
        let (owner_api, owner_kind, owner_name) = if p.is_job() {
            ("batch/v1", "Job", p.owner.clone())
        } else {
            (
                "apps/v1",
                "ReplicaSet",
                format!(
                    "{}-{}",
                    p.owner,
                    p.labels
                        .get("pod-template-hash")
                        .cloned()
                        .unwrap_or_default()
                ),
            )
        };
        let cond = |t: &str, ok: bool| json!({"type": t, "status": if ok { "True" } else { "False" }, "lastProbeTime": null});
        let started = self.container.as_ref().and_then(|c| c.started);
        let running_or_done = s.phase != "Pending";
        let mut cstatus = json!({
            "name": c["name"], "image": p.image, "imageID": self.container.as_ref().map(|c| c.image_id.clone()).unwrap_or_default(),
            "ready": s.ready, "started": s.state.get("running").is_some(), "restartCount": s.restart_count,
            "state": s.state, "lastState": s.last_state,
        });
        if let Some(ci) = &self.container {
            cstatus["containerID"] = json!(format!("podman://{}", ci.id));
        }
        let mut spec_c =
            json!({"name": c["name"], "image": p.image, "imagePullPolicy": p.pull_policy});
        for f in [
            "command",
            "args",
            "ports",
            "env",
            "envFrom",
            "readinessProbe",
            "livenessProbe",
            "workingDir",
            "volumeMounts",
            "resources",
        ] {
            if let Some(v) = c.get(f) {
                spec_c[f] = v.clone();
            }
        }
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": p.name, "namespace": p.namespace, "labels": p.labels,
                "uid": crate::util::uuid_like(&format!("{}/pod", p.owner_uid)),
                "creationTimestamp": rfc3339(p.created),
                "annotations": {"fake-kube/container": p.container_name},
                "ownerReferences": [{"apiVersion": owner_api, "kind": owner_kind, "name": owner_name, "uid": p.owner_uid, "controller": true, "blockOwnerDeletion": true}],
            },
            "spec": {"containers": [spec_c], "restartPolicy": p.restart_policy, "nodeName": self.node},
            "status": {
                "phase": s.phase,
                "conditions": [cond("PodScheduled", true), cond("Initialized", true), cond("ContainersReady", s.ready), cond("Ready", s.ready)],
                "hostIP": "127.0.0.1",
                "podIP": self.container.as_ref().and_then(|c| c.ip.clone()),
                "startTime": if running_or_done { json!(started.map(rfc3339)) } else { json!(rfc3339(p.created)) },
                "containerStatuses": [cstatus],
            },
        })
    }
}

pub fn volume_root(cluster: &Cluster) -> Res<PathBuf> {
    Ok(state::cluster_dir(&cluster.name)?.join("volumes"))
}

/// Makes podman match the plans: starts missing or changed pod containers, removes containers of
/// pods that no longer exist (or cannot start). A Job's container, once created, is never
/// replaced (Jobs are immutable and run once). Call with the cluster lock held. Returns warnings
/// for stderr.
pub fn reconcile(cluster: &Cluster, objects: &Objects) -> Res<Vec<String>> {
    let plans = plan_pods(cluster, objects, &volume_root(cluster)?);
    let containers = list_containers(cluster)?;
    let mut errors = BTreeMap::new();
    let mut warnings = Vec::new();
    let remove = |name: &str| podman(&argv!["rm", "-f", "-t", "0", name]).map(|_| ());
    for plan in &plans {
        let existing = containers.iter().find(|c| c.name == plan.container_name);
        match &plan.action {
            Action::Wait { .. } => {
                if let Some(c) = existing.filter(|_| !plan.is_job()) {
                    remove(&c.name)?;
                }
            }
            Action::Run { argv, hash, files } => {
                if let Some(c) = existing {
                    if plan.is_job() || c.labels.get(HASH_LABEL) == Some(hash) {
                        continue;
                    }
                    remove(&c.name)?;
                }
                // Fresh volume files: keys removed from a ConfigMap must not linger.
                let _ = std::fs::remove_dir_all(
                    volume_root(cluster)?.join(&plan.namespace).join(&plan.name),
                );
                for (path, data) in files {
                    crate::util::write_atomic(path, data)?;
                }
                let out = podman(argv)?;
                if !out.status.success() {
                    let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
                    warnings.push(format!(
                        "fake-kube: warning: pod {}/{}: podman run failed: {msg}",
                        plan.namespace, plan.name
                    ));
                    errors.insert(plan.key(), msg);
                    // podman may leave a created-but-not-started container behind.
                    remove(&plan.container_name)?;
                }
            }
        }
    }
    for c in &containers {
        if !plans.iter().any(|p| p.container_name == c.name) {
            remove(&c.name)?;
        }
    }
    state::save_pod_errors(&cluster.name, &errors)?;
    Ok(warnings)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{object_key, LoadedImage, PortMapping};
    use crate::util::b64_encode;

    fn cluster(images: &[&str]) -> Cluster {
        Cluster {
            name: "c1".into(),
            node_labels: [("team".to_string(), "a".to_string())].into(),
            port_mappings: vec![PortMapping {
                container_port: 30080,
                host_port: 18080,
                listen_address: "0.0.0.0".into(),
                protocol: "TCP".into(),
            }],
            images: images
                .iter()
                .map(|r| LoadedImage {
                    reference: r.to_string(),
                    id: "x".into(),
                    archive: "a.tar".into(),
                })
                .collect(),
            ..Default::default()
        }
    }

    fn objects() -> Objects {
        let mut o = Objects::new();
        o.insert(object_key("ns", "Secret", "db"), json!({"metadata": {"name": "db", "namespace": "ns"}, "data": {"password": b64_encode(b"s3cret"), "user": b64_encode(b"slm")}}));
        o.insert(object_key("ns", "ConfigMap", "cfg"), json!({"metadata": {"name": "cfg", "namespace": "ns"}, "data": {"LOG_LEVEL": "debug", "app.toml": "x = 1\n"}}));
        o.insert(object_key("ns", "Service", "web"), json!({"metadata": {"name": "web", "namespace": "ns"},
            "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 8080, "targetPort": 8080, "nodePort": 30080, "protocol": "TCP"}]}}));
        o.insert(object_key("ns", "Deployment", "web"), json!({"metadata": {"name": "web", "namespace": "ns", "uid": "u1", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{
                "name": "web", "image": "localhost/web:t1", "imagePullPolicy": "Never", "args": ["--port", "$(PORT)"],
                "ports": [{"name": "http", "containerPort": 8080}],
                "env": [{"name": "PORT", "value": "8080"}, {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}],
                "envFrom": [{"configMapRef": {"name": "cfg"}}],
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, {"name": "conf", "mountPath": "/etc/app"}]}],
                "volumes": [{"name": "tmp", "emptyDir": {}}, {"name": "conf", "configMap": {"name": "cfg", "items": [{"key": "app.toml", "path": "app.toml"}]}}]}}}}));
        o.insert(object_key("ns", "Job", "migrate"), json!({"metadata": {"name": "migrate", "namespace": "ns", "uid": "u2"},
            "spec": {"backoffLimit": 2, "template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "m", "image": "localhost/web:t1", "command": ["/bin/migrate"]}]}}}}));
        o
    }

    #[test]
    fn pull_policy_defaults() {
        assert_eq!(effective_pull_policy("localhost/x:1", None), "IfNotPresent");
        assert_eq!(effective_pull_policy("localhost/x", None), "Always");
        assert_eq!(effective_pull_policy("localhost/x:latest", None), "Always");
        assert_eq!(effective_pull_policy("x@sha256:00", None), "IfNotPresent");
        assert_eq!(
            effective_pull_policy("localhost/x:latest", Some("Never")),
            "Never"
        );
    }

    #[test]
    fn image_rule() {
        let loaded = vec![
            "localhost/app:t1".to_string(),
            "docker.io/library/redis:7".to_string(),
        ];
        assert!(image_decision("localhost/app:t1", "Never", &loaded).is_ok());
        assert!(image_decision("localhost/app:t1", "IfNotPresent", &loaded).is_ok());
        assert!(
            image_decision("redis:7", "IfNotPresent", &loaded).is_ok(),
            "docker.io/library/ normalised"
        );
        assert_eq!(
            image_decision("localhost/app:t2", "Never", &loaded)
                .unwrap_err()
                .0,
            "ErrImageNeverPull"
        );
        assert_eq!(
            image_decision("localhost/app:t2", "IfNotPresent", &loaded)
                .unwrap_err()
                .0,
            "ErrImagePull"
        );
        assert_eq!(
            image_decision("localhost/app:t1", "Always", &loaded)
                .unwrap_err()
                .0,
            "ErrImagePull",
            "no registry"
        );
        assert_eq!(
            image_decision("app:t1", "Never", &loaded).unwrap_err().0,
            "ErrImageNeverPull",
            "app:t1 is docker.io/library/app:t1"
        );
        let msg = image_decision("localhost/app:t2", "Never", &loaded)
            .unwrap_err()
            .1;
        assert_eq!(
            msg,
            "Container image \"localhost/app:t2\" is not present with pull policy of Never"
        );
    }

    #[test]
    fn env_resolution() {
        let o = objects();
        let c =
            &o[&object_key("ns", "Deployment", "web")]["spec"]["template"]["spec"]["containers"][0];
        let env = resolve_env(c, "ns", "web-fake-0", "c1-control-plane", &o).unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("DB_PASSWORD"), Some("s3cret"));
        assert_eq!(get("LOG_LEVEL"), Some("debug"));
        assert_eq!(get("PORT"), Some("8080"));
        let missing = json!({"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k"}}}]});
        assert_eq!(
            resolve_env(&missing, "ns", "p", "n", &o).unwrap_err(),
            "secret \"nope\" not found"
        );
        let badkey = json!({"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "db", "key": "k"}}}]});
        assert_eq!(
            resolve_env(&badkey, "ns", "p", "n", &o).unwrap_err(),
            "couldn't find key k in Secret ns/db"
        );
        let optional = json!({"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "nope", "key": "k", "optional": true}}},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}, {"name": "URL", "value": "http://$(POD):$(NOPE)/$$(x)"}],
            "envFrom": [{"secretRef": {"name": "db"}, "prefix": "DB_"}]});
        let env = resolve_env(&optional, "ns", "p", "n", &o).unwrap();
        assert_eq!(
            env,
            [
                ("DB_password".into(), "s3cret".into()),
                ("DB_user".into(), "slm".into()),
                ("POD".into(), "p".into()),
                ("URL".to_string(), "http://p:$(NOPE)/$(x)".to_string())
            ]
        );
    }

    #[test]
    fn plans_a_deployment_with_service_wiring() {
        let o = objects();
        let plans = plan_pods(&cluster(&["localhost/web:t1"]), &o, Path::new("/state/vol"));
        assert_eq!(plans.len(), 2);
        let web = plans.iter().find(|p| p.owner == "web").unwrap();
        assert_eq!(web.name, "web-fake-0");
        assert_eq!(web.container_name, "kindfake-c1-ns-web-fake-0");
        let Action::Run { argv, files, .. } = &web.action else {
            panic!("{:?}", web.action)
        };
        let joined = argv.join(" ");
        for want in [
            "--network kindfake-c1",
            "--network-alias web --network-alias web.ns --network-alias web.ns.svc --network-alias web.ns.svc.cluster.local",
            "--label io.kubernaut.fake-kube.cluster=c1",
            "--label io.kubernaut.fake-kube.pod=web-fake-0",
            "--label io.kubernaut.fake-kube.namespace=ns",
            "--label team=a",
            "--label io.kubernaut.fake-kube.label.app=web",
            "--restart=no",
            "--env DB_PASSWORD=s3cret",
            "--tmpfs /tmp:rw,exec,mode=1777",
            "-v /state/vol/ns/web-fake-0/conf:/etc/app:ro",
            "-p 0.0.0.0:18080:8080",
            "localhost/web:t1 --port 8080",
        ] {
            assert!(joined.contains(want), "missing {want:?} in {joined}");
        }
        assert_eq!(
            files,
            &[(
                PathBuf::from("/state/vol/ns/web-fake-0/conf/app.toml"),
                b"x = 1\n".to_vec()
            )]
        );
        let job = plans.iter().find(|p| p.owner == "migrate").unwrap();
        let Action::Run { argv, .. } = &job.action else {
            panic!()
        };
        let joined = argv.join(" ");
        assert!(
            joined.contains("--restart=on-failure:2")
                && joined.contains("--entrypoint [\"/bin/migrate\"]"),
            "{joined}"
        );
        assert!(
            !joined.contains("--network-alias"),
            "the Service does not select the job"
        );
        assert_eq!(job.labels["job-name"], "migrate");
    }

    #[test]
    fn plan_waits_for_images_and_config() {
        let mut o = objects();
        let plans = plan_pods(&cluster(&[]), &o, Path::new("/v"));
        assert!(
            matches!(&plans[1].action, Action::Wait { reason, .. } if reason == "ErrImagePull"),
            "job image has IfNotPresent"
        );
        assert!(
            matches!(&plans[0].action, Action::Wait { reason, .. } if reason == "ErrImageNeverPull")
        );
        o.remove(&object_key("ns", "Secret", "db"));
        let plans = plan_pods(&cluster(&["localhost/web:t1"]), &o, Path::new("/v"));
        assert_eq!(
            plans[0].action,
            Action::Wait {
                reason: "CreateContainerConfigError".into(),
                message: "secret \"db\" not found".into()
            }
        );
        // A remapping Service cannot be emulated.
        let mut o = objects();
        o.get_mut(&object_key("ns", "Service", "web")).unwrap()["spec"]["ports"][0]["port"] =
            json!(80);
        let plans = plan_pods(&cluster(&["localhost/web:t1"]), &o, Path::new("/v"));
        assert!(
            matches!(&plans[0].action, Action::Wait { message, .. } if message.contains("port 80 != targetPort 8080"))
        );
        // Named targetPort resolves through the container's ports.
        let mut o = objects();
        o.get_mut(&object_key("ns", "Service", "web")).unwrap()["spec"]["ports"][0]["targetPort"] =
            json!("http");
        let plans = plan_pods(&cluster(&["localhost/web:t1"]), &o, Path::new("/v"));
        assert!(matches!(&plans[0].action, Action::Run { .. }));
    }

    #[test]
    fn spec_hash_changes_with_the_spec_only() {
        let o = objects();
        let c = cluster(&["localhost/web:t1"]);
        let hash = |o: &Objects| match &plan_pods(&c, o, Path::new("/v"))[0].action {
            Action::Run { hash, .. } => hash.clone(),
            other => panic!("{other:?}"),
        };
        let h1 = hash(&o);
        assert_eq!(h1, hash(&o));
        let mut o2 = o.clone();
        o2.get_mut(&object_key("ns", "ConfigMap", "cfg")).unwrap()["data"]["LOG_LEVEL"] =
            json!("info");
        assert_ne!(h1, hash(&o2));
    }

    fn plan_for(kind: &str) -> PodPlan {
        let plans = plan_pods(&cluster(&["localhost/web:t1"]), &objects(), Path::new("/v"));
        plans.into_iter().find(|p| p.owner_kind == kind).unwrap()
    }

    fn info(status: &str, exit: i64, restarts: i64, started: i64) -> ContainerInfo {
        ContainerInfo {
            id: "abc".into(),
            name: "n".into(),
            status: status.into(),
            exit_code: exit,
            restart_count: restarts,
            started: Some(started),
            ..Default::default()
        }
    }

    #[test]
    fn status_from_container_state() {
        let none = Injections::default();
        let web = plan_for("Deployment");
        let s = pod_status(
            &web,
            Some(&info("running", 0, 0, 100)),
            None,
            true,
            &none,
            200,
        );
        assert_eq!(
            (s.phase.as_str(), s.ready, s.display.as_str()),
            ("Running", true, "Running")
        );
        let s = pod_status(
            &web,
            Some(&info("running", 0, 0, 100)),
            None,
            false,
            &none,
            200,
        );
        assert!(!s.ready);
        // Restarted by the fake kubelet: running again, last run's exit code kept.
        let restarted = ContainerInfo {
            last_exit: Some(3),
            ..info("running", 0, 4, 195)
        };
        let s = pod_status(&web, Some(&restarted), None, true, &none, 200);
        assert_eq!(
            (s.display.as_str(), s.restart_count, s.ready),
            ("Running", 4, true)
        );
        assert_eq!(s.last_state["terminated"]["exitCode"], 3);
        let crashed = ContainerInfo {
            backoff: 40,
            ..info("exited", 1, 2, 100)
        };
        let s = pod_status(&web, Some(&crashed), None, true, &none, 200);
        assert!(s.state["waiting"]["message"]
            .as_str()
            .unwrap()
            .starts_with("back-off 40s restarting failed container=web"));
        let s = pod_status(
            &web,
            Some(&info("exited", 1, 2, 100)),
            None,
            true,
            &none,
            200,
        );
        assert_eq!(s.state["waiting"]["reason"], "CrashLoopBackOff");
        assert_eq!(s.last_state["terminated"]["exitCode"], 1);
        let s = pod_status(&web, None, None, true, &none, 200);
        assert_eq!(
            (s.phase.as_str(), s.display.as_str()),
            ("Pending", "ContainerCreating")
        );
        let s = pod_status(
            &web,
            None,
            Some("port is already allocated"),
            true,
            &none,
            200,
        );
        assert_eq!(s.display, "CreateContainerError");
        let job = plan_for("Job");
        let s = pod_status(
            &job,
            Some(&info("exited", 0, 0, 100)),
            None,
            false,
            &none,
            200,
        );
        assert_eq!(
            (s.phase.as_str(), s.display.as_str()),
            ("Succeeded", "Completed")
        );
        assert_eq!(s.state["terminated"]["reason"], "Completed");
        let s = pod_status(
            &job,
            Some(&info("exited", 3, 2, 100)),
            None,
            false,
            &none,
            200,
        );
        assert_eq!(s.phase, "Failed", "backoffLimit 2 reached");
        let s = pod_status(
            &job,
            Some(&info("exited", 3, 1, 100)),
            None,
            false,
            &none,
            200,
        );
        assert_eq!(s.display, "CrashLoopBackOff", "OnFailure retries left");
    }

    #[test]
    fn status_with_injections_and_waiting_images() {
        let web = plan_for("Deployment");
        let crash = Injections::parse("pod-crash:web");
        let s = pod_status(
            &web,
            Some(&info("running", 0, 0, 100)),
            None,
            true,
            &crash,
            200,
        );
        assert_eq!(
            (s.display.as_str(), s.ready, s.restart_count),
            ("CrashLoopBackOff", false, 3)
        );
        let unready = Injections::parse("pod-unready:web,pod-unready:migrate");
        let s = pod_status(
            &web,
            Some(&info("running", 0, 0, 100)),
            None,
            true,
            &unready,
            200,
        );
        assert_eq!((s.phase.as_str(), s.ready), ("Running", false));
        let s = pod_status(
            &plan_for("Job"),
            Some(&info("exited", 0, 0, 100)),
            None,
            true,
            &unready,
            200,
        );
        assert_eq!(s.phase, "Running", "job never completes");
        let mut pending = web.clone();
        pending.action = Action::Wait {
            reason: "ErrImagePull".into(),
            message: "m".into(),
        };
        pending.created = 100;
        assert_eq!(
            pod_status(&pending, None, None, true, &Injections::default(), 105).display,
            "ErrImagePull"
        );
        assert_eq!(
            pod_status(&pending, None, None, true, &Injections::default(), 130).display,
            "ImagePullBackOff"
        );
    }

    #[test]
    fn security_context_sets_the_user() {
        let mut o = objects();
        let job = o.get_mut(&object_key("ns", "Job", "migrate")).unwrap();
        job["spec"]["template"]["spec"]["securityContext"] = json!({"runAsUser": 999});
        job["spec"]["template"]["spec"]["containers"][0]["securityContext"] =
            json!({"runAsGroup": 998});
        let plans = plan_pods(&cluster(&["localhost/web:t1"]), &o, Path::new("/v"));
        let Action::Run { argv, .. } = &plans[1].action else {
            panic!()
        };
        assert!(argv.join(" ").contains("--user 999:998"), "{argv:?}");
    }

    #[test]
    fn kubelet_back_off() {
        let secs: Vec<i64> = (0..9).map(backoff_secs).collect();
        assert_eq!(secs, [0, 10, 20, 40, 80, 160, 300, 300, 300]);
    }

    #[test]
    fn container_info_from_inspect() {
        let v = json!({"Id": "abc", "Name": "kindfake-c1-ns-web-fake-0", "RestartCount": 2, "Image": "sha",
            "State": {"Status": "running", "ExitCode": 0, "StartedAt": "2026-11-21T22:52:07.1Z", "FinishedAt": "0001-01-01T00:00:00Z", "OOMKilled": false},
            "NetworkSettings": {"Networks": {"kindfake-c1": {"IPAddress": "10.89.0.3"}}},
            "Config": {"Labels": {"io.kubernaut.fake-kube.pod": "web-fake-0"}}});
        let c = ContainerInfo::from_inspect(&v, "kindfake-c1");
        assert_eq!(c.ip.as_deref(), Some("10.89.0.3"));
        assert_eq!(c.started, Some(1_795_301_527));
        assert_eq!(c.finished, None);
        assert_eq!(c.restart_count, 2);
        assert_eq!(c.labels[POD_LABEL], "web-fake-0");
    }

    #[test]
    fn pod_json_looks_real() {
        let plan = plan_for("Job");
        let status = pod_status(
            &plan,
            Some(&info("exited", 0, 0, 100)),
            None,
            false,
            &Injections::default(),
            200,
        );
        let pod = ObservedPod {
            plan,
            container: Some(info("exited", 0, 0, 100)),
            status,
            probe_error: None,
            node: "c1-control-plane".into(),
        };
        let j = pod.to_json();
        assert_eq!(j["kind"], "Pod");
        assert_eq!(j["metadata"]["labels"]["job-name"], "migrate");
        assert_eq!(j["status"]["phase"], "Succeeded");
        assert_eq!(
            j["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
            0
        );
        assert_eq!(
            j["spec"]["containers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert_eq!(
            j["status"]["conditions"][3],
            json!({"type": "Ready", "status": "False", "lastProbeTime": null})
        );
    }
}
