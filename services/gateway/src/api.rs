//! HTTP routes of Gateway.
//!
//! | route | answer |
//! |---|---|
//! | `GET /healthz` | 200 |
//! | `GET /readyz` | 200 when Redis (`PING`) and DataStorage (`/healthz`) answer, else 503 naming them |
//! | `GET /metrics` | Prometheus text |
//! | `POST /api/v1/signals` | 202 `{"status":"accepted"|"deduplicated","fingerprint","count","correlation_id"}`, 400, 413, 503 when Redis is down |

use crate::dedup::Dedup;
use crate::signal::{decide, dedup_key, should_forward, validate, Decision, Signal};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use std::sync::Arc;
use svc_common::audit::{AuditClient, AuditEvent, AuditOutcome};
use svc_common::backoff::Backoff;
use svc_common::http::{self as h, ApiError, Check};
use svc_common::metrics::Registry;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// Deduplication store.
    pub dedup: Arc<Dedup>,
    /// Audit client.
    pub audit: AuditClient,
    /// Metrics.
    pub registry: Registry,
    /// HTTP client (readiness, forwards).
    pub http: reqwest::Client,
    /// DataStorage base URL.
    pub datastorage_url: String,
    /// Notification base URL, when forwarding.
    pub notification_url: Option<String>,
    /// Forward tasks (waited for on shutdown).
    pub tasks: TaskTracker,
    /// Backoff of forwards.
    pub forward_backoff: Backoff,
}

/// The router.
pub fn router(state: AppState) -> Router {
    let registry = state.registry.clone();
    let r = Router::new()
        .route("/readyz", get(readyz))
        .route("/api/v1/signals", post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state);
    h::service_router(r, registry)
}

async fn readyz(State(s): State<AppState>) -> Response {
    let (redis, ds) = tokio::join!(
        s.dedup.redis().ping(),
        h::check_http_health(&s.http, "datastorage", &s.datastorage_url)
    );
    h::ready_response(&[
        Check {
            name: "redis",
            error: redis.err(),
        },
        ds,
    ])
}

fn signal_event(
    event_type: &str,
    action: &str,
    outcome: AuditOutcome,
    signal: &Signal,
    corr: &str,
) -> AuditEvent {
    AuditEvent::new(event_type, "gateway", action, outcome, corr)
        .actor("service", "gateway")
        .resource("signal", &signal.fingerprint)
        .namespace(&signal.namespace)
        .severity(signal.severity.as_str())
}

async fn receive(
    State(s): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let signal = h::validated_json(body, MAX_BODY_BYTES, validate)?;
    let fresh_corr = Uuid::new_v4().to_string();
    let (count, correlation_id) = match s
        .dedup
        .hit(&dedup_key(&signal.fingerprint), &fresh_corr)
        .await
    {
        Ok(v) => v,
        Err(e) => {
            s.registry
                .counter(
                    "gateway_dedup_errors_total",
                    "Signals refused because Redis did not answer.",
                    &[],
                )
                .inc();
            tracing::error!(error = %e, fingerprint = %signal.fingerprint, "cannot deduplicate: signal refused");
            return Err(ApiError::unavailable(format!(
                "deduplication store unavailable, signal not processed: {e}; retry later"
            )));
        }
    };
    let decision = decide(count);
    s.registry
        .counter(
            "gateway_signals_total",
            "Signals received, by decision (accepted, deduplicated).",
            &[("status", decision.as_str())],
        )
        .inc();
    let (event_type, action) = match decision {
        Decision::Accepted => ("gateway.signal.received", "receive"),
        Decision::Deduplicated => ("gateway.signal.deduplicated", "deduplicate"),
    };
    s.audit.record(
        signal_event(
            event_type,
            action,
            AuditOutcome::Success,
            &signal,
            &correlation_id,
        )
        .data(json!({
            "alertname": signal.alertname,
            "labels": signal.labels,
            "count": count,
        })),
    );
    let forwarding = should_forward(signal.severity, decision, s.notification_url.is_some());
    if let (true, Some(base)) = (forwarding, s.notification_url.clone()) {
        if s.tasks.is_closed() {
            tracing::error!(fingerprint = %signal.fingerprint, "shutting down: critical signal not forwarded");
        } else {
            let state = s.clone();
            let (signal, corr) = (signal.clone(), correlation_id.clone());
            s.tasks.spawn(async move {
                let f = crate::forward::forward(&state.http, &base, &signal, &corr, state.forward_backoff).await;
                let ok = f.error.is_none();
                state
                    .registry
                    .counter(
                        "gateway_signals_forwarded_total",
                        "Critical signals forwarded to Notification, by outcome.",
                        &[("outcome", if ok { "success" } else { "failure" })],
                    )
                    .inc();
                if let Some(e) = &f.error {
                    tracing::error!(fingerprint = %signal.fingerprint, error = %e, "forwarding to Notification failed");
                }
                let outcome = if ok { AuditOutcome::Success } else { AuditOutcome::Failure };
                state.audit.record(signal_event("gateway.signal.forwarded", "forward", outcome, &signal, &corr).data(json!({
                    "alertname": signal.alertname,
                    "notification_id": f.notification_id,
                    "attempts": f.attempts,
                    "error": f.error,
                })));
            });
        }
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "status": decision.as_str(),
            "fingerprint": signal.fingerprint,
            "count": count,
            "correlation_id": correlation_id,
        })),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use std::time::Duration;
    use svc_common::audit::AuditClientConfig;
    use svc_common::redis_conn::LazyRedis;
    use svc_common::testing::{call, closed_addr, field_names};

    async fn state() -> AppState {
        let addr = closed_addr().await;
        let registry = Registry::new();
        let audit_config = AuditClientConfig {
            datastorage_url: format!("http://{addr}"),
            capacity: 10,
            batch_size: 10,
            flush_interval: Duration::from_millis(50),
            backoff: Backoff::new(Duration::from_millis(10), Duration::from_millis(10)),
            request_timeout: Duration::from_secs(1),
        };
        AppState {
            dedup: Arc::new(Dedup::new(
                LazyRedis::new(&format!("redis://{addr}"), Duration::from_millis(300)).unwrap(),
                Duration::from_secs(5),
            )),
            audit: AuditClient::start(audit_config, &registry),
            registry,
            http: reqwest::Client::new(),
            datastorage_url: format!("http://{addr}"),
            notification_url: None,
            tasks: TaskTracker::new(),
            forward_backoff: Backoff::new(Duration::from_millis(1), Duration::from_millis(1)),
        }
    }

    fn post(body: impl Into<Body>) -> Request<Body> {
        Request::post("/api/v1/signals").body(body.into()).unwrap()
    }

    #[tokio::test]
    async fn routing_and_validation_errors() {
        let app = router(state().await);
        let (s, _) = call(
            app.clone(),
            Request::get("/api/v2").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _) = call(
            app.clone(),
            Request::get("/api/v1/signals").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
        let (s, b) = call(app.clone(), post(vec![b'x'; MAX_BODY_BYTES + 1])).await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(b["limit_bytes"], MAX_BODY_BYTES);
        let (s, b) = call(
            app.clone(),
            post(r#"{"fingerprint":"f","severity":"bad","labels":{"a":1}}"#),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(
            field_names(&b),
            vec!["alertname", "namespace", "severity", "labels.a"]
        );
    }

    #[tokio::test]
    async fn redis_down_is_503_and_readyz_names_it() {
        let app = router(state().await);
        let (s, b) = call(
            app.clone(),
            post(r#"{"fingerprint":"f","alertname":"a","severity":"info","namespace":"n"}"#),
        )
        .await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            b["error"]
                .as_str()
                .unwrap()
                .contains("deduplication store unavailable"),
            "{b}"
        );
        let (s, b) = call(app, Request::get("/readyz").body(Body::empty()).unwrap()).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(b["unavailable"], json!(["redis", "datastorage"]));
    }
}
