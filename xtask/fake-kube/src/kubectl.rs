//! The fake `kubectl`: argv parsing, connecting to a fake cluster, and the commands the xtask uses.

use crate::apply::{self, Doc, KindInfo};
use crate::pods::{self, ObservedPod};
use crate::state::{self, Cluster, Objects};
use crate::util::{age, now_s, parse_duration, podman_bin, Fail, Injections, Res};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

/// Flags that take a value, by every spelling, with their canonical name.
const VALUE_FLAGS: &[(&str, &str)] = &[
    ("-n", "namespace"),
    ("--namespace", "namespace"),
    ("-o", "output"),
    ("--output", "output"),
    ("--kubeconfig", "kubeconfig"),
    ("--context", "context"),
    ("-l", "selector"),
    ("--selector", "selector"),
    ("-f", "filename"),
    ("--filename", "filename"),
    ("--tail", "tail"),
    ("-c", "container"),
    ("--container", "container"),
    ("--timeout", "timeout"),
    ("--for", "for"),
    ("--request-timeout", "request-timeout"),
    ("-v", "v"),
    ("--v", "v"),
    ("--field-manager", "field-manager"),
    ("--cascade", "cascade"),
    ("--grace-period", "grace-period"),
];
/// Boolean flags (`--x` or `--x=false`).
const BOOL_FLAGS: &[(&str, &str)] = &[
    ("-A", "all-namespaces"),
    ("--all-namespaces", "all-namespaces"),
    ("--client", "client"),
    ("--all-containers", "all-containers"),
    ("--prefix", "prefix"),
    ("--ignore-not-found", "ignore-not-found"),
    ("--wait", "wait"),
    ("--validate", "validate"),
    ("--timestamps", "timestamps"),
    ("--show-labels", "show-labels"),
    ("--no-headers", "no-headers"),
    ("--all", "all"),
    ("-w", "watch-rollout"),
    ("--watch", "watch-rollout"),
    ("--force", "force"),
];

/// A parsed kubectl command line.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Args {
    pub pos: Vec<String>,
    /// Canonical flag name -> value (repeatable flags keep every value).
    pub flags: BTreeMap<String, Vec<String>>,
}

impl Args {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.flags
            .get(name)
            .and_then(|v| v.last())
            .map(String::as_str)
    }
    pub fn all(&self, name: &str) -> &[String] {
        self.flags.get(name).map_or(&[], Vec::as_slice)
    }
    pub fn on(&self, name: &str) -> bool {
        self.get(name).is_some_and(|v| v != "false")
    }
    pub fn namespace(&self) -> &str {
        self.get("namespace").unwrap_or("default")
    }
}

fn unsupported(argv: &[String]) -> Fail {
    Fail::new(format!(
        "fake-kubectl: unsupported command: {}",
        argv.join(" ")
    ))
}

/// Parses kubectl's argv: global and command flags anywhere, `--x=v`, `-ojson`, `--`.
pub fn parse_args(argv: &[String]) -> Res<Args> {
    let mut a = Args::default();
    let mut i = 0;
    while i < argv.len() {
        let arg = &argv[i];
        if arg == "--" {
            a.pos.extend(argv[i + 1..].iter().cloned());
            break;
        }
        let (name, inline) = if arg.starts_with("--") {
            match arg.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (arg.clone(), None),
            }
        } else if arg.starts_with('-') && arg.len() > 1 {
            let (n, rest) = arg.split_at(2);
            (
                n.to_string(),
                (!rest.is_empty()).then(|| rest.trim_start_matches('=').to_string()),
            )
        } else {
            a.pos.push(arg.clone());
            i += 1;
            continue;
        };
        if let Some((_, canon)) = VALUE_FLAGS.iter().find(|(n, _)| *n == name) {
            let value = match inline {
                Some(v) => v,
                None => {
                    i += 1;
                    argv.get(i).cloned().ok_or_else(|| {
                        Fail::new(format!(
                            "error: flag needs an argument: '{}' in {name}",
                            name.trim_start_matches('-')
                        ))
                    })?
                }
            };
            a.flags.entry(canon.to_string()).or_default().push(value);
        } else if let Some((_, canon)) = BOOL_FLAGS.iter().find(|(n, _)| *n == name) {
            a.flags
                .entry(canon.to_string())
                .or_default()
                .push(inline.unwrap_or_else(|| "true".into()));
        } else {
            return Err(unsupported(argv));
        }
        i += 1;
    }
    Ok(a)
}

/// The fake cluster the kubeconfig points at, or kubectl's connection error.
pub fn connect(a: &Args) -> Res<Cluster> {
    let path = state::kubeconfig_path(a.get("kubeconfig"));
    let refused = |server: &str| {
        let host = server
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        Fail::new(format!("The connection to the server {host} was refused - did you specify the right host or port?"))
    };
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Err(if a.get("kubeconfig").is_some() {
            Fail::new(format!(
                "error: stat {}: no such file or directory",
                path.display()
            ))
        } else {
            refused("localhost:8080")
        });
    };
    let Some((server, cluster)) = state::kubeconfig_target(&text, a.get("context")) else {
        return Err(match a.get("context") {
            Some(c) => Fail::new(format!("error: context \"{c}\" does not exist")),
            None => refused("localhost:8080"),
        });
    };
    match cluster.map(|c| state::load_cluster(&c)) {
        Some(Ok(Some(c))) => Ok(c),
        Some(Err(e)) => Err(e),
        _ => Err(refused(&server)),
    }
}

pub fn run(argv: &[String]) -> Res<i32> {
    let a = parse_args(argv)?;
    let words: Vec<&str> = a.pos.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["version"] => version(&a),
        ["apply"] => apply(&a),
        ["get", ..] => get(&a, argv),
        ["describe", "pods" | "pod" | "po", ..] => describe(&a),
        ["logs", ..] => logs(&a, argv),
        ["delete", ..] => delete(&a, argv),
        ["wait", ..] => wait(&a, argv),
        ["rollout", "status", _] => rollout_status(&a, argv),
        ["cluster-info"] => {
            connect(&a)?;
            println!("Kubernetes control plane is running at {}", state::SERVER);
            println!("CoreDNS is running at {}/api/v1/namespaces/kube-system/services/kube-dns:dns/proxy", state::SERVER);
            println!("\nTo further debug and diagnose cluster problems, use 'kubectl cluster-info dump'.");
            Ok(0)
        }
        ["config", "current-context"] => {
            let text = std::fs::read_to_string(state::kubeconfig_path(a.get("kubeconfig")))
                .unwrap_or_default();
            let doc = crate::yaml::parse_docs(&text)
                .ok()
                .and_then(|d| d.into_iter().next())
                .unwrap_or(Value::Null);
            match doc["current-context"].as_str().filter(|s| !s.is_empty()) {
                Some(c) => {
                    println!("{c}");
                    Ok(0)
                }
                None => Err(Fail::new("error: current-context is not set")),
            }
        }
        _ => Err(unsupported(argv)),
    }
}

fn version(a: &Args) -> Res<i32> {
    let json = matches!(a.get("output"), Some("json"));
    if a.on("client") {
        if json {
            println!("{}", serde_json::to_string_pretty(&json!({"clientVersion": {"major": "1", "minor": "32", "gitVersion": "v1.32.0-fake", "platform": "linux/amd64"}})).unwrap_or_default());
        } else {
            println!("Client Version: v1.32.0-fake");
        }
        return Ok(0);
    }
    let server = connect(a);
    if json {
        let mut v = json!({"clientVersion": {"gitVersion": "v1.32.0-fake"}});
        if server.is_ok() {
            v["serverVersion"] = json!({"gitVersion": "v1.32.2-fake"});
        }
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        println!("Client Version: v1.32.0-fake");
        if server.is_ok() {
            println!("Server Version: v1.32.2-fake");
        }
    }
    server.map(|_| 0)
}

/// Reads the manifests named by `-f` (`-` = stdin, a file, or a folder of .yaml/.yml/.json).
fn read_manifests(a: &Args) -> Res<Vec<Doc>> {
    let files = a.all("filename");
    if files.is_empty() {
        return Err(Fail::new("error: must specify one of -f and -k"));
    }
    let mut docs = Vec::new();
    for f in files {
        let mut sources = Vec::new();
        if f == "-" {
            sources.push(("STDIN".to_string(), crate::util::read_stdin()?));
        } else {
            let path = std::path::Path::new(f);
            let mut paths = Vec::new();
            if path.is_dir() {
                let mut entries: Vec<_> = std::fs::read_dir(path)
                    .map_err(|e| Fail::new(format!("error: {f}: {e}")))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .collect();
                entries.sort();
                paths.extend(entries.into_iter().filter(|p| {
                    p.extension()
                        .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
                }));
            } else if path.exists() {
                paths.push(path.to_path_buf());
            } else {
                return Err(Fail::new(format!("error: the path \"{f}\" does not exist")));
            }
            for p in paths {
                let text = std::fs::read_to_string(&p)
                    .map_err(|e| Fail::new(format!("error: {}: {e}", p.display())))?;
                sources.push((p.display().to_string(), text));
            }
        }
        for (source, text) in sources {
            let values = crate::yaml::parse_manifests(&text)
                .map_err(|e| Fail::new(format!("error: error parsing {source}: {e}")))?;
            docs.extend(values.into_iter().map(|value| Doc {
                source: source.clone(),
                value,
            }));
        }
    }
    Ok(docs)
}

fn apply(a: &Args) -> Res<i32> {
    let docs = read_manifests(a)?;
    let cluster = connect(a)?;
    if Injections::from_env().has("kubectl-apply") {
        return Err(Fail::new(
            "Error from server (InternalError): error when creating \"STDIN\": Internal error occurred: etcdserver: request timed out (fake-kube: injected failure kubectl-apply)",
        ));
    }
    let _lock = state::lock(&cluster.name)?;
    let mut objects = state::load_objects(&cluster.name)?;
    let (lines, errors) = apply::apply_all(&mut objects, docs, a.namespace(), now_s());
    state::save_objects(&cluster.name, &objects)?;
    for l in &lines {
        println!("{l}");
    }
    for w in pods::reconcile(&cluster, &objects)? {
        eprintln!("{w}");
    }
    for e in &errors {
        eprintln!("{e}");
    }
    Ok(if errors.is_empty() { 0 } else { 1 })
}

// ---- label selectors ----

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq)]
pub enum Req {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// Parses `a=b,c!=d,e,!f,g in (x,y),h notin (z)`.
pub fn parse_selector(s: &str) -> Result<Vec<Req>, String> {
    let mut parts = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for ch in s.chars() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(ch);
    }
    parts.push(cur);
    let bad =
        || format!("error: unable to parse requirement: found '{s}', expected: label selector");
    let set = |v: &str| -> Vec<String> {
        v.trim()
            .trim_start_matches('(')
            .trim_end_matches(')')
            .split(',')
            .map(|x| x.trim().to_string())
            .collect()
    };
    let mut reqs = Vec::new();
    for p in parts.iter().map(|p| p.trim()).filter(|p| !p.is_empty()) {
        let req = if let Some((k, v)) = p.split_once("!=") {
            Req::Ne(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = p.split_once("==").or_else(|| p.split_once('=')) {
            Req::Eq(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = p.split_once(" notin ") {
            Req::NotIn(k.trim().into(), set(v))
        } else if let Some((k, v)) = p.split_once(" in ") {
            Req::In(k.trim().into(), set(v))
        } else if let Some(k) = p.strip_prefix('!') {
            Req::NotExists(k.trim().into())
        } else if p.contains(' ') || p.contains('(') {
            return Err(bad());
        } else {
            Req::Exists(p.into())
        };
        reqs.push(req);
    }
    Ok(reqs)
}

pub fn selector_matches(reqs: &[Req], labels: &Value) -> bool {
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    reqs.iter().all(|r| match r {
        Req::Eq(k, v) => get(k) == Some(v),
        Req::Ne(k, v) => get(k) != Some(v),
        Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
        Req::NotIn(k, vs) => get(k).is_none_or(|x| !vs.iter().any(|v| v == x)),
        Req::Exists(k) => get(k).is_some(),
        Req::NotExists(k) => get(k).is_none(),
    })
}

// ---- get ----

/// A resource type of `kubectl get`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Resource {
    Pods,
    Nodes,
    Kind(&'static KindInfo),
}

impl Resource {
    fn parse(word: &str) -> Option<Resource> {
        match word.to_ascii_lowercase().as_str() {
            "pods" | "pod" | "po" => Some(Resource::Pods),
            "nodes" | "node" | "no" => Some(Resource::Nodes),
            w => apply::kind_by_word(w).map(Resource::Kind),
        }
    }
    fn plural(&self) -> &'static str {
        match self {
            Resource::Pods => "pods",
            Resource::Nodes => "nodes",
            Resource::Kind(k) => k.plural,
        }
    }
    /// `pod`, `deployment.apps` (for `-o name` and messages).
    fn singular(&self) -> &'static str {
        match self {
            Resource::Pods => "pod",
            Resource::Nodes => "node",
            Resource::Kind(k) => k.resource,
        }
    }
    fn namespaced(&self) -> bool {
        match self {
            Resource::Pods => true,
            Resource::Nodes => false,
            Resource::Kind(k) => k.namespaced,
        }
    }
}

/// Deployment / Job status derived from their pod.
pub fn with_status(obj: &Value, kind: &str, pods: &[ObservedPod]) -> Value {
    let mut obj = obj.clone();
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    let ns = obj["metadata"]["namespace"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let pod = pods
        .iter()
        .find(|p| p.plan.owner_kind == kind && p.plan.owner == name && p.plan.namespace == ns);
    let cond = |t: &str, ok: bool, reason: &str| json!({"type": t, "status": if ok { "True" } else { "False" }, "reason": reason});
    match kind {
        "Deployment" => {
            let replicas = obj["spec"]["replicas"].as_i64().unwrap_or(1);
            let ready = if pod.is_some_and(|p| p.status.ready) {
                replicas
            } else {
                0
            };
            let mut st = json!({
                "observedGeneration": obj["metadata"]["generation"],
                "replicas": replicas, "updatedReplicas": replicas,
                "conditions": [
                    cond("Available", ready == replicas, if ready == replicas { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" }),
                    cond("Progressing", true, if ready == replicas { "NewReplicaSetAvailable" } else { "ReplicaSetUpdated" }),
                ],
            });
            if ready > 0 {
                st["readyReplicas"] = json!(ready);
                st["availableReplicas"] = json!(ready);
            }
            if replicas > ready {
                st["unavailableReplicas"] = json!(replicas - ready);
            }
            obj["status"] = st;
        }
        "Job" => {
            let phase = pod.map_or("Pending", |p| p.status.phase.as_str());
            let mut st = json!({"startTime": obj["metadata"]["creationTimestamp"]});
            match phase {
                "Succeeded" => {
                    st["succeeded"] = json!(1);
                    st["conditions"] = json!([
                        cond("SuccessCriteriaMet", true, "CompletionsReached"),
                        cond("Complete", true, "CompletionsReached")
                    ]);
                    st["completionTime"] = json!(pod
                        .and_then(|p| p.container.as_ref()?.finished)
                        .map(crate::util::rfc3339));
                }
                "Failed" => {
                    st["failed"] = json!(1 + pod.map_or(0, |p| p.status.restart_count));
                    st["conditions"] = json!([
                        cond("FailureTarget", true, "BackoffLimitExceeded"),
                        cond("Failed", true, "BackoffLimitExceeded")
                    ]);
                }
                _ => {
                    st["active"] = json!(1);
                    st["ready"] = json!(i64::from(pod.is_some_and(|p| p.status.ready)));
                }
            }
            obj["status"] = st;
        }
        _ => {}
    }
    obj
}

fn node_object(c: &Cluster) -> Value {
    let mut labels: BTreeMap<String, String> = c.node_labels.clone();
    for (k, v) in [
        ("kubernetes.io/hostname", c.node_name()),
        ("kubernetes.io/os", "linux".into()),
        ("kubernetes.io/arch", "amd64".into()),
        ("node-role.kubernetes.io/control-plane", String::new()),
    ] {
        labels.entry(k.to_string()).or_insert(v);
    }
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": c.node_name(), "labels": labels, "creationTimestamp": crate::util::rfc3339(c.created)},
        "status": {
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"}],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": c.node_name()}],
            "images": c.images.iter().map(|i| json!({"names": [i.reference]})).collect::<Vec<_>>(),
            "nodeInfo": {"kubeletVersion": "v1.32.2-fake", "containerRuntimeVersion": "podman (fake-kube)", "operatingSystem": "linux", "architecture": "amd64"},
        },
    })
}

/// Objects of a resource type, with status computed now. `ns` None = all namespaces.
fn list(cluster: &Cluster, objects: &Objects, res: Resource, ns: Option<&str>) -> Res<Vec<Value>> {
    let ns = if res.namespaced() { ns } else { None };
    Ok(match res {
        Resource::Pods => pods::observe(cluster, objects, ns)?
            .iter()
            .map(ObservedPod::to_json)
            .collect(),
        Resource::Nodes => vec![node_object(cluster)],
        Resource::Kind(k) => {
            let mut items: Vec<Value> =
                state::objects_of(objects, k.kind, if k.namespaced { ns } else { None })
                    .cloned()
                    .collect();
            if k.kind == "Namespace" {
                for (i, b) in state::BUILTIN_NAMESPACES.iter().enumerate() {
                    items.insert(i, json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": b, "creationTimestamp": crate::util::rfc3339(cluster.created)}, "status": {"phase": "Active"}}));
                }
                items.sort_by(|a, b| {
                    a["metadata"]["name"]
                        .as_str()
                        .cmp(&b["metadata"]["name"].as_str())
                });
            }
            if k.kind == "Deployment" || k.kind == "Job" {
                let pods = pods::observe(cluster, objects, ns)?;
                items = items
                    .iter()
                    .map(|o| with_status(o, k.kind, &pods))
                    .collect();
            }
            for item in &mut items {
                if item["apiVersion"].is_null() {
                    item["apiVersion"] = json!(k.api);
                }
                item["kind"] = json!(k.kind);
            }
            items
        }
    })
}

/// Table rows (`kubectl get` without `-o`).
fn table(res: Resource, items: &[Value], all_ns: bool, now: i64) -> String {
    let age_of = |v: &Value| {
        age(now
            - v["metadata"]["creationTimestamp"]
                .as_str()
                .and_then(crate::util::parse_rfc3339)
                .unwrap_or(now))
    };
    let s = |v: &Value| {
        v.as_str().map(String::from).unwrap_or_else(|| {
            if v.is_null() {
                String::new()
            } else {
                v.to_string()
            }
        })
    };
    let (head, rows): (Vec<&str>, Vec<Vec<String>>) = match res {
        Resource::Pods => (
            vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
            items
                .iter()
                .map(|p| {
                    let cs = &p["status"]["containerStatuses"][0];
                    let display = cs["state"]["waiting"]["reason"]
                        .as_str()
                        .or(cs["state"]["terminated"]["reason"].as_str())
                        .unwrap_or(p["status"]["phase"].as_str().unwrap_or(""));
                    vec![
                        s(&p["metadata"]["name"]),
                        format!("{}/1", u8::from(cs["ready"] == json!(true))),
                        display.to_string(),
                        s(&cs["restartCount"]),
                        age_of(p),
                    ]
                })
                .collect(),
        ),
        Resource::Nodes => (
            vec!["NAME", "STATUS", "ROLES", "AGE", "VERSION"],
            items
                .iter()
                .map(|n| {
                    vec![
                        s(&n["metadata"]["name"]),
                        "Ready".into(),
                        "control-plane".into(),
                        age_of(n),
                        "v1.32.2-fake".into(),
                    ]
                })
                .collect(),
        ),
        Resource::Kind(k) => match k.kind {
            "Deployment" => (
                vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
                items
                    .iter()
                    .map(|d| {
                        let r = d["spec"]["replicas"].as_i64().unwrap_or(1);
                        let ready = d["status"]["readyReplicas"].as_i64().unwrap_or(0);
                        vec![
                            s(&d["metadata"]["name"]),
                            format!("{ready}/{r}"),
                            r.to_string(),
                            ready.to_string(),
                            age_of(d),
                        ]
                    })
                    .collect(),
            ),
            "Job" => (
                vec!["NAME", "STATUS", "COMPLETIONS", "AGE"],
                items
                    .iter()
                    .map(|j| {
                        let st = &j["status"];
                        let status = if st["succeeded"].is_number() {
                            "Complete"
                        } else if st["failed"].is_number() {
                            "Failed"
                        } else {
                            "Running"
                        };
                        vec![
                            s(&j["metadata"]["name"]),
                            status.into(),
                            format!("{}/1", st["succeeded"].as_i64().unwrap_or(0)),
                            age_of(j),
                        ]
                    })
                    .collect(),
            ),
            "Service" => (
                vec![
                    "NAME",
                    "TYPE",
                    "CLUSTER-IP",
                    "EXTERNAL-IP",
                    "PORT(S)",
                    "AGE",
                ],
                items
                    .iter()
                    .map(|v| {
                        let ports: Vec<String> = v["spec"]["ports"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|p| match p["nodePort"].as_i64() {
                                Some(np) => format!("{}:{np}/{}", p["port"], s(&p["protocol"])),
                                None => format!("{}/{}", p["port"], s(&p["protocol"])),
                            })
                            .collect();
                        vec![
                            s(&v["metadata"]["name"]),
                            s(&v["spec"]["type"]),
                            s(&v["spec"]["clusterIP"]),
                            "<none>".into(),
                            ports.join(","),
                            age_of(v),
                        ]
                    })
                    .collect(),
            ),
            "Secret" => (
                vec!["NAME", "TYPE", "DATA", "AGE"],
                items
                    .iter()
                    .map(|v| {
                        vec![
                            s(&v["metadata"]["name"]),
                            s(&v["type"]),
                            v["data"].as_object().map_or(0, |m| m.len()).to_string(),
                            age_of(v),
                        ]
                    })
                    .collect(),
            ),
            "ConfigMap" => (
                vec!["NAME", "DATA", "AGE"],
                items
                    .iter()
                    .map(|v| {
                        vec![
                            s(&v["metadata"]["name"]),
                            v["data"].as_object().map_or(0, |m| m.len()).to_string(),
                            age_of(v),
                        ]
                    })
                    .collect(),
            ),
            _ => (
                vec!["NAME", "STATUS", "AGE"],
                items
                    .iter()
                    .map(|v| vec![s(&v["metadata"]["name"]), "Active".into(), age_of(v)])
                    .collect(),
            ),
        },
    };
    let mut head: Vec<String> = head.into_iter().map(String::from).collect();
    let mut rows = rows;
    if all_ns && res.namespaced() {
        head.insert(0, "NAMESPACE".into());
        for (r, item) in rows.iter_mut().zip(items) {
            r.insert(0, s(&item["metadata"]["namespace"]));
        }
    }
    let mut widths: Vec<usize> = head.iter().map(String::len).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<width$}", width = w + 3));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(&head);
    for r in &rows {
        out.push_str(&line(r));
    }
    out
}

fn print_items(res: Resource, items: Vec<Value>, single: bool, a: &Args) -> Res<()> {
    let (output, all_ns) = (a.get("output"), a.on("all-namespaces"));
    let value = if single && items.len() == 1 {
        items[0].clone()
    } else {
        json!({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}})
    };
    match output {
        Some("json") => println!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        ),
        Some("yaml") => print!("{}", crate::yaml::emit(&value)),
        Some("name") => {
            for i in &items {
                println!(
                    "{}/{}",
                    res.singular(),
                    i["metadata"]["name"].as_str().unwrap_or("")
                );
            }
        }
        None | Some("wide") => {
            let text = table(res, &items, all_ns, now_s());
            let skip = if a.on("no-headers") { 1 } else { 0 };
            text.lines().skip(skip).for_each(|l| println!("{l}"));
        }
        Some(other) => {
            return Err(Fail::new(format!(
                "fake-kubectl: unsupported output format: {other} (json, yaml, name, wide are)"
            )))
        }
    }
    Ok(())
}

/// `(resource, names)` from `get TYPE [NAME...]` or `get TYPE/NAME`.
fn resource_and_names(words: &[String], argv: &[String]) -> Res<(Resource, Vec<String>)> {
    let first = words
        .first()
        .ok_or_else(|| Fail::new("error: You must specify the type of resource to get."))?;
    let (word, mut names) = match first.split_once('/') {
        Some((w, n)) => (w.to_string(), vec![n.to_string()]),
        None => (first.clone(), Vec::new()),
    };
    if word.contains(',') {
        return Err(unsupported(argv));
    }
    let res = Resource::parse(&word).ok_or_else(|| {
        Fail::new(format!(
            "error: the server doesn't have a resource type \"{word}\""
        ))
    })?;
    for w in &words[1..] {
        names.push(w.split_once('/').map_or(w.clone(), |(_, n)| n.to_string()));
    }
    Ok((res, names))
}

fn get(a: &Args, argv: &[String]) -> Res<i32> {
    let (res, names) = resource_and_names(&a.pos[1..], argv)?;
    let selector = parse_selector(a.get("selector").unwrap_or("")).map_err(Fail::new)?;
    let cluster = connect(a)?;
    if Injections::from_env().has("kubectl-get") {
        return Err(Fail::new("Unable to connect to the server: net/http: TLS handshake timeout (fake-kube: injected failure kubectl-get)"));
    }
    let objects = state::load_objects(&cluster.name)?;
    let all_ns = a.on("all-namespaces");
    let ns = if all_ns { None } else { Some(a.namespace()) };
    let items: Vec<Value> = list(&cluster, &objects, res, ns)?
        .into_iter()
        .filter(|i| selector_matches(&selector, &i["metadata"]["labels"]))
        .collect();
    let mut missing = Vec::new();
    let items = if names.is_empty() {
        items
    } else {
        let mut picked = Vec::new();
        for n in &names {
            match items
                .iter()
                .find(|i| i["metadata"]["name"].as_str() == Some(n))
            {
                Some(i) => picked.push(i.clone()),
                None => missing.push(n.clone()),
            }
        }
        picked
    };
    if !(items.is_empty() && a.get("output").is_none()) {
        print_items(res, items.clone(), names.len() == 1, a)?;
    } else if names.is_empty() {
        match ns.filter(|_| res.namespaced()) {
            Some(n) => eprintln!("No resources found in {n} namespace."),
            None => eprintln!("No resources found"),
        }
    }
    if !missing.is_empty() && !a.on("ignore-not-found") {
        let msgs: Vec<String> = missing
            .iter()
            .map(|n| {
                format!(
                    "Error from server (NotFound): {} \"{n}\" not found",
                    res.plural()
                )
            })
            .collect();
        return Err(Fail::new(msgs.join("\n")));
    }
    Ok(0)
}

// ---- describe ----

fn describe(a: &Args) -> Res<i32> {
    let names = &a.pos[2..];
    let selector = parse_selector(a.get("selector").unwrap_or("")).map_err(Fail::new)?;
    let cluster = connect(a)?;
    let objects = state::load_objects(&cluster.name)?;
    let ns = if a.on("all-namespaces") {
        None
    } else {
        Some(a.namespace())
    };
    let all = pods::observe(&cluster, &objects, ns)?;
    // Like kubectl: an exact name, else every pod whose name starts with it.
    let chosen: Vec<&ObservedPod> = all
        .iter()
        .filter(|p| selector_matches(&selector, &json!(p.plan.labels)))
        .filter(|p| {
            names.is_empty()
                || names.iter().any(|n| {
                    p.plan.name == *n
                        || (!all.iter().any(|q| q.plan.name == *n)
                            && p.plan.name.starts_with(n.as_str()))
                })
        })
        .collect();
    if chosen.is_empty() {
        return Err(Fail::new(match names.first() {
            Some(n) => format!("Error from server (NotFound): pods \"{n}\" not found"),
            None => format!("No resources found in {} namespace.", a.namespace()),
        }));
    }
    let texts: Vec<String> = chosen.iter().map(|p| describe_pod(p, &objects)).collect();
    print!("{}", texts.join("\n\n"));
    Ok(0)
}

fn describe_pod(p: &ObservedPod, objects: &Objects) -> String {
    let pl = &p.plan;
    let st = &p.status;
    let c = &pl.container;
    let mut o = String::new();
    let mut kv = |k: &str, v: String| o.push_str(&format!("{:<18}{v}\n", format!("{k}:")));
    kv("Name", pl.name.clone());
    kv("Namespace", pl.namespace.clone());
    kv("Node", format!("{}/127.0.0.1", p.node));
    kv(
        "Labels",
        pl.labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("\n                  "),
    );
    kv("Status", st.phase.clone());
    kv(
        "IP",
        p.container
            .as_ref()
            .and_then(|c| c.ip.clone())
            .unwrap_or_default(),
    );
    kv(
        "Controlled By",
        if pl.is_job() {
            format!("Job/{}", pl.owner)
        } else {
            format!(
                "ReplicaSet/{}-{}",
                pl.owner,
                pl.labels
                    .get("pod-template-hash")
                    .cloned()
                    .unwrap_or_default()
            )
        },
    );
    kv("Podman container", pl.container_name.clone());
    o.push_str(&format!("Containers:\n  {}:\n", pl.container_k8s_name()));
    let mut ckv = |k: &str, v: String| o.push_str(&format!("    {:<20}{v}\n", format!("{k}:")));
    if let Some(ci) = &p.container {
        ckv("Container ID", format!("podman://{}", ci.id));
    }
    ckv("Image", pl.image.clone());
    ckv("Image Pull Policy", pl.pull_policy.clone());
    let ports: Vec<String> = c["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            format!(
                "{}/{}",
                p["containerPort"],
                p["protocol"].as_str().unwrap_or("TCP")
            )
        })
        .collect();
    ckv(
        "Port",
        if ports.is_empty() {
            "<none>".into()
        } else {
            ports.join(", ")
        },
    );
    let state = if let Some(w) = st.state.get("waiting") {
        format!(
            "Waiting\n      Reason:       {}\n      Message:      {}",
            w["reason"].as_str().unwrap_or(""),
            w["message"].as_str().unwrap_or("")
        )
    } else if let Some(t) = st.state.get("terminated") {
        format!(
            "Terminated\n      Reason:       {}\n      Exit Code:    {}",
            t["reason"].as_str().unwrap_or(""),
            t["exitCode"]
        )
    } else {
        format!(
            "Running\n      Started:      {}",
            st.state["running"]["startedAt"].as_str().unwrap_or("")
        )
    };
    ckv("State", state);
    if let Some(t) = st.last_state.get("terminated") {
        ckv(
            "Last State",
            format!(
                "Terminated\n      Reason:       {}\n      Exit Code:    {}",
                t["reason"].as_str().unwrap_or(""),
                t["exitCode"]
            ),
        );
    }
    ckv(
        "Ready",
        if st.ready {
            "True".into()
        } else {
            "False".into()
        },
    );
    ckv("Restart Count", st.restart_count.to_string());
    if let Some(pr) = c.get("readinessProbe") {
        let port = |v: &Value| {
            v.as_str()
                .map(String::from)
                .unwrap_or_else(|| v.to_string())
        };
        let what = if let Some(h) = pr.get("httpGet") {
            format!(
                "http-get http://:{}{}",
                port(&h["port"]),
                h["path"].as_str().unwrap_or("/")
            )
        } else if let Some(t) = pr.get("tcpSocket") {
            format!("tcp-socket :{}", port(&t["port"]))
        } else if let Some(e) = pr.get("exec") {
            format!("exec {}", e["command"])
        } else {
            pr.to_string()
        };
        ckv(
            "Readiness",
            format!(
                "{what} delay={}s timeout={}s",
                pr["initialDelaySeconds"].as_i64().unwrap_or(0),
                pr["timeoutSeconds"].as_i64().unwrap_or(1)
            ),
        );
    }
    o.push_str("    Environment:\n");
    for e in c["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap_or("");
        let vf = &e["valueFrom"];
        let shown = if let Some(v) = e["value"].as_str() {
            v.to_string()
        } else if !vf["secretKeyRef"].is_null() {
            format!(
                "<set to the key '{}' in secret '{}'>",
                vf["secretKeyRef"]["key"].as_str().unwrap_or(""),
                vf["secretKeyRef"]["name"].as_str().unwrap_or("")
            )
        } else if !vf["configMapKeyRef"].is_null() {
            format!(
                "<set to the key '{}' of config map '{}'>",
                vf["configMapKeyRef"]["key"].as_str().unwrap_or(""),
                vf["configMapKeyRef"]["name"].as_str().unwrap_or("")
            )
        } else {
            vf.to_string()
        };
        o.push_str(&format!("      {name}:  {shown}\n"));
    }
    for ef in c["envFrom"].as_array().into_iter().flatten() {
        let (kind, r) = if ef["secretRef"].is_null() {
            ("ConfigMap", &ef["configMapRef"])
        } else {
            ("Secret", &ef["secretRef"])
        };
        let name = r["name"].as_str().unwrap_or("");
        let exists = objects.contains_key(&state::object_key(&pl.namespace, kind, name));
        o.push_str(&format!(
            "      {name}  {kind}  Optional: {}{}\n",
            r["optional"] == json!(true),
            if exists { "" } else { "  (not found)" }
        ));
    }
    o.push_str(&format!(
        "Conditions:\n  Type    Status\n  Ready   {}\n",
        if st.ready { "True" } else { "False" }
    ));
    o.push_str("Events:\n  Type     Reason     From              Message\n  ----     ------     ----              -------\n");
    let mut event = |t: &str, r: &str, m: &str| {
        o.push_str(&format!("  {t:<8} {r:<10} {:<17} {m}\n", "kubelet (fake)"))
    };
    match &st.state.get("waiting") {
        Some(w)
            if !matches!(
                w["reason"].as_str(),
                Some("ContainerCreating" | "CrashLoopBackOff")
            ) =>
        {
            event(
                "Warning",
                "Failed",
                &format!(
                    "Error: {}: {}",
                    w["reason"].as_str().unwrap_or(""),
                    w["message"].as_str().unwrap_or("")
                ),
            );
        }
        Some(w) if w["reason"] == json!("CrashLoopBackOff") => {
            event("Warning", "BackOff", w["message"].as_str().unwrap_or(""))
        }
        _ => {}
    }
    if p.container.is_some() {
        event(
            "Normal",
            "Pulled",
            &format!(
                "Container image \"{}\" already present on machine",
                pl.image
            ),
        );
        event(
            "Normal",
            "Started",
            &format!("Started container {}", pl.container_k8s_name()),
        );
    }
    if let Some(e) = &p.probe_error {
        event(
            "Warning",
            "Unhealthy",
            &format!("Readiness probe failed: {e}"),
        );
    }
    if let Some(ci) = &p.container {
        let (_, text) = crate::util::run_with_timeout(
            {
                let mut cmd = Command::new(podman_bin());
                cmd.args(["logs", "--tail", "20", &ci.name]);
                cmd
            },
            Duration::from_secs(10),
        )
        .unwrap_or((1, String::new()));
        o.push_str("Last 20 log lines (fake-kube):\n");
        for l in text.lines() {
            o.push_str(&format!("  {l}\n"));
        }
    }
    o
}

// ---- logs ----

/// Pods named by `POD`, `deployment/NAME`, `job/NAME`, `pod/NAME` or `-l`.
fn pick_pods<'a>(
    a: &Args,
    all: &'a [ObservedPod],
    target: Option<&str>,
) -> Res<Vec<&'a ObservedPod>> {
    let selector = parse_selector(a.get("selector").unwrap_or("")).map_err(Fail::new)?;
    match target {
        None if a.get("selector").is_some() => Ok(all
            .iter()
            .filter(|p| selector_matches(&selector, &json!(p.plan.labels)))
            .collect()),
        None => Err(Fail::new(
            "error: expected 'logs [-f] [-p] (POD | TYPE/NAME) [-c CONTAINER]'.",
        )),
        Some(t) => {
            let (kind, name) = match t.split_once('/') {
                Some((k, n)) => (Resource::parse(k), n),
                None => (Some(Resource::Pods), t),
            };
            let found: Vec<&ObservedPod> = all
                .iter()
                .filter(|p| match kind {
                    Some(Resource::Pods) => p.plan.name == name,
                    Some(Resource::Kind(k)) => p.plan.owner_kind == k.kind && p.plan.owner == name,
                    _ => false,
                })
                .collect();
            if found.is_empty() {
                let plural = kind.map_or("pods", |k| k.plural());
                return Err(Fail::new(format!(
                    "Error from server (NotFound): {plural} \"{name}\" not found"
                )));
            }
            Ok(found)
        }
    }
}

fn logs(a: &Args, argv: &[String]) -> Res<i32> {
    if a.pos.len() > 2 {
        return Err(unsupported(argv));
    }
    let cluster = connect(a)?;
    let objects = state::load_objects(&cluster.name)?;
    let all = pods::observe(&cluster, &objects, Some(a.namespace()))?;
    let chosen = pick_pods(a, &all, a.pos.get(1).map(String::as_str))?;
    let by_selector = a.pos.len() == 1;
    let tail = a
        .get("tail")
        .map(String::from)
        .or(by_selector.then(|| "10".to_string()))
        .filter(|t| t != "-1");
    let prefix = a.on("prefix");
    let mut code = 0;
    for p in chosen {
        if let Some(c) = a.get("container") {
            if c != p.plan.container_k8s_name() {
                return Err(Fail::new(format!(
                    "error: container {c} is not valid for pod {}",
                    p.plan.name
                )));
            }
        }
        let Some(ci) = &p.container else {
            let reason = p.status.state["waiting"]["reason"]
                .as_str()
                .unwrap_or("ContainerCreating");
            let why = if reason.contains("Image") {
                "trying and failing to pull image"
            } else {
                reason
            };
            eprintln!("Error from server (BadRequest): container \"{}\" in pod \"{}\" is waiting to start: {why}", p.plan.container_k8s_name(), p.plan.name);
            code = 1;
            continue;
        };
        let mut cmd = Command::new(podman_bin());
        cmd.arg("logs");
        if let Some(t) = &tail {
            cmd.args(["--tail", t]);
        }
        if a.on("timestamps") {
            cmd.arg("--timestamps");
        }
        cmd.arg(&ci.name);
        if prefix {
            let out = cmd
                .output()
                .map_err(|e| Fail::new(format!("fake-kube: podman logs: {e}")))?;
            let tag = format!("[pod/{}/{}]", p.plan.name, p.plan.container_k8s_name());
            for l in String::from_utf8_lossy(&out.stdout)
                .lines()
                .chain(String::from_utf8_lossy(&out.stderr).lines())
            {
                println!("{tag} {l}");
            }
        } else {
            let status = cmd
                .status()
                .map_err(|e| Fail::new(format!("fake-kube: podman logs: {e}")))?;
            if !status.success() {
                code = 1;
            }
        }
    }
    Ok(code)
}

// ---- delete ----

fn delete(a: &Args, argv: &[String]) -> Res<i32> {
    let (res, names) = resource_and_names(&a.pos[1..], argv)?;
    let Resource::Kind(info) = res else {
        return Err(unsupported(argv));
    };
    if names.is_empty() {
        return Err(Fail::new(
            "error: resource(s) were provided, but no name was specified",
        ));
    }
    let cluster = connect(a)?;
    let _lock = state::lock(&cluster.name)?;
    let mut objects = state::load_objects(&cluster.name)?;
    let mut errors = Vec::new();
    let ns = if info.namespaced { a.namespace() } else { "" };
    for name in &names {
        let key = state::object_key(ns, info.kind, name);
        if info.kind == "Namespace" && state::BUILTIN_NAMESPACES.contains(&name.as_str()) {
            errors.push(format!("Error from server (Forbidden): namespaces \"{name}\" is forbidden: this namespace may not be deleted"));
        } else if objects.remove(&key).is_some() {
            if info.kind == "Namespace" {
                objects.retain(|k, _| !k.starts_with(&format!("{name}/")));
            }
            println!("{} \"{name}\" deleted", info.resource);
        } else if !a.on("ignore-not-found") {
            errors.push(format!(
                "Error from server (NotFound): {} \"{name}\" not found",
                info.plural
            ));
        }
    }
    state::save_objects(&cluster.name, &objects)?;
    for w in pods::reconcile(&cluster, &objects)? {
        eprintln!("{w}");
    }
    if errors.is_empty() {
        Ok(0)
    } else {
        Err(Fail::new(errors.join("\n")))
    }
}

// ---- wait / rollout status ----

/// Whether `item` meets `condition` (lower case: ready, available, complete, failed, ...).
fn condition_met(item: &Value, condition: &str) -> bool {
    item["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| {
            c["type"]
                .as_str()
                .is_some_and(|t| t.eq_ignore_ascii_case(condition))
                && c["status"] == json!("True")
        })
}

fn timeout_of(a: &Args, default: u64) -> Res<Duration> {
    match a.get("timeout") {
        None => Ok(Duration::from_secs(default)),
        Some(t) => parse_duration(t).ok_or_else(|| Fail::new(format!("error: invalid argument \"{t}\" for \"--timeout\" flag: time: invalid duration \"{t}\""))),
    }
}

fn wait(a: &Args, argv: &[String]) -> Res<i32> {
    let cond = a
        .get("for")
        .and_then(|f| f.strip_prefix("condition="))
        .ok_or_else(|| unsupported(argv))?;
    let (cond, want) = cond.split_once('=').unwrap_or((cond, "True"));
    if !want.eq_ignore_ascii_case("true") {
        return Err(unsupported(argv));
    }
    let (res, names) = resource_and_names(&a.pos[1..], argv)?;
    let selector = parse_selector(a.get("selector").unwrap_or("")).map_err(Fail::new)?;
    if names.is_empty() && a.get("selector").is_none() && !a.on("all") {
        return Err(Fail::new(
            "error: resource(s) were provided, but no name was specified",
        ));
    }
    let cluster = connect(a)?;
    let deadline = Instant::now() + timeout_of(a, 30)?;
    loop {
        if Injections::from_env().has("kubectl-get") {
            return Err(Fail::new("Unable to connect to the server: net/http: TLS handshake timeout (fake-kube: injected failure kubectl-get)"));
        }
        let objects = state::load_objects(&cluster.name)?;
        let items: Vec<Value> = list(&cluster, &objects, res, Some(a.namespace()))?
            .into_iter()
            .filter(|i| selector_matches(&selector, &i["metadata"]["labels"]))
            .filter(|i| {
                names.is_empty()
                    || names
                        .iter()
                        .any(|n| i["metadata"]["name"].as_str() == Some(n))
            })
            .collect();
        let missing: Vec<&String> = names
            .iter()
            .filter(|n| {
                !items
                    .iter()
                    .any(|i| i["metadata"]["name"].as_str() == Some(n))
            })
            .collect();
        if let Some(n) = missing.first() {
            return Err(Fail::new(format!(
                "Error from server (NotFound): {} \"{n}\" not found",
                res.plural()
            )));
        }
        if items.is_empty() {
            return Err(Fail::new("error: no matching resources found"));
        }
        let pending: Vec<&Value> = items.iter().filter(|i| !condition_met(i, cond)).collect();
        if pending.is_empty() {
            for i in &items {
                println!(
                    "{}/{} condition met",
                    res.singular(),
                    i["metadata"]["name"].as_str().unwrap_or("")
                );
            }
            return Ok(0);
        }
        if Instant::now() >= deadline {
            let msgs: Vec<String> = pending
                .iter()
                .map(|i| {
                    format!(
                        "error: timed out waiting for the condition on {}/{}",
                        res.plural(),
                        i["metadata"]["name"].as_str().unwrap_or("")
                    )
                })
                .collect();
            return Err(Fail::new(msgs.join("\n")));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn rollout_status(a: &Args, argv: &[String]) -> Res<i32> {
    let (res, names) = resource_and_names(&a.pos[2..], argv)?;
    let (Resource::Kind(info), [name]) = (res, names.as_slice()) else {
        return Err(unsupported(argv));
    };
    if info.kind != "Deployment" {
        return Err(unsupported(argv));
    }
    let cluster = connect(a)?;
    let deadline = Instant::now() + timeout_of(a, 600)?;
    let mut said = false;
    loop {
        let objects = state::load_objects(&cluster.name)?;
        let obj = objects
            .get(&state::object_key(a.namespace(), "Deployment", name))
            .ok_or_else(|| {
                Fail::new(format!(
                    "Error from server (NotFound): deployments.apps \"{name}\" not found"
                ))
            })?;
        let pods = pods::observe(&cluster, &objects, Some(a.namespace()))?;
        let d = with_status(obj, "Deployment", &pods);
        let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
        let available = d["status"]["availableReplicas"].as_i64().unwrap_or(0);
        if available >= replicas {
            println!("deployment \"{name}\" successfully rolled out");
            return Ok(0);
        }
        if !said {
            println!("Waiting for deployment \"{name}\" rollout to finish: {available} of {replicas} updated replicas are available...");
            said = true;
        }
        if Instant::now() >= deadline {
            return Err(Fail::new("error: timed out waiting for the condition"));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::argv;

    #[test]
    fn parses_flags_anywhere() {
        let a = parse_args(&argv![
            "-n",
            "demo",
            "get",
            "pods",
            "-ojson",
            "--kubeconfig=/k",
            "-l",
            "app=web",
            "-A"
        ])
        .unwrap();
        assert_eq!(a.pos, ["get", "pods"]);
        assert_eq!(a.namespace(), "demo");
        assert_eq!(a.get("output"), Some("json"));
        assert_eq!(a.get("kubeconfig"), Some("/k"));
        assert_eq!(a.get("selector"), Some("app=web"));
        assert!(a.on("all-namespaces"));
        let a = parse_args(&argv![
            "apply",
            "-f",
            "-",
            "--namespace=x",
            "-f",
            "b.yaml",
            "--wait=false"
        ])
        .unwrap();
        assert_eq!(a.all("filename"), ["-", "b.yaml"]);
        assert_eq!(a.namespace(), "x");
        assert!(!a.on("wait"));
        let a = parse_args(&argv!["get", "pods"]).unwrap();
        assert_eq!(a.namespace(), "default");
        let e = parse_args(&argv!["get", "pods", "--bogus"]).unwrap_err();
        assert_eq!(e.msg, "fake-kubectl: unsupported command: get pods --bogus");
        assert!(parse_args(&argv!["get", "-n"]).is_err());
    }

    #[test]
    fn selectors() {
        let labels = json!({"app": "web", "tier": "be"});
        let m = |s: &str| selector_matches(&parse_selector(s).unwrap(), &labels);
        assert!(m("app=web") && m("app==web,tier") && m("app!=db") && m("!missing"));
        assert!(m("tier in (be, fe)") && m("tier notin (fe)") && m(""));
        assert!(!m("app=db") && !m("missing") && !m("tier in (fe)") && !m("app=web,tier=fe"));
        assert!(parse_selector("app web").is_err());
    }

    #[test]
    fn resource_words() {
        assert_eq!(Resource::parse("po"), Some(Resource::Pods));
        assert!(
            matches!(Resource::parse("deploy"), Some(Resource::Kind(k)) if k.kind == "Deployment")
        );
        let (r, n) = resource_and_names(&argv!["deployment/web"], &[]).unwrap();
        assert_eq!(
            (r.singular(), n),
            ("deployment.apps", vec!["web".to_string()])
        );
        assert!(resource_and_names(&argv!["ingresses"], &[])
            .unwrap_err()
            .msg
            .contains("doesn't have a resource type \"ingresses\""));
    }

    #[test]
    fn workload_status_from_pods() {
        let d = json!({"metadata": {"name": "web", "namespace": "ns", "generation": 1}, "spec": {"replicas": 2}});
        let s = with_status(&d, "Deployment", &[]);
        assert_eq!(s["status"]["unavailableReplicas"], 2);
        assert!(s["status"].get("readyReplicas").is_none());
        assert!(!condition_met(&s, "available"));
    }

    #[test]
    fn tables_align() {
        let items = vec![
            json!({"metadata": {"name": "a-long-name", "creationTimestamp": "1970-01-01T00:00:00Z"}, "data": {"k": "v"}}),
        ];
        let t = table(
            Resource::Kind(apply::kind_info("ConfigMap").unwrap()),
            &items,
            false,
            30,
        );
        assert_eq!(t, "NAME          DATA   AGE\na-long-name   1      30s\n");
    }
}
