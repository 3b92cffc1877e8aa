//! `kubectl apply`: kinds, validation like the API server's, defaulting, and storing objects.

use crate::state::{self, object_key, Objects};
use crate::util::{b64_decode, b64_encode, fnv64, now_ms, rfc3339};
use serde_json::{json, Value};

/// A kind the fake API server knows.
#[derive(Debug, PartialEq)]
pub struct KindInfo {
    pub kind: &'static str,
    pub api: &'static str,
    pub namespaced: bool,
    /// `kind.group` as kubectl prints it (`deployment.apps`).
    pub resource: &'static str,
    pub plural: &'static str,
    /// Other names `kubectl get` accepts.
    pub aliases: &'static [&'static str],
}

pub const KINDS: [KindInfo; 6] = [
    KindInfo {
        kind: "Namespace",
        api: "v1",
        namespaced: false,
        resource: "namespace",
        plural: "namespaces",
        aliases: &["ns"],
    },
    KindInfo {
        kind: "Secret",
        api: "v1",
        namespaced: true,
        resource: "secret",
        plural: "secrets",
        aliases: &[],
    },
    KindInfo {
        kind: "ConfigMap",
        api: "v1",
        namespaced: true,
        resource: "configmap",
        plural: "configmaps",
        aliases: &["cm"],
    },
    KindInfo {
        kind: "Service",
        api: "v1",
        namespaced: true,
        resource: "service",
        plural: "services",
        aliases: &["svc"],
    },
    KindInfo {
        kind: "Deployment",
        api: "apps/v1",
        namespaced: true,
        resource: "deployment.apps",
        plural: "deployments",
        aliases: &["deploy", "deployments.apps"],
    },
    KindInfo {
        kind: "Job",
        api: "batch/v1",
        namespaced: true,
        resource: "job.batch",
        plural: "jobs",
        aliases: &["jobs.batch"],
    },
];

pub fn kind_info(kind: &str) -> Option<&'static KindInfo> {
    KINDS.iter().find(|k| k.kind == kind)
}

/// A kind from a `kubectl get` resource word (`deployments`, `deploy`, `deployment.apps`, ...).
pub fn kind_by_word(word: &str) -> Option<&'static KindInfo> {
    let w = word.to_ascii_lowercase();
    KINDS.iter().find(|k| {
        w == k.plural
            || w == k.resource
            || w == k.kind.to_ascii_lowercase()
            || k.aliases.contains(&w.as_str())
    })
}

/// Apply order within one stream: Namespaces, then Secrets/ConfigMaps, Services, workloads.
pub fn rank(doc: &Value) -> u8 {
    match doc["kind"].as_str().unwrap_or("") {
        "Namespace" => 0,
        "Secret" | "ConfigMap" => 1,
        "Service" => 2,
        "Deployment" | "Job" => 3,
        _ => 4,
    }
}

/// One document of an apply, with where it came from (`STDIN` or a file name).
#[derive(Debug, Clone)]
pub struct Doc {
    pub source: String,
    pub value: Value,
}

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

fn alnum(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

pub fn is_dns_label(s: &str) -> bool {
    s.len() <= 63
        && alnum(s.chars().next())
        && alnum(s.chars().last())
        && s.chars().all(|c| c == '-' || alnum(Some(c)))
}

pub fn is_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn name_error(kind: &str, name: &str) -> Option<String> {
    let (ok, msg) = match kind {
        "Namespace" => (is_dns_label(name), LABEL_MSG),
        "Service" => (
            is_dns_label(name) && name.starts_with(|c: char| c.is_ascii_lowercase()),
            DNS1035_MSG,
        ),
        _ => (is_subdomain(name), SUBDOMAIN_MSG),
    };
    (!ok).then(|| format!("metadata.name: Invalid value: \"{name}\": {msg}"))
}

fn go_map(v: &Value) -> String {
    let inner: Vec<String> = v
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k:?}:{v}"))
        .collect();
    format!("map[string]string{{{}}}", inner.join(", "))
}

/// API-server-like field errors for a pod spec at `path` (`spec.template.spec`), plus the
/// emulation limits of this fake (prefixed `fake-kube:`).
fn validate_pod_spec(spec: &Value, path: &str, kind: &str, errs: &mut Vec<String>) {
    let containers = spec["containers"].as_array().cloned().unwrap_or_default();
    if containers.is_empty() {
        errs.push(format!("{path}.containers: Required value"));
    } else if containers.len() > 1 {
        errs.push(format!(
            "fake-kube: {path}.containers: {} containers, but fake-kube runs one container per pod",
            containers.len()
        ));
    }
    if spec["initContainers"]
        .as_array()
        .is_some_and(|a| !a.is_empty())
    {
        errs.push(format!(
            "fake-kube: {path}.initContainers: not supported by fake-kube (use a Job)"
        ));
    }
    let policy = spec["restartPolicy"].as_str();
    match (kind, policy) {
        ("Deployment", None | Some("Always")) | ("Job", Some("OnFailure" | "Never")) => {}
        ("Deployment", Some(p)) => errs.push(format!("{path}.restartPolicy: Unsupported value: \"{p}\": supported values: \"Always\"")),
        (_, None) => errs.push(format!("{path}.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\"")),
        (_, Some(p)) => errs.push(format!("{path}.restartPolicy: Unsupported value: \"{p}\": supported values: \"OnFailure\", \"Never\"")),
    }
    let volumes = spec["volumes"].as_array().cloned().unwrap_or_default();
    for (i, v) in volumes.iter().enumerate() {
        let p = format!("{path}.volumes[{i}]");
        if v["name"].as_str().is_none_or(str::is_empty) {
            errs.push(format!("{p}.name: Required value"));
        }
        let types: Vec<&String> = v
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| k)
            .filter(|k| *k != "name")
            .collect();
        match types.as_slice() {
            [] => errs.push(format!("{p}: Required value: must specify a volume type")),
            [t] if ["emptyDir", "configMap", "secret"].contains(&t.as_str()) => {}
            [t] => errs.push(format!("fake-kube: {p}.{t}: volume type not supported by fake-kube (emptyDir, configMap and secret are)")),
            _ => errs.push(format!("{p}: Forbidden: may not specify more than 1 volume type")),
        }
    }
    for (i, c) in containers.iter().enumerate() {
        let p = format!("{path}.containers[{i}]");
        match c["name"].as_str() {
            None | Some("") => errs.push(format!("{p}.name: Required value")),
            Some(n) if !is_dns_label(n) => {
                errs.push(format!("{p}.name: Invalid value: \"{n}\": {LABEL_MSG}"))
            }
            _ => {}
        }
        if c["image"].as_str().is_none_or(|s| s.trim().is_empty()) {
            errs.push(format!("{p}.image: Required value"));
        }
        if let Some(pp) = c.get("imagePullPolicy").filter(|v| !v.is_null()) {
            if !["Always", "IfNotPresent", "Never"].contains(&pp.as_str().unwrap_or("")) {
                errs.push(format!("{p}.imagePullPolicy: Unsupported value: {pp}: supported values: \"Always\", \"IfNotPresent\", \"Never\""));
            }
        }
        for (j, port) in c["ports"].as_array().into_iter().flatten().enumerate() {
            if !port["containerPort"]
                .as_u64()
                .is_some_and(|n| (1..=65535).contains(&n))
            {
                errs.push(format!("{p}.ports[{j}].containerPort: Invalid value: {}: must be between 1 and 65535, inclusive", port["containerPort"]));
            }
        }
        for (j, e) in c["env"].as_array().into_iter().flatten().enumerate() {
            if e["name"].as_str().is_none_or(str::is_empty) {
                errs.push(format!("{p}.env[{j}].name: Required value"));
            }
            for r in ["secretKeyRef", "configMapKeyRef"] {
                let r = &e["valueFrom"][r];
                if !r.is_null() && r["key"].as_str().is_none_or(str::is_empty) {
                    errs.push(format!("{p}.env[{j}].valueFrom.{r}.key: Required value"));
                }
            }
        }
        for (j, m) in c["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let n = m["name"].as_str().unwrap_or("");
            if !volumes.iter().any(|v| v["name"].as_str() == Some(n)) {
                errs.push(format!("{p}.volumeMounts[{j}].name: Not found: \"{n}\""));
            }
            if m["mountPath"].as_str().is_none_or(str::is_empty) {
                errs.push(format!("{p}.volumeMounts[{j}].mountPath: Required value"));
            }
        }
    }
}

/// Field errors for Service ports, given the other Services (for nodePort allocation).
fn validate_service(obj: &Value, ns: &str, name: &str, objects: &Objects, errs: &mut Vec<String>) {
    let spec = &obj["spec"];
    let ty = spec["type"].as_str().unwrap_or("ClusterIP");
    if ty == "LoadBalancer" || ty == "ExternalName" {
        errs.push(format!(
            "fake-kube: spec.type: {ty} is not supported by fake-kube (ClusterIP and NodePort are)"
        ));
        return;
    }
    if ty != "ClusterIP" && ty != "NodePort" {
        errs.push(format!("spec.type: Unsupported value: \"{ty}\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""));
    }
    let ports = spec["ports"].as_array().cloned().unwrap_or_default();
    if ports.is_empty() && spec["clusterIP"].as_str() != Some("None") {
        errs.push("spec.ports: Required value".into());
    }
    let taken: Vec<i64> = state::objects_of(objects, "Service", None)
        .filter(|s| {
            !(s["metadata"]["namespace"] == json!(ns) && s["metadata"]["name"] == json!(name))
        })
        .flat_map(|s| s["spec"]["ports"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p["nodePort"].as_i64())
        .collect();
    let mut names = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let path = format!("spec.ports[{i}]");
        let port = p["port"].as_i64().unwrap_or(0);
        if p["port"].is_null() {
            errs.push(format!("{path}.port: Required value"));
        } else if !(1..=65535).contains(&port) {
            errs.push(format!(
                "{path}.port: Invalid value: {port}: must be between 1 and 65535, inclusive"
            ));
        }
        match p["name"].as_str() {
            None | Some("") if ports.len() > 1 => errs.push(format!("{path}.name: Required value")),
            Some(n) if names.contains(&n) => {
                errs.push(format!("{path}.name: Duplicate value: \"{n}\""))
            }
            Some(n) => names.push(n),
            None => {}
        }
        let proto = p["protocol"].as_str().unwrap_or("TCP");
        if !["TCP", "UDP", "SCTP"].contains(&proto) {
            errs.push(format!("{path}.protocol: Unsupported value: \"{proto}\": supported values: \"SCTP\", \"TCP\", \"UDP\""));
        }
        if let Some(np) = p["nodePort"].as_i64() {
            if ty != "NodePort" {
                errs.push(format!(
                    "{path}.nodePort: Forbidden: may not be used when `type` is '{ty}'"
                ));
            } else if !(30000..=32767).contains(&np) {
                errs.push(format!("{path}.nodePort: Invalid value: {np}: provided port is not in the valid range. The range of valid ports is 30000-32767"));
            } else if taken.contains(&np) {
                errs.push(format!(
                    "{path}.nodePort: Invalid value: {np}: provided port is already allocated"
                ));
            }
        }
        if let Some(t) = p["targetPort"].as_i64() {
            if t != port {
                errs.push(format!("fake-kube: {path}: port {port} != targetPort {t}; network aliases cannot remap ports, so use port == targetPort (see xtask/fake-kube/README.md)"));
            }
        }
    }
}

/// Validates one object. Err = the complete kubectl error text.
fn validate(
    info: &KindInfo,
    obj: &Value,
    name: &str,
    ns: &str,
    existing: Option<&Value>,
    objects: &Objects,
    source: &str,
) -> Result<(), String> {
    let bad_request = |msg: String| {
        let verb = if existing.is_some() {
            "applying patch"
        } else {
            "creating"
        };
        Err(format!(
            "Error from server (BadRequest): error when {verb} \"{source}\": {msg}"
        ))
    };
    let mut errs = Vec::new();
    if let Some(e) = name_error(info.kind, name) {
        errs.push(e);
    }
    match info.kind {
        "Secret" => {
            for (k, v) in obj["data"].as_object().into_iter().flatten() {
                let decoded = v
                    .as_str()
                    .ok_or_else(|| {
                        "json: cannot unmarshal non-string into Go value of type []uint8"
                            .to_string()
                    })
                    .and_then(b64_decode);
                if let Err(e) = decoded {
                    return bad_request(format!("Secret in version \"v1\" cannot be handled as a Secret: {e} (data key {k:?})"));
                }
            }
            for (field, what) in [("stringData", "map[string]string")] {
                if let Some((k, _)) = obj[field]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .find(|(_, v)| !v.is_string())
                {
                    return bad_request(format!("Secret in version \"v1\" cannot be handled as a Secret: json: cannot unmarshal non-string into Go struct field Secret.{field} of type {what} (key {k:?})"));
                }
            }
        }
        "ConfigMap" => {
            if let Some((k, v)) = obj["data"]
                .as_object()
                .into_iter()
                .flatten()
                .find(|(_, v)| !v.is_string())
            {
                let t = match v {
                    Value::Number(_) => "number",
                    Value::Bool(_) => "bool",
                    Value::Null => "null",
                    Value::Array(_) => "array",
                    _ => "object",
                };
                return bad_request(format!(
                    "ConfigMap in version \"v1\" cannot be handled as a ConfigMap: json: cannot unmarshal {t} into Go struct field ConfigMap.data of type string (key {k:?}; quote the value)"
                ));
            }
        }
        "Service" => validate_service(obj, ns, name, objects, &mut errs),
        "Deployment" => {
            let spec = &obj["spec"];
            if let Some(r) = spec.get("replicas").filter(|v| !v.is_null()) {
                if r.as_i64().is_none_or(|n| n < 0) {
                    errs.push(format!(
                        "spec.replicas: Invalid value: {r}: must be greater than or equal to 0"
                    ));
                }
            }
            let labels = &spec["template"]["metadata"]["labels"];
            let sel = &spec["selector"];
            if sel
                .get("matchExpressions")
                .is_some_and(|m| m.as_array().is_some_and(|a| !a.is_empty()))
            {
                errs.push("fake-kube: spec.selector.matchExpressions: not supported by fake-kube (use matchLabels)".into());
            }
            match sel["matchLabels"].as_object() {
                None => errs.push("spec.selector: Required value".into()),
                Some(ml) if ml.is_empty() => errs.push("spec.selector: Invalid value: \"null\": empty selector is invalid for deployment".into()),
                Some(ml) => {
                    if !ml.iter().all(|(k, v)| labels.get(k) == Some(v)) {
                        errs.push(format!("spec.template.metadata.labels: Invalid value: {}: `selector` does not match template `labels`", go_map(labels)));
                    }
                    if let Some(old) = existing {
                        if old["spec"]["selector"] != *sel {
                            errs.push(format!("spec.selector: Invalid value: v1.LabelSelector{{MatchLabels:{}}}: field is immutable", go_map(&sel["matchLabels"])));
                        }
                    }
                }
            }
            validate_pod_spec(
                &spec["template"]["spec"],
                "spec.template.spec",
                "Deployment",
                &mut errs,
            );
        }
        "Job" => {
            let spec = &obj["spec"];
            if let Some(b) = spec.get("backoffLimit").filter(|v| !v.is_null()) {
                if b.as_i64().is_none_or(|n| n < 0) {
                    errs.push(format!(
                        "spec.backoffLimit: Invalid value: {b}: must be greater than or equal to 0"
                    ));
                }
            }
            validate_pod_spec(
                &spec["template"]["spec"],
                "spec.template.spec",
                "Job",
                &mut errs,
            );
            if let Some(old) = existing {
                if old["spec"]["template"] != spec["template"] {
                    errs.push("spec.template: Invalid value: core.PodTemplateSpec{...}: field is immutable".into());
                }
            }
        }
        _ => {}
    }
    match errs.len() {
        0 => Ok(()),
        1 => Err(format!(
            "The {} \"{name}\" is invalid: {}",
            info.kind, errs[0]
        )),
        _ => Err(format!(
            "The {} \"{name}\" is invalid: [{}]",
            info.kind,
            errs.join(", ")
        )),
    }
}

/// The object as the API server stores and serves it: metadata filled in, defaults applied.
fn served(
    info: &KindInfo,
    input: &Value,
    existing: Option<&Value>,
    ns: &str,
    objects: &Objects,
    now: i64,
) -> Value {
    let mut obj = input.clone();
    if let Some(m) = obj.as_object_mut() {
        m.remove("status");
    }
    let last_applied = serde_json::to_string(input).unwrap_or_default();
    let old_meta = existing
        .map(|e| e["metadata"].clone())
        .unwrap_or(Value::Null);
    let name = input["metadata"]["name"].as_str().unwrap_or("").to_string();
    let meta = &mut obj["metadata"];
    if info.namespaced {
        meta["namespace"] = json!(ns);
    }
    meta["uid"] = old_meta.get("uid").cloned().unwrap_or_else(|| {
        json!(crate::util::uuid_like(&format!(
            "{ns}/{}/{name}/{}",
            info.kind,
            now_ms()
        )))
    });
    meta["creationTimestamp"] = old_meta
        .get("creationTimestamp")
        .cloned()
        .unwrap_or_else(|| json!(rfc3339(now)));
    meta["resourceVersion"] = json!(now_ms().to_string());
    let spec_changed = existing.is_none_or(|e| e["spec"] != input["spec"]);
    let generation = old_meta["generation"].as_i64().unwrap_or(0) + i64::from(spec_changed);
    meta["generation"] = json!(generation.max(1));
    meta["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = json!(last_applied);
    match info.kind {
        "Namespace" => obj["status"] = json!({"phase": "Active"}),
        "Secret" => {
            let mut data = obj["data"].as_object().cloned().unwrap_or_default();
            for (k, v) in input["stringData"].as_object().into_iter().flatten() {
                data.insert(
                    k.clone(),
                    json!(b64_encode(v.as_str().unwrap_or("").as_bytes())),
                );
            }
            if let Some(m) = obj.as_object_mut() {
                m.remove("stringData");
            }
            obj["data"] = Value::Object(data);
            if obj["type"].is_null() {
                obj["type"] = json!("Opaque");
            }
        }
        "Service" => {
            let spec = &mut obj["spec"];
            if spec["type"].is_null() {
                spec["type"] = json!("ClusterIP");
            }
            if spec["clusterIP"].is_null() {
                let old = existing
                    .map(|e| e["spec"]["clusterIP"].clone())
                    .filter(|v| !v.is_null());
                let h = fnv64(&format!("{ns}/{name}"));
                let ip = format!(
                    "10.96.{}.{}",
                    u8::from_str_radix(&h[..2], 16).unwrap_or(0),
                    u8::from_str_radix(&h[2..4], 16).unwrap_or(0).max(2)
                );
                spec["clusterIP"] = old.unwrap_or_else(|| json!(ip));
            }
            let node_port = spec["type"] == json!("NodePort");
            let mut used: Vec<i64> = state::objects_of(objects, "Service", None)
                .filter(|s| {
                    !(s["metadata"]["namespace"] == json!(ns)
                        && s["metadata"]["name"] == json!(name))
                })
                .flat_map(|s| s["spec"]["ports"].as_array().cloned().unwrap_or_default())
                .filter_map(|p| p["nodePort"].as_i64())
                .collect();
            used.extend(
                spec["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p["nodePort"].as_i64()),
            );
            let old_ports = existing
                .map(|e| e["spec"]["ports"].clone())
                .unwrap_or(Value::Null);
            for (i, p) in spec["ports"]
                .as_array_mut()
                .into_iter()
                .flatten()
                .enumerate()
            {
                if p["protocol"].is_null() {
                    p["protocol"] = json!("TCP");
                }
                if p["targetPort"].is_null() {
                    p["targetPort"] = p["port"].clone();
                }
                if node_port && p["nodePort"].is_null() {
                    let np = old_ports[i]["nodePort"].as_i64().unwrap_or_else(|| {
                        (30000..=32767).find(|n| !used.contains(n)).unwrap_or(32767)
                    });
                    used.push(np);
                    p["nodePort"] = json!(np);
                }
            }
        }
        "Deployment" if obj["spec"]["replicas"].is_null() => obj["spec"]["replicas"] = json!(1),
        "Job" => {
            for (k, v) in [("backoffLimit", 6), ("completions", 1), ("parallelism", 1)] {
                if obj["spec"][k].is_null() {
                    obj["spec"][k] = json!(v);
                }
            }
        }
        _ => {}
    }
    obj
}

/// Applies one document to `objects`. Ok = the line kubectl prints; Err = its error text.
pub fn apply_one(
    objects: &mut Objects,
    doc: &Doc,
    default_ns: &str,
    now: i64,
) -> Result<String, String> {
    let v = &doc.value;
    let source = &doc.source;
    let (api, kind) = (
        v["apiVersion"].as_str().unwrap_or(""),
        v["kind"].as_str().unwrap_or(""),
    );
    if api.is_empty() || kind.is_empty() {
        let mut missing = Vec::new();
        if api.is_empty() {
            missing.push("apiVersion not set");
        }
        if kind.is_empty() {
            missing.push("kind not set");
        }
        return Err(format!(
            "error: error validating \"{source}\": error validating data: [{}]; if you choose to ignore these errors, turn validation off with --validate=false",
            missing.join(", ")
        ));
    }
    let name = v["metadata"]["name"].as_str().unwrap_or("");
    let meta_ns = v["metadata"]["namespace"].as_str().unwrap_or("");
    let Some(info) = kind_info(kind).filter(|i| i.api == api) else {
        return Err(format!(
            "error: resource mapping not found for name: \"{name}\" namespace: \"{meta_ns}\" from \"{source}\": no matches for kind \"{kind}\" in version \"{api}\"\nensure CRDs are installed first"
        ));
    };
    let ns = if !info.namespaced {
        ""
    } else if meta_ns.is_empty() {
        default_ns
    } else {
        meta_ns
    };
    if name.is_empty() {
        let group = api.split_once('/').map_or("", |x| x.0);
        let version = api.rsplit('/').next().unwrap_or(api);
        return Err(format!(
            "error: error when retrieving current configuration of:\nResource: \"{group}/{version}, Resource={}\", GroupVersionKind: \"{group}/{version}, Kind={kind}\"\nName: \"\", Namespace: \"{ns}\"\nfrom server for: \"{source}\": resource name may not be empty",
            info.plural
        ));
    }
    if info.namespaced && !state::namespace_exists(objects, ns) {
        return Err(format!("Error from server (NotFound): error when creating \"{source}\": namespaces \"{ns}\" not found"));
    }
    let key = object_key(ns, kind, name);
    let existing = objects.get(&key).cloned();
    let last_applied = serde_json::to_string(v).unwrap_or_default();
    if let Some(e) = &existing {
        if e["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"].as_str()
            == Some(last_applied.as_str())
        {
            return Ok(format!("{}/{name} unchanged", info.resource));
        }
    }
    validate(info, v, name, ns, existing.as_ref(), objects, source)?;
    let obj = served(info, v, existing.as_ref(), ns, objects, now);
    objects.insert(key, obj);
    Ok(format!(
        "{}/{name} {}",
        info.resource,
        if existing.is_some() {
            "configured"
        } else {
            "created"
        }
    ))
}

/// Applies documents in kind order (stable within a kind). Returns printed lines and errors.
pub fn apply_all(
    objects: &mut Objects,
    mut docs: Vec<Doc>,
    default_ns: &str,
    now: i64,
) -> (Vec<String>, Vec<String>) {
    docs.sort_by_key(|d| rank(&d.value));
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    for doc in &docs {
        match apply_one(objects, doc, default_ns, now) {
            Ok(l) => lines.push(l),
            Err(e) => errors.push(e),
        }
    }
    (lines, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(text: &str) -> Vec<Doc> {
        crate::yaml::parse_manifests(text)
            .unwrap()
            .into_iter()
            .map(|value| Doc {
                source: "STDIN".into(),
                value,
            })
            .collect()
    }

    const STACK: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: demo}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers:\n      - {name: web, image: 'localhost/web:t1', imagePullPolicy: Never}\n---\n\
        apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: demo}\nspec:\n  type: NodePort\n  selector: {app: web}\n  ports: [{port: 8080, targetPort: 8080, nodePort: 30080}]\n---\n\
        apiVersion: v1\nkind: Secret\nmetadata: {name: db, namespace: demo}\nstringData: {password: pw}\n---\n\
        apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n";

    #[test]
    fn applies_a_stream_in_dependency_order() {
        let mut o = Objects::new();
        let (lines, errors) = apply_all(&mut o, docs(STACK), "default", 1000);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            lines,
            [
                "namespace/demo created",
                "secret/db created",
                "service/web created",
                "deployment.apps/web created"
            ]
        );
        assert_eq!(
            o[&object_key("demo", "Secret", "db")]["data"]["password"],
            "cHc="
        );
        assert_eq!(
            o[&object_key("demo", "Deployment", "web")]["spec"]["replicas"],
            1
        );
        let (lines, _) = apply_all(&mut o, docs(STACK), "default", 1001);
        assert!(lines.iter().all(|l| l.ends_with(" unchanged")), "{lines:?}");
        let changed = STACK.replace("localhost/web:t1", "localhost/web:t2");
        let (lines, _) = apply_all(&mut o, docs(&changed), "default", 1002);
        assert_eq!(lines[3], "deployment.apps/web configured");
        assert_eq!(
            o[&object_key("demo", "Deployment", "web")]["metadata"]["generation"],
            2
        );
    }

    #[test]
    fn rejects_unknown_kinds_and_missing_namespaces() {
        let mut o = Objects::new();
        let (_, errors) = apply_all(
            &mut o,
            docs("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: x}\n"),
            "default",
            0,
        );
        assert_eq!(errors[0], "error: resource mapping not found for name: \"x\" namespace: \"\" from \"STDIN\": no matches for kind \"Ingress\" in version \"networking.k8s.io/v1\"\nensure CRDs are installed first");
        let (_, errors) = apply_all(
            &mut o,
            docs("apiVersion: extensions/v1beta1\nkind: Deployment\nmetadata: {name: x}\n"),
            "default",
            0,
        );
        assert!(errors[0]
            .contains("no matches for kind \"Deployment\" in version \"extensions/v1beta1\""));
        let (_, errors) = apply_all(
            &mut o,
            docs("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: nope}\n"),
            "default",
            0,
        );
        assert_eq!(errors[0], "Error from server (NotFound): error when creating \"STDIN\": namespaces \"nope\" not found");
        let (_, errors) = apply_all(
            &mut o,
            docs("apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n"),
            "default",
            0,
        );
        assert!(
            errors[0].ends_with("resource name may not be empty"),
            "{}",
            errors[0]
        );
        let (_, errors) = apply_all(&mut o, docs("metadata: {name: x}\n"), "default", 0);
        assert!(errors[0].contains("[apiVersion not set, kind not set]"));
        let (lines, _) = apply_all(
            &mut o,
            docs("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: b}\n"),
            "default",
            0,
        );
        assert_eq!(lines, ["configmap/x created"], "default namespace exists");
    }

    #[test]
    fn validates_like_the_api_server() {
        let mut o = Objects::new();
        let bad = |o: &mut Objects, text: &str| apply_all(o, docs(text), "default", 0).1.join("\n");
        let e = bad(&mut o, "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: w}\nspec:\n  selector: {matchLabels: {app: w}}\n  template:\n    metadata: {labels: {app: x}}\n    spec: {containers: []}\n");
        assert!(e.starts_with("The Deployment \"w\" is invalid: ["), "{e}");
        assert!(
            e.contains("`selector` does not match template `labels`")
                && e.contains("spec.template.spec.containers: Required value"),
            "{e}"
        );
        let e = bad(&mut o, "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: w}\nspec:\n  selector: {matchLabels: {app: w}}\n  template:\n    metadata: {labels: {app: w}}\n    spec: {containers: [{name: w, imagePullPolicy: never}]}\n");
        assert!(
            e.contains("spec.template.spec.containers[0].image: Required value")
                && e.contains("Unsupported value: \"never\""),
            "{e}"
        );
        let e = bad(&mut o, "apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\nspec:\n  template:\n    spec: {containers: [{name: j, image: 'x:1'}]}\n");
        assert_eq!(e, "The Job \"j\" is invalid: spec.template.spec.restartPolicy: Required value: valid values: \"OnFailure\", \"Never\"");
        let e = bad(
            &mut o,
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ndata: {k: 'not base64!'}\n",
        );
        assert!(e.starts_with("Error from server (BadRequest): error when creating \"STDIN\": Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data"), "{e}");
        let e = bad(
            &mut o,
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {port: 8080}\n",
        );
        assert!(
            e.contains(
                "cannot unmarshal number into Go struct field ConfigMap.data of type string"
            ),
            "{e}"
        );
        let e = bad(&mut o, "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {type: NodePort, ports: [{port: 80, nodePort: 8080}]}\n");
        assert!(e.contains("provided port is not in the valid range"), "{e}");
        let e = bad(&mut o, "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80, targetPort: 8080}]}\n");
        assert!(
            e.contains("fake-kube: spec.ports[0]: port 80 != targetPort 8080"),
            "{e}"
        );
        let e = bad(
            &mut o,
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: Bad_Name}\n",
        );
        assert!(
            e.contains("metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 label"),
            "{e}"
        );
        assert!(o.is_empty(), "nothing invalid was stored");
    }

    #[test]
    fn node_ports_are_allocated_once() {
        let mut o = Objects::new();
        let svc = |n: &str, np: &str| {
            format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {n}}}\nspec: {{type: NodePort, ports: [{{port: 80{np}}}]}}\n")
        };
        assert!(
            apply_all(&mut o, docs(&svc("a", ", nodePort: 30000")), "default", 0)
                .1
                .is_empty()
        );
        assert!(apply_all(&mut o, docs(&svc("b", "")), "default", 0)
            .1
            .is_empty());
        assert_eq!(
            o[&object_key("default", "Service", "b")]["spec"]["ports"][0]["nodePort"],
            30001
        );
        let e = apply_all(&mut o, docs(&svc("c", ", nodePort: 30001")), "default", 0).1;
        assert!(e[0].contains("provided port is already allocated"), "{e:?}");
        // Re-applying keeps the allocation.
        apply_all(
            &mut o,
            docs(&svc("b", "").replace("port: 80", "port: 81")),
            "default",
            0,
        );
        assert_eq!(
            o[&object_key("default", "Service", "b")]["spec"]["ports"][0]["nodePort"],
            30001
        );
    }

    #[test]
    fn jobs_are_immutable() {
        let mut o = Objects::new();
        let job = |img: &str| {
            format!("apiVersion: batch/v1\nkind: Job\nmetadata: {{name: m}}\nspec:\n  template:\n    spec: {{restartPolicy: Never, containers: [{{name: m, image: '{img}'}}]}}\n")
        };
        assert!(apply_all(&mut o, docs(&job("x:1")), "default", 0)
            .1
            .is_empty());
        let e = apply_all(&mut o, docs(&job("x:2")), "default", 0).1;
        assert!(e[0].contains("field is immutable"), "{e:?}");
    }

    #[test]
    fn resource_words() {
        assert_eq!(kind_by_word("deploy").unwrap().kind, "Deployment");
        assert_eq!(kind_by_word("svc").unwrap().kind, "Service");
        assert_eq!(kind_by_word("jobs.batch").unwrap().kind, "Job");
        assert_eq!(kind_by_word("Secret").unwrap().kind, "Secret");
        assert!(kind_by_word("ingress").is_none());
        assert!(is_subdomain("a.b-c") && !is_subdomain("-a") && !is_dns_label("a.b"));
    }
}
