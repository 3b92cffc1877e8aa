//! Notification: accepts notifications over HTTP, delivers them in the background (console,
//! file or webhook) with bounded retries, and writes each final outcome to DataStorage as an
//! audit event (`notification.message.sent` / `notification.message.failed`).
//!
//! Notification state lives in memory (see [`model`]). Use [`start`] to run in-process.

pub mod api;
pub mod config;
pub mod deliver;
pub mod model;

pub use config::Config;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use svc_common::audit::AuditClient;
use svc_common::http::Server;
use svc_common::metrics::Registry;
use tokio_util::task::TaskTracker;

/// How long shutdown waits for deliveries in progress.
pub const DELIVERY_GRACE: Duration = Duration::from_secs(15);
/// How long shutdown tries to flush audit events.
pub const AUDIT_GRACE: Duration = Duration::from_secs(5);

/// A running Notification service.
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

    /// Graceful stop: stop accepting, finish in-flight requests, wait (bounded) for
    /// deliveries in progress, flush audit events.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let served = self.server.shutdown().await;
        self.state.tasks.close();
        if tokio::time::timeout(DELIVERY_GRACE, self.state.tasks.wait())
            .await
            .is_err()
        {
            tracing::error!(
                abandoned = self.state.tasks.len(),
                "deliveries still in progress after the grace period are abandoned"
            );
        }
        self.state.audit.shutdown(AUDIT_GRACE).await;
        served?;
        tracing::info!("notification stopped");
        Ok(())
    }
}

/// Builds the state and binds the listener. DataStorage need not be up: audit events wait in
/// the buffer, and `/readyz` reports it.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let registry = Registry::new();
    let audit = AuditClient::start(config.audit.clone(), &registry);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| anyhow::anyhow!("cannot build the HTTP client: {e}"))?;
    let state = api::AppState {
        records: Arc::new(model::Records::default()),
        deliverer: deliver::Deliverer::new(
            config.file_dir.clone(),
            config.max_attempts,
            config.backoff_initial,
        ),
        audit,
        registry,
        tasks: TaskTracker::new(),
        http,
        datastorage_url: config.datastorage_url.clone(),
    };
    let server = match Server::bind(config.listen_addr, api::router(state.clone())).await {
        Ok(s) => s,
        Err(e) => {
            state.audit.shutdown(Duration::ZERO).await;
            return Err(e);
        }
    };
    tracing::info!(addr = %server.addr(), datastorage = %config.datastorage_url, "notification listening");
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
