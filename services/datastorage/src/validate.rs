//! Validation of incoming audit events: every offending field is reported at once.
//!
//! Rules:
//! - Required, non-empty strings of at most 255 characters: `event_type`, `event_category`,
//!   `event_action`, `correlation_id`.
//! - `event_outcome`: required, one of `success`, `failure`, `pending`.
//! - Optional strings (null = absent), at most 255 characters: `actor_type`, `actor_id`,
//!   `resource_type`, `resource_id`, `namespace`, `severity`.
//! - `event_id`: optional UUID string; generated when absent.
//! - `event_timestamp`: optional RFC 3339 string; the server's time when absent.
//! - `event_data`: optional JSON object (null = `{}`); at most 64 KiB serialized.
//! - Unknown fields are ignored (forward compatibility).

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use svc_common::audit::{AuditEvent, AuditOutcome};
use svc_common::http::FieldError;
pub use svc_common::validate::kind;
use svc_common::validate::Fields;
use uuid::Uuid;

/// Longest accepted string field.
pub const MAX_FIELD_CHARS: usize = 255;
/// Largest accepted `event_data`, serialized.
pub const MAX_EVENT_DATA_BYTES: usize = 64 * 1024;
/// Most events accepted in one batch.
pub const MAX_BATCH_EVENTS: usize = 1_000;

const REQUIRED: [&str; 4] = [
    "event_type",
    "event_category",
    "event_action",
    "correlation_id",
];
const OPTIONAL: [&str; 6] = [
    "actor_type",
    "actor_id",
    "resource_type",
    "resource_id",
    "namespace",
    "severity",
];

/// Validates one event. `prefix` is put before field names (`events[3].` in a batch).
pub fn validate_event(value: &Value, prefix: &str) -> Result<AuditEvent, Vec<FieldError>> {
    let mut f = Fields::prefixed(value, prefix)?;
    let [event_type, event_category, event_action, correlation_id] =
        REQUIRED.map(|n| f.required_string(n, MAX_FIELD_CHARS));
    let event_outcome = f
        .choice("event_outcome", &AuditOutcome::ALLOWED, str::parse)
        .unwrap_or(AuditOutcome::Pending);
    let [actor_type, actor_id, resource_type, resource_id, namespace, severity] =
        OPTIONAL.map(|n| optional(&mut f, n));

    let event_id = match f.get("event_id") {
        None | Some(Value::Null) => Uuid::new_v4(),
        Some(Value::String(s)) => match Uuid::parse_str(s) {
            Ok(u) => u,
            Err(_) => {
                f.error("event_id", format!("{s:?} is not a UUID"));
                Uuid::nil()
            }
        },
        Some(other) => {
            f.error(
                "event_id",
                format!("must be a UUID string, got {}", kind(other)),
            );
            Uuid::nil()
        }
    };

    let event_timestamp = match f.get("event_timestamp") {
        None | Some(Value::Null) => Utc::now(),
        Some(Value::String(s)) => match DateTime::parse_from_rfc3339(s) {
            Ok(t) => t.with_timezone(&Utc),
            Err(e) => {
                f.error("event_timestamp", format!("{s:?} is not an RFC 3339 timestamp ({e}); expected e.g. 2024-05-01T12:00:00Z"));
                Utc::now()
            }
        },
        Some(other) => {
            f.error(
                "event_timestamp",
                format!("must be an RFC 3339 string, got {}", kind(other)),
            );
            Utc::now()
        }
    };

    let event_data = match f.get("event_data") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => {
            let size = serde_json::to_vec(m).map(|v| v.len()).unwrap_or(usize::MAX);
            if size > MAX_EVENT_DATA_BYTES {
                f.error(
                    "event_data",
                    format!("is {size} bytes; at most {MAX_EVENT_DATA_BYTES} bytes are accepted"),
                );
            }
            m.clone()
        }
        Some(other) => {
            f.error(
                "event_data",
                format!("must be a JSON object, got {}", kind(other)),
            );
            Map::new()
        }
    };

    let errors = f.into_errors();
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(AuditEvent {
        event_id,
        event_timestamp,
        event_type,
        event_category,
        event_action,
        event_outcome,
        actor_type,
        actor_id,
        resource_type,
        resource_id,
        correlation_id,
        namespace,
        severity,
        event_data,
    })
}

/// Validates a batch: a JSON array of 1 to [`MAX_BATCH_EVENTS`] events. Field names are
/// prefixed with `events[i].`.
pub fn validate_batch(value: &Value) -> Result<Vec<AuditEvent>, Vec<FieldError>> {
    let Some(items) = value.as_array() else {
        return Err(vec![FieldError::new(
            "request body",
            format!("must be a JSON array of events, got {}", kind(value)),
        )]);
    };
    if items.is_empty() {
        return Err(vec![FieldError::new(
            "request body",
            "must contain at least one event",
        )]);
    }
    if items.len() > MAX_BATCH_EVENTS {
        return Err(vec![FieldError::new(
            "request body",
            format!(
                "has {} events; at most {MAX_BATCH_EVENTS} are accepted per batch",
                items.len()
            ),
        )]);
    }
    let mut events = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match validate_event(item, &format!("events[{i}].")) {
            Ok(e) => events.push(e),
            Err(mut errs) => errors.append(&mut errs),
        }
    }
    if errors.is_empty() {
        Ok(events)
    } else {
        Err(errors)
    }
}

/// An optional string (null = absent) of at most [`MAX_FIELD_CHARS`] characters.
fn optional(f: &mut Fields<'_>, name: &str) -> Option<String> {
    match f.get(name) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.chars().count() > MAX_FIELD_CHARS => {
            f.error(
                name,
                format!("must be at most {MAX_FIELD_CHARS} characters"),
            );
            None
        }
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            f.error(
                name,
                format!("must be a string or null, got {}", kind(other)),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn good() -> Value {
        json!({
            "event_type": "gateway.signal.received",
            "event_category": "gateway",
            "event_action": "receive",
            "event_outcome": "success",
            "correlation_id": "c-1",
        })
    }

    fn fields(r: Result<AuditEvent, Vec<FieldError>>) -> Vec<String> {
        r.unwrap_err().into_iter().map(|e| e.field).collect()
    }

    fn with(key: &str, v: Value) -> Value {
        let mut g = good();
        g[key] = v;
        g
    }

    #[test]
    fn minimal_event_gets_id_time_and_empty_data() {
        let e = validate_event(&good(), "").unwrap();
        assert_ne!(e.event_id, Uuid::nil());
        assert!(e.event_data.is_empty());
        assert_eq!(e.event_outcome, AuditOutcome::Success);
        assert!((Utc::now() - e.event_timestamp).num_seconds() < 5);
    }

    #[test]
    fn given_id_and_timestamp_are_kept() {
        let mut v = good();
        v["event_id"] = json!("6f1c1c0e-4a1e-4a8f-9d5e-2b7f0c7f1a11");
        v["event_timestamp"] = json!("2024-05-01T12:00:00+02:00");
        v["event_data"] = json!({"a": [1, 2]});
        v["namespace"] = json!("prod");
        v["severity"] = Value::Null;
        v["something_new"] = json!(1);
        let e = validate_event(&v, "").unwrap();
        assert_eq!(
            e.event_id.to_string(),
            "6f1c1c0e-4a1e-4a8f-9d5e-2b7f0c7f1a11"
        );
        assert_eq!(e.event_timestamp.to_rfc3339(), "2024-05-01T10:00:00+00:00");
        assert_eq!(e.namespace.as_deref(), Some("prod"));
        assert_eq!(e.severity, None);
    }

    #[test]
    fn empty_object_names_every_required_field() {
        assert_eq!(
            fields(validate_event(&json!({}), "")),
            vec![
                "event_type",
                "event_category",
                "event_action",
                "correlation_id",
                "event_outcome"
            ]
        );
    }

    #[test]
    fn bad_outcome_names_the_allowed_values() {
        let errs = validate_event(&with("event_outcome", json!("done")), "").unwrap_err();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "event_outcome");
        assert!(
            errs[0].message.contains("success, failure, pending"),
            "{}",
            errs[0].message
        );
        assert_eq!(
            fields(validate_event(&with("event_outcome", json!("SUCCESS")), "")),
            vec!["event_outcome"]
        );
        assert_eq!(
            fields(validate_event(&with("event_outcome", json!(1)), "")),
            vec!["event_outcome"]
        );
    }

    #[test]
    fn wrong_types_and_shapes() {
        let cases: Vec<(&str, Value)> = vec![
            ("event_type", json!(42)),
            ("event_type", json!("")),
            ("event_type", json!("   ")),
            ("event_category", json!(["x"])),
            ("correlation_id", json!({"a": 1})),
            ("correlation_id", Value::Null),
            ("event_action", json!(true)),
            ("event_action", json!("x".repeat(256))),
            ("actor_id", json!(5)),
            ("namespace", json!("n".repeat(300))),
            ("severity", json!({})),
            ("event_id", json!("not-a-uuid")),
            ("event_id", json!(123)),
            ("event_timestamp", json!("yesterday")),
            ("event_timestamp", json!("2024-05-01 12:00:00")),
            ("event_timestamp", json!(1714564800)),
            ("event_data", json!("text")),
            ("event_data", json!([1, 2])),
            ("event_data", json!(3)),
            (
                "event_data",
                json!({"big": "x".repeat(MAX_EVENT_DATA_BYTES)}),
            ),
        ];
        for (key, v) in cases {
            assert_eq!(
                fields(validate_event(&with(key, v.clone()), "")),
                vec![key],
                "{key} = {v}"
            );
        }
    }

    #[test]
    fn several_problems_are_reported_together() {
        let v = json!({
            "event_type": "t",
            "event_category": 1,
            "event_outcome": "maybe",
            "event_data": [],
            "event_id": "x",
        });
        assert_eq!(
            fields(validate_event(&v, "")),
            vec![
                "event_category",
                "event_action",
                "correlation_id",
                "event_outcome",
                "event_id",
                "event_data"
            ]
        );
    }

    #[test]
    fn non_objects_are_refused() {
        for v in [json!([]), json!("x"), json!(1), Value::Null] {
            assert_eq!(fields(validate_event(&v, "")), vec!["request body"]);
        }
    }

    #[test]
    fn batches() {
        assert_eq!(validate_batch(&json!([good(), good()])).unwrap().len(), 2);
        let errs = validate_batch(&json!([good(), {"event_type": "x"}, 7])).unwrap_err();
        let names: Vec<_> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "events[1].event_category",
                "events[1].event_action",
                "events[1].correlation_id",
                "events[1].event_outcome",
                "events[2]"
            ]
        );
        assert_eq!(
            validate_batch(&json!([])).unwrap_err()[0].field,
            "request body"
        );
        assert_eq!(
            validate_batch(&json!({"events": []})).unwrap_err()[0].field,
            "request body"
        );
        let many: Vec<Value> = (0..=MAX_BATCH_EVENTS).map(|_| good()).collect();
        assert!(validate_batch(&Value::Array(many)).unwrap_err()[0]
            .message
            .contains("at most 1000"));
    }
}
