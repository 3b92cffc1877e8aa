//! Gateway: receives signals, deduplicates them by fingerprint within a window using Redis,
//! audits every signal to DataStorage, and forwards first occurrences of critical signals to
//! Notification when `NOTIFICATION_URL` is set. Use [`start`] to run in-process.

pub mod api;
pub mod config;
pub mod dedup;
pub mod forward;
pub mod signal;

pub use config::Config;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use svc_common::audit::AuditClient;
use svc_common::http::Server;
use svc_common::metrics::Registry;
use svc_common::redis_conn::LazyRedis;
use tokio_util::task::TaskTracker;

/// How long shutdown waits for forwards in progress.
pub const FORWARD_GRACE: Duration = Duration::from_secs(10);
/// How long shutdown tries to flush audit events.
pub const AUDIT_GRACE: Duration = Duration::from_secs(5);

/// A running Gateway.
pub struct Running {
    server: Server,
    state: api::AppState,
}

impl Running {
    /// Address of the API.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Audit events not yet acknowledged by DataStorage.
    pub fn audit_pending(&self) -> usize {
        self.state.audit.pending()
    }

    /// Graceful stop: stop accepting, finish in-flight requests, wait (bounded) for forwards,
    /// flush audit events.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let served = self.server.shutdown().await;
        self.state.tasks.close();
        if tokio::time::timeout(FORWARD_GRACE, self.state.tasks.wait())
            .await
            .is_err()
        {
            tracing::error!(
                abandoned = self.state.tasks.len(),
                "forwards still in progress after the grace period are abandoned"
            );
        }
        self.state.audit.shutdown(AUDIT_GRACE).await;
        served?;
        tracing::info!("gateway stopped");
        Ok(())
    }
}

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
    let server = match Server::bind(config.listen_addr, api::router(state.clone())).await {
        Ok(s) => s,
        Err(e) => {
            state.audit.shutdown(Duration::ZERO).await;
            return Err(e);
        }
    };
    tracing::info!(
        addr = %server.addr(),
        forwarding = config.notification_url.as_deref().unwrap_or("off"),
        window_s = config.dedup_window.as_secs(),
        "gateway listening"
    );
    Ok(Running { server, state })
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
