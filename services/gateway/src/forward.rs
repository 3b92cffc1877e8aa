//! Forwarding critical signals to Notification as console notifications to `oncall`.

use crate::signal::Signal;
use serde_json::{json, Value};
use std::time::Duration;
use svc_common::backoff::Backoff;
use svc_common::http::error_chain;

/// Attempts per forward.
pub const ATTEMPTS: u32 = 3;
/// Recipient of forwarded signals.
pub const RECIPIENT: &str = "oncall";

/// The notification request for a signal.
pub fn notification_for(signal: &Signal, correlation_id: &str) -> Value {
    let labels: Vec<String> = signal
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    json!({
        "channel": "console",
        "recipients": [RECIPIENT],
        "subject": format!("[{}] {} in {}", signal.severity.as_str(), signal.alertname, signal.namespace),
        "body": format!(
            "Signal {} (fingerprint {}) in namespace {}. Labels: {}",
            signal.alertname,
            signal.fingerprint,
            signal.namespace,
            if labels.is_empty() { "none".to_string() } else { labels.join(", ") }
        ),
        "correlation_id": correlation_id,
    })
}

/// The result of a forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    /// Notification id when accepted.
    pub notification_id: Option<String>,
    /// Attempts made.
    pub attempts: u32,
    /// Last error when not accepted.
    pub error: Option<String>,
}

/// Posts the notification, retrying network errors and 5xx with backoff.
pub async fn forward(
    http: &reqwest::Client,
    base: &str,
    signal: &Signal,
    correlation_id: &str,
    backoff: Backoff,
) -> Forwarded {
    let url = format!("{base}/api/v1/notifications");
    let body = notification_for(signal, correlation_id);
    let mut error = None;
    for attempt in 1..=ATTEMPTS {
        match http.post(&url).json(&body).send().await {
            Ok(r) if r.status().is_success() => {
                let v: Value = r.json().await.unwrap_or(Value::Null);
                return Forwarded {
                    notification_id: v["id"].as_str().map(str::to_string),
                    attempts: attempt,
                    error: None,
                };
            }
            Ok(r) if r.status().is_client_error() => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                return Forwarded {
                    notification_id: None,
                    attempts: attempt,
                    error: Some(format!("Notification refused the request: {status} {text}")),
                };
            }
            Ok(r) => error = Some(format!("Notification answered {}", r.status())),
            Err(e) => error = Some(format!("POST {url} failed: {}", error_chain(&e))),
        }
        if attempt < ATTEMPTS {
            tokio::time::sleep(backoff.delay(attempt - 1)).await;
        }
    }
    Forwarded {
        notification_id: None,
        attempts: ATTEMPTS,
        error,
    }
}

/// The default backoff of forwards.
pub fn default_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(200), Duration::from_secs(2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::Severity;
    use std::collections::BTreeMap;

    fn sig() -> Signal {
        let mut labels = BTreeMap::new();
        labels.insert("pod".to_string(), "api-1".to_string());
        Signal {
            fingerprint: "fp".into(),
            alertname: "HighCPU".into(),
            severity: Severity::Critical,
            namespace: "prod".into(),
            labels,
        }
    }

    #[test]
    fn notification_body() {
        let n = notification_for(&sig(), "corr-1");
        assert_eq!(n["channel"], "console");
        assert_eq!(n["recipients"], json!(["oncall"]));
        assert_eq!(n["subject"], "[critical] HighCPU in prod");
        assert_eq!(n["correlation_id"], "corr-1");
        assert!(n["body"].as_str().unwrap().contains("pod=api-1"));
    }

    #[tokio::test]
    async fn dead_notification_fails_after_the_attempts() {
        let base = format!("http://{}", svc_common::testing::closed_addr().await);
        let f = forward(
            &reqwest::Client::new(),
            &base,
            &sig(),
            "c",
            Backoff::new(Duration::from_millis(1), Duration::from_millis(2)),
        )
        .await;
        assert_eq!(f.attempts, ATTEMPTS);
        assert!(f.notification_id.is_none());
        assert!(f.error.unwrap().contains("/api/v1/notifications"));
    }
}
