//! HTTP helpers shared by the services: JSON error bodies, body parsing and validation with clear
//! messages, 404/405 fallbacks, request metrics, `/healthz`, `/readyz` and `/metrics` responses,
//! and a server handle for running a router in-process.

use crate::metrics::Registry;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Value};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Instant;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A problem with one field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The field, e.g. `event_outcome` or `recipients[2]`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    /// A field error.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An error answered as a JSON body `{"error": ..., ...}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// JSON body; always an object with at least `error`.
    pub body: Value,
}

impl ApiError {
    /// Any status with a message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: json!({ "error": message.into() }),
        }
    }
    /// 400 with a message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    /// 400 `{"error":"validation failed","fields":[...]}`.
    pub fn validation(fields: Vec<FieldError>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            body: json!({ "error": "validation failed", "fields": fields }),
        }
    }
    /// 404 with a message.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    /// 503 with a message.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }
    /// 413 naming the limit.
    pub fn too_large(limit: usize) -> Self {
        ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            body: json!({
                "error": format!("request body is larger than the limit of {limit} bytes"),
                "limit_bytes": limit,
            }),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// Parses a request body as JSON. Use `Result<Bytes, BytesRejection>` as the handler's
/// extractor so a body over the `DefaultBodyLimit` becomes a 413 naming `limit`.
pub fn parse_json_body(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<Value, ApiError> {
    let bytes = match body {
        Ok(b) => b,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Err(ApiError::too_large(limit))
        }
        Err(rejection) => {
            return Err(ApiError::new(
                rejection.status(),
                format!("cannot read request body: {}", rejection.body_text()),
            ))
        }
    };
    if bytes.is_empty() {
        return Err(ApiError::bad_request(
            "request body is empty; expected JSON",
        ));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("request body is not valid JSON: {e}")))
}

/// Parses a request body as JSON (see [`parse_json_body`]) and validates it with `validate`;
/// invalid input is a 400 `{"error":"validation failed","fields":[...]}`.
pub fn validated_json<T>(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
    validate: impl FnOnce(&Value) -> Result<T, Vec<FieldError>>,
) -> Result<T, ApiError> {
    let value = parse_json_body(body, limit)?;
    validate(&value).map_err(ApiError::validation)
}

/// Fallback for unknown routes: 404 with a JSON body.
pub async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        body: json!({ "error": "no such route", "method": method.as_str(), "path": uri.path() }),
    }
}

/// Fallback for a known route with the wrong method: 405 with a JSON body.
pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        body: json!({
            "error": format!("method {method} is not allowed on {}", uri.path()),
            "method": method.as_str(),
            "path": uri.path(),
        }),
    }
}

/// Adds the JSON 404/405 fallbacks and the request metrics layer to a router.
pub fn finish_router(router: Router, registry: Registry) -> Router {
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            registry,
            track_requests,
        ))
}

/// A service's router: `routes` plus `GET /healthz` and `GET /metrics` (of `registry`), with
/// the fallbacks and request metrics of [`finish_router`].
pub fn service_router(routes: Router, registry: Registry) -> Router {
    let metrics = registry.clone();
    let routes = routes.route("/healthz", get(healthz)).route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move { metrics_response(&metrics) }
        }),
    );
    finish_router(routes, registry)
}

/// Middleware counting requests by route template, method and status in
/// `http_requests_total`, and logging each at debug level.
pub async fn track_requests(
    State(registry): State<Registry>,
    req: Request,
    next: Next,
) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().clone();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status();
    registry
        .counter(
            "http_requests_total",
            "HTTP requests by route template, method and status.",
            &[
                ("route", route.as_str()),
                ("method", method.as_str()),
                ("status", status.as_str()),
            ],
        )
        .inc();
    tracing::debug!(%method, route, status = status.as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "request");
    response
}

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /metrics` body for a registry.
pub fn metrics_response(registry: &Registry) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        registry.render(),
    )
        .into_response()
}

/// The result of checking one dependency for `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Dependency name, e.g. `postgres`.
    pub name: &'static str,
    /// `None` when reachable, otherwise why not.
    pub error: Option<String>,
}

/// 200 `{"status":"ready",...}` when every check passed, else 503 `{"status":"not ready",
/// "unavailable":[names],"checks":{name:{"ok":false,"error":...}}}`.
pub fn ready_response(checks: &[Check]) -> Response {
    let mut detail = serde_json::Map::new();
    let mut unavailable = Vec::new();
    for c in checks {
        match &c.error {
            None => {
                detail.insert(c.name.to_string(), json!({ "ok": true }));
            }
            Some(e) => {
                unavailable.push(c.name);
                detail.insert(c.name.to_string(), json!({ "ok": false, "error": e }));
            }
        }
    }
    if unavailable.is_empty() {
        (
            StatusCode::OK,
            Json(json!({ "status": "ready", "checks": detail })),
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "not ready", "unavailable": unavailable, "checks": detail })),
        )
            .into_response()
    }
}

/// Checks that `GET {base}/healthz` answers 2xx within the client's timeout.
pub async fn check_http_health(client: &reqwest::Client, name: &'static str, base: &str) -> Check {
    let error = match client.get(format!("{base}/healthz")).send().await {
        Ok(r) if r.status().is_success() => None,
        Ok(r) => Some(format!("GET {base}/healthz answered {}", r.status())),
        Err(e) => Some(format!("GET {base}/healthz failed: {}", error_chain(&e))),
    };
    Check { name, error }
}

/// An error and its sources on one line: `a: b: c`.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// An HTTP server running on a task, stopped gracefully by [`Server::shutdown`].
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Binds `addr` and serves `router` until shutdown. Binding errors name the address.
    pub async fn bind(addr: SocketAddr, router: Router) -> anyhow::Result<Server> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        Ok(Self::serve(listener, router))
    }

    /// Serves `router` on an already bound listener.
    pub fn serve(listener: TcpListener, router: Router) -> Server {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await
        });
        Server { addr, stop, task }
    }

    /// The bound address (with the real port when bound to port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections and waits for in-flight requests to finish.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        match self.task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(anyhow::anyhow!("server on {} failed: {e}", self.addr)),
            Err(e) => Err(anyhow::anyhow!(
                "server task on {} panicked: {e}",
                self.addr
            )),
        }
    }
}

/// Runs `fut` with a timeout, turning the elapsed case into an error message naming `what`.
pub async fn with_timeout<T, E: std::fmt::Display>(
    what: &str,
    timeout: std::time::Duration,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!(
            "{what}: no answer within {} ms",
            timeout.as_millis()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::extract::DefaultBodyLimit;
    use axum::routing::post;
    use tower::ServiceExt;

    async fn echo(body: Result<Bytes, BytesRejection>) -> Result<Json<Value>, ApiError> {
        parse_json_body(body, 16).map(Json)
    }

    fn app() -> Router {
        finish_router(
            Router::new()
                .route("/echo", post(echo))
                .layer(DefaultBodyLimit::max(16)),
            Registry::new(),
        )
    }

    async fn call(req: Request<Body>) -> (StatusCode, Value) {
        let res = app().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn json_errors_for_404_405_413_and_bad_json() {
        let (s, b) = call(Request::get("/nope").body(Body::empty()).unwrap()).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert_eq!(b["path"], "/nope");

        let (s, b) = call(Request::get("/echo").body(Body::empty()).unwrap()).await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(b["method"], "GET");

        let (s, b) = call(
            Request::post("/echo")
                .body(Body::from("[1,2,3,4,5,6,7,8,9,10]"))
                .unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(b["limit_bytes"], 16);

        let (s, b) = call(Request::post("/echo").body(Body::from("{oops")).unwrap()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(
            b["error"].as_str().unwrap().contains("not valid JSON"),
            "{b}"
        );

        let (s, b) = call(Request::post("/echo").body(Body::empty()).unwrap()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(b["error"].as_str().unwrap().contains("empty"));

        let (s, b) = call(
            Request::post("/echo")
                .body(Body::from("{\"a\":1}"))
                .unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(b["a"], 1);
    }

    #[tokio::test]
    async fn requests_are_counted_by_route_template() {
        let registry = Registry::new();
        let app = finish_router(Router::new().route("/echo", post(echo)), registry.clone());
        let _ = app
            .clone()
            .oneshot(Request::post("/echo").body(Body::from("{}")).unwrap())
            .await
            .unwrap();
        let _ = app
            .oneshot(Request::get("/zzz").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let text = registry.render();
        assert!(
            text.contains("http_requests_total{route=\"/echo\",method=\"POST\",status=\"200\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "http_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"} 1"
            ),
            "{text}"
        );
    }

    #[tokio::test]
    async fn service_routers_answer_health_and_metrics_and_validate_bodies() {
        async fn create(body: Result<Bytes, BytesRejection>) -> Result<Json<Value>, ApiError> {
            let name = validated_json(body, 64, |v| match v["name"].as_str() {
                Some(n) => Ok(n.to_string()),
                None => Err(vec![FieldError::new("name", "is required")]),
            })?;
            Ok(Json(json!({ "name": name })))
        }
        let registry = Registry::new();
        let app = service_router(Router::new().route("/x", post(create)), registry.clone());
        let send = |req: Request<Body>| {
            let app = app.clone();
            async move {
                let res = app.oneshot(req).await.unwrap();
                let status = res.status();
                let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
                    .await
                    .unwrap();
                (status, String::from_utf8_lossy(&bytes).into_owned())
            }
        };
        let post_x = |body: &'static str| Request::post("/x").body(Body::from(body)).unwrap();

        let (s, b) = send(Request::get("/healthz").body(Body::empty()).unwrap()).await;
        assert_eq!((s, b.as_str()), (StatusCode::OK, r#"{"status":"ok"}"#));
        let (s, b) = send(post_x(r#"{"name":"a"}"#)).await;
        assert_eq!((s, b.as_str()), (StatusCode::OK, r#"{"name":"a"}"#));
        let (s, b) = send(post_x("{}")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        let v: Value = serde_json::from_str(&b).unwrap();
        assert_eq!(
            v,
            json!({"error": "validation failed", "fields": [{"field": "name", "message": "is required"}]})
        );
        let (s, b) = send(post_x("{oops")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(b.contains("not valid JSON"), "{b}");

        let (s, text) = send(Request::get("/metrics").body(Body::empty()).unwrap()).await;
        assert_eq!(s, StatusCode::OK);
        assert!(
            text.contains(
                "http_requests_total{route=\"/healthz\",method=\"GET\",status=\"200\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("http_requests_total{route=\"/x\",method=\"POST\",status=\"400\"} 2"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn readiness_names_what_is_down() {
        let res = ready_response(&[
            Check {
                name: "postgres",
                error: None,
            },
            Check {
                name: "redis",
                error: Some("refused".into()),
            },
        ]);
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["unavailable"], json!(["redis"]));
        assert_eq!(v["checks"]["redis"]["error"], "refused");
        assert_eq!(v["checks"]["postgres"]["ok"], true);
        let ok = ready_response(&[Check {
            name: "postgres",
            error: None,
        }]);
        assert_eq!(ok.status(), StatusCode::OK);
    }
}
