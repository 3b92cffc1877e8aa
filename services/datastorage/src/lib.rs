//! DataStorage: an HTTP API over PostgreSQL for audit events, with a Redis dead-letter queue so
//! that an event acknowledged with 2xx is never lost while PostgreSQL is down. Redis is
//! optional: without `REDIS_URL` the queue is disabled and such writes are answered 503.
//!
//! Use [`start`] to run it in-process (tests bind `127.0.0.1:0` and read the real addresses
//! from [`Running`]); `main.rs` adds signal handling and the `migrate` command.

pub mod api;
pub mod config;
pub mod dlq;
pub mod migrate;
pub mod store;
pub mod validate;

pub use config::Config;

use std::net::SocketAddr;
use std::sync::Arc;
use svc_common::http::Server;
use svc_common::metrics::Registry;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running DataStorage.
pub struct Running {
    api: Server,
    metrics: Server,
    stop_dlq: watch::Sender<bool>,
    /// The DLQ worker; `None` when the queue is disabled.
    dlq: Option<JoinHandle<()>>,
    store: Arc<store::Store>,
}

impl Running {
    /// Address of the API.
    pub fn addr(&self) -> SocketAddr {
        self.api.addr()
    }

    /// Address of the metrics port.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics.addr()
    }

    /// The store (tests use it to look at the dead-letter queue).
    pub fn store(&self) -> &Arc<store::Store> {
        &self.store
    }

    /// Graceful stop: no new connections, in-flight requests finish, the DLQ worker stops
    /// between rounds (queued entries stay in Redis for the next start).
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let api = self.api.shutdown().await;
        let metrics = self.metrics.shutdown().await;
        let _ = self.stop_dlq.send(true);
        if let Some(dlq) = self.dlq {
            let _ = dlq.await;
        }
        api?;
        metrics?;
        tracing::info!("datastorage stopped");
        Ok(())
    }
}

/// Builds the state and binds both listeners. Does not wait for PostgreSQL or Redis: they are
/// connected on first use, and `/readyz` tells whether they answer. Without `REDIS_URL` no
/// DLQ worker runs.
pub async fn start(config: Config) -> anyhow::Result<Running> {
    let registry = Registry::new();
    let store = Arc::new(store::Store::new(&config, &registry)?);
    let state = api::AppState::new(
        store.clone(),
        registry,
        config.max_body_bytes,
        config.query_limit_max,
    );
    let api = Server::bind(config.listen_addr, api::router(state.clone())).await?;
    let metrics = match Server::bind(config.metrics_addr, api::metrics_router(state)).await {
        Ok(m) => m,
        Err(e) => {
            let _ = api.shutdown().await;
            return Err(e);
        }
    };
    let (stop_dlq, stop_rx) = watch::channel(false);
    let dlq = if store.redis().is_some() {
        Some(tokio::spawn(dlq::run(
            store.clone(),
            config.dlq_retry_interval,
            stop_rx,
        )))
    } else {
        tracing::warn!("REDIS_URL is not set: the dead-letter queue is disabled; writes are answered 503 while PostgreSQL is down");
        None
    };
    tracing::info!(addr = %api.addr(), metrics_addr = %metrics.addr(), dlq = dlq.is_some(), "datastorage listening");
    Ok(Running {
        api,
        metrics,
        stop_dlq,
        dlq,
        store,
    })
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
