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

use std::sync::Arc;
use std::time::Duration;
use svc_common::audit::AuditClient;
use svc_common::metrics::Registry;
use svc_common::service::Background;
use tokio_util::task::TaskTracker;

pub use svc_common::service::AUDIT_GRACE;

/// How long shutdown waits for deliveries in progress.
pub const DELIVERY_GRACE: Duration = Duration::from_secs(15);

/// A running Notification service: [`Running::shutdown`] stops accepting, finishes in-flight
/// requests, waits (bounded) for deliveries in progress and flushes audit events.
pub type Running = svc_common::service::Running;

/// Builds the state and binds the listener. DataStorage need not be up: audit events wait in
/// the buffer, and `/readyz` reports it.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let registry = Registry::new();
    api::register_metrics(&registry);
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
    let background = Background {
        tasks: state.tasks.clone(),
        what: "deliveries",
        grace: DELIVERY_GRACE,
    };
    let router = api::router(state.clone());
    let running = Running::bind(
        "notification",
        config.listen_addr,
        router,
        background,
        state.audit,
    )
    .await?;
    tracing::info!(addr = %running.addr(), datastorage = %config.datastorage_url, "notification listening");
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
