//! Gateway: receives signals, deduplicates them by fingerprint within a window using Redis,
//! audits every signal to DataStorage, and forwards first occurrences of critical signals to
//! Notification when `NOTIFICATION_URL` is set. Use [`start`] to run in-process.

pub mod api;
pub mod config;
pub mod dedup;
pub mod forward;
pub mod signal;

pub use config::Config;

use std::sync::Arc;
use std::time::Duration;
use svc_common::audit::AuditClient;
use svc_common::metrics::Registry;
use svc_common::redis_conn::LazyRedis;
use svc_common::service::Background;
use tokio_util::task::TaskTracker;

pub use svc_common::service::AUDIT_GRACE;

/// How long shutdown waits for forwards in progress.
pub const FORWARD_GRACE: Duration = Duration::from_secs(10);

/// A running Gateway: [`Running::shutdown`] stops accepting, finishes in-flight requests, waits
/// (bounded) for forwards and flushes audit events.
pub type Running = svc_common::service::Running;

/// Builds the state and binds the listener. Redis, DataStorage and Notification need not be up.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let registry = Registry::new();
    let redis = LazyRedis::new(&config.redis_url, Duration::from_secs(2))
        .map_err(|e| anyhow::anyhow!("REDIS_URL: {e}"))?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| anyhow::anyhow!("cannot build the HTTP client: {e}"))?;
    let audit = AuditClient::start(config.audit.clone(), &registry);
    let state = api::AppState {
        dedup: Arc::new(dedup::Dedup::new(redis, config.dedup_window)),
        audit,
        registry,
        http,
        datastorage_url: config.datastorage_url.clone(),
        notification_url: config.notification_url.clone(),
        tasks: TaskTracker::new(),
        forward_backoff: forward::default_backoff(),
    };
    let background = Background {
        tasks: state.tasks.clone(),
        what: "forwards",
        grace: FORWARD_GRACE,
    };
    let router = api::router(state.clone());
    let running = Running::bind(
        "gateway",
        config.listen_addr,
        router,
        background,
        state.audit,
    )
    .await?;
    tracing::info!(
        addr = %running.addr(),
        forwarding = config.notification_url.as_deref().unwrap_or("off"),
        window_s = config.dedup_window.as_secs(),
        "gateway listening"
    );
    Ok(running)
}

/// Runs until `shutdown` completes, then stops gracefully.
pub async fn serve(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let running = start(config).await?;
    shutdown.await;
    running.shutdown().await
}
