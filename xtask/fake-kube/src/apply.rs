//! `kubectl apply`: the kinds and fields the fake emulates (anything else is refused with a
//! `fake-kube:` error, so a manifest never means something else here than in a cluster), checks
//! like the API server's where a manifest can be wrong, and storing objects.

use crate::state::{key, Cluster};
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

const NAMESPACES: [&str; 4] = ["default", "kube-node-lease", "kube-public", "kube-system"];

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
        "containers restartPolicy terminationGracePeriodSeconds",
    ),
    (
        ".containers[]",
        "name image imagePullPolicy args ports env envFrom readinessProbe livenessProbe",
    ),
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
            for (i, ct) in containers.iter().enumerate() {
                for field in ["name", "image"] {
                    if ct[field].as_str().is_none_or(str::is_empty) {
                        errs.push(format!(
                            "spec.template.spec.containers[{i}].{field}: Required value"
                        ));
                    }
                }
            }
        }
        _ => {}
    }
    errs
}

/// Applies one document. Ok: the line kubectl prints; Err: its error.
pub fn apply(c: &mut Cluster, v: &Value, default_ns: &str) -> Result<String, String> {
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
    if c.objects.get(&k) == Some(&stored) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::parse_docs;

    const STACK: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n---\n\
        apiVersion: v1\nkind: Secret\nmetadata: {name: db, namespace: demo}\ntype: Opaque\nstringData: {password: pw}\n---\n\
        apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: demo}\nspec:\n  type: NodePort\n  selector: {app: web}\n  ports: [{name: main, port: 8080, targetPort: 8080, protocol: TCP, nodePort: 30080}]\n---\n\
        apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: demo, labels: {app: web}}\nspec:\n  replicas: 1\n  strategy: {type: Recreate}\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      terminationGracePeriodSeconds: 10\n      containers:\n      - name: web\n        image: localhost/web:t1\n        imagePullPolicy: Never\n        args: [serve]\n        ports: [{name: main, containerPort: 8080}]\n        env: [{name: A, value: b}, {name: P, valueFrom: {secretKeyRef: {name: db, key: password}}}]\n        envFrom: [{secretRef: {name: db}}]\n        readinessProbe: {httpGet: {path: /readyz, port: 8080}, periodSeconds: 1, failureThreshold: 60}\n        livenessProbe: {httpGet: {path: /healthz, port: 8080, scheme: HTTP}}\n---\n\
        apiVersion: batch/v1\nkind: Job\nmetadata: {name: migrate, namespace: demo}\nspec:\n  backoffLimit: 3\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: m, image: 'localhost/web:t1', args: [migrate]}]\n";

    fn apply_all(c: &mut Cluster, text: &str) -> (Vec<String>, Vec<String>) {
        let (mut lines, mut errs) = (Vec::new(), Vec::new());
        for d in parse_docs(text).unwrap() {
            match apply(c, &d, "default") {
                Ok(l) => lines.push(l),
                Err(e) => errs.push(e),
            }
        }
        (lines, errs)
    }

    /// One error from applying `text` to a cluster holding [`STACK`].
    fn error(text: &str) -> String {
        let mut c = Cluster::default();
        apply_all(&mut c, STACK);
        let (_, errs) = apply_all(&mut c, text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        errs[0].clone()
    }

    #[test]
    fn applies_what_the_xtask_sends() {
        let mut c = Cluster::default();
        let (lines, errs) = apply_all(&mut c, STACK);
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(
            lines,
            [
                "namespace/demo created",
                "secret/db created",
                "service/web created",
                "deployment.apps/web created",
                "job.batch/migrate created"
            ]
        );
        assert_eq!(
            c.object("demo", "Job", "migrate").unwrap()["metadata"]["namespace"],
            "demo"
        );
        let (lines, _) = apply_all(&mut c, STACK);
        assert!(lines.iter().all(|l| l.ends_with(" unchanged")), "{lines:?}");
        let (lines, _) = apply_all(&mut c, &STACK.replace("web:t1", "web:t2"));
        assert_eq!(lines[3], "deployment.apps/web configured");
    }

    #[test]
    fn unknown_kinds_namespaces_and_names() {
        let e = error("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: x}\n");
        assert_eq!(e, "error: resource mapping not found for name: \"x\" namespace: \"\" from \"STDIN\": no matches for kind \"Ingress\" in version \"networking.k8s.io/v1\"\nensure CRDs are installed first");
        let e = error("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: nope}\n");
        assert_eq!(e, "Error from server (NotFound): error when creating \"STDIN\": namespaces \"nope\" not found");
        assert!(error("apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n")
            .ends_with("resource name may not be empty"));
        let mut c = Cluster::default();
        let (lines, _) = apply_all(
            &mut c,
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: b}\n",
        );
        assert_eq!(
            lines,
            ["configmap/x created"],
            "the default namespace exists"
        );
    }

    #[test]
    fn refuses_what_is_not_emulated() {
        let e = error(&STACK.replace("terminationGracePeriodSeconds: 10", "volumes: []"));
        assert_eq!(e, "The Deployment \"web\" is invalid: fake-kube: spec.template.spec.volumes: not supported by fake-kube (see xtask/fake-kube/README.md)");
        let e = error(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: demo}\ndata: {k: dg==}\n",
        );
        assert!(e.contains("fake-kube: data: not supported"), "{e}");
        let e = error(&STACK.replace("type: NodePort", "type: LoadBalancer"));
        assert!(e.contains("fake-kube: spec.type: \"LoadBalancer\" is not supported by fake-kube (only ClusterIP NodePort)"), "{e}");
        let e = error(&STACK.replace("replicas: 1", "replicas: 2"));
        assert!(e.contains("spec.replicas: \"2\" is not supported"), "{e}");
        let e = error(&STACK.replace("restartPolicy: Never", "restartPolicy: OnFailure"));
        assert!(
            e.contains("restartPolicy: \"OnFailure\" is not supported"),
            "{e}"
        );
        let e = error(&STACK.replace("secretKeyRef", "fieldRef"));
        assert!(e.contains("fake-kube: spec.template.spec.containers[].env[].valueFrom.fieldRef: not supported"), "{e}");
        let e = error(&STACK.replace(
            "{path: /readyz, port: 8080}",
            "{path: /readyz, port: 8080, scheme: HTTPS}",
        ));
        assert!(
            e.contains("readinessProbe.httpGet.scheme: not supported"),
            "{e}"
        );
    }

    #[test]
    fn checks_like_the_api_server() {
        let e = error(&STACK.replace(
            "metadata: {labels: {app: web}}",
            "metadata: {labels: {app: x}}",
        ));
        assert!(
            e.contains("`selector` does not match template `labels`"),
            "{e}"
        );
        let e = error(&STACK.replace("password: pw", "port: 8080"));
        assert_eq!(e, "The Secret \"db\" is invalid: stringData.port: Invalid value: 8080: must be a string (quote it)");
        let e = error(&STACK.replace("targetPort: 8080,", "targetPort: 9090,"));
        assert!(e.contains("targetPort 9090 differs from port 8080"), "{e}");
        let e = error(&STACK.replace("nodePort: 30080", "nodePort: 8080"));
        assert!(e.contains("provided port is not in the valid range"), "{e}");
        let e = error(&STACK.replace(
            "{name: web, namespace: demo}",
            "{name: web2, namespace: demo}",
        ));
        assert!(
            e.contains("30080: provided port is already allocated"),
            "{e}"
        );
        let e = error(&STACK.replace("      restartPolicy: Never\n", ""));
        assert!(e.contains("restartPolicy: Required value"), "{e}");
        let e = error(&STACK.replace(
            "containers: [{name: m, image: 'localhost/web:t1', args: [migrate]}]",
            "containers: [{name: m}]",
        ));
        assert!(
            e.ends_with("spec.template.spec.containers[0].image: Required value"),
            "{e}"
        );
        let e = error(&STACK.replace(
            "containers: [{name: m, image: 'localhost/web:t1', args: [migrate]}]",
            "containers: []",
        ));
        assert!(e.contains("exactly one container per pod, not 0"), "{e}");
    }
}
