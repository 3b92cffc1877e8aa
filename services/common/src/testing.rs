//! Test helpers (feature `test-util`): polling with a deadline, environment checks, HTTP calls
//! (to a router in-process or to a service over the network), audit queries over DataStorage
//! and PostgreSQL, and a TCP proxy that can be cut and restored, to make a real dependency
//! (PostgreSQL, Redis, DataStorage) unreachable for a service under test.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Forwards connections from a local port to `target`. While cut, open connections are closed
/// and new ones are accepted and closed at once (the client sees EOF, not a hang).
pub struct TcpProxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl TcpProxy {
    /// Starts a proxy on `127.0.0.1:0` to `target` (`host:port`).
    pub async fn start(target: &str) -> std::io::Result<TcpProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let up = Arc::new(AtomicBool::new(true));
        let (generation, _) = watch::channel(0u64);
        let target = target.to_string();
        let up2 = up.clone();
        let gen_tx = generation.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let mut cut = gen_tx.subscribe();
                let target = target.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Ok(TcpProxy {
            addr,
            up,
            generation,
            task,
        })
    }

    /// The local address clients should connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every open connection and refuses new ones until [`TcpProxy::restore`].
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

/// The value of a required environment variable of a test; panics with a message naming it
/// and how the tests are meant to be run (`how`, e.g. "`cargo xtask integration gateway`").
pub fn required_env(name: &str, how: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.trim().trim_end_matches('/').to_string(),
        _ => panic!("{name} is not set: run these tests with {how}, which provides it"),
    }
}

/// Polls `check` every 100 ms until it returns `Some`, panicking after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: std::time::Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if std::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Variables for a service started in-process: `pairs`, with `extra` added over them.
pub fn env_map(pairs: &[(&str, &str)], extra: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .chain(extra)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A local address that nothing listens on (bound to a free port, then released): connections
/// to it are refused.
pub async fn closed_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address")
}

/// Sends `req` to `app` in-process: the status and the body as JSON (a body that is not JSON,
/// such as `/metrics`, as a JSON string).
pub async fn call(app: axum::Router, req: Request<Body>) -> (StatusCode, Value) {
    use tower::ServiceExt;
    let res = app.oneshot(req).await.expect("the router answers");
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .expect("a body of at most 1 MiB");
    let v = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, v)
}

/// The `field` of each entry of a validation error body's `fields`, in order.
pub fn field_names(body: &Value) -> Vec<&str> {
    body["fields"]
        .as_array()
        .unwrap_or_else(|| panic!("no \"fields\" array in {body}"))
        .iter()
        .map(|f| {
            f["field"]
                .as_str()
                .unwrap_or_else(|| panic!("a field without a name in {body}"))
        })
        .collect()
}

/// An HTTP client for tests (15 s timeout).
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(15))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// `POST {url}` with a JSON body: the status and the answer as JSON (null when it is not JSON).
/// Panics when nothing answers.
pub async fn post_json(url: &str, body: &Value) -> (u16, Value) {
    let res = http()
        .post(url)
        .json(body)
        .send()
        .await
        .expect("POST answers");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// `GET {url}`: the status and the answer as JSON (null when it is not JSON). Panics when
/// nothing answers.
pub async fn get_json(url: &str) -> (u16, Value) {
    let res = http().get(url).send().await.expect("GET answers");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// The body of `GET {url}` as text (e.g. `/metrics`). Panics when nothing answers.
pub async fn get_text(url: &str) -> String {
    http()
        .get(url)
        .send()
        .await
        .expect("GET answers")
        .text()
        .await
        .expect("a text body")
}

/// Waits until `GET {base}/readyz` answers 2xx.
pub async fn wait_ready(base: &str, timeout: std::time::Duration) {
    eventually(&format!("{base}/readyz to answer 200"), timeout, || async {
        let res = http().get(format!("{base}/readyz")).send().await.ok()?;
        res.status().is_success().then_some(())
    })
    .await;
}

/// Audit events of DataStorage at `base` with `correlation_id` and `event_type`, newest first;
/// empty when DataStorage does not answer 200.
pub async fn audit_events(
    base: &str,
    correlation_id: &str,
    event_type: &str,
) -> Vec<serde_json::Value> {
    let Ok(url) = reqwest::Url::parse_with_params(
        &format!("{base}/api/v1/audit/events"),
        &[
            ("correlation_id", correlation_id),
            ("event_type", event_type),
        ],
    ) else {
        return Vec::new();
    };
    let res = http().get(url).send().await;
    let Ok(res) = res else { return Vec::new() };
    if !res.status().is_success() {
        return Vec::new();
    }
    let body: serde_json::Value = res.json().await.unwrap_or_default();
    body["events"].as_array().cloned().unwrap_or_default()
}

/// Waits until DataStorage at `base` holds at least one such event and returns them.
pub async fn wait_for_audit(
    base: &str,
    correlation_id: &str,
    event_type: &str,
    timeout: std::time::Duration,
) -> Vec<serde_json::Value> {
    eventually(
        &format!("audit event {event_type} with correlation_id {correlation_id} in DataStorage at {base}"),
        timeout,
        || async {
            let events = audit_events(base, correlation_id, event_type).await;
            (!events.is_empty()).then_some(events)
        },
    )
    .await
}

/// The `event_type` of every row of `audit_events` with `correlation_id`, read straight from
/// the PostgreSQL of DataStorage at `postgres_url`.
pub async fn postgres_audit_event_types(postgres_url: &str, correlation_id: &str) -> Vec<String> {
    let (client, conn) = tokio_postgres::connect(postgres_url, tokio_postgres::NoTls)
        .await
        .expect("connect to POSTGRES_URL");
    tokio::spawn(conn);
    client
        .query(
            "SELECT event_type FROM audit_events WHERE correlation_id = $1",
            &[&correlation_id],
        )
        .await
        .expect("query audit_events")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// The host:port of a URL (default ports filled in).
pub fn host_port(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!(
            "{}:{}",
            u.host_str().unwrap_or("localhost"),
            u.port_or_known_default().unwrap_or(80)
        ),
        Err(_) => url.to_string(),
    }
}

/// `url` with its host and port replaced by the proxy's.
pub fn via_proxy(url: &str, proxy: &TcpProxy) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let _ = u.set_host(Some("127.0.0.1"));
            let _ = u.set_port(Some(proxy.addr().port()));
            u.to_string().trim_end_matches('/').to_string()
        }
        Err(_) => url.to_string(),
    }
}
