//! Gateway settings from the environment.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use svc_common::audit::AuditClientConfig;
use svc_common::config::{ConfigErrors, Env};

/// Everything Gateway needs to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// API address (`LISTEN_ADDR`, default `0.0.0.0:8080`).
    pub listen_addr: SocketAddr,
    /// Redis for deduplication (`REDIS_URL`, required).
    pub redis_url: String,
    /// DataStorage base URL (`DATASTORAGE_URL`, required).
    pub datastorage_url: String,
    /// Notification base URL (`NOTIFICATION_URL`, optional): critical signals are forwarded.
    pub notification_url: Option<String>,
    /// Deduplication window (`DEDUP_WINDOW_SECONDS`, default 300).
    pub dedup_window: Duration,
    /// Audit client settings (`AUDIT_*`).
    pub audit: AuditClientConfig,
}

impl Config {
    /// Reads the variables; problems are recorded in `env`.
    pub fn read(env: &mut Env<'_>) -> Config {
        let listen_addr = env.socket_addr("LISTEN_ADDR", "0.0.0.0:8080");
        let redis_url = env.required_url("REDIS_URL", &["redis"], "redis://host:6379");
        let datastorage_url = env.required_url(
            "DATASTORAGE_URL",
            &["http", "https"],
            "http://datastorage:8080",
        );
        let notification_url = env.optional_url(
            "NOTIFICATION_URL",
            &["http", "https"],
            "http://notification:8080",
        );
        Config {
            listen_addr,
            redis_url,
            notification_url,
            dedup_window: Duration::from_secs(env.u64_in(
                "DEDUP_WINDOW_SECONDS",
                300,
                1..=7 * 24 * 3600,
            )),
            audit: AuditClientConfig::read(env, datastorage_url.clone()),
            datastorage_url,
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
    fn defaults_and_optional_notification() {
        let c = Config::from_map(&map(&[
            ("REDIS_URL", "redis://r:6379"),
            ("DATASTORAGE_URL", "http://ds:8080"),
        ]))
        .unwrap();
        assert_eq!(c.notification_url, None);
        assert_eq!(c.dedup_window, Duration::from_secs(300));
        let c = Config::from_map(&map(&[
            ("REDIS_URL", "redis://r:6379"),
            ("DATASTORAGE_URL", "http://ds:8080"),
            ("NOTIFICATION_URL", "http://notification:8080/"),
            ("DEDUP_WINDOW_SECONDS", "2"),
        ]))
        .unwrap();
        assert_eq!(
            c.notification_url.as_deref(),
            Some("http://notification:8080")
        );
        assert_eq!(c.dedup_window, Duration::from_secs(2));
    }

    #[test]
    fn errors_name_the_variables() {
        let err = Config::from_map(&map(&[
            ("NOTIFICATION_URL", "notification:8080"),
            ("DEDUP_WINDOW_SECONDS", "0"),
        ]))
        .unwrap_err();
        assert_eq!(
            err.variables(),
            vec![
                "REDIS_URL",
                "DATASTORAGE_URL",
                "NOTIFICATION_URL",
                "DEDUP_WINDOW_SECONDS"
            ]
        );
    }
}
