//! The audit event wire type and [`AuditClient`], which buffers events and sends them in
//! batches to DataStorage (`POST {DATASTORAGE_URL}/api/v1/audit/events/batch`, body: a JSON
//! array of events).
//!
//! Delivery rules:
//! - The buffer is bounded (`AUDIT_BUFFER_CAPACITY`). When it is full, **new** events are
//!   refused: [`AuditClient::record`] returns `false`, `audit_events_dropped_total{reason=
//!   "buffer_full"}` counts them and an error is logged. Refusing the newest rather than
//!   evicting the oldest keeps what was already accepted intact and in order, and makes the
//!   loss visible at the call site that caused it.
//! - Events stay in the buffer until DataStorage has acknowledged them (201 stored or 202
//!   queued). Network errors, 5xx, 408 and 429 are retried with exponential backoff, forever
//!   while the process runs.
//! - Any other 4xx means DataStorage will never take that batch: it is dropped, counted as
//!   `reason="rejected"` and logged with DataStorage's answer.
//! - [`AuditClient::shutdown`] sends what is left, trying until a deadline; events still
//!   unsent then are counted as `reason="shutdown"` and logged.

use crate::backoff::Backoff;
use crate::config::Env;
use crate::http::error_chain;
use crate::metrics::{Counter, Gauge, Registry};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// The outcome of an audited action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditOutcome {
    /// It worked.
    Success,
    /// It failed.
    Failure,
    /// Not decided yet.
    Pending,
}

impl AuditOutcome {
    /// Allowed wire values.
    pub const ALLOWED: [&'static str; 3] = ["success", "failure", "pending"];

    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditOutcome::Success => "success",
            AuditOutcome::Failure => "failure",
            AuditOutcome::Pending => "pending",
        }
    }
}

impl fmt::Display for AuditOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for AuditOutcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "success" => Ok(AuditOutcome::Success),
            "failure" => Ok(AuditOutcome::Failure),
            "pending" => Ok(AuditOutcome::Pending),
            other => Err(format!(
                "{other:?} is not an allowed outcome; allowed: {}",
                AuditOutcome::ALLOWED.join(", ")
            )),
        }
    }
}

/// One audit event as sent to and returned by DataStorage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Unique id; DataStorage's primary key (idempotent writes).
    pub event_id: Uuid,
    /// When it happened (RFC 3339 on the wire).
    pub event_timestamp: DateTime<Utc>,
    /// e.g. `notification.message.sent`.
    pub event_type: String,
    /// e.g. `notification`.
    pub event_category: String,
    /// e.g. `deliver`.
    pub event_action: String,
    /// success | failure | pending.
    pub event_outcome: AuditOutcome,
    /// Who acted, kind (e.g. `service`).
    #[serde(default)]
    pub actor_type: Option<String>,
    /// Who acted, id.
    #[serde(default)]
    pub actor_id: Option<String>,
    /// What was acted on, kind.
    #[serde(default)]
    pub resource_type: Option<String>,
    /// What was acted on, id.
    #[serde(default)]
    pub resource_id: Option<String>,
    /// Ties the events of one flow together.
    pub correlation_id: String,
    /// Kubernetes namespace, if any.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Severity, if any.
    #[serde(default)]
    pub severity: Option<String>,
    /// Free-form details (a JSON object).
    #[serde(default)]
    pub event_data: serde_json::Map<String, serde_json::Value>,
}

impl AuditEvent {
    /// A new event with a fresh id and the current time.
    pub fn new(
        event_type: &str,
        event_category: &str,
        event_action: &str,
        event_outcome: AuditOutcome,
        correlation_id: &str,
    ) -> Self {
        AuditEvent {
            event_id: Uuid::new_v4(),
            event_timestamp: Utc::now(),
            event_type: event_type.to_string(),
            event_category: event_category.to_string(),
            event_action: event_action.to_string(),
            event_outcome,
            actor_type: None,
            actor_id: None,
            resource_type: None,
            resource_id: None,
            correlation_id: correlation_id.to_string(),
            namespace: None,
            severity: None,
            event_data: serde_json::Map::new(),
        }
    }

    /// Sets the actor.
    pub fn actor(mut self, kind: &str, id: &str) -> Self {
        self.actor_type = Some(kind.to_string());
        self.actor_id = Some(id.to_string());
        self
    }

    /// Sets the resource.
    pub fn resource(mut self, kind: &str, id: &str) -> Self {
        self.resource_type = Some(kind.to_string());
        self.resource_id = Some(id.to_string());
        self
    }

    /// Sets the namespace.
    pub fn namespace(mut self, ns: &str) -> Self {
        self.namespace = Some(ns.to_string());
        self
    }

    /// Sets the severity.
    pub fn severity(mut self, s: &str) -> Self {
        self.severity = Some(s.to_string());
        self
    }

    /// Sets the details; a value that is not an object is wrapped as `{"value": v}`.
    pub fn data(mut self, v: serde_json::Value) -> Self {
        self.event_data = match v {
            serde_json::Value::Object(m) => m,
            other => {
                let mut m = serde_json::Map::new();
                m.insert("value".to_string(), other);
                m
            }
        };
        self
    }
}

/// Settings of an [`AuditClient`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditClientConfig {
    /// Base URL of DataStorage, e.g. `http://datastorage:8080`.
    pub datastorage_url: String,
    /// Maximum number of buffered events (`AUDIT_BUFFER_CAPACITY`, default 10000).
    pub capacity: usize,
    /// Maximum events per request (`AUDIT_BATCH_SIZE`, default 100).
    pub batch_size: usize,
    /// How often the buffer is flushed (`AUDIT_FLUSH_INTERVAL_MS`, default 200).
    pub flush_interval: Duration,
    /// Delays between failed sends.
    pub backoff: Backoff,
    /// Timeout of one request.
    pub request_timeout: Duration,
}

impl AuditClientConfig {
    /// Reads `AUDIT_BUFFER_CAPACITY`, `AUDIT_FLUSH_INTERVAL_MS` and `AUDIT_BATCH_SIZE`.
    pub fn read(env: &mut Env<'_>, datastorage_url: String) -> Self {
        let capacity = env.usize_in("AUDIT_BUFFER_CAPACITY", 10_000, 1..=10_000_000);
        let flush_interval = env.millis_in("AUDIT_FLUSH_INTERVAL_MS", 200, 1..=3_600_000);
        let batch_size = env.usize_in("AUDIT_BATCH_SIZE", 100, 1..=1_000);
        AuditClientConfig {
            datastorage_url,
            capacity,
            batch_size,
            flush_interval,
            backoff: Backoff::new(Duration::from_millis(200), Duration::from_secs(5)),
            request_timeout: Duration::from_secs(5),
        }
    }
}

struct Metrics {
    depth: Gauge,
    sent: Counter,
    dropped_full: Counter,
    dropped_rejected: Counter,
    dropped_shutdown: Counter,
    send_failures: Counter,
}

struct Inner {
    config: AuditClientConfig,
    http: reqwest::Client,
    buffer: Mutex<VecDeque<AuditEvent>>,
    wake: Notify,
    closing: AtomicBool,
    worker: Mutex<Option<JoinHandle<()>>>,
    metrics: Metrics,
}

impl Inner {
    fn buffer(&self) -> MutexGuard<'_, VecDeque<AuditEvent>> {
        self.buffer.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What DataStorage said about a batch.
#[derive(Debug, PartialEq, Eq)]
enum SendResult {
    /// Stored or queued: remove from the buffer.
    Accepted,
    /// Refused for good (a 4xx other than 408/429): drop, log.
    Rejected(String),
    /// Try again later.
    Retry(String),
}

/// Classifies a DataStorage answer to a batch.
fn classify(status: u16, body: &str) -> SendResult {
    match status {
        200..=299 => SendResult::Accepted,
        408 | 429 => SendResult::Retry(format!("DataStorage answered {status}: {body}")),
        400..=499 => SendResult::Rejected(format!("DataStorage answered {status}: {body}")),
        _ => SendResult::Retry(format!("DataStorage answered {status}: {body}")),
    }
}

/// Buffers audit events and delivers them to DataStorage in the background. Cheap to clone.
#[derive(Clone)]
pub struct AuditClient {
    inner: Arc<Inner>,
}

impl AuditClient {
    /// Starts the background sender. Needs a Tokio runtime.
    pub fn start(config: AuditClientConfig, registry: &Registry) -> AuditClient {
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(Duration::from_secs(2))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        let dropped = |reason: &str| {
            registry.counter(
                "audit_events_dropped_total",
                "Audit events given up, by reason (buffer_full, rejected, shutdown).",
                &[("reason", reason)],
            )
        };
        let metrics = Metrics {
            depth: registry.gauge(
                "audit_buffer_depth",
                "Audit events waiting to be sent to DataStorage.",
                &[],
            ),
            sent: registry.counter(
                "audit_events_sent_total",
                "Audit events acknowledged by DataStorage.",
                &[],
            ),
            dropped_full: dropped("buffer_full"),
            dropped_rejected: dropped("rejected"),
            dropped_shutdown: dropped("shutdown"),
            send_failures: registry.counter(
                "audit_send_failures_total",
                "Failed attempts to send a batch of audit events (retried).",
                &[],
            ),
        };
        let inner = Arc::new(Inner {
            config,
            http,
            buffer: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            closing: AtomicBool::new(false),
            worker: Mutex::new(None),
            metrics,
        });
        let handle = tokio::spawn(run_worker(inner.clone()));
        *inner.worker.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        AuditClient { inner }
    }

    /// Queues an event. Returns `false` (and counts and logs the drop) when the buffer is full
    /// or the client is shutting down.
    pub fn record(&self, event: AuditEvent) -> bool {
        let inner = &self.inner;
        if inner.closing.load(Ordering::SeqCst) {
            inner.metrics.dropped_shutdown.inc();
            tracing::error!(event_type = %event.event_type, correlation_id = %event.correlation_id, "audit event refused: the audit client is shutting down");
            return false;
        }
        let len = {
            let mut buf = inner.buffer();
            if buf.len() >= inner.config.capacity {
                drop(buf);
                inner.metrics.dropped_full.inc();
                let total = inner.metrics.dropped_full.get();
                tracing::error!(
                    event_type = %event.event_type,
                    correlation_id = %event.correlation_id,
                    capacity = inner.config.capacity,
                    dropped_total = total,
                    "audit buffer full (DataStorage unreachable?): audit event DROPPED"
                );
                return false;
            }
            buf.push_back(event);
            buf.len()
        };
        inner.metrics.depth.set(len as i64);
        if len >= inner.config.batch_size {
            inner.wake.notify_one();
        }
        true
    }

    /// Number of events not yet acknowledged by DataStorage.
    pub fn pending(&self) -> usize {
        self.inner.buffer().len()
    }

    /// Sends everything still buffered, trying until `deadline` has passed; then stops the
    /// sender. Returns the number of events that could not be delivered (also logged).
    pub async fn shutdown(&self, deadline: Duration) -> usize {
        let inner = &self.inner;
        inner.closing.store(true, Ordering::SeqCst);
        inner.wake.notify_one();
        let handle = inner
            .worker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(mut handle) = handle {
            if tokio::time::timeout(deadline, &mut handle).await.is_err() {
                handle.abort();
                let _ = handle.await;
            }
        }
        let lost = {
            let mut buf = inner.buffer();
            let n = buf.len();
            buf.clear();
            n
        };
        inner.metrics.depth.set(0);
        if lost > 0 {
            inner.metrics.dropped_shutdown.inc_by(lost as u64);
            tracing::error!(
                lost,
                deadline_ms = deadline.as_millis() as u64,
                "audit events could not be delivered to DataStorage before shutdown: LOST"
            );
        } else {
            tracing::info!("audit buffer flushed");
        }
        lost
    }
}

async fn run_worker(inner: Arc<Inner>) {
    let url = format!("{}/api/v1/audit/events/batch", inner.config.datastorage_url);
    let mut failures: u32 = 0;
    loop {
        let closing = inner.closing.load(Ordering::SeqCst);
        let batch: Vec<AuditEvent> = {
            let buf = inner.buffer();
            buf.iter().take(inner.config.batch_size).cloned().collect()
        };
        if batch.is_empty() {
            if closing {
                return;
            }
            tokio::select! {
                _ = inner.wake.notified() => {}
                _ = tokio::time::sleep(inner.config.flush_interval) => {}
            }
            continue;
        }
        let n = batch.len();
        let result = match inner.http.post(&url).json(&batch).send().await {
            Ok(res) => {
                let status = res.status().as_u16();
                let body = res.text().await.unwrap_or_default();
                classify(status, body.trim())
            }
            Err(e) => SendResult::Retry(format!("POST {url} failed: {}", error_chain(&e))),
        };
        match result {
            SendResult::Accepted | SendResult::Rejected(_) => {
                let left = {
                    let mut buf = inner.buffer();
                    let k = n.min(buf.len());
                    buf.drain(..k);
                    buf.len()
                };
                inner.metrics.depth.set(left as i64);
                if let SendResult::Rejected(why) = result {
                    inner.metrics.dropped_rejected.inc_by(n as u64);
                    tracing::error!(events = n, error = %why, "DataStorage refused a batch of audit events: DROPPED");
                } else {
                    inner.metrics.sent.inc_by(n as u64);
                    if failures > 0 {
                        tracing::info!(
                            after_failures = failures,
                            "audit events are reaching DataStorage again"
                        );
                    }
                }
                failures = 0;
                // Only wait when the buffer has less than a full batch left and we are not
                // draining for shutdown.
                if !closing && left < inner.config.batch_size {
                    tokio::select! {
                        _ = inner.wake.notified() => {}
                        _ = tokio::time::sleep(inner.config.flush_interval) => {}
                    }
                }
            }
            SendResult::Retry(why) => {
                inner.metrics.send_failures.inc();
                let delay = inner.config.backoff.delay(failures);
                failures = failures.saturating_add(1);
                let buffered = inner.buffer().len();
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(error = %why, buffered, failures, retry_in_ms = delay.as_millis() as u64, "cannot send audit events; will retry");
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wire_format_round_trips() {
        let e = AuditEvent::new("a.b.c", "cat", "act", AuditOutcome::Failure, "corr-1")
            .actor("service", "gateway")
            .namespace("prod")
            .data(json!({"k": 1}));
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["event_outcome"], "failure");
        assert_eq!(v["actor_id"], "gateway");
        assert_eq!(v["severity"], serde_json::Value::Null);
        assert_eq!(v["event_data"], json!({"k": 1}));
        let back: AuditEvent = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn outcome_parsing() {
        assert_eq!("pending".parse::<AuditOutcome>(), Ok(AuditOutcome::Pending));
        let err = "done".parse::<AuditOutcome>().unwrap_err();
        assert!(err.contains("success, failure, pending"));
    }

    #[test]
    fn non_object_data_is_wrapped() {
        let e = AuditEvent::new("t", "c", "a", AuditOutcome::Success, "x").data(json!([1]));
        assert_eq!(
            serde_json::Value::Object(e.event_data),
            json!({"value": [1]})
        );
    }

    #[test]
    fn answers_are_classified() {
        assert_eq!(classify(201, ""), SendResult::Accepted);
        assert_eq!(classify(202, ""), SendResult::Accepted);
        assert!(matches!(classify(400, "bad"), SendResult::Rejected(_)));
        assert!(matches!(classify(413, ""), SendResult::Rejected(_)));
        assert!(matches!(classify(429, ""), SendResult::Retry(_)));
        assert!(matches!(classify(408, ""), SendResult::Retry(_)));
        assert!(matches!(classify(503, ""), SendResult::Retry(_)));
        assert!(matches!(classify(500, ""), SendResult::Retry(_)));
    }

    fn config(url: String, capacity: usize) -> AuditClientConfig {
        AuditClientConfig {
            datastorage_url: url,
            capacity,
            batch_size: 2,
            flush_interval: Duration::from_millis(10),
            backoff: Backoff::new(Duration::from_millis(10), Duration::from_millis(50)),
            request_timeout: Duration::from_secs(1),
        }
    }

    /// A closed local port: connections are refused.
    async fn dead_url() -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        drop(l);
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn full_buffer_refuses_new_events_and_counts_them() {
        let registry = Registry::new();
        let client = AuditClient::start(config(dead_url().await, 3), &registry);
        let ev = || AuditEvent::new("t", "c", "a", AuditOutcome::Success, "x");
        assert!(client.record(ev()));
        assert!(client.record(ev()));
        assert!(client.record(ev()));
        assert!(!client.record(ev()));
        assert!(!client.record(ev()));
        assert_eq!(client.pending(), 3);
        let text = registry.render();
        assert!(
            text.contains("audit_events_dropped_total{reason=\"buffer_full\"} 2"),
            "{text}"
        );
        let lost = client.shutdown(Duration::from_millis(100)).await;
        assert_eq!(lost, 3);
        assert!(!client.record(ev()), "refused after shutdown");
        assert!(registry
            .render()
            .contains("audit_events_dropped_total{reason=\"shutdown\"} 4"));
    }

    #[tokio::test]
    async fn batches_are_sent_and_acknowledged() {
        use axum::routing::post;
        use axum::{Json, Router};
        let received = Arc::new(Mutex::new(Vec::<usize>::new()));
        let r2 = received.clone();
        let app = Router::new().route(
            "/api/v1/audit/events/batch",
            post(move |Json(v): Json<Vec<AuditEvent>>| {
                let r2 = r2.clone();
                async move {
                    r2.lock().unwrap().push(v.len());
                    (axum::http::StatusCode::CREATED, "{}")
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let registry = Registry::new();
        let client = AuditClient::start(config(format!("http://{addr}"), 100), &registry);
        for _ in 0..5 {
            assert!(client.record(AuditEvent::new("t", "c", "a", AuditOutcome::Success, "x")));
        }
        assert_eq!(client.shutdown(Duration::from_secs(5)).await, 0);
        let sizes = received.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 5);
        assert!(
            sizes.iter().all(|s| *s <= 2),
            "batch size respected: {sizes:?}"
        );
        assert!(registry.render().contains("audit_events_sent_total 5"));
    }
}
