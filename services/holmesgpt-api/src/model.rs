//! Investigation requests, their validation, and the in-memory record of each investigation.
//!
//! State is kept in memory only: a restart forgets past investigations (their audit events stay
//! in DataStorage). At most [`MAX_RECORDS`] are kept; the oldest are forgotten first.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use svc_common::http::FieldError;
use svc_common::validate::{kind, Fields};
use uuid::Uuid;

/// Most investigations remembered.
pub const MAX_RECORDS: usize = 10_000;
/// Longest alert name and correlation id.
pub const MAX_NAME_CHARS: usize = 255;
/// Longest namespace (a Kubernetes namespace name).
pub const MAX_NAMESPACE_CHARS: usize = 63;
/// Longest description.
pub const MAX_DESCRIPTION_CHARS: usize = 10_000;

/// A valid `POST /api/v1/investigations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInvestigation {
    /// The alert's name, e.g. `KubePodCrashLooping`.
    pub alertname: String,
    /// The Kubernetes namespace the alert is about.
    pub namespace: String,
    /// What was observed.
    pub description: String,
    /// Correlation id given by the caller.
    pub correlation_id: Option<String>,
}

/// Validates `POST /api/v1/investigations`; all offending fields are reported, in order.
pub fn validate(v: &Value) -> Result<NewInvestigation, Vec<FieldError>> {
    let mut f = Fields::of(v)?;
    let alertname = f.required_string("alertname", MAX_NAME_CHARS);
    let namespace = f.required_string("namespace", MAX_NAMESPACE_CHARS);
    if !namespace.is_empty() && !is_namespace(&namespace) {
        f.error(
            "namespace",
            "must be a Kubernetes namespace name: lowercase letters, digits and '-', starting \
             and ending with a letter or digit",
        );
    }
    let description = f.required_string("description", MAX_DESCRIPTION_CHARS);
    let correlation_id = match f.get("correlation_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => {
            f.error("correlation_id", "must not be empty (leave it out instead)");
            None
        }
        Some(Value::String(s)) if s.chars().count() > MAX_NAME_CHARS => {
            f.error(
                "correlation_id",
                format!("must be at most {MAX_NAME_CHARS} characters"),
            );
            None
        }
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            f.error(
                "correlation_id",
                format!("must be a string, got {}", kind(other)),
            );
            None
        }
    };
    let errors = f.into_errors();
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(NewInvestigation {
        alertname,
        namespace,
        description,
        correlation_id,
    })
}

/// A DNS-1123 label: what Kubernetes accepts as a namespace name.
fn is_namespace(s: &str) -> bool {
    let ok_chars = s
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    ok_chars && !s.starts_with('-') && !s.ends_with('-')
}

/// Where an investigation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The LLM answered; `analysis` holds its answer.
    Completed,
    /// The LLM did not answer usefully; `error` says why.
    Failed,
}

/// What `GET /api/v1/investigations/{id}` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Record {
    /// The investigation's id.
    pub id: Uuid,
    /// Outcome.
    pub status: Status,
    /// From the request.
    pub alertname: String,
    /// From the request.
    pub namespace: String,
    /// As given, or the id.
    pub correlation_id: String,
    /// The LLM's answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub analysis: Option<String>,
    /// The model that answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the request came in.
    pub created_at: DateTime<Utc>,
}

/// Investigations by id, oldest forgotten first beyond [`MAX_RECORDS`].
#[derive(Debug, Default)]
pub struct Records {
    inner: Mutex<(HashMap<Uuid, Record>, VecDeque<Uuid>)>,
}

impl Records {
    fn lock(&self) -> std::sync::MutexGuard<'_, (HashMap<Uuid, Record>, VecDeque<Uuid>)> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a record, forgetting the oldest beyond [`MAX_RECORDS`].
    pub fn insert(&self, r: Record) {
        let mut g = self.lock();
        let (map, order) = &mut *g;
        order.push_back(r.id);
        map.insert(r.id, r);
        while map.len() > MAX_RECORDS {
            let Some(old) = order.pop_front() else { break };
            map.remove(&old);
        }
    }

    /// A copy of a record.
    pub fn get(&self, id: Uuid) -> Option<Record> {
        self.lock().0.get(&id).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(r: Result<NewInvestigation, Vec<FieldError>>) -> Vec<String> {
        r.unwrap_err().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn a_good_request() {
        let n = validate(&json!({"alertname": "KubePodCrashLooping", "namespace": "prod-1", "description": "pod restarts", "correlation_id": "c-1"})).unwrap();
        assert_eq!(n.alertname, "KubePodCrashLooping");
        assert_eq!(n.namespace, "prod-1");
        assert_eq!(n.correlation_id.as_deref(), Some("c-1"));
        let n = validate(&json!({"alertname": "a", "namespace": "n", "description": "d", "correlation_id": null})).unwrap();
        assert_eq!(n.correlation_id, None);
    }

    #[test]
    fn every_bad_field_is_named() {
        assert_eq!(
            names(validate(&json!({}))),
            vec!["alertname", "namespace", "description"]
        );
        assert_eq!(
            names(validate(
                &json!({"alertname": 3, "namespace": "Prod_1", "description": " ", "correlation_id": 7})
            )),
            vec!["alertname", "namespace", "description", "correlation_id"]
        );
        assert_eq!(
            names(validate(
                &json!({"alertname": "a", "namespace": "-x", "description": "d", "correlation_id": ""})
            )),
            vec!["namespace", "correlation_id"]
        );
        let long = "n".repeat(MAX_NAMESPACE_CHARS + 1);
        let e = validate(&json!({"alertname": "a", "namespace": long, "description": "d"}))
            .unwrap_err();
        assert_eq!(e[0].message, "must be at most 63 characters");
        let e = validate(&json!([1])).unwrap_err();
        assert_eq!(e[0].field, "request body");
    }

    #[test]
    fn the_oldest_records_are_forgotten() {
        let records = Records::default();
        let rec = || Record {
            id: Uuid::new_v4(),
            status: Status::Completed,
            alertname: "a".into(),
            namespace: "n".into(),
            correlation_id: "c".into(),
            analysis: Some("x".into()),
            model: Some("m".into()),
            error: None,
            created_at: Utc::now(),
        };
        let first = rec();
        let first_id = first.id;
        records.insert(first);
        for _ in 0..MAX_RECORDS {
            records.insert(rec());
        }
        assert!(records.get(first_id).is_none());
        assert_eq!(records.lock().0.len(), MAX_RECORDS);
    }
}
