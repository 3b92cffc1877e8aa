//! HolmesGPT-API settings from the environment.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use svc_common::audit::AuditClientConfig;
use svc_common::config::{ConfigErrors, Env};

/// Model asked for when `LLM_MODEL` is not set.
pub const DEFAULT_MODEL: &str = "gpt-4o-mini";

/// Everything HolmesGPT-API needs to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// API address (`LISTEN_ADDR`, default `0.0.0.0:8080`).
    pub listen_addr: SocketAddr,
    /// Base URL of an OpenAI-style API (`LLM_URL`, required): `POST {LLM_URL}/v1/chat/completions`,
    /// `GET {LLM_URL}/health` for `/readyz`.
    pub llm_url: String,
    /// The model asked for (`LLM_MODEL`, default [`DEFAULT_MODEL`]).
    pub llm_model: String,
    /// Timeout of one LLM request (`LLM_TIMEOUT_MS`, default 30000).
    pub llm_timeout: Duration,
    /// DataStorage base URL (`DATASTORAGE_URL`, required).
    pub datastorage_url: String,
    /// Audit client settings (`AUDIT_*`).
    pub audit: AuditClientConfig,
}

impl Config {
    /// Reads the variables; problems are recorded in `env`.
    pub fn read(env: &mut Env<'_>) -> Config {
        let listen_addr = env.socket_addr("LISTEN_ADDR", "0.0.0.0:8080");
        let llm_url = env.required_url("LLM_URL", &["http", "https"], "http://mock-llm:8080");
        let llm_model = env.string("LLM_MODEL", DEFAULT_MODEL);
        let llm_timeout = env.millis_in("LLM_TIMEOUT_MS", 30_000, 100..=600_000);
        let datastorage_url = env.required_url(
            "DATASTORAGE_URL",
            &["http", "https"],
            "http://datastorage:8080",
        );
        Config {
            listen_addr,
            llm_url,
            llm_model,
            llm_timeout,
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
        let c = Config::from_map(&map(&[
            ("LLM_URL", "http://llm:8080/"),
            ("DATASTORAGE_URL", "http://ds:8080"),
        ]))
        .unwrap();
        assert_eq!(c.listen_addr.to_string(), "0.0.0.0:8080");
        assert_eq!(c.llm_url, "http://llm:8080");
        assert_eq!(c.llm_model, DEFAULT_MODEL);
        assert_eq!(c.llm_timeout, Duration::from_secs(30));
        assert_eq!(c.datastorage_url, "http://ds:8080");
        assert_eq!(c.audit.datastorage_url, "http://ds:8080");
        assert_eq!(c.audit.batch_size, 100);
    }

    #[test]
    fn errors_name_every_variable() {
        let err = Config::from_map(&map(&[
            ("LLM_URL", "ftp://llm"),
            ("LLM_TIMEOUT_MS", "5"),
            ("AUDIT_BATCH_SIZE", "many"),
        ]))
        .unwrap_err();
        assert_eq!(
            err.variables(),
            vec![
                "LLM_URL",
                "LLM_TIMEOUT_MS",
                "DATASTORAGE_URL",
                "AUDIT_BATCH_SIZE"
            ]
        );
        let text = err.to_string();
        assert!(
            text.contains("DATASTORAGE_URL is not set; set it to http://datastorage:8080"),
            "{text}"
        );
    }
}
