//! HTTP routes of HolmesGPT-API.
//!
//! | route | answer |
//! |---|---|
//! | `GET /healthz` | 200 |
//! | `GET /readyz` | 200 when the LLM (`/health`) and DataStorage (`/healthz`) answer, else 503 naming `llm` / `datastorage` |
//! | `GET /metrics` | Prometheus text |
//! | `POST /api/v1/investigations` | 200 `{"id","status":"completed","analysis","model","correlation_id"}`, 400 naming fields, 413, 502 when the LLM fails |
//! | `GET /api/v1/investigations/{id}` | 200 the record, 404 unknown id |

use crate::llm::Llm;
use crate::model::{validate, Record, Records, Status};
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
use uuid::Uuid;

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 256 << 10;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// Known investigations.
    pub records: Arc<Records>,
    /// The LLM.
    pub llm: Llm,
    /// Audit client.
    pub audit: AuditClient,
    /// Metrics.
    pub registry: Registry,
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
        .route("/api/v1/investigations", post(create))
        .route("/api/v1/investigations/{id}", get(show))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state);
    h::service_router(r, registry)
}

async fn readyz(State(s): State<AppState>) -> Response {
    let (llm, ds) = tokio::join!(
        s.llm.check(),
        h::check_http_health(&s.http, "datastorage", &s.datastorage_url)
    );
    h::ready_response(&[llm, ds])
}

async fn show(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    match Uuid::parse_str(&id).ok().and_then(|u| s.records.get(u)) {
        Some(r) => Json(r).into_response(),
        None => ApiError::not_found(format!("no investigation with id {id:?}")).into_response(),
    }
}

async fn create(
    State(s): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let inv = h::validated_json(body, MAX_BODY_BYTES, validate)?;
    let id = Uuid::new_v4();
    let correlation_id = inv.correlation_id.clone().unwrap_or_else(|| id.to_string());
    let created_at = chrono::Utc::now();
    let outcome = s.llm.analyse(&inv).await;
    let mut record = Record {
        id,
        status: Status::Completed,
        alertname: inv.alertname.clone(),
        namespace: inv.namespace.clone(),
        correlation_id: correlation_id.clone(),
        analysis: None,
        model: None,
        error: None,
        created_at,
    };
    let (event_type, audit_outcome, word, data) = match &outcome {
        Ok(a) => {
            record.analysis = Some(a.content.clone());
            record.model = Some(a.model.clone());
            tracing::info!(%id, alertname = %inv.alertname, model = %a.model, "investigation completed");
            (
                "holmesgpt.investigation.completed",
                AuditOutcome::Success,
                "completed",
                json!({"alertname": inv.alertname, "model": a.model, "analysis_chars": a.content.chars().count()}),
            )
        }
        Err(e) => {
            record.status = Status::Failed;
            record.error = Some(e.clone());
            tracing::error!(%id, alertname = %inv.alertname, error = %e, "investigation failed");
            (
                "holmesgpt.investigation.failed",
                AuditOutcome::Failure,
                "failed",
                json!({"alertname": inv.alertname, "llm_url": s.llm.url(), "error": e}),
            )
        }
    };
    s.records.insert(record);
    s.registry
        .counter(
            "holmesgpt_investigations_total",
            "Investigations finished, by outcome (completed, failed).",
            &[("outcome", word)],
        )
        .inc();
    let event = AuditEvent::new(
        event_type,
        "holmesgpt",
        "investigate",
        audit_outcome,
        &correlation_id,
    )
    .actor("service", "holmesgpt-api")
    .resource("investigation", &id.to_string())
    .namespace(&inv.namespace)
    .data(data);
    s.audit.record(event);
    Ok(match outcome {
        Ok(a) => (
            StatusCode::OK,
            Json(json!({
                "id": id,
                "status": "completed",
                "analysis": a.content,
                "model": a.model,
                "correlation_id": correlation_id,
            })),
        )
            .into_response(),
        Err(e) => ApiError {
            status: StatusCode::BAD_GATEWAY,
            body: json!({
                "error": format!("the LLM did not give an analysis: {e}"),
                "id": id,
                "status": "failed",
                "correlation_id": correlation_id,
            }),
        }
        .into_response(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use axum::body::Body;
    use axum::http::Request;
    use std::collections::HashMap;
    use std::time::Duration;
    use svc_common::testing::{call, closed_addr, field_names};

    /// A stand-in LLM on `127.0.0.1:0`: answers `content` (or 500 when it is empty), and
    /// `/health`.
    async fn fake_llm(content: &'static str) -> String {
        let app = Router::new()
            .route(
                "/v1/chat/completions",
                post(move |Json(req): Json<serde_json::Value>| async move {
                    if content.is_empty() {
                        return (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response();
                    }
                    Json(json!({"model": req["model"], "choices": [{"message": {"role": "assistant", "content": content}}]})).into_response()
                }),
            )
            .route("/health", get(|| async { "ok" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    /// State with DataStorage down and the LLM at `llm_url`.
    async fn state(llm_url: &str) -> AppState {
        let dead = format!("http://{}", closed_addr().await);
        let mut map = HashMap::new();
        map.insert("DATASTORAGE_URL".to_string(), dead.clone());
        map.insert("LLM_URL".to_string(), llm_url.to_string());
        map.insert("LLM_MODEL".to_string(), "unit-model".to_string());
        let config = Config::from_map(&map).unwrap();
        let registry = Registry::new();
        AppState {
            records: Arc::new(Records::default()),
            llm: Llm::new(&config.llm_url, &config.llm_model, Duration::from_secs(2)).unwrap(),
            audit: AuditClient::start(config.audit.clone(), &registry),
            registry,
            http: reqwest::Client::new(),
            datastorage_url: dead,
        }
    }

    fn post_body(body: impl Into<Body>) -> Request<Body> {
        Request::post("/api/v1/investigations")
            .body(body.into())
            .unwrap()
    }

    fn get_path(path: &str) -> Request<Body> {
        Request::get(path).body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn routing_and_validation_errors_are_json() {
        let app = router(state(&fake_llm("x").await).await);
        let (s, _) = call(app.clone(), get_path("/x")).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, b) = call(
            app.clone(),
            Request::delete("/api/v1/investigations")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(b["method"], "DELETE");
        let (s, b) = call(app.clone(), post_body(vec![b' '; MAX_BODY_BYTES + 1])).await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(b["limit_bytes"], MAX_BODY_BYTES);
        let (s, _) = call(app.clone(), post_body("nope")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        let (s, b) = call(app.clone(), post_body(r#"{"namespace":"Bad_NS"}"#)).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(
            field_names(&b),
            vec!["alertname", "namespace", "description"]
        );
        let (s, _) = call(app.clone(), get_path("/api/v1/investigations/not-a-uuid")).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let (s, _) = call(
            app,
            get_path(&format!("/api/v1/investigations/{}", Uuid::new_v4())),
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn an_answered_investigation_is_kept_and_its_audit_waits_for_datastorage() {
        let st = state(&fake_llm("raise the memory limit").await).await;
        let app = router(st.clone());
        let (s, b) = call(app.clone(), post_body(r#"{"alertname":"KubePodOOMKilled","namespace":"shop","description":"OOMKilled","correlation_id":"c-1"}"#)).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(b["analysis"], "raise the memory limit");
        assert_eq!(b["model"], "unit-model");
        assert_eq!(b["correlation_id"], "c-1");
        let id = b["id"].as_str().unwrap().to_string();
        let (s, b) = call(
            app.clone(),
            get_path(&format!("/api/v1/investigations/{id}")),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(b["status"], "completed");
        assert_eq!(b["namespace"], "shop");
        assert!(b.get("error").is_none(), "{b}");
        // DataStorage is down: the audit event is held in the buffer, and /readyz says so.
        assert_eq!(st.audit.pending(), 1);
        let (s, b) = call(app.clone(), get_path("/readyz")).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(b["unavailable"], json!(["datastorage"]));
        assert_eq!(b["checks"]["llm"]["ok"], true);
        let (_, text) = call(app, get_path("/metrics")).await;
        assert!(
            text.as_str()
                .unwrap()
                .contains("holmesgpt_investigations_total{outcome=\"completed\"} 1"),
            "{text}"
        );
        st.audit.shutdown(Duration::from_millis(50)).await;
    }

    #[tokio::test]
    async fn llm_failures_are_502_and_recorded() {
        for llm in [
            fake_llm("").await,
            format!("http://{}", closed_addr().await),
        ] {
            let st = state(&llm).await;
            let app = router(st.clone());
            let (s, b) = call(
                app.clone(),
                post_body(r#"{"alertname":"a","namespace":"n","description":"d"}"#),
            )
            .await;
            assert_eq!(s, StatusCode::BAD_GATEWAY, "{b}");
            assert_eq!(b["status"], "failed");
            let id = b["id"].as_str().unwrap();
            assert_eq!(b["correlation_id"], id, "the id is the correlation id");
            assert!(
                b["error"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("{llm}/v1/chat/completions")),
                "{b}"
            );
            let (_, rec) = call(app, get_path(&format!("/api/v1/investigations/{id}"))).await;
            assert_eq!(rec["status"], "failed");
            assert!(rec["error"].is_string());
            st.audit.shutdown(Duration::from_millis(50)).await;
        }
    }
}
