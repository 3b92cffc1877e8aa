//! The fake `kubectl`: the commands the xtask runs, against the fake cluster the kubeconfig's
//! context (`--context`, else the current one) names.

use crate::apply::{self, NAMESPACES};
use crate::pods::{self, Observed};
use crate::state::{key, rfc3339};
use crate::{forward, podman, read_stdin, state, Args, Fail, Flag, Res};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// One term of a label selector: `key=value`, or `key` (the label exists).
type Term = (String, Option<String>);

const FLAGS: &[Flag] = &[
    (&["--kubeconfig"], "kubeconfig", true),
    (&["--context"], "context", true),
    (&["--timeout"], "timeout", true),
    (&["--pod-running-timeout"], "pod-running-timeout", true),
    (&["--address"], "address", true),
    (&["--wait"], "wait", false),
    (&["--ignore-not-found"], "ignore-not-found", false),
    (&["-n", "--namespace"], "namespace", true),
    (&["-o", "--output"], "output", true),
    (&["-f", "--filename"], "filename", true),
    (&["-l", "--selector"], "selector", true),
    (&["--tail"], "tail", true),
    (&["--client"], "client", false),
    (&["--all-containers"], "all-containers", false),
];

pub fn run(argv: &[String]) -> Res<()> {
    let unsupported = || {
        Fail(format!(
            "fake-kubectl: unsupported command: {}",
            argv.join(" ")
        ))
    };
    let a = Args::parse(argv, FLAGS).ok_or_else(unsupported)?;
    let ns = a.get("namespace").unwrap_or("default");
    let json = a.get("output") == Some("json");
    let selector = match a.get("selector").map(parse_selector) {
        Some(None) => return Err(unsupported()),
        s => s.flatten(),
    };
    let words: Vec<&str> = a.pos.iter().map(String::as_str).collect();
    let stdin = a.get("filename") == Some("-");
    match (words.as_slice(), selector) {
        (["version"], _) if a.on("client") => {
            println!("Client Version: v1.32.0-fake");
            Ok(())
        }
        (["config", "get-contexts"], None) if a.get("output") == Some("name") => {
            let path = state::kubeconfig_path(a.get("kubeconfig"));
            state::kubeconfig_contexts(&path)
                .iter()
                .for_each(|n| println!("{n}"));
            Ok(())
        }
        (["apply"], None) if stdin => apply(&a, ns, false),
        (["create"], None) if stdin => apply(&a, ns, true),
        (["get", "pods"], None) if json => {
            let (cluster, pods) = pods::observe(&connect(&a)?, true)?;
            let items = pods.iter().filter(|o| o.seen.pod.ns == ns);
            print_list(items.map(|o| o.to_json(&cluster.node())), None);
            Ok(())
        }
        (["get", "nodes"], None) if json => {
            let c = state::load(&connect(&a)?)?.unwrap_or_default();
            let mut labels = c.node_labels.clone();
            labels.insert("kubernetes.io/hostname".into(), c.node());
            let pulled = c.pulls.iter().filter(|(_, p)| p.ok);
            let pulled = pulled.map(|(i, _)| pods::normalize(i));
            let images: Vec<_> = c
                .images
                .iter()
                .cloned()
                .chain(pulled)
                .map(|i| json!({"names": [i]}))
                .collect();
            let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": c.node(), "labels": labels},
                "status": {"images": images, "conditions": [{"type": "Ready", "status": "True"}]}});
            print_list([node].into_iter(), None);
            Ok(())
        }
        (["get", "namespaces" | "namespace" | "ns"], sel) if json => {
            let c = state::load(&connect(&a)?)?.unwrap_or_default();
            let ts = rfc3339(c.created_ms);
            let builtin = NAMESPACES.map(|n| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n, "creationTimestamp": ts}}));
            let mut all = BTreeMap::new();
            for n in builtin.iter().chain(c.objects_of("Namespace", "")) {
                all.insert(n["metadata"]["name"].to_string(), n.clone());
            }
            let items = all.into_values().map(|mut n| {
                n["metadata"]["labels"]["kubernetes.io/metadata.name"] =
                    n["metadata"]["name"].clone();
                n["spec"] = json!({"finalizers": ["kubernetes"]});
                n["status"] = json!({"phase": "Active"});
                n
            });
            print_list(items, sel.as_deref());
            Ok(())
        }
        (["get", "configmaps" | "configmap" | "cm"], sel) if json => {
            let c = state::load(&connect(&a)?)?.unwrap_or_default();
            print_list(c.objects_of("ConfigMap", ns).cloned(), sel.as_deref());
            Ok(())
        }
        (["delete", "namespace" | "namespaces" | "ns", name], None) => delete_namespace(&a, name),
        (["delete", "configmap" | "configmaps" | "cm", name], None) => {
            let cluster = connect(&a)?;
            let _lock = state::lock(&cluster)?;
            let mut c = state::load(&cluster)?.unwrap_or_default();
            match c.objects.remove(&key(ns, "ConfigMap", name)) {
                Some(_) => println!("configmap \"{name}\" deleted"),
                None if a.on("ignore-not-found") => return Ok(()),
                None => {
                    return Err(Fail(format!(
                        "Error from server (NotFound): configmaps \"{name}\" not found"
                    )))
                }
            }
            state::save(&c)
        }
        (["port-forward", target, ports], None) => {
            let svc = ["svc/", "service/", "services/"]
                .iter()
                .find_map(|p| target.strip_prefix(p));
            let (local, remote) = ports.split_once(':').unwrap_or((ports, ports));
            let local = match local {
                "" => Some(0),
                l => l.parse::<u16>().ok(),
            };
            let (Some(svc), Some(local)) = (svc, local) else {
                return Err(unsupported());
            };
            let wait = a.get("pod-running-timeout").unwrap_or("1m");
            let wait = crate::duration("pod-running-timeout", wait)?;
            let address = a.get("address").unwrap_or("localhost");
            forward::run(&connect(&a)?, ns, svc, (local, remote), address, wait)
        }
        (["describe", "pods"], selector) => {
            let (_, pods) = pods::observe(&connect(&a)?, true)?;
            let chosen = chosen(&pods, ns, selector.as_deref());
            if chosen.is_empty() {
                println!("No resources found in {ns} namespace.");
            }
            let texts: Vec<String> = chosen.into_iter().map(describe).collect();
            print!("{}", texts.join("\n"));
            Ok(())
        }
        (["logs"], Some(selector)) => {
            let (_, pods) = pods::observe(&connect(&a)?, false)?;
            let tail = a.get("tail").unwrap_or("10"); // kubectl's default with a selector
            let mut ok = true;
            for o in chosen(&pods, ns, Some(&selector[..])) {
                let p = &o.seen.pod;
                match &o.seen.container {
                    Some(x) => ok &= podman::stream(&["logs", "--tail", tail, &x.name])?,
                    None => {
                        let why = o.status.state["waiting"]["reason"]
                            .as_str()
                            .unwrap_or_default();
                        eprintln!("Error from server (BadRequest): container \"{}\" in pod \"{}\" is waiting to start: {why}", p.container["name"].as_str().unwrap_or_default(), p.name);
                        ok = false;
                    }
                }
            }
            ok.then_some(()).ok_or(Fail(String::new()))
        }
        _ => Err(unsupported()),
    }
}

/// A `kind: List` of the objects whose labels match `sel`, as kubectl prints one.
fn print_list(items: impl Iterator<Item = Value>, sel: Option<&[Term]>) {
    let items: Vec<Value> = items
        .filter(|o| matches(&o["metadata"]["labels"], sel))
        .collect();
    let list = json!({"apiVersion": "v1", "items": items, "kind": "List", "metadata": {"resourceVersion": ""}});
    println!(
        "{}",
        serde_json::to_string_pretty(&list).unwrap_or_default()
    );
}

/// `k=v,k2` (equality and existence, the selectors the xtask uses); `None` for any other form.
fn parse_selector(s: &str) -> Option<Vec<Term>> {
    let plain = |x: &str| !x.is_empty() && !x.contains(['!', '=', ' ', '(', ')']);
    s.split(',')
        .map(|part| match part.split_once('=') {
            Some((k, v)) => (plain(k) && plain(v)).then(|| (k.to_string(), Some(v.to_string()))),
            None => plain(part).then(|| (part.to_string(), None)),
        })
        .collect()
}

/// Whether labels (a JSON object) match a selector (none: everything).
fn matches(labels: &Value, sel: Option<&[Term]>) -> bool {
    let found = |k: &str| &labels[k];
    sel.unwrap_or_default().iter().all(|(k, v)| match v {
        Some(v) => found(k) == v,
        None => !found(k).is_null(),
    })
}

fn chosen<'a>(pods: &'a [Observed], ns: &str, sel: Option<&[Term]>) -> Vec<&'a Observed> {
    pods.iter()
        .filter(|o| o.seen.pod.ns == ns && matches(&json!(o.seen.pod.labels), sel))
        .collect()
}

/// The fake cluster the kubeconfig's context (`--context`, else the current one) names, or
/// kubectl's error: `apply`/`create` and the other commands word a missing context differently.
fn connect(a: &Args) -> Res<String> {
    let path = state::kubeconfig_path(a.get("kubeconfig"));
    let server = match state::kubeconfig_cluster(&path, a.get("context")) {
        Err(ctx) => {
            return Err(Fail(match a.pos[0].as_str() {
                "apply" | "create" => format!("error: context \"{ctx}\" does not exist"),
                _ => format!(
                    "Error in configuration: context was not found for specified context: {ctx}"
                ),
            }))
        }
        Ok(Some(c)) => match c.strip_prefix("kind-") {
            Some(name) if state::load(name)?.is_some() => return Ok(name.to_string()),
            _ => "127.0.0.1:6443",
        },
        Ok(None) => "localhost:8080",
    };
    Err(Fail(format!("The connection to the server {server} was refused - did you specify the right host or port?")))
}

/// `kubectl delete namespace`: every object of the namespace, its pods' containers and its
/// network are removed before it returns (so `--wait` is always met; `--timeout` is checked).
fn delete_namespace(a: &Args, ns: &str) -> Res<()> {
    crate::duration("timeout", a.get("timeout").unwrap_or("0s"))?;
    if NAMESPACES.contains(&ns) {
        return Err(Fail(format!("Error from server (Forbidden): namespaces \"{ns}\" is forbidden: this namespace may not be deleted")));
    }
    let name = connect(a)?;
    let _lock = state::lock(&name)?;
    let mut c = state::load(&name)?.unwrap_or_default();
    if c.objects.remove(&key("", "Namespace", ns)).is_none() {
        return match a.on("ignore-not-found") {
            true => Ok(()),
            false => Err(Fail(format!(
                "Error from server (NotFound): namespaces \"{ns}\" not found"
            ))),
        };
    }
    c.objects.retain(|k, _| !k.starts_with(&format!("{ns}/")));
    state::save(&c)?;
    pods::sync(&mut c)?;
    pods::ns_network(&name, ns, true)?;
    println!("namespace \"{ns}\" deleted");
    Ok(())
}

/// `apply -f -`, or with `create`, `create -f -` (an existing object is an error). Podman is
/// asked only when that changes a pod: applying a Namespace never waits on podman's locks.
fn apply(a: &Args, ns: &str, create: bool) -> Res<()> {
    let docs = state::parse_docs(&read_stdin()?)
        .map_err(|e| Fail(format!("error: error parsing STDIN: {e}")))?;
    let name = connect(a)?;
    let _lock = state::lock(&name)?;
    let mut c = state::load(&name)?.unwrap_or_default();
    let now = crate::now_ms();
    let before = pods::shape(&c, now);
    let mut errors = Vec::new();
    for d in &docs {
        match apply::apply(&mut c, d, ns, create) {
            Ok(line) => println!("{line}"),
            Err(e) => errors.push(e),
        }
    }
    state::save(&c)?;
    let changed = pods::shape(&c, now) != before;
    for s in if changed {
        pods::sync(&mut c)?
    } else {
        Vec::new()
    } {
        if let Some(e) = s.error {
            eprintln!(
                "fake-kube: warning: pod {}/{}: podman could not start it: {e}",
                s.pod.ns, s.pod.name
            );
        }
    }
    match errors.is_empty() {
        true => Ok(()),
        false => Err(Fail(errors.join("\n"))),
    }
}

/// `kubectl describe pod`, briefly, with the container's last log lines.
fn describe(o: &Observed) -> String {
    let (p, s) = (&o.seen.pod, &o.status);
    let labels: Vec<String> = p.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let state = match (&s.state["waiting"], &s.state["terminated"]) {
        (w, _) if w.is_object() => format!(
            "Waiting: {} {}",
            w["reason"].as_str().unwrap_or_default(),
            w["message"].as_str().unwrap_or_default()
        ),
        (_, t) if t.is_object() => format!("Terminated: exit code {}", t["exitCode"]),
        _ => "Running".into(),
    };
    let mut text = format!(
        "Name:          {}\nNamespace:     {}\nLabels:        {}\nStatus:        {}\nContainer:     {} (podman container {})\n  Image:       {} (pull policy {})\n  State:       {state}\n  Ready:       {}\n  Restarts:    {}\n",
        p.name, p.ns, labels.join(", "), s.phase, p.container["name"].as_str().unwrap_or_default(), p.engine_name,
        p.container["image"].as_str().unwrap_or_default(), p.policy, s.ready, s.restarts,
    );
    if let Some(t) = s.last_state.get("terminated") {
        text.push_str(&format!(
            "  Last State:  Terminated: exit code {}\n",
            t["exitCode"]
        ));
    }
    if let Some(e) = &o.probe_error {
        text.push_str(&format!("  Readiness probe failed: {e}\n"));
    }
    if let Some(x) = &o.seen.container {
        let logs = podman::output(&["logs", "--tail", "20", &x.name])
            .map_or_else(|f| f.0, |o| o.stdout + &o.stderr);
        text.push_str("Last 20 log lines:\n");
        for l in logs.lines() {
            text.push_str(&format!("  {l}\n"));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equality_and_existence_selectors_only() {
        let sel = parse_selector("app=web,io.kubernaut/run").unwrap();
        assert_eq!(
            sel,
            [
                ("app".into(), Some("web".into())),
                ("io.kubernaut/run".into(), None)
            ]
        );
        for other in ["app!=web", "app==web", "app in (a,b)", "!app", "", "a,"] {
            assert_eq!(parse_selector(other), None, "{other}");
        }
        let labels = json!({"app": "web", "io.kubernaut/run": "r1"});
        assert!(matches(&labels, Some(&sel)) && matches(&labels, None));
        assert!(!matches(&json!({"app": "web"}), Some(&sel)));
        assert!(!matches(&Value::Null, Some(&sel[..1])));
    }
}
