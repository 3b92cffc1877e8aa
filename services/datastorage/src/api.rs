//! HTTP routes of DataStorage.
//!
//! | route | answer |
//! |---|---|
//! | `GET /healthz` | 200 `{"status":"ok"}` |
//! | `GET /readyz` | 200 when PostgreSQL (`SELECT 1`) and Redis (`PING`, only when `REDIS_URL` is set) answer, else 503 naming them |
//! | `GET /metrics` | Prometheus text |
//! | `POST /api/v1/audit/events` | one event: 201 stored, 202 queued, 400, 413, 503 |
//! | `POST /api/v1/audit/events/batch` | a JSON array of events: same statuses, all or nothing |
//! | `GET /api/v1/audit/events?correlation_id=&event_type=&limit=` | newest first |

use crate::store::{Query, Store, WriteOutcome};
use crate::validate::{validate_batch, validate_event};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use std::sync::Arc;
use svc_common::audit::AuditEvent;
use svc_common::http::{self as h, ApiError, Check};
use svc_common::metrics::{Counter, Registry};

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// Storage.
    pub store: Arc<Store>,
    /// Metrics registry.
    pub registry: Registry,
    /// `MAX_BODY_BYTES`.
    pub max_body_bytes: usize,
    /// `QUERY_LIMIT_MAX`.
    pub query_limit_max: u32,
    /// Events refused by validation.
    pub rejected: Counter,
}

impl AppState {
    /// State over a store.
    pub fn new(
        store: Arc<Store>,
        registry: Registry,
        max_body_bytes: usize,
        query_limit_max: u32,
    ) -> Self {
        let rejected = registry.counter(
            "datastorage_events_rejected_total",
            "Requests with invalid audit events (answered 400).",
            &[],
        );
        AppState {
            store,
            registry,
            max_body_bytes,
            query_limit_max,
            rejected,
        }
    }
}

/// The API router (also serves `/metrics`).
pub fn router(state: AppState) -> Router {
    let registry = state.registry.clone();
    let limit = state.max_body_bytes;
    let api = Router::new()
        .route("/readyz", get(readyz))
        .route("/api/v1/audit/events", post(create_event).get(list_events))
        .route("/api/v1/audit/events/batch", post(create_batch))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state);
    h::service_router(api, registry)
}

/// The router of the metrics port: `/metrics` and `/healthz` only.
pub fn metrics_router(state: AppState) -> Router {
    h::service_router(Router::new(), state.registry)
}

async fn readyz(State(s): State<AppState>) -> Response {
    let (pg, redis) = tokio::join!(s.store.check_postgres(), s.store.check_redis());
    let mut checks = vec![Check {
        name: "postgres",
        error: pg.err(),
    }];
    if let Some(redis) = redis {
        checks.push(Check {
            name: "redis",
            error: redis.err(),
        });
    }
    h::ready_response(&checks)
}

fn write_response(
    outcome: Result<WriteOutcome, String>,
    events: &[AuditEvent],
    single: bool,
) -> Response {
    let ids: Vec<String> = events.iter().map(|e| e.event_id.to_string()).collect();
    let (status, word) = match outcome {
        Ok(WriteOutcome::Stored { .. }) => (StatusCode::CREATED, "stored"),
        Ok(WriteOutcome::Queued { .. }) => (StatusCode::ACCEPTED, "queued"),
        Err(e) => {
            return ApiError::unavailable(format!("the events were NOT stored: {e}; retry later"))
                .into_response();
        }
    };
    let body = if single {
        json!({ "status": word, "event_id": ids.first() })
    } else {
        json!({ "status": word, "count": ids.len(), "event_ids": ids })
    };
    (status, Json(body)).into_response()
}

async fn create_event(
    State(s): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let event = h::validated_json(body, s.max_body_bytes, |v| {
        validate_event(v, "").inspect_err(|_| s.rejected.inc())
    })?;
    let events = [event];
    Ok(write_response(s.store.write(&events).await, &events, true))
}

async fn create_batch(
    State(s): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let events = h::validated_json(body, s.max_body_bytes, |v| {
        validate_batch(v).inspect_err(|_| s.rejected.inc())
    })?;
    Ok(write_response(s.store.write(&events).await, &events, false))
}

/// Parses the query string of `GET /api/v1/audit/events`.
pub fn parse_query(raw: Option<&str>, limit_max: u32) -> Result<Query, ApiError> {
    let mut q = Query {
        correlation_id: None,
        event_type: None,
        limit: 100.min(limit_max),
    };
    let mut errors = Vec::new();
    let pairs: Vec<(String, String)> = match raw {
        None | Some("") => Vec::new(),
        Some(raw) => serde_urlencoded_pairs(raw)?,
    };
    for (key, value) in pairs {
        match key.as_str() {
            "correlation_id" if !value.is_empty() => q.correlation_id = Some(value),
            "event_type" if !value.is_empty() => q.event_type = Some(value),
            "correlation_id" | "event_type" => {}
            "limit" => match value.parse::<u32>() {
                Ok(n) if (1..=limit_max).contains(&n) => q.limit = n,
                _ => errors.push(h::FieldError::new(
                    "limit",
                    format!(
                        "{value:?} is not allowed; expected a whole number from 1 to {limit_max}"
                    ),
                )),
            },
            other => errors.push(h::FieldError::new(
                other,
                "unknown query parameter; allowed: correlation_id, event_type, limit",
            )),
        }
    }
    if errors.is_empty() {
        Ok(q)
    } else {
        Err(ApiError::validation(errors))
    }
}

fn serde_urlencoded_pairs(raw: &str) -> Result<Vec<(String, String)>, ApiError> {
    axum::extract::Query::<Vec<(String, String)>>::try_from_uri(
        &format!("/?{raw}")
            .parse()
            .map_err(|_| ApiError::bad_request("the query string is not valid"))?,
    )
    .map(|q| q.0)
    .map_err(|e| ApiError::bad_request(format!("the query string is not valid: {}", e.body_text())))
}

async fn list_events(State(s): State<AppState>, RawQuery(raw): RawQuery) -> Response {
    let q = match parse_query(raw.as_deref(), s.query_limit_max) {
        Ok(q) => q,
        Err(e) => return e.into_response(),
    };
    match s.store.query(&q).await {
        Ok(events) => Json(json!({ "count": events.len(), "events": events })).into_response(),
        Err(e) => ApiError::unavailable(format!("cannot query audit events: {e}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use axum::body::Body;
    use axum::http::Request;
    use svc_common::testing::{call, closed_addr, field_names};

    /// A router whose PostgreSQL and Redis point at a closed port: enough for everything that
    /// fails before storage, and for checking that nothing is acknowledged without storage.
    async fn app() -> Router {
        app_with(true).await
    }

    /// Like [`app`]; without Redis when `redis` is false (no `REDIS_URL`).
    async fn app_with(redis: bool) -> Router {
        let port = closed_addr().await.port();
        let database_url = format!("postgres://u:p@127.0.0.1:{port}/db");
        let redis_url = format!("redis://127.0.0.1:{port}");
        let mut pairs = vec![
            ("DATABASE_URL", database_url.as_str()),
            ("MAX_BODY_BYTES", "2048"),
            ("QUERY_LIMIT_MAX", "50"),
        ];
        if redis {
            pairs.push(("REDIS_URL", redis_url.as_str()));
        }
        let env = svc_common::Env::from_pairs(&pairs);
        let config = env.load(Config::read).unwrap();
        let registry = Registry::new();
        let store = Arc::new(Store::new(&config, &registry).unwrap());
        router(AppState::new(
            store,
            registry,
            config.max_body_bytes,
            config.query_limit_max,
        ))
    }

    fn post(path: &str, body: impl Into<Body>) -> Request<Body> {
        Request::post(path)
            .header("content-type", "application/json")
            .body(body.into())
            .unwrap()
    }

    #[tokio::test]
    async fn unknown_route_and_wrong_method() {
        let (s, b) = call(
            app().await,
            Request::get("/api/v1/nothing").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert_eq!(b["error"], "no such route");
        let (s, b) = call(
            app().await,
            Request::delete("/api/v1/audit/events")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
        assert!(b["error"].as_str().unwrap().contains("DELETE"));
        let (s, _) = call(
            app().await,
            Request::get("/api/v1/audit/events/batch")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[tokio::test]
    async fn oversized_body_is_413_naming_the_limit() {
        let big = format!("{{\"event_type\":\"{}\"}}", "x".repeat(4096));
        let (s, b) = call(app().await, post("/api/v1/audit/events", big)).await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(b["limit_bytes"], 2048);
        assert!(b["error"].as_str().unwrap().contains("2048 bytes"));
    }

    #[tokio::test]
    async fn bad_json_and_validation_errors() {
        let (s, b) = call(
            app().await,
            post("/api/v1/audit/events", "{\"event_type\": "),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(b["error"].as_str().unwrap().contains("not valid JSON"));

        let (s, b) = call(
            app().await,
            post(
                "/api/v1/audit/events",
                r#"{"event_type":"t","event_outcome":"ok","event_data":[]}"#,
            ),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(b["error"], "validation failed");
        assert_eq!(
            field_names(&b),
            vec![
                "event_category",
                "event_action",
                "correlation_id",
                "event_outcome",
                "event_data"
            ]
        );

        let (s, b) = call(
            app().await,
            post("/api/v1/audit/events/batch", r#"{"events":[]}"#),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(b["fields"][0]["field"], "request body");
    }

    #[tokio::test]
    async fn nothing_is_acknowledged_when_neither_store_answers() {
        let ev = r#"{"event_type":"t","event_category":"c","event_action":"a","event_outcome":"success","correlation_id":"x"}"#;
        let (s, b) = call(app().await, post("/api/v1/audit/events", ev)).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert!(b["error"].as_str().unwrap().contains("NOT stored"), "{b}");
        let (s, _) = call(
            app().await,
            post("/api/v1/audit/events/batch", format!("[{ev}]")),
        )
        .await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn readyz_names_both_dependencies_when_down() {
        let (s, b) = call(
            app().await,
            Request::get("/readyz").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(b["unavailable"], json!(["postgres", "redis"]));
        let (s, b) = call(
            app().await,
            Request::get("/healthz").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(b["status"], "ok");
    }

    #[tokio::test]
    async fn without_redis_readyz_asks_postgres_only_and_nothing_is_queued() {
        let app = app_with(false).await;
        let (s, b) = call(
            app.clone(),
            Request::get("/readyz").body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(b["unavailable"], json!(["postgres"]));
        assert!(b["checks"].get("redis").is_none(), "{b}");
        let ev = r#"{"event_type":"t","event_category":"c","event_action":"a","event_outcome":"success","correlation_id":"x"}"#;
        let (s, b) = call(app, post("/api/v1/audit/events", ev)).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        let error = b["error"].as_str().unwrap();
        assert!(error.contains("NOT stored"), "{b}");
        assert!(
            error.contains("the dead-letter queue is disabled (REDIS_URL is not set)"),
            "{b}"
        );
    }

    #[tokio::test]
    async fn metrics_are_prometheus_text() {
        let a = app().await;
        let _ = call(
            a.clone(),
            Request::get("/healthz").body(Body::empty()).unwrap(),
        )
        .await;
        let (s, b) = call(a, Request::get("/metrics").body(Body::empty()).unwrap()).await;
        assert_eq!(s, StatusCode::OK);
        let text = b.as_str().unwrap();
        assert!(
            text.contains("# TYPE datastorage_dlq_depth gauge"),
            "{text}"
        );
        assert!(
            text.contains("datastorage_events_written_total{path=\"direct\"} 0"),
            "{text}"
        );
        assert!(
            text.contains(
                "http_requests_total{route=\"/healthz\",method=\"GET\",status=\"200\"} 1"
            ),
            "{text}"
        );
    }

    #[test]
    fn query_parameters() {
        let q = parse_query(None, 1000).unwrap();
        assert_eq!((q.limit, q.correlation_id, q.event_type), (100, None, None));
        let q = parse_query(Some("correlation_id=a%20b&event_type=x.y&limit=7"), 1000).unwrap();
        assert_eq!(q.correlation_id.as_deref(), Some("a b"));
        assert_eq!(q.event_type.as_deref(), Some("x.y"));
        assert_eq!(q.limit, 7);
        assert_eq!(parse_query(Some("limit=1000"), 1000).unwrap().limit, 1000);
        assert_eq!(parse_query(None, 10).unwrap().limit, 10);
        assert_eq!(
            parse_query(Some("correlation_id="), 10)
                .unwrap()
                .correlation_id,
            None
        );
        for bad in [
            "limit=1001",
            "limit=0",
            "limit=-1",
            "limit=ten",
            "limit=",
            "limit=1.5",
        ] {
            let e = parse_query(Some(bad), 1000).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
            assert_eq!(e.body["fields"][0]["field"], "limit", "{bad}");
            assert!(e.body["fields"][0]["message"]
                .as_str()
                .unwrap()
                .contains("1 to 1000"));
        }
        let e = parse_query(Some("corelation_id=x&limit=0"), 1000).unwrap_err();
        assert_eq!(field_names(&e.body), vec!["corelation_id", "limit"]);
    }
}
