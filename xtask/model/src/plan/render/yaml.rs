//! Small YAML helpers of the renderer: building, emitting, reading maps.

use std::collections::BTreeMap;

use yaml_rust2::yaml::Yaml;
use yaml_rust2::YamlEmitter;

use super::kind::label_value;

/// YAML to JSON (tests compare objects as JSON).
#[cfg(test)]
pub fn to_json(y: &Yaml) -> serde_json::Value {
    use serde_json::Value;
    match y {
        Yaml::Real(r) => r
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Null, Value::Number),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Array(a) => Value::Array(a.iter().map(to_json).collect()),
        Yaml::Hash(h) => Value::Object(
            h.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Yaml::String(s) => s.clone(),
                        Yaml::Integer(i) => i.to_string(),
                        other => format!("{other:?}"),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Yaml::Alias(_) | Yaml::Null | Yaml::BadValue => Value::Null,
    }
}

pub fn string_map(y: &Yaml) -> BTreeMap<String, String> {
    y.as_hash()
        .map(|h| {
            h.iter()
                .filter_map(|(k, v)| {
                    let v = match v {
                        Yaml::String(s) => s.clone(),
                        Yaml::Integer(i) => i.to_string(),
                        Yaml::Boolean(b) => b.to_string(),
                        _ => return None,
                    };
                    Some((k.as_str()?.to_string(), v))
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn s(v: &str) -> Yaml {
    Yaml::String(v.to_string())
}

pub fn map(pairs: Vec<(&str, Yaml)>) -> Yaml {
    Yaml::Hash(pairs.into_iter().map(|(k, v)| (s(k), v)).collect())
}

pub fn labels_yaml(labels: &BTreeMap<String, String>) -> Yaml {
    Yaml::Hash(
        labels
            .iter()
            .map(|(k, v)| (s(k), s(&label_value(v))))
            .collect(),
    )
}

/// One YAML document, starting with `---`.
pub fn emit(doc: &Yaml) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = YamlEmitter::new(&mut out).dump(doc);
    out.push('\n');
    out
}
