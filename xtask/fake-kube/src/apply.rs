//! `kubectl apply`: the kinds and fields the fake emulates (anything else is refused with a
//! `fake-kube:` error, so a manifest never means something else here than in a cluster), checks
//! like the API server's where a manifest can be wrong, and storing objects.

use crate::now_ms;
use crate::state::{key, rfc3339, Cluster};
use serde_json::Value;

/// (kind, apiVersion, what kubectl prints, namespaced).
const KINDS: [(&str, &str, &str, bool); 6] = [
    ("Namespace", "v1", "namespace", false),
    ("Secret", "v1", "secret", true),
    ("ConfigMap", "v1", "configmap", true),
    ("Service", "v1", "service", true),
    ("Deployment", "apps/v1", "deployment.apps", true),
    ("Job", "batch/v1", "job.batch", true),
];

pub const NAMESPACES: [&str; 4] = ["default", "kube-node-lease", "kube-public", "kube-system"];

/// The fields emulated, by path: `Kind.a.b[]` exactly, or a suffix starting with `.` (the first
/// match wins). A mapping at a listed path may hold only these keys; unlisted paths are free
/// (labels, data) or ignored (`strategy`, `livenessProbe`).
const FIELDS: &[(&str, &str)] = &[
    ("Namespace", "apiVersion kind metadata"),
    ("Secret", "apiVersion kind metadata type stringData"),
    ("ConfigMap", "apiVersion kind metadata data"),
    ("Service", "apiVersion kind metadata spec"),
    ("Deployment", "apiVersion kind metadata spec"),
    ("Job", "apiVersion kind metadata spec"),
    ("Service.spec", "type selector ports"),
    (
        "Service.spec.ports[]",
        "name protocol port targetPort nodePort",
    ),
    ("Deployment.spec", "replicas selector strategy template"),
    ("Deployment.spec.selector", "matchLabels"),
    ("Job.spec", "backoffLimit template"),
    (".template.metadata", "labels annotations"),
    (".metadata", "name namespace labels annotations"),
    (".template", "metadata spec"),
    (
        ".template.spec",
        "containers restartPolicy terminationGracePeriodSeconds volumes",
    ),
    (
        ".containers[]",
        "name image imagePullPolicy command args ports env envFrom volumeMounts readinessProbe livenessProbe",
    ),
    (".volumes[]", "name configMap"),
    (".volumes[].configMap", "name items"),
    (".configMap.items[]", "key path"),
    (".volumeMounts[]", "name mountPath subPath readOnly"),
    (".containers[].ports[]", "name containerPort protocol"),
    (".env[]", "name value valueFrom"),
    (".valueFrom", "secretKeyRef configMapKeyRef"),
    (".envFrom[]", "secretRef configMapRef"),
    (
        ".readinessProbe",
        "httpGet exec periodSeconds timeoutSeconds failureThreshold successThreshold",
    ),
    (".httpGet", "path port"),
    (".exec", "command"),
];

/// Values emulated where only some are (matched like [`FIELDS`]).
const VALUES: &[(&str, &str)] = &[
    ("Service.spec.type", "ClusterIP NodePort"),
    (".protocol", "TCP"),
    ("Deployment.spec.replicas", "1"),
    ("Deployment.spec.template.spec.restartPolicy", "Always"),
    ("Job.spec.template.spec.restartPolicy", "Never"),
    (".imagePullPolicy", "Always IfNotPresent Never"),
];

fn lookup(table: &[(&str, &'static str)], path: &str) -> Option<&'static str> {
    table
        .iter()
        .find(|(p, _)| *p == path || (p.starts_with('.') && path.ends_with(p)))
        .map(|(_, allowed)| *allowed)
}

/// `spec.ports[]` for `Service.spec.ports[]`.
fn shown(path: &str) -> &str {
    path.split_once('.').map_or(path, |(_, p)| p)
}

/// Refuses the keys and values at `path` (and below) that the fake does not emulate.
fn check_fields(v: &Value, path: &str, errs: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            let Some(allowed) = lookup(FIELDS, path) else {
                return;
            };
            for (k, child) in m {
                let p = format!("{path}.{k}");
                if allowed.split(' ').any(|a| a == k) {
                    check_fields(child, &p, errs);
                } else {
                    errs.push(format!(
                        "fake-kube: {}: not supported by fake-kube (see xtask/fake-kube/README.md)",
                        shown(&p)
                    ));
                }
            }
        }
        Value::Array(items) => {
            for x in items {
                check_fields(x, &format!("{path}[]"), errs);
            }
        }
        scalar => {
            let Some(allowed) = lookup(VALUES, path) else {
                return;
            };
            let s = scalar
                .as_str()
                .map_or_else(|| scalar.to_string(), String::from);
            if !allowed.split(' ').any(|a| a == s) {
                errs.push(format!(
                    "fake-kube: {}: {s:?} is not supported by fake-kube (only {allowed})",
                    shown(path)
                ));
            }
        }
    }
}

/// The field errors of one object (empty: valid).
fn validate(c: &Cluster, v: &Value, kind: &str, ns: &str, name: &str) -> Vec<String> {
    let mut errs = Vec::new();
    check_fields(v, kind, &mut errs);
    let strings = |field: &str, errs: &mut Vec<String>| {
        for (k, x) in v[field].as_object().into_iter().flatten() {
            if !x.is_string() {
                errs.push(format!(
                    "{field}.{k}: Invalid value: {x}: must be a string (quote it)"
                ));
            }
        }
    };
    match kind {
        "Secret" => strings("stringData", &mut errs),
        "ConfigMap" => strings("data", &mut errs),
        "Service" => {
            let taken: Vec<i64> = c
                .objects
                .iter()
                .filter(|(k, _)| k.contains("/Service/") && **k != key(ns, kind, name))
                .flat_map(|(_, s)| s["spec"]["ports"].as_array().cloned().unwrap_or_default())
                .filter_map(|p| p["nodePort"].as_i64())
                .collect();
            for (i, p) in v["spec"]["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                let at = format!("spec.ports[{i}]");
                let port = p["port"].as_i64().filter(|n| (1..=65535).contains(n));
                if port.is_none() {
                    errs.push(format!(
                        "{at}.port: Invalid value: {}: must be between 1 and 65535, inclusive",
                        p["port"]
                    ));
                }
                if !p["targetPort"].is_null() && p["targetPort"].as_i64() != port {
                    errs.push(format!("fake-kube: {at}: targetPort {} differs from port {}: network aliases cannot remap ports, so fake-kube needs them equal", p["targetPort"], p["port"]));
                }
                match p["nodePort"].as_i64() {
                    Some(n) if !(30000..=32767).contains(&n) => errs.push(format!("{at}.nodePort: Invalid value: {n}: provided port is not in the valid range. The range of valid ports is 30000-32767")),
                    Some(n) if taken.contains(&n) => errs.push(format!("{at}.nodePort: Invalid value: {n}: provided port is already allocated")),
                    _ => {}
                }
            }
        }
        "Deployment" | "Job" => {
            let t = &v["spec"]["template"];
            if kind == "Deployment" {
                match v["spec"]["selector"]["matchLabels"].as_object() {
                    Some(sel) if !sel.is_empty() => {
                        if sel.iter().any(|(k, x)| t["metadata"]["labels"][k] != *x) {
                            errs.push(format!("spec.template.metadata.labels: Invalid value: {}: `selector` does not match template `labels`", t["metadata"]["labels"]));
                        }
                    }
                    _ => errs.push("spec.selector: Required value".into()),
                }
            } else if t["spec"]["restartPolicy"].is_null() {
                errs.push("spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\"".into());
            }
            let containers = t["spec"]["containers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if containers.len() != 1 {
                errs.push(format!("fake-kube: spec.template.spec.containers: fake-kube runs exactly one container per pod, not {}", containers.len()));
            }
            let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
            let mut volumes = Vec::new();
            for (j, vol) in list(&t["spec"]["volumes"]).iter().enumerate() {
                let at = format!("spec.template.spec.volumes[{j}]");
                if vol["configMap"]["name"].as_str().is_none_or(str::is_empty) {
                    errs.push(format!("fake-kube: {at}: only configMap volumes that name their ConfigMap are supported by fake-kube"));
                }
                for (k, item) in list(&vol["configMap"]["items"]).iter().enumerate() {
                    let p = format!("{at}.configMap.items[{k}]");
                    required(&format!("{p}.key"), &item["key"], &mut errs);
                    required(&format!("{p}.path"), &item["path"], &mut errs);
                    descending(&format!("{p}.path"), &item["path"], &mut errs);
                }
                volumes.push(vol["name"].clone());
            }
            for (i, ct) in containers.iter().enumerate() {
                let at = format!("spec.template.spec.containers[{i}]");
                for field in ["name", "image"] {
                    required(&format!("{at}.{field}"), &ct[field], &mut errs);
                }
                for field in ["command", "args"] {
                    for (j, a) in list(&ct[field]).iter().enumerate() {
                        if !a.is_string() {
                            errs.push(format!("{at}.{field}[{j}]: Invalid value: {a}: must be a string (quote it)"));
                        }
                    }
                }
                for (j, m) in list(&ct["volumeMounts"]).iter().enumerate() {
                    let p = format!("{at}.volumeMounts[{j}]");
                    if !volumes.contains(&m["name"]) {
                        errs.push(format!("{p}.name: Not found: {}", m["name"]));
                    }
                    required(&format!("{p}.mountPath"), &m["mountPath"], &mut errs);
                    descending(&format!("{p}.subPath"), &m["subPath"], &mut errs);
                }
            }
        }
        _ => {}
    }
    errs
}

fn required(at: &str, v: &Value, errs: &mut Vec<String>) {
    if v.as_str().is_none_or(str::is_empty) {
        errs.push(format!("{at}: Required value"));
    }
}

/// Kubernetes' check of a `subPath` or an item's `path`: relative, without `..`.
fn descending(at: &str, v: &Value, errs: &mut Vec<String>) {
    let p = v.as_str().unwrap_or_default();
    let why = match p {
        _ if p.starts_with('/') => "must be a relative path",
        _ if p.split('/').any(|x| x == "..") => "must not contain '..'",
        _ => return,
    };
    errs.push(format!("{at}: Invalid value: {p:?}: {why}"));
}

/// `configmaps` for `configmap`, `deployments.apps` for `deployment.apps`.
pub fn plural(resource: &str) -> String {
    match resource.split_once('.') {
        Some((r, group)) => format!("{r}s.{group}"),
        None => format!("{resource}s"),
    }
}

/// Applies one document (`create`: only if it does not exist yet, atomically: the caller holds
/// the cluster's lock). Ok: the line kubectl prints; Err: its error.
pub fn apply(c: &mut Cluster, v: &Value, default_ns: &str, create: bool) -> Result<String, String> {
    let (api, kind) = (
        v["apiVersion"].as_str().unwrap_or(""),
        v["kind"].as_str().unwrap_or(""),
    );
    let name = v["metadata"]["name"].as_str().unwrap_or("");
    let meta_ns = v["metadata"]["namespace"].as_str();
    let Some(&(_, _, resource, namespaced)) = KINDS.iter().find(|k| k.0 == kind && k.1 == api)
    else {
        return Err(format!("error: resource mapping not found for name: \"{name}\" namespace: \"{}\" from \"STDIN\": no matches for kind \"{kind}\" in version \"{api}\"\nensure CRDs are installed first", meta_ns.unwrap_or("")));
    };
    if name.is_empty() {
        return Err(format!(
            "error: error when retrieving current configuration of {kind}: resource name may not be empty"
        ));
    }
    let ns = if namespaced {
        meta_ns.unwrap_or(default_ns)
    } else {
        ""
    };
    if namespaced && !NAMESPACES.contains(&ns) && c.object("", "Namespace", ns).is_none() {
        return Err(format!("Error from server (NotFound): error when creating \"STDIN\": namespaces \"{ns}\" not found"));
    }
    let mut stored = v.clone();
    if namespaced {
        stored["metadata"]["namespace"] = ns.into();
    }
    let k = key(ns, kind, name);
    let old = c.objects.get(&k);
    if create && old.is_some() {
        return Err(format!("Error from server (AlreadyExists): error when creating \"STDIN\": {} \"{name}\" already exists", plural(resource)));
    }
    stored["metadata"]["creationTimestamp"] = old.map_or_else(
        || rfc3339(now_ms()).into(),
        |o| o["metadata"]["creationTimestamp"].clone(),
    );
    if old == Some(&stored) {
        return Ok(format!("{resource}/{name} unchanged"));
    }
    let errs = validate(c, v, kind, ns, name);
    if !errs.is_empty() {
        return Err(format!(
            "The {kind} \"{name}\" is invalid: {}",
            errs.join(", ")
        ));
    }
    let verb = match c.objects.insert(k, stored) {
        Some(_) => "configured",
        None => "created",
    };
    Ok(format!("{resource}/{name} {verb}"))
}
