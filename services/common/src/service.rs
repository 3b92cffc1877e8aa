//! A running service that has background tasks and an audit client (Notification, Gateway),
//! and its graceful stop.

use crate::audit::AuditClient;
use crate::http::Server;
use axum::Router;
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::task::TaskTracker;

/// How long shutdown tries to flush audit events.
pub const AUDIT_GRACE: Duration = Duration::from_secs(5);

/// Background tasks (deliveries, forwards) that shutdown waits for, up to a grace period.
#[derive(Debug, Clone)]
pub struct Background {
    /// The tasks. Shutdown closes the tracker, so handlers can tell that it has begun.
    pub tasks: TaskTracker,
    /// What they are, for the log line about those abandoned: e.g. `deliveries`.
    pub what: &'static str,
    /// How long shutdown waits for them.
    pub grace: Duration,
}

/// A running service: its HTTP server, its background tasks and its audit client.
pub struct Running {
    name: &'static str,
    server: Server,
    background: Background,
    audit: AuditClient,
}

impl Running {
    /// Serves `router` on `addr`. When the address cannot be bound, the audit client is stopped
    /// at once and the error is returned.
    pub async fn bind(
        name: &'static str,
        addr: SocketAddr,
        router: Router,
        background: Background,
        audit: AuditClient,
    ) -> anyhow::Result<Running> {
        match Server::bind(addr, router).await {
            Ok(server) => Ok(Running {
                name,
                server,
                background,
                audit,
            }),
            Err(e) => {
                audit.shutdown(Duration::ZERO).await;
                Err(e)
            }
        }
    }

    /// Address of the API.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Audit events not yet acknowledged by DataStorage.
    pub fn audit_pending(&self) -> usize {
        self.audit.pending()
    }

    /// Graceful stop: stop accepting, finish in-flight requests, wait (bounded) for the
    /// background tasks, flush audit events (for up to [`AUDIT_GRACE`]).
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let served = self.server.shutdown().await;
        let Background { tasks, what, grace } = &self.background;
        tasks.close();
        if tokio::time::timeout(*grace, tasks.wait()).await.is_err() {
            tracing::error!(
                abandoned = tasks.len(),
                "{what} still in progress after the grace period are abandoned"
            );
        }
        self.audit.shutdown(AUDIT_GRACE).await;
        served?;
        tracing::info!("{} stopped", self.name);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditClientConfig, AuditEvent, AuditOutcome};
    use crate::backoff::Backoff;
    use crate::metrics::Registry;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Instant;

    fn audit() -> AuditClient {
        let config = AuditClientConfig {
            datastorage_url: "http://127.0.0.1:9".to_string(),
            capacity: 10,
            batch_size: 10,
            flush_interval: Duration::from_millis(10),
            backoff: Backoff::new(Duration::from_millis(10), Duration::from_millis(10)),
            request_timeout: Duration::from_secs(1),
        };
        AuditClient::start(config, &Registry::new())
    }

    fn background(grace: Duration) -> Background {
        Background {
            tasks: TaskTracker::new(),
            what: "jobs",
            grace,
        }
    }

    async fn bind(background: Background) -> Running {
        let addr = SocketAddr::from(([127, 0, 0, 1], 0));
        Running::bind("svc", addr, Router::new(), background, audit())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn shutdown_waits_for_background_tasks() {
        let bg = background(Duration::from_secs(5));
        let running = bind(bg.clone()).await;
        assert_ne!(running.addr().port(), 0);
        assert_eq!(running.audit_pending(), 0);
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        bg.tasks.spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            flag.store(true, Ordering::SeqCst);
        });
        running.shutdown().await.unwrap();
        assert!(done.load(Ordering::SeqCst), "the task was waited for");
        assert!(bg.tasks.is_closed(), "handlers can tell shutdown began");
    }

    #[tokio::test]
    async fn tasks_past_the_grace_period_are_abandoned() {
        let bg = background(Duration::from_millis(50));
        let running = bind(bg.clone()).await;
        bg.tasks.spawn(tokio::time::sleep(Duration::from_secs(60)));
        let started = Instant::now();
        running.shutdown().await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn a_busy_address_is_an_error_and_stops_the_audit_client() {
        let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = audit();
        let bound = Running::bind(
            "svc",
            taken.local_addr().unwrap(),
            Router::new(),
            background(Duration::ZERO),
            client.clone(),
        )
        .await;
        let err = bound.err().expect("the address is in use").to_string();
        assert!(err.contains("cannot listen on"), "{err}");
        let event = AuditEvent::new("t", "c", "a", AuditOutcome::Success, "x");
        assert!(!client.record(event), "the audit client was stopped");
    }
}
