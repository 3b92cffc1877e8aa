//! Pods: every Deployment and Job runs one pod, `<workload>-fake-0`, as the podman container
//! `kindfake-<cluster>-<namespace>-<pod>` on its namespace's network. Planning is pure (state
//! in, `podman run` argv out); [`sync`] makes podman match the plan like a kubelet whenever pods
//! are applied or looked at, pulling images for real where a pod needs it; statuses are
//! computed at call time, probing readiness once.

use crate::podman;
use crate::state::{self, Cluster, Restart, CLUSTER_LABEL};
use crate::{injected, now_ms, Fail, Res};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

const POD_LABEL: &str = "io.kubernaut.fake-kube.pod";
pub const NS_LABEL: &str = "io.kubernaut.fake-kube.namespace";
const HASH_LABEL: &str = "io.kubernaut.fake-kube.spec-hash";
const TEMPLATE_LABEL: &str = "io.kubernaut.fake-kube.label.";
const PULL_LIMIT: Duration = Duration::from_secs(300);

/// How a pod starts: this `podman run` argv (its hash is also one of its labels), after pulling
/// its image, or why it cannot, as the reason and message its waiting container shows.
#[derive(Debug, Clone, PartialEq)]
pub enum Start {
    Run { argv: Vec<String>, hash: String },
    Pull { image: String },
    Wait { reason: String, message: String },
}

#[derive(Debug, Clone)]
pub struct Pod {
    pub ns: String,
    pub name: String,
    /// The Deployment or Job.
    pub owner: String,
    pub job: bool,
    pub labels: BTreeMap<String, String>,
    /// `spec.template.spec.containers[0]`.
    pub container: Value,
    /// The podman container's name.
    pub engine_name: String,
    /// The pull policy, defaulted like the API server does.
    pub policy: String,
    pub start: Start,
    /// Its folder of mounted files, and the files (by path in it) written there before its
    /// container is created.
    pub dir: PathBuf,
    pub files: BTreeMap<String, String>,
}

fn str_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect()
}

/// FNV-1a, stable across builds (unlike std's hasher).
fn fnv(data: &str) -> String {
    let h = data.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{h:016x}")
}

/// `Always` for `:latest` or no tag, else `IfNotPresent`, unless given.
fn pull_policy(image: &str, given: Option<&str>) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    let policy = match (given, last.split_once(':')) {
        (Some(p), _) => p,
        _ if image.contains('@') => "IfNotPresent",
        (None, None | Some((_, "latest"))) => "Always",
        (None, Some(_)) => "IfNotPresent",
    };
    policy.to_string()
}

/// `x` -> `x:latest` (no tag and no digest), as kubelet names the image it pulls.
fn with_tag(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.contains([':', '@']) {
        true => image.to_string(),
        false => format!("{image}:latest"),
    }
}

/// The reference containerd pulls: `docker.io/library/` for a short name.
pub fn normalize(image: &str) -> String {
    let first = image.split_once('/').map_or("", |(f, _)| f);
    match (
        first.contains(['.', ':']) || first == "localhost",
        first.is_empty(),
    ) {
        (true, _) => with_tag(image),
        (false, true) => format!("docker.io/library/{}", with_tag(image)),
        (false, false) => format!("docker.io/{}", with_tag(image)),
    }
}

/// The image to run: `Ok(None)` present on the node (loaded with `kind load`, names compared
/// exactly as written, or pulled before), `Ok(Some(image))` to be pulled now, or why the pod
/// waits, like kubelet: `ErrImageNeverPull`, `ErrImagePull` (the pull failed in this very call)
/// and `ImagePullBackOff` until kubelet's back-off (10 s, 20 s, ... 300 s) has passed.
fn image_rule(
    c: &Cluster,
    image: &str,
    policy: &str,
    now: u64,
) -> Result<Option<String>, (String, String)> {
    let pull = c.pulls.get(image);
    let pulled = pull.is_some_and(|p| p.ok);
    let loaded = c.images.iter().any(|l| l == image);
    if pulled || (loaded && policy != "Always") {
        return Ok(None);
    }
    if policy == "Never" {
        let m = format!("Container image \"{image}\" is not present with pull policy of Never");
        return Err(("ErrImageNeverPull".into(), m));
    }
    match pull {
        Some(p) if p.at_ms == now => Err(("ErrImagePull".into(), p.message.clone())),
        Some(p) if now < p.at_ms + backoff_ms(p.failures) => Err((
            "ImagePullBackOff".into(),
            format!(
                "Back-off pulling image \"{}\": ErrImagePull: {}",
                with_tag(image),
                p.message
            ),
        )),
        _ => Ok(Some(image.to_string())),
    }
}

/// Pulls an image for real (`podman pull --tls-verify=false`, the reference normalized like
/// containerd does), records the outcome in the cluster and in the call log.
fn pull(c: &mut Cluster, image: &str, now: u64) -> Res<()> {
    let name = normalize(image);
    // Which image ids exist already (a listing that fails, e.g. racing a removal, counts as
    // "all": the fake then never removes the pulled image).
    let before = podman::output(&["images", "-a", "-q", "--no-trunc"])?;
    let o = podman::output_within(&["pull", "--tls-verify=false", &name], PULL_LIMIT)?;
    let last = |t: &str| {
        t.lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .map(String::from)
    };
    let mut p = c.pulls.remove(image).unwrap_or_default();
    match o {
        Some(o) if o.ok => {
            let id = last(&o.stdout).unwrap_or_default();
            let new_id =
                (before.ok && !id.is_empty() && !before.stdout.contains(&id)).then_some(id);
            p = state::Pull {
                ok: true,
                new_id,
                ..Default::default()
            };
        }
        o => {
            let err = o
                .and_then(|o| last(&o.stderr))
                .unwrap_or("timed out".into());
            let err = err.trim_start_matches("Error: ");
            p.failures += 1;
            p.message = format!("failed to pull and unpack image \"{name}\": {err}");
        }
    }
    p.at_ms = now;
    crate::note_pull(json!({"image": image, "reference": name, "ok": p.ok, "message": p.message}));
    c.pulls.insert(image.to_string(), p);
    Ok(())
}

/// The strings of a Secret (`stringData`) or ConfigMap (`data`), or kubelet's error.
fn data(c: &Cluster, ns: &str, kind: &str, name: &str) -> Result<BTreeMap<String, String>, String> {
    let field = if kind == "Secret" {
        "stringData"
    } else {
        "data"
    };
    match c.object(ns, kind, name) {
        Some(obj) => Ok(str_map(&obj[field])),
        None => Err(format!("{} \"{name}\" not found", kind.to_lowercase())),
    }
}

/// A container's environment from `envFrom`, then `env` (a later entry wins).
fn resolve_env(c: &Cluster, ns: &str, container: &Value) -> Result<Vec<(String, String)>, String> {
    const REFS: [(&str, &str, &str); 2] = [
        ("secretRef", "secretKeyRef", "Secret"),
        ("configMapRef", "configMapKeyRef", "ConfigMap"),
    ];
    let mut env: Vec<(String, String)> = Vec::new();
    for from in container["envFrom"].as_array().into_iter().flatten() {
        for (field, _, kind) in REFS {
            if let Some(name) = from[field]["name"].as_str() {
                env.extend(data(c, ns, kind, name)?);
            }
        }
    }
    for e in container["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap_or_default().to_string();
        let mut value = e["value"].as_str().unwrap_or_default().to_string();
        for (_, field, kind) in REFS {
            let r = &e["valueFrom"][field];
            if let (Some(src), Some(k)) = (r["name"].as_str(), r["key"].as_str()) {
                value = data(c, ns, kind, src)?
                    .remove(k)
                    .ok_or_else(|| format!("couldn't find key {k} in {kind} {ns}/{src}"))?;
            }
        }
        env.retain(|(n, _)| *n != name);
        env.push((name, value));
    }
    Ok(env)
}

type Mounted = (BTreeMap<String, String>, Vec<String>);

/// The pod's `configMap` volumes as files (by path: `<volume>/<item path>`; without `items`,
/// every key) and the container's `--volume` flags (its `subPath` of the volume, or all of it;
/// read-only, as kubelet mounts ConfigMaps), or why kubelet cannot mount them.
fn volumes(c: &Cluster, ns: &str, spec: &Value, dir: &Path) -> Result<Mounted, String> {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let mut files = BTreeMap::new();
    for v in spec["volumes"].as_array().into_iter().flatten() {
        let fail = |e| format!("MountVolume.SetUp failed for volume {} : {e}", v["name"]);
        let data = data(c, ns, "ConfigMap", &s(&v["configMap"]["name"])).map_err(fail)?;
        let all = data.keys().map(|k| json!({"key": k, "path": k})).collect();
        for i in v["configMap"]["items"].as_array().unwrap_or(&all) {
            let text = data.get(&s(&i["key"])).ok_or_else(|| {
                fail(format!(
                    "configmap references non-existent config key: {}",
                    s(&i["key"])
                ))
            })?;
            files.insert(format!("{}/{}", s(&v["name"]), s(&i["path"])), text.clone());
        }
    }
    let mounts = spec["containers"][0]["volumeMounts"].as_array();
    let mounts = mounts.into_iter().flatten().map(|m| {
        let src = dir.join(s(&m["name"])).join(s(&m["subPath"]));
        let src: PathBuf = src.components().collect(); // no trailing `/` for no subPath
        format!("{}:{}:ro", src.display(), s(&m["mountPath"]))
    });
    Ok((files, mounts.collect()))
}

/// Writes a pod's files anew, and makes the mount sources that do not exist empty folders (a
/// volume without files, a `subPath` that is not in the volume), as kubelet does.
fn write_files(p: &Pod, argv: &[String]) -> Res<()> {
    let _ = std::fs::remove_dir_all(&p.dir);
    for (path, text) in &p.files {
        state::write_atomic(&p.dir.join(path), text.as_bytes())?;
    }
    let sources = argv.windows(2).filter(|w| w[0] == "--volume");
    for src in sources.filter_map(|w| w[1].split(':').next()) {
        if !Path::new(src).exists() {
            std::fs::create_dir_all(src).map_err(|e| Fail(format!("fake-kube: {src}: {e}")))?;
        }
    }
    Ok(())
}

/// Network aliases (the names of the Services selecting the pod) and host port publications
/// (NodePorts mapped by the kind config). A host port goes to the first pod only.
fn wiring(
    c: &Cluster,
    ns: &str,
    labels: &BTreeMap<String, String>,
    published: &mut BTreeSet<u16>,
) -> (Vec<String>, Vec<String>) {
    let (mut aliases, mut ports) = (Vec::new(), Vec::new());
    for svc in c.objects_of("Service", ns) {
        let selector = str_map(&svc["spec"]["selector"]);
        if selector.is_empty() || selector.iter().any(|(k, v)| labels.get(k) != Some(v)) {
            continue;
        }
        let name = svc["metadata"]["name"].as_str().unwrap_or_default();
        aliases.extend([
            name.to_string(),
            format!("{name}.{ns}"),
            format!("{name}.{ns}.svc"),
            format!("{name}.{ns}.svc.cluster.local"),
        ]);
        if svc["spec"]["type"] != "NodePort" {
            continue;
        }
        for p in svc["spec"]["ports"].as_array().into_iter().flatten() {
            for m in c.ports.iter() {
                if p["nodePort"].as_i64() == Some(m.container_port.into())
                    && published.insert(m.host_port)
                {
                    ports.push(format!(
                        "{}:{}:{}",
                        m.listen_address, m.host_port, p["port"]
                    ));
                }
            }
        }
    }
    (aliases, ports)
}

fn plan_pod(c: &Cluster, obj: &Value, job: bool, published: &mut BTreeSet<u16>, now: u64) -> Pod {
    let owner = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let ns = obj["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let template = &obj["spec"]["template"];
    let container = template["spec"]["containers"][0].clone();
    let name = format!("{owner}-fake-0");
    let mut labels = str_map(&template["metadata"]["labels"]);
    if job {
        labels.insert("job-name".into(), owner.clone());
        labels.insert("batch.kubernetes.io/job-name".into(), owner.clone());
    }
    let image = container["image"].as_str().unwrap_or_default().to_string();
    let policy = pull_policy(&image, container["imagePullPolicy"].as_str());
    let engine_name = format!("kindfake-{}-{ns}-{name}", c.name);
    let dir = state::files_root(&c.name).join(format!("{ns}_{name}"));
    // Like kubelet: volumes are mounted before the image is pulled.
    let mounted = volumes(c, &ns, &template["spec"], &dir);
    let rule = match &mounted {
        Err(m) => Err(("ContainerCreating".to_string(), m.clone())),
        Ok(_) => image_rule(c, &image, &policy, now),
    };
    let (files, mounts) = mounted.unwrap_or_default();
    let env = rule.clone().and_then(|_| {
        resolve_env(c, &ns, &container).map_err(|m| ("CreateContainerConfigError".into(), m))
    });
    let pulled = c.pulls.get(&image).is_some_and(|p| p.ok) && !c.images.contains(&image);
    let start = match (rule, env) {
        (Ok(Some(image)), _) => Start::Pull { image },
        (_, Err((reason, message))) => Start::Wait { reason, message },
        (_, Ok(env)) => {
            let (aliases, ports) = wiring(c, &ns, &labels, published);
            let mut argv: Vec<String> = [
                "run",
                "-d",
                "--name",
                &engine_name,
                "--hostname",
                &name,
                "--network",
                &state::ns_network(&c.name, &ns),
                "--pull=never",
                "--restart=no",
            ]
            .map(String::from)
            .into();
            let mut tags = vec![
                (CLUSTER_LABEL.to_string(), c.name.clone()),
                (POD_LABEL.into(), name.clone()),
                (NS_LABEL.into(), ns.clone()),
            ];
            tags.extend(
                labels
                    .iter()
                    .map(|(k, v)| (format!("{TEMPLATE_LABEL}{k}"), v.clone())),
            );
            let pairs = aliases
                .into_iter()
                .map(|a| ("--network-alias", a))
                .chain(
                    tags.into_iter()
                        .map(|(k, v)| ("--label", format!("{k}={v}"))),
                )
                .chain(env.into_iter().map(|(k, v)| ("--env", format!("{k}={v}"))))
                .chain(ports.into_iter().map(|p| ("-p", p)))
                .chain(mounts.into_iter().map(|m| ("--volume", m)));
            for (flag, value) in pairs {
                argv.extend([flag.to_string(), value]);
            }
            let strings = |field: &str| -> Vec<String> {
                let list = container[field].as_array().into_iter().flatten();
                list.map(|a| a.as_str().unwrap_or_default().into())
                    .collect()
            };
            // `command` replaces the image's ENTRYPOINT (podman then drops its CMD too, as
            // Kubernetes does), `args` its CMD. A JSON array: one argv word, no shell.
            let command = strings("command");
            if !command.is_empty() {
                argv.extend(["--entrypoint".into(), json!(command).to_string()]);
            }
            let args = strings("args");
            let hash = fnv(&format!("{argv:?}{image}{args:?}{files:?}"));
            let run = if pulled { normalize(&image) } else { image };
            argv.extend(["--label".into(), format!("{HASH_LABEL}={hash}"), run]);
            argv.extend(args);
            Start::Run { argv, hash }
        }
    };
    Pod {
        ns,
        name,
        owner,
        job,
        labels,
        container,
        engine_name,
        policy,
        start,
        dir,
        files,
    }
}

/// The pods of every Deployment and Job, in `namespace/kind/name` order, at the time `now` (the
/// start of the call): pure.
pub fn plan(c: &Cluster, now: u64) -> Vec<Pod> {
    let mut published = BTreeSet::new();
    let mut pods = Vec::new();
    for (k, obj) in &c.objects {
        match k.split('/').nth(1) {
            Some("Deployment") => pods.push(plan_pod(c, obj, false, &mut published, now)),
            Some("Job") => pods.push(plan_pod(c, obj, true, &mut published, now)),
            _ => {}
        }
    }
    pods
}

/// What the pods would be at `now` (to skip podman when an object change changes no pod).
pub fn shape(c: &Cluster, now: u64) -> Vec<(String, Start)> {
    plan(c, now)
        .into_iter()
        .map(|p| (p.engine_name, p.start))
        .collect()
}

/// A pod container as podman reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Container {
    pub id: String,
    pub name: String,
    /// podman's state: created, running, exited, ...
    pub status: String,
    pub exit_code: i64,
    /// Its address on the cluster network.
    pub ip: Option<String>,
    pub hash: Option<String>,
}

/// The containers of the cluster (by label).
fn containers(c: &Cluster) -> Res<Vec<Container>> {
    let label = format!("label={CLUSTER_LABEL}={}", c.name);
    let ids = podman::run(&["ps", "-a", "-q", "--filter", &label])?;
    let mut args = vec!["container", "inspect"];
    args.extend(ids.split_whitespace());
    if args.len() == 2 {
        return Ok(Vec::new());
    }
    let list: Value = serde_json::from_str(&podman::run(&args)?)
        .map_err(|e| Fail(format!("fake-kube: podman container inspect: {e}")))?;
    let item = |v: &Value| Container {
        id: v["Id"].as_str().unwrap_or_default().into(),
        name: v["Name"]
            .as_str()
            .unwrap_or_default()
            .trim_start_matches('/')
            .into(),
        status: v["State"]["Status"].as_str().unwrap_or_default().into(),
        exit_code: v["State"]["ExitCode"].as_i64().unwrap_or_default(),
        ip: v["NetworkSettings"]["Networks"][&state::ns_network(
            &c.name,
            v["Config"]["Labels"][NS_LABEL].as_str().unwrap_or_default(),
        )]["IPAddress"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(String::from),
        hash: v["Config"]["Labels"][HASH_LABEL].as_str().map(String::from),
    };
    Ok(list.as_array().into_iter().flatten().map(item).collect())
}

/// A pod as [`sync`] left it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub pod: Pod,
    pub container: Option<Container>,
    pub restart: Restart,
    /// Why podman could not create or restart the container.
    pub error: Option<String>,
}

/// kubelet's back-off before restarting a container restarted `n` times: 0, 10 s, 20 s, ... 300 s.
pub fn backoff_ms(n: u32) -> u64 {
    match n {
        0 => 0,
        n => (10_000u64 << (n - 1).min(5)).min(300_000),
    }
}

fn remove(name: &str) -> Res<()> {
    podman::run(&["rm", "-f", "-i", "-t", "0", name]).map(drop)
}

/// Creates the network of a namespace's pods unless it exists (labelled like the cluster's), or
/// with `remove`, removes it if it exists and is this cluster's.
pub fn ns_network(cluster: &str, ns: &str, remove: bool) -> Res<()> {
    let net = state::ns_network(cluster, ns);
    let owner = format!("{{{{index .Labels \"{CLUSTER_LABEL}\"}}}}");
    let found = podman::output(&["network", "inspect", "--format", &owner, &net])?;
    let ours = found.ok && found.stdout.trim() == cluster;
    let (c, n) = (
        format!("{CLUSTER_LABEL}={cluster}"),
        format!("{NS_LABEL}={ns}"),
    );
    match (remove, found.ok) {
        (true, true) if ours => podman::run(&["network", "rm", "-f", &net]).map(drop),
        (false, false) => {
            podman::run(&["network", "create", "--label", &c, "--label", &n, &net]).map(drop)
        }
        _ => Ok(()),
    }
}

/// Makes podman match the plan, like a kubelet: pulls the images pods need, starts missing or
/// changed pod containers (a Job's only once: Jobs run once) on their namespace's network,
/// removes the containers of pods that are gone or cannot start, and restarts exited Deployment
/// containers with kubelet's back-off (podman restarts nothing itself; this happens when pods
/// are applied or looked at). Call it holding the cluster's lock; it saves the cluster when
/// pulls or restarts change.
pub fn sync(c: &mut Cluster) -> Res<Vec<Seen>> {
    let now = now_ms();
    let mut pods = plan(c, now);
    let pulls: BTreeSet<String> = pods
        .iter()
        .filter_map(|p| match &p.start {
            Start::Pull { image } => Some(image.clone()),
            _ => None,
        })
        .collect();
    for image in &pulls {
        pull(c, image, now)?;
    }
    if !pulls.is_empty() {
        state::save(c)?;
        pods = plan(c, now);
    }
    let mut have = containers(c)?;
    let before = c.restarts.clone();
    let mut errors = BTreeMap::new();
    let mut changed = false;
    let mut networks = BTreeSet::new();
    for p in &pods {
        let current = have.iter().find(|x| x.name == p.engine_name);
        match (&p.start, current) {
            (Start::Run { hash, .. }, Some(x)) if p.job || x.hash.as_ref() == Some(hash) => {
                if p.job || x.status != "exited" {
                    continue;
                }
                let r = c.restarts.entry(x.id.clone()).or_default();
                if r.exited_seen_ms == 0 {
                    r.exited_seen_ms = now;
                }
                if now >= r.exited_seen_ms + backoff_ms(r.count) {
                    let o = podman::output(&["start", &x.id])?;
                    if !o.ok {
                        errors.insert(p.engine_name.clone(), o.stderr.trim().to_string());
                    }
                    *r = Restart {
                        count: r.count + 1,
                        last_exit: x.exit_code,
                        exited_seen_ms: 0,
                    };
                    changed = true;
                }
            }
            (Start::Run { argv, .. }, current) => {
                if let Some(x) = current {
                    remove(&x.name)?;
                }
                if networks.insert(p.ns.clone()) {
                    ns_network(&c.name, &p.ns, false)?;
                }
                write_files(p, argv)?;
                let o = podman::output(argv)?;
                if !o.ok {
                    errors.insert(p.engine_name.clone(), o.stderr.trim().to_string());
                    remove(&p.engine_name)?; // podman may leave it created, not started
                }
                changed = true;
            }
            (Start::Wait { .. }, Some(x)) if !p.job => {
                remove(&x.name)?;
                changed = true;
            }
            _ => {}
        }
    }
    for x in &have {
        if !pods.iter().any(|p| p.engine_name == x.name) {
            remove(&x.name)?;
            changed = true;
        }
    }
    if changed {
        have = containers(c)?;
    }
    // The files of pods that are gone (deleted, or their namespace).
    let dirs = std::fs::read_dir(state::files_root(&c.name))
        .into_iter()
        .flatten();
    for path in dirs.flatten().map(|e| e.path()) {
        if !pods.iter().any(|p| p.dir == path) {
            let _ = std::fs::remove_dir_all(path);
        }
    }
    c.restarts.retain(|id, _| have.iter().any(|x| x.id == *id));
    if c.restarts != before {
        state::save(c)?;
    }
    Ok(pods
        .into_iter()
        .map(|pod| {
            let container = have.iter().find(|x| x.name == pod.engine_name).cloned();
            let id = container.as_ref().map_or("", |x| x.id.as_str());
            Seen {
                restart: c.restarts.get(id).copied().unwrap_or_default(),
                error: errors.remove(&pod.engine_name),
                container,
                pod,
            }
        })
        .collect())
}

/// Runs a readiness probe once (no probe: ready). Err: why it failed.
fn probe(pod: &Pod, x: &Container) -> Result<(), String> {
    let pr = &pod.container["readinessProbe"];
    let timeout = Duration::from_secs(pr["timeoutSeconds"].as_u64().unwrap_or(1).clamp(1, 3));
    if let Some(cmd) = pr["exec"]["command"].as_array() {
        let mut argv = vec!["exec".to_string(), x.name.clone()];
        argv.extend(
            cmd.iter()
                .map(|a| a.as_str().unwrap_or_default().to_string()),
        );
        return match podman::output_within(&argv, timeout + Duration::from_secs(2)) {
            Ok(Some(o)) if o.ok => Ok(()),
            Ok(Some(o)) => Err(format!("command failed: {}{}", o.stdout, o.stderr)
                .trim()
                .into()),
            Ok(None) => Err(format!("command timed out after {}s", timeout.as_secs())),
            Err(Fail(e)) => Err(e),
        };
    }
    let Some(h) = pr.get("httpGet") else {
        return Ok(());
    };
    let port = h["port"]
        .as_u64()
        .ok_or("fake-kube: a readinessProbe port must be a number")?;
    let ip =
        x.ip.as_deref()
            .ok_or("the container has no address on the cluster network")?;
    let path = h["path"].as_str().unwrap_or("/");
    let url = format!("http://{ip}:{port}{path}");
    let get = |e: std::io::Error| format!("Get \"{url}\": {e}");
    let addr: SocketAddr = format!("{ip}:{port}")
        .parse()
        .map_err(|e| format!("{url}: {e}"))?;
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(get)?;
    s.set_read_timeout(Some(timeout)).map_err(get)?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/1.32\r\nConnection: close\r\n\r\n").map_err(get)?;
    let mut head = String::new();
    BufReader::new(s).read_line(&mut head).map_err(get)?;
    match head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
    {
        Some(code) if (200..400).contains(&code) => Ok(()),
        Some(code) => Err(format!("HTTP probe failed with statuscode: {code}")),
        None => Err(format!("Get \"{url}\": malformed HTTP response {head:?}")),
    }
}

/// A pod's status as the API server reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub phase: &'static str,
    pub ready: bool,
    pub restarts: u32,
    /// `containerStatuses[0].state` and `.lastState`.
    pub state: Value,
    pub last_state: Value,
}

/// The status of a pod from what [`sync`] found and its probe (`None`: not probed). `unready`:
/// the pod-unready injection (never Ready; a Job never completes).
pub fn status(s: &Seen, probe: Option<&Result<(), String>>, unready: bool) -> Status {
    let n = s.restart.count;
    let terminated = |code: i64| json!({"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" }}});
    let last = if n > 0 {
        terminated(s.restart.last_exit)
    } else {
        json!({})
    };
    let pending = |reason: &str, message: &str| Status {
        phase: "Pending",
        ready: false,
        restarts: n,
        state: json!({"waiting": {"reason": reason, "message": message}}),
        last_state: json!({}),
    };
    match &s.pod.start {
        Start::Wait { reason, message } => return pending(reason, message),
        Start::Pull { .. } => return pending("ContainerCreating", ""),
        Start::Run { .. } => {}
    }
    let Some(x) = &s.container else {
        return match &s.error {
            Some(e) => pending("CreateContainerError", e),
            None => pending("ContainerCreating", ""),
        };
    };
    let running = |ready: bool| Status {
        phase: "Running",
        ready,
        restarts: n,
        state: json!({"running": {}}),
        last_state: last.clone(),
    };
    match x.status.as_str() {
        "running" => running(!unready && matches!(probe, Some(Ok(())))),
        "exited" if s.pod.job && unready => running(false),
        "exited" if s.pod.job => Status {
            phase: if x.exit_code == 0 {
                "Succeeded"
            } else {
                "Failed"
            },
            ready: false,
            restarts: 0,
            state: terminated(x.exit_code),
            last_state: json!({}),
        },
        "exited" => Status {
            phase: "Running",
            ready: false,
            restarts: n,
            state: json!({"waiting": {"reason": "CrashLoopBackOff", "message": format!(
                "back-off {}s restarting failed container={} pod={}{}",
                backoff_ms(n) / 1000,
                s.pod.container["name"].as_str().unwrap_or_default(),
                s.pod.name,
                s.error.as_ref().map(|e| format!(" (last restart: {e})")).unwrap_or_default()
            )}}),
            last_state: terminated(x.exit_code),
        },
        _ => pending("ContainerCreating", ""),
    }
}

/// A pod as observed now.
#[derive(Debug, Clone)]
pub struct Observed {
    pub seen: Seen,
    pub status: Status,
    pub probe_error: Option<String>,
}

/// Syncs the cluster `name` (holding its lock), then probes its running pods in parallel
/// (when `probes`) and computes their statuses.
pub fn observe(name: &str, probes: bool) -> Res<(Cluster, Vec<Observed>)> {
    let (cluster, seen) = {
        let _lock = state::lock(name)?;
        let mut c = state::load(name)?
            .ok_or_else(|| Fail(format!("ERROR: no nodes found for cluster \"{name}\"")))?;
        let seen = sync(&mut c)?;
        (c, seen)
    };
    let results: Vec<Option<Result<(), String>>> = std::thread::scope(|scope| {
        let probing = seen.iter().map(|s| {
            let running = s
                .container
                .as_ref()
                .filter(|x| probes && x.status == "running");
            scope.spawn(move || running.map(|x| probe(&s.pod, x)))
        });
        let handles: Vec<_> = probing.collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(None))
            .collect()
    });
    let observed = seen
        .into_iter()
        .zip(results)
        .map(|(seen, probe)| {
            let unready = injected(&format!("pod-unready:{}", seen.pod.owner));
            Observed {
                status: status(&seen, probe.as_ref(), unready),
                probe_error: probe.and_then(Result::err),
                seen,
            }
        })
        .collect();
    Ok((cluster, observed))
}

impl Observed {
    /// The Pod object, as `kubectl get pods -o json` lists it.
    pub fn to_json(&self, node: &str) -> Value {
        let (p, s) = (&self.seen.pod, &self.status);
        let c = &p.container;
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": p.name, "namespace": p.ns, "labels": p.labels,
                "annotations": {"fake-kube/container": p.engine_name}},
            "spec": {"nodeName": node, "containers": [{"name": c["name"], "image": c["image"], "imagePullPolicy": p.policy}]},
            "status": {
                "phase": s.phase,
                "podIP": self.seen.container.as_ref().and_then(|x| x.ip.clone()),
                "conditions": [{"type": "Ready", "status": if s.ready { "True" } else { "False" }}],
                "containerStatuses": [{"name": c["name"], "image": c["image"], "ready": s.ready,
                    "restartCount": s.restarts, "state": s.state, "lastState": s.last_state}],
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{key, PortMapping};

    fn cluster(images: &[&str]) -> Cluster {
        let mut c = Cluster {
            name: "c1".into(),
            ports: vec![PortMapping {
                container_port: 30080,
                host_port: 18080,
                listen_address: "127.0.0.1".into(),
            }],
            images: images.iter().map(|i| i.to_string()).collect(),
            ..Default::default()
        };
        let mut add = |ns: &str, kind: &str, name: &str, v: Value| {
            c.objects.insert(key(ns, kind, name), v);
        };
        add(
            "ns",
            "Secret",
            "db",
            json!({"metadata": {"name": "db"}, "stringData": {"PASSWORD": "s3cret", "USER": "slm"}}),
        );
        add(
            "ns",
            "ConfigMap",
            "cfg",
            json!({"metadata": {"name": "cfg"}, "data": {"LEVEL": "debug"}}),
        );
        add(
            "ns",
            "Service",
            "web",
            json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort", "selector": {"app": "web"},
            "ports": [{"port": 8080, "nodePort": 30080}]}}),
        );
        add(
            "ns",
            "Service",
            "other",
            json!({"metadata": {"name": "other"}, "spec": {"selector": {"app": "db"}, "ports": [{"port": 5432}]}}),
        );
        add(
            "ns",
            "Deployment",
            "web",
            json!({"metadata": {"name": "web", "namespace": "ns"},
            "spec": {"template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{
                "name": "web", "image": "localhost/web:t1", "imagePullPolicy": "Never", "args": ["serve", "8080"],
                "env": [{"name": "USER", "value": "plain"}, {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "PASSWORD"}}}],
                "envFrom": [{"secretRef": {"name": "db"}}, {"configMapRef": {"name": "cfg"}}]}]}}}}),
        );
        add(
            "ns",
            "Job",
            "migrate",
            json!({"metadata": {"name": "migrate", "namespace": "ns"},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "m", "image": "localhost/web:t1"}]}}}}),
        );
        c
    }

    fn flag_values<'a>(argv: &'a [String], flag: &str) -> Vec<&'a str> {
        argv.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn pull_policies_and_the_image_rule() {
        assert_eq!(pull_policy("localhost/x:1", None), "IfNotPresent");
        assert_eq!(pull_policy("localhost:5000/x", None), "Always");
        assert_eq!(pull_policy("x:latest", None), "Always");
        assert_eq!(pull_policy("x@sha256:00", None), "IfNotPresent");
        assert_eq!(pull_policy("x:latest", Some("Never")), "Never");
        assert_eq!(normalize("postgres"), "docker.io/library/postgres:latest");
        assert_eq!(normalize("bitnami/redis:7"), "docker.io/bitnami/redis:7");
        assert_eq!(
            normalize("localhost:5001/a/b@sha256:00"),
            "localhost:5001/a/b@sha256:00"
        );
        let mut c = cluster(&["localhost/app:t1"]);
        let rule = |c: &Cluster, i: &str, p: &str, now| image_rule(c, i, p, now);
        assert_eq!(rule(&c, "localhost/app:t1", "Never", 0), Ok(None));
        assert_eq!(rule(&c, "localhost/app:t1", "IfNotPresent", 0), Ok(None));
        let reg = "localhost:5001/app@sha256:00";
        assert_eq!(
            rule(&c, "localhost/app:t1", "Always", 0),
            Ok(Some("localhost/app:t1".into()))
        );
        assert_eq!(rule(&c, reg, "IfNotPresent", 0), Ok(Some(reg.into())));
        let never = rule(&c, reg, "Never", 0).unwrap_err();
        assert_eq!(
            never.1,
            format!("Container image \"{reg}\" is not present with pull policy of Never")
        );
        // A failed pull: ErrImagePull in the call that tried, then back-off, then a new try.
        let failed = state::Pull {
            failures: 2,
            at_ms: 1000,
            message: "m".into(),
            ..Default::default()
        };
        c.pulls.insert(reg.into(), failed);
        assert_eq!(
            rule(&c, reg, "IfNotPresent", 1000),
            Err(("ErrImagePull".into(), "m".into()))
        );
        let back_off = rule(&c, reg, "IfNotPresent", 20_999).unwrap_err();
        assert_eq!(back_off.0, "ImagePullBackOff");
        assert_eq!(
            back_off.1,
            format!("Back-off pulling image \"{reg}\": ErrImagePull: m")
        );
        assert_eq!(rule(&c, reg, "IfNotPresent", 21_000), Ok(Some(reg.into())));
        c.pulls.insert(
            reg.into(),
            state::Pull {
                ok: true,
                ..Default::default()
            },
        );
        assert_eq!(
            (rule(&c, reg, "Never", 5), rule(&c, reg, "Always", 5)),
            (Ok(None), Ok(None))
        );
        c.objects.insert(
            key("ns", "Deployment", "db"),
            json!({"metadata": {"name": "db", "namespace": "ns"},
            "spec": {"template": {"spec": {"containers": [{"name": "db", "image": reg}]}}}}),
        );
        let Start::Run { argv, .. } = &plan(&c, 5)[0].start else {
            panic!()
        };
        assert_eq!(argv.last().unwrap(), reg, "runs the pulled image");
    }

    #[test]
    fn env_from_secrets_and_config_maps() {
        let c = cluster(&[]);
        let web = &c.object("ns", "Deployment", "web").unwrap()["spec"]["template"]["spec"]
            ["containers"][0];
        let env = resolve_env(&c, "ns", web).unwrap();
        assert_eq!(
            env,
            [
                ("PASSWORD", "s3cret"),
                ("LEVEL", "debug"),
                ("USER", "plain"),
                ("PW", "s3cret")
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        let missing = json!({"envFrom": [{"configMapRef": {"name": "nope"}}]});
        assert_eq!(
            resolve_env(&c, "ns", &missing).unwrap_err(),
            "configmap \"nope\" not found"
        );
        let badkey = json!({"env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "db", "key": "k"}}}]});
        assert_eq!(
            resolve_env(&c, "ns", &badkey).unwrap_err(),
            "couldn't find key k in Secret ns/db"
        );
    }

    #[test]
    fn plans_pods_with_services_ports_and_labels() {
        let c = cluster(&["localhost/web:t1"]);
        let pods = plan(&c, 0);
        let [web, job] = [&pods[0], &pods[1]];
        assert_eq!((job.name.as_str(), job.job), ("migrate-fake-0", true));
        assert_eq!(job.labels["job-name"], "migrate");
        assert_eq!(web.engine_name, "kindfake-c1-ns-web-fake-0");
        let Start::Run { argv, hash } = &web.start else {
            panic!("{:?}", web.start)
        };
        assert_eq!(&argv[..3], ["run", "-d", "--name"]);
        assert_eq!(flag_values(argv, "--network"), ["kindfake-c1_ns"]);
        assert_eq!(
            flag_values(argv, "--network-alias"),
            ["web", "web.ns", "web.ns.svc", "web.ns.svc.cluster.local"]
        );
        assert_eq!(flag_values(argv, "-p"), ["127.0.0.1:18080:8080"]);
        assert!(flag_values(argv, "--env").contains(&"PW=s3cret"));
        let labels = flag_values(argv, "--label");
        assert!(labels.contains(&"io.kubernaut.fake-kube.cluster=c1"));
        assert!(labels.contains(&"io.kubernaut.fake-kube.label.app=web"));
        assert!(labels.contains(&format!("{HASH_LABEL}={hash}").as_str()));
        assert_eq!(
            argv[argv.len() - 3..],
            ["localhost/web:t1", "serve", "8080"]
        );
        assert_eq!(plan(&c, 0)[0].start, web.start, "stable");
        // A Service change changes the hash (the container is recreated).
        let mut c2 = c.clone();
        c2.objects.remove(&key("ns", "Service", "web"));
        let Start::Run { hash: h2, .. } = &plan(&c2, 0)[0].start else {
            panic!()
        };
        assert_ne!(h2, hash);
        // Not loaded, or a missing Secret: the pod waits.
        let waiting = |c: &Cluster| match &plan(c, 0)[0].start {
            Start::Wait { reason, .. } => reason.clone(),
            s => panic!("{s:?}"),
        };
        assert_eq!(waiting(&cluster(&[])), "ErrImageNeverPull");
        c2.objects.remove(&key("ns", "Secret", "db"));
        assert_eq!(waiting(&c2), "CreateContainerConfigError");
    }

    fn seen(job: bool, status: Option<(&str, i64)>, restarts: u32) -> Seen {
        let mut pod = plan(&cluster(&["localhost/web:t1"]), 0)[usize::from(job)].clone();
        pod.job = job;
        Seen {
            pod,
            container: status.map(|(s, code)| Container {
                status: s.into(),
                exit_code: code,
                ..Default::default()
            }),
            restart: Restart {
                count: restarts,
                last_exit: 2,
                exited_seen_ms: 0,
            },
            error: None,
        }
    }

    fn reason(s: &Status) -> &str {
        s.state["waiting"]["reason"].as_str().unwrap_or("")
    }

    #[test]
    fn statuses() {
        let ok = Ok(());
        let failed = Err("no".to_string());
        let up = status(&seen(false, Some(("running", 0)), 0), Some(&ok), false);
        assert_eq!(
            (up.phase, up.ready, &up.state),
            ("Running", true, &json!({"running": {}}))
        );
        assert!(!status(&seen(false, Some(("running", 0)), 0), Some(&failed), false).ready);
        assert!(
            !status(&seen(false, Some(("running", 0)), 0), Some(&ok), true).ready,
            "pod-unready"
        );
        let restarted = status(&seen(false, Some(("running", 0)), 2), Some(&ok), false);
        assert_eq!(
            (
                restarted.restarts,
                &restarted.last_state["terminated"]["exitCode"]
            ),
            (2, &json!(2))
        );
        let crash = status(&seen(false, Some(("exited", 3)), 3), None, false);
        assert_eq!(
            (crash.phase, reason(&crash), crash.restarts),
            ("Running", "CrashLoopBackOff", 3)
        );
        assert_eq!(crash.last_state["terminated"]["exitCode"], 3);
        assert_eq!(
            status(&seen(true, Some(("exited", 0)), 0), None, false).phase,
            "Succeeded"
        );
        let job_failed = status(&seen(true, Some(("exited", 4)), 0), None, false);
        assert_eq!(
            (
                job_failed.phase,
                &job_failed.state["terminated"]["exitCode"]
            ),
            ("Failed", &json!(4))
        );
        assert_eq!(
            status(&seen(true, Some(("exited", 0)), 0), None, true).phase,
            "Running"
        );
        assert_eq!(
            reason(&status(&seen(false, None, 0), None, false)),
            "ContainerCreating"
        );
        let mut err = seen(false, None, 0);
        err.error = Some("port is already allocated".into());
        assert_eq!(reason(&status(&err, None, false)), "CreateContainerError");
        let mut never = seen(false, None, 0);
        never.pod.start = Start::Wait {
            reason: "ErrImageNeverPull".into(),
            message: "m".into(),
        };
        let s = status(&never, None, false);
        assert_eq!((s.phase, reason(&s)), ("Pending", "ErrImageNeverPull"));
    }

    #[test]
    fn back_off() {
        let secs: Vec<u64> = (0..9).map(|n| backoff_ms(n) / 1000).collect();
        assert_eq!(secs, [0, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(fnv(""), "cbf29ce484222325");
    }
}
