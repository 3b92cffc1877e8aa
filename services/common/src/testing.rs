//! Test helpers (feature `test-util`): polling with a deadline, environment checks, DataStorage
//! audit queries, and a TCP proxy that can be cut and restored, to make a
//! real dependency (PostgreSQL, DataStorage) unreachable for a service under test.

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

/// An HTTP client for tests (15 s timeout).
pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(15))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
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
