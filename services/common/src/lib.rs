//! Shared plumbing for the services: configuration from the environment, logging, shutdown,
//! retry backoff, Prometheus-text metrics, JSON error responses and the audit client.

pub mod audit;
pub mod backoff;
pub mod config;
pub mod http;
pub mod logging;
pub mod metrics;
#[cfg(feature = "redis")]
pub mod redis_conn;
pub mod shutdown;
#[cfg(feature = "test-util")]
pub mod testing;

pub use audit::{AuditClient, AuditClientConfig, AuditEvent, AuditOutcome};
pub use backoff::Backoff;
pub use config::{ConfigError, ConfigErrors, Env};
pub use metrics::Registry;
