//! Signals: validation of `POST /api/v1/signals` and the pure decisions taken on them.

use serde_json::Value;
use std::collections::BTreeMap;
use svc_common::http::FieldError;
use svc_common::validate::{kind, Fields};

/// Longest fingerprint.
pub const MAX_FINGERPRINT_CHARS: usize = 256;
/// Most labels.
pub const MAX_LABELS: usize = 64;

/// Severity of a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Page someone.
    Critical,
    /// Look at it.
    Warning,
    /// For the record.
    Info,
}

impl Severity {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// A valid signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal {
    /// Identity for deduplication.
    pub fingerprint: String,
    /// Alert name.
    pub alertname: String,
    /// Severity.
    pub severity: Severity,
    /// Namespace.
    pub namespace: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// Validates a signal; every offending field is reported.
pub fn validate(v: &Value) -> Result<Signal, Vec<FieldError>> {
    let mut f = Fields::of(v)?;
    let fingerprint = f.required_string("fingerprint", MAX_FINGERPRINT_CHARS);
    let alertname = f.required_string("alertname", 255);
    let namespace = f.required_string("namespace", 253);
    let severity = f.one_of(
        "severity",
        &[
            ("critical", Severity::Critical),
            ("warning", Severity::Warning),
            ("info", Severity::Info),
        ],
    );
    let mut labels = BTreeMap::new();
    match f.get("labels") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) if m.len() > MAX_LABELS => {
            f.error("labels", format!("at most {MAX_LABELS} labels are allowed"));
        }
        Some(Value::Object(m)) => {
            for (k, v) in m {
                match v {
                    Value::String(s) => {
                        labels.insert(k.clone(), s.clone());
                    }
                    other => f.error(
                        &format!("labels.{k}"),
                        format!("must be a string, got {}", kind(other)),
                    ),
                }
            }
        }
        Some(other) => f.error(
            "labels",
            format!("must be an object of strings, got {}", kind(other)),
        ),
    }
    let errors = f.into_errors();
    match (severity, errors.is_empty()) {
        (Some(severity), true) => Ok(Signal {
            fingerprint,
            alertname,
            severity,
            namespace,
            labels,
        }),
        _ => Err(errors),
    }
}

/// What to do with a signal given its count within the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// First in its window.
    Accepted,
    /// Seen before in its window.
    Deduplicated,
}

impl Decision {
    /// Wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Accepted => "accepted",
            Decision::Deduplicated => "deduplicated",
        }
    }
}

/// `count` is the atomic per-window counter after this signal (1 = first).
pub fn decide(count: i64) -> Decision {
    if count <= 1 {
        Decision::Accepted
    } else {
        Decision::Deduplicated
    }
}

/// Forward only first (non-duplicate) critical signals, and only when Notification is set.
pub fn should_forward(
    severity: Severity,
    decision: Decision,
    notification_configured: bool,
) -> bool {
    notification_configured && severity == Severity::Critical && decision == Decision::Accepted
}

/// The Redis key of a fingerprint.
pub fn dedup_key(fingerprint: &str) -> String {
    format!("gateway:dedup:{fingerprint}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(r: Result<Signal, Vec<FieldError>>) -> Vec<String> {
        r.unwrap_err().into_iter().map(|e| e.field).collect()
    }

    fn good() -> Value {
        json!({"fingerprint": "f1", "alertname": "HighCPU", "severity": "critical", "namespace": "prod", "labels": {"pod": "a"}})
    }

    #[test]
    fn good_signal() {
        let s = validate(&good()).unwrap();
        assert_eq!(s.severity, Severity::Critical);
        assert_eq!(s.labels.get("pod").map(String::as_str), Some("a"));
        let mut v = good();
        v.as_object_mut().unwrap().remove("labels");
        assert!(validate(&v).unwrap().labels.is_empty());
    }

    #[test]
    fn missing_everything() {
        assert_eq!(
            names(validate(&json!({}))),
            vec!["fingerprint", "alertname", "namespace", "severity"]
        );
        assert_eq!(names(validate(&json!("x"))), vec!["request body"]);
    }

    #[test]
    fn bad_fields() {
        let cases: Vec<(&str, Value, Vec<&str>)> = vec![
            ("severity", json!("fatal"), vec!["severity"]),
            ("severity", json!("CRITICAL"), vec!["severity"]),
            ("severity", json!(3), vec!["severity"]),
            ("fingerprint", json!(""), vec!["fingerprint"]),
            (
                "fingerprint",
                json!("f".repeat(MAX_FINGERPRINT_CHARS + 1)),
                vec!["fingerprint"],
            ),
            ("alertname", json!(["a"]), vec!["alertname"]),
            ("namespace", json!(" "), vec!["namespace"]),
            ("labels", json!(["a"]), vec!["labels"]),
            (
                "labels",
                json!({"a": 1, "b": "ok", "c": null}),
                vec!["labels.a", "labels.c"],
            ),
        ];
        for (key, v, expected) in cases {
            let mut s = good();
            s[key] = v.clone();
            assert_eq!(names(validate(&s)), expected, "{key} = {v}");
        }
        let many: serde_json::Map<String, Value> = (0..=MAX_LABELS)
            .map(|i| (format!("k{i}"), json!("v")))
            .collect();
        let mut s = good();
        s["labels"] = Value::Object(many);
        assert_eq!(names(validate(&s)), vec!["labels"]);
    }

    #[test]
    fn dedup_decisions() {
        assert_eq!(decide(1), Decision::Accepted);
        assert_eq!(decide(2), Decision::Deduplicated);
        assert_eq!(decide(1_000), Decision::Deduplicated);
        assert_eq!(decide(0), Decision::Accepted);
    }

    #[test]
    fn forwarding_decisions() {
        assert!(should_forward(Severity::Critical, Decision::Accepted, true));
        assert!(!should_forward(
            Severity::Critical,
            Decision::Accepted,
            false
        ));
        assert!(!should_forward(
            Severity::Critical,
            Decision::Deduplicated,
            true
        ));
        assert!(!should_forward(Severity::Warning, Decision::Accepted, true));
        assert!(!should_forward(Severity::Info, Decision::Accepted, true));
    }

    #[test]
    fn keys() {
        assert_eq!(dedup_key("abc"), "gateway:dedup:abc");
    }
}
