//! The fake `kubectl`: the commands the xtask runs, against the fake cluster its kubeconfig's
//! current context names.

use crate::pods::{self, Observed};
use crate::{apply, podman, read_stdin, state, Args, Fail, Flag, Res};
use serde_json::json;

const FLAGS: &[Flag] = &[
    (&["--kubeconfig"], "kubeconfig", true),
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
    match (words.as_slice(), selector) {
        (["version"], _) if a.get("client").is_some() => {
            println!("Client Version: v1.32.0-fake");
            Ok(())
        }
        (["apply"], None) if a.get("filename") == Some("-") => apply(&a, ns),
        (["get", "pods"], None) if json => {
            let (cluster, pods) = pods::observe(&connect(&a)?, true)?;
            let items: Vec<_> = pods
                .iter()
                .filter(|o| o.seen.pod.ns == ns)
                .map(|o| o.to_json(&cluster.node()))
                .collect();
            print_json(&json!({"apiVersion": "v1", "kind": "List", "items": items}));
            Ok(())
        }
        (["get", "nodes"], None) if json => {
            let c = state::load(&connect(&a)?)?.unwrap_or_default();
            let mut labels = c.node_labels.clone();
            labels.insert("kubernetes.io/hostname".into(), c.node());
            let images: Vec<_> = c.images.iter().map(|i| json!({"names": [i]})).collect();
            let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": c.node(), "labels": labels},
                "status": {"images": images, "conditions": [{"type": "Ready", "status": "True"}]}});
            print_json(&json!({"apiVersion": "v1", "kind": "List", "items": [node]}));
            Ok(())
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
            for o in chosen(&pods, ns, Some(&selector)) {
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

fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// `k=v,k2=v2` (the only selectors the xtask uses); `None` for any other form.
fn parse_selector(s: &str) -> Option<Vec<(String, String)>> {
    s.split(',')
        .map(|part| {
            let (k, v) = part.split_once('=')?;
            let plain = |x: &str| !x.is_empty() && !x.contains(['!', '=', ' ', '(']);
            (plain(k) && plain(v)).then(|| (k.to_string(), v.to_string()))
        })
        .collect()
}

fn chosen<'a>(
    pods: &'a [Observed],
    ns: &str,
    selector: Option<&[(String, String)]>,
) -> Vec<&'a Observed> {
    let matches = |o: &&Observed| {
        let labels = &o.seen.pod.labels;
        selector
            .unwrap_or_default()
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
    };
    pods.iter()
        .filter(|o| o.seen.pod.ns == ns)
        .filter(matches)
        .collect()
}

/// The fake cluster the kubeconfig's current context names, or kubectl's connection error.
fn connect(a: &Args) -> Res<String> {
    let cluster = state::kubeconfig_cluster(&state::kubeconfig_path(a.get("kubeconfig")));
    let server = match cluster {
        Some(name) if state::load(&name)?.is_some() => return Ok(name),
        Some(_) => "127.0.0.1:6443",
        None => "localhost:8080",
    };
    Err(Fail(format!("The connection to the server {server} was refused - did you specify the right host or port?")))
}

fn apply(a: &Args, ns: &str) -> Res<()> {
    let docs = state::parse_docs(&read_stdin()?)
        .map_err(|e| Fail(format!("error: error parsing STDIN: {e}")))?;
    let name = connect(a)?;
    let _lock = state::lock(&name)?;
    let mut c = state::load(&name)?.unwrap_or_default();
    let mut errors = Vec::new();
    for d in &docs {
        match apply::apply(&mut c, d, ns) {
            Ok(line) => println!("{line}"),
            Err(e) => errors.push(e),
        }
    }
    state::save(&c)?;
    for s in pods::sync(&mut c)? {
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
    fn equality_selectors_only() {
        let sel = parse_selector("app=web,job-name=migrations").unwrap();
        assert_eq!(
            sel,
            [
                ("app".into(), "web".into()),
                ("job-name".into(), "migrations".into())
            ]
        );
        for other in ["app!=web", "app==web", "app in (a,b)", "app", "!app", ""] {
            assert_eq!(parse_selector(other), None, "{other}");
        }
    }
}
