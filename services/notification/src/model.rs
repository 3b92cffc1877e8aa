//! Notification requests, their validation, and the in-memory record of each notification.
//!
//! State is kept in memory only: a restart forgets past notifications and abandons pending ones
//! (their audit events were not written either). At most [`MAX_RECORDS`] are kept; the oldest
//! finished ones are forgotten first.

use serde::Serialize;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use svc_common::http::FieldError;
use svc_common::validate::{kind, Fields};
use uuid::Uuid;

/// Most notifications remembered.
pub const MAX_RECORDS: usize = 100_000;
/// Most recipients per notification.
pub const MAX_RECIPIENTS: usize = 100;
/// Longest subject.
pub const MAX_SUBJECT_CHARS: usize = 1_000;
/// Longest body.
pub const MAX_BODY_CHARS: usize = 100_000;

/// Delivery channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// A structured log line.
    Console,
    /// A JSON line appended to `NOTIFICATION_FILE_DIR/<recipient>.log`.
    File,
    /// `POST` to each recipient URL.
    Webhook,
}

impl Channel {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Console => "console",
            Channel::File => "file",
            Channel::Webhook => "webhook",
        }
    }
}

/// A valid request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotification {
    /// Channel.
    pub channel: Channel,
    /// Non-empty list of recipients (URLs for webhooks).
    pub recipients: Vec<String>,
    /// Subject.
    pub subject: String,
    /// Body (may be empty).
    pub body: String,
    /// Correlation id given by the caller.
    pub correlation_id: Option<String>,
}

/// Validates `POST /api/v1/notifications`; all offending fields are reported.
pub fn validate(v: &Value) -> Result<NewNotification, Vec<FieldError>> {
    let mut f = Fields::of(v)?;
    let channel = f.one_of(
        "channel",
        &[
            ("console", Channel::Console),
            ("file", Channel::File),
            ("webhook", Channel::Webhook),
        ],
    );
    let mut recipients = Vec::new();
    match f.get("recipients") {
        Some(Value::Array(items)) if items.is_empty() => {
            f.error("recipients", "must contain at least one recipient");
        }
        Some(Value::Array(items)) if items.len() > MAX_RECIPIENTS => {
            f.error(
                "recipients",
                format!("at most {MAX_RECIPIENTS} recipients are allowed"),
            );
        }
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                let field = format!("recipients[{i}]");
                match item {
                    Value::String(s) if !s.trim().is_empty() => {
                        if channel == Some(Channel::Webhook) {
                            if let Err(why) = check_webhook_url(s) {
                                f.error(&field, why);
                            }
                        }
                        recipients.push(s.trim().to_string());
                    }
                    Value::String(_) => f.error(&field, "must not be empty"),
                    other => f.error(&field, format!("must be a string, got {}", kind(other))),
                }
            }
        }
        None | Some(Value::Null) => {
            f.error("recipients", "is required: a non-empty array of strings");
        }
        Some(other) => f.error(
            "recipients",
            format!("must be an array of strings, got {}", kind(other)),
        ),
    }
    let subject = f.required_string("subject", MAX_SUBJECT_CHARS);
    let body = f.required_string_or_empty("body", MAX_BODY_CHARS);
    let correlation_id = match f.get("correlation_id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.trim().is_empty() => {
            f.error("correlation_id", "must not be empty when given");
            None
        }
        Some(Value::String(s)) if s.chars().count() > 255 => {
            f.error("correlation_id", "must be at most 255 characters");
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
    match (channel, errors.is_empty()) {
        (Some(channel), true) => Ok(NewNotification {
            channel,
            recipients,
            subject,
            body,
            correlation_id,
        }),
        _ => Err(errors),
    }
}

fn check_webhook_url(s: &str) -> Result<(), String> {
    match reqwest::Url::parse(s) {
        Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host_str().is_some() => {
            Ok(())
        }
        Ok(u) => Err(format!(
            "{s:?} is not a webhook URL: scheme {:?}; expected http://host/path",
            u.scheme()
        )),
        Err(e) => Err(format!(
            "{s:?} is not a webhook URL ({e}); expected http://host/path"
        )),
    }
}

/// Where a notification stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Being delivered (or waiting for a retry).
    Pending,
    /// Delivered to every recipient.
    Sent,
    /// Gave up after the last attempt.
    Failed,
}

/// What `GET /api/v1/notifications/{id}` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Record {
    /// Id.
    pub id: Uuid,
    /// Status.
    pub status: Status,
    /// Delivery attempts made so far.
    pub attempts: u32,
    /// Error of the last failed attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Channel.
    pub channel: Channel,
    /// The caller's correlation id, or the notification id.
    pub correlation_id: String,
    /// Recipients.
    pub recipients: Vec<String>,
}

/// All notifications this process knows.
#[derive(Default)]
pub struct Records {
    inner: Mutex<(HashMap<Uuid, Record>, VecDeque<Uuid>)>,
}

impl Records {
    fn lock(&self) -> std::sync::MutexGuard<'_, (HashMap<Uuid, Record>, VecDeque<Uuid>)> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a record, forgetting the oldest finished ones beyond [`MAX_RECORDS`].
    pub fn insert(&self, r: Record) {
        let mut g = self.lock();
        let (map, order) = &mut *g;
        order.push_back(r.id);
        map.insert(r.id, r);
        let mut scanned = 0;
        while map.len() > MAX_RECORDS && scanned < order.len() {
            let Some(id) = order.pop_front() else { break };
            match map.get(&id) {
                Some(old) if old.status == Status::Pending => {
                    order.push_back(id);
                    scanned += 1;
                }
                _ => {
                    map.remove(&id);
                }
            }
        }
    }

    /// Changes a record in place.
    pub fn update(&self, id: Uuid, f: impl FnOnce(&mut Record)) {
        if let Some(r) = self.lock().0.get_mut(&id) {
            f(r);
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

    fn names(r: Result<NewNotification, Vec<FieldError>>) -> Vec<String> {
        r.unwrap_err().into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn a_good_request() {
        let n = validate(&json!({"channel": "file", "recipients": [" ops "], "subject": "s", "body": "", "correlation_id": "c"})).unwrap();
        assert_eq!(n.channel, Channel::File);
        assert_eq!(n.recipients, vec!["ops"]);
        assert_eq!(n.correlation_id.as_deref(), Some("c"));
        let n = validate(&json!({"channel": "webhook", "recipients": ["http://127.0.0.1:9/x"], "subject": "s", "body": "b"})).unwrap();
        assert_eq!(n.correlation_id, None);
    }

    #[test]
    fn everything_missing() {
        assert_eq!(
            names(validate(&json!({}))),
            vec!["channel", "recipients", "subject", "body"]
        );
    }

    #[test]
    fn bad_fields() {
        let base = json!({"channel": "console", "recipients": ["a"], "subject": "s", "body": "b"});
        let cases: Vec<(&str, Value, &str)> = vec![
            ("channel", json!("sms"), "channel"),
            ("channel", json!(1), "channel"),
            ("recipients", json!([]), "recipients"),
            ("recipients", json!("a"), "recipients"),
            ("recipients", json!(["a", ""]), "recipients[1]"),
            ("recipients", json!(["a", 5]), "recipients[1]"),
            (
                "recipients",
                json!(vec!["x"; MAX_RECIPIENTS + 1]),
                "recipients",
            ),
            ("subject", json!(""), "subject"),
            ("subject", json!(["s"]), "subject"),
            (
                "subject",
                json!("s".repeat(MAX_SUBJECT_CHARS + 1)),
                "subject",
            ),
            ("body", Value::Null, "body"),
            ("body", json!(3), "body"),
            ("correlation_id", json!(""), "correlation_id"),
            ("correlation_id", json!(7), "correlation_id"),
        ];
        for (key, v, field) in cases {
            let mut req = base.clone();
            req[key] = v.clone();
            assert_eq!(names(validate(&req)), vec![field], "{key} = {v}");
        }
    }

    #[test]
    fn webhook_recipients_must_be_urls() {
        let req = json!({"channel": "webhook", "recipients": ["http://ok/x", "oncall", "ftp://x/y"], "subject": "s", "body": "b"});
        assert_eq!(
            names(validate(&req)),
            vec!["recipients[1]", "recipients[2]"]
        );
    }

    #[test]
    fn not_an_object() {
        assert_eq!(names(validate(&json!([1]))), vec!["request body"]);
    }

    #[test]
    fn records_are_bounded_keeping_pending_ones() {
        let records = Records::default();
        let pending = Uuid::new_v4();
        let rec = |id, status| Record {
            id,
            status,
            attempts: 0,
            last_error: None,
            channel: Channel::Console,
            correlation_id: "c".into(),
            recipients: vec![],
        };
        records.insert(rec(pending, Status::Pending));
        for _ in 0..MAX_RECORDS + 5 {
            records.insert(rec(Uuid::new_v4(), Status::Sent));
        }
        assert!(records.get(pending).is_some());
        assert_eq!(records.lock().0.len(), MAX_RECORDS);
    }
}
