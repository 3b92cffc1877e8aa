//! HTTP routes of Notification.
//!
//! | route | answer |
//! |---|---|
//! | `GET /healthz` | 200 |
//! | `GET /readyz` | 200 when DataStorage `/healthz` answers, else 503 naming `datastorage` |
//! | `GET /metrics` | Prometheus text |
//! | `POST /api/v1/notifications` | 202 `{"id","status":"pending","correlation_id"}`, 400 naming fields, 413, 503 while shutting down |
//! | `GET /api/v1/notifications/{id}` | 200 the record, 404 unknown id |

use crate::deliver::Deliverer;
use crate::model::{validate, Channel, Record, Records, Status};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use std::sync::Arc;
use svc_common::audit::{AuditClient, AuditEvent, AuditOutcome};
use svc_common::http::{self as h, ApiError};
use svc_common::metrics::Registry;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// Shared state of the handlers and delivery tasks.
#[derive(Clone)]
pub struct AppState {
    /// Known notifications.
    pub records: Arc<Records>,
    /// Sender.
    pub deliverer: Deliverer,
    /// Audit client.
    pub audit: AuditClient,
    /// Metrics.
    pub registry: Registry,
    /// Delivery tasks (waited for on shutdown).
    pub tasks: TaskTracker,
    /// For `/readyz`.
    pub http: reqwest::Client,
    /// DataStorage base URL.
    pub datastorage_url: String,
}

/// The router.
pub fn router(state: AppState) -> Router {
    let registry = state.registry.clone();
    let r = Router::new()
        .route("/readyz", get(readyz))
        .route("/api/v1/notifications", post(create))
        .route("/api/v1/notifications/{id}", get(show))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state);
    h::service_router(r, registry)
}

async fn readyz(State(s): State<AppState>) -> Response {
    h::ready_response(&[h::check_http_health(&s.http, "datastorage", &s.datastorage_url).await])
}

async fn show(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    let record = Uuid::parse_str(&id).ok().and_then(|u| s.records.get(u));
    match record {
        Some(r) => Json(r).into_response(),
        None => ApiError::not_found(format!("no notification with id {id:?}")).into_response(),
    }
}

async fn create(
    State(s): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let n = h::validated_json(body, MAX_BODY_BYTES, validate)?;
    if s.tasks.is_closed() {
        return Err(ApiError::unavailable(
            "shutting down; retry on another instance",
        ));
    }
    let id = Uuid::new_v4();
    let correlation_id = n.correlation_id.clone().unwrap_or_else(|| id.to_string());
    let channel = n.channel.as_str();
    s.records.insert(Record {
        id,
        status: Status::Pending,
        attempts: 0,
        last_error: None,
        channel: n.channel,
        correlation_id: correlation_id.clone(),
        recipients: n.recipients.clone(),
    });
    accepted(&s.registry, channel).inc();
    let pending = s.registry.gauge(
        "notifications_pending",
        "Notifications not yet sent or failed.",
        &[],
    );
    pending.add(1);
    let state = s.clone();
    let corr = correlation_id.clone();
    s.tasks.spawn(async move {
        let records = state.records.clone();
        let outcome = state
            .deliverer
            .deliver(id, &n, &corr, |attempts, error| {
                records.update(id, |r| {
                    r.attempts = attempts;
                    if let Some(e) = error {
                        r.last_error = Some(e.to_string());
                    }
                });
            })
            .await;
        let (status, event_type, audit_outcome, word) = if outcome.sent {
            (Status::Sent, "notification.message.sent", AuditOutcome::Success, "sent")
        } else {
            (Status::Failed, "notification.message.failed", AuditOutcome::Failure, "failed")
        };
        records.update(id, |r| r.status = status);
        pending.add(-1);
        state
            .registry
            .counter(
                "notifications_delivered_total",
                "Notifications finished, by channel and outcome (sent, failed).",
                &[("channel", n.channel.as_str()), ("outcome", word)],
            )
            .inc();
        if outcome.sent {
            tracing::info!(%id, attempts = outcome.attempts, channel = n.channel.as_str(), "notification sent");
        } else {
            tracing::error!(%id, attempts = outcome.attempts, error = outcome.last_error.as_deref().unwrap_or(""), "notification failed");
        }
        let event = AuditEvent::new(event_type, "notification", "deliver", audit_outcome, &corr)
            .actor("service", "notification")
            .resource("notification", &id.to_string())
            .data(json!({
                "channel": n.channel.as_str(),
                "recipients": n.recipients,
                "subject": n.subject,
                "attempts": outcome.attempts,
                "last_error": outcome.last_error,
            }));
        state.audit.record(event);
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "id": id, "status": "pending", "correlation_id": correlation_id })),
    )
        .into_response())
}

fn accepted(registry: &Registry, channel: &str) -> svc_common::metrics::Counter {
    registry.counter(
        "notifications_accepted_total",
        "Notifications accepted, by channel.",
        &[("channel", channel)],
    )
}

/// The counters a scrape shows from the start, at 0 (Prometheus practice: a series that
/// appears only with its first event cannot be told from a missing one).
pub fn register_metrics(registry: &Registry) {
    for channel in [Channel::Console, Channel::File, Channel::Webhook] {
        accepted(registry, channel.as_str());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use axum::body::Body;
    use axum::http::Request;
    use std::collections::HashMap;
    use svc_common::testing::{call, closed_addr, field_names};

    #[test]
    fn accepted_counters_are_scraped_from_the_start() {
        let registry = Registry::new();
        register_metrics(&registry);
        let text = registry.render();
        for channel in ["console", "file", "webhook"] {
            let line = format!("notifications_accepted_total{{channel=\"{channel}\"}} 0");
            assert!(text.contains(&line), "{text}");
        }
    }

    async fn state() -> AppState {
        let dead = format!("http://{}", closed_addr().await);
        let mut map = HashMap::new();
        map.insert("DATASTORAGE_URL".to_string(), dead.clone());
        map.insert("DELIVERY_BACKOFF_MS".to_string(), "1".to_string());
        let config = Config::from_map(&map).unwrap();
        let registry = Registry::new();
        AppState {
            records: Arc::new(Records::default()),
            deliverer: Deliverer::new(
                std::env::temp_dir(),
                config.max_attempts,
                config.backoff_initial,
            ),
            audit: AuditClient::start(config.audit.clone(), &registry),
            registry,
            tasks: TaskTracker::new(),
            http: reqwest::Client::new(),
            datastorage_url: dead,
        }
    }

    fn post(body: impl Into<Body>) -> Request<Body> {
        Request::post("/api/v1/notifications")
            .body(body.into())
            .unwrap()
    }

    #[tokio::test]
    async fn routing_errors_are_json() {
        let app = router(state().await);
        let (s, _) = call(app.clone(), Request::get("/x").body(Body::empty()).unwrap()).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, b) = call(
            app.clone(),
            Request::delete("/api/v1/notifications")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(b["method"], "DELETE");
        let (s, b) = call(app.clone(), post(vec![b' '; MAX_BODY_BYTES + 1])).await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(b["limit_bytes"], MAX_BODY_BYTES);
        let (s, _) = call(app.clone(), post("nope")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        let (s, b) = call(app.clone(), post(r#"{"channel":"pigeon","recipients":[]}"#)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(
            field_names(&b),
            vec!["channel", "recipients", "subject", "body"]
        );
        let (s, _) = call(
            app.clone(),
            Request::get("/api/v1/notifications/not-a-uuid")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _) = call(
            app,
            Request::get(format!("/api/v1/notifications/{}", Uuid::new_v4()))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn console_notification_is_sent_and_audit_waits_for_datastorage() {
        let st = state().await;
        let app = router(st.clone());
        let (s, b) = call(app.clone(), post(r#"{"channel":"console","recipients":["oncall"],"subject":"s","body":"b","correlation_id":"c-9"}"#)).await;
        assert_eq!(s, StatusCode::ACCEPTED);
        assert_eq!(b["status"], "pending");
        assert_eq!(b["correlation_id"], "c-9");
        let id = b["id"].as_str().unwrap().to_string();
        st.tasks.close();
        st.tasks.wait().await;
        let (s, b) = call(
            app.clone(),
            Request::get(format!("/api/v1/notifications/{id}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(b["status"], "sent");
        assert_eq!(b["attempts"], 1);
        assert_eq!(b["channel"], "console");
        assert_eq!(b["correlation_id"], "c-9");
        // DataStorage is down: the audit event is held in the buffer.
        assert_eq!(st.audit.pending(), 1);
        let (s, b) = call(
            app.clone(),
            Request::get("/readyz").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(b["unavailable"], json!(["datastorage"]));
        // Closed tracker = shutting down: new notifications are refused.
        let (s, _) = call(
            app,
            post(r#"{"channel":"console","recipients":["x"],"subject":"s","body":"b"}"#),
        )
        .await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        st.audit
            .shutdown(std::time::Duration::from_millis(50))
            .await;
    }
}
