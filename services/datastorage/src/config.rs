//! DataStorage settings from the environment.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use svc_common::config::{ConfigErrors, Env};

/// Example shown when `DATABASE_URL` is missing or wrong.
pub const DATABASE_URL_EXAMPLE: &str = "postgres://user:pass@host:5432/db";
/// Example shown when `REDIS_URL` is missing or wrong.
pub const REDIS_URL_EXAMPLE: &str = "redis://host:6379";

/// Everything DataStorage needs to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// API address (`LISTEN_ADDR`, default `0.0.0.0:8080`).
    pub listen_addr: SocketAddr,
    /// Metrics-only address (`METRICS_ADDR`, default `0.0.0.0:9090`).
    pub metrics_addr: SocketAddr,
    /// PostgreSQL (`DATABASE_URL`, required).
    pub database_url: String,
    /// Redis holding the dead-letter queue (`REDIS_URL`, optional). Without it there is no
    /// dead-letter queue: a write PostgreSQL refuses is answered 503, and `/readyz` does not
    /// ask Redis.
    pub redis_url: Option<String>,
    /// Folder of `NNNN_name.sql` files (`MIGRATIONS_DIR`, default `migrations`).
    pub migrations_dir: PathBuf,
    /// How often the dead-letter queue is retried (`DLQ_RETRY_INTERVAL_MS`, default 1000).
    pub dlq_retry_interval: Duration,
    /// Redis list of the dead-letter queue (`DLQ_REDIS_KEY`, default `datastorage:dlq`).
    pub dlq_key: String,
    /// Largest accepted request body (`MAX_BODY_BYTES`, default 1 MiB).
    pub max_body_bytes: usize,
    /// Largest `limit` of a query (`QUERY_LIMIT_MAX`, default 1000).
    pub query_limit_max: u32,
}

impl Config {
    /// Reads the variables; problems are recorded in `env`.
    pub fn read(env: &mut Env<'_>) -> Config {
        let database_url = env.required_url(
            "DATABASE_URL",
            &["postgres", "postgresql"],
            DATABASE_URL_EXAMPLE,
        );
        if !database_url.is_empty() {
            if let Err(e) = database_url.parse::<tokio_postgres::Config>() {
                env.error(
                    "DATABASE_URL",
                    format!("DATABASE_URL is not a valid PostgreSQL URL ({e}); expected {DATABASE_URL_EXAMPLE}"),
                );
            }
        }
        Config {
            listen_addr: env.socket_addr("LISTEN_ADDR", "0.0.0.0:8080"),
            metrics_addr: env.socket_addr("METRICS_ADDR", "0.0.0.0:9090"),
            database_url,
            redis_url: env.optional_url("REDIS_URL", &["redis"], REDIS_URL_EXAMPLE),
            migrations_dir: PathBuf::from(env.string("MIGRATIONS_DIR", "migrations")),
            dlq_retry_interval: env.millis_in("DLQ_RETRY_INTERVAL_MS", 1_000, 10..=3_600_000),
            dlq_key: env.string("DLQ_REDIS_KEY", "datastorage:dlq"),
            max_body_bytes: env.usize_in("MAX_BODY_BYTES", 1 << 20, 1_024..=(256 << 20)),
            query_limit_max: env.u64_in("QUERY_LIMIT_MAX", 1_000, 1..=100_000) as u32,
        }
    }

    /// From a map (tests).
    pub fn from_map(map: &HashMap<String, String>) -> Result<Config, ConfigErrors> {
        Env::from_map(map).load(Config::read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        svc_common::testing::env_map(pairs, &[])
    }

    #[test]
    fn defaults() {
        let c = Config::from_map(&map(&[
            ("DATABASE_URL", "postgres://u:p@db:5432/x"),
            ("REDIS_URL", "redis://r:6379"),
        ]))
        .unwrap();
        assert_eq!(c.listen_addr.to_string(), "0.0.0.0:8080");
        assert_eq!(c.metrics_addr.to_string(), "0.0.0.0:9090");
        assert_eq!(c.migrations_dir, PathBuf::from("migrations"));
        assert_eq!(c.dlq_retry_interval, Duration::from_secs(1));
        assert_eq!(c.max_body_bytes, 1 << 20);
        assert_eq!(c.query_limit_max, 1000);
        assert_eq!(c.dlq_key, "datastorage:dlq");
        assert_eq!(c.redis_url.as_deref(), Some("redis://r:6379"));
    }

    #[test]
    fn redis_is_optional() {
        let c = Config::from_map(&map(&[("DATABASE_URL", "postgres://u:p@db:5432/x")])).unwrap();
        assert_eq!(c.redis_url, None);
        let err = Config::from_map(&map(&[
            ("DATABASE_URL", "postgres://u:p@db:5432/x"),
            ("REDIS_URL", "http://r:6379"),
        ]))
        .unwrap_err();
        assert_eq!(err.variables(), vec!["REDIS_URL"]);
    }

    #[test]
    fn missing_database_url_is_named_with_an_example() {
        let err = Config::from_map(&map(&[])).unwrap_err();
        assert_eq!(err.variables(), vec!["DATABASE_URL"]);
        let text = err.to_string();
        assert!(
            text.contains("DATABASE_URL is not set; set it to postgres://user:pass@host:5432/db"),
            "{text}"
        );
    }

    #[test]
    fn bad_values_are_named() {
        let err = Config::from_map(&map(&[
            ("DATABASE_URL", "mysql://x/y"),
            ("REDIS_URL", "redis://r:6379"),
            ("QUERY_LIMIT_MAX", "lots"),
            ("MAX_BODY_BYTES", "10"),
            ("LISTEN_ADDR", ":8080"),
        ]))
        .unwrap_err();
        assert_eq!(
            err.variables(),
            vec![
                "DATABASE_URL",
                "LISTEN_ADDR",
                "MAX_BODY_BYTES",
                "QUERY_LIMIT_MAX"
            ]
        );
    }
}
