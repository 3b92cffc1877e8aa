//! Notification settings from the environment.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use svc_common::audit::AuditClientConfig;
use svc_common::config::{ConfigErrors, Env};

/// Everything Notification needs to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// API address (`LISTEN_ADDR`, default `0.0.0.0:8080`).
    pub listen_addr: SocketAddr,
    /// DataStorage base URL (`DATASTORAGE_URL`, required).
    pub datastorage_url: String,
    /// Folder of the `file` channel (`NOTIFICATION_FILE_DIR`, default `/tmp/notifications`).
    pub file_dir: PathBuf,
    /// Delivery attempts before a notification fails (`DELIVERY_MAX_ATTEMPTS`, default 5).
    pub max_attempts: u32,
    /// Delay before the second attempt, doubled each time (`DELIVERY_BACKOFF_MS`, default 200).
    pub backoff_initial: Duration,
    /// Audit client settings (`AUDIT_*`).
    pub audit: AuditClientConfig,
}

impl Config {
    /// Reads the variables; problems are recorded in `env`.
    pub fn read(env: &mut Env<'_>) -> Config {
        let listen_addr = env.socket_addr("LISTEN_ADDR", "0.0.0.0:8080");
        let datastorage_url = env.required_url(
            "DATASTORAGE_URL",
            &["http", "https"],
            "http://datastorage:8080",
        );
        Config {
            listen_addr,
            file_dir: PathBuf::from(env.string("NOTIFICATION_FILE_DIR", "/tmp/notifications")),
            max_attempts: env.u64_in("DELIVERY_MAX_ATTEMPTS", 5, 1..=100) as u32,
            backoff_initial: env.millis_in("DELIVERY_BACKOFF_MS", 200, 0..=600_000),
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
    fn defaults() {
        let c = Config::from_map(&map(&[("DATASTORAGE_URL", "http://ds:8080/")])).unwrap();
        assert_eq!(c.datastorage_url, "http://ds:8080");
        assert_eq!(c.file_dir, PathBuf::from("/tmp/notifications"));
        assert_eq!(c.max_attempts, 5);
        assert_eq!(c.backoff_initial, Duration::from_millis(200));
        assert_eq!(c.audit.capacity, 10_000);
        assert_eq!(c.audit.batch_size, 100);
        assert_eq!(c.audit.flush_interval, Duration::from_millis(200));
        assert_eq!(c.audit.datastorage_url, "http://ds:8080");
    }

    #[test]
    fn errors_name_the_variables() {
        let err = Config::from_map(&map(&[
            ("DELIVERY_MAX_ATTEMPTS", "0"),
            ("AUDIT_BATCH_SIZE", "many"),
        ]))
        .unwrap_err();
        assert_eq!(
            err.variables(),
            vec![
                "DATASTORAGE_URL",
                "DELIVERY_MAX_ATTEMPTS",
                "AUDIT_BATCH_SIZE"
            ]
        );
        assert!(err
            .to_string()
            .contains("DATASTORAGE_URL is not set; set it to http://datastorage:8080"));
    }
}
