//! YAML <-> serde_json::Value: parsing manifest streams and kind configs, printing kubeconfigs.

use serde_json::{Map, Value};
use yaml_rust2::yaml::Hash;
use yaml_rust2::{Yaml, YamlEmitter, YamlLoader};

/// Converts one YAML node into JSON (mapping keys become strings).
pub fn to_json(y: &Yaml) -> Value {
    match y {
        Yaml::Real(s) => s
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(s.clone())),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Array(a) => Value::Array(a.iter().map(to_json).collect()),
        Yaml::Hash(h) => {
            let mut m = Map::new();
            for (k, v) in h {
                let key = match k {
                    Yaml::String(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    Yaml::Boolean(b) => b.to_string(),
                    Yaml::Real(r) => r.clone(),
                    Yaml::Null => "null".into(),
                    other => format!("{other:?}"),
                };
                m.insert(key, to_json(v));
            }
            Value::Object(m)
        }
        Yaml::Alias(_) | Yaml::Null | Yaml::BadValue => Value::Null,
    }
}

/// Converts JSON into a YAML node (for printing).
pub fn from_json(v: &Value) -> Yaml {
    match v {
        Value::Null => Yaml::Null,
        Value::Bool(b) => Yaml::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Yaml::Integer(i),
            None => Yaml::Real(n.to_string()),
        },
        Value::String(s) => Yaml::String(s.clone()),
        Value::Array(a) => Yaml::Array(a.iter().map(from_json).collect()),
        Value::Object(m) => {
            let mut h = Hash::new();
            for (k, v) in m {
                h.insert(Yaml::String(k.clone()), from_json(v));
            }
            Yaml::Hash(h)
        }
    }
}

/// Parses a (possibly multi-document) YAML or JSON text into documents; empty documents are
/// dropped. The error reads like kubectl's.
pub fn parse_docs(text: &str) -> Result<Vec<Value>, String> {
    let docs = YamlLoader::load_from_str(text)
        .map_err(|e| format!("error converting YAML to JSON: yaml: {e}"))?;
    Ok(docs.iter().map(to_json).filter(|v| !v.is_null()).collect())
}

/// Parses a manifest stream the way `kubectl apply` reads it: documents separated by `---`,
/// `kind: List` (or `*List`) documents flattened into their items.
pub fn parse_manifests(text: &str) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for doc in parse_docs(text)? {
        let is_list = doc
            .get("kind")
            .and_then(Value::as_str)
            .is_some_and(|k| k.ends_with("List"))
            && doc.get("items").is_some_and(Value::is_array);
        if is_list {
            out.extend(doc["items"].as_array().into_iter().flatten().cloned());
        } else {
            out.push(doc);
        }
    }
    Ok(out)
}

/// Prints a value as a YAML document (without the leading `---`).
pub fn emit(v: &Value) -> String {
    let mut out = String::new();
    let mut em = YamlEmitter::new(&mut out);
    // An emit error can only come from the fmt::Write of a String, which cannot fail.
    let _ = em.dump(&from_json(v));
    let body = out
        .strip_prefix("---\n")
        .or_else(|| out.strip_prefix("---"))
        .unwrap_or(&out);
    format!("{}\n", body.trim_start_matches(' '))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stream_with_separators_json_and_lists() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\n# only a comment\n---\n\
                    {\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"c\"},\"data\":{\"x\":\"1\"}}\n---\n\
                    apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Secret\n  metadata: {name: s}\n\
                    - apiVersion: v1\n  kind: Service\n  metadata: {name: svc}\n";
        let docs = parse_manifests(text).unwrap();
        let kinds: Vec<_> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["Namespace", "ConfigMap", "Secret", "Service"]);
        assert_eq!(docs[1]["data"]["x"], "1");
    }

    #[test]
    fn scalars_convert() {
        let v = &parse_docs("a: 1\nb: 1.5\nc: true\nd: ~\ne: '8080'\n8: x\n").unwrap()[0];
        assert_eq!(
            v,
            &json!({"a": 1, "b": 1.5, "c": true, "d": null, "e": "8080", "8": "x"})
        );
    }

    #[test]
    fn bad_yaml_is_an_error() {
        assert!(parse_docs("a: [1, 2\n")
            .unwrap_err()
            .starts_with("error converting YAML to JSON"));
    }

    #[test]
    fn emit_round_trips() {
        let v = json!({"apiVersion": "v1", "clusters": [{"name": "kind-x", "cluster": {"server": "https://127.0.0.1:6443"}}], "n": 3});
        let text = emit(&v);
        assert!(text.starts_with("apiVersion: v1\n"), "{text}");
        assert_eq!(parse_docs(&text).unwrap()[0], v);
    }
}
