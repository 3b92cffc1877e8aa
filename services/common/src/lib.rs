//! Shared plumbing for the services: their `main`, configuration from the environment, logging,
//! shutdown, retry backoff, Prometheus-text metrics, HTTP routing and JSON errors, request
//! validation, the audit client, and a running service's graceful stop.

pub mod audit;
pub mod backoff;
pub mod cli;
pub mod config;
pub mod http;
pub mod logging;
pub mod metrics;
#[cfg(feature = "redis")]
pub mod redis_conn;
pub mod service;
pub mod shutdown;
#[cfg(feature = "test-util")]
pub mod testing;
pub mod validate;

pub use audit::{AuditClient, AuditClientConfig, AuditEvent, AuditOutcome};
pub use backoff::Backoff;
pub use config::{ConfigError, ConfigErrors, Env};
pub use metrics::Registry;
